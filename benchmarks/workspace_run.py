"""Running code in a workspace Session's executors (issue 13):

    python -m benchmarks.workspace_run [--rounds 5] [--quick]

Measured, in one process, the measures in a rotated order every round (round r
starts with measure r), and reported as the best and the median of the rounds:

- ``run("1 + 1")`` in process: the median of 2,000 calls each round (the call
  is all overhead), for ``InProcessExecutor()`` (code on the executor's thread,
  a timeout watchdog armed) and ``InProcessExecutor(InProcessConfig(inline=True))``
  (code on the event loop's own thread). Target: median under 100 us.
- ``run("1 + 1")`` in a warm subprocess worker: the median of 500 calls each
  round. Target: median under 2 ms.
- A worker's start with its virtual environment cached: ``start`` of a new
  SubprocessExecutor on the same workspace (the interpreter, torpor and numpy
  imported, the storage opened, the handshake). Target: under 1.5 s.
- ``run("big")`` returning a 256 MiB float32 array from the worker against
  ``torpor.dumps`` + ``torpor.loads`` of that array in this process. Target: at
  most 1.5x.
- ``run("small")`` returning a 1 MiB float32 array against the reference's
  way of returning values, ``repr`` of the array's list in the worker and
  ``ast.literal_eval`` of that text here (timed in this process). Target: at
  least 5x faster.

``--quick``: 2 rounds, fewer calls, a 32 MiB array. The run ends with a table
and exits with status 1, naming them, if targets were missed.
"""

import argparse
import ast
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

import torpor
from benchmarks.peers import settle
from torpor.workspace import FileStorage
from torpor.workspace.executors import InProcessConfig, InProcessExecutor
from torpor.workspace.executors.subproc import SubprocessConfig, SubprocessExecutor


def median(v):
    return statistics.median(v)


async def calls(ex, code, n):
    """The median seconds of ``n`` runs of ``code``."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = await ex.run(code)
        times.append(time.perf_counter() - t)
        if not r.is_ok:
            raise RuntimeError(r.error)
    return median(times)


async def measure(args, folder):
    n_in, n_sub = (300, 100) if args.quick else (2000, 500)
    big_mib = 32 if args.quick else 256
    storage = FileStorage(os.path.join(folder, "ws"))
    thread = InProcessExecutor()
    inline = InProcessExecutor(InProcessConfig(inline=True))
    sub = SubprocessExecutor(SubprocessConfig(default_timeout=None))
    for ex in (thread, inline, sub):
        await ex.start(storage)
    first = SubprocessExecutor()          # makes the cached environment (not timed)
    await first.start(storage)
    await first.close()

    big_n = (big_mib << 20) // 4
    await sub.run(f"import numpy as np\nbig = np.random.default_rng(0).random({big_n}, "
                  f"dtype=np.float32)\nsmall = big[:{(1 << 20) // 4}].copy()")
    big = np.random.default_rng(0).random(big_n, dtype=np.float32)
    small = big[:(1 << 20) // 4].copy()
    r = await sub.run("big")
    assert r.is_ok and np.array_equal(r.value, big), r.error
    del r

    async def start_worker():
        ex = SubprocessExecutor()
        t = time.perf_counter()
        await ex.start(storage)
        took = time.perf_counter() - t
        await ex.close()
        return took

    async def run_big():
        settle()
        t = time.perf_counter()
        r = await sub.run("big")
        took = time.perf_counter() - t
        assert r.value.nbytes == big.nbytes
        return took

    async def dumps_loads():
        settle()
        t = time.perf_counter()
        back = torpor.loads(torpor.dumps(big))
        took = time.perf_counter() - t
        assert back.nbytes == big.nbytes
        return took

    async def run_small():
        return await calls(sub, "small", 20)

    async def repr_eval():
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            text = repr(small.tolist())           # the worker's half, timed here
            back = ast.literal_eval(text)
            ts.append(time.perf_counter() - t)
            assert len(back) == small.size
        return median(ts)

    measures = {
        "inprocess thread run('1 + 1')": lambda: calls(thread, "1 + 1", n_in),
        "inprocess inline run('1 + 1')": lambda: calls(inline, "1 + 1", n_in),
        "subprocess run('1 + 1')": lambda: calls(sub, "1 + 1", n_sub),
        "worker start (cached venv)": start_worker,
        f"subprocess run('big') {big_mib} MiB": run_big,
        f"dumps+loads {big_mib} MiB": dumps_loads,
        "subprocess run('small') 1 MiB": run_small,
        "repr+literal_eval 1 MiB": repr_eval,
    }
    names = list(measures)
    times = {k: [] for k in names}
    for r in range(args.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(await measures[name]())
    for ex in (thread, inline, sub):
        await ex.close()
    return times, big_mib


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 2 with --quick)")
    ap.add_argument("--quick", action="store_true", help="a small run: fewer calls, 32 MiB")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    folder = tempfile.mkdtemp(prefix="torpor-wsrun-", dir=os.environ.get("TORPOR_BENCH_DIR"))
    try:
        times, big_mib = asyncio.run(measure(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def best(k):
        return min(times[k])

    def med(k):
        return median(times[k])

    print(f"torpor {torpor.__version__} ({torpor.implementation}), Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} cores; best and median of "
          f"{args.rounds} rounds, measures in a rotated order")
    print(f"{'measure':<40}{'best':>12}{'median':>12}")
    for k in times:
        unit, scale = ("us", 1e6) if med(k) < 1e-3 else ("ms", 1e3) if med(k) < 1 else ("s", 1)
        print(f"{k:<40}{best(k) * scale:>9.1f} {unit:<2}{med(k) * scale:>9.1f} {unit}")
    bigk, dlk = f"subprocess run('big') {big_mib} MiB", f"dumps+loads {big_mib} MiB"
    ratio_best, ratio_med = best(bigk) / best(dlk), med(bigk) / med(dlk)
    faster_best = best("repr+literal_eval 1 MiB") / best("subprocess run('small') 1 MiB")
    faster_med = med("repr+literal_eval 1 MiB") / med("subprocess run('small') 1 MiB")
    print(f"run('big') / (dumps+loads), {big_mib} MiB: best {ratio_best:.2f}x, median "
          f"{ratio_med:.2f}x (target at most 1.5x)")
    print(f"repr+literal_eval / run('small'), 1 MiB: best {faster_best:.1f}x, median "
          f"{faster_med:.1f}x faster (target at least 5x)")
    targets = [
        ("inprocess thread run('1 + 1') median < 100 us",
         med("inprocess thread run('1 + 1')") < 100e-6),
        ("inprocess inline run('1 + 1') median < 100 us",
         med("inprocess inline run('1 + 1')") < 100e-6),
        ("subprocess run('1 + 1') median < 2 ms", med("subprocess run('1 + 1')") < 2e-3),
        ("worker start (cached venv) median < 1.5 s", med("worker start (cached venv)") < 1.5),
        (f"run('big') median <= 1.5x dumps+loads ({big_mib} MiB)", ratio_med <= 1.5),
        ("run('small') median >= 5x faster than repr+literal_eval (1 MiB)", faster_med >= 5),
    ]
    missed = [name for name, ok in targets if not ok]
    for name, ok in targets:
        print(f"  {'met   ' if ok else 'MISSED'} {name}")
    if missed:
        print("missed targets: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
