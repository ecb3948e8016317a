"""The workspace Session with the in-process executor (both walkers): running
code, values, output per run, errors, timeouts that stop the code and leave no
thread behind, reset, two sessions at once, closing with a run in flight,
capabilities, artifacts from the Session and from the code, SyncSession.
The subprocess executor's own tests are test_subprocess.py; checkpoints through
the Session are test_session_checkpoints.py."""

import asyncio
import ctypes
import ctypes.util
import threading
import time

import numpy as np
import pytest

import torpor
from torpor.workspace import (Capability, ExecutionResult, FileStorage, InProcessConfig,
                              InProcessExecutor, Session, SyncSession)


def arun(coro):
    return asyncio.run(coro)


@pytest.fixture(params=[False, True], ids=["thread", "inline"])
def inline(request):
    return request.param


@pytest.fixture
def make_session(tmp_path, impl, inline):
    def make(**config):
        config.setdefault("inline", inline)
        return Session(FileStorage(tmp_path / "ws"), InProcessExecutor(InProcessConfig(**config)))
    return make


def test_values_persist_and_last_expression(make_session):
    async def go():
        async with make_session() as s:
            r = await s.run("import numpy as np\nx = np.arange(6, dtype=np.int16).reshape(2, 3)\nx * 2")
            assert r.is_ok and r.error is None and isinstance(r, ExecutionResult)
            assert r.value.dtype == np.int16 and r.value.shape == (2, 3)
            assert np.array_equal(r.value, np.arange(6).reshape(2, 3) * 2)
            r2 = await s.run("y = x.sum()")              # an assignment: no value
            assert r2.is_ok and r2.value is None
            assert (await s.run("int(y) + 1")).value == 16
            r3 = await s.run("def f(a):\n    return a + y\n[f(1), f(2)]")
            assert r3.value == [16, 17]
            assert r3.duration > 0
    arun(go())


def test_namespace_is_private(make_session):
    import __main__
    async def go():
        async with make_session() as s:
            await s.run("leak_check_variable = 1")
            assert not hasattr(__main__, "leak_check_variable")
            assert (await s.run("__name__")).value == "__workspace__"
    arun(go())


def test_output_is_per_run_and_separated(make_session, capsys):
    async def go():
        async with make_session() as s:
            r = await s.run("import sys\nprint('out', 1)\nprint('err', file=sys.stderr)\n7")
            assert (r.stdout, r.stderr, r.value) == ("out 1\n", "err\n", 7)
            r2 = await s.run("print('second')")
            assert r2.stdout == "second\n" and r2.stderr == ""
    arun(go())
    print("host output")                        # the host's own stream is untouched
    assert capsys.readouterr().out == "host output\n"


def test_error_is_the_traceback_of_the_code(make_session):
    async def go():
        async with make_session() as s:
            r = await s.run("a = 1\ndef g():\n    return 1 / 0\ng()")
            assert not r.is_ok and r.value is None
            assert "ZeroDivisionError" in r.error and 'File "<run-' in r.error
            assert "return 1 / 0" in r.error and "running.py" not in r.error
            assert (await s.run("a")).value == 1           # what ran before the error stays
            r = await s.run("def broken(:\n  pass")
            assert "SyntaxError" in r.error
            r = await s.run("raise SystemExit(3)")         # ends the run, not the session
            assert "SystemExit" in r.error
            r = await s.run("raise KeyboardInterrupt")
            assert "KeyboardInterrupt" in r.error
            assert (await s.run("a + 1")).value == 2
    arun(go())


def test_top_level_await(make_session):
    async def go():
        async with make_session() as s:
            r = await s.run("import asyncio\nawait asyncio.sleep(0.01)\nt = asyncio.ensure_future(asyncio.sleep(0, 'later'))")
            assert r.is_ok, r.error
            assert (await s.run("await t")).value == "later"
    arun(go())


def _threads():
    return {t.ident for t in threading.enumerate()}


@pytest.mark.parametrize("code,stops_at_once", [
    ("while True:\n    pass", True),
    ("n = 0\nwhile True:\n    try:\n        while True: n += 1\n    except TimeoutError:\n        pass", True),
    ("import time\ntime.sleep(1.2)", False),
])
def test_timeout_stops_the_code(make_session, code, stops_at_once):
    async def go():
        async with make_session(retry=0.1) as s:
            await s.run("x = 5")
            before = _threads()
            t0 = time.monotonic()
            r = await s.run(code, timeout=0.3)
            took = time.monotonic() - t0
            assert r.timed_out and not r.is_ok
            assert "TimeoutError" in r.error and "0.3 s" in r.error
            if stops_at_once:
                assert took < 1.0
            else:                                   # a C call finishes first
                assert 1.1 < took < 3.0
            assert _threads() == before             # nothing left running
            r = await s.run("x + 1")                 # and the session goes on
            assert r.is_ok and r.value == 6 and not r.timed_out
    arun(go())


def test_timeout_of_a_c_level_sleep(make_session):
    libc = ctypes.CDLL(ctypes.util.find_library("c"))

    async def go():
        async with make_session() as s:
            s.executor.namespace["libc"] = libc
            t0 = time.monotonic()
            r = await s.run("libc.usleep(600000)\nwhile True: pass", timeout=0.2)
            assert r.timed_out and 0.55 < time.monotonic() - t0 < 2.0
            assert (await s.run("1")).value == 1
    arun(go())


def test_timeout_argument_checked(make_session):
    async def go():
        async with make_session() as s:
            for bad in (0, -1, "1", True):
                with pytest.raises(ValueError, match="timeout"):
                    await s.run("1", timeout=bad)
    arun(go())
    with pytest.raises(ValueError, match="default_timeout"):
        InProcessConfig(default_timeout=0)


def test_large_output(make_session):
    async def go():
        async with make_session() as s:
            r = await s.run("import sys\nfor i in range(100):\n    sys.stdout.write('x' * 1_000_000)\n1")
            assert r.is_ok and len(r.stdout) == 100_000_000 and r.value == 1
            r = await s.run("print('small')")
            assert r.stdout == "small\n"
    arun(go())


def test_reset_keeps_injected_objects(make_session):
    async def go():
        async with make_session() as s:
            await s.reset()                        # reset during nothing
            await s.run("x = 1\ndef f(): pass")
            await s.reset()
            r = await s.run("x")
            assert "NameError" in r.error
            r = await s.run("artifacts.save('a', [1, 2])\nartifacts.load('a')")
            assert r.value == [1, 2]
    arun(go())


def test_artifacts_from_the_session_and_the_code(make_session):
    async def go():
        async with make_session() as s:
            info = await s.save_artifact("grid", np.ones((4, 4), np.float32), "ones",
                                         {"step": 1})
            assert info["name"] == "grid" and info["description"] == "ones"
            r = await s.run("g = artifacts.load('grid')\nartifacts.save('twice', g * 2, "
                            "description='doubled', metadata={'k': 'v'})\ng.dtype.name")
            assert r.value == "float32", r.error
            back = await s.load_artifact("twice")
            assert back.dtype == np.float32 and np.array_equal(back, np.full((4, 4), 2.0))
            names = [(a["name"], a["description"], a["metadata"]) for a in await s.list_artifacts()]
            assert names == [("grid", "ones", {"step": 1}), ("twice", "doubled", {"k": "v"})]
            assert all({"path", "created_at"} <= set(a) for a in await s.list_artifacts())
            assert await s.delete_artifact("grid") is None
            assert [a["name"] for a in await s.list_artifacts()] == ["twice"]
    arun(go())


def test_two_sessions_at_once(tmp_path, impl):
    async def go():
        a = Session(FileStorage(tmp_path / "a"))
        b = Session(FileStorage(tmp_path / "b"))
        async with a, b:
            # both runs must be inside their code at the same time to pass the
            # barrier: one after the other, the first would time out waiting
            meet = threading.Barrier(2, timeout=10)
            a.executor.namespace["meet"] = b.executor.namespace["meet"] = meet
            code = "for i in range(3):\n    print('{}', i)\n    meet.wait()\n'{}'"
            ra, rb = await asyncio.gather(a.run(code.format("A", "A")), b.run(code.format("B", "B")))
            assert ra.is_ok and rb.is_ok, (ra.error, rb.error)
            assert ra.value == "A" and rb.value == "B"
            assert ra.stdout == "".join(f"A {i}\n" for i in range(3))
            assert rb.stdout == "".join(f"B {i}\n" for i in range(3))
            await a.run("only_in_a = 1")
            assert "NameError" in (await b.run("only_in_a")).error
    arun(go())


def test_close_with_a_run_in_flight(tmp_path, impl):
    async def go():
        s = Session(FileStorage(tmp_path / "ws"))
        await s.start()
        before = _threads()
        task = asyncio.ensure_future(s.run("while True:\n    pass", timeout=None))
        await asyncio.sleep(0.2)
        await s.close()
        r = await asyncio.wait_for(task, 5)
        assert not r.is_ok and "closed" in r.error and not r.timed_out
        assert len(_threads() - before) == 0 and len(before - _threads()) >= 1   # its thread ended
        with pytest.raises(RuntimeError, match="closed"):
            await s.run("1")
    arun(go())


def test_misuse_is_a_clear_error(tmp_path, impl):
    async def go():
        s = Session(FileStorage(tmp_path / "ws"))
        with pytest.raises(RuntimeError, match="not started"):
            await s.run("1")
        async with s:
            with pytest.raises(TypeError, match="code must be a str"):
                await s.run(b"1")
    arun(go())
    with pytest.raises(TypeError, match="workspace storage"):
        Session(str(tmp_path))
    with pytest.raises(TypeError, match="executor"):
        Session(FileStorage(tmp_path / "x"), executor=object())
    with pytest.raises(ValueError, match="checkpoint"):
        Session(FileStorage(tmp_path / "x"), checkpoint="always")
    with pytest.raises(ValueError, match="extra_deps"):
        Session.from_base(tmp_path / "y", extra_deps=("https://evil/x.whl",))


def test_capabilities_say_what_the_executor_does(make_session):
    s = make_session()
    assert s.supported_capabilities() == {Capability.TIMEOUT, Capability.RESET,
                                          Capability.CHECKPOINT}
    assert s.supports("timeout") and s.supports("reset")
    assert not s.supports("process_isolation") and not s.supports("deps_install")
    assert s.supported_capabilities() <= Capability.ALL


def test_sync_session(tmp_path, impl):
    with SyncSession.from_base(tmp_path / "ws", checkpoint=None) as s:
        assert s.run("x = 41").is_ok
        assert s.run("x + 1").value == 42
        r = s.run("while True: pass", timeout=0.2)
        assert r.timed_out
        s.save_artifact("n", 3)
        assert s.run("artifacts.load('n') * x").value == 123
        assert [a["name"] for a in s.list_artifacts()] == ["n"]
        s.reset()
        assert "NameError" in s.run("x").error


def test_sync_session_inside_a_running_loop(tmp_path, impl):
    """A notebook's thread runs an event loop: SyncSession still works there."""
    async def notebook_cell():
        with SyncSession.from_base(tmp_path / "ws", checkpoint=None) as s:
            return s.run("6 * 7").value
    assert asyncio.run(notebook_cell()) == 42


def test_workspace_alias():
    assert torpor.Workspace is Session
