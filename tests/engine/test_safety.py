import io
import os
import pickle

import pytest

import torpor
from torpor.format import messagepack as _msgpack
from helpers import Pipe
from torpor.format.constants import EXT_GLOBAL, EXT_REDUCE, EXT_TUPLE


def global_stream(module, qualname):
    """A hand-built object stream holding one GLOBAL reference."""
    out = bytearray()
    _msgpack.pack_array_header(out, 3)
    _msgpack.pack_ext(out, EXT_GLOBAL, b"\x00")
    _msgpack.pack_str_bytes(out, module)
    _msgpack.pack_str_bytes(out, qualname)
    return bytes(out)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class Model:
    def __init__(self):
        self.x = 1


def test_reduce_to_os_system_is_refused(impl, monkeypatch):
    data = torpor.dumps({"payload": Evil()})
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(torpor.UnsafeLoadError) as ei:
        torpor.loads(data)
    assert "posix.system" in str(ei.value) or "os.system" in str(ei.value)
    assert "trusted=True" in str(ei.value) and "allow=" in str(ei.value)
    assert not called


def test_unsafe_refused_before_import(impl):
    # a stream naming a module that must never be imported
    dec = impl.Decoder(torpor.engine.safety.Policy(), {})
    with pytest.raises(torpor.UnsafeLoadError) as ei:
        dec.decode(global_stream(b"xx_notamod_", b"Thing"))
    assert "xx_notamod_.Thing" in str(ei.value)
    import sys
    assert "xx_notamod_" not in sys.modules


def test_checksums_protect_the_stream(impl):
    data = torpor.dumps(Model()).replace(b"test_safety", b"xx_notamod_")
    with pytest.raises(torpor.CorruptFileError):
        torpor.loads(data)


def test_sequential_stream_also_refuses(impl):
    data = torpor.dumps([Evil()])
    with pytest.raises(torpor.UnsafeLoadError):
        torpor.load(io.BufferedReader(Pipe(data)))


def test_user_class_needs_allow(impl):
    data = torpor.dumps(Model())
    with pytest.raises(torpor.UnsafeLoadError, match="test_safety.Model"):
        torpor.loads(data)
    assert torpor.loads(data, allow=["test_safety.Model"]).x == 1
    assert torpor.loads(data, allow=["test_safety.*"]).x == 1
    assert torpor.loads(data, allow=[Model]).x == 1
    assert torpor.loads(data, trusted=True).x == 1
    with pytest.raises(torpor.UnsafeLoadError):
        torpor.loads(data, allow=["other.*"])


def test_registered_class_is_allowed(impl):
    torpor.register_safe_class(Model)
    try:
        assert type(torpor.loads(torpor.dumps(Model()))) is Model
    finally:
        torpor.unregister_safe_class(Model)
    with pytest.raises(torpor.UnsafeLoadError):
        torpor.loads(torpor.dumps(Model()))


def test_trusted_runs_reduce(impl, monkeypatch):
    data = torpor.dumps(Evil())
    called = []
    # the file names the function where it lives (posix.system on Linux)
    import sys
    monkeypatch.setattr(sys.modules[os.system.__module__], "system", lambda *a: called.append(a) or 0)
    with pytest.raises(torpor.UnsafeLoadError):
        torpor.loads(data)
    assert not called
    assert torpor.loads(data, trusted=True) == 0
    assert called == [("echo pwned > /dev/null",)]


def test_reduce_callable_must_be_a_global(impl):
    # A stream whose reduce callable is a plain string, not a global reference
    out = bytearray()
    _msgpack.pack_array_header(out, 6)
    _msgpack.pack_ext(out, EXT_REDUCE, b"\x00")
    _msgpack.pack_str_bytes(out, b"os.system")
    _msgpack.pack_array_header(out, 2)
    _msgpack.pack_ext(out, EXT_TUPLE, b"\x00")
    _msgpack.pack_str_bytes(out, b"ls")
    out += b"\xc0\xc0\xc0"
    dec = impl.Decoder(torpor.engine.safety.Policy(), {})
    with pytest.raises(torpor.CorruptFileError, match="global reference"):
        dec.decode(bytes(out))


def test_invalid_global_name(impl):
    dec = impl.Decoder(torpor.engine.safety.Policy(trusted=True), {})
    with pytest.raises(torpor.CorruptFileError, match="invalid global"):
        dec.decode(global_stream(b"os;rm", b"x"))


def test_torpor_never_unpickles():
    # torpor files are not pickles; the format has no pickle opcode path at all
    data = torpor.dumps({"a": 1})
    with pytest.raises(Exception):
        pickle.loads(data)
