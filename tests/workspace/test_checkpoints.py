"""Checkpoints of a running namespace (storage.checkpoints): the namespace of a
module object comes back whole (arrays with their dtype, shape and flags, code by
value bound to the namespace, sharing, modules by reference), what cannot be
saved is listed, large values are blobs written once (a second checkpoint after
a small change writes the small graph only; an array changed in place is
written again), a restore is all or nothing and keeps what it is told to, blobs
nobody uses are collected after the grace period. Every storage kind
(conftest.KINDS) on both walkers."""

import json
import mmap
import socket
import sys
import time
import types

import numpy as np
import pytest

import torpor
from torpor.engine import fallback
from torpor.errors import (ArtifactDamagedError, ArtifactNotFoundError, CheckpointNotFoundError,
                           FormatError, InvalidNameError)
from torpor.workspace import ArtifactWarning, Checkpoints, FileStorage
from torpor.workspace.checkpoints import BLOB_PREFIX
from helpers import flip_middle_bytes

MiB = 1 << 20


def workspace(code="", **values):
    """A fresh executor namespace: a module object not in sys.modules."""
    m = types.ModuleType("__workspace__")
    m.__dict__.update(values)
    exec(code, m.__dict__)
    return m


def blobs(storage):
    return sorted(i["name"][len(BLOB_PREFIX):] for i in storage.checkpoints_area.list()
                  if i["name"].startswith(BLOB_PREFIX))


def user_vars(m):
    return {k: v for k, v in vars(m).items() if not k.startswith("__")}


# --- what comes back ----------------------------------------------------------------

def test_arrays_come_back_with_values_dtype_shape_and_flags(storage):
    rng = np.random.default_rng(1)
    ro = rng.random(300_000)
    ro.flags.writeable = False
    m = workspace(
        big=rng.random((512, 512)),                                 # 2 MiB: a blob
        fortran=np.asfortranarray(rng.integers(0, 99, (1024, 600)).astype(">i2")),
        ro=ro,
        strided=rng.random((2048, 300))[:, ::2],                     # not contiguous
        when=np.arange(0, 200_000, dtype="datetime64[s]"),
        rec=np.zeros(100_000, [("x", "<f8"), ("n", "u1"), ("s", "S3")]),
        small=np.arange(10, dtype=np.uint8),                        # in the graph
        objs=np.array([None, "a", 3], dtype=object))
    before = {k: v.copy() for k, v in user_vars(m).items()}
    cp = storage.checkpoints.save("arrays", m)
    assert cp["blobs_written"] == 6 and cp["skipped"] == {}
    out = workspace()
    storage.checkpoints.restore("arrays", out)
    for k, want in before.items():
        got = out.__dict__[k]
        assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape, k
        assert np.array_equal(got, want) if k != "objs" else got.tolist() == want.tolist()
    assert out.fortran.flags.f_contiguous and not out.fortran.flags.c_contiguous
    assert out.big.flags.c_contiguous and out.big.flags.writeable
    assert not out.ro.flags.writeable
    assert out.strided.flags.c_contiguous          # saved as its values, as torpor does
    out.big[0, 0] = -1.0                           # writable, and the checkpoint is not
    again = workspace()
    storage.checkpoints.restore("arrays", again)
    assert again.big[0, 0] == before["big"][0, 0]


def test_bytes_and_bytearrays_keep_their_type(storage):
    m = workspace(raw=b"\x01" * (3 * MiB), buf=bytearray(b"\x02" * (2 * MiB)), tiny=b"t")
    cp = storage.checkpoints.save("b", m)
    assert cp["blobs_written"] == 2
    out = workspace()
    storage.checkpoints.restore("b", out)
    assert type(out.raw) is bytes and out.raw == m.raw
    assert type(out.buf) is bytearray and out.buf == m.buf and out.tiny == b"t"
    out.buf[0] = 9                                  # a bytearray of its own
    assert m.buf[0] == 2


def test_functions_and_classes_are_saved_by_value_and_bound_to_the_namespace(storage):
    m = workspace("""
import functools
scale = 2
def times(x):
    return x * scale
def counter():
    n = [0]
    def step():
        n[0] += 1
        return n[0]
    return step
step = counter()
class Point:
    origin = 0
    def __init__(self, x):
        self.x = x
    def far(self):
        return times(self.x) + Point.origin
p = Point(5)
shout = lambda s: s.upper() + "!"
""")
    m.step()
    storage.checkpoints.save("code", m)
    out = workspace()
    storage.checkpoints.restore("code", out)
    assert out.times(3) == 6 and out.p.far() == 10 and out.shout("a") == "A!"
    assert type(out.p) is out.Point
    assert out.times.__globals__ is out.__dict__            # bound to the live namespace
    out.scale = 10                                           # a global changed after restore
    assert out.times(3) == 30 and out.p.far() == 50
    assert out.step() == 2                                   # the closure's state came back
    assert isinstance(out.Point(1), out.Point)


def test_shared_objects_stay_shared(storage):
    arr = np.arange(300_000.0)
    small = np.arange(5)
    m = workspace(a=arr, b=arr, holder=[arr, {"again": arr}], s1=small, s2=[small],
                  twin=arr.copy())                          # equal content, its own object
    cp = storage.checkpoints.save("shared", m)
    assert cp["blobs_written"] == 1 and cp["blobs_reused"] == 0   # one blob for both
    out = workspace()
    storage.checkpoints.restore("shared", out)
    assert out.a is out.b is out.holder[0] is out.holder[1]["again"]
    assert out.s2[0] is out.s1
    assert out.twin is not out.a and np.array_equal(out.twin, out.a)
    out.twin[0] = 42.0
    assert out.a[0] == 0.0


def test_modules_come_back_by_reference(storage):
    m = workspace("import numpy as np\nimport os.path as osp\nfrom json import dumps\n")
    storage.checkpoints.save("mods", m)
    out = workspace()
    storage.checkpoints.restore("mods", out)
    assert out.np is np and out.osp is sys.modules["os.path"]
    assert out.dumps is json.dumps


def test_what_cannot_be_saved_is_skipped_and_listed(storage):
    sock = socket.socket()
    try:
        m = workspace("gen = (i for i in range(3))\nkept = [1, 2]", sock=sock)
        cp = storage.checkpoints.save("skips", m)
        assert set(cp["skipped"]) == {"gen", "sock"} and cp["variables"] == ["kept"]
        assert cp["skipped"]["gen"]["type"] == "builtins.generator"
        assert "gen" in cp["skipped"]["gen"]["reason"]
        assert storage.checkpoints.list()[0]["skipped"] == cp["skipped"]
        out = workspace()
        back = storage.checkpoints.restore("skips", out)
        assert back["skipped"] == cp["skipped"] and back["variables"] == ["kept"]
        assert out.kept == [1, 2] and "gen" not in vars(out)
    finally:
        sock.close()


def test_a_large_graph_goes_through_a_temporary_file(storage, monkeypatch):
    import torpor.workspace.checkpoints as cps
    monkeypatch.setattr(cps, "SPOOL_BYTES", 4096)
    m = workspace(rows=[{"i": i, "name": f"row{i}"} for i in range(20_000)])
    cp = storage.checkpoints.save("big-graph", m)
    assert cp["blobs_written"] == 0 and cp["bytes_written"] > 4096
    out = workspace()
    storage.checkpoints.restore("big-graph", out)
    assert out.rows == m.rows


def test_pandas_frames_keep_their_large_columns_as_blobs(storage):
    import pandas as pd
    m = workspace(df=pd.DataFrame({"x": np.arange(300_000.0), "y": np.ones(300_000)}))
    first = storage.checkpoints.save("pd", m)
    assert first["blobs_written"] >= 1
    m.note = "small change"
    second = storage.checkpoints.save("pd", m)
    assert second["blobs_written"] == 0 and second["changed"] == ["note"]
    out = workspace()
    storage.checkpoints.restore("pd", out)
    pd.testing.assert_frame_equal(out.df, m.df)


def test_excluded_and_interpreter_names_are_not_saved(storage):
    m = workspace("x = 1", artifacts=object(), tools=object(), tool_x=1)
    cp = storage.checkpoints.save("ex", m, exclude=["artifacts", "tool*"])
    assert cp["variables"] == ["x"]
    assert "__builtins__" in vars(m) and "__name__" not in cp["variables"]


# --- incremental ---------------------------------------------------------------------

def test_a_second_checkpoint_writes_only_what_changed(storage):
    rng = np.random.default_rng(2)
    m = workspace("step = 1", **{f"a{i}": rng.random(2 * MiB // 8) for i in range(4)})
    first = storage.checkpoints.save("inc", m)
    assert first["blobs_written"] == 4 and first["bytes_written"] > 8 * MiB
    m.step = 2
    second = storage.checkpoints.save("inc", m)
    assert second["blobs_written"] == 0 and second["blobs_reused"] == 4
    assert second["bytes_reused"] >= 8 * MiB
    assert second["bytes_written"] < first["bytes_written"] / 100
    assert second["changed"] == ["step"] and second["previous"] == "inc"
    assert len(blobs(storage)) == 4
    out = workspace()
    storage.checkpoints.restore("inc", out)
    assert out.step == 2 and np.array_equal(out.a3, m.a3)


def test_an_array_changed_in_place_is_written_again(storage):
    m = workspace(x=np.zeros(MiB // 4), y=np.ones(MiB // 4))
    storage.checkpoints.save("c1", m)
    m.x[0] = 99
    cp = storage.checkpoints.save("c2", m)
    assert cp["blobs_written"] == 1 and cp["blobs_reused"] == 1
    assert cp["changed"] == ["x"]
    out = workspace()
    storage.checkpoints.restore("c2", out)
    assert out.x[0] == 99
    storage.checkpoints.restore("c1", out)
    assert out.x[0] == 0


def test_changed_is_reported_against_the_last_checkpoint_of_that_name(storage, make_storage):
    m = workspace("a = 1\nb = [1, 2]")
    storage.checkpoints.save("auto", m)
    m.b.append(3)
    cp = make_storage().checkpoints.save("auto", m)      # another process's view
    assert cp["changed"] == ["b"] and cp["previous"] == "auto"


def test_changed_after_a_restore_is_against_the_restored_checkpoint(storage, make_storage):
    storage.checkpoints.save("base", workspace("a = 1\nb = 'x'", arr=np.zeros(MiB // 4)))
    other = make_storage().checkpoints                 # a new session: knows nothing yet
    m = workspace()
    other.restore("base", m)
    m.b = "y"
    cp = other.save("next", m)
    assert cp["changed"] == ["b"] and cp["previous"] == "base"
    assert cp["blobs_written"] == 0


# --- restoring ----------------------------------------------------------------------

def test_restore_replaces_the_variables_but_keeps_the_ones_named(storage):
    src = workspace("x = 1\ny = [2]\ntools = 'saved tools'")
    storage.checkpoints.save("r", src)
    injected = object()
    target = workspace("x = 'old'\nstale = 3", tools=injected, tool_box=4)
    name_before = target.__name__
    out = storage.checkpoints.restore("r", target, keep=["tools", "tool_*"])
    assert sorted(out["variables"]) == ["x", "y"]
    assert target.x == 1 and target.y == [2] and not hasattr(target, "stale")
    assert target.tools is injected and target.tool_box == 4
    assert target.__name__ == name_before and "__builtins__" in vars(target)


def snapshot(m):
    return {k: (v, repr(v)) for k, v in vars(m).items() if k != "__builtins__"}


def same(m, snap):
    now = snapshot(m)
    return now.keys() == snap.keys() and all(now[k][0] is snap[k][0] and now[k][1] == snap[k][1]
                                             for k in snap)


def test_a_failed_restore_leaves_the_namespace_as_it_was(storage):
    src = workspace(arr=np.arange(MiB // 8, dtype=np.float64), other=np.ones(MiB // 8), n=1)
    storage.checkpoints.save("good", src)
    storage.checkpoints.save("lost-blob", src)
    target = workspace("x = 'mine'\nlst = [1]")
    snap = snapshot(target)
    digest = blobs(storage)[0]
    storage.checkpoints_area.delete(BLOB_PREFIX + digest)
    with pytest.raises(ArtifactDamagedError, match=f"checkpoint 'lost-blob'.*{digest}.*missing"):
        storage.checkpoints.restore("lost-blob", target)
    assert same(target, snap)
    # the graph itself damaged
    storage.checkpoints.save("bad-graph", workspace(n=2))
    damage(storage.checkpoints_area, "bad-graph")
    with pytest.raises(ArtifactDamagedError, match="checkpoint 'bad-graph'") as e:
        storage.checkpoints.restore("bad-graph", target)
    assert e.value.name == "bad-graph" and isinstance(e.value, torpor.CorruptFileError)
    assert same(target, snap)
    # a blob's bytes damaged: a restore that reads blobs (verify=True, or any
    # storage that is not a local folder) finds it
    src2 = workspace(z=np.full(MiB // 8, 7.0))
    storage.checkpoints.save("bad-blob", src2)
    fresh = [d for d in blobs(storage) if d != digest]
    for d in fresh:
        damage(storage.checkpoints_area, BLOB_PREFIX + d)
    with pytest.raises(ArtifactDamagedError, match="checkpoint 'bad-blob'.*blob"):
        storage.checkpoints.restore("bad-blob", target, verify=True)
    assert same(target, snap)
    # the blob's data gone but its record there
    b = storage.checkpoints_area._b         # the test reaches inside on purpose
    b.delete_data(b.data_keys(BLOB_PREFIX + fresh[0]))
    with pytest.raises(ArtifactDamagedError, match=f"checkpoint 'bad-blob'.*{fresh[0]}"):
        storage.checkpoints.restore("bad-blob", target)
    assert same(target, snap)


def test_restore_of_a_missing_checkpoint(storage):
    m = workspace("x = 1")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint named 'nothing'") as e:
        storage.checkpoints.restore("nothing", m)
    assert isinstance(e.value, ArtifactNotFoundError) and isinstance(e.value, KeyError)
    assert e.value.name == "nothing" and m.x == 1


def test_local_restores_map_the_blobs(tmp_path, impl):
    storage = FileStorage(tmp_path / "ws")
    storage.checkpoints.save("m", workspace(big=np.arange(4 * MiB // 8, dtype=np.float64)))
    out = workspace()
    storage.checkpoints.restore("m", out)
    assert isinstance(memory_of(out.big), mmap.mmap)     # zero-copy: the file's pages
    out.big[0] = 5.0                                      # copy-on-write: the blob stays
    storage.checkpoints.restore("m", out, verify=True)
    assert out.big[0] == 0.0 and not isinstance(memory_of(out.big), mmap.mmap)


def memory_of(arr):
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return base


# --- the area, names, listing ---------------------------------------------------------

def test_list_exists_and_delete(storage):
    storage.checkpoints.save("b", workspace("x = 1"))
    storage.checkpoints.save("a/first", workspace(big=np.zeros(MiB // 4)))
    storage.artifacts.save("plain", 1)
    listed = storage.checkpoints.list()
    assert [c["name"] for c in listed] == ["a/first", "b"]
    assert listed[0]["variables"] == ["big"] and listed[0]["blobs"] == 1
    assert listed[0]["size"] >= MiB and listed[0]["saved_at"] and listed[0]["created_at"]
    assert [i["name"] for i in storage.artifacts.list()] == ["plain"]   # apart from artifacts
    assert storage.checkpoints.exists("b") and not storage.checkpoints.exists("c")
    assert storage.checkpoints.delete("b") is True
    assert storage.checkpoints.delete("b") is False
    assert [c["name"] for c in storage.checkpoints.list()] == ["a/first"]


@pytest.mark.parametrize("bad", ["", "../x", "/abs", "a//b", "blobs", "blobs/abc", "a b", 7])
def test_invalid_and_reserved_names(storage, bad):
    m = workspace("x = 1")
    for call in (lambda: storage.checkpoints.save(bad, m),
                 lambda: storage.checkpoints.restore(bad, m),
                 lambda: storage.checkpoints.exists(bad),
                 lambda: storage.checkpoints.delete(bad)):
        with pytest.raises(InvalidNameError):
            call()
    assert storage.checkpoints.list() == [] and m.x == 1


def test_the_checkpoint_area_is_apart_from_the_artifacts(storage):
    storage.artifacts.save("cp", 1)                      # an artifact of the same name
    storage.checkpoints.save("cp", workspace(big=np.zeros(MiB // 4)))
    assert storage.artifacts.load("cp") == 1
    assert [c["name"] for c in storage.checkpoints.list()] == ["cp"]
    where = storage.checkpoints_area.get("cp")["path"]
    if isinstance(storage, FileStorage):
        root = storage.root.split("://")[-1].strip("/")   # memory:// shows memory:///
        assert f"{root}/checkpoints/cp@" in where, where
        assert f"{root}/artifacts/cp@" in storage.artifacts.get("cp")["path"]
    else:                                               # redis: its own keys and names set
        assert where.startswith(storage.namespace + "checkpoint:cp@"), where
        members = storage.redis.smembers(storage.namespace + "checkpoint-names")
        assert {m.decode() for m in members} == {"cp"} | {BLOB_PREFIX + d for d in blobs(storage)}
        assert storage.redis.smembers(storage.namespace + "names") == {b"cp"}
    assert storage.checkpoints.delete("cp") and storage.artifacts.load("cp") == 1


# --- garbage ----------------------------------------------------------------------------

def test_blobs_are_collected_after_delete_once_the_grace_period_is_over(storage):
    patient = storage.checkpoints                       # grace of an hour: nothing goes
    eager = Checkpoints(storage.checkpoints_area, grace_seconds=0)
    m = workspace(a=np.zeros(MiB // 4), shared=np.ones(MiB // 4))
    patient.save("one", m)
    m2 = workspace(b=np.full(MiB // 4, 2.0), shared=m.shared)
    patient.save("two", m2)
    assert len(blobs(storage)) == 3
    patient.delete("one")
    assert len(blobs(storage)) == 3                    # young: kept
    assert eager.collect_garbage() and len(blobs(storage)) == 2
    out = workspace()
    eager.restore("two", out)                         # the shared blob stayed
    assert out.b[0] == 2.0 and out.shared[0] == 1.0
    eager.delete("two")
    assert blobs(storage) == []


def test_a_replaced_checkpoint_frees_its_old_blobs(storage):
    eager = Checkpoints(storage.checkpoints_area, grace_seconds=0)
    m = workspace(x=np.zeros(MiB // 4))
    eager.save("auto", m)
    first = blobs(storage)
    m.x = np.ones(MiB // 4)
    eager.save("auto", m)
    assert len(blobs(storage)) == 1 and blobs(storage) != first


def test_a_young_unreferenced_blob_is_spared(storage):
    """A blob written by a save that has not committed its manifest yet (another
    session, mid-checkpoint) has no manifest naming it: only its age protects it."""
    area = storage.checkpoints_area
    area.save(BLOB_PREFIX + "0" * 32, b"in flight" * 200_000, format="bytes")
    Checkpoints(area, grace_seconds=600).save("x", workspace("y = 1"))    # collects
    assert blobs(storage) == ["0" * 32]
    time.sleep(0.01)
    assert Checkpoints(area, grace_seconds=0.005).collect_garbage() == ["0" * 32]
    assert blobs(storage) == []


def test_a_reused_blob_collected_meanwhile_is_written_again(storage, monkeypatch):
    """Another session's collection deletes an old unreferenced blob after this
    save found it (and decided not to write it) and before its manifest names
    it: the save notices after its commit and writes the blob again."""
    area = storage.checkpoints_area
    eager = Checkpoints(area, grace_seconds=0)
    m = workspace(x=np.arange(MiB // 8, dtype=np.float64))
    eager.save("old", m)
    area.delete("old")                          # the blob stays: nothing collected yet
    (digest,) = blobs(storage)
    save = area.save

    def racing_save(name, *a, **kw):
        if name == "new":                       # the commit of the checkpoint itself
            area.delete(BLOB_PREFIX + digest)   # a collection elsewhere, just before
        return save(name, *a, **kw)
    monkeypatch.setattr(area, "save", racing_save)
    cp = eager.save("new", m)
    assert cp["blobs_reused"] == 1 and cp["blobs_written"] == 1
    assert blobs(storage) == [digest]
    out = workspace()
    eager.restore("new", out)
    assert np.array_equal(out.x, m.x)


def test_nothing_is_collected_while_a_manifest_is_unreadable(storage):
    eager = Checkpoints(storage.checkpoints_area, grace_seconds=0)
    eager.save("ok", workspace(x=np.zeros(MiB // 4)))
    storage.checkpoints_area._b.update_record("ok", lambda old: b"{not json")
    with pytest.warns(ArtifactWarning, match="ok"):
        assert eager.collect_garbage() == []
    with pytest.warns(ArtifactWarning, match="ok"):
        assert len(blobs(storage)) == 1


# --- the graph is a module dump ----------------------------------------------------------

def test_the_graph_is_a_module_dump_that_load_module_refuses(tmp_path, impl):
    storage = FileStorage(tmp_path / "ws")
    storage.checkpoints.save("g", workspace("x = 1", big=np.zeros(MiB // 4)))
    path = storage.checkpoints_area.get("g")["path"]
    meta = torpor.info(path)["metadata"]
    assert meta["torpor_module"] == 2 and meta["root"] == "variables"
    with pytest.raises(FormatError, match="checkpoint"):
        torpor.load_module(path, module=workspace(), trusted=True)


class _Hook:
    """A reducer_override that asks to see the walker's fast-path objects."""
    fast_paths = True

    def __init__(self):
        self.seen = []

    def wants(self, cls):
        return cls in (np.ndarray, bytes, bytearray)

    def __call__(self, obj):
        self.seen.append(type(obj).__name__)
        if isinstance(obj, np.ndarray) and obj.size >= 1000:
            return (tuple, ([obj.size],))
        return None


class _Writer:
    def __init__(self):
        self.frames, self.n = [], 0

    def stream_frame(self, data):
        self.frames.append(bytes(data))

    def add_array(self, arr, fortran):
        self.n += 1
        return self.n - 1

    def add_bytes(self, obj):
        self.n += 1
        return self.n - 1


def _encode(mod, obj, hook):
    w = _Writer()
    mod.Encoder(w, reducer_override=hook).encode(obj)
    return b"".join(w.frames), w.n


def test_the_fast_path_hook_is_the_same_on_both_walkers():
    walker = pytest.importorskip("torpor.engine._walker")
    big = np.arange(2000.0)
    ro = np.arange(3000.0)
    ro.flags.writeable = False
    obj = {"a": big, "b": big, "ro": ro, "small": np.arange(3.0), "raw": b"x" * (300 << 10),
           "ba": bytearray(400 << 10), "short": b"y"}
    outs = []
    for mod in (walker, fallback):
        hook = _Hook()
        outs.append(_encode(mod, obj, hook) + (hook.seen,))
    assert outs[0] == outs[1]
    stream, sections, seen = outs[0]
    # offered once per object (b is a memo reference), small bytes never
    assert seen == ["ndarray", "ndarray", "ndarray", "bytes", "bytearray"]
    assert sections == 2                   # the bytes and the bytearray; the arrays reduced
    # a hook without fast_paths is never offered them (dump_module, sessions)
    for mod in (walker, fallback):
        hook = _PlainHook()
        _encode(mod, obj, hook)
        assert hook.seen == []


class _PlainHook(_Hook):
    fast_paths = False


# --- how the tests reach into the checkpoint area ----------------------------------------

def damage(area, name):
    """Flip bytes in the middle of the current version's data of ``name``."""
    b = area._b
    key = json.loads(b.read_record(name))["versions"][-1]["key"]
    flip_middle_bytes(key, b.store)
