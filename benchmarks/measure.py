"""Measure the issue's targets in one process run, peers interleaved:

    python -m benchmarks.measure [--mb 1024] [--atoms 500000] [--repeat 3]

Prints a table of best-of-N times, file sizes and ratios to pickle, a second one
against the fair peers of an array save (pickle followed by fsync, as torpor's
atomic save fsyncs; blosc2 lz4 with shuffle and with bitshuffle on the
workspace's arrays, written and fsynced, the same thread count: the best of the
two), and the peak resident memory of a save measured in a fresh subprocess.
"""

import argparse
import gc
import os
import pickle
import subprocess
import sys
import tempfile

import torpor
from benchmarks.arrays import check as check_arrays
from benchmarks.arrays import peers as array_peers
from benchmarks.peers import best, pickle_load, pickle_save, ratio_table
from benchmarks.workloads import WORKLOAD_CLASSES, array_heavy, object_heavy
from torpor.format.container import default_threads


def peak_save_rss(mb):
    """Resident memory of a save, sampled every 2 ms in a fresh subprocess that
    builds the workload first: returns (live array bytes, peak RSS above the level
    just before the save)."""
    code = f"""
import gc, os, tempfile, torpor
from benchmarks.report import PeakRSS
from benchmarks.workloads import array_heavy
from benchmarks.measure import _arrays
ws = array_heavy({mb})
live = sum(a.nbytes for a in _arrays(ws))
gc.collect()
with tempfile.TemporaryDirectory() as d:
    with PeakRSS() as m:
        torpor.dump(ws, os.path.join(d, "x.torpor"))
print(live, m.extra)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    live, extra = map(int, out.stdout.split())
    return live, extra


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--atoms", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="torpor-measure-") as d:
        _measure(a, d)


def _pair(r, *runs):
    """Time each (times, fn) of ``runs`` once, the first one first in even rounds
    and last in odd ones. On this VM the first large allocation after a pause
    pays for the host faulting fresh memory in (a GiB can take seconds, the next
    one 0.07 s), so a fixed order would always charge it to the same library."""
    for times, fn in (runs if r % 2 == 0 else runs[::-1]):
        times.append(best(fn, 1))


def _measure(a, d):
    tp, pp, tr = (os.path.join(d, n) for n in ("t.torpor", "p.pkl", "r.torpor"))
    rows = []
    ws = array_heavy(a.mb)
    live = sum(x.nbytes for x in _arrays(ws))

    t_save, p_save, t_load, p_load = [], [], [], []
    for r in range(a.repeat):         # interleaved, so drift hits both alike
        _pair(r, (t_save, lambda: torpor.dump(ws, tp)), (p_save, lambda: pickle_save(ws, pp)))
        _pair(r, (t_load, lambda: torpor.load(tp, allow=WORKLOAD_CLASSES)), (p_load, lambda: pickle_load(pp)))
    # the fair peers of an array save (issue 16): pickle + fsync; blosc2 on the arrays
    fair = array_peers(default_threads())
    arrs = _arrays(ws)
    pf_save, b2s_save, b2b_save, b2_load = [], [], [], []
    for r in range(a.repeat):
        _pair(r, (pf_save, lambda: fair["pickle + fsync"][0](ws, pp)),
              (b2s_save, lambda: fair["blosc2 lz4+shuffle"][0](arrs, tr)),
              (b2b_save, lambda: fair["blosc2 lz4+bitshuffle"][0](arrs, tr)))
    b2_save = [min(x, y) for x, y in zip(b2s_save, b2b_save)]      # blosc2's best, each round
    fair["blosc2 lz4+bitshuffle"][0](arrs, tr)      # the file the loads read (and check)
    got = fair["blosc2 lz4+bitshuffle"][1](tr, arrs)
    check_arrays(arrs, got)
    del got
    for r in range(a.repeat):
        b2_load.append(best(lambda: fair["blosc2 lz4+bitshuffle"][1](tr, arrs), 1))
    fair_rows = [("array-heavy save / pickle + fsync", t_save, pf_save),
                 ("array-heavy save / blosc2 best, arrays", t_save, b2_save),
                 ("array-heavy load / blosc2 bitshuffle", t_load, b2_load)]
    torpor.dump(ws, tr, compress=None)
    t_mmap = [best(lambda: torpor.load(tr, mmap=True, allow=WORKLOAD_CLASSES), 1) for _ in range(a.repeat)]
    ts, ps = os.path.getsize(tp), os.path.getsize(pp)
    rows.append(("array-heavy save", t_save, p_save))
    rows.append(("array-heavy load", t_load, p_load))
    rows.append(("array-heavy mmap load (compress=None)", t_mmap, p_load))
    # loads one after the other, no saves between them: the memory one frees is
    # what the next one fills (no first touch of fresh pages), the files are cached
    h_load_t, h_load_p = [], []
    for r in range(a.repeat):
        _pair(r, (h_load_t, lambda: torpor.load(tp, allow=WORKLOAD_CLASSES)), (h_load_p, lambda: pickle_load(pp)))
    rows.append(("array-heavy load, loads only", h_load_t, h_load_p))
    if hasattr(os, "posix_fadvise"):
        # as when loading a file saved long ago: neither file in the page cache
        c_load_t, c_load_p = [], []
        for r in range(a.repeat):
            _evict(tp), _evict(pp)
            _pair(r, (c_load_t, lambda: torpor.load(tp, allow=WORKLOAD_CLASSES)), (c_load_p, lambda: pickle_load(pp)))
        rows.append(("array-heavy load, files not cached", c_load_t, c_load_p))
    ws = None          # frees the workspace (the lambdas above that use it are done)
    gc.collect()
    live_bytes, save_extra = peak_save_rss(a.mb)

    objs = object_heavy(a.atoms)
    pk = pickle.dumps(objs, protocol=5)
    tb = torpor.dumps(objs)
    o_save_t, o_save_p, o_load_t, o_load_p = [], [], [], []
    for r in range(a.repeat):
        _pair(r, (o_save_t, lambda: torpor.dumps(objs)), (o_save_p, lambda: pickle.dumps(objs, protocol=5)))
        _pair(r, (o_load_t, lambda: torpor.loads(tb, allow=WORKLOAD_CLASSES)), (o_load_p, lambda: pickle.loads(pk)))
    rows.append(("object-heavy dumps", o_save_t, o_save_p))
    rows.append(("object-heavy loads", o_load_t, o_load_p))

    print(f"torpor {torpor.__version__} ({torpor.implementation}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; array-heavy {live / 2**20:.0f} MiB live, "
          f"{a.atoms} atoms; best and median of {a.repeat}")
    ratio_table(rows)
    print()
    ratio_table(fair_rows, b="peer")
    print(f"array-heavy file size: torpor {ts / 2**20:.0f} MiB, pickle {ps / 2**20:.0f} MiB, "
          f"pickle/torpor {ps / ts:.2f}x")
    print(f"object-heavy size: torpor {len(tb) / 2**20:.1f} MiB, pickle {len(pk) / 2**20:.1f} MiB")
    print(f"array-heavy save: peak RSS {save_extra / 2**20:.0f} MiB above the "
          f"{live_bytes / 2**20:.0f} MiB of live data (target: under 64 MiB above)")


def _evict(path):
    """Drop ``path`` from the page cache (it was fsynced or is clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _arrays(ws):
    import numpy as np
    out = list(ws["volumes"].values())
    for g in ws["geometries"]:
        out += [g.points, g.normals]
    for m in ws["meshes"]:
        out += [m.vertices, m.faces]
    return [x for x in out if isinstance(x, np.ndarray)]


if __name__ == "__main__":
    main()
