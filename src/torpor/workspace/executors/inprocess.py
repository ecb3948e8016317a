"""``InProcessExecutor``: the code runs in this process, in a private namespace
(a module of its own, never the caller's ``__main__``), on a thread of its own.

Why a thread: the Session's event loop keeps serving other sessions while code
runs, and a timeout can stop the code. At the deadline the executor raises
``RunTimeout`` (a ``TimeoutError``) inside that thread as an asynchronous
exception (``PyThreadState_SetAsyncExc``): Python checks for it between
bytecodes, so a pure-Python loop stops at once, while a long C call
(``time.sleep``, a big BLAS call) finishes first and the exception is raised when
it returns. The run's result comes back only once the code has stopped, so a
timed-out run never leaves code running behind it. Code that catches the
``TimeoutError`` and carries on gets it again every ``retry`` seconds."""

from __future__ import annotations

import asyncio
import ctypes
import queue
import sys
import threading
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

from ..results import ExecutionResult
from . import namespaces
from .base import INJECTED, NAMESPACE_MODULE, Capability
from .capture import capturing
from .running import Outcome, Prepared, Runner, RunTimeout

_R = TypeVar("_R")

# PyThreadState_SetAsyncExc(thread id, exception): two prototypes of the one C
# function, one that passes an exception and one that passes NULL (withdraws it).
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in thread ``ident`` at its next bytecode (a long C call
    finishes first): how timeouts stop code here, and how a workflow's helper
    thread is stopped with the run it belongs to (library/workflows.py)."""
    _set_async_exc(ident, exc_type)


def check_timeout(timeout: Optional[float], what: str = "timeout") -> Optional[float]:
    """None (no limit) or a positive number of seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{what} must be a positive number of seconds or None (no limit), "
                         f"not {timeout!r}")
    return float(timeout)


@dataclass(frozen=True)
class InProcessConfig:
    """``default_timeout``: seconds a run may take unless ``run(timeout=)`` says
    otherwise (None: no limit). ``retry``: after the deadline, how often the
    TimeoutError is raised again in code that caught it. ``inline=True`` runs
    code without top-level ``await`` on the caller's own thread (the event
    loop's): no hand-over between threads, so a small run costs a third, but the
    event loop serves nothing else while code runs; use it where one session has
    the loop to itself (a script, a notebook). ``install_deps=True`` lets
    ``add_dep`` / ``deps.add`` install into this very interpreter (off by
    default: an in-process session only reports which dependencies the host
    already has)."""

    default_timeout: Optional[float] = 30.0
    retry: float = 1.0
    inline: bool = False
    install_deps: bool = False

    def __post_init__(self) -> None:
        check_timeout(self.default_timeout, "default_timeout")
        check_timeout(self.retry, "retry")
        for name in ("inline", "install_deps"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, not {getattr(self, name)!r}")


class _Closed(RunTimeout):
    """Raised in running code when its session closes."""

    message = "the session was closed while this code was running"


_CLOSED = _Closed.saying(_Closed.message)


#: How long the event loop's thread blocks waiting for a job before it awaits it
#: instead: most runs of small code end within it, and a blocking wait on a lock
#: hands the result over in half the time of a wake-up through the event loop
#: (60 against 100 us here), which is most of a small run's overhead.
SPIN = 0.0005


class _Job:
    """One piece of work for the executor's thread, and the hand-over of its
    result to the coroutine waiting for it: by a lock while the loop's thread
    blocks for it (the first ``SPIN`` seconds), through the loop afterwards."""

    __slots__ = ("fn", "_lock", "_mutex", "_outcome", "_fut", "_loop")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self._lock = threading.Lock()
        self._lock.acquire()
        self._mutex = threading.Lock()
        self._outcome: Optional[tuple[bool, Any]] = None
        self._fut: Optional[asyncio.Future[Any]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def finish(self, ok: bool, value: Any) -> None:
        """In the executor's thread: the job is done."""
        with self._mutex:
            self._outcome = (ok, value)
            fut, loop = self._fut, self._loop
        self._lock.release()
        if fut is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(_deliver, fut, ok, value)
            except RuntimeError:
                pass                     # the caller's loop is gone: nobody waits

    async def result(self) -> Any:
        if not self._lock.acquire(timeout=SPIN):
            with self._mutex:
                if self._outcome is None:
                    self._loop = asyncio.get_running_loop()
                    self._fut = self._loop.create_future()
            if self._fut is not None:
                return await self._fut
        assert self._outcome is not None
        ok, value = self._outcome
        if ok:
            return value
        raise value


def _deliver(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class _Watchdog:
    """A thread that calls ``action`` once a deadline passes (and every ``retry``
    seconds after, until disarmed). Arming it for a later deadline than the one
    it sleeps towards does not wake it (it wakes then, and sleeps on): in the
    usual case, runs far shorter than their timeout, a run costs it nothing."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._deadline: Optional[float] = None
        self._action: Optional[Callable[[], Any]] = None
        self._retry = 1.0
        self._waking: Optional[float] = None      # when the thread wakes next (None: never)
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name="torpor-workspace-watchdog")
        self._thread.start()

    def arm(self, seconds: float, action: Callable[[], Any], retry: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            self._deadline, self._action, self._retry = deadline, action, retry
            if self._waking is None or deadline < self._waking:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = self._action = None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    action = self._action
                    self._deadline = now + self._retry
                    if action is not None:
                        action()
                    continue
                self._waking = self._deadline
                self._cond.wait(None if self._deadline is None else self._deadline - now)
                self._waking = None


class InProcessExecutor:
    """Runs code in this process (fastest; no isolation)."""

    def __init__(self, config: Optional[InProcessConfig] = None) -> None:
        self.config = config or InProcessConfig()
        #: False: ``deps.add`` / ``deps.remove`` refuse in code (the Session sets it)
        self.allow_runtime_deps = True
        self.module = types.ModuleType(NAMESPACE_MODULE)
        self._runner = Runner(vars(self.module))
        self._storage: Any = None
        self._jobs: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._tid = 0
        self._state = threading.Lock()
        self._running = False            # user code is running: it may be interrupted
        self._busy: Optional[asyncio.Lock] = None
        self._closed = False
        self._watchdog: Optional[_Watchdog] = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._thread else "not started")
        return f"<InProcessExecutor {state}>"

    def supported_capabilities(self) -> set[str]:
        caps = {Capability.TIMEOUT, Capability.RESET, Capability.CHECKPOINT}
        if self.config.install_deps:
            caps |= {Capability.DEPS_INSTALL, Capability.DEPS_UNINSTALL}
        return caps

    def deps_installer(self) -> Any:
        """Where dependencies are installed: this interpreter when
        ``install_deps=True``, else nowhere (None)."""
        if not self.config.install_deps:
            return None
        from ..library.installer import Installer
        return Installer(sys.executable)

    @property
    def namespace(self) -> dict[str, Any]:
        """The namespace the code runs in (its user variables and the injected
        objects)."""
        return vars(self.module)

    # --- lifecycle -------------------------------------------------------------

    async def start(self, storage: Any) -> None:
        if self._closed:
            raise RuntimeError("this executor is closed; make a new one")
        if self._thread is not None:
            return
        self._storage = storage
        namespaces.inject(vars(self.module), storage, installer=self.deps_installer(),
                          allow_runtime_deps=self.allow_runtime_deps)
        self._watchdog = _Watchdog()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name="torpor-workspace-inprocess")
        self._thread.start()

    async def close(self) -> None:
        """Stop the code if a run is in flight (its result says the session
        closed), and end the executor's thread."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._interrupt(_CLOSED)
        self._jobs.put(None)
        deadline = time.monotonic() + 30.0
        while thread.is_alive() and time.monotonic() < deadline:
            self._interrupt(_CLOSED)
            await asyncio.sleep(0.02)
        if self._watchdog is not None:
            self._watchdog.stop()
        self._runner.close()

    # --- the thread -------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.finish(True, job.fn())
            except BaseException as e:   # noqa: B036 - handed to the awaiting coroutine
                job.finish(False, e)

    async def _submit(self, fn: Callable[[], Any]) -> Any:
        if self._closed:
            raise RuntimeError("the session is closed")
        if self._thread is None:
            raise RuntimeError("the executor is not started: use `async with Session(...)` "
                               "or `await session.start()` first")
        job = _Job(fn)
        self._jobs.put(job)
        return await job.result()

    def _arm(self) -> None:
        with self._state:
            self._tid = threading.get_ident()      # the thread the code runs on
            self._running = True

    def _disarm(self) -> None:
        """No asynchronous exception may reach this thread after this returns:
        the flag is down, and one already set but not yet raised is withdrawn."""
        while True:
            try:
                with self._state:
                    self._running = False
                    _clear_async_exc(self._tid, None)
                return
            except RunTimeout:
                continue              # it landed here, between the code and the lock

    def _interrupt(self, exc: type[BaseException]) -> bool:
        with self._state:
            if not self._running:
                return False
            raise_in_thread(self._tid, exc)
            return True

    # --- running code -------------------------------------------------------------

    def _execute(self, prepared: Prepared, t0: float) -> tuple[Outcome, str, str, float]:
        outcome: Optional[Outcome] = None
        with capturing() as bufs:
            try:
                self._arm()
                try:
                    outcome = self._runner.execute(prepared)
                finally:
                    self._disarm()
            except RunTimeout as e:          # raised after the code's end, before disarming
                if outcome is None:
                    outcome = Outcome(error=f"{type(e).__name__}: {e}\n", exception=e)
        return outcome, bufs["stdout"].getvalue(), bufs["stderr"].getvalue(), \
            time.perf_counter() - t0

    def _lock(self) -> asyncio.Lock:
        if self._busy is None:
            self._busy = asyncio.Lock()
        return self._busy

    async def run(self, code: str, timeout: Optional[float] = None) -> ExecutionResult:
        """Run ``code`` (its last expression's value is the result's ``value``).
        ``timeout``: seconds (None: the config's ``default_timeout``)."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        limit = check_timeout(timeout) if timeout is not None else self.config.default_timeout
        async with self._lock():
            t0 = time.perf_counter()
            prepared = self._runner.prepare(code)
            job = lambda: self._limited(lambda: self._execute(prepared, t0), limit)  # noqa: E731
            if self.config.inline and not prepared.is_async:
                if self._closed:
                    raise RuntimeError("the session is closed")
                outcome, out, err, took = job()           # on this thread: no hand-over
            else:
                outcome, out, err, took = await self._submit(job)
        return ExecutionResult(value=outcome.value, stdout=out, stderr=err, error=outcome.error,
                               duration=took, timed_out=outcome.timed_out
                               and not isinstance(outcome.exception, _Closed))

    def _limited(self, fn: Callable[[], _R], limit: Optional[float]) -> _R:
        """``fn()`` on this thread, interrupted after ``limit`` seconds (None: no
        limit) by the watchdog."""
        if limit is None:
            return fn()
        watchdog = self._watchdog
        assert watchdog is not None, "start() makes the watchdog"
        stop = RunTimeout.saying(f"the run took longer than its timeout of {limit:g} s")
        watchdog.arm(limit, lambda: self._interrupt(stop), self.config.retry)
        try:
            return fn()
        finally:
            watchdog.disarm()

    async def reset(self) -> None:
        """Forget every user variable; the injected objects stay."""
        async with self._lock():
            await self._submit(lambda: namespaces.clear(vars(self.module)))

    async def checkpoint(self, name: str) -> dict[str, Any]:
        async with self._lock():
            return await self._submit(lambda: self._storage.checkpoints.save(
                name, self.module, exclude=INJECTED))

    async def restore_checkpoint(self, name: str) -> dict[str, Any]:
        async with self._lock():
            return await self._submit(lambda: self._storage.checkpoints.restore(
                name, self.module, keep=INJECTED))   
