"""How the walkers take apart and rebuild objects that have no fast path.

Shared by the Cython walker and the pure-Python twin so the two can never disagree
on what an object becomes. The dispatch order mirrors pickle's: builtin and numpy
fast paths first (in the walkers), then plain instances (class + ``__dict__``),
then ``copyreg.dispatch_table``, then ``__reduce_ex__(4)``.
"""

from __future__ import annotations

import _thread
import copyreg
import importlib
import pickle
import sys
import types
from typing import Any, TypeVar

import numpy as np

from ..errors import MissingClassError, UnsupportedObjectError

#: The class is a plain one: rebuilt as ``cls.__new__(cls)`` plus its ``__dict__``.
SAVE_INST = 1
#: Anything else: taken apart with the reduce protocol.
SAVE_REDUCE = 2
#: Classes, functions and other objects saved as a reference by name.
SAVE_GLOBAL = 3

HEAPTYPE = 1 << 9            # Py_TPFLAGS_HEAPTYPE: a class defined in Python
_object_reduce_ex = object.__reduce_ex__
_object_reduce = object.__reduce__
_object_getstate = getattr(object, "__getstate__", None)
_GLOBAL_TYPES = (type, types.FunctionType, types.BuiltinFunctionType,
                 types.MethodDescriptorType, types.WrapperDescriptorType)
#: Types pickle itself saves by name whatever copyreg says (its own dispatch).
_PICKLE_GLOBALS = (type, types.FunctionType)
#: Types the walkers write natively although pickle has no fast path for them:
#: a copyreg reducer registered for one of them (replacing copyreg's default)
#: must win, as it does in pickle.
NATIVE_TYPES = (complex, np.ndarray, np.memmap)
#: copyreg's own entries for them (complex has one), which do not count.
_COPYREG_DEFAULTS = {complex: copyreg.dispatch_table.get(complex)}
#: Builtin types that only the ``types`` module names (NoneType, MappingProxyType,
#: CodeType...): saved under that name when their own does not find them.
_TYPES_NAMES = {v: k for k, v in vars(types).items() if isinstance(v, type) and k[0] != "_"}


def copyreg_overrides():
    """Which of the NATIVE_TYPES have a copyreg reducer of the user's (checked
    when an encoder starts)."""
    table = copyreg.dispatch_table
    return [t for t in NATIVE_TYPES if t in table and table[t] is not _COPYREG_DEFAULTS.get(t)]


def classify(cls):
    """Which way objects of ``cls`` are saved (the walkers cache the answer)."""
    if cls in copyreg.dispatch_table and cls not in _PICKLE_GLOBALS:
        return SAVE_REDUCE        # a metaclass with a copyreg reducer, as pickle does
    if _library_reducer(cls) is not None:
        return SAVE_REDUCE        # taken apart by torpor's module for its library (pandas)
    if issubclass(cls, _GLOBAL_TYPES):
        return SAVE_GLOBAL
    if (cls.__reduce_ex__ is not _object_reduce_ex or cls.__reduce__ is not _object_reduce
            or getattr(cls, "__getstate__", None) is not _object_getstate
            or hasattr(cls, "__getnewargs_ex__") or hasattr(cls, "__getnewargs__")
            or cls.__dictoffset__ == 0 or cls.__new__ is not object.__new__):
        return SAVE_REDUCE
    # The nearest builtin base must be object itself, and no class may add __slots__:
    # then __dict__ is the whole state, exactly what object.__reduce_ex__ would save.
    for base in cls.__mro__:
        if not base.__flags__ & HEAPTYPE:
            if base is not object:
                return SAVE_REDUCE
            break
        if "__slots__" in vars(base):
            return SAVE_REDUCE
    return SAVE_INST


#: torpor's own callables that files name (the session restorer, the module-dump
#: loaders), by id: written under these fixed names wherever their code lives, so
#: files stay the same when torpor's modules move. Loading never imports them:
#: the layer that reads such files maps each name to its own object (Policy.extra).
_fixed_names: dict[int, tuple[Any, str, str]] = {}
_fixed_objects: dict[str, Any] = {}

_T = TypeVar("_T")


def fix_global_name(obj: _T, name: str) -> _T:
    """Write ``obj`` under ``name`` ("module.qualname") in every file."""
    module, _, qualname = name.rpartition(".")
    _fixed_names[id(obj)] = (obj, module, qualname)
    _fixed_objects[name] = obj
    return obj


def fixed_global(name: str) -> Any:
    """The object written under the fixed ``name``, or None: found without
    importing anything (the module the name mentions may no longer exist), except
    torpor's own module for a library (LIBRARIES), which defines its names when
    it is first needed."""
    obj = _fixed_objects.get(name)
    if obj is None:
        for library, (module, prefix) in LIBRARIES.items():
            if name.startswith(prefix) and module not in sys.modules:
                _library_module(library, module, name)
                obj = _fixed_objects.get(name)
    return obj


def find_global(module, qualname):
    """What ``module.qualname`` finds when a save checks it (importing the module,
    as pickle does), or None if it finds nothing."""
    try:
        found = importlib.import_module(module) if module not in sys.modules \
            else sys.modules[module]
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return found


def by_reference(obj, byvalue=None):
    """(module, qualname) under which ``obj`` (of a SAVE_GLOBAL type) is saved by
    name, or None when it is saved by value instead (reduce_object): a builtin
    method bound to an object (``"abc".index``), and with ``byvalue`` (an
    engine.byvalue.ByValue) a function or class it wants by value or that cannot
    be imported back by name."""
    if type(obj) is types.BuiltinFunctionType:
        owner = obj.__self__
        if owner is not None and not isinstance(owner, (types.ModuleType, type)):
            return None
    if byvalue is not None and isinstance(obj, _BY_VALUE_TYPES) and byvalue.wants(obj):
        return None
    try:
        return global_ref(obj)
    except UnsupportedObjectError:
        if byvalue is not None and isinstance(obj, (types.FunctionType, type)) \
                and _fixed_names.get(id(obj)) is None:
            return None
        raise


_BY_VALUE_TYPES = (types.FunctionType, type)


def global_ref(obj):
    """(module, qualname) under which ``obj`` can be imported back, or raise."""
    fixed = _fixed_names.get(id(obj))
    if fixed is not None and fixed[0] is obj:
        return fixed[1], fixed[2]
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        raise UnsupportedObjectError(f"{obj!r:.80} has no name to be saved by reference")
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, type) and getattr(obj, "__module__", None) is None:
        module = owner.__module__      # a classmethod of a builtin type (ZoneInfo._unpickle)
    else:
        module = pickle.whichmodule(obj, name)
    found = find_global(module, name)
    if found is not obj and isinstance(obj, type) and obj in _TYPES_NAMES:
        return "types", _TYPES_NAMES[obj]
    # bound classmethods are created anew on each attribute access: equal, not identical
    if found is not obj and not (isinstance(owner, type) and found == obj):
        what = "a lambda, or a function or class defined inside a function" \
            if "<" in name else f"not the object found at {module}.{name}"
        raise UnsupportedObjectError(
            f"{obj!r:.80} is saved by reference, but it is {what}; define it at module "
            f"level, or save its data instead")
    return module, name


def _picklebuffer(buf):
    """A PickleBuffer comes back as one over a copy of its bytes (a bytearray when
    it was writable): pickle, in band, would give back the bytes alone."""
    raw = buf.raw()
    return pickle.PickleBuffer, (bytes(raw) if raw.readonly else bytearray(raw),)


def _lock(lock):
    """A lock comes back new and **unlocked** (dill keeps it held): its holders
    are threads of the saving process, none of which exist where it is loaded,
    and an object saved inside ``with self._lock:`` must not load deadlocked."""
    return (_thread.RLock if type(lock) is _thread.RLock else _thread.allocate_lock), ()


#: Reducers of torpor's own for types pickle refuses (after copyreg's table).
_REDUCERS = {pickle.PickleBuffer: _picklebuffer, _thread.LockType: _lock, _thread.RLock: _lock}

#: Libraries whose objects torpor takes apart and rebuilds itself, by their
#: top-level module: the torpor module that knows them, and the prefix of the
#: fixed names (fix_global_name) its rebuild functions are written under. That
#: module is imported only when needed (so ``import torpor`` imports neither it
#: nor its library): to save an object whose type comes from the library (which
#: is then loaded already), and to load a file that names one of its functions.
#: It holds ``REDUCERS``, exact type -> reducer(obj) returning a reduce tuple, or
#: None to leave that object to pickle's protocol.
LIBRARIES: dict[str, tuple[str, str]] = {
    "pandas": ("torpor.engine.pandas_types", "torpor.pandas."),
}


def _library_module(library: str, module: str, name: str) -> Any:
    """torpor's ``module`` for ``library``, imported; a load that needs it where
    the library is not installed is a MissingClassError naming it."""
    found = sys.modules.get(module)
    if found is not None:
        return found
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.partition(".")[0] != library:
            raise
        raise MissingClassError(
            f"the file holds {library} objects (it calls {name}), but {library} is not "
            f"installed here: install it (pip install {library}) and load again",
            library, name) from None


def _library_reducer(cls):
    """The reducer torpor has for ``cls`` if a library of LIBRARIES defines it
    (and is imported: its objects exist), else None."""
    module = getattr(cls, "__module__", None)
    if type(module) is not str:
        return None
    library = module.partition(".")[0]
    lib = LIBRARIES.get(library)
    if lib is None or library not in sys.modules:
        return None
    return _library_module(library, lib[0], f"{module}.{cls.__qualname__}").REDUCERS.get(cls)


def reduce_object(obj, byvalue=None):
    """Return (callable, args, state, listitems, dictitems, state_setter) or
    (None, global-name) for objects that reduce to a name. ``byvalue``: the
    save's engine.byvalue.ByValue, which takes apart code saved by value."""
    cls = type(obj)
    reducer = copyreg.dispatch_table.get(cls) or _REDUCERS.get(cls)
    try:
        if reducer is not None:
            rv = reducer(obj)
        else:
            # a library's objects torpor rebuilds itself (pandas), unless its
            # reducer declines this one: then as any other object
            library = _library_reducer(cls)
            rv = library(obj) if library is not None else None
            if rv is None:
                rv = byvalue.reduce(obj) if byvalue is not None else None
            if rv is None:
                rv = _reduce_ex(obj, byvalue)
    except UnsupportedObjectError:
        raise
    except Exception as e:
        raise UnsupportedObjectError(f"{type(e).__name__}: {e}") from None
    if isinstance(rv, str):
        problem = None if byvalue is None else _global_name_problem(obj, rv, byvalue)
        if problem is None:
            return None, rv
        rv = byvalue.fallback(obj)
        if rv is None:
            raise UnsupportedObjectError(problem)
    if not isinstance(rv, tuple) or not 2 <= len(rv) <= 6:
        raise UnsupportedObjectError(f"__reduce_ex__ returned {type(rv).__name__}, not a tuple of 2 to 6 items")
    rv = rv + (None,) * (6 - len(rv))
    func, args, state, listitems, dictitems, setter = rv
    if not callable(func) or not isinstance(args, tuple):
        raise UnsupportedObjectError("__reduce_ex__ returned a non-callable or non-tuple arguments")
    if listitems is not None:
        listitems = list(listitems)
    if dictitems is not None:
        dictitems = dict(dictitems)
    return func, args, state, listitems, dictitems, setter


def _reduce_ex(obj, byvalue):
    """``obj.__reduce_ex__(4)``; when pickle refuses the type, cloudpickle's
    reducer for it (through ``byvalue``), if it has one."""
    try:
        return obj.__reduce_ex__(4)
    except TypeError:
        rv = byvalue.fallback(obj) if byvalue is not None else None
        if rv is None:
            raise
        return rv


def _global_name_problem(obj, name, byvalue):
    """Why the global ``name`` an object reduced to cannot give it back, or None:
    a name in a module dump's own module (which does not exist yet while the
    dump loads: a TypeVar of __main__), or a name that does not find the object
    (pickle refuses those too)."""
    module = reduced_global_module(obj, name)
    if byvalue.module_name is not None and module == byvalue.module_name:
        return (f"it is saved by the name {module}.{name}, which is not there while the "
                f"module dump of {module} loads, and torpor knows no way to save it by value")
    if find_global(module, name) is not obj:
        return (f"it is saved by the name {module}.{name}, which does not find it there "
                f"(it was made under another name, or inside a function)")
    return None


def reduced_global_module(obj, name):
    """The module of an object whose ``__reduce__`` returned a global name."""
    return getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)


def apply_state(obj, state, listitems, dictitems, setter):
    """Rebuild like pickle's BUILD, APPENDS and SETITEMS opcodes."""
    if listitems:
        extend = getattr(obj, "extend", None)
        if extend is not None:
            extend(listitems)
        else:
            for x in listitems:
                obj.append(x)
    if dictitems:
        for k, v in dictitems.items():
            obj[k] = v
    if state is None:
        return
    if setter is not None:
        setter(obj, state)
        return
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    if state:
        obj.__dict__.update(state)
    if slotstate:
        for k, v in slotstate.items():
            setattr(obj, k, v)


def readonly_array(arr):
    """Rebuild a read-only array: the walkers write one as this call on a view of
    it (pickle 5 keeps arrays read-only too)."""
    if type(arr) is not np.ndarray:
        raise UnsupportedObjectError("torpor.arrays.readonly takes an array")
    arr.flags.writeable = False
    return arr


def readonly_reduction(arr, views):
    """How a walker writes the read-only array ``arr``: readonly_array(a view of
    it). The view is a new object, and its id goes into ``views`` so the walker
    writes it as a plain array."""
    view = arr.view()
    views.add(id(view))
    return readonly_array, (view,), None, None, None, None


def override_reduction(rv):
    """Check what an encoder's ``reducer_override`` hook returned: a
    (callable, args) pair or a longer reduce tuple (up to 6 items, as
    ``__reduce__`` returns), padded to the 6 items ``reduce_object`` returns."""
    if not isinstance(rv, tuple) or not 2 <= len(rv) <= 6 or not callable(rv[0]) \
            or not isinstance(rv[1], tuple):
        raise UnsupportedObjectError(
            f"reducer_override must return None or a (callable, args tuple, ...) reduce "
            f"tuple of 2 to 6 items, not {rv!r:.80}")
    rv = rv + (None,) * (6 - len(rv))
    return (rv[0], rv[1], rv[2], None if rv[3] is None else list(rv[3]),
            None if rv[4] is None else dict(rv[4]), rv[5])


fix_global_name(readonly_array, "torpor.arrays.readonly")
