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

Every decision is made from the name alone, against these fixed tables, before
any module is imported: a refused name never imports anything.
"""

from __future__ import annotations

import re
import sys
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


class Entry(NamedTuple):
    call: bool              # may be called (else only named, as a value)
    check: Optional[Check]  # checks the call's arguments (calls only)
    why: str                # why this is safe


class Refused(UnsafeLoadError):
    """A call the default allow-list refuses for its arguments."""


def _refuse(name: str, reason: str) -> Refused:
    return Refused(
        f"the file calls {name} with {reason}; torpor never writes such a call, so the "
        f"file was crafted or damaged. Nothing was called. If you trust the file, load it "
        f"with trusted=True.", [name])


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


def _call(check: Optional[Check], why: str) -> Entry:
    return Entry(True, check, why)


def _value(why: str) -> Entry:
    return Entry(False, None, why)


_VALUE_ONLY = "plain value type"
_BUILT_FROM_DATA = "builds a plain value from data the file holds"

#: The default allow-list (see the module's docstring).
SAFE: dict[str, Entry] = {
    "builtins.object": _call(_check_no_args("builtins.object"), "object() is an empty object"),
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
    "uuid.UUID": _call(None, "a 128-bit value"),
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
