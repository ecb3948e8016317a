"""Artifacts through RedisStorage against redis-py SET/GET (issue 12):

    python -m benchmarks.workspace_redis [--size full|small] [--repeat 5]

Starts its own private redis-server (benchmarks/redis_server.py, as the tests
do). The workload: workspace_files's dict of float32 arrays (``full``: 1 GiB;
``small``: 64 MiB). The workspace saves it with ``RedisStorage.artifacts.save``
and loads it with ``load`` (8 MiB chunks, default lz4); the baseline is
redis-py's ``SET`` and ``GET`` of one pre-built bytes object of the same byte
count (the arrays' bytes), as pieces of at most 512 MiB, Redis's limit for one
value (two for ``full``). One process and one client for both, interleaved with
their order swapped every round; reported: best and median of the rounds and
their ratios (target: at most 1.5x).

Also: ``list()`` of 10,000 small artifacts saved one by one (target under
0.2 s), and the reference's way of keeping an array in Redis (py-code-mode
stores JSON: ``json.dumps(array.tolist())`` SET, and an index entry written by
another command), timed on one 64 MiB array and scaled to the workload's bytes.
"""

import json
import os
import sys
import time

import numpy as np
import redis

import torpor
from benchmarks.peers import interleaved, median, ratio_table, workspace_arguments
from benchmarks.redis_server import start_redis_server
from benchmarks.workspace_files import SIZES, workload
from torpor.workspace import RedisStorage

#: Redis's limit for one value (proto-max-bulk-len, 512 MB).
MAX_VALUE = 512 << 20


def compare(obj, repeat, client):
    """{"save"|"load": (workspace times, SET/GET times)}."""
    storage = RedisStorage(redis=client, prefix="bench", keep_versions=1)
    payload = b"".join(v.tobytes() for v in obj.values())      # built once, not timed
    view = memoryview(payload)
    pieces = range(0, len(payload), MAX_VALUE)

    def set_all():
        for i, at in enumerate(pieces):
            client.set(f"baseline:{i}", view[at:at + MAX_VALUE])

    def get_all():
        return [client.get(f"baseline:{i}") for i in range(len(pieces))]

    fns = {"save": (lambda: storage.artifacts.save("data", obj), set_all),
           "load": (lambda: storage.artifacts.load("data"), get_all)}
    fns["save"][0](), fns["save"][1]()
    out = fns["load"][0]()
    assert all(np.array_equal(out[k], obj[k]) for k in obj)
    assert b"".join(fns["load"][1]()) == payload
    del out
    times = interleaved(fns, repeat)
    stored = storage.artifacts.get("data")["size"]
    storage.artifacts.delete("data")
    client.delete(*[f"baseline:{i}" for i in range(len(pieces))])
    return times, len(payload), stored


def time_list(client, n=10_000):
    """(best, median) of list() over ``n`` artifacts, and the seconds per save."""
    storage = RedisStorage(redis=client, prefix="bench-list")
    t = time.perf_counter()
    for i in range(n):
        storage.artifacts.save(f"group{i % 100:02d}/item{i:05d}", i)
    per_save = (time.perf_counter() - t) / n
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        listed = storage.artifacts.list()
        runs.append(time.perf_counter() - t)
    assert len(listed) == n
    return min(runs), median(runs), per_save


def reference_way(client, total_bytes):
    """Seconds to store ``total_bytes`` of arrays as py-code-mode does in Redis
    (JSON SET, then an index HSET), measured on one 64 MiB array and scaled."""
    a = workload(64 << 20)["field01"]
    a = np.resize(a, (64 << 20) // 4)
    scale = total_bytes / a.nbytes
    t = time.perf_counter()
    text = json.dumps(a.tolist())
    client.set("reference:field", text)
    client.hset("reference:index", "field", json.dumps({"created_at": time.time()}))
    seconds = (time.perf_counter() - t) * scale
    client.delete("reference:field", "reference:index")
    return seconds, len(text) * scale


def main(argv=None):
    a = workspace_arguments(__doc__, SIZES, argv)
    obj = workload(SIZES[a.size])
    with start_redis_server() as server:
        client = redis.Redis.from_url(server.url)
        version = client.info("server")["redis_version"]
        times, nbytes, stored = compare(obj, a.repeat, client)
        lbest, lmed, per_save = time_list(client, a.artifacts)
        ref_s, ref_size = reference_way(client, nbytes)
    parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python"
    print(f"torpor {torpor.__version__} ({torpor.implementation}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores; redis-server {version}, redis-py {redis.__version__} "
          f"({parser} parser); a dict of 16 float32 arrays, {nbytes / 2**20:.0f} MiB "
          f"({stored / 2**20:.0f} MiB stored, lz4); best and median of {a.repeat}, order "
          f"swapped every round")
    ratio_table([(name, w, t) for name, (w, t) in times.items()], "artifact", "SET/GET", 8)
    print(f"list() of {a.artifacts} artifacts: best {lbest:.3f} s, median {lmed:.3f} s "
          f"(saving them: {per_save * 1000:.1f} ms each)")
    print(f"the reference's way for the same {nbytes / 2**20:.0f} MiB (scaled from 64 MiB): "
          f"json.dumps(array.tolist()) SET + an index HSET {ref_s:.1f} s and "
          f"{ref_size / 2**20:.0f} MiB in Redis (and the arrays come back as lists)")
    return times


if __name__ == "__main__":
    main()
