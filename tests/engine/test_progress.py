"""progress= on dump/load, Session.save/restore and dump_module/load_module
(issue 17): a callable sees every byte written or read, in order, and the file's
size as the load's total; True shows a tqdm bar on stderr once the work has taken
BAR_DELAY seconds, and nothing for quick work; anything else is refused."""

import io
import os
import re
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import torpor
from torpor.engine import progress as progress_mod
from torpor.session import Session, StateManager
from helpers import assert_same_array


def _graph():
    a = np.arange(3_000_000, dtype=np.float64)
    return {"a": a, "again": a, "b": np.ones((300, 200), dtype=np.float32, order="F"),
            "names": [f"n{i}" for i in range(1000)]}


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))

    def check(self, size, total):
        dones = [d for d, _ in self.calls]
        assert len(dones) > 2 and dones == sorted(dones) and len(set(dones)) == len(dones)
        assert dones[-1] == size
        assert {t for _, t in self.calls} == {total}


def _check_graph(out, graph):
    assert out["again"] is out["a"]
    assert_same_array(graph["a"], out["a"])
    assert_same_array(graph["b"], out["b"])
    assert out["names"] == graph["names"]


@pytest.mark.parametrize("compress", ["lz4", None])
def test_a_callable_sees_every_byte_saved_and_loaded(tmp_path, impl, compress):
    graph, path = _graph(), tmp_path / "g.torpor"
    saved = Recorder()
    torpor.dump(graph, path, compress=compress, progress=saved)
    size = os.path.getsize(path)
    saved.check(size, None)                  # a save's size is known at its end only
    loaded = Recorder()
    _check_graph(torpor.load(path, progress=loaded), graph)
    loaded.check(size, size)


def test_streams_and_file_objects_are_counted_too(impl):
    graph, buf, rec = _graph(), io.BytesIO(), Recorder()
    torpor.dump(graph, buf, progress=rec)
    rec.check(len(buf.getvalue()), None)
    buf.seek(0)
    rec = Recorder()
    _check_graph(torpor.load(buf, progress=rec), graph)
    rec.check(len(buf.getvalue()), len(buf.getvalue()))


def test_mmap_loads_count_what_they_read(tmp_path, impl):
    graph, path = _graph(), tmp_path / "m.torpor"
    torpor.dump(graph, path, compress=None)
    rec = Recorder()
    out = torpor.load(path, mmap=True, progress=rec)
    _check_graph(out, graph)
    assert rec.calls and rec.calls[-1][1] == os.path.getsize(path)
    assert rec.calls[-1][0] < os.path.getsize(path) // 10     # the arrays were mapped, not read


def test_progress_off_leaves_the_file_object_alone(tmp_path):
    f = io.BytesIO()
    with progress_mod.watching_writes(f, None, "x") as out:
        assert out is f
    with progress_mod.watching_reads(f, False, "x") as src:
        assert src is f


@pytest.mark.parametrize("bad", [1, "yes", 0.5, [print]])
def test_a_bad_progress_is_refused_before_anything_is_written(tmp_path, bad):
    path = tmp_path / "x.torpor"
    with pytest.raises(TypeError, match="progress must be True, False, None or a callable"):
        torpor.dump([1], path, progress=bad)
    assert not path.exists()
    torpor.dump([1], path)
    with pytest.raises(TypeError, match="progress must be"):
        torpor.load(path, progress=bad)


def test_an_error_in_the_callback_fails_the_save_and_keeps_the_old_file(tmp_path, impl):
    path = tmp_path / "keep.torpor"
    torpor.dump({"old": 1}, path)
    before = path.read_bytes()

    def stop(done, total):
        if done > 50_000:
            raise KeyboardInterrupt("stopped by the user")
    with pytest.raises(KeyboardInterrupt):
        torpor.dump(_graph(), path, progress=stop)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.torpor"]


class Notes(StateManager):
    def __init__(self):
        self.grid = None

    def take_snapshot(self, session, flags):
        return {"version": 1, "grid": self.grid}

    @classmethod
    def restore_snapshot(cls, session, data):
        m = cls()
        m.grid = data["grid"]
        return m

    def reset_state(self, session):
        self.grid = None


def test_sessions_report_progress(tmp_path, impl):
    s = Session("progress-test")
    s.add_state_manager("notes", Notes())
    s.get_state_manager("notes").grid = np.arange(2_000_000, dtype=np.int64)
    path = tmp_path / "s.torpor"
    saved, loaded = Recorder(), Recorder()
    s.save(path, progress=saved)
    saved.check(os.path.getsize(path), None)
    t = Session("progress-test")
    t.add_state_manager("notes", Notes())
    t.restore(path, progress=loaded)
    loaded.check(os.path.getsize(path), os.path.getsize(path))
    grid = s.get_state_manager("notes").grid
    assert_same_array(grid, t.get_state_manager("notes").grid)
    with pytest.raises(TypeError, match="progress must be"):
        t.restore(path, progress="bar")
    assert_same_array(grid, t.get_state_manager("notes").grid)   # the refused restore changed nothing


def test_module_dumps_report_progress(tmp_path, impl):
    mod = types.ModuleType("progress_mod_test")
    mod.grid = np.arange(1_000_000, dtype=np.float32)
    sys.modules[mod.__name__] = mod
    try:
        path = tmp_path / "m.torpor"
        saved, loaded = Recorder(), Recorder()
        torpor.dump_module(path, module=mod, progress=saved)
        saved.check(os.path.getsize(path), None)
        del mod.grid
        torpor.load_module(path, module=mod, progress=loaded)
        loaded.check(os.path.getsize(path), os.path.getsize(path))
        assert_same_array(np.arange(1_000_000, dtype=np.float32), mod.grid)
    finally:
        del sys.modules[mod.__name__]


_BAR = textwrap.dedent("""
    import sys, numpy as np, torpor
    from torpor.engine import progress
    progress.BAR_DELAY = float(sys.argv[2])
    a = np.random.default_rng(0).random(4_000_000)
    torpor.dump({"a": a}, sys.argv[1], progress=True)
    out = torpor.load(sys.argv[1], progress=True)
    assert (out["a"] == a).all()
    print("ok")
""")


def test_true_shows_a_tqdm_bar_in_bytes_on_stderr(tmp_path, walker_env):
    path = str(tmp_path / "bar.torpor")
    r = subprocess.run([sys.executable, "-c", _BAR, path, "0"], env=walker_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert "saving bar.torpor" in r.stderr and "loading bar.torpor" in r.stderr
    assert re.search(r"loading bar\.torpor: +0%\|.*\| 0\.00/\d+\.\dM", r.stderr), r.stderr
    assert re.search(r"saving bar\.torpor: .*B/s", r.stderr), r.stderr
    quick = subprocess.run([sys.executable, "-c", _BAR, path, "30"], env=walker_env,
                           capture_output=True, text=True, timeout=120)
    assert quick.returncode == 0 and quick.stderr == "", quick.stderr   # under the delay: silent


def test_verify_reports_progress(tmp_path, impl):
    graph, path = _graph(), tmp_path / "v.torpor"
    torpor.dump(graph, path)
    rec = Recorder()
    assert torpor.verify(path, progress=rec) == torpor.verify(path)
    rec.check(os.path.getsize(path), os.path.getsize(path))


@pytest.mark.parametrize("flag, shown", [("--progress", True), ("--no-progress", False),
                                         (None, False)])
def test_the_command_line_shows_a_bar_when_asked_or_on_a_terminal(tmp_path, monkeypatch,
                                                                  capsys, flag, shown):
    """verify and convert take --progress / --no-progress; by default a bar is
    shown only when stderr is a terminal (under pytest it is not)."""
    from torpor import cli
    monkeypatch.setattr(progress_mod, "BAR_DELAY", 0)
    path, npy = tmp_path / "c.torpor", tmp_path / "a.npy"
    np.save(npy, np.random.default_rng(1).random(2_000_000))
    for argv in (["convert", str(npy), str(path)], ["verify", str(path)]):
        assert cli.main(argv + ([flag] if flag else [])) == 0
        err = capsys.readouterr().err
        what = "saving c.torpor" if argv[0] == "convert" else "verifying c.torpor"
        assert (what in err) is shown, err
