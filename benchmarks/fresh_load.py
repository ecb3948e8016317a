"""The array-heavy load in a fresh process, against pickle's (issue 16: "load of
the array-heavy workload at most 0.8x pickle's in a fresh process"):

    python -m benchmarks.fresh_load [--mb 1024] [--repeat 6]

The workspace of ``workloads.array_heavy`` is saved once by torpor (default
settings) and by pickle (protocol 5, to a file). Each round starts one new Python
process per library, in an order rotated every round, after ``settle()``; the
process imports what it needs, then times only the load (files in the page cache,
as right after a save) and prints the time and a digest of every array it got
(dtype, shape, bytes), which must be the saved arrays'. torpor is timed at its
default thread count and at one thread.

On a virtual machine a fresh process's first touch of new memory may have the host
back it (seconds for a GiB, then a tenth of that): it falls on both libraries, so
the medians say more than the bests.
"""

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile

import torpor
from benchmarks.arrays import _arrays
from benchmarks.peers import settle
from benchmarks.workloads import WORKLOAD_CLASSES, array_heavy

_TIMED = """
import sys, time
sys.path[:0] = {path!r}
import numpy, pickle, torpor, benchmarks.workloads
from benchmarks.arrays import _arrays
from benchmarks.fresh_load import digest
t = time.perf_counter()
{call}
t = time.perf_counter() - t
print(t, digest(_arrays(obj, [])))
"""


def digest(arrays):
    """xxh3 of every array's dtype, shape and bytes, in order."""
    import xxhash
    h = xxhash.xxh3_64()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes(order="A"))
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=6)
    a = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = [p for p in sys.path if p] + [here]
    with tempfile.TemporaryDirectory(prefix="torpor-fresh-") as d:
        tp, pp = os.path.join(d, "w.torpor"), os.path.join(d, "w.pkl")
        ws = array_heavy(a.mb)
        want = digest(_arrays(ws, []))
        gb = sum(x.nbytes for x in _arrays(ws, [])) / 1e9
        torpor.dump(ws, tp)
        with open(pp, "wb") as f:
            pickle.dump(ws, f, protocol=5)
        del ws
        allow = list(WORKLOAD_CLASSES)
        calls = {
            "torpor": f"obj = torpor.load({tp!r}, allow={allow!r})",
            "torpor threads=1": f"obj = torpor.load({tp!r}, threads=1, allow={allow!r})",
            "pickle": f"with open({pp!r}, 'rb') as f: obj = pickle.load(f)",
        }
        names = list(calls)
        times = {n: [] for n in names}
        for r in range(a.repeat):
            for n in names[r % len(names):] + names[:r % len(names)]:
                settle()
                out = subprocess.run([sys.executable, "-c", _TIMED.format(path=path, call=calls[n])],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{n}: the load failed:\n{out.stderr}")
                seconds, got = out.stdout.split()
                if got != want:
                    sys.exit(f"{n}: the arrays loaded are not the arrays saved")
                times[n].append(float(seconds))
    print(f"array-heavy workspace, {gb:.2f} GB of arrays; load in a fresh process, files in the "
          f"page cache; best / median of {a.repeat}, order rotated")
    p = times["pickle"]
    for n in names:
        t = times[n]
        print(f"  {n:18s} {min(t):6.3f} / {statistics.median(t):6.3f} s   ratio to pickle "
              f"{min(t) / min(p):4.2f} / {statistics.median(t) / statistics.median(p):4.2f}"
              f"   rounds: {', '.join(f'{x:.2f}' for x in t)}")


if __name__ == "__main__":
    main()
