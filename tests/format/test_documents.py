"""Files whose checksums are valid but whose documents (header, section meta,
table of contents, chunk lists) are malformed: every reading path (a seekable
file, a pipe, info, verify) reports a CorruptFileError naming what is wrong, and
never lets a TypeError, ValueError, IndexError, OverflowError or MemoryError out."""

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import torpor
from fuzz.documents import build, parse
from helpers import Pipe


def base(compress="lz4"):
    return torpor.dumps({"a": np.arange(20_000, dtype=np.float64),
                         "s": np.zeros(3, [("x", "<f4"), ("y", "u1")]),
                         "b": bytes(300_000)}, compress=compress)


def _array_section(parts):
    return next(s for s in parts.sections if s.kind == 2)


def _bytes_section(parts):
    return next(s for s in parts.sections if s.kind == 3)


def _set_meta(key, value, which=_array_section, toc_too=True):
    def edit(parts):
        s = which(parts)
        s.meta = dict(s.meta, **{key: value})
        if toc_too:
            i = parts.sections.index(s)
            parts.toc["sections"][i][7] = dict(parts.toc["sections"][i][7], **{key: value})
    return edit


def _toc(key, value):
    def edit(parts):
        parts.toc[key] = value
    return edit


def _entry(value):
    def edit(parts):
        parts.toc["sections"][0] = value
    return edit


EDITS = {
    "shape 2**62 x 2**62 x 0": _set_meta("shape", [2**62, 2**62, 0]),
    "shape -1": _set_meta("shape", [-1]),
    "shape not a list": _set_meta("shape", "big"),
    "dtype offsets 2**63": _set_meta("dtype", ["struct", ["x"], ["<f8"], [2**63 - 1], 8, False]),
    "dtype itemsize 2**62": _set_meta("dtype", ["struct", ["x"], ["<f8"], [0], 2**62, False]),
    "dtype nonsense": _set_meta("dtype", ["struct", 1, 2, 3, 4, 5]),
    "dtype meta not a map": _set_meta("dtype", ["meta", "<f8", [1]]),
    "dtype object": _set_meta("dtype", "|O"),
    "dtype not a typestr": _set_meta("dtype", "f8,i4"),
    "toc meta replaces fixed fields": lambda p: p.toc["sections"][0].__setitem__(7, {"raw_length": "x", "length": []}),
    "order X": _set_meta("order", "X"),
    "meta not a map": lambda p: setattr(_array_section(p), "meta", [1, 2]),
    "toc sections not a list": _toc("sections", {"a": 1}),
    "toc entry a string": _entry("x"),
    "toc entry short": _entry([2, 0, 0]),
    "toc entry fields not ints": _entry(["a", "b", "c", "d", "e", "f", "g", {}]),
    "toc entry meta not a map": lambda p: p.toc["sections"][0].__setitem__(7, 5),
    "toc globals not a list": _toc("globals", 7),
    "toc globals ints": _toc("globals", [1, 2]),
    "toc not a map": lambda p: setattr(p, "toc", [1, 2, 3]),
    "header not a map": lambda p: setattr(p, "header", [1]),
    "header metadata not a map": lambda p: setattr(p, "header", dict(p.header, metadata=[1])),
    "section kind 9": lambda p: setattr(_array_section(p), "kind", 9),
    "section codec 7": lambda p: setattr(_array_section(p), "codec", 7),
    "reserved byte set": lambda p: setattr(_array_section(p), "reserved", (1, 0, 0)),
}

RAW_EDITS = {
    "chunk list a string": _set_meta("chunks", "x", toc_too=False),
    "chunk list entries short": _set_meta("chunks", [[1]], toc_too=False),
    "chunk list entries strings": _set_meta("chunks", [["a", "b"]], toc_too=False),
    "chunk list negative": _set_meta("chunks", [[-5, 0], [160_005, 0]], toc_too=False),
    "chunk list too long": _set_meta("chunks", [[10**12, 0]], toc_too=False),
}


def _paths(data):
    """Every way of reading a file, each a thunk."""
    return {
        "load": lambda: torpor.loads(data),
        "load pipe": lambda: torpor.load(Pipe(data, piece=4096)),
        "info": lambda: torpor.info(io.BytesIO(data)),
        "info pipe": lambda: torpor.info(Pipe(data, piece=4096)),
        "verify": lambda: torpor.verify(io.BytesIO(data)),
        "verify pipe": lambda: torpor.verify(Pipe(data, piece=4096)),
    }


def _check(data):
    for name, call in _paths(data).items():
        try:
            call()
        except torpor.TorporError:
            pass                                  # refused, as it should be
        except Exception as e:                    # noqa: BLE001 - the point of the test
            pytest.fail(f"{name}: {type(e).__name__}: {e}")


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_malformed_documents_are_torpor_errors(impl, edit):
    parts = parse(base())
    EDITS[edit](parts)
    _check(build(parts, fix_toc=edit not in ("toc entry a string", "toc entry short",
                                             "toc entry fields not ints",
                                             "toc entry meta not a map")))


@pytest.mark.parametrize("edit", list(RAW_EDITS), ids=list(RAW_EDITS))
def test_malformed_chunk_lists_are_torpor_errors(impl, edit):
    parts = parse(base(compress=None))
    RAW_EDITS[edit](parts)
    data = build(parts)
    _check(data)
    with pytest.raises(torpor.CorruptFileError):
        torpor.loads(data)


def test_a_stored_gzip_chunk_is_corrupt(impl):
    """Mode 0 exists for lz4 only: a gzip chunk marked stored is damage."""
    import struct
    from fuzz.documents import checksum
    parts = parse(base("gzip"))
    s = _bytes_section(parts)
    raw = bytes(s.raw)                           # the section holds zeros
    s.payload = struct.pack("<IIIIBBHQ", 0x184D2A5B, 20, len(raw), len(raw), 0, 0, 0,
                            checksum(raw)) + raw      # one "stored" gzip chunk, checksum right
    data = build(parts)
    _check(data)
    with pytest.raises(torpor.CorruptFileError):
        torpor.loads(data)


def test_the_document_editor_rebuilds_files_exactly():
    """Parsing and rebuilding a file without edits gives the same bytes (so the
    tests above change only what they mean to)."""
    for c in ("lz4", "gzip", None):
        data = base(c)
        assert build(parse(data)) == data


@pytest.mark.parametrize("claim", [3 << 30, 1 << 40])
@pytest.mark.parametrize("which", ["array", "bytes"])
@pytest.mark.parametrize("compress", ["lz4", None])
def test_false_size_claims_cost_no_memory(which, compress, claim):
    """A section claiming 3 GiB over a few hundred bytes, read from a pipe: the
    load fails fast and its memory grows by far less than the claim."""
    code = textwrap.dedent(f"""
        import resource, sys, time
        sys.path[:0] = {sys.path!r}
        import numpy as np, torpor
        from fuzz.documents import build, parse
        from helpers import Pipe
        data = torpor.dumps({{"a": np.arange(3000.0), "b": bytes(300_000)}}, compress={compress!r})
        parts = parse(data)
        kind = 2 if {which!r} == "array" else 3
        s = next(x for x in parts.sections if x.kind == kind)
        claim = {claim}
        s.raw = claim
        if kind == 2:
            s.meta = dict(s.meta, shape=[claim // 8])
        data = build(parts)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            torpor.load(Pipe(data, piece=4096))
        except torpor.CorruptFileError:
            pass
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grew // 1024, time.perf_counter() - t)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert r.returncode == 0, r.stderr
    grew_mb, took = r.stdout.split()
    assert int(grew_mb) < 64 and float(took) < 1.0, r.stdout
