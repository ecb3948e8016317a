"""The command line: ``torpor --version``, ``ls``, ``convert``, exit codes and
messages for every failure, a quiet closed pipe (torpor/cli.py), and the stream
outline ``ls`` is built on (torpor/format/outline.py)."""

import collections
import dataclasses
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import crafted
import torpor
from torpor import cli
from torpor.format.constants import CODEC_RAW, EXT_NDARRAY, EXT_NDARRAY_INLINE, EXT_OBJARRAY
from torpor.format.container import make_header
from torpor.format.outline import Outliner, outline_file
from torpor.format.writer import ContainerWriter

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def run(*args, env=None, cwd=None):
    """``python -m torpor ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "torpor", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def assert_one_line_error(r, code, *words):
    """A user error: the documented exit code, one line on stderr saying what
    happened, no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("torpor: error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def ls_items(path):
    with open(path, "rb") as f:
        return outline_file(f, str(path)).items


@dataclasses.dataclass
class Geometry:
    name: str
    points: object
    normals: object = None


class Slotted:
    __slots__ = ("weights", "__dict__")

    def __init__(self):
        self.weights = np.linspace(0, 1, 5)
        self.bias = np.zeros(2, np.float32)


class Holder:
    def __init__(self):
        self.a = np.ones(2, np.int8)


def scene():
    points = np.arange(30000, dtype=np.float32).reshape(10000, 3)
    ro = np.arange(5000.0)
    ro.flags.writeable = False
    grid = np.asfortranarray(np.ones((200, 100), np.int16))
    objs = np.empty((2, 3), dtype=object)
    objs[1, 2] = np.array([1, 2], np.uint8)
    odd = Geometry("odd", None)
    setattr(odd, "not a name", np.zeros(1, ">i4"))
    return {"geoms": [Geometry("a", np.zeros((4, 3))), Geometry("b", points, points)],
            "ro": ro, "grid": grid, "objs": objs, "od": collections.OrderedDict(k=np.ones(2)),
            "dd": collections.defaultdict(list, {"q": np.ones(3, np.complex64)}),
            "slotted": Slotted(), (1, "x"): np.zeros(0), "blob": bytes(300_000),
            "fs": frozenset({(np.float64(1.5), "t")}), "bag": {Holder()}, "odd": odd,
            "rec": np.zeros(3, [("a", "<f8"), ("b", "S4")])}


# --- ls ------------------------------------------------------------------------------

def test_ls_lists_every_array_with_its_path(tmp_path, impl):
    p = tmp_path / "scene.torpor"
    torpor.dump(scene(), p)
    got = [(it.path, it.kind, it.dtype, it.shape, it.codec, it.readonly, it.same_as)
           for it in ls_items(p)]
    assert got == [
        ("['geoms'][0].points", "array", "float64", (4, 3), "inline", False, None),
        ("['geoms'][1].points", "array", "float32", (10000, 3), "lz4", False, None),
        ("['geoms'][1].normals", "ref", None, None, None, False, "['geoms'][1].points"),
        ("['ro']", "array", "float64", (5000,), "lz4", True, None),
        ("['grid']", "array", "int16", (200, 100), "lz4", False, None),
        ("['objs']", "object array", "object", (2, 3), "inline", False, None),
        ("['objs'][1, 2]", "array", "uint8", (2,), "inline", False, None),
        ("['od']['k']", "array", "float64", (2,), "inline", False, None),
        ("['dd']['q']", "array", "complex64", (3,), "inline", False, None),
        ("['slotted'].bias", "array", "float32", (2,), "inline", False, None),
        ("['slotted'].weights", "array", "float64", (5,), "inline", False, None),
        ("[(1, 'x')]", "array", "float64", (0,), "inline", False, None),
        ("['blob']", "bytes", "bytes", (300_000,), "lz4", False, None),
        ("['bag']{0}.a", "array", "int8", (2,), "inline", False, None),
        ("['odd'].['not a name']", "array", ">i4", (1,), "inline", False, None),
        ("['rec']", "array", "[('a', '<f8'), ('b', 'S4')]", (3,), "inline", False, None),
    ]


def test_ls_sizes_match_the_table_of_contents(tmp_path, impl):
    p = tmp_path / "scene.torpor"
    torpor.dump(scene(), p, compress="gzip")
    sections = torpor.info(p)["sections"]
    items = ls_items(p)
    outside = [it for it in items if it.section is not None]
    assert sorted(it.section for it in outside) == [i for i, s in enumerate(sections)
                                                    if s["kind"] in ("array", "bytes")]
    for it in outside:
        s = sections[it.section]
        assert (it.stored, it.raw, it.codec) == (s["length"], s["raw_length"], "gzip")
        if it.kind == "array":
            assert it.dtype == str(np.dtype(s["dtype"])) and list(it.shape) == s["shape"]
    inline = {it.path: it for it in items if it.codec == "inline" and it.kind == "array"}
    assert inline["['geoms'][0].points"].stored == 4 * 3 * 8
    assert items[[it.path for it in items].index("['grid']")].order == "F"


def test_ls_numbers_objects_as_the_loader_does(tmp_path, impl):
    """The outline counts memo indices as the stream defines them: the count equals
    what the writer recorded in the table of contents, for every kind of object and
    every golden file (a REF is shown as the path of the object it names, so a
    wrong count would name the wrong one)."""
    p = tmp_path / "scene.torpor"
    cyc = [np.ones(3)]
    cyc.append((cyc, "back"))
    torpor.dump({"scene": scene(), "cyc": cyc, "again": cyc}, p)
    with open(p, "rb") as f:
        o = outline_file(f, str(p))
    assert o.objects == o.toc["memo"] > 50
    assert ("['cyc'][1][0]", "['cyc']") in [(it.path, it.same_as) for it in o.items]
    assert ("['again']", "['cyc']") in [(it.path, it.same_as) for it in o.items]
    for name in sorted(os.listdir(GOLDEN)):
        if name.endswith(".torpor"):
            with open(os.path.join(GOLDEN, name), "rb") as f:
                o = outline_file(f, name)
            assert o.objects == o.toc["memo"], name
            assert [it.path for it in o.items][:3] == ["['small_array']", "['big_array']",
                                                      "['fortran']"], name


def test_ls_reads_only_the_stream(tmp_path):
    """A file of 14 MiB of arrays is outlined from its header, table of contents
    and stream: a few KiB read, not the arrays."""
    p = tmp_path / "big.torpor"
    rng = np.random.default_rng(0)
    torpor.dump({"a": rng.random(1 << 20), "b": rng.random(1 << 20)}, p)
    assert p.stat().st_size > 12 << 20

    class Counting(io.FileIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.read_bytes += len(data)
            return data

        def readinto(self, b):
            n = super().readinto(b)
            Counting.read_bytes += n
            return n

    with Counting(p) as f:
        items = outline_file(f, str(p)).items
    assert [it.path for it in items] == ["['a']", "['b']"]
    assert Counting.read_bytes < 64 << 10


def test_ls_of_a_stream_that_cannot_seek(tmp_path, impl):
    p = tmp_path / "s.torpor"
    torpor.dump(scene(), p)

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.data.readinto(b)

    with open(p, "rb") as f:
        expected = outline_file(f, "x").items
    assert outline_file(io.BufferedReader(Pipe(p.read_bytes())), "x").items == expected


def test_ls_text_and_json(tmp_path, capsys):
    p = tmp_path / "t.torpor"
    a = np.zeros((1000, 20))
    torpor.dump({"a": a, "b": a, "small": np.arange(3, dtype=np.int8)}, p)
    assert cli.main(["ls", str(p)]) == 0
    lines = capsys.readouterr().out.splitlines()
    stored = torpor.info(p)["sections"][0]["length"]
    assert [line.split() for line in lines] == [
        ["['a']", "float64", "(1000,", "20)", *cli._human(stored).split(), "lz4"],
        ["['b']", "same", "object", "as", "['a']"],
        ["['small']", "int8", "(3,)", "3", "B", "inline"]]
    # columns aligned: each cell starts where the one above it does
    assert lines[0].index("float64") == lines[2].index("int8") == lines[1].index("same")
    assert cli.main(["ls", "--json", str(p)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"] == str(p) and doc["codec"] == "lz4"
    assert [(i["path"], i["kind"], i["shape"], i["same_as"]) for i in doc["items"]] == [
        ("['a']", "array", [1000, 20], None), ("['b']", "ref", None, "['a']"),
        ("['small']", "array", [3], None)]
    assert doc["items"][0]["raw"] == a.nbytes and doc["items"][0]["section"] == 0


def test_ls_of_a_root_array_and_an_empty_file(tmp_path, capsys):
    p = tmp_path / "r.torpor"
    torpor.dump(np.ones(3, np.float32), p)
    assert cli.main(["ls", str(p)]) == 0
    assert capsys.readouterr().out.split() == ["(root)", "float32", "(3,)", "12", "B", "inline"]
    torpor.dump({"nothing": [1, "two"]}, p)
    assert cli.main(["ls", str(p)]) == 0
    assert capsys.readouterr().out == ""


def test_ls_runs_nothing_from_the_file(tmp_path):
    """A file naming a module whose import has a side effect, and a call of
    os.system: ls lists the array inside the instance and imports and calls
    nothing."""
    (tmp_path / "evil.py").write_text(textwrap.dedent("""
        open(__file__ + ".imported", "w").close()
        class Thing:
            pass
    """))
    arr = np.arange(4, dtype=np.int32)
    inline = crafted.M(EXT_NDARRAY_INLINE, arr.tobytes(), "<i4", [4], False)
    obj = {"thing": crafted.I(crafted.G("evil", "Thing"), {"data": inline}),
           "call": crafted.R(crafted.G("os", "system"), f"touch {tmp_path / 'pwned'}")}
    p = tmp_path / "hostile.torpor"
    p.write_bytes(crafted.file_of(obj, ["evil.Thing", "os.system"]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    r = run("ls", p, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["['thing'].data", "int32", "(4,)", "16", "B", "inline"]
    assert not (tmp_path / "evil.py.imported").exists() and not (tmp_path / "pwned").exists()
    with pytest.raises(torpor.UnsafeLoadError):     # what a load does with it
        torpor.load(p)


def file_with_arrays(obj, arrays):
    """A valid torpor file whose stream is ``obj`` crafted, after an array section
    for each of ``arrays`` (sections 0, 1, ...)."""
    buf = io.BytesIO()
    w = ContainerWriter(buf, codec_id=CODEC_RAW, threads=1)
    w.write_header(make_header({}, "crafted", CODEC_RAW))
    for a in arrays:
        w.add_array(a, False)
    w.stream_frame(crafted.stream(obj))
    w.finish({"globals": [], "memo": 0})
    w.close()
    return buf.getvalue()


@pytest.mark.parametrize("case, words", [
    ("count", ["claims 4294967295 elements"]),
    ("ref", ["memo index 7, which does not exist"]),
    ("strref", ["string 3, which does not exist"]),
    ("twice", ["section 0 is used twice"]),
    ("section", ["names section 5"]),
    ("marker", ["has 2 elements"]),
    ("truncated", ["ends in the middle"]),
    ("trailing", ["bytes follow the end"]),
    ("dtype", ["dtype"]),
    ("shape", ["invalid array shape"]),
    ("objarray", ["holds 1 elements"]),
    ("ext", ["extension type 9"]),
])
def test_ls_of_a_hostile_stream_says_what_is_wrong(tmp_path, case, words):
    nd = crafted.M(EXT_NDARRAY, 0, "<f8", [2], False)
    obj = {
        "count": {"a": crafted.Raw(b"\xdd\xff\xff\xff\xff")},
        "ref": {"a": crafted.Ref(7)},
        "strref": {"a": crafted.Raw(b"\xd4\x02\x03")},
        "twice": {"a": nd, "b": nd},
        "section": {"a": crafted.M(EXT_NDARRAY, 5, "<f8", [2], False)},
        "marker": {"a": crafted.M(EXT_NDARRAY_INLINE, b"", "<f8")},
        "truncated": [1, 2, crafted.Raw(b"\xa5ab")],
        "trailing": crafted.Raw(b"\x91\x01\x02"),
        "dtype": {"a": crafted.M(EXT_NDARRAY_INLINE, b"", "<q9zz", [0], False)},
        "shape": {"a": crafted.M(EXT_NDARRAY_INLINE, b"", "<f8", ["x"], False)},
        "objarray": {"a": crafted.M(EXT_OBJARRAY, "|O", [2, 2], False, None)},
        "ext": {"a": crafted.Raw(b"\xd4\x09\x00")},
    }[case]
    p = tmp_path / "bad.torpor"
    p.write_bytes(file_with_arrays(obj, [np.zeros(2)]))
    r = run("ls", p)
    assert_one_line_error(r, 1, "the object stream is damaged", *words)


def test_ls_bounds_nesting(tmp_path):
    """Nesting deeper than msgpack's own limit (1024) is listed; deeper than
    --max-depth is refused with a message that says how to go on."""
    leaf = crafted.M(EXT_NDARRAY_INLINE, np.ones(1).tobytes(), "<f8", [1], False)
    p = tmp_path / "deep.torpor"
    p.write_bytes(crafted.file_of(crafted.nested(lambda x: [x], leaf, 5000)))
    r = run("ls", p)
    assert r.returncode == 0, r.stderr
    path = r.stdout.split()[0]
    assert path.startswith("[0]" * 24 + "...") and path.endswith("..." + "[0]" * 24)
    r = run("ls", "--max-depth", "1000", p)
    assert_one_line_error(r, 4, "nested more than 1000 levels", "--max-depth")


def test_ls_of_a_session_file_and_a_module_dump(tmp_path, capsys):
    class Models(torpor.StateManager):
        def take_snapshot(self, session, flags):
            return {"structures": [np.ones((500, 3), np.float32)]}

        @classmethod
        def restore_snapshot(cls, session, data):
            return cls()

        def reset_state(self, session):
            pass

    s = torpor.Session("viewer")
    s.models = Models()
    s.save(tmp_path / "s.torpor")
    assert cli.main(["ls", str(tmp_path / "s.torpor")]) == 0
    cap = capsys.readouterr()
    assert cap.out.split()[:3] == ["['managers']['models']<args>[3]['structures'][0]", "float32",
                                   "(500,"]
    assert "is a session file: 'torpor dump" in cap.err
    mod = types.ModuleType("scratch_mod")
    mod.arr, mod.f = np.zeros(50_000), (lambda a: a)
    torpor.dump_module(tmp_path / "m.torpor", module=mod)
    assert cli.main(["ls", str(tmp_path / "m.torpor")]) == 0
    assert capsys.readouterr().out.split()[:3] == ["['arr']", "float64", "(50000,)"]


def test_ls_keeps_keys_on_one_line(tmp_path):
    p = tmp_path / "k.torpor"
    torpor.dump({"two\nlines": np.ones(1), "x" * 500: np.ones(1)}, p)
    paths = [it.path for it in ls_items(p)]
    assert paths[0] == "['two\\nlines']"
    assert paths[1].startswith("['xxx") and "..." in paths[1] and len(paths[1]) < 60


def test_outliner_stream_directly():
    """``Outliner`` reads a stream on its own (no file): the memo count it reaches
    is the one a REF needs."""
    stream = crafted.stream([[1, 2], crafted.Ref(1), {"k": crafted.Ref(0)}])
    o = Outliner(stream, {"sections": []})
    assert o.run() == [] and len(o.memo_path) == 3


# --- exit codes and messages -----------------------------------------------------------

def test_version():
    for cmd in ([sys.executable, "-m", "torpor"], [shutil.which("torpor")]):
        if cmd[0] is None:
            continue            # no console script in this environment
        r = subprocess.run([*cmd, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith(f"torpor {torpor.__version__} ("), r
        assert torpor.implementation in r.stdout


@pytest.mark.parametrize("command", ["info", "verify", "dump", "ls", "convert"])
def test_every_command_has_help_with_an_example(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: torpor {command}")
    example = out.split("example:\n", 1)[1].strip()
    assert example.startswith(f"torpor {command} ") or example.startswith("torpor convert")


def test_top_level_help_lists_the_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "141" in out and "refused as unsafe" in out
    for c in ("info", "verify", "dump", "ls", "convert"):
        assert f"    {c} " in out


def test_user_errors_are_one_line_with_their_exit_code(tmp_path):
    good = tmp_path / "good.torpor"
    torpor.dump({"a": np.arange(100_000)}, good)
    cut = tmp_path / "cut.torpor"
    cut.write_bytes(good.read_bytes()[:-100])
    flipped = tmp_path / "flipped.torpor"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    empty = tmp_path / "empty.torpor"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.torpor"
    for cmd in ("info", "verify", "ls", "dump"):
        assert_one_line_error(run(cmd, missing), 3, str(missing), "No such file")
        assert_one_line_error(run(cmd, tmp_path), 3, "is a folder")
        assert_one_line_error(run(cmd, text), 4, "not a torpor file")
        assert_one_line_error(run(cmd, empty), 4, "empty")
        assert_one_line_error(run(cmd, cut), 1, "truncated")
    assert_one_line_error(run("verify", flipped), 1, "array section 0")
    assert run("ls", flipped).returncode == 0       # the damage is in the array, not read
    stream = [s for s in torpor.info(good)["sections"] if s["kind"] == "stream"][0]
    data = bytearray(good.read_bytes())
    data[stream["payload_offset"] + stream["length"] // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    assert_one_line_error(run("ls", flipped), 1, "stream section")
    assert_one_line_error(run("dump", good), 4, "not a session file")
    assert_one_line_error(run(), 2, "required")
    assert_one_line_error(run("frobnicate"), 2, "invalid choice")
    assert_one_line_error(run("ls"), 2, "required: file", "torpor ls --help")
    assert_one_line_error(run("ls", good, "--max-depth", "0"), 2, "positive")
    assert_one_line_error(run("info", good, "--bogus"), 2, "unrecognized arguments")
    assert run("verify", good).returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes and head")
def test_a_closed_pipe_is_quiet(tmp_path, walker_env):
    """``torpor ls big.torpor | head -1``: the first line, then nothing on stderr
    (no traceback, no "Exception ignored"), exit code 141."""
    p = tmp_path / "big.torpor"
    torpor.dump([np.ones(2) for _ in range(40_000)], p)
    ls = subprocess.Popen([sys.executable, "-m", "torpor", "ls", str(p)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=walker_env)
    head = subprocess.run(["head", "-1"], stdin=ls.stdout, capture_output=True, text=True)
    ls.stdout.close()
    err = ls.stderr.read().decode()
    assert ls.wait(timeout=120) == 141, err
    assert err == ""
    assert head.stdout.split() == ["[0]", "float64", "(2,)", "16", "B", "inline"]


def test_verify_and_info_keep_working(tmp_path, capsys):
    p = tmp_path / "v.torpor"
    torpor.dump({"a": np.arange(100_000)}, p, metadata={"who": "cli"})
    assert cli.main(["verify", str(p)]) == 0
    assert "OK (" in capsys.readouterr().out
    assert cli.main(["info", "--json", str(p)]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"] == {"who": "cli"}


# --- convert --------------------------------------------------------------------------

def assert_same(a, b):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        if a.dtype.hasobject:
            for x, y in zip(a.ravel(), b.ravel()):
                assert_same(x, y)
        else:
            assert a.tobytes() == b.tobytes()
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert type(a) is type(b) and a == b


def data():
    return {"x": np.arange(50_000, dtype=np.float32).reshape(500, 100),
            "labels": ["a", "b"], "f": np.asfortranarray(np.ones((30, 40), ">i8")),
            "rec": np.zeros(4, [("t", "<f8"), ("n", "S3")]), "n": 3, "t": (1, 2.5)}


def test_convert_pickle_needs_trusted(tmp_path, walker_env):
    src, out = tmp_path / "d.pkl", tmp_path / "d.torpor"
    src.write_bytes(pickle.dumps(data()))
    r = run("convert", src, out, env=walker_env)
    assert_one_line_error(r, 5, "runs whatever code it names",
                          f"torpor convert --trusted {src} {out}")
    assert not out.exists()
    r = run("convert", "--trusted", src, out, env=walker_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{src} (pickle) -> {out}: ") and r.stderr == ""
    # the very object the pickle holds (a safe load: plain data only)
    assert_same(torpor.load(out), pickle.loads(src.read_bytes()))
    assert torpor.info(out)["metadata"] == {"converted_from": {"file": "d.pkl", "format": "pickle"}}


def test_convert_joblib(tmp_path, walker_env):
    joblib = pytest.importorskip("joblib")
    src, out = tmp_path / "model.joblib", tmp_path / "model.torpor"
    joblib.dump(data(), src, compress=3)
    assert_one_line_error(run("convert", src, out, env=walker_env), 5, "joblib", "--trusted")
    r = run("convert", "--trusted", "--compress", "gzip", src, out, env=walker_env)
    assert r.returncode == 0, r.stderr
    assert_same(torpor.load(out), joblib.load(src))
    assert torpor.info(out)["header"]["codec"] == "gzip"


def test_convert_npy_and_npz(tmp_path, walker_env):
    arr = np.asfortranarray(np.arange(24, dtype=">f4").reshape(2, 3, 4))
    np.save(tmp_path / "a.npy", arr)
    r = run("convert", "--compress", "none", tmp_path / "a.npy", tmp_path / "a.torpor",
            env=walker_env)
    assert r.returncode == 0, r.stderr
    assert_same(torpor.load(tmp_path / "a.torpor"), arr)
    assert torpor.info(tmp_path / "a.torpor")["mmap"]["mappable"] == 0   # inline: small
    big = np.random.default_rng(1).random((300, 200))
    np.savez(tmp_path / "b.npz", big=big, small=np.arange(5), rec=data()["rec"])
    r = run("convert", "--compress", "none", tmp_path / "b.npz", tmp_path / "b.torpor",
            env=walker_env)
    assert r.returncode == 0, r.stderr
    assert_same(torpor.load(tmp_path / "b.torpor"),
                {"big": big, "small": np.arange(5), "rec": data()["rec"]})
    assert torpor.info(tmp_path / "b.torpor")["mmap"]["mappable"] == 1


def test_convert_object_arrays_need_trusted(tmp_path, walker_env):
    objs = np.array([np.arange(3), "text", None], dtype=object)
    np.save(tmp_path / "o.npy", objs, allow_pickle=True)
    np.savez(tmp_path / "o.npz", plain=np.ones(2), objs=objs)
    for name in ("o.npy", "o.npz"):
        out = tmp_path / (name + ".torpor")
        r = run("convert", tmp_path / name, out, env=walker_env)
        assert_one_line_error(r, 5, "object arrays", "runs whatever code", "--trusted")
        assert not out.exists()
        r = run("convert", "--trusted", tmp_path / name, out, env=walker_env)
        assert r.returncode == 0, r.stderr
    assert_same(torpor.load(tmp_path / "o.npy.torpor"), objs)
    assert_same(torpor.load(tmp_path / "o.npz.torpor"), {"plain": np.ones(2), "objs": objs})


def test_convert_failures(tmp_path):
    good = tmp_path / "d.pkl"
    good.write_bytes(pickle.dumps([1, 2]))
    assert_one_line_error(run("convert", tmp_path / "nope.pkl", tmp_path / "o.torpor"), 3,
                          "No such file")
    weird = tmp_path / "d.bin"
    weird.write_bytes(pickle.dumps([1, 2]))
    assert_one_line_error(run("convert", weird, tmp_path / "o.torpor"), 2, "cannot tell",
                          "--from")
    r = run("convert", "--from", "pickle", "--trusted", weird, tmp_path / "o.torpor")
    assert r.returncode == 0 and torpor.load(tmp_path / "o.torpor") == [1, 2]
    assert_one_line_error(run("convert", "--trusted", good, good), 2, "input file itself")
    assert pickle.loads(good.read_bytes()) == [1, 2]
    garbage = tmp_path / "g.pkl"
    garbage.write_bytes(b"\x80\x05not a pickle at all")
    assert_one_line_error(run("convert", "--trusted", garbage, tmp_path / "g.torpor"), 6,
                          "could not be read as pickle")
    assert_one_line_error(run("convert", tmp_path / "g.npy", tmp_path / "o.torpor"), 3)
    (tmp_path / "g.npy").write_bytes(b"\x93NUMPY garbage")
    assert_one_line_error(run("convert", tmp_path / "g.npy", tmp_path / "x.torpor"), 6,
                          "could not be read as npy")
    assert_one_line_error(run("convert", good, tmp_path / "no" / "such" / "dir.torpor",
                              "--trusted"), 3)


def test_convert_says_which_classes_loading_needs(tmp_path):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        class Model:
            def __init__(self, w):
                self.w = w
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    code = ("import pickle, numpy as np, mymodels; "
            "open('m.pkl', 'wb').write(pickle.dumps(mymodels.Model(np.ones(3))))")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)
    r = run("convert", "--trusted", "m.pkl", "m.torpor", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "allow=['mymodels.Model']" in r.stderr
    r = run("ls", "m.torpor", env=env, cwd=tmp_path)
    assert r.stdout.split() == [".w", "float64", "(3,)", "24", "B", "inline"]
