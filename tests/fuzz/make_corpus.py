"""Writes the seed corpus of the fuzz targets (tests/fuzz/targets.py) into a
folder: torpor files of many shapes, with and without compression, the golden
files, and bare object streams for the decoder target.

    python tests/fuzz/make_corpus.py OUT_DIR
"""

import collections
import datetime
import decimal
import fractions
import pathlib
import shutil
import sys
import uuid

HERE = pathlib.Path(__file__).resolve().parent


def objects():
    import numpy as np
    shared = [1, "two"]
    cyc = {"k": 1}
    cyc["self"] = cyc
    od = collections.OrderedDict(a=1)
    od["me"] = od
    rec = np.zeros(4, [("x", "<f4"), ("y", "u1")])
    yield "scalars", [None, True, -1, 2**70, 1.5, 1j, "s", b"b", bytearray(b"ba")]
    yield "containers", ((1, 2), {3, 4}, frozenset({"a"}), [shared, shared], cyc)
    yield "stdlib", [datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
                     datetime.timedelta(3), decimal.Decimal("1.1"), fractions.Fraction(1, 3),
                     uuid.UUID(int=5), pathlib.PurePosixPath("/a"), collections.deque([1], 3),
                     collections.Counter("aab"), od]
    yield "arrays", {"f": np.arange(50, dtype="<f8"), "big": np.arange(5000, dtype=">i4"),
                     "F": np.asfortranarray(np.ones((20, 30))), "rec": rec, "void": rec[1],
                     "obj": np.array([1, "x", None], dtype=object), "dt": np.dtype("<M8[s]"),
                     "titled": np.zeros(3, [(("T", "t"), "<f4")]),
                     "meta": np.dtype("<f8", metadata={"u": 1}), "sc": np.float16(2)}
    yield "bytes", {"big": bytes(300_000), "ba": bytearray(300_000)}


def main(out):
    import torpor
    out = pathlib.Path(out)
    (out / "files").mkdir(parents=True, exist_ok=True)
    (out / "streams").mkdir(parents=True, exist_ok=True)
    from torpor.format.container import open_source, read_header, read_toc
    from torpor.format.reader import ContainerReader
    import io
    n = 0
    for name, obj in objects():
        for compress in (None, "lz4", "gzip"):
            data = torpor.dumps(obj, compress=compress)
            (out / "files" / f"{name}-{compress}.torpor").write_bytes(data)
            src = open_source(io.BytesIO(data), name)
            read_header(src)
            stream = ContainerReader(src, threads=1).read_all(read_toc(src)).stream
            (out / "streams" / f"{name}-{compress}.bin").write_bytes(stream)
            n += 1
    for g in (HERE.parent / "golden").glob("v*.torpor"):
        if g.stat().st_size < 1 << 20:
            shutil.copy(g, out / "files" / g.name)
    print(f"wrote {n} files and streams to {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main(sys.argv[1])
