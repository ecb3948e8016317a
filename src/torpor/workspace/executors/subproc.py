"""``SubprocessExecutor``: code runs in a worker process (worker.py) with its own
virtual environment (venvs.py), talking torpor frames over a pipe pair of its
own (transport.py).

What a run costs and gives back:

- **Values are real objects.** The worker saves the last expression's value
  with torpor; a small one travels in the answer, a large one (over 1 MiB) is
  written once, uncompressed, into a spill file in ``/dev/shm`` and mapped here
  (``mmap=True``): a 256 MiB array costs one memory copy in the worker and
  none here. Values load **safely**: classes outside torpor's default list need
  ``SubprocessConfig(allow=[...])`` or ``trust_values=True``; a value that
  cannot be loaded safely, or cannot be saved at all, comes back as its repr,
  and ``result.notes`` says why and how to allow it.
- **Output** of ``print`` is captured per run in the worker; what C code or
  subprocesses write to the worker's file descriptors 1 and 2 goes to log
  files (``<venv>/logs/``) and is added to the run that wrote it.
- **Timeouts stop the code.** At the deadline the worker gets SIGINT, which
  raises ``TimeoutError`` in the code (``time.sleep`` and other waits in its
  main thread included); code that does not stop within ``grace`` seconds (a
  long C call, code that catches the error) is killed with SIGKILL, with every
  process it started.
- **A dead worker is replaced.** Killed by the timeout, or dead on its own
  (a segfault, ``os._exit``, SIGKILL from outside, the out-of-memory killer):
  the run it was running gets an error naming the cause and the last lines the
  worker wrote to stderr; the next run starts a fresh worker and restores the
  checkpoint ``restore_from`` names (the Session sets it to the last checkpoint
  saved or restored), and its result has ``restarted=True`` and a note.
  ``run`` never raises for what the code or the worker did.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ...engine.safety import Policy
from ...errors import UnsafeLoadError
from ..results import ExecutionResult
from . import namespaces, transport, venvs
from .base import Capability
from .inprocess import check_timeout

if TYPE_CHECKING:
    from ..library.installer import Installer

PathArg = Union[str, "os.PathLike[str]", None]

#: Log files are emptied at a run's start once they are larger than this.
LOG_KEEP = 16 << 20
#: At most this much of what one run wrote to the worker's fds 1 and 2 is kept.
LOG_PER_RUN = 16 << 20
#: Lines of the worker's stderr quoted when it dies.
TAIL_LINES = 20
#: Seconds a worker is given to exit after its requests pipe closes.
EXIT_WAIT = 2.0


class WorkerError(RuntimeError):
    """An exception in the worker (of a checkpoint, restore or reset) whose own
    class cannot be rebuilt here: its type's name and message."""


class WorkerDiedError(RuntimeError):
    """The worker process died during a request that is not a run (a
    checkpoint, a restore)."""


class WorkerStartError(RuntimeError):
    """A worker process did not start (its environment, its interpreter, the
    storage it must open)."""


def _path(value: PathArg, what: str) -> Optional[Path]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or Path) or None, not {type(value).__name__}")
    text = os.fspath(value)
    if not text:
        raise ValueError(f"{what} must not be empty")
    if "://" in text:
        raise ValueError(f"{what} is a local folder, not a URL ({text!r}); an object store's "
                         f"tools and workflows come with the storage: FileStorage({text!r}...)")
    # absolute now: the worker's (or the host's) working folder may change later
    return Path(os.path.abspath(os.path.expanduser(text)))


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value != value or value == float("inf"):
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class SubprocessConfig:
    """How a SubprocessExecutor runs its worker.

    ``python_version``: ``"3.11"`` (a ``python3.11`` on PATH) or None (this
    interpreter). ``venv_path``: the worker's environment (default: beside a
    local FileStorage's artifacts, ``<root>/.venv-py3.11``; else in the user's
    cache folder); ``cache_venv=False`` makes a temporary one instead, removed
    at close. ``default_timeout``: seconds a run may take unless ``run(timeout=)``
    says otherwise (None: no limit). ``startup_timeout``: seconds a worker may
    take to start. ``grace``: seconds between the SIGINT of a timeout and the
    SIGKILL of code that did not stop. ``allow``: classes the executor may
    rebuild from values (``"module.qualname"``, glob patterns, classes; as
    ``torpor.load``'s ``allow=``), ``trust_values=True``: rebuild anything.
    ``tools_path``: py-code-mode's: the code's ``tools`` come from the YAML
    files of that folder instead of the storage's ``tools/``;
    ``workflows_path``: loose ``NAME.py`` workflows come from that folder
    (saved workflows stay in the storage). ``artifacts_path`` is refused:
    artifacts live in the Session's storage (give it ``FileStorage(path)``)."""

    python_version: Optional[str] = None
    venv_path: Optional[Path] = None
    cache_venv: bool = True
    default_timeout: Optional[float] = 60.0
    startup_timeout: float = 60.0
    grace: float = 2.0
    allow: tuple[Any, ...] = ()
    trust_values: bool = False
    tools_path: Optional[Path] = None
    workflows_path: Optional[Path] = None
    artifacts_path: Optional[Path] = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "python_version", venvs.check_version(self.python_version))
        put(self, "venv_path", _path(self.venv_path, "venv_path"))
        for name in ("cache_venv", "trust_values"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.venv_path is not None and not self.cache_venv:
            raise ValueError("venv_path names a kept environment and cache_venv=False asks for "
                             "a temporary one: give one or the other")
        if self.venv_path is not None and self.venv_path.exists() and not self.venv_path.is_dir():
            raise ValueError(f"venv_path {self.venv_path} exists and is not a folder")
        put(self, "default_timeout", check_timeout(self.default_timeout, "default_timeout"))
        put(self, "startup_timeout", _seconds(self.startup_timeout, "startup_timeout"))
        put(self, "grace", _seconds(self.grace, "grace"))
        allow: Any = self.allow
        allow = (allow,) if isinstance(allow, str) else tuple(allow)
        Policy(allow=allow)                   # checks every entry
        put(self, "allow", allow)
        for name in ("tools_path", "workflows_path", "artifacts_path"):
            put(self, name, _path(getattr(self, name), name))
        if self.artifacts_path is not None:
            raise ValueError(f"artifacts_path={str(self.artifacts_path)!r}: artifacts live in "
                             f"the Session's storage, not the executor's; make the Session on "
                             f"FileStorage({str(self.artifacts_path)!r}) instead")


def _str_or_none(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class _Logs:
    """The worker's fd 1 and fd 2: two log files, read by offset per run."""

    def __init__(self, folder: Path, tag: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = {k: folder / f"{tag}.{k}.log" for k in ("stdout", "stderr")}
        flags = os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.write = {k: os.open(p, os.O_WRONLY | flags, 0o600) for k, p in self.paths.items()}
        self.read = {k: os.open(p, os.O_RDONLY | os.O_CLOEXEC) for k, p in self.paths.items()}
        self.marks = {k: 0 for k in self.paths}      # read up to here
        self.starts = {k: 0 for k in self.paths}     # where the current run (or start) began

    def mark(self) -> None:
        """Before a run (or a worker's start): what is in the logs now is not its
        output."""
        for k, fd in self.write.items():
            size = os.fstat(fd).st_size
            if size > LOG_KEEP:
                os.ftruncate(fd, 0)
                size = 0
            self.marks[k] = self.starts[k] = size

    def new(self, k: str, limit: int = LOG_PER_RUN) -> tuple[str, int]:
        """(what was written to ``k`` since the mark, up to ``limit`` bytes; how
        many more bytes there were)."""
        fd = self.read[k]
        size = os.fstat(fd).st_size
        start = self.marks[k]
        if size <= start:
            if size < start:             # emptied meanwhile
                self.marks[k] = size
            return "", 0
        n = min(size - start, limit)
        data = os.pread(fd, n, size - n)
        self.marks[k] = size
        return data.decode("utf-8", "replace"), size - start - n

    def tail(self, k: str = "stderr", lines: int = TAIL_LINES) -> str:
        """The last lines written to ``k`` since the mark."""
        fd = self.read[k]
        size = os.fstat(fd).st_size
        n = max(0, min(size - self.starts[k], 16384))
        text = os.pread(fd, n, size - n).decode("utf-8", "replace")
        crash = text.rfind("Fatal Python error")      # faulthandler's report: from its start
        if crash >= 0:
            text, lines = text[crash:], 3 * lines
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])

    @staticmethod
    def clean(folder: Path) -> None:
        """Delete the logs of executors whose process is gone (killed before
        their close)."""
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            pid = name.split("-", 1)[0]
            if not (name.endswith(".log") and pid.isdigit()) or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                try:
                    os.unlink(folder / name)
                except OSError:
                    pass
            except (PermissionError, OverflowError):
                pass

    def close(self, remove: bool = True) -> None:
        for fd in (*self.write.values(), *self.read.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.write, self.read = {}, {}
        if remove:
            for p in self.paths.values():
                try:
                    p.unlink()
                except OSError:
                    pass


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, venv: venvs.Venv, logs: _Logs, env: dict[str, str]) -> None:
        self.logs = logs
        self.place = transport.SpillPlace(
            transport.spill_dirs(), f"torpor-{os.getpid()}-{secrets.token_hex(4)}-")
        req_r, self.requests = os.pipe()
        self.results, resp_w = os.pipe()
        life_r, self.lifeline = os.pipe()
        for fd in (self.requests, self.results):
            transport.enlarge_pipe(fd)
        passed = (req_r, resp_w, life_r)
        try:
            self.proc = subprocess.Popen(
                [str(venv.python), "-m", "torpor.workspace.executors.worker",
                 f"--fds={req_r},{resp_w},{life_r}"],
                pass_fds=passed, stdin=subprocess.DEVNULL, stdout=logs.write["stdout"],
                stderr=logs.write["stderr"], env=env, start_new_session=True)
        except BaseException:
            for fd in (*passed, self.requests, self.results, self.lifeline):
                os.close(fd)
            raise
        os.close(resp_w)
        os.close(life_r)
        # kept: what the worker has not read of the requests pipe (unread())
        self.requests_r = req_r
        self.pid = self.proc.pid
        os.set_blocking(self.results, False)
        os.set_blocking(self.requests, False)
        self.reader = transport.FrameReader(self.results)
        self.pidfd: Optional[int] = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except OSError:
                self.pidfd = None
        self.pending = False          # an answer is owed (its request's waiter went away)
        self.killed_for: Optional[str] = None
        self.interrupted = False
        self.info: dict[str, Any] = {}
        self.released = False

    def __repr__(self) -> str:
        return f"<worker {self.pid}{'' if self.alive() else ' (ended)'}>"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def unread(self) -> int:
        """Bytes of requests the worker never read (a worker that died before it
        read a run's code never ran it)."""
        try:
            import fcntl
            import termios
            return int.from_bytes(fcntl.ioctl(self.requests_r, termios.FIONREAD, b"\0" * 4),
                                  sys.byteorder)
        except (ImportError, OSError):
            return 0

    async def send(self, msg: dict[str, Any]) -> None:
        """Write a request (the pipe is non-blocking: a request larger than the
        pipe's buffer is written as the worker reads it; BrokenPipeError if the
        worker ends first)."""
        m = memoryview(b"".join(transport.pack(transport.encode(msg))))
        while m.nbytes:
            try:
                m = m[os.write(self.requests, m):]
            except BlockingIOError:
                if not self.alive():
                    raise BrokenPipeError("the worker ended before it read a request") from None
                await asyncio.sleep(0.001)

    def _signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def interrupt(self) -> None:
        self.interrupted = True
        self._signal(signal.SIGINT)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self, why: Optional[str] = None) -> None:
        """SIGKILL to the worker and every process of its group (what the code
        started), once; ``why`` is remembered for the cause."""
        if why is not None and self.killed_for is None:
            self.killed_for = why
        if self.proc.returncode is None:      # not reaped: its pid is still its own
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self._signal(signal.SIGKILL)

    def close_requests(self) -> None:
        """End the requests stream: an idle worker exits."""
        if self.requests >= 0:
            os.close(self.requests)
            self.requests = -1

    async def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def receive(self, timeout: Optional[float]) -> tuple[str, Optional[transport.Frame]]:
        """("frame", the next frame), ("dead", None) once the worker has exited
        without sending one, ("eof", None) if it closed its end but runs on, or
        ("timeout", None) after ``timeout`` seconds."""
        frame = self.reader.pop()
        if frame is not None:
            return "frame", frame
        if self.reader.eof:
            return ("eof", None) if self.alive() else ("dead", None)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[str, Optional[transport.Frame]]] = loop.create_future()

        def settle(what: str, frame: Optional[transport.Frame] = None) -> None:
            if not fut.done():
                fut.set_result((what, frame))

        def readable() -> None:
            if fut.done():
                return
            try:
                self.reader.fill()
                got = self.reader.pop()
            except transport.ProtocolError as e:
                fut.set_exception(e)
                return
            if got is not None:
                settle("frame", got)
            elif self.reader.eof:
                settle("eof" if self.alive() else "dead")

        def exited() -> None:
            readable()                    # what it sent before the end
            if not fut.done() and not self.alive():
                settle("dead")

        handles: list[asyncio.Handle] = []

        def poll() -> None:               # no pidfd: look every 50 ms
            if self.proc.poll() is not None:
                exited()
            elif not fut.done():
                handles.append(loop.call_later(0.05, poll))

        loop.add_reader(self.results, readable)
        if self.pidfd is not None:
            loop.add_reader(self.pidfd, exited)
        else:
            handles.append(loop.call_later(0.05, poll))
        if timeout is not None:
            handles.append(loop.call_later(max(0.0, timeout), settle, "timeout"))
        try:
            return await fut
        finally:
            loop.remove_reader(self.results)
            if self.pidfd is not None:
                loop.remove_reader(self.pidfd)
            for h in handles:
                h.cancel()

    def cause(self) -> str:
        """How the worker ended, as a phrase: "was killed by signal 9 (SIGKILL)..."."""
        rc = self.proc.poll()
        if self.killed_for == "timeout":
            return ("was killed (SIGKILL) because the code did not stop within the grace "
                    "period after its timeout")
        if self.killed_for == "close":
            return "was ended because the session closed"
        if self.killed_for == "broken":
            return "was killed because its answers' stream broke"
        if self.killed_for == "eof":
            return "was killed because it closed its answers' pipe"
        if self.killed_for == "stuck":
            return "was killed because it did not answer after its run was abandoned"
        if rc is None:
            return "is still running"
        if rc < 0:
            sig = -rc
            text = f"was killed by signal {sig} ({_signal_name(sig)})"
            if sig == signal.SIGKILL:
                text += " (from outside this executor, or by the kernel's out-of-memory killer)"
            elif sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                         signal.SIGABRT):
                text += " (a crash in native code)"
            return text
        return f"exited with code {rc}"

    def release(self) -> None:
        """Close the pipes and delete leftover spill files (the worker is gone)."""
        if self.released:
            return
        self.released = True
        for fd in (self.requests, self.requests_r, self.results, self.lifeline, self.pidfd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.requests = -1
        self.place.cleanup()
        self.proc.poll()


class SubprocessExecutor:
    """Runs code in a worker process with its own virtual environment (process
    isolation; values come back as real objects). ``restore_from``: the
    checkpoint a fresh worker restores after the previous one died (the Session
    keeps it up to date)."""

    def __init__(self, config: Optional[SubprocessConfig] = None) -> None:
        if config is not None and not isinstance(config, SubprocessConfig):
            raise TypeError(f"config must be a SubprocessConfig, not {type(config).__name__}")
        self.config = config or SubprocessConfig()
        self.restore_from: Optional[str] = None
        #: False: ``deps.add`` / ``deps.remove`` refuse in code (the Session sets it)
        self.allow_runtime_deps = True
        self._libraries: dict[str, Any] = {}
        self.venv: Optional[venvs.Venv] = None
        self._storage: Any = None
        self._spec: Optional[dict[str, Any]] = None
        self._python: Optional[tuple[str, str]] = None
        self._worker: Optional[_Worker] = None
        self._logs: Optional[_Logs] = None
        self._started = False
        self._closed = False
        self._busy = False
        self._lock_loop: Optional[asyncio.AbstractEventLoop] = None
        self._lock_obj: Optional[asyncio.Lock] = None
        self._locks_guard = threading.Lock()
        self._death: Optional[str] = None         # why the last worker ended, for the next run
        self._pending_notes: list[str] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._started else "not started")
        w = f", worker {self._worker.pid}" if self._worker is not None and self._worker.alive() \
            else ""
        return f"<SubprocessExecutor {state}{w}>"

    def supported_capabilities(self) -> set[str]:
        return {Capability.TIMEOUT, Capability.PROCESS_ISOLATION, Capability.RESET,
                Capability.CHECKPOINT, Capability.DEPS_INSTALL, Capability.DEPS_UNINSTALL}

    def library_override(self, kind: str, storage: Any = None) -> Any:
        """The ``tools`` / ``workflows`` library this executor's ``tools_path`` /
        ``workflows_path`` name (None: the storage's), on ``storage`` (default:
        the one it was started with); made once."""
        if kind not in self._libraries:
            storage = storage if storage is not None else self._storage
            if storage is None:
                raise RuntimeError("the executor is not started and was given no storage")
            self._libraries[kind] = namespaces.library_override(
                kind, storage, self.config.tools_path, self.config.workflows_path)
        return self._libraries[kind]

    def deps_installer(self) -> "Installer":
        """Where the workspace's dependencies are installed: the worker's own
        environment (never the host interpreter; library/installer.py). The
        environment is made at ``start``; a package installed while the worker
        runs is importable by its next run."""
        if self._closed:
            raise RuntimeError("the executor is closed: its environment is no longer used")
        if not self._started or self.venv is None:
            raise RuntimeError("the executor is not started: its environment is made (or "
                               "found) at start; use `async with Session(...)` or "
                               "`await session.start()` first")
        from ..library.installer import Installer
        installer = Installer(str(self.venv.python))
        if installer.targets_host():
            # venv_path names the environment this very process runs in: installing
            # "into the worker" would change the host
            raise RuntimeError(f"venv_path {str(self.venv.path)!r} is the environment this "
                               f"process runs in; the subprocess executor installs only into "
                               f"an environment of its own: give another venv_path (or none)")
        return installer

    @property
    def pid(self) -> Optional[int]:
        """The process id of the current worker (None when there is none running)."""
        w = self._worker
        return w.pid if w is not None and w.alive() else None

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, storage: Any) -> None:
        """Make (or find) the environment and start a worker on ``storage``."""
        if self._closed:
            raise RuntimeError("this executor is closed; make a new one")
        if self._started:
            return
        from ..spec import describe
        self._spec = describe(storage)
        self._storage = storage
        cfg = self.config
        self._python = await asyncio.to_thread(venvs.find_python, cfg.python_version)
        exe, version = self._python
        if cfg.cache_venv:
            where = cfg.venv_path or venvs.location(storage, version, exe)
            self.venv = await asyncio.to_thread(venvs.ensure, where, exe, version)
        else:
            self.venv = await asyncio.to_thread(venvs.temporary, exe, version)
        try:
            self._logs = self._open_logs(self.venv)
            self._worker = await self._spawn()
        except BaseException:
            await self._teardown()
            raise
        self._started = True

    def _open_logs(self, venv: venvs.Venv) -> _Logs:
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        try:
            _Logs.clean(venv.logs)
            return _Logs(venv.logs, tag)
        except OSError:
            return _Logs(Path(tempfile.mkdtemp(prefix="torpor-worker-logs-")), tag)

    async def close(self) -> None:
        """End the worker (a run in flight returns an error saying the session
        closed), close the pipes, remove a temporary environment. Idempotent."""
        if self._closed:
            return
        self._closed = True
        w = self._worker
        grace = self.config.grace
        if w is not None and w.alive():
            if self._busy:
                w.killed_for = w.killed_for or "close"
                w.terminate()
            else:
                w.close_requests()
            if not await w.wait_exit(grace if self._busy else EXIT_WAIT):
                w.terminate()
                if not await w.wait_exit(grace):
                    w.kill("close")
                    await w.wait_exit(5.0)
        deadline = time.monotonic() + grace + 10.0
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await self._teardown()

    async def _teardown(self) -> None:
        w, self._worker = self._worker, None
        if w is not None:
            if w.alive():
                w.kill("close")
                await w.wait_exit(5.0)
            w.release()
        if self._logs is not None:
            self._logs.close()
            self._logs = None
        if self.venv is not None and self.venv.temporary:
            await asyncio.to_thread(venvs.remove, self.venv)

    def __del__(self) -> None:
        w = getattr(self, "_worker", None)
        if w is not None and not w.released:
            try:
                w.kill()
                w.proc.wait(1.0)
                w.release()
            except Exception:
                pass

    # --- workers ---------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        from ...engine import select
        if select.IMPLEMENTATION == "python":      # the walker this process uses
            env["TORPOR_PUREPYTHON"] = "1"
            env.pop("TORPOR_REQUIRE_EXTENSION", None)
        else:
            env.pop("TORPOR_PUREPYTHON", None)
        # this process's torpor, where the environment would not find it
        here = os.path.realpath(Path(__file__).resolve().parents[3])
        assert self._python is not None
        known = venvs.host_paths() if self._python[1] == venvs.host_version() else []
        extra = [os.path.realpath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if here not in known and here not in extra and self._python[1] == venvs.host_version():
            env["PYTHONPATH"] = os.pathsep.join([here] + ([env["PYTHONPATH"]]
                                                         if env.get("PYTHONPATH") else []))
        return env

    async def _spawn(self) -> _Worker:
        assert self.venv is not None and self._logs is not None
        venv = self.venv
        if venv.own and not venv.temporary and not os.path.exists(venv.python):
            # removed since: made again
            assert self._python is not None
            venv = self.venv = await asyncio.to_thread(venvs.ensure, venv.path, *self._python)
        self._logs.mark()
        w = _Worker(venv, self._logs, self._env())
        try:
            await w.send({"op": "hello", "storage": self._spec, "spill_dirs": w.place.dirs,
                          "spill_prefix": w.place.prefix,
                          "allow_runtime_deps": self.allow_runtime_deps,
                          "tools_path": _str_or_none(self.config.tools_path),
                          "workflows_path": _str_or_none(self.config.workflows_path)})
            what, frame = await w.receive(self.config.startup_timeout)
            if what != "frame":
                if what == "timeout":
                    w.kill("start")
                    raise WorkerStartError(
                        f"the worker ({venv.python}) did not start within "
                        f"{self.config.startup_timeout:g} s (startup_timeout)"
                        + self._tail_text())
                if what == "eof" and not await w.wait_exit(1.0):
                    w.kill()
                await w.wait_exit(5.0)
                raise WorkerStartError(f"the worker ({venv.python}) {w.cause()} while starting"
                                       + self._tail_text())
            assert frame is not None
            hello = transport.decode(frame, place=w.place)
            if not hello.get("ok"):
                raise WorkerStartError(f"the worker could not open the workspace: "
                                       f"{hello.get('type')}: {hello.get('message')}")
            w.info = hello
        except BaseException as e:
            w.kill()
            try:
                await w.wait_exit(5.0)
            finally:
                w.release()
            if isinstance(e, BrokenPipeError):
                raise WorkerStartError(f"the worker ({venv.python}) {w.cause()} while "
                                       f"starting" + self._tail_text()) from None
            raise
        return w

    def _tail_text(self) -> str:
        tail = self._logs.tail() if self._logs is not None else ""
        return f"; the last lines it wrote to stderr:\n{tail}" if tail.strip() else ""

    async def _drain(self, w: _Worker) -> None:
        """A request's waiter went away (cancelled) before its answer: take the
        answer now (the code was interrupted then), or kill the worker."""
        what, frame = await w.receive(self.config.grace)
        if what == "frame":
            assert frame is not None
            try:
                answer = transport.decode(frame, place=w.place)
                if isinstance(answer, dict) and answer.get("vkind") == "file":
                    transport.discard((transport.FILE, answer["value"]), w.place)
            except Exception:
                pass
            w.pending = False
            return
        w.kill("stuck")
        await w.wait_exit(5.0)
        w.pending = False

    async def _current(self, restore: bool, doing: str) -> tuple[_Worker, list[str]]:
        """The running worker; a fresh one (with ``restore_from`` restored when
        ``restore``) if it died, with the note that says so."""
        w = self._worker
        if w is not None and w.pending and w.alive():
            await self._drain(w)
        if w is not None and w.alive():
            return w, []
        if w is not None:
            self._death = self._death or f"{w.cause()} after the previous run"
            w.release()
            self._worker = None
        cause = self._death or "was not running"
        w = self._worker = await self._spawn()
        self._death = None
        note = f"the worker process {cause}; a fresh worker was started for {doing}"
        if restore:
            name = self.restore_from
            if name is None:
                note += ("; no checkpoint was saved or restored in this session, so its "
                         "namespace starts empty")
            else:
                try:
                    await self._request(w, {"op": "restore", "name": name})
                    note += f", and checkpoint {name!r} was restored into it"
                except Exception as e:
                    note += (f"; restoring checkpoint {name!r} failed ({type(e).__name__}: "
                             f"{e}), so its namespace starts empty")
        return w, [note]

    # --- requests ----------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        """The lock that queues requests, made for the running event loop (the
        executor is used from one loop at a time; a new loop gets a new lock)."""
        loop = asyncio.get_running_loop()
        with self._locks_guard:
            if self._lock_loop is not loop or self._lock_obj is None:
                self._lock_loop, self._lock_obj = loop, asyncio.Lock()
            return self._lock_obj

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")
        if not self._started:
            raise RuntimeError("the executor is not started: use `async with Session(...)` "
                               "or `await session.start()` first")

    async def _exchange(self, w: _Worker, msg: dict[str, Any], limit: Optional[float]
                        ) -> Optional[transport.Frame]:
        """Send ``msg`` and wait for its answer: the frame, or None if the worker
        died (``w.killed_for`` says if it was killed here). After ``limit``
        seconds the worker gets SIGINT, ``grace`` seconds later SIGKILL."""
        w.interrupted = False
        await w.send(msg)
        w.pending = True
        wait = limit
        phase = 0
        try:
            while True:
                what, frame = await w.receive(wait)
                if what == "frame":
                    w.pending = False
                    return frame
                if what in ("dead", "eof"):
                    if what == "eof" and not await w.wait_exit(1.0):   # exiting, or not?
                        w.kill("eof")
                        await w.wait_exit(5.0)
                    w.pending = False
                    return None
                if phase == 0:                       # the deadline: interrupt the code
                    w.interrupt()
                    phase, wait = 1, self.config.grace
                elif phase == 1:                     # it did not stop: kill it
                    w.kill("timeout")
                    phase, wait = 2, 10.0
                else:                                # SIGKILL and still no end?
                    w.pending = False
                    return None
        except asyncio.CancelledError:
            if w.pending and w.alive():
                w.interrupt()             # stop the code; the next request takes the answer
            raise
        except transport.ProtocolError:
            w.kill("broken")
            await w.wait_exit(5.0)
            w.pending = False
            raise

    async def _request(self, w: _Worker, msg: dict[str, Any]) -> Any:
        """A request that is not a run: its result, or its exception raised here."""
        try:
            frame = await self._exchange(w, msg, None)
        except BrokenPipeError:
            await w.wait_exit(5.0)
            frame = None
        if frame is None:
            cause = w.cause()
            self._death = f"{cause} during {msg['op']}"
            raise WorkerDiedError(f"the worker process {cause} during {msg['op']}; the next run "
                                  f"starts a fresh worker" + self._tail_text())
        answer = transport.decode(frame, place=w.place)
        if answer.get("ok"):
            return answer.get("result")
        raise self._rebuild(answer)

    def _rebuild(self, answer: dict[str, Any]) -> BaseException:
        exc: Any = None
        if answer.get("exception"):
            try:
                exc = transport.decode((transport.INLINE, answer["exception"]),
                                       Policy(allow=["torpor.errors.*"]))
            except Exception:
                exc = None
        if not isinstance(exc, Exception):
            exc = WorkerError(f"{answer.get('type')}: {answer.get('message')}")
        tb = answer.get("traceback")
        if tb and hasattr(exc, "add_note"):
            exc.add_note(f"raised in the worker process:\n{tb.rstrip()}")
        return exc

    def _policy(self) -> Policy:
        return Policy(trusted=self.config.trust_values, allow=self.config.allow)

    async def _value(self, w: _Worker, answer: dict[str, Any]) -> tuple[Any, list[str]]:
        kind = answer.get("vkind")
        if kind in ("none", None):
            return None, []
        if kind in ("plain", "repr"):
            return answer.get("value"), []
        frame = (transport.INLINE if kind == "inline" else transport.FILE, answer["value"])
        try:
            return transport.decode(frame, self._policy(), w.place), []
        except UnsafeLoadError as e:
            if any(n.startswith(("torpor.code.", "cloudpickle.")) for n in e.names):
                why = ("the value is not rebuilt here: it is, or holds, code defined in the "
                       "workspace (a class or function of its own, saved by value), and "
                       "rebuilding code runs it. `value` is its repr; to get the object itself, "
                       "trust the worker's values with SubprocessConfig(trust_values=True)")
            else:
                names = ", ".join(repr(n) for n in e.names) or "a class"
                why = (f"the value is not rebuilt here: it needs {names}, which a value from "
                       f"the worker may not import or call unless allowed (loading it could run "
                       f"code). `value` is its repr; to get the object itself, allow it with "
                       f"SubprocessConfig(allow=[{names}]) or trust the worker's values with "
                       f"SubprocessConfig(trust_values=True)")
        except transport.ProtocolError:
            raise
        except Exception as e:
            why = (f"the value could not be rebuilt here ({type(e).__name__}: {e}); `value` is "
                   f"its repr")
        try:
            text = await self._request(w, {"op": "repr"})
        except Exception as e:
            text = None
            why += f" (its repr could not be had either: {type(e).__name__}: {e})"
        return text, [why]

    async def run(self, code: str, timeout: Optional[float] = None) -> ExecutionResult:
        """Run ``code`` in the worker (its last expression's value is the result's
        ``value``). ``timeout``: seconds (None: the config's ``default_timeout``)."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        limit = check_timeout(timeout) if timeout is not None else self.config.default_timeout
        async with self._lock():
            self._check()
            self._busy = True
            try:
                return await self._run(code, limit)
            finally:
                self._busy = False

    async def _run(self, code: str, limit: Optional[float]) -> ExecutionResult:
        t0 = time.perf_counter()
        notes: list[str] = []
        restarted = False
        w: Optional[_Worker] = None
        frame: Optional[transport.Frame] = None
        for attempt in (0, 1):
            try:
                w, new = await self._current(True, "this run")
            except Exception as e:
                return ExecutionResult(
                    error=f"{type(e).__name__}: could not start a worker for this run: {e}\n",
                    duration=time.perf_counter() - t0, notes=notes + self._pending_notes)
            notes, self._pending_notes = notes + self._pending_notes + new, []
            restarted = restarted or bool(notes)
            if self._closed:
                return self._closed_result(t0)
            assert self._logs is not None
            self._logs.mark()
            try:
                frame = await self._exchange(w, {"op": "run", "code": code, "timeout": limit},
                                             limit)
            except BrokenPipeError:         # it died before it read the code: run it anew
                await w.wait_exit(5.0)
                if attempt == 0:
                    self._death = f"{w.cause()} before it read this run's code"
                    continue
                frame = None
            except transport.ProtocolError as e:
                self._death = f"{w.cause()} ({e})"
                return ExecutionResult(
                    error=f"the worker's answer was unreadable ({e}); the worker was killed, and "
                          f"the next run starts a fresh one\n",
                    duration=time.perf_counter() - t0, restarted=restarted, notes=notes)
            if frame is None and attempt == 0 and w.unread() and not self._closed \
                    and w.killed_for is None:
                self._death = f"{w.cause()} before it read this run's code"
                continue                    # died before it read the code: run it anew
            break
        assert w is not None and self._logs is not None
        out, out_more = self._logs.new("stdout")
        err, err_more = self._logs.new("stderr")
        for k, more in (("stdout", out_more), ("stderr", err_more)):
            if more:
                notes.append(f"the worker's file descriptor {1 if k == 'stdout' else 2} took "
                             f"{more} bytes more output in this run than are kept "
                             f"({LOG_PER_RUN} bytes)")
        if frame is None:
            return self._died_result(w, t0, out, err, restarted, notes, limit)
        try:
            answer = transport.decode(frame, place=w.place)
            value, vnotes = await self._value(w, answer)
        except transport.ProtocolError as e:
            w.kill("broken")
            self._death = f"{w.cause()} ({e})"
            return ExecutionResult(error=f"the worker's answer was unreadable ({e}); the worker "
                                         f"was killed, and the next run starts a fresh one\n",
                                   duration=time.perf_counter() - t0, restarted=restarted,
                                   notes=notes)
        return ExecutionResult(
            value=value, stdout=answer["stdout"] + out, stderr=answer["stderr"] + err,
            error=answer["error"], duration=time.perf_counter() - t0,
            timed_out=bool(answer["timed_out"]), restarted=restarted,
            notes=notes + list(answer.get("notes") or ()) + vnotes)

    def _closed_result(self, t0: float) -> ExecutionResult:
        return ExecutionResult(error="RuntimeError: the session was closed while this code was "
                                     "running: its worker process was ended\n",
                               duration=time.perf_counter() - t0)

    def _died_result(self, w: _Worker, t0: float, out: str, err: str, restarted: bool,
                     notes: list[str], limit: Optional[float]) -> ExecutionResult:
        if self._closed:
            r = self._closed_result(t0)
            r.stdout, r.stderr, r.restarted, r.notes = out, err, restarted, notes
            return r
        cause = w.cause()
        timed_out = w.killed_for == "timeout" or w.interrupted
        self._death = f"{cause} during a run"
        tail = self._tail_text()
        after = (f"the next run starts a fresh worker and restores checkpoint "
                 f"{self.restore_from!r}" if self.restore_from is not None else
                 "the next run starts a fresh worker with an empty namespace (no checkpoint was "
                 "saved or restored in this session)")
        if w.killed_for == "timeout":
            error = (f"TimeoutError: the run took longer than its timeout of {limit:g} s and did "
                     f"not stop within {self.config.grace:g} s of being interrupted (a long call "
                     f"in C code, or code that catches the TimeoutError or blocks SIGINT): the "
                     f"worker process was killed (SIGKILL){tail}\n{after}\n")
        else:
            error = (f"{'TimeoutError' if timed_out else 'WorkerDied'}: the worker process "
                     f"{cause} during this run{tail}\n{after}\n")
        return ExecutionResult(
            error=error,
            stdout=out, stderr=err, duration=time.perf_counter() - t0, timed_out=timed_out,
            restarted=restarted, notes=notes)

    async def _simple(self, op: dict[str, Any], restore: bool) -> Any:
        async with self._lock():
            self._check()
            self._busy = True
            try:
                w, notes = await self._current(restore, f"{op['op']}")
                self._pending_notes.extend(notes)     # the next run's result tells
                return await self._request(w, op)
            finally:
                self._busy = False

    async def reset(self) -> None:
        """Forget every user variable; the injected objects stay."""
        async with self._lock():
            self._check()
            self._busy = True
            try:
                w = self._worker
                if w is None or not w.alive() or w.pending:
                    self._death = None            # an empty namespace is what was asked for
                w, _ = await self._current(False, "reset")
                await self._request(w, {"op": "reset"})
            finally:
                self._busy = False

    async def checkpoint(self, name: str) -> dict[str, Any]:
        """Save the namespace as checkpoint ``name`` (in the worker, into the storage)."""
        return await self._simple({"op": "checkpoint", "name": name}, True)

    async def restore_checkpoint(self, name: str) -> dict[str, Any]:
        """Replace the namespace's user variables with checkpoint ``name``'s."""
        return await self._simple({"op": "restore", "name": name}, False)
