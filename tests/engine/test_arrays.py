import time
import tracemalloc

import numpy as np
import pytest

import torpor
from helpers import assert_same_array

rng = np.random.default_rng(7)

DTYPES = ["?", "i1", "u1", "<i2", ">i2", "<u4", ">i8", "<f2", "<f4", ">f4", "<f8", ">f8",
          "<c8", ">c16", "<M8[ns]", ">m8[s]", "S7", "<U3", ">U2", "V5",
          [("x", "<f4"), ("y", ">i2"), ("s", "S3")],
          [("pos", "<f8", (3,)), ("inner", [("a", "u1"), ("b", ">f4")])],
          np.dtype({"names": ["a", "b"], "formats": ["u1", "<f8"], "offsets": [0, 8], "itemsize": 24}),
          np.dtype([("a", "u1"), ("b", "<i4")], align=True)]


def make(dtype, shape):
    dt = np.dtype(dtype)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    return np.frombuffer(raw.tobytes(), dtype=dt).reshape(shape).copy()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (40, 50, 30)], ids=str)
def test_dtypes_and_shapes(roundtrip, dtype, shape):
    a = make(dtype, shape)
    assert_same_array(a, roundtrip(a))


@pytest.mark.parametrize("compress", ["lz4", "gzip", None])
@pytest.mark.parametrize("order", ["C", "F"])
def test_large_orders_and_codecs(roundtrip, compress, order):
    smooth = np.cumsum(rng.standard_normal((300, 400)), axis=0).astype(np.float32)
    a = np.asarray(smooth, order=order)
    ints = np.asarray(rng.integers(0, 9, (500, 600), dtype=np.int64), order=order)
    out = roundtrip([a, ints], compress=compress)
    assert_same_array(a, out[0])
    assert_same_array(ints, out[1])


@pytest.mark.parametrize("shuffle", [True, False])
def test_shuffle_setting(roundtrip, shuffle):
    a = np.linspace(0, 1, 3_000_000).astype(np.float64).reshape(1000, 3000)
    assert_same_array(a, roundtrip(a, shuffle=shuffle))


def test_shuffle_makes_smooth_floats_smaller():
    a = np.cumsum(rng.standard_normal(2_000_000)).astype(np.float32)
    assert len(torpor.dumps(a, shuffle=True)) < 0.8 * len(torpor.dumps(a, shuffle=False))


def test_non_contiguous_views(roundtrip):
    base = rng.standard_normal((400, 300, 20))
    views = [base[::2], base[:, ::3], base[..., 1], base.transpose(1, 0, 2), base[::-1, :, ::5],
             base[5, ::7]]
    out = roundtrip(views)
    for v, o in zip(views, out):
        assert_same_array(v, o)


def test_shared_array_identity_and_views(roundtrip):
    a = rng.standard_normal(100_000)
    out = roundtrip({"a": a, "b": a, "c": [a]})
    assert out["a"] is out["b"] is out["c"][0]


def test_incompressible_chunks_are_stored(tmp_path):
    a = rng.standard_normal(3_000_000)       # random float64: lz4 cannot shrink it
    p = tmp_path / "r.torpor"
    torpor.dump(a, p)
    assert p.stat().st_size < a.nbytes * 1.01
    assert_same_array(a, torpor.load(p))


def test_chunks_cover_many_threads(roundtrip):
    a = np.arange(20_000_000, dtype=np.int32)     # 80 MB: ~20 chunks
    for threads in (1, 2, 4):
        assert_same_array(a, roundtrip(a, threads=threads))


def test_save_does_not_copy_the_array():
    a = np.cumsum(rng.standard_normal(25_000_000)).astype(np.float64)   # 200 MB
    import io

    class Null(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            return len(memoryview(b))

    tracemalloc.start()
    torpor.dump(a, Null())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 << 20, f"save allocated {peak >> 20} MiB for a 200 MiB array"


def test_load_allocates_array_once(tmp_path):
    a = np.cumsum(rng.standard_normal(25_000_000)).astype(np.float64)   # 200 MB
    p = tmp_path / "a.torpor"
    torpor.dump(a, p)
    tracemalloc.start()
    out = torpor.load(p)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert_same_array(a, out)
    assert peak < a.nbytes + (64 << 20), f"load peaked at {peak >> 20} MiB for a 200 MiB array"


def test_mmap_load(tmp_path, impl):
    a = rng.standard_normal((2000, 1000))
    f = np.asfortranarray(rng.standard_normal((300, 200)))
    p = tmp_path / "m.torpor"
    torpor.dump({"a": a, "f": f, "small": np.arange(3)}, p, compress=None)
    out = torpor.load(p, mmap=True)
    assert_same_array(a, out["a"])
    assert_same_array(f, out["f"])
    assert out["a"].base is not None           # backed by the mapping, not a copy
    out["a"][0, 0] = 123.0                      # copy-on-write: the file is unchanged
    again = torpor.load(p)
    assert again["a"][0, 0] == a[0, 0]
    assert (np.asarray(out["a"].ctypes.data) % 64) == 0


@pytest.mark.slow
def test_mmap_time_does_not_grow_with_size(tmp_path):
    small = tmp_path / "s.torpor"
    big = tmp_path / "b.torpor"
    torpor.dump(np.ones(1_000_000), small, compress=None)
    torpor.dump(np.ones(100_000_000), big, compress=None)   # 800 MB
    torpor.load(small, mmap=True)

    def best(p):
        t = []
        for _ in range(3):
            s = time.perf_counter()
            torpor.load(p, mmap=True)
            t.append(time.perf_counter() - s)
        return min(t)
    # 100x the data must not take anywhere near 100x the time (reading it would)
    assert best(big) < 10 * best(small) + 0.05


def test_mmap_needs_a_file():
    with pytest.raises(ValueError):
        torpor.loads(torpor.dumps(np.ones(3)), mmap=True)


@pytest.mark.bigmem
@pytest.mark.slow
def test_array_over_4gib(tmp_path):
    a = np.zeros((1 << 32) + 4096, dtype=np.uint8)
    a[-1] = 7
    a[1 << 31] = 3
    p = tmp_path / "huge.torpor"
    torpor.dump(a, p)
    assert p.stat().st_size < 64 << 20
    out = torpor.load(p)
    assert out.shape == a.shape and out[-1] == 7 and out[1 << 31] == 3 and out[:1000].sum() == 0
    del out
    info = torpor.info(p)
    assert info["sections"][0]["raw_length"] == a.nbytes


def _rewrite_toc(path, edit):
    """Rewrite a file's table of contents with ``edit(toc)`` applied and a valid
    checksum: what a crafted file can do past the checksums."""
    import struct

    import msgpack
    from torpor.format import codec as _codec
    data = bytearray(path.read_bytes())
    offset, tlen, end = struct.unpack("<QQ8s", data[-24:])
    toc = msgpack.unpackb(bytes(data[offset + 16:offset + 16 + tlen]), strict_map_key=False)
    edit(toc)
    body = msgpack.packb(toc)
    new = (data[:offset] + struct.pack("<4sIQ", b"TTOC", 0, len(body)) + body
           + struct.pack("<Q", _codec.checksum(body)) + struct.pack("<QQ8s", offset, len(body), end))
    path.write_bytes(bytes(new))


@pytest.mark.parametrize("field, value", [(2, 1 << 40), (2, 64), (3, 5), (1, 0)])
def test_mmap_checks_the_table_of_contents(tmp_path, field, value):
    """mmap=True maps raw arrays straight from their table-of-contents entries:
    an entry pointing anywhere else is refused, never mapped."""
    p = tmp_path / "t.torpor"
    torpor.dump({"a": np.arange(100_000.0), "b": np.ones(50_000)}, p, compress=None)
    assert_same_array(torpor.load(p, mmap=True)["a"], np.arange(100_000.0))

    def edit(toc):
        toc["sections"][1][field] = value           # the second array
    _rewrite_toc(p, edit)
    with pytest.raises(torpor.CorruptFileError):
        torpor.load(p, mmap=True)


@pytest.mark.parametrize("compress", ["lz4", "gzip"])
def test_mmap_loads_compressed_files(tmp_path, impl, compress):
    """mmap=True works on any file on disk: compressed array sections are
    decoded into memory as usual (they once failed with a TypeError)."""
    a = np.arange(100_000, dtype=np.float64)
    f = np.asfortranarray(rng.standard_normal((300, 200)))
    p = tmp_path / "c.torpor"
    torpor.dump({"a": a, "f": f, "small": np.arange(3), "b": bytes(range(256)) * 1000}, p,
                compress=compress)
    out = torpor.load(p, mmap=True)
    assert_same_array(a, out["a"])
    assert_same_array(f, out["f"])
    assert out["b"] == bytes(range(256)) * 1000 and out["small"].tolist() == [0, 1, 2]
    info = torpor.info(p)
    assert [s["mappable"] for s in info["sections"] if s["kind"] == "array"] == [False, False]
    assert info["mmap"] == {"arrays": 2, "mappable": 0, "mappable_bytes": 0}


def test_info_says_which_arrays_are_mappable(tmp_path, capsys):
    import mmap

    from torpor import cli
    a, b = np.arange(100_000.0), np.ones((300, 400), np.float32)
    p = tmp_path / "r.torpor"
    torpor.dump({"a": a, "b": b}, p, compress=None)
    info = torpor.info(p)
    arrays = [s for s in info["sections"] if s["kind"] == "array"]
    assert [s["mappable"] for s in arrays] == [True, True]
    assert info["mmap"] == {"arrays": 2, "mappable": 2, "mappable_bytes": a.nbytes + b.nbytes}
    assert all("mappable" not in s for s in info["sections"] if s["kind"] != "array")
    out = torpor.load(p, mmap=True)
    assert isinstance(out["a"].base, mmap.mmap) and isinstance(out["b"].base, mmap.mmap)
    assert cli.main(["info", str(p)]) == 0
    text = capsys.readouterr().out
    assert "maps 2 of 2 array sections" in text and text.count(", mappable") == 2
