"""torpor as a Dask serialization family (torpor.dask, docs/DASK.md).

The first half runs without a cluster, on both walkers (``impl``): what the
frames are made of (views of the arrays' memory, never buffers the writer
reuses), how many copies each side makes, the plain-value path, declining to
the next family, the configuration. The second half runs a real LocalCluster
of two worker processes (one thread each, no memory limit) per walker, started
once per module: task results moved between workers and to the client, safe
loading and its configuration in the worker processes, spilling to disk.
"""

import collections
import gc
import importlib
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import dask.config  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from distributed.protocol.serialize import (register_serialization_family,  # noqa: E402
                                            serialize as dask_serialize)

import torpor  # noqa: E402
import torpor.dask as td  # noqa: E402
import torpor.engine.select  # noqa: E402
from torpor.engine import fallback  # noqa: E402
from helpers import assert_same_array  # noqa: E402


#: The walkers this interpreter has (as tests/conftest.py's ``impl`` runs them).
IMPLS = ["python"] + (["cython"] if torpor.engine.select.IMPLEMENTATION == "cython" else [])
WALKERS = {"python": fallback}
if "cython" in IMPLS:
    WALKERS["cython"] = importlib.import_module("torpor.engine._walker")
TIMEOUT = 60          # seconds: a task that takes longer has hung
#: Tests on the cluster: starting its worker processes takes seconds (the wheel
#: tests skip "slow" ones; .ci/run runs them).
cluster_test = pytest.mark.slow


class Allowed:
    """Allowed by the cluster's Dask config (``torpor.allow``) from the start."""

    def __init__(self, values, label):
        self.values, self.label = values, label

    def __eq__(self, other):
        return type(other) is Allowed and self.label == other.label \
            and np.array_equal(self.values, other.values)


class Refused:
    """Not allowed: safe loading refuses it until the test allows it."""

    def __init__(self, n):
        self.n = n


# --- values the tasks make (workers import this module to run them) ---------------

def make_arrays():
    """Arrays of every kind a transfer must keep: dtypes, byte orders, shapes,
    orders, non-contiguous views, 0-d, empty, read-only; both sides of KEEP_MIN."""
    rng = np.random.default_rng(7)
    big = rng.standard_normal((600, 500))                     # 2.4 MB: kept by reference
    rec = np.zeros(3000, dtype=[("x", "<f8"), ("n", "<i2"), ("tag", "S5")])
    rec["x"] = np.arange(3000) / 7
    rec["n"] = np.arange(3000) % 300
    ro = np.arange(40_000, dtype=np.int32)
    ro.flags.writeable = False
    return {
        "f64": big,
        "f32_small": np.linspace(0, 1, 100, dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((700, 300))),
        "noncontig": big[::3, ::2],
        "noncontig_small": np.arange(200.0)[::7],
        "zero_d": np.array(3.25),
        "empty": np.zeros((0, 5), dtype=np.int16),
        "big_endian": np.arange(100_000, dtype=">i4"),
        "big_endian_f": np.linspace(-1, 1, 30_000).astype(">f8").reshape(100, 300),
        "bool": rng.random(100_000) > 0.5,
        "complex": (rng.standard_normal(20_000) + 1j).astype(np.complex64),
        "uint8_3d": rng.integers(0, 255, (64, 64, 32), dtype=np.uint8),
        "datetime": np.arange("2024-01-01", "2024-06-01", dtype="datetime64[h]"),
        "unicode": np.array(["alpha", "beta", "γ"] * 5000),
        "structured": rec,
        "readonly": ro,
    }


def compare_arrays(got):
    """What differs between ``got`` and make_arrays() (computed where it runs)."""
    want = make_arrays()
    bad = []
    for name, a in want.items():
        b = got.get(name)
        if not isinstance(b, np.ndarray) or b.dtype != a.dtype or b.shape != a.shape \
                or a.tobytes() != b.tobytes():
            bad.append(name)
        elif (a.flags.c_contiguous or a.flags.f_contiguous) and \
                (b.flags.f_contiguous, b.flags.c_contiguous) != (a.flags.f_contiguous,
                                                                 a.flags.c_contiguous):
            bad.append(name + " (order)")
        elif b.flags.writeable != a.flags.writeable:
            bad.append(name + " (writeable)")
    return bad


def make_shared():
    """A value Dask hands to one family whole (not a plain list/dict/tuple, whose
    items Dask serializes one by one): identity inside it must be kept."""
    a = np.arange(50_000.0)
    b = np.ones((100, 100), dtype=np.int8)
    bundle = ("arrays", a, [a, b], {"again": b, "view_owner": a})
    return collections.OrderedDict(first=a, second=a, bundle=bundle, b=b)


def shared_identities(v):
    bundle = v["bundle"]
    return [v["first"] is v["second"], v["first"] is bundle[1], bundle[1] is bundle[2][0],
            bundle[2][1] is bundle[3]["again"], v["b"] is bundle[3]["again"],
            bundle[3]["view_owner"] is v["second"]]


def make_pair():
    a = np.arange(30_000.0)
    return [a, a]


def make_allowed():
    return Allowed(np.arange(100_000.0), "made on a worker")


def relabel(x):
    return Allowed(x.values * 2, x.label + ", relabelled")


def make_refused():
    return Refused(5)


def unwrap_refused(x):
    return x.n


def identity(x):
    return x


def walker_here():
    """The walker of this process, and the one written in the header of a value
    this process serializes."""
    header, frames = td.serialize({"x": np.arange(10)})
    return (torpor.engine.select.IMPLEMENTATION,
            torpor.info(td.FramesFile(frames))["header"]["implementation"])


def evict_all(dask_worker):
    """Spill every value of this worker to disk; the spill files' paths."""
    data = dask_worker.data
    while data.fast and data.evict() != -1:
        pass
    folder = os.path.join(dask_worker.local_directory, "storage")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def spilled_keys(dask_worker):
    return sorted(map(str, dask_worker.data.slow))


# --- without a cluster: the frames -------------------------------------------------

def _kept_views(frames):
    return [f for f in frames if isinstance(f, memoryview)]


def _bytes_of(frame):
    return np.frombuffer(frame, np.uint8)


def test_arrays_are_sent_as_views_of_their_own_memory(impl):
    big = np.arange(3_000_000.0)                           # 24 MB, C order
    fortran = np.asfortranarray(np.ones((900, 700)))        # 5 MB, F order
    blob = bytes(range(256)) * 4096                         # 1 MiB of bytes
    obj = {"big": big, "fortran": fortran, "blob": blob, "again": big}
    header, frames = td.serialize(obj)
    assert header == {"format": td.CONTAINER}
    views = _kept_views(frames)
    # one frame per array (adjacent chunks merged), each a view of the array itself
    assert [np.shares_memory(_bytes_of(v), big) for v in views].count(True) == 1
    assert [np.shares_memory(_bytes_of(v), fortran) for v in views].count(True) == 1
    assert any(v.obj is blob for v in views)
    assert sum(memoryview(f).nbytes for f in frames if not isinstance(f, memoryview)) < 64 << 10
    # joined, the frames are a torpor file saved with compress=None
    joined = b"".join(frames)
    assert torpor.info(td.FramesFile([joined]))["mmap"]["mappable"] == 2
    back = torpor.loads(joined)
    assert_same_array(big, back["big"])
    assert_same_array(fortran, back["fortran"])
    assert back["again"] is back["big"] and back["blob"] == blob


def test_frames_of_large_arrays_are_at_most_a_dask_shard(impl):
    """Dask cuts larger frames into shards and, on TCP, copies the shards together
    on arrival: torpor's frames stay within one shard, so nothing is copied."""
    arr = np.arange(5_000_000.0)                         # 40 MB
    with dask.config.set({"distributed.comm.shard": "8MiB"}):
        _, frames = td.serialize(arr)
    views = _kept_views(frames)
    assert max(v.nbytes for v in views) <= 8 << 20
    assert sum(v.nbytes for v in views) == arr.nbytes
    assert all(np.shares_memory(_bytes_of(v), arr) for v in views)
    assert_same_array(arr, td.deserialize({"format": td.CONTAINER}, frames))


def test_kept_frames_are_never_changed_by_later_writes(impl):
    """Every frame kept by reference is the caller's memory or a bytes object
    nobody writes to: later saves (which reuse whatever the writer recycles)
    leave earlier frames exactly as they were."""
    arrays = {"c": np.arange(400_000.0), "f": np.asfortranarray(np.ones((500, 400))),
              "strided": np.arange(2_000_000.0)[::2], "bytes": b"\x07" * (600 << 10),
              "bytearray": bytearray(b"\x09" * (700 << 10))}
    objects = [{"i": i, "s": str(i) * 3, "t": (i, float(i))} for i in range(8_000)]
    obj = {"arrays": arrays, "objects": objects}
    _, frames = td.serialize(obj)
    snapshot = [bytes(f) for f in frames]
    for v in _kept_views(frames):
        owner = v.obj
        of_input = any(np.shares_memory(_bytes_of(v), np.frombuffer(a, np.uint8)
                                        if isinstance(a, (bytes, bytearray)) else a)
                       for a in arrays.values())
        # the caller's memory, or an object nobody may write to: immutable bytes
        # (the object stream) or a copy made for this write (a strided array's block)
        assert of_input or type(owner) is bytes or (
            isinstance(owner, np.ndarray) and not np.shares_memory(owner, arrays["strided"]))
    assert any(type(v.obj) is bytes for v in _kept_views(frames))   # a piece of the stream
    for round_ in range(2):                   # compressed and raw saves, reusing freely
        other = {"arrays": {k: (np.full_like(a, round_) if isinstance(a, np.ndarray) else a)
                            for k, a in arrays.items()},
                 "objects": [{"j": -i} for i in range(8_000)]}
        td.serialize(other)
        torpor.dumps(other)
        torpor.dumps(other, compress=None)
        gc.collect()
    assert [bytes(f) for f in frames] == snapshot
    back = td.deserialize({"format": td.CONTAINER}, frames)
    assert back["objects"] == objects
    assert_same_array(arrays["c"], back["arrays"]["c"])
    assert back["arrays"]["bytearray"] == arrays["bytearray"]


def test_frames_cut_anywhere_are_read_without_joining(impl):
    """The receiving side reads the frames as one file, whatever their cut (Dask
    may shard them): a value cut every 1000 bytes comes back the same."""
    obj = {"a": np.arange(100_000, dtype=">i8"), "s": ["x" * 10] * 1000, "n": 7}
    _, frames = td.serialize(obj)
    whole = b"".join(frames)
    pieces = [memoryview(whole)[i:i + 1000] for i in range(0, len(whole), 1000)]
    back = td.deserialize({"format": td.CONTAINER}, pieces)
    assert_same_array(obj["a"], back["a"])
    assert back["s"] == obj["s"] and back["n"] == 7
    f = td.FramesFile(pieces)
    assert f.seek(0, os.SEEK_END) == len(whole)
    f.seek(1995)
    assert f.read(10) == whole[1995:2005]          # across a cut
    buf = bytearray(3000)
    f.seek(500)
    assert f.readinto(buf) == 3000 and bytes(buf) == whole[500:3500]


def _traced_peak(fn):
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _received(frames):
    """The frames as Dask hands them to a deserializer after a transfer: each in a
    writable buffer of its own (not the sender's memory)."""
    return [bytearray(memoryview(f).cast("B")) for f in frames]


def test_copies_on_each_side(impl):
    """Measured with tracemalloc (numpy reports its allocations to it): sending
    allocates nothing the size of the arrays (0 copies), and so does receiving: the
    array is placed over the frame it arrived in (its checksums checked there)."""
    arr = np.random.default_rng(1).standard_normal(8_000_000)     # 64 MB
    (header, frames), sent = _traced_peak(lambda: td.serialize({"arr": arr}))
    assert sent < arr.nbytes * 0.02, sent
    frames = _received(frames)
    back, received = _traced_peak(lambda: td.deserialize(header, frames))
    assert received < arr.nbytes * 0.02, received
    assert any(np.shares_memory(back["arr"], _bytes_of(f)) for f in frames)
    assert_same_array(arr, back["arr"])
    assert not np.shares_memory(back["arr"], arr)


def test_a_frame_that_cannot_be_lent_is_copied(impl):
    """A read-only frame (bytes) is copied into a new array (1 copy), which is
    writable as the sent array was; a frame damaged in transit is refused."""
    arr = np.arange(1_000_000.0)
    header, frames = td.serialize({"arr": arr})
    frames = [bytes(memoryview(f).cast("B")) for f in frames]
    back, received = _traced_peak(lambda: td.deserialize(header, frames))
    assert arr.nbytes <= received < arr.nbytes * 1.1, received
    assert_same_array(arr, back["arr"])
    frames = _received(td.serialize({"arr": arr})[1])
    big = max(range(len(frames)), key=lambda i: len(frames[i]))
    frames[big][len(frames[big]) // 2] ^= 0xFF
    with pytest.raises(torpor.CorruptFileError, match="array section"):
        td.deserialize(header, frames)


def test_plain_values_skip_the_container(impl):
    for value in [None, True, False, 0, -5, 2 ** 63, -(2 ** 63), 1.5, float("inf"), "",
                  "héllo", b"", b"\x00\xff" * 100]:
        header, frames = td.serialize(value)
        assert header == {"format": td.PLAIN} and len(frames) == 1
        back = td.deserialize(header, frames)
        assert back == value and type(back) is type(value)
    # what MessagePack cannot carry exactly goes into a container
    for value in [2 ** 70, "\udc80", b"x" * (1 << 20), np.float64(1.5), 3 + 4j]:
        header, frames = td.serialize(value)
        assert header == {"format": td.CONTAINER}
        back = td.deserialize(header, frames)
        assert back == value and type(back) is type(value)


def test_an_object_torpor_cannot_save_goes_to_the_next_family(impl):
    taken = []
    register_serialization_family("probe", lambda x: (taken.append(x) or {}, [b""]),
                                  lambda header, frames: None)

    def gen():
        yield 1
    g = gen()
    with pytest.raises(NotImplementedError, match="torpor cannot save"):
        td.serialize({"g": g})
    before = td.counters()["declined"]
    header, _ = dask_serialize({"g": g}, serializers=[td.FAMILY, "probe"])
    assert header["serializer"] == "probe" and taken[-1] == {"g": g}
    assert td.counters()["declined"] == before + 1
    header, _ = dask_serialize({"n": 1}, serializers=[td.FAMILY, "probe"])
    assert header["serializer"] == td.FAMILY


def test_unknown_frame_format_says_what_to_do():
    with pytest.raises(torpor.FormatError, match="same torpor version"):
        td.deserialize({"format": "zstd-v9"}, [b"..."])


def test_safe_loading_by_default_and_configured(impl):
    _, frames = td.serialize(Refused(3))
    with pytest.raises(torpor.UnsafeLoadError) as e:
        td.deserialize({"format": td.CONTAINER}, frames)
    assert f"{__name__}.Refused" in str(e.value) and "torpor.allow" in str(e.value)
    assert e.value.names == (f"{__name__}.Refused",)
    with dask.config.set({"torpor.allow": [f"{__name__}.*"]}):
        assert td.deserialize({"format": td.CONTAINER}, frames).n == 3
    with dask.config.set({"torpor.trusted": True}):
        assert td.deserialize({"format": td.CONTAINER}, frames).n == 3
    # code saved by value: only trusted loads it, and the message says so
    _, frames = td.serialize(lambda x: x + 1)
    with pytest.raises(torpor.UnsafeLoadError, match="torpor.trusted"):
        td.deserialize({"format": td.CONTAINER}, frames)


def test_configure_sets_the_dask_config():
    # the context restores the keys it set when it ends, whoever changed them since
    with dask.config.set({"torpor.allow": [], "torpor.trusted": False}):
        td.configure(allow=[Refused, "pkg.*"], trusted=False)
        names = [f"{__name__}.Refused", "pkg.*"]
        assert td.settings() == (names, False)
        assert dask.config.get("torpor.allow") == names
        td.configure(trusted=True)
        assert td.settings() == (names, True)
        with pytest.raises(TypeError, match="trusted must be True or False"):
            td.configure(trusted="yes")
        with pytest.raises(TypeError, match="allow takes"):
            td.configure(allow=[3])
    assert td.settings() == ([], False)


@pytest.mark.parametrize("key, value, message", [
    ("torpor.allow", 5, "torpor.allow must be a list"),
    ("torpor.allow", [Refused], "torpor.allow must be a list"),
    ("torpor.trusted", "true", "torpor.trusted must be true or false"),
])
def test_bad_config_is_named(key, value, message):
    with dask.config.set({key: value}), pytest.raises(TypeError, match=message):
        td.settings()


def _run_python(code, **env):
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env=full, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_environment_variables_configure_a_new_process():
    out = _run_python("""
        import torpor.dask
        print(torpor.dask.settings())
    """, DASK_TORPOR__ALLOW='["mypkg.models.*"]', DASK_TORPOR__TRUSTED="true")
    assert out == "(['mypkg.models.*'], True)"


def test_import_torpor_imports_no_dask():
    out = _run_python("""
        import sys, torpor
        print(sorted(m for m in ("dask", "distributed") if m in sys.modules))
    """)
    assert out == "[]"


def test_spill_buffer_writes_torpor_files(impl, tmp_path):
    buf = td.spill_buffer(str(tmp_path), target=1)     # every value spills at once
    value = {"arr": np.arange(200_000.0), "label": "spilled"}
    buf["k"] = value
    assert "k" in buf.slow and "k" not in buf.fast
    (path,) = (tmp_path / "storage").iterdir()
    assert torpor.info(str(path))["header"]["codec"] == "raw"
    assert torpor.load(str(path))["label"] == "spilled"
    back = buf["k"]
    assert back["label"] == "spilled"
    assert_same_array(value["arr"], back["arr"])


# --- a real cluster ----------------------------------------------------------------

@pytest.fixture(scope="module", params=IMPLS)
def client(request, tmp_path_factory):
    """A LocalCluster of two worker processes using the walker under test (they
    inherit TORPOR_PUREPYTHON, as tests/conftest.py's ``walker_env`` sets it),
    which this process uses too (as ``impl`` installs it), started with the Dask
    config ``torpor.allow = [Allowed]``; its client."""
    walker = WALKERS[request.param]
    families = td.FAMILIES
    with pytest.MonkeyPatch.context() as mp:
        for name in ("Encoder", "Decoder", "IMPLEMENTATION"):
            mp.setattr(torpor.engine.select, name, getattr(walker, name))
        mp.delenv("TORPOR_PUREPYTHON", raising=False)
        if request.param == "python":
            mp.setenv("TORPOR_PUREPYTHON", "1")
            mp.delenv("TORPOR_REQUIRE_EXTENSION", raising=False)
        with dask.config.set({"torpor.allow": [f"{__name__}.Allowed"], "torpor.trusted": False,
                              "temporary-directory": str(tmp_path_factory.mktemp("dask"))}):
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              memory_limit=0, dashboard_address=":0",
                              preload=["torpor.dask"],
                              data=(td.spill_buffer, {"target": "1GiB"})) as cluster, \
                    Client(cluster, serializers=families, deserializers=families) as c:
                c.walker = request.param
                yield c


def _workers(client):
    return sorted(client.scheduler_info()["workers"])


def _on(client, fn, *args, worker):
    return client.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False)


@cluster_test
def test_workers_use_the_walker_under_test(client):
    here = walker_here()
    assert here == (client.walker, client.walker)
    assert set(client.run(walker_here).values()) == {here}


@cluster_test
def test_arrays_reach_the_client(client):
    got = client.submit(make_arrays, pure=False).result(timeout=TIMEOUT)
    assert compare_arrays(got) == []
    want = make_arrays()
    for name in ("f64", "fortran", "big_endian_f", "zero_d", "empty", "structured"):
        assert_same_array(want[name], got[name])


@cluster_test
def test_arrays_move_between_worker_processes(client):
    a, b = _workers(client)
    before = client.run(td.counters, workers=[b])[b]
    made = _on(client, make_arrays, worker=a)
    checked = _on(client, compare_arrays, made, worker=b)
    assert checked.result(timeout=TIMEOUT) == []
    after = client.run(td.counters, workers=[b])[b]
    # Dask sends a dict's values one by one: one torpor value per array
    assert after["deserialized"] - before["deserialized"] >= len(make_arrays())
    assert after["bytes_in"] - before["bytes_in"] > sum(x.nbytes for x in make_arrays().values())


@cluster_test
def test_scattered_values_reach_the_workers(client):
    """The client's own data goes out as torpor frames too (Client serializers)."""
    a, _ = _workers(client)
    before = client.run(td.counters, workers=[a])[a]["deserialized"]
    [scattered] = client.scatter([make_arrays()], workers=[a])
    assert _on(client, compare_arrays, scattered, worker=a).result(timeout=TIMEOUT) == []
    assert client.run(td.counters, workers=[a])[a]["deserialized"] > before


@cluster_test
def test_shared_arrays_stay_shared(client):
    a, b = _workers(client)
    made = _on(client, make_shared, worker=a)
    assert _on(client, shared_identities, made, worker=b).result(timeout=TIMEOUT) == [True] * 6
    assert shared_identities(made.result(timeout=TIMEOUT)) == [True] * 6


@cluster_test
def test_dask_sends_the_items_of_a_plain_list_apart(client):
    """Documented in docs/DASK.md: Dask itself serializes the items of a task
    result that is a plain list, tuple, set or dict one by one (with any family),
    so identity between them is not kept; if Dask changes this, the docs must."""
    first, second = client.submit(make_pair, pure=False).result(timeout=TIMEOUT)
    np.testing.assert_array_equal(first, second)
    assert first is not second


@cluster_test
def test_a_refused_class_fails_the_result_clearly(client):
    future = client.submit(make_refused, pure=False)
    with pytest.raises(torpor.UnsafeLoadError) as e:
        future.result(timeout=TIMEOUT)
    message = str(e.value)
    assert f"{__name__}.Refused" in message and "torpor.allow" in message
    assert "docs/DASK.md" in message


@cluster_test
def test_config_set_before_the_cluster_reaches_the_workers(client):
    assert set(map(tuple, client.run(lambda: td.settings()[0]).values())) == \
        {(f"{__name__}.Allowed",)}
    a, b = _workers(client)
    made = _on(client, make_allowed, worker=a)
    moved = _on(client, relabel, made, worker=b)          # worker to worker
    got = moved.result(timeout=TIMEOUT)                    # and to the client
    assert got == Allowed(np.arange(100_000.0) * 2, "made on a worker, relabelled")


@cluster_test
def test_configure_allows_a_class_on_running_workers(client):
    a, b = _workers(client)
    allowed = [f"{__name__}.Allowed", f"{__name__}.Refused"]
    try:
        client.run(td.configure, allow=allowed)
        td.configure(allow=allowed)
        made = _on(client, make_refused, worker=a)
        assert _on(client, unwrap_refused, made, worker=b).result(timeout=TIMEOUT) == 5
        assert made.result(timeout=TIMEOUT).n == 5
    finally:
        client.run(td.configure, allow=allowed[:1])
        td.configure(allow=allowed[:1])


@cluster_test
def test_spilled_values_round_trip_through_torpor(client):
    a, _ = _workers(client)
    future = _on(client, make_arrays, worker=a)
    future.result(timeout=TIMEOUT)
    paths = client.run(evict_all, workers=[a])[a]
    assert str(future.key) in client.run(spilled_keys, workers=[a])[a]
    assert paths and all(torpor.info(p)["header"]["codec"] == "raw" for p in paths)
    assert {torpor.info(p)["header"]["implementation"] for p in paths} == {client.walker}
    # read back from disk on the worker, then sent here
    assert compare_arrays(_on(client, identity, future, worker=a).result(timeout=TIMEOUT)) == []
    assert compare_arrays(future.result(timeout=TIMEOUT)) == []
