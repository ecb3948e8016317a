"""Code saved by value: functions, classes, code objects and closure cells that
cannot be imported back by name (lambdas, functions defined inside functions,
everything a module dump saves from its own module).

A function is taken apart into its parts (code, globals, name, defaults,
closure, and the rest of its attributes as a state), and the walker writes those
parts like any other objects, with the one memo of the whole file: two closures
over one list still share it, a default argument that is a module variable is that
variable, a ``functools.wraps`` wrapper's ``__wrapped__`` is the restored function,
and a recursive closure still returns itself (its cell is created empty, then
filled, as pickle does). Classes are taken apart by cloudpickle's reducer (through
its public ``Pickler.reducer_override``), whose class dict the walker then writes
with the same memo, so their methods come back through this module too.

The file names the rebuilding callables below under fixed names ("torpor.code.*"):
loading resolves them without importing anything, and only in trusted mode (code
is code: safe loading refuses it). Code objects are stored as ``marshal`` data,
tagged with the interpreter's bytecode magic number: code does not carry across
Python versions, and loading it elsewhere is refused with a clear error.
"""

from __future__ import annotations

import copyreg
import importlib.util
import inspect
import io
import marshal
import pickle
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any, Optional

from ..errors import RestoreError
from .reduce import fix_global_name

#: The interpreter's bytecode magic number: marshal'ed code carries it.
MAGIC = importlib.util.MAGIC_NUMBER

_FunctionType = types.FunctionType
_CodeType = types.CodeType
_CellType = types.CellType
# function attributes a state may set (besides __dict__ and globals)
_FUNCTION_ATTRS = ("__qualname__", "__module__", "__doc__", "__kwdefaults__", "__annotations__")


# --- the rebuilders the files name ------------------------------------------------

def load_code(data: bytes, magic: bytes) -> _CodeType:
    """A code object from marshal ``data`` written by an interpreter whose bytecode
    magic number is ``magic``."""
    if magic != MAGIC:
        raise RestoreError(
            f"the file holds code saved by value by another Python version (bytecode "
            f"magic {bytes(magic).hex()}, this Python {sys.version.split()[0]} has "
            f"{MAGIC.hex()}): code does not carry across versions. Load it with the Python "
            f"that saved it.")
    code = marshal.loads(data)
    if type(code) is not _CodeType:
        raise RestoreError("code saved by value is not a code object")
    return code


def make_function(code: _CodeType, globals_: dict[str, Any], name: str,
                  defaults: Optional[tuple[Any, ...]], closure: Optional[tuple[Any, ...]]
                  ) -> _FunctionType:
    return _FunctionType(code, globals_, name, defaults, closure)


def function_state(f: _FunctionType, state: dict[str, Any]) -> None:
    """Set a function's attributes; ``globals`` (saved functions' own globals, not
    a module dump's namespace) go into its globals dict."""
    for k in _FUNCTION_ATTRS:
        if k in state:
            setattr(f, k, state[k])
    if state.get("__dict__"):
        f.__dict__.update(state["__dict__"])
    if state.get("globals"):
        f.__globals__.update(state["globals"])


def make_cell() -> _CellType:
    return _CellType()


def cell_set(cell: _CellType, state: tuple[Any]) -> None:
    """Fill a cell created empty (``state`` is a 1-tuple: a cell may hold None)."""
    cell.cell_contents = state[0]


def make_class(maker: Any, args: tuple[Any, ...], meta: dict[str, str]) -> type:
    """A class saved by value: cloudpickle's skeleton maker called with its
    arguments (``meta`` names the class, for readers that do not build it)."""
    return maker(*args)


def class_state(cls: type, state: tuple[Any, Any]) -> None:
    """Fill a class created by make_class: ``state`` is (cloudpickle's setter,
    its state)."""
    setter, inner = state
    setter(cls, inner)


def typing_object(cls: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                  module: Optional[str]) -> Any:
    """A TypeVar, ParamSpec, TypeVarTuple or NewType made where it cannot be
    imported back by name (a module dump's own module, or inside a function)."""
    obj = cls(name, *args, **kwargs)
    try:
        obj.__module__ = module
    except (AttributeError, TypeError):
        pass
    return obj


def _typing_parts(obj: Any) -> Optional[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The arguments that make ``obj`` again, if it is one of typing_object's kinds."""
    t = type(obj)
    if t is typing.NewType:
        return (obj.__supertype__,), {}
    if t is typing.TypeVar:
        kw = {k: getattr(obj, "__" + k + "__") for k in ("bound", "covariant", "contravariant")}
        return tuple(obj.__constraints__), kw
    if t is typing.ParamSpec:
        return (), {k: getattr(obj, "__" + k + "__") for k in ("bound", "covariant", "contravariant")}
    if getattr(typing, "TypeVarTuple", None) is t:
        return (), {}
    return None


#: The fixed names files use for the rebuilders (see the module docstring).
NAMES = {"load_code": "torpor.code.load_code", "make_function": "torpor.code.make_function",
         "function_state": "torpor.code.function_state", "make_cell": "torpor.code.make_cell",
         "cell_set": "torpor.code.cell_set", "make_class": "torpor.code.make_class",
         "class_state": "torpor.code.class_state", "typing_object": "torpor.code.typing_object"}
for _name, _fixed in NAMES.items():
    fix_global_name(globals()[_name], _fixed)

#: Every fixed name above: loading any of them runs code from the file.
CODE_NAMES = frozenset(NAMES.values())


# --- saving --------------------------------------------------------------------------

def _signature(f: _FunctionType) -> str:
    try:
        return str(inspect.signature(f))
    except (TypeError, ValueError):
        return "(...)"


def _names_used(code: _CodeType) -> Iterator[str]:
    """The global names ``code`` and the code nested in it may look up."""
    yield from code.co_names
    for c in code.co_consts:
        if type(c) is _CodeType:
            yield from _names_used(c)


class ByValue:
    """How one save writes code by value. ``module_dict`` and ``namespace``: a
    module dump's live module dict, and the object the file restores as the
    namespace (functions whose globals are ``module_dict`` get ``namespace`` as
    theirs, so they see the restored module). ``module_name``: that module's
    name; its own functions and classes are saved by value even when the module
    is importable (dill's dump_module does the same)."""

    def __init__(self, module_name: Optional[str] = None, module_dict: Optional[dict[str, Any]] = None,
                 namespace: Any = None) -> None:
        self.module_name = module_name
        self.module_dict = module_dict
        self.namespace = namespace
        self._bases: dict[int, dict[str, Any]] = {}   # id(__globals__) -> shared base dict
        self._pickler: Any = None
        #: [kind, module, qualname, signature] of each function and class saved by
        #: value (module dumps list them, so a load can name them before it starts)
        self.saved: list[list[str]] = []

    def wants(self, obj: Any) -> bool:
        """Save this function or class by value even though it can be imported?"""
        return self.module_name is not None and getattr(obj, "__module__", None) == self.module_name

    def reduce(self, obj: Any) -> Optional[tuple[Any, ...]]:
        """The reduction of a function, class, code object or cell; None if ``obj``
        is none of these."""
        t = type(obj)
        if t is _FunctionType:
            return self._function(obj)
        if t is _CodeType:
            return load_code, (marshal.dumps(obj), MAGIC), None, None, None, None
        if t is _CellType:
            try:
                state: Optional[tuple[Any]] = (obj.cell_contents,)
            except ValueError:                    # an empty cell
                state = None
            return make_cell, (), state, None, None, cell_set if state is not None else None
        if isinstance(obj, type):
            return self._class(obj)
        return None

    def _function(self, f: _FunctionType) -> tuple[Any, ...]:
        g = f.__globals__
        state: dict[str, Any] = {k: getattr(f, k) for k in _FUNCTION_ATTRS}
        state["signature"] = _signature(f)
        self.saved.append(["function", str(f.__module__), f.__qualname__, state["signature"]])
        if f.__dict__:
            state["__dict__"] = f.__dict__
        if self._in_module(g):
            globals_: Any = self.namespace
        else:
            # the names it uses, set once it exists; the base dict is shared by
            # every function saved from one globals dict (as cloudpickle does)
            base = self._bases.get(id(g))
            if base is None:
                base = self._bases[id(g)] = {k: g[k] for k in ("__name__", "__package__")
                                             if k in g}
            globals_ = base
            used = {k: g[k] for k in _names_used(f.__code__) if k in g and k not in base}
            if used:
                state["globals"] = used
        return (make_function, (f.__code__, globals_, f.__name__, f.__defaults__, f.__closure__),
                state, None, None, function_state)

    def _in_module(self, g: dict[str, Any]) -> bool:
        """Whether globals ``g`` are the dumped module's: its dict, or (a copy of
        a namespace saved as a module: IPython's user namespace) one that names it."""
        return self.module_name is not None and (
            g is self.module_dict or g.get("__name__") == self.module_name)

    def _cloudpickler(self) -> Any:
        if self._pickler is None:
            import cloudpickle
            self._pickler = cloudpickle.Pickler(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        return self._pickler

    def _class(self, cls: type) -> Optional[tuple[Any, ...]]:
        import cloudpickle
        module = sys.modules.get(cls.__module__) if self.wants(cls) else None
        # cloudpickle saves a class of an importable module by reference unless that
        # module is registered as by-value: register it for this one call
        register = module is not None and cls.__module__ != "__main__" and \
            cls.__module__ not in cloudpickle.list_registry_pickle_by_value()
        if register:
            cloudpickle.register_pickle_by_value(module)
        try:
            rv = self._cloudpickler().reducer_override(cls)
        finally:
            if register:
                cloudpickle.unregister_pickle_by_value(module)
        if rv is NotImplemented or not isinstance(rv, tuple) or len(rv) != 6:
            return None
        maker, args, state, _, _, setter = rv
        slots = vars(cls).get("__slots__")
        if slots is not None and len(args) > 3 and isinstance(args[3], dict):
            # the skeleton must be made with its __slots__ (cloudpickle's own
            # loads make it without, then set __slots__ as a plain attribute, so
            # the instances get a __dict__ in another process)
            args = args[:3] + ({**args[3], "__slots__": slots},) + args[4:]
        meta = {"name": cls.__name__, "qualname": cls.__qualname__, "module": str(cls.__module__)}
        self.saved.append(["class", meta["module"], meta["qualname"], ""])
        return make_class, (maker, args, meta), (setter, state), None, None, class_state

    def fallback(self, obj: Any) -> Optional[tuple[Any, ...]]:
        """cloudpickle's reducer for a type pickle refuses (staticmethod,
        classmethod, property, mappingproxy, TypeVar, modules...), or None."""
        parts = _typing_parts(obj)
        if parts is not None:
            return (typing_object, (type(obj), obj.__name__, parts[0], parts[1],
                                    getattr(obj, "__module__", None)), None, None, None, None)
        reducer = self._cloudpickler().dispatch_table.get(type(obj))
        if reducer is None or reducer is copyreg.dispatch_table.get(type(obj)):
            return None
        rv = reducer(obj)
        if not isinstance(rv, tuple):
            return None
        return tuple(rv) + (None,) * (6 - len(rv))
