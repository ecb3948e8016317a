"""Session: save and restore a whole application, as UCSF ChimeraX does.

    session = torpor.Session("viewer")
    session.models = Models()            # a StateManager: registered under "models"
    session.save("work.torpor")
    fresh = torpor.Session("viewer")
    fresh.restore("work.torpor")         # all or nothing

See docs/SESSIONS.md for the State API, restore order, versions and upgrades.
"""

from __future__ import annotations

import datetime
import getpass
import io
import logging
import os
import platform
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional, TextIO, Union

from .. import storage
from ..engine.pipeline import SaveOptions, check_threads
from ..engine.progress import check as check_progress
from ..errors import RestoreError
from ..version import __version__
from . import files, state
from .files import SESSION_VERSION, NamedObject, Opaque, open_session
from .state import State, StateManager
from .triggers import TriggerSet

if TYPE_CHECKING:
    from ..storage import PathOrFile

__all__ = ["Session", "save", "standard_metadata", "sdump", "open_session", "SUFFIX",
           "SESSION_VERSION", "NamedObject", "Opaque"]

#: the suffix torpor.session.save adds to a path that has none
SUFFIX = ".torpor"

TRIGGERS = ("begin save session", "end save session",
            "begin restore session", "end restore session")

# Attributes of the Session itself: never taken for state managers.
_OWN = frozenset({"app_name", "debug", "silent", "minimal", "metadata", "logger", "triggers",
                  "restore_options"})


def _is_manager(value: object) -> bool:
    if isinstance(value, StateManager):
        return True
    if isinstance(value, type):
        return False
    return all(callable(getattr(value, m, None))
               for m in ("take_snapshot", "restore_snapshot", "reset_state", "include_state"))


class Session:
    """An application's saveable state: its state managers, metadata, logger and
    triggers. Many sessions can live in one process."""

    # set in __init__ (with object.__setattr__: see __setattr__)
    app_name: str
    debug: bool
    silent: bool
    minimal: bool
    metadata: dict[str, Any]
    logger: logging.Logger
    triggers: TriggerSet
    restore_options: dict[str, Any]
    _state_managers: dict[str, Any]
    _snapshot_methods: dict[type, Any]
    _lock: threading.RLock

    if TYPE_CHECKING:
        # The state managers are attributes too (``session.models``).
        def __getattr__(self, name: str) -> Any: ...

    def __init__(self, app_name: str, *, debug: bool = False, silent: bool = False,
                 minimal: bool = False) -> None:
        if not isinstance(app_name, str) or not app_name:
            raise TypeError("Session(app_name): app_name must be a non-empty string")
        setattr_ = object.__setattr__
        setattr_(self, "app_name", app_name)
        setattr_(self, "debug", bool(debug))
        setattr_(self, "silent", bool(silent))
        #: an application hint (ChimeraX: no graphics, no tools); torpor keeps it for the app
        setattr_(self, "minimal", bool(minimal))
        setattr_(self, "metadata", {})
        logger = logging.getLogger("torpor.session").getChild(app_name)
        if debug:
            logger.setLevel(logging.DEBUG)
        elif silent:
            logger.setLevel(logging.ERROR)
        setattr_(self, "logger", logger)
        triggers = TriggerSet(logger)
        for t in TRIGGERS:
            triggers.add_trigger(t)
        setattr_(self, "triggers", triggers)
        #: read by restore_snapshot methods during a restore ("combine": bool, ...)
        setattr_(self, "restore_options", {})
        setattr_(self, "_state_managers", {})
        setattr_(self, "_snapshot_methods", {})
        setattr_(self, "_lock", threading.RLock())

    def __repr__(self) -> str:
        return f"<torpor.Session {self.app_name!r}: {len(self._state_managers)} state managers>"

    # -- state managers ---------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _OWN:
            object.__setattr__(self, name, value)
            return
        was = self._state_managers.get(name)
        object.__setattr__(self, name, value)
        if _is_manager(value):
            self._state_managers[name] = value
        elif was is not None:
            del self._state_managers[name]

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        self._state_managers.pop(name, None)

    def add_state_manager(self, tag: str, obj: Any) -> None:
        if not isinstance(tag, str) or not tag:
            raise TypeError("a state manager's tag must be a non-empty string")
        if not _is_manager(obj):
            raise TypeError(
                f"{type(obj).__qualname__} does not support the StateManager API: it needs "
                f"take_snapshot, restore_snapshot, reset_state and include_state (derive "
                f"from torpor.StateManager)")
        self._state_managers[tag] = obj

    def remove_state_manager(self, tag: str) -> None:
        if tag not in self._state_managers:
            raise KeyError(f"no state manager with tag {tag!r}; tags: {list(self._state_managers)}")
        del self._state_managers[tag]
        if self.__dict__.get(tag) is not None and not tag.startswith("_"):
            object.__delattr__(self, tag)

    def get_state_manager(self, tag: str) -> Any:
        return self._state_managers.get(tag)

    @property
    def state_managers(self) -> dict[str, Any]:
        """{tag: manager}, in the order they were added (a copy)."""
        return dict(self._state_managers)

    # -- snapshot methods -------------------------------------------------------
    def register_snapshot_methods(self, methods: dict[type, Any]) -> None:
        """Like torpor.register_snapshot_methods, for this session only."""
        state.register_snapshot_methods(methods, _table=self._snapshot_methods)

    def snapshot_methods(self, obj: Any, instance: bool = True, base_type: type = State) -> Any:
        """The object with take_snapshot / restore_snapshot / reset_state for
        ``obj`` (an instance, or a class with ``instance=False``), or None."""
        cls = type(obj) if instance else obj
        if not isinstance(cls, type):
            raise TypeError("snapshot_methods(obj, instance=False) needs a class")
        return state.find_methods(cls, self._snapshot_methods, base_type)[1]

    # -- save / restore ---------------------------------------------------------
    def save(self, file: PathOrFile, *, compress: Optional[str] = "lz4",
             flags: int = State.SESSION, include_maps: bool = False,
             version: int = SESSION_VERSION, threads: Optional[int] = None,
             storage_options: Optional[dict[str, Any]] = None, progress: Any = None) -> int:
        """Save every state manager to ``file`` (a path, written atomically, a URL
        such as ``"s3://bucket/work.torpor"``, or a binary stream). ``threads``:
        compression threads; ``storage_options``: fsspec's, for a URL;
        ``progress``: True for a progress bar of long saves, or a callable; all as
        for torpor.dump.
        Returns the number of objects written as snapshots (by their own
        take_snapshot or registered methods); State objects with the default
        snapshot methods are saved in place and not counted."""
        if version != SESSION_VERSION:
            raise ValueError(f"this torpor writes session version {SESSION_VERSION} only, "
                             f"not {version!r}")
        if type(flags) is not int:
            raise TypeError("flags must be an int made of State.SCENE, State.SESSION, ...")
        if include_maps:
            flags |= State.INCLUDE_MAPS
        options = SaveOptions.of(compress, threads, progress=progress)
        file = storage.locate(file, storage_options)
        with self._lock:
            metadata = standard_metadata(self.metadata, app_name=self.app_name)
            self.triggers.activate_trigger("begin save session", self)
            try:
                n = files.write(self, file, managers=dict(self._state_managers),
                                table=dict(self._snapshot_methods), options=options,
                                flags=flags, metadata=metadata)
            finally:
                self.triggers.activate_trigger("end save session", self)
            self.metadata = metadata
            self.logger.info("saved session: %d state managers, %d objects as snapshots",
                             len(self._state_managers), n)
            return n

    def restore(self, file: PathOrFile, *, metadata_only: bool = False, combine: bool = False,
                trusted: bool = False, allow: Iterable[Any] = (),
                threads: Optional[int] = None, storage_options: Optional[dict[str, Any]] = None,
                progress: Any = None) -> Optional[dict[str, Any]]:
        """Restore the session from ``file`` (a path, a URL or a binary stream;
        ``storage_options``: fsspec's, for a URL; ``progress``: a progress bar or
        callable; both as for torpor.load).

        All or nothing: every object is rebuilt first, and only then are the
        restored state managers installed; on any error (a missing class, a
        snapshot newer than the code, a corrupt file, an exception in a
        restore_snapshot) the session is exactly as it was and the error says
        why. Without ``combine``, managers not in the file are reset; with
        ``combine=True`` the file is merged in: ``restore_options["combine"]``
        is True while the managers' restore_snapshot methods run, and each
        decides how to merge with ``session.get_state_manager(tag)``.

        ``metadata_only=True`` returns the file's metadata and changes nothing.
        ``allow`` / ``trusted`` widen what plain objects in snapshot data may be
        (as for torpor.load); State and registered classes need neither."""
        file = storage.locate(file, storage_options)
        if metadata_only:
            return dict(files.read_metadata(file).get("session") or {})
        threads = check_threads(threads)
        check_progress(progress)
        with self._lock:
            previous = self.restore_options
            self.restore_options = {"combine": bool(combine)}
            self.triggers.activate_trigger("begin restore session", self)
            try:
                header, managers, n = files.read(self, file, table=dict(self._snapshot_methods),
                                                 trusted=trusted, allow=allow, threads=threads,
                                                 progress=progress)
                self._install(header, managers, combine)
            finally:
                self.restore_options = previous
                self.triggers.activate_trigger("end restore session", self)
            self.logger.info("restored session: %d state managers, %d objects from snapshots",
                             sum(m is not None for m in managers.values()), n)
        return None

    def _install(self, header: Mapping[str, Any], managers: Mapping[str, Any],
                 combine: bool) -> None:
        """Swap the restored managers in; the only step that changes the session."""
        old = dict(self._state_managers)
        old_attrs = {t: self.__dict__[t] for t in old if t in self.__dict__}
        new = {t: m for t, m in managers.items() if m is not None}
        for t, m in new.items():
            if not _is_manager(m):
                raise RestoreError(f"the restored state manager {t!r} is a {type(m).__qualname__}, "
                                   f"which does not support the StateManager API; "
                                   f"the session was not changed")
        keep = {t: m for t, m in old.items() if t not in new}
        merged = dict(old)
        merged.update(new)
        object.__setattr__(self, "_state_managers", merged)
        for t, m in new.items():
            if t in self.__dict__ or (t.isidentifier() and not t.startswith("_")
                                      and t not in _OWN and not hasattr(type(self), t)):
                object.__setattr__(self, t, m)
        if not combine:
            for t, m in keep.items():
                try:
                    m.reset_state(self)
                except Exception as e:
                    object.__setattr__(self, "_state_managers", old)
                    for t2 in new:
                        if t2 in old_attrs:
                            object.__setattr__(self, t2, old_attrs[t2])
                        elif t2 in self.__dict__:
                            object.__delattr__(self, t2)
                    raise RestoreError(
                        f"state manager {t!r} (not in the file) failed to reset: "
                        f"{type(e).__name__}: {e}; the restored managers were not installed") from e
            self.metadata = dict(header.get("session") or {})

    def reset(self) -> None:
        """Return every state manager to its data-less state."""
        with self._lock:
            for m in list(self._state_managers.values()):
                m.reset_state(self)


# --- module-level functions, ChimeraX style --------------------------------------

def save(session: Session, path: Union[str, os.PathLike[str]], version: int = SESSION_VERSION,
         compress: Optional[str] = "lz4", include_maps: bool = False) -> str:
    """Command-line style save: atomic, adds ``.torpor`` when ``path`` has no suffix."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("torpor.session.save takes a path; use Session.save for streams")
    path = os.fspath(path)
    if not os.path.splitext(path)[1]:
        path += SUFFIX
    session.save(path, compress=compress, include_maps=include_maps, version=version)
    return path


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _merge(previous: Any, value: Any) -> Any:
    """ChimeraX's rule: keep previous values, add the new one if it differs."""
    if previous is None:
        return value
    values = list(previous) if isinstance(previous, (list, tuple)) else [previous]
    if value not in values:
        values.append(value)
    return values[0] if len(values) == 1 else values


def standard_metadata(previous_metadata: Optional[Mapping[str, Any]] = None, *,
                      app_name: str = "torpor",
                      app_version: Optional[str] = None) -> dict[str, Any]:
    """The standard metadata of a saved file, merged with ``previous_metadata``:
    ``generator`` ("app version (os)", HTML user-agent style), ``created`` (kept
    from the previous metadata), ``modified`` (now), ``creator`` and
    ``dateCopyrighted`` (lists when the previous values differ). Dates are ISO
    8601 UTC. Other keys of ``previous_metadata`` are kept."""
    md = dict(previous_metadata or {})
    now = _now()
    version = app_version or (__version__ if app_name == "torpor" else None)
    osname = f"{platform.system()} {platform.release()}".strip()
    md["generator"] = f"{app_name}{' ' + version if version else ''} ({osname}; Python {platform.python_version()})"
    md.setdefault("created", now)
    md["modified"] = now
    user = _user()
    md["creator"] = _merge(md.get("creator"), user)
    md["dateCopyrighted"] = _merge(md.get("dateCopyrighted"), f"\u00a9 {now[:4]} {user}")
    return md


# --- inspection --------------------------------------------------------------------

def sdump(session: Optional[Session], session_file: PathOrFile,
          output: Union[str, os.PathLike[str], TextIO, None] = None) -> str:
    """Write a readable dump of ``session_file`` without restoring it: versions,
    metadata, each state manager and named object, with shared objects shown by
    their unique names (``@3``). ``output``: a path, a text stream, or None for
    stdout. Returns the text."""
    tree = open_session(session_file)
    text = _format_tree(tree, session_file)
    if output is None:
        sys.stdout.write(text)
    elif isinstance(output, (str, os.PathLike)):
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        output.write(text)
    return text


def _format_tree(tree: Mapping[str, Any], source: object) -> str:
    out = io.StringIO()
    w = out.write
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>")
    v = tree["versions"]
    w(f"torpor session file {os.fspath(name) if isinstance(name, os.PathLike) else name}\n")
    w(f"  app: {tree['app']}\n")
    w(f"  session version {v['session']}, format version {v['format']}, written by torpor "
      f"{v['torpor']} (Python {v['python']}, numpy {v['numpy']})\n")
    w("metadata:\n")
    for k, val in tree["metadata"].items():
        w(f"  {k}: {_short(val, 0)}\n")
    w("state managers:\n")
    for tag, m in tree["managers"].items():
        w(f"  {tag}: {_short(m, 0)}\n")
    w("named objects:\n")
    for uid, o in tree["objects"].items():
        w(f"  @{uid} {o.class_name} (version {o.version}):\n")
        w(f"    {_short(o.data, 0)}\n")
    return out.getvalue()


def _short(x: Any, depth: int, limit: int = 8) -> str:
    import numpy as np
    if isinstance(x, NamedObject):
        return f"@{x.uid} {x.class_name}"
    if isinstance(x, np.ndarray):
        return f"array({x.dtype}, shape={x.shape})"
    if depth > 6:
        return "..."
    if isinstance(x, dict):
        items = [f"{_short(k, depth + 1)}: {_short(v, depth + 1)}" for k, v in list(x.items())[:limit]]
        more = f", ... ({len(x) - limit} more)" if len(x) > limit else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(x, (list, tuple, set, frozenset)):
        seq = list(x)[:limit]
        more = f", ... ({len(x) - limit} more)" if len(x) > limit else ""
        body = ", ".join(_short(i, depth + 1) for i in seq) + more
        if isinstance(x, list):
            return f"[{body}]"
        if isinstance(x, tuple):
            return f"({body}{',' if len(x) == 1 else ''})"
        return f"{type(x).__name__}({{{body}}})"
    if isinstance(x, Opaque):
        return f"<{x.torpor_class} {_short(x.__dict__, depth + 1)}>"
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."
