import io
import os
import subprocess
import sys

import numpy as np
import pytest

import torpor
from helpers import Pipe, assert_same_array


def test_dump_load_path_and_fileobj(tmp_path, impl):
    obj = {"x": np.arange(50_000.0), "y": [1, "two"]}
    p = tmp_path / "o.torpor"
    torpor.dump(obj, p)
    torpor.dump(obj, str(tmp_path / "s.torpor"))
    with open(tmp_path / "f.torpor", "wb") as f:
        torpor.dump(obj, f)
    for name in ("o.torpor", "s.torpor", "f.torpor"):
        with open(tmp_path / name, "rb") as f:
            out = torpor.load(f)
        assert out["y"] == obj["y"]
        assert_same_array(obj["x"], out["x"])


def test_non_seekable_write_and_read(impl):
    obj = {"arr": np.arange(3_000_000, dtype=np.int16), "s": "text"}
    w = Pipe()
    torpor.dump(obj, w)
    out = torpor.load(io.BufferedReader(Pipe(bytes(w.out))))
    assert out["s"] == "text"
    assert_same_array(obj["arr"], out["arr"])
    assert torpor.info(io.BufferedReader(Pipe(bytes(w.out))))["sections"]


@pytest.mark.parametrize("shuffle", [False, True])
def test_lz4_section_decodes_with_the_lz4_tool(tmp_path, shuffle):
    """Each lz4 section is a valid lz4 stream: `lz4 -d` skips the chunk records
    (skippable frames) and decodes the chunks, stored ones included."""
    import shutil
    lz4_tool = shutil.which("lz4")
    assert lz4_tool, "the lz4 command-line tool is needed (.ci/run installs Debian's lz4)"
    rng = np.random.default_rng(1)
    a = np.concatenate([np.arange(1_500_000, dtype=np.int64),
                        rng.integers(0, 2**62, 1_000_000)])      # compressible + not
    p = tmp_path / "l.torpor"
    torpor.dump(a, p, shuffle=shuffle)
    sec = torpor.info(p)["sections"][0]
    payload = p.read_bytes()[sec["payload_offset"]:sec["payload_offset"] + sec["length"]]
    r = subprocess.run([lz4_tool, "-d", "-c"], input=payload, capture_output=True)
    assert r.returncode == 0, r.stderr
    if shuffle:
        assert len(r.stdout) == a.nbytes       # shuffled bytes: the filter is documented
    else:
        assert r.stdout == a.tobytes()


def test_lz4_tool_reads_bit_planes_whose_noise_planes_went_in_as_they_are(tmp_path):
    """Noisy floats: mode 8 chunks, whose noise bytes are byte planes (a stored
    lz4 block of their own) and whose next block starts with the noise bit
    planes of byte 3 as one literal run (format/codec.py, bits_plain), the
    exponent's planes XORed with their neighbours. `lz4 -d` gives the documented
    layout of every block."""
    import shutil
    from torpor.format import codec
    from torpor.format.constants import CHUNK_SIZE
    lz4_tool = shutil.which("lz4")
    assert lz4_tool, "the lz4 command-line tool is needed (.ci/run installs Debian's lz4)"
    a = np.random.default_rng(2).standard_normal(1_200_000).astype("<f4")
    enc = codec.ChunkEncoder(codec.CODEC_LZ4)
    mode, (mask, plain, _, xor) = enc.choose_mode(memoryview(a).cast("B")[:CHUNK_SIZE], 4, *enc._scratch())
    assert mode == codec.MODE_XOR_BITS and mask == 0b111 and plain >= 1 and xor == plain + 1
    p = tmp_path / "n.torpor"
    torpor.dump(a, p)
    sec = torpor.info(p)["sections"][0]
    assert sec["length"] < 0.97 * a.nbytes
    payload = p.read_bytes()[sec["payload_offset"]:sec["payload_offset"] + sec["length"]]
    r = subprocess.run([lz4_tool, "-d", "-c"], input=payload, capture_output=True)
    assert r.returncode == 0, r.stderr
    raw, block = a.tobytes(), codec.bits_block(codec.BITS_SHIFT, 4)
    want = b"".join(codec._py_bits_block(raw[c:c + CHUNK_SIZE][b:b + block], 4, False, mask, xor)
                    for c in range(0, len(raw), CHUNK_SIZE)
                    for b in range(0, len(raw[c:c + CHUNK_SIZE]), block))
    assert r.stdout == want


def test_metadata_and_info(tmp_path):
    p = tmp_path / "m.torpor"
    torpor.dump({"a": np.zeros((10, 10000), np.float32)}, p, metadata={"user": "ann", "n": 3})
    info = torpor.info(p)
    assert info["metadata"] == {"user": "ann", "n": 3}
    h = info["header"]
    assert h["format"] == torpor.FORMAT_VERSION == 4 and h["torpor"] == torpor.__version__ and h["python"] == sys.version.split()[0]
    assert h["created"].endswith("+00:00")
    arr = [s for s in info["sections"] if s["kind"] == "array"]
    assert arr[0]["dtype"] == "<f4" and arr[0]["shape"] == [10, 10000] and arr[0]["order"] == "C"
    assert arr[0]["payload_offset"] % 64 == 0


def test_bad_metadata_and_options():
    with pytest.raises(torpor.FormatError, match="metadata"):
        torpor.dumps(1, metadata={"when": object()})
    with pytest.raises(TypeError, match="dict"):
        torpor.dumps(1, metadata=[1])
    with pytest.raises(ValueError, match="compress"):
        torpor.dumps(1, compress="zstd")
    with pytest.raises(TypeError, match="file"):
        torpor.dump(1, 12)


class Boom:
    def __reduce__(self):
        raise KeyboardInterrupt


def test_failed_save_keeps_old_file(tmp_path, impl):
    p = tmp_path / "keep.torpor"
    torpor.dump({"v": 1}, p)
    before = p.read_bytes()
    with pytest.raises(torpor.UnsupportedObjectError):
        torpor.dump({"v": 2, "big": np.ones(3_000_000), "bad": (i for i in ())}, p)
    with pytest.raises(KeyboardInterrupt):
        torpor.dump([np.ones(3_000_000), Boom()], p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.torpor"]
    assert torpor.load(p) == {"v": 1}


def test_save_to_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        torpor.dump(1, tmp_path / "nope" / "x.torpor")


def test_save_keeps_file_mode(tmp_path):
    p = tmp_path / "mode.torpor"
    torpor.dump(1, p)
    os.chmod(p, 0o640)
    torpor.dump(2, p)
    assert (p.stat().st_mode & 0o777) == 0o640


def test_cli_info_and_verify(tmp_path):
    p = tmp_path / "c.torpor"
    torpor.dump({"a": np.arange(100_000)}, p, metadata={"who": "cli"})
    r = subprocess.run([sys.executable, "-m", "torpor", "info", str(p)], capture_output=True, text=True)
    assert r.returncode == 0 and "who" in r.stdout and "array" in r.stdout
    r = subprocess.run([sys.executable, "-m", "torpor", "verify", str(p)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout
    p.write_bytes(p.read_bytes()[:-30])
    r = subprocess.run([sys.executable, "-m", "torpor", "verify", str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and "truncated" in r.stderr


def test_compiled_walker_is_loaded_when_required():
    """With TORPOR_REQUIRE_EXTENSION=1 (as CI sets it) the compiled walker and filters
    must be the ones in use: a silently broken build fails here."""
    code = ("import torpor, torpor.format.codec as c, torpor.storage.iohints as h; "
            "print(torpor.implementation, c.NATIVE_FILTERS, h._iohints is not None)")
    env = dict(os.environ, TORPOR_REQUIRE_EXTENSION="1")
    env.pop("TORPOR_PUREPYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["cython", "True", "True"], out.stderr


@pytest.mark.parametrize("module, path", [("torpor.format.codec", "torpor/format/_filters"),
                                          ("torpor.storage.iohints", "torpor/storage/_iohints"),
                                          ("torpor.engine.select", "torpor/engine/_walker")])
def test_a_missing_extension_fails_when_required(tmp_path, module, path):
    """TORPOR_REQUIRE_EXTENSION turns a missing extension into an ImportError
    (each of the three: a broken build cannot pass as pure Python)."""
    blocker = tmp_path / "block.py"
    blocker.write_text(
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name == {path.replace('/', '.')!r}:\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, B())\n")
    code = f"import block, {module}"
    env = dict(os.environ, TORPOR_REQUIRE_EXTENSION="1", PYTHONPATH=os.pathsep.join(
        [str(tmp_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop("TORPOR_PUREPYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "TORPOR_REQUIRE_EXTENSION" in out.stderr, out.stderr


def test_purepython_env_selects_fallback():
    code = "import torpor, torpor.format.codec as c; print(torpor.implementation, c.NATIVE_FILTERS)"
    env = dict(os.environ, TORPOR_PUREPYTHON="1")
    env.pop("TORPOR_REQUIRE_EXTENSION", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["python", "False"], out.stderr


def test_files_cross_implementations(tmp_path):
    """A file written by one walker loads in the other with equal results."""
    obj = {"a": [1, (2, 3), {"x": np.arange(10)}], "s": {"q"}, "big": np.ones((100, 1000))}
    env = dict(os.environ, TORPOR_PUREPYTHON="1")
    env.pop("TORPOR_REQUIRE_EXTENSION", None)
    p = tmp_path / "py.torpor"
    src = ("import sys, numpy as np, torpor; torpor.dump({'a': [1, (2, 3), {'x': np.arange(10)}], "
           "'s': {'q'}, 'big': np.ones((100, 1000))}, sys.argv[1]); print(torpor.implementation)")
    r = subprocess.run([sys.executable, "-c", src, str(p)], env=env, capture_output=True, text=True)
    assert r.stdout.strip() == "python", r.stderr
    assert torpor.info(p)["header"]["implementation"] == "python"
    out = torpor.load(p)
    assert out["a"][:2] == obj["a"][:2] and out["s"] == obj["s"]
    assert_same_array(obj["big"], out["big"])


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (0, ValueError), ("4", TypeError),
                                        (1.5, TypeError), (True, TypeError)])
def test_bad_threads_are_refused_clearly(tmp_path, bad, error):
    """threads=-1 or "4" used to be accepted silently."""
    p = tmp_path / "t.torpor"
    with pytest.raises(error, match="threads must be"):
        torpor.dump([1], p, threads=bad)
    assert not p.exists()
    torpor.dump([1], p)
    for call in (lambda: torpor.load(p, threads=bad), lambda: torpor.verify(p, threads=bad),
                 lambda: torpor.loads(torpor.dumps([1]), threads=bad)):
        with pytest.raises(error, match="threads must be"):
            call()
    assert torpor.load(p, threads=1) == [1]
    assert torpor.load(p, threads=np.int64(2)) == [1]      # any integer type


@pytest.mark.parametrize("bad", [0, -5, "10", None])
def test_bad_max_depth_is_refused(bad):
    with pytest.raises((ValueError, TypeError), match="max_depth"):
        torpor.dumps([1], max_depth=bad)


def test_old_module_paths_still_import():
    """The modules' paths before the packages keep working."""
    import importlib
    import torpor.session.state
    for old, new in [("torpor.state", "torpor.session.state"),
                     ("torpor.triggers", "torpor.session.triggers"),
                     ("torpor.modules", "torpor.interactive.modules"),
                     ("torpor.ipython", "torpor.interactive.ipython"),
                     ("torpor.fallback", "torpor.engine.fallback")]:
        assert importlib.import_module(old) is importlib.import_module(new)
    from torpor.triggers import DEREGISTER
    assert DEREGISTER == torpor.session.DEREGISTER


def test_torpors_own_classes_keep_their_names_in_files():
    """Objects of torpor's own classes are written under the names the first files
    used, and load without importing the module those names mention."""
    from torpor.interactive.modules import CodeDescriptor, SavedFile
    from torpor.session import NamedObject
    f = SavedFile("x.txt", "rb", 3, False)
    n = NamedObject(1, "app.Thing", 1, {"a": 1})
    data = torpor.dumps([f, n])
    names = set(torpor.info(io.BytesIO(data))["globals"])
    assert "torpor.modules.SavedFile" in names and "torpor._session_io.NamedObject" in names
    back = torpor.loads(data, trusted=True)
    assert back[0] == f and type(back[1]) is NamedObject and back[1].data == {"a": 1}
    assert CodeDescriptor is torpor.modules.CodeDescriptor


def _module_dump(path):
    import types
    mod = types.ModuleType("scratch_mod")     # not importable by name: code saved by value
    exec("import json\nimport numpy as np\nx = 5\narr = np.arange(50_000.0)\n"
         "def f(a, b=2):\n    return a + b\n", mod.__dict__)
    torpor.dump_module(path, module=mod)


def test_load_of_a_module_dump_points_to_load_module(tmp_path, impl):
    p = tmp_path / "m.torpor"
    _module_dump(p)
    for stream in (False, True):
        for trusted in (False, True):
            with pytest.raises(torpor.FormatError) as ei:
                torpor.load(Pipe(p.read_bytes(), piece=4096) if stream else p, trusted=trusted)
            msg = str(ei.value)
            assert not isinstance(ei.value, torpor.UnsafeLoadError) and "allow=" not in msg
            assert "module dump of module 'scratch_mod'" in msg
            assert "torpor.load_module(" in msg and "torpor.load_module_asdict(" in msg
    assert torpor.info(p)["module_dump"] == "scratch_mod"
    assert torpor.load_module_asdict(p)["x"] == 5


def test_cli_dump_of_a_module_dump(tmp_path, capsys):
    from torpor import cli
    p = tmp_path / "m.torpor"
    _module_dump(p)
    assert cli.main(["dump", str(p)]) == 0
    cap = capsys.readouterr()
    assert "written by torpor.dump " not in cap.out + cap.err
    assert f"torpor module dump {p}: module 'scratch_mod', written by torpor.dump_module" in cap.out
    lines = cap.out.splitlines()
    assert "5 variables:" in lines and "  np = <module numpy>" in lines
    assert "  x = 5" in lines and "  json = <module json>" in lines
    assert "  arr = ndarray(float64, shape=(50000,))" in lines
    assert any(s.startswith("  f = <function scratch_mod.f(a, b=2)") and "not loaded" in s
               for s in lines)
    assert cli.main(["info", str(p)]) == 0
    assert "a module dump of module 'scratch_mod'" in capsys.readouterr().out


def test_cli_dump_of_a_module_dump_with_classes_it_will_not_import(tmp_path, capsys):
    import argparse
    import types

    from torpor import cli
    mod = types.ModuleType("scratch_mod")
    mod.opts, mod.x = argparse.Namespace(a=1), 3
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=mod)
    # a class the command will not import is shown as an inert stand-in (nothing
    # from the file is imported or run), never an allow= list of internals
    assert cli.main(["dump", str(p)]) == 0
    cap = capsys.readouterr()
    assert "module 'scratch_mod'" in cap.out and "allow=" not in cap.out + cap.err
    assert "opts = <argparse.Namespace instance (class not loaded)>" in cap.out
