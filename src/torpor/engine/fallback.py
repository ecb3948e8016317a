"""Pure-Python twin of the Cython walker (``_ext/_walker.pyx``).

It reads and writes exactly the same object stream (docs/FORMAT.md, "The object
stream") and is the reference implementation: when the two disagree, this one
states the intent. ``TORPOR_PUREPYTHON=1`` selects it at import time.

Both directions are iterative: an explicit stack replaces recursion, so a list
nested a million levels deep neither overflows the C stack nor hits Python's
recursion limit.
"""

import struct
from itertools import chain
from operator import is_ as _is

import numpy as np

from ..errors import CorruptFileError, TorporError, UnsupportedObjectError, brief
from ..format import arrays as _arrays
from ..format.constants import (ARRAY_OOB_MIN, AT_MARKERS, BYTES_OOB_MIN, EXT_BIGINT,
                                EXT_BYTEARRAY, EXT_BYTEARRAY_OOB, EXT_BYTES_OOB, EXT_COMPLEX,
                                EXT_DTYPE, EXT_FROZENSET, EXT_GLOBAL, EXT_INST, EXT_NDARRAY,
                                EXT_NDARRAY_INLINE, EXT_NPSCALAR, EXT_OBJARRAY, EXT_REDUCE,
                                EXT_REF, EXT_SET, EXT_STR_SURROGATE, EXT_STRREF, EXT_TUPLE,
                                FRAME_SIZE, MARKERS, MAX_DEPTH, MEMO_MARKERS)
from ..format.messagepack import (TokenReader, pack_array_header, pack_bin, pack_ext,
                                  pack_float, pack_int, pack_map_header, pack_str_bytes,
                                  read_uint_payload, uint_payload)
from .common import (FIXED_COUNT, MARKER_KIND, UNFILLED, InlineBin, ReduceTail, build_frozenset,
                     count_hash, cycle_error, decode_path, insert_error, path_step,
                     restore_error, unsupported)
from .frames import (D_ATTRS, D_BYTEARRAY, D_BYTEARRAY_OOB, D_BYTES_OOB, D_DTYPE, D_FROZENSET,
                     D_GLOBAL, D_INST, D_LIST, D_MAP, D_NDARRAY, D_NDARRAY_INLINE, D_NPSCALAR,
                     D_OBJARRAY, D_REDUCE, D_SET, D_TUPLE, F_ATTRS, F_FLAT, F_MAP, F_REDUCE,
                     F_REDUCE_STATE, F_SEQ, F_SET)
from .guard import guard_for
from .byvalue import ByValue
from .reduce import (HEAPTYPE, SAVE_GLOBAL, SAVE_INST, apply_state, by_reference, classify,
                     copyreg_overrides, override_reduction, readonly_reduction, reduce_object,
                     reduced_global_module)

IMPLEMENTATION = "python"

_complex = struct.Struct("<dd")
_NOARG = b"\x00"          # payload of a marker that starts a new object
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_ndarray = np.ndarray
_memmap = np.memmap
_npgeneric = np.generic
_npdtype = np.dtype
# frame kinds built from a dtype description, and where it is among their items
_DESCRIBED = {D_NDARRAY: 1, D_NDARRAY_INLINE: 1, D_DTYPE: 0, D_NPSCALAR: 0}


_chain = chain.from_iterable


def _entries(d):
    """A dict's keys and values, alternating, in the order of the dict's own table
    (as the compiled walker's PyDict_Next: a subclass's ``items`` or an
    OrderedDict's own order is not asked), taken by C code in one call: another
    thread cannot change the dict halfway through."""
    return list(_chain(dict.items(d)))


class _EFrame:
    """An open container of the encoder: ``seq`` holds its children (for maps and
    instances, keys and values alternating, taken when the header was written),
    ``pos`` the next one to write."""
    __slots__ = ("seq", "n", "pos", "kind", "owner", "close", "live")

    def __init__(self, seq, kind, owner, close, n, live):
        self.seq = seq
        self.n = n                  # the count its header gave
        self.pos = 0
        self.kind = kind
        self.owner = owner          # the object whose children these are (for paths)
        self.close = close          # id of a built object leaving ``open`` at the end, or None
        self.live = live            # a map's dict, checked for changes as it is written


class Encoder:
    """Writes one object graph as a MessagePack stream to ``container`` (a
    ``format.writer.ContainerWriter``, or anything with its three methods).

    ``container.stream_frame(bytes)`` receives the stream in frames of about FRAME_SIZE
    bytes; ``container.add_array(arr, fortran)`` and ``container.add_bytes(obj)`` receive
    large payloads out of band and return their section index."""

    def __init__(self, container, max_depth=MAX_DEPTH, reducer_override=None, by_value=None):
        self.container = container
        # how code that cannot be saved by name is saved by value (a module dump
        # passes one that knows its module)
        self.byvalue = by_value if by_value is not None else ByValue()
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
        # reducer_override.fast_paths, if the hook has it and it is true: the
        # objects this walker writes natively without asking the hook (arrays,
        # and bytes and bytearrays of at least BYTES_OOB_MIN) are offered to it
        # too, right after their memo lookup (so a shared one is still written
        # once) and before any default handling (read-only arrays included),
        # subject to wants(cls). Workspace checkpoints store large ones apart.
        # The Cython walker does the same at the same points.
        self.fast_paths = reducer_override is not None and bool(
            getattr(reducer_override, "fast_paths", False))
        self.out = bytearray()
        self.memo = {}          # id(obj) -> memo index (the object's unique name)
        self.keep = []          # memoized objects, alive so their ids stay unique
        self.strtab = {}        # str -> string-table index
        self.open = set()       # ids of tuples/frozensets/reduced objects under construction
        self.kinds = {}         # class -> SAVE_* (cached classify())
        self.globals = {}       # "module.qualname" of every global written, in order
        self.stack = []
        self.readonly_views = set()   # ids of the views read-only arrays are written as
        self._dispatch = {
            type(None): self._none, bool: self._bool, int: self._int, float: self._float,
            complex: self._complex, str: self._str, bytes: self._bytes,
            bytearray: self._bytearray, list: self._list, tuple: self._tuple,
            dict: self._dict, set: self._set, frozenset: self._frozenset,
            _ndarray: self._ndarray, _memmap: self._ndarray, _npdtype: self._dtype,
            ReduceTail: self._reduce_tail, InlineBin: self._inline_bin,
        }
        # a copyreg reducer the user registered for a type written natively wins
        for t in copyreg_overrides():
            del self._dispatch[t]

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
            seq, pos = fr.seq, fr.pos
            if fr.live is not None and not pos & 1 and (pos == fr.n or len(fr.live) * 2 != fr.n):
                self._check_map(fr)
            if pos == fr.n:
                stack.pop()
                if fr.close is not None:
                    self.open.discard(fr.close)
                continue
            if len(seq) != fr.n:
                # a __reduce__ or hook resized a list being written: its array
                # header would be wrong (or, shrunk, the next item past its end)
                raise self._error(fr.owner, "the list changed size while it was being saved")
            fr.pos = pos + 1
            self._value(seq[pos])
            if len(out) >= FRAME_SIZE:
                self._flush()
        self._flush()

    def _check_map(self, fr):
        """Before a map's next key and at its end: refuse a dict changed while it
        is written, as the compiled walker does (docs/ARCHITECTURE.md). The twin
        writes the entries it took with the header, so the check is for the same
        errors, not for a valid stream: the size at every key, and at the end
        the keys themselves, in their order (the compiled walker sees a key
        written removed, or the table rebuilt, at the next key)."""
        d = fr.live
        if dict.__len__(d) * 2 != fr.n:
            what = " changed size"
        elif fr.pos == fr.n and not all(map(_is, list(dict.keys(d)), fr.seq[0::2])):
            what = "'s keys changed"
        else:
            return
        self.stack.pop()
        raise self._error(fr.owner, f"the dict{what} while it was being saved")

    def _flush(self):
        if self.out:
            self.container.stream_frame(bytes(self.out))
            self.out = bytearray()

    def _push(self, seq, kind, owner, close=None, n=None, live=None):
        """Open a frame over ``seq``; ``n``: the count the header gave, when it was
        taken from a live container (once: another thread may resize it);
        ``live``: a map's dict, whose entries ``seq`` holds."""
        if len(self.stack) >= self.max_depth:
            raise self._error(owner, f"nesting deeper than max_depth={self.max_depth}")
        self.stack.append(_EFrame(seq, kind, owner, close, len(seq) if n is None else n, live))

    def _value(self, obj):
        handler = self._dispatch.get(type(obj))
        if handler is None:
            if isinstance(obj, _npdtype):
                # numpy >= 1.20 gives every dtype its own class (Float64DType, ...)
                handler = self._dispatch[type(obj)] = self._dtype
                return handler(obj)
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
        for fr in self.stack:
            i = fr.pos - 1
            key = fr.seq[i - i % 2] if fr.kind in (F_MAP, F_ATTRS) else None
            parts.append((fr.owner, path_step(fr.kind, i, key)))
        return parts

    def path(self):
        """Where the object being written sits in the graph, as Python syntax."""
        return "root" + "".join(p for _, p in self.path_parts())

    def _cycle_error(self, obj):
        return cycle_error(self.path_parts(), obj, self.overridden)

    def _error(self, obj, reason):
        return unsupported(obj, self.path(), reason)

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
        if self.fast_paths and self._overridden(obj):
            return
        self._marker(EXT_BYTES_OOB, 1)
        pack_int(self.out, self.container.add_bytes(obj))

    def _bytearray(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        if len(obj) < BYTES_OOB_MIN:
            self._marker(EXT_BYTEARRAY, 1)
            pack_bin(self.out, bytes(obj))     # one length: another thread may resize it
        elif self.fast_paths and self._overridden(obj):
            return
        else:
            self._marker(EXT_BYTEARRAY_OOB, 1)
            pack_int(self.out, self.container.add_bytes(obj))

    # -- containers -----------------------------------------------------------
    def _list(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        # one length for the header and the frame: another thread may resize
        # the list between two len() calls
        n = len(obj)
        pack_array_header(self.out, n)
        if n:
            self._push(obj, F_SEQ, obj, n=n)

    def _dict(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        entries = _entries(obj)
        pack_map_header(self.out, len(entries) // 2)
        if entries:
            self._push(entries, F_MAP, obj, live=obj)

    def _set(self, obj):
        i = self._memoize(obj)
        if i is not None:
            return self._ref(i)
        items = list(obj)
        self._marker(EXT_SET, len(items))
        if items:
            self._push(items, F_SET, obj)

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
        self._value(_arrays.encode_dtype(obj))

    def _npscalar(self, obj):
        desc, data = _arrays.scalar_parts(obj)
        self._marker(EXT_NPSCALAR, 2)
        if type(desc) is str:
            self._value(desc)
            pack_bin(self.out, data)
        else:
            # a structured or subarray description is a list whose items are
            # written after it returns: the data must follow them, not precede
            self._push([desc, InlineBin(data)], F_SEQ, obj)

    def _inline_bin(self, obj):
        pack_bin(self.out, obj.data)

    def _ndarray(self, arr):
        i = self._memoize(arr)
        if i is not None:
            return self._ref(i)
        if self.fast_paths and self._overridden(arr):
            return
        if not arr.flags.writeable and id(arr) not in self.readonly_views:
            return self._reduce(arr, memoized=True,
                                rv=readonly_reduction(arr, self.readonly_views))
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
            pack_int(self.out, self.container.add_array(arr, fortran))
        self._push([_arrays.encode_dtype(dt), list(arr.shape), fortran], F_SEQ, arr)

    # -- everything else ------------------------------------------------------
    def _object(self, obj):
        cls = type(obj)
        kind = self.kinds.get(cls)
        if kind is None:
            kind = self.kinds[cls] = classify(cls)
        if kind == SAVE_GLOBAL:
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
        if kind == SAVE_INST:
            i = self.memo.get(id(cls))
            if i is not None and id(cls) not in self.open:
                self._marker(EXT_INST, 2)
                self._ref(i)
            else:
                ref = None if i is not None else self._class_by_name(cls)
                if ref is None:
                    # The class is new and saved by value (or the reducer_override
                    # hook may reduce it), or it is being written and would be
                    # written again for a cycle: its reduction is a frame of its
                    # own, which the INST's attribute map (written next) would
                    # overtake, and the instance, which an INST builds only once
                    # the class is complete, could not be referred to from the
                    # class's state. So the instance is written as pickle writes
                    # it, copyreg.__newobj__(cls) and its state: it exists once the
                    # class does, and a cycle through the class rebuilds it.
                    return self._reduce(obj, memoized=True)
                self._marker(EXT_INST, 2)
                self._memoize(cls)
                self._write_global(*ref)
            d = obj.__dict__
            if not isinstance(d, dict):
                raise self._error(obj, f"its __dict__ is a {type(d).__name__}, not a dict (give its class "
                                  "__getstate__ or __reduce__)")
            entries = _entries(d)
            if not entries:
                self.out.append(0xC0)
                return
            pack_map_header(self.out, len(entries) // 2)
            self._push(entries, F_ATTRS, obj, live=d)
        else:
            self._reduce(obj, memoized=True)

    def _global(self, obj):
        i = self._memoize(obj)
        if i is not None:
            if id(obj) in self.open:      # code saved by value, met again inside itself
                if id(obj) in self.overridden:
                    raise self._cycle_error(obj)
                return self._reduce(obj, memoized=True, at=i)
            return self._ref(i)
        if self.override is not None and self._overridden(obj):
            return
        try:
            ref = by_reference(obj, self.byvalue)
        except UnsupportedObjectError as e:
            raise self._error(obj, str(e)) from None
        if ref is None:
            return self._reduce(obj, memoized=True)
        self._write_global(*ref)

    def _write_global(self, module, name):
        self.globals[f"{module}.{name}"] = None
        self._marker(EXT_GLOBAL, 2)
        self._str(module)
        self._str(name)

    def _hook_wants(self, cls):
        """Whether the reducer_override hook may reduce instances of ``cls``: its
        ``wants(cls)``, asked once per class, or True for a hook without one."""
        if self.wants is None:
            return True
        want = self.wanted.get(cls)
        if want is None:
            want = self.wanted[cls] = bool(self.wants(cls))
        return want

    def _class_by_name(self, cls):
        """(module, qualname) under which an INST names ``cls``, the new class
        of an instance, as _global would write it; or None when _global would
        not write it as a name: it is saved by value, or the reducer_override
        hook may reduce it. Nothing is written or memoized."""
        if self.override is not None and self._hook_wants(type(cls)):
            return None
        try:
            return by_reference(cls, self.byvalue)
        except UnsupportedObjectError as e:
            raise self._error(cls, str(e)) from None

    def _overridden(self, obj):
        """Ask the reducer_override hook about a new (just memoized) object; if
        it gives a reduction, write it and return True."""
        if not self._hook_wants(type(obj)):
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
                rv = reduce_object(obj, self.byvalue)
            except UnsupportedObjectError as e:
                raise self._error(obj, str(e)) from None
        if rv[0] is None:       # reduces to a global name: a module-level singleton
            module = reduced_global_module(obj, rv[1])
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
        self._push([func, args, ReduceTail(obj, rv)], F_REDUCE, obj)

    def _reduce_tail(self, tail):
        rv = tail.rv
        oid = id(tail.obj)
        if oid in self.open:
            self.open.discard(oid)
            fr = self.stack[-1]
            fr.seq = tail.items()
            fr.n = len(fr.seq)
            fr.pos = 0
            fr.kind = F_REDUCE_STATE
        else:
            # a cycle rebuilt this object (with its state) while its args were written
            self.out += b"\xc0\xc0\xc0" + (b"\xc0" if rv[5] is not None else b"")


# --- decoding --------------------------------------------------------------------

class _DFrame:
    """An object the decoder is building from the elements that follow its header.

    ``remaining`` counts the elements still to come (of ``count``); ``target`` is
    the object being filled (None until it exists); ``items`` collects elements
    for objects built from them (tuples, reduce arguments, array headers), or is
    the state dict of an instance with ``__setstate__``, or the flat view of an
    object array being filled."""
    __slots__ = ("kind", "target", "count", "remaining", "slot", "items",
                 "key", "phase", "built", "fill", "hashes")

    def __init__(self, kind, target, count, slot=None, items=None):
        self.kind = kind
        self.target = target
        self.count = count
        self.remaining = count
        self.slot = slot          # memo index the object fills, or None
        self.items = items
        self.key = UNFILLED       # maps: the key read, waiting for its value
        self.phase = 0            # instances: 0 class next, 1 state next, 2 state read
        self.built = False        # reduce: this frame called the callable (applies the state)
        self.fill = 0             # object arrays: the next flat index
        self.hashes = None        # sets and maps: hash -> count of non-str keys


class Decoder:
    """Rebuilds the object graph from a stream written by either Encoder.

    ``payloads`` maps a section index to its already-read array or bytes;
    ``policy`` (an ``engine.safety.Policy``) decides which globals may be imported."""

    def __init__(self, policy, payloads, max_depth=MAX_DEPTH):
        self.policy = policy
        self.payloads = payloads
        self.max_depth = max_depth
        self.memo = []
        self.strtab = []
        self.stack = []
        self.callables = set()   # ids of objects resolved from a global (may be called)
        # torpor's own per-load builders whose results may be called or
        # instantiated in turn (a class rebuilt by load_module)
        self.producers = getattr(policy, "producers", frozenset())
        self.used = set()        # payload sections already referenced (each may be, once)
        self.guard = None        # engine.guard.LoadGuard of a safe load
        self.in_parts = False    # decode_part: one guard for every part

    def decode(self, data):
        if not self.in_parts:
            self.guard = guard_for(self.policy, data, self.payloads)
        try:
            return self._decode(data)
        except TorporError:
            raise
        except RecursionError as e:
            raise CorruptFileError(f"object stream nested too deeply to rebuild: {e}") from None
        except Exception as e:
            raise CorruptFileError(
                f"the object stream could not be rebuilt ({type(e).__name__}: {e})") from e

    def decode_part(self, data, n_memo, strings, n_strings, size):
        """Rebuild one object of a stream from its bytes alone (a partial load,
        engine/partial.py): ``n_memo`` memo indices and the first ``n_strings``
        strings of the string table ``strings`` came before it. Memo indices not
        filled by an earlier call stay UNFILLED, so a reference to one is an
        error, as in any stream; objects and strings of earlier calls on this
        decoder keep their indices (the parts come in stream order). ``size``:
        the bytes of all the parts, on the first call: a safe load's one guard
        (its work budget and nesting records) covers every part."""
        if n_memo < len(self.memo) or n_strings < len(self.strtab) or self.stack:
            raise ValueError(f"decode_part: memo index {n_memo} or string {n_strings} is "
                             f"behind this decoder's {len(self.memo)}, {len(self.strtab)}")
        self.memo.extend([UNFILLED] * (n_memo - len(self.memo)))
        self.strtab.extend(strings[len(self.strtab):n_strings])
        if not self.in_parts:
            self.in_parts = True
            self.guard = guard_for(self.policy, size, self.payloads)
        return self.decode(data)

    def memo_item(self, k):
        """The object of memo index ``k`` (UNFILLED if none was rebuilt there)."""
        return self.memo[k]

    def path(self, own=False):
        """Where the object being built sits in the graph, as Python syntax; with
        ``own``, the object of the innermost open frame itself."""
        stack = self.stack[:-1] if own else self.stack
        return decode_path([(fr.kind, fr.count - fr.remaining, fr.key) for fr in stack])

    def _own_path(self):
        return self.path(own=True)

    def _decode(self, data):
        r = TokenReader(data, what="object stream")
        memo = self.memo
        strtab = self.strtab
        stack = self.stack
        while True:
            kind, v = r.next_token()
            if kind == "v":
                if type(v) is str:
                    strtab.append(v)
                value = v
            elif kind == "a":
                frame = self._start_array(r, v)
                if frame is None:
                    value = []
                    memo.append(value)
                else:
                    if frame.remaining > 0:
                        if len(stack) >= self.max_depth:
                            r.fail(f"nested deeper than max_depth={self.max_depth}")
                        stack.append(frame)
                        continue
                    value = self._finish(frame, r)
            elif kind == "m":
                top = stack[-1] if stack else None
                if top is not None and top.kind == D_INST and top.phase == 1:
                    # an instance's attributes: filled straight into its __dict__
                    target = top.items if top.items is not None else top.target.__dict__
                    frame = _DFrame(D_ATTRS, target, 2 * v)
                else:
                    target = {}
                    memo.append(target)
                    frame = _DFrame(D_MAP, target, 2 * v)
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
                top.remaining -= 1
                if top.remaining > 0:
                    break
                stack.pop()
                value = self._finish(top, r)

    def _start_array(self, r, n):
        """After an array header: a marker makes it a tagged object, else it is a list."""
        if n == 0:
            return None
        save = r.pos
        kind, v = r.next_token()
        if kind != "x" or v[0] not in MARKERS:
            r.pos = save
            lst = []
            self.memo.append(lst)
            return _DFrame(D_LIST, lst, n)
        code, payload = v
        dk = MARKER_KIND[code]
        count = n - 1
        need = FIXED_COUNT.get(dk)
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
        return _DFrame(dk, target, count, slot, [])

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
        k = fr.kind
        if k == D_LIST:
            fr.target.append(value)
        elif k == D_MAP or k == D_ATTRS:
            if fr.key is UNFILLED:
                if type(value) is not str:
                    fr.hashes = count_hash(fr.hashes, value, "dict", self._own_path, self.guard)
                fr.key = value
            else:
                try:
                    fr.target[fr.key] = value
                except Exception as e:
                    raise insert_error(e, fr.key, "dict", self.path(own=True)) from e
                fr.key = UNFILLED
        elif k == D_SET:
            if type(value) is not str:
                fr.hashes = count_hash(fr.hashes, value, "set", self._own_path, self.guard)
            try:
                fr.target.add(value)
            except Exception as e:
                raise insert_error(e, value, "set", self.path(own=True)) from e
        elif k == D_INST:
            if fr.phase == 0:
                self._inst_class(fr, value, r)
            elif value is not None:
                if value is not fr.items and (fr.items is not None or value is not fr.target.__dict__):
                    r.fail("an instance's state must be a map of attributes or nil")
                fr.phase = 2
        elif k == D_REDUCE:
            items = fr.items
            items.append(value)
            if len(items) == 2:
                self._reduce_build(fr, r)
        elif k == D_OBJARRAY:
            if fr.target is None:
                fr.items.append(value)
                if len(fr.items) == 3:
                    self._objarray_start(fr, r)
            else:
                fr.items[fr.fill] = value
                fr.fill += 1
        else:
            fr.items.append(value)

    def _inst_class(self, fr, cls, r):
        if not isinstance(cls, type) or (id(cls) not in self.callables
                                         and not self.policy.callable_object(cls)):
            r.fail("an instance's class is not a class reference")
        self.policy.check_call(cls, (), self.callables)
        if self.guard is not None:
            self.policy.check_instance(cls)
        obj = self._call(cls.__new__, (cls,), "__new__ of", cls, own=True)
        self.memo[fr.slot] = obj
        fr.target = obj
        fr.phase = 1
        # Collect the state for __setstate__ if the class has one now; else the
        # attributes go straight into the new instance's __dict__.
        fr.items = {} if getattr(cls, "__setstate__", None) is not None else None

    def _call(self, func, args, what, owner, own=False):
        """Call code that is not torpor's (a class's __new__ or __setstate__, a reduce
        callable): what it raises becomes a RestoreError naming the object's path
        (``own``: the object is the innermost open frame's, not its child)."""
        try:
            return func(*args)
        except TorporError:
            raise
        except Exception as e:
            raise restore_error(e, what, owner, self.path(own)) from e

    def _reduce_build(self, fr, r):
        func, args = fr.items
        if id(func) not in self.callables and not self.policy.callable_object(func):
            r.fail("a reduce callable is not a global reference or a method of one")
        if type(args) is not tuple:
            r.fail("reduce arguments are not a tuple")
        slot = fr.slot
        if self.memo[slot] is UNFILLED:
            if self.guard is not None:
                self.guard.call(func, args)
            self.policy.check_call(func, args, self.callables)
            obj = self._call(func, args, "the reduce callable", func, own=True)
            if id(func) in self.producers:
                self.callables.add(id(obj))
            if self.guard is not None and not type(obj).__flags__ & HEAPTYPE \
                    and not isinstance(obj, type):
                self.guard.opened(obj)      # its state may still refer to it
            self.memo[slot] = obj
            fr.built = True       # this frame built the object: it applies the state
        else:
            obj = self.memo[slot]
            fr.built = False
        fr.target = obj

    def _objarray_start(self, fr, r):
        desc, shape, fortran = fr.items
        if desc != "|O":
            r.fail("object array with a non-object dtype")
        shape = _arrays.check_shape(shape)
        size = 1
        for d in shape:
            size *= d
        if size != fr.remaining - 1:       # the elements still to come after this one
            r.fail(f"an object array of shape {shape} holds {fr.remaining - 1} items")
        arr = np.empty(shape, dtype=object, order="F" if fortran else "C")
        if self.guard is not None:
            self.guard.opened(arr)          # its items may refer to it
        self.memo[fr.slot] = arr
        fr.target = arr
        fr.items = arr.reshape(-1, order="A")   # a view in the order the items come
        fr.fill = 0

    def _finish(self, fr, r):
        k = fr.kind
        if k == D_LIST or k == D_MAP or k == D_SET or k == D_ATTRS:
            return fr.target
        guard = self.guard
        if k == D_OBJARRAY:
            if guard is not None:
                guard.built_objarray(fr.target, self.path)
            return fr.target
        items = fr.items
        slot = fr.slot
        if k == D_TUPLE or k == D_FROZENSET:
            if k == D_FROZENSET:
                value = build_frozenset(items, self.path, guard)
            else:
                value = tuple(items)
            if self.memo[slot] is UNFILLED:
                self.memo[slot] = value
                if guard is not None and k == D_TUPLE:
                    guard.built_tuple(value, self.path)
            return self.memo[slot]
        if k == D_INST:
            obj = fr.target
            if items is not None and fr.phase == 2:
                if guard is not None:
                    guard.spend(len(items) + 1, "restoring an instance")
                self._call(obj.__setstate__, (items,), "__setstate__ of", type(obj))
            return obj
        if k == D_REDUCE:
            obj = fr.target
            if fr.built:
                state, listitems, dictitems = items[2], items[3], items[4]
                setter = items[5] if len(items) > 5 else None
                if listitems is not None and type(listitems) is not list:
                    r.fail("reduce list items are not a list")
                if dictitems is not None and type(dictitems) is not dict:
                    r.fail("reduce dict items are not a dict")
                if setter is not None:
                    if id(setter) not in self.callables and \
                            not self.policy.callable_object(setter):
                        r.fail("a state setter is not a global reference or a method of one")
                    if guard is not None:
                        guard.call(setter, (obj, state))
                    self.policy.check_call(setter, (obj, state), self.callables)
                if guard is not None:
                    guard.state(obj, state, listitems, dictitems, self.path)
                self._call(apply_state, (obj, state, listitems, dictitems, setter),
                           "restoring the state of", type(obj))
                if guard is not None:
                    guard.built_reduced(obj, items[1], state, listitems, dictitems, self.path)
            return obj
        if guard is not None and k in _DESCRIBED:
            guard.described(items[_DESCRIBED[k]])
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
            if k == D_BYTES_OOB:
                return data if type(data) is bytes else bytes(data)
            return data if type(data) is bytearray else bytearray(data)
        if k == D_NDARRAY:
            section, desc, shape, fortran = items
            arr = _arrays.as_described(self._payload(section, (np.ndarray,), r), desc, shape)
            if arr is None:
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
            return _arrays.scalar_from_items(items)
        r.fail(f"unknown frame kind {k}")

    def _payload(self, section, types_, r):
        if type(section) is not int or section not in self.payloads:
            r.fail(f"reference to payload section {brief(section, 20)}, which the file does not hold")
        data = self.payloads[section]
        if not isinstance(data, types_):
            r.fail(f"payload section {section} holds the wrong kind of data")
        if section in self.used:
            r.fail(f"payload section {section} is referenced a second time (a section "
                   f"belongs to one object)")
        self.used.add(section)
        return data
