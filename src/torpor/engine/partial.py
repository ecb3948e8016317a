"""Partial loads: one part of a file rebuilt, and only the bytes it needs read.

    obj = partial.load(file, LoadOptions(...), steps)        torpor.load(..., select=)
    view = partial.open_view(file, LoadOptions(...))         torpor.open

The header, the table of contents and the object stream are read (the stream is
a small part of an array-heavy file); ``format.locate`` finds where the part
is in the stream and which shared objects before it it refers to; those bytes
alone are rebuilt by one ``Decoder`` (``decode_part``), and only the array and
bytes sections they use are read (or mapped, with ``mmap``). A safe load stays
safe: the part's classes are checked as a whole load checks them, and the
rest of the file is never rebuilt, so a class it names elsewhere needs no
``allow=``.

Each load of a part rebuilds it afresh: two parts loaded one after the other
share nothing, even when the file saved them shared (load the object that holds
both to keep that).
"""

from __future__ import annotations

import collections
import contextlib
import mmap as _mmap
import types
import weakref
from typing import Any, BinaryIO, Callable, Iterator, Optional

import numpy as np

from .. import storage
from ..errors import FormatError, NotInFileError, TorporError
from ..format import locate as locate_
from ..format.locate import plain
from ..format.container import damaged_as_corrupt, map_file, open_source, read_header, read_toc
from ..format.outline import read_stream
from ..format.reader import ContainerReader
from . import progress as progress_
from . import select
from .common import static_attr
from .guard import WorkAccount
from .pipeline import LoadOptions, _name, gc_paused

Check = Optional[Callable[[dict[str, Any], dict[str, Any]], None]]
#: Searches kept by an open file (each holds the tables of one walk of the stream).
CACHED = 8
_MODES = ("peek", "keys", "find")


class FileParts:
    """A torpor file read for partial loads: its header, table of contents and
    object stream, read once; its array and bytes sections, read when a part
    uses them. ``f`` must stay open while this is used."""

    def __init__(self, f: BinaryIO, name: str, options: LoadOptions,
                 before_decode: Check = None) -> None:
        self.name, self.options = name, options
        self.mm: Optional[_mmap.mmap] = None
        self.payloads: Optional[dict[int, Any]] = None
        with damaged_as_corrupt(name):
            self.src = src = open_source(f, name)
            self.header = read_header(src)
            if src.size is None:
                # a stream cannot seek to a part: it is read whole, once
                reader = ContainerReader(src, threads=options.threads)
                try:
                    contents = reader.read_all()
                finally:
                    reader.close()
                self.toc, self.stream, self.payloads = contents.toc, contents.stream, \
                    contents.payloads
            else:
                self.toc = read_toc(src)
        if before_decode is not None:
            before_decode(self.header, self.toc)
        if self.payloads is None:
            with damaged_as_corrupt(name):
                self.stream = read_stream(src, self.toc)
            if options.mmap:
                try:
                    self.mm = map_file(f)
                except (AttributeError, OSError, ValueError) as e:
                    raise FormatError(f"mmap=True needs a real file on disk; {name} cannot be "
                                      f"mapped ({e})") from None
        elif options.mmap:
            raise FormatError(f"mmap=True needs a seekable file on disk; {name} is a stream")
        self._found: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        # a safe load of parts does at most the work a whole load of the file may
        self.account = WorkAccount(len(self.stream)
                                   + sum(e.stored for e in self.toc["sections"]))
        # ... and its walks of the stream read at most a few times its length
        self.walks = locate_.Walks(name, len(self.stream))
        self.closer: Optional[weakref.finalize] = None     # torpor.open: closes the file

    def locate(self, steps: tuple[locate_.Step, ...], mode: str = "find",
               within: Optional[tuple[int, Optional[locate_.Start]]] = None
               ) -> tuple[locate_.Finder, locate_.Target]:
        """Where the part at ``steps`` is (NotInFileError if nowhere); ``mode``:
        ``locate.Finder``'s. ``within``: ``(n, start)``, the first ``n`` steps lead
        to the object or value at ``start`` (``locate.Start``), where the search
        starts."""
        key = (_typed(steps), mode)
        hit = self._found.get(key)
        if hit is not None:
            self._found.move_to_end(key)
            return hit
        done, start = within if within is not None and within[1] is not None else (0, None)
        with damaged_as_corrupt(self.name):
            hit = locate_.locate(self.stream, self.toc, self.name, steps, mode,
                                 self.options.max_depth, start, done, self.walks)
        self._found[key] = hit
        if len(self._found) > CACHED:
            self._found.popitem(last=False)
        return hit

    def start_of(self, steps: tuple[locate_.Step, ...], target: locate_.Target
                 ) -> Optional[locate_.Start]:
        """Where a search for something inside ``target`` (the part at ``steps``)
        starts: at it, with the walk that found it if that one is kept."""
        if target.memo < 0:
            return None
        typed = _typed(steps)
        finder = next((self._found[k][0] for k in ((typed, m) for m in _MODES)
                       if k in self._found), None)
        return (finder, target.start, target.n_memo, target.n_strings)

    def load(self, steps: tuple[locate_.Step, ...]) -> Any:
        """The part at ``steps``, rebuilt."""
        try:
            return self.rebuild(*self.locate(steps))
        except NotInFileError as e:
            # Where the stream alone cannot follow the path, the object there is
            # loaded and the rest of the path followed on it: an object rebuilt by
            # its class (a namedtuple's items, the state of a class with __slots__
            # or __getstate__), or a dict whose keys are not plain values (a shared
            # tuple, a frozenset: matched against its keys once loaded).
            n = e.matched
            if n >= len(steps):
                raise
            there = self.locate(steps[:n], "peek")[1]
            if there.kind == "dict":
                keys = self.locate(steps[:n], "keys")[1].keys or ()
                if steps[n][0] or all(plain(k) for k in keys):
                    raise
            elif there.kind != "object":
                raise
            obj = self.load(steps[:n])
            for attr, key in steps[n:]:
                obj = _state_step(obj, attr, key, e)
            return obj

    def rebuild(self, finder: locate_.Finder, target: locate_.Target) -> Any:
        """The part ``locate`` found, rebuilt."""
        if self.closer is not None and not self.closer.alive:
            raise ValueError(f"{self.name} was closed: open it again with torpor.open to load "
                             f"more of it")
        parts, inside = finder.parts(target)
        wanted = finder.used_sections(parts)
        if self.payloads is not None:
            payloads = {i: self.payloads[i] for i in wanted}
        else:
            reader = ContainerReader(self.src, threads=self.options.threads, mmap=self.mm)
            try:
                with damaged_as_corrupt(self.name):
                    payloads = reader.read_sections(self.toc, wanted)
            finally:
                reader.close()
        policy = self.options.policy
        # a safe load's work budget counts the payload sections it uses (engine/guard.py)
        policy.payload_bytes = sum(self.toc["sections"][i].stored for i in wanted)
        dec = select.Decoder(policy, payloads, self.options.max_depth)
        value: Any = None
        size = sum(p.end - p.start for p in parts)     # one guard's budget for them all
        policy.account = self.account
        try:
            with gc_paused():
                for p in parts:
                    v = dec.decode_part(self.stream[p.start:p.end], p.n_memo, finder.strings,
                                        p.n_strings, size)
                    if p.start == target.start and p.end == target.end:
                        value = v
                return dec.memo_item(target.memo) if inside else value
        finally:
            self.account.settle()


def _typed(steps: tuple[locate_.Step, ...]) -> tuple[Any, ...]:
    """``steps`` as a key of the cache of walks: 1 and 1.0 are the same dict key
    but not the same path (one is a list index)."""
    return tuple((attr, type(k), k) for attr, k in steps)


def _state_step(obj: Any, attr: bool, key: Any, missing: NotInFileError) -> Any:
    """One step of a path on a loaded object, through its state only: an item of a
    list, tuple (a namedtuple's too), dict or object array, an entry of its
    ``__dict__``, a ``__slots__`` member or a namedtuple field. Nothing of the
    object's class runs (no property, method, ``__getattr__``, ``__class__`` or
    ``__missing__``): a safe load calls nothing the file did not ask for."""
    cls = type(obj)
    try:
        if attr:
            if type(key) is not str or key.startswith("_"):
                raise missing
            fields = static_attr(cls, "_fields")
            if issubclass(cls, tuple) and type(fields) is tuple \
                    and all(type(f) is str for f in fields) and key in fields:
                return tuple.__getitem__(obj, fields.index(key))
            getset = static_attr(cls, "__dict__")
            if type(getset) is types.GetSetDescriptorType:
                state = getset.__get__(obj, cls)
                if type(state) is dict and key in state:
                    return dict.__getitem__(state, key)
            member = static_attr(cls, key)
            if type(member) is types.MemberDescriptorType:
                return member.__get__(obj, cls)
            raise missing
        if issubclass(cls, (list, tuple)) and type(key) is int:
            return list.__getitem__(obj, key) if issubclass(cls, list) \
                else tuple.__getitem__(obj, key)
        if issubclass(cls, dict):
            if not dict.__contains__(obj, key):
                raise missing
            return dict.__getitem__(obj, key)
        if cls is np.ndarray and obj.dtype == object and (type(key) is int or (
                type(key) is tuple and all(type(k) is int for k in key))):
            return obj[key]
    except TorporError:
        raise
    except Exception:
        pass
    raise missing


def load(file: Any, options: LoadOptions, steps: tuple[locate_.Step, ...],
         before_decode: Check = None, store: Optional[storage.Store] = None) -> Any:
    """The part at ``steps`` of the file at ``file`` (a path, a key of ``store``,
    a readable binary file object), reading only what it needs."""
    with storage.reading(file, store=store) as (f, name), \
            progress_.watching_reads(f, options.progress, f"loading {_name(name)}") as f:
        return FileParts(f, name, options, before_decode).load(steps)


def open_view(file: Any, options: LoadOptions, before_decode: Check = None) -> View:
    """``torpor.open``: a view of the saved object, the file kept open until the
    view is closed (``close()``, a ``with`` block, or when it is collected)."""
    with contextlib.ExitStack() as stack:       # closes the file if opening fails
        f, name = stack.enter_context(storage.reading(file))
        parts = FileParts(f, name, options, before_decode)
        root = View(parts, ())
        kept = stack.pop_all()
    # every view holds the FileParts: the file closes when the last one goes
    parts.closer = weakref.finalize(parts, kept.close)
    return root


_VIEWED = frozenset({"dict", "list", "tuple", "instance"})


class View:
    """A part of a torpor file, read only as far as it is used (``torpor.open``).

    ``view[key]`` and ``view.name`` go one step down: a dict, list, tuple or
    instance is another View, anything else (an array, a number, a DataFrame) is
    loaded and returned. ``view.select("['geoms'][3].points")`` goes down a
    path; ``view.load()`` rebuilds the whole part. ``keys()``, ``len()``,
    ``in`` and iteration work as on the object, from the stream alone."""

    __slots__ = ("_parts", "_steps", "_target", "_listed", "__weakref__")

    def __init__(self, parts: FileParts, steps: tuple[locate_.Step, ...],
                 target: Optional[locate_.Target] = None) -> None:
        self._parts = parts
        self._steps = steps
        self._target = target if target is not None else parts.locate(steps, "peek")[1]
        # its keys, or where its items start (and the walk that noted them), kept
        # here: the file's cache of walks is small, and iterating fills it
        self._listed: Optional[tuple[locate_.Finder, locate_.Target]] = None

    # -- what it is --------------------------------------------------------------------

    @property
    def path(self) -> str:
        """Where the part is in the saved object (``""``: the object itself)."""
        return locate_.render_path(self._steps)

    @property
    def kind(self) -> str:
        """"dict", "list", "tuple" or "instance"."""
        return self._target.kind

    @property
    def type_name(self) -> Optional[str]:
        """An instance's class, as ``"module.qualname"`` (None for other kinds)."""
        return self._target.type_name

    def __repr__(self) -> str:
        t = self._target
        what = (f"an instance of {t.type_name}" if t.kind == "instance"
                else f"a {t.kind} of {t.size} item{'s' if t.size != 1 else ''}")
        return f"<torpor view of {self._parts.name}{' at ' + self.path if self._steps else ''}: {what}>"

    def keys(self) -> list[Any]:
        """A dict's keys, or an instance's attribute names, in the saved order.
        Keys that are plain values (str, bytes, numbers, None, and tuples of them)
        are read from the stream; a dict with any other key is loaded to list them."""
        if self._target.kind not in ("dict", "instance"):
            raise TypeError(f"{self._where()} is a {self._target.kind}, which has no keys")
        keys = self._part("keys")[1].keys or []
        if all(plain(k) for k in keys):
            return list(keys)
        return list(self.load().keys()) if self._target.kind == "dict" else list(vars(self.load()))

    def _part(self, mode: str) -> tuple[locate_.Finder, locate_.Target]:
        """This part, found again in ``mode`` (from where it starts)."""
        if mode == "keys" and self._listed is not None:
            return self._listed
        found = self._parts.locate(self._steps, mode, within=(
            len(self._steps), self._parts.start_of(self._steps, self._target)))
        if mode == "keys":
            self._listed = found
        return found

    def __len__(self) -> int:
        if self._target.kind == "instance":
            raise TypeError(f"{self._where()} is an instance; len() needs load()")
        return self._target.size

    def __iter__(self) -> Iterator[Any]:
        t = self._target
        if t.kind == "dict":
            return iter(self.keys())
        if t.kind == "instance":
            raise TypeError(f"{self._where()} is an instance; iterate over load()")
        return self._items()

    def _items(self) -> Iterator[Any]:
        """The items, each found from where the list's one walk noted it starts."""
        finder, listed = self._part("keys") if self._target.size else (None, None)
        for i in range(self._target.size):
            yield self._down(((False, i),), finder, listed)

    def __contains__(self, key: Any) -> bool:
        if self._target.kind == "dict":
            keys = self._part("keys")[1].keys or ()
            try:
                if all(plain(k) for k in keys):
                    return any(k == key and hash(k) == hash(key) for k in keys)
                return key in self.load()
            except RecursionError:
                return False
        return key in self.load()

    def get(self, key: Any, default: Any = None) -> Any:
        """``view[key]``, or ``default`` if there is no such key or index."""
        t = self._target
        if t.kind in ("list", "tuple"):
            return self[key] if type(key) is int and -t.size <= key < t.size else default
        return self[key] if key in self else default

    # -- going down --------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        if self._target.kind == "instance":
            raise TypeError(f"{self._where()} is an instance: its attributes are "
                            f"view.name or view.select('.name')")
        t = self._target
        if isinstance(key, slice):
            raise TypeError(f"a view takes one key or index, not a slice: load() "
                            f"{self._where()} to slice it")
        if t.kind in ("list", "tuple") and type(key) is int:
            if not -t.size <= key < t.size:
                raise NotInFileError(f"{self._parts.name}: {self._where()} is a {t.kind} of "
                                     f"{t.size} items, without [{key}]",
                                     locate_.render_path(self._steps + ((False, key),)))
            key %= t.size
        return self._down(((False, key),))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self._target.kind != "instance":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        try:
            return self._down(((True, name),))
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def select(self, path: str) -> Any:
        """The part at ``path`` below this one (``"['geoms'][3].points"``): a View or a value."""
        return self._down(locate_.parse_path(path))

    def _down(self, steps: tuple[locate_.Step, ...], finder: Optional[locate_.Finder] = None,
              listed: Optional[locate_.Target] = None) -> Any:
        within = (len(self._steps), self._parts.start_of(self._steps, self._target))
        t = self._target
        if listed is None and self._listed is not None:
            finder, listed = self._listed
        if len(steps) == 1 and not steps[0][0] and t.kind in ("list", "tuple") \
                and type(steps[0][1]) is int and 0 <= steps[0][1] < t.size \
                and listed is not None and listed.children is not None \
                and len(listed.children) == t.size:
            # an item of a list walked whole before (iteration): from where it starts
            within = (len(self._steps) + 1, (finder, *listed.children[steps[0][1]]))
        steps = self._steps + steps
        try:
            target = self._parts.locate(steps, "peek", within=within)[1]
        except NotInFileError:
            return self._parts.load(steps)      # which follows what the stream cannot
        if target.kind in _VIEWED:
            return View(self._parts, steps, target)
        if target.memo < 0 and target.end >= 0:
            # a plain value, read whole by that walk: nothing else to find
            return self._parts.rebuild(*self._parts.locate(steps, "peek", within=within))
        # found again to its end and its references' (from where it starts)
        again = (len(steps), self._parts.start_of(steps, target)) if target.memo >= 0 else within
        return self._parts.rebuild(*self._parts.locate(steps, "find", within=again))

    def load(self) -> Any:
        """The whole part, rebuilt (its arrays read)."""
        return self._parts.rebuild(*self._part("find"))

    def _where(self) -> str:
        return self.path or "the saved object"

    # -- the file ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (every view of it)."""
        if self._parts.closer is not None:
            self._parts.closer()

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
