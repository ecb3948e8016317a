"""Where a save's time goes at 1, 2 and 4 threads (issue 16, "no serial stage
except the write"):

    python -m benchmarks.thread_scaling [--mb 128] [--repeat 3] [--threads 1 2 4] [--dir D]

For each array workload of ``benchmarks.arrays`` three things are timed, wall and
CPU (user + system of the whole process, every thread), the order of every
configuration rotated each round:

- **encode**: ``torpor.dump`` into a file object that drops what it is given: the
  walk, the checksums, the filter trials and the compression on the pool, and the
  writer thread's handing of chunks in file order, with no disk;
- **save**: ``torpor.dump`` to a path (a temporary file, fsynced, renamed);
- **write**: the finished file's bytes written to a new file and fsynced, one
  thread: the stage no thread count shortens on this disk;
- **copy**: the arrays copied (``np.copyto``, no GIL) by n threads, each its share,
  into arrays allocated before: what running on n threads costs the cheapest work
  per byte there is, on this machine's memory bus (its CPU ratio is the floor of
  the encode's).

For the save it also prints the CPU time of the calling thread, which does the
walk and writes every chunk in file order (``time.thread_time``): when that is
most of the save's wall time, the write is the stage that bounds it.

Then ``expected`` is what a pipeline whose only serial stage is the write would
take: ``max(encode, write)`` at that thread count (the two overlap). The ratios
printed are encode and save at n threads over the first thread count given (1 by
default), and CPU the same way. Every encode must hand the sink as many bytes as
the file has; an untimed encode and the first save of each thread count are
loaded back and compared with the arrays (a file's header holds the time it was
written, so the bytes themselves differ).
"""

import argparse
import io
import os
import resource
import statistics
import tempfile
import threading
import time

import numpy as np

import torpor
from benchmarks.arrays import check, workloads
from benchmarks.peers import settle


class Drop(io.RawIOBase):
    """A sink: counts what it is given, and keeps it only if asked (``kept``)."""

    def __init__(self, keep=False):
        self.n = 0
        self.kept = [] if keep else None

    def writable(self):
        return True

    def write(self, b):
        n = memoryview(b).nbytes
        self.n += n
        if self.kept is not None:
            self.kept.append(bytes(b))
        return n


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy(pairs, n):
    """Copy each (source, destination) of ``pairs``: thread i copies the i-th of n
    equal slices of every array (flat views: the arrays are contiguous)."""
    def work(part):
        for src, dst in part:
            np.copyto(dst, src)
    split = [(np.array_split(s.ravel(order="K"), n), np.array_split(d.ravel(order="K"), n))
             for s, d in pairs]
    parts = [[(ss[i], dd[i]) for ss, dd in split] for i in range(n)]
    if n == 1:
        return work(parts[0])
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run(arrs, threads, repeat, folder):
    """{(stage, threads): ([wall], [cpu], [calling thread's cpu])} for one workload."""
    path = os.path.join(folder, "out.torpor")
    torpor.dump(arrs, path, threads=max(threads))
    with open(path, "rb") as f:
        finished = f.read()
    os.unlink(path)
    for n in threads:               # (untimed) what the encode gives is the file
        sink = Drop(keep=True)
        torpor.dump(arrs, sink, threads=n)
        check(arrs, torpor.loads(b"".join(sink.kept)))
    checked = set()
    configs = [("encode", n) for n in threads] + [("save", n) for n in threads] + [("write", 1)]
    out = {c: ([], [], []) for c in configs + [("copy", n) for n in threads]}
    for r in range(repeat):
        for stage, n in configs[r % len(configs):] + configs[:r % len(configs)]:
            settle()
            os.sync()
            c0, m0, t0 = _cpu(), time.thread_time(), time.perf_counter()
            if stage == "encode":
                sink = Drop()
                torpor.dump(arrs, sink, threads=n)
                if sink.n != len(finished):
                    raise SystemExit(f"the encode at {n} threads wrote {sink.n} bytes, the "
                                     f"file has {len(finished)}")
            elif stage == "save":
                torpor.dump(arrs, path, threads=n)
            else:
                _write(path, finished)
            out[stage, n][0].append(time.perf_counter() - t0)
            out[stage, n][1].append(_cpu() - c0)
            out[stage, n][2].append(time.thread_time() - m0)
            if stage == "save" and n not in checked:
                check(arrs, torpor.load(path))
                checked.add(n)
            if os.path.exists(path):
                os.unlink(path)
    # the copies after the saves, with their own destinations (allocated and
    # faulted in first, freed at the end), so the saves run as they always did
    pairs = [(x, np.empty_like(x)) for x in arrs]
    _copy(pairs, 1)
    for r in range(repeat):
        for n in threads[r % len(threads):] + threads[:r % len(threads)]:
            c0, t0 = _cpu(), time.perf_counter()
            _copy(pairs, n)
            out["copy", n][0].append(time.perf_counter() - t0)
            out["copy", n][1].append(_cpu() - c0)
            out["copy", n][2].append(0.0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dir", default=None,
                    help="where the saves go (default: the system's temporary folder); "
                         "/dev/shm takes the disk out: its write is a copy and fsync does nothing")
    a = ap.parse_args()
    print(f"{os.cpu_count()} cores; best / median of {a.repeat} rounds, configurations rotated; "
          f"files in {a.dir or tempfile.gettempdir()}")
    with tempfile.TemporaryDirectory(prefix="torpor-threads-", dir=a.dir) as d:
        for wname, arrs in workloads(a.mb).items():
            gb = sum(x.nbytes for x in arrs) / 1e9
            res = run(arrs, a.threads, a.repeat, d)
            best = {c: min(w) for c, (w, _, _) in res.items()}
            cpu = {c: min(c_) for c, (_, c_, _) in res.items()}
            one = a.threads[0]
            write = best["write", 1]
            print(f"\n{wname}: {gb:.3f} GB; write + fsync of the file alone "
                  f"{write:.3f} / {statistics.median(res['write', 1][0]):.3f} s")
            for n in a.threads:
                e, s = res["encode", n], res["save", n]
                expected = max(best["encode", n], write)
                print(f"  {n} thread{'s' if n > 1 else ' '}"
                      f"  encode {min(e[0]):6.3f} / {statistics.median(e[0]):6.3f} s"
                      f" (x{best['encode', n] / best['encode', one]:4.2f}, cpu x"
                      f"{cpu['encode', n] / cpu['encode', one]:4.2f})"
                      f"  save {min(s[0]):6.3f} / {statistics.median(s[0]):6.3f} s"
                      f" (x{best['save', n] / best['save', one]:4.2f}, cpu x"
                      f"{cpu['save', n] / cpu['save', one]:4.2f})"
                      f"  expected {expected:6.3f} s, save / expected "
                      f"{best['save', n] / expected:4.2f}")
                print(f"             save's calling thread cpu {min(s[2]):6.3f} / "
                      f"{statistics.median(s[2]):6.3f} s ({min(s[2]) / min(s[0]):4.2f} of the "
                      f"save's wall)  copy {min(res['copy', n][0]):6.3f} s (cpu x"
                      f"{cpu['copy', n] / cpu['copy', one]:4.2f})")


if __name__ == "__main__":
    main()
