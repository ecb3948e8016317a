"""Checkpoints of a running namespace (storage.checkpoints) on FileStorage:

    python -m benchmarks.workspace_checkpoint [--size-mib 1024] [--arrays 8] [--repeat 5]

The workload: an executor's namespace (a module object, not in sys.modules)
holding ``--arrays`` random float64 arrays of ``--size-mib`` MiB in all (8 x 128
MiB by default), plus a few small variables (a counter, a dict, a function).

1. The first checkpoint (every array becomes a blob, stored raw; a fresh
   FileStorage each run, which deletes the previous run's first, as dump_module
   replaces its file) against ``torpor.dump_module`` of the same module (lz4,
   its default) to a file in the same temporary folder. Target: at most 1.1x.
2. The second checkpoint after changing one small variable (every blob reused,
   only the graph and its record written), as a fraction of the first: targets
   under 5% of the time and under 1% of the bytes written.

One process; the pairs interleaved with their order swapped every round
(``peers.interleaved``), ``settle()`` (gc and sync) before every timed run;
reported: best and median of the rounds. Also shown: a restore of the
checkpoint (blobs stored raw are memory-mapped: no copy). Exits non-zero, saying
which, when a target is missed. ``--size-mib 64`` is a quick run.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import types

import numpy as np

import torpor
from benchmarks.peers import interleaved, median, ratio_table, settle
from torpor.workspace import FileStorage

TARGET_FIRST = 1.10        # first checkpoint / dump_module
TARGET_TIME = 0.05         # second checkpoint's time / the first's
TARGET_BYTES = 0.01        # second checkpoint's bytes written / the first's


def workload(size_mib, arrays, seed=0):
    rng = np.random.default_rng(seed)
    m = types.ModuleType("__workspace__")
    n = (size_mib << 20) // arrays // 8
    for i in range(arrays):
        m.__dict__[f"field{i}"] = rng.random(n)
    exec("step = 0\nconfig = {'lr': 0.1, 'names': ['a', 'b']}\n"
         "def energy(x):\n    return float((x * x).sum()) * config['lr']\n", m.__dict__)
    return m


def arguments(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="MiB of arrays in all")
    ap.add_argument("--arrays", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    return ap.parse_args(argv)


def main(argv=None):
    a = arguments(argv)
    m = workload(a.size_mib, a.arrays)
    nbytes = sum(v.nbytes for v in vars(m).values() if isinstance(v, np.ndarray))
    with tempfile.TemporaryDirectory(prefix="torpor-cp-", dir=os.environ.get("TORPOR_BENCH_DIR")) as d:
        direct = os.path.join(d, "direct.torpor")
        runs = iter(range(1 << 30))
        first_results = []
        folders = []

        def first():
            # a fresh storage each run, which first deletes the previous run's (timed:
            # as dump_module releases the file it replaces). Without it every run
            # would write into memory the kernel has not used for long, which on a
            # VM (Firecracker) faults in from the host: 3x slower, and nothing
            # dump_module, which recycles its old file's pages, pays.
            if folders:
                shutil.rmtree(folders.pop())
            folder = os.path.join(d, f"fresh{next(runs)}")
            folders.append(folder)
            first_results.append(FileStorage(folder).checkpoints.save("bench", m))

        def dump():
            torpor.dump_module(direct, module=m)

        first(), dump()                 # warm up; check the round trip once
        out = types.ModuleType("__workspace__")
        FileStorage(folders[-1]).checkpoints.restore("bench", out)
        assert all(np.array_equal(out.__dict__[k], v) for k, v in vars(m).items()
                   if isinstance(v, np.ndarray))
        del out
        times = interleaved({"first checkpoint": (first, dump)}, a.repeat)
        first_results = first_results[1:]

        # the second checkpoint: one small variable changed, the blobs reused
        storage = FileStorage(folders[-1])
        out = types.ModuleType("__workspace__")
        second_results, second_times, restore_times = [], [], []
        for r in range(a.repeat):
            m.step += 1
            settle()
            t = time.perf_counter()
            second_results.append(storage.checkpoints.save("bench", m))
            second_times.append(time.perf_counter() - t)
            settle()
            t = time.perf_counter()
            storage.checkpoints.restore("bench", out)
            restore_times.append(time.perf_counter() - t)
            assert out.step == m.step
    cp_t, dm_t = times["first checkpoint"]
    first_bytes = median([r["bytes_written"] for r in first_results])
    second_bytes = median([r["bytes_written"] for r in second_results])
    assert all(r["blobs_written"] == 0 and r["blobs_reused"] == a.arrays for r in second_results)
    print(f"torpor {torpor.__version__} ({torpor.implementation}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; a namespace of {a.arrays} float64 arrays, "
          f"{nbytes / 2**20:.0f} MiB, and small variables; FileStorage in {d}; best and "
          f"median of {a.repeat} rounds, order swapped every round")
    ratio_table([("first checkpoint vs dump_module", cp_t, dm_t)], "checkpoint", "dump_module", 34)
    bf, mf = min(cp_t), median(cp_t)
    bs, ms = min(second_times), median(second_times)
    print(f"{'second checkpoint (one small change)':<34}{bs:>11.4f} s best {ms:>9.4f} s median; "
          f"{bs / bf:.2%} / {ms / mf:.2%} of the first's time (target < {TARGET_TIME:.0%})")
    print(f"{'bytes written: first, second':<34}{first_bytes / 2**20:>11.1f} MiB, "
          f"{second_bytes:,.0f} bytes: {second_bytes / first_bytes:.4%} (target < {TARGET_BYTES:.0%})")
    print(f"{'restore (blobs memory-mapped)':<34}{min(restore_times):>11.4f} s best "
          f"{median(restore_times):>9.4f} s median")
    missed = []
    ratio_best, ratio_median = bf / min(dm_t), mf / median(dm_t)
    if ratio_median > TARGET_FIRST:
        missed.append(f"first checkpoint {ratio_median:.2f}x dump_module (median; best "
                      f"{ratio_best:.2f}x), target {TARGET_FIRST}x")
    if ms / mf >= TARGET_TIME:
        missed.append(f"second checkpoint {ms / mf:.1%} of the first's time, target "
                      f"{TARGET_TIME:.0%}")
    if second_bytes / first_bytes >= TARGET_BYTES:
        missed.append(f"second checkpoint wrote {second_bytes / first_bytes:.2%} of the "
                      f"first's bytes, target {TARGET_BYTES:.0%}")
    if missed:
        print("MISSED: " + "; ".join(missed), file=sys.stderr)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
