"""The Cython walker and its pure-Python twin write byte-identical files for the
same graph, and agree on every constant the stream uses. A graph on which they
drift is a bug in one of them (fallback.py states the intent)."""

import collections
import datetime
import fractions
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torpor.engine import fallback, frames
from torpor.format import constants
from torpor.format.container import make_header
from torpor.format.writer import ContainerWriter

_walker = pytest.importorskip("torpor.engine._walker")


class Plain:
    """A plain instance: saved as its class and __dict__."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class Reduced:
    """An instance saved through __reduce__, with state."""

    def __init__(self, a):
        self.a = a

    def __reduce__(self):
        return Reduced, (self.a,), {"extra": 1}


DTYPES = [
    np.dtype("f8"), np.dtype(">i2"), np.dtype("u1"), np.dtype("c8"), np.dtype("?"),
    np.dtype("M8[ms]"), np.dtype("m8[s]"), np.dtype("S5"), np.dtype("<U3"),
    np.dtype([("x", "<f4"), ("y", ">i8")]),
    np.dtype([(("X axis", "x"), "<f4"), ("y", "u2")]),                  # a field title
    np.dtype({"names": ["a", "b"], "formats": ["u1", "<f8"], "offsets": [0, 8],
              "itemsize": 24}),                                           # padding
    np.dtype([("a", "u1"), ("b", "<i4")], align=True),
    np.dtype(("<f4", (2, 3))),                                            # subarray
    np.dtype("<f8", metadata={"unit": "nm"}),                            # metadata
    np.dtype([("p", np.dtype("<i4", metadata={"k": [1, 2]}))]),           # nested metadata
    np.dtype(object),
]

dtypes = st.sampled_from(DTYPES)


@st.composite
def arrays(draw):
    dt = draw(st.sampled_from([d for d in DTYPES if not d.hasobject]))
    n = draw(st.integers(0, 3000))
    raw = np.frombuffer(draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize)),
                        np.uint8) if n * dt.itemsize <= 4096 else \
        np.arange(n * dt.itemsize, dtype=np.uint64).astype(np.uint8)
    arr = raw.view(dt).copy() if dt.itemsize and dt.subdtype is None else np.zeros(n, dt)
    if draw(st.booleans()) and n >= 6:
        arr = arr.reshape(2, -1) if n % 2 == 0 else arr[::2]
    if draw(st.booleans()) and arr.ndim == 2:
        arr = np.asfortranarray(arr)
    return arr


def scalar_of(dt, value):
    return np.zeros((), dt)[()] if dt.names else np.array(value).astype(dt)[()]


np_scalars = st.builds(scalar_of, st.sampled_from([d for d in DTYPES if not d.names and
                                                   not d.subdtype and not d.hasobject]),
                       st.integers(0, 100))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64, max_value=2**80),
    st.floats(), st.text(max_size=20), st.binary(max_size=40), st.complex_numbers(),
    dtypes, np_scalars, arrays(),
    st.builds(fractions.Fraction, st.integers(-50, 50), st.integers(1, 9)),
    st.builds(datetime.date, st.integers(1, 9999), st.integers(1, 12), st.integers(1, 28)),
)


def with_reduce(kids):
    return st.one_of(
        st.builds(lambda xs: collections.deque(xs, maxlen=8), st.lists(kids, max_size=4)),
        st.builds(lambda d: collections.OrderedDict(d), st.dictionaries(st.text(max_size=4), kids, max_size=4)),
        st.builds(lambda x: Plain(value=x, other=[x]), kids),
        st.builds(Reduced, kids),
        st.builds(lambda xs: np.array(xs + [None], dtype=object), st.lists(kids, max_size=4)),
    )


graphs = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6), st.tuples(kids, kids),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), kids, max_size=6),
        st.sets(st.one_of(st.integers(), st.text(max_size=4)), max_size=4),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=4)), max_size=4),
        with_reduce(kids)),
    max_leaves=40)


def with_cycles(graph):
    """The graph, shared in several places and inside cycles through a list, a
    dict, an instance and a self-referencing OrderedDict."""
    loop = [graph]
    loop.append(loop)
    d = {"g": graph, "loop": loop}
    d["self"] = d
    inst = Plain(g=graph)
    inst.me = inst
    od = collections.OrderedDict(a=graph)
    od["od"] = od
    return [graph, (graph, loop), d, inst, od, graph]


HEADER = make_header({}, "twin-test", constants.CODEC_LZ4)


def stream_of(mod, obj, codec=constants.CODEC_LZ4):
    buf = io.BytesIO()
    w = ContainerWriter(buf, codec_id=codec, threads=1)
    try:
        w.write_header(HEADER)
        enc = mod.Encoder(w)
        enc.encode(obj)
        w.finish({"globals": list(enc.globals), "memo": enc.n_memo})
    finally:
        w.close()
    return buf.getvalue()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graphs, st.booleans(), st.sampled_from([constants.CODEC_LZ4, constants.CODEC_RAW]))
def test_both_walkers_write_identical_bytes(graph, cycles, codec):
    obj = with_cycles(graph) if cycles else graph
    a = stream_of(_walker, obj, codec)
    b = stream_of(fallback, obj, codec)
    assert a == b


@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_dtypes_saved_on_their_own_are_identical_and_keep_titles_and_metadata(dt):
    """Every dtype class (Float64DType, VoidDType, ...) takes the dtype fast path
    in both walkers, and its titles and metadata survive."""
    import torpor
    a = stream_of(_walker, dt)
    b = stream_of(fallback, dt)
    assert a == b
    assert b"numpy" not in a[a.index(b"TSEC"):]          # no reduce: no global named
    back = torpor.loads(torpor.dumps(dt))
    assert back == dt and back.fields == dt.fields and back.metadata == dt.metadata
    assert back.names == dt.names and back.itemsize == dt.itemsize


def test_padding_of_structured_items_is_copied_not_left_uninitialised(impl):
    """A non-contiguous structured array is copied item by item as bytes: the
    file holds its padding as it is in memory, and two saves are identical."""
    import torpor
    dt = np.dtype({"names": ["a", "b"], "formats": ["u1", "<f8"], "offsets": [0, 8],
                   "itemsize": 24})
    arr = (np.arange(3000 * 24) % 251).astype(np.uint8).view(dt)[::3]
    files = [stream_of(impl, {"x": arr}) for _ in range(3)]
    assert files[0] == files[1] == files[2]
    back = torpor.loads(torpor.dumps(arr))
    assert back.view(np.uint8).tobytes() == np.ascontiguousarray(
        arr.view(np.dtype((np.void, 24)))).tobytes()


def test_compiled_codes_agree_with_the_python_constants():
    """The Cython walker's C constants are generated from these modules; the
    compiled values must be theirs."""
    want = {k: v for k, v in vars(constants).items() if k.startswith("EXT_")}
    want.update({k: v for k, v in vars(frames).items() if k[:2] in ("F_", "D_")})
    assert _walker.CODES == want


@pytest.mark.parametrize("dt", [d for d in DTYPES if not d.hasobject], ids=str)
@pytest.mark.parametrize("n", [3, 100_000])          # inline, and in its own section
def test_arrays_keep_dtype_titles_and_metadata(impl, dt, n):
    import torpor
    arr = np.zeros(n, dt)
    back = torpor.loads(torpor.dumps({"a": arr, "same": arr}))
    assert back["a"] is back["same"]
    want = arr.dtype                  # a subarray dtype becomes extra dimensions
    assert back["a"].dtype == want and back["a"].dtype.fields == want.fields
    assert back["a"].dtype.metadata == want.metadata
    assert back["a"].tobytes() == arr.tobytes() and back["a"].shape == arr.shape
    if dt.names and any(len(f) > 2 for f in dt.fields.values()):
        assert back["a"]["X axis"].shape == (n,)         # reachable by its title
