"""Writes the golden files of the current format version (tests/golden/v{N}_*.torpor).

Run it once when a format version is released: ``python tests/golden/make_golden.py``.
Never regenerate the files of an older version; tests/test_golden.py reads every
file here back, so files written by any released version keep loading forever."""

import collections
import datetime
import decimal
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent


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
    for compress in ("lz4", "gzip", None):
        name = HERE / f"v{version}_{compress or 'raw'}.torpor"
        torpor.dump(obj, name, compress=compress, metadata={"golden": True, "version": version})
        print("wrote", name)


if __name__ == "__main__":
    main()
