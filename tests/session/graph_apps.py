"""State classes for the tests of object graphs with cycles (test_cycles.py),
defined at module level as applications define theirs: objects of classes with
the default take_snapshot and restore_snapshot are saved in place."""

import torpor


class Residue(torpor.State):
    """Default snapshot methods: saved in place."""

    def __init__(self, name, number):
        self.name = name
        self.number = number
        self.atoms = []


class Atom(torpor.State):
    """Default snapshot methods: saved in place; points back at its residue."""

    def __init__(self, name, residue):
        self.name = name
        self.residue = residue
        self.bonds = []


class Node(torpor.State):
    """A general in-place object for dict, tuple and self references."""

    def __init__(self, label):
        self.label = label


class Models(torpor.StateManager):
    """A state manager with the default snapshot methods (in place)."""

    def __init__(self, *objs):
        self.objs = list(objs)

    def reset_state(self, session):
        self.objs = []


class CustomModels(torpor.StateManager):
    """A state manager with its own snapshot methods."""

    def __init__(self, *objs):
        self.objs = list(objs)

    def take_snapshot(self, session, flags):
        return {"objs": list(self.objs)}

    @classmethod
    def restore_snapshot(cls, session, data):
        return cls(*data["objs"])

    def reset_state(self, session):
        self.objs = []


def complete(atom):
    """Whether ``atom`` and its residue are filled in (a restore_snapshot that
    needs them restored first checks this)."""
    return (type(atom) is Atom and "name" in vars(atom) and "residue" in vars(atom)
            and "atoms" in vars(atom.residue) and atom in atom.residue.atoms)


class Selection(torpor.State):
    """Its own snapshot methods: a list of atoms, which its restore_snapshot
    needs complete (restored first)."""

    seen = []

    def __init__(self, atoms):
        self.atoms = list(atoms)

    def take_snapshot(self, session, flags):
        return {"atoms": list(self.atoms)}

    @classmethod
    def restore_snapshot(cls, session, data):
        cls.seen.append(all(complete(a) for a in data["atoms"]))
        return cls(data["atoms"])


class Bond(torpor.State):
    """Its own snapshot methods: two atoms, each of which lists the bond in its
    ``bonds`` (so a bond is on a cycle through atoms)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def take_snapshot(self, session, flags):
        return {"a": self.a, "b": self.b}

    @classmethod
    def restore_snapshot(cls, session, data):
        assert complete(data["a"]) and complete(data["b"])
        return cls(data["a"], data["b"])


class Ring(torpor.State):
    """Its own restore_snapshot, which needs ``next`` restored first."""

    def __init__(self, name):
        self.name = name
        self.next = None

    @classmethod
    def restore_snapshot(cls, session, data):
        obj = cls(data["name"])
        obj.next = data["next"]
        assert obj.next is None or obj.next.name
        return obj


class GNode(torpor.State):
    """In place: a node of the random graphs (``out``: the nodes it points at)."""

    def __init__(self, k):
        self.k = k
        self.out = []


class CNode(torpor.State):
    """Its own snapshot methods: a node of the random graphs whose
    restore_snapshot checks that everything it reaches is complete."""

    def __init__(self, k, out=None):
        self.k = k
        self.out = [] if out is None else out

    def take_snapshot(self, session, flags):
        return {"k": self.k, "out": list(self.out)}

    @classmethod
    def restore_snapshot(cls, session, data):
        seen, todo = set(), list(data["out"])
        while todo:
            n = todo.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            # a node reached from here that is not filled in yet: restored too early
            assert "out" in vars(n) and "k" in vars(n), f"node {n!r} is not complete"
            todo.extend(n.out)
        return cls(data["k"], data["out"])


class Unpicklable:
    """Not a State: instances in the attributes of an in-place object need allow=."""

    def __init__(self, v):
        self.v = v
