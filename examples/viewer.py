"""A molecular-viewer-like application built on torpor's State API.

State managers:
  models     Models: the open structures (each a Structure State object)
  selection  Selection: picked atoms, by structure and atom index (shares the
             Structure objects with ``models``)
  view       View: camera position, orientation, field of view, and the
             structure the camera rotates about (shared again)

A Structure holds its atoms column-wise (coordinates, serials, names, residue of
each atom) the way real viewers do, and builds Residue and Atom objects with
shared references (``atom.residue``, ``residue.atoms``, ``atom.structure``) when
created or restored. Its snapshot is the columns, so a 100,000-atom structure
saves as a handful of arrays, written zero-copy.
"""

import numpy as np

import torpor

ELEMENTS = np.array(["N", "C", "C", "O", "C"])
ATOM_NAMES = np.array(["N", "CA", "C", "O", "CB"])
RESIDUE_NAMES = ["ALA", "GLY", "SER", "LEU", "LYS", "ASP", "GLU", "PHE"]


class Residue:
    __slots__ = ("name", "number", "chain", "atoms", "__weakref__")

    def __init__(self, name, number, chain):
        self.name = name
        self.number = number
        self.chain = chain
        self.atoms = []


class Atom:
    __slots__ = ("structure", "index", "residue")

    def __init__(self, structure, index, residue):
        self.structure = structure
        self.index = index
        self.residue = residue

    @property
    def name(self):
        return str(self.structure.atom_names[self.index])

    @property
    def coord(self):
        return self.structure.coords[self.index]


class Structure(torpor.State):
    version = 2     # version 1 had no per-atom B-factors

    def __init__(self, name, coords, atom_names, serials, residue_index, residue_names,
                 residue_numbers, chains, bfactors=None, color=(0.7, 0.7, 0.7, 1.0)):
        self.name = name
        self.coords = np.ascontiguousarray(coords, dtype=np.float32)
        self.atom_names = np.asarray(atom_names)
        self.serials = np.asarray(serials, dtype=np.int32)
        self.residue_index = np.asarray(residue_index, dtype=np.int32)
        self.residue_names = list(residue_names)
        self.residue_numbers = np.asarray(residue_numbers, dtype=np.int32)
        self.chains = list(chains)
        n = len(self.coords)
        self.bfactors = np.zeros(n, np.float32) if bfactors is None else np.asarray(bfactors, np.float32)
        self.color = tuple(color)
        self._build_objects()

    def _build_objects(self):
        self.residues = [Residue(nm, int(num), ch) for nm, num, ch in
                         zip(self.residue_names, self.residue_numbers, self.chains)]
        res = self.residues
        self.atoms = [Atom(self, i, res[r]) for i, r in enumerate(self.residue_index.tolist())]
        for a in self.atoms:
            a.residue.atoms.append(a)

    def take_snapshot(self, session, flags):
        # the columns only: Residue and Atom objects are rebuilt from them
        return {"name": self.name, "coords": self.coords, "atom_names": self.atom_names,
                "serials": self.serials, "residue_index": self.residue_index,
                "residue_names": self.residue_names, "residue_numbers": self.residue_numbers,
                "chains": self.chains, "bfactors": self.bfactors, "color": self.color}

    @classmethod
    def restore_snapshot(cls, session, data, version=2):
        if version < 2:     # upgrade: version 1 files have no B-factors
            data = dict(data, bfactors=None)
        return cls(**data)

    def __eq__(self, other):
        return (type(other) is Structure and self.name == other.name
                and self.color == other.color and self.residue_names == other.residue_names
                and self.chains == other.chains
                and all(np.array_equal(getattr(self, k), getattr(other, k)) and
                        getattr(self, k).dtype == getattr(other, k).dtype
                        for k in ("coords", "atom_names", "serials", "residue_index",
                                  "residue_numbers", "bfactors")))

    __hash__ = object.__hash__


class Models(torpor.StateManager):
    """The open structures. On a combined restore, structures from the file are
    appended after the current ones, renamed if a name is taken."""

    def __init__(self, structures=()):
        self.structures = list(structures)

    def add(self, s):
        self.structures.append(s)
        return s

    def take_snapshot(self, session, flags):
        return {"structures": list(self.structures)}

    @classmethod
    def restore_snapshot(cls, session, data):
        incoming = data["structures"]
        current = session.get_state_manager("models")
        if session.restore_options.get("combine") and current is not None:
            taken = {s.name for s in current.structures}
            for s in incoming:
                base, n = s.name, 1
                while s.name in taken:
                    n += 1
                    s.name = f"{base}.{n}"
                taken.add(s.name)
            return cls(current.structures + incoming)     # a new manager: the old one is untouched
        return cls(incoming)

    def reset_state(self, session):
        self.structures = []


class Selection(torpor.StateManager):
    """Selected atoms: {structure: int32 array of atom indices}."""

    def __init__(self):
        self.picked = {}

    def select(self, structure, indices):
        self.picked[structure] = np.asarray(indices, dtype=np.int32)

    def atoms(self):
        return [s.atoms[i] for s, idx in self.picked.items() for i in idx.tolist()]

    def take_snapshot(self, session, flags):
        return {"picked": [(s, idx) for s, idx in self.picked.items()]}

    @classmethod
    def restore_snapshot(cls, session, data):
        sel = cls()
        sel.picked = dict(data["picked"])
        if session.restore_options.get("combine"):
            current = session.get_state_manager("selection")
            if current is not None:
                sel.picked = {**current.picked, **sel.picked}
        return sel

    def reset_state(self, session):
        self.picked = {}


class View(torpor.StateManager):
    def __init__(self):
        self.reset_state(None)

    def take_snapshot(self, session, flags):
        if not flags & torpor.State.SESSION:
            return None
        return dict(self.__dict__)

    def reset_state(self, session):
        self.position = np.zeros(3)
        self.rotation = np.eye(3)
        self.field_of_view = 30.0
        self.center_of = None          # the Structure the camera rotates about


def build(n_atoms=100_000, n_structures=2, seed=0):
    """A session with ``n_structures`` structures of ``n_atoms`` atoms in all."""
    rng = np.random.default_rng(seed)
    session = torpor.Session("viewer")
    session.models = Models()
    session.selection = Selection()
    session.view = View()
    per = n_atoms // n_structures
    for k in range(n_structures):
        n_res = per // 5
        coords = np.cumsum(rng.normal(0, 0.8, (per, 3)), axis=0).astype(np.float32)
        s = Structure(
            name=f"{k + 1}ab{k}", coords=coords,
            atom_names=ATOM_NAMES[np.arange(per) % 5], serials=np.arange(1, per + 1),
            residue_index=np.arange(per) // 5,
            residue_names=[RESIDUE_NAMES[i % len(RESIDUE_NAMES)] for i in rng.integers(0, 8, n_res)],
            residue_numbers=np.arange(1, n_res + 1), chains=["A" if i < n_res // 2 else "B" for i in range(n_res)],
            bfactors=rng.uniform(5, 80, per))
        session.models.add(s)
        session.selection.select(s, rng.choice(per, 50, replace=False))
    session.view.center_of = session.models.structures[0]
    session.view.position = np.array([0.0, 0.0, 150.0])
    session.metadata["description"] = "viewer example"
    return session


def check_equal(a, b):
    """Assert that session ``b`` restores session ``a`` exactly (values, dtypes,
    shared references)."""
    ma, mb = a.models.structures, b.models.structures
    assert len(ma) == len(mb), (len(ma), len(mb))
    for x, y in zip(ma, mb):
        assert x == y, x.name
        assert y.atoms[0].residue is y.residues[0] and y.residues[0].atoms[0] is y.atoms[0]
        assert y.atoms[-1].structure is y
    # shared across managers: the selection's and the view's structures are the models'
    assert all(any(s is m for m in mb) for s in b.selection.picked)
    assert [y.name for y in b.selection.picked] == [x.name for x in a.selection.picked]
    for x, y in zip(a.selection.picked.values(), b.selection.picked.values()):
        assert np.array_equal(x, y) and y.dtype == x.dtype
    assert b.view.center_of is mb[0]
    assert np.array_equal(b.view.position, a.view.position)
    assert b.view.field_of_view == a.view.field_of_view
