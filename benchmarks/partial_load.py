"""What a partial load reads and costs (issue 17, "See inside, load a part"):

    python -m benchmarks.partial_load [--mb 1024] [--repeat 5]

Saves ``--mb`` MiB as float64 arrays of 4 MiB (``{"geoms": [{"points": a}, ...]}``,
``compress=None``), then, rounds rotated: ``load(select=...)`` of one array near the
end, ``torpor.open`` and one step down to the same array, and the whole load.
Prints best and median wall time of each, and the bytes each partial load read
beyond the array (counted at the file object).
"""

import argparse
import io
import os
import statistics
import tempfile
import time

import numpy as np

import torpor


class Counting(io.RawIOBase):
    """A seekable file object that counts the bytes read from it (the partial-load
    tests count with it too)."""

    def __init__(self, f):
        self.f, self.read_bytes = f, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def tell(self):
        return self.f.tell()

    def readinto(self, view):
        n = self.f.readinto(view)
        self.read_bytes += n
        return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    n = max(2, a.mb // 4)
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(1 << 19) for _ in range(n)]
    want = n * 3 // 4
    path = "['geoms'][%d]['points']" % want
    with tempfile.TemporaryDirectory() as d:
        file = os.path.join(d, "parts.torpor")
        torpor.dump({"geoms": [{"points": x} for x in arrays]}, file, compress=None)
        print(f"{n} arrays of 4 MiB, {os.path.getsize(file) / 2**20:.0f} MiB; part {path}")
        extra = {}

        def select():
            with open(file, "rb") as raw:
                f = Counting(raw)
                got = torpor.load(io.BufferedReader(f, 1 << 16), select=path)
            extra["select"] = f.read_bytes - got.nbytes
            assert np.array_equal(got, arrays[want])

        def view():
            with open(file, "rb") as raw:
                f = Counting(raw)
                with torpor.open(io.BufferedReader(f, 1 << 16)) as v:
                    got = v["geoms"][want]["points"]
            extra["open"] = f.read_bytes - got.nbytes
            assert np.array_equal(got, arrays[want])

        def whole():
            assert len(torpor.load(file)["geoms"]) == n

        runs = {"load(select=)": select, "open + 3 steps": view, "whole load": whole}
        times = {k: [] for k in runs}
        names = list(runs)
        for r in range(a.repeat):
            for k in names[r % len(names):] + names[:r % len(names)]:
                t = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - t)
        for k, ts in times.items():
            print(f"{k:16s} best {min(ts) * 1e3:9.1f} ms  median {statistics.median(ts) * 1e3:9.1f} ms")
        print(f"read beyond the array: load(select=) {extra['select'] / 1024:.0f} KiB, "
              f"open + 3 steps {extra['open'] / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
