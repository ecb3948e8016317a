"""Instances of classes saved by value (local classes, classes of ``__main__`` or
of a dumped module, namedtuples and dataclasses made in a function, with
``__slots__``, ``__reduce__``, ``__getstate__``/``__setstate__``) round-trip with
``trusted=True``, keep their sharing and their class's identity, and safe loading
refuses them as code saved by value: on both walkers.

An instance of a plain class was written as INST (its class, then its attribute
map). When the class was new and saved by value, its reduction went on the
walker's stack while the attribute map was written at once: the map landed inside
the class's REDUCE, where its callable belongs, and every such file failed to load
("a reduce callable is not a global reference"). Such an instance is now written
as pickle writes it, ``copyreg.__newobj__(cls)`` and its state."""

import collections
import dataclasses
import io
import subprocess
import sys
import textwrap
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torpor
from torpor import UnsafeLoadError, UnsupportedObjectError
from torpor.engine import fallback, pipeline
from torpor.engine.safety import Policy
from torpor.format import constants
from torpor.format.container import make_header
from torpor.format.writer import ContainerWriter
from torpor.interactive import modules

try:
    from torpor.engine import _walker
except ImportError:                  # the pure-Python run (TORPOR_PUREPYTHON=1)
    _walker = None


# --- local classes of every kind --------------------------------------------------------

def make_classes():
    """Fresh classes, defined inside a function (so saved by value), by kind; each
    is called with one value."""

    class Plain:
        def __init__(self, v):
            self.v = v

        def tag(self):
            return "plain"

    class Empty:
        def __init__(self, v):
            pass

    class WithSetstate:                 # no __getstate__: still class + attributes
        def __init__(self, v):
            self.v = v

        def __setstate__(self, state):
            self.__dict__.update(state)
            self.restored = True

    class Slots:
        __slots__ = ("v", "w")

        def __init__(self, v):
            self.v, self.w = v, "w"

    class Reduced:
        def __init__(self, v):
            self.v = v

        def __reduce__(self):
            return type(self), (self.v,)

    class GetSetState:
        def __init__(self, v):
            self.v = v

        def __getstate__(self):
            return {"saved": self.v}

        def __setstate__(self, state):
            self.v = state["saved"]

    @dataclasses.dataclass
    class Data:
        v: object
        n: int = 3

    NT = collections.namedtuple("NT", "v n", defaults=(4,))

    class Sub(Plain):
        def tag(self):
            return "sub of " + super().tag()

    class Main:
        def __init__(self, v):
            self.v = v
    Main.__module__, Main.__qualname__ = "__main__", "Main"     # as if defined in a script

    return {"plain": Plain, "empty": Empty, "setstate": WithSetstate, "slots": Slots,
            "reduce": Reduced, "getstate": GetSetState, "dataclass": Data,
            "namedtuple": NT, "subclass": Sub, "main": Main}


KINDS = sorted(make_classes())


def state_of(x):
    """What an instance holds, whatever its kind."""
    if isinstance(x, tuple):
        return list(x)
    out = dict(getattr(x, "__dict__", {}))
    for k in getattr(type(x), "__slots__", ()):
        out[k] = getattr(x, k)
    out.pop("restored", None)
    return out


def picture(x, seen=None):
    """Values, class names, and where an object (an instance, a class, a list...)
    is met again: two graphs with equal pictures share alike."""
    if seen is None:
        seen = {}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if id(x) in seen:
        return ("again", seen[id(x)])
    seen[id(x)] = len(seen)
    if isinstance(x, type):
        return ("class", x.__qualname__, picture(vars(x).get("registry"), seen))
    if type(x) is list:
        return [picture(v, seen) for v in x]
    if type(x) is dict:
        return {k: picture(v, seen) for k, v in x.items()}
    state = state_of(x)
    if isinstance(state, dict):
        state = sorted((k, picture(v, seen)) for k, v in state.items())
    else:
        state = [picture(v, seen) for v in state]
    return ("instance", picture(type(x), seen), state)


# --- every kind, through every entry point -------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_instances_round_trip_with_identity(roundtrip, kind):
    cls = make_classes()[kind]
    a, b = cls([1, "x"]), cls(2)
    for graph in ([a, a, b, {"again": a}],        # the instance first, class unseen
                  [a, cls, b],                    # the class between two instances
                  [cls, a, b],                    # the class first
                  a):                             # the instance alone at the root
        want = picture(graph)
        out = roundtrip(graph, trusted=True)
        assert picture(out) == want
        # (in the process that saved it, cloudpickle gives the class back as the
        # very class it tracks: another process gets a new one, see below)
        if graph is a:
            assert type(out).__qualname__ == cls.__qualname__
            continue
        first = out[0] if graph[0] is not cls else out[1]
        assert type(first).__qualname__ == cls.__qualname__
        assert type(out[2]) is type(first)                   # one restored class
        if cls in graph:
            assert out[graph.index(cls)] is type(first)
        if len(graph) == 4:
            assert out[0] is out[1] is out[3]["again"]       # one restored instance
    out = roundtrip([a, b], trusted=True)
    if kind in ("plain", "subclass"):
        assert out[0].tag() == a.tag()
    if kind == "setstate":
        assert out[0].restored                               # its __setstate__ ran
    if kind == "slots":
        assert not hasattr(out[0], "__dict__")
    if kind in ("dataclass", "namedtuple"):
        assert out[0] == type(out[0])([1, "x"]) and out[0].n == a.n


@pytest.mark.parametrize("kind", KINDS)
def test_safe_loading_refuses_them_as_code(impl, kind, tmp_path):
    cls = make_classes()[kind]
    obj = [cls(1), cls(1)]
    want = picture(obj)
    data = torpor.dumps(obj)
    for allow in ((), [cls]):             # allow= does not let code by value run
        with pytest.raises(UnsafeLoadError, match="code saved by value"):
            torpor.loads(data, allow=allow)
    path = tmp_path / "x.torpor"
    torpor.dump(obj, path)
    with pytest.raises(UnsafeLoadError, match="code saved by value"):
        torpor.load(path)
    assert picture(torpor.load(path, trusted=True)) == want
    buf = io.BytesIO()
    torpor.dump(obj, buf, compress=None)
    buf.seek(0)
    out = torpor.load(buf, trusted=True)
    assert picture(out) == want and out[0] is not out[1]


def test_the_reported_case(impl):
    def make():
        class Local:
            def __init__(self):
                self.x = 1
        return Local()
    out = torpor.loads(torpor.dumps(make()), trusted=True)
    assert out.x == 1 and type(out).__name__ == "Local"


def test_classes_by_name_still_write_instances_as_class_and_attributes(impl):
    """Only instances whose class cannot be complete where the instance starts
    change form: a class saved by name, or by value and written before, is
    still an INST (no copyreg call in the file)."""
    info = torpor.info(io.BytesIO(torpor.dumps([Named(1), Named(2)])))
    assert info["globals"] == [f"{__name__}.Named"]
    cls = make_classes()["plain"]
    data = torpor.dumps([cls, cls(1), cls(2)])
    assert "copyreg.__newobj__" not in torpor.info(io.BytesIO(data))["globals"]
    data = torpor.dumps([cls(1), cls(2)])
    assert "copyreg.__newobj__" in torpor.info(io.BytesIO(data))["globals"]


class Named:
    def __init__(self, v):
        self.v = v


def test_saved_by_a_script_loaded_in_another_process(tmp_path, walker_env):
    """The report, as a script: its local classes (torpor.dump) and its
    ``__main__`` classes (dump_module, instances before their classes), saved by
    one process; this one builds new classes from the files."""
    path, dumped = tmp_path / "script.torpor", tmp_path / "main.torpor"
    script = textwrap.dedent(f"""
        import dataclasses, torpor
        t = None
        def make():
            class Local:
                def __init__(self):
                    self.x = 1
            @dataclasses.dataclass
            class Point:
                x: int
                y: int
            return Local(), Point
        class Top:
            def __init__(self, v):
                self.v = v
            def double(self):
                return 2 * self.v
        a, Point = make()
        torpor.dump({{"a": [a, a, type(a)()], "p": [Point(1, 2), Point]}}, {str(path)!r})
        t = Top(21)
        pair = [t, t]
        torpor.dump_module({str(dumped)!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env=walker_env)
    with pytest.raises(UnsafeLoadError, match="code saved by value"):
        torpor.load(path)
    out = torpor.load(path, trusted=True)
    a = out["a"]
    assert a[0] is a[1] and a[0].x == 1 and type(a[2]) is type(a[0])
    assert type(a[0]).__name__ == "Local"      # (its __qualname__ is lost, as in cloudpickle)
    p, Point = out["p"]
    assert type(p) is Point and p == Point(1, 2) and dataclasses.is_dataclass(Point)
    with pytest.raises(UnsafeLoadError, match="code saved by value"):
        torpor.load_module(dumped, types.ModuleType("target"))
    ns = torpor.load_module_asdict(dumped, trusted=True)
    assert type(ns["t"]) is ns["Top"] and ns["pair"] == [ns["t"], ns["t"]]
    assert ns["pair"][0] is ns["t"] and ns["t"].double() == 42


# --- cycles through the class ------------------------------------------------------------

def make_node():
    class Node:
        def __init__(self, n):
            self.n = n

        def pick(self, d=None):
            return d
    Node.root = Node(0)                     # a class attribute: the class's state holds it
    Node.all = [Node.root, Node(1)]
    Node.root.cls = Node
    Node.root.me = Node.root
    Node.pick.__defaults__ = (Node.all[1],)  # a method default: inside the class's code
    return Node


@pytest.mark.parametrize("start", ["instance", "other instance", "class", "list"])
def test_cycles_between_instances_and_their_class(roundtrip, start):
    Node = make_node()
    graph = {"instance": Node.root, "other instance": [Node.all[1], Node.root],
             "class": Node, "list": {"k": Node.all}}[start]
    out = roundtrip(graph, trusted=True)
    N = {"instance": lambda: type(out), "other instance": lambda: type(out[0]),
         "class": lambda: out, "list": lambda: type(out["k"][0])}[start]()
    assert N.__qualname__ == Node.__qualname__
    root = N.root
    assert type(root) is N and root.cls is N and root.me is root and root.n == 0
    assert N.all[0] is root and type(N.all[1]) is N and N.all[1].n == 1
    assert root.pick() is N.all[1]
    if start == "instance":
        assert out is root
    if start == "other instance":
        assert out[0] is N.all[1] and out[1] is root
    if start == "list":
        assert out["k"] is N.all


def test_an_instance_inside_its_own_attributes(roundtrip):
    cls = make_classes()["plain"]
    a = cls(None)
    a.v = [a, {"self": a}]
    out = roundtrip(a, trusted=True)
    assert out.v[0] is out and out.v[1]["self"] is out


def test_an_unsaveable_attribute_is_refused_at_save(impl):
    """What cannot be saved is still refused when saving, naming where it is."""
    cls = make_classes()["plain"]
    with pytest.raises(UnsupportedObjectError, match="generator") as ei:
        torpor.dumps({"m": [cls((x for x in []))]})
    assert ei.value.path.startswith("root['m'][0]")
    cls.bad = (x for x in [])              # in the class's own state
    with pytest.raises(UnsupportedObjectError, match="generator"):
        torpor.dumps([cls(1)])


# --- a reducer_override hook --------------------------------------------------------------

_REGISTRY = {}


def class_named(name):
    return _REGISTRY[name]


class _ClassHook:
    """Reduces the classes it registered to class_named(name): its ``wants``
    says yes to their metaclass, or it has no ``wants`` at all."""

    def __init__(self, classes, with_wants):
        self.ids = {id(c): c.__name__ for c in classes}
        if with_wants:
            self.wants = lambda cls: cls is type

    def __call__(self, obj):
        name = self.ids.get(id(obj))
        return None if name is None else (class_named, (name,))


@pytest.mark.parametrize("with_wants", [True, False])
def test_a_class_reduced_by_the_hook(impl, with_wants):
    cls = make_classes()["plain"]
    _REGISTRY[cls.__name__] = cls
    a = cls(1)
    graph = [a, a, cls(2), cls]
    buf = io.BytesIO()
    pipeline.save(graph, buf, pipeline.SaveOptions(),
                  reducer_override=_ClassHook([cls], with_wants))
    buf.seek(0)
    out = pipeline.load(buf, pipeline.LoadOptions(Policy(trusted=True)))
    assert out[0] is out[1] and type(out[0]) is cls and type(out[2]) is cls and out[3] is cls
    assert out[0].v == 1 and out[2].v == 2


# --- module dumps ----------------------------------------------------------------------

SOURCE = """
import collections, dataclasses
class A:
    def __init__(self):
        self.x = 1
@dataclasses.dataclass
class D:
    a: int
class B(A):
    pass
P = collections.namedtuple("P", "x y")
A.default = A()
def f():
    return A()
"""


def scratch():
    mod = types.ModuleType("byvalue_instances_ns")      # not importable by name
    exec(compile(SOURCE, "<byvalue_instances_ns>", "exec"), mod.__dict__)
    ns = mod.__dict__
    # the instances before their classes in the namespace's order
    first = {"inst": ns["A"](), "d": ns["D"](3), "b": ns["B"](), "p": ns["P"](1, [2])}
    first["pair"] = [first["inst"], first["inst"]]
    rest = dict(ns)
    ns.clear()
    ns.update(first)
    ns.update(rest)
    return mod


def check_module_namespace(ns):
    A, B, D = ns["A"], ns["B"], ns["D"]
    assert type(ns["inst"]) is A and ns["inst"].x == 1
    assert ns["pair"][0] is ns["pair"][1] is ns["inst"]
    assert type(ns["b"]) is B and issubclass(B, A) and ns["b"].x == 1
    assert type(ns["d"]) is D and ns["d"] == D(3)
    assert type(ns["p"]) is ns["P"] and ns["p"] == ns["P"](1, [2])
    assert type(A.default) is A and type(ns["f"]()) is A


def test_module_dump_with_instances_before_their_classes(impl, tmp_path):
    mod = scratch()
    path = tmp_path / "ns.torpor"
    torpor.dump_module(path, mod)
    check_module_namespace(torpor.load_module_asdict(path, trusted=True))
    with pytest.raises(UnsafeLoadError, match="code saved by value"):
        torpor.load_module(path, types.ModuleType("target"))
    target = types.ModuleType("target")
    torpor.load_module(path, target, trusted=True)
    check_module_namespace(vars(target))
    # described without running anything: stand-in classes, instances keep attributes
    ns = torpor.load_module_asdict(path)
    assert type(ns["inst"]) is ns["A"] and vars(ns["inst"]) == {"x": 1}
    assert ns["pair"][0] is ns["pair"][1] is ns["inst"] and vars(ns["d"]) == {"a": 3}


def test_namespace_dump_with_instances_before_their_classes(impl, tmp_path):
    """dump_namespace / load_namespace (workspace checkpoints) alike."""
    mod = scratch()
    path = tmp_path / "ns.torpor"
    modules.dump_namespace(path, mod)
    target = {}
    _, variables = modules.load_namespace(path, target)
    target.update(variables)          # functions see the namespace they are put into
    check_module_namespace(target)


# --- generated graphs -------------------------------------------------------------------

recipes = st.recursive(
    st.one_of(st.integers(-5, 5), st.sampled_from(["class"]), st.none()),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.sampled_from("abc"), kids, max_size=3),
        st.tuples(st.sampled_from(KINDS), st.lists(kids, max_size=2))),
    max_leaves=12)


def build(recipe, classes, kinds, made):
    """The graph a recipe describes: ("kind", [kids]) is an instance of that kind
    holding the list of its kids; "class" is the class of the kind drawn next."""
    if recipe == "class":
        return classes[kinds.draw(st.sampled_from(KINDS))]
    if isinstance(recipe, list):
        out = [build(r, classes, kinds, made) for r in recipe]
        made.append(out)
        return out
    if isinstance(recipe, dict):
        return {k: build(r, classes, kinds, made) for k, r in recipe.items()}
    if isinstance(recipe, tuple):
        kind, kids = recipe
        inner = [build(r, classes, kinds, made) for r in kids]
        made.append(inner)
        obj = classes[kind](inner)
        made.append(obj)
        return obj
    return recipe


def generated(recipe, data):
    """A graph of fresh local classes' instances, with extra shared references
    and cycles (objects appended to its lists, and to a class attribute)."""
    classes = make_classes()
    made = []
    root = [build(recipe, classes, data, made)]
    made.append(root)
    lists = [m for m in made if type(m) is list]
    registry = []
    if data.draw(st.booleans()):
        classes[data.draw(st.sampled_from(["plain", "setstate", "main"]))].registry = registry
        lists.append(registry)
    for _ in range(data.draw(st.integers(0, 5))):
        data.draw(st.sampled_from(lists)).append(data.draw(st.sampled_from(made)))
    return root


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])


@settings(max_examples=150, **SETTINGS)
@given(recipes, st.data())
def test_generated_graphs_of_local_instances_round_trip(impl, recipe, data):
    graph = generated(recipe, data)
    # (pictured first: in the process that saved them, cloudpickle gives classes
    # back as the very classes it tracks, with their state set again)
    want = picture(graph)
    assert picture(torpor.loads(torpor.dumps(graph), trusted=True)) == want


HEADER = make_header({}, "twin-test", constants.CODEC_RAW)


def stream_of(mod, obj):
    buf = io.BytesIO()
    w = ContainerWriter(buf, codec_id=constants.CODEC_RAW, threads=1)
    try:
        w.write_header(HEADER)
        enc = mod.Encoder(w)
        enc.encode(obj)
        w.finish({"globals": list(enc.globals), "memo": enc.n_memo})
    finally:
        w.close()
    return buf.getvalue()


@pytest.mark.skipif(_walker is None, reason="the compiled walker is not built")
@settings(max_examples=80, **SETTINGS)
@given(recipes, st.data())
def test_both_walkers_write_identical_bytes(recipe, data):
    graph = generated(recipe, data)
    # saved once first: reducing an instance may cache __slotnames__ on its class
    # (copyreg does, for a namedtuple), which the class's state then holds
    stream_of(fallback, graph)
    assert stream_of(_walker, graph) == stream_of(fallback, graph)
