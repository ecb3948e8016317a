"""Running one piece of code in a namespace, as a notebook cell runs: its
statements, then the value of its last expression; ``await`` at top level works.
Shared by the in-process executor and the subprocess executor's worker.

The code gets a file name of its own (``<run-3>``) registered in ``linecache``,
so tracebacks show its lines; the traceback text leaves out this module's
frames, so an error reads as the user's code and nothing else."""

from __future__ import annotations

import ast
import asyncio
import inspect
import itertools
import linecache
import traceback
import types
from dataclasses import dataclass
from typing import Any, Optional

_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_counter = itertools.count(1)


class RunTimeout(TimeoutError):
    """Raised inside running code when its run's timeout passes (in process: an
    asynchronous exception in its thread; in a worker: from the SIGINT handler).
    It shows as a ``TimeoutError`` in tracebacks; ``except TimeoutError`` catches it."""

    message = "the run took longer than its timeout"

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (self.message,)))

    @classmethod
    def saying(cls, message: str) -> type["RunTimeout"]:
        """A subclass whose instances say ``message``: an asynchronous exception is
        given as a class (CPython makes the instance), so the class carries it."""
        return type(cls.__name__, (cls,), {"message": message, "__module__": "builtins",
                                           "__qualname__": "TimeoutError"})


@dataclass
class Outcome:
    value: Any = None
    error: Optional[str] = None
    exception: Optional[BaseException] = None

    @property
    def timed_out(self) -> bool:
        return isinstance(self.exception, RunTimeout)


def _compile(code: str, filename: str) -> tuple[Optional[types.CodeType], Optional[types.CodeType]]:
    """(the statements, the last expression) compiled; either may be None."""
    tree = ast.parse(code, filename, "exec", type_comments=False)
    last: Optional[ast.Expression] = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        tail = tree.body.pop()
        assert isinstance(tail, ast.Expr)
        last = ast.Expression(tail.value)
    body = compile(tree, filename, "exec", flags=_FLAGS) if tree.body else None
    expr = compile(last, filename, "eval", flags=_FLAGS) if last is not None else None
    return body, expr


def _is_async(code: types.CodeType) -> bool:
    return bool(code.co_flags & inspect.CO_COROUTINE)


def _evaluate(code: types.CodeType, namespace: dict[str, Any],
              loop_holder: list[Optional[asyncio.AbstractEventLoop]]) -> Any:
    if not _is_async(code):
        return eval(code, namespace)
    coro = eval(code, namespace)
    loop = loop_holder[0]
    if loop is None or loop.is_closed():
        loop = loop_holder[0] = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


def _format(exc: BaseException, filename: str) -> str:
    """The traceback text of ``exc`` from the first frame of the user's code on."""
    tb = exc.__traceback__
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename != filename:
        first = first.tb_next
    if isinstance(exc, SyntaxError) or first is None:
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, first))


@dataclass
class Prepared:
    """Code compiled for one run: its statements, its last expression, whether
    it awaits at top level (then it needs an event loop of its own)."""

    filename: str
    body: Optional[types.CodeType] = None
    expr: Optional[types.CodeType] = None
    error: Optional[Outcome] = None

    @property
    def is_async(self) -> bool:
        return any(c is not None and _is_async(c) for c in (self.body, self.expr))


class Runner:
    """Runs code in ``namespace`` (a module's dict). One event loop per runner
    (created on the first top-level ``await``) so awaited tasks of one run can be
    awaited again by the next."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self._loop: list[Optional[asyncio.AbstractEventLoop]] = [None]

    def prepare(self, code: str) -> Prepared:
        """Compile ``code``; a syntax error is the prepared run's ``error``."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        filename = f"<run-{next(_counter)}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            body, expr = _compile(code, filename)
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as e:
            return Prepared(filename, error=Outcome(error=_format(e, filename), exception=e))
        return Prepared(filename, body, expr)

    def execute(self, p: Prepared) -> Outcome:
        """Run prepared code; never raises for what the code does (BaseExceptions
        such as KeyboardInterrupt and SystemExit included: they end the run, not
        the executor)."""
        if p.error is not None:
            return p.error
        try:
            if p.body is not None:
                _evaluate(p.body, self.namespace, self._loop)
            value = _evaluate(p.expr, self.namespace, self._loop) if p.expr is not None else None
            return Outcome(value=value)
        except BaseException as e:   # noqa: B036 - the run's outcome, whatever it raised
            return Outcome(error=_format(e, p.filename), exception=e)

    def run(self, code: str) -> Outcome:
        """``prepare`` and ``execute``."""
        return self.execute(self.prepare(code))

    def close(self) -> None:
        loop = self._loop[0]
        if loop is not None and not loop.is_closed():
            loop.close()
        self._loop[0] = None
