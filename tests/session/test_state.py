"""The State API: snapshots, unique names, restore order, cycles, versions,
registered snapshot methods. Every test runs against both walkers."""

import io

import numpy as np
import pytest

import torpor
from torpor.session.state import copy_containers


class Leaf(torpor.State):
    def __init__(self, value):
        self.value = value
        self.arr = np.arange(10, dtype=np.int16)


class Branch(torpor.State):
    restored = []

    def __init__(self, left, right):
        self.left = left
        self.right = right
        self.items = [left, {"r": right}]

    @classmethod
    def restore_snapshot(cls, session, data):
        # restore order: the leaves in ``data`` are real, fully restored objects
        for part in (data["left"], data["right"]):
            assert type(part) in (Leaf, Branch) and vars(part)
        cls.restored.append(getattr(data["left"], "value", None))
        return super().restore_snapshot(session, data)


class Holder(torpor.StateManager):
    def __init__(self, *objs):
        self.objs = list(objs)

    def reset_state(self, session):
        self.objs = []


def roundtrip(session, app="t", **restore_kw):
    b = io.BytesIO()
    session.save(b)
    b.seek(0)
    s2 = torpor.Session(app)
    s2.restore(b, **restore_kw)
    return s2


def test_shared_state_objects_restore_as_one_object(impl):
    leaf = Leaf(1)
    s = torpor.Session("t")
    s.a = Holder(leaf, Branch(leaf, Leaf(2)))
    s.b = Holder(leaf)
    s2 = roundtrip(s)
    la, br = s2.a.objs
    assert type(la) is Leaf and la.value == 1 and la.arr.dtype == np.int16
    assert br.left is la and br.items[0] is la and br.items[1]["r"] is br.right
    assert s2.b.objs[0] is la                      # shared across state managers
    assert br.right.value == 2 and br.right is not la


def test_restore_order_follows_dependencies(impl):
    Branch.restored.clear()
    l1, l2 = Leaf("x"), Leaf("y")
    inner = Branch(l1, l2)
    s = torpor.Session("t")
    s.m = Holder(Branch(Leaf("z"), l2), inner)
    roundtrip(s)
    assert Branch.restored == ["z", "x"]


def test_default_snapshot_copies_containers_not_objects():
    leaf = Leaf(3)
    h = Holder(leaf)
    h.table = {"k": [1, 2], "t": (leaf, [3])}
    data = h.take_snapshot(None, torpor.State.SESSION)
    assert data == h.__dict__ and data is not h.__dict__
    assert data["objs"] is not h.objs and data["objs"][0] is leaf
    assert data["table"]["k"] is not h.table["k"]
    assert data["table"]["t"][0] is leaf and data["table"]["t"][1] is not h.table["t"][1]


def test_copy_containers_keeps_sharing_and_cycles():
    a = [1]
    d = {"a": a, "b": a, "t": (a, [2]), "s": {1, 2}}
    d["self"] = d
    c = copy_containers(d)
    assert c is not d and c["a"] is c["b"] and c["a"] is not a and c["self"] is c
    assert type(c["t"]) is tuple and c["t"][0] is c["a"]
    assert c["s"] == {1, 2} and c["s"] is not d["s"]
    lst = []
    t = (lst,)
    lst.append(t)
    ct = copy_containers(t)
    assert type(ct) is tuple and ct[0][0] is ct and ct[0] is not lst
    deep = []
    for _ in range(200_000):
        deep = [deep]
    copy_containers(deep)                       # iterative: no RecursionError


def test_default_restore_does_not_call_init(impl):
    class NoInit(torpor.State):
        def __init__(self):
            raise AssertionError("restore must not call __init__")
    obj = NoInit.__new__(NoInit)
    obj.x = np.float32(2.5)
    s = torpor.Session("t")
    s.m = Holder(obj)
    back = roundtrip(s).m.objs[0]
    assert type(back) is NoInit and back.x == np.float32(2.5) and type(back.x) is np.float32


def test_cycle_is_reported_at_save_time_with_the_path(impl, tmp_path):
    class Ring(torpor.State):
        def __init__(self, name):
            self.name = name
            self.next = None

        @classmethod
        def restore_snapshot(cls, session, data):     # needs ``next`` restored first
            return super().restore_snapshot(session, data)
    a, b = Ring("a"), Ring("b")
    a.next, b.next = b, a
    s = torpor.Session("t")
    s.m = Holder(a)
    path = tmp_path / "s.torpor"
    path.write_bytes(b"previous")
    with pytest.raises(torpor.CycleError) as e:
        s.save(path)
    msg = str(e.value)
    name = f"{Ring.__module__}.{Ring.__qualname__}"
    assert f"{name} snapshot['next'] -> {name} snapshot['next'] -> {name}" in msg
    assert "re-link" in msg
    assert [c for c, _ in e.value.cycle] == [name, name]
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["s.torpor"]


def test_self_reference_through_a_custom_restore_is_a_cycle(impl):
    class Selfish(torpor.State):
        def take_snapshot(self, session, flags):
            return {"me": list(self.me)}
    x = Selfish()
    x.me = [x]
    s = torpor.Session("t")
    s.m = Holder(x)
    with pytest.raises(torpor.CycleError, match=r"snapshot\['me'\]\[0\]"):
        s.save(io.BytesIO())


def test_acyclic_sharing_is_not_a_cycle(impl):
    leaf = Leaf(0)
    diamond = Branch(Branch(leaf, leaf), Branch(leaf, Leaf(1)))
    s = torpor.Session("t")
    s.m = Holder(diamond, diamond)
    d = roundtrip(s).m.objs[0]
    assert d.left.left is d.left.right is d.right.left


class Versioned(torpor.State):
    version = 3
    seen = []

    def __init__(self, x):
        self.x = x

    @classmethod
    def restore_snapshot(cls, session, data, version):
        cls.seen.append(version)
        if version < 3:
            data = {"x": data["old_x"]}
        return super().restore_snapshot(session, data)


def test_version_is_stored_and_handed_back(impl, monkeypatch):
    Versioned.seen.clear()
    s = torpor.Session("t")
    s.m = Holder(Versioned(5))
    b = io.BytesIO()
    monkeypatch.setattr(Versioned, "version", 2)
    monkeypatch.setattr(Versioned, "take_snapshot", lambda self, session, flags: {"old_x": self.x})
    s.save(b)
    monkeypatch.undo()
    tree = torpor.open_session(io.BytesIO(b.getvalue()))
    assert [o.version for o in tree["objects"].values() if o.class_name.endswith("Versioned")] == [2]
    b.seek(0)
    s2 = torpor.Session("t")
    s2.restore(b)
    assert Versioned.seen == [2] and s2.m.objs[0].x == 5


def test_newer_snapshot_version_is_refused_before_any_change(impl, monkeypatch):
    s = torpor.Session("t")
    s.m = Holder(Versioned(1), Leaf(1))
    b = io.BytesIO()
    monkeypatch.setattr(Versioned, "version", 9)
    s.save(b)
    monkeypatch.undo()
    Versioned.seen.clear()
    target = torpor.Session("t")
    target.m = old = Holder(Leaf(7))
    for data in (b.getvalue(), ):
        with pytest.raises(torpor.RestoreError, match=r"Versioned \(file: version 9, code: version 3\)"):
            target.restore(io.BytesIO(data))
    assert Versioned.seen == [] and target.m is old and old.objs[0].value == 7


class Plain:
    """Not a State: saved through registered snapshot methods."""

    def __init__(self, v):
        self.v = v


class PlainMethods:
    version = 4
    calls = []

    @staticmethod
    def take_snapshot(obj, session, flags):
        PlainMethods.calls.append(flags)
        return {"v": obj.v}

    @staticmethod
    def restore_snapshot(session, data):
        return Plain(data["v"])

    @staticmethod
    def reset_state(obj, session):
        obj.v = None


def test_global_snapshot_methods(impl):
    torpor.register_snapshot_methods({Plain: PlainMethods})
    try:
        PlainMethods.calls.clear()
        p = Plain(np.arange(3))
        s = torpor.Session("t")
        s.m = Holder(p, p)
        s2 = roundtrip(s)                       # no trusted=, no allow=
        a, b = s2.m.objs
        assert type(a) is Plain and a is b and np.array_equal(a.v, [0, 1, 2])
        assert PlainMethods.calls == [torpor.State.SESSION]
        assert s.snapshot_methods(p) is PlainMethods
        assert s.snapshot_methods(Plain, instance=False) is PlainMethods
    finally:
        torpor.unregister_snapshot_methods(Plain)
    assert s.snapshot_methods(p) is None
    assert s.snapshot_methods(Leaf(1)) is Leaf
    assert s.snapshot_methods(3) is None


def test_session_snapshot_methods_stay_in_their_session(impl):
    s = torpor.Session("t")
    s.register_snapshot_methods({Plain: PlainMethods})
    s.m = Holder(Plain(1))
    b = io.BytesIO()
    s.save(b)
    other = torpor.Session("t")
    assert other.snapshot_methods(Plain(1)) is None
    with pytest.raises(torpor.RestoreError, match="Plain"):
        other.restore(io.BytesIO(b.getvalue()))
    mine = torpor.Session("t")
    mine.register_snapshot_methods({Plain: PlainMethods})
    mine.restore(io.BytesIO(b.getvalue()))
    assert mine.m.objs[0].v == 1


def test_bad_snapshot_methods_registration():
    with pytest.raises(TypeError, match="restore_snapshot"):
        torpor.register_snapshot_methods({Plain: object})
    with pytest.raises(TypeError, match="classes as keys"):
        torpor.register_snapshot_methods({"Plain": PlainMethods})
    with pytest.raises(TypeError, match="dict"):
        torpor.register_snapshot_methods([(Plain, PlainMethods)])


def test_take_snapshot_none_skips(impl):
    class Skipped(torpor.State):
        def take_snapshot(self, session, flags):
            return None

    class Off(Holder):
        def include_state(self):
            return False
    s = torpor.Session("t")
    s.m = Holder(Skipped(), 1)
    s.off = Off(1)
    s2 = torpor.Session("t")
    s2.off = keep = Off(2)
    b = io.BytesIO()
    s.save(b)
    b.seek(0)
    s2.restore(b)
    assert s2.m.objs == [None, 1]
    assert s2.off is keep and keep.objs == []           # not in the file: reset


def test_flags_reach_take_snapshot(impl):
    seen = []

    class Flagged(torpor.State):
        def take_snapshot(self, session, flags):
            seen.append(flags)
            return {}
    s = torpor.Session("t")
    s.m = Holder(Flagged())
    s.save(io.BytesIO())
    s.save(io.BytesIO(), include_maps=True)
    s.save(io.BytesIO(), flags=torpor.State.SCENE)
    assert seen == [torpor.State.SESSION, torpor.State.SESSION | torpor.State.INCLUDE_MAPS,
                    torpor.State.SCENE]
    assert torpor.State.ALL & torpor.State.INCLUDE_MAPS


def test_take_snapshot_error_names_the_object(impl):
    class Broken(torpor.State):
        def take_snapshot(self, session, flags):
            raise RuntimeError("GPU buffer not readable")
    s = torpor.Session("t")
    s.m = Holder(Leaf(1), Broken())
    with pytest.raises(torpor.UnsupportedObjectError, match="GPU buffer not readable") as e:
        s.save(io.BytesIO())
    assert "Broken" in str(e.value) and "[1]" in e.value.path


@pytest.mark.parametrize("root", [[1, 2], {1, 2}, (1, [2]), frozenset({3}), {"a": {1}}, [[]]])
def test_copy_containers_copies_a_root_container_once(root):
    """A container at the root is copied once (a list came back doubled, a set
    raised AttributeError)."""
    c = copy_containers(root)
    assert c == root and type(c) is type(root)
    if type(root) in (list, set, dict):
        assert c is not root
