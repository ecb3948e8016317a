"""Property test: on generated object graphs, files written by either walker load
in the other (and in itself) with equal values and the same sharing."""

import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torpor
from torpor.engine import fallback, safety as _safety, select as _impl
from torpor.format import container
from torpor.format.reader import ContainerReader
from torpor.format.writer import ContainerWriter

_walker = pytest.importorskip("torpor.engine._walker")

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=20), st.complex_numbers(allow_nan=False),
    st.builds(lambda n, k: np.arange(n, dtype=k), st.integers(0, 3000),
              st.sampled_from(["<f4", ">i2", "u1", "<c16"])),
)
graphs = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6), st.tuples(kids, kids),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), kids, max_size=6),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=4)), max_size=4)),
    max_leaves=40)


def shape_of(x, seen=None):
    """A comparable picture of a graph: values, types and which places are shared."""
    if seen is None:
        seen = {}
    if isinstance(x, (list, dict, tuple, np.ndarray)) and id(x) in seen:
        return ("ref", seen[id(x)])
    if isinstance(x, (list, dict, tuple, np.ndarray)):
        seen[id(x)] = len(seen)
    if isinstance(x, np.ndarray):
        return ("arr", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, list):
        return ("list", [shape_of(v, seen) for v in x])
    if isinstance(x, tuple):
        return ("tuple", [shape_of(v, seen) for v in x])
    if isinstance(x, dict):
        return ("dict", [(shape_of(k, seen), shape_of(v, seen)) for k, v in x.items()])
    if isinstance(x, float) and x == 0:
        return ("float0", math.copysign(1, x))
    return (type(x).__name__, x)


def write(mod, obj):
    buf = io.BytesIO()
    w = ContainerWriter(buf)
    w.write_header(container.make_header({}, mod.IMPLEMENTATION, 1))
    enc = mod.Encoder(w)
    enc.encode(obj)
    w.finish({"globals": list(enc.globals), "memo": enc.n_memo})
    return buf.getvalue()


def read(mod, data):
    src = container.open_source(io.BytesIO(data), "x")
    container.read_header(src)
    toc = container.read_toc(src)
    stream, payloads, _, _ = ContainerReader(src).read_all(toc)
    return mod.Decoder(_safety.Policy(), payloads).decode(stream)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs, st.data())
def test_cross_implementation(graph, data):
    # add sharing: reuse some generated sub-objects in several places
    shared = [graph, [graph], {"again": graph}]
    obj = data.draw(st.sampled_from([graph, shared, (graph, shared)]))
    want = shape_of(obj)
    for writer in (_walker, fallback):
        blob = write(writer, obj)
        for reader in (_walker, fallback):
            assert shape_of(read(reader, blob)) == want, (writer.IMPLEMENTATION, reader.IMPLEMENTATION)


@settings(max_examples=60, deadline=None)
@given(graphs)
def test_both_writers_produce_identical_streams(graph):
    """The twin is a reference: the two encoders write byte-identical files
    (apart from the header, which names the implementation and the time)."""
    a = write(_walker, graph)
    b = write(fallback, graph)
    ha = container.read_header(container.open_source(io.BytesIO(a), "a"))
    assert ha["implementation"] == "cython"
    cut_a = a.index(b"TSEC") if b"TSEC" in a else a.index(b"TTOC")
    cut_b = b.index(b"TSEC") if b"TSEC" in b else b.index(b"TTOC")
    assert a[cut_a:-24] == b[cut_b:-24]
    assert _impl.Encoder is not None
