"""Artifacts through FileStorage against torpor.dump/load to a path (issue 12):

    python -m benchmarks.workspace_files [--size full|small] [--repeat 5]

The workload: a dict of float32 arrays (``full``: 1 GiB in 16 arrays of smooth
and noisy data; ``small``: 64 MiB). torpor saves it with ``torpor.dump(obj,
path)`` and loads it with ``torpor.load``; the workspace with
``FileStorage.artifacts.save`` / ``load`` (each save a new version, pruned as
usual). One process, the two interleaved with their order swapped every round,
``settle()`` (gc and sync) before every timed run; reported: best and median of
the rounds and their ratios (target: at most 1.05x).

Also: ``list()`` of 10,000 small artifacts (target under 0.5 s), and the
reference's way of storing arrays (py-code-mode keeps artifacts as JSON or
``str()``: ``json.dumps(array.tolist())``, and ``np.save`` per array plus a JSON
index), timed on one 64 MiB array and scaled to the workload's bytes, for the
report.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

import torpor
from benchmarks.peers import interleaved, median, ratio_table, settle, workspace_arguments
from torpor.workspace import FileStorage

SIZES = {"full": 1 << 30, "small": 64 << 20}


def workload(nbytes, seed=0):
    rng = np.random.default_rng(seed)
    n = nbytes // 16 // 4
    out = {}
    for i in range(16):
        x = np.linspace(0, 20 + i, n, dtype=np.float32)
        out[f"field{i:02d}"] = (np.sin(x) + (rng.standard_normal(n, dtype=np.float32) * 0.01
                                              if i % 2 else 0)).astype(np.float32)
    return out


def compare(obj, repeat, folder):
    """{"save"|"load": (workspace times, torpor times)}."""
    storage = FileStorage(os.path.join(folder, "ws"), keep_versions=1)
    path = os.path.join(folder, "direct.torpor")
    fns = {"save": (lambda: storage.artifacts.save("data", obj), lambda: torpor.dump(obj, path)),
           "load": (lambda: storage.artifacts.load("data"), lambda: torpor.load(path))}
    fns["save"][0](), fns["save"][1]()
    for out in (fns["load"][0](), fns["load"][1]()):
        assert all(np.array_equal(out[k], obj[k]) for k in obj)
    times = interleaved(fns, repeat)
    return times


def time_list(folder, n=10_000):
    storage = FileStorage(os.path.join(folder, "many"))
    for i in range(n):
        storage.artifacts.save(f"group{i % 100:02d}/item{i:05d}", i)
    settle()
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        listed = storage.artifacts.list()
        runs.append(time.perf_counter() - t)
    assert len(listed) == n
    return min(runs), median(runs)


def reference_ways(folder, total_bytes):
    """Seconds per GiB to save the reference's ways, measured on one 64 MiB array."""
    a = workload(64 << 20)["field01"][: (64 << 20) // 4 // 16 * 16]
    a = np.concatenate([a] * 16)[: (64 << 20) // 4]
    scale = total_bytes / a.nbytes
    settle()
    t = time.perf_counter()
    with open(os.path.join(folder, "ref.json"), "w") as f:
        f.write(json.dumps(a.tolist()))
    json_s = (time.perf_counter() - t) * scale
    json_size = os.path.getsize(os.path.join(folder, "ref.json")) * scale
    settle()
    t = time.perf_counter()
    np.save(os.path.join(folder, "ref.npy"), a)
    with open(os.path.join(folder, "index.json"), "w") as f:
        json.dump({"ref": {"path": "ref.npy", "created_at": time.time()}}, f)
    npy_s = (time.perf_counter() - t) * scale
    return json_s, json_size, npy_s


def main(argv=None):
    a = workspace_arguments(__doc__, SIZES, argv)
    obj = workload(SIZES[a.size])
    nbytes = sum(v.nbytes for v in obj.values())
    with tempfile.TemporaryDirectory(prefix="torpor-ws-", dir=os.environ.get("TORPOR_BENCH_DIR")) as d:
        times = compare(obj, a.repeat, d)
        lbest, lmed = time_list(d, a.artifacts)
        json_s, json_size, npy_s = reference_ways(d, nbytes)
    print(f"torpor {torpor.__version__} ({torpor.implementation}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; a dict of 16 float32 arrays, {nbytes / 2**20:.0f} MiB; best and "
          f"median of {a.repeat}, order swapped every round")
    ratio_table([(name, w, t) for name, (w, t) in times.items()], "artifact", "torpor", 8)
    print(f"list() of {a.artifacts} artifacts: best {lbest:.3f} s, median {lmed:.3f} s")
    print(f"the reference's ways for the same {nbytes / 2**20:.0f} MiB (scaled from 64 MiB): "
          f"json.dumps(array.tolist()) {json_s:.1f} s and {json_size / 2**20:.0f} MiB; "
          f"np.save + a JSON index {npy_s:.2f} s (neither keeps a dict of arrays as one value)")
    return times


if __name__ == "__main__":
    main()
