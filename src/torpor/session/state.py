"""The State API: how application objects take part in a session.

Modelled on UCSF ChimeraX's ``chimerax.core.state``. A class either derives from
``State`` (and may override ``take_snapshot`` / ``restore_snapshot`` /
``reset_state``), or gets the same three functions from a "snapshot methods" class
registered for it with ``register_snapshot_methods``. A session saves such objects
by their snapshot data, gives each a unique name, and restores them in dependency
order; objects of a State subclass that keeps the default take_snapshot and
restore_snapshot are saved in place instead (their class and attributes, restored
into an object created empty), so they may refer to each other in cycles (see
docs/SESSIONS.md).

Loading never imports a module named in a file: a State class is found among the
State subclasses already defined in this process (every subclass registers its
``module.qualname`` here when it is created), a registered class among the
registrations.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from typing_extensions import Self

    from .core import Session

__all__ = ["State", "StateManager", "register_snapshot_methods", "unregister_snapshot_methods",
           "class_name", "copy_containers"]


def class_name(cls: type) -> str:
    """The name a class is recorded under in a session file."""
    return f"{cls.__module__}.{cls.__qualname__}"


# "module.qualname" -> State subclass. Weak, so a class that is thrown away (a test's
# local class) leaves the registry; written only when a class is created.
_state_classes: weakref.WeakValueDictionary[str, type[State]] = weakref.WeakValueDictionary()
# class -> snapshot methods, from register_snapshot_methods (global to the process,
# like ChimeraX's; a Session has its own table on top of this one).
_global_methods: dict[type, Any] = {}
_global_lock = threading.Lock()


class State:
    """Base class of objects saved in sessions.

    Subclasses set ``version`` (an int, default 1) and raise it when the layout of
    their snapshot data changes; the version is stored with every snapshot and
    handed back to ``restore_snapshot`` when it declares a ``version`` parameter,
    so new code can upgrade old data. A file whose snapshot is newer than the
    class is refused before anything is restored.
    """

    #: flags given to take_snapshot: what the snapshot is for
    SCENE = 0x1
    SESSION = 0x2
    INCLUDE_MAPS = 0x4
    ALL = SCENE | SESSION | INCLUDE_MAPS

    version = 1

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _state_classes[class_name(cls)] = cls

    def take_snapshot(self, session: Session, flags: int) -> Any:
        """Return the data that describes this object (or None to leave it out).

        The default is a copy of the instance dict: the dicts, lists, tuples and
        sets in it are copied, the objects in them (arrays, other State objects)
        are not. Other State objects in the data are saved once each, under a
        unique name, and come back as the same object wherever they appear.

        A class that keeps this method and the default restore_snapshot is
        saved in place: a session writes the instance dict as it is (no copy:
        containers shared between objects stay shared) and restores it into an
        object created empty, so such objects may form cycles."""
        return copy_containers(self.__dict__)

    @classmethod
    def restore_snapshot(cls, session: Session, data: Any) -> Self:
        """Create an object from ``data``. Every State object referenced from
        ``data`` is already restored (a cycle through an object with its own
        restore_snapshot is refused at save time). Must not change the session: a restore
        that fails part-way must leave it as it was (the session installs the
        restored state managers only when every object is restored)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(data)
        return obj

    def reset_state(self, session: Session) -> None:
        """Return to the data-less state (used by ``Session.reset``)."""


class StateManager(State):
    """A top-level object of a session (a model list, a camera, ...): saved with
    the session under its tag, reset by ``Session.reset``."""

    def reset_state(self, session: Session) -> None:
        raise NotImplementedError(
            f"{class_name(type(self))} must implement reset_state(session) to be a state manager")

    def include_state(self) -> bool:
        """Whether this manager is saved at all (False: it is left out)."""
        return True

    def init_state_manager(self, session: Session, base_tag: Optional[str] = None) -> str:
        """Register this manager with ``session`` under ``base_tag`` (default: the
        class name), made unique with a numeric suffix if the tag is taken."""
        base = base_tag or type(self).__name__
        tag, n = base, 1
        while session.get_state_manager(tag) is not None:
            n += 1
            tag = f"{base}_{n}"
        session.add_state_manager(tag, self)
        self._state_manager_tag = tag
        return tag


def _check_methods(cls: object, methods: Any) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"register_snapshot_methods takes classes as keys, not {cls!r:.60}")
    missing = [m for m in ("take_snapshot", "restore_snapshot") if not callable(getattr(methods, m, None))]
    if missing:
        raise TypeError(
            f"the snapshot methods for {class_name(cls)} lack {', '.join(missing)}: "
            f"give a class with static take_snapshot(obj, session, flags) and "
            f"restore_snapshot(session, data) (reset_state(obj, session) is optional)")
    v = getattr(methods, "version", 1)
    if type(v) is not int or v < 0:
        raise TypeError(f"{methods!r:.60}.version must be a non-negative int, not {v!r:.60}")


def register_snapshot_methods(methods: dict[type, Any],
                              _table: Optional[dict[type, Any]] = None) -> None:
    """Save classes that do not derive from State through snapshot methods:
    ``{cls: Methods}`` where Methods has static ``take_snapshot(obj, session,
    flags)``, ``restore_snapshot(session, data)`` and optionally
    ``reset_state(obj, session)`` and an int ``version``. Registered classes are
    allowed on load without ``trusted=True``."""
    if not isinstance(methods, dict):
        raise TypeError("register_snapshot_methods takes a dict {class: methods}")
    for cls, m in methods.items():
        _check_methods(cls, m)
    if _table is None:
        with _global_lock:
            _global_methods.update(methods)
    else:
        _table.update(methods)


def unregister_snapshot_methods(*classes: type) -> None:
    with _global_lock:
        for cls in classes:
            _global_methods.pop(cls, None)


def find_methods(cls: type, session_table: Mapping[type, Any],
                 base_type: Optional[type] = None) -> tuple[Any, Any]:
    """(registered class, snapshot methods) for objects of ``cls``: the session's
    registration, then the global one (both also for base classes), then the
    class itself if it derives from ``base_type`` (State); (None, None) if none."""
    for klass in cls.__mro__:
        m = session_table.get(klass)
        if m is None:
            m = _global_methods.get(klass)
        if m is not None:
            return klass, m
    if issubclass(cls, base_type or State):
        return cls, cls
    return None, None


def find_class(name: str, session_table: Mapping[type, Any]) -> tuple[Any, Any]:
    """(class, methods) for a recorded class name, from classes already loaded
    in this process; (None, None) when none is."""
    cls: Optional[type]
    for table in (session_table, _global_methods):
        for cls, m in list(table.items()):
            if class_name(cls) == name:
                return cls, m
    cls = _state_classes.get(name)
    if cls is not None:
        return cls, cls
    return None, None


_COPIED = (dict, list, tuple, set)


def copy_containers(obj: Any) -> Any:
    """Copy the dicts, lists, tuples and sets in ``obj`` (iteratively, keeping
    shared containers shared and cycles cyclic); other objects are not copied.
    What ChimeraX's default snapshot does, without its recursion limit. (Set
    items are hashable, so they hold no mutable container: sets are copied
    shallowly, frozensets kept.)"""
    if type(obj) not in _COPIED:
        return obj
    # id(original) -> copy (a list standing in for a tuple until the end)
    memo: dict[int, Any] = {}
    order: list[Any] = []   # originals in the order they were copied: parents before children
    todo: list[Any] = []    # originals whose copies still need their items (sets are done at once)

    def copy_of(o: Any) -> Any:
        c = memo.get(id(o))
        if c is None:
            t = type(o)
            c = memo[id(o)] = {} if t is dict else set(o) if t is set else []
            if t is not set:
                todo.append(o)
        return c

    copy_of(obj)
    while todo:
        o = todo.pop()
        order.append(o)
        c = memo[id(o)]
        if type(o) is dict:
            for k, v in o.items():
                c[k] = copy_of(v) if type(v) in _COPIED else v
        else:
            c.extend(copy_of(v) if type(v) in _COPIED else v for v in o)
    tuples = [o for o in order if type(o) is tuple]
    if not tuples:
        return memo[id(obj)]
    # Turn each stand-in list into a tuple, innermost first, then point every copy
    # that holds a stand-in at its tuple.
    real: dict[int, tuple[Any, ...]] = {}
    for o in reversed(tuples):
        stand_in = memo[id(o)]
        real[id(stand_in)] = tuple(real.get(id(x), x) for x in stand_in)
    for o in order:
        c = memo[id(o)]
        if type(c) is dict:
            for k, v in c.items():
                if id(v) in real and type(v) is list:
                    c[k] = real[id(v)]
        elif type(o) is list:
            for i, v in enumerate(c):
                if id(v) in real and type(v) is list:
                    c[i] = real[id(v)]
    c = memo[id(obj)]
    return real.get(id(c), c)
