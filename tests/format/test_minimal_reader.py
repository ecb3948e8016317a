"""A reader written from docs/FORMAT.md alone (minimal_reader.py, which imports
nothing of torpor) decodes every golden file to what torpor.load gives: values,
types, array bytes and the sharing of objects."""

import pathlib

import numpy as np
import pytest

import torpor
from minimal_reader import Array, DType, Reduced, Scalar, read
from torpor.format.dtypes import encode_dtype

GOLDEN = sorted((pathlib.Path(__file__).parent.parent / "golden").glob("v*.torpor"))


def _same(mini, real, pairs, path="root"):
    """Compare what the minimal reader built with what torpor built."""
    if id(mini) in pairs and not isinstance(mini, (int, float, str, bytes, bool, type(None))):
        assert pairs[id(mini)] is real, f"{path}: sharing differs"
        return
    pairs[id(mini)] = real
    if isinstance(mini, Array):
        assert isinstance(real, np.ndarray), path
        assert list(real.shape) == list(mini.shape), path
        if isinstance(mini.data, list):                           # object array
            flat = real.ravel(order="F" if mini.fortran else "C")
            assert len(flat) == len(mini.data), path
            for i, (a, b) in enumerate(zip(mini.data, flat)):
                _same(a, b, pairs, f"{path}.flat[{i}]")
            return
        assert encode_dtype(real.dtype) == mini.dtype, path
        assert real.tobytes(order="F" if mini.fortran else "C") == mini.data, path
        assert real.flags.writeable == mini.writeable, path
        return
    if isinstance(mini, Scalar):
        assert isinstance(real, np.generic), path
        assert encode_dtype(real.dtype) == mini.dtype and real.tobytes() == mini.data, path
        return
    if isinstance(mini, Reduced):                                 # an ndarray subclass
        assert type(real) is mini.args[0], path
        _version, shape, dt, fortran, data = mini.state
        assert list(real.shape) == list(shape) and encode_dtype(real.dtype) == dt.desc, path
        assert real.tobytes(order="F" if fortran else "C") == data, path
        return
    if isinstance(mini, DType):
        assert isinstance(real, np.dtype) and encode_dtype(real) == mini.desc, path
        return
    assert type(mini) is type(real), f"{path}: {type(mini)} != {type(real)}"
    if isinstance(mini, dict):
        assert list(mini) == list(real), path
        for k in mini:
            _same(mini[k], real[k], pairs, f"{path}[{k!r}]")
    elif isinstance(mini, (list, tuple)):
        assert len(mini) == len(real), path
        for i, (a, b) in enumerate(zip(mini, real)):
            _same(a, b, pairs, f"{path}[{i}]")
    elif isinstance(mini, (set, frozenset)):
        assert mini == real, path
    elif hasattr(mini, "__dict__") and not isinstance(mini, type):
        assert vars(mini).keys() == vars(real).keys(), path
        for k in vars(mini):
            _same(vars(mini)[k], vars(real)[k], pairs, f"{path}.{k}")
    elif isinstance(mini, float) and mini != mini:
        assert real != real, path
    else:
        assert mini == real, path


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_minimal_reader_agrees_with_torpor(path):
    data = path.read_bytes()
    mini = read(data)
    real = torpor.load(path)
    _same(mini, real, {})
    assert mini["cycle"]["self"] is mini["cycle"]
    assert mini["shared"][0] is mini["shared"][1]


def test_minimal_reader_reads_new_files_of_every_codec():
    obj = {"a": np.arange(50_000, dtype="<f4"), "b": [1, (2, 3)], "s": {"x"}, "bb": bytes(300_000)}
    obj["again"] = obj["b"]
    for compress in ("lz4", "gzip", None):
        real = torpor.loads(torpor.dumps(obj, compress=compress))
        mini = read(torpor.dumps(obj, compress=compress))
        _same(mini, real, {})
        assert mini["again"] is mini["b"]


@pytest.mark.parametrize("older", [2, 3])
def test_minimal_reader_refuses_modes_newer_than_the_files_version(older):
    """As FORMAT.md says (and torpor does, test_codec.py): a version 2 or 3 file
    with a mode 8 chunk is damaged."""
    from helpers import with_format_version
    from minimal_reader import Damaged
    a = np.random.default_rng(9).standard_normal(300_000).astype("<f4")
    data = torpor.dumps({"a": a})
    assert read(data)["a"].data == a.tobytes()          # as written: version 4, mode 8
    with pytest.raises(Damaged, match="version does not have"):
        read(with_format_version(data, older))


def test_the_format_documents_example_is_what_torpor_writes():
    """The hex example of docs/FORMAT.md is a real file: the bytes of the example
    object with the example's header, which both readers read back."""
    import io
    import re
    from torpor.engine import pipeline
    doc = (pathlib.Path(__file__).parent.parent.parent / "docs" / "FORMAT.md").read_text()
    block = doc[doc.index("## Example"):doc.index("## Writer choices")]
    data = {}
    for line in block.splitlines():
        if not re.match(r"^[0-9a-f]{4}  ", line):
            continue
        row = int(line[:4], 16) & ~0xF              # a row may start mid-line
        cells = line[6:6 + 48]
        for i in range(16):
            tok = cells[3 * i:3 * i + 2].strip()
            if tok:
                assert row + i not in data
                data[row + i] = int(tok, 16)
    assert sorted(data) == list(range(len(data)))  # every byte, once
    data = bytearray(data[i] for i in range(len(data)))
    buf = io.BytesIO()
    pipeline.encode([1, "ab", "ab", (2.5, None)], buf, pipeline.SaveOptions.of(compress=None),
                    {"format": 1, "torpor": "0.2.0", "metadata": {}})
    assert bytes(data) == buf.getvalue()
    assert read(bytes(data)) == [1, "ab", "ab", (2.5, None)]
    assert torpor.loads(bytes(data)) == [1, "ab", "ab", (2.5, None)]
