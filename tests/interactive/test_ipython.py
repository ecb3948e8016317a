"""The %torpor_save / %torpor_load magics in a real IPython InteractiveShell: the
default file's permissions, --help, and one-line errors."""

import os
import stat

import pytest


@pytest.fixture
def ip(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "torpor")
        yield shell
    finally:
        InteractiveShell.clear_instance()


def test_default_file_is_owner_only(ip, tmp_path, capsys):
    old = os.umask(0o022)           # the usual umask: a plain save would be 0644
    try:
        ip.run_cell("import numpy as np\nx = np.arange(10.0)")
        ip.run_line_magic("torpor_save", "")
        path = tmp_path / "cache" / "torpor" / "session.torpor"
        assert capsys.readouterr().out.startswith(f"saved 2 variables to {path}: ")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        ip.run_cell("del x")
        ip.run_line_magic("torpor_load", "")
        assert capsys.readouterr().out.startswith(f"loaded 2 variables from {path}: ")
        assert ip.user_ns["x"][3] == 3.0
    finally:
        os.umask(old)


@pytest.mark.parametrize("magic, words", [
    ("torpor_save", ["usage: %torpor_save", "--exclude", "--skip-errors", "session.torpor"]),
    ("torpor_load", ["usage: %torpor_load", "--trusted", "--replace", "session.torpor"]),
])
def test_help_prints_usage(ip, capsys, magic, words):
    for flag in ("--help", "-h"):
        ip.run_line_magic(magic, flag)
        cap = capsys.readouterr()
        assert all(w in cap.out for w in words), cap.out
        assert cap.err == "" and "Traceback" not in cap.out
    assert not os.path.exists(os.environ["XDG_CACHE_HOME"])       # nothing saved


@pytest.mark.parametrize("magic, line, expected", [
    ("torpor_load", "missing.torpor",
     "%torpor_load: nothing loaded: there is no file missing.torpor (save one with "
     "%torpor_save missing.torpor)"),
    ("torpor_load", "--bogus", "%torpor_load: unrecognized arguments: --bogus (see %torpor_load --help)"),
    ("torpor_save", "'unclosed", "%torpor_save: No closing quotation (see %torpor_save --help)"),
    ("torpor_save", "nofolder/x.torpor", "%torpor_save: nothing saved: cannot save to "
     "nofolder/x.torpor: the folder {tmp}/nofolder does not exist"),
])
def test_errors_are_one_clear_line(ip, tmp_path, capsys, magic, line, expected):
    ip.run_cell("y = 2")
    ip.run_line_magic(magic, line)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err and cap.err == ""
    assert cap.out.rstrip("\n").splitlines()[-1] == expected.format(tmp=tmp_path)
    assert ip.user_ns["y"] == 2
