"""RedisStorage on a real redis-server (issue 12): the key layout of
docs/WORKSPACE.md, prefixes and workspaces sharing one database, values larger
than a chunk (and than Redis's 512 MB limit: bigmem), chunks sent in pipelines
and commits in MULTI/EXEC, writers killed or left unfinished, damage reported
with the artifact's name, 10,000 artifacts listed, clear connection errors.
The artifact contract itself runs here too, from test_artifacts.py."""

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import redis

import torpor
from torpor.errors import ArtifactDamagedError
from torpor.storage.redis_store import RedisStore
from torpor.workspace import ArtifactWarning, RedisStorage, records

CHUNK = 64 << 10


def _keys(storage):
    """Every key of ``storage``'s workspace, decoded, with its Redis type."""
    c = storage.redis
    return {k.decode(): c.type(k).decode()
            for k in c.scan_iter(match=storage.namespace + "*", count=1000)}


def _orphans(storage):
    """Chunks no committed manifest refers to, and objects no record refers to."""
    c, ns = storage.redis, storage.namespace
    keys = _keys(storage)
    used = set()
    for name in c.smembers(ns + "names"):
        rec = json.loads(c.get(f"{ns}artifact:{name.decode()}@info"))
        used |= {v["key"] for v in rec["versions"]}
    bad = []
    for k in keys:
        obj, _, chunk = k.partition("#")
        if chunk and c.hget(obj, "id") != chunk.split(":")[0].encode():
            bad.append(k)
        elif not chunk and not k.endswith(("@info", ":names")) and k not in used:
            bad.append(k)
    return sorted(bad)


def test_key_layout_as_documented(redis_storage_factory, impl):
    s = redis_storage_factory(chunk_size=CHUNK, workspace_id="ws1")
    grid = np.arange(100_000, dtype=np.float64)
    info = s.artifacts.save("results/grid", grid, compress=None)
    s.artifacts.save("notes.md", "hello")
    ns = f"{s.prefix}:ws1:"
    assert s.namespace == ns and repr(s) == \
        f"RedisStorage({s.url!r}, prefix={s.prefix!r}, workspace_id='ws1')"
    assert info["storage"] == repr(s) and info["path"].startswith(f"{ns}artifact:results/grid@")
    keys = _keys(s)
    assert keys.pop(ns + "names") == "set"
    assert s.redis.smembers(ns + "names") == {b"results/grid", b"notes.md"}
    for name, ext in (("results/grid", ".torpor"), ("notes.md", ".txt")):
        assert keys.pop(f"{ns}artifact:{name}@info") == "string"
        rec = json.loads(s.redis.get(f"{ns}artifact:{name}@info"))
        key = rec["versions"][-1]["key"]
        assert rec["name"] == name and key.startswith(f"{ns}artifact:{name}@") and key.endswith(ext)
        assert keys.pop(key) == "hash"
        m = {k.decode(): v.decode() for k, v in s.redis.hgetall(key).items()}
        assert set(m) == {"size", "chunks", "chunk_size", "mtime", "id"}
        assert int(m["chunk_size"]) == CHUNK and int(m["size"]) == rec["versions"][-1]["size"]
        assert int(m["chunks"]) == -(-int(m["size"]) // CHUNK)
        for i in range(int(m["chunks"])):
            assert keys.pop(f"{key}#{m['id']}:{i}") == "string"
    assert keys == {}                                   # nothing else
    assert int(m["chunks"]) == 1
    assert info["size"] > 800_000 and -(-info["size"] // CHUNK) >= 13


def test_prefixes_and_workspaces_share_one_database_apart(redis_storage_factory, impl):
    base = redis_storage_factory().prefix
    stores = {(p, w): redis_storage_factory(prefix=p, workspace_id=w)
              for p in (base + "-a", base + "-a:b") for w in (None, "w1", "b")}
    for (p, w), s in stores.items():
        s.artifacts.save("shared", {"p": p, "w": w})
        s.artifacts.save(f"only-{len(p)}-{w}", 1)
    for (p, w), s in stores.items():
        assert s.artifacts.load("shared") == {"p": p, "w": w}
        assert [i["name"] for i in s.artifacts.list()] == sorted(["shared", f"only-{len(p)}-{w}"])
        assert all(k.startswith(s.namespace) for k in _keys(s))
    one = stores[(base + "-a", "b")]
    assert one.artifacts.delete("shared")
    assert sum(s.artifacts.exists("shared") for s in stores.values()) == len(stores) - 1
    again = RedisStorage(one.url, prefix=base + "-a", workspace_id="b")   # a second client
    assert again.artifacts.list() == one.artifacts.list()


def test_values_larger_than_a_chunk(redis_storage_factory, impl):
    s = redis_storage_factory(chunk_size=CHUNK)
    rng = np.random.default_rng(1)
    value = {"a": rng.random(300_000), "b": rng.integers(0, 9, 500_000).astype(np.uint8)}
    blob = rng.bytes(5 * CHUNK + 123)
    for compress in (None, "lz4"):
        info = s.artifacts.save(f"arrays-{compress}", value, compress=compress)
        assert info["size"] > 8 * CHUNK
        out = s.artifacts.load(f"arrays-{compress}")
        assert all(np.array_equal(out[k], value[k]) for k in value)
    assert s.artifacts.save("blob", blob)["size"] == len(blob)
    assert s.artifacts.load("blob") == blob
    key = s.artifacts.get("blob")["path"]
    assert int(s.redis.hget(key, "chunks")) == 6


def test_the_reader_seeks_and_reads_like_a_file(redis_server):
    store = RedisStore(url=redis_server.url, prefix=f"reader-{os.urandom(4).hex()}:",
                       chunk_size=1000)
    data = os.urandom(10_500)
    with store.open_writer("obj") as w:
        for i in range(0, len(data), 777):                  # pieces across chunk edges
            w.write(memoryview(data)[i:i + 777])
    ref, rng = io.BytesIO(data), random.Random(3)
    with store.open_reader("obj") as f:
        assert f.seekable() and f.readable() and not f.writable()
        assert f.seek(0, io.SEEK_END) == len(data) and f.read(5) == b""
        for _ in range(300):
            pos, n = rng.randrange(0, 11_000), rng.choice([0, 1, 17, 999, 1000, 1001, 4000, -1])
            assert f.seek(pos) == ref.seek(pos)
            if rng.random() < 0.5:
                assert f.read(n) == ref.read(n)
            else:
                a, b = bytearray(max(n, 0)), bytearray(max(n, 0))
                assert f.readinto(a) == ref.readinto(b) and a == b
            assert f.tell() == ref.tell()
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]
    assert store.delete("obj") and not list(store.client.scan_iter(match=store.prefix + "*"))


class _Spy:
    """What a client sends: the commands of each pipeline it executes, and the
    commands it sends one by one."""

    def __init__(self, client):
        self.pipelines, self.single = [], []
        make, send = client.pipeline, client.execute_command

        def pipeline(*a, **kw):
            p = make(*a, **kw)
            run = p.execute

            def execute(*ea, **ekw):
                self.pipelines.append((p.transaction, [(str(c[0][0]), str(c[0][1]))
                                                       for c in p.command_stack]))
                return run(*ea, **ekw)
            p.execute = execute
            return p

        def execute_command(*args, **kw):
            self.single.append((str(args[0]), str(args[1]) if len(args) > 1 else ""))
            return send(*args, **kw)
        client.pipeline, client.execute_command = pipeline, execute_command


def test_chunks_are_written_in_pipelines(redis_server, redis_storage_factory, impl):
    client = redis.Redis.from_url(redis_server.url)
    spy = _Spy(client)
    s = redis_storage_factory(redis=client, chunk_size=CHUNK)
    s.artifacts.save("big", np.arange(2_000_000, dtype=np.int32), compress=None)
    key = s.artifacts.get("big")["path"]
    chunks = int(client.hget(key, "chunks"))
    sent = [[k for c, k in cmds if c == "SET" and "#" in k] for t, cmds in spy.pipelines if not t]
    assert sorted(k for batch in sent for k in batch) == sorted(
        f"{key}#{client.hget(key, 'id').decode()}:{i}" for i in range(chunks))
    assert chunks >= 120 and max(len(b) for b in sent) >= 8       # several chunks a round trip
    assert not [k for c, k in spy.single if "#" in k and c == "SET"]
    # the manifest, then the record and the name, each in one MULTI/EXEC
    commits = [cmds for t, cmds in spy.pipelines if t]
    assert ("HSET", key) in commits[0] and ("DEL", key) in commits[0]
    rec = f"{s.namespace}artifact:big@info"
    assert commits[1] == [("SET", rec), ("SADD", s.namespace + "names")]


def test_commands_reach_the_server_in_commit_order(redis_server, redis_storage_factory, impl):
    """MONITOR on the server: every chunk before the manifest's MULTI/EXEC, and
    the record with its name in a MULTI/EXEC after it."""
    s = redis_storage_factory(chunk_size=CHUNK)
    seen, token = [], f"stop-{os.urandom(4).hex()}"

    def monitor():
        with redis.Redis.from_url(redis_server.url).monitor() as m:
            for ev in m.listen():
                if ev["command"] == f"ECHO {token}":
                    return
                seen.append(ev["command"].split(" ")[:2])
    t = threading.Thread(target=monitor, daemon=True)
    t.start()
    try:
        while not seen:
            s.redis.echo("start")
            time.sleep(0.01)
        s.artifacts.save("a", np.arange(100_000), compress=None)
    finally:
        s.redis.echo(token)
        t.join(10)
    cmds = [c for c in seen if c[0] != "ECHO" and (len(c) < 2 or c[1].startswith(s.prefix)
                                                   or c[0] in ("MULTI", "EXEC"))]
    key = s.artifacts.get("a")["path"]
    sets = [i for i, c in enumerate(cmds) if c[0] == "SET" and c[1].startswith(key + "#")]
    hset = cmds.index(["HSET", key])
    assert len(sets) == int(s.redis.hget(key, "chunks")) > 1 and max(sets) < hset
    assert cmds[hset - 2][0] == "MULTI" and cmds[hset + 1][0] == "EXEC"
    rec = cmds.index(["SET", f"{s.namespace}artifact:a@info"])
    assert rec > hset and cmds[rec - 1][0] == "MULTI"
    assert cmds[rec + 1] == ["SADD", s.namespace + "names"] and cmds[rec + 2][0] == "EXEC"


def test_an_unfinished_writer_leaves_the_old_version(redis_storage_factory, impl):
    s = redis_storage_factory(chunk_size=CHUNK)
    s.artifacts.save("x", {"v": 1})
    host = s.artifacts.get("x")["path"].rsplit("@", 1)[1].split(".")[0]
    b = s.artifacts._b                  # the test writes what a writer would, on purpose
    with open("/proc/sys/kernel/pid_max") as f:
        gone = int(f.read())                # no process ever has this id
    killed = b.data_key("x", f"{host}.{gone}.1a2b3c", ".torpor")
    running = b.data_key("x", f"{host}.{os.getpid()}.4d5e6f", ".torpor")
    for key in (killed, running):       # chunks written, never committed
        for i in range(3):
            s.redis.set(f"{key}#{'0' * 16}:{i}", b"x" * CHUNK)
    w = b.store.open_writer(b.data_key("x", f"{host}.{os.getpid()}.7a8b9c", ".torpor"))
    w.write(b"y" * 3 * CHUNK)           # a writer of this process, midway
    assert s.artifacts.load("x") == {"v": 1}
    assert [(i["name"], i["version"]) for i in s.artifacts.list()] == [("x", 1)]
    assert killed in b.data_keys("x") and running in b.data_keys("x")
    with pytest.raises(FileNotFoundError):
        b.store.open_reader(killed)
    w.abort()                           # abort deletes the chunks it wrote
    s.artifacts.save("x", {"v": 2})     # cleans up after the dead process only
    left = _orphans(s)
    assert left and all(k.startswith(running + "#") for k in left)
    assert s.artifacts.load("x") == {"v": 2} and s.artifacts.load("x", version=1) == {"v": 1}
    assert s.artifacts.delete("x") and _keys(s) == {}


_KILLED = textwrap.dedent("""
    import sys
    import numpy as np
    import redis
    from torpor.workspace import RedisStorage
    client = redis.Redis.from_url(sys.argv[1], client_name=sys.argv[3])
    s = RedisStorage(redis=client, prefix=sys.argv[2], chunk_size=1 << 16)
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        s.artifacts.save("victim", {"i": i, "a": np.full(400_000, i, dtype=np.int64)},
                         compress=None)
        s.artifacts.save("note", f"note {i}")
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45, 0.8])
def test_a_save_killed_at_any_moment_leaves_a_complete_version(redis_storage_factory,
                                                               walker_env, delay):
    s = redis_storage_factory(chunk_size=1 << 16)
    s.artifacts.save("victim", {"i": 0, "a": np.zeros(400_000, dtype=np.int64)})
    who = f"killed-{os.urandom(4).hex()}"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, s.url, s.prefix, who],
                            env=walker_env, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the server still runs what reached its socket before the kill: wait until it
    # has closed the killed process's connections
    deadline = time.monotonic() + 10
    while any(c["name"] == who for c in s.redis.client_list()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    names = {n.decode() for n in s.redis.smembers(s.namespace + "names")}
    listed = s.artifacts.list()
    assert {i["name"] for i in listed} == names             # the listing agrees with the data
    for info in listed:
        out = s.artifacts.load(info["name"])
        if info["name"] == "victim":
            assert out["i"] == info["version"] - 1 and out["a"].shape == (400_000,)
            assert (out["a"] == out["i"]).all()
        else:
            assert out == f"note {info['version']}"
    s.artifacts.save("victim", {"i": -1})                  # cleans up after the killed one
    s.artifacts.save("note", "after")
    assert _orphans(s) == []


def test_a_commit_after_a_concurrent_delete_fails_cleanly(redis_server):
    store = RedisStore(url=redis_server.url, prefix=f"race-{os.urandom(4).hex()}:",
                       chunk_size=1000)
    w = store.open_writer("k")
    w.write(b"z" * 5000)
    assert store.delete("k") is False       # no object yet; the unfinished chunks go
    w.write(b"z" * 10)
    with pytest.raises(FileNotFoundError, match="deleted before its commit"):
        w.commit()
    with pytest.raises(FileNotFoundError):
        store.stat("k")
    assert list(store.client.scan_iter(match=store.prefix + "*")) == []


def test_keys_with_glob_characters_are_matched_literally(redis_server):
    store = RedisStore(url=redis_server.url, prefix=f"glob-{os.urandom(4).hex()}:",
                       chunk_size=10)
    for key in ("a*", "ab", "a?", "a[b]", "a\\b", "a"):
        with store.open_writer(key) as w:
            w.write(key.encode() * 15)
    unfinished = store.open_writer("a[b]x")
    unfinished.write(b"y" * 25)
    assert store.object_keys("a[") == ["a[b]", "a[b]x"]
    assert store.object_keys("a*") == ["a*"] and store.object_keys("a\\") == ["a\\b"]
    assert store.delete("a*") and store.delete("a[b]x") is False      # its chunks go
    with pytest.raises(ValueError, match="'#'"):
        store.open_writer("a#0")
    for key in ("ab", "a?", "a[b]", "a\\b", "a"):
        with store.open_reader(key) as f:
            assert f.read() == key.encode() * 15
    assert store.object_keys("") == ["a", "a?", "a[b]", "a\\b", "ab"]
    unfinished.abort()


def test_damage_is_reported_with_the_artifact_and_the_storage(redis_storage_factory, impl):
    s = redis_storage_factory(chunk_size=CHUNK)
    for name in ("wrongtype", "manifest", "chunk-gone", "chunk-short", "fine"):
        s.artifacts.save(name, np.arange(50_000), compress=None)
    ns, c = s.namespace, s.redis
    c.delete(f"{ns}artifact:wrongtype@info")
    c.hset(f"{ns}artifact:wrongtype@info", "not", "a record")
    c.hset(s.artifacts.get("manifest")["path"], "chunks", "99")
    key = s.artifacts.get("chunk-gone")["path"]
    c.delete(f"{key}#{c.hget(key, 'id').decode()}:1")
    key = s.artifacts.get("chunk-short")["path"]
    c.setrange(f"{key}#{c.hget(key, 'id').decode()}:0", CHUNK, b"extra")
    for name, what in (("wrongtype", "record of artifact 'wrongtype'.*a Redis hash"),
                       ("manifest", "manifest is damaged"), ("chunk-gone", "missing"),
                       ("chunk-short", "chunk 0 holds")):
        with pytest.raises(ArtifactDamagedError, match=what) as e:
            s.artifacts.load(name)
        assert e.value.name == name and e.value.storage == repr(s) and repr(s) in str(e.value)
        assert isinstance(e.value, torpor.CorruptFileError)
    with pytest.raises(ArtifactDamagedError, match="wrongtype"):
        s.artifacts.get("wrongtype")
    with pytest.warns(ArtifactWarning, match="wrongtype"):
        listed = [i["name"] for i in s.artifacts.list()]
    assert listed == ["chunk-gone", "chunk-short", "fine", "manifest"]
    assert s.artifacts.load("fine").tolist() == list(range(50_000))
    assert s.artifacts.save("wrongtype", 2)["version"] == 1       # starts afresh
    assert s.artifacts.delete("manifest") and not s.artifacts.exists("manifest")


def test_listing_10000_artifacts(redis_storage_factory):
    s = redis_storage_factory()
    data = s.artifacts.save("seed", "the data of every listed artifact")
    entry = json.loads(s.redis.get(f"{s.namespace}artifact:seed@info"))["versions"][0]
    with s.redis.pipeline(transaction=False) as p:
        for i in range(10_000):
            name = f"runs/{'ab'[i % 2]}/r{i:05d}"
            rec, _ = records.add_version(None, name, dict(entry, metadata={"i": i}), 5)
            p.set(f"{s.namespace}artifact:{name}@info", records.encode(rec))
            p.sadd(s.namespace + "names", name)
        p.set(f"{s.namespace}artifact:runs/b/damaged@info", b"damaged")
        p.sadd(s.namespace + "names", "runs/b/damaged")
        p.execute()
    with pytest.warns(ArtifactWarning, match="runs/b/damaged"):
        listed = s.artifacts.list()
    assert len(listed) == 10_001 and listed[0]["name"] == "runs/a/r00000"
    assert [i["name"] for i in listed] == sorted(i["name"] for i in listed)
    assert listed[-2] == dict(data, name="runs/b/r09999", metadata={"i": 9999},
                              created_at=entry["saved_at"], updated_at=entry["saved_at"])
    assert listed[-1] == data
    with pytest.warns(ArtifactWarning):
        under = s.artifacts.list("runs/b/")
    assert len(under) == 5000 and all(i["name"].startswith("runs/b/") for i in under)
    assert len(s.artifacts.list("runs/a")) == 5000
    assert s.artifacts.load("runs/b/r00001") == "the data of every listed artifact"


@pytest.mark.bigmem
def test_an_artifact_over_512_mb(redis_storage_factory, impl):
    s = redis_storage_factory()
    big = np.arange(640 << 20, dtype=np.uint8)          # 640 MiB, stored raw
    info = s.artifacts.save("big", big, compress=None)
    assert info["size"] > 640 << 20 > 512 * 1024 * 1024
    out = s.artifacts.load("big")
    assert out.shape == big.shape and np.array_equal(out, big)
    del out
    assert s.artifacts.delete("big")


def test_connection_errors_name_the_server_and_how_to_start_one():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]            # closed again: nothing listens there
    url = f"redis://127.0.0.1:{port}/0"
    with pytest.raises(ConnectionError, match=f"{url}.*redis-server"):
        RedisStorage(url)


def test_arguments_are_checked(redis_server):
    with pytest.raises(ValueError, match="not both"):
        RedisStorage(redis_server.url, redis=redis.Redis())
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStorage(redis=redis.Redis.from_url(redis_server.url, decode_responses=True))
    with pytest.raises(TypeError, match="redis.Redis"):
        RedisStorage(redis="redis://127.0.0.1")
    for bad in ("", "a b", "x*", "p@", 7):
        with pytest.raises(ValueError, match="prefix"):
            RedisStorage(redis_server.url, prefix=bad)
    with pytest.raises(ValueError, match="Redis URL"):
        RedisStorage("127.0.0.1:6379")
    with pytest.raises(ValueError, match="chunk_size"):
        RedisStorage(redis_server.url, chunk_size=(512 << 20) + 1)


def test_importing_torpor_does_not_import_redis():
    code = "import sys, torpor, torpor.workspace; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
