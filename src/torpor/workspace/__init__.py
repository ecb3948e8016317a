"""A code-running workspace's storage (after py-code-mode's): artifacts that hold
any object graph, on local files (``FileStorage``), a Redis server
(``RedisStorage``) and object stores (fsspec URLs). docs/WORKSPACE.md.

    storage = FileStorage("work")
    storage.artifacts.save("grid", np.zeros((512, 512)), description="initial")
    storage.artifacts.load("grid")
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from .artifacts import Artifacts, ArtifactWarning
from .files import FileStorage
from .names import check_name
from .redis_storage import RedisStorage

__all__ = ["StorageBackend", "FileStorage", "RedisStorage", "Artifacts", "ArtifactWarning",
           "check_name"]


@runtime_checkable
class StorageBackend(Protocol):
    """What every workspace storage has: its artifacts, and the workspace it is
    scoped to (None: the default one)."""

    artifacts: Artifacts
    workspace_id: Optional[str]
