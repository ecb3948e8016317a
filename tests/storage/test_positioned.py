"""The seekable readers torpor makes (``storage.positioned.PositionedReader``: URL
ranges, Redis objects, Dask frames) seek as a file does and say what is wrong."""

import io

import pytest

from torpor.storage.ranged import RangedReader

DATA = bytes(range(256)) * 40


def _reader():
    return RangedReader(lambda start, end: DATA[start:end], len(DATA), "mem://x")


@pytest.mark.parametrize("offset, whence, want", [
    (10, io.SEEK_SET, 10), (-5, io.SEEK_END, len(DATA) - 5), (0, io.SEEK_END, len(DATA)),
    (len(DATA) + 7, io.SEEK_SET, len(DATA) + 7)])
def test_seek_and_tell_are_a_files(offset, whence, want):
    r = _reader()
    assert r.seek(offset, whence) == want and r.tell() == want
    assert r.read(4) == DATA[want:want + 4]
    r.seek(2)
    assert r.seek(3, io.SEEK_CUR) == 5 and r.read(2) == DATA[5:7]


def test_a_bad_seek_says_what_is_wrong():
    r = _reader()
    with pytest.raises(ValueError, match="whence must be 0, 1 or 2"):
        r.seek(0, 7)
    with pytest.raises(ValueError, match="before the start of mem://x"):
        r.seek(-1)
    r.close()
    with pytest.raises(ValueError, match="closed file mem://x"):
        r.tell()
    with pytest.raises(ValueError, match="closed file"):
        r.seek(0)
