"""Session files: how a Session's state managers become a torpor file and back.

A session file is an ordinary torpor v1 file (docs/FORMAT.md); docs/SESSIONS.md
describes what is in it. The root object is ``{"managers": {tag: manager}}``.

- A State object with the default take_snapshot and restore_snapshot is saved
  *in place*: the walker writes it as it writes any plain instance (its class,
  then its attributes), and a restore creates it empty before it reads the
  attributes, as pickle does. Such objects need no restore order, so they may
  refer to each other (and to themselves, through lists, dicts, tuples) in
  cycles, every identity kept. Their classes are listed in the table of
  contents; loading resolves those names to the classes already loaded.
- Any other object with snapshot methods (its own take_snapshot or
  restore_snapshot, or registered methods) is written, at its first appearance,
  as a reduce of ``restore_named`` with the arguments ``(uid, class name,
  version, snapshot data, skipped)``; later appearances are ordinary references
  to it. The data, with the objects in it, is written before the reduce that
  needs it, so on load each ``restore_snapshot`` runs after every object its
  data references. A reference back to such an object while its data is being
  written is a cycle, reported at save time (CycleError), as is a snapshot that
  leads back to an object restored in place that it is written inside of.

Nothing here is global mutable state: a save or restore works on its own
``_SnapshotHook`` / ``_SnapshotRestorer`` and a copy of the session's
registrations, so two sessions can save and restore at once from two threads.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import numpy as np

from .. import storage
from ..engine import pipeline, select
from ..engine import reduce as _reduce
from ..engine.reduce import SAVE_GLOBAL, SAVE_INST, fix_global_name
from ..engine.safety import Policy
from ..errors import (CorruptFileError, CycleError, FormatError, RestoreError, TorporError,
                      UnsafeLoadError, UnsupportedObjectError, brief)
from ..format.container import make_header
from ..format.writer import ContainerWriter
from . import state

if TYPE_CHECKING:
    from ..storage import PathOrFile
    from .core import Session

# the engine's (untyped) rules for how it writes an object, as the session uses them
classify: Callable[[type], int] = _reduce.classify
global_ref: Callable[[Any], tuple[str, str]] = _reduce.global_ref
reduce_object: Callable[[Any], tuple[Any, ...]] = _reduce.reduce_object

#: 2: State objects with the default snapshot methods are saved in place (their
#: class and attributes), listed in the table of contents under "in_place".
SESSION_VERSION = 2
#: The name session files give the restorer (fixed since format v1).
RESTORER = "torpor._session_io.restore_named"


def restore_named(uid: int, class_name: str, version: int, data: Any, skipped: bool) -> NoReturn:
    """Stands in the file for the session restorer; a plain load never calls it
    (the policy refuses it), Session.restore and open_session replace it."""
    raise FormatError("this is a torpor session file: restore it with Session.restore "
                      "or read it with torpor.open_session")


fix_global_name(restore_named, RESTORER)


# --- save ------------------------------------------------------------------------

_DEFAULT_RESTORE = state.State.__dict__["restore_snapshot"].__func__


def default_methods(cls: type, key: Any, methods: Any) -> bool:
    """Whether ``cls`` is a State subclass with the default take_snapshot and
    restore_snapshot (``key``, ``methods``: what ``find_methods`` found for it)."""
    return (methods is cls and key is cls
            and getattr(cls, "take_snapshot", None) is state.State.take_snapshot
            and getattr(getattr(cls, "restore_snapshot", None), "__func__", None)
            is _DEFAULT_RESTORE)


def in_place_refusal(cls: type, key: Any, methods: Any) -> Optional[str]:
    """None when objects of ``cls`` (whose snapshot methods ``find_methods`` found
    as ``key``, ``methods``) are saved *in place*: a State subclass with the
    default take_snapshot and restore_snapshot, written as its class and
    attributes and restored as pickle restores an instance (created empty, then
    filled), so such objects may refer to each other in cycles. Otherwise the
    reason it is not, for error messages."""
    if not default_methods(cls, key, methods):
        return "it has its own snapshot methods"
    if getattr(cls, "__setstate__", None) is not None:
        return "it defines __setstate__"
    if classify(cls) != SAVE_INST:
        return ("the engine does not save it as a plain instance (it has __slots__, a builtin "
                "base other than object, or its own __reduce__, __reduce_ex__, __getstate__, "
                "__getnewargs__ or __new__)")
    try:
        found = global_ref(cls)
    except UnsupportedObjectError:
        found = None
    if found != (cls.__module__, cls.__qualname__):
        return (f"it cannot be found again as {state.class_name(cls)} (it is defined inside "
                f"a function, or its module holds another object under that name): define "
                f"it at module level")
    return None


#: Values a cycle check does not look into: they hold no objects.
_LEAVES = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray, range, slice})
_CONTAINERS = frozenset({dict, list, tuple, set, frozenset})
_MISSING: Any = object()


class _SnapshotHook:
    """The walker's reducer_override during a session save.

    State objects with the default take_snapshot and restore_snapshot are left
    to the walker (``wants`` is False for their classes): it writes them as
    their class and attributes, created empty first and filled after on
    restore, so they may form cycles. Other State objects and registered classes
    are written as their snapshots: a call of ``restore_named`` whose arguments
    hold the data, so each restore_snapshot runs after everything its data
    refers to. The walker reports a cycle that comes back to such an object
    while its data is written; ``_check_cycle`` finds one that comes back to an
    object restored in place that the snapshot is written inside of."""

    def __init__(self, session: Session, flags: int, table: Mapping[type, Any]) -> None:
        self.session = session
        self.flags = flags
        self.table = table
        # type -> (registered class, methods, saved in place); methods None: no snapshots
        self.cache: dict[type, tuple[Any, Any, bool]] = {}
        self.classes: dict[str, int] = {}     # class name -> version, of every State written
        self.in_place: dict[str, int] = {}    # ... of those saved in place
        self.count = 0
        #: the walker, whose path names a snapshot's ancestors (set by _encode)
        self.encoder: Any = None
        self.private: set[int] = set()        # ids of the session's own containers (the root)
        self.reduced: set[int] = set()        # ids of the objects written as snapshots
        self.early: dict[int, Any] = {}       # id -> snapshot taken early by a cycle check
        self.kinds: dict[type, int] = {}      # classify() of classes a cycle check met
        # id -> (id of the snapshot whose search met it and found no way back, the
        # object, kept alive so its id stays its own): not searched again once that
        # snapshot is written (see _check_cycle)
        self.cleared: dict[int, tuple[int, Any]] = {}
        self.cycle: Optional[CycleError] = None   # raised by _check_cycle (already explained)

    def _find(self, cls: type) -> tuple[Any, Any, bool]:
        found = self.cache.get(cls)
        if found is None:
            key, methods = state.find_methods(cls, self.table)
            in_place = methods is not None and in_place_refusal(cls, key, methods) is None
            found = self.cache[cls] = (key, methods, in_place)
        return found

    def wants(self, cls: type) -> bool:
        key, methods, in_place = self._find(cls)
        if methods is None:
            return False
        if in_place:        # the walker writes these; recorded for the class table
            name = state.class_name(cls)
            self.classes[name] = self.in_place[name] = getattr(cls, "version", 1)
            return False
        return True

    def __call__(self, obj: object) -> Optional[tuple[Callable[..., Any], tuple[Any, ...]]]:
        key, methods, in_place = self._find(type(obj))
        if methods is None or in_place:
            return None
        data = self.early.pop(id(obj), _MISSING)
        if data is _MISSING:
            data = methods.take_snapshot(obj, self.session, self.flags)
        if self.encoder is not None and _holds_objects(data):
            self._check_cycle(obj, data)
        self.reduced.add(id(obj))
        self.count += 1
        name = state.class_name(key)
        version = getattr(methods, "version", 1)
        self.classes[name] = version
        return restore_named, (self.count, name, version, data, data is None)

    # -- a cycle through a snapshot, entered at an object restored in place -------
    def _check_cycle(self, obj: object, data: Any) -> None:
        """Refuse ``obj`` if its snapshot ``data`` leads back to ``obj`` or to an
        object the walker is inside of (an ancestor): on restore, its
        restore_snapshot would run before that object is complete. When every
        ancestor is a container or a snapshot this cannot be (the walker reports
        a cycle back to a snapshot it is writing), so only snapshots written
        inside an object restored in place (or any other instance) are searched.

        What an earlier search met without finding a way back is not searched
        again once that earlier snapshot is written: everything it met is then
        written too, and what is written leads only to what is written or open,
        and the open objects it could lead to were that search's targets (or a
        later search, or the walker, reports the way to them). So the searches
        of many snapshots that share one large graph cost that graph once."""
        parts = self.encoder.path_parts()
        if not any(type(o) not in _CONTAINERS and id(o) not in self.reduced
                   and id(o) not in self.private for o, _ in parts):
            return
        targets = {id(o): i for i, (o, _) in enumerate(parts) if id(o) not in self.private}
        targets[id(obj)] = len(parts)
        cleared = self.cleared
        # id -> (the object, id of the one it was reached from, how: _step(*how))
        via: dict[int, tuple[Any, int, tuple[str, Any]]] = {
            id(data): (data, id(obj), ("snapshot", None))}
        hit = id(data) if id(data) in targets else None
        todo = [data]
        leaves = _LEAVES
        while todo and hit is None:
            o = todo.pop()
            for how, child in self._children(o):
                if type(child) in leaves:
                    continue
                i = id(child)
                if i in via:
                    continue
                by = cleared.get(i)
                if by is not None and by[0] not in targets:     # that snapshot is written
                    continue
                via[i] = (child, id(o), how)
                if i in targets:
                    hit = i
                    break
                todo.append(child)
        if hit is None:
            for i, (o, _, _) in via.items():
                cleared[i] = (id(obj), o)
            return
        steps: list[tuple[str, Any]] = []     # obj's snapshot ... the ancestor hit
        i = hit
        while True:
            child, parent, how = via[i]
            steps.append((_step(*how), child))
            if parent == id(obj):
                break
            i = parent
        steps.reverse()
        if hit != id(obj):                    # ... then the walker's path down to obj
            below = parts[targets[hit]:]
            reached = [o for o, _ in below[1:]] + [obj]
            k = 0
            while k < len(below):
                owner, step = below[k]
                if step == ".<reduce args>" and id(owner) in self.reduced and k + 1 < len(below):
                    steps.append((" snapshot", reached[k + 1]))     # restore_named's args[3]
                    k += 2
                    continue
                steps.append((step, reached[k]))
                k += 1
        self.cycle = _cycle_through(obj, steps, self)
        raise self.cycle

    def _children(self, o: Any) -> Iterator[tuple[tuple[str, Any], Any]]:
        """(how it is reached, child) for each object the walker would write
        inside ``o``; ``_step(*how)`` names the step."""
        t = type(o)
        if t is dict or isinstance(o, dict):
            for k, v in o.items():
                yield ("key", k), k
                yield ("item", k), v
        elif t is list or t is tuple or isinstance(o, (list, tuple)):
            for n, v in enumerate(o):
                yield ("index", n), v
        elif isinstance(o, (set, frozenset)):
            for v in o:
                yield ("member", None), v
        elif isinstance(o, (np.ndarray, np.generic)):
            if isinstance(o, np.ndarray) and o.dtype.hasobject:
                for n, v in enumerate(o.ravel(order="A").tolist()):
                    yield ("flat", n), v
        else:
            key, methods, in_place = self._find(t)
            if in_place:
                for k, v in o.__dict__.items():
                    yield ("attr", k), v
                return
            if methods is not None:
                if id(o) in self.reduced:     # written already, or an ancestor (a target)
                    return
                data = self.early.get(id(o), _MISSING)
                if data is _MISSING:
                    data = self.early[id(o)] = methods.take_snapshot(o, self.session, self.flags)
                yield ("snapshot", None), data
                return
            kind = self.kinds.get(t)
            if kind is None:
                kind = self.kinds[t] = classify(t)
            if kind == SAVE_INST:
                for k, v in vars(o).items():
                    yield ("attr", k), v
            elif kind != SAVE_GLOBAL:
                try:
                    rv = reduce_object(o)
                except UnsupportedObjectError:
                    return
                if rv[0] is not None:
                    for part, v in zip(("reduce args", "state", "list items", "dict items"), rv[1:5]):
                        yield ("part", part), v


def _step(how: str, key: Any) -> str:
    """The path step (Python syntax) of a child reached as ``how``, ``key``."""
    if how == "item":
        return f"[{brief(key)}]"
    if how == "key":
        return f".<key {brief(key)}>"
    if how == "index":
        return f"[{key}]"
    if how == "attr":
        return f".{key}"
    if how == "flat":
        return f".flat[{key}]"
    if how == "part":
        return f".<{key}>"
    return {"snapshot": " snapshot", "member": "{item}"}[how]


def _holds_objects(data: Any) -> bool:
    """Whether snapshot ``data`` holds anything but values and plain arrays (in
    its lists, dicts, tuples and sets): only then can it lead anywhere."""
    todo, seen = [data], set()
    while todo:
        o = todo.pop()
        t = type(o)
        if t in _LEAVES:
            continue
        if t is dict:
            if id(o) not in seen:
                seen.add(id(o))
                todo.extend(o.keys())
                todo.extend(o.values())
        elif t in _CONTAINERS:
            if id(o) not in seen:
                seen.add(id(o))
                todo.extend(o)
        elif not (isinstance(o, (np.ndarray, np.generic)) and not o.dtype.hasobject):
            return True
    return False


def _cycle_through(obj: object, steps: list[tuple[str, Any]], saver: _SnapshotHook) -> CycleError:
    """The CycleError for ``obj``, whose snapshot leads back to it along ``steps``
    ((step, object reached), ending at ``obj``)."""
    segments: list[tuple[str, str]] = []
    snapshots = [obj]             # the objects on the cycle written as snapshots
    name, path = state.class_name(type(obj)), ""
    for step, o in steps:
        path += step
        if type(o) not in _CONTAINERS:
            segments.append((name, path.strip()))
            name, path = state.class_name(type(o)), ""
            key, methods, in_place = saver._find(type(o))
            if methods is not None and not in_place:
                snapshots.append(o)
    return _cycle_error(segments, snapshots, saver)


def _cycle_error(segments: list[tuple[str, str]], snapshots: Iterable[object],
                 saver: _SnapshotHook) -> CycleError:
    """The CycleError for a cycle made of ``segments`` ((class name, path to the
    next object), the last leading back to the first) through ``snapshots``, the
    objects on it written as snapshots."""
    first = segments[0][0] if segments else "?"
    chain = " -> ".join(f"{c} {p}" for c, p in segments) + f" -> {first}"
    names, why = [], []
    for o in snapshots:
        cls = type(o)
        key, methods, _ = saver._find(cls)
        names.append(state.class_name(cls))
        if default_methods(cls, key, methods):
            why.append(f"{state.class_name(cls)} has the default take_snapshot and "
                       f"restore_snapshot but is not restored in place because "
                       f"{in_place_refusal(cls, key, methods)}")
    names = list(dict.fromkeys(names))
    hint = (" (" + "; ".join(dict.fromkeys(why)) + ")") if why else ""
    return CycleError(
        f"cannot save the session: these objects reference each other in a cycle through "
        f"{', '.join(names)}, restored from {'its' if len(names) == 1 else 'their'} snapshot "
        f"by restore_snapshot once everything the snapshot refers to is complete, which the "
        f"cycle makes impossible: {chain}. Leave one of these references out of its "
        f"take_snapshot data and re-link it in restore_snapshot, or use the default "
        f"take_snapshot and restore_snapshot, whose objects are restored in place (created "
        f"empty, then filled) and may form cycles{hint}.", cycle=segments)


def _encode(root: Any, file: PathOrFile, options: pipeline.SaveOptions,
            metadata: dict[str, Any], hook: _SnapshotHook) -> None:
    """pipeline.save of ``root`` with ``hook`` as the reducer_override, step for
    step, except that the hook is given the walker (its cycle check reads the
    walker's path). pipeline.save creates its walker out of the hook's reach; once
    the engine hands a reducer_override the walker (or its open objects), this
    goes back to calling pipeline.save."""
    header = make_header(metadata, select.IMPLEMENTATION, options.codec)
    with storage.writing(file) as out, pipeline.saving(out, options, file) as out:
        w = ContainerWriter(out, codec_id=options.codec, threads=options.threads,
                            shuffle=options.shuffle, level=options.level)
        try:
            w.write_header(header)
            enc = select.Encoder(w, options.max_depth, hook)
            hook.encoder = enc
            with pipeline.gc_paused():
                enc.encode(root)
            w.finish({"globals": list(enc.globals), "memo": enc.n_memo,
                      "session": {"classes": hook.classes, "objects": hook.count,
                                  "in_place": sorted(hook.in_place)}})
        finally:
            hook.encoder = None
            w.close()


def write(session: Session, file: PathOrFile, *, managers: Mapping[str, Any],
          table: Mapping[type, Any], options: pipeline.SaveOptions, flags: int,
          metadata: dict[str, Any]) -> int:
    """Write ``managers`` ({tag: manager}) of ``session`` to ``file`` (a path:
    atomically), with the snapshot methods of ``table``; ``options``: the
    engine's SaveOptions. Returns the number of objects written as snapshots
    (objects saved in place are not counted)."""
    managers = {tag: mgr for tag, mgr in managers.items()
                if getattr(mgr, "include_state", None) is None or mgr.include_state()}
    saver = _SnapshotHook(session, flags, table)
    header = {"torpor_session": SESSION_VERSION, "app": session.app_name,
              "session": metadata, "managers": list(managers), "flags": flags}
    root = {"managers": managers}
    saver.private.update((id(root), id(managers)))
    try:
        _encode(root, file, options, header, saver)
    except CycleError as e:
        if e is saver.cycle:
            raise
        raise _explain_cycle(e, saver) from None
    return saver.count


def _explain_cycle(e: CycleError, saver: _SnapshotHook) -> CycleError:
    """The walker's CycleError (a cycle back to an object whose snapshot it is
    writing), in the session's terms."""
    segments = []
    for owner, parts in e.cycle:
        # parts: ".<reduce args>", "[3]" (the data's place in the args), then the
        # path inside the snapshot data to the next object on the cycle
        inner = parts[2:] if parts[:2] == [".<reduce args>", "[3]"] else parts
        segments.append((state.class_name(type(owner)), "snapshot" + "".join(inner)))
    return _cycle_error(segments, [owner for owner, _ in e.cycle], saver)


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

    def check_classes(self, classes: object, source: str, in_place: object = ()
                      ) -> dict[str, type]:
        """Before anything is rebuilt: every class is loaded and not older than
        the snapshots of it, and each class whose objects were saved in place
        (``in_place``, names) still restores them that way. Lists every problem
        at once. Returns {name: class} of the classes saved in place."""
        if not isinstance(classes, dict) or not isinstance(in_place, (list, tuple)):
            raise CorruptFileError(f"{source}: the session class table is not well formed")
        missing, newer, changed = [], [], []
        for name, version in classes.items():
            if type(name) is not str or type(version) is not int:
                raise CorruptFileError(f"{source}: the session class table is not well formed")
            cls, methods = self.lookup(name)
            if cls is None:
                missing.append(name)
            elif version > getattr(methods, "version", 1):
                newer.append(f"{name} (file: version {version}, "
                             f"code: version {getattr(methods, 'version', 1)})")
        found: dict[str, type] = {}
        for name in in_place:
            if type(name) is not str or name not in classes:
                raise CorruptFileError(f"{source}: the session class table is not well formed")
            cls, methods = self.lookup(name)
            if cls is None:
                continue                      # reported as missing
            if not default_methods(cls, cls, methods) or state.class_name(cls) != name:
                changed.append(name)
            else:
                found[name] = cls
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
        if changed:
            problems.append(
                f"it holds objects of {', '.join(changed)} saved in place (their attributes, "
                f"as the default take_snapshot and restore_snapshot save them), but this "
                f"code gives them their own snapshot methods, which cannot read those; "
                f"restore the file with the code that wrote it, or keep the default "
                f"restore_snapshot for these classes")
        if problems:
            raise RestoreError(f"cannot restore {source}: " + "; and ".join(problems) +
                               ". The session was not changed.")
        return found

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


class _SessionPolicy(Policy):
    """The policy of one restore. The classes saved in place are named by the
    stream as globals: they resolve to the classes already loaded (importing
    nothing), whose objects the file may build as the walker wrote them (empty,
    then their attributes), but not call with arguments of its choosing."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.in_place: set[str] = set()

    def add_in_place(self, classes: Mapping[str, type]) -> None:
        self.extra.update(classes)
        self.in_place.update(classes)

    def resolve(self, module: str, qualname: str, source: str = "the file") -> Any:
        obj = super().resolve(module, qualname, source)
        name = f"{module}.{qualname}"
        if name in self.in_place:
            self.permit_call(obj, name, functools.partial(_no_arguments, name))
        return obj


def _no_arguments(name: str, args: tuple[Any, ...], callable_: Callable[[Any], bool]) -> None:
    if args:
        raise UnsafeLoadError(
            f"the file calls {name} with arguments; a session file builds the objects of "
            f"this class from their attributes and never calls it (torpor never writes "
            f"this). If you trust the file, restore it with trusted=True.", [name])


def read(session: Session, file: PathOrFile, *, table: Mapping[type, Any],
         trusted: bool = False, allow: Iterable[Any] = (), threads: Optional[int] = None,
         progress: Any = None) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Decode a session file into ``(header, {tag: manager or None})`` without
    touching ``session`` (restore_snapshot methods must not change it either)."""
    restorer = _SnapshotRestorer(session, table)
    policy = _SessionPolicy(trusted=trusted, allow=allow, extra={RESTORER: restorer})
    seen: dict[str, dict[str, Any]] = {}

    def before_decode(header: dict[str, Any], toc: dict[str, Any]) -> None:
        seen["header"] = _session_header(header, toc)
        classes = toc.get("session")
        if not isinstance(classes, dict):
            raise CorruptFileError(f"{_name(file)}: the session class table is not well formed")
        policy.add_in_place(restorer.check_classes(classes.get("classes", {}), _name(file),
                                                   classes.get("in_place", ())))

    root = pipeline.load(file, pipeline.LoadOptions(policy, threads=threads, progress=progress),
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


class _InPlace(NamedObject):
    """Base of the stand-ins open_session makes for the classes saved in place:
    the decoder creates one empty (the class's ``__new__``, which numbers it
    after the file's snapshots) and hands it the attributes (``__setstate__``)."""

    __slots__ = ()
    torpor_class: str       # class attributes of each stand-in class
    torpor_version: int
    torpor_uids: Iterator[int]

    def __new__(cls) -> _InPlace:
        obj = object.__new__(cls)
        NamedObject.__init__(obj, next(cls.torpor_uids), cls.torpor_class, cls.torpor_version, {})
        return obj

    def __init__(self) -> None:         # the decoder never calls it
        pass

    def __setstate__(self, attributes: dict[str, Any]) -> None:
        self.data = attributes


class _OpaquePolicy(Policy):
    """Resolves every name the default policy refuses to an Opaque stand-in
    class, so nothing from the file is imported or called; the classes saved in
    place become NamedObjects, as the snapshots do."""

    def __init__(self) -> None:
        super().__init__(extra={RESTORER: _describe})
        self.standins: dict[str, type] = {}
        self.in_place: dict[str, int] = {}      # name -> version, from the file's class table
        self.uids: Iterator[int] = iter(())     # numbers for the objects saved in place

    def allows(self, module: str, qualname: str) -> bool:
        return True

    def resolve(self, module: str, qualname: str, source: str = "the file") -> Any:
        name = f"{module}.{qualname}"
        if name in self.in_place:
            cls = self.standins.get(name)
            if cls is None:
                cls = self.standins[name] = type(
                    qualname.rpartition(".")[2] or "InPlace", (_InPlace,),
                    {"__slots__": (), "torpor_class": name, "torpor_version": self.in_place[name],
                     "torpor_uids": self.uids, "__module__": module, "__qualname__": qualname})
                self.permit_call(cls, name)      # makes a NamedObject, runs nothing else
            return cls
        if Policy.allows(self, module, qualname):
            return super().resolve(module, qualname, source)
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
    {uid: NamedObject}}``. Objects saved in place are NamedObjects too, whose
    ``data`` is their attributes (numbered after the snapshots, in the order
    they are read). Classes the file names are never imported: plain instances
    of them come back as Opaque stand-ins."""
    policy = _OpaquePolicy()
    seen: dict[str, dict[str, Any]] = {}

    def before_decode(header: dict[str, Any], toc: dict[str, Any]) -> None:
        seen["header"] = _session_header(header, toc)
        seen["file_header"] = header
        table = toc.get("session")
        if not isinstance(table, dict):
            raise CorruptFileError(f"{_name(file)}: the session class table is not well formed")
        classes, in_place = table.get("classes", {}), table.get("in_place", ())
        count = table.get("objects", 0)
        if not isinstance(classes, dict) or not isinstance(in_place, (list, tuple)) \
                or type(count) is not int or count < 0:
            raise CorruptFileError(f"{_name(file)}: the session class table is not well formed")
        for name in in_place:
            if type(name) is not str or type(classes.get(name)) is not int:
                raise CorruptFileError(f"{_name(file)}: the session class table is not well formed")
            policy.in_place[name] = classes[name]
        policy.uids = itertools.count(count + 1)

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
