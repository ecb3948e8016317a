"""Every input that ever made a fuzz target fail (tests/fuzz/regressions/), and
the seed corpus, replayed on both walkers and every reading path: each may only
raise a TorporError, and each is done in well under a second. A ``*.stream``
input is a bare object stream (the decoder target's), replayed by the decoder.
Names starting with "found-" are the fuzzer's own inputs, the others were
built by hand to show the same fault."""

import io
import pathlib
import sys
import time

import pytest

import torpor
from helpers import Pipe, down_the_last_items
from torpor.format import outline

HERE = pathlib.Path(__file__).parent
REGRESSIONS = sorted(p for p in (HERE / "regressions").glob("*") if p.is_file())


def _replay(data):
    for call in (lambda: torpor.loads(data), lambda: torpor.load(Pipe(data, piece=4093)),
                 lambda: torpor.info(io.BytesIO(data)), lambda: torpor.info(Pipe(data, piece=4093)),
                 lambda: torpor.verify(io.BytesIO(data), threads=1),
                 lambda: outline.outline_file(io.BytesIO(data), "regression"),
                 lambda: torpor.load(io.BytesIO(data), select="[0]"),
                 lambda: down_the_last_items(data)):
        t = time.perf_counter()
        try:
            call()
        except torpor.TorporError:
            pass
        assert time.perf_counter() - t < 2.0


def _replay_stream(data):
    from torpor.engine import select
    from torpor.engine.safety import Policy
    t = time.perf_counter()
    try:
        select.Decoder(Policy(), {}).decode(data)
    except torpor.TorporError:
        pass
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_regression_inputs(impl, path):
    if path.suffix == ".stream":
        _replay_stream(path.read_bytes())
    else:
        _replay(path.read_bytes())


def test_files_load_from_a_stream_of_short_reads(impl):
    """The pipe targets read in pieces of 4093 bytes, as an unbuffered pipe or
    socket may deliver them."""
    data = torpor.dumps(list(range(2000)))
    assert torpor.load(Pipe(data, piece=4093)) == list(range(2000))


def test_there_are_regression_inputs():
    assert REGRESSIONS


def test_the_seed_corpus(impl, tmp_path):
    sys.path.insert(0, str(HERE))
    from make_corpus import main
    main(tmp_path)
    files = sorted((tmp_path / "files").iterdir())
    assert len(files) >= 15
    assert any(f.name.startswith("hostile-") for f in files)
    for f in files:
        data = f.read_bytes()
        if not f.name.startswith("hostile-"):
            torpor.loads(data, trusted=True)       # seeds are good files
        _replay(data)                              # hostile ones are refused, fast
