"""The workspace storage in two minutes: artifacts on a local folder and on a
private Redis server (started here as the tests start theirs, with
benchmarks/redis_server.py; `bash .ci/run` installs redis-server).

    python examples/workspace_demo.py [--no-redis]
"""

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torpor.workspace import FileStorage  # noqa: E402


def tour(storage):
    grid = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    t = time.perf_counter()
    info = storage.artifacts.save("results/grid", {"grid": grid, "step": 1},
                                  description="after step 1", metadata={"owner": "ana"})
    print(f"  saved {info['name']} v{info['version']}: {info['kind']}, {info['format']}, "
          f"{info['size'] / 2**20:.1f} MiB in {time.perf_counter() - t:.3f} s")
    storage.artifacts.save("results/grid", {"grid": grid * 2, "step": 2}, "after step 2")
    storage.artifacts.save("notes.md", "# Notes\nstep 2 doubled the grid\n")
    storage.artifacts.save("config", {"lr": 0.1, "layers": [64, 32]}, format="json")
    back = storage.artifacts.load("results/grid")
    first = storage.artifacts.load("results/grid", version=1)
    assert back["step"] == 2 and np.array_equal(back["grid"], grid * 2)
    assert first["step"] == 1 and np.array_equal(first["grid"], grid)
    print(f"  versions of results/grid: {[v['version'] for v in storage.artifacts.versions('results/grid')]}")
    for i in storage.artifacts.list():
        print(f"  {i['name']:<14} v{i['version']}  {i['format']:<6} {i['size']:>9} bytes  "
              f"{i['description']!r}")


def main(argv):
    with tempfile.TemporaryDirectory(prefix="torpor-workspace-") as d:
        print(f"FileStorage in {d}:")
        tour(FileStorage(d))
    if "--no-redis" in argv:
        return 0
    from benchmarks.redis_server import RedisServerError, start_redis_server
    from torpor.workspace import RedisStorage
    try:
        server = start_redis_server()
    except RedisServerError as e:
        print(f"skipping the Redis part: {e}")
        return 0
    with server:
        print(f"RedisStorage on a private redis-server at {server.url}:")
        tour(RedisStorage(server.url, prefix="demo"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
