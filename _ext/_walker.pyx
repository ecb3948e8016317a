# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, infer_types=True
"""The Cython object-graph walker: same stream, same API as torpor/fallback.py.

fallback.py is the reference; this file follows it step by step and differs only
where C makes a hot path cheaper: the stream is built in a malloc'd buffer,
integers, floats and strings are encoded without Python calls, dicts are walked
with PyDict_Next, and the decoder parses MessagePack straight from a C pointer.
Rare types (numpy, reduce, globals) go through the same shared Python helpers as
the twin, so the two cannot drift apart on them.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.list cimport PyList_Append, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import struct

import numpy as np

from torpor import _arrays
from torpor._reduce import (KIND_GLOBAL, KIND_INST, apply_state, classify, cycle_segments, global_ref,
                            override_reduction, reduce_object)
from torpor.errors import CorruptFileError, CycleError, TorporError, UnsupportedObjectError
from torpor.fallback import UNFILLED, _ReduceTail
from torpor.format import (ARRAY_OOB_MIN, AT_MARKERS, BYTES_OOB_MIN, FRAME_SIZE, MARKERS,
                           MAX_DEPTH, MEMO_MARKERS)

IMPLEMENTATION = "cython"

cdef extern from "Python.h":
    int PyUnicode_IS_COMPACT_ASCII(object)
    const char* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    double PyFloat_AS_DOUBLE(object)
    object PyFloat_FromDouble(double)
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object) except? -1
    object PyLong_FromLongLong(long long)
    object PyLong_FromUnsignedLongLong(unsigned long long)
    object PyLong_FromVoidPtr(void*)
    PyObject* PyDict_SetDefault(object, object, object) except NULL
    PyObject* PyList_GET_ITEM_raw "PyList_GET_ITEM"(object, Py_ssize_t)

# ext codes (docs/FORMAT.md); cdef copies of torpor.format for the C switch
DEF X_REF = 1
DEF X_STRREF = 2
DEF X_COMPLEX = 3
DEF X_BIGINT = 4
DEF X_STR_SURROGATE = 5
DEF X_TUPLE = 16
DEF X_SET = 17
DEF X_FROZENSET = 18
DEF X_BYTEARRAY = 19
DEF X_BYTES_OOB = 20
DEF X_BYTEARRAY_OOB = 21
DEF X_GLOBAL = 22
DEF X_INST = 23
DEF X_REDUCE = 24
DEF X_NDARRAY = 25
DEF X_NDARRAY_INLINE = 26
DEF X_OBJARRAY = 27
DEF X_DTYPE = 28
DEF X_NPSCALAR = 29

_complex = struct.Struct("<dd")
cdef object _ndarray = np.ndarray
cdef object _memmap = np.memmap
cdef object _npgeneric = np.generic
cdef object _npdtype = np.dtype
cdef object _NoneType = type(None)

# frame kinds, as in fallback.py
DEF F_SEQ = 0
DEF F_MAP = 1
DEF F_ATTRS = 2
DEF F_REDUCE = 3
DEF F_FLAT = 4
DEF F_SET = 5


# --- a hash table from object address to memo index ------------------------------
# The memo is the hottest structure of the encoder: every container and instance is
# looked up once and most are inserted. A dict keyed by id() boxes every address
# in a new int and hashes it; this open-addressing table of raw addresses does
# neither (the addresses stay valid because the encoder keeps every memoized
# object alive in its ``keep`` list until the encode ends).

cdef struct _Slot:
    void* key
    Py_ssize_t value


cdef struct _PtrMap:
    _Slot* slots
    Py_ssize_t mask
    Py_ssize_t used


cdef inline size_t _ptr_hash(void* key) noexcept nogil:
    # The address itself (objects are 16-byte aligned and do not overlap, so these
    # are distinct): objects allocated one after the other, as the nodes of a graph
    # usually are, land in neighbouring slots, and the walk stays in cache. A
    # scrambling hash made lookups in a large memo cache misses (measured: 30% of
    # the time of a 500,000-object dump).
    return <size_t>key >> 4


cdef int _pm_init(_PtrMap* m, Py_ssize_t cap) except -1:
    m.slots = <_Slot*>PyMem_Calloc(cap, sizeof(_Slot))
    if m.slots == NULL:
        raise MemoryError()
    m.mask = cap - 1
    m.used = 0
    return 0


cdef void _pm_free(_PtrMap* m) noexcept:
    if m.slots != NULL:
        PyMem_Free(m.slots)
        m.slots = NULL


cdef inline Py_ssize_t _pm_get(_PtrMap* m, void* key) noexcept:
    cdef size_t i = _ptr_hash(key) & m.mask
    while True:
        if m.slots[i].key == key:
            return m.slots[i].value
        if m.slots[i].key == NULL:
            return -1
        i = (i + 1) & m.mask


cdef int _pm_grow(_PtrMap* m) except -1:
    cdef _Slot* old = m.slots
    cdef Py_ssize_t n = m.mask + 1, j
    cdef size_t i
    _pm_init(m, n * 2)
    for j in range(n):
        if old[j].key != NULL:
            i = _ptr_hash(old[j].key) & m.mask
            while m.slots[i].key != NULL:
                i = (i + 1) & m.mask
            m.slots[i] = old[j]
            m.used += 1
    PyMem_Free(old)
    return 0


cdef inline Py_ssize_t _pm_setdefault(_PtrMap* m, void* key, Py_ssize_t value) except -2:
    """The value stored for ``key``; or -1 after storing ``value`` for it."""
    cdef size_t i = _ptr_hash(key) & m.mask
    while True:
        if m.slots[i].key == key:
            return m.slots[i].value
        if m.slots[i].key == NULL:
            break
        i = (i + 1) & m.mask
    m.slots[i].key = key
    m.slots[i].value = value
    m.used += 1
    if m.used * 2 > m.mask:
        _pm_grow(m)
    return -1


cdef class _EFrame:
    cdef object seq          # list / tuple of children, or the dict for F_MAP/F_ATTRS
    cdef Py_ssize_t pos, n
    cdef int kind
    cdef object owner
    cdef object close        # id of a built object to leave the open set, or None
    cdef Py_ssize_t dpos     # PyDict_Next position
    cdef object pending      # dict value waiting after its key
    cdef bint has_pending
    cdef object lastkey


cdef class Encoder:
    cdef object sink
    cdef Py_ssize_t max_depth
    cdef char* buf
    cdef Py_ssize_t length, cap
    cdef _PtrMap memo         # address -> memo index
    cdef _PtrMap strptr       # address of a str -> string-table index
    cdef list keep
    cdef dict strtab          # str value -> string-table index (keeps those alive)
    cdef list keep_str        # other str objects whose address is in strptr
    cdef set open
    cdef dict kinds
    cdef public dict globals
    cdef list stack
    cdef object override
    cdef set overridden
    cdef object wants
    cdef dict wanted

    def __cinit__(self):
        _pm_init(&self.memo, 1 << 12)
        _pm_init(&self.strptr, 1 << 8)
        self.cap = 1 << 16
        self.buf = <char*>PyMem_Malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.length = 0

    def __dealloc__(self):
        _pm_free(&self.memo)
        _pm_free(&self.strptr)
        if self.buf != NULL:
            PyMem_Free(self.buf)

    def __init__(self, sink, max_depth=MAX_DEPTH, reducer_override=None):
        self.sink = sink
        self.max_depth = max_depth
        self.override = reducer_override
        self.overridden = set()
        self.wants = getattr(reducer_override, "wants", None)
        self.wanted = {}
        self.keep = []
        self.strtab = {}
        self.keep_str = []
        self.open = set()
        self.kinds = {}
        self.globals = {}
        self.stack = []

    @property
    def n_memo(self):
        return len(self.keep)

    # -- buffer ---------------------------------------------------------------
    cdef int _grow(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.length + extra
        cdef Py_ssize_t cap = self.cap
        cdef char* nb
        if need <= cap:
            return 0
        while cap < need:
            cap *= 2
        nb = <char*>PyMem_Realloc(self.buf, cap)
        if nb == NULL:
            raise MemoryError()
        self.buf = nb
        self.cap = cap
        return 0

    cdef inline int _b1(self, uint8_t b) except -1:
        if self.length + 1 > self.cap:
            self._grow(1)
        self.buf[self.length] = <char>b
        self.length += 1
        return 0

    cdef inline int _be(self, uint8_t head, uint64_t v, int n) except -1:
        cdef int i
        if self.length + 1 + n > self.cap:
            self._grow(1 + n)
        cdef char* p = self.buf + self.length
        p[0] = <char>head
        for i in range(n):
            p[n - i] = <char>(v & 0xFF)
            v >>= 8
        self.length += 1 + n
        return 0

    cdef int _raw(self, const char* data, Py_ssize_t n) except -1:
        if self.length + n > self.cap:
            self._grow(n)
        memcpy(self.buf + self.length, data, n)
        self.length += n
        return 0

    cdef int _int64(self, int64_t v) except -1:
        if 0 <= v < 0x80:
            return self._b1(<uint8_t>v)
        if -32 <= v < 0:
            return self._b1(<uint8_t>(v & 0xFF))
        if v > 0:
            return self._uint(<uint64_t>v)
        if v >= -0x80:
            return self._be(0xD0, <uint64_t>v & 0xFF, 1)
        if v >= -0x8000:
            return self._be(0xD1, <uint64_t>v & 0xFFFF, 2)
        if v >= -0x80000000LL:
            return self._be(0xD2, <uint64_t>v & 0xFFFFFFFF, 4)
        return self._be(0xD3, <uint64_t>v, 8)

    cdef int _uint(self, uint64_t v) except -1:
        if v < 0x80:
            return self._b1(<uint8_t>v)
        if v <= 0xFF:
            return self._be(0xCC, v, 1)
        if v <= 0xFFFF:
            return self._be(0xCD, v, 2)
        if v <= 0xFFFFFFFF:
            return self._be(0xCE, v, 4)
        return self._be(0xCF, v, 8)

    cdef int _double(self, double d) except -1:
        cdef uint64_t u
        memcpy(&u, &d, 8)
        return self._be(0xCB, u, 8)

    cdef int _str_head(self, Py_ssize_t n) except -1:
        if n < 32:
            return self._b1(0xA0 | <uint8_t>n)
        if n <= 0xFF:
            return self._be(0xD9, n, 1)
        if n <= 0xFFFF:
            return self._be(0xDA, n, 2)
        return self._be(0xDB, n, 4)

    cdef int _bin(self, const char* data, Py_ssize_t n) except -1:
        if n <= 0xFF:
            self._be(0xC4, n, 1)
        elif n <= 0xFFFF:
            self._be(0xC5, n, 2)
        else:
            self._be(0xC6, n, 4)
        return self._raw(data, n)

    cdef int _array_head(self, Py_ssize_t n) except -1:
        if n < 16:
            return self._b1(0x90 | <uint8_t>n)
        if n <= 0xFFFF:
            return self._be(0xDC, n, 2)
        return self._be(0xDD, n, 4)

    cdef int _map_head(self, Py_ssize_t n) except -1:
        if n < 16:
            return self._b1(0x80 | <uint8_t>n)
        if n <= 0xFFFF:
            return self._be(0xDE, n, 2)
        return self._be(0xDF, n, 4)

    cdef int _ext_uint(self, uint8_t code, uint64_t v) except -1:
        # fixext 1/2/4/8 holding a big-endian unsigned index
        if v <= 0xFF:
            self._be(0xD4, code, 1)
            return self._b1(<uint8_t>v)
        if v <= 0xFFFF:
            self._be(0xD5, code, 1)
            return self._be_noh(v, 2)
        if v <= 0xFFFFFFFF:
            self._be(0xD6, code, 1)
            return self._be_noh(v, 4)
        self._be(0xD7, code, 1)
        return self._be_noh(v, 8)

    cdef int _be_noh(self, uint64_t v, int n) except -1:
        cdef int i
        if self.length + n > self.cap:
            self._grow(n)
        cdef char* p = self.buf + self.length
        for i in range(n):
            p[n - 1 - i] = <char>(v & 0xFF)
            v >>= 8
        self.length += n
        return 0

    cdef int _ext_bytes(self, uint8_t code, bytes data) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if n == 1 or n == 2 or n == 4 or n == 8 or n == 16:
            self._be({1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}[n], code, 1)
        elif n <= 0xFF:
            self._be(0xC7, n, 1)
            self._b1(code)
        elif n <= 0xFFFF:
            self._be(0xC8, n, 2)
            self._b1(code)
        else:
            self._be(0xC9, n, 4)
            self._b1(code)
        return self._raw(PyBytes_AS_STRING(data), n)

    cdef int _marker(self, uint8_t code, Py_ssize_t count, Py_ssize_t at=-1) except -1:
        self._array_head(count + 1)
        return self._ext_uint(code, 0 if at < 0 else <uint64_t>(at + 1))

    cdef int _flush(self) except -1:
        if self.length:
            data = PyBytes_FromStringAndSize(self.buf, self.length)
            self.length = 0
            self.sink.stream_frame(data)
        return 0

    # -- driver ---------------------------------------------------------------
    def encode(self, root):
        cdef _EFrame fr
        cdef PyObject* k
        cdef PyObject* v
        cdef object child
        self._value(root)
        while self.stack:
            fr = <_EFrame>self.stack[len(self.stack) - 1]
            if fr.kind == F_MAP or fr.kind == F_ATTRS:
                if fr.has_pending:
                    fr.has_pending = False
                    child = fr.pending
                    fr.pending = None
                    fr.pos += 1
                    self._value(child)
                else:
                    if PyDict_Size(fr.seq) != fr.n:
                        raise self._error(fr.owner, "the dict changed size while it was being saved")
                    if not PyDict_Next(fr.seq, &fr.dpos, &k, &v):
                        self.stack.pop()
                        continue
                    fr.lastkey = <object>k
                    fr.pending = <object>v
                    fr.has_pending = True
                    fr.pos += 1
                    self._value(<object>k)
            else:
                if fr.pos >= fr.n:
                    self.stack.pop()
                    if fr.close is not None:
                        self.open.discard(fr.close)
                    continue
                child = fr.seq[fr.pos]
                fr.pos += 1
                self._value(child)
            if self.length >= FRAME_SIZE:
                self._flush()
        self._flush()

    cdef int _push(self, object seq, Py_ssize_t n, int kind, object owner, object close=None) except -1:
        cdef _EFrame fr
        if len(self.stack) >= self.max_depth:
            raise self._error(owner, f"nesting deeper than max_depth={self.max_depth}")
        fr = _EFrame.__new__(_EFrame)
        fr.seq = seq
        fr.n = n
        fr.pos = 0
        fr.kind = kind
        fr.owner = owner
        fr.close = close
        fr.dpos = 0
        fr.has_pending = False
        self.stack.append(fr)
        return 0

    def path_parts(self):
        cdef _EFrame fr
        parts = []
        for fr in self.stack:
            i = fr.pos - 1
            if fr.kind == F_SEQ:
                part = f"[{i}]"
            elif fr.kind == F_SET:
                part = f"{{item {i}}}"
            elif fr.kind == F_FLAT:
                part = f".flat[{i - 3}]" if i >= 3 else ".<array header>"
            elif fr.kind == F_MAP:
                part = f"[{fr.lastkey!r:.60}]" if i % 2 else f".<key {fr.lastkey!r:.60}>"
            elif fr.kind == F_ATTRS:
                part = f".{fr.lastkey}" if i % 2 else f".<attribute name {fr.lastkey!r:.60}>"
            else:
                part = (".<reduce callable>", ".<reduce args>", ".<state>")[min(i, 2)]
            parts.append((fr.owner, part))
        return parts

    def path(self):
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

    cdef Py_ssize_t _memoize(self, object obj) except -2:
        """-1 when ``obj`` is new (and now has the next index), else its index."""
        cdef Py_ssize_t i = _pm_setdefault(&self.memo, <void*>obj, PyList_GET_SIZE(self.keep))
        if i >= 0:
            return i
        PyList_Append(self.keep, obj)
        return -1

    # -- values ---------------------------------------------------------------
    cdef int _value(self, object obj) except -1:
        cdef object t = type(obj)
        cdef int overflow
        cdef long long ll
        cdef Py_ssize_t i
        if t is str:
            return self._str(obj)
        if t is int:
            ll = PyLong_AsLongLongAndOverflow(obj, &overflow)
            if overflow == 0:
                return self._int64(ll)
            if overflow > 0 and obj <= 0xFFFFFFFFFFFFFFFF:
                return self._uint(PyLong_AsUnsignedLongLong(obj))
            n = (obj.bit_length() + 8) // 8
            return self._ext_bytes(X_BIGINT, obj.to_bytes(n, "big", signed=True))
        if t is float:
            return self._double(PyFloat_AS_DOUBLE(obj))
        if obj is None:
            return self._b1(0xC0)
        if t is bool:
            return self._b1(0xC3 if obj is True else 0xC2)
        if t is tuple:
            return self._built(obj, X_TUPLE, obj, F_SEQ)
        if t is list:
            i = self._memoize(obj)
            if i >= 0:
                return self._ext_uint(X_REF, i)
            i = len(<list>obj)
            self._array_head(i)
            if i and self._atomic_items(obj, i):
                for i in range(i):
                    self._value((<list>obj)[i])
            elif i:
                self._push(obj, i, F_SEQ, obj)
            return 0
        if t is dict:
            i = self._memoize(obj)
            if i >= 0:
                return self._ext_uint(X_REF, i)
            self._map_head(len(<dict>obj))
            if len(<dict>obj):
                self._push(obj, len(<dict>obj), F_MAP, obj)
            return 0
        try:
            return self._other(obj, t)
        except TorporError:
            raise
        except (ValueError, TypeError, OverflowError, MemoryError) as e:
            raise self._error(obj, f"{type(e).__name__}: {e}") from e

    cdef int _str(self, object s) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        cdef Py_ssize_t j = _pm_get(&self.strptr, <void*>s)
        if j >= 0:
            return self._ext_uint(X_STRREF, j)
        i = self.strtab.get(s)
        if i is not None:
            # an equal string seen before under another address: remember this
            # address too, and keep the object alive so the address stays its own
            PyList_Append(self.keep_str, s)
            _pm_setdefault(&self.strptr, <void*>s, <Py_ssize_t>i)
            return self._ext_uint(X_STRREF, <Py_ssize_t>i)
        j = len(self.strtab)
        self.strtab[s] = j
        _pm_setdefault(&self.strptr, <void*>s, j)
        if PyUnicode_IS_COMPACT_ASCII(s):
            n = PyUnicode_GET_LENGTH(s)
            p = PyUnicode_DATA(s)
        else:
            try:
                p = PyUnicode_AsUTF8AndSize(s, &n)
            except UnicodeEncodeError:
                return self._ext_bytes(X_STR_SURROGATE, s.encode("utf-8", "surrogatepass"))
        self._str_head(n)
        return self._raw(p, n)

    cdef bint _atomic_items(self, object items, Py_ssize_t n):
        """True when every item is None, bool, int, float or str: such a container
        cannot be part of a cycle, so its items are written at once, without a frame."""
        cdef Py_ssize_t j
        cdef object t
        if n > 16:
            return False
        for j in range(n):
            t = type(items[j])
            if not (t is float or t is int or t is str or t is bool or t is _NoneType):
                return False
        return True

    cdef int _built(self, object obj, uint8_t code, object items, int kind) except -1:
        cdef Py_ssize_t i = self._memoize(obj)
        cdef Py_ssize_t n = len(items)
        cdef Py_ssize_t j
        if i < 0 and kind == F_SEQ and self._atomic_items(items, n):
            self._marker(code, n)
            for j in range(n):
                self._value(items[j])
            return 0
        if i >= 0:
            if id(obj) not in self.open:
                return self._ext_uint(X_REF, i)
            self._marker(code, n, i)
        else:
            self._marker(code, n)
            self.open.add(id(obj))
        if n:
            self._push(items, n, kind, obj, id(obj))
        else:
            self.open.discard(id(obj))
        return 0

    cdef int _other(self, object obj, object t) except -1:
        cdef Py_ssize_t i
        cdef bytes b
        if t in self.kinds:
            return self._object(obj, t)
        if t is bytes:
            if len(<bytes>obj) < BYTES_OOB_MIN:
                return self._bin(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
            i = self._memoize(obj)
            if i >= 0:
                return self._ext_uint(X_REF, i)
            self._marker(X_BYTES_OOB, 1)
            return self._uint(self.sink.add_bytes(obj))
        if t is complex:
            b = _complex.pack(obj.real, obj.imag)
            return self._ext_bytes(X_COMPLEX, b)
        if t is bytearray:
            i = self._memoize(obj)
            if i >= 0:
                return self._ext_uint(X_REF, i)
            if len(obj) < BYTES_OOB_MIN:
                self._marker(X_BYTEARRAY, 1)
                b = bytes(obj)
                return self._bin(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
            self._marker(X_BYTEARRAY_OOB, 1)
            return self._uint(self.sink.add_bytes(obj))
        if t is set:
            i = self._memoize(obj)
            if i >= 0:
                return self._ext_uint(X_REF, i)
            self._marker(X_SET, len(obj))
            if obj:
                items = list(obj)
                self._push(items, len(items), F_SET, obj)
            return 0
        if t is frozenset:
            items = list(obj)
            return self._built(obj, X_FROZENSET, items, F_SET)
        if t is _ndarray or t is _memmap:
            return self._ndarray(obj)
        if t is _npdtype or isinstance(obj, _npdtype):
            self._marker(X_DTYPE, 1)
            return self._value("|O" if obj == object else _arrays.encode_dtype(obj))
        if t is _ReduceTail:
            return self._reduce_tail(obj)
        if isinstance(obj, _npgeneric) and t.__module__ == "numpy" and not obj.dtype.hasobject:
            desc, data = _arrays.scalar_parts(obj)
            self._marker(X_NPSCALAR, 2)
            self._value(desc)
            return self._bin(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return self._object(obj, t)

    cdef int _ndarray(self, object arr) except -1:
        cdef Py_ssize_t i = self._memoize(arr)
        cdef bytes data
        if i >= 0:
            return self._ext_uint(X_REF, i)
        dt = arr.dtype
        fortran = _arrays.is_fortran(arr)
        if dt.hasobject:
            if dt != object:
                return self._reduce(arr, -1)
            items = arr.ravel(order="F" if fortran else "C").tolist() if arr.ndim else [arr[()]]
            self._marker(X_OBJARRAY, 3 + arr.size)
            seq = ["|O", list(arr.shape), fortran] + items
            return self._push(seq, len(seq), F_FLAT, arr)
        if arr.nbytes < ARRAY_OOB_MIN:
            self._marker(X_NDARRAY_INLINE, 4)
            data = _arrays.inline_bytes(arr)
            self._bin(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        else:
            self._marker(X_NDARRAY, 4)
            self._uint(self.sink.add_array(arr, fortran))
        seq = [_arrays.encode_dtype(dt), list(arr.shape), fortran]
        return self._push(seq, 3, F_SEQ, arr)

    cdef int _object(self, object obj, object cls) except -1:
        cdef Py_ssize_t i
        kind = self.kinds.get(cls)
        if kind is None:
            kind = self.kinds[cls] = classify(cls)
        if kind == KIND_GLOBAL:
            return self._global(obj)
        i = self._memoize(obj)
        if i >= 0:
            if id(obj) in self.open:
                if id(obj) in self.overridden:
                    raise self._cycle_error(obj)
                return self._reduce(obj, i)
            return self._ext_uint(X_REF, i)
        if self.override is not None and self._overridden(obj):
            return 0
        if kind == KIND_INST:
            self._marker(X_INST, 2)
            self._global(cls)
            d = obj.__dict__
            if not d:
                return self._b1(0xC0)
            self._map_head(len(d))
            return self._push(d, len(d), F_ATTRS, obj)
        return self._reduce(obj, -1)

    cdef int _global(self, object obj) except -1:
        cdef Py_ssize_t i = self._memoize(obj)
        # (classes of instances come here directly, so this is their memo lookup)
        if i >= 0:
            if id(obj) in self.open and id(obj) in self.overridden:
                raise self._cycle_error(obj)
            return self._ext_uint(X_REF, i)
        if self.override is not None and self._overridden(obj):
            return 0
        try:
            module, name = global_ref(obj)
        except UnsupportedObjectError as e:
            raise self._error(obj, str(e)) from None
        self.globals[f"{module}.{name}"] = None
        self._marker(X_GLOBAL, 2)
        self._str(module)
        return self._str(name)

    cdef bint _overridden(self, object obj) except -1:
        """Ask the reducer_override hook about a new (just memoized) object; if
        it gives a reduction, write it and return True."""
        cdef object cls, want
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
        self._reduce(obj, -1, rv)
        return True

    cdef int _reduce(self, object obj, Py_ssize_t at, object rv=None) except -1:
        if rv is None:
            try:
                rv = reduce_object(obj)
            except UnsupportedObjectError as e:
                raise self._error(obj, str(e)) from None
        if rv[0] is None:
            module = getattr(obj, "__module__", None) or __import__("pickle").whichmodule(obj, rv[1])
            self.globals[f"{module}.{rv[1]}"] = None
            self._marker(X_GLOBAL, 2)
            self._str(module)
            return self._str(rv[1])
        count = 6 if rv[5] is not None else 5
        self._marker(X_REDUCE, count, at)
        if at < 0:
            self.open.add(id(obj))
        seq = [rv[0], rv[1], _ReduceTail(obj, rv)]
        return self._push(seq, 3, F_REDUCE, obj)

    cdef int _reduce_tail(self, object tail) except -1:
        cdef _EFrame fr
        rv = tail.rv
        oid = id(tail.obj)
        if oid in self.open:
            self.open.discard(oid)
            items = [rv[2], rv[3], rv[4]] + ([rv[5]] if rv[5] is not None else [])
            fr = <_EFrame>self.stack[len(self.stack) - 1]
            fr.seq = items
            fr.n = len(items)
            fr.pos = 0
            return 0
        self._raw(b"\xc0\xc0\xc0", 3)
        if rv[5] is not None:
            self._b1(0xC0)
        return 0


# --- decoding --------------------------------------------------------------------

DEF D_LIST = 0
DEF D_MAP = 1
DEF D_TUPLE = 2
DEF D_SET = 3
DEF D_FROZENSET = 4
DEF D_BYTEARRAY = 5
DEF D_BYTES_OOB = 6
DEF D_BYTEARRAY_OOB = 7
DEF D_GLOBAL = 8
DEF D_INST = 9
DEF D_REDUCE = 10
DEF D_NDARRAY = 11
DEF D_NDARRAY_INLINE = 12
DEF D_OBJARRAY = 13
DEF D_DTYPE = 14
DEF D_NPSCALAR = 15
DEF D_ATTRS = 16

cdef dict _MARKER_KIND = {
    X_TUPLE: D_TUPLE, X_SET: D_SET, X_FROZENSET: D_FROZENSET,
    X_BYTEARRAY: D_BYTEARRAY, X_BYTES_OOB: D_BYTES_OOB,
    X_BYTEARRAY_OOB: D_BYTEARRAY_OOB, X_GLOBAL: D_GLOBAL, X_INST: D_INST,
    X_REDUCE: D_REDUCE, X_NDARRAY: D_NDARRAY, X_NDARRAY_INLINE: D_NDARRAY_INLINE,
    X_OBJARRAY: D_OBJARRAY, X_DTYPE: D_DTYPE, X_NPSCALAR: D_NPSCALAR,
}
cdef dict _FIXED_COUNT = {D_BYTEARRAY: 1, D_BYTES_OOB: 1, D_BYTEARRAY_OOB: 1, D_GLOBAL: 2,
                          D_INST: 2, D_NDARRAY: 4, D_NDARRAY_INLINE: 4, D_DTYPE: 1,
                          D_NPSCALAR: 2}
cdef object _UNFILLED = UNFILLED


cdef class _DFrame:
    cdef int kind
    cdef object target
    cdef Py_ssize_t remaining
    cdef Py_ssize_t slot
    cdef object items
    cdef object extra        # pending map key / INST phase / REDUCE "built here" / objarray count
    cdef bint has_key
    cdef int phase


cdef class Decoder:
    cdef object policy
    cdef dict payloads
    cdef Py_ssize_t max_depth
    cdef list memo
    cdef list strtab
    cdef set callables
    cdef frozenset producers
    cdef dict inst_classes    # class -> (its __new__, whether it has __setstate__)
    cdef const unsigned char* p
    cdef Py_ssize_t pos, end

    def __init__(self, policy, payloads, max_depth=MAX_DEPTH):
        self.policy = policy
        self.payloads = dict(payloads)
        self.max_depth = max_depth
        self.memo = []
        self.strtab = []
        self.callables = set()
        self.inst_classes = {}
        self.producers = getattr(policy, "producers", frozenset())

    def decode(self, data):
        cdef const unsigned char[::1] view
        if not isinstance(data, bytes):
            data = bytes(data)
        self.p = <const unsigned char*>PyBytes_AS_STRING(data)
        self.end = PyBytes_GET_SIZE(data)
        self.pos = 0
        try:
            return self._decode(data)
        except TorporError:
            raise
        except RecursionError as e:
            raise CorruptFileError(f"object stream nested too deeply to rebuild: {e}") from None
        except Exception as e:
            raise CorruptFileError(
                f"the object stream could not be rebuilt ({type(e).__name__}: {e})") from e

    cdef fail(self, msg):
        raise CorruptFileError(f"object stream is corrupt at byte {self.pos}: {msg}")

    cdef inline int _need(self, Py_ssize_t n) except -1:
        if n > self.end - self.pos:
            self.fail(f"needs {n} more bytes but only {self.end - self.pos} remain (truncated?)")
        return 0

    cdef inline uint64_t _be(self, int n) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t v = 0
        cdef int i
        self._need(n)
        for i in range(n):
            v = (v << 8) | self.p[self.pos + i]
        self.pos += n
        return v

    cdef inline Py_ssize_t _count(self, uint64_t n, int per) except -1:
        if n * per > <uint64_t>(self.end - self.pos):
            self.fail(f"a container claims {n} items but only {self.end - self.pos} bytes remain")
        return <Py_ssize_t>n

    cdef object _str(self, Py_ssize_t n):
        self._need(n)
        try:
            s = PyUnicode_DecodeUTF8(<const char*>(self.p + self.pos), n, NULL)
        except UnicodeDecodeError as e:
            self.fail(f"invalid utf-8 in a string: {e}")
        self.pos += n
        self.strtab.append(s)
        return s

    cdef object _bin(self, Py_ssize_t n):
        self._need(n)
        b = PyBytes_FromStringAndSize(<const char*>(self.p + self.pos), n)
        self.pos += n
        return b

    cdef uint64_t _uint_payload(self, Py_ssize_t n) except? 0xFFFFFFFFFFFFFFFF:
        if n != 1 and n != 2 and n != 4 and n != 8:
            self.fail(f"an index extension has a payload of {n} bytes; expected 1, 2, 4 or 8")
        return self._be(n)

    cdef object _decode(self, data):
        cdef list stack = []
        cdef list memo = self.memo
        cdef _DFrame fr, top
        cdef uint8_t b
        cdef Py_ssize_t n, epos
        cdef int code, kind
        cdef object value
        cdef uint64_t u
        cdef double d
        cdef float f
        cdef uint32_t u32
        while True:
            if self.pos >= self.end:
                self.fail("unexpected end of data (truncated?)")
            b = self.p[self.pos]
            self.pos += 1
            if b <= 0x7F:
                value = <long>b
            elif 0xA0 <= b <= 0xBF:
                value = self._str(b & 0x1F)
            elif b >= 0xE0:
                value = <long>b - 0x100
            elif b == 0xCB:
                u = self._be(8)
                memcpy(&d, &u, 8)
                value = PyFloat_FromDouble(d)
            elif 0x90 <= b <= 0x9F or b == 0xDC or b == 0xDD:
                if b <= 0x9F:
                    n = b & 0x0F
                else:
                    n = self._count(self._be(2 if b == 0xDC else 4), 1)
                if n == 0:
                    value = []
                    memo.append(value)
                else:
                    fr = self._start_array(n)
                    if len(stack) >= self.max_depth:
                        self.fail(f"nested deeper than max_depth={self.max_depth}")
                    stack.append(fr)
                    if fr.remaining > 0:
                        continue
                    stack.pop()
                    value = self._finish(fr)
            elif 0x80 <= b <= 0x8F or b == 0xDE or b == 0xDF:
                if b <= 0x8F:
                    n = b & 0x0F
                else:
                    n = self._count(self._be(2 if b == 0xDE else 4), 2)
                fr = _DFrame.__new__(_DFrame)
                fr.remaining = 2 * n
                fr.has_key = False
                top = stack[len(stack) - 1] if stack else None
                if top is not None and top.kind == D_INST and top.phase == 1:
                    fr.kind = D_ATTRS
                    fr.target = top.items if top.items is not None else top.target.__dict__
                else:
                    fr.kind = D_MAP
                    fr.target = {}
                    memo.append(fr.target)
                if n:
                    if len(stack) >= self.max_depth:
                        self.fail(f"nested deeper than max_depth={self.max_depth}")
                    stack.append(fr)
                    continue
                value = fr.target
            elif b == 0xC0:
                value = None
            elif b == 0xC2:
                value = False
            elif b == 0xC3:
                value = True
            elif b == 0xCC:
                value = PyLong_FromUnsignedLongLong(self._be(1))
            elif b == 0xCD:
                value = PyLong_FromUnsignedLongLong(self._be(2))
            elif b == 0xCE:
                value = PyLong_FromUnsignedLongLong(self._be(4))
            elif b == 0xCF:
                value = PyLong_FromUnsignedLongLong(self._be(8))
            elif b == 0xD0:
                value = <long>(<signed char>self._be(1))
            elif b == 0xD1:
                value = <long>(<short>self._be(2))
            elif b == 0xD2:
                value = <long>(<int>self._be(4))
            elif b == 0xD3:
                value = PyLong_FromLongLong(<long long>self._be(8))
            elif b == 0xCA:
                u32 = <uint32_t>self._be(4)
                memcpy(&f, &u32, 4)
                value = PyFloat_FromDouble(f)
            elif b == 0xD9 or b == 0xDA or b == 0xDB:
                value = self._str(self._be(1 if b == 0xD9 else (2 if b == 0xDA else 4)))
            elif b == 0xC4 or b == 0xC5 or b == 0xC6:
                value = self._bin(self._be(1 if b == 0xC4 else (2 if b == 0xC5 else 4)))
            elif 0xD4 <= b <= 0xD8 or 0xC7 <= b <= 0xC9:
                if b >= 0xD4:
                    n = 1 << (b - 0xD4)
                else:
                    n = self._be(1 if b == 0xC7 else (2 if b == 0xC8 else 4))
                code = <int>self._be(1)
                value = self._ext_value(code, n)
            else:
                self.pos -= 1
                self.fail(f"byte 0x{b:02x} is not a MessagePack type")
            # deliver
            while True:
                if not stack:
                    if self.pos != self.end:
                        self.fail(f"{self.end - self.pos} bytes left after the root object")
                    return value
                top = <_DFrame>stack[len(stack) - 1]
                self._add(top, value)
                top.remaining -= 1
                if top.remaining > 0:
                    break
                stack.pop()
                value = self._finish(top)

    cdef _DFrame _start_array(self, Py_ssize_t n):
        cdef _DFrame fr = _DFrame.__new__(_DFrame)
        cdef uint8_t b = self.p[self.pos] if self.pos < self.end else 0
        cdef Py_ssize_t plen, save = self.pos
        cdef int code
        cdef uint64_t at
        fr.has_key = False
        fr.phase = 0
        fr.slot = -1
        if 0xD4 <= b <= 0xD7 and self.pos + 1 < self.end and self.p[self.pos + 1] in MARKERS:
            self.pos += 1
            plen = 1 << (b - 0xD4)
            code = <int>self._be(1)
        elif b == 0xC7 and self.pos + 2 < self.end and self.p[self.pos + 2] in MARKERS:
            self.pos += 1
            plen = <Py_ssize_t>self._be(1)
            code = <int>self._be(1)
        else:
            fr.kind = D_LIST
            fr.target = []
            fr.remaining = n
            self.memo.append(fr.target)
            return fr
        at = self._uint_payload(plen)
        fr.kind = _MARKER_KIND[code]
        fr.remaining = n - 1
        need = _FIXED_COUNT.get(fr.kind)
        if need is not None and fr.remaining != need:
            self.fail(f"extension {code} needs {need} elements, found {fr.remaining}")
        if at:
            if code not in AT_MARKERS or at - 1 >= <uint64_t>len(self.memo) or self.memo[at - 1] is not _UNFILLED:
                self.fail(f"extension {code} rebuilds memo index {at - 1}, which is not under construction")
            fr.slot = <Py_ssize_t>(at - 1)
        elif code in MEMO_MARKERS:
            fr.slot = len(self.memo)
            self.memo.append(_UNFILLED)
        fr.items = []
        if fr.kind == D_SET:
            fr.target = set()
            self.memo[fr.slot] = fr.target
        elif fr.kind == D_REDUCE and fr.remaining != 5 and fr.remaining != 6:
            self.fail(f"a reduce extension needs 5 or 6 elements, found {fr.remaining}")
        elif fr.kind == D_OBJARRAY and fr.remaining < 3:
            self.fail("an object array extension needs at least 3 elements")
        return fr

    cdef object _ext_value(self, int code, Py_ssize_t n):
        cdef uint64_t i
        if code == X_REF:
            i = self._uint_payload(n)
            if i >= <uint64_t>len(self.memo):
                self.fail(f"reference to memo index {i}, but only {len(self.memo)} objects exist so far")
            obj = self.memo[i]
            if obj is _UNFILLED:
                self.fail(f"reference to memo index {i} before the object is built")
            return obj
        if code == X_STRREF:
            i = self._uint_payload(n)
            if i >= <uint64_t>len(self.strtab):
                self.fail(f"reference to string {i}, but only {len(self.strtab)} strings exist so far")
            return self.strtab[i]
        data = self._bin(n)
        if code == X_COMPLEX:
            if n != 16:
                self.fail("a complex number needs 16 bytes")
            return complex(*_complex.unpack(data))
        if code == X_BIGINT:
            if not n:
                self.fail("an empty big integer")
            return int.from_bytes(data, "big", signed=True)
        if code == X_STR_SURROGATE:
            try:
                s = data.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as e:
                self.fail(f"invalid string: {e}")
            self.strtab.append(s)
            return s
        if code in MARKERS:
            self.fail(f"marker extension {code} outside an array")
        self.fail(f"unknown extension type {code}")

    cdef int _add(self, _DFrame fr, object value) except -1:
        cdef int k = fr.kind
        if k == D_LIST:
            PyList_Append(fr.target, value)
        elif k == D_MAP or k == D_ATTRS:
            if not fr.has_key:
                fr.extra = value
                fr.has_key = True
            else:
                try:
                    PyDict_SetItem(fr.target, fr.extra, value)
                except TypeError:
                    self.fail(f"unhashable dict key of type {type(fr.extra).__name__}")
                fr.has_key = False
                fr.extra = None
        elif k == D_TUPLE or k == D_FROZENSET:
            PyList_Append(fr.items, value)
        elif k == D_SET:
            try:
                fr.target.add(value)
            except TypeError:
                self.fail(f"unhashable set item of type {type(value).__name__}")
        elif k == D_INST:
            if fr.phase == 0:
                self._inst_class(fr, value)
            elif value is not None:
                if value is not fr.items and (fr.items is not None or value is not fr.target.__dict__):
                    self.fail("an instance's state must be a map of attributes or nil")
                fr.phase = 2
        elif k == D_REDUCE:
            fr.items.append(value)
            if len(fr.items) == 2:
                self._reduce_build(fr)
        elif k == D_OBJARRAY:
            if fr.target is None:
                fr.items.append(value)
                if len(fr.items) == 3:
                    self._objarray_start(fr)
            else:
                fr.items[<Py_ssize_t>fr.extra] = value
                fr.extra = <Py_ssize_t>fr.extra + 1
        else:
            fr.items.append(value)
        return 0

    cdef int _inst_class(self, _DFrame fr, object cls) except -1:
        # checked and looked up once per class: a model with 500,000 atoms has one
        # Atom class, and a failed getattr costs an AttributeError every time
        if not isinstance(cls, type):
            self.fail("an instance's class is not a class reference")
        info = self.inst_classes.get(cls)
        if info is None:
            if id(cls) not in self.callables:
                self.fail("an instance's class is not a class reference")
            info = self.inst_classes[cls] = (cls.__new__,
                                             getattr(cls, "__setstate__", None) is not None)
        obj = (<tuple>info)[0](cls)
        self.memo[fr.slot] = obj
        fr.target = obj
        fr.phase = 1
        fr.items = {} if (<tuple>info)[1] else None
        return 0

    cdef int _reduce_build(self, _DFrame fr) except -1:
        func, args = fr.items
        if id(func) not in self.callables:
            self.fail("a reduce callable is not a global reference")
        if type(args) is not tuple:
            self.fail("reduce arguments are not a tuple")
        if self.memo[fr.slot] is _UNFILLED:
            obj = func(*args)
            if id(func) in self.producers:
                self.callables.add(id(obj))
            self.memo[fr.slot] = obj
            fr.phase = 1
        else:
            obj = self.memo[fr.slot]
            fr.phase = 0
        fr.target = obj
        return 0

    cdef int _objarray_start(self, _DFrame fr) except -1:
        desc, shape, fortran = fr.items
        if desc != "|O":
            self.fail("object array with a non-object dtype")
        shape = _arrays.check_shape(shape)
        size = 1
        for dim in shape:
            size *= dim
        if size != fr.remaining - 1:
            self.fail(f"an object array of shape {shape} holds {fr.remaining - 1} items")
        arr = np.empty(shape, dtype=object, order="F" if fortran else "C")
        self.memo[fr.slot] = arr
        fr.target = arr
        fr.items = arr.reshape(-1, order="A")
        fr.extra = 0
        return 0

    cdef object _finish(self, _DFrame fr):
        cdef int k = fr.kind
        if k == D_LIST or k == D_MAP or k == D_SET or k == D_ATTRS or k == D_OBJARRAY:
            return fr.target
        items = fr.items
        if k == D_TUPLE or k == D_FROZENSET:
            try:
                value = tuple(items) if k == D_TUPLE else frozenset(items)
            except TypeError:
                self.fail("unhashable frozenset item")
            if self.memo[fr.slot] is _UNFILLED:
                self.memo[fr.slot] = value
            return self.memo[fr.slot]
        if k == D_INST:
            if fr.items is not None and fr.phase == 2:
                fr.target.__setstate__(fr.items)
            return fr.target
        if k == D_REDUCE:
            obj = fr.target
            if fr.phase == 1:
                state, listitems, dictitems = items[2], items[3], items[4]
                setter = items[5] if len(items) > 5 else None
                if listitems is not None and type(listitems) is not list:
                    self.fail("reduce list items are not a list")
                if dictitems is not None and type(dictitems) is not dict:
                    self.fail("reduce dict items are not a dict")
                if setter is not None and id(setter) not in self.callables:
                    self.fail("a state setter is not a global reference")
                apply_state(obj, state, listitems, dictitems, setter)
            return obj
        value = self._build_leaf(k, items)
        if fr.slot >= 0:
            self.memo[fr.slot] = value
        return value

    cdef object _build_leaf(self, int k, list items):
        if k == D_GLOBAL:
            module, qualname = items
            obj = self.policy.resolve(module, qualname)
            self.callables.add(id(obj))
            return obj
        if k == D_BYTEARRAY:
            if type(items[0]) is not bytes:
                self.fail("bytearray data is not binary")
            return bytearray(items[0])
        if k == D_BYTES_OOB or k == D_BYTEARRAY_OOB:
            data = self._payload(items[0], (bytes, bytearray))
            if k == D_BYTES_OOB:
                return data if type(data) is bytes else bytes(data)
            return data if type(data) is bytearray else bytearray(data)
        if k == D_NDARRAY:
            section, desc, shape, fortran = items
            arr = self._payload(section, (np.ndarray,))
            if list(arr.shape) != shape or _arrays.encode_dtype(arr.dtype) != desc:
                self.fail(f"array section {section} does not match its description in the stream")
            return arr
        if k == D_NDARRAY_INLINE:
            data, desc, shape, fortran = items
            if type(data) is not bytes:
                self.fail("inline array data is not binary")
            return _arrays.array_from_bytes(data, _arrays.decode_dtype(desc),
                                            _arrays.check_shape(shape), bool(fortran))
        if k == D_DTYPE:
            return _arrays.dtype_from_desc(items[0])
        if k == D_NPSCALAR:
            return _arrays.scalar_from_bytes(items[0], items[1])
        self.fail(f"unknown frame kind {k}")

    cdef object _payload(self, section, types_):
        if type(section) is not int or section not in self.payloads:
            self.fail(f"reference to payload section {section!r:.20}, which the file does not hold")
        data = self.payloads[section]
        if not isinstance(data, types_):
            self.fail(f"payload section {section} holds the wrong kind of data")
        return data
