"""The outline of a torpor file (``torpor ls``): every array and out-of-band bytes
object, with its path in the saved object (``['geoms'][3]['points']``, ``.attr``),
its dtype, shape, stored size and codec, read from the header, the table of
contents and the object stream alone. Nothing is imported, called or rebuilt:
classes and callables stay names, array sections are never read.

Only the stream's sections are decoded (their checksums checked); the stream is
then read token by token with msgpack's ``Unpacker`` (docs/FORMAT.md, "The object
stream"), keeping the memo and string-table numbering the loader keeps, so that a
``REF`` can be shown as the path where its object first appeared. A hostile file
gets no further than a damaged one: every count is checked against the bytes
left, nesting is limited (``max_depth``), paths and keys shown are cut short, and
every problem is a ``CorruptFileError`` that says what is wrong.
"""

from __future__ import annotations

import io
import reprlib
from typing import Any, BinaryIO, NamedTuple, Optional

import msgpack

from ..errors import CorruptFileError, FormatError
from .constants import (CODEC_NAMES, EXT_BIGINT, EXT_BYTEARRAY, EXT_BYTEARRAY_OOB,
                        EXT_BYTES_OOB, EXT_COMPLEX, EXT_DTYPE, EXT_FROZENSET, EXT_GLOBAL,
                        EXT_INST, EXT_NDARRAY, EXT_NDARRAY_INLINE, EXT_NPSCALAR, EXT_OBJARRAY,
                        EXT_REDUCE, EXT_REF, EXT_SET, EXT_STR_SURROGATE, EXT_STRREF, EXT_TUPLE,
                        MARKERS, MEMO_MARKERS, AT_MARKERS, SECTION_ARRAY,
                        SECTION_BYTES, SECTION_STREAM)
from .container import Toc, TocEntry, damaged_as_corrupt, open_source, read_header, read_toc
from .dtypes import decode_dtype
from .reader import ContainerReader

#: How deep ``outline`` follows nesting unless told otherwise (each level is a
#: frame of a few hundred bytes, so a small hostile file cannot make it take
#: gigabytes). torpor itself saves deeper graphs; ``torpor ls --max-depth`` reads them.
MAX_DEPTH = 100_000
#: A path shows its first and last this many steps, with "..." between.
PATH_STEPS = 24
#: Readonly arrays are written as a call of this name on the array (docs/FORMAT.md).
READONLY = "torpor.arrays.readonly"


class Item(NamedTuple):
    """One line of the outline."""
    path: str                     # where it sits in the saved object; "" is the root
    kind: str                     # "array", "bytes", "bytearray", "object array" or "ref"
    dtype: Optional[str] = None   # numpy's name of the dtype ("float32")
    shape: Optional[tuple[int, ...]] = None
    stored: Optional[int] = None  # bytes in the file (for inline arrays: in the stream)
    raw: Optional[int] = None     # bytes once decoded
    codec: Optional[str] = None   # "lz4", "gzip", "raw", or "inline" (inside the stream)
    section: Optional[int] = None  # the section holding the data
    order: Optional[str] = None   # "C" or "F"
    readonly: bool = False
    same_as: Optional[str] = None  # a "ref": the path where the object first appeared

    def as_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["shape"] = list(self.shape) if self.shape is not None else None
        return d


class Outline(NamedTuple):
    header: dict[str, Any]
    toc: Toc
    items: list[Item]
    objects: int        # memo indices the stream used (the table of contents' "memo")


def outline_file(f: BinaryIO, name: str, max_depth: int = MAX_DEPTH) -> Outline:
    """The outline of the torpor file ``f`` (``name``: for messages)."""
    with damaged_as_corrupt(name):
        src = open_source(f, name)
        header = read_header(src)
        if src.size is not None:
            toc = read_toc(src)
            stream = read_stream(src, toc)
        else:
            # A pipe cannot seek to the stream's sections: read it all (arrays too).
            reader = ContainerReader(src, threads=1)
            try:
                contents = reader.read_all()
            finally:
                reader.close()
            toc, stream = contents.toc, contents.stream
        outliner = Outliner(stream, toc, name, max_depth)
        return Outline(header, toc, outliner.run(), len(outliner.memo_path))


# --- the stream's sections -----------------------------------------------------------

def read_stream(src: Any, toc: Toc) -> bytes:
    """The object stream of a seekable file: its sections, found through the table
    of contents, read and checked as a load reads them; array and bytes sections
    are not read."""
    index = [i for i, entry in enumerate(toc["sections"]) if entry.kind == SECTION_STREAM]
    reader = ContainerReader(src, threads=1)
    try:
        pieces = reader.read_sections(toc, index)
    finally:
        reader.close()
    return b"".join(pieces[i] for i in index)


# --- the stream -------------------------------------------------------------------------

class _Opaque:
    """A value in a map key or a dtype that is not plain data (an instance, a
    class): shown as ``<what>``."""
    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


class _Shown(_Opaque):
    """An object shown by a text made earlier (a key used again by reference)."""

    def __repr__(self) -> str:
        return self.what


class _Global(_Opaque):
    """A GLOBAL: a class or function named, never imported."""


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxtuple = _short.maxlist = _short.maxdict = _short.maxset = 6
_short.maxlevel = 3


def _text(value: Any) -> str:
    """A short one-line repr (control characters escaped) of a key."""
    if type(value) is str and len(value) <= 40:
        return repr(value)          # the usual key, without reprlib's dispatch
    return _short.repr(value)


# Frame kinds: a plain list, a map, the root's place, or a marker's code.
_LIST, _MAP, _ROOT = 0, 1, -1
_UINT_SIZES = (1, 2, 4, 8)        # the payload sizes of REF, STRREF and markers
# memo flags: the object is complete; it holds something listed
_DONE, _CONTENT = 1, 2
# msgpack type bytes that start an array, a map, an extension (every other
# byte starts a value that ``Unpacker.unpack`` reads whole, cheaply)
_ARRAY_HEADS = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}
_MAP_HEADS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_CONTAINER_HEADS = _ARRAY_HEADS | _MAP_HEADS
_EXT_HEADS = frozenset(range(0xD4, 0xD9)) | {0xC7, 0xC8, 0xC9}
_PLAIN = frozenset({int, float, bool, bytes, type(None)})
#: What msgpack makes of an extension: ``ext_hook(code, data)``. A slice is the
#: cheapest object that holds two values (``.start``, ``.stop``); msgpack's own
#: ExtType runs Python code in its constructor, which cost a tenth of the walk.
_EXT = slice
_MARKER_NAMES = {EXT_TUPLE: "tuple", EXT_SET: "set", EXT_FROZENSET: "frozenset",
                 EXT_INST: "instance", EXT_REDUCE: "object", EXT_OBJARRAY: "object array",
                 EXT_GLOBAL: "class", EXT_DTYPE: "dtype", EXT_NPSCALAR: "scalar"}
# how many elements follow each marker (absent: any number; OBJARRAY: three and more)
_COUNTS = {EXT_BYTES_OOB: (1,), EXT_BYTEARRAY_OOB: (1,), EXT_DTYPE: (1,), EXT_BYTEARRAY: (1,),
           EXT_GLOBAL: (2,), EXT_INST: (2,), EXT_NPSCALAR: (2,), EXT_NDARRAY: (4,),
           EXT_NDARRAY_INLINE: (4,), EXT_REDUCE: (5, 6)}
# markers whose elements the outline keeps: names, dtypes, shapes, section indices
_KEEP_VALUES = frozenset({EXT_GLOBAL, EXT_NDARRAY, EXT_NDARRAY_INLINE, EXT_OBJARRAY,
                          EXT_BYTES_OOB, EXT_BYTEARRAY_OOB})
_REDUCE_PARTS = ("<callable>", "<args>", "<state>", "<listitems>", "<dictitems>", "<setter>")


class _Frame:
    """An array or map being read: what it is, where it is, and what of its
    elements the outline keeps (``values``: for a dtype, a shape, a name)."""
    __slots__ = ("kind", "n", "i", "path", "prefix", "mode", "memo", "owner", "capture",
                 "values", "slow", "key", "note", "extra", "start", "held")

    def __init__(self, kind: int, n: int, path: Any, memo: int, owner: int, capture: bool,
                 mode: str) -> None:
        self.kind = kind          # _LIST, _MAP, _ROOT or a marker's code
        self.n = n                # elements (a map: keys and values)
        self.i = 0                # elements read
        self.path = path          # path node of this object
        self.prefix = path        # path node its elements' steps follow
        self.mode = mode          # how its elements are named: index, key, attr, set, same, state
        self.memo = memo          # its memo index, or -1
        self.owner = owner        # memo index of the nearest object around it that has one
        self.capture = capture    # build its value (the frame around it needs it)
        self.values: Optional[list[Any]] = [] if capture or kind in _KEEP_VALUES else None
        self.slow = self.values is not None or kind == EXT_REDUCE   # elements go to _give
        self.key: Any = None      # a map: the key of the value being read
        self.note = False         # a readonly call's argument: the array is read-only
        self.extra: Any = None    # REDUCE: the callable's name; OBJARRAY: shape and order
        self.start = -1           # locate.Finder: where it starts, if it took a new memo index
        self.held: Any = None     # locate.Finder: a watched map's last key


class Outliner:
    """Reads an object stream (``stream``, with the table of contents ``toc`` of
    its file) once: ``run()`` returns the arrays, out-of-band bytes and shared
    references to them, in stream order.

    It numbers memo indices and strings as the loader does (docs/FORMAT.md, "Memo
    indices" and "The string table"), so a REF names the path where its object
    first appeared. It reads the stream token by token (no recursion, no tree of
    the whole stream in memory); only the elements it needs (dtypes, shapes,
    names, map keys) are kept, and only until their array or map ends."""

    def __init__(self, stream: bytes, toc: Toc, name: str = "the file",
                 max_depth: int = MAX_DEPTH, base: int = 0) -> None:
        # ``base``: read from that byte on (locate.Finder.resume), positions counted
        # from it; the stream is not copied
        self.stream: Any = memoryview(stream)[base:] if base else stream
        self.end = len(self.stream)
        self.sections = toc["sections"]
        self.name = name
        self.max_depth = max_depth
        # max_buffer_size: the whole stream may be one value; every length msgpack
        # accepts is bounded by it. ext_hook: see _EXT.
        source = io.BytesIO(stream)
        source.seek(base)
        self.unpacker = msgpack.Unpacker(source, raw=False, strict_map_key=False,
                                         max_buffer_size=max(1, len(stream)), ext_hook=_EXT)
        self.strings: list[str] = []        # the string table
        # the memo, one entry per index: the path where the object first appeared,
        # whether it is complete, whether it holds something listed
        self.memo_path: list[Any] = []
        self.memo_flags = bytearray()         # _DONE, _CONTENT
        self.memo_name: dict[int, str] = {}   # GLOBALs: "module.qualname"
        self.memo_text: dict[int, str] = {}   # objects read inside map keys: their text
        self.used: set[int] = set()           # sections an array or bytes object took
        self.dtypes: dict[str, str] = {}      # typestr -> numpy's name for it
        self.items: list[Any] = []            # Items, and (path, memo index) of refs
        self.stack: list[_Frame] = []
        self.head = 0                         # where the last array or map started
        self.base = base                      # where ``self.stream`` starts in the stream

    def fail(self, msg: str) -> CorruptFileError:
        return CorruptFileError(f"{self.name}: the object stream is damaged at byte "
                                f"{self.unpacker.tell() + self.base}: {msg}")

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> list[Item]:
        self.stack.append(_Frame(_ROOT, 1, None, -1, -1, False, "index"))
        self._loop()
        return self._finish()

    def _loop(self) -> None:
        """Read the stream to its end (``locate.Finder`` stops it with an exception
        where it found what it looks for, and may go on with another call)."""
        stack, stream, strings = self.stack, self.stream, self.strings
        tell, unpack = self.unpacker.tell, self.unpacker.unpack
        end = len(stream)
        try:
            while stack:
                top = stack[-1]
                i = top.i
                if i == top.n:
                    self._exit(stack.pop())
                    continue
                pos = tell()
                if pos >= end:
                    raise self.fail("it ends in the middle of an object (truncated?)")
                if stream[pos] in _CONTAINER_HEADS:
                    self._open(top, stream[pos])
                    continue
                # the common case, kept short (it runs for most of the stream's
                # items): a value read whole, a str or a STRREF handled here
                top.i = i + 1
                v = unpack()
                t = type(v)
                if t is str:
                    strings.append(v)
                elif t is _EXT:
                    if v.start == EXT_STRREF:
                        k = int.from_bytes(v.stop, "big")
                        if k < len(strings) and len(v.stop) in _UINT_SIZES:
                            v = strings[k]
                        else:
                            v = self._string(v.stop)        # says what is wrong
                    else:
                        v = self._ext(v.start, v.stop, top, i)
                elif t not in _PLAIN:
                    raise self.fail(f"a {t.__name__} value, which torpor never writes")
                top.key = v         # a map's key, kept for its value's path
                if top.slow:
                    self._give(top, i, v, pos)
        except msgpack.OutOfData:
            raise self.fail("it ends in the middle of an object (truncated?)") from None
        except (ValueError, msgpack.UnpackException) as e:
            raise self.fail(f"not valid MessagePack ({type(e).__name__}: {e})") from None
        if tell() != end:
            raise self.fail("bytes follow the end of the saved object")

    def _finish(self) -> list[Item]:
        """Refs are shown only to objects that hold something shown (a shared class
        or list of ints is not)."""
        out = []
        for it in self.items:
            if isinstance(it, Item):
                out.append(it)
            elif self.memo_flags[it[1]] & _CONTENT:
                out.append(Item(_render(it[0]), "ref", same_as=_render(self.memo_path[it[1]])))
        return out

    def _open(self, top: _Frame, head: int) -> None:
        """An array or a map starts, as element ``top.i`` of ``top``. (It runs for
        every list, dict and instance, so the usual places are inlined: ``ls`` of
        a file of a million small objects takes seconds, as a load does.)"""
        i = top.i
        top.i = i + 1
        kind = top.kind
        if kind == _LIST:
            path, capture, ctx = _step(top.prefix, i), top.capture, None
        elif kind == _MAP and i & 1:
            path, capture, ctx = _step(top.prefix, (top.mode == "attr", top.key)), top.capture, None
        else:
            path, capture, ctx = self._child(top, i)
        stack = self.stack
        if len(stack) > self.max_depth:
            raise FormatError(
                f"{self.name}: the saved object is nested more than {self.max_depth} levels "
                f"deep; pass a larger --max-depth to list it")
        owner = top.memo if top.memo >= 0 else top.owner
        unpacker = self.unpacker
        self.head = unpacker.tell()       # where the object starts (locate.Finder)
        if head in _MAP_HEADS:
            n = 2 * unpacker.read_map_header()
            pos = unpacker.tell()
            if n > self.end - pos:
                self._too_many(n, pos)
            # an instance's attribute map is the one map without a memo index
            memo = -1 if ctx is not None and ctx[0] == "inst-attrs" else self._new_memo(path)
            frame = _Frame(_MAP, n, path, memo, owner, capture, "key")
        else:
            n = unpacker.read_array_header()
            pos = unpacker.tell()
            if n > self.end - pos:
                self._too_many(n, pos)
            first = None
            if n and self.stream[pos] in _EXT_HEADS:
                first = unpacker.unpack()
                if type(first) is _EXT and first.start in MARKERS:
                    self._marker(first.start, first.stop, n - 1, path, owner, capture, ctx)
                    return
            frame = _Frame(_LIST, n, path, self._new_memo(path), owner, capture, "index")
            if first is not None:
                # a list whose first element is an extension value (a REF, a STRREF):
                # the list takes its memo index first, then that element is read
                if ctx is not None:
                    _apply(frame, *ctx)
                stack.append(frame)
                self._pushed(frame)
                frame.i = 1
                if type(first) is not _EXT:
                    raise self.fail(f"a {type(first).__name__} value, which torpor never writes")
                frame.key = self._ext(first.start, first.stop, frame, 0)
                if frame.slow:
                    self._give(frame, 0, frame.key, pos)
                return
        if ctx is not None:
            _apply(frame, *ctx)
        stack.append(frame)
        self._pushed(frame)

    def _too_many(self, n: int, pos: int) -> None:
        # every element takes at least a byte: a larger count is damage, and
        # refusing it bounds what a frame may claim by the input
        raise self.fail(f"a container claims {n} elements but only {self.end - pos} bytes remain")

    def _new_memo(self, path: Any) -> int:
        memo = len(self.memo_path)
        self.memo_path.append(path)
        self.memo_flags.append(0)
        return memo

    def _marker(self, code: int, data: bytes, n: int, path: Any, owner: int, capture: bool,
                ctx: Any) -> None:
        counts = _COUNTS.get(code)
        if (counts is not None and n not in counts) or (code == EXT_OBJARRAY and n < 3):
            raise self.fail(f"a {_MARKER_NAMES.get(code, 'marked')} array (marker {code}) has "
                            f"{n} elements")
        k = self._uint(data)
        if k and code not in AT_MARKERS:
            raise self.fail(f"marker {code} cannot carry a memo index")
        if k:       # the object of memo index k-1, written again complete for a cycle
            if k - 1 >= len(self.memo_path):
                raise self.fail(f"a marker names memo index {k - 1}, which does not exist")
            memo = k - 1
        elif code in MEMO_MARKERS:
            memo = self._new_memo(path)
        else:
            memo = -1
        frame = _Frame(code, n, path, memo, owner, capture,
                       "set" if code in (EXT_SET, EXT_FROZENSET) else "index")
        if ctx is not None:
            _apply(frame, *ctx)
        self.stack.append(frame)
        self._pushed(frame)

    def _child(self, top: _Frame, i: int) -> tuple[Any, bool, Any]:
        """Element ``i`` of ``top``: its path, whether its value is needed, and
        what its place makes of it (None, or a context for ``_apply``)."""
        kind, prefix, capture = top.kind, top.prefix, top.capture
        if kind == _MAP:
            if i % 2 == 0:
                return _step(top.path, "<key>"), True, None
            return _step(prefix, (top.mode == "attr", top.key)), capture, None
        if kind == _LIST:
            return _step(prefix, i), capture, None
        if kind in (EXT_TUPLE, EXT_SET, EXT_FROZENSET):
            if top.mode == "same":          # a readonly call's argument: the array itself
                return prefix, capture, ("readonly-item", None)
            if top.mode == "state":         # a (dict, slots dict) state: attributes
                return _step(top.path, f"[{i}]"), capture, ("attrs", prefix)
            return _step(prefix, f"{{{i}}}" if top.mode == "set" else i), capture, None
        if kind == EXT_OBJARRAY:
            if i < 3:
                return _step(top.path, "<meta>"), True, None
            return _step(top.path, _element(i - 3, top.extra)), capture, None
        if kind in _KEEP_VALUES:
            return _step(top.path, "<meta>"), True, None
        if kind == EXT_INST:
            if i == 0:      # kept as a value: a REF to a shared class is no line to show
                return _step(top.path, "<class>"), True, None
            return _step(top.path, "<attributes>"), capture, ("inst-attrs", top.path)
        if kind == EXT_REDUCE:
            return self._reduce_child(top, i)
        if kind == _ROOT:
            return None, False, None
        return _step(top.path, "<dtype>"), capture, None

    def _reduce_child(self, top: _Frame, i: int) -> tuple[Any, bool, Any]:
        """A REDUCE's elements (callable, args, state, list items, dict items,
        setter) are named as pickle's rules apply them: state attributes ``.x``,
        list items ``[i]`` and dict items ``[key]`` of the object itself."""
        path = top.path
        if i == 0:
            return _step(path, "<callable>"), True, None
        if i == 1 and top.extra == READONLY:
            return path, top.capture, ("readonly", path)
        ctx = {2: ("attrs", path), 3: ("listitems", path), 4: ("dictitems", path)}.get(i)
        return _step(path, _REDUCE_PARTS[i]), top.capture, ctx

    # -- values ------------------------------------------------------------------------

    def _uint(self, data: bytes) -> int:
        """An index extension's payload (docs/FORMAT.md: 1, 2, 4 or 8 bytes)."""
        if len(data) not in _UINT_SIZES:
            raise self.fail(f"an index extension of {len(data)} bytes")
        return int.from_bytes(data, "big")

    def _string(self, data: bytes) -> str:
        """A STRREF's string."""
        k = self._uint(data)
        if k >= len(self.strings):
            raise self.fail(f"a reference to string {k}, which does not exist yet")
        return self.strings[k]

    def _ext(self, code: int, data: bytes, top: _Frame, i: int) -> Any:
        """An extension value, element ``i`` of ``top``."""
        if code == EXT_STRREF:
            return self._string(data)
        if code == EXT_REF:
            return self._ref(self._uint(data), top, i)
        if code == EXT_STR_SURROGATE:
            try:
                s = bytes(data).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as e:
                raise self.fail(f"a string that does not decode ({e})") from None
            self.strings.append(s)
            return s
        if code == EXT_COMPLEX:
            if len(data) != 16:
                raise self.fail("a complex number of other than 16 bytes")
            return _Opaque("complex")
        if code == EXT_BIGINT:
            # a huge int's text would cost quadratic time: it is shown as <int>
            return int.from_bytes(data, "big", signed=True) if len(data) <= 64 else _Opaque("int")
        if code in MARKERS:
            raise self.fail(f"marker {code} outside the first element of an array")
        raise self.fail(f"MessagePack extension type {code}, which torpor never writes")

    def _ref(self, k: int, top: _Frame, i: int) -> Any:
        if k >= len(self.memo_path):
            raise self.fail(f"a reference to memo index {k}, which does not exist yet")
        path, capture, _ = self._child(top, i)
        if capture:
            if k in self.memo_name:
                return _Global(self.memo_name[k])
            return _Shown(self.memo_text.get(k, "<shared object>"))
        self.items.append((path, k))
        owner = top.memo if top.memo >= 0 else top.owner
        if self.memo_flags[k] == _DONE | _CONTENT and owner >= 0:
            self.memo_flags[owner] |= _CONTENT
        return None

    def _pushed(self, frame: _Frame) -> None:
        """``frame`` has just started (``self.head``: where); a hook of ``locate.Finder``."""

    def _give(self, frame: _Frame, i: int, v: Any, pos: int = -1) -> None:
        """Element ``i`` of ``frame`` is complete, with value ``v`` (``pos``: where a
        value read whole started; -1 for an array or map)."""
        kind = frame.kind
        if kind == EXT_REDUCE and i == 0:
            frame.extra = v.what if isinstance(v, _Global) else None
        if frame.values is not None:
            frame.values.append(v)
            if kind == EXT_OBJARRAY and i == 2:
                self._object_array(frame)

    # -- when an array or map ends -----------------------------------------------------

    def _exit(self, frame: _Frame) -> None:
        kind = frame.kind
        value: Any = None
        if kind > _MAP:                 # a marker's object
            value = self._marker_end(frame)
        elif kind == _ROOT:
            return
        elif frame.capture:
            value = frame.values if kind == _LIST else _Opaque("dict")
        memo = frame.memo
        if memo >= 0:
            flags = self.memo_flags
            flags[memo] |= _DONE
            if flags[memo] & _CONTENT and frame.owner >= 0:
                flags[frame.owner] |= _CONTENT
        parent = self.stack[-1]
        parent.key = value
        if parent.slow:
            self._give(parent, parent.i - 1, value)

    def _marker_end(self, frame: _Frame) -> Any:
        """What a marker's object is, now that its array ends: its line, its
        name, or (for a map key) its value."""
        kind = frame.kind
        value: Any = None
        if kind == EXT_GLOBAL:
            value = self._global(frame)
        elif kind in (EXT_NDARRAY, EXT_NDARRAY_INLINE):
            self._ndarray(frame)
        elif kind in (EXT_BYTES_OOB, EXT_BYTEARRAY_OOB):
            self._bytes(frame)
        if frame.capture:
            if value is None:
                value = _key_value(kind, frame.values or [])
            if frame.memo >= 0:         # a key used again by reference shows this text
                self.memo_text[frame.memo] = _text(value)
        return value

    def _global(self, frame: _Frame) -> _Global:
        module, qualname = frame.values or (None, None)
        if type(module) is not str or type(qualname) is not str:
            raise self.fail("a class or function name that is not two strings")
        name = f"{module}.{qualname}"
        if frame.memo >= 0:
            self.memo_name[frame.memo] = name
        return _Global(name)

    def _emit(self, frame: _Frame, kind: str, **fields: Any) -> None:
        self.items.append(Item(_render(frame.path), kind, readonly=frame.note, **fields))
        owner = frame.memo if frame.memo >= 0 else frame.owner
        if owner >= 0:
            self.memo_flags[owner] |= _CONTENT

    def _section(self, index: Any, kind: int, what: str) -> TocEntry:
        if type(index) is not int or not 0 <= index < len(self.sections) \
                or self.sections[index].kind != kind:
            raise self.fail(f"{what} names section {_text(index)}, which is not one of its kind")
        if index in self.used:
            raise self.fail(f"section {index} is used twice (docs/FORMAT.md forbids it)")
        self.used.add(index)
        return self.sections[index]

    def _ndarray(self, frame: _Frame) -> None:
        data, desc, shape, fortran = frame.values or (None, None, None, None)
        dtype = self._dtype(desc)
        shape_t = self._shape(shape)
        if type(fortran) is not bool:
            raise self.fail("an array's order flag is not a bool")
        order = "F" if fortran else "C"
        if frame.kind == EXT_NDARRAY:
            e = self._section(data, SECTION_ARRAY, "an array")
            self._emit(frame, "array", dtype=dtype, shape=shape_t, stored=e.stored, raw=e.raw,
                       codec=CODEC_NAMES.get(e.codec, str(e.codec)), section=data, order=order)
        else:
            if type(data) is not bytes:
                raise self.fail("an inline array's data is not bin")
            self._emit(frame, "array", dtype=dtype, shape=shape_t, stored=len(data), raw=len(data),
                       codec="inline", order=order)

    def _bytes(self, frame: _Frame) -> None:
        (index,) = frame.values or (None,)
        kind = "bytes" if frame.kind == EXT_BYTES_OOB else "bytearray"
        e = self._section(index, SECTION_BYTES, f"a {kind} object")
        self._emit(frame, kind, dtype=kind, shape=(e.raw,), stored=e.stored, raw=e.raw,
                   codec=CODEC_NAMES.get(e.codec, str(e.codec)), section=index)

    def _object_array(self, frame: _Frame) -> None:
        """An object array's line, once its three header elements are read (its
        elements' lines follow)."""
        _, shape, fortran = frame.values or (None, None, None)
        shape_t = self._shape(shape)
        count = 1
        for d in shape_t:
            count *= d
        if count != frame.n - 3 or type(fortran) is not bool:
            raise self.fail(f"an object array of shape {shape_t} holds {frame.n - 3} elements")
        frame.extra = (shape_t, fortran)
        frame.values = [] if frame.capture else None     # the elements are not kept
        frame.slow = frame.capture
        self._emit(frame, "object array", dtype="object", shape=shape_t,
                   order="F" if fortran else "C", codec="inline")

    def _dtype(self, desc: Any) -> str:
        # the record and metadata forms wrap a layout, which is what is shown
        while type(desc) is list and len(desc) in (2, 3) and desc[0] in ("record", "meta"):
            desc = desc[1]
        text = self.dtypes.get(desc) if type(desc) is str else None
        if text is None:
            try:
                text = str(decode_dtype(desc))
            except CorruptFileError as e:
                raise self.fail(f"an array's dtype: {e}") from None
            if type(desc) is str:       # plain dtypes recur: numpy's name, made once
                self.dtypes[desc] = text
        return text

    def _shape(self, shape: Any) -> tuple[int, ...]:
        if type(shape) is not list or len(shape) > 64 \
                or not all(type(d) is int and 0 <= d < 1 << 63 for d in shape):
            raise self.fail(f"invalid array shape {_text(shape)}")
        return tuple(shape)


def _apply(frame: _Frame, label: str, node: Any) -> None:
    """Set up ``frame`` for its place (``_child``'s context): an instance's or a
    state's attributes are ``.name`` steps, and a REDUCE's list and dict items,
    and a readonly call's argument, follow the object's own path (``node``)."""
    if label == "readonly-item":
        frame.note = True
    elif frame.kind == _MAP and label in ("inst-attrs", "attrs"):
        frame.mode, frame.prefix = "attr", node
    elif (frame.kind == _MAP and label == "dictitems") or (frame.kind == _LIST and label == "listitems"):
        frame.prefix = node
    elif frame.kind == EXT_TUPLE and label == "attrs":
        frame.mode, frame.prefix = "state", node
    elif frame.kind == EXT_TUPLE and label == "readonly" and frame.n == 1:
        frame.mode, frame.prefix = "same", node


def _key_value(kind: int, values: list[Any]) -> Any:
    """What a marker's object read inside a map key is shown as."""
    if kind == EXT_TUPLE:
        return tuple(values)
    if kind in (EXT_SET, EXT_FROZENSET):
        try:
            return frozenset(values) if kind == EXT_FROZENSET else set(values)
        except TypeError:       # an item that is itself a set, a list
            pass
    return _Opaque(_MARKER_NAMES.get(kind, "object"))


def _key_step(key: Any, attr: bool) -> str:
    """``['k']`` for a dict key, ``.name`` for an attribute (``.['not a name']``)."""
    if attr and type(key) is str and key.isidentifier():
        return "." + key
    return ("." if attr else "") + f"[{_text(key)}]"


def _element(j: int, shape_order: Any) -> str:
    """The index of element ``j`` of an object array, ``[i, k]``."""
    shape, fortran = shape_order
    if len(shape) <= 1:
        return f"[{j}]"
    idx = []
    for d in (shape if fortran else shape[::-1]):
        j, r = divmod(j, d)
        idx.append(r)
    if not fortran:
        idx.reverse()
    return "[" + ", ".join(map(str, idx)) + "]"


# --- paths -----------------------------------------------------------------------------
# A path is a chain of nodes (parent, step, depth, head), built as the stream is
# read and rendered only for the lines shown: a node is a few dozen bytes however
# deep it is, and rendering one costs at most 2 x PATH_STEPS steps. A step is an
# int (a list or tuple index), an (is attribute, key) pair, or its text.

def _step(parent: Any, step: Any) -> Any:
    if parent is None:
        return (None, step, 1, None)
    depth = parent[2] + 1
    head = parent[3]
    if head is None and depth > PATH_STEPS:
        head = _walk(parent, PATH_STEPS)       # the first PATH_STEPS steps, kept once
    return (parent, step, depth, head)


def _step_text(step: Any) -> str:
    if type(step) is int:
        return f"[{step}]"
    if type(step) is tuple:
        return _key_step(step[1], step[0])
    return str(step)


def _walk(node: Any, n: int) -> str:
    steps: list[str] = []
    while node is not None and len(steps) < n:
        steps.append(_step_text(node[1]))
        node = node[0]
    return "".join(reversed(steps))


def _render(node: Any) -> str:
    if node is None:
        return ""
    depth, head = node[2], node[3]
    if depth <= 2 * PATH_STEPS:
        return _walk(node, depth)
    return f"{head}...{_walk(node, PATH_STEPS)}"
