"""Save and restore a realistic application state with torpor, next to pickle.

Builds a segmentation workspace (point clouds, normals, meshes, smooth volumes)
and a molecular model set (residues and atoms with shared references), saves
both with torpor and pickle, restores them, checks they are equal and prints
what happened."""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import torpor  # noqa: E402
from benchmarks.peers import pickle_load, pickle_save  # noqa: E402
from benchmarks.workloads import WORKLOAD_CLASSES, array_heavy, object_heavy  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    state = {"workspace": array_heavy(256, seed=1), "models": object_heavy(100_000, seed=1)}
    d = tempfile.mkdtemp()
    path, ppath = os.path.join(d, "session.torpor"), os.path.join(d, "session.pkl")
    _, t_save = timed(lambda: torpor.dump(state, path, metadata={"app": "demo", "user": "you"}))
    back, t_load = timed(lambda: torpor.load(path, allow=WORKLOAD_CLASSES))
    _, p_save = timed(lambda: pickle_save(state, ppath))
    _, p_load = timed(lambda: pickle_load(ppath))

    ws, wb = state["workspace"], back["workspace"]
    for k, v in ws["volumes"].items():
        np.testing.assert_array_equal(wb["volumes"][k], v)
    for g, h in zip(ws["geometries"], wb["geometries"]):
        np.testing.assert_array_equal(g.points, h.points)
    atoms = back["models"]["structure"]["atoms"]
    assert len(atoms) == 100_000 and atoms[0].residue is atoms[4].residue
    assert atoms[0].residue.atoms[0] is atoms[0]

    info = torpor.info(path)
    print(f"torpor {torpor.__version__} ({torpor.implementation} walker)")
    print(f"saved {len(info['sections'])} sections ({sum(s['kind'] == 'array' for s in info['sections'])} arrays) "
          f"and {info['objects']} named objects; metadata {info['metadata']}")
    print(f"{'':>8}{'save s':>9}{'load s':>9}{'size MiB':>10}")
    print(f"{'torpor':>8}{t_save:>9.2f}{t_load:>9.2f}{os.path.getsize(path) / 2**20:>10.1f}")
    print(f"{'pickle':>8}{p_save:>9.2f}{p_load:>9.2f}{os.path.getsize(ppath) / 2**20:>10.1f}")
    print("restored state is equal, shared residues are shared again, every checksum verified:",
          torpor.verify(path), "sections")


if __name__ == "__main__":
    main()
