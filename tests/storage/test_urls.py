"""Remote files: dump / load / info / verify, sessions and module dumps take fsspec
URLs (``s3://``, ``memory://``, ``file://``) and fsspec file objects.

Every S3 test talks HTTP to moto's server on 127.0.0.1 (workspace/s3_server.py);
nothing is mocked. What goes over the wire is counted with botocore's own event
hooks on the s3fs client torpor uses: every request s3fs sends, and the bytes each
response carries."""

import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import types
import uuid

import numpy as np
import pytest

import torpor
from torpor.storage import RemoteFile, is_url, locate
from workspace import s3_server as moto

#: moto's S3 server on 127.0.0.1, one for the whole session (the fixture of the
#: workspace tests, made a fixture of this module)
s3_server = moto.s3_server

fsspec = pytest.importorskip("fsspec")      # in the test extras: present wherever CI runs

KINDS = ["s3", "memory", "file"]


# --- places ------------------------------------------------------------------------

@pytest.fixture
def s3(s3_server):
    import boto3
    return boto3.client("s3", endpoint_url=s3_server["endpoint_url"], aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


@pytest.fixture
def place(request, tmp_path):
    """``(folder URL, storage_options)`` of a fresh, empty folder of one kind."""
    kind = request.param
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        yield f"s3://{server['bucket']}/urls-{uuid.uuid4().hex}", server["storage_options"]
    elif kind == "memory":
        url = f"memory://urls-{uuid.uuid4().hex}"
        yield url, None
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)
    else:
        yield tmp_path.as_uri(), None


def _listing(url, options):
    """The names in the folder ``url`` (temporary keys included)."""
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    fs.invalidate_cache(path)
    try:
        return sorted(p.rpartition("/")[2] for p in fs.find(path))
    except FileNotFoundError:
        return []


class Wire:
    """Every request the s3fs client of ``storage_options`` sends (``ops``:
    operation names; ``ranges``: the Range header of each GetObject) and the
    bytes the responses carried (``received``), from botocore's event hooks."""

    def __init__(self, storage_options, bucket):
        self.fs = fsspec.filesystem("s3", **storage_options)
        self.fs.ls(bucket)              # connects: the client exists from here on
        self.client = self.fs.s3
        self.reset()
        self.client.meta.events.register("before-send.s3", self._sent)
        self.client.meta.events.register("after-call.s3", self._answered)

    def reset(self):
        self.ops, self.ranges, self.received = [], [], 0

    def _sent(self, request, event_name, **kw):
        op = event_name.rsplit(".", 1)[1]
        self.ops.append(op)
        if op == "GetObject":
            self.ranges.append(request.headers.get("Range"))

    def _answered(self, parsed, event_name, **kw):
        if event_name.endswith(".GetObject"):
            self.received += int(parsed.get("ContentLength") or 0)

    def close(self):
        self.client.meta.events.unregister("before-send.s3", self._sent)
        self.client.meta.events.unregister("after-call.s3", self._answered)


@pytest.fixture
def wire(s3_server):
    w = Wire(s3_server["storage_options"], s3_server["bucket"])
    yield w
    w.close()


# --- what the tests save -----------------------------------------------------------

def _graph():
    """Arrays of many dtypes, layouts and shapes, shared objects, a cycle."""
    rng = np.random.default_rng(7)
    shared = rng.standard_normal((300, 200)).astype(np.float32)
    rec = np.zeros(50, dtype=[("x", "<f8"), ("n", ">i4"), ("tag", "S3")])
    rec["x"], rec["n"], rec["tag"] = np.arange(50) / 3, np.arange(50), b"ab"
    items = [1, "two", 3.0]
    g = {
        "shared": shared, "again": shared, "items": items, "items_again": items,
        "big_endian": np.arange(1000, dtype=">i8"),
        "fortran": np.asfortranarray(rng.integers(0, 1 << 40, (64, 32))),
        "complex": (rng.standard_normal(100) + 1j).astype(np.complex64),
        "bools": rng.random(1000) > 0.5, "zero_d": np.array(2.5), "empty": np.empty((0, 3)),
        "rec": rec, "strided": shared[::3, 1::2], "when": np.arange(5).astype("M8[D]"),
        "text": "π" * 10, "blob": os.urandom(3000),
    }
    g["self"] = g
    return g


def _check(out, g):
    assert set(out) == set(g)
    for k, v in g.items():
        if isinstance(v, np.ndarray):
            w = out[k]
            assert type(w) is np.ndarray and w.dtype == v.dtype and w.shape == v.shape, k
            assert np.array_equal(w, v), k
            assert w.flags.f_contiguous == v.flags.f_contiguous or v.ndim < 2, k
    assert out["again"] is out["shared"] and out["items_again"] is out["items"]
    assert out["items"] == g["items"] and out["self"] is out
    assert out["text"] == g["text"] and out["blob"] == g["blob"]


# --- URLs ----------------------------------------------------------------------------

def test_what_is_a_url():
    for url in ("s3://b/k.torpor", "gs://b/k", "gcs://b/k", "memory://x", "file:///tmp/x",
                "s3a://b/k", "abfs://c/k", "HTTPS://h/x"):
        assert is_url(url), url
    for path in ("state.torpor", "/tmp/x.torpor", "C:\\data\\x.torpor", "C:/data/x.torpor",
                 "C://data", "s3:/bucket/key", "./s3://b/k", "", pathlib.Path("/tmp/x"),
                 b"s3://b/k"):
        assert not is_url(path), path
    # a Windows drive letter or a plain path is never given to fsspec
    assert locate("C:/data/x.torpor") == "C:/data/x.torpor"


@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_roundtrip_keeps_values_dtypes_shapes_and_sharing(place, impl):
    folder, options = place
    url = f"{folder}/graph.torpor"
    g = _graph()
    for compress in ("lz4", None):
        torpor.dump(g, url, compress=compress, metadata={"who": "ann"}, storage_options=options)
        _check(torpor.load(url, storage_options=options), g)
        meta = torpor.info(url, storage_options=options)
        assert meta["metadata"] == {"who": "ann"} and meta["mmap"]["arrays"] >= 3
        assert torpor.verify(url, storage_options=options) == len(meta["sections"])
    assert _listing(folder, options) == ["graph.torpor"]      # no temporary key left


@pytest.mark.parametrize("place", ["s3", "memory"], indirect=True)
def test_fsspec_open_files_and_file_objects(place, impl):
    folder, options = place
    opts = options or {}
    g = _graph()
    # fsspec.open(...): an OpenFile, which torpor opens itself (the save is atomic)
    torpor.dump(g, fsspec.open(f"{folder}/a.torpor", "wb", **opts))
    _check(torpor.load(fsspec.open(f"{folder}/a.torpor", **opts)), g)
    # open fsspec files: written and read as the file objects they are
    fs, path = fsspec.core.url_to_fs(f"{folder}/b.torpor", **opts)
    with fs.open(path, "wb") as f:
        torpor.dump(g, f)
    with fs.open(path, "rb") as f:
        _check(torpor.load(f), g)
    with fs.open(path, "rb") as f:
        sections = torpor.info(f)["sections"]
        f.seek(0)
        assert torpor.verify(f) == len(sections) >= 3
    with pytest.raises(TypeError, match="give the options to fsspec.open"):
        torpor.load(fsspec.open(f"{folder}/a.torpor", **opts), storage_options={"anon": True})
    with pytest.raises(ValueError, match="without compression"):
        torpor.load(fsspec.open(f"{folder}/a.torpor", compression="gzip", **opts))


def test_file_urls_are_local_paths(tmp_path, impl):
    target = tmp_path / "with space" / "x.torpor"
    target.parent.mkdir()
    url = target.as_uri()                   # file:///.../with%20space/x.torpor
    assert "%20" in url
    a = np.arange(100_000, dtype=np.float64)
    torpor.dump({"a": a, "b": a}, url, compress=None)
    assert target.exists() and os.listdir(target.parent) == ["x.torpor"]
    out = torpor.load(f"file://localhost{target.as_uri()[len('file://'):]}", mmap=True)
    assert out["a"] is out["b"] and np.array_equal(out["a"], a)
    assert torpor.info(url)["mmap"]["mappable"] == 1
    with pytest.raises(ValueError, match="names the host 'elsewhere'"):
        torpor.load("file://elsewhere/x.torpor")
    with pytest.raises(ValueError, match="%23"):
        torpor.load(f"file://{tmp_path}/a#b.torpor")


@pytest.mark.parametrize("place", ["s3", "memory"], indirect=True)
def test_mmap_of_a_remote_file_is_refused_clearly(place):
    folder, options = place
    url = f"{folder}/raw.torpor"
    torpor.dump(np.arange(10), url, compress=None, storage_options=options)
    with pytest.raises(ValueError, match=r"mmap=True .* remote: load it without mmap=True"):
        torpor.load(url, mmap=True, storage_options=options)
    assert np.array_equal(torpor.load(url, storage_options=options), np.arange(10))


def test_storage_options_go_with_urls_only(tmp_path):
    with pytest.raises(TypeError, match="storage_options= is for URLs .* local path"):
        torpor.dump(1, tmp_path / "x.torpor", storage_options={"anon": True})
    with pytest.raises(TypeError, match="storage_options= is for URLs .* BytesIO"):
        torpor.load(io.BytesIO(), storage_options={"anon": True})
    with pytest.raises(TypeError, match="default file"):
        torpor.dump_module(module=types.ModuleType("m"), storage_options={"anon": True})
    assert not os.listdir(tmp_path)


# --- the ranged reader ---------------------------------------------------------------

def test_ranged_reader_reads_as_a_file_does():
    """Random seeks and reads of every size, across and between windows, give
    what a BytesIO of the same bytes gives."""
    from torpor.storage.ranged import FIRST, RangedReader
    data = os.urandom(3 * FIRST + 12345)
    calls = []

    def fetch(start, end):
        calls.append((start, end))
        return data[start:end]
    r, ref = RangedReader(fetch, len(data), "mem"), io.BytesIO(data)
    rng = np.random.default_rng(5)
    for _ in range(2000):
        pos = int(rng.integers(0, len(data) + 10))
        n = int(rng.choice([0, 1, 7, 100, FIRST - 1, FIRST + 1, 3 * FIRST, -1]))
        assert r.seek(pos) == ref.seek(pos)
        if rng.random() < 0.5:
            assert r.read(n) == ref.read(n)
        else:
            a, b = bytearray(max(n, 0)), bytearray(max(n, 0))
            assert r.readinto(a) == ref.readinto(b) and a == b
        assert r.tell() == ref.tell()
    assert r.seek(-5, 2) == len(data) - 5 and r.read() == data[-5:] and r.read(3) == b""
    assert r.requests == len(calls) and r.fetched == sum(e - s for s, e in calls)
    with pytest.raises(ValueError, match="before the start"):
        r.seek(-1)
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r.read(1)


def test_ranged_reader_fetches_the_start_and_the_end_then_streams():
    from torpor.storage.ranged import FIRST, MOST, RangedReader
    size = 100 << 20
    calls = []

    def fetch(start, end):
        calls.append((start, end))
        return bytes(end - start)
    r = RangedReader(fetch, size, "mem")
    r.read(16)                                   # the preamble: the first 64 KiB
    r.seek(size - 32)
    r.read(32)                                   # the footer: the last 64 KiB
    r.seek(size - 1000)
    r.read(900)                                  # the table of contents: in that window
    assert calls == [(0, FIRST), (size - FIRST, size)]
    r.seek(100)
    while r.read(16 << 10):                      # then forwards to the end
        pass
    spans = [e - s for s, e in calls[2:]]
    assert calls[2][0] == FIRST and spans[:3] == [2 * FIRST, 4 * FIRST, 8 * FIRST]
    assert max(spans) == MOST and sum(spans) == size - FIRST


def test_ranged_reader_refuses_a_short_answer():
    from torpor.storage.ranged import RangedReader
    r = RangedReader(lambda start, end: b"x" * (end - start - 1), 1000, "s3://b/cut.torpor")
    with pytest.raises(OSError, match="s3://b/cut.torpor: asked for bytes 0 to 1000 .* cut short"):
        r.read(10)


# --- S3: what goes over the wire ---------------------------------------------------

@pytest.fixture(scope="module")
def big_s3_file(s3_server):
    """A 40 MB torpor file on S3, arrays stored raw; ``(url, size, arrays)``."""
    url = f"s3://{s3_server['bucket']}/big-{uuid.uuid4().hex}/big.torpor"
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(1 << 20) for _ in range(5)]
    torpor.dump({"arrays": arrays, "names": [f"n{i}" for i in range(2000)]}, url,
                compress=None, metadata={"run": 3}, storage_options=s3_server["storage_options"])
    size = fsspec.filesystem("s3", **s3_server["storage_options"]).size(url)
    assert size > 40 << 20
    return url, size, arrays


def test_info_reads_the_header_and_toc_only(big_s3_file, s3_server, wire):
    url, size, _ = big_s3_file
    options = s3_server["storage_options"]
    wire.reset()
    d = torpor.info(url, storage_options=options)
    assert d["metadata"] == {"run": 3} and d["mmap"]["arrays"] == 5
    assert d["size"]["stored"] > 40 << 20
    # one HEAD (the object's size and ETag) and two ranged GETs (start, end)
    assert sorted(wire.ops) == ["GetObject", "GetObject", "HeadObject"], wire.ops
    assert all(r and r.startswith(b"bytes=") for r in wire.ranges), wire.ranges
    assert wire.received <= 128 << 10, wire.received
    # an open fsspec file is read in ranges too, whatever cache it was opened with
    # (s3fs's default reads ahead 50 MiB, all of this file, on the first read)
    fs = fsspec.filesystem("s3", **options)
    with fs.open(url, "rb") as f:
        wire.reset()
        assert torpor.info(f)["metadata"] == {"run": 3}
    assert wire.ops == ["GetObject", "GetObject"] and wire.received <= 128 << 10


def test_load_streams_the_file_in_ranges(big_s3_file, s3_server, wire, impl):
    url, size, arrays = big_s3_file
    wire.reset()
    out = torpor.load(url, storage_options=s3_server["storage_options"])
    assert len(out["arrays"]) == 5 and out["names"][-1] == "n1999"
    for a, b in zip(out["arrays"], arrays):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert wire.ops.count("HeadObject") == 1
    gets = wire.ops.count("GetObject")
    # every byte read about once, in requests of up to 16 MiB (what a load holds
    # of the file at once), not one per chunk
    assert 3 < gets <= 16, wire.ranges
    spans = [int(b) - int(a) + 1 for a, b in (r[len(b"bytes="):].split(b"-") for r in wire.ranges)]
    assert max(spans) <= 16 << 20, spans
    assert size <= wire.received <= size + (256 << 10), (wire.received, size)


def test_a_failed_save_leaves_the_old_object_and_no_upload(s3_server, s3, impl):
    bucket, prefix = s3_server["bucket"], f"fail-{uuid.uuid4().hex}"
    url = f"s3://{bucket}/{prefix}/state.torpor"
    # parts of 5 MiB (S3's smallest): the save below is a multipart upload under way
    options = dict(s3_server["storage_options"], default_block_size=5 << 20)
    torpor.dump({"old": np.arange(10)}, url, storage_options=options)
    old = s3.get_object(Bucket=bucket, Key=f"{prefix}/state.torpor")["Body"].read()

    Probe.look = lambda: sorted(
        u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))
    Probe.seen = seen = []
    rng = np.random.default_rng(2)
    state = {"arrays": [rng.standard_normal(1 << 20) for _ in range(3)],     # 24 MiB
             "probe": Probe(), "handle": (i for i in range(3))}               # cannot be saved
    wire = Wire(options, bucket)
    try:
        with pytest.raises(torpor.UnsupportedObjectError, match="generator"):
            torpor.dump(state, url, compress=None, storage_options=options)
    finally:
        wire.close()
    assert seen == [[f"{prefix}/state.torpor"]]          # the failure came mid-upload
    assert "UploadPart" in wire.ops and "AbortMultipartUpload" in wire.ops
    assert "CompleteMultipartUpload" not in wire.ops and "PutObject" not in wire.ops
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/state.torpor")["Body"].read() == old
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert keys == [f"{prefix}/state.torpor"]
    assert np.array_equal(torpor.load(url, storage_options=options)["old"], np.arange(10))


class Probe:
    """Saved after the arrays: notes what ``look()`` sees at that moment (the
    multipart uploads under way)."""
    look = seen = None

    def __reduce__(self):
        Probe.seen.append(Probe.look())
        return (Probe, ())


@pytest.mark.parametrize("place", ["s3", "memory"], indirect=True)
def test_a_failed_small_save_leaves_the_old_file(place, impl):
    folder, options = place
    url = f"{folder}/small.torpor"
    torpor.dump([1, 2, 3], url, storage_options=options)
    with pytest.raises(torpor.UnsupportedObjectError, match="generator"):
        torpor.dump({"a": np.ones(1000), "g": (i for i in ())}, url, storage_options=options)
    assert torpor.load(url, storage_options=options) == [1, 2, 3]
    assert _listing(folder, options) == ["small.torpor"]


def test_a_ranged_read_never_mixes_two_versions(s3_server):
    url = f"s3://{s3_server['bucket']}/mix-{uuid.uuid4().hex}/x.torpor"
    options = s3_server["storage_options"]
    torpor.dump(np.zeros(1 << 20), url, compress=None, storage_options=options)
    with locate(url, options).open_reader() as f:
        assert f.read(4) == torpor.dumps(0)[:4]         # the signature, and the first window
        torpor.dump(np.ones(1 << 20), url, compress=None, storage_options=options)
        f.seek(4 << 20)
        with pytest.raises(OSError, match="no longer exists"):
            f.read(1 << 10)                 # s3fs: FileExpired, the ETag no longer matches


def test_verify_names_the_url_of_a_damaged_object(s3_server, s3, impl):
    bucket, key = s3_server["bucket"], f"damaged-{uuid.uuid4().hex}/x.torpor"
    url, options = f"s3://{bucket}/{key}", s3_server["storage_options"]
    torpor.dump({"a": np.arange(200_000)}, url, compress=None, storage_options=options)
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    assert torpor.info(url, storage_options=options)["mmap"]["arrays"] == 1   # intact
    with pytest.raises(torpor.CorruptFileError, match=f"{url}: array section .*checksum"):
        torpor.verify(url, storage_options=options)


def test_errors_name_the_url_and_say_what_to_do(s3_server):
    options, bucket = s3_server["storage_options"], s3_server["bucket"]
    missing = f"s3://{bucket}/nothing-{uuid.uuid4().hex}.torpor"
    with pytest.raises(FileNotFoundError, match=f"no such file: {missing}"):
        torpor.load(missing, storage_options=options)
    with pytest.raises(FileNotFoundError, match=f"no such file: {missing}"):
        torpor.info(missing, storage_options=options)
    with pytest.raises(FileNotFoundError, match="the bucket 'no-such-bucket' does not exist"):
        torpor.dump(1, "s3://no-such-bucket/x.torpor", storage_options=options)
    with pytest.raises(ValueError, match="names a bucket, not a file"):
        torpor.dump(1, f"s3://{bucket}", storage_options=options)
    with pytest.raises(ValueError, match="names a folder, not a file"):
        torpor.dump(1, f"s3://{bucket}/folder/", storage_options=options)
    with pytest.raises(ValueError, match="knows no filesystem called 'nosuchfs'"):
        torpor.dump(1, "nosuchfs://x/y.torpor")


# --- sessions and module dumps -------------------------------------------------------

class Notes(torpor.StateManager):
    def __init__(self, text="", grid=None):
        self.text = text
        self.grid = np.zeros(3) if grid is None else grid

    def reset_state(self, session):
        self.text, self.grid = "", np.zeros(3)


@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_sessions_save_and_restore_urls(place, impl):
    folder, options = place
    url = f"{folder}/work.torpor"
    s = torpor.Session("app")
    s.notes = Notes("hello", np.arange(12.0).reshape(3, 4))
    s.save(url, storage_options=options)
    t = torpor.Session("app")
    t.notes = Notes()
    t.restore(url, storage_options=options)
    assert t.notes.text == "hello" and t.notes.grid.dtype == np.float64
    assert np.array_equal(t.notes.grid, s.notes.grid) and t.notes is not s.notes
    meta = t.restore(url, metadata_only=True, storage_options=options)
    assert meta == t.metadata and meta["generator"].startswith("app")
    assert torpor.info(url, storage_options=options)["metadata"]["managers"] == ["notes"]


@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_module_dumps_to_urls(place, impl):
    folder, options = place
    url = f"{folder}/mod.torpor"
    src = types.ModuleType("url_scratch")
    exec(textwrap.dedent("""
        import numpy as np
        data = np.arange(50_000, dtype=np.int32)
        alias = data
        def twice(x):
            return 2 * x
    """), vars(src))
    assert torpor.dump_module(url, module=src, storage_options=options) == {}
    dest = types.ModuleType("url_scratch")
    torpor.load_module(url, module=dest, trusted=True, storage_options=options)
    assert dest.data.dtype == np.int32 and np.array_equal(dest.data, src.data)
    assert dest.alias is dest.data and dest.twice(dest.data)[-1] == 99_998
    assert {"alias", "data", "twice"} <= set(torpor.load_module_asdict(url, storage_options=options))
    assert torpor.info(url, storage_options=options)["module_dump"] == "url_scratch"


# --- fsspec is optional ------------------------------------------------------------

def _python(code, tmp_path):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def test_import_torpor_does_not_import_fsspec(tmp_path):
    p = _python("""
        import pathlib, sys, torpor
        torpor.dump([1], "x.torpor"); torpor.load("x.torpor"); torpor.info("x.torpor")
        torpor.dump([2], pathlib.Path("y.torpor").absolute().as_uri())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("fsspec", "s3fs")))
    """, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_a_url_without_fsspec_says_what_to_install(tmp_path):
    p = _python("""
        import sys
        sys.modules["fsspec"] = None            # as if it were not installed
        import torpor
        torpor.dump([1], "local.torpor")         # local files need nothing more
        assert torpor.load("local.torpor") == [1]
        try:
            torpor.dump([1], "s3://bucket/x.torpor")
        except ImportError as e:
            print(e)
    """, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "s3://bucket/x.torpor needs fsspec" in p.stdout
    assert "pip install 'torpor[s3]'" in p.stdout


def test_remote_file_objects_are_reused(s3_server):
    url = f"s3://{s3_server['bucket']}/reuse-{uuid.uuid4().hex}/x.torpor"
    remote = locate(url, s3_server["storage_options"])
    assert isinstance(remote, RemoteFile) and remote.name == url and remote.key == "x.torpor"
    torpor.dump({"v": 1}, remote)
    assert torpor.load(remote) == {"v": 1} and locate(remote) is remote


def test_a_partial_load_fetches_only_the_ranges_it_needs(big_s3_file, s3_server, wire, impl):
    url, size, arrays = big_s3_file
    options = s3_server["storage_options"]
    wire.reset()
    got = torpor.load(url, select="['arrays'][3]", storage_options=options)
    np.testing.assert_array_equal(got, arrays[3])
    # the 8 MiB array, the header, the TOC and the stream: nothing of the other arrays
    assert arrays[3].nbytes <= wire.received <= arrays[3].nbytes + (512 << 10), wire.received
    assert all(r and r.startswith(b"bytes=") for r in wire.ranges), wire.ranges
    wire.reset()
    with torpor.open(url, storage_options=options) as view:
        assert len(view["arrays"]) == 5 and view["names"][1999] == "n1999"
        assert wire.received <= 512 << 10, wire.received
        np.testing.assert_array_equal(view["arrays"][0], arrays[0])
    assert wire.received <= arrays[0].nbytes + (1 << 20), wire.received


def _torpor(*args):
    """``python -m torpor ARGS`` in a subprocess (its own s3fs client)."""
    return subprocess.run([sys.executable, "-m", "torpor", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_the_command_line_takes_storage_options(s3_server, tmp_path):
    """``--storage-option KEY=TEXT`` and ``KEY:=JSON`` reach fsspec from every command
    that takes a file: info, verify, ls, dump, and convert's output."""
    folder = f"s3://{s3_server['bucket']}/cli-{uuid.uuid4().hex}"
    options = s3_server["storage_options"]
    flags = [x for k, v in options.items() for x in (
        "--storage-option", f"{k}={v}" if type(v) is str else f"{k}:={json.dumps(v)}")]
    assert any(":=" in f for f in flags) and any(":=" not in f and "=" in f for f in flags)
    url = f"{folder}/g.torpor"
    torpor.dump({"points": np.arange(4000.0).reshape(1000, 4), "name": "g"}, url,
                storage_options=options)
    r = _torpor("info", url, *flags)
    assert r.returncode == 0 and "torpor format" in r.stdout and "(1000, 4)" in r.stdout, r.stderr
    r = _torpor("verify", url, *flags)
    assert r.returncode == 0 and "every checksum matches" in r.stdout, r.stderr
    r = _torpor("ls", url, *flags)
    assert r.returncode == 0 and "['points']" in r.stdout and "float64" in r.stdout, r.stderr
    s = torpor.Session("app")
    s.notes = Notes("hello")
    s.save(f"{folder}/s.torpor", storage_options=options)
    r = _torpor("dump", f"{folder}/s.torpor", *flags)
    assert r.returncode == 0 and "notes" in r.stdout and "hello" in r.stdout, r.stderr
    mod = types.ModuleType("cli_url_module")
    mod.x = 41
    torpor.dump_module(f"{folder}/m.torpor", module=mod, storage_options=options)
    r = _torpor("dump", f"{folder}/m.torpor", *flags)
    assert r.returncode == 0 and "x = 41" in r.stdout, r.stderr
    # the hints name the file as the user did, with its options
    assert f"torpor.load_module('{folder}/m.torpor', storage_options=" in r.stdout, r.stdout
    assert "RemoteFile" not in r.stdout
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(10, dtype=np.int16))
    r = _torpor("convert", npy, f"{folder}/c.torpor", *flags)
    assert r.returncode == 0, r.stderr
    got = torpor.load(f"{folder}/c.torpor", storage_options=options)
    assert got.dtype == np.int16 and np.array_equal(got, np.arange(10))
    # without the options, s3fs finds no credentials and no endpoint: an error, one line
    r = _torpor("info", url)
    assert r.returncode == 3 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "--storage-option" in r.stderr, r.stderr


def test_storage_options_on_the_command_line_are_checked(tmp_path):
    path = tmp_path / "x.torpor"
    torpor.dump([1], path)
    r = _torpor("info", path, "--storage-option", "anon=true")
    assert r.returncode == 2 and "storage_options= is for URLs" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = _torpor("info", path, "--storage-option", "anon")
    assert r.returncode == 2 and "expected KEY=TEXT or KEY:=JSON, not 'anon'" in r.stderr
    r = _torpor("info", path, "--storage-option", "anon:=yes")
    assert r.returncode == 2 and "not JSON" in r.stderr, r.stderr
    # convert says so before it reads its input (a pickle it would refuse anyway)
    src = tmp_path / "in.pkl"
    src.write_bytes(b"not read")
    r = _torpor("convert", "--trusted", src, tmp_path / "out.torpor", "--storage-option", "a=b")
    assert r.returncode == 2 and "storage_options= is for URLs" in r.stderr, r.stderr


def test_storage_option_values_are_text_unless_given_as_json():
    from torpor.cli import _storage_option
    assert _storage_option("password=123456") == ("password", "123456")
    assert _storage_option("token=") == ("token", "")
    assert _storage_option("anon:=true") == ("anon", True)
    assert _storage_option("block:=5242880") == ("block", 5242880)
    assert _storage_option('client_kwargs:={"endpoint_url": "http://h:1"}') == (
        "client_kwargs", {"endpoint_url": "http://h:1"})
    assert _storage_option("url=http://h:1/?a=b") == ("url", "http://h:1/?a=b")
