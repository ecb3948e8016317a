"""How instances and tuples are rebuilt: an instance's attributes come back as
pickle's BUILD puts them (into ``__dict__``, past ``__setattr__`` and past the
class's data descriptors), however the walker writes them; tuples that hold no
container leave the cyclic GC (the compiled walker does what the collector would
do on its first pass) and tuples that hold one stay in it. Every test runs on
both walkers."""

import gc
import pickle
import weakref

import pytest

import torpor
from crafted import G, I, Ref, file_of
from torpor.errors import CorruptFileError


class Plain:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Guarded:
    """__setattr__ refuses everything: a load must not go through it."""

    def __setattr__(self, name, value):
        raise AttributeError(f"{name} is read-only")


class WithProperty:
    """``size`` is a property with a setter that records its calls; pickle
    restores ``size`` into ``__dict__`` (where the property hides it) and never
    calls the setter."""
    calls = []

    @property
    def size(self):
        return "property"

    @size.setter
    def size(self, v):
        WithProperty.calls.append(v)


class Shadowed(WithProperty):
    """A plain class attribute shadows the base's property."""
    size = 0


class Slotted:
    __slots__ = ("a", "__dict__")


class Many:
    pass


class Shape:
    def __new__(cls):               # a factory: instances of another class
        return object.__new__(WithProperty)


class Point:
    __slots__ = ("x",)


class PointFactory:
    def __new__(cls):
        return object.__new__(Point)


ALLOW = [f"{__name__}.*"]


def _rt(impl, obj):
    return torpor.loads(torpor.dumps(obj), allow=ALLOW)


def _assert_like_pickle(got, obj):
    ref = pickle.loads(pickle.dumps(obj, protocol=5))
    assert type(got) is type(ref)
    assert vars(got) == vars(ref)
    assert [type(v) for v in vars(got).values()] == [type(v) for v in vars(ref).values()]
    assert list(vars(got)) == list(vars(ref))           # insertion order too


def test_plain_attributes_and_sharing(impl):
    shared = [1, 2]
    objs = [Plain(name="CA", serial=i, coord=(1.5, -2.0, i * 0.5), group=shared) for i in range(50)]
    objs[3].me = objs[3]
    got = _rt(impl, objs)
    for g, o in zip(got, objs):
        assert type(g) is Plain
        assert (g.name, g.serial, g.coord) == (o.name, o.serial, o.coord)
        assert type(g.coord) is tuple and type(g.serial) is int
    assert all(g.group is got[0].group for g in got)
    assert got[3].me is got[3]
    _assert_like_pickle(got[7], objs[7])


def test_setattr_of_the_class_is_not_called(impl):
    o = Guarded()
    object.__setattr__(o, "x", 1)
    object.__setattr__(o, "y", [2])
    got = _rt(impl, o)
    assert vars(got) == {"x": 1, "y": [2]}
    _assert_like_pickle(got, o)


@pytest.mark.parametrize("cls", [WithProperty, Shadowed])
def test_a_data_descriptor_of_the_same_name_is_not_called(impl, cls):
    o = cls()
    o.__dict__["size"] = 12             # what the property hides
    o.__dict__["other"] = "x"
    WithProperty.calls.clear()
    got = _rt(impl, o)
    assert WithProperty.calls == []
    assert got.__dict__ == {"size": 12, "other": "x"}
    _assert_like_pickle(got, o)


def test_unusual_keys_of_an_instance_dict(impl):
    o = Plain(a=1)
    o.__dict__["__dict__"] = "a value named __dict__"
    o.__dict__["with space"] = 2
    o.__dict__[""] = 3
    got = _rt(impl, o)
    assert got.__dict__ == o.__dict__
    assert got.__dict__["__dict__"] == "a value named __dict__"
    assert list(got.__dict__) == list(o.__dict__)


def test_non_str_keys_in_an_instance_dict(impl):
    o = Plain(a=1)
    o.__dict__[5] = "five"
    o.__dict__[(1, 2)] = "pair"
    got = _rt(impl, o)
    assert got.__dict__ == {"a": 1, 5: "five", (1, 2): "pair"}


def test_slots_beside_a_dict(impl):
    o = Slotted()
    o.a = [1]
    o.b = 2
    got = _rt(impl, o)
    assert got.a == [1] and got.b == 2 and vars(got) == {"b": 2}


def test_more_attributes_than_a_class_shares(impl):
    objs = []
    for k in range(3):
        o = Many()
        for j in range(60 + k):       # past the keys a class shares among instances
            setattr(o, f"a{j}", j * k)
        objs.append(o)
    got = _rt(impl, objs)
    assert [vars(g) for g in got] == [vars(o) for o in objs]


def test_a_state_that_is_the_instance_itself_is_refused(impl):
    cls = G(__name__, "Plain")
    # memo: 0 the outer list, 1 the global, 2 the instance; its state is a
    # reference to the instance rather than a map of attributes
    data = file_of([I(cls, Ref(2))])
    with pytest.raises(CorruptFileError, match="state must be a map of attributes"):
        torpor.loads(data, allow=ALLOW)


def test_a_new_that_makes_another_class_gets_its_attributes_in_its_dict(impl):
    WithProperty.calls.clear()
    got = torpor.loads(file_of([I(G(__name__, "Shape"), {"size": 5, "x": 1})]), allow=ALLOW)[0]
    assert type(got) is WithProperty and got.__dict__ == {"size": 5, "x": 1}
    assert WithProperty.calls == []


def test_a_new_that_makes_an_object_without_a_dict_is_refused(impl):
    with pytest.raises(CorruptFileError, match="no attribute '__dict__'"):
        torpor.loads(file_of([I(G(__name__, "PointFactory"), {"x": 7})]), allow=ALLOW)


def test_a_crafted_instance_of_a_class_with_slots_and_a_dict(impl):
    got = torpor.loads(file_of([I(G(__name__, "Slotted"), {"a": [1], "b": 2})]), allow=ALLOW)[0]
    assert type(got) is Slotted and got.__dict__ == {"a": [1], "b": 2}
    with pytest.raises(AttributeError):
        got.a                       # the slot: pickle's BUILD fills __dict__, not slots


def test_a_crafted_instance_gets_its_attributes(impl):
    data = file_of([I(G(__name__, "WithProperty"), {"size": 4, "b": [1]})])
    WithProperty.calls.clear()
    got = torpor.loads(data, allow=ALLOW)[0]
    assert type(got) is WithProperty and got.__dict__ == {"size": 4, "b": [1]}
    assert WithProperty.calls == []


# --- tuples and the cyclic GC ---------------------------------------------------------

def test_tuples_that_hold_no_container_leave_the_gc(impl):
    inner = (1, 2.5, "s", None, b"b", True, 10**30)
    obj = [(1.0, 2.0, 3.0), inner, (inner, ("x",)), ((1, [2]),), ({"k": 1},), (1, [])]
    got = _rt(impl, obj)
    assert got == obj and [type(t) for t in got] == [tuple] * len(obj)
    if impl.IMPLEMENTATION == "cython":
        # the first three hold only values and untracked tuples (the pure-Python
        # twin cannot untrack: the collector does on its first pass over them)
        assert [not gc.is_tracked(t) for t in got] == [True, True, True, False, False, False]
    # those that hold a container (directly or in a tuple) stay tracked on both
    assert gc.is_tracked(got[3]) and gc.is_tracked(got[3][0])


def test_a_cycle_through_a_rebuilt_tuple_is_collected(impl):
    box = Plain()
    box.t = (1, [box])                      # box -> tuple -> list -> box
    got = _rt(impl, box)
    assert got.t[1][0] is got
    ref = weakref.ref(got)
    del got
    gc.collect()
    assert ref() is None
