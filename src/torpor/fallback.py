"""Pure-Python twin of the Cython walker (``_ext/_walker.pyx``).

It reads and writes exactly the same object stream (docs/FORMAT.md, "The object
stream") and is the reference implementation: when the two disagree, this one
states the intent. ``TORPOR_PUREPYTHON=1`` selects it at import time.

Both directions are iterative: an explicit stack replaces recursion, so a list
nested a million levels deep neither overflows the C stack nor hits Python's
recursion limit.
"""

import struct

import numpy as np

from . import _arrays
from ._msgpack import (Reader, pack_array_header, pack_bin, pack_ext, pack_float,
                       pack_int, pack_map_header, pack_str_bytes, read_uint_payload,
                       uint_payload)
from ._reduce import (KIND_GLOBAL, KIND_INST, apply_state, classify, cycle_segments, global_ref,
                      override_reduction, reduce_object)
from .errors import CorruptFileError, CycleError, TorporError, UnsupportedObjectError
from .format import (ARRAY_OOB_MIN, AT_MARKERS, BYTES_OOB_MIN, EXT_BIGINT, EXT_BYTEARRAY,
                     EXT_BYTEARRAY_OOB, EXT_BYTES_OOB, EXT_COMPLEX, EXT_DTYPE, EXT_FROZENSET,
                     EXT_GLOBAL, EXT_INST, EXT_NDARRAY, EXT_NDARRAY_INLINE, EXT_NPSCALAR,
                     EXT_OBJARRAY, EXT_REDUCE, EXT_REF, EXT_SET, EXT_STR_SURROGATE,
                     EXT_STRREF, EXT_TUPLE, FRAME_SIZE, MARKERS, MAX_DEPTH, MEMO_MARKERS)

IMPLEMENTATION = "python"

_complex = struct.Struct("<dd")
_NOARG = b"\x00"          # payload of a marker that starts a new object
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_ndarray = np.ndarray
_memmap = np.memmap
_npgeneric = np.generic
_npdtype = np.dtype


class _ReduceTail:
    """The state, list items and dict items of a reduced object; written as three
    nils when a cycle already rebuilt the object (its rebuild carried them)."""
    __slots__ = ("obj", "rv")

    def __init__(self, obj, rv):
        self.obj = obj
        self.rv = rv


# Frame kinds, used to name the path of a failing object.
F_SEQ, F_MAP, F_ATTRS, F_REDUCE, F_FLAT, F_SET = range(6)


class Encoder:
    """Writes one object graph as a MessagePack stream to ``sink``.

    ``sink.stream_frame(bytes)`` receives the stream in frames of about FRAME_SIZE
    bytes; ``sink.add_array(arr, fortran)`` and ``sink.add_bytes(obj)`` receive large
    payloads out of band and return their section index."""

    def __init__(self, sink, max_depth=MAX_DEPTH, reducer_override=None):
        self.sink = sink
        self.max_depth = max_depth
        # reducer_override(obj) -> None or (callable, args): called once per object
        # without a fast path, before the default reduction (as pickle's hook is).
        # The session layer uses it to save State objects through their snapshots.
        self.override = reducer_override
        self.overridden = set()   # ids of objects the hook reduced
        # reducer_override.wants(cls) -> bool, if the hook has it: False means the
        # hook never reduces instances of cls, so it is not called for them
        self.wants = getattr(reducer_override, "wants", None)
        self.wanted = {}          # class -> cached wants(class)
        self.out = bytearray()
        self.memo = {}          # id(obj) -> memo index (the object's unique name)
        self.keep = []          # memoized objects, alive so their ids stay unique
        self.strtab = {}        # str -> string-table index
        self.open = set()       # ids of tuples/frozensets/reduced objects under construction
        self.kinds = {}         # class -> KIND_* (cached classify())
        self.globals = {}       # "module.qualname" of every global written, in order
        self.stack = []
        self._dispatch = {
            type(None): self._none, bool: self._bool, int: self._int, float: self._float,
            complex: self._complex, str: self._str, bytes: self._bytes,
            bytearray: self._bytearray, list: self._list, tuple: self._tuple,
            dict: self._dict, set: self._set, frozenset: self._frozenset,
            _ndarray: self._ndarray, _memmap: self._ndarray, _npdtype: self._dtype,
            _ReduceTail: self._reduce_tail,
        }

    @property
    def n_memo(self):
        return len(self.keep)

    # -- driver ---------------------------------------------------------------
    def encode(self, root):
        stack = self.stack
        out = self.out
        self._value(root)
        while stack:
            fr = stack[-1]
            seq, pos = fr[0], fr[1]
            if pos == len(seq):
                stack.pop()
                if fr[4] is not None:
                    self.open.discard(fr[4])
                continue
            fr[1] = pos + 1
            self._value(seq[pos])
            if len(out) >= FRAME_SIZE:
                self._flush()
        self._flush()

    def _flush(self):
        if self.out:
            self.sink.stream_frame(bytes(self.out))
            self.out = bytearray()

    def _push(self, seq, kind, owner, close=None):
        if len(self.stack) >= self.max_depth:
            raise self._error(owner, f"nesting deeper than max_depth={self.max_depth}")
        self.stack.append([seq, 0, kind, owner, close])

    def _value(self, obj):
        handler = self._dispatch.get(type(obj))
        if handler is None:
            if isinstance(obj, _npgeneric) and type(obj).__module__ == "numpy" and not obj.dtype.hasobject:
                return self._npscalar(obj)
            return self._object(obj)
        try:
            handler(obj)
        except TorporError:
            raise
        except (ValueError, TypeError, OverflowError, MemoryError) as e:
            raise self._error(obj, f"{type(e).__name__}: {e}") from e

    def path_parts(self):
        """(owner, path step) for each open container, outermost first."""
        parts = []
        for seq, pos, kind, owner, _ in self.stack:
            i = pos - 1
            if kind == F_SEQ:
                part = f"[{i}]"
            elif kind == F_SET:
                part = f"{{item {i}}}"
            elif kind == F_FLAT:
                part = f".flat[{i - 3}]" if i >= 3 else ".<array header>"
            elif kind == F_MAP:
                part = f"[{seq[i - 1]!r:.60}]" if i % 2 else f".<key {seq[i]!r:.60}>"
            elif kind == F_ATTRS:
                part = f".{seq[i - 1]}" if i % 2 else f".<attribute name {seq[i]!r:.60}>"
            else:
                part = (".<reduce callable>", ".<reduce args>", ".<state>")[min(i, 2)]
            parts.append((owner, part))
        return parts

    def path(self):
        """Where the object being written sits in the graph, as Python syntax."""
        return "root" + "".join(p for _, p in self.path_parts())

    def _cycle_error(self, obj):
        segments = cycle_segments(self.path_parts(), obj, self.overridden)
        names = " -> ".join(type(o).__qualname__ for o, _ in segments)
        return CycleError(f"reference cycle through reducer_override objects: {names}",
                          cycle=segments)

    def _error(self, obj, reason):
        t = type(obj)
        path = self.path()
        return UnsupportedObjectError(
            f"cannot save {t.__module__}.{t.__qualname__} object at {path}: {reason}",
            path=path, obj_type=t)

    # -- memo -----------------------------------------------------------------
    def _memoize(self, obj):
        """Give ``obj`` the next unique name; return None if it is new, else its index."""
        i = self.memo.get(id(obj))
        if i is not None:
            return i
        self.memo[id(obj)] = len(self.keep)
        self.keep.append(obj)
        return None

    def _ref(self, i):
        pack_ext(self.out, EXT_REF, uint_payload(i))

    def _marker(self, code, count, at=None):
        """Start an array of ``count`` elements after its marker extension."""
        pack_array_header(self.out, count + 1)
        pack_ext(self.out, code, _NOARG if at is None else uint_payload(at + 1))

    # -- scalars --------------------------------------------------------------
    def _none(self, obj):
        self.out.append(0xC0)

    def _bool(self, obj):
        self.out.append(0xC3 if obj else 0xC2)

    def _int(self, obj):
        if _INT_MIN <= obj <= _INT_MAX:
            pack_int(self.out, obj)
        else:
            n = (obj.bit_length() + 8) // 8
            pack_ext(self.out, EXT_BIGINT, obj.to_bytes(n, "big", signed=True))

    def _float(self, obj):
        pack_float(self.out, obj)

    def _complex(self, obj):
        pack_ext(self.out, EXT_COMPLEX, _complex.pack(obj.real, obj.imag))

    def _str(self, obj):
        i = self.strtab.get(obj)
        if i is not None:
            pack_ext(self.out, EXT_STRREF, uint_payload(i))
            return
        self.strtab[obj] = len(self.strtab)
        try:
            pack_str_bytes(self.out, obj.encode("utf-8"))
        except UnicodeEncodeError:
            pack_ext(self.out, EXT_STR_SURROGATE, obj.encode("utf-8", "surrogatepass"))

    def _bytes(self, obj):
        if len(obj) < BYTES_OOB_MIN:
            pack_bin(self.out, obj)
            return
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        self._marker(EXT_BYTES_OOB, 1)
        pack_int(self.out, self.sink.add_bytes(obj))

    def _bytearray(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        if len(obj) < BYTES_OOB_MIN:
            self._marker(EXT_BYTEARRAY, 1)
            pack_bin(self.out, obj)
        else:
            self._marker(EXT_BYTEARRAY_OOB, 1)
            pack_int(self.out, self.sink.add_bytes(obj))

    # -- containers -----------------------------------------------------------
    def _list(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        pack_array_header(self.out, len(obj))
        if obj:
            self._push(obj, F_SEQ, obj)

    def _dict(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        pack_map_header(self.out, len(obj))
        if obj:
            self._push([x for kv in obj.items() for x in kv], F_MAP, obj)

    def _set(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        self._marker(EXT_SET, len(obj))
        if obj:
            self._push(list(obj), F_SET, obj)

    def _built(self, obj, code, items, kind):
        """Tuples and frozensets: built from their items, so a cycle that reaches
        one while its items are being written re-writes it at its own index."""
        i = self._memoize(obj)
        if i is not None:
            if id(obj) not in self.open:
                return self._ref(i)
            self._marker(code, len(items), at=i)
        else:
            self._marker(code, len(items))
            self.open.add(id(obj))
        if items:
            self._push(items, kind, obj, close=id(obj))
        else:
            self.open.discard(id(obj))

    def _tuple(self, obj):
        self._built(obj, EXT_TUPLE, obj, F_SEQ)

    def _frozenset(self, obj):
        self._built(obj, EXT_FROZENSET, list(obj), F_SET)

    # -- numpy ----------------------------------------------------------------
    def _dtype(self, obj):
        self._marker(EXT_DTYPE, 1)
        self._value("|O" if obj == object else _arrays.encode_dtype(obj))

    def _npscalar(self, obj):
        desc, data = _arrays.scalar_parts(obj)
        self._marker(EXT_NPSCALAR, 2)
        self._value(desc)
        pack_bin(self.out, data)

    def _ndarray(self, arr):
        i = self._memoize(arr)
        if i is not None:
            return self._ref(i)
        dt = arr.dtype
        if dt.hasobject:
            if dt != object:
                # structured dtypes with object fields: only pickle's protocol knows them
                return self._reduce(arr, memoized=True)
            fortran = _arrays.is_fortran(arr)
            items = arr.ravel(order="F" if fortran else "C").tolist() if arr.ndim else [arr[()]]
            self._marker(EXT_OBJARRAY, 3 + arr.size)
            self._push(["|O", list(arr.shape), fortran] + items, F_FLAT, arr)
            return
        fortran = _arrays.is_fortran(arr)
        if arr.nbytes < ARRAY_OOB_MIN:
            self._marker(EXT_NDARRAY_INLINE, 4)
            pack_bin(self.out, _arrays.inline_bytes(arr))
        else:
            self._marker(EXT_NDARRAY, 4)
            pack_int(self.out, self.sink.add_array(arr, fortran))
        self._push([_arrays.encode_dtype(dt), list(arr.shape), fortran], F_SEQ, arr)

    # -- everything else ------------------------------------------------------
    def _object(self, obj):
        cls = type(obj)
        kind = self.kinds.get(cls)
        if kind is None:
            kind = self.kinds[cls] = classify(cls)
        if kind == KIND_GLOBAL:
            return self._global(obj)
        i = self._memoize(obj)
        if i is not None:
            if id(obj) in self.open:
                if id(obj) in self.overridden:
                    raise self._cycle_error(obj)
                return self._reduce(obj, memoized=True, at=i)
            return self._ref(i)
        if self.override is not None and self._overridden(obj):
            return
        if kind == KIND_INST:
            self._marker(EXT_INST, 2)
            self._global(cls)
            d = obj.__dict__
            if not d:
                self.out.append(0xC0)
                return
            pack_map_header(self.out, len(d))
            self._push([x for kv in d.items() for x in kv], F_ATTRS, obj)
        else:
            self._reduce(obj, memoized=True)

    def _global(self, obj):
        i = self._memoize(obj)
        if i is not None:
            if id(obj) in self.open and id(obj) in self.overridden:
                raise self._cycle_error(obj)
            return self._ref(i)
        if self.override is not None and self._overridden(obj):
            return
        try:
            module, name = global_ref(obj)
        except UnsupportedObjectError as e:
            raise self._error(obj, str(e)) from None
        self.globals[f"{module}.{name}"] = None
        self._marker(EXT_GLOBAL, 2)
        self._str(module)
        self._str(name)

    def _overridden(self, obj):
        """Ask the reducer_override hook about a new (just memoized) object; if
        it gives a reduction, write it and return True."""
        if self.wants is not None:
            cls = type(obj)
            want = self.wanted.get(cls)
            if want is None:
                want = self.wanted[cls] = bool(self.wants(cls))
            if not want:
                return False
        try:
            rv = self.override(obj)
        except TorporError:
            raise
        except Exception as e:
            raise self._error(obj, f"{type(e).__name__}: {e}") from e
        if rv is None:
            return False
        try:
            rv = override_reduction(rv)
        except UnsupportedObjectError as e:
            raise self._error(obj, str(e)) from None
        self.overridden.add(id(obj))
        self._reduce(obj, memoized=True, rv=rv)
        return True

    def _reduce(self, obj, memoized, at=None, rv=None):
        if rv is None:
            try:
                rv = reduce_object(obj)
            except UnsupportedObjectError as e:
                raise self._error(obj, str(e)) from None
        if rv[0] is None:       # reduces to a global name: a module-level singleton
            module = getattr(obj, "__module__", None) or __import__("pickle").whichmodule(obj, rv[1])
            self.globals[f"{module}.{rv[1]}"] = None
            self._marker(EXT_GLOBAL, 2)
            self._str(module)
            self._str(rv[1])
            return
        func, args = rv[0], rv[1]
        count = 6 if rv[5] is not None else 5
        self._marker(EXT_REDUCE, count, at=at)
        if at is None:
            self.open.add(id(obj))
        self._push([func, args, _ReduceTail(obj, rv)], F_REDUCE, obj)

    def _reduce_tail(self, tail):
        rv = tail.rv
        oid = id(tail.obj)
        if oid in self.open:
            self.open.discard(oid)
            items = [rv[2], rv[3], rv[4]] + ([rv[5]] if rv[5] is not None else [])
            self.stack[-1][0] = items
            self.stack[-1][1] = 0
            self.stack[-1][2] = F_REDUCE
        else:
            # a cycle rebuilt this object (with its state) while its args were written
            self.out += b"\xc0\xc0\xc0" + (b"\xc0" if rv[5] is not None else b"")


# --- decoding --------------------------------------------------------------------

class _Unfilled:
    __slots__ = ()

    def __repr__(self):
        return "<unfilled>"


UNFILLED = _Unfilled()

# Decoder frame kinds
D_LIST, D_MAP, D_TUPLE, D_SET, D_FROZENSET, D_BYTEARRAY, D_BYTES_OOB, D_BYTEARRAY_OOB, \
    D_GLOBAL, D_INST, D_REDUCE, D_NDARRAY, D_NDARRAY_INLINE, D_OBJARRAY, D_DTYPE, \
    D_NPSCALAR, D_ATTRS = range(17)

_MARKER_KIND = {
    EXT_TUPLE: D_TUPLE, EXT_SET: D_SET, EXT_FROZENSET: D_FROZENSET,
    EXT_BYTEARRAY: D_BYTEARRAY, EXT_BYTES_OOB: D_BYTES_OOB,
    EXT_BYTEARRAY_OOB: D_BYTEARRAY_OOB, EXT_GLOBAL: D_GLOBAL, EXT_INST: D_INST,
    EXT_REDUCE: D_REDUCE, EXT_NDARRAY: D_NDARRAY, EXT_NDARRAY_INLINE: D_NDARRAY_INLINE,
    EXT_OBJARRAY: D_OBJARRAY, EXT_DTYPE: D_DTYPE, EXT_NPSCALAR: D_NPSCALAR,
}
#: How many elements (after the marker) each kind needs, or a minimum (negative).
_FIXED_COUNT = {D_BYTEARRAY: 1, D_BYTES_OOB: 1, D_BYTEARRAY_OOB: 1, D_GLOBAL: 2, D_INST: 2,
                D_NDARRAY: 4, D_NDARRAY_INLINE: 4, D_DTYPE: 1, D_NPSCALAR: 2}


class Decoder:
    """Rebuilds the object graph from a stream written by either Encoder.

    ``payloads`` maps a section index to its already-read array or bytes;
    ``policy`` (a torpor._safety.Policy) decides which globals may be imported."""

    def __init__(self, policy, payloads, max_depth=MAX_DEPTH):
        self.policy = policy
        self.payloads = payloads
        self.max_depth = max_depth
        self.memo = []
        self.strtab = []
        self.callables = set()   # ids of objects resolved from a global (may be called)
        # torpor's own per-load builders whose results may be called or
        # instantiated in turn (a class rebuilt by load_module)
        self.producers = getattr(policy, "producers", frozenset())

    def decode(self, data):
        try:
            return self._decode(data)
        except TorporError:
            raise
        except RecursionError as e:
            raise CorruptFileError(f"object stream nested too deeply to rebuild: {e}") from None
        except Exception as e:
            raise CorruptFileError(
                f"the object stream could not be rebuilt ({type(e).__name__}: {e})") from e

    def _decode(self, data):
        r = Reader(data, what="object stream")
        memo = self.memo
        strtab = self.strtab
        stack = []
        # A frame is [kind, target, remaining, slot, items, extra]
        while True:
            kind, v = r.next_token()
            if kind == "v":
                if type(v) is str:
                    strtab.append(v)
                value = v
            elif kind == "a":
                frame = self._start_array(r, v, stack)
                if frame is None:
                    value = []
                    memo.append(value)
                else:
                    if len(stack) >= self.max_depth:
                        r.fail(f"nested deeper than max_depth={self.max_depth}")
                    stack.append(frame)
                    if frame[2] > 0:
                        continue
                    value = self._finish(frame, r)
                    stack.pop()
            elif kind == "m":
                top = stack[-1] if stack else None
                if top is not None and top[0] == D_INST and top[5] == 1:
                    # an instance's attributes: filled straight into its __dict__
                    target = top[4] if top[4] is not None else top[1].__dict__
                    frame = [D_ATTRS, target, 2 * v, None, None, UNFILLED]
                else:
                    target = {}
                    memo.append(target)
                    frame = [D_MAP, target, 2 * v, None, None, UNFILLED]
                if v:
                    if len(stack) >= self.max_depth:
                        r.fail(f"nested deeper than max_depth={self.max_depth}")
                    stack.append(frame)
                    continue
                value = target
            else:
                value = self._ext_value(r, *v)
            # deliver value to the frames above, finishing each frame that fills up
            while True:
                if not stack:
                    if r.pos != r.end:
                        r.fail(f"{r.end - r.pos} bytes left after the root object")
                    return value
                top = stack[-1]
                self._add(top, value, r)
                top[2] -= 1
                if top[2] > 0:
                    break
                stack.pop()
                value = self._finish(top, r)

    def _start_array(self, r, n, stack):
        """After an array header: a marker makes it a tagged object, else it is a list."""
        if n == 0:
            return None
        save = r.pos
        kind, v = r.next_token()
        if kind != "x" or v[0] not in MARKERS:
            r.pos = save
            lst = []
            self.memo.append(lst)
            return [D_LIST, lst, n, None, None, None]
        code, payload = v
        dk = _MARKER_KIND[code]
        count = n - 1
        need = _FIXED_COUNT.get(dk)
        if need is not None and count != need:
            r.fail(f"extension {code} needs {need} elements, found {count}")
        at = read_uint_payload(payload)
        if at:
            if code not in AT_MARKERS or at - 1 >= len(self.memo) or self.memo[at - 1] is not UNFILLED:
                r.fail(f"extension {code} rebuilds memo index {at - 1}, which is not under construction")
            slot = at - 1
        elif code in MEMO_MARKERS:
            slot = len(self.memo)
            self.memo.append(UNFILLED)
        else:
            slot = None
        target = None
        if dk == D_SET:
            target = set()
            self.memo[slot] = target
        elif dk == D_REDUCE and count not in (5, 6):
            r.fail(f"a reduce extension needs 5 or 6 elements, found {count}")
        elif dk == D_OBJARRAY and count < 3:
            r.fail("an object array extension needs at least 3 elements")
        frame = [dk, target, count, slot, [], None]
        return frame

    def _ext_value(self, r, code, data):
        if code == EXT_REF:
            i = read_uint_payload(data)
            if i >= len(self.memo):
                r.fail(f"reference to memo index {i}, but only {len(self.memo)} objects exist so far")
            obj = self.memo[i]
            if obj is UNFILLED:
                r.fail(f"reference to memo index {i} before the object is built")
            return obj
        if code == EXT_STRREF:
            i = read_uint_payload(data)
            if i >= len(self.strtab):
                r.fail(f"reference to string {i}, but only {len(self.strtab)} strings exist so far")
            return self.strtab[i]
        if code == EXT_COMPLEX:
            if len(data) != 16:
                r.fail("a complex number needs 16 bytes")
            return complex(*_complex.unpack(data))
        if code == EXT_BIGINT:
            if not data:
                r.fail("an empty big integer")
            return int.from_bytes(data, "big", signed=True)
        if code == EXT_STR_SURROGATE:
            try:
                s = bytes(data).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as e:
                r.fail(f"invalid string: {e}")
            self.strtab.append(s)
            return s
        if code in MARKERS:
            r.fail(f"marker extension {code} outside an array")
        r.fail(f"unknown extension type {code}")

    def _add(self, fr, value, r):
        k = fr[0]
        if k == D_LIST:
            fr[1].append(value)
        elif k == D_MAP or k == D_ATTRS:
            if fr[5] is UNFILLED:
                fr[5] = value
            else:
                try:
                    fr[1][fr[5]] = value
                except TypeError:
                    r.fail(f"unhashable dict key of type {type(fr[5]).__name__}")
                fr[5] = UNFILLED
        elif k == D_SET:
            try:
                fr[1].add(value)
            except TypeError:
                r.fail(f"unhashable set item of type {type(value).__name__}")
        elif k == D_INST:
            if fr[5] is None:
                self._inst_class(fr, value, r)
            elif value is not None:
                if value is not fr[4] and (fr[4] is not None or value is not fr[1].__dict__):
                    r.fail("an instance's state must be a map of attributes or nil")
                fr[5] = 2
        elif k == D_REDUCE:
            items = fr[4]
            items.append(value)
            if len(items) == 2:
                self._reduce_build(fr, r)
        elif k == D_OBJARRAY:
            if fr[1] is None:
                fr[4].append(value)
                if len(fr[4]) == 3:
                    self._objarray_start(fr, r)
            else:
                fr[4][fr[5]] = value
                fr[5] += 1
        else:
            fr[4].append(value)

    def _inst_class(self, fr, cls, r):
        if not isinstance(cls, type) or id(cls) not in self.callables:
            r.fail("an instance's class is not a class reference")
        obj = cls.__new__(cls)
        self.memo[fr[3]] = obj
        fr[1] = obj
        fr[5] = 1
        # Collect the state for __setstate__ if the class has one now; else the
        # attributes go straight into the new instance's __dict__.
        fr[4] = {} if getattr(cls, "__setstate__", None) is not None else None

    def _reduce_build(self, fr, r):
        func, args = fr[4]
        if id(func) not in self.callables:
            r.fail("a reduce callable is not a global reference")
        if type(args) is not tuple:
            r.fail("reduce arguments are not a tuple")
        slot = fr[3]
        if self.memo[slot] is UNFILLED:
            obj = func(*args)
            if id(func) in self.producers:
                self.callables.add(id(obj))
            self.memo[slot] = obj
            fr[5] = True          # this frame built the object: it applies the state
        else:
            obj = self.memo[slot]
            fr[5] = False
        fr[1] = obj

    def _objarray_start(self, fr, r):
        desc, shape, fortran = fr[4]
        if desc != "|O":
            r.fail("object array with a non-object dtype")
        shape = _arrays.check_shape(shape)
        size = 1
        for d in shape:
            size *= d
        if size != fr[2] - 1:       # the elements still to come after this one
            r.fail(f"an object array of shape {shape} holds {fr[2] - 1} items")
        arr = np.empty(shape, dtype=object, order="F" if fortran else "C")
        self.memo[fr[3]] = arr
        fr[1] = arr
        fr[4] = arr.reshape(-1, order="A")   # a view in the order the items come
        fr[5] = 0

    def _finish(self, fr, r):
        k = fr[0]
        if k == D_LIST or k == D_MAP or k == D_SET:
            return fr[1]
        if k == D_ATTRS:
            return fr[1]
        items = fr[4]
        slot = fr[3]
        if k == D_TUPLE or k == D_FROZENSET:
            try:
                value = tuple(items) if k == D_TUPLE else frozenset(items)
            except TypeError:
                r.fail("unhashable frozenset item")
            if self.memo[slot] is UNFILLED:
                self.memo[slot] = value
            return self.memo[slot]
        if k == D_INST:
            obj = fr[1]
            if fr[4] is not None and fr[5] == 2:
                obj.__setstate__(fr[4])
            return obj
        if k == D_REDUCE:
            obj = fr[1]
            if fr[5]:
                state, listitems, dictitems = items[2], items[3], items[4]
                setter = items[5] if len(items) > 5 else None
                if listitems is not None and type(listitems) is not list:
                    r.fail("reduce list items are not a list")
                if dictitems is not None and type(dictitems) is not dict:
                    r.fail("reduce dict items are not a dict")
                if setter is not None and id(setter) not in self.callables:
                    r.fail("a state setter is not a global reference")
                apply_state(obj, state, listitems, dictitems, setter)
            return obj
        if k == D_OBJARRAY:
            return fr[1]
        value = self._build_leaf(k, items, r)
        if slot is not None:
            self.memo[slot] = value
        return value

    def _build_leaf(self, k, items, r):
        if k == D_GLOBAL:
            module, qualname = items
            obj = self.policy.resolve(module, qualname)
            self.callables.add(id(obj))
            return obj
        if k == D_BYTEARRAY:
            if type(items[0]) is not bytes:
                r.fail("bytearray data is not binary")
            return bytearray(items[0])
        if k == D_BYTES_OOB or k == D_BYTEARRAY_OOB:
            data = self._payload(items[0], (bytes, bytearray), r)
            return bytes(data) if k == D_BYTES_OOB and type(data) is not bytes else \
                (bytearray(data) if k == D_BYTEARRAY_OOB and type(data) is not bytearray else data)
        if k == D_NDARRAY:
            section, desc, shape, fortran = items
            arr = self._payload(section, (np.ndarray,), r)
            if list(arr.shape) != shape or _arrays.encode_dtype(arr.dtype) != desc:
                r.fail(f"array section {section} does not match its description in the stream")
            return arr
        if k == D_NDARRAY_INLINE:
            data, desc, shape, fortran = items
            if type(data) is not bytes:
                r.fail("inline array data is not binary")
            return _arrays.array_from_bytes(data, _arrays.decode_dtype(desc),
                                            _arrays.check_shape(shape), bool(fortran))
        if k == D_DTYPE:
            return _arrays.dtype_from_desc(items[0])
        if k == D_NPSCALAR:
            return _arrays.scalar_from_bytes(items[0], items[1])
        r.fail(f"unknown frame kind {k}")

    def _payload(self, section, types_, r):
        if type(section) is not int or section not in self.payloads:
            r.fail(f"reference to payload section {section!r:.20}, which the file does not hold")
        data = self.payloads[section]
        if not isinstance(data, types_):
            r.fail(f"payload section {section} holds the wrong kind of data")
        return data
