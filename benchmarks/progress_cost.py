"""What ``progress=`` costs (issue 17: nothing when off):

    python -m benchmarks.progress_cost [--mb 256] [--repeat 5]

Saves and loads the array-heavy workspace with ``progress=None`` (the default:
the file object is used as it is), a callable that does nothing (one Python call
per write or read, about one per 2 MiB chunk) and ``progress=True`` (a tqdm bar,
shown after a second, to stderr). The order rotates every round; best and
median are printed, and each one's ratio to ``progress=None``.
"""

import argparse
import os
import statistics
import tempfile
import time

import torpor
from benchmarks.workloads import WORKLOAD_CLASSES, array_heavy


def _nothing(done, total):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    ws = array_heavy(a.mb)
    kinds = {"off (None)": None, "callable": _nothing, "tqdm bar (True)": True}
    res = {(k, op): [] for k in kinds for op in ("save", "load")}
    with tempfile.TemporaryDirectory(prefix="torpor-progress-") as d:
        path = os.path.join(d, "ws.torpor")
        names = list(kinds)
        for r in range(a.repeat):
            for k in names[r % len(names):] + names[:r % len(names)]:
                t = time.perf_counter()
                torpor.dump(ws, path, progress=kinds[k])
                res[(k, "save")].append(time.perf_counter() - t)
                t = time.perf_counter()
                torpor.load(path, allow=WORKLOAD_CLASSES, progress=kinds[k])
                res[(k, "load")].append(time.perf_counter() - t)
    print(f"array-heavy workspace, {a.mb} MB; best / median of {a.repeat}, rotated")
    for op in ("save", "load"):
        base_b = min(res[(names[0], op)])
        base_m = statistics.median(res[(names[0], op)])
        for k in names:
            ts = res[(k, op)]
            print(f"  {op} {k:16s} {min(ts):7.3f} / {statistics.median(ts):7.3f} s"
                  f"   vs off {min(ts) / base_b:5.2f} / {statistics.median(ts) / base_m:5.2f}")


if __name__ == "__main__":
    main()
