"""Issue 15, fidelity: what pickle (protocol 5), dill or cloudpickle round-trip,
torpor round-trips, with equal values, the same types and the same sharing; and
what cannot be saved faithfully is refused at save time, never written in a form
that fails at load. Every test runs on both walkers."""

import copyreg
import functools
import pickle
import threading
import typing

import numpy as np
import pytest

import torpor
from crafted import D, G, R, T, file_of
from reduce_apps import Factory, FromState, Rebuilt, pair
from torpor.errors import CorruptFileError, UnsafeLoadError, UnsupportedObjectError


# --- reduce callables that are not module-level names -------------------------------

class ByPartial:
    def __init__(self, b):
        self.b = b

    def __reduce__(self):
        return functools.partial(pair, 1), (self.b,)


def test_classmethod_reduce_callable(impl):
    objs = [Rebuilt(3), FromState(4)]
    out = torpor.loads(torpor.dumps(objs), trusted=True)
    assert [type(o) for o in out] == [Rebuilt, FromState] and [o.x for o in out] == [3, 4]
    # safe mode: the callable is allowed exactly when its owner class is allowed
    allowed = torpor.loads(torpor.dumps(objs), allow=[Rebuilt, FromState])
    assert [type(o) for o in allowed] == [Rebuilt, FromState]
    assert pickle.loads(pickle.dumps(objs))[1].x == 4          # the peer agrees


def test_method_of_an_unallowed_class_is_refused_in_safe_mode(impl):
    data = torpor.dumps(Rebuilt(3))
    with pytest.raises(UnsafeLoadError, match="Rebuilt"):
        torpor.loads(data)


def test_bound_method_reduce_callable_keeps_sharing(impl):
    f = Factory(10)
    made = [f.make(1), f.make(2)]
    out = torpor.loads(torpor.dumps([f, made]), trusted=True)
    f2, (m1, m2) = out
    assert (m1.x, m2.x) == (10, 20)
    assert m1.factory is f2 and m2.factory is f2


def test_partial_reduce_callable(impl):
    out = torpor.loads(torpor.dumps([ByPartial(2), ByPartial(3)]), trusted=True)
    assert out == [("pair", 1, 2), ("pair", 1, 3)]


def test_a_value_that_is_not_callable_is_a_damaged_stream(impl):
    # a reduce whose "callable" is a list: no writer makes this
    data = file_of(R([1, 2]))
    with pytest.raises(CorruptFileError, match="reduce callable"):
        torpor.loads(data, trusted=True)


# --- builtin objects pickle saves and torpor refused -----------------------------------

def test_singleton_types(impl):
    objs = [type(None), type(...), type(NotImplemented)]
    for trusted in (True, False):
        assert torpor.loads(torpor.dumps(objs), trusted=trusted) == objs


def test_bound_builtin_methods(impl):
    lst = [1, 2]
    s = {1, 2}
    objs = [lst, lst.append, s.__contains__, "abcd".index, (1).__add__]
    assert torpor.loads(torpor.dumps(dict.fromkeys), trusted=True) == dict.fromkeys
    for trusted in (True, False):
        out = torpor.loads(torpor.dumps(objs), trusted=trusted)
        assert out[1].__self__ is out[0]                      # sharing kept
        assert out[2](2) and not out[2](3)
        assert out[3]("c") == 2 and out[4](2) == 3
        assert type(out[1]) is type(lst.append) and type(out[4]) is type((1).__add__)


def test_builtin_method_error_no_longer_names_a_wrong_place(impl):
    out = torpor.loads(torpor.dumps("abcd".index), trusted=True)
    assert out.__self__ == "abcd" and out.__name__ == "index"


def test_safe_getattr_refuses_special_attributes(impl):
    for owner, name in (([1], "__class__"), (G("builtins", "str"), "__init__"),
                        (b"x", "__globals__")):
        data = file_of(R(G("builtins", "getattr"), owner, name))
        with pytest.raises(UnsafeLoadError, match="special attributes"):
            torpor.loads(data)
    data = file_of(R(G("builtins", "getattr"), [1], 7))
    with pytest.raises(UnsafeLoadError, match="getattr"):
        torpor.loads(data)


def test_a_method_got_from_a_default_class_is_a_value_not_a_call(impl):
    # getattr(str, "join") is fine to name; calling it with file arguments is not
    got = R(G("builtins", "getattr"), G("builtins", "str"), "join")
    data = file_of(R(got, ",", ["a", "b"]))
    with pytest.raises(UnsafeLoadError, match="join"):
        torpor.loads(data)
    assert torpor.loads(data, trusted=True) == "a,b"


def test_staticmethod_classmethod_property_objects(impl):
    objs = [staticmethod(pair), classmethod(pair), property(pair, None, None, "doc")]
    out = torpor.loads(torpor.dumps(objs), trusted=True)
    assert [type(o) for o in out] == [staticmethod, classmethod, property]
    assert out[0].__func__ is pair and out[1].__func__ is pair
    assert out[2].fget is pair and out[2].__doc__ == "doc"


def test_picklebuffer(impl):
    ro = pickle.PickleBuffer(b"abc")
    rw = pickle.PickleBuffer(bytearray(b"xyz"))
    out = torpor.loads(torpor.dumps([ro, rw, ro]), trusted=True)
    assert all(type(o) is pickle.PickleBuffer for o in out) and out[0] is out[2]
    assert bytes(out[0].raw()) == b"abc" and out[0].raw().readonly
    assert bytes(out[1].raw()) == b"xyz" and not out[1].raw().readonly


# --- copyreg -------------------------------------------------------------------------

class Meta(type):
    pass


_made_classes = {}


def make_class(name):
    cls = _made_classes.get(name)
    if cls is None:
        cls = _made_classes[name] = Meta(name, (), {"made": True})
    return cls


@pytest.fixture
def copyreg_entries():
    saved = dict(copyreg.dispatch_table)
    yield copyreg.dispatch_table
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(saved)


def test_metaclass_with_a_copyreg_reducer(impl, copyreg_entries):
    cls = make_class("Dynamic")          # not importable by its name
    copyreg_entries[Meta] = lambda c: (make_class, (c.__name__,))
    out = torpor.loads(torpor.dumps([cls, cls]), trusted=True)
    assert out[0] is cls and out[1] is cls
    assert pickle.loads(pickle.dumps(cls)) is cls


def make_complex(re_, im):
    return ("complex", re_, im)


def test_copyreg_reducer_for_a_builtin_type_is_honoured(impl, copyreg_entries):
    copyreg_entries[complex] = lambda c: (make_complex, (c.real, c.imag))
    assert pickle.loads(pickle.dumps(1 + 2j)) == ("complex", 1.0, 2.0)
    assert torpor.loads(torpor.dumps([1 + 2j]), trusted=True) == [("complex", 1.0, 2.0)]


def test_copyreg_default_complex_still_native(impl):
    out = torpor.loads(torpor.dumps([1 + 2j, -0.5j]))
    assert out == [1 + 2j, -0.5j] and all(type(c) is complex for c in out)


def as_list(arr):
    return ("array", arr.tolist())


def test_copyreg_reducer_for_ndarray_is_honoured(impl, copyreg_entries):
    copyreg_entries[np.ndarray] = lambda a: (tuple, ([("array", a.tolist())],))
    out = torpor.loads(torpor.dumps(np.arange(3)), trusted=True)
    assert out == (("array", [0, 1, 2]),)


# --- code saved by value in a plain dump ---------------------------------------------

def _closures():
    shared = []

    def add(x):
        shared.append(x)
        return shared

    def size():
        return len(shared)

    return add, size, shared


def _recursive():
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)
    return fact


def test_lambdas_and_local_functions_by_value(impl):
    add, size, shared = _closures()
    objs = {"lam": lambda v, k=2: v * k, "add": add, "size": size, "shared": shared,
            "fact": _recursive()}
    data = torpor.dumps(objs)
    with pytest.raises(UnsafeLoadError, match="code saved by value"):
        torpor.loads(data)
    out = torpor.loads(data, trusted=True)
    assert out["lam"](3) == 6 and out["lam"].__defaults__ == (2,)
    assert out["add"](5) is out["shared"] and out["size"]() == 1    # one shared list
    assert out["fact"](5) == 120


def test_a_recursive_closure_returns_itself(impl):
    def outer():
        def me():
            return me
        return me
    f = outer()
    g = torpor.loads(torpor.dumps(f), trusted=True)
    assert g() is g


def test_wraps_wrapper_keeps_wrapped(impl):
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a):
            return fn(*a) + 1
        return wrapper

    def base(x):
        return x * 2
    wrapped = deco(base)
    out = torpor.loads(torpor.dumps([wrapped, base]), trusted=True)
    assert out[0](3) == 7 and out[0].__wrapped__ is out[1] and out[0].__name__ == "base"


def test_default_argument_is_shared(impl):
    table = {"a": 1}

    def look(k, t=table):
        return t[k]
    out = torpor.loads(torpor.dumps([look, table]), trusted=True)
    assert out[0].__defaults__[0] is out[1]


def test_eval_lambda_without_module(impl):
    f = eval("lambda x: x + 1", {})
    assert f.__module__ is None
    assert torpor.loads(torpor.dumps(f), trusted=True)(1) == 2


def test_local_class_by_value_keeps_slots(impl):
    def make():
        class Point:
            __slots__ = ("x", "y")

            def norm2(self):
                return self.x ** 2 + self.y ** 2
        return Point
    Point = make()
    p = Point()
    p.x, p.y = 3, 4
    out = torpor.loads(torpor.dumps([p, Point]), trusted=True)
    assert out[0].norm2() == 25 and type(out[0]) is out[1]
    assert not hasattr(out[0], "__dict__")


def test_typevar_made_in_a_function(impl):
    def make():
        return typing.TypeVar("U", int, str)
    U = make()
    out = torpor.loads(torpor.dumps(U), trusted=True)
    assert type(out) is typing.TypeVar and out.__name__ == "U"
    assert out.__constraints__ == (int, str)


def test_object_saved_under_a_name_that_does_not_find_it_is_refused_at_save(impl):
    class Liar:
        def __reduce__(self):
            return "no_such_name_here"
    with pytest.raises(UnsupportedObjectError, match="does not find it"):
        torpor.dumps(Liar())


# --- numpy -------------------------------------------------------------------------

def test_read_only_arrays_stay_read_only(impl):
    small = np.arange(10.0)
    big = np.arange(200_000.0)
    objs = np.array([1, "x"], dtype=object)
    for a in (small, big, objs):
        a.flags.writeable = False
    writable = np.arange(3)
    for trusted in (True, False):
        out = torpor.loads(torpor.dumps([small, big, objs, writable, small]), trusted=trusted)
        assert [a.flags.writeable for a in out] == [False, False, False, True, False]
        assert out[0] is out[4]
        np.testing.assert_array_equal(out[1], big)
        assert out[2].tolist() == [1, "x"]


@pytest.mark.parametrize("dt", [
    np.dtype([(("Title A", "a"), "<i4"), ("b", "<f8")]),
    np.dtype("<f8", metadata={"unit": "nm"}),
    np.dtype([("a", "<i4")], metadata={"k": "v"}),
    np.dtype([("a", np.dtype("<i4", metadata={"x": 2}))]),
])
def test_dtype_titles_and_metadata(impl, dt):
    for obj in (dt, np.zeros(3, dt), np.zeros(50_000, dt)):
        out = torpor.loads(torpor.dumps(obj))
        odt = out if isinstance(out, np.dtype) else out.dtype
        assert odt == dt and odt.metadata == dt.metadata and odt.fields == dt.fields
    if dt.names and len(dt.fields) > len(dt.names):          # titled
        arr = torpor.loads(torpor.dumps(np.ones(2, dt)))
        np.testing.assert_array_equal(arr["Title A"], arr["a"])


def test_slots_of_a_class_by_value_survive_another_process(impl, tmp_path, walker_env):
    import subprocess
    import sys
    p = tmp_path / "s.torpor"
    save = f"""
import torpor
def make():
    class Slotted:
        __slots__ = ("a", "b")
    return Slotted
s = make()()
s.a, s.b = 1, 2
torpor.dump(s, {str(p)!r})
"""
    load = f"""
import torpor
s = torpor.load({str(p)!r}, trusted=True)
print(hasattr(s, "__dict__"), type(s).__slots__, s.a + s.b)
"""
    subprocess.run([sys.executable, "-c", save], check=True, env=walker_env)
    out = subprocess.run([sys.executable, "-c", load], check=True, env=walker_env,
                         capture_output=True, text=True).stdout
    assert out.split() == ["False", "('a',", "'b')", "3"]


# --- functools.partial in safe mode ------------------------------------------------------

def test_partials_load_safely_as_values(impl):
    p = functools.partial(int, "7", base=8)
    out = torpor.loads(torpor.dumps([p, p]))
    assert type(out[0]) is functools.partial and out[0] is out[1]
    assert out[0].func is int and out[0].args == ("7",) and out[0].keywords == {"base": 8}
    assert out[0]() == 7


def test_partial_of_a_function_the_caller_did_not_allow_is_refused(impl):
    data = torpor.dumps(functools.partial(pair, 1))
    with pytest.raises(UnsafeLoadError, match="pair"):
        torpor.loads(data)
    assert torpor.loads(data, allow=[pair])(2) == ("pair", 1, 2)


@pytest.mark.parametrize("args, state, match", [
    ((G("builtins", "int"), 1), None, "one callable"),
    ((5,), None, "one callable"),
    ((G("builtins", "int"),), T(G("builtins", "float"), T(), None, None), "function it was built"),
    ((G("builtins", "int"),), T(G("builtins", "int"), [1], None, None), "args tuple"),
    ((G("builtins", "int"),), T(G("builtins", "int"), T(), D([(1, 2)]), None), "keyword map"),
    ((G("builtins", "int"),), T(G("builtins", "int"), T()), "function it was built"),
])
def test_crafted_partials_are_refused(impl, args, state, match):
    data = file_of(R(G("functools", "partial"), *args, state=state))
    with pytest.raises(UnsafeLoadError, match=match):
        torpor.loads(data)


def test_a_partial_cannot_call_past_a_checked_function(impl):
    # int's check bounds the digits it parses; a partial of int called by the file
    # would skip it, so safe loading refuses the call
    part = R(G("functools", "partial"), G("builtins", "int"), state=T(G("builtins", "int"), T(), None, None))
    data = file_of(R(part, "9" * 10))
    with pytest.raises(UnsafeLoadError, match="built rather than a name"):
        torpor.loads(data)
    assert torpor.loads(data, trusted=True) == int("9" * 10)


# --- locks (pickle refuses them; dill keeps them) ---------------------------------------

class Guarded:
    def __init__(self):
        self.lock = threading.Lock()
        self.rlock = threading.RLock()
        self.data = [1, 2]


def test_locks_come_back_new_and_unlocked(impl):
    g = Guarded()
    with g.lock, g.rlock:                       # saved while held, as `with self._lock: save()`
        data = torpor.dumps([g, g.lock])
    for kw in ({"trusted": True}, {"allow": [Guarded]}):
        out, lock = torpor.loads(data, **kw)
        assert type(out.lock) is type(g.lock) and type(out.rlock) is type(g.rlock)
        assert out.lock is lock and out.data == [1, 2]
        assert not out.lock.locked() and out.lock.acquire(blocking=False)
        assert out.rlock.acquire(blocking=False) and out.rlock.acquire(blocking=False)


def test_event_and_condition_round_trip_trusted(impl):
    ev, cond = threading.Event(), threading.Condition()
    ev.set()
    out_ev, out_cond = torpor.loads(torpor.dumps([ev, cond]), trusted=True)
    assert out_ev.is_set() and out_ev.wait(0)
    with out_cond:
        out_cond.notify_all()


def test_a_lock_call_with_arguments_is_refused(impl):
    with pytest.raises(UnsafeLoadError, match="allocate_lock"):
        torpor.loads(file_of(R(G("_thread", "allocate_lock"), 1)))
