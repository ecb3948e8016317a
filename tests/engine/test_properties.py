"""Round-trip property test (issue 15): generated object graphs that mix what a
save must keep faithfully (bound methods, functools.partial objects, objects
whose ``__reduce__`` callable is a classmethod, a bound method or a partial,
dtypes with titles, metadata and the record type, read-only arrays and views,
cycles through plain objects, and cyclic graphs of State objects) come back with
equal values, the same types, dtypes and flags, and the same sharing: on both
walkers (the ``impl`` fixture), trusted and safe with the classes allowed.

test_the_comparison_can_fail shows the picture below tells such graphs apart."""

import functools
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torpor
from reduce_apps import Factory, FromState, Made, Rebuilt

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])


# --- the classes the graphs are made of (module level, as applications define them) ---

class Box:
    """A plain object (saved as class + attribute map); cycles go through it."""

    def __init__(self, items):
        self.items = items

    def describe(self, prefix=""):
        return f"{prefix}Box of {len(self.items)}"


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


def combine(*args, **kw):
    return args, kw


class ByPartial:
    """``__reduce__`` returns a functools.partial."""

    def __init__(self, b):
        self.b = b

    def __reduce__(self):
        return functools.partial(_by_partial, "tag"), (self.b,)


def _by_partial(tag, b):
    return ByPartial(b)


ALLOW = [Box, Slotted, Rebuilt, FromState, Factory, Made, ByPartial, combine, _by_partial]


# --- dtypes and arrays -----------------------------------------------------------------

_FORMATS = ["<i4", ">f8", "u1", "S3", "<c8", "<M8[s]", ">u2", "?"]


@st.composite
def dtypes(draw):
    """Plain, structured (aligned or not, with titles, subarray fields), record and
    metadata-carrying dtypes, in any combination numpy accepts."""
    n = draw(st.integers(0, 4))
    if n == 0:
        dt = np.dtype(draw(st.sampled_from(_FORMATS)))
    else:
        names = [f"f{i}" for i in range(n)]
        formats = [np.dtype((draw(st.sampled_from(_FORMATS)), (2,))) if draw(st.booleans())
                   else draw(st.sampled_from(_FORMATS)) for _ in names]
        spec = {"names": names, "formats": formats}
        if draw(st.booleans()):
            spec["titles"] = [draw(st.sampled_from([None, f"Title {i}"])) for i in range(n)]
        dt = np.dtype(spec, align=draw(st.booleans()))
    if draw(st.booleans()):
        dt = np.dtype(dt, metadata={"unit": draw(st.sampled_from(["nm", "s", "é"])),
                                    "n": draw(st.integers(-5, 5))})
    if n and draw(st.booleans()):
        dt = np.dtype((np.record, dt))
    return dt


@st.composite
def arrays(draw):
    """An array of a generated dtype with arbitrary bytes; maybe a record array,
    maybe read-only, maybe a read-only view of an array also in the graph."""
    dt = draw(dtypes())
    n = draw(st.integers(0, 300))
    raw = np.random.default_rng(draw(st.integers(0, 2**32))).integers(
        0, 256, n * dt.itemsize, dtype=np.uint8).tobytes()
    arr = np.frombuffer(raw, dt).copy()
    how = draw(st.sampled_from(["plain", "readonly", "view", "recarray", "scalar"]))
    if how == "recarray" and dt.names:
        return arr.view(np.recarray)
    if how == "scalar" and n:
        return arr[0]
    if how == "readonly":
        arr.flags.writeable = False
    elif how == "view" and n > 2:
        view = arr[1:]
        view.flags.writeable = False
        return [arr, view]
    return arr


# --- graphs ------------------------------------------------------------------------------

FACTORY = Factory(3)

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10),
    st.binary(max_size=10), arrays(), dtypes(),
    st.builds(Rebuilt, st.integers()), st.builds(FromState, st.text(max_size=5)),
    st.builds(lambda x: FACTORY.make(x), st.integers(-100, 100)),
    st.builds(ByPartial, st.integers()))


def _extend(kids):
    return st.one_of(
        st.lists(kids, max_size=4), st.tuples(kids, kids),
        st.dictionaries(st.text(max_size=4), kids, max_size=4),
        st.builds(lambda xs: Box(xs), st.lists(kids, max_size=3)),
        st.builds(Slotted, kids, kids),
        st.builds(lambda xs: Box(xs).describe, st.lists(kids, max_size=2)),
        st.builds(lambda a, k: functools.partial(combine, a, key=k), kids, kids),
        st.builds(Rebuilt, kids), st.builds(ByPartial, kids))


graphs = st.recursive(leaves, _extend, max_leaves=25)


def _nodes(x, out, seen):
    """Every Box and list reachable from ``x``: the places extra links can go."""
    stack = [x]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, Box):
            out.append(x.items)
            stack.extend(x.items)
        elif isinstance(x, list):
            out.append(x)
            stack.extend(x)
        elif isinstance(x, tuple):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, Slotted):
            stack += [x.a, x.b]
        elif isinstance(x, (Rebuilt, ByPartial)):
            stack.append(getattr(x, "x", getattr(x, "b", None)))
        elif isinstance(x, functools.partial):
            stack += [*x.args, *x.keywords.values()]
        elif hasattr(x, "__self__") and isinstance(x.__self__, Box):
            stack.append(x.__self__)
    return out


def _with_links(graph, data):
    """``graph`` with shared references and cycles added: each drawn pair appends
    one reachable object to one reachable Box's or list's items."""
    root = [graph]
    places, objects = _nodes(root, [], set()), []
    seen = set()
    for p in places:
        for v in p:
            if id(v) not in seen and not isinstance(v, (int, float, str, bytes, type(None))):
                seen.add(id(v))
                objects.append(v)
    objects += places
    for _ in range(data.draw(st.integers(0, 6))):
        target = data.draw(st.sampled_from(places))
        target.append(data.draw(st.sampled_from(objects)))
    return root


# --- the picture two graphs are compared by -------------------------------------------

_ATOMS = (int, float, complex, str, bytes, bool, type(None))


def _dtype(dt):
    return (str(dt), dt.type.__name__, dt.itemsize, dt.isalignedstruct, dt.metadata,
            None if dt.fields is None else [(k, str(v[0]), *v[1:]) for k, v in dt.fields.items()])


def picture(x, seen=None):
    """Values, types, dtypes, flags and where the same object is met again."""
    if seen is None:
        seen = {}
    if isinstance(x, (*_ATOMS, np.dtype, np.generic)) or (type(x) is tuple and not x):
        # immutable values: their identity is not kept (numpy scalars, like floats,
        # are written as values, and a dtype equal to a builtin one is numpy's own)
        if isinstance(x, np.generic):
            return (type(x).__name__, _dtype(x.dtype), x.tobytes())
        if isinstance(x, float) and x == 0:
            return ("float0", math.copysign(1, x))
        if isinstance(x, np.dtype):
            return ("dtype", _dtype(x))
        return (type(x).__name__, x)
    if id(x) in seen:
        return ("again", seen[id(x)])
    seen[id(x)] = len(seen)
    kind = type(x).__name__
    if isinstance(x, np.ndarray):
        return (kind, _dtype(x.dtype), x.shape, x.tobytes(), x.flags.writeable,
                x.flags.c_contiguous, x.flags.f_contiguous)
    if isinstance(x, (list, tuple)):
        return (kind, [picture(v, seen) for v in x])
    if isinstance(x, dict):
        return (kind, [(k, picture(v, seen)) for k, v in x.items()])
    if isinstance(x, Slotted):
        return (kind, picture(x.a, seen), picture(x.b, seen), hasattr(x, "__dict__"))
    if isinstance(x, functools.partial):
        return (kind, x.func.__qualname__, picture(x.args, seen), picture(x.keywords, seen))
    if isinstance(x, Box):
        return (kind, sorted(vars(x)), picture(x.items, seen))
    if isinstance(x, Made):
        return (kind, x.x, picture(x.factory, seen))
    if isinstance(x, Factory):
        return (kind, x.scale)
    if isinstance(x, (Rebuilt, ByPartial)):
        return (kind, picture(vars(x), seen))
    if hasattr(x, "__self__") and hasattr(x, "__func__"):
        return (kind, x.__func__.__qualname__, picture(x.__self__, seen), x("p: "))
    raise AssertionError(f"picture() does not know {type(x)}")


@settings(max_examples=200, **SETTINGS)
@given(graphs, st.data())
def test_generated_graphs_round_trip(impl, graph, data):
    obj = _with_links(graph, data)
    want = picture(obj)
    blob = torpor.dumps(obj)
    assert picture(torpor.loads(blob, trusted=True)) == want
    assert picture(torpor.loads(blob, allow=ALLOW)) == want


# --- cyclic State graphs ----------------------------------------------------------------

class Part(torpor.State):
    """A State with the default snapshot methods, saved in place: any graph of
    them restores, cycles included."""

    def __init__(self, label, value):
        self.label = label
        self.value = value
        self.links = []

    def name(self):
        return self.label


class Parts(torpor.StateManager):
    def __init__(self, *objs):
        self.objs = list(objs)

    def reset_state(self, session):
        self.objs = []


state_graphs = st.integers(1, 8).flatmap(lambda n: st.tuples(
    st.lists(st.one_of(st.integers(), arrays(), st.builds(Rebuilt, st.integers()),
                       st.builds(lambda x: FACTORY.make(x), st.integers(-9, 9))),
             min_size=n, max_size=n),                                     # each Part's value
    st.lists(st.lists(st.tuples(st.integers(0, n - 1),
                                st.sampled_from(["part", "list", "dict", "tuple", "method"])),
                      max_size=3), min_size=n, max_size=n),               # its links
    st.lists(st.integers(0, n - 1), min_size=1, max_size=n)))             # the manager's roots


def _build_parts(values, links):
    parts = [Part(f"p{i}", v) for i, v in enumerate(values)]
    for part, out in zip(parts, links):
        for j, how in out:
            other = parts[j]
            part.links.append({"part": other, "list": [other, part], "dict": {"to": other},
                               "tuple": (other, part.links), "method": other.name}[how])
    return parts


def _state_picture(x, seen):
    if isinstance(x, Part):
        if id(x) in seen:
            return ("again", seen[id(x)])
        seen[id(x)] = len(seen)
        return ("Part", x.label, picture(x.value, seen), _state_picture(x.links, seen))
    if isinstance(x, (list, tuple)):
        if id(x) in seen:
            return ("again", seen[id(x)])
        seen[id(x)] = len(seen)
        return (type(x).__name__, [_state_picture(v, seen) for v in x])
    if isinstance(x, dict):
        return ("dict", [(k, _state_picture(v, seen)) for k, v in x.items()])
    if hasattr(x, "__self__"):
        return ("method", x.__func__.__qualname__, _state_picture(x.__self__, seen))
    return picture(x, seen)


@settings(max_examples=60, **SETTINGS)
@given(state_graphs)
def test_cyclic_state_graphs_restore_with_every_identity(impl, graph):
    values, links, roots = graph
    parts = _build_parts(values, links)
    s = torpor.Session("parts")
    s.parts = Parts(*[parts[i] for i in roots])
    want = _state_picture(s.parts.objs, {})
    b = io.BytesIO()
    s.save(b)
    for kw in ({"trusted": True}, {"allow": [*ALLOW, Part]}):
        b.seek(0)
        t = torpor.Session("parts")
        t.restore(b, **kw)
        assert _state_picture(t.parts.objs, {}) == want
        assert all(type(p) is Part for p in t.parts.objs)


def test_the_comparison_can_fail():
    """picture() sees lost sharing, a lost read-only flag, a lost title, record
    type or metadata, and a partial or bound method that changed."""
    a = np.zeros(3)
    assert picture([a, a]) != picture([a, a.copy()])
    ro = np.zeros(3)
    ro.flags.writeable = False
    assert picture(ro) != picture(np.zeros(3))
    titled = np.dtype({"names": ["x"], "formats": ["<i4"], "titles": ["T"]})
    assert picture(titled) != picture(np.dtype([("x", "<i4")]))
    assert picture(np.dtype((np.record, titled))) != picture(titled)
    assert picture(np.dtype("<f8", metadata={"u": 1})) != picture(np.dtype("<f8"))
    box = Box([1])
    assert picture([box, box.describe]) != picture([box, Box([1]).describe])
    assert picture(functools.partial(combine, 1)) != picture(functools.partial(combine, 2))
    p, q = Part("p", 1), Part("p", 1)
    p.links.append(p)
    q.links.append(Part("p", 1))
    assert _state_picture([p], {}) != _state_picture([q], {})
    with pytest.raises(AssertionError, match="does not know"):
        picture(object())
