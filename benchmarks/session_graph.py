"""A session of State objects that point at each other, against pickle (issue 15):

    python -m benchmarks.session_graph [--size full|small] [--repeat 5]
                                       [--atoms N --residues M]

The workload: ``--atoms`` Atoms (default 1,000,000) in ``--residues`` Residues
(default 100,000), every atom pointing back at its residue and every residue
listing its atoms, all State subclasses with the default take_snapshot and
restore_snapshot (so saved in place), held by one StateManager. torpor saves it
with ``Session.save(path)`` and restores it with ``Session.restore(path)`` (safe
loading: no ``trusted=``); pickle saves the same manager with ``pickle.dump`` to a
file (protocol 5) and loads it with ``pickle.load``. One process, the two
libraries interleaved with their order swapped every round, ``settle()`` before
every timed run; reported are the best and the median of the rounds and their
ratios. The first round checks that the restored graph has the original's shape
and identities. ``--size small`` (20,000 atoms) is the size CI runs.
"""

import argparse
import os
import pickle
import random
import sys
import tempfile

import torpor
from benchmarks.peers import best, ratio_table

SIZES = {"full": (1_000_000, 100_000), "small": (20_000, 2_000)}


class Residue(torpor.State):
    def __init__(self, name, number, chain):
        self.name = name
        self.number = number
        self.chain = chain
        self.atoms = []


class Atom(torpor.State):
    def __init__(self, name, serial, coord, bfactor, residue):
        self.name = name
        self.serial = serial
        self.coord = coord
        self.bfactor = bfactor
        self.residue = residue


class Molecules(torpor.StateManager):
    def __init__(self):
        self.residues = []

    def reset_state(self, session):
        self.residues = []


def build(n_atoms=1_000_000, n_residues=100_000, seed=0):
    """The session: ``n_atoms`` atoms spread evenly over ``n_residues`` residues."""
    rng = random.Random(seed)
    names = ["N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "OH"]
    resnames = ["ALA", "GLY", "SER", "LEU", "LYS", "TRP", "ASP"]
    m = Molecules()
    serial = 0
    for r in range(n_residues):
        res = Residue(resnames[r % 7], r, "AB"[r * 2 // n_residues])
        for _ in range(n_atoms // n_residues + (r < n_atoms % n_residues)):
            a = Atom(names[serial % 10], serial,
                     (round(rng.uniform(-50, 50), 3), round(rng.uniform(-50, 50), 3),
                      round(rng.uniform(-50, 50), 3)), round(rng.uniform(0, 80), 2), res)
            res.atoms.append(a)
            serial += 1
        m.residues.append(res)
    s = torpor.Session("molecules")
    s.molecules = m
    return s


def check(saved, restored):
    """The restored manager has the saved one's residues and atoms, each atom
    pointing at its own restored residue."""
    a, b = saved.residues, restored.residues
    assert type(restored) is Molecules and len(a) == len(b)
    step = max(1, len(a) // 1000)
    for ra, rb in zip(a[::step], b[::step]):
        assert type(rb) is Residue and (ra.name, ra.number, ra.chain) == (rb.name, rb.number, rb.chain)
        assert len(ra.atoms) == len(rb.atoms)
        for x, y in zip(ra.atoms, rb.atoms):
            assert type(y) is Atom and y.residue is rb
            assert (x.name, x.serial, x.coord, x.bfactor) == (y.name, y.serial, y.coord, y.bfactor)
    assert sum(len(r.atoms) for r in b) == sum(len(r.atoms) for r in a)


def measure_fns(s, lib, folder):
    """(save, load) of session ``s`` for ``lib`` ("torpor" or "pickle") to a file
    in ``folder``; load returns the restored manager."""
    m = s.molecules
    path = os.path.join(folder, f"s.{lib}")
    if lib == "torpor":
        def save():
            s.save(path)

        def load():
            fresh = torpor.Session("molecules")
            fresh.restore(path)
            return fresh.molecules
        return save, load

    def p_save():
        with open(path, "wb") as f:
            pickle.dump(m, f, protocol=5)

    def p_load():
        with open(path, "rb") as f:
            return pickle.load(f)
    return p_save, p_load


def measure(n_atoms, n_residues, repeat, folder):
    """{"save"|"restore": (torpor times, pickle times)} and the two file sizes."""
    s = build(n_atoms, n_residues)
    (t_save, t_load), (p_save, p_load) = (measure_fns(s, lib, folder) for lib in ("torpor", "pickle"))
    t_save(), p_save()
    check(s.molecules, t_load())       # the round trip, before any timing
    check(s.molecules, p_load())
    times = {"save": ([], []), "restore": ([], [])}
    for r in range(repeat):
        for name, t_fn, p_fn in (("save", t_save, p_save), ("restore", t_load, p_load)):
            runs = [(times[name][0], t_fn), (times[name][1], p_fn)]
            for out, fn in (runs if r % 2 == 0 else runs[::-1]):
                out.append(best(fn, 1))
    return (times, os.path.getsize(os.path.join(folder, "s.torpor")),
            os.path.getsize(os.path.join(folder, "s.pickle")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--atoms", type=int)
    ap.add_argument("--residues", type=int)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    n_atoms, n_residues = SIZES[a.size]
    n_atoms, n_residues = a.atoms or n_atoms, a.residues or n_residues
    with tempfile.TemporaryDirectory(prefix="torpor-session-") as d:
        times, ts, ps = measure(n_atoms, n_residues, a.repeat, d)
    print(f"torpor {torpor.__version__} ({torpor.implementation}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; {n_atoms} atoms in {n_residues} residues (State objects "
          f"saved in place); best and median of {a.repeat}, order swapped every round")
    ratio_table([(name, t, p) for name, (t, p) in times.items()], width=10)
    print(f"file size: torpor {ts / 2**20:.1f} MiB, pickle {ps / 2**20:.1f} MiB")
    return times


if __name__ == "__main__":
    # the classes as benchmarks.session_graph.*, not __main__.*
    from benchmarks.session_graph import main as _main
    _main()
