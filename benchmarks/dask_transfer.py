"""Task results moved between Dask worker processes: Dask's default families
(dask, pickle) against torpor first (torpor.dask, docs/DASK.md).

    python -m benchmarks.dask_transfer [--mb 1024] [--array-mb 32] [--atoms 500000] [--repeat 3]

Two LocalClusters (two worker processes each, one thread, no memory limit), one
using Dask's default serializers, one with ``preload=["torpor.dask"]`` and a
Client with ``serializers=torpor.dask.FAMILIES``. For each workload a producer
task on worker A makes the value (not timed); what is timed is a consumer task
on worker B, pinned there, from submit to result: Dask fetches the value from
A (serialize on A, TCP, deserialize on B), the task reads its size. Workloads:
``--mb`` MiB of random float64 arrays, ``--array-mb`` MiB each (Dask shards
frames at 64 MiB: larger arrays cost pickle a copy on arrival), and
benchmarks.workloads.object_heavy with ``--atoms`` atoms (loaded with
``torpor.allow = benchmarks.workloads.*``). The two clusters run in turns, the
order rotating every round; best and median of ``--repeat`` rounds.

A second table measures one process's serialize and deserialize of the arrays
(Dask's ``serialize``/``deserialize`` with each family list): time, and the
bytes allocated meanwhile (tracemalloc, which numpy reports to) per byte of
array data, that is the copies each side makes.
"""

import argparse
import gc
import platform
import sys
import time
import tracemalloc

import dask
import distributed
import numpy as np
from distributed import Client, LocalCluster
from distributed.protocol.serialize import deserialize, serialize

import torpor
import torpor.dask
from benchmarks.peers import ratio_table
from benchmarks.workloads import WORKLOAD_CLASSES, object_heavy

MiB = 1 << 20


# --- tasks (run in the workers) --------------------------------------------------

def make_array(i, nbytes):
    return np.random.default_rng(i).random(nbytes // 8)


def make_objects(atoms):
    return object_heavy(atoms)


def total_nbytes(*arrays):
    return sum(a.nbytes for a in arrays)


def count_atoms(graph):
    return len(graph["structure"]["atoms"])


def stored_values(dask_worker):
    return len(dask_worker.data)


# --- the clusters ----------------------------------------------------------------

def start(kind):
    """(cluster, client) with Dask's default families or torpor first."""
    options = dict(n_workers=2, threads_per_worker=1, processes=True, memory_limit=0,
                   dashboard_address=":0")
    if kind == "default":
        cluster = LocalCluster(**options)
        return cluster, Client(cluster)
    cluster = LocalCluster(preload=["torpor.dask"], **options)
    families = torpor.dask.FAMILIES
    return cluster, Client(cluster, serializers=families, deserializers=families)


def released(client, futures):
    """Forget ``futures`` and wait until no worker holds any value."""
    client.cancel(futures)
    deadline = time.monotonic() + 60
    while any(client.run(stored_values).values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers still hold values a minute after release")
        time.sleep(0.05)
    client.run(gc.collect)


def timed_transfer(client, produce, consume):
    """Seconds to move the values of ``produce`` (futures made on worker A) to a
    consumer on worker B; the consumer's result."""
    a, b = sorted(client.scheduler_info()["workers"])
    made = produce(a)
    distributed.wait(made)
    t = time.perf_counter()
    result = client.submit(consume, *made, workers=[b], allow_other_workers=False,
                           pure=False).result()
    seconds = time.perf_counter() - t
    released(client, made)
    return seconds, result


def arrays_run(client, mb, array_mb):
    n = max(1, mb // array_mb)

    def produce(worker):
        return [client.submit(make_array, i, array_mb * MiB, workers=[worker],
                              allow_other_workers=False, pure=False) for i in range(n)]
    seconds, got = timed_transfer(client, produce, total_nbytes)
    assert got == n * array_mb * MiB, got
    return seconds


def objects_run(client, atoms):
    def produce(worker):
        return [client.submit(make_objects, atoms, workers=[worker], allow_other_workers=False,
                              pure=False)]
    seconds, got = timed_transfer(client, produce, count_atoms)
    assert got == atoms, got
    return seconds


# --- one process: serialize / deserialize and the copies --------------------------

def measured(fn):
    """(seconds, bytes allocated at the peak, result) of ``fn()``."""
    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    try:
        result = fn()
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return seconds, peak, result


def local_rows(mb, array_mb, repeat):
    """Rows of (family list, serialize s, copies sent, deserialize s, copies received)."""
    n = max(1, mb // array_mb)
    arrays = [make_array(i, array_mb * MiB) for i in range(n)]
    data = n * array_mb * MiB
    rows = []
    for name, families in (("dask, pickle", None), ("torpor first", torpor.dask.FAMILIES)):
        runs = [round_trip(arrays, families) for _ in range(repeat)]
        s_out, m_out, s_in, m_in = min(runs, key=lambda r: r[0] + r[2])
        rows.append((name, s_out, m_out / data, s_in, m_in / data))
    return rows


def round_trip(arrays, families):
    """(serialize s, bytes allocated, deserialize s, bytes allocated) of ``arrays``."""
    s_out, m_out, (header, frames) = measured(lambda: serialize(arrays, serializers=families))
    s_in, m_in, back = measured(lambda: deserialize(header, frames))
    assert all(np.array_equal(x, y) for x, y in zip(arrays, back))
    return s_out, m_out, s_in, m_in


# --- main ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=1024, help="MiB of arrays moved (default 1024)")
    ap.add_argument("--array-mb", type=int, default=32, help="MiB per array (default 32)")
    ap.add_argument("--atoms", type=int, default=500_000, help="atoms of the object graph")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"python -m benchmarks.dask_transfer {' '.join(sys.argv[1:])}")
    print(f"Python {platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
          f"distributed {distributed.__version__}, torpor {torpor.__version__} "
          f"({torpor.implementation} walker)\n")

    # the torpor cluster's workers load the workload's classes: allowed before it starts
    torpor.dask.configure(allow=WORKLOAD_CLASSES)
    clusters = {kind: start(kind) for kind in ("default", "torpor")}
    times = {(w, k): [] for w in ("arrays", "objects") for k in clusters}
    try:
        for _, client in clusters.values():         # not timed: imports in the workers
            arrays_run(client, 1, 1)
            objects_run(client, 100)
        for r in range(args.repeat):
            order = ["default", "torpor"] if r % 2 == 0 else ["torpor", "default"]
            for kind in order:
                client = clusters[kind][1]
                times["arrays", kind].append(arrays_run(client, args.mb, args.array_mb))
                times["objects", kind].append(objects_run(client, args.atoms))
            print(f"round {r + 1}: " + ", ".join(
                f"{w} {k} {times[w, k][-1]:.3f} s" for w in ("arrays", "objects") for k in order))
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()

    n = max(1, args.mb // args.array_mb)
    print(f"\nworker A -> worker B, seconds (best and median of {args.repeat}); ratio torpor/default")
    ratio_table([(f"arrays: {n} x {args.array_mb} MiB float64", times["arrays", "torpor"],
                  times["arrays", "default"]),
                 (f"object_heavy, {args.atoms:,} atoms", times["objects", "torpor"],
                  times["objects", "default"])],
                a="torpor", b="default")

    print(f"\none process: Dask's serialize / deserialize of the {n} arrays (best of "
          f"{args.repeat}); copies = bytes allocated / bytes of arrays")
    print(f"{'families':<16}{'serialize s':>13}{'copies':>8}{'deserialize s':>15}{'copies':>8}")
    for name, s_out, c_out, s_in, c_in in local_rows(args.mb, args.array_mb, args.repeat):
        print(f"{name:<16}{s_out:>13.3f}{c_out:>8.2f}{s_in:>15.3f}{c_in:>8.2f}")


if __name__ == "__main__":
    main()
