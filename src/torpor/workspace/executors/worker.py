"""The worker process of a SubprocessExecutor:

    python -m torpor.workspace.executors.worker --fds REQUESTS,RESULTS,LIFELINE

It reads requests from the ``REQUESTS`` pipe and answers each on the
``RESULTS`` pipe (torpor frames, transport.py); its own stdout and stderr
(file descriptors 1 and 2) are log files the executor reads: what C code and
subprocesses print there comes back with the run that printed it, and a crash
leaves its last words there (faulthandler is on). ``LIFELINE`` is a pipe
nobody writes to: when it ends, the executor's process is gone and the worker
exits, even in the middle of a run.

The first request is the handshake: the storage's spec (spec.py), which the
worker rebuilds to inject ``artifacts`` into the namespace, and where spill
files go. Then, one at a time:

- ``run``: the code runs in the namespace (a module named ``__workspace__``)
  with ``running.Runner``, its ``print`` output captured. SIGINT during a run
  raises the run's ``TimeoutError`` in the code (the executor sends it at the
  deadline; it interrupts ``time.sleep`` and other waits in the main thread);
  SIGTERM raises "the session was closed" and ends the worker after the run.
  The answer carries the value of the last expression as torpor data: in the
  frame, or in a spill file (arrays are written once into shared memory and
  mapped by the executor); a value torpor cannot save comes back as its repr,
  with a note.
- ``repr``: the repr of the last run's value (when the executor may not load it).
- ``reset``, ``checkpoint``, ``restore``: the namespace cleared, saved or
  restored (``storage.checkpoints``), the injected names kept.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import os
import signal
import sys
import threading
import time
import traceback
import types
from typing import Any, Callable, Optional

from . import namespaces, running, transport
from .base import INJECTED, NAMESPACE_MODULE
from .capture import capturing
from .running import Outcome, Runner, RunTimeout

#: A value of at most this many characters (a str) travels in the answer itself.
PLAIN_STR = 1 << 16
#: The longest repr sent for a value that cannot travel as itself.
REPR_LIMIT = 1 << 20

_Closed = RunTimeout.saying("the session was closed while this code was running")
_NOTHING = object()


def safe_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    try:
        text = repr(value)
    except BaseException as e:      # noqa: B036 - a repr that raises is reported, not fatal
        return f"<{type(value).__module__}.{type(value).__qualname__} object; its repr raised " \
               f"{type(e).__name__}: {e}>"
    if not isinstance(text, str):
        return f"<{type(value).__qualname__} object; its repr is not a str>"
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def error_of(e: BaseException) -> dict[str, Any]:
    """An exception of a request (not of user code) as the executor raises it
    again: the exception itself as torpor data where it can be saved, its type's
    name, message and traceback."""
    try:
        exc: Optional[bytes] = None
        kind, data = transport.encode(e)
        exc = data if isinstance(data, bytes) else None
    except Exception:
        exc = None
    return {"type": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e),
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
            "exception": exc}


def _libc_fflush() -> Callable[[], None]:
    try:
        import ctypes
        fflush = ctypes.CDLL(None).fflush
        fflush.argtypes = [ctypes.c_void_p]
        return lambda: fflush(None)
    except (OSError, AttributeError, ImportError):
        return lambda: None


class Worker:
    def __init__(self, requests: int, results: int) -> None:
        self.requests = requests
        self.results = results
        self.module = types.ModuleType(NAMESPACE_MODULE)
        self.runner = Runner(vars(self.module))
        self.storage: Any = None
        self.place: Optional[transport.SpillPlace] = None
        self.running = False
        self.exiting = False
        self.stop: type[RunTimeout] = RunTimeout
        self.last: Any = _NOTHING
        self._fflush = _libc_fflush()

    # --- signals ---------------------------------------------------------------------

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.running:
            raise self.stop()

    def on_sigterm(self, signum: int, frame: Any) -> None:
        self.exiting = True
        if self.running:
            raise _Closed()
        raise SystemExit(0)

    # --- the stream ---------------------------------------------------------------------

    def recv(self) -> Optional[dict[str, Any]]:
        frame = transport.read_frame(self.requests)
        if frame is None:
            return None
        msg = transport.decode(frame, place=self.place)
        if not isinstance(msg, dict):
            raise transport.ProtocolError(f"a request that is not a dict: {type(msg).__name__}")
        return msg

    def send(self, msg: dict[str, Any]) -> None:
        try:
            frame = transport.encode(msg, self.place)
        except Exception as e:            # cannot happen for plain answers; say so if it does
            frame = transport.encode({"ok": False, **error_of(e)})
        transport.write_frame(self.results, frame)

    def flush(self) -> None:
        """Push what this run printed below ``print`` (C stdio, the original
        streams) into the log files, so the executor reads it with this run."""
        for s in (sys.__stdout__, sys.__stderr__):
            try:
                if s is not None:
                    s.flush()
            except (OSError, ValueError):
                pass
        self._fflush()

    # --- requests ---------------------------------------------------------------------

    def serve(self) -> int:
        signal.signal(signal.SIGINT, self.on_sigint)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        hello = self.recv()
        if hello is None:
            return 0
        try:
            from ..spec import build
            self.place = transport.SpillPlace(hello["spill_dirs"], hello["spill_prefix"])
            self.storage = build(hello["storage"])
            from ..library.installer import Installer
            namespaces.inject(vars(self.module), self.storage,
                              installer=Installer(sys.executable),
                              allow_runtime_deps=bool(hello.get("allow_runtime_deps", True)),
                              tools=namespaces.library_override(
                                  "tools", self.storage, hello.get("tools_path")),
                              workflows=namespaces.library_override(
                                  "workflows", self.storage, None, hello.get("workflows_path")))
        except Exception as e:
            self.send({"ok": False, **error_of(e)})
            return 1
        from ...engine import select
        self.send({"ok": True, "pid": os.getpid(), "python": sys.version.split()[0],
                   "executable": sys.executable, "walker": select.IMPLEMENTATION})
        ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "run": self.run, "repr": self.repr, "reset": self.reset,
            "checkpoint": self.checkpoint, "restore": self.restore, "ping": self.ping}
        while not self.exiting:
            req = self.recv()
            if req is None:
                break
            op = req.get("op")
            if op != "repr":
                self.last = _NOTHING
            handler = ops.get(op) if isinstance(op, str) else None
            if handler is None:
                self.send({"ok": False, "type": "builtins.ValueError",
                           "message": f"unknown request {op!r}", "traceback": "",
                           "exception": None})
                continue
            self.send(handler(req))
        return 0

    def ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "result": None}

    def _call(self, fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            return {"ok": True, "result": fn()}
        except Exception as e:
            return {"ok": False, **error_of(e)}

    def reset(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: namespaces.clear(vars(self.module)))

    def checkpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self.storage.checkpoints.save(req["name"], self.module,
                                                                exclude=INJECTED))

    def restore(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self.storage.checkpoints.restore(req["name"], self.module,
                                                                   keep=INJECTED))

    def repr(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "result": None if self.last is _NOTHING else safe_repr(self.last)}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        limit = req.get("timeout")
        self.stop = RunTimeout.saying(f"the run took longer than its timeout of {limit:g} s") \
            if limit else RunTimeout
        signal.signal(signal.SIGINT, self.on_sigint)       # the code may have replaced it
        # packages installed into the environment since the last run (session.add_dep
        # runs pip from the host) are importable now: forget the cached folder listings
        importlib.invalidate_caches()
        t0 = time.perf_counter()
        outcome: Optional[Outcome] = None
        with capturing() as bufs:
            prepared = self.runner.prepare(req["code"])
            try:
                self.running = True
                try:
                    outcome = self.runner.execute(prepared)
                finally:
                    self.running = False
            except RunTimeout as e:          # raised after the code's end, before the flag fell
                if outcome is None:
                    outcome = Outcome(error=f"{type(e).__name__}: {e}\n", exception=e)
        took = time.perf_counter() - t0
        if isinstance(outcome.exception, RunTimeout) and self._drop_handler(outcome.exception):
            outcome.error = running._format(outcome.exception, prepared.filename)
        self.flush()
        closed = isinstance(outcome.exception, _Closed)
        answer: dict[str, Any] = {
            "ok": True, "stdout": bufs["stdout"].getvalue(), "stderr": bufs["stderr"].getvalue(),
            "error": outcome.error, "timed_out": outcome.timed_out and not closed,
            "closed": closed, "duration": took, "notes": []}
        self._value(answer, outcome.value if outcome.error is None else None)
        return answer

    _HANDLERS = (on_sigint.__code__, on_sigterm.__code__)

    def _drop_handler(self, exc: BaseException) -> bool:
        """Cut the signal handler's frame (where the timeout was raised) off the
        end of ``exc``'s traceback: it reads as the user's code, as in process."""
        tb = exc.__traceback__
        prev = None
        while tb is not None:
            if tb.tb_frame.f_code in self._HANDLERS:
                if prev is None:
                    return False
                prev.tb_next = None
                return True
            prev, tb = tb, tb.tb_next
        return False

    def _value(self, answer: dict[str, Any], value: Any) -> None:
        self.last = value
        if value is None:
            answer["vkind"] = "none"
            return
        t = type(value)
        if t is int or t is float or t is bool or (t is str and len(value) <= PLAIN_STR):
            answer["vkind"], answer["value"] = "plain", value
            return
        try:
            kind, payload = transport.encode(value, self.place)
        except Exception as e:
            answer["vkind"], answer["value"] = "repr", safe_repr(value)
            answer["notes"].append(
                f"the value (a {t.__module__}.{t.__qualname__}) cannot be sent from the worker "
                f"({type(e).__name__}: {e}); `value` is its repr")
            return
        answer["vkind"] = "inline" if kind == transport.INLINE else "file"
        answer["value"] = payload


def _watch_host(fd: int, worker: Worker) -> None:
    """Exit when the executor's process is gone (its end of the lifeline closed),
    whatever the main thread is doing."""
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    if worker.place is not None:
        worker.place.cleanup()
    os._exit(0)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torpor.workspace.executors.worker")
    ap.add_argument("--fds", required=True,
                    help="requests,results,lifeline: the pipes the executor passed")
    args = ap.parse_args(argv)
    fds = [int(x) for x in args.fds.split(",")]
    if len(fds) != 3:
        ap.error("--fds takes three file descriptors")
    requests, results, lifeline = fds
    sys.argv = [""]
    faulthandler.enable(file=2, all_threads=True)        # fd 2: the executor's log file
    for fd in fds:
        os.set_inheritable(fd, False)

    def in_child() -> None:       # a fork of the code (multiprocessing): not the executor's
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:
            pass
    os.register_at_fork(after_in_child=in_child)
    worker = Worker(requests, results)
    threading.Thread(target=_watch_host, args=(lifeline, worker), daemon=True,
                     name="torpor-worker-lifeline").start()
    code = 0
    try:
        code = worker.serve()
    except (BrokenPipeError, transport.ProtocolError, SystemExit) as e:
        if isinstance(e, transport.ProtocolError):
            print(f"torpor worker: {e}", file=sys.__stderr__)
            code = 2
    finally:
        if worker.place is not None:
            worker.place.cleanup()
        worker.flush()
    os._exit(code)          # user threads do not keep the worker alive


if __name__ == "__main__":
    main()
