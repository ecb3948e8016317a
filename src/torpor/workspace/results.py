"""``ExecutionResult``: what one ``Session.run`` gives back (py-code-mode's, plus
``stderr``, ``duration`` and what the executor had to do to keep going)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ExecutionResult:
    """The outcome of one run.

    ``value``: the value of the code's last expression (None if the code does not
    end with an expression, or failed). ``stdout`` / ``stderr``: what this run
    printed, and only this run. ``error``: the traceback text of what the code
    raised (or of the timeout that stopped it), None when it succeeded.
    ``duration``: seconds from the start of the run to its result.
    ``timed_out``: the run was stopped by its timeout. ``restarted``: the
    executor had to start a fresh worker for this run (the previous one died or
    was killed), and ``notes`` says what it restored. ``notes``: anything else
    the caller should know (a value kept as its repr, a checkpoint that skipped
    variables)."""

    value: Any = None
    stdout: str = ""
    stderr: str = ""
    error: Optional[str] = None
    duration: float = 0.0
    timed_out: bool = False
    restarted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        """True when the code ran to its end without raising."""
        return self.error is None

    def __repr__(self) -> str:
        state = "ok" if self.is_ok else ("timed out" if self.timed_out else "error")
        v = repr(self.value)
        if len(v) > 60:
            v = v[:57] + "..."
        return f"<ExecutionResult {state} value={v} in {self.duration * 1e3:.1f} ms>"
