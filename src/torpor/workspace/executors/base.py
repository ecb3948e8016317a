"""What every executor is (``Executor``), and the capability names a Session
reports (py-code-mode's, plus ``checkpoint``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..results import ExecutionResult


class Capability:
    """The names ``Session.supports`` answers for: py-code-mode's, and
    ``checkpoint`` (torpor's: the namespace can be saved and restored)."""

    TIMEOUT = "timeout"
    PROCESS_ISOLATION = "process_isolation"
    CONTAINER_ISOLATION = "container_isolation"
    NETWORK_ISOLATION = "network_isolation"
    NETWORK_FILTERING = "network_filtering"
    FILESYSTEM_ISOLATION = "filesystem_isolation"
    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    RESET = "reset"
    DEPS_INSTALL = "deps_install"
    DEPS_UNINSTALL = "deps_uninstall"
    CHECKPOINT = "checkpoint"

    ALL = frozenset({TIMEOUT, PROCESS_ISOLATION, CONTAINER_ISOLATION, NETWORK_ISOLATION,
                     NETWORK_FILTERING, FILESYSTEM_ISOLATION, MEMORY_LIMIT, CPU_LIMIT, RESET,
                     DEPS_INSTALL, DEPS_UNINSTALL, CHECKPOINT})


#: The module name of every executor's namespace: functions and classes the code
#: defines belong to it, and checkpoints save them by value.
NAMESPACE_MODULE = "__workspace__"

#: The names executors inject into the namespace; ``reset`` and checkpoints keep
#: them out of the user's variables.
INJECTED = ("artifacts", "workflows", "tools", "deps")


@runtime_checkable
class Executor(Protocol):
    """Runs code for a Session. ``start(storage)`` before anything else, ``close``
    at the end (both idempotent); ``run`` never raises for what the code does (it
    is in the result), only for misuse (not started, closed)."""

    def supported_capabilities(self) -> set[str]: ...

    async def start(self, storage: Any) -> None: ...

    async def run(self, code: str, timeout: Optional[float] = None) -> "ExecutionResult": ...

    async def reset(self) -> None: ...

    async def checkpoint(self, name: str) -> dict[str, Any]: ...

    async def restore_checkpoint(self, name: str) -> dict[str, Any]: ...

    async def close(self) -> None: ...
