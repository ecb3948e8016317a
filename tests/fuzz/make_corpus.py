"""Writes the seed corpus of the fuzz targets (tests/fuzz/targets.py) into a
folder: torpor files of many shapes, with and without compression, hand-built
files of shared references, doubling chains, deep nesting and reused payloads
(``crafted``), the golden files, and bare object streams for the decoder target.

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


def crafted():
    """Hand-built object streams torpor never writes (tests/crafted.py): shared
    references, doubling chains, deep nesting and reused payloads or arguments,
    each as a file (``sections``: its bytes sections) and, without sections, as a
    stream. Names starting with "hostile-" are refused by a safe load; the
    others load (and are mutated into what is refused)."""
    from crafted import D, G, M, R, Ref, S, T, nested
    from torpor.format.constants import EXT_BYTEARRAY_OOB, EXT_BYTES_OOB, EXT_OBJARRAY

    def tuples(n):       # t(i + 1) = (t(i), t(i)); t(i) has memo index i + 1
        return [T(1)] + [T(Ref(i + 1), Ref(i + 1)) for i in range(n)]

    def lists(n):
        return [[1]] + [[Ref(i + 1), Ref(i + 1)] for i in range(n)]

    def objarray(x):
        return M(EXT_OBJARRAY, "|O", [1], False, x)

    x = b"x" * 60_000
    yield "shared-refs", [[1, 2], T("a", 3), Ref(1), Ref(2), S([Ref(2)]), D([(Ref(2), Ref(1))])], ()
    yield "doubling-8", tuples(8) + [S([Ref(9)]), D([(Ref(9), 0)])], ()
    yield "hostile-doubling-tuples-set", tuples(60) + [S([Ref(61)])], ()
    yield "hostile-doubling-tuples-key", tuples(60) + [D([(Ref(61), 0)])], ()
    yield "hostile-doubling-lists-str", lists(60) + [R(G("builtins", "str"), Ref(61))], ()
    yield "nested-tuples-3000", S([nested(lambda v: T(v), 0, 3000)]), ()
    yield "hostile-nested-tuples", S([nested(lambda v: T(v), 0, 6000)]), ()
    yield "nested-objarrays-100", nested(objarray, 0, 100), ()
    yield "hostile-nested-objarrays", nested(objarray, 0, 200), ()
    yield "nested-deques-900", nested(lambda v: R(G("collections", "deque"), [v]), 0, 900), ()
    yield "hostile-nested-deques", nested(lambda v: R(G("collections", "deque"), [v]), 0, 1500), ()
    yield "oob-once", [M(EXT_BYTES_OOB, 0), M(EXT_BYTEARRAY_OOB, 1)], (x, x)
    yield "hostile-oob-twice", [M(EXT_BYTES_OOB, 0), M(EXT_BYTEARRAY_OOB, 0)], (x,)
    # the list at 1, the first call at 2, its global at 3, its argument tuple at 4
    yield "calls-10", [list(range(100)), R(G("builtins", "list"), Ref(1))] \
        + [R(Ref(3), args_at=4)] * 9, ()
    yield "hostile-list-calls", [list(range(100)) * 200, R(G("builtins", "list"), Ref(1))] \
        + [R(Ref(3), args_at=4)] * 500, ()
    yield "hostile-bytearray-calls", [M(EXT_BYTES_OOB, 0), R(G("builtins", "bytearray"), Ref(1))] \
        + [R(Ref(3), args_at=4)] * 3000, (x,)


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
    from crafted import file_of, stream
    for name, obj, sections in crafted():
        (out / "files" / f"{name}.torpor").write_bytes(file_of(obj, sections=sections))
        if not sections:
            (out / "streams" / f"{name}.bin").write_bytes(stream(obj))
        n += 1
    for g in (HERE.parent / "golden").glob("v*.torpor"):
        if g.stat().st_size < 1 << 20:
            shutil.copy(g, out / "files" / g.name)
    print(f"wrote {n} files and streams to {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main(sys.argv[1])
