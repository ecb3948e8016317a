"""TriggerSet: named triggers with handlers, as a Session's ``triggers``.

Modelled on ChimeraX's triggerset: a handler is called as ``func(trigger_name,
data)``; returning ``DEREGISTER`` removes it. A handler that raises is reported
on the set's logger and does not stop the other handlers, nor the save or
restore that fired the trigger.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Optional

#: what a handler is: ``func(trigger_name, data)``; returning DEREGISTER removes it
Handler = Callable[[str, Any], Any]

__all__ = ["TriggerSet", "TriggerHandler", "DEREGISTER"]

#: return this from a handler to remove it
DEREGISTER = "delete handler"


class TriggerHandler:
    """What add_handler returns; pass it to remove_handler."""

    __slots__ = ("trigger_name", "func", "__weakref__")

    def __init__(self, trigger_name: str, func: Handler) -> None:
        self.trigger_name = trigger_name
        self.func = func

    def __repr__(self) -> str:
        return f"<TriggerHandler {self.trigger_name!r} -> {getattr(self.func, '__qualname__', self.func)!r}>"


class TriggerSet:
    def __init__(self, logger: Optional[logging.Logger] = None) -> None:
        self._handlers: dict[str, list[TriggerHandler]] = {}  # name -> handlers, in order added
        self._lock = threading.RLock()
        self.logger = logger or logging.getLogger("torpor.triggers")

    def add_trigger(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"trigger names are strings, not {type(name).__name__}")
        with self._lock:
            if name in self._handlers:
                raise KeyError(f"trigger {name!r} already exists")
            self._handlers[name] = []

    def has_trigger(self, name: str) -> bool:
        return name in self._handlers

    def trigger_names(self) -> list[str]:
        return list(self._handlers)

    def add_handler(self, name: str, func: Handler) -> TriggerHandler:
        if not callable(func):
            raise TypeError(f"a trigger handler must be callable, not {type(func).__name__}")
        with self._lock:
            if name not in self._handlers:
                raise KeyError(f"no trigger named {name!r}; known: {', '.join(map(repr, self._handlers))}")
            h = TriggerHandler(name, func)
            self._handlers[name].append(h)
            return h

    def remove_handler(self, handler: TriggerHandler) -> None:
        with self._lock:
            name: Any = getattr(handler, "trigger_name", None)     # None: not a handler
            hs = self._handlers.get(name)
            if hs is None or handler not in hs:
                raise ValueError(f"{handler!r} is not registered with this trigger set")
            hs.remove(handler)

    def activate_trigger(self, name: str, data: Any = None) -> None:
        """Call every handler of ``name`` with ``(name, data)``, in order added."""
        with self._lock:
            if name not in self._handlers:
                raise KeyError(f"no trigger named {name!r}")
            handlers = list(self._handlers[name])
        for h in handlers:
            try:
                result = h.func(name, data)
            except Exception:
                self.logger.exception("trigger %r: handler %r raised", name, h.func)
                continue
            if isinstance(result, str) and result == DEREGISTER:
                with self._lock:
                    if h in self._handlers[name]:
                        self._handlers[name].remove(h)
