"""Session files: how a Session's state managers become a torpor file and back.

A session file is an ordinary torpor v1 file (docs/FORMAT.md); docs/SESSIONS.md
describes what is in it. The root object is ``{"managers": {tag: manager}}``.
Each object that has snapshot methods (a State, or a registered class) is written,
at its first appearance, as a reduce of ``restore_named`` with the arguments
``(uid, class name, version, snapshot data, skipped)``; later appearances are
ordinary references to it. The walker writes a snapshot's data, with the named
objects in it, before the reduce that needs it, so on load each
``restore_snapshot`` runs after every object its data references: dependency
order falls out of the stream order. A reference back to an object whose data is
still being written is a cycle, reported at save time (CycleError).

Nothing here is global mutable state: a save or restore works on its own
``_SnapshotHook`` / ``_SnapshotRestorer`` and a copy of the session's
registrations, so two sessions can save and restore at once from two threads.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Optional

from ..engine import pipeline
from ..engine.reduce import fix_global_name
from ..engine.safety import Policy
from ..errors import CorruptFileError, CycleError, FormatError, RestoreError, TorporError
from . import state

if TYPE_CHECKING:
    from ..storage import PathOrFile
    from .core import Session

SESSION_VERSION = 1
#: The name session files give the restorer (fixed since format v1).
RESTORER = "torpor._session_io.restore_named"


def restore_named(uid: int, class_name: str, version: int, data: Any, skipped: bool) -> NoReturn:
    """Stands in the file for the session restorer; a plain load never calls it
    (the policy refuses it), Session.restore and open_session replace it."""
    raise FormatError("this is a torpor session file: restore it with Session.restore "
                      "or read it with torpor.open_session")


fix_global_name(restore_named, RESTORER)


# --- save ------------------------------------------------------------------------

class _SnapshotHook:
    """The walker's reducer_override during a session save: State objects and
    registered classes are written as their snapshots."""

    def __init__(self, session: Session, flags: int, table: Mapping[type, Any]) -> None:
        self.session = session
        self.flags = flags
        self.table = table
        # type -> (registered class, methods) or (None, None)
        self.cache: dict[type, tuple[Any, Any]] = {}
        self.classes: dict[str, int] = {}     # class name -> version, of every snapshot written
        self.count = 0

    def wants(self, cls: type) -> bool:
        return self._find(cls)[1] is not None

    def _find(self, cls: type) -> tuple[Any, Any]:
        found = self.cache.get(cls)
        if found is None:
            found = self.cache[cls] = state.find_methods(cls, self.table)
        return found

    def __call__(self, obj: object) -> Optional[tuple[Callable[..., Any], tuple[Any, ...]]]:
        key, methods = self._find(type(obj))
        if methods is None:
            return None
        self.count += 1
        name = state.class_name(key)
        version = getattr(methods, "version", 1)
        data = methods.take_snapshot(obj, self.session, self.flags)
        self.classes[name] = version
        return restore_named, (self.count, name, version, data, data is None)


def write(session: Session, file: PathOrFile, *, managers: Mapping[str, Any],
          table: Mapping[type, Any], options: pipeline.SaveOptions, flags: int,
          metadata: dict[str, Any]) -> int:
    """Write ``managers`` ({tag: manager}) of ``session`` to ``file`` (a path:
    atomically), with the snapshot methods of ``table``; ``options``: the
    engine's SaveOptions."""
    managers = {tag: mgr for tag, mgr in managers.items()
                if getattr(mgr, "include_state", None) is None or mgr.include_state()}
    saver = _SnapshotHook(session, flags, table)
    header = {"torpor_session": SESSION_VERSION, "app": session.app_name,
              "session": metadata, "managers": list(managers), "flags": flags}
    try:
        pipeline.save({"managers": managers}, file, options, metadata=header,
                      reducer_override=saver,
                      toc_extra=lambda: {"session": {"classes": saver.classes,
                                                     "objects": saver.count}})
    except CycleError as e:
        raise _explain_cycle(e) from None
    return saver.count


def _explain_cycle(e: CycleError) -> CycleError:
    steps = []
    for owner, parts in e.cycle:
        # parts: ".<reduce args>", "[3]" (the data's place in the args), then the
        # path inside the snapshot data to the next object on the cycle
        inner = parts[2:] if parts[:2] == [".<reduce args>", "[3]"] else parts
        steps.append((state.class_name(type(owner)), "snapshot" + "".join(inner)))
    first = steps[0][0] if steps else "?"
    chain = " -> ".join(f"{cls} {path}" for cls, path in steps) + f" -> {first}"
    return CycleError(
        f"cannot save the session: these State objects reference each other in a cycle, "
        f"so none can be restored before the others: {chain}. Leave one of these "
        f"references out of its take_snapshot data and re-link it in the other "
        f"object's restore_snapshot.",
        cycle=steps)


# --- restore ---------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _takes_version(func: Callable[..., Any]) -> bool:
    try:
        return "version" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class _SnapshotRestorer:
    """Stands in for restore_named while one session file is decoded."""

    def __init__(self, session: Session, table: Mapping[type, Any]) -> None:
        self.session = session
        self.table = table
        self.found: dict[str, tuple[Any, Any]] = {}
        self.count = 0

    def lookup(self, name: str) -> tuple[Any, Any]:
        found = self.found.get(name)
        if found is None:
            found = self.found[name] = state.find_class(name, self.table)
        return found

    def check_classes(self, classes: object, source: str) -> None:
        """Before anything is rebuilt: every class is loaded and not older than
        the snapshots of it. Lists every problem at once."""
        if not isinstance(classes, dict):
            raise CorruptFileError(f"{source}: the session class table is not well formed")
        missing, newer = [], []
        for name, version in classes.items():
            if type(name) is not str or type(version) is not int:
                raise CorruptFileError(f"{source}: the session class table is not well formed")
            cls, methods = self.lookup(name)
            if cls is None:
                missing.append(name)
            elif version > getattr(methods, "version", 1):
                newer.append(f"{name} (file: version {version}, "
                             f"code: version {getattr(methods, 'version', 1)})")
        problems = []
        if missing:
            problems.append(
                f"it holds objects of {', '.join(missing)}, but no State subclass or "
                f"registered snapshot methods of that name are loaded (torpor never imports "
                f"modules named in a file: import the module that defines the class, or "
                f"register its snapshot methods, then restore again)")
        if newer:
            problems.append(
                f"it was written by newer code than this: {'; '.join(newer)}; update the "
                f"application to restore it")
        if problems:
            raise RestoreError(f"cannot restore {source}: " + "; and ".join(problems) +
                               ". The session was not changed.")

    def __call__(self, uid: int, name: str, version: int, data: Any, skipped: bool) -> Any:
        if type(uid) is not int or type(name) is not str or type(version) is not int:
            raise CorruptFileError("a session object record is not well formed")
        if skipped:
            return None
        cls, methods = self.lookup(name)
        if cls is None:     # only for streams whose class table could not be read first
            self.check_classes({name: version}, "the session")
        current = getattr(methods, "version", 1)
        if version > current:
            self.check_classes({name: version}, "the session")
        restore = methods.restore_snapshot
        try:
            if _takes_version(restore):
                obj = restore(self.session, data, version=version)
            else:
                obj = restore(self.session, data)
        except TorporError:
            raise
        except Exception as e:
            raise RestoreError(
                f"{name}.restore_snapshot raised {type(e).__name__}: {e} (object @{uid}, "
                f"snapshot version {version}); the session was not changed") from e
        self.count += 1
        return obj


def read(session: Session, file: PathOrFile, *, table: Mapping[type, Any],
         trusted: bool = False, allow: Iterable[Any] = (), threads: Optional[int] = None
         ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Decode a session file into ``(header, {tag: manager or None})`` without
    touching ``session`` (restore_snapshot methods must not change it either)."""
    restorer = _SnapshotRestorer(session, table)
    policy = Policy(trusted=trusted, allow=allow, extra={RESTORER: restorer})
    seen: dict[str, dict[str, Any]] = {}

    def before_decode(header: dict[str, Any], toc: dict[str, Any]) -> None:
        seen["header"] = _session_header(header, toc)
        restorer.check_classes(toc.get("session", {}).get("classes", {}), _name(file))

    root = pipeline.load(file, pipeline.LoadOptions(policy, threads=threads),
                         before_decode=before_decode)
    if not isinstance(root, dict) or not isinstance(root.get("managers"), dict):
        raise CorruptFileError(f"{_name(file)}: the session root is not well formed")
    return seen["header"], root["managers"], restorer.count


def _name(file: object) -> str:
    return getattr(file, "name", None) or repr(file)


def _session_header(header: Mapping[str, Any], toc: Mapping[str, Any]) -> dict[str, Any]:
    meta = header.get("metadata")
    if not isinstance(meta, dict) or "torpor_session" not in meta or "session" not in toc:
        raise FormatError(
            "this torpor file is not a session file (it was written by torpor.dump, "
            "not Session.save); load it with torpor.load")
    v = meta["torpor_session"]
    if type(v) is not int or v > SESSION_VERSION:
        raise FormatError(
            f"session file version {v!r} is newer than this torpor understands "
            f"(up to {SESSION_VERSION}); upgrade torpor")
    return meta


def read_metadata(file: PathOrFile) -> dict[str, Any]:
    """The session's header (app, metadata, managers) without restoring anything."""
    header = pipeline.read_header(file)
    return _session_header(header, {"session": None})


# --- reading without the application ---------------------------------------------

class NamedObject:
    """A named object of a session file as open_session shows it: its unique
    name (``uid``), recorded class name and version, and its snapshot ``data``
    (in which other named objects are NamedObjects too)."""

    __slots__ = ("uid", "class_name", "version", "data")

    def __init__(self, uid: int, class_name: str, version: int, data: Any) -> None:
        self.uid = uid
        self.class_name = class_name
        self.version = version
        self.data = data

    def __repr__(self) -> str:
        return f"<@{self.uid} {self.class_name} v{self.version}>"


class Opaque:
    """An instance of a class the file names but open_session does not import:
    ``torpor_class`` is its recorded name; its attributes, reduce arguments,
    state and items are kept as data."""

    torpor_class: str       # a class attribute of each stand-in class

    def __init__(self, *args: Any) -> None:
        self.__dict__["torpor_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict) and all(isinstance(k, str) for k in state):
            self.__dict__.update(state)
        else:
            self.__dict__["torpor_state"] = state

    def append(self, x: Any) -> None:
        self.__dict__.setdefault("torpor_items", []).append(x)

    def extend(self, xs: Iterable[Any]) -> None:
        self.__dict__.setdefault("torpor_items", []).extend(xs)

    def __setitem__(self, k: Any, v: Any) -> None:
        self.__dict__.setdefault("torpor_dict", {})[k] = v

    def __repr__(self) -> str:
        return f"<opaque {self.torpor_class}>"


def _describe(uid: int, class_name: str, version: int, data: Any,
              skipped: bool) -> Optional[NamedObject]:
    if type(uid) is not int or type(class_name) is not str or type(version) is not int:
        raise CorruptFileError("a session object record is not well formed")
    return None if skipped else NamedObject(uid, class_name, version, data)


class _OpaquePolicy(Policy):
    """Resolves every name the default policy refuses to an Opaque stand-in
    class, so nothing from the file is imported or called."""

    def __init__(self) -> None:
        super().__init__(extra={RESTORER: _describe})
        self.standins: dict[str, type] = {}

    def allows(self, module: str, qualname: str) -> bool:
        return True

    def resolve(self, module: str, qualname: str, source: str = "the file") -> Any:
        if Policy.allows(self, module, qualname):
            return super().resolve(module, qualname, source)
        name = f"{module}.{qualname}"
        cls = self.standins.get(name)
        if cls is None:
            cls = self.standins[name] = type(qualname.rpartition(".")[2] or "Opaque", (Opaque,),
                                             {"torpor_class": name, "__module__": module,
                                              "__qualname__": qualname})
            self.permit_call(cls, name)          # an inert stand-in: calling it runs nothing
        return cls


def open_session(file: PathOrFile, *, threads: Optional[int] = None) -> dict[str, Any]:
    """The raw snapshot tree of a session file, for programmatic access without
    the application's classes and without running anything from the file:
    ``{"metadata", "app", "versions", "managers": {tag: NamedObject}, "objects":
    {uid: NamedObject}}``. Classes the file names are never imported: plain
    instances of them come back as Opaque stand-ins."""
    policy = _OpaquePolicy()
    seen: dict[str, dict[str, Any]] = {}

    def before_decode(header: dict[str, Any], toc: dict[str, Any]) -> None:
        seen["header"] = _session_header(header, toc)
        seen["file_header"] = header

    root = pipeline.load(file, pipeline.LoadOptions(policy, threads=threads),
                         before_decode=before_decode)
    if not isinstance(root, dict) or not isinstance(root.get("managers"), dict):
        raise CorruptFileError(f"{_name(file)}: the session root is not well formed")
    h = seen["file_header"]
    meta = seen["header"]
    return {
        "app": meta.get("app"),
        "metadata": meta.get("session", {}),
        "versions": {"session": meta.get("torpor_session"), "format": h.get("format"),
                     "torpor": h.get("torpor"), "python": h.get("python"),
                     "numpy": h.get("numpy")},
        "managers": root["managers"],
        "objects": _named_objects(root["managers"]),
    }


def _named_objects(root: Any) -> dict[int, NamedObject]:
    """Every NamedObject reachable from ``root``, by uid (iterative walk)."""
    found: dict[int, NamedObject] = {}
    seen: set[int] = set()
    todo: list[Any] = [root]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, NamedObject):
            found[o.uid] = o
            todo.append(o.data)
        elif isinstance(o, dict):
            todo.extend(o.keys())
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo.extend(o)
        elif isinstance(o, Opaque):
            todo.append(o.__dict__)
    return dict(sorted(found.items()))


# Files name these under the module they were first written from, wherever the
# code lives now.
fix_global_name(NamedObject, "torpor._session_io.NamedObject")
fix_global_name(Opaque, "torpor._session_io.Opaque")
