"""Fixtures of a real redis-server (never a mock): ``redis_server``, one private
server for the session (benchmarks/redis_server.py starts it: 127.0.0.1, a free
port, no persistence), and ``redis_storage_factory``, RedisStorages on it under
a key prefix of the test's own, so tests never see each other's keys.

A machine without redis-server fails these tests (it does not skip them):
``bash .ci/run`` installs Debian's redis-server package."""

import hashlib
import re

import pytest

from benchmarks.redis_server import RedisServerError, start_redis_server


@pytest.fixture(scope="session")
def redis_server():
    try:
        server = start_redis_server()
    except RedisServerError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


def unique_prefix(request):
    """A key prefix no other test uses: the test's id, made key-safe, and a hash of it."""
    node = request.node.nodeid
    short = re.sub(r"[^A-Za-z0-9_.-]", "-", node.split("::", 1)[-1])[:60]
    return f"t-{short}-{hashlib.sha1(node.encode()).hexdigest()[:10]}"


@pytest.fixture
def redis_storage_factory(redis_server, request):
    """``make(**kw)``: a RedisStorage on the session's server, under this test's
    prefix unless ``prefix=`` is given; the test's keys are removed afterwards."""
    import redis

    from torpor.workspace import RedisStorage

    prefix = unique_prefix(request)
    used = {prefix}

    def make(**kw):
        kw.setdefault("prefix", prefix)
        used.add(kw["prefix"])
        if "redis" in kw:                   # a client of the test's own
            return RedisStorage(**kw)
        return RedisStorage(redis_server.url, **kw)
    yield make
    client = redis.Redis.from_url(redis_server.url)
    for p in used:
        keys = list(client.scan_iter(match=p + ":*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i:i + 1000])
    client.close()
