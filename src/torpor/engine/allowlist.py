"""The default allow-list: every name a file may use without ``allow=`` or
``trusted=True``, and why each one is safe.

Two kinds of entry. A *value* may be named by a file (it comes back as that very
class or object) but never called: numpy's scalar and dtype classes are values,
because called with arguments of the file's choosing they allocate memory of any
size or interpret raw bytes (arrays, numpy scalars and dtypes come only from
torpor's own descriptors, which the walkers build and check). A *call* may also be
used as a reduce callable, an instance's class or a state setter, and each one
has a check of its arguments: they must be values the file holds (never a
``range`` or a count that makes a small file allocate or work without bound), and
within explicit limits.

An object of a listed class takes no state from the file (pickle's BUILD: an
instance's attributes, or what ``__setstate__`` receives) unless its entry has a
*state* check, which accepts exactly the states numpy or CPython write for it and
returns what applying one costs (engine/guard.py charges it): numpy's arrays,
masked arrays and random generators, exceptions, a UUID.

Every decision is made from the name alone, against these fixed tables, before
any module is imported: a refused name never imports anything.
"""

from __future__ import annotations

import builtins
import codecs
import datetime
import re
import sys
import weakref
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from ..errors import UnsafeLoadError, brief

#: Most items with one hash value a container built from a file may hold: Python's
#: dicts and sets slow down quadratically on equal hashes (60,000 big integers
#: hashing to 0 took 38 s), and no real data has more than a handful.
MAX_EQUAL_HASHES = 64
#: Longest decimal string int() may parse in safe mode (CPython's own default
#: limit, which Python 3.10 lacks: int() of a long string is quadratic there).
MAX_INT_DIGITS = 4300
#: Largest exponent a Fraction string may have.
MAX_FRACTION_EXPONENT = 4300

Check = Callable[[tuple[Any, ...], Callable[[Any], bool]], None]
#: state(obj, state) -> work units: refuses (``Refused``) a state the class's own
#: code must not receive, else returns what applying it costs beyond reading it.
StateCheck = Callable[[Any, Any], int]


class Entry(NamedTuple):
    call: bool              # may be called (else only named, as a value)
    check: Optional[Check]  # checks the call's arguments (calls only)
    why: str                # why this is safe
    state: Optional[StateCheck] = None   # the states its objects may take (else none)


class Refused(UnsafeLoadError):
    """A call the default allow-list refuses for its arguments."""


def _refuse(name: str, reason: str) -> Refused:
    return Refused(
        f"the file calls {name} with {reason}; torpor never writes such a call, so the "
        f"file was crafted or damaged. Nothing was called. If you trust the file, load it "
        f"with trusted=True.", [name])


def _refuse_state(obj: Any, reason: str) -> Refused:
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    return Refused(
        f"the file gives a {name} a state of its own choosing ({reason}); neither numpy nor "
        f"Python writes such a state, so the file was crafted or damaged. Nothing was "
        f"applied. If you trust the file, load it with trusted=True.", [name])


# --- argument checks ---------------------------------------------------------------

_MATERIAL = (list, tuple, dict, set, frozenset, str, bytes, bytearray)


_SCALARS = (int, float, bool, type(None))


def _materialized(name: str, args: tuple[Any, ...], start: int = 0) -> None:
    """Arguments must be containers the file holds, of these exact types, or plain
    scalars: never a range, an array, a deque or anything else whose length the
    file does not pay for (a range of 10**15 items costs a few bytes)."""
    for a in args[start:]:
        t = type(a)
        if t not in _MATERIAL and t not in _SCALARS:
            what = f"a range of {a.stop - a.start} steps" if t is range else f"a {t.__qualname__}"
            raise _refuse(name, f"{what} (only containers the file holds may be expanded)")


#: Encodings and error handlers str() and bytes() may use in safe mode: linear
#: ones that are always loaded (others may be quadratic, or import a module).
_CODECS = frozenset({"utf-8", "utf8", "utf_8", "ascii", "latin-1", "latin1", "latin_1",
                     "iso-8859-1", "utf-16", "utf16", "utf-32", "utf32", "utf-16-le",
                     "utf-16-be", "utf-32-le", "utf-32-be"})
_ERRORS = frozenset({"strict", "surrogatepass", "surrogateescape", "replace", "ignore",
                     "backslashreplace"})


def equal_hash_error(what: str) -> UnsafeLoadError:
    return UnsafeLoadError(
        f"{what} holds more than {MAX_EQUAL_HASHES} items with the same hash value: "
        f"building it would take quadratic time, so the file was crafted to stall the "
        f"load. torpor refuses it.", [])


def equal_hash_check(items: Any, what: str) -> None:
    """Refuse a container whose items share one hash value too often."""
    counts: dict[int, int] = {}
    for x in items:
        if type(x) is str:
            continue              # str hashes are randomised: collisions cannot be crafted
        h = hash(x)
        n = counts.get(h, 0) + 1
        if n > MAX_EQUAL_HASHES:
            raise equal_hash_error(what)
        counts[h] = n


def _check_sized(name: str) -> Check:
    """bytes / bytearray: from a buffer, a string and its encoding, or a list of
    ints the file holds; never from a count (``bytes(3 << 30)``, numpy integers
    and anything else with ``__index__`` included)."""
    def check(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
        if args and hasattr(type(args[0]), "__index__"):
            raise _refuse(name, f"a size ({args[0]}) instead of data")
        _materialized(name, args)
        if len(args) > 1 and (not isinstance(args[1], str) or args[1].lower() not in _CODECS):
            raise _refuse(name, f"the encoding {brief(args[1], 40)} (safe mode decodes with "
                                f"{', '.join(sorted(_CODECS))} only)")
        if len(args) > 2 and args[2] not in _ERRORS:
            raise _refuse(name, f"the error handler {brief(args[2], 40)}")
    return check


def _check_container(name: str, hashed: str = "") -> Check:
    """Containers built from data the file holds; ``hashed``: "items" (a set's) or
    "keys" (a mapping's, from a dict or pairs) are checked for equal hashes."""
    def check(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
        _materialized(name, args)
        if not hashed or not args or not isinstance(args[0], (list, tuple, set, frozenset, dict)):
            return
        _equal_hashes(name, args[0], hashed)
    return check


def _equal_hashes(name: str, arg: Any, hashed: str) -> None:
    if hashed == "keys" and type(arg) is not dict:
        if not all(type(p) in (list, tuple) and len(p) == 2 for p in arg):
            raise _refuse(name, "key/value pairs that are not lists or tuples of two items")
        arg = [p[0] for p in arg]
    equal_hash_check(arg, f"the {name} the file builds")


def _check_deque(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    _materialized("collections.deque", args[:1])


def _check_defaultdict(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if args and args[0] is not None and not can_call(args[0]):
        raise _refuse("collections.defaultdict", "a default factory the file may not call")
    _materialized("collections.defaultdict", args, 1)
    if len(args) > 1 and type(args[1]) in (list, tuple, dict):
        _equal_hashes("collections.defaultdict", args[1], "keys")


def _check_int(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if args and type(args[0]) not in (str, bytes, bytearray, int, float, bool):
        raise _refuse("builtins.int", f"a {type(args[0]).__qualname__} (a number or digits only)")
    if args and isinstance(args[0], (str, bytes, bytearray)) and len(args[0]) > MAX_INT_DIGITS:
        raise _refuse("builtins.int", f"a string of {len(args[0])} digits (at most "
                                      f"{MAX_INT_DIGITS} in safe mode)")


_FRACTION = re.compile(r"\s*[-+]?(\d[\d_]*)?(\.\d[\d_]*)?([eE][-+]?\d+)?\s*$")


def _check_fraction(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if any(type(a) not in (int, str, bool) for a in args):
        raise _refuse("fractions.Fraction", "arguments other than ints and a string")
    for a in args:
        if type(a) is int and a.bit_length() > MAX_INT_DIGITS * 4:
            raise _refuse("fractions.Fraction", f"an int of {a.bit_length()} bits")
    if args and isinstance(args[0], str):
        if "_" in args[0] or len(args[0]) > 2 * MAX_INT_DIGITS:
            raise _refuse("fractions.Fraction", "a long string, or one with underscores")
        m = _FRACTION.match(args[0].split("/")[0])
        if m and m.group(3) and abs(int(m.group(3)[1:])) > MAX_FRACTION_EXPONENT:
            raise _refuse("fractions.Fraction", f"the exponent {m.group(3)[1:]} (at most "
                                                f"{MAX_FRACTION_EXPONENT} in safe mode)")


def _check_decimal(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if args and type(args[0]) not in (str, int, float, tuple, bool):
        raise _refuse("decimal.Decimal", f"a {type(args[0]).__qualname__}")
    if args and type(args[0]) is int and args[0].bit_length() > MAX_INT_DIGITS * 3:
        raise _refuse("decimal.Decimal", f"an int of {args[0].bit_length()} bits (converting it "
                                         f"takes quadratic time)")
    if args and type(args[0]) is str and len(args[0]) > 2 * MAX_INT_DIGITS:
        raise _refuse("decimal.Decimal", f"a string of {len(args[0])} characters")


def _check_str(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    """str() of a string, or of bytes with an encoding: never of another object
    (that prints its repr, which shared references make exponentially long, and
    an array's or a path's repr costs far more than the file pays)."""
    if args and not (type(args[0]) is str or (type(args[0]) in (bytes, bytearray) and len(args) > 1)):
        raise _refuse("builtins.str", f"a {type(args[0]).__qualname__} (safe mode makes strings "
                                      f"from strings, or from bytes and an encoding)")
    _check_str_sized(args, can_call)


_check_str_sized = _check_sized("builtins.str")


def _check_safeuuid(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if len(args) != 1 or not (args[0] is None or type(args[0]) is int):
        raise _refuse("uuid.SafeUUID", "arguments other than one int or None")


def _zone_key(name: str, key: Any) -> None:
    """A zone key must be a short string naming a file of the tz database here;
    otherwise zoneinfo falls back to the tzdata package (importing it, and
    importlib.resources and zipfile) only to fail. With tzdata installed, a key
    missing on disk is looked up there: that import is what the file needs."""
    if type(key) is not str or len(key) > 255:
        raise _refuse(name, "a key that is not a short string")
    import os
    import zoneinfo
    if any(os.path.isfile(os.path.join(p, key)) for p in zoneinfo.TZPATH):
        return
    import importlib.util
    if importlib.util.find_spec("tzdata") is None:
        raise _refuse(name, f"the time zone {brief(key)}, which is not installed here (no "
                            f"such file in zoneinfo.TZPATH, and no tzdata package)")


def _check_zoneinfo(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if len(args) != 1:
        raise _refuse("zoneinfo.ZoneInfo", f"{len(args)} arguments")
    _zone_key("zoneinfo.ZoneInfo", args[0])


def _check_zoneinfo_unpickle(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    """ZoneInfo._unpickle(key, from_cache): from_cache false re-reads and parses
    the zone file on every call; safe mode always takes the cached zone."""
    if len(args) != 2 or type(args[1]) not in (int, bool) or args[1] != 1:
        raise Refused(
            "the file holds a time zone made with ZoneInfo.no_cache (ZoneInfo._unpickle with "
            "from_cache 0): rebuilding one re-reads and parses its zone file for every object, "
            "so safe loading takes zones from the cache only. Nothing was called. If you trust "
            "the file, load it with trusted=True.", ["zoneinfo.ZoneInfo._unpickle"])
    _zone_key("zoneinfo.ZoneInfo._unpickle", args[0])


def _check_no_args(name: str) -> Check:
    def check(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
        if args:
            raise _refuse(name, f"{len(args)} arguments")
    return check


def _check_newobj(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    """copyreg.__newobj__(cls, *args) is cls.__new__(cls, *args): cls must be a
    class the file may call, with arguments its own check accepts."""
    _check_class_call("copyreg.__newobj__", args[0] if args else None, args[1:], can_call)


def _check_newobj_ex(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if len(args) != 3 or not isinstance(args[1], tuple) or not isinstance(args[2], dict):
        raise _refuse("copyreg.__newobj_ex__", "arguments that are not (class, args, kwargs)")
    if args[2]:
        raise _refuse("copyreg.__newobj_ex__", "keyword arguments")
    _check_class_call("copyreg.__newobj_ex__", args[0], args[1], can_call)


def _check_reconstructor(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    """copyreg._reconstructor(cls, base, state): base.__new__(cls, state)."""
    if len(args) != 3:
        raise _refuse("copyreg._reconstructor", f"{len(args)} arguments")
    _check_class_call("copyreg._reconstructor", args[0], (), can_call)
    if args[1] is not object:
        _check_class_call("copyreg._reconstructor", args[1], (args[2],), can_call)


def _check_class_call(via: str, cls: Any, args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if not isinstance(cls, type) or not can_call(cls):
        raise _refuse(via, f"{brief(cls)}, which the file may not call")
    entry = SAFE.get(f"{cls.__module__}.{cls.__qualname__}")
    if entry is not None and entry.check is not None:
        entry.check(args, can_call)


# --- states --------------------------------------------------------------------------

def _state_uuid(obj: Any, state: Any) -> int:
    """A UUID's own state: its 128-bit int (and whether it is safe). A file could
    otherwise make its int a huge shared tuple (a UUID hashes as its int)."""
    if type(state) is dict and set(state) <= {"int", "is_safe"} and type(state.get("int")) is int \
            and 0 <= state["int"] < 1 << 128 \
            and type(state.get("is_safe", obj)).__qualname__ in ("SafeUUID", "UUID"):
        return 1
    raise _refuse_state(obj, "attributes other than its 128-bit int")


# -- exceptions and warnings
#
# Python rebuilds an exception as cls(*args), then BaseException.__setstate__ sets
# every item of its state (the instance's __dict__) with setattr. Constructors
# only store their arguments, except these, which expand or copy one (checked):
# BaseExceptionGroup (its exceptions: PySequence_Tuple), SyntaxError (its details:
# PySequence_Tuple) and UnicodeDecodeError (its bytes, copied from a buffer). A
# state may set plain attributes (names no class of the exception defines), a
# list of notes, and what CPython itself writes for ImportError (name, path,
# name_from) and AttributeError (name, args): never a descriptor such as
# __class__, __dict__, args (it expands what it gets), __cause__, __context__,
# __traceback__, or a member such as OSError.errno (pickle never writes those).

_BaseExceptionGroup: Optional[type] = getattr(builtins, "BaseExceptionGroup", None)
#: state keys CPython writes for these classes, with the type each value must have
_EXCEPTION_STATE: dict[type, dict[str, tuple[type, ...]]] = {
    ImportError: {"name": (str, type(None)), "path": (str, type(None)),
                  "name_from": (str, type(None))},
    AttributeError: {"name": (str, type(None)), "args": (tuple,)},
    NameError: {"name": (str, type(None))},
}


def _check_exception(cls: type) -> Check:
    name = f"builtins.{cls.__name__}"
    group = _BaseExceptionGroup is not None and issubclass(cls, _BaseExceptionGroup)

    def check(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
        if group:
            if len(args) != 2 or type(args[0]) is not str or type(args[1]) not in (list, tuple):
                raise _refuse(name, "arguments other than a message and a list or tuple of "
                                    "exceptions")
        elif issubclass(cls, SyntaxError):
            if len(args) == 2 and type(args[1]) not in (list, tuple):
                raise _refuse(name, f"details that are a {type(args[1]).__qualname__}, not a "
                                    f"tuple the file holds")
        elif issubclass(cls, UnicodeDecodeError):
            if len(args) > 1 and type(args[1]) not in (bytes, bytearray):
                raise _refuse(name, f"a {type(args[1]).__qualname__} to decode (bytes only)")
    return check


def _state_exception(obj: Any, state: Any) -> int:
    if type(state) is not dict:
        raise _refuse_state(obj, f"a {type(state).__qualname__}, not a dict of attributes")
    cls = type(obj)
    own: dict[str, tuple[type, ...]] = {}
    for base, keys in _EXCEPTION_STATE.items():
        if issubclass(cls, base):
            own.update(keys)
    for key, value in state.items():
        if type(key) is not str:
            raise _refuse_state(obj, "an attribute name that is not a string")
        if key == "__notes__":
            if type(value) is not list or not all(type(n) is str for n in value):
                raise _refuse_state(obj, "notes that are not a list of strings")
        elif key in own:
            if type(value) not in own[key]:
                raise _refuse_state(obj, f"its attribute {key!r} a {type(value).__qualname__}")
        elif not key.isidentifier() or key.startswith("__") \
                or any(key in vars(c) for c in cls.__mro__):
            raise _refuse_state(obj, f"its attribute {brief(key, 40)} (an exception's state sets "
                                     f"plain attributes and notes only)")
    return 1


# -- numpy arrays
#
# ndarray.__reduce__ is (_reconstruct, (cls, (0,), b'b'), state): an empty array of
# the class, then ndarray.__setstate__((1, shape, dtype, fortran, data)). A masked
# array's is (_mareconstruct, (cls, baseclass, (0,), 'b'), state) and its
# __setstate__ takes (1, shape, dtype, fortran, data, mask, fill_value). The
# constructors are checked to take exactly those arguments (any other shape
# allocates it, any other class runs its own code); the states to describe data
# the file holds: numpy checks that bytes match the shape, but reads an object
# array's items from the list without checking its length (a short list makes it
# read past the list's end), and a state's data is copied when small, byte-swapped
# or misaligned (so such a state pays for its data: one shared bytes object cannot
# be copied a thousand times; large data numpy keeps as it is costs nothing more,
# as a compressed section of zeros must load).

#: numpy's bound on dimensions (32 before numpy 2); shapes past MAX_ARRAY_BYTES
#: are refused as torpor's own array descriptors are
_MAX_DIMS = 64
_MAX_ARRAY_BYTES = 1 << 62
#: dtype kinds an array state may hold: numpy's builtin ones (not StringDType's
#: 'T', whose items are pointers, or any other user dtype)
_ARRAY_KINDS = frozenset("biufcmMSUVO")


def _known_dtype(dt: Any, depth: int = 0) -> bool:
    if not isinstance(dt, np.dtype) or depth > 32:
        return False
    if dt.fields is not None:
        return all(_known_dtype(f[0], depth + 1) for f in dt.fields.values())
    if dt.subdtype is not None:
        return _known_dtype(dt.subdtype[0], depth + 1)
    return dt.kind in _ARRAY_KINDS


def _empty_shape(shape: Any) -> bool:
    return type(shape) is tuple and len(shape) == 1 and type(shape[0]) is int and shape[0] == 0


def _is_b(code: Any) -> bool:
    """numpy's placeholder dtype for the empty array it builds first ('b')."""
    return type(code) in (str, bytes) and code in ("b", b"b")


def _array_data(obj: Any, shape: Any, dt: Any, fortran: Any, data: Any) -> tuple[int, int]:
    """Check an array state's (shape, dtype, fortran, data); return (the number of
    items, what applying it costs)."""
    if type(shape) is not tuple or len(shape) > _MAX_DIMS \
            or not all(type(d) is int and d >= 0 for d in shape):
        raise _refuse_state(obj, f"the shape {brief(shape, 60)}")
    if not _known_dtype(dt):
        raise _refuse_state(obj, f"the dtype {brief(dt, 60)}")
    if type(fortran) not in (bool, int) or fortran not in (0, 1):
        raise _refuse_state(obj, "an order that is not a bool")
    count, size = 1, max(1, dt.itemsize)
    for d in shape:
        count *= d
        size *= max(1, d)
        if size > _MAX_ARRAY_BYTES:
            raise _refuse_state(obj, f"the shape {brief(shape, 60)}, more bytes than any array holds")
    if dt.hasobject:
        if type(data) is not list or len(data) != count:
            raise _refuse_state(obj, f"{_count_of(data)} for the {count} items of an object array")
        return count, _object_items(obj, dt, data)
    if type(data) is not bytes or len(data) != count * dt.itemsize:
        raise _refuse_state(obj, f"{_count_of(data)} for {count} items of {dt.itemsize} bytes")
    return count, _copied(data, dt)


_SWAPPED = ">" if sys.byteorder == "little" else "<"


def _copied(data: bytes, dt: Any) -> int:
    """What ndarray.__setstate__ costs for ``data``: numpy keeps a large, aligned
    bytes object of the native byte order as the array's memory, and copies any
    other (charged as a list of pointers of its size would be, so one bytes object
    shared by many states cannot be copied more often than the file pays for)."""
    if len(data) > 1000 and dt.byteorder != _SWAPPED \
            and np.frombuffer(data, np.uint8).__array_interface__["data"][0] % max(1, dt.alignment) == 0:
        return 1
    return 1 + len(data) // 8


#: values numpy converts to a field of a plain dtype in linear time (a str of an
#: int prints it: its size is bounded by MAX_FILL_INT_BITS)
_PLAIN_ITEMS = (int, float, complex, bool, str, bytes, type(None))
MAX_FILL_INT_BITS = MAX_INT_DIGITS * 3


def _plain_item(x: Any) -> bool:
    return (type(x) in _PLAIN_ITEMS and (type(x) is not int or x.bit_length() <= MAX_FILL_INT_BITS)) \
        or isinstance(x, np.generic)


def _object_items(obj: Any, dt: Any, data: list[Any]) -> int:
    """The items of an array with objects, as numpy's pickle lists them: any
    object for an object dtype (stored as it is); for a structured dtype, a tuple
    per item whose object fields take any object and whose other fields plain
    values (numpy converts those: str() of a dict would print every shared part
    again, a range would be expanded into a subarray). Subarrays and nested
    structures of objects are refused. Returns what setting them costs."""
    if dt.subdtype is not None:
        raise _refuse_state(obj, "objects in a subarray dtype")
    if dt.fields is None:
        return 1 + len(data)
    kinds = []
    for name in dt.names:
        f = dt.fields[name][0]
        if f.subdtype is not None or f.fields is not None:
            raise _refuse_state(obj, "objects in a dtype with subarray or nested fields")
        kinds.append(f.hasobject)
    n = len(kinds)
    for row in data:
        if type(row) is not tuple or len(row) != n:
            raise _refuse_state(obj, f"an item that is not a tuple of its {n} fields")
        for is_object, x in zip(kinds, row):
            if not is_object and not _plain_item(x):
                raise _refuse_state(obj, f"a {type(x).__qualname__} for a field of plain values")
    return 1 + len(data) * n


def _count_of(data: Any) -> str:
    if type(data) is list:
        return f"a list of {len(data)} items"
    if type(data) is bytes:
        return f"{len(data)} bytes of data"
    return f"a {type(data).__qualname__} as its data"


def _fresh(obj: Any) -> None:
    """A state goes only to the empty int8 array numpy's helper has just built:
    ndarray.__setstate__ frees an array's memory in place, so given to an array
    that holds data (one a call returned as it was given) it would leave that
    array's views pointing at freed memory."""
    if obj.size != 0 or obj.dtype != np.int8:
        raise _refuse_state(obj, "data for an array that already holds some")


def _state_ndarray(obj: Any, state: Any) -> int:
    _fresh(obj)
    if type(state) is not tuple or len(state) != 5 or type(state[0]) is not int or state[0] != 1:
        raise _refuse_state(obj, "a value other than numpy's (1, shape, dtype, fortran, data)")
    if type(obj) is np.matrix and (type(state[1]) is not tuple or len(state[1]) != 2):
        raise _refuse_state(obj, "a shape that is not two-dimensional")
    return _array_data(obj, *state[1:])[1]


def _state_masked(obj: Any, state: Any) -> int:
    _fresh(obj)
    if type(state) is not tuple or len(state) != 7 or type(state[0]) is not int or state[0] != 1:
        raise _refuse_state(obj, "a value other than numpy's (1, shape, dtype, fortran, data, "
                                 "mask, fill value)")
    _, shape, dt, fortran, data, mask, fill = state
    count, units = _array_data(obj, shape, dt, fortran, data)
    from numpy.ma import make_mask_descr
    need = count * make_mask_descr(dt).itemsize
    if type(mask) is not bytes or len(mask) != need:
        raise _refuse_state(obj, f"{_count_of(mask)} for a mask of {need} bytes")
    # numpy converts the fill value to the array's dtype: a scalar, or the 0-d
    # array it stores (never a list, whose nested items it would walk); objects
    # only when nothing is converted (from objects, numpy calls str() or int())
    if type(fill) is np.ndarray:
        if fill.ndim != 0 or not _known_dtype(fill.dtype) \
                or (fill.dtype.hasobject and fill.dtype != dt):
            raise _refuse_state(obj, f"a fill value of shape {fill.shape} and dtype {fill.dtype}")
    elif not _plain_item(fill):
        raise _refuse_state(obj, f"a fill value that is a {type(fill).__qualname__} (a scalar "
                                 f"or a 0-d array only)")
    return units + _copied(mask, np.dtype(np.bool_)) + (fill.nbytes // 8 if type(fill) is np.ndarray else 0)


def _ndarray_classes() -> tuple[type, ...]:
    return (np.ndarray, np.matrix, np.recarray)


def _builds(name: str, cls: Any, state: bool = True) -> None:
    """A pickle helper may build an object of ``cls`` only if the guard restricts
    its states: the class's own name (where this numpy defines it, which may not
    be where the file found it) must be on the list, with a state check."""
    entry = SAFE.get(f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}")
    if entry is None or (state and entry.state is None):
        raise _refuse(name, f"a class this numpy names {cls.__module__}.{cls.__qualname__}, "
                            f"which torpor's list does not know")


def _check_reconstruct(name: str) -> Check:
    def check(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
        cls = args[0] if args else None
        known = any(cls is c for c in _ndarray_classes())
        # a subclass the caller allowed (allow=[MyArray]) takes the states its code accepts
        allowed = not known and isinstance(cls, type) and issubclass(cls, np.ndarray) \
            and can_call(cls) and f"{cls.__module__}.{cls.__qualname__}" not in SAFE
        if len(args) != 3 or not (known or allowed) or not _empty_shape(args[1]) \
                or not _is_b(args[2]):
            raise _refuse(name, f"arguments other than numpy's (ndarray, matrix, recarray or an "
                                f"allowed subclass, (0,), b'b'): {brief(args, 80)}")
        if known:
            _builds(name, cls)
    return check


def _check_mareconstruct(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    from numpy.ma import MaskedArray, mvoid
    if len(args) != 4 or not (args[0] is MaskedArray or args[0] is mvoid) \
            or not any(args[1] is c for c in _ndarray_classes()) \
            or not _empty_shape(args[2]) or not _is_b(args[3]):
        raise _refuse("numpy.ma.core._mareconstruct", f"arguments other than numpy's (MaskedArray "
                      f"or mvoid, ndarray, matrix or recarray, (0,), 'b'): {brief(args, 80)}")
    _builds("numpy.ma.core._mareconstruct", args[0])


# -- numpy's random generators
#
# numpy.random._pickle's constructors: __bit_generator_ctor(name or class) calls
# the class it is given (any class: checked to be one of numpy's five bit
# generators; a name is looked up in a dict, hashing it, and printed in an error,
# so it must be a str); __generator_ctor and __randomstate_ctor take a bit
# generator, or (numpy 1.x) a name and a constructor they call (checked to be
# __bit_generator_ctor itself). A bit generator's state is numpy's state dict
# (numpy 1.x) or (state dict, seed sequence) (numpy 2.x); a Generator's is None
# or (numpy 1.x) its bit generator's dict; a RandomState's is that dict with
# has_gauss and gauss. numpy's setters read fixed entries of it, but compare and
# search what the file gives ('MT19937' in a range searches it), so every value
# is checked: ints of at most 128 bits, floats, bools, small integer arrays, one
# nested dict, and the bit generator's own name.
#
# A SeedSequence is rebuilt by Cython's __pyx_unpickle_SeedSequence(cls,
# checksum, state) and its __setstate__((entropy, n_children_spawned, pool,
# pool_size, spawn_key)): nothing is computed then, but spawn() later allocates
# pool_size words and converts the entropy, so these must be what numpy makes.

_BIT_GENERATORS = {"MT19937": "numpy.random._mt19937", "PCG64": "numpy.random._pcg64",
                   "PCG64DXSM": "numpy.random._pcg64", "Philox": "numpy.random._philox",
                   "SFC64": "numpy.random._sfc64"}
#: the longest array a random state holds (MT19937's key: 624 words)
_MAX_RNG_ARRAY = 1024
_MAX_RNG_INT_BITS = 128
#: largest int a seed sequence's entropy or spawn key may hold (numpy converts it
#: to 32-bit words in quadratic time when it spawns)
MAX_SEED_BITS = MAX_INT_DIGITS * 4


def _loaded(module: str, qualname: str) -> Any:
    """The object at module.qualname if that module is loaded (never imports)."""
    mod = sys.modules.get(module)
    return getattr(mod, qualname, None) if mod is not None else None


def _is_bit_generator_class(x: Any) -> bool:
    if not isinstance(x, type):
        return False
    module = _BIT_GENERATORS.get(x.__name__)
    return module is not None and _loaded(module, x.__name__) is x


def _bit_generator_arg(name: str, x: Any) -> None:
    """``x`` names (by name or class) one of numpy's bit generators, which
    __bit_generator_ctor will build."""
    if type(x) is str:
        if x not in _BIT_GENERATORS:
            raise _refuse(name, f"the bit generator name {brief(x, 40)} (numpy's are "
                                f"{', '.join(_BIT_GENERATORS)})")
        cls = getattr(sys.modules.get("numpy.random._pickle"), "BitGenerators", {}).get(x)
        if cls is None:
            raise _refuse(name, f"the bit generator name {x}, which this numpy does not know")
    elif _is_bit_generator_class(x):
        cls = x
    else:
        raise _refuse(name, f"{brief(x, 60)}, which is not one of numpy's bit generator classes")
    _builds(name, cls)


def _check_bit_generator_ctor(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "numpy.random._pickle.__bit_generator_ctor"
    if len(args) > 1:
        raise _refuse(name, f"{len(args)} arguments (a bit generator name or class only)")
    _bit_generator_arg(name, args[0] if args else "MT19937")


def _check_generator_ctor(name: str, builds: str) -> Check:
    def check(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
        if len(args) > 2:
            raise _refuse(name, f"{len(args)} arguments")
        first = args[0] if args else "MT19937"
        if not _is_bit_generator_class(type(first)):      # else a bit generator it wraps
            _bit_generator_arg(name, first)
        if len(args) == 2 and args[1] is not _loaded("numpy.random._pickle", "__bit_generator_ctor"):
            raise _refuse(name, f"{brief(args[1], 60)} as its bit generator constructor "
                                f"(numpy's __bit_generator_ctor only)")
        _builds(name, _loaded("numpy.random._pickle", builds))
    return check


def _rng_dict(obj: Any, d: Any, expect: str, depth: int = 0) -> None:
    if type(d) is not dict or len(d) > 16:
        raise _refuse_state(obj, "a random state that is not numpy's dict")
    for key, v in d.items():
        t = type(v)
        if type(key) is not str:
            raise _refuse_state(obj, "a random state with a key that is not a string")
        if t is int:
            if v.bit_length() > _MAX_RNG_INT_BITS:
                raise _refuse_state(obj, f"an int of {v.bit_length()} bits in its random state")
        elif t is str:
            if depth or key != "bit_generator":
                raise _refuse_state(obj, f"a string as its random state's {brief(key, 30)}")
        elif t is dict:
            if depth:
                raise _refuse_state(obj, "a random state nested too deeply")
            _rng_dict(obj, v, expect, 1)
        elif t is np.ndarray:
            if v.ndim != 1 or v.dtype.kind not in "iu" or v.size > _MAX_RNG_ARRAY:
                raise _refuse_state(obj, f"an array of shape {v.shape} and dtype {v.dtype} in "
                                         f"its random state")
        elif t is not float and t is not bool:
            raise _refuse_state(obj, f"a {t.__qualname__} in its random state")
    if not depth and d.get("bit_generator") != expect:
        raise _refuse_state(obj, f"the random state of {brief(d.get('bit_generator'), 30)}, not "
                                 f"of its {expect}")


def _state_bit_generator(obj: Any, state: Any) -> int:
    if type(state) is tuple:
        from numpy.random.bit_generator import SeedlessSeedSequence, SeedSequence
        if len(state) != 2:
            raise _refuse_state(obj, "a tuple other than numpy's (state, seed sequence)")
        state, seed = state
        if seed is not None and type(seed) is not SeedSequence and type(seed) is not SeedlessSeedSequence:
            raise _refuse_state(obj, f"a {type(seed).__qualname__} as its seed sequence")
    _rng_dict(obj, state, type(obj).__name__)
    return 1


def _state_generator(obj: Any, state: Any) -> int:
    _rng_dict(obj, state, type(obj.bit_generator).__name__)
    return 1


def _state_random_state(obj: Any, state: Any) -> int:
    _rng_dict(obj, state, type(obj._bit_generator).__name__)
    return 1


def _seed_int(x: Any) -> bool:
    return (type(x) is int and x >= 0 and x.bit_length() <= MAX_SEED_BITS) \
        or isinstance(x, np.integer)


def _seed_sequence_problem(state: Any) -> Optional[str]:
    """What is wrong with a SeedSequence's state, or None."""
    if type(state) is not tuple or len(state) != 5:
        return "a value other than numpy's (entropy, n_children_spawned, pool, pool_size, spawn_key)"
    entropy, spawned, pool, pool_size, spawn_key = state
    if not (entropy is None or _seed_int(entropy)
            or (type(entropy) in (list, tuple) and all(_seed_int(x) for x in entropy))
            or (type(entropy) is np.ndarray and entropy.ndim <= 1 and entropy.dtype.kind in "iu")):
        return f"the entropy {brief(entropy, 40)} (non-negative ints of at most {MAX_SEED_BITS} bits)"
    if type(spawned) is not int or not 0 <= spawned < 1 << 32:
        return f"{brief(spawned, 30)} children spawned"
    if type(pool) is not np.ndarray or pool.ndim != 1 or pool.dtype != np.uint32:
        return "a pool that is not a uint32 array"
    if type(pool_size) is not int or pool_size != pool.size or pool_size < 4:
        return f"a pool size of {brief(pool_size, 30)} for a pool of {pool.size}"
    if type(spawn_key) is not tuple or not all(_seed_int(k) for k in spawn_key):
        return "a spawn key that is not a tuple of non-negative ints"
    return None


def _state_seed_sequence(obj: Any, state: Any) -> int:
    problem = _seed_sequence_problem(state)
    if problem is not None:
        raise _refuse_state(obj, problem)
    return 1


def _check_unpickle_seed_sequence(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "numpy.random.bit_generator.__pyx_unpickle_SeedSequence"
    if len(args) != 3 or args[0] is not _loaded("numpy.random.bit_generator", "SeedSequence") \
            or type(args[1]) is not int:
        raise _refuse(name, "arguments other than (SeedSequence, checksum, state)")
    _builds(name, args[0])
    problem = None if args[2] is None else _seed_sequence_problem(args[2])
    if problem is not None:
        raise _refuse(name, f"a SeedSequence state with {problem}")


def _check_unpickle_seedless(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if len(args) != 3 or args[0] is not _loaded("numpy.random.bit_generator", "SeedlessSeedSequence") \
            or type(args[1]) is not int or not (args[2] is None or (type(args[2]) is tuple and not args[2])):
        raise _refuse("numpy.random.bit_generator.__pyx_unpickle_SeedlessSeedSequence",
                      "arguments other than (SeedlessSeedSequence, checksum, ())")
    _builds("numpy.random.bit_generator.__pyx_unpickle_SeedlessSeedSequence", args[0], state=False)


def _check_masked_constant(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    """MaskedConstant() returns np.ma.masked, which the whole process shares: the
    guard must know it by name to refuse it a state."""
    name = "numpy.ma.core.MaskedConstant"
    if args:
        raise _refuse(name, f"{len(args)} arguments")
    _builds(name, _loaded("numpy.ma.core", "MaskedConstant"), state=False)


def _call(check: Optional[Check], why: str, state: Optional[StateCheck] = None) -> Entry:
    return Entry(True, check, why, state)


def _value(why: str, state: Optional[StateCheck] = None) -> Entry:
    return Entry(False, None, why, state)


_VALUE_ONLY = "plain value type"
_BUILT_FROM_DATA = "builds a plain value from data the file holds"

#: The default allow-list (see the module's docstring).
SAFE: dict[str, Entry] = {
    "builtins.object": _call(_check_no_args("builtins.object"), "object() is an empty object"),
    "_thread.allocate_lock": _call(_check_no_args("_thread.allocate_lock"),
                                   "a new unlocked lock (threading.Lock)"),
    "_thread.RLock": _call(_check_no_args("_thread.RLock"), "a new unlocked reentrant lock"),
    "builtins.int": _call(_check_int, "parses at most MAX_INT_DIGITS digits"),
    "builtins.float": _call(None, "parses a number in linear time"),
    "builtins.complex": _call(None, "parses a number in linear time"),
    "builtins.str": _call(_check_str, "a string, or bytes the file holds decoded (never an object's repr)"),
    "builtins.bytes": _call(_check_sized("builtins.bytes"), _BUILT_FROM_DATA + ", never from a size"),
    "builtins.bytearray": _call(_check_sized("builtins.bytearray"), _BUILT_FROM_DATA + ", never from a size"),
    "builtins.list": _call(_check_container("builtins.list"), _BUILT_FROM_DATA),
    "builtins.tuple": _call(_check_container("builtins.tuple"), _BUILT_FROM_DATA),
    "builtins.dict": _call(_check_container("builtins.dict", "keys"), _BUILT_FROM_DATA + ", hashes bounded"),
    "builtins.set": _call(_check_container("builtins.set", "items"), _BUILT_FROM_DATA + ", hashes bounded"),
    "builtins.frozenset": _call(_check_container("builtins.frozenset", "items"), _BUILT_FROM_DATA + ", hashes bounded"),
    "builtins.bool": _call(None, "True or False"),
    "builtins.slice": _call(None, "three references, nothing computed"),
    "builtins.range": _call(None, "lazy: a range object holds three ints (and is refused as an argument that would be expanded)"),
    "copyreg.__newobj__": _call(_check_newobj, "cls.__new__ of a class that is itself allowed, with its checks"),
    "copyreg.__newobj_ex__": _call(_check_newobj_ex, "as __newobj__, without keyword arguments"),
    "copyreg._reconstructor": _call(_check_reconstructor, "base.__new__ of allowed classes"),
    "datetime.date": _call(None, "validates its fields"),
    "datetime.time": _call(None, "validates its fields"),
    "datetime.datetime": _call(None, "validates its fields"),
    "datetime.timedelta": _call(None, "validates its fields (bounded range)"),
    "datetime.timezone": _call(None, "an offset and a name"),
    "datetime.tzinfo": _call(_check_no_args("datetime.tzinfo"), "an abstract base, no state"),
    "zoneinfo.ZoneInfo": _call(_check_zoneinfo, "reads a zone of the tz database by a key it validates (no path escapes), cached; an uninstalled key is refused"),
    "zoneinfo.ZoneInfo._unpickle": _call(_check_zoneinfo_unpickle, "as ZoneInfo, from the cache only"),
    "decimal.Decimal": _call(_check_decimal, "from a string (its exponent is stored, not expanded), an int of at most MAX_INT_DIGITS digits, or a tuple"),
    "fractions.Fraction": _call(_check_fraction, "numerator and denominator; a string's exponent is bounded"),
    "uuid.UUID": _call(None, "a 128-bit value; its state is its int, under 2**128", _state_uuid),
    "uuid.SafeUUID": _call(_check_safeuuid, "an enum member, by its value (an int or None)"),
    "collections.OrderedDict": _call(_check_container("collections.OrderedDict", "keys"), _BUILT_FROM_DATA),
    "collections.defaultdict": _call(_check_defaultdict, "its factory must itself be callable by the file"),
    "collections.deque": _call(_check_deque, "from a container the file holds (never a range)"),
    "collections.Counter": _call(_check_container("collections.Counter", "items"), _BUILT_FROM_DATA),
    "builtins.NoneType": _value(_VALUE_ONLY),
}
# pathlib._local exists from Python 3.13 (naming it earlier would import pathlib to fail)
for _mod in ("pathlib", "pathlib._local") if sys.version_info >= (3, 13) else ("pathlib",):
    for _cls in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"):
        SAFE[f"{_mod}.{_cls}"] = _call(_check_container(f"{_mod}.{_cls}"),
                                      "a path is a string: nothing is opened or read")

# numpy's scalar and dtype classes: named as values only (see the docstring).
SAFE["numpy.dtype"] = _value("dtypes come from torpor's DTYPE descriptor")
for _t in set(np.sctypeDict.values()):
    SAFE[f"numpy.{_t.__name__}"] = _value("numpy scalars come from torpor's NPSCALAR descriptor")
_dtypes_module = sys.modules.get("numpy.dtypes")
if _dtypes_module is not None:
    for _n in dir(_dtypes_module):
        if _n.endswith("DType"):
            SAFE[f"numpy.dtypes.{_n}"] = _value("dtype classes are values")

# The builtin types that are named in the types module only (type(None), ...).
for _n in ("NoneType", "EllipsisType", "NotImplementedType"):
    SAFE[f"types.{_n}"] = _value(_VALUE_ONLY)


def _check_readonly(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if len(args) != 1 or type(args[0]) is not np.ndarray:
        raise _refuse("torpor.arrays.readonly", "something other than one array")


SAFE["torpor.arrays.readonly"] = _call(_check_readonly, "clears an array's writeable flag")

# functools.partial: pickle writes partial(func) and then its state (func, args,
# keywords, attributes). Building one calls nothing; a file can call the partial
# only where Policy.callable_object lets it call the function inside, which safe
# loading does only for a function the caller allowed (or an unchecked call).
def _check_partial(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    if len(args) != 1 or not callable(args[0]):
        raise _refuse("functools.partial", "arguments other than one callable")


def _state_partial(obj: Any, state: Any) -> int:
    if type(state) is tuple and len(state) == 4 and state[0] is obj.func \
            and type(state[1]) is tuple \
            and (state[2] is None or (type(state[2]) is dict and all(type(k) is str for k in state[2]))) \
            and (state[3] is None or (type(state[3]) is dict and all(type(k) is str for k in state[3]))):
        return 1 + len(state[1]) + len(state[2] or ()) + len(state[3] or ())
    raise _refuse_state(obj, "not the function it was built with, an args tuple, a keyword "
                             "map and an attribute map")


SAFE["functools.partial"] = _call(_check_partial, "stores a function and arguments; calling "
                                  "it is checked as calling the function", _state_partial)

# Every builtin exception and warning class: built from its arguments, which it
# stores (the few constructors that expand or copy one are checked); its state
# sets plain attributes, notes, and what CPython writes (see _state_exception).
for _n, _c in sorted(vars(builtins).items()):
    if isinstance(_c, type) and issubclass(_c, BaseException) and _c.__name__ == _n \
            and not _n.startswith("_"):
        SAFE[f"builtins.{_n}"] = _call(_check_exception(_c), "an exception or warning: stores its "
                                       "arguments (a group's exceptions and a SyntaxError's "
                                       "details only from a list or tuple the file holds)",
                                       _state_exception)

# numpy's arrays of a subclass, masked arrays and random generators, under the
# names numpy 1.x and 2.x write (numpy.core / numpy._core, numpy.recarray /
# numpy.rec.recarray, numpy.ma.core.MaskedArray / numpy.ma.MaskedArray). The
# classes are values (called with the file's arguments, np.matrix and np.recarray
# allocate any size); only numpy's pickle helpers are called, with checked
# arguments, and the objects they build take only the states numpy writes.
_ARRAY_STATE = "its state is numpy's (1, shape, dtype, fortran, data), data matching the shape"
_MASKED_STATE = "its state is numpy's, data and mask matching the shape, a scalar fill value"
_RNG_STATE = "its state is numpy's state dict (ints, small integer arrays, its own name)"
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    SAFE[f"{_mod}._reconstruct"] = _call(
        _check_reconstruct(f"{_mod}._reconstruct"),
        "numpy's ndarray pickle helper: an empty (0,) array of ndarray, matrix or recarray only")
SAFE["numpy.ndarray"] = _value(_ARRAY_STATE, _state_ndarray)
SAFE["numpy.matrix"] = _value(_ARRAY_STATE + " (two-dimensional)", _state_ndarray)
for _name in ("numpy.recarray", "numpy.rec.recarray"):
    SAFE[_name] = _value(_ARRAY_STATE, _state_ndarray)
SAFE["numpy.ma.core._mareconstruct"] = _call(
    _check_mareconstruct, "numpy's masked array pickle helper: an empty MaskedArray or mvoid "
                          "over an empty ndarray, matrix or recarray only")
for _name in ("numpy.ma.MaskedArray", "numpy.ma.core.MaskedArray", "numpy.ma.core.mvoid"):
    SAFE[_name] = _value(_MASKED_STATE, _state_masked)
SAFE["numpy.ma.core.MaskedConstant"] = _call(
    _check_masked_constant,
    "returns the np.ma.masked singleton; no state (it is shared by the whole process)")
SAFE["numpy.random._pickle.__bit_generator_ctor"] = _call(
    _check_bit_generator_ctor, "builds one of numpy's five bit generators, by name or class")
for _name in ("__generator_ctor", "__randomstate_ctor"):
    SAFE[f"numpy.random._pickle.{_name}"] = _call(
        _check_generator_ctor(f"numpy.random._pickle.{_name}",
                              "Generator" if _name == "__generator_ctor" else "RandomState"),
        "wraps one of numpy's bit generators (or one __bit_generator_ctor builds)")
for _cls, _mod in _BIT_GENERATORS.items():
    SAFE[f"{_mod}.{_cls}"] = _value(_RNG_STATE + ", and its seed sequence", _state_bit_generator)
SAFE["numpy.random._generator.Generator"] = _value(_RNG_STATE + " (numpy 1.x) or none",
                                                   _state_generator)
SAFE["numpy.random.mtrand.RandomState"] = _value(_RNG_STATE, _state_random_state)
SAFE["numpy.random.bit_generator.SeedSequence"] = _value(
    "its state is numpy's: bounded ints, a uint32 pool of its pool size", _state_seed_sequence)
SAFE["numpy.random.bit_generator.SeedlessSeedSequence"] = _value("no state")
SAFE["numpy.random.bit_generator.__pyx_unpickle_SeedSequence"] = _call(
    _check_unpickle_seed_sequence, "an empty SeedSequence (Cython's pickle helper), its state checked")
SAFE["numpy.random.bit_generator.__pyx_unpickle_SeedlessSeedSequence"] = _call(
    _check_unpickle_seedless, "an empty SeedlessSeedSequence (Cython's pickle helper)")


# -- pandas
#
# torpor takes pandas' objects apart itself (engine/pandas_types.py) and rebuilds
# them with its own functions, torpor.pandas.*, never with a pandas callable the
# file names. Each takes plain values, numpy arrays and the pandas objects the
# others built, and calls one of pandas' O(1) constructors, which trust what they
# are given; so these checks verify what pandas would, before the call:
#
# - types and shapes: arrays of exactly the dtypes pandas keeps as they are (a
#   datetime64 unit pandas knows, native byte order: nothing is converted, so
#   nothing is copied), lengths that agree (a Series as long as its index, each
#   block as many rows as the frame's index and one row per column it holds,
#   placements that cover every column once, codes of the very dtype pandas
#   gives them). What is built is then as large as the arrays the file holds:
#   no count is taken from the file except a RangeIndex's, which is lazy, as a
#   range is.
# - what pandas would verify by scanning: codes within their labels, labels
#   unique (levels, categories, and both axes of an object that refuses
#   duplicate labels), a frequency the datetimes follow, strings that are
#   strings. Labels are compared without pandas' hash tables (a file could fill
#   one with keys crafted to collide, which is quadratic): numbers, dates and
#   codes by sorting, other objects by Python's hash, with the work of hashing
#   nested tuples bounded and equal hash values bounded as in any container a
#   file builds (MAX_EQUAL_HASHES).
# - each scan once per array: one array may be shared by many pandas objects (an
#   index and its renamed copies share their values), and a file can name one
#   array in any number of calls for a few bytes each. What a scan found is kept
#   with the array while it lives (_summary), and one array may take at most
#   MAX_SCANS different scans (frequencies, sort orders). Plain values (names,
#   placements, attrs) are top-level arguments, which engine/guard.py charges for
#   every call; arrow's buffers, which torpor writes anew for every string array,
#   may serve one call only.
# - the class each function builds is listed below as a name only, with no state,
#   and _pandas_builds refuses a call whose class this pandas names otherwise: a
#   safe load then refuses any state a file gives the object (NDFrame's
#   __setstate__ sets any attribute) and any getattr on it (NO_GETATTR: pandas'
#   properties compute: df.values copies every column, df.style imports modules).

#: Most different scans (frequencies validated, sort orders) one array may take.
MAX_SCANS = 8
#: Units of work hashing may take per label (a nested tuple counts each item),
#: beyond a floor of 4096 per array of labels.
HASH_UNITS_PER_LABEL = 64
#: Units pandas' datetime64 and timedelta64 data may have.
_PANDAS_UNITS = ("s", "ms", "us", "ns")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_FREQ_CHARS = 64

_summaries: dict[int, tuple[Any, dict[Any, Any]]] = {}


def _summary(obj: Any) -> dict[Any, Any]:
    """What the checks found out about ``obj`` (an array, an extension array, an
    Index), kept while it lives."""
    key = id(obj)
    found = _summaries.get(key)
    if found is not None and found[0]() is obj:
        return found[1]
    summary: dict[Any, Any] = {}

    def forget(ref: Any) -> None:
        if _summaries.get(key, (None,))[0] is ref:
            _summaries.pop(key, None)
    try:
        _summaries[key] = (weakref.ref(obj, forget), summary)
    except TypeError:               # no weak references (an extension array the caller allowed)
        pass
    return summary


def _scanned(name: str, obj: Any, key: Any, scan: Callable[[], Any]) -> Any:
    """``scan()``'s result for ``obj``, computed once per key while it lives."""
    summary = _summary(obj)
    if key in summary:
        return summary[key]
    if len(summary) >= MAX_SCANS:
        raise _refuse(name, f"one array checked in more than {MAX_SCANS} different ways "
                            f"(frequencies, sort orders, uses)")
    result = summary[key] = scan()
    return result


def _pd() -> Any:
    """pandas: the call's rebuild function was resolved first, which imported it
    (with torpor's module for it)."""
    from . import pandas_types
    pandas_types.require_pandas3()
    return pandas_types.pd


def _described(x: Any) -> str:
    if type(x) is np.ndarray:
        return f"an array of dtype {x.dtype} and shape {x.shape}"
    return f"a {type(x).__qualname__}"


def _nd(name: str, x: Any, what: str, kinds: str, ndims: tuple[int, ...] = (1,)) -> Any:
    """A plain numpy array of one of ``kinds``, native byte order, not structured."""
    if type(x) is not np.ndarray or x.ndim not in ndims or x.dtype.kind not in kinds \
            or not x.dtype.isnative or x.dtype.fields is not None:
        raise _refuse(name, f"{what} that is {_described(x)}")
    return x


def _time_values(name: str, x: Any, kind: str, ndims: tuple[int, ...]) -> Any:
    arr = _nd(name, x, "values", kind, ndims)
    unit, count = np.datetime_data(arr.dtype)
    if unit not in _PANDAS_UNITS or count != 1:
        raise _refuse(name, f"values of dtype {arr.dtype} (pandas keeps units "
                            f"{', '.join(_PANDAS_UNITS)})")
    return arr


def _int64(name: str, x: Any, what: str) -> int:
    if type(x) is not int or not _INT64_MIN <= x <= _INT64_MAX:
        raise _refuse(name, f"{what} that is not a 64-bit int: {brief(x, 40)}")
    return x


def _label(name: str, x: Any, what: str) -> None:
    """A name pandas stores must hash (the guard charged hashing it: it is a
    top-level argument or an item of one)."""
    try:
        hash(x)
    except Exception:
        raise _refuse(name, f"{what} that cannot be hashed (a {type(x).__qualname__})") from None


def _flag(name: str, x: Any, what: str) -> bool:
    if type(x) is not bool:
        raise _refuse(name, f"{what} that is not a bool: {brief(x, 40)}")
    return x


def _attrs(name: str, x: Any) -> None:
    if type(x) is not dict:
        raise _refuse(name, f"attrs that are a {type(x).__qualname__}, not a dict")


def _pandas_index(name: str, x: Any, what: str) -> Any:
    if not isinstance(x, _pd().Index):
        raise _refuse(name, f"{what} that is {_described(x)}, not a pandas Index")
    return x


def _is_extension_array(x: Any) -> bool:
    return isinstance(x, _pd().api.extensions.ExtensionArray)


def _pandas_builds(name: str, cls: Any) -> None:
    """The call builds a ``cls``: its name must be listed as a value with no
    state, or a safe load could not refuse it a state (see above)."""
    full = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}"
    entry = SAFE.get(full)
    if entry is None or entry.call or entry.state is not None:
        raise Refused(
            f"the file calls {name}, which would build a {full}: torpor's allow-list does "
            f"not list that class (it lists pandas 3's names), so a safe load could not "
            f"refuse it a state of the file's choosing. Nothing was called. If you trust "
            f"the file, load it with trusted=True.", [name])


def _codes_dtype(n: int) -> Any:
    """The dtype pandas keeps the codes of ``n`` labels in (coerce_indexer_dtype)."""
    for t in (np.int8, np.int16, np.int32):
        if n < np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.int64)


def _codes(name: str, codes: Any, n: int, what: str) -> Any:
    """Codes of ``n`` labels: -1 (missing) to n - 1, in pandas' own dtype for n."""
    arr = _nd(name, codes, what, "i")
    want = _codes_dtype(n)
    if arr.dtype != want:
        raise _refuse(name, f"{what} of dtype {arr.dtype} for {n} labels (pandas keeps them "
                            f"as {want})")
    lo, hi = _scanned(name, arr, "range",
                      lambda: (int(arr.min()), int(arr.max())) if arr.size else (0, -1))
    if arr.size and (lo < -1 or hi >= n):
        raise _refuse(name, f"{what} from {lo} to {hi}, outside the {n} labels")
    return arr


def _hash_units(items: Any, cap: int) -> int:
    """What hashing ``items`` costs (a tuple hashes its items every time; str,
    bytes and frozenset cache their hash), at most ``cap + 1``."""
    total = 0
    todo = list(items)
    while todo:
        x = todo.pop()
        t = type(x)
        if t is tuple:
            total += 1 + len(x)
            if total > cap:
                return total
            todo.extend(x)
        elif t is int:
            total += 1 + x.bit_length() // 64
        else:
            total += 1
        if total > cap:
            return total
    return total


def _sorted_problem(arr: Any, missing: Any, nulls: bool) -> Optional[str]:
    """Duplicate or missing labels among ``arr`` (numbers), found by sorting;
    ``missing``: a mask of the missing ones, or None."""
    if missing is not None:
        k = int(np.count_nonzero(missing))
        if k and not nulls:
            return "holds missing labels"
        if k > 1:
            return "holds a missing label twice"
        if k:
            arr = arr[~missing]
    s = np.sort(arr, kind="stable")
    if s.size > 1 and bool((s[1:] == s[:-1]).any()):
        return "holds a label twice"
    return None


def _objects_problem(items: Any, nulls: bool) -> Optional[str]:
    """Duplicate or missing labels among Python objects, found with Python's hash
    (bounded: nested tuples, equal hash values)."""
    pd = _pd()
    n = len(items)
    cap = HASH_UNITS_PER_LABEL * n + 4096
    if _hash_units(items, cap) > cap:
        return (f"holds labels whose hashes take more than {HASH_UNITS_PER_LABEL} units of "
                f"work each (tuples nested and shared to stall the load)")
    missing = np.asarray(pd.isna(np.asarray(items, dtype=object)), dtype=bool) if n else None
    if missing is not None and missing.any():
        k = int(np.count_nonzero(missing))
        if not nulls:
            return "holds missing labels"
        if k > 1:
            return "holds a missing label twice"
        items = [x for x, m in zip(items, missing) if not m]
    equal_hash_check(items, "the labels the file gives pandas")
    if len(set(items)) != len(items):
        return "holds a label twice"
    return None


def _values_problem(values: Any, nulls: bool) -> Any:
    """Duplicate or missing labels among an Index's values (an array or one of
    the extension arrays torpor rebuilds); False when they are of a kind these
    checks do not know (an extension array the caller allowed)."""
    pd = _pd()
    arrays = pd.arrays
    if type(values) is np.ndarray:
        if values.dtype.kind == "O":
            return _objects_problem(values, nulls)
        return _sorted_problem(values, np.isnan(values) if values.dtype.kind in "fc" else None,
                               nulls)
    t = type(values)
    if t in (arrays.DatetimeArray, arrays.TimedeltaArray, arrays.PeriodArray):
        ints = values._ndarray.view(np.int64)
        return _sorted_problem(ints, ints == _INT64_MIN, nulls)
    if t in (arrays.IntegerArray, arrays.FloatingArray, arrays.BooleanArray):
        return _sorted_problem(values._data, values._mask, nulls)
    if t is pd.Categorical:
        return _sorted_problem(values._codes, values._codes == -1, nulls)
    if t is arrays.StringArray:
        return _objects_problem(values._ndarray, nulls)
    if t is arrays.ArrowStringArray:
        return _objects_problem(values.to_numpy(dtype=object, na_value=None), nulls)
    return False


def _rows_problem(codes: list[Any]) -> Optional[str]:
    """The same row twice in a MultiIndex's codes, found by sorting."""
    n = len(codes[0])
    if n < 2:
        return None
    order = np.lexsort(codes[::-1])
    same = np.ones(n - 1, dtype=bool)
    for c in codes:
        s = c[order]
        same &= s[1:] == s[:-1]
    return "holds a label twice" if bool(same.any()) else None


def _unique_labels(name: str, idx: Any, what: str, nulls: bool = True) -> None:
    """``idx`` (an Index the file built) holds no label twice, and unless
    ``nulls`` no missing one."""
    pd = _pd()
    if type(idx) is pd.RangeIndex:
        return                      # a range: unique, nothing missing
    if type(idx) is pd.MultiIndex:
        problem = _scanned(name, idx, "rows", lambda: _rows_problem(list(idx.codes)))
    else:
        values = idx._values
        problem = _scanned(name, values, ("labels", nulls), lambda: _values_problem(values, nulls))
        if problem is False:        # an extension array the caller allowed: pandas' own check
            problem = None if idx.is_unique and (nulls or not idx.hasnans) \
                else "holds a label twice, or a missing one"
    if problem:
        raise _refuse(name, f"{what} that {problem}")


def _two_dimensional(dtype: Any) -> bool:
    """Whether pandas keeps a block of this extension dtype 2-D (datetimes,
    timedeltas, periods: arrays of numpy's datetime64, timedelta64 or int64)."""
    if isinstance(dtype, np.dtype):
        return dtype.kind in "mM"
    return getattr(dtype, "_supports_2d", False) is True


def _block(name: str, values: Any, columns: int, rows: int) -> None:
    """One block of a DataFrame: a 2-D array (a row per column it holds) or an
    extension array (1-D for one column; 2-D where pandas keeps it so)."""
    if type(values) is np.ndarray:
        _nd(name, values, "a block", "biufcO", (2,))
        if values.shape != (columns, rows):
            raise _refuse(name, f"a block of shape {values.shape} for {columns} columns of "
                                f"{rows} rows")
        return
    if not _is_extension_array(values):
        raise _refuse(name, f"a block that is {_described(values)}")
    if values.ndim == 1:
        if columns != 1 or len(values) != rows:
            raise _refuse(name, f"an array of {len(values)} items for {columns} columns of "
                                f"{rows} rows")
    elif values.ndim != 2 or not _two_dimensional(values.dtype) or values.shape != (columns, rows):
        raise _refuse(name, f"a {type(values).__qualname__} of shape {values.shape} for "
                            f"{columns} columns of {rows} rows")


def _series_values(name: str, values: Any) -> None:
    if type(values) is np.ndarray:
        _nd(name, values, "values", "biufcO")
    elif not _is_extension_array(values) or values.ndim != 1:
        raise _refuse(name, f"values that are {_described(values)}")


def _check_frame(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.frame"
    if len(args) != 6:
        raise _refuse(name, f"{len(args)} arguments")
    columns, index, blocks, placements, attrs, flag = args
    _pandas_index(name, columns, "columns")
    _pandas_index(name, index, "an index")
    if type(blocks) is not list or type(placements) is not list or len(blocks) != len(placements):
        raise _refuse(name, "blocks and placements that are not two lists of one length")
    ncols, nrows = len(columns), len(index)
    total = 0
    for where in placements:
        if type(where) is not list or not where:
            raise _refuse(name, "a placement that is not a list of column positions")
        total += len(where)
    if total != ncols:
        raise _refuse(name, f"blocks for {total} columns, for {ncols} columns")
    seen = bytearray(ncols)
    for values, where in zip(blocks, placements):
        for i in where:
            if type(i) is not int or not 0 <= i < ncols or seen[i]:
                raise _refuse(name, f"the column position {brief(i, 30)} (each of 0 to "
                                    f"{ncols - 1} once)")
            seen[i] = 1
        _block(name, values, len(where), nrows)
    _attrs(name, attrs)
    if not _flag(name, flag, "allows_duplicate_labels"):
        _unique_labels(name, index, "an index")
        _unique_labels(name, columns, "columns")
    _pandas_builds(name, _pd().DataFrame)


def _check_series(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.series"
    if len(args) != 5:
        raise _refuse(name, f"{len(args)} arguments")
    values, index, label, attrs, flag = args
    _series_values(name, values)
    _pandas_index(name, index, "an index")
    if len(values) != len(index):
        raise _refuse(name, f"{len(values)} values for an index of {len(index)}")
    _label(name, label, "a name")
    _attrs(name, attrs)
    if not _flag(name, flag, "allows_duplicate_labels"):
        _unique_labels(name, index, "an index")
    _pandas_builds(name, _pd().Series)


def _offset(name: str, freq: Any) -> Any:
    pd = _pd()
    if isinstance(freq, pd.offsets.BaseOffset):
        return freq
    if type(freq) is not str or len(freq) > _MAX_FREQ_CHARS:
        raise _refuse(name, f"a frequency that is not a short string: {brief(freq, 40)}")
    try:
        return pd.tseries.frequencies.to_offset(freq)
    except Exception:
        raise _refuse(name, f"the frequency {brief(freq, 40)}, which pandas does not know") from None


def _check_freq(name: str, values: Any, freq: Any) -> None:
    """A DatetimeIndex's or TimedeltaIndex's frequency, which its values must
    follow: validated by pandas once per array, dtype (time zone) and frequency."""
    pd = _pd()
    off = _offset(name, freq)
    if values.dtype.kind == "m" and not isinstance(off, (pd.offsets.Tick, pd.offsets.Day)):
        raise _refuse(name, f"the frequency {off.freqstr} for timedeltas (a fixed one only)")

    def scan() -> Optional[str]:
        try:
            type(values)._validate_frequency(values, off)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None
    problem = _scanned(name, values._ndarray, ("freq", str(values.dtype), off.freqstr), scan)
    if problem:
        raise _refuse(name, f"the frequency {off.freqstr}, which its values do not follow "
                            f"({brief(problem, 80)})")


def _index_class(values: Any) -> Any:
    from .pandas_types import index_class
    return index_class(values)


def _check_index(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.index"
    pd = _pd()
    if len(args) != 3:
        raise _refuse(name, f"{len(args)} arguments")
    values, label, freq = args
    if type(values) is np.ndarray:
        _nd(name, values, "values", "biufcO")
        if values.dtype == np.float16:
            raise _refuse(name, "float16 values (pandas has no float16 index)")
    elif not _is_extension_array(values) or values.ndim != 1 \
            or type(values) is pd.arrays.NumpyExtensionArray:
        raise _refuse(name, f"values that are {_described(values)}")
    _label(name, label, "a name")
    cls = _index_class(values)
    if freq is not None:
        if cls is not pd.DatetimeIndex and cls is not pd.TimedeltaIndex:
            raise _refuse(name, f"a frequency for a {cls.__qualname__}")
        _check_freq(name, values, freq)
    _pandas_builds(name, cls)


def _check_range_index(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.range_index"
    if len(args) != 4:
        raise _refuse(name, f"{len(args)} arguments")
    _int64(name, args[0], "a start")
    _int64(name, args[1], "a stop")
    if _int64(name, args[2], "a step") == 0:
        raise _refuse(name, "a step of 0")
    _label(name, args[3], "a name")
    _pandas_builds(name, _pd().RangeIndex)


def _lexsorted(codes: list[Any]) -> bool:
    """Whether the rows of ``codes`` are in order (pandas' is_lexsorted)."""
    n = len(codes[0])
    tied = np.ones(max(n - 1, 0), dtype=bool)
    for c in codes:
        d = c[1:].astype(np.int64) - c[:-1].astype(np.int64)
        if bool((tied & (d < 0)).any()):
            return False
        tied &= d == 0
    return True


def _check_sortorder(name: str, codes: list[Any], sortorder: Any) -> None:
    """pandas' sortorder: the first ``sortorder`` levels are in order. Checked
    once per first codes array and the arrays that follow it."""
    if sortorder is None:
        return
    if type(sortorder) is not int or not 0 <= sortorder <= len(codes):
        raise _refuse(name, f"the sortorder {brief(sortorder, 30)} for {len(codes)} levels")
    if sortorder == 0:
        return
    first, rest = codes[0], codes[1:sortorder]
    key = ("lexsorted",) + tuple(id(c) for c in rest)

    def scan() -> tuple[bool, list[Any]]:
        return _lexsorted(codes[:sortorder]), [weakref.ref(c) for c in rest]
    ok, refs = _scanned(name, first, key, scan)
    if not all(r() is c for r, c in zip(refs, rest)):     # ids of arrays since freed
        ok = _lexsorted(codes[:sortorder])
    if not ok:
        raise _refuse(name, f"the sortorder {sortorder}, but its first {sortorder} levels are "
                            f"not in order")


def _levels_or_categories(name: str, idx: Any, what: str) -> Any:
    """Labels a MultiIndex or a Categorical codes into: an Index (not a
    MultiIndex or a CategoricalIndex) without duplicates or missing labels."""
    pd = _pd()
    _pandas_index(name, idx, what)
    if type(idx) is pd.MultiIndex or type(idx) is pd.CategoricalIndex:
        raise _refuse(name, f"{what} that are a {type(idx).__qualname__}")
    _unique_labels(name, idx, what, nulls=False)
    return idx


def _check_multi_index(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.multi_index"
    if len(args) != 4:
        raise _refuse(name, f"{len(args)} arguments")
    levels, codes, names, sortorder = args
    if type(levels) is not list or type(codes) is not list or type(names) is not list \
            or not levels or not len(levels) == len(codes) == len(names):
        raise _refuse(name, "levels, codes and names that are not three lists of one length")
    for level, c in zip(levels, codes):
        _levels_or_categories(name, level, "levels")
        _codes(name, c, len(level), "codes")
        if len(c) != len(codes[0]):
            raise _refuse(name, "codes of different lengths")
    for label in names:
        _label(name, label, "a name")
    _check_sortorder(name, codes, sortorder)
    _pandas_builds(name, _pd().MultiIndex)


def _check_categorical(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.categorical"
    if len(args) != 3:
        raise _refuse(name, f"{len(args)} arguments")
    codes, categories, ordered = args
    _levels_or_categories(name, categories, "categories")
    _codes(name, codes, len(categories), "codes")
    _flag(name, ordered, "an ordered flag")
    _pandas_builds(name, _pd().Categorical)


def _check_masked_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.masked_array"
    if len(args) != 2:
        raise _refuse(name, f"{len(args)} arguments")
    values = _nd(name, args[0], "values", "biuf")
    mask = _nd(name, args[1], "a mask", "b")
    if values.dtype == np.float16 or mask.shape != values.shape:
        raise _refuse(name, f"values of dtype {values.dtype} and shape {values.shape} with a "
                            f"mask of shape {mask.shape}")
    arrays = _pd().arrays
    _pandas_builds(name, arrays.BooleanArray if values.dtype.kind == "b" else
                   arrays.FloatingArray if values.dtype.kind == "f" else arrays.IntegerArray)


def _check_datetime_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.datetime_array"
    if len(args) != 2:
        raise _refuse(name, f"{len(args)} arguments")
    _time_values(name, args[0], "M", (1, 2))
    if args[1] is not None and not isinstance(args[1], datetime.tzinfo):
        raise _refuse(name, f"a time zone that is {_described(args[1])}")
    _pandas_builds(name, _pd().arrays.DatetimeArray)


def _check_timedelta_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.timedelta_array"
    if len(args) != 1:
        raise _refuse(name, f"{len(args)} arguments")
    _time_values(name, args[0], "m", (1, 2))
    _pandas_builds(name, _pd().arrays.TimedeltaArray)


def _period_freq(name: str, freq: Any) -> None:
    if type(freq) is not str or len(freq) > _MAX_FREQ_CHARS:
        raise _refuse(name, f"a frequency that is not a short string: {brief(freq, 40)}")
    try:
        _pd().PeriodDtype(freq)
    except Exception:
        raise _refuse(name, f"the period frequency {brief(freq, 40)}, which pandas does not "
                            f"know") from None


#: Most distinct frequencies of period arrays the checks let pandas see in one
#: process: PeriodDtype keeps an entry for every frequency it meets, for the life
#: of the process, and a file could name "1D", "2D"... for a few bytes each.
MAX_PERIOD_FREQS = 1024
_period_freqs: set[str] = set()


def _check_period_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.period_array"
    if len(args) != 2:
        raise _refuse(name, f"{len(args)} arguments")
    ordinals = _nd(name, args[0], "ordinals", "i", (1, 2))
    if ordinals.dtype != np.int64:
        raise _refuse(name, f"ordinals of dtype {ordinals.dtype} (int64 only)")
    freq = args[1]
    if freq not in _period_freqs:
        if len(_period_freqs) >= MAX_PERIOD_FREQS:
            raise _refuse(name, f"the period frequency {brief(freq, 40)}, after "
                                f"{MAX_PERIOD_FREQS} others (pandas caches every one)")
        _period_freq(name, freq)
        _period_freqs.add(freq)
    _pandas_builds(name, _pd().arrays.PeriodArray)


def _na(name: str, na: Any) -> None:
    if na not in ("NA", "nan") or type(na) is not str:
        raise _refuse(name, f"the missing value {brief(na, 30)} ('NA' or 'nan')")


def _strings_problem(values: Any, na: str) -> Optional[str]:
    """An object array of a string array holds strings and its missing value
    only (pandas' StringArray holds exactly these)."""
    pd = _pd()
    for x in values:
        if type(x) is not str and not (x is pd.NA if na == "NA" else type(x) is float and x != x):
            return f"a {type(x).__qualname__} among its strings"
    return None


def _check_string_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.string_array"
    if len(args) != 2:
        raise _refuse(name, f"{len(args)} arguments")
    values = _nd(name, args[0], "values", "O")
    _na(name, args[1])
    problem = _scanned(name, values, ("strings", args[1]), lambda: _strings_problem(values, args[1]))
    if problem:
        raise _refuse(name, problem)
    _pandas_builds(name, _pd().arrays.StringArray)


#: Bytes of UTF-8 decoded at a time when a string array's data is validated
#: without pyarrow.
_UTF8_CHUNK = 1 << 24


def _loaded_pyarrow() -> Any:
    """pyarrow if it is loaded (pandas loads it when installed), else None."""
    return sys.modules.get("pyarrow")


def _strings_data_problem(offsets: Any, data: Any) -> Optional[str]:
    """What is wrong with arrow's offsets and UTF-8 data of a string array, or
    None. Every string is valid UTF-8 exactly when the whole data is and every
    offset falls on a character's first byte (or the end): checked so in a few
    passes over the data (pyarrow's full validation takes each string apart),
    decoding it a chunk at a time and dropping the text."""
    size = data.size
    if offsets[0] != 0 or offsets[-1] != size:
        return f"offsets from {offsets[0]} to {offsets[-1]} for {size} bytes"
    if offsets.size > 1 and bool((offsets[1:] < offsets[:-1]).any()):
        return "offsets that decrease"
    inside = offsets[:int(np.searchsorted(offsets, size))]     # those before the end
    if inside.size and bool(((data[inside] & 0xC0) == 0x80).any()):
        return "a string that starts inside a UTF-8 character"
    pa = _loaded_pyarrow()
    if pa is not None:
        # pyarrow validates the whole data as one string, without decoding it
        whole = pa.Array.from_buffers(pa.large_string(), 1, [
            None, pa.py_buffer(np.array([0, size], dtype=np.int64)), pa.py_buffer(data)])
        try:
            whole.validate(full=True)
        except pa.ArrowInvalid as e:
            return f"data that is not UTF-8 ({brief(str(e), 60)})"
        return None
    view, pos = memoryview(data), 0
    try:
        while pos < size:
            # a chunk from a character's start holds one whole character at least
            end = min(pos + max(_UTF8_CHUNK, 4), size)
            pos += codecs.utf_8_decode(view[pos:end], "strict", end == size)[1]
    except UnicodeDecodeError as e:
        return f"data that is not UTF-8 ({e.reason})"
    return None


def _check_arrow_string_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    """Arrow's buffers of a large_string array: int64 offsets (n + 1, from 0 to
    the data's size, never decreasing, on character boundaries), UTF-8 data, and
    a validity mask or None. torpor writes new ones for every string array, so
    each serves one call only."""
    name = "torpor.pandas.arrow_string_array"
    if len(args) != 4:
        raise _refuse(name, f"{len(args)} arguments")
    offsets, data, valid, na = args
    _nd(name, offsets, "offsets", "i")
    if offsets.dtype != np.int64 or offsets.size < 1:
        raise _refuse(name, f"offsets that are {_described(offsets)} (int64, at least one)")
    _nd(name, data, "data (uint8)", "u")
    if data.dtype != np.uint8:
        raise _refuse(name, f"data that is {_described(data)} (uint8)")
    if valid is not None and (_nd(name, valid, "a validity mask", "b").size != offsets.size - 1):
        raise _refuse(name, f"a validity mask of {valid.size} items for {offsets.size - 1} strings")
    _na(name, na)
    for arr in (offsets, data) if valid is None else (offsets, data, valid):
        summary = _summary(arr)
        if summary.get("arrow buffer"):
            raise _refuse(name, "an arrow buffer that another string array uses (torpor writes "
                                "each string array's own)")
        summary["arrow buffer"] = True
    problem = _strings_data_problem(offsets, data)
    if problem:
        raise _refuse(name, problem)
    _pandas_builds(name, _pd().arrays.ArrowStringArray)


def _check_numpy_array(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.numpy_array"
    if len(args) != 1:
        raise _refuse(name, f"{len(args)} arguments")
    _nd(name, args[0], "values", "biufcO")
    _pandas_builds(name, _pd().arrays.NumpyExtensionArray)


def _unit(name: str, unit: Any) -> None:
    if type(unit) is not str or unit not in _PANDAS_UNITS:
        raise _refuse(name, f"the unit {brief(unit, 30)} ({', '.join(_PANDAS_UNITS)})")


def _check_timestamp(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.timestamp"
    if len(args) != 3:
        raise _refuse(name, f"{len(args)} arguments")
    if _int64(name, args[0], "a value") == _INT64_MIN:
        raise _refuse(name, "NaT's value (NaT is torpor.pandas.missing)")
    _unit(name, args[1])
    if args[2] is not None and not isinstance(args[2], datetime.tzinfo):
        raise _refuse(name, f"a time zone that is {_described(args[2])}")
    _pandas_builds(name, _pd().Timestamp)


def _check_timedelta(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.timedelta"
    if len(args) != 2:
        raise _refuse(name, f"{len(args)} arguments")
    if _int64(name, args[0], "a value") == _INT64_MIN:
        raise _refuse(name, "NaT's value (NaT is torpor.pandas.missing)")
    _unit(name, args[1])
    _pandas_builds(name, _pd().Timedelta)


def _check_period(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.period"
    if len(args) != 2:
        raise _refuse(name, f"{len(args)} arguments")
    if _int64(name, args[0], "an ordinal") == _INT64_MIN:
        raise _refuse(name, "NaT's ordinal (NaT is torpor.pandas.missing)")
    _period_freq(name, args[1])
    _pandas_builds(name, _pd().Period)


def _check_missing(args: tuple[Any, ...], can_call: Callable[[Any], bool]) -> None:
    name = "torpor.pandas.missing"
    if len(args) != 1 or type(args[0]) is not str or args[0] not in ("NA", "NaT"):
        raise _refuse(name, "arguments other than 'NA' or 'NaT'")
    pd = _pd()
    _pandas_builds(name, type(pd.NA if args[0] == "NA" else pd.NaT))


#: The classes the torpor.pandas functions build (pandas 3's names): values only,
#: with no state, and no getattr (NO_GETATTR).
_PANDAS_CLASSES = (
    "pandas.DataFrame", "pandas.Series", "pandas.Index", "pandas.RangeIndex",
    "pandas.MultiIndex", "pandas.DatetimeIndex", "pandas.TimedeltaIndex", "pandas.PeriodIndex",
    "pandas.CategoricalIndex", "pandas.Categorical", "pandas.arrays.IntegerArray",
    "pandas.arrays.FloatingArray", "pandas.arrays.BooleanArray", "pandas.arrays.DatetimeArray",
    "pandas.arrays.TimedeltaArray", "pandas.arrays.PeriodArray", "pandas.arrays.StringArray",
    "pandas.arrays.ArrowStringArray", "pandas.arrays.NumpyExtensionArray", "pandas.Timestamp",
    "pandas.Timedelta", "pandas.Period", "pandas.api.typing.NaTType", "pandas.api.typing.NAType",
)
for _name in _PANDAS_CLASSES:
    SAFE[_name] = _value("built by torpor.pandas.* only: no state, no getattr")

#: Classes whose attributes a safe load never reads (getattr refused): pandas'
#: properties compute (df.values copies every column, df.T transposes, df.style
#: imports modules, idx.is_unique fills a hash table).
NO_GETATTR = frozenset(_PANDAS_CLASSES)


def getattr_refused(owner: Any) -> bool:
    """Whether safe loading refuses ``getattr(owner, name)`` (see NO_GETATTR)."""
    cls = type(owner)
    return f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}" in NO_GETATTR


#: torpor.pandas.* (engine/pandas_types.py): torpor's own rebuild functions.
_PANDAS_CALLS: dict[str, tuple[Check, str]] = {
    "frame": (_check_frame, "a DataFrame from its blocks: arrays of the frame's rows, placements "
                            "covering each column once, attrs, flags"),
    "series": (_check_series, "a Series: values as long as its index, a hashable name"),
    "index": (_check_index, "an Index over an array or extension array, as it is; a "
                            "DatetimeIndex's frequency validated against its values"),
    "range_index": (_check_range_index, "a RangeIndex: three 64-bit ints (lazy, as a range)"),
    "multi_index": (_check_multi_index, "a MultiIndex: unique levels, codes within them in "
                                        "pandas' dtype, a sortorder the codes follow"),
    "categorical": (_check_categorical, "a Categorical: unique categories, codes within them in "
                                        "pandas' dtype"),
    "masked_array": (_check_masked_array, "a nullable integer, float or boolean array: values "
                                          "and a mask of one shape"),
    "datetime_array": (_check_datetime_array, "datetime64 values of a unit pandas keeps, a time "
                                              "zone the file built"),
    "timedelta_array": (_check_timedelta_array, "timedelta64 values of a unit pandas keeps"),
    "period_array": (_check_period_array, "int64 ordinals and a frequency pandas parses"),
    "string_array": (_check_string_array, "an object array of strings and one missing value"),
    "arrow_string_array": (_check_arrow_string_array, "arrow's offsets and UTF-8 data (both "
                                                      "checked) and validity"),
    "numpy_array": (_check_numpy_array, "a NumpyExtensionArray over a plain array"),
    "timestamp": (_check_timestamp, "a 64-bit value, a unit, a time zone the file built"),
    "timedelta": (_check_timedelta, "a 64-bit value and a unit"),
    "period": (_check_period, "a 64-bit ordinal and a frequency pandas parses"),
    "missing": (_check_missing, "pandas' NA or NaT singleton"),
}
for _name, (_check, _why) in _PANDAS_CALLS.items():
    SAFE[f"torpor.pandas.{_name}"] = _call(_check, _why)
