"""Saving to a path that is a symbolic link writes (atomically) to the file the
link points to: the link stays a link."""

import os
import tempfile

import numpy as np
import pytest

import torpor


@pytest.fixture
def dirs(tmp_path):
    a, b = tmp_path / "links", tmp_path / "data"
    a.mkdir()
    b.mkdir()
    return a, b


def test_save_through_a_link_keeps_the_link(dirs, impl):
    links, data = dirs
    target = data / "t.torpor"
    torpor.dump({"v": 1}, target)
    os.chmod(target, 0o640)
    link = links / "l.torpor"
    link.symlink_to(os.path.relpath(target, links))
    torpor.dump({"v": 2, "a": np.arange(50_000)}, link)
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, links)
    assert torpor.load(target)["v"] == 2 and torpor.load(link)["v"] == 2
    assert (target.stat().st_mode & 0o777) == 0o640          # the target's mode is kept
    assert sorted(os.listdir(links)) == ["l.torpor"] and sorted(os.listdir(data)) == ["t.torpor"]


def test_a_chain_of_links_resolves_to_the_last_target(dirs):
    links, data = dirs
    target = data / "t.torpor"
    torpor.dump(1, target)
    (data / "mid.torpor").symlink_to(target)
    (links / "l.torpor").symlink_to(data / "mid.torpor")
    torpor.dump(2, links / "l.torpor")
    assert (links / "l.torpor").is_symlink() and (data / "mid.torpor").is_symlink()
    assert torpor.load(target) == 2


def test_a_dangling_link_creates_its_target(dirs):
    links, data = dirs
    link = links / "l.torpor"
    link.symlink_to(data / "new.torpor")
    torpor.dump([1, 2], link)
    assert link.is_symlink() and torpor.load(data / "new.torpor") == [1, 2]


def test_a_failed_save_through_a_link_leaves_the_target_intact(dirs, monkeypatch):
    links, data = dirs
    target = data / "t.torpor"
    torpor.dump({"v": 1}, target)
    before = target.read_bytes()
    link = links / "l.torpor"
    link.symlink_to(target)
    made = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a, **kw):          # where the temporary file is created
        made.append(kw["dir"])
        return real_mkstemp(*a, **kw)
    monkeypatch.setattr("torpor.storage.local.tempfile.mkstemp", mkstemp)
    with pytest.raises(torpor.UnsupportedObjectError):
        torpor.dump({"v": 2, "big": np.ones(1_000_000), "bad": (i for i in ())}, link)
    assert made == [str(data)]
    assert link.is_symlink() and target.read_bytes() == before
    assert os.listdir(links) == ["l.torpor"] and os.listdir(data) == ["t.torpor"]


def test_a_loop_of_links_is_refused(dirs):
    links, _ = dirs
    (links / "a.torpor").symlink_to(links / "b.torpor")
    (links / "b.torpor").symlink_to(links / "a.torpor")
    with pytest.raises(OSError, match="loop of symbolic links"):
        torpor.dump(1, links / "a.torpor")
    assert (links / "a.torpor").is_symlink() and (links / "b.torpor").is_symlink()
