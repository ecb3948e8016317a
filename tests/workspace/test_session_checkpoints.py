"""Checkpoints through the Session (in-process executor, both walkers, every
storage kind): manual checkpoints and restores, the automatic checkpoint after
each successful run, resuming it in a new Session and in a new process after
the old one was killed, and what cannot be saved being listed, not fatal."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from torpor.workspace import FileStorage, Session


def arun(coro):
    return asyncio.run(coro)


def test_checkpoint_and_restore(storage, impl):
    async def go():
        async with Session(storage) as s:
            r = await s.run(textwrap.dedent("""
                import numpy as np
                grid = np.arange(12, dtype=np.float32).reshape(3, 4)
                same = grid
                class Point:
                    def __init__(self, x): self.x = x
                    def twice(self): return self.x * scale
                scale = 2
                p = Point(5)
                """))
            assert r.is_ok, r.error
            cp = await s.checkpoint("first")
            assert cp["name"] == "first"
            assert {"grid", "same", "Point", "scale", "p", "np"} <= set(cp["variables"])
            assert "artifacts" not in cp["variables"]
            await s.run("grid[0, 0] = 99\nscale = 3\ndel p\nextra = 1")
            back = await s.restore_checkpoint("first")
            assert "grid" in back["variables"]
            r = await s.run("(grid[0, 0], grid.dtype.name, grid is same, p.twice(), "
                            "'extra' in dir(), type(p).__name__)")
            assert r.value == (0.0, "float32", True, 10, False, "Point"), r.error
            assert (await s.run("artifacts is not None")).value is True   # injected: kept
            names = [c["name"] for c in await s.list_checkpoints()]
            assert names == ["first"]
            assert await s.delete_checkpoint("first") is True
            assert await s.list_checkpoints() == []
    arun(go())


def test_checkpoint_names(tmp_path, impl):
    async def go():
        async with Session(FileStorage(tmp_path / "ws")) as s:
            await s.run("x = 1")
            cp = await s.checkpoint()                 # a time-stamped name
            assert cp["name"].startswith("checkpoint-")
            with pytest.raises(ValueError, match="checkpoint name"):
                await s.checkpoint("../escape")
            with pytest.raises(Exception, match="nothing"):
                await s.restore_checkpoint("nothing")
            assert (await s.run("x")).value == 1      # a failed restore changed nothing
    arun(go())


def test_unsaveable_variables_are_skipped_and_listed(tmp_path, impl):
    async def go():
        async with Session(FileStorage(tmp_path / "ws"), checkpoint="auto") as s:
            r = await s.run("import threading\ngen = (i for i in range(3))\nkeep = [1, 2]")
            assert r.is_ok
            assert any("gen" in n for n in r.notes), r.notes
            cp = await s.checkpoint("manual")
            assert "gen" in cp["skipped"] and "keep" in cp["variables"]
            r = await s.run("keep.append(3)")
            assert r.is_ok and r.notes == []          # said once, not after every run
    arun(go())


def test_auto_checkpoint_resumes_in_a_new_session(storage, impl, make_storage):
    async def first():
        async with Session(storage, checkpoint="auto") as s:
            await s.run("import numpy as np\nbig = np.linspace(0, 1, 300_000)\ncount = 1")
            await s.run("count += 1")
            r = await s.run("count += 'x'")           # fails: not checkpointed
            assert not r.is_ok

    async def second():
        async with Session(make_storage(), checkpoint="auto") as s:
            assert s.resumed is not None and "count" in s.resumed["variables"]
            r = await s.run("count, float(big[-1]), big.shape")
            assert r.value == (2, 1.0, (300_000,)), r.error
    arun(first())
    arun(second())


def test_no_auto_checkpoint_without_asking(tmp_path, impl):
    async def go():
        async with Session(FileStorage(tmp_path / "ws")) as s:
            await s.run("x = 1")
        assert FileStorage(tmp_path / "ws").checkpoints.list() == []
    arun(go())


def test_restore_into_a_fresh_session_after_reset(tmp_path, impl):
    async def go():
        async with Session(FileStorage(tmp_path / "ws"), checkpoint="auto") as s:
            await s.run("x = 1")
            await s.reset()
        async with Session(FileStorage(tmp_path / "ws"), checkpoint="auto") as s:
            assert "NameError" in (await s.run("x")).error   # the reset was checkpointed too
    arun(go())


RESUMABLE = textwrap.dedent("""
    import os, sys
    from torpor.workspace import SyncSession
    s = SyncSession.from_base(sys.argv[1])
    s.start()
    print("resumed" if s.resumed else "fresh", flush=True)
    s.run("import numpy as np\\nsteps = [] if 'steps' not in dir() else steps")
    for i in range(1000):
        r = s.run(f"steps.append({i})\\narr = np.full(1000, len(steps))\\nlen(steps)")
        print(r.value, flush=True)
""")


def test_resume_after_the_process_was_killed(tmp_path, impl):
    """A process running a session is SIGKILLed mid-work; a new process resumes
    from the automatic checkpoint: every run that returned is there."""
    script = tmp_path / "work.py"
    script.write_text(RESUMABLE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ws")],
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "fresh"
    done = 0
    while done < 20:
        done = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()

    async def resume():
        async with Session.from_base(tmp_path / "ws") as s:
            r = await s.run("len(steps), steps[:3], int(arr[0]) == len(steps)")
            n, head, consistent = r.value
            assert n >= done and head == [0, 1, 2] and consistent, r.error
    arun(resume())
