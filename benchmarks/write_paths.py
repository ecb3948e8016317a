"""Can a save's write run on more than one thread? (issue 16, "no serial stage
except the write"):

    python -m benchmarks.write_paths [--mb 256] [--repeat 5] [--threads 1 2] [--dir D]

At two threads a save is bounded by its one writer (``thread_scaling``): the
calling thread copies every finished chunk into the page cache. The only way past
that is for the pool's threads to write their own chunks. This benchmark asks
whether that would pay on this machine, before anything is built: the bytes of a
finished torpor file of each array workload, cut into the 2 MiB pieces the writer
hands the kernel, are written to a new file and fsynced in three ways:

- **write**: one thread, ``os.write`` of each piece in file order (what a save does);
- **pwrite**: n threads, each ``os.pwrite`` of every n-th piece at its offset (the
  GIL is released in the call); buffered writes to one file take the file's lock,
  so the kernel's copies may still run one at a time;
- **mmap**: the file sized with ``ftruncate`` first (as a parallel writer would,
  from an upper bound), mapped shared, and n threads copy every n-th piece into the
  mapping (``np.copyto``, no GIL); page faults instead of the file's lock;
  ``flush`` (msync) and fsync at the end.

Wall and CPU (user + system, every thread) are best / median of ``--repeat``
rounds, the configurations rotated each round and the page cache written back
(``os.sync``) before each. Every output is compared with the file's bytes. Ratios
are against one-thread ``write``.
"""

import argparse
import functools
import mmap
import os
import resource
import statistics
import tempfile
import threading
import time

import numpy as np

import torpor
from benchmarks.arrays import workloads
from benchmarks.peers import settle

PIECE = 2 << 20         # the writer's unit: one chunk's frame


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pieces(data):
    return [(o, data[o:o + PIECE]) for o in range(0, len(data), PIECE)]


def _threads(fn, parts):
    if len(parts) == 1:
        return fn(parts[0])
    ts = [threading.Thread(target=fn, args=(p,)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def _copy_into(dst, part):
    for off, p in part:
        np.copyto(dst[off:off + len(p)], np.frombuffer(p, np.uint8))


def write_one(path, pieces, n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _, p in pieces:
            os.write(fd, p)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pwrite(path, pieces, n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        def work(part):
            for off, p in part:
                if os.pwrite(fd, p, off) != len(p):
                    raise OSError(f"short pwrite at {off}")
        _threads(work, [pieces[i::n] for i in range(n)])
        os.fsync(fd)
    finally:
        os.close(fd)


def write_mmap(path, pieces, n):
    size = pieces[-1][0] + len(pieces[-1][1])
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED) as m:
            dst = np.frombuffer(m, np.uint8)
            _threads(functools.partial(_copy_into, dst), [pieces[i::n] for i in range(n)])
            del dst                 # the mapping cannot close while a view holds it
            m.flush()
        os.fsync(fd)
    finally:
        os.close(fd)


WAYS = {"write": write_one, "pwrite": write_pwrite, "mmap": write_mmap}


def run(data, threads, repeat, folder):
    """{(way, threads): ([wall], [cpu])}"""
    pieces = _pieces(memoryview(data))
    path = os.path.join(folder, "out.bin")
    configs = [("write", 1)] + [(w, n) for w in ("pwrite", "mmap") for n in threads]
    out = {c: ([], []) for c in configs}
    checked = set()
    for r in range(repeat):
        for way, n in configs[r % len(configs):] + configs[:r % len(configs)]:
            settle()
            c0, t0 = _cpu(), time.perf_counter()
            WAYS[way](path, pieces, n)
            out[way, n][0].append(time.perf_counter() - t0)
            out[way, n][1].append(_cpu() - c0)
            if (way, n) not in checked:
                with open(path, "rb") as f:
                    if f.read() != data:
                        raise SystemExit(f"{way} at {n} threads wrote other bytes than the file's")
                checked.add((way, n))
            os.unlink(path)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workloads", nargs="+", default=None,
                    help="names from benchmarks.arrays (default: all)")
    ap.add_argument("--dir", default=None,
                    help="where the files go (default: the system's temporary folder); "
                         "/dev/shm takes the disk out")
    a = ap.parse_args()
    print(f"{os.cpu_count()} cores; best / median of {a.repeat} rounds, configurations "
          f"rotated; files in {a.dir or tempfile.gettempdir()}; ratios against one-thread write")
    with tempfile.TemporaryDirectory(prefix="torpor-write-", dir=a.dir) as d:
        for wname, arrs in workloads(a.mb).items():
            if a.workloads and wname not in a.workloads:
                continue
            path = os.path.join(d, "file.torpor")
            torpor.dump(arrs, path)
            with open(path, "rb") as f:
                data = f.read()
            os.unlink(path)
            del arrs
            res = run(data, a.threads, a.repeat, d)
            base = min(res["write", 1][0])
            base_cpu = min(res["write", 1][1])
            print(f"\n{wname}: file {len(data) / 1e6:.1f} MB")
            for (way, n), (wall, cpu) in res.items():
                print(f"  {way:6s} {n} thread{'s' if n > 1 else ' '}  wall {min(wall):6.3f} / "
                      f"{statistics.median(wall):6.3f} s (x{min(wall) / base:4.2f})  cpu "
                      f"{min(cpu):6.3f} s (x{min(cpu) / base_cpu:4.2f})")


if __name__ == "__main__":
    main()
