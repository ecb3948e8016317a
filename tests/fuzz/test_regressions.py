"""Every input that ever made a fuzz target fail (tests/fuzz/regressions/), and
the seed corpus, replayed on both walkers and every reading path: each may only
raise a TorporError, and each is done in well under a second."""

import io
import pathlib
import sys
import time

import pytest

import torpor
from helpers import Pipe

HERE = pathlib.Path(__file__).parent
REGRESSIONS = sorted((HERE / "regressions").glob("*"))


def _replay(data):
    for call in (lambda: torpor.loads(data), lambda: torpor.load(Pipe(data, piece=4093)),
                 lambda: torpor.info(io.BytesIO(data)), lambda: torpor.info(Pipe(data, piece=4093)),
                 lambda: torpor.verify(io.BytesIO(data), threads=1)):
        t = time.perf_counter()
        try:
            call()
        except torpor.TorporError:
            pass
        assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_regression_inputs(impl, path):
    _replay(path.read_bytes())


def test_there_are_regression_inputs():
    assert REGRESSIONS


def test_the_seed_corpus(impl, tmp_path):
    sys.path.insert(0, str(HERE))
    from make_corpus import main
    main(tmp_path)
    files = sorted((tmp_path / "files").iterdir())
    assert len(files) >= 15
    for f in files:
        data = f.read_bytes()
        torpor.loads(data, trusted=True)           # seeds are good files
        _replay(data)
