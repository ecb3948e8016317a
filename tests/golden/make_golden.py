"""Writes the golden files of the current format version (tests/golden/v{N}_*.torpor).

Run it when a format version is released or a writer starts producing something
new inside a version: ``python tests/golden/make_golden.py``. It never overwrites a
file that exists; tests/test_golden.py reads every file here back, so files
written by any earlier torpor keep loading forever.

The files of v1:
- ``v1_lz4``, ``v1_gzip``, ``v1_raw``: the first writer (lz4 frames written by
  python-lz4 with a content size; byte shuffle only).
- ``v1_lz4_filters``: frames written by torpor's own lz4 framing (no content size),
  chunks of 2 MiB, and the per-chunk filter choice, delta filter (mode 3) included.
- ``v1_lz4_planes``: the frame of a filtered chunk (modes 2 and 3) holds one lz4
  block per byte plane.
- ``v1_lz4_dtypes``: also ``golden_dtypes()``: dtypes with field titles and
  metadata (the descriptions' titles element and ``"meta"`` form, torpor 0.2.0),
  and structured and subarray numpy scalars (their data after the description).
- ``v1_lz4_records``: also ``golden_records()``: record arrays, a record scalar
  and a record dtype with metadata (the ``"record"`` form, torpor 0.3.0), and a
  read-only array and a read-only view (``torpor.arrays.readonly``).
- ``v1_0.1.0_scalars``: written by torpor 0.1.0 (commit 81a6233, not by this
  script): ``golden_object()`` plus ``legacy_scalars``, structured numpy scalars
  as 0.1.0 wrote them, the data inside the description's list. Kept so that
  files of that version keep loading.

The files of v2 (lz4 only; raw and gzip files are still written as v1):
- ``v2_lz4_bits``: bit-plane chunks in 256 KiB blocks (modes 4 and 5), chosen
  by a trial shared by the chunks of an array and by small arrays of one kind.
- ``v2_lz4_dtypes``, ``v2_lz4_records``: the same contents as their v1 files.

The file of v3 (lz4 only; what else a v3 writer writes is as v2's files hold it):
- ``v3_lz4_split``: chunks of modes 6 and 7, whose noise bytes are byte planes
  (an lz4 block of their own) and whose other bytes are bit planes, of 2, 4 and
  8-byte items, with tails; ``golden_split()``.

The file of v4 (lz4 only; what else a v4 writer writes is as v3's file holds it):
- ``v4_lz4_xor``: chunks of modes 8 and 9, whose bit planes above the noise are
  XORed with the plane before them, with and without byte planes, of 1, 2, 4
  and 8-byte items, with tails; ``golden_xor()``.
"""

import collections
import datetime
import decimal
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent


def golden_extras():
    """What files written since ``v1_lz4_filters`` hold besides (must stay as it is):
    data that no filter helps (stored chunks) and a smooth field (the delta filter)."""
    rng = np.random.default_rng(54321)
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    return {"noise": rng.integers(0, 2**63, 40_000, dtype=np.int64),
            "field": np.exp(-(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) * 3)}


def golden_dtypes():
    """What ``v1_lz4_dtypes`` holds besides the extras (must stay as it is)."""
    titled = np.dtype([(("X axis", "x"), "<f4"), ("y", "u2")])
    meta = np.dtype("<f8", metadata={"unit": "nm"})
    rec = np.zeros(3, [("x", "<f4"), ("y", "u1")])
    rec[1] = (1.5, 7)
    return {"titled": titled, "meta": meta,
            "titled_array": np.arange(40_000, dtype="<f4").view(np.dtype([(("X", "x"), "<f4")])),
            "meta_array": np.zeros(5, meta),
            "void": rec[1], "subarray_scalar": np.ones(1, [("m", "<f8", (2, 2))])[0]}


def golden_records():
    """What ``v1_lz4_records`` holds besides the extras (must stay as it is)."""
    recs = np.rec.array([(1, 2.5, b"ab"), (3, -1.0, b"c")], names="n,x,s")
    frozen = np.arange(50_000, dtype="<i4")
    frozen.flags.writeable = False
    base = np.arange(12, dtype="<f8").reshape(3, 4)
    view = base[1:]
    view.flags.writeable = False
    return {"recarray": recs, "record": recs[1],
            "record_dtype": np.dtype((np.record, np.dtype([("t", "<f4")], metadata={"k": 1}))),
            "frozen": frozen, "frozen_view": (base, view)}


def legacy_scalars():
    """The structured scalars of ``v1_0.1.0_scalars``."""
    rec = np.zeros(3, [("x", "<f4"), ("y", "u1")])
    rec[1] = (1.5, 7)
    return [rec[1], rec[2]]


def golden_bits():
    """What ``v2_lz4_bits`` holds besides (must stay as it is): arrays whose chunks
    take bit planes, with and without delta, with a tail of items after the last
    group of 8, and of 1, 2, 4 and 8-byte items."""
    rng = np.random.default_rng(2026)
    return {
        "grid": rng.uniform(0, 500, (20_001, 3)).round(1),                     # mode 4, 8-byte
        "sorted": np.sort(rng.integers(0, 1 << 24, 150_003)),                  # mode 5, 8-byte
        "labels": (rng.integers(0, 4, 70_001) * 60).astype(np.uint8),          # mode 4, 1-byte
        "counts": rng.poisson(3, 90_005).astype(np.uint16),                    # mode 4, 2-byte
    }


def golden_split():
    """What ``v3_lz4_split`` holds besides (must stay as it is): arrays whose chunks
    keep their noise bytes as byte planes, with and without delta, with a tail
    of items after the last group of 8."""
    rng = np.random.default_rng(2027)
    # rows of their own widths: small arrays of one dtype and row shape share a
    # trial, and each of these must have its own
    return {
        "noisy": rng.standard_normal((33_335, 3)).astype(np.float32),         # mode 6, bytes 0-2
        "uniform": rng.random((10_001, 4)),                                     # mode 6, bytes 0-5
        "levels": (rng.integers(0, 256, 90_005)
                   + 256 * (np.arange(90_005) // 5000 % 3)).astype(np.uint16),  # mode 6, byte 0
        "stamps": (np.arange(60_006) * 100_000
                   + rng.integers(0, 1 << 16, 60_006)).astype(np.int64).reshape(-1, 6),  # mode 7
        "sorted": np.sort(rng.integers(0, 1 << 32, 100_001,
                                       dtype=np.uint64)).astype(np.uint32),     # mode 7, 4-byte
    }


def golden_xor():
    """What ``v4_lz4_xor`` holds besides (must stay as it is): arrays whose chunks
    take modes 8 and 9 (bit planes XORed with their neighbours), with and without
    byte planes and delta, items of 1, 2, 4 and 8 bytes, with tails."""
    rng = np.random.default_rng(2028)
    n = 100_003
    return {
        "noisy": rng.standard_normal((33_335, 3)).astype(np.float32),     # mode 8, bytes 0-2, from plane 3
        "grid": rng.uniform(0, 500, (20_001, 3)).round(1),                 # mode 8, no byte planes
        "steps": (rng.integers(0, 4, n) * 300).astype(np.uint16).reshape(-1, 1),  # mode 8, 2-byte
        "levels": (rng.integers(0, 4, n) * 60).astype(np.uint8),           # mode 8, 1-byte
        "walk": (np.cumsum(rng.standard_normal(n - 1)) * 1e3).astype(np.float32).reshape(-1, 2),  # mode 9
    }


def golden_object():
    """The object every golden file holds (must stay exactly as it is)."""
    shared = [1, "shared"]
    cyc = {"name": "cycle"}
    cyc["self"] = cyc
    rng = np.random.default_rng(12345)
    return {
        "scalars": [None, True, -7, 2**70, 1.25, complex(1, 2), "text é", b"\x00\x01"],
        "containers": ((1, 2), {3, 4}, frozenset({"a"}), bytearray(b"ba")),
        "shared": [shared, shared],
        "cycle": cyc,
        "stdlib": [datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.timezone.utc),
                   decimal.Decimal("1.10"), collections.OrderedDict(a=1),
                   collections.deque([1], maxlen=4), pathlib.PurePosixPath("/x/y")],
        "small_array": np.arange(12, dtype=">i4").reshape(3, 4),
        "big_array": np.cumsum(rng.standard_normal(300_000)).astype(np.float32),
        "fortran": np.asfortranarray(np.arange(60_000, dtype=np.float64).reshape(200, 300)),
        "structured": np.zeros(3000, dtype=[("a", "<f8"), ("b", "S4")]),
        "scalar": np.float16(1.5),
        "objects": np.array([1, "x", None], dtype=object),
        "big_bytes": bytes(range(256)) * 1200,
    }


def main():
    sys.path.insert(0, str(HERE.parent.parent / "src"))
    import torpor
    version = torpor.FORMAT_VERSION
    obj = golden_object()
    files = {"lz4": "lz4", "gzip": "gzip", "raw": None, "lz4_filters": "lz4", "lz4_planes": "lz4",
             "lz4_dtypes": "lz4", "lz4_records": "lz4"}
    if version == 2:
        # raw and gzip files are still written as version 1; lz4 files of
        # version 2 add the bit-plane chunks (modes 4 and 5)
        files = {"lz4_bits": "lz4", "lz4_dtypes": "lz4", "lz4_records": "lz4"}
    elif version == 3:
        # version 3 adds modes 6 and 7 (byte planes and bit planes)
        files = {"lz4_split": "lz4"}
    elif version >= 4:
        # version 4 adds modes 8 and 9 (bit planes XORed with their neighbours)
        files = {"lz4_xor": "lz4"}
    for suffix, compress in files.items():
        name = HERE / f"v{version}_{suffix}.torpor"
        if name.exists():
            print("kept", name)
            continue
        extras = suffix in ("lz4_filters", "lz4_planes", "lz4_dtypes", "lz4_records", "lz4_bits",
                            "lz4_split", "lz4_xor")
        dtypes = suffix == "lz4_dtypes"
        content = dict(obj, extras=golden_extras()) if extras else obj
        metadata = {"golden": True, "version": version, "extras": extras}
        if dtypes:
            content = dict(content, dtypes=golden_dtypes())
            metadata["dtypes"] = True
        if suffix == "lz4_bits":
            content = dict(content, bits=golden_bits())
            metadata["bits"] = True
        if suffix == "lz4_split":
            content = dict(content, split=golden_split())
            metadata["split"] = True
        if suffix == "lz4_xor":
            content = dict(content, xor=golden_xor())
            metadata["xor"] = True
        if suffix == "lz4_records":
            content = dict(content, records=golden_records())
            metadata["records"] = True
        torpor.dump(content, name, compress=compress, metadata=metadata)
        print("wrote", name)


if __name__ == "__main__":
    main()
