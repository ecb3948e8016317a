"""A code-running workspace (after py-code-mode's): a ``Session`` runs code in
process or in a worker process and checkpoints its namespace; its storage keeps
artifacts that hold any object graph, on local files (``FileStorage``), a Redis
server (``RedisStorage``) and object stores (fsspec URLs). docs/WORKSPACE.md.

    async with Session.from_base("work") as session:
        await session.run("import numpy as np; grid = np.zeros((512, 512))")

    storage = FileStorage("work")
    storage.artifacts.save("grid", np.zeros((512, 512)), description="initial")
    storage.artifacts.load("grid")
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from ..errors import CheckpointNotFoundError
from .artifacts import Artifacts, ArtifactWarning
from .checkpoints import Checkpoints
from .executors import Capability, Executor, InProcessConfig, InProcessExecutor
from .files import FileStorage
from .names import check_name
from .redis_storage import RedisStorage
from .results import ExecutionResult
from .session import Session, SyncSession

__all__ = ["Session", "SyncSession", "ExecutionResult", "Executor", "Capability",
           "InProcessExecutor", "InProcessConfig", "SubprocessExecutor", "SubprocessConfig",
           "StorageBackend", "FileStorage", "RedisStorage", "Artifacts", "ArtifactWarning",
           "Checkpoints", "CheckpointNotFoundError", "check_name"]


def __getattr__(name: str) -> object:
    # the subprocess executor (and its subprocess, venv machinery) loads when asked for
    if name in ("SubprocessExecutor", "SubprocessConfig"):
        from .executors import subproc
        return getattr(subproc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@runtime_checkable
class StorageBackend(Protocol):
    """What every workspace storage has: its artifacts, the checkpoints of its
    running namespace (kept apart, in ``checkpoints_area``), and the workspace
    it is scoped to (None: the default one)."""

    artifacts: Artifacts
    checkpoints: Checkpoints
    checkpoints_area: Artifacts
    workspace_id: Optional[str]
