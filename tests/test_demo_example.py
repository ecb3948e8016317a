"""examples/demo.py, as a newcomer runs it (issue 17): it removes everything it
writes (after a normal run, on Ctrl-C, and when a check fails), and it explains
its figures in plain words: each compared with pickle, where torpor is slower
said and explained, and no internal jargon."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
DEMO = os.path.join(EXAMPLES, "demo.py")
SMALL = ["--mb", "16", "--atoms", "2000"]

#: words of torpor's internals the demo used to print unexplained
JARGON = ["named objects", "named object", "section", "TOC", "MiB", "walker"]


@pytest.fixture
def tmpdir_env(walker_env, tmp_path):
    """(env, folder): the walker under test's environment with TMPDIR pointing
    at a fresh empty folder, so everything the demo writes lands in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    env = dict(walker_env, TMPDIR=str(folder), PYTHONUNBUFFERED="1")
    return env, str(folder)


def leftovers(folder):
    """Every file and folder under ``folder``, as paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in dirs + files]
    return sorted(found)


def written(folder, part):
    """Whether a file whose name contains ``part`` exists inside a folder of ``folder``."""
    for root, _, files in os.walk(folder):
        if root != folder and any(part in n for n in files):
            return True
    return False


ROW = re.compile(r"^ +(save|restore|file size) +([\d.]+) (s|MB) +([\d.]+) (s|MB) +(.+)$", re.M)


def test_demo_explains_its_figures_and_leaves_nothing(tmpdir_env):
    env, folder = tmpdir_env
    out = subprocess.run([sys.executable, DEMO, *SMALL], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert leftovers(folder) == []
    text = out.stdout
    assert f"The files are written to {folder}{os.sep}torpor-demo-" in text
    assert re.search(r"^Removed .+: the demo leaves no files behind\.$", text, re.M)

    # the figures: two tables (one per session), each compared with pickle in words,
    # in the direction the figures show
    rows = ROW.findall(text)
    assert [r[0] for r in rows] == ["save", "restore", "file size"] * 2, text
    for what, ours, unit, theirs, _, verdict in rows:
        assert unit == ("MB" if what == "file size" else "s")
        words = r"(\d+\.\d)x (smaller|larger)|the same size as pickle's" if unit == "MB" \
            else r"(\d+\.\d)x (faster|slower)|as fast as pickle( \(within 5 ms\))?"
        m = re.fullmatch(words, verdict)
        assert m, verdict
        if m.group(2) in ("slower", "larger"):
            assert float(ours) >= float(theirs), (what, ours, theirs, verdict)
        elif m.group(2) in ("faster", "smaller"):
            assert float(ours) <= float(theirs), (what, ours, theirs, verdict)
    assert text.count("   torpor was\n") == 2

    # where torpor was slower it says so, and why, with the option that changes it
    assert text.count("Where torpor was slower, and why:") + \
        text.count("torpor was not slower than pickle on anything here.") == 2
    flat = " ".join(text.split())
    verdicts = {(i // 3, r[0]): r[5] for i, r in enumerate(rows)}
    for (session, what), verdict in verdicts.items():
        if verdict.endswith(("slower", "larger")):
            word = {"save": "saving", "restore": "restoring", "file size": "file size"}[what]
            assert f"- {word} ({verdict})" in flat, (what, verdict)
    if "- saving (" in flat:
        assert "fsync" in flat and "compress=None" in flat and "pickle followed by an fsync" in flat
    if "- restoring (" in flat:
        assert "decompresses" in flat and "saved with compress=None restored in" in flat

    # the checks, in plain words
    assert "Checked: the restored workspace equals the original (every value, dtype and shape)" \
        in flat
    assert re.search(r"its \d+ meshes still refer to the very point clouds they were fitted "
                     r"to \(the same objects, not copies\)", flat)
    assert "Checked: the restored viewer session equals the original" in flat
    assert "the selection and the camera still refer to the very structures in the model list" \
        in flat
    # what the sessions hold, in a scientist's units
    assert re.search(r"[\d.]+ MB of arrays: a tomogram of \d+ x \d+ x \d+ float32 values", flat)
    assert "2 structures with 2,000 atoms in 400 residues" in flat
    assert "torpor.verify read the whole file and every checksum in it matches" in flat

    for word in JARGON:
        assert word not in text, word
    assert not re.search(r"@\d+", text), re.search(r".*@\d+.*", text).group(0)


def test_a_failed_check_exits_nonzero_and_says_what(tmpdir_env, tmp_path):
    """A restored session that differs (here: a check that fails) is reported on
    stderr, the exit status is 1, and nothing is left behind."""
    env, folder = tmpdir_env
    script = tmp_path / "demo_with_a_failing_check.py"
    script.write_text(textwrap.dedent(f"""
        import runpy, sys
        sys.path.insert(0, {EXAMPLES!r})
        import viewer
        def check_equal(a, b):
            assert b.view.field_of_view == -1.0, "the field of view"
        viewer.check_equal = check_equal
        sys.argv = [{DEMO!r}, *{SMALL!r}]
        runpy.run_path({DEMO!r}, run_name="__main__")
    """))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "demo.py: CHECK FAILED: the restored viewer session differs from the original: " \
        in out.stderr, out.stderr
    assert "demo_with_a_failing_check.py line 6: assert b.view.field_of_view == -1.0, " \
        "\"the field of view\" (the field of view)" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert "1. A segmentation workspace" in out.stdout      # the first session was fine
    assert leftovers(folder) == []


@pytest.mark.parametrize("part, sig", [("segmentation", signal.SIGINT), (".pkl", signal.SIGINT),
                                       ("segmentation", signal.SIGTERM)],
                         ids=["ctrl-c-while-saving-with-torpor", "ctrl-c-while-pickling",
                              "sigterm-while-saving-with-torpor"])
def test_an_interrupted_demo_leaves_nothing(tmpdir_env, part, sig):
    """SIGINT (Ctrl-C) or SIGTERM (``kill``) once the demo has started writing
    (torpor's save of the workspace, or pickle's copy of it): it stops, says so,
    exits 130, and its folder is gone."""
    env, folder = tmpdir_env
    proc = subprocess.Popen([sys.executable, DEMO, "--mb", "64", "--atoms", "2000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not written(folder, part):
            assert proc.poll() is None, "the demo ended before writing " + part
            assert time.monotonic() < deadline, "the demo wrote nothing named " + part
            time.sleep(0.002)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "demo.py: interrupted; removed " + os.path.join(folder, "torpor-demo-") in err, err
    assert "Traceback" not in err
    assert "Removed" not in out          # it did not get to the end
    assert leftovers(folder) == []
