"""The contract every Store keeps (torpor.storage.base): a write commits
atomically or aborts leaving the previous object intact; readers never see half
an object. Each test runs against every store torpor has."""

import os
import threading

import numpy as np
import pytest

import torpor
from torpor.engine import pipeline
from torpor.engine.safety import Policy
from torpor.format.constants import CODEC_LZ4
from torpor.format.container import make_header
from torpor.storage import LocalFileStore, MemoryStore, Store, StoreWriter
from torpor.storage.fsspec_store import FsspecStore
from torpor.storage.redis_store import RedisStore
from workspace.s3_server import s3_server  # noqa: F401  (moto's S3 server, on 127.0.0.1)
from workspace.redis_server import redis_server  # noqa: F401  (a private redis-server)

#: FsspecStore kinds: "fsspec-memory" (fsspec's memory://), "fsspec-file" (local files
#: through fsspec: a temporary key moved over the object), "s3" (a real S3 API served
#: by moto) and "s3-stream" (S3, every object streamed as a multipart upload).
FSSPEC_KINDS = ["fsspec-memory", "fsspec-file", "s3", "s3-stream"]


@pytest.fixture(params=["local", "memory", *FSSPEC_KINDS, "redis"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalFileStore(tmp_path)
    if request.param == "memory":
        return MemoryStore()
    if request.param == "redis":        # chunks of 64 KiB: the tests' objects span several
        return RedisStore(url=request.getfixturevalue("redis_server").url,
                          prefix=f"contract-{os.urandom(8).hex()}:", chunk_size=64 << 10)
    unique = os.urandom(8).hex()
    if request.param == "fsspec-memory":
        return FsspecStore(f"memory://contract-{unique}", small=0)
    if request.param == "fsspec-file":
        return FsspecStore(f"file://{tmp_path}", small=0)
    server = request.getfixturevalue("s3_server")
    small = 0 if request.param == "s3-stream" else 8 << 20
    return FsspecStore(f"s3://{server['bucket']}/contract-{unique}", small=small,
                       block_size=5 << 20, storage_options=server["storage_options"])


def _put(store, key, data):
    with store.open_writer(key) as w:
        w.write(data)


def _get(store, key):
    with store.open_reader(key) as f:
        return f.read()


def _leftovers(store):
    """Temporary files a store left behind (local files, temporary keys of an
    FsspecStore, multipart uploads never completed nor aborted on S3)."""
    if isinstance(store, LocalFileStore):
        return [n for n in os.listdir(store.root) if n.endswith(".torpor-tmp")]
    if isinstance(store, FsspecStore):
        store.fs.invalidate_cache(store.root)
        found = [p for p in store.fs.find(store.root) if p.endswith(".torpor-tmp")]
        if store.protocol == "s3":
            bucket, _, prefix = store.root.partition("/")
            found += [u["Key"] for u in store.fs.list_multipart_uploads(bucket)
                      if u["Key"].startswith(prefix + "/")]
        return found
    if isinstance(store, RedisStore):
        return _redis_leftovers(store)
    return []


def _redis_leftovers(store):
    """Chunks of a RedisStore that no committed manifest refers to."""
    client, found = store.client, []
    for key in client.scan_iter(match=store.prefix + "*#*", count=1000):
        obj, _, chunk = key.decode().partition("#")
        if client.hget(obj, "id") != chunk.split(":")[0].encode():
            found.append(key.decode())
    return found


def test_is_a_store(store):
    assert isinstance(store, Store)
    w = store.open_writer("k")
    assert isinstance(w, StoreWriter)
    w.abort()


def test_commit_then_read_stat_delete(store):
    _put(store, "a.torpor", b"hello")
    _put(store, "a.torpor", memoryview(b"world!"))          # replaces
    assert _get(store, "a.torpor") == b"world!"
    assert store.stat("a.torpor").size == 6
    assert store.stat("a.torpor").mtime > 0
    assert "a.torpor" in store.describe("a.torpor")
    assert store.delete("a.torpor") is True
    assert store.delete("a.torpor") is False
    with pytest.raises(FileNotFoundError):
        store.open_reader("a.torpor")
    with pytest.raises(FileNotFoundError):
        store.stat("a.torpor")


def test_an_exception_leaves_the_old_object(store):
    _put(store, "k", b"old")
    with pytest.raises(RuntimeError):
        with store.open_writer("k") as w:
            w.write(b"new, half written")
            raise RuntimeError("the save failed")
    assert _get(store, "k") == b"old"
    assert _leftovers(store) == []


def test_abort_leaves_the_old_object_and_nothing_else(store):
    _put(store, "k", b"old")
    w = store.open_writer("k")
    w.write(b"x" * 100_000)
    w.abort()
    assert _get(store, "k") == b"old"
    assert _leftovers(store) == []
    w = store.open_writer("new")
    w.write(b"y")
    w.abort()
    with pytest.raises(FileNotFoundError):
        store.stat("new")


def test_a_writer_dropped_unfinished_leaves_nothing(store):
    import gc
    _put(store, "k", b"old")
    w = store.open_writer("k")
    w.write(b"new")
    del w
    gc.collect()
    assert _get(store, "k") == b"old"
    assert _leftovers(store) == []


def test_readers_see_the_old_object_until_commit(store):
    _put(store, "k", b"old")
    w = store.open_writer("k")
    w.write(b"new")
    assert _get(store, "k") == b"old"
    w.commit()
    assert _get(store, "k") == b"new"


def test_a_writer_ends_once(store):
    w = store.open_writer("k")
    w.commit()
    with pytest.raises(ValueError, match="already"):
        w.commit()
    with pytest.raises(ValueError, match="already"):
        w.abort()
    with pytest.raises(ValueError):
        w.write(b"late")
    assert _get(store, "k") == b""


def test_concurrent_writers_of_one_key_leave_one_whole_object(store):
    payloads = [bytes([i]) * (200_000 + i) for i in range(8)]
    start = threading.Barrier(8)

    def save(p):
        start.wait()
        _put(store, "shared", p)
    threads = [threading.Thread(target=save, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _get(store, "shared") in payloads
    assert _leftovers(store) == []


def test_concurrent_writers_of_different_keys_lose_nothing(store):
    def save(i):
        _put(store, f"k{i}", str(i).encode() * 1000)
    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert _get(store, f"k{i}") == str(i).encode() * 1000


def test_a_torpor_file_round_trips_through_the_store(store, impl):
    obj = {"a": np.arange(300_000, dtype=np.float32), "s": "x", "shared": [1]}
    obj["again"] = obj["shared"]
    options = pipeline.SaveOptions.of()
    with store.open_writer("state.torpor") as w:
        pipeline.encode(obj, w, options, make_header({}, impl.IMPLEMENTATION, CODEC_LZ4))
    with store.open_reader("state.torpor") as f:
        back = pipeline.decode(f, store.describe("state.torpor"), pipeline.LoadOptions(Policy()))
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["again"] is back["shared"]
    with store.open_reader("state.torpor") as f:
        assert torpor.info(f)["objects"] >= 3


def test_the_pipeline_saves_into_and_loads_from_a_store(store, impl):
    """pipeline.save / load / inspect / verify take a store and a key."""
    obj = {"a": np.arange(200_000), "nested/key": [1, 2]}
    pipeline.save(obj, "runs/1/state.torpor", pipeline.SaveOptions.of(), store=store,
                  metadata={"run": 1})
    back = pipeline.load("runs/1/state.torpor", pipeline.LoadOptions(Policy()), store=store)
    np.testing.assert_array_equal(back["a"], obj["a"])
    header, toc = pipeline.inspect("runs/1/state.torpor", store=store)
    assert header["metadata"] == {"run": 1} and len(toc["sections"]) >= 2
    assert pipeline.verify("runs/1/state.torpor", store=store) == len(toc["sections"])
    assert pipeline.read_header("runs/1/state.torpor", store=store)["metadata"] == {"run": 1}


def test_a_failed_encode_leaves_the_old_torpor_file(store, impl):
    with store.open_writer("state.torpor") as w:
        pipeline.encode([1, 2], w, pipeline.SaveOptions.of(),
                        make_header({}, impl.IMPLEMENTATION, CODEC_LZ4))
    with pytest.raises(torpor.UnsupportedObjectError):
        with store.open_writer("state.torpor") as w:
            pipeline.encode([np.ones(100_000), (i for i in ())], w, pipeline.SaveOptions.of(),
                            make_header({}, impl.IMPLEMENTATION, CODEC_LZ4))
    with store.open_reader("state.torpor") as f:
        assert torpor.load(f) == [1, 2]
    assert _leftovers(store) == []


# --- what only local files have ----------------------------------------------------

def test_local_keys_stay_under_the_root(tmp_path):
    os.mkdir(tmp_path / "root")
    os.mkdir(tmp_path / "outside")
    os.symlink(tmp_path / "outside", tmp_path / "root" / "link")
    store = LocalFileStore(tmp_path / "root")
    for key in ("../escape", "a/../../escape", str(tmp_path / "abs"), "link/x", "link/deep/x"):
        with pytest.raises(ValueError, match="outside|absolute"):
            store.open_writer(key)
        with pytest.raises(ValueError):
            store.open_reader(key)
    assert os.listdir(tmp_path / "outside") == []
    with pytest.raises(FileNotFoundError, match="folder"):
        LocalFileStore().open_writer(str(tmp_path / "missing-folder" / "x"))


def test_local_commit_keeps_the_replaced_files_mode(tmp_path):
    store = LocalFileStore(tmp_path)
    _put(store, "k", b"1")
    os.chmod(tmp_path / "k", 0o640)
    _put(store, "k", b"2")
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o640
    with store.open_writer("n", mode=0o600) as w:
        w.write(b"3")
    assert os.stat(tmp_path / "n").st_mode & 0o777 == 0o600
