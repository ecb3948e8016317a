"""Array saves against blosc2 and pickle + fsync (issue 16), CPU time and wall time:

    python -m benchmarks.arrays [--mb 256] [--repeat 5] [--threads 1 2]

Workloads (seeded): the Mosaic-like workspace (``workloads.array_heavy``), smooth
volumes, integer index arrays, noisy float32, random float64. Peers, each writing
a file and fsyncing it: torpor's default save and ``compress=None``; blosc2
(``compress2`` of every array, lz4 with shuffle and with bitshuffle at its default
level 5, the same thread count), its outputs written one after another; pickle
protocol 5. The order rotates every round; best and median are printed, with CPU
seconds per GB (user + system of the whole process, every thread).

Each file is then read back (in the page cache, as right after a save): torpor's
``load``, blosc2's ``decompress2`` of every array into a new array (the file read
first), pickle's ``load``; the load table gives wall time and GB/s of array data.
"""

import argparse
import os
import pickle
import resource
import statistics
import tempfile
import time

import numpy as np

import torpor
from benchmarks.workloads import array_heavy, _smooth_volume


def _arrays(obj, out):
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _arrays(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _arrays(v, out)
    elif hasattr(obj, "__dict__"):
        _arrays(vars(obj), out)
    return out


def workloads(mb):
    rng = np.random.default_rng(0)
    n = mb << 20
    side = int(round((n / 8 / 4) ** (1 / 3)))
    return {
        "workspace": _arrays(array_heavy(mb), []),
        "smooth volumes": [_smooth_volume(rng, side, np.float32) for _ in range(8)],
        "integer indices": [np.sort(rng.integers(0, 1 << 30, n // 16)),
                            rng.integers(0, 100_000, n // 8).astype(np.int32)],
        "noisy float32": [rng.standard_normal(n // 4).astype(np.float32)],
        "random float64": [rng.random(n // 8)],
    }


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _fsync_write(path, parts):
    with open(path, "wb") as f:
        for p in parts:
            f.write(p)
        f.flush()
        os.fsync(f.fileno())


def _pickle_load(path, arrs):
    with open(path, "rb") as f:
        return pickle.load(f)


def peers(threads):
    """name -> (save(arrs, path), load(path, arrs)); ``arrs`` tells blosc2's load
    the dtypes and shapes (its chunks hold bytes only) and where each one ends."""
    import blosc2

    def b2(filt):
        def save(arrs, path):
            blosc2.set_nthreads(threads)
            _fsync_write(path, [blosc2.compress2(a, codec=blosc2.Codec.LZ4, clevel=5, filters=[filt],
                                                 typesize=a.itemsize) for a in arrs])

        def load(path, arrs):
            blosc2.set_nthreads(threads)
            with open(path, "rb") as f:
                buf = memoryview(f.read())
            out, pos = [], 0
            for a in arrs:
                cbytes = blosc2.get_cbuffer_sizes(buf[pos:pos + 32])[1]
                dst = np.empty(a.shape, a.dtype)
                blosc2.decompress2(buf[pos:pos + cbytes], dst=dst)
                out.append(dst)
                pos += cbytes
            return out
        return save, load

    def t_load(path, arrs):
        return torpor.load(path, threads=threads)

    return {
        "torpor": (lambda arrs, path: torpor.dump(arrs, path, threads=threads), t_load),
        "torpor compress=None": (lambda arrs, path: torpor.dump(arrs, path, compress=None,
                                                                threads=threads), t_load),
        "blosc2 lz4+shuffle": b2(blosc2.Filter.SHUFFLE),
        "blosc2 lz4+bitshuffle": b2(blosc2.Filter.BITSHUFFLE),
        "pickle + fsync": (lambda arrs, path: _fsync_write(path, [pickle.dumps(arrs, protocol=5)]),
                           _pickle_load),
    }


def check(arrs, got):
    assert len(got) == len(arrs) and all(np.array_equal(x, y) for x, y in zip(arrs, got))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    data = workloads(a.mb)
    with tempfile.TemporaryDirectory(prefix="torpor-arrays-") as d:
        for threads in a.threads:
            table = peers(threads)
            for wname, arrs in data.items():
                gb = sum(x.nbytes for x in arrs) / 1e9
                res = {k: ([], []) for k in table}
                loads = {k: ([], []) for k in table}
                sizes = {}
                names = list(table)
                for r in range(a.repeat):
                    order = names[r % len(names):] + names[:r % len(names)]
                    for name in order:
                        save, load = table[name]
                        path = os.path.join(d, "out")
                        os.sync()
                        c0, t0 = _cpu(), time.perf_counter()
                        save(arrs, path)
                        res[name][0].append(time.perf_counter() - t0)
                        res[name][1].append(_cpu() - c0)
                        sizes[name] = os.path.getsize(path)
                        c0, t0 = _cpu(), time.perf_counter()
                        got = load(path, arrs)
                        loads[name][0].append(time.perf_counter() - t0)
                        loads[name][1].append(_cpu() - c0)
                        if r == 0:
                            check(arrs, got)
                        del got
                        os.unlink(path)
                print(f"\n{wname}: {gb:.3f} GB, threads={threads} (best / median of {a.repeat})")
                ref = min(min(res["blosc2 lz4+shuffle"][0]), min(res["blosc2 lz4+bitshuffle"][0]))
                ref_cpu = min(min(res["blosc2 lz4+shuffle"][1]), min(res["blosc2 lz4+bitshuffle"][1]))
                for name in names:
                    w, c = res[name]
                    print(f"  {name:24s} wall {min(w):6.3f} / {statistics.median(w):6.3f} s"
                          f"  cpu/GB {min(c) / gb:5.2f} / {statistics.median(c) / gb:5.2f}"
                          f"  size {sizes[name] / 1e6:8.1f} MB"
                          f"  wall/blosc2-best {min(w) / ref:5.2f}  cpu/blosc2-best {min(c) / ref_cpu:5.2f}")
                tw, nw = res["torpor"][0], res["torpor compress=None"][0]
                print(f"  default save / compress=None: best {min(tw) / min(nw):4.2f}"
                      f"  median {statistics.median(tw) / statistics.median(nw):4.2f}"
                      f"  median of the rounds' ratios"
                      f" {statistics.median(t / n for t, n in zip(tw, nw)):4.2f}")
                lref = min(min(loads["blosc2 lz4+shuffle"][0]), min(loads["blosc2 lz4+bitshuffle"][0]))
                pref = min(loads["pickle + fsync"][0])
                print("  load (file in the page cache):")
                for name in names:
                    w, c = loads[name]
                    print(f"  {name:24s} wall {min(w):6.3f} / {statistics.median(w):6.3f} s"
                          f"  {gb / min(w):5.2f} GB/s  cpu/GB {min(c) / gb:5.2f}"
                          f"  wall/blosc2-best {min(w) / lref:5.2f}  wall/pickle {min(w) / pref:5.2f}")


if __name__ == "__main__":
    main()
