"""Session.restore is all or nothing: a failing restore_snapshot, a damaged or
truncated file, or a missing class leaves the session exactly as it was."""

import io
import subprocess
import sys
import textwrap

import pytest

import segmentation
import torpor
from session_apps import Counter, Fragile, Other


def _snapshot_of(session):
    return ({t: (m, dict(vars(m))) for t, m in session.state_managers.items()},
            dict(session.metadata))


def _assert_unchanged(session, before):
    managers, metadata = before
    assert session.state_managers.keys() == managers.keys()
    for t, (m, attrs) in managers.items():
        assert session.get_state_manager(t) is m and getattr(session, t) is m
        assert vars(m).keys() == attrs.keys()
        assert all(vars(m)[k] is v for k, v in attrs.items())
    assert session.metadata == metadata


def _target():
    t = torpor.Session("app")
    t.a = Counter(10)
    t.c = Counter(30)
    t.metadata["title"] = "live"
    return t


def test_failed_restore_snapshot_leaves_session_unchanged(saved, impl, monkeypatch):
    monkeypatch.setattr(Fragile, "fail", True)
    t = _target()
    before = _snapshot_of(t)
    with pytest.raises(torpor.RestoreError, match="Fragile.restore_snapshot raised ValueError: "
                                                  "cannot rebuild the GPU texture"):
        t.restore(saved)
    _assert_unchanged(t, before)
    assert t.c.resets == 0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_file_leaves_session_unchanged(saved, impl, damage):
    data = bytearray(saved.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x40
    t = _target()
    before = _snapshot_of(t)
    with pytest.raises(torpor.CorruptFileError):
        t.restore(io.BytesIO(bytes(data)))
    _assert_unchanged(t, before)


def test_every_truncation_is_an_error(impl):
    s = torpor.Session("app")
    s.a = Counter(1)
    data = io.BytesIO()
    s.save(data, compress=None)
    data = data.getvalue()
    for n in range(0, len(data), max(1, len(data) // 200)):
        t = _target()
        with pytest.raises(torpor.TorporError):
            t.restore(io.BytesIO(data[:n]))
        assert t.a.n == 10


def test_missing_class_is_refused_before_any_change(tmp_path, impl, walker_env):
    mod = tmp_path / "ghostmod.py"
    mod.write_text("import torpor\nclass Ghost(torpor.StateManager):\n"
                   "    def reset_state(self, session): pass\n")
    p = tmp_path / "g.torpor"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import torpor, ghostmod
        s = torpor.Session("app"); s.g = ghostmod.Ghost(); s.g.x = 1
        s.save({str(p)!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=walker_env)
    t = _target()
    before = _snapshot_of(t)
    with pytest.raises(torpor.RestoreError, match=r"ghostmod.Ghost.*never imports"):
        t.restore(p)
    _assert_unchanged(t, before)
    assert "ghostmod" not in sys.modules


def test_plain_classes_in_snapshots_need_allow(tmp_path, impl):
    s = torpor.Session("app")
    s.a = Counter(1, arr=segmentation.Geometry.__new__(Other))
    p = tmp_path / "o.torpor"
    s.save(p)
    t = _target()
    before = _snapshot_of(t)
    with pytest.raises(torpor.UnsafeLoadError, match="session_apps.Other"):
        t.restore(p)
    _assert_unchanged(t, before)
    t.restore(p, allow=["session_apps.Other"])
    assert type(t.a.arr) is Other
