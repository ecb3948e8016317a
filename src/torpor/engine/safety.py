"""Which classes and callables a file may name, and how they are resolved.

Loading never imports a module or calls anything before the name has passed
``Policy.check``. By default only the names below (builtin, stdlib and numpy value
types, and the copyreg helpers that build instances of an already-checked class)
pass. Callers widen it with ``allow=`` patterns, classes registered with
``register_safe_class`` (the State API uses this), or ``trusted=True``.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import CorruptFileError, MissingClassError, RestoreError, UnsafeLoadError

#: Builtin, stdlib and numpy names that construct plain values and nothing else.
#: User-defined classes are never here: importing their module runs its code.
SAFE_GLOBALS = frozenset("""
builtins.object builtins.int builtins.float builtins.complex builtins.str builtins.bytes
builtins.bytearray builtins.list builtins.tuple builtins.dict builtins.set
builtins.frozenset builtins.bool builtins.slice builtins.range builtins.NoneType
builtins.type
copyreg.__newobj__ copyreg.__newobj_ex__ copyreg._reconstructor
datetime.date datetime.time datetime.datetime datetime.timedelta datetime.timezone
datetime.tzinfo zoneinfo.ZoneInfo zoneinfo.ZoneInfo._unpickle
decimal.Decimal fractions.Fraction uuid.UUID uuid.SafeUUID
pathlib.Path pathlib.PosixPath pathlib.WindowsPath pathlib.PurePath
pathlib.PurePosixPath pathlib.PureWindowsPath
pathlib._local.Path pathlib._local.PosixPath pathlib._local.WindowsPath
pathlib._local.PurePath pathlib._local.PurePosixPath pathlib._local.PureWindowsPath
collections.OrderedDict collections.defaultdict collections.deque collections.Counter
numpy.dtype numpy.ndarray
""".split())

#: Classes that registered themselves as safe (the State API registers its classes).
_registered: dict[str, type] = {}
_registered_lock = threading.Lock()

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_C = TypeVar("_C", bound=type)


def global_name(obj: Any) -> str:
    """``module.qualname`` of a class or function, as the file records it."""
    return f"{obj.__module__}.{obj.__qualname__}"


def register_safe_class(cls: _C) -> _C:
    """Allow instances of ``cls`` to be loaded without ``trusted=True``."""
    with _registered_lock:
        _registered[global_name(cls)] = cls
    return cls


def unregister_safe_class(cls: type) -> None:
    with _registered_lock:
        _registered.pop(global_name(cls), None)


class Policy:
    """What one ``load`` call may resolve."""

    def __init__(self, trusted: bool = False, allow: str | Iterable[Any] = (),
                 extra: Mapping[str, Any] | None = None, producers: Iterable[object] = ()) -> None:
        if isinstance(allow, str):
            allow = [allow]
        exact, patterns = set(), []
        for a in allow:
            if isinstance(a, str):
                if any(c in a for c in "*?["):
                    patterns.append(a)
                else:
                    exact.add(a)
            elif isinstance(a, type) or callable(a):
                exact.add(global_name(a))
            else:
                raise TypeError(
                    f"allow= takes 'module.qualname' strings, glob patterns such as "
                    f"'mypkg.models.*', or classes; got {type(a).__name__}")
        self.trusted = bool(trusted)
        # "module.qualname" -> object: names this one load resolves to objects of
        # its own (the session restorer), without importing anything
        self.extra = dict(extra or {})
        # ids of extra builders whose results may in turn be called or instantiated
        # (load_module's code loader: it returns classes and functions)
        self.producers = frozenset(id(p) for p in producers)
        self.exact = frozenset(exact)
        self.patterns = tuple(re.compile(fnmatch.translate(p)) for p in patterns)

    def allows(self, module: str, qualname: str) -> bool:
        name = f"{module}.{qualname}"
        if name in self.extra:
            return True
        if self.trusted or name in SAFE_GLOBALS or name in self.exact or name in _registered:
            return True
        if module.startswith("numpy.") or module == "numpy":
            # numpy's own scalar and dtype classes are value types; anything else of
            # numpy's (functions that read files, for example) still needs allow=.
            if _is_numpy_value_type(module, qualname):
                return True
        return any(p.match(name) for p in self.patterns)

    def check_all(self, names: Iterable[str], source: str = "the file") -> None:
        bad = sorted({n for n in names if not self.allows(*_split(n))})
        if bad:
            raise unsafe_error(bad, source)

    def resolve(self, module: str, qualname: str, source: str = "the file") -> Any:
        if type(module) is not str or type(qualname) is not str \
                or not _NAME_RE.match(module) or not _NAME_RE.match(qualname):
            raise CorruptFileError(f"invalid global reference {module!r:.80}.{qualname!r:.80}")
        if not self.allows(module, qualname):
            raise unsafe_error([f"{module}.{qualname}"], source)
        name = f"{module}.{qualname}"
        if name in self.extra:
            return self.extra[name]
        if name in _registered:
            return _registered[name]
        return import_global(module, qualname)


def _split(name):
    module, _, qual = name.rpartition(".")
    # A qualname may itself hold dots (Outer.Inner); try the longest importable module
    # only when resolving, here the split just has to be consistent with allows().
    return (module, qual) if module else ("builtins", qual)


def _is_numpy_value_type(module, qualname):
    try:
        import numpy as np
        obj = getattr(np, qualname, None) if module == "numpy" else None
    except Exception:  # pragma: no cover - numpy always imports here
        return False
    return isinstance(obj, type) and (issubclass(obj, np.generic) or obj is np.dtype)


def unsafe_error(names: Sequence[str], source: str = "the file") -> UnsafeLoadError:
    listed = ", ".join(repr(n) for n in names)
    return UnsafeLoadError(
        f"{source} refers to {listed}, which torpor will not import or call by default "
        f"because loading it could run arbitrary code. If you trust this file, pass "
        f"allow=[{', '.join(repr(n) for n in names)}] (glob patterns such as "
        f"'mypkg.models.*' work too) or trusted=True to the call that loads it (torpor.load, Session.restore).",
        names)


def import_global(module: str, qualname: str) -> Any:
    """Import ``module`` and follow ``qualname``. A module that is not installed,
    or a name it does not define, is a MissingClassError; an exception raised
    while the module is imported (its own code failing) is a RestoreError chained
    to it. Neither means the file is damaged."""
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and not (module == e.name or module.startswith(e.name + ".")):
                raise RestoreError(
                    f"importing {module} (for {module}.{qualname}, which the file refers to) "
                    f"failed: {type(e).__name__}: {e}") from e
            raise MissingClassError(
                f"the file refers to {module}.{qualname}, but module {module!r} is not "
                f"installed here: install the package that provides it (or make it "
                f"importable) and load again", module, qualname) from None
        except Exception as e:
            raise RestoreError(
                f"importing {module} (for {module}.{qualname}, which the file refers to) "
                f"failed: {type(e).__name__}: {e}") from e
    obj = mod
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise MissingClassError(
                f"the file refers to {module}.{qualname}, but module {module!r} defines no "
                f"{qualname!r}: the class or function was renamed, moved or removed; import "
                f"or install the version of {module} that defines it", module, qualname) from None
    return obj
