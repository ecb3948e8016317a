"""torpor.dump_module / load_module against dill's, on one namespace:

    python -m benchmarks.measure_module [--mb 500] [--atoms 500000] [--repeat 2]

The namespace holds a few functions and classes defined in it (saved by value by
both), a molecular model graph of ``--atoms`` small objects with shared
references, and ``--mb`` MiB of arrays. Both libraries run in this one process,
interleaved; best of ``--repeat``.
"""

import argparse
import os
import sys
import tempfile
import types

import dill

import torpor
from benchmarks.peers import best
from benchmarks.workloads import array_heavy, object_heavy

CODE = '''
import numpy as np
SCALE = 2.0
def normalize(x):
    return (x - x.mean()) / (x.std() + 1e-9) * SCALE
square = lambda v: v * v
class Analysis:
    def __init__(self, name):
        self.name = name
        self.results = {}
    def run(self, arr):
        self.results[self.name] = float(normalize(arr).sum())
        return self.results
class Fit(Analysis):
    method = "least squares"
'''


def build(mb, atoms):
    mod = types.ModuleType("bench_ns")       # not importable: code saved by value
    exec(CODE, mod.__dict__)
    mod.models = object_heavy(atoms)
    mod.workspace = array_heavy(mb)
    mod.analysis = mod.Fit("run 1")
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--atoms", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args(argv)
    mod = build(a.mb, a.atoms)
    with tempfile.TemporaryDirectory(prefix="torpor-measure-") as d:
        _measure(a, mod, d)


def _measure(a, mod, d):
    tp, dp = os.path.join(d, "t.torpor"), os.path.join(d, "d.pkl")
    sys.setrecursionlimit(100_000)          # dill recurses through the atom graph
    rows = {}
    for _ in range(a.repeat):
        rows.setdefault("torpor save", []).append(best(lambda: torpor.dump_module(tp, module=mod), 1))
        rows.setdefault("dill save", []).append(best(lambda: dill.dump_module(dp, module=mod), 1))
        rows.setdefault("torpor load", []).append(best(
            lambda: torpor.load_module(tp, module=types.ModuleType("t"), trusted=True,
                                       allow=["benchmarks.workloads.*"]), 1))
        rows.setdefault("dill load", []).append(best(
            lambda: dill.load_module(dp, module=types.ModuleType("bench_ns")), 1))
    ts, ds = min(rows["torpor save"]), min(rows["dill save"])
    tl, dl = min(rows["torpor load"]), min(rows["dill load"])
    fs_t, fs_d = os.path.getsize(tp), os.path.getsize(dp)
    print(f"namespace: {a.atoms} atoms, {a.mb} MiB arrays, 3 functions/classes by value")
    print(f"{'':<12}{'torpor':>10}{'dill':>10}{'dill/torpor':>13}")
    print(f"{'save s':<12}{ts:>10.3f}{ds:>10.3f}{ds / ts:>13.1f}")
    print(f"{'load s':<12}{tl:>10.3f}{dl:>10.3f}{dl / tl:>13.1f}")
    print(f"{'file MiB':<12}{fs_t / 2**20:>10.1f}{fs_d / 2**20:>10.1f}{fs_d / fs_t:>13.2f}")


if __name__ == "__main__":
    main()
