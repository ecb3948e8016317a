"""What an interrupted save leaves, and the kernel hints of saves: a save killed
with SIGKILL leaves its temporary file, which the next save to that folder
removes (and ``torpor verify`` reports); the writeback hint works on real files."""

import os
import subprocess
import sys
import textwrap

import pytest

import torpor
from torpor.storage import iohints


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_temporary_name_with_an_absurd_pid_blocks_nothing(tmp_path):
    from torpor.storage import local
    (tmp_path / f".x.{local._HOST}.{'9' * 20}.a.torpor-tmp").write_bytes(b"")
    torpor.dump([1], tmp_path / "k.torpor")
    assert torpor.load(tmp_path / "k.torpor") == [1]


def test_next_save_removes_temp_files_of_killed_saves(tmp_path):
    """A save killed with SIGKILL leaves its temporary file; the next save to the
    same folder removes it (its writer is gone), and torpor verify says so first."""
    from torpor.storage import local
    target = tmp_path / "big.torpor"
    torpor.dump([1], tmp_path / "small.torpor")
    code = textwrap.dedent(f"""
        import os, signal, numpy as np, torpor
        from torpor.storage import sinks
        real = sinks.BufferedSink.write
        n = [0]
        def write(self, data):
            n[0] += 1
            if n[0] == 20:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, data)
        sinks.BufferedSink.write = write
        torpor.dump(np.random.default_rng(0).random(3_000_000), {str(target)!r})
    """)
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TORPOR_DIRECT_IO="0"))
    assert r.returncode == -9
    left = [n for n in os.listdir(tmp_path) if n.endswith(".torpor-tmp")]
    assert len(left) == 1 and os.path.getsize(tmp_path / left[0]) > 0
    ours = tmp_path / f".other.torpor.{local._HOST}.{os.getpid()}.x1.torpor-tmp"
    ours.write_bytes(b"a save of a live process")
    elsewhere = tmp_path / f".other.torpor.another-host.{_dead_pid()}.x2.torpor-tmp"
    elsewhere.write_bytes(b"another machine's save")
    r = subprocess.run([sys.executable, "-m", "torpor", "verify", str(tmp_path / "small.torpor")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "1 temporary file(s) of interrupted saves" in r.stdout
    assert left[0] in r.stdout
    torpor.dump([2], tmp_path / "small.torpor")
    assert sorted(os.listdir(tmp_path)) == sorted(["small.torpor", ours.name, elsewhere.name])


@pytest.mark.skipif(iohints.start_writeback is None, reason="needs the native _iohints extension (Linux)")
def test_writeback_hint(tmp_path):
    p = tmp_path / "w.bin"
    with open(p, "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
        assert iohints.start_writeback(f.fileno(), 0, 100_000) is True
    with open(p, "rb") as f:
        assert iohints.start_writeback(f.fileno(), 0, 10) is True
    assert iohints.start_writeback(-1, 0, 10) is False
