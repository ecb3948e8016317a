"""Finding one part of a torpor file's object stream, for a partial load
(``torpor.load(file, select="['geoms'][3]['points']")`` and ``torpor.open``):
where the object at a path starts and ends in the stream, which shared objects
outside it it refers to, and which array and bytes sections those bytes use; so
that only they are rebuilt and only those sections read.

``Finder`` is the outline's reader (``outline.Outliner``) with its hooks filled
in: it numbers memo indices and strings as the loader does, and so knows, for
every shared object it has passed, where it starts and ends and how many strings
came before it. A path through a shared reference (a REF) goes on inside the
object it refers to: the search starts again from that object (``_Restart``).
Nothing is imported or called here; ``engine.partial`` does the rebuilding.
"""

from __future__ import annotations

import ast
import bisect
from typing import Any, NamedTuple, Optional

from ..errors import FormatError, NotInFileError
from .constants import EXT_INST, EXT_TUPLE, MAX_DEPTH
from .container import Toc
from .outline import _LIST, _MAP, _ROOT, Outliner, _Frame, _key_step

#: A path is at most this many characters (each step is parsed as a Python literal).
MAX_PATH = 10_000
#: How many shared references a path may go through.
MAX_RESTARTS = 64
#: How many times the object stream's length the walks that follow paths through
#: shared references may read, together, in one open file (``Walks``): a walk
#: costs about a microsecond per object, in Python.
WALKS = 8

Step = tuple[bool, Any]         # (is an attribute, the key, name or index)


class Walks:
    """What the extra walks of one file's partial loads may still read, together.
    A search's first walk, and its one walk again from the stream's start (an
    object around where a view's walk started), each read the stream at most once
    and are not counted: a view's every step, listing and load is a search, as
    often as the user asks. A file can make a search go on through many shared
    references, each a new walk: those walks, over all the searches of the file,
    read at most ``WALKS`` times its stream, plus 64 KiB so that small files are
    never refused."""

    def __init__(self, name: str, stream_size: int) -> None:
        self.name = name
        self.left = WALKS * stream_size + (64 << 10)

    def check(self) -> None:
        if self.left < 0:
            raise FormatError(
                f"{self.name}: following paths through its shared references has read its "
                f"object stream more than {WALKS} times over: load the object a path starts "
                f"from and follow it there, load the file whole, or open it again to go on")

# what a part is, for ``torpor.open``: these kinds are shown as views, the rest loaded
_KINDS = {_MAP: "dict", _LIST: "list", EXT_TUPLE: "tuple", EXT_INST: "instance"}


def parse_path(text: str) -> tuple[Step, ...]:
    """``"['geoms'][3].points"`` as steps: ``[literal]`` is a dict key or an index,
    ``.name`` (or ``.['not a name']``) an attribute, as ``torpor ls`` prints them."""
    if not isinstance(text, str):
        raise TypeError(f"select must be a path such as \"['geoms'][3]['points']\", not "
                        f"{type(text).__name__}")
    if len(text) > MAX_PATH:
        raise ValueError(f"select: a path of {len(text)} characters; at most {MAX_PATH}")
    steps: list[Step] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        attr = c == "."
        if attr:
            i += 1
            if i < n and text[i] != "[":
                j = i
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
                name = text[i:j]
                if not name.isidentifier():
                    raise ValueError(f"select: {text!r} has no attribute name after the '.' at "
                                     f"character {i - 1}")
                steps.append((True, name))
                i = j
                continue
        if i >= n or text[i] != "[":
            raise ValueError(f"select: {text!r} has {text[i:i + 10]!r} at character {i}; a path "
                             f"is made of steps such as ['key'], [3] and .name")
        key, i = _bracket(text, i)
        steps.append((attr, key))
    return tuple(steps)


def _bracket(text: str, i: int) -> tuple[Any, int]:
    """The literal in the brackets that open at ``text[i]``, and where they close
    (the first ``]`` after which the text between is a Python literal)."""
    j = text.find("]", i + 1)
    while j >= 0:
        inner = text[i + 1:j].strip()
        try:
            key = ast.literal_eval(inner) if inner else None
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            j = text.find("]", j + 1)
            continue
        if not inner:
            break
        try:
            hash(key)
        except TypeError:
            raise ValueError(f"select: {inner!r} in {text!r} is a {type(key).__name__}, which "
                             f"cannot be a key") from None
        return key, j + 1
    raise ValueError(f"select: the '[' at character {i} of {text!r} does not close on a Python "
                     f"literal (a key such as 'name' or 3)")


def render_path(steps: Any) -> str:
    """Steps as ``torpor ls`` prints a path."""
    return "".join(_key_step(key, attr) for attr, key in steps)


def _index_text(key: Any) -> Optional[str]:
    """How the outline names element ``key`` of an object array: ``[3]``, ``[1, 2]``."""
    if type(key) is int:
        return f"[{key}]"
    if type(key) is tuple and key and all(type(k) is int for k in key):
        return "[" + ", ".join(map(str, key)) + "]"
    return None


_PLAIN = (str, bytes, int, float, bool, type(None))


def plain(key: Any, depth: int = 8) -> bool:
    """Whether ``key`` is a plain value (or a tuple of them, at most ``depth`` deep
    and 256 long): the outline's reading of a key is then the key itself, and
    comparing it costs little."""
    if type(key) in _PLAIN:
        return True
    return type(key) is tuple and depth > 0 and len(key) <= 256 \
        and all(plain(k, depth - 1) for k in key)


def _same(step: Any, want: Step) -> bool:
    """Whether the outline's step ``step`` is the path's step ``want``: an index
    is an int, a key matches as a dict would match it (``1 == 1.0``), and only a
    plain key of the file is compared (others are matched once loaded)."""
    attr, key = want
    t = type(step)
    if t is int:
        return not attr and type(key) is int and key == step
    if t is tuple:
        if step[0] != attr or not plain(step[1]):
            return False
        try:
            return bool(step[1] == key) and hash(step[1]) == hash(key)
        except (TypeError, ValueError, RecursionError):
            return False
    if t is str:        # an object array's element, "[1, 2]"
        return not attr and step == _index_text(key)
    return False


class Target(NamedTuple):
    """Where the object at a path is in the stream."""
    start: int            # its first byte
    end: int              # the byte after its last
    memo: int             # its memo index, or -1 (a value without one)
    n_memo: int           # memo indices taken before it starts
    n_strings: int        # strings in the string table before it starts
    kind: str             # "dict", "list", "tuple", "instance", or "object"
    size: int             # a dict's, a list's or a tuple's items, else -1
    keys: Optional[list[Any]] = None      # a dict's keys, an instance's attribute names
    type_name: Optional[str] = None       # an instance's class ("module.qualname")
    # a list's or tuple's items: where each starts, and the memo indices and
    # strings counted before it
    children: Optional[list[tuple[int, int, int]]] = None


class Part(NamedTuple):
    """Bytes of the stream to rebuild, and what the loader has counted before them."""
    start: int
    end: int
    n_memo: int
    n_strings: int


class _Stop(Exception):
    """The search has what it looks for (or knows it is not there)."""


class _Restart(Exception):
    """The path goes on inside the shared object of memo index ``memo``, which
    started earlier."""

    def __init__(self, memo: int, rest: tuple[Step, ...]) -> None:
        self.memo, self.rest = memo, rest


class _Rewalk(Exception):
    """A search that started inside the stream needs an object around its start:
    it is made again from the stream's start."""


_NOWHERE = ("nowhere",)     # no path node is this one


class Finder(Outliner):
    """One search of the stream for one path (``search``); then ``parts`` says
    which bytes to rebuild and ``used_sections`` which payload sections they use.
    ``resume`` makes one that starts at an object an earlier search passed, with
    what that one counted before it, instead of reading the stream from its start.

    Modes: "find" reads to the end of the part and of every shared object it refers
    to (to rebuild it); "peek" stops once its kind and size are known (and an
    instance's class); "keys" reads to its end, noting a dict's keys or an
    instance's attribute names."""

    def __init__(self, stream: bytes, toc: Toc, name: str = "the file",
                 max_depth: int = MAX_DEPTH, base: int = 0) -> None:
        super().__init__(stream, toc, name, max_depth, base)
        self.whole, self.toc = stream, toc
        self.mstart: list[int] = []       # per memo index: where its object starts
        self.mend: list[int] = []         # ... and ends (-1 until it has)
        self.mstrs: list[int] = []        # ... strings before it
        self.mkind: list[int] = []        # ... its frame kind, and its element count
        self.msize: list[int] = []
        self.refs_at: list[int] = []      # every REF: where it ends, and its memo index
        self.refs_to: list[int] = []
        self.secs_at: list[int] = []      # every section used: where, and which
        self.secs: list[int] = []
        self.fresh = -1                   # the memo index the object opening took
        self.last_ref: Any = None         # (frame, element, memo index) of the last REF
        self.anchor = -1                  # the search starts inside the object there
        self.want: tuple[Step, ...] = ()
        self.depth = 0                    # steps matched
        self.matched: Any = _NOWHERE      # the path node they lead to, and its frame
        self.matched_frame: Optional[_Frame] = None
        self.mode = "find"
        self.children: Optional[list[tuple[int, int, int]]] = None   # "keys" of a list
        self.found: Optional[dict[str, Any]] = None
        self.waiting: Optional[_Frame] = None   # the target's frame, until it ends
        self.wait_memo = -1                     # the target's memo index, until it ends
        self.missing: Any = None          # why the path is not there
        self.deps: Optional[set[int]] = None    # _deps(), once the target's have all ended

    @classmethod
    def resume(cls, parent: Finder, base: int, k: int, n_strings: int) -> Finder:
        """A finder starting at byte ``base`` of the stream, where ``parent`` had
        counted ``k`` memo indices and ``n_strings`` strings (the start of an object
        or value it passed), knowing what ``parent`` counted before it: the
        strings, where the shared objects before it start and end, the REFs and
        sections before it."""
        f = cls(parent.whole, parent.toc, parent.name, parent.max_depth, base)
        f.strings.extend(parent.strings[:n_strings])
        f.memo_path.extend([None] * k)
        f.memo_flags.extend(bytes(k))
        f.memo_name.update((i, v) for i, v in parent.memo_name.items() if i < k)
        f.memo_text.update((i, v) for i, v in parent.memo_text.items() if i < k)
        f.mstart, f.mstrs = parent.mstart[:k], parent.mstrs[:k]
        f.mkind, f.msize = parent.mkind[:k], parent.msize[:k]
        # (an object around the start ends after it, or not yet: _around_start)
        f.mend = parent.mend[:k]
        r = bisect.bisect_right(parent.refs_at, base)
        f.refs_at, f.refs_to = parent.refs_at[:r], parent.refs_to[:r]
        n = bisect.bisect_right(parent.secs_at, base)
        f.secs_at, f.secs = parent.secs_at[:n], parent.secs[:n]
        f.used.update(f.secs)
        f.dtypes = parent.dtypes
        return f

    # -- the search --------------------------------------------------------------------

    def search(self, anchor: int, want: tuple[Step, ...], mode: str) -> Optional[Target]:
        """The object at ``want`` from the object starting at byte ``anchor`` (-1:
        the saved object); None if there is none (``missing`` says why)."""
        self.anchor, self.want, self.mode = anchor, want, mode
        root = _Frame(_ROOT, 1, None, -1, -1, False, "index")
        # the saved object, or the item it starts at, may be a plain value
        root.slow = not want and (anchor < 0 or anchor == self.base)
        self.stack.append(root)
        try:
            self._loop()
        except _Stop:
            pass
        if self.found is None:
            return None
        if mode == "find":
            self._complete()
        f = self.found
        return Target(f["start"], f["end"], f["memo"], f["n_memo"], f["n_strings"], f["kind"],
                      f["size"], f.get("keys"), f.get("type_name"), f.get("children"))

    def _complete(self) -> None:
        """Read on until every shared object the target refers to has ended (an
        object around the target, in a cycle, ends after it)."""
        while True:
            deps = self._deps()
            if any(self._around_start(k) for k in deps):
                raise _Rewalk
            open_ = [k for k in deps if self.mend[k] < 0]
            if not open_:
                self.deps = deps        # (what parts() rebuilds)
                return
            self.wait_memo = min(open_)
            try:
                self._loop()
            except _Stop:
                pass
            else:
                raise self.fail(f"memo index {self.wait_memo} never ends")

    def _deps(self) -> set[int]:
        """Memo indices of the shared objects outside the target that it refers to,
        directly or through each other."""
        f = self.found
        assert f is not None
        todo = [(f["start"], f["end"], f["n_memo"])]
        deps: set[int] = set()
        while todo:
            s, e, n0 = todo.pop()
            if e < 0:
                continue
            lo = bisect.bisect_right(self.refs_at, s)
            hi = bisect.bisect_right(self.refs_at, e)
            for j in range(lo, hi):
                k = self.refs_to[j]
                if k < n0 and k not in deps:
                    deps.add(k)
                    todo.append((self.mstart[k], self.mend[k], k))
        return deps

    def parts(self, target: Target) -> tuple[list[Part], bool]:
        """The stream's bytes to rebuild, in stream order, and whether the target
        is rebuilt inside another part (then it is its memo index's object)."""
        spans = {(target.start, target.end, target.n_memo, target.n_strings)}
        for k in self.deps if self.deps is not None else self._deps():
            spans.add((self.mstart[k], self.mend[k], k, self.mstrs[k]))
        out: list[Part] = []
        for s, e, n0, ns in sorted(spans, key=lambda x: (x[0], -x[1])):
            if out and e <= out[-1].end:
                continue            # inside a part rebuilt whole
            out.append(Part(s, e, n0, ns))
        inside = not any(p.start == target.start and p.end == target.end for p in out)
        if inside and target.memo < 0:
            raise FormatError(f"{self.name}: this part refers to an object around it and has "
                              f"no identity of its own to be loaded by; load the object around it")
        return out, inside

    def used_sections(self, parts: list[Part]) -> list[int]:
        """The payload sections the arrays and bytes objects of ``parts`` use."""
        out: list[int] = []
        for p in parts:
            lo = bisect.bisect_right(self.secs_at, p.start)
            hi = bisect.bisect_right(self.secs_at, p.end)
            out.extend(self.secs[lo:hi])
        return out

    # -- the hooks ---------------------------------------------------------------------

    def _new_memo(self, path: Any) -> int:
        memo = super()._new_memo(path)
        self.fresh = memo
        self.mstart.append(self.head + self.base)
        self.mend.append(-1)
        self.mstrs.append(len(self.strings))
        self.mkind.append(-1)
        self.msize.append(-1)
        return memo

    def _ref(self, k: int, top: _Frame, i: int) -> Any:
        v = super()._ref(k, top, i)
        self.refs_at.append(self.unpacker.tell() + self.base)
        self.refs_to.append(k)
        self.last_ref = (top, i, k)
        return v

    def _section(self, index: Any, kind: int, what: str) -> Any:
        e = super()._section(index, kind, what)
        self.secs_at.append(self.unpacker.tell() + self.base)
        self.secs.append(index)
        return e

    def _pushed(self, frame: _Frame) -> None:
        if frame.memo >= 0 and frame.memo == self.fresh:
            frame.start = self.head + self.base
            self.mkind[frame.memo] = frame.kind
            self.msize[frame.memo] = frame.n
            self.fresh = -1
        if self.matched is _NOWHERE:
            if self.found is not None:
                return
            if (len(self.stack) == 2 and (self.anchor < 0 or self.anchor == self.base)) or \
                    (frame.start >= 0 and frame.start == self.anchor):
                if not self.want:
                    self._hit(frame)
                else:
                    self.matched, self.matched_frame = frame.path, frame
                    frame.slow = True
                    self._can_go_on(frame)
            return
        if self.children is not None and frame.path is not None \
                and frame.path[0] is self.matched:          # an item of the target list
            fresh = frame.start >= 0
            self.children.append((self.head + self.base,
                                  frame.memo if fresh else len(self.mstart), len(self.strings)))
        if self.depth < len(self.want):
            node = frame.path
            if node is not None and node[0] is self.matched \
                    and _same(node[1], self.want[self.depth]):
                if self.depth + 1 == len(self.want):
                    self._hit(frame)
                    return
                self.depth += 1
                self.matched, self.matched_frame = node, frame
                self._can_go_on(frame)
        if frame.prefix is self.matched:
            frame.slow = True

    def _can_go_on(self, frame: _Frame) -> None:
        """Stop at once when the path's next step cannot be in ``frame`` (a key of a
        list, an index past its end, an item of an instance), rather than at its end."""
        attr, key = self.want[self.depth]
        if frame.kind in (_LIST, EXT_TUPLE):
            if not attr and type(key) is int and -frame.n <= key < frame.n:
                if key < 0:             # from the end, now that its length is known
                    want = list(self.want)
                    want[self.depth] = (False, key + frame.n)
                    self.want = tuple(want)
                return
        elif frame.kind != EXT_INST or attr:
            return
        self.missing = (self.depth, _what(frame))
        raise _Stop

    def _object_array(self, frame: _Frame) -> None:
        super()._object_array(frame)
        if frame.prefix is self.matched:        # (the outline stops reading its elements)
            frame.slow = True

    def _hit(self, frame: _Frame) -> None:
        """``frame`` is the target."""
        if frame.start < 0 and frame.memo >= 0:
            # a cycle's object written again complete: the object is the one of its
            # memo index, whose first occurrence holds this one
            self._hit_memo(frame.memo)
            return
        fresh = frame.start >= 0
        self.found = {"start": self.head + self.base, "end": -1,
                      "memo": frame.memo if fresh else -1,
                      "n_memo": frame.memo if fresh else len(self.mstart),
                      "n_strings": len(self.strings), "kind": _KINDS.get(frame.kind, "object"),
                      "size": _size(frame.kind, frame.n), "keys": [], "type_name": None}
        self.waiting = frame
        self.depth = len(self.want)
        self.matched, self.matched_frame = frame.path, frame
        if self.mode == "keys" or (self.mode == "peek" and frame.kind == EXT_INST):
            frame.slow = True           # its keys, or its class
            if self.mode == "keys" and frame.kind in (_LIST, EXT_TUPLE):
                self.children = self.found["children"] = []     # where its items start
        elif self.mode == "peek":
            raise _Stop

    def _around_start(self, k: int) -> bool:
        """Whether memo index ``k``'s object holds where this (resumed) walk started:
        what it holds before that start, this walk has not read."""
        return self.mstart[k] < self.base and not 0 <= self.mend[k] <= self.base

    def _hit_memo(self, k: int) -> None:
        """The target is memo index ``k``'s object, met earlier."""
        if self.mode != "find":         # its kind or keys: a new search, from it
            raise _Restart(k, ())
        if self._around_start(k):
            raise _Rewalk
        self.found = {"start": self.mstart[k], "end": self.mend[k], "memo": k, "n_memo": k,
                      "n_strings": self.mstrs[k], "kind": _KINDS.get(self.mkind[k], "object"),
                      "size": _size(self.mkind[k], self.msize[k])}
        if self.mend[k] < 0:
            self.wait_memo = k              # an object around this place: read to its end
            self.matched = _NOWHERE
            return
        raise _Stop

    def _give(self, frame: _Frame, i: int, v: Any, pos: int = -1) -> None:
        super()._give(frame, i, v, pos)
        if frame.prefix is not self.matched:
            if frame.kind == _ROOT and frame.slow and pos >= 0 and self.found is None:
                ref = self.last_ref                 # the saved object (or item) is a value
                if ref is not None and ref[0] is frame:
                    self._hit_memo(ref[2])
                    return
                self._value(pos, v)
            return
        if self.found is not None:                  # the target's keys, or its class
            if frame.kind == EXT_INST and i == 0:
                self.found["type_name"] = getattr(v, "what", None)
                if self.mode == "peek":
                    raise _Stop
            elif self.mode == "keys" and frame.kind == _MAP and not i & 1:
                self.found["keys"].append(v)
            elif self.children is not None and pos >= 0 and frame is self.waiting:
                self.children.append((pos + self.base, len(self.mstart), len(self.strings)))
            return
        if frame.kind == _MAP:
            if not i & 1:
                frame.held = v
                return
            step = (frame.mode == "attr", frame.held)
        else:
            node = self._child(frame, i)[0]
            if node is None or node[0] is not self.matched:
                return
            step = node[1]
        if pos < 0 or not _same(step, self.want[self.depth]):
            return          # (arrays and maps were matched when they started)
        ref = self.last_ref
        if ref is not None and ref[0] is frame and ref[1] == i:
            k = ref[2]
            if self.depth + 1 == len(self.want):
                self._hit_memo(k)
                return
            raise _Restart(k, self.want[self.depth + 1:])
        if self.depth + 1 == len(self.want):
            self._value(pos, v)
        name = type(v).__name__
        self.missing = (self.depth + 1, f"{'an' if name[0] in 'aeiou' else 'a'} {name}")
        raise _Stop

    def _value(self, pos: int, v: Any) -> None:
        """The target is a value read whole, from ``pos`` to here."""
        self.found = {"start": pos + self.base, "end": self.unpacker.tell() + self.base, "memo": -1,
                      "n_memo": len(self.mstart), "n_strings": len(self.strings),
                      "kind": "object", "size": -1}
        raise _Stop

    def _exit(self, frame: _Frame) -> None:
        if frame.kind == _ROOT and self.base:
            # the object it started at has ended, and what is looked for is around it
            raise _Rewalk
        super()._exit(frame)
        end = self.unpacker.tell() + self.base
        if frame.start >= 0:
            self.mend[frame.memo] = end
            if frame.memo == self.wait_memo:
                if self.found is not None and self.found["memo"] == frame.memo:
                    self.found["end"] = end
                raise _Stop
        if frame is self.waiting:
            assert self.found is not None
            self.found["end"] = end
            raise _Stop
        if frame is self.matched_frame and self.found is None:
            self.missing = (self.depth, _what(frame))
            raise _Stop


def _size(kind: int, n: int) -> int:
    if kind == _MAP:
        return n // 2
    return n if kind in (_LIST, EXT_TUPLE) else -1


def _what(frame: _Frame) -> str:
    kind = _KINDS.get(frame.kind)
    if kind is None:
        return "an object"
    if kind == "instance":
        return "an instance without that attribute"
    n = _size(frame.kind, frame.n)
    return f"a {kind} of {n} item{'s' if n != 1 else ''}"


#: Where a search starts: (a finder that passed it or None, byte, memo indices
#: and strings counted before it).
Start = tuple[Optional["Finder"], int, int, int]


def locate(stream: bytes, toc: Toc, name: str, steps: tuple[Step, ...], mode: str = "find",
           max_depth: int = MAX_DEPTH, start: Optional[Start] = None,
           done: int = 0, walks: Optional[Walks] = None) -> tuple[Finder, Target]:
    """Search ``stream`` for the object at ``steps`` (``Finder``'s modes); raises
    NotInFileError when the file has none. ``start``: the first ``done`` steps lead
    to the object or value starting there (a part found before), so the search
    starts there: where ``finder`` passed it, or (None) reading the stream from its
    start up to it. ``walks``: what the walks may read (the open file's, shared by
    all its searches; else this search's own)."""
    want = steps[done:]
    parent, anchor, k, ns = start if start is not None else (None, -1, -1, -1)
    if walks is None:
        walks = Walks(name, len(stream))
    resume = True                   # (not once a resumed walk needed more than it had)
    counted = False                 # whether this walk counts (see Walks)
    for _ in range(MAX_RESTARTS + 2):
        if counted:
            walks.check()
        after = True                # ... and the next one
        if parent is not None and resume:
            finder = Finder.resume(parent, anchor, k, ns)
        else:
            finder = Finder(stream, toc, name, max_depth)
        try:
            target = finder.search(anchor, want, mode)
        except _Restart as r:
            done += len(want) - len(r.rest)
            parent, k, want = finder, r.memo, r.rest
            anchor, ns = finder.mstart[k], finder.mstrs[k]
            continue
        except _Rewalk:
            # one walk from the stream's start to the same object (found by where it
            # starts); the whole path again only if what it starts at is no object
            # such a walk can find (a plain value, a REF, a cycle's rewrite)
            if not (0 <= k < len(finder.mstart) and finder.mstart[k] == anchor):
                anchor, want, done = -1, steps, 0
            parent, resume = None, False
            after = counted         # (one per search: a walk from the start never rewalks)
            continue
        finally:
            if counted:
                walks.left -= finder.unpacker.tell()
            counted = after
        if target is not None:
            return finder, target
        depth, what = finder.missing if finder.missing is not None else (0, "a plain value")
        there = render_path(steps[:done + depth]) or "the saved object"
        raise NotInFileError(
            f"{name} has nothing at {render_path(steps)}: {there} is {what} without "
            f"{render_path(steps[done + depth:done + depth + 1])} (torpor ls {name} lists "
            f"the arrays it holds and where)", render_path(steps), done + depth)
    raise FormatError(f"{name}: the path {render_path(steps)} goes through more than "
                      f"{MAX_RESTARTS} shared references")
