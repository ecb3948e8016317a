"""Which classes and callables a file may name or call, and how they are resolved.

Loading never imports a module or calls anything before the name has passed
``Policy.allows``, which decides from the name alone. By default only the names of
``allowlist.SAFE`` pass (builtin, stdlib and numpy value types, and the copyreg
helpers that build instances of an already-checked class), and each call the
file makes through them passes ``Policy.check_call`` first. Callers widen it with
``allow=`` patterns, classes registered with ``register_safe_class`` (the State
API uses this), or ``trusted=True``; what they allow may be called freely.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import re
import sys
import threading
import types
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import CorruptFileError, MissingClassError, RestoreError, UnsafeLoadError, brief
from .allowlist import SAFE, Check, Refused, getattr_refused
from .byvalue import CODE_NAMES
from .reduce import fixed_global

#: The default allow-list, name -> Entry (call or value, argument check, reason):
#: see engine/allowlist.py. User-defined classes are never there: importing their
#: module runs its code.
SAFE_GLOBALS = frozenset(SAFE)

#: Classes that registered themselves as safe (the State API registers its classes).
_registered: dict[str, type] = {}
_registered_lock = threading.Lock()

#: ``getattr`` is how pickle's protocol names a bound method (``"abc".index``, a
#: classmethod ``cls.from_state``): safe loading lets a file call it under
#: _check_getattr, and calls what it returns only as callable_object says.
_GETATTR = "builtins.getattr"
#: Builtin types whose special methods a file may name (``{1, 2}.__contains__``).
_INERT = frozenset({str, bytes, bytearray, int, float, complex, bool, tuple, list, dict, set,
                    frozenset})
_METHOD_TYPES = (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)


def _check_getattr(args: tuple[Any, ...], can_call: Any) -> None:
    """getattr(owner, name) in safe mode: a name that is no private or special
    attribute (``__class__``, ``__globals__``...), except the special methods of
    the plain builtin types; what it returns is a value, callable only as
    Policy.callable_object allows."""
    if len(args) != 2 or type(args[1]) is not str:
        raise Refused(f"the file calls getattr with {len(args)} arguments or a name that is "
                      f"not a string; torpor never writes such a call. Nothing was called. If "
                      f"you trust the file, load it with trusted=True.", [_GETATTR])
    owner, name = args
    if getattr_refused(owner):
        raise Refused(f"the file asks for the attribute {brief(name, 60)} of a "
                      f"{type(owner).__qualname__}, whose properties compute (pandas: .values "
                      f"copies every column, .style imports modules): safe loading reads no "
                      f"attribute of it. If you trust the file, load it with trusted=True.",
                      [_GETATTR])
    if name.startswith("__") and not (type(owner) in _INERT and name.endswith("__")
                                      and name in vars(type(owner))):
        raise Refused(f"the file asks for the attribute {brief(name, 60)} of a "
                      f"{type(owner).__qualname__}: safe loading gets no private or special "
                      f"attributes (torpor writes getattr only for methods). If you trust the "
                      f"file, load it with trusted=True.", [_GETATTR])


def _described(func: Any) -> str:
    """A callable the file built, named without calling its repr."""
    name = getattr(func, "__qualname__", None)
    return f"{type(func).__qualname__} {name}" if type(name) is str else type(func).__qualname__


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
        # what this load resolved, by id: callables with the check of their
        # arguments (None: free), and names that are values only
        self._calls: dict[int, tuple[str, Check | None]] = {}
        self._values: dict[int, str] = {}
        # bytes of payload sections as stored in the file, set by the pipeline:
        # engine.guard bases a safe load's work budget on them
        self.payload_bytes: int | None = None
        # engine.guard.WorkAccount: the work partial loads of one file have left
        self.account: Any = None

    def default_only(self, cls: type) -> bool:
        """Whether ``cls`` is loadable only because the default allow-list names
        it (the caller did not allow it): its objects are built from their
        arguments alone, never from attributes or a state the file chooses."""
        name = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}"
        return name in SAFE_GLOBALS and not self._caller_allows(name)

    def _caller_allows(self, name: str) -> bool:
        """Whether the caller allowed ``name`` (trusted=, allow=, a registered
        class, a name this load resolves itself): free to call, to build from
        attributes and to give a state."""
        return (self.trusted or name in self.extra or name in self.exact or name in _registered
                or any(p.match(name) for p in self.patterns))

    def check_instance(self, cls: type) -> None:
        """Before an instance of ``cls`` is built from attributes (INST)."""
        if self.default_only(cls) and cls is not object:
            name = global_name(cls)
            raise UnsafeLoadError(
                f"the file builds a {name} from attributes of its choosing; safe loading "
                f"builds allow-listed classes only from their own arguments (torpor never "
                f"writes this). If you trust the file, load it with trusted=True.", [name])

    def callable_object(self, func: Any) -> bool:
        """Whether the decoder may call ``func``, an object the file built rather
        than a name it resolved: a method bound to a class or an instance (what
        getattr returns: ``cls.from_state``, ``obj.method``) or a functools.partial.
        Trusted: anything callable. Safe: only when the method's owner class (or
        the partial's function) is one the caller allowed; UnsafeLoadError
        otherwise. False: not something a file can call (a damaged stream)."""
        if not callable(func):
            return False
        if self.trusted:
            return True
        if isinstance(func, functools.partial):
            inner = func.func
            found = self._calls.get(id(inner))
            return (found is not None and found[1] is None) or self.callable_object(inner)
        if not isinstance(func, _METHOD_TYPES):
            raise UnsafeLoadError(
                f"the file calls {_described(func)}, an object it built rather than a name "
                f"safe loading resolved and checked. If you trust the file, load it with "
                f"trusted=True.", [type(func).__qualname__])
        owner = func.__self__
        cls = owner if isinstance(owner, type) else type(owner)
        name = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', '')}"
        if self._caller_allows(name):
            return True
        raise UnsafeLoadError(
            f"the file calls {_described(func)}, a method of {name}, which safe loading "
            f"calls only when the caller allowed {name}. If you trust the file, pass "
            f"allow=[{name!r}] or trusted=True.", [name])

    def permit_call(self, obj: Any, name: str, check: Check | None = None) -> None:
        """Let the file call ``obj`` (resolved under ``name``), through ``check``."""
        self._calls[id(obj)] = (name, check)

    def check_call(self, func: Any, args: tuple[Any, ...], callables: Container[int]) -> None:
        """Before ``func(*args)``: refuse a name the file may only name as a value,
        and arguments the allow-list's check refuses. ``callables``: the ids of
        the objects the decoder may call (resolved globals and what producers
        made)."""
        if self.trusted:
            return
        found = self._calls.get(id(func))
        if found is None:
            name = self._values.get(id(func))
            if name is not None:
                raise UnsafeLoadError(
                    f"the file calls {name}, which safe loading lets a file name but not "
                    f"call (called with arguments of the file's choosing it could allocate "
                    f"any amount of memory or read raw memory). torpor never writes such a "
                    f"call. If you trust the file, load it with trusted=True.", [name])
            return                  # made by a producer (load_module's code loader)
        check = found[1]
        if check is not None:
            values = self._values
            check(args, lambda o: id(o) in callables and id(o) not in values)

    def allows(self, module: str, qualname: str) -> bool:
        name = f"{module}.{qualname}"
        if name in self.extra:
            return True
        if self.trusted or name in SAFE_GLOBALS or name == _GETATTR or name in self.exact or name in _registered:
            return True
        return any(p.match(name) for p in self.patterns)

    def check_all(self, names: Iterable[str], source: str = "the file") -> None:
        bad = sorted({n for n in names if not self.allows(*_split(n))})
        if bad:
            raise unsafe_error(bad, source)

    def resolve(self, module: str, qualname: str, source: str = "the file") -> Any:
        if type(module) is not str or type(qualname) is not str \
                or not _NAME_RE.match(module) or not _NAME_RE.match(qualname):
            raise CorruptFileError(f"invalid global reference {brief(module, 80)}.{brief(qualname, 80)}")
        name = f"{module}.{qualname}"
        if not self.allows(module, qualname):
            raise unsafe_error([name], source)
        if name in self.extra:
            obj = self.extra[name]
        elif name in _registered:
            obj = _registered[name]
        else:
            obj = fixed_global(name)
            if obj is None:
                obj = import_global(module, qualname)
        entry = SAFE.get(name)
        if name == _GETATTR and not self._caller_allows(name):
            self.permit_call(obj, name, _check_getattr)
        elif entry is None or self._caller_allows(name):
            self.permit_call(obj, name)          # the caller allowed it: free to call
        elif entry.call:
            self.permit_call(obj, name, entry.check)
        else:
            self._values[id(obj)] = name
        return obj


def _split(name: str) -> tuple[str, str]:
    module, _, qual = name.rpartition(".")
    # A qualname may itself hold dots (Outer.Inner); try the longest importable module
    # only when resolving, here the split just has to be consistent with allows().
    return (module, qual) if module else ("builtins", qual)


def unsafe_error(names: Sequence[str], source: str = "the file") -> UnsafeLoadError:
    if any(n in CODE_NAMES for n in names):
        return UnsafeLoadError(
            f"{source} holds code saved by value (functions or classes that could not be "
            f"saved by name: lambdas, or ones defined inside a function), which loading "
            f"would run. If you trust the file, load it with trusted=True.", list(names))
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
        except Exception as e:
            missing = isinstance(e, ModuleNotFoundError) and (
                e.name is None or module == e.name or module.startswith(e.name + "."))
            if missing:                # the module itself, not one it imports
                raise MissingClassError(
                    f"the file refers to {module}.{qualname}, but module {module!r} is not "
                    f"installed here: install the package that provides it (or make it "
                    f"importable) and load again", module, qualname) from None
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
        except Exception as e:
            raise RestoreError(
                f"looking up {qualname} in {module} (which the file refers to) failed: "
                f"{type(e).__name__}: {e}") from e
    return obj
