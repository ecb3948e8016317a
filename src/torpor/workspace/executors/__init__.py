"""The executors a workspace Session runs code with: ``InProcessExecutor`` (this
process, a thread of its own) and ``SubprocessExecutor`` (a worker process in its
own virtual environment)."""

from __future__ import annotations

from .base import INJECTED, NAMESPACE_MODULE, Capability, Executor
from .inprocess import InProcessConfig, InProcessExecutor

__all__ = ["Executor", "Capability", "InProcessExecutor", "InProcessConfig", "INJECTED",
           "NAMESPACE_MODULE", "SubprocessExecutor", "SubprocessConfig"]


def __getattr__(name: str) -> object:
    # subproc.py (subprocesses, virtual environments) loads when it is asked for
    if name in ("SubprocessExecutor", "SubprocessConfig"):
        from . import subproc
        return getattr(subproc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
