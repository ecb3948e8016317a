"""``Session``: py-code-mode's Session over torpor's workspace storage, with
checkpoints of the running namespace; ``SyncSession``: the same without
``await``, for scripts and notebooks.

    async with Session.from_base("./work") as session:
        await session.run("import numpy as np; grid = np.zeros((512, 512))")
        r = await session.run("grid.sum()")          # r.value is a numpy float

The Session owns nothing but the pairing: the storage (artifacts,
checkpoints), the executor (where code runs), and the checkpoint policy. With
``checkpoint="auto"`` (the default of ``from_base`` / ``inprocess`` /
``subprocess``) every successful run is followed by a checkpoint named
``"auto"``, and ``start`` resumes from it: a crash, a killed worker, or closing
and reopening the workspace the next day loses nothing that ran."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Optional, TypeVar, Union

from .executors.base import Executor
from .executors.inprocess import InProcessConfig, InProcessExecutor, check_timeout
from .files import FileStorage
from .library.deps import canonical_name, check_spec
from .names import check_name
from .results import ExecutionResult

__all__ = ["Session", "SyncSession", "AUTO"]

#: The name of the automatic checkpoint.
AUTO = "auto"

_T = TypeVar("_T")
PathLike = Union[str, "os.PathLike[str]"]


def _check_deps(extra_deps: Optional[Iterable[str]]) -> tuple[str, ...]:
    """``extra_deps`` checked (library/deps.check_spec: names, extras and
    version specifiers only) and written the one way."""
    if extra_deps is None:
        return ()
    if isinstance(extra_deps, str):
        raise TypeError("extra_deps is a tuple of requirements, e.g. ('pandas>=2',), not one str")
    out = []
    for d in extra_deps:
        try:
            out.append(check_spec(d))
        except (TypeError, ValueError) as e:
            raise type(e)(f"extra_deps: {e}") from None
    return tuple(out)


def _check_checkpoint(checkpoint: Optional[str]) -> Optional[str]:
    if checkpoint not in (None, AUTO):
        raise ValueError(f'checkpoint must be "auto" (checkpoint after every successful run '
                         f'and resume at start) or None, not {checkpoint!r}')
    return checkpoint


def _stamp() -> str:
    t = time.time()
    return time.strftime("checkpoint-%Y%m%d-%H%M%S", time.gmtime(t)) + f"-{int(t * 1e6) % 10**6:06d}"


class Session:
    """Runs code against a workspace storage. ``storage``: a FileStorage or
    RedisStorage; ``executor``: where code runs (default: an
    InProcessExecutor); ``checkpoint``: None, or ``"auto"`` to checkpoint the
    namespace after every successful run and resume from it at start.
    ``sync_deps_on_start``: install the configured dependencies at start
    (executors that cannot install say so: ``supports("deps_install")``)."""

    def __init__(self, storage: Any, executor: Optional[Executor] = None,
                 sync_deps_on_start: bool = False, *, checkpoint: Optional[str] = None,
                 extra_deps: Optional[Iterable[str]] = None,
                 allow_runtime_deps: bool = True) -> None:
        if storage is None or not hasattr(storage, "artifacts"):
            raise TypeError(f"Session needs a workspace storage (FileStorage(path) or "
                            f"RedisStorage(url)), not {type(storage).__name__}")
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor must be an InProcessExecutor, a SubprocessExecutor or "
                            f"another Executor, not {type(executor).__name__}")
        self._storage = storage
        self._executor: Executor = executor if executor is not None else InProcessExecutor()
        self.sync_deps_on_start = bool(sync_deps_on_start)
        self.checkpoint_mode = _check_checkpoint(checkpoint)
        self.extra_deps = _check_deps(extra_deps)
        self.allow_runtime_deps = bool(allow_runtime_deps)
        self._started = False
        self._closed = False
        self.resumed: Optional[dict[str, Any]] = None
        #: what ``sync_deps_on_start`` installed (None: it did not run)
        self.deps_synced: Optional[dict[str, Any]] = None
        self._skipped: set[str] = set()

    # --- construction ------------------------------------------------------------

    @classmethod
    def from_base(cls, base: PathLike, *, timeout: Optional[float] = 30.0,
                  extra_deps: Optional[tuple[str, ...]] = None, allow_runtime_deps: bool = True,
                  sync_deps_on_start: bool = False, checkpoint: Optional[str] = AUTO) -> "Session":
        """A session on the workspace folder ``base`` (``{base}/artifacts/``,
        ``{base}/checkpoints/``), running code in process. Resumes the folder's
        automatic checkpoint if it has one."""
        return cls.inprocess(base, timeout=timeout, extra_deps=extra_deps,
                             allow_runtime_deps=allow_runtime_deps,
                             sync_deps_on_start=sync_deps_on_start, checkpoint=checkpoint)

    @classmethod
    def inprocess(cls, base_path: PathLike, *, timeout: Optional[float] = 30.0,
                  extra_deps: Optional[tuple[str, ...]] = None, allow_runtime_deps: bool = True,
                  sync_deps_on_start: bool = False, checkpoint: Optional[str] = AUTO,
                  inline: bool = False) -> "Session":
        """Fastest: code runs in this process (no isolation). ``inline``: see
        InProcessConfig."""
        storage = FileStorage(os.path.expanduser(os.fspath(base_path)))
        executor = InProcessExecutor(InProcessConfig(default_timeout=timeout, inline=inline))
        return cls(storage, executor, sync_deps_on_start, checkpoint=checkpoint,
                   extra_deps=extra_deps, allow_runtime_deps=allow_runtime_deps)

    @classmethod
    def subprocess(cls, base_path: PathLike, *, timeout: Optional[float] = 60.0,
                   extra_deps: Optional[tuple[str, ...]] = None, allow_runtime_deps: bool = True,
                   sync_deps_on_start: bool = False, python_version: Optional[str] = None,
                   cache_venv: bool = True, checkpoint: Optional[str] = AUTO) -> "Session":
        """Process isolation: code runs in a worker process with its own virtual
        environment (made once and kept under the workspace, ``cache_venv``)."""
        from .executors.subproc import SubprocessConfig, SubprocessExecutor
        storage = FileStorage(os.path.expanduser(os.fspath(base_path)))
        executor = SubprocessExecutor(SubprocessConfig(
            default_timeout=timeout, python_version=python_version, cache_venv=cache_venv))
        return cls(storage, executor, sync_deps_on_start, checkpoint=checkpoint,
                   extra_deps=extra_deps, allow_runtime_deps=allow_runtime_deps)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._started else "not started")
        return f"<Session {state} on {self._storage!r} with {self._executor!r}>"

    # --- lifecycle -----------------------------------------------------------------

    @property
    def storage(self) -> Any:
        """The workspace storage (artifacts, checkpoints)."""
        return self._storage

    @property
    def executor(self) -> Executor:
        return self._executor

    async def start(self) -> None:
        """Start the executor; with ``checkpoint="auto"``, restore the automatic
        checkpoint if the storage has one (``self.resumed`` says what came back)."""
        if self._closed:
            raise RuntimeError("this session is closed; make a new one")
        if self._started:
            return
        if hasattr(self._executor, "allow_runtime_deps"):
            setattr(self._executor, "allow_runtime_deps", self.allow_runtime_deps)
        await self._executor.start(self._storage)
        self._started = True
        if self.sync_deps_on_start:
            try:
                self.deps_synced = await self.sync_deps()
            except BaseException:
                await self.close()
                raise
            if self.deps_synced.get("failed"):
                await self.close()
                raise RuntimeError(f"sync_deps_on_start: these dependencies could not be "
                                   f"installed: {self.deps_synced['failed']} (see "
                                   f"supports('deps_install'); Session.subprocess installs "
                                   f"into its own environment). This session is closed: "
                                   f"fix the dependencies (or start without "
                                   f"sync_deps_on_start) in a new one")
        if self.checkpoint_mode == AUTO and self._storage.checkpoints.exists(AUTO):
            try:
                self.resumed = await self._executor.restore_checkpoint(AUTO)
            except BaseException:
                await self.close()
                raise
            self._set_restore_point(AUTO)

    async def close(self) -> None:
        """Stop the executor (a run in flight ends with an error saying the
        session closed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._executor.close()

    async def __aenter__(self) -> "Session":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _ready(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")
        if not self._started:
            raise RuntimeError("the session is not started: use `async with session:` or "
                               "`await session.start()` first")

    def _set_restore_point(self, name: str) -> None:
        # where a fresh worker restores from after the old one died
        if hasattr(self._executor, "restore_from"):
            setattr(self._executor, "restore_from", name)

    # --- running code ------------------------------------------------------------------

    async def run(self, code: str, timeout: Optional[float] = None) -> ExecutionResult:
        """Run ``code``; its last expression's value is ``result.value``.
        ``timeout``: seconds for this run (None: the executor's default)."""
        self._ready()
        if timeout is not None:
            check_timeout(timeout)
        result = await self._executor.run(code, timeout)
        if self.checkpoint_mode == AUTO and result.is_ok:
            await self._auto_checkpoint(result)
        return result

    async def _auto_checkpoint(self, result: Optional[ExecutionResult]) -> None:
        try:
            cp = await self._executor.checkpoint(AUTO)
        except Exception as e:       # the run succeeded: say so, and why nothing was kept
            if result is not None:
                result.notes.append(f"the automatic checkpoint failed ({type(e).__name__}: {e}); "
                                    f"the previous one is kept")
            return
        self._set_restore_point(AUTO)
        skipped = set(cp.get("skipped") or ())
        new = sorted(skipped - self._skipped)
        self._skipped = skipped
        if new and result is not None:
            reasons = "; ".join(f"{k}: {cp['skipped'][k].get('reason', '')}"[:200] for k in new)
            result.notes.append(f"the automatic checkpoint leaves out {', '.join(new)} "
                                f"(cannot be saved: {reasons})")

    async def reset(self) -> None:
        """Forget every user variable; ``artifacts`` and the other injected
        objects stay. With ``checkpoint="auto"`` the empty namespace is
        checkpointed too."""
        self._ready()
        await self._executor.reset()
        if self.checkpoint_mode == AUTO:
            await self._auto_checkpoint(None)

    def supports(self, capability: str) -> bool:
        """Whether the executor does ``capability`` (``"timeout"``,
        ``"process_isolation"``, ``"reset"``, ``"deps_install"``, ``"checkpoint"``...)."""
        return capability in self._executor.supported_capabilities()

    def supported_capabilities(self) -> set[str]:
        return set(self._executor.supported_capabilities())

    # --- checkpoints -------------------------------------------------------------------

    async def checkpoint(self, name: Optional[str] = None) -> dict[str, Any]:
        """Save the executor's whole namespace as checkpoint ``name`` (default: a
        time-stamped name) and return what was saved (``variables``,
        ``skipped`` with reasons, ``bytes_written``...)."""
        self._ready()
        name = _stamp() if name is None else check_name(name, "checkpoint name")
        cp = await self._executor.checkpoint(name)
        self._set_restore_point(name)
        return cp

    async def restore_checkpoint(self, name: str) -> dict[str, Any]:
        """Replace the namespace's user variables with checkpoint ``name``'s. On
        any error the namespace stays as it was."""
        self._ready()
        check_name(name, "checkpoint name")
        out = await self._executor.restore_checkpoint(name)
        self._set_restore_point(name)
        if self.checkpoint_mode == AUTO and name != AUTO:
            await self._auto_checkpoint(None)
        return out

    async def list_checkpoints(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._storage.checkpoints.list) 

    async def delete_checkpoint(self, name: str) -> bool:
        check_name(name, "checkpoint name")
        return await asyncio.to_thread(self._storage.checkpoints.delete, name)

    # --- artifacts (py-code-mode's Session methods) ---------------------------------------

    async def list_artifacts(self) -> list[dict[str, Any]]:
        """Every artifact's info: name, path, description, metadata, created_at..."""
        return await asyncio.to_thread(self._storage.artifacts.list) 

    async def save_artifact(self, name: str, data: Any, description: str = "",
                            metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return await asyncio.to_thread(self._storage.artifacts.save, name, data,
                                       description, metadata)

    async def load_artifact(self, name: str) -> Any:
        return await asyncio.to_thread(self._storage.artifacts.load, name)

    async def delete_artifact(self, name: str) -> None:
        await asyncio.to_thread(self._storage.artifacts.delete, name)

    # --- workflows (library/workflows.py) ------------------------------------------------

    def _library(self, kind: str) -> Any:
        # the executor's own (a SubprocessConfig's tools_path / workflows_path), else the storage's
        get = getattr(self._executor, "library_override", None)
        override = get(kind, self._storage) if get is not None else None
        return override if override is not None else getattr(self._storage, kind)

    async def list_workflows(self) -> list[dict[str, Any]]:
        """Every workflow's summary: name, description, parameters (no source)."""
        return await asyncio.to_thread(self._library('workflows').list)

    async def get_workflow(self, name: str) -> Optional[dict[str, Any]]:
        """Workflow ``name`` with its source, or None."""
        return await asyncio.to_thread(self._library('workflows').get, name)

    async def add_workflow(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        """Save a workflow (Python source defining ``run``; checked, never
        executed here). Saving a name again makes a new version."""
        return await asyncio.to_thread(self._library('workflows').add, name, source, description)

    async def remove_workflow(self, name: str) -> bool:
        """True if workflow ``name`` was removed, False if there was none."""
        return await asyncio.to_thread(self._library('workflows').remove, name)

    async def search_workflows(self, query: str, limit: int = 5) -> list[dict[str, Any]]:
        """The workflows that best match ``query``, best first."""
        return await asyncio.to_thread(self._library('workflows').search, query, limit)

    # --- tools (library/tools.py) ------------------------------------------------------

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool's info: name, description, tags, its options, positionals
        and recipes (library/tools.py)."""
        return await asyncio.to_thread(self._library('tools').list)

    async def search_tools(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """The tools that best match ``query``, best first."""
        return await asyncio.to_thread(self._library('tools').search, query, limit)

    # --- dependencies (library/deps.py) ------------------------------------------------

    def _installer(self) -> Any:
        get = getattr(self._executor, "deps_installer", None)
        return get() if get is not None else None

    async def list_deps(self) -> list[str]:
        """The configured dependencies (``requirements.txt``, then ``extra_deps``)."""
        deps = await asyncio.to_thread(self._storage.deps.list)
        listed = {canonical_name(d) for d in deps}       # one entry per package, the file's first
        return deps + [d for d in self.extra_deps if canonical_name(d) not in listed]

    async def add_dep(self, package: str) -> dict[str, Any]:
        """Add ``package`` (a requirement such as ``"pandas>=2"``) to the
        configuration and install it where the executor installs:
        ``{"installed": [...], "already_present": [...], "failed": [...]}``."""
        self._ready()
        return await asyncio.to_thread(self._storage.deps.add, package, self._installer())

    async def remove_dep(self, package: str) -> dict[str, Any]:
        """Remove ``package`` from the configuration and uninstall it where the
        executor installed it: ``{"removed", "not_found", "failed",
        "removed_from_config"}``."""
        self._ready()
        return await asyncio.to_thread(self._storage.deps.remove, package, self._installer())

    async def sync_deps(self) -> dict[str, Any]:
        """Install every configured dependency (and ``extra_deps``) that is
        missing: ``{"installed", "already_present", "failed"}``."""
        self._ready()
        return await asyncio.to_thread(self._storage.deps.sync, self._installer(),
                                       self.extra_deps)


class _Driver:
    """Runs a SyncSession's coroutines on its own event loop: in the calling
    thread when that thread runs no loop (a script), else (a notebook, whose
    thread runs one) in a helper thread; one call at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        with self._lock:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return self.loop.run_until_complete(coro)
            box: dict[str, Any] = {}

            def drive() -> None:
                try:
                    box["value"] = self.loop.run_until_complete(coro)
                except BaseException as e:     # noqa: B036 - re-raised in the caller
                    box["error"] = e
            t = threading.Thread(target=drive, name="torpor-syncsession")
            t.start()
            t.join()
            if "error" in box:
                raise box["error"]
            return box["value"]

    def close(self) -> None:
        if not self.loop.is_closed():
            self.call(self.loop.shutdown_asyncgens())
            self.loop.close()


class SyncSession:
    """A Session without ``await``:

        with SyncSession.from_base("./work") as s:
            s.run("x = 41")
            s.run("x + 1").value           # 42

    Every method of Session, synchronous. Its in-process executor runs code
    ``inline`` by default: the session's event loop is its own, so nothing
    else waits while code runs, and a small run costs a third."""

    def __init__(self, storage: Any, executor: Optional[Executor] = None,
                 sync_deps_on_start: bool = False, *, checkpoint: Optional[str] = None,
                 extra_deps: Optional[Iterable[str]] = None, allow_runtime_deps: bool = True) -> None:
        if executor is None:
            executor = InProcessExecutor(InProcessConfig(inline=True))
        self.session = Session(storage, executor, sync_deps_on_start, checkpoint=checkpoint,
                               extra_deps=extra_deps, allow_runtime_deps=allow_runtime_deps)
        self._driver = _Driver()

    @classmethod
    def _wrap(cls, session: Session) -> "SyncSession":
        self = cls.__new__(cls)
        self.session = session
        self._driver = _Driver()
        return self

    @classmethod
    def from_base(cls, base: PathLike, *, timeout: Optional[float] = 30.0,
                  extra_deps: Optional[tuple[str, ...]] = None, allow_runtime_deps: bool = True,
                  sync_deps_on_start: bool = False, checkpoint: Optional[str] = AUTO) -> "SyncSession":
        return cls._wrap(Session.inprocess(base, timeout=timeout, extra_deps=extra_deps,
                                           allow_runtime_deps=allow_runtime_deps,
                                           sync_deps_on_start=sync_deps_on_start,
                                           checkpoint=checkpoint, inline=True))

    @classmethod
    def inprocess(cls, base_path: PathLike, *, timeout: Optional[float] = 30.0,
                  extra_deps: Optional[tuple[str, ...]] = None, allow_runtime_deps: bool = True,
                  sync_deps_on_start: bool = False, checkpoint: Optional[str] = AUTO,
                  inline: bool = True) -> "SyncSession":
        return cls._wrap(Session.inprocess(base_path, timeout=timeout, extra_deps=extra_deps,
                                           allow_runtime_deps=allow_runtime_deps,
                                           sync_deps_on_start=sync_deps_on_start,
                                           checkpoint=checkpoint, inline=inline))

    @classmethod
    def subprocess(cls, base_path: PathLike, *, timeout: Optional[float] = 60.0,
                   extra_deps: Optional[tuple[str, ...]] = None, allow_runtime_deps: bool = True,
                   sync_deps_on_start: bool = False, python_version: Optional[str] = None,
                   cache_venv: bool = True, checkpoint: Optional[str] = AUTO) -> "SyncSession":
        return cls._wrap(Session.subprocess(
            base_path, timeout=timeout, extra_deps=extra_deps,
            allow_runtime_deps=allow_runtime_deps, sync_deps_on_start=sync_deps_on_start,
            python_version=python_version, cache_venv=cache_venv, checkpoint=checkpoint))

    def __repr__(self) -> str:
        return "<Sync" + repr(self.session)[1:]

    @property
    def storage(self) -> Any:
        return self.session.storage

    @property
    def resumed(self) -> Optional[dict[str, Any]]:
        return self.session.resumed

    @property
    def deps_synced(self) -> Optional[dict[str, Any]]:
        return self.session.deps_synced

    def start(self) -> None:
        self._driver.call(self.session.start())

    def close(self) -> None:
        try:
            self._driver.call(self.session.close())
        finally:
            self._driver.close()

    def __enter__(self) -> "SyncSession":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, code: str, timeout: Optional[float] = None) -> ExecutionResult:
        return self._driver.call(self.session.run(code, timeout))

    def reset(self) -> None:
        self._driver.call(self.session.reset())

    def supports(self, capability: str) -> bool:
        return self.session.supports(capability)

    def supported_capabilities(self) -> set[str]:
        return self.session.supported_capabilities()

    def checkpoint(self, name: Optional[str] = None) -> dict[str, Any]:
        return self._driver.call(self.session.checkpoint(name))

    def restore_checkpoint(self, name: str) -> dict[str, Any]:
        return self._driver.call(self.session.restore_checkpoint(name))

    def list_checkpoints(self) -> list[dict[str, Any]]:
        return self._driver.call(self.session.list_checkpoints())

    def delete_checkpoint(self, name: str) -> bool:
        return self._driver.call(self.session.delete_checkpoint(name))

    def list_artifacts(self) -> list[dict[str, Any]]:
        return self._driver.call(self.session.list_artifacts())

    def save_artifact(self, name: str, data: Any, description: str = "",
                      metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return self._driver.call(self.session.save_artifact(name, data, description, metadata))

    def load_artifact(self, name: str) -> Any:
        return self._driver.call(self.session.load_artifact(name))

    def delete_artifact(self, name: str) -> None:
        self._driver.call(self.session.delete_artifact(name))

    def list_workflows(self) -> list[dict[str, Any]]:
        return self._driver.call(self.session.list_workflows())

    def get_workflow(self, name: str) -> Optional[dict[str, Any]]:
        return self._driver.call(self.session.get_workflow(name))

    def add_workflow(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        return self._driver.call(self.session.add_workflow(name, source, description))

    def remove_workflow(self, name: str) -> bool:
        return self._driver.call(self.session.remove_workflow(name))

    def search_workflows(self, query: str, limit: int = 5) -> list[dict[str, Any]]:
        return self._driver.call(self.session.search_workflows(query, limit))

    def list_tools(self) -> list[dict[str, Any]]:
        return self._driver.call(self.session.list_tools())

    def search_tools(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return self._driver.call(self.session.search_tools(query, limit))

    def list_deps(self) -> list[str]:
        return self._driver.call(self.session.list_deps())

    def add_dep(self, package: str) -> dict[str, Any]:
        return self._driver.call(self.session.add_dep(package))

    def remove_dep(self, package: str) -> dict[str, Any]:
        return self._driver.call(self.session.remove_dep(package))

    def sync_deps(self) -> dict[str, Any]:
        return self._driver.call(self.session.sync_deps())
