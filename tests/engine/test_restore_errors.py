"""A good file is never called corrupt: when code that is not torpor's fails
while an object is rebuilt, the load raises RestoreError chained to that error
and naming the object's path; a class that cannot be found is a
MissingClassError naming it and its module."""

import sys
import types

import pytest

import torpor


class BadState:
    def __init__(self):
        self.x = 1

    def __setstate__(self, state):
        raise ValueError("refusing this state")


class BadReduce:
    def __reduce__(self):
        return _explode, (1,)


def _explode(x):
    raise KeyError("no such thing")


class BadNew:
    def __new__(cls, *a):
        if a:
            return super().__new__(cls)
        raise RuntimeError("needs an argument")

    def __reduce__(self):
        return BadNew, ()


class BadListItems(list):
    def extend(self, items):
        raise OSError("cannot extend")


def _roundtrip_error(obj):
    data = torpor.dumps(obj)
    with pytest.raises(torpor.RestoreError) as ei:
        torpor.loads(data, trusted=True)
    assert not isinstance(ei.value, torpor.CorruptFileError)
    return ei.value


def test_setstate_error_names_path_and_chains(impl):
    e = _roundtrip_error({"models": [1, BadState()]})
    assert isinstance(e.__cause__, ValueError)
    assert "refusing this state" in str(e)
    assert "at root['models'][1];" in str(e)
    assert "BadState" in str(e)


def test_reduce_callable_error(impl):
    e = _roundtrip_error([{"k": BadReduce()}])
    assert isinstance(e.__cause__, KeyError)
    assert "at root[0]['k'];" in str(e)
    assert "_explode" in str(e)


def test_reduce_callable_error_inside_tuple_and_attributes(impl):
    class Holder:
        pass
    Holder.__qualname__ = "Holder"
    h = Holder()
    h.inner = (0, BadNew(1))
    sys.modules[__name__].Holder = Holder
    try:
        e = _roundtrip_error(h)
    finally:
        del sys.modules[__name__].Holder
    assert isinstance(e.__cause__, RuntimeError)
    assert "at root.inner[1];" in str(e)


def test_apply_state_error(impl):
    e = _roundtrip_error({"a": BadListItems([1, 2])})
    assert isinstance(e.__cause__, OSError)
    assert "at root['a'];" in str(e)


def test_missing_module_is_missing_class_error(impl):
    mod = types.ModuleType("torpor_test_vanishing")
    exec("class Thing:\n    pass\n", mod.__dict__)
    mod.Thing.__module__ = "torpor_test_vanishing"
    sys.modules["torpor_test_vanishing"] = mod
    try:
        data = torpor.dumps([mod.Thing()])
    finally:
        del sys.modules["torpor_test_vanishing"]
    with pytest.raises(torpor.MissingClassError) as ei:
        torpor.loads(data, trusted=True)
    e = ei.value
    assert isinstance(e, torpor.RestoreError) and not isinstance(e, torpor.CorruptFileError)
    assert e.module == "torpor_test_vanishing" and e.qualname == "Thing"
    assert "not installed" in str(e) and "torpor_test_vanishing.Thing" in str(e)


def test_renamed_class_is_missing_class_error(impl):
    class Gone:
        pass
    Gone.__qualname__ = "Gone"
    sys.modules[__name__].Gone = Gone
    try:
        data = torpor.dumps(Gone())
    finally:
        del sys.modules[__name__].Gone
    with pytest.raises(torpor.MissingClassError) as ei:
        torpor.loads(data, trusted=True)
    assert ei.value.qualname == "Gone" and "defines no 'Gone'" in str(ei.value)


def test_module_whose_import_fails_is_restore_error(impl, tmp_path, monkeypatch):
    (tmp_path / "torpor_test_breaks.py").write_text("class K:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import torpor_test_breaks
    data = torpor.dumps(torpor_test_breaks.K())
    del sys.modules["torpor_test_breaks"]
    (tmp_path / "torpor_test_breaks.py").write_text("raise ImportError('broken on purpose')\n")
    import importlib
    importlib.invalidate_caches()
    with pytest.raises(torpor.RestoreError) as ei:
        torpor.loads(data, trusted=True)
    assert not isinstance(ei.value, (torpor.MissingClassError, torpor.CorruptFileError))
    assert "broken on purpose" in str(ei.value)
    sys.modules.pop("torpor_test_breaks", None)


def test_damaged_stream_is_still_corrupt(impl):
    """The line between the two: a stream that breaks the format is corrupt."""
    from torpor.engine.safety import Policy
    dec = impl.Decoder(Policy(), {})
    with pytest.raises(torpor.CorruptFileError):
        dec.decode(b"\x92\x01")


class Key:
    """A key whose __hash__ fails once the class is 'broken' (as a key in a
    cycle whose attributes are not set yet would)."""
    broken = False

    def __init__(self, n):
        self.n = n

    def __hash__(self):
        if Key.broken:
            raise RuntimeError("hash needs n")
        return hash(self.n)

    def __eq__(self, other):
        return isinstance(other, Key) and other.n == self.n


@pytest.mark.parametrize("make, where", [
    (lambda: {"d": {Key(1): 1}}, "the dict at root['d']"),
    (lambda: {"s": {Key(1), Key(2)}}, "the set at root['s']"),
    (lambda: {"f": frozenset({Key(1)})}, "the frozenset at root['f']"),
    (lambda: {"d": {Key(i): i for i in range(200)}}, "the dict at root['d']"),
])
def test_a_failing_key_hash_is_a_restore_error(impl, monkeypatch, make, where):
    data = torpor.dumps(make())
    monkeypatch.setattr(Key, "broken", True)
    with pytest.raises(torpor.RestoreError) as ei:
        torpor.loads(data, trusted=True)
    assert not isinstance(ei.value, torpor.CorruptFileError)
    assert where in str(ei.value) and "hash needs n" in str(ei.value)
    assert isinstance(ei.value.__cause__, RuntimeError)


def test_an_unhashable_key_in_a_stream_is_corrupt(impl):
    """No good file has a list as a set item: that is damage, not user code."""
    from crafted import S, file_of
    with pytest.raises(torpor.CorruptFileError, match="unhashable list"):
        torpor.loads(file_of(S([[1]])))


def test_a_lookup_that_fails_inside_a_module_is_a_restore_error(impl, monkeypatch):
    mod = types.ModuleType("torpor_test_lazy")

    def __getattr__(name):
        raise ImportError(f"lazy loader could not load {name}")
    mod.__getattr__ = __getattr__
    monkeypatch.setitem(sys.modules, "torpor_test_lazy", mod)
    from crafted import G, file_of
    with pytest.raises(torpor.RestoreError, match="lazy loader") as ei:
        torpor.loads(file_of(G("torpor_test_lazy", "Thing")), trusted=True)
    assert not isinstance(ei.value, (torpor.MissingClassError, torpor.CorruptFileError))


class WithState:
    def __reduce__(self):
        return WithState, (), {"lock": (i for i in ())}, iter([1]), None


def test_save_errors_name_the_state_of_a_reduced_object(impl):
    """The path into a reduced object's state says so (it was named as if it were
    the reduce callable)."""
    with pytest.raises(torpor.UnsupportedObjectError) as ei:
        torpor.dumps({"w": WithState()})
    assert ei.value.path == "root['w'].<state>['lock']"
