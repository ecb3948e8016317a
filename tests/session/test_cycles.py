"""State objects that point at each other (issue 15).

Objects with the default take_snapshot and restore_snapshot are saved in place:
created empty on restore, then filled, so cycles among them and through lists,
dicts and tuples restore with every identity kept. A cycle through an object
with its own snapshot methods is still a CycleError at save time, whichever
object the save meets first. Every test runs on both walkers (conftest)."""

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torpor
from graph_apps import (Atom, Bond, CNode, CustomModels, GNode, Models, Node, Residue, Ring,
                        Selection, Unpicklable, complete)


def _roundtrip(session, tmp_path=None, **restore_kw):
    if tmp_path is None:
        b = io.BytesIO()
        session.save(b)
        b.seek(0)
        target = b
    else:
        target = tmp_path / "s.torpor"
        torpor.session.save(session, target)
    fresh = torpor.Session(session.app_name)
    fresh.restore(target, **restore_kw)
    return fresh


def _protein(n_res=3, per=4):
    residues = []
    for r in range(n_res):
        res = Residue(f"R{r}", r)
        for k in range(per):
            res.atoms.append(Atom(f"A{r}.{k}", res))
        residues.append(res)
    return residues


# --- cycles among objects saved in place --------------------------------------

@pytest.mark.parametrize("where", ["stream", "path"])
def test_residue_atom_back_references(tmp_path, where):
    residues = _protein()
    s = torpor.Session("mol")
    s.models = Models(*residues)
    t = _roundtrip(s, tmp_path if where == "path" else None)
    back = t.models.objs
    assert [type(r) for r in back] == [Residue] * 3 and back[0] is not residues[0]
    for r, orig in zip(back, residues):
        assert r.name == orig.name and [a.name for a in r.atoms] == [a.name for a in orig.atoms]
        assert all(type(a) is Atom and a.residue is r for a in r.atoms)
    assert back[0].atoms[0].residue is back[0]
    assert len({id(a) for r in back for a in r.atoms}) == 12


def test_shared_identity_across_managers_and_containers():
    residues = _protein(2, 2)
    shared = [residues[0].atoms[0]]
    residues[0].tags = residues[1].tags = shared      # one list held by two objects
    s = torpor.Session("mol")
    s.a = Models(residues[0], residues[1])
    s.b = CustomModels(residues[1].atoms[1], residues[0])
    t = _roundtrip(s)
    r0, r1 = t.a.objs
    assert t.b.objs[0] is r1.atoms[1] and t.b.objs[1] is r0
    assert r0.tags is r1.tags and r0.tags[0] is r0.atoms[0]


def test_cycle_through_a_dict():
    a, b = Node("a"), Node("b")
    a.links = {"peer": b, "self": a}
    b.links = {"peer": a, "nested": {"back": [b]}}
    s = torpor.Session("g")
    s.m = Models(a)
    a2 = _roundtrip(s).m.objs[0]
    b2 = a2.links["peer"]
    assert type(b2) is Node and b2.label == "b" and a2.links["self"] is a2
    assert b2.links["peer"] is a2 and b2.links["nested"]["back"][0] is b2


def test_cycle_through_a_tuple():
    a, b = Node("a"), Node("b")
    a.pair = (a, b)
    b.pair = (b, a)
    lst = []
    t = (a, lst)
    lst.append(t)                  # a tuple that contains itself through a list
    a.t = t
    s = torpor.Session("g")
    s.m = Models(b, a)
    b2, a2 = _roundtrip(s).m.objs
    assert a2.pair == (a2, b2) and type(a2.pair) is tuple and b2.pair[1] is a2
    assert a2.t[0] is a2 and a2.t[1][0] is a2.t


def test_self_reference():
    x = Node("x")
    x.me = x
    x.mine = [x, {"x": x}, (x,)]
    s = torpor.Session("g")
    s.m = Models(x)
    x2 = _roundtrip(s).m.objs[0]
    assert x2.me is x2 and x2.mine[0] is x2 and x2.mine[1]["x"] is x2 and x2.mine[2][0] is x2


def test_arrays_and_numpy_values_in_cyclic_objects():
    r = _protein(1, 3)[0]
    r.coords = np.arange(9, dtype=np.float32).reshape(3, 3)
    for a, c in zip(r.atoms, r.coords):
        a.coord = c[:]                # views of the residue's array
    s = torpor.Session("mol")
    s.m = Models(r)
    r2 = _roundtrip(s).m.objs[0]
    assert r2.coords.dtype == np.float32 and np.array_equal(r2.coords, r.coords)
    assert np.array_equal(r2.atoms[2].coord, [6, 7, 8]) and r2.atoms[2].residue is r2


# --- objects with their own snapshot methods in the same graph ------------------

@pytest.mark.parametrize("first", ["selection", "residues"])
def test_custom_object_in_the_graph_but_not_on_the_cycle(first):
    residues = _protein()
    sel = Selection([residues[0].atoms[1], residues[2].atoms[0]])
    s = torpor.Session("mol")
    s.m = Models(sel, *residues) if first == "selection" else Models(*residues, sel)
    Selection.seen.clear()
    m = _roundtrip(s).m
    sel2 = m.objs[0] if first == "selection" else m.objs[-1]
    res2 = m.objs[1:] if first == "selection" else m.objs[:-1]
    assert Selection.seen == [True]              # its atoms were complete when it ran
    assert type(sel2) is Selection and sel2.atoms[0] is res2[0].atoms[1]
    assert sel2.atoms[1].residue is res2[2]


def test_custom_object_inside_an_object_saved_in_place_not_on_a_cycle():
    """A snapshot written inside an object restored in place is searched for a
    way back; here there is none (no false CycleError)."""
    residues = _protein()
    residues[0].selection = Selection(residues[1].atoms)      # other residue's atoms
    s = torpor.Session("mol")
    s.m = Models(*residues)
    Selection.seen.clear()
    back = _roundtrip(s).m.objs
    assert Selection.seen == [True]
    assert back[0].selection.atoms[0] is back[1].atoms[0]


@pytest.mark.parametrize("entry", ["atom first", "bond first", "bond first, custom manager"])
def test_custom_object_on_the_cycle_is_a_cycle_error(tmp_path, entry):
    residues = _protein(1, 2)
    a, b = residues[0].atoms
    bond = Bond(a, b)
    a.bonds.append(bond)
    s = torpor.Session("mol")
    if entry == "atom first":
        s.m = Models(*residues)
    elif entry == "bond first":
        s.m = Models(bond, *residues)
    else:                            # nothing restored in place above the bond
        s.m = CustomModels(bond, *residues)
    path = tmp_path / "s.torpor"
    path.write_bytes(b"previous")
    with pytest.raises(torpor.CycleError) as e:
        s.save(path)
    msg = str(e.value)
    # the walker names the objects with their own snapshot methods on the cycle (a
    # custom manager above); the session's own check names the others too
    assert "graph_apps.Bond snapshot['a']" in msg and ".bonds[0] -> graph_apps.Bond" in msg
    assert "re-link it in" in msg and "default take_snapshot and restore_snapshot" in msg
    assert e.value.cycle[0][0] == "graph_apps.Bond"
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["s.torpor"]
    a.bonds.clear()                  # off the cycle: the same graph saves
    Selection.seen.clear()
    back = _roundtrip(s).m.objs
    bond2 = back[0] if entry != "atom first" else None
    if bond2 is not None:
        assert type(bond2) is Bond and bond2.a is back[1].atoms[0]


def test_custom_cycle_through_a_plain_object_reached_sideways():
    """The snapshot reaches the object it is written inside of through an object
    written before it (not through its own subtree)."""
    x, y = Node("x"), Node("y")
    sel = CNode(0)
    x.first = y
    y.back = x                       # y is complete before the CNode is met
    x.second = sel
    sel.out = [y]                    # CNode -> y -> x -> CNode
    s = torpor.Session("g")
    s.m = Models(x)
    with pytest.raises(torpor.CycleError, match=r"graph_apps.CNode snapshot\['out'\]\[0\] -> "
                                                r"graph_apps.Node \.back -> graph_apps.Node "
                                                r"\.second -> graph_apps.CNode"):
        s.save(io.BytesIO())


def test_cycle_of_custom_restores_is_reported_as_before():
    a, b = Ring("a"), Ring("b")
    a.next, b.next = b, a
    s = torpor.Session("t")
    s.m = CustomModels(a)
    with pytest.raises(torpor.CycleError) as e:
        s.save(io.BytesIO())
    msg = str(e.value)
    assert ("graph_apps.Ring snapshot['next'] -> graph_apps.Ring snapshot['next'] -> "
            "graph_apps.Ring") in msg
    assert "a cycle through graph_apps.Ring, restored from its snapshot" in msg and "re-link" in msg
    s.m = Models(a)                  # the same, inside an object restored in place
    with pytest.raises(torpor.CycleError, match="graph_apps.Ring"):
        s.save(io.BytesIO())


def test_default_class_defined_in_a_function_cannot_form_cycles():
    """Classes saved in place are written by reference; one defined inside a
    function is not, so a cycle through it is an error that says why."""
    class Local(torpor.State):
        pass
    x = Local()
    x.me = x
    s = torpor.Session("t")
    s.m = Models(x)
    with pytest.raises(torpor.CycleError, match="defined inside a function.*define it at "
                                                "module level"):
        s.save(io.BytesIO())
    x.me = None
    assert type(_roundtrip(s).m.objs[0]) is Local       # without the cycle: as before


# --- restore: safe loading, all or nothing -----------------------------------------

def test_safe_loading_needs_nothing_for_state_classes(tmp_path):
    residues = _protein(2, 2)
    s = torpor.Session("mol")
    s.m = Models(*residues)
    path = tmp_path / "s.torpor"
    s.save(path)
    t = torpor.Session("mol")
    t.restore(path)                  # no trusted=, no allow=
    assert t.m.objs[1].atoms[1].residue is t.m.objs[1]
    residues[0].extra = Unpicklable(3)       # not a State: allow= as for torpor.load
    s.save(path)
    t = torpor.Session("mol")
    t.keep = keep = Models(Node("mine"))
    with pytest.raises(torpor.UnsafeLoadError, match="graph_apps.Unpicklable"):
        t.restore(path)
    assert t.keep is keep and t.state_managers == {"keep": keep} and keep.objs[0].label == "mine"
    t.restore(path, allow=["graph_apps.Unpicklable"])
    assert t.m.objs[0].extra.v == 3 and t.m.objs[0].atoms[0].residue is t.m.objs[0]


def test_a_file_that_calls_a_class_saved_in_place_is_refused(tmp_path):
    """A session file builds objects saved in place from their attributes; one
    that calls such a class with arguments of its choosing (a crafted file) is
    refused unless trusted."""
    from torpor.engine import pipeline

    class Crafted:
        pass
    path = tmp_path / "crafted.torpor"
    pipeline.save(
        {"managers": {"m": Models(Crafted())}}, path, pipeline.SaveOptions.of(),
        metadata={"torpor_session": 2, "app": "mol", "session": {}, "managers": ["m"],
                  "flags": torpor.State.SESSION},
        reducer_override=lambda o: (Atom, ("evil", None)) if type(o) is Crafted else None,
        toc_extra=lambda: {"session": {"classes": {"graph_apps.Atom": 1, "graph_apps.Models": 1},
                                       "objects": 0,
                                       "in_place": ["graph_apps.Atom", "graph_apps.Models"]}})
    t = torpor.Session("mol")
    t.m = old = Models(Node("mine"))
    with pytest.raises(torpor.UnsafeLoadError, match="calls graph_apps.Atom with arguments.*"
                                                     "trusted=True"):
        t.restore(path)
    assert t.m is old and old.objs[0].label == "mine"
    t.restore(path, trusted=True)
    assert type(t.m.objs[0]) is Atom and t.m.objs[0].name == "evil"


def test_version_1_files_still_restore(tmp_path):
    """Before session version 2 every State object was a snapshot (restore_named),
    default methods or not; such files restore through restore_snapshot."""
    from torpor.engine import pipeline
    from torpor.session.files import restore_named
    r = Residue("R", 7)
    r.atoms = [Node("n1"), Node("n2")]
    classes, count = {}, [0]

    def old_hook(o):                 # what session version 1 wrote for every State object
        if not isinstance(o, torpor.State):
            return None
        count[0] += 1
        name = f"{type(o).__module__}.{type(o).__qualname__}"
        classes[name] = 1
        return restore_named, (count[0], name, 1, o.take_snapshot(None, torpor.State.SESSION), False)
    path = tmp_path / "v1.torpor"
    pipeline.save({"managers": {"m": Models(r, r.atoms[0])}}, path, pipeline.SaveOptions.of(),
                  metadata={"torpor_session": 1, "app": "mol", "session": {}, "managers": ["m"],
                            "flags": torpor.State.SESSION},
                  reducer_override=old_hook,
                  toc_extra=lambda: {"session": {"classes": classes, "objects": count[0]}})
    t = torpor.Session("mol")
    t.restore(path)
    r2, n1 = t.m.objs
    assert type(r2) is Residue and r2.number == 7 and r2.atoms[0] is n1 and n1.label == "n1"
    tree = torpor.open_session(path)
    assert tree["versions"]["session"] == 1 and tree["managers"]["m"].uid == 1


def test_newer_class_saved_in_place_is_refused_before_any_change(monkeypatch):
    s = torpor.Session("mol")
    s.m = Models(*_protein(1, 2))
    b = io.BytesIO()
    monkeypatch.setattr(Residue, "version", 4)
    s.save(b)
    monkeypatch.undo()
    t = torpor.Session("mol")
    t.m = old = Models(Node("mine"))
    with pytest.raises(torpor.RestoreError, match=r"graph_apps.Residue \(file: version 4, code: "
                                                  r"version 1\).*not changed"):
        t.restore(io.BytesIO(b.getvalue()))
    assert t.m is old and old.objs[0].label == "mine"


def test_class_saved_in_place_now_with_its_own_restore_is_refused(monkeypatch):
    s = torpor.Session("mol")
    s.m = Models(*_protein(1, 2))
    b = io.BytesIO()
    s.save(b)
    monkeypatch.setattr(Atom, "restore_snapshot",
                        classmethod(lambda cls, session, data: cls(data["name"], None)))
    t = torpor.Session("mol")
    t.m = old = Models()
    with pytest.raises(torpor.RestoreError, match=r"graph_apps.Atom saved in place.*own snapshot "
                                                  r"methods.*The session was not changed"):
        t.restore(io.BytesIO(b.getvalue()))
    assert t.m is old
    monkeypatch.undo()
    t.restore(io.BytesIO(b.getvalue()))
    assert t.m.objs[0].atoms[0].residue is t.m.objs[0]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_of_a_cyclic_graph_leaves_the_session_unchanged(damage):
    s = torpor.Session("mol")
    s.m = Models(*_protein(50, 10))
    b = io.BytesIO()
    s.save(b, compress=None)
    data = bytearray(b.getvalue())
    if damage == "truncate":
        data = data[:len(data) * 2 // 3]
    else:
        data[len(data) // 2] ^= 0x40
    t = torpor.Session("mol")
    t.m = old = Models(Node("mine"))
    t.other = other = CustomModels(1)
    with pytest.raises(torpor.TorporError):
        t.restore(io.BytesIO(bytes(data)))
    assert t.state_managers == {"m": old, "other": other} and old.objs[0].label == "mine"
    assert other.objs == [1]


def test_failing_custom_restore_among_cyclic_objects_leaves_the_session_unchanged(monkeypatch):
    residues = _protein()
    s = torpor.Session("mol")
    s.m = Models(*residues, Selection(residues[0].atoms))
    b = io.BytesIO()
    s.save(b)

    def broken(cls, session, data):
        raise ValueError("selection index out of date")
    monkeypatch.setattr(Selection, "restore_snapshot", classmethod(broken))
    t = torpor.Session("mol")
    t.m = old = Models(Node("mine"))
    with pytest.raises(torpor.RestoreError, match="selection index out of date.*not changed"):
        t.restore(io.BytesIO(b.getvalue()))
    assert t.m is old and old.objs[0].label == "mine"


# --- session-level tools ----------------------------------------------------------

def test_open_session_and_sdump_show_objects_saved_in_place(tmp_path):
    residues = _protein(2, 2)
    sel = Selection([residues[1].atoms[0]])
    s = torpor.Session("mol")
    s.m = Models(sel, *residues)
    path = tmp_path / "s.torpor"
    assert torpor.session.save(s, path) == str(path)
    tree = torpor.open_session(path)
    assert tree["versions"]["session"] == 2
    m = tree["managers"]["m"]
    assert isinstance(m, torpor.session.NamedObject) and m.class_name == "graph_apps.Models"
    sel_n, r0, r1 = m.data["objs"]
    assert sel_n.class_name == "graph_apps.Selection" and sel_n.uid == 1     # the snapshot
    assert r0.class_name == "graph_apps.Residue" and r0.version == 1
    a = r1.data["atoms"][0]
    assert a.data["residue"] is r1 and sel_n.data["atoms"][0] is a      # identity kept
    objects = tree["objects"]
    assert sorted(objects) == list(range(1, 1 + 1 + 1 + 2 + 4))         # every object, once
    assert {o.class_name for o in objects.values()} == {
        "graph_apps.Models", "graph_apps.Selection", "graph_apps.Residue", "graph_apps.Atom"}
    text = torpor.session.sdump(None, path, output=io.StringIO())
    assert f"@{r1.uid} graph_apps.Residue (version 1):" in text
    assert f"'residue': @{r1.uid} graph_apps.Residue" in text


# --- random graphs --------------------------------------------------------------------

def _on_custom_cycle(kinds, edges):
    """Whether some custom node lies on a cycle (brute force reachability)."""
    n = len(kinds)
    reach = [set(edges[i]) for i in range(n)]
    changed = True
    while changed:
        changed = False
        for i in range(n):
            new = set().union(*(reach[j] for j in reach[i])) - reach[i] if reach[i] else set()
            if new:
                reach[i] |= new
                changed = True
    return any(kinds[i] and i in reach[i] for i in range(n))


def _same_graph(orig, back):
    """The restored graph has the original's shape: one restored node per node,
    the same edges in the same order, the same kinds."""
    mapping = {}
    todo = list(zip(orig, back))
    while todo:
        o, b = todo.pop()
        if id(o) in mapping:
            assert mapping[id(o)] is b
            continue
        mapping[id(o)] = b
        assert type(b) is type(o) and b.k == o.k and len(b.out) == len(o.out)
        todo.extend(zip(o.out, b.out))
    assert len({id(b) for b in mapping.values()}) == len(mapping)


graphs = st.integers(1, 7).flatmap(lambda n: st.tuples(
    st.lists(st.booleans(), min_size=n, max_size=n),                      # custom or not
    st.lists(st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n),
    st.permutations(range(n)),                                          # the managers' order
    st.booleans()))                                                     # custom manager


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graphs)
def test_random_graphs_restore_or_report_the_cycle(graph):
    kinds, edges, order, custom_manager = graph
    nodes = [CNode(k) if c else GNode(k) for k, c in enumerate(kinds)]
    for node, out in zip(nodes, edges):
        node.out = [nodes[j] for j in out]
    roots = [nodes[i] for i in order]
    s = torpor.Session("g")
    s.m = CustomModels(*roots) if custom_manager else Models(*roots)
    b = io.BytesIO()
    if _on_custom_cycle(kinds, edges):
        with pytest.raises(torpor.CycleError, match="graph_apps.CNode"):
            s.save(b)
        return
    s.save(b)
    b.seek(0)
    t = torpor.Session("g")
    t.restore(b)
    _same_graph(roots, t.m.objs)


def test_the_graph_checks_can_fail():
    """The property test's helpers see a cycle, and a graph that differs."""
    assert _on_custom_cycle([True, False], [[1], [0]])
    assert not _on_custom_cycle([False, False], [[1], [0]])
    assert not _on_custom_cycle([True, False], [[1], [1]])
    a, b = GNode(0), GNode(0)
    a.out, b.out = [a], [GNode(0)]
    with pytest.raises(AssertionError):
        _same_graph([a], [b])
    assert complete(_protein(1, 1)[0].atoms[0]) and not complete(Atom.__new__(Atom))
