"""FileStorage on fsspec URLs (issue 12): what only object stores have. The layout
as S3 keys, uploads interrupted by an exception, an abort or a killed process
(the old version readable, nothing new visible), a record overwritten with
garbage by another client, conditional commits racing other writers,
storage_options, and clear errors (bad URL, missing bucket, missing fsspec,
mmap). Every S3 test talks HTTP to moto's server on 127.0.0.1 (s3_server.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import torpor
from torpor.errors import ArtifactDamagedError, UnsupportedObjectError
from torpor.storage.fsspec_store import FsspecStore
from torpor.workspace import ArtifactWarning, FileStorage
from torpor.workspace import records

@pytest.fixture
def s3(s3_server):
    """An independent S3 client (boto3), to look at and tamper with the keys."""
    import boto3
    return boto3.client("s3", endpoint_url=s3_server["endpoint_url"],
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def _prefix(storage):
    """The bucket and key prefix of an S3 FileStorage's URL."""
    bucket, _, prefix = storage.base_path[len("s3://"):].partition("/")
    return bucket, prefix


def _keys(s3, bucket, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1:] for p in pages for o in p.get("Contents", []))


def _uploads(s3, bucket, prefix):
    """Multipart uploads started under ``prefix`` and never completed nor aborted."""
    out = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/")
    return [u["Key"] for u in out.get("Uploads", [])]


def test_layout_on_s3(s3_storage_factory, s3, impl):
    s = s3_storage_factory(workspace_id="team")
    grid = s.artifacts.save("results/run-1", np.ones(3))
    notes = s.artifacts.save("notes.md", "hello")
    bucket, prefix = _prefix(s)
    keys = _keys(s3, bucket, prefix)
    data = [k for k in keys if k.startswith("team/artifacts/results/run-1@") and k.endswith(".torpor")]
    assert len(data) == 1
    txt = [k for k in keys if k.startswith("team/artifacts/notes.md@") and k.endswith(".txt")]
    assert len(txt) == 1
    # the records and the data: nothing else (no lock keys, no temporary keys)
    assert keys == sorted(["team/artifacts/results/run-1@info.json", data[0],
                           "team/artifacts/notes.md@info.json", txt[0]])
    assert grid["path"] == f"s3://{bucket}/{prefix}/{data[0]}"
    assert notes["path"] == f"s3://{bucket}/{prefix}/{txt[0]}"
    rec = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/team/artifacts/results/"
                                   f"run-1@info.json")["Body"].read())
    assert rec["name"] == "results/run-1" and rec["versions"][0]["key"] == data[0].split(
        "artifacts/", 1)[1]
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{txt[0]}")["Body"].read()
    assert body == b"hello"                          # a plain object other tools read
    assert "s3://" in grid["storage"] and prefix in grid["storage"]


def test_layout_in_memory(memory_storage_factory):
    import fsspec
    s = memory_storage_factory()
    s.artifacts.save("a/b", b"x")
    root = s.root[len("memory:/"):]
    found = [p[len(root) + 1:] for p in fsspec.filesystem("memory").find(root)]
    assert len(found) == 2 and "artifacts/a/b@info.json" in found
    assert [p for p in found if p != "artifacts/a/b@info.json"][0].endswith(".bin")


def _big_storage(s3_storage_factory, s3_server, **kw):
    """Parts of 5 MiB (S3's smallest), so a 16 MiB artifact is a multipart upload."""
    opts = dict(s3_server["storage_options"], default_block_size=5 << 20)
    return s3_storage_factory(storage_options=opts, **kw)


def test_an_exception_inside_the_upload_keeps_the_old_version(s3_storage_factory, s3_server, s3,
                                                              impl):
    s = _big_storage(s3_storage_factory, s3_server, compress=None)
    s.artifacts.save("model", {"w": np.arange(10.0)}, "v1")
    bucket, prefix = _prefix(s)
    before = _keys(s3, bucket, prefix)
    big = np.random.default_rng(1).random(2 << 20)      # 16 MiB: parts are uploaded
    with pytest.raises(UnsupportedObjectError):
        s.artifacts.save("model", {"w": big, "bad": (i for i in ())}, "v2")
    assert _keys(s3, bucket, prefix) == before          # nothing new visible
    assert _uploads(s3, bucket, prefix) == []           # the multipart upload was aborted
    assert s.artifacts.load("model")["w"].tolist() == list(range(10))
    assert [v["description"] for v in s.artifacts.versions("model")] == ["v1"]
    # and a 16 MiB artifact saves as a multipart upload (its ETag says so)
    info = s.artifacts.save("model", {"w": big}, "v2")
    key = info["path"].split(f"{bucket}/", 1)[1]
    assert "-" in s3.head_object(Bucket=bucket, Key=key)["ETag"]
    np.testing.assert_array_equal(s.artifacts.load("model")["w"], big)


def test_an_aborted_writer_leaves_the_old_object(s3_server, s3):
    prefix = f"abort-{os.urandom(6).hex()}"
    store = FsspecStore(f"s3://{s3_server['bucket']}/{prefix}", small=0, block_size=5 << 20,
                        storage_options=s3_server["storage_options"])
    with store.open_writer("obj") as w:
        w.write(b"old")
    w = store.open_writer("obj")
    w.write(os.urandom(12 << 20))                       # two parts already uploaded
    assert _uploads(s3, s3_server["bucket"], prefix) == [f"{prefix}/obj"]
    w.abort()
    assert _uploads(s3, s3_server["bucket"], prefix) == []
    with store.open_reader("obj") as f:
        assert f.read() == b"old"
    assert _keys(s3, s3_server["bucket"], prefix) == ["obj"]


def test_a_reader_never_mixes_two_versions(s3_server):
    store = FsspecStore(f"s3://{s3_server['bucket']}/mix-{os.urandom(6).hex()}",
                        block_size=5 << 20, storage_options=s3_server["storage_options"])
    old, new = b"o" * (12 << 20), b"n" * (12 << 20)
    with store.open_writer("obj") as w:
        w.write(old)
    with store.open_reader("obj") as f:
        assert f.read(1000) == b"o" * 1000           # the first range is read
        with store.open_writer("obj") as w:          # the object is replaced
            w.write(new)
        f.seek(11 << 20)
        with pytest.raises(OSError):                 # the next range is refused ...
            f.read(1000)                             # ... rather than read from the new one
    with store.open_reader("obj") as f:
        assert f.read() == new


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from torpor.storage.fsspec_store import FsspecStore
    store = FsspecStore(sys.argv[1], small=0, block_size=5 << 20,
                        storage_options={"key": "testing", "secret": "testing",
                                         "client_kwargs": {"endpoint_url": sys.argv[2],
                                                           "region_name": "us-east-1"}})
    w = store.open_writer("obj")
    w.write(os.urandom(11 << 20))
    print("uploading", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_upload_leaves_nothing_visible(s3_server, s3):
    bucket, prefix = s3_server["bucket"], f"killed-{os.urandom(6).hex()}"
    url = f"s3://{bucket}/{prefix}"
    store = FsspecStore(url, storage_options=s3_server["storage_options"])
    with store.open_writer("obj") as w:
        w.write(b"old")
    p = subprocess.run([sys.executable, "-c", _KILLED, url, s3_server["endpoint_url"]],
                       capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL and b"uploading" in p.stdout, p.stderr
    assert _keys(s3, bucket, prefix) == ["obj"]
    with store.open_reader("obj") as f:
        assert f.read() == b"old"
    # what it uploaded is an unfinished multipart upload: invisible (docs: a lifecycle rule
    # aborts such uploads)
    assert _uploads(s3, bucket, prefix) == [f"{prefix}/obj"]


def test_a_damaged_record_on_s3(s3_storage_factory, s3, impl):
    s = s3_storage_factory()
    s.artifacts.save("fine", np.arange(3))
    s.artifacts.save("broken", {"x": 1})
    bucket, prefix = _prefix(s)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/artifacts/broken@info.json", Body=b"\x00garbage")
    with pytest.warns(ArtifactWarning, match="broken"):
        listed = s.artifacts.list()
    assert [i["name"] for i in listed] == ["fine"]
    with pytest.raises(ArtifactDamagedError, match="artifact 'broken'") as e:
        s.artifacts.load("broken")
    assert e.value.name == "broken" and f"s3://{bucket}/{prefix}" in e.value.storage
    assert e.value.storage in str(e.value)
    assert s.artifacts.load("fine").tolist() == [0, 1, 2]


def test_damaged_data_on_s3(s3_storage_factory, s3, impl):
    s = s3_storage_factory()
    info = s.artifacts.save("arr", np.arange(1000.0))
    bucket, prefix = _prefix(s)
    key = info["path"].split(f"{bucket}/", 1)[1]
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    with pytest.raises(ArtifactDamagedError, match="artifact 'arr'") as e:
        s.artifacts.load("arr")
    assert f"s3://{bucket}/{prefix}" in str(e.value)
    s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ArtifactDamagedError, match="missing"):
        s.artifacts.load("arr")


def test_a_commit_racing_another_writer_keeps_both_versions(s3_storage_factory, s3, impl):
    """Another client commits a version between this save's read of the record and
    its PUT: the conditional PUT fails, and the save applies itself again on top."""
    s = s3_storage_factory()
    s.artifacts.save("race", 1, "first")
    bucket, prefix = _prefix(s)
    key = f"{prefix}/artifacts/race@info.json"
    backend = s.artifacts._b                  # the test steps into the commit on purpose
    real = backend.update_record
    calls = []

    def racing(name, update):
        def wrapped(raw):
            calls.append(raw)
            if len(calls) == 1:                # the other writer wins the race
                rec = records.decode(raw, name, "s3")
                entry = dict(rec["versions"][-1], description="foreign")
                rec, _ = records.add_version(rec, name, entry, 5)
                s3.put_object(Bucket=bucket, Key=key, Body=records.encode(rec))
            return update(raw)
        return real(name, wrapped)
    backend.update_record = racing
    info = s.artifacts.save("race", 3, "third")
    assert len(calls) == 2 and info["version"] == 3
    assert [v["description"] for v in s.artifacts.versions("race")] == ["first", "foreign",
                                                                        "third"]


def test_a_commit_whose_answer_was_lost_is_not_applied_twice(s3_storage_factory, impl):
    """The record's PUT lands but its answer is lost; the client retries and S3
    refuses the retry (the ETag changed, by that very PUT): the save must see its
    own version in the record and stop, not add it again."""
    s = s3_storage_factory()
    s.artifacts.save("lost", 1)
    objects = s.artifacts._b.objects              # the test steps into the commit on purpose
    real, calls = objects.put, []

    def put(key, data, **kw):
        calls.append(key)
        assert real(key, data, **kw)
        return len(calls) > 1                     # the first answer is "precondition failed"
    objects.put = put
    info = s.artifacts.save("lost", 2)
    assert len(calls) == 1 and info["version"] == 2
    vs = s.artifacts.versions("lost")
    assert [v["version"] for v in vs] == [1, 2] and len({v["path"] for v in vs}) == 2
    assert s.artifacts.load("lost") == 2


_SAVER = textwrap.dedent("""
    import sys
    from torpor.workspace import FileStorage
    s = FileStorage(sys.argv[1], keep_versions=100,
                    storage_options={"key": "testing", "secret": "testing",
                                     "client_kwargs": {"endpoint_url": sys.argv[2],
                                                       "region_name": "us-east-1"}})
    for i in range(12):
        s.artifacts.save("shared", {"who": sys.argv[3], "i": i}, sys.argv[3])
""")


def test_two_processes_saving_one_name_lose_no_version(s3_storage_factory, s3_server, impl,
                                                       walker_env):
    s = s3_storage_factory(keep_versions=100)
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER, s.base_path,
                               s3_server["endpoint_url"], who], env=walker_env,
                              stderr=subprocess.PIPE) for who in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    vs = s.artifacts.versions("shared")
    assert [v["version"] for v in vs] == list(range(1, 25))
    assert sorted(v["description"] for v in vs) == ["a"] * 12 + ["b"] * 12
    for v in vs:
        assert s.artifacts.load("shared", version=v["version"])["who"] == v["description"]


def test_storage_options_reach_the_filesystem(s3_storage_factory, s3_server):
    s = s3_storage_factory(storage_options=dict(s3_server["storage_options"],
                                                default_block_size=6 << 20))
    fs = s.artifacts._b.store.fs
    assert fs.client_kwargs["endpoint_url"] == s3_server["endpoint_url"]
    assert fs.default_block_size == 6 << 20
    s.artifacts.save("x", b"1")
    assert s.artifacts.load("x") == b"1"


def test_an_unreachable_endpoint_is_a_clear_error(s3_server):
    import socket
    with socket.socket() as sock:                      # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = {"key": "testing", "secret": "testing", "retries": 1,
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                              "region_name": "us-east-1"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    with pytest.raises(OSError, match="cannot reach the bucket") as e:
        FileStorage(f"s3://{s3_server['bucket']}/x", storage_options=opts)
    assert "storage_options" in str(e.value)


def test_a_missing_bucket_says_what_to_do(s3_server):
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket' does not exist.*create"):
        FileStorage("s3://no-such-bucket/ws", storage_options=s3_server["storage_options"])


def test_mmap_is_refused_on_s3(s3_storage_factory, impl):
    s = s3_storage_factory(compress=None)
    s.artifacts.save("raw", np.arange(100))
    with pytest.raises(ValueError, match="mmap=True maps local files.*load it without mmap"):
        s.artifacts.load("raw", mmap=True)
    assert s.artifacts.load("raw").tolist() == list(range(100))


def test_bad_urls_say_what_is_wrong():
    with pytest.raises(ValueError, match="knows no filesystem called 'xyzzy'"):
        FileStorage("xyzzy://a/b")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"gs://|gcs://.*pip install"):
            FileStorage("gcs://bucket/prefix")
    with pytest.raises(ValueError, match="not a relative key"):
        FsspecStore("memory://x").path("../up")
    with pytest.raises(TypeError, match="storage_options= is for URLs"):
        FileStorage("local-folder", storage_options={"key": "k"})


def test_a_missing_fsspec_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)        # import fsspec now fails
    with pytest.raises(ImportError, match=r"needs fsspec.*pip install 'torpor\[s3\]'"):
        FileStorage("s3://bucket/prefix")


def test_import_torpor_never_imports_fsspec():
    code = ("import sys, torpor, torpor.workspace, torpor.storage.fsspec_store;"
            "print('fsspec' in sys.modules, 's3fs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_file_urls_are_local_folders(tmp_path, impl):
    s = FileStorage(f"file://{tmp_path}", compress=None)
    info = s.artifacts.save("a", np.arange(10))
    assert info["path"].startswith(str(tmp_path)) and os.path.exists(info["path"])
    assert s.artifacts.load("a", mmap=True).tolist() == list(range(10))
    assert torpor.load(info["path"]).tolist() == list(range(10))
