"""dump_module / load_module / load_module_asdict: dill's module-dump API.

A module's namespace (by default ``__main__``: an interactive session) is saved
as one torpor object graph with one memo: its root is the namespace itself,
written as a call of the loader's ``namespace()`` (which gives back the dict the
load fills: the module's own, or load_module_asdict's) with the variables as its
dict items. Values go through the walker as usual (arrays zero-copy), and:

- functions and classes defined in the saved module (and any that cannot be
  imported back by name: lambdas, decorated or local functions, namedtuples made
  under another name) are saved by value (engine/byvalue.py): their code, defaults,
  closure cells and attributes are parts of the same graph, and the module's own
  functions take the restored namespace as their globals. So two closures over one
  list still share it, a default argument that is a module variable is that
  variable, a ``functools.wraps`` wrapper's ``__wrapped__`` is the restored
  function, and a recursive closure returns itself;
- modules are saved by name and restored by import;
- open files are saved as ``SavedFile`` descriptors and never reopened.

The table of contents lists every function and class saved by value, so loading
without ``trusted=True`` refuses (naming them) before anything changes, and
``load_module_asdict`` can describe them without running them. Version 1 dumps
(each function a separate cloudpickle blob) are still read.

``dump_namespace`` / ``load_namespace`` are the same machinery for a code-running
workspace's checkpoints (torpor.workspace.checkpoints): the root is ``(namespace,
variables)`` and large values may be stored out of the graph by the caller.
"""

from __future__ import annotations

import ast
import builtins
import fnmatch
import io
import os
import pickle
import platform
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, Literal, NoReturn, Optional, Union, cast


import numpy as np

from .. import storage
from ..engine import pipeline, select
from ..engine.byvalue import NAMES as CODE_NAMES
from ..engine.byvalue import ByValue
from ..engine.reduce import fix_global_name
from ..engine.safety import Policy
from ..errors import FormatError, TorporError, UnsafeLoadError, UnsupportedObjectError
from ..session import Opaque

if TYPE_CHECKING:
    from ..storage import PathOrFile

__all__ = ["dump_module", "load_module", "load_module_asdict", "dump_session",
           "load_session", "CodeDescriptor", "SavedFile", "default_path"]

#: 2: one graph, code by value through engine.byvalue; 1: cloudpickle blobs (read only).
MODULE_DUMP_VERSION = 2
_READ_VERSIONS = (1, 2)
# The names module dumps give torpor's own loaders (fixed since the first module
# dump version, wherever the code lives).
_MAKE_CODE = "torpor.modules.make_code"
_IMPORT = "torpor.modules.import_module"
_ATTR = "torpor.modules.module_attribute"
_FILE = "torpor.modules.SavedFile"
_NAMESPACE = "torpor.modules.namespace"

# Interpreter state, never saved (and kept by mode="replace").
_INTERPRETER = frozenset({
    "__builtins__", "__loader__", "__spec__", "__name__", "__package__", "__file__",
    "__cached__", "__doc__", "__annotations__", "__builtin__",
    # IPython's
    "In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh",
    "get_ipython", "exit", "quit", "_exit_code",
})
_IPY_NUMBERED = re.compile(r"^_i?\d+$")


def _interpreter_name(name: str) -> bool:
    return name in _INTERPRETER or bool(_IPY_NUMBERED.match(name))


def default_path(module_name: str = "__main__") -> str:
    """The file dump_module uses when given none: in the user's cache folder
    (``$XDG_CACHE_HOME/torpor`` or the platform's equivalent), never a
    world-writable temp folder."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    name = "session" if module_name == "__main__" else module_name
    return os.path.join(base, "torpor", f"{name}.torpor")


class SavedFile:
    """An open file that was in a saved namespace: its name, mode, position and
    whether it was closed. Loading never reopens it (reopening with a "w" mode
    would truncate the file); call ``reopen()`` to get a file object back, which
    opens for reading or appending, never truncating."""

    def __init__(self, name: Union[str, bytes, int], mode: str, position: Optional[int],
                 closed: bool) -> None:
        self.name = name
        self.mode = mode
        self.position = position
        self.closed = closed

    def reopen(self) -> IO[Any]:
        binary = "b" in self.mode
        if any(c in self.mode for c in "wax+"):
            f = open(self.name, "r+b" if binary else "r+")
        else:
            f = open(self.name, "rb" if binary else "r")
        if self.position is not None:
            f.seek(self.position)
        return f

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"at {self.position}"
        return f"<SavedFile {self.name!r} mode {self.mode!r} {state} (not reopened)>"

    def __eq__(self, other: object) -> bool:
        return type(other) is SavedFile and vars(self) == vars(other)


class CodeDescriptor:
    """A function saved by value, as load_module_asdict shows it without running
    anything from the file: ``kind`` ("function"), ``name``, ``qualname``,
    ``module`` and ``signature`` (text)."""

    def __init__(self, kind: str, name: str, qualname: str, module: str, signature: str) -> None:
        self.kind = kind
        self.name = name
        self.qualname = qualname
        self.module = module
        self.signature = signature

    def __repr__(self) -> str:
        return f"<{self.kind} {self.module}.{self.qualname}{self.signature} (saved by value, not loaded)>"

    def __call__(self, *a: Any, **kw: Any) -> NoReturn:
        raise UnsafeLoadError(
            f"{self.qualname} was loaded as a description only; load the file with "
            f"trusted=True to get the function itself", [f"{self.module}.{self.qualname}"])


class _ModuleRef:
    """A module named in a file, left unimported (load_module_asdict, untrusted)."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __repr__(self) -> str:
        return f"<module {self.__name__!r} (not imported)>"


# --- the functions the stream names (resolved per load, through the policy) -------

def make_code(kind: str, name: str, qualname: str, module: str, signature: str, blob: bytes,
              deps: list[Any], buffers: list[Any]) -> NoReturn:
    """Stands in the file for the loader of code saved by value; load_module and
    load_module_asdict replace it with one bound to their target namespace."""
    raise FormatError("code saved by value is rebuilt by torpor.load_module only")


def import_module(name: str) -> NoReturn:
    raise FormatError("module references are rebuilt by torpor.load_module only")


def namespace(names: list[str]) -> NoReturn:
    raise FormatError("a module dump's namespace is rebuilt by torpor.load_module only")


class _Namespace:
    """The root of a module dump: written as ``namespace()`` with the variables
    as dict items, so the functions saved by value (created before those items go
    in) can take the namespace as their globals."""

    __slots__ = ("variables",)

    def __init__(self, variables: dict[str, Any]) -> None:
        self.variables = variables

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # the names first: a load knows what it restores (replace mode deletes the rest)
        return namespace, (list(self.variables),), None, None, self.variables


def module_attribute(module: str, name: str) -> NoReturn:
    raise FormatError("module references are rebuilt by torpor.load_module only")




# --- saving --------------------------------------------------------------------

class _Ref:
    """Stands for a top-level variable that is saved as a reference to another
    module's attribute (restored by import and getattr, so it is that object)."""

    __slots__ = ("module", "attr")

    def __init__(self, module: str, attr: str) -> None:
        self.module = module
        self.attr = attr


_BY_NAME = (type, types.FunctionType, types.BuiltinFunctionType)

# What the reducer_override hook returns for an object it reduces: (callable, arguments).
_Reduced = tuple[Callable[..., Any], tuple[Any, ...]]


def _references(namespace: Mapping[str, Any], module_name: str,
                refimported: bool) -> dict[str, _Ref]:
    """Top-level variables saved as references to other modules' attributes:
    functions and classes imported from elsewhere (always), and with
    ``refimported`` any value that is some loaded module's attribute."""
    index = _module_attribute_index({module_name, "__main__", "builtins"}) if refimported else {}
    out: dict[str, _Ref] = {}
    for k, v in namespace.items():
        if isinstance(v, _BY_NAME):
            mod = getattr(v, "__module__", None)
            if mod == module_name:
                continue                 # the module's own code: saved by value
            qual = getattr(v, "__qualname__", None)
            if mod and qual and "<" not in qual and mod != "builtins" and _lookup(mod, qual) is v:
                out[k] = _Ref(mod, qual)
                continue
        ref = index.get(id(v))
        if ref is not None and not isinstance(v, types.ModuleType):
            out[k] = _Ref(*ref)
    return out


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


class _ByValueHook:
    """reducer_override for dump_module: module references, references to other
    modules' attributes, open files (code by value is engine.byvalue's)."""

    def __init__(self) -> None:
        self.modules: dict[str, None] = {}

    def wants(self, cls: type) -> bool:
        """Which classes' instances the hook may reduce (the walker asks once per
        class, and skips the hook for the rest)."""
        return (cls is _Ref or issubclass(cls, (types.ModuleType, io.IOBase))
                or cls.__module__ in ("_io", "io"))

    def __call__(self, obj: Any) -> Optional[_Reduced]:
        t = type(obj)
        if t is _Ref:
            return module_attribute, (obj.module, obj.attr)
        if t is types.ModuleType:
            self.modules[obj.__name__] = None
            return import_module, (obj.__name__,)
        if isinstance(obj, io.IOBase) or t.__module__ in ("_io", "io"):
            return self._file(obj)
        return None

    def _file(self, f: Any) -> Optional[_Reduced]:
        name = getattr(f, "name", None)
        if not isinstance(name, (str, bytes, int)):
            return None            # an in-memory stream: the walker says what fails
        closed = bool(getattr(f, "closed", True))
        try:
            pos = None if closed else f.tell()
        except (OSError, ValueError):
            pos = None
        return SavedFile, (name, getattr(f, "mode", "rb"), pos, closed)


def _module_attribute_index(skip: set[str]) -> dict[int, tuple[str, str]]:
    """id(value) -> (module name, attribute) over the loaded modules (refimported)."""
    index: dict[int, tuple[str, str]] = {}
    for mname, mod in list(sys.modules.items()):
        if mod is None or mname in skip or mname.startswith("_"):
            continue
        try:
            items = list(vars(mod).items())
        except TypeError:
            continue
        for attr, v in items:
            if not attr.startswith("_") and id(v) not in index and not isinstance(v, (int, float, str, bytes, bool, type(None))):
                index[id(v)] = (mname, attr)
    return index


def _resolve_module(module: object) -> types.ModuleType:
    if module is None:
        module = "__main__"
    if isinstance(module, str):
        mod = sys.modules.get(module)
        if mod is None:
            raise ValueError(f"no module named {module!r} is loaded")
        return mod
    if not isinstance(module, types.ModuleType):
        raise TypeError(f"module must be a module or a module name, not {type(module).__name__}")
    return module


def _select(namespace: Mapping[Any, Any], exclude: Union[str, Iterable[str], None]
            ) -> dict[str, Any]:
    pats = [exclude] if isinstance(exclude, str) else list(exclude or ())
    for p in pats:
        if not isinstance(p, str):
            raise TypeError(f"exclude= takes names or glob patterns, not {p!r:.40}")
    keep: dict[str, Any] = {}
    for k, v in namespace.items():
        if not isinstance(k, str) or _interpreter_name(k):
            continue
        if any(fnmatch.fnmatchcase(k, p) for p in pats):
            continue
        keep[k] = v
    return keep


def _dry_run(name: str, value: object, mod: types.ModuleType,
             hook: Optional[_ByValueHook] = None, container: Any = None) -> None:
    """Walk variable ``name`` alone as a save would: raises what the save would.
    ``container``: what the walk writes into (stream_frame, add_array,
    add_bytes: dump_namespace's per-variable checksums); default nothing."""
    by_value = ByValue(mod.__name__, vars(mod), _Namespace({}))
    hook = hook if hook is not None else _ByValueHook()
    if container is None:
        pipeline.dry_run(_Namespace({name: value}), hook, by_value=by_value)
    else:
        select.Encoder(container, reducer_override=hook, by_value=by_value).encode(
            _Namespace({name: value}))


def _variable_error(e: TorporError) -> TorporError:
    """Rephrase a walker error so it names the variable and the path inside it."""
    path = getattr(e, "path", None) or ""
    m = re.match(r"root\.<dict items>\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\](.*)", path)
    if not m:
        return e
    var = ast.literal_eval(m.group(1))   # a repr of a str key written by the walker
    inner = var + m.group(2)
    msg = str(e).replace(f"at {path}", f"at {inner}")
    err = UnsupportedObjectError(
        f"cannot save variable {var!r}: {msg}. Leave it out with exclude=[{var!r}] or "
        f"save everything else with on_error='skip'.", path=inner, obj_type=getattr(e, "obj_type", None))
    # errors.UnsupportedObjectError declares no ``variable``: only this error sets it
    cast(Any, err).variable = var
    return err


def dump_module(filename: Optional[PathOrFile] = None,
                module: Union[types.ModuleType, str, None] = None, refimported: bool = False, *,
                exclude: Union[str, Iterable[str]] = (),
                on_error: Literal["raise", "skip"] = "raise", compress: Optional[str] = "lz4",
                metadata: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                storage_options: Optional[dict[str, Any]] = None, progress: Any = None,
                **kwds: Any) -> dict[str, dict[str, str]]:
    """Save a module's namespace (default ``__main__``) to ``filename`` (a path,
    written atomically, a URL such as ``"s3://bucket/work.torpor"`` with fsspec's
    ``storage_options``, or a binary stream; None: ``default_path()``, created
    owner-only, with a warning naming it).

    ``refimported=True`` saves objects imported from other modules (functions,
    classes, modules, and values that are a module's attribute) as references,
    restored by import. ``exclude``: names or glob patterns to leave out.
    ``on_error="skip"`` saves everything else when a variable cannot be saved and
    returns ``{name: {"type": ..., "reason": ...}}`` of what was skipped (also
    stored in the file's metadata); ``"raise"`` (default) names the variable and
    the path to the bad object, and leaves a previous file intact.
    ``progress``: True for a progress bar of long saves, or a callable, as for
    torpor.dump. Returns the skipped dict (empty when nothing was skipped)."""
    if kwds:
        unknown = ", ".join(sorted(kwds))
        raise TypeError(f"dump_module got unexpected keyword arguments: {unknown}")
    filename = storage.locate(filename, storage_options)
    if on_error not in ("raise", "skip"):
        raise ValueError(f'on_error must be "raise" or "skip", not {on_error!r}')
    mod = _resolve_module(module)
    namespace = _select(vars(mod), exclude)
    name = mod.__name__
    # only top-level values become references; nested objects are data
    namespace.update(_references(namespace, name, refimported))
    skipped: dict[str, dict[str, str]] = {}
    if on_error == "skip":
        for k in list(namespace):
            try:
                _dry_run(k, namespace[k], mod)
            except TorporError as e:
                skipped[k] = {"type": f"{type(namespace[k]).__module__}.{type(namespace[k]).__qualname__}",
                              "reason": str(_variable_error(e))}
                del namespace[k]
    saver = _ByValueHook()
    root = _Namespace(namespace)
    by_value = ByValue(name, vars(mod), root)
    mode: Optional[int] = None
    if filename is None:
        filename = default_path(name)
        folder = os.path.dirname(filename)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        mode = 0o600
        warnings.warn(f"torpor.dump_module: no filename given, saving to {filename}", stacklevel=2)
    import cloudpickle
    header = {"torpor_module": MODULE_DUMP_VERSION, "module": name, "refimported": bool(refimported),
              "python": platform.python_version(), "cloudpickle": cloudpickle.__version__,
              "skipped": skipped, "user": dict(metadata or {})}
    try:
        pipeline.save(root, filename, pipeline.SaveOptions.of(compress, threads,
                                                              progress=progress),
                      metadata=header, reducer_override=saver, file_mode=mode,
                      by_value=by_value,
                      toc_extra=lambda: {"module": {"code": by_value.saved,
                                                    "modules": list(saver.modules)}})
    except UnsupportedObjectError as e:
        raise _variable_error(e) from e
    return skipped


# --- loading -------------------------------------------------------------------

def _python_minor(v: object) -> str:
    return ".".join(str(v).split(".")[:2])


def _check_code(meta: dict[str, Any], toc: dict[str, Any], trusted: bool) -> None:
    """Refuse a module dump whose code saved by value a load would run: without
    ``trusted``, or from another Python version (before anything is rebuilt)."""
    code = toc["module"].get("code") or []
    if not code:
        return
    names = [f"{k} {m}.{q}{s}" for k, m, q, s in code]
    if not trusted:
        raise UnsafeLoadError(
            f"the file defines code saved by value, which loading would run: "
            f"{', '.join(names)}. Nothing was changed. If you trust the file, pass "
            f"trusted=True (or read it safely with load_module_asdict).",
            [f"{m}.{q}" for _, m, q, _ in code])
    here, there = platform.python_version(), str(meta.get("python"))
    if _python_minor(here) != _python_minor(there):
        raise FormatError(
            f"the file holds code saved by value under Python {there}, and this is "
            f"Python {here}: code objects do not carry across Python versions. Load "
            f"it with Python {_python_minor(there)}, or read its data with "
            f"load_module_asdict. Nothing was changed.")


class _Loader:
    """The per-load stand-ins for the names module dumps give torpor's loaders:
    the namespace, module references, and (describing, load_module_asdict without
    trusted=True) the rebuilders of code saved by value, which then describe it
    instead of running it."""

    def __init__(self, target: dict[str, Any], trusted: bool, describe: bool) -> None:
        self.target = target            # the dict the namespace is restored into
        self.trusted = trusted
        self.describe = describe
        self.classes: list[type] = []
        self.names: Optional[list[str]] = None   # the variables a version 2 dump restores
        # Policy.extra: what the file's fixed names resolve to in this load (each
        # bound method made once: producers are recognised by identity)
        self.extra = self._extra()
        #: the loaders whose results the file may call or instantiate (classes)
        self.producers = [self.extra[_MAKE_CODE]] + (
            [self.extra[CODE_NAMES["make_class"]]] if describe else [])

    def namespace(self, names: list[str]) -> dict[str, Any]:
        if type(names) is not list or not all(type(n) is str for n in names):
            raise FormatError("a module dump's variable names are not a list of names")
        self.names = names
        return self.target

    def _extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {_MAKE_CODE: self.make_code, _IMPORT: self.import_module,
                               _ATTR: self.module_attribute, _FILE: SavedFile,
                               _NAMESPACE: self.namespace}
        if self.describe:
            out.update({CODE_NAMES[k]: getattr(self, "describe_" + k) for k in CODE_NAMES})
        return out

    # -- describing code saved by value (version 2) ----------------------------------
    def describe_load_code(self, data: bytes, magic: bytes) -> _NotLoaded:
        return _NotLoaded()

    def describe_make_function(self, code: Any, globals_: Any, name: str, defaults: Any,
                               closure: Any) -> CodeDescriptor:
        return CodeDescriptor("function", str(name), str(name), "", "")

    def describe_function_state(self, f: Any, state: Any) -> None:
        if isinstance(f, CodeDescriptor) and isinstance(state, dict):
            f.qualname = str(state.get("__qualname__", f.qualname))
            f.module = str(state.get("__module__", f.module))
            f.signature = str(state.get("signature", ""))

    def describe_make_cell(self) -> _NotLoaded:
        return _NotLoaded()

    def describe_cell_set(self, cell: Any, state: Any) -> None:
        return None

    def describe_make_class(self, maker: Any, args: Any, meta: Any) -> type:
        meta = meta if isinstance(meta, dict) else {}
        name, qual, module = (str(meta.get(k, "?")) for k in ("name", "qualname", "module"))
        return _stand_in_class(name, qual, module)

    def describe_class_state(self, cls: Any, state: Any) -> None:
        return None

    def describe_typing_object(self, cls: Any, name: Any, args: Any, kwargs: Any,
                               module: Any) -> CodeDescriptor:
        return CodeDescriptor(getattr(cls, "__name__", "typing object"), str(name), str(name),
                              str(module), "")

    # -- version 1: code as cloudpickle blobs --------------------------------------
    def make_code(self, kind: str, name: str, qualname: str, module: str, signature: str,
                  blob: bytes, deps: list[Any], buffers: list[Any]) -> object:
        if self.describe:
            if kind == "class":
                return _stand_in_class(name, qualname, module)
            return CodeDescriptor(kind, name, qualname, module, signature)
        obj = pickle.loads(blob, buffers=buffers)
        if kind == "function":
            return _rebind(obj, self.target)
        # rebound once everything is loaded: unpickling a subclass later sets the
        # (tracked, shared) base class's attributes again
        self.classes.append(obj)
        return obj

    def finish(self) -> None:
        seen: set[int] = set()
        for cls in self.classes:
            for klass in cls.__mro__:
                if klass.__module__ == cls.__module__:
                    _rebind_class(klass, self.target, seen)

    def import_module(self, name: str) -> Union[types.ModuleType, _ModuleRef]:
        if type(name) is not str:
            raise FormatError("a module reference is not a name")
        mod = sys.modules.get(name)
        if mod is not None:
            return mod
        top = name.partition(".")[0]
        if self.trusted or top in sys.stdlib_module_names:
            import importlib
            try:
                return importlib.import_module(name)
            except ImportError as e:
                raise FormatError(f"the file refers to module {name!r}, which does not import here: {e}") from None
        if self.describe:
            return _ModuleRef(name)
        raise UnsafeLoadError(
            f"the file refers to module {name!r}, which is not imported yet; importing it runs "
            f"its code. Import it first, or pass trusted=True.", [name])

    def module_attribute(self, module: str, attr: str) -> object:
        mod = self.import_module(module)
        if isinstance(mod, _ModuleRef):
            return _ModuleRef(f"{module}.{attr}")
        try:
            return getattr(mod, attr)
        except AttributeError:
            raise FormatError(f"the file refers to {module}.{attr}, which {module} does not have here") from None


class _NotLoaded:
    """A code object or closure cell, as a description stands it in (a new one
    each time: a Python class's instances are nothing the load guard tracks)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not loaded>"


def _stand_in_class(name: str, qualname: str, module: str) -> type:
    return type(name, (_ClassStandIn,), {"__qualname__": qualname, "__module__": module,
                                        "torpor_class": f"{module}.{qualname}",
                                        "torpor_descriptor": CodeDescriptor(
                                            "class", name, qualname, module, "")})


class _DescribePolicy(Policy):
    """load_module_asdict without trusted=True: a name the default policy
    refuses resolves to an inert stand-in class (its instances keep their data,
    as open_session's do) instead of being imported."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.standins: dict[str, type] = {}

    def check_all(self, names: Iterable[str], source: str = "the file") -> None:
        return None                      # every name resolves, to a stand-in if need be

    def resolve(self, module: str, qualname: str, source: str = "the file") -> Any:
        try:
            return super().resolve(module, qualname, source)
        except UnsafeLoadError:
            pass
        name = f"{module}.{qualname}"
        cls = self.standins.get(name)
        if cls is None:
            cls = self.standins[name] = _stand_in_class(qualname.rpartition(".")[2],
                                                        qualname, module)
        self.permit_call(cls, name)      # an inert stand-in: calling it runs nothing
        return cls


class _ClassStandIn(Opaque):
    """Instances of a class saved by value, as load_module_asdict shows them
    without running the class's code: the attributes only (kept as
    open_session's Opaque stand-ins keep them)."""

    torpor_descriptor: CodeDescriptor   # a class attribute of each stand-in class

    def __repr__(self) -> str:
        return f"<{self.torpor_descriptor.module}.{self.torpor_descriptor.qualname} instance (class not loaded)>"


def _rebind(f: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    g = types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__qualname__ = f.__qualname__
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    g.__dict__.update(f.__dict__)
    g.__annotations__ = f.__annotations__
    return g


def _rebind_class(cls: type, namespace: dict[str, Any], seen: Optional[set[int]] = None) -> None:
    """Bind the methods of a class saved by value to the namespace it is loaded
    into (cloudpickle gave them private copies of the globals they used)."""
    seen = seen if seen is not None else set()
    if id(cls) in seen:
        return
    seen.add(id(cls))
    for k, v in list(vars(cls).items()):
        new: object = None
        if isinstance(v, types.FunctionType):
            new = _rebind(v, namespace)
        elif isinstance(v, (staticmethod, classmethod)) and isinstance(v.__func__, types.FunctionType):
            new = type(v)(_rebind(v.__func__, namespace))
        elif isinstance(v, property):
            # unpacked into names typed Any: mypy cannot match a starred generator
            # to property's (fget, fset, fdel, doc), nor the mixed accessor types
            fget: Any
            fset: Any
            fdel: Any
            fget, fset, fdel = (_rebind(f, namespace) if isinstance(f, types.FunctionType) else f
                                for f in (v.fget, v.fset, v.fdel))
            new = property(fget, fset, fdel, v.__doc__)
        elif isinstance(v, type) and v.__module__ == cls.__module__:
            _rebind_class(v, namespace, seen)
        if new is not None:
            try:
                setattr(cls, k, new)
            except (AttributeError, TypeError):
                pass


def _read(filename: Optional[PathOrFile], target: dict[str, Any], *, trusted: bool, describe: bool,
          allow: Iterable[Any] = (), threads: Optional[int] = None, progress: Any = None
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a module dump; returns (header, namespace dict)."""
    if filename is None:
        filename = default_path()
    loader = _Loader(target, trusted, describe)
    kind = _DescribePolicy if describe else Policy
    policy = kind(trusted=trusted, allow=allow, extra=loader.extra, producers=loader.producers)
    seen: dict[str, Any] = {}

    def before_decode(header: dict[str, Any], toc: dict[str, Any]) -> None:
        meta = header.get("metadata")
        if not isinstance(meta, dict) or "torpor_module" not in meta or "module" not in toc:
            raise FormatError("this torpor file is not a module dump (written by "
                              "torpor.dump_module); load it with torpor.load")
        if meta["torpor_module"] not in _READ_VERSIONS:
            raise FormatError(f"module dump version {meta['torpor_module']!r} is not one this torpor reads")
        if meta.get("root") == VARIABLES_ROOT:
            raise FormatError("this module dump is a workspace checkpoint's namespace (its "
                              "large values are stored apart, in the checkpoint area): "
                              "restore it with storage.checkpoints.restore")
        if not describe:
            _check_code(meta, toc, trusted)
        seen["header"] = meta

    ns = pipeline.load(filename, pipeline.LoadOptions(policy, threads=threads, progress=progress),
                       before_decode=before_decode)
    if not isinstance(ns, dict) or not all(isinstance(k, str) for k in ns):
        raise FormatError("the module dump's namespace is not a dict of names")
    loader.finish()
    if loader.names is not None:           # version 2: restored into the target itself
        if ns is not target:
            raise FormatError("the module dump's root is not its namespace")
        ns = {k: target[k] for k in loader.names if k in target}
    return seen["header"], ns


def load_module(filename: Optional[PathOrFile] = None,
                module: Union[types.ModuleType, str, None] = None, *,
                mode: Literal["update", "replace"] = "update", trusted: bool = False,
                allow: Iterable[Any] = (), threads: Optional[int] = None,
                storage_options: Optional[dict[str, Any]] = None, progress: Any = None,
                **kwds: Any) -> Optional[types.ModuleType]:
    """Restore a namespace saved by dump_module into a module: ``module`` (a
    module or a name), default the one recorded in the file. ``filename`` and
    ``storage_options``: as for dump_module (a URL is read in byte ranges);
    ``progress`` as for torpor.load. Returns None for ``__main__`` or a module passed in, else the module (a new
    module object when the recorded one is not importable by name).

    ``mode="update"`` (dill's behaviour): saved names overwrite, other names stay;
    ``mode="replace"``: the namespace becomes exactly what was saved (interpreter
    names such as ``__builtins__`` stay). Code saved by value needs
    ``trusted=True``; without it UnsafeLoadError lists the functions and classes
    the file would define. All or nothing: on any error the module is unchanged."""
    if "main" in kwds:
        module = module if module is not None else kwds.pop("main")
    if kwds:
        raise TypeError(f"load_module got unexpected keyword arguments: {', '.join(sorted(kwds))}")
    filename = storage.locate(filename, storage_options)
    if mode not in ("update", "replace"):
        raise ValueError(f'mode must be "update" or "replace", not {mode!r}')
    passed = module is not None
    mod: Optional[types.ModuleType]
    if passed:
        mod = _resolve_module(module)
    else:
        recorded = _peek_module_name(filename)
        mod = sys.modules.get(recorded)
        if mod is None:
            mod = types.ModuleType(recorded)
    _, ns = _read(filename, vars(mod), trusted=trusted, describe=False, allow=allow, threads=threads,
                  progress=progress)
    target = vars(mod)
    if mode == "replace":
        for k in [k for k in target if not _interpreter_name(k) and k not in ns]:
            del target[k]
    target.update(ns)
    target.setdefault("__builtins__", builtins)     # functions bound here look builtins up in it
    if passed or mod.__name__ == "__main__":
        return None
    return mod


def _peek_module_name(filename: Optional[PathOrFile]) -> str:
    meta = pipeline.read_header(filename if filename is not None else default_path()).get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("module"), str):
        raise FormatError("this torpor file is not a module dump (written by torpor.dump_module)")
    if filename is not None and hasattr(filename, "seek"):
        filename.seek(0)
    return cast(str, meta["module"])     # checked above


def load_module_asdict(filename: Optional[PathOrFile] = None, update: bool = False, *,
                       trusted: bool = False, allow: Iterable[Any] = (),
                       threads: Optional[int] = None,
                       storage_options: Optional[dict[str, Any]] = None,
                       **kwds: Any) -> dict[str, Any]:
    """The saved namespace as a dict; every live module is left untouched
    (``filename`` and ``storage_options`` as for load_module).

    ``update=True`` starts from a copy of the recorded module's current namespace
    (dill's meaning). Without ``trusted=True`` nothing from the file runs:
    functions come back as CodeDescriptor (name, qualname, signature), classes
    saved by value as stand-in classes whose instances keep their attributes,
    and modules not yet imported as unimported references."""
    if "main" in kwds:
        kwds.pop("main")
    if kwds:
        raise TypeError(f"load_module_asdict got unexpected keyword arguments: {', '.join(sorted(kwds))}")
    filename = storage.locate(filename, storage_options)
    result: dict[str, Any] = {}
    if update:
        # dill's meaning: start from the live module, the saved names overwrite
        live = sys.modules.get(_peek_module_name(filename))
        if live is not None:
            result.update(vars(live))
    header, ns = _read(filename, result, trusted=trusted, describe=not trusted, allow=allow,
                       threads=threads)
    result.update(ns)
    result.setdefault("__name__", header["module"])
    if trusted:
        result.setdefault("__builtins__", builtins)  # for the functions bound to this dict
    return result


# --- a workspace's namespace (torpor.workspace.checkpoints) ----------------------
#
# Checkpoints save a namespace as module dumps do (the same selection, skipping,
# code by value, modules by name, one graph), with two differences: the graph's
# root is ``(namespace, variables)`` (a load builds the variables in a dict of
# their own, while the functions saved by value take the live namespace as their
# globals, so nothing of the namespace changes until the caller says), and large
# values may be stored out of the graph by the caller (``external``).

#: The header's "root" of a namespace saved by dump_namespace.
VARIABLES_ROOT = "variables"
#: What the walker writes natively that dump_namespace's ``external`` is offered.
_EXTERNAL_TYPES = (np.ndarray, np.memmap, bytes, bytearray)


class _ExternalHook(_ByValueHook):
    """dump_namespace's reducer_override: dump_module's, and with ``fast_paths``
    the walker also offers it arrays and large bytes and bytearrays (after
    their memo lookup: one shared array is offered once), which go to
    ``external``: a reduction that stands for them, or None to write them in
    the graph as usual."""

    fast_paths = True

    def __init__(self, external: Callable[[Any], Optional[_Reduced]]) -> None:
        super().__init__()
        self.external = external

    def wants(self, cls: type) -> bool:
        return cls in _EXTERNAL_TYPES or super().wants(cls)

    def __call__(self, obj: Any) -> Optional[_Reduced]:
        if type(obj) in _EXTERNAL_TYPES:
            return self.external(obj)
        return super().__call__(obj)


def interpreter_name(name: str) -> bool:
    """Whether ``name`` is interpreter state (``__builtins__``, ``__name__``,
    IPython's ``In``, ``_3``...), which module dumps never save nor remove."""
    return _interpreter_name(name)


def dump_namespace(file: PathOrFile, module: types.ModuleType, *,
                   exclude: Union[str, Iterable[str]] = (),
                   external: Optional[Callable[[Any], Optional[_Reduced]]] = None,
                   probe: Optional[Callable[[str], Any]] = None,
                   before_write: Optional[Callable[[list[str]], Any]] = None,
                   compress: Optional[str] = "lz4", threads: Optional[int] = None,
                   metadata: Optional[Mapping[str, Any]] = None,
                   store: Any = None) -> dict[str, Any]:
    """Internal (torpor.workspace.checkpoints): save the namespace of ``module``
    to ``file`` (a path or a key of ``store``, atomically, or a binary stream)
    as dump_module(on_error="skip") does, with the root ``(namespace,
    variables)`` that load_namespace reads.

    ``external(obj)``: offered every array, and every bytes and bytearray of at
    least 256 KiB (the walker's out-of-band size), once per object; returns a
    reduction ``(callable with a fixed name, args)`` that the graph holds
    instead (a load resolves the name through load_namespace's ``extra``), or
    None. ``probe(name)``: a container (``stream_frame(bytes)``,
    ``add_array(arr, fortran) -> int``, ``add_bytes(obj) -> int``) that the
    variable's dry run (the check that finds what cannot be saved) writes into:
    the caller may hash what it gets. ``before_write(names)``: called with the
    variables that will be saved, after the dry runs and before the graph is
    written; a dict it returns is added to the header's user ``metadata``. Returns ``{"variables": [...], "skipped": {name: {"type",
    "reason"}}, "probes": {name: container}}``."""
    namespace = _select(vars(module), exclude)
    name = module.__name__
    namespace.update(_references(namespace, name, False))

    def hook() -> _ByValueHook:
        return _ExternalHook(external) if external is not None else _ByValueHook()
    skipped: dict[str, dict[str, str]] = {}
    probes: dict[str, Any] = {}
    for k in list(namespace):
        box = probe(k) if probe is not None else None
        try:
            _dry_run(k, namespace[k], module, hook(), box)
        except TorporError as e:
            skipped[k] = {"type": f"{type(namespace[k]).__module__}.{type(namespace[k]).__qualname__}",
                          "reason": str(_variable_error(e))}
            del namespace[k]
            continue
        if box is not None:
            probes[k] = box
    user = dict(metadata or {})
    if before_write is not None:
        more = before_write(list(namespace))
        if isinstance(more, Mapping):
            user.update(more)
    saver = hook()
    ns = _Namespace({})               # restored as the live namespace: the functions' globals
    by_value = ByValue(name, vars(module), ns)
    import cloudpickle
    header = {"torpor_module": MODULE_DUMP_VERSION, "module": name, "root": VARIABLES_ROOT,
              "refimported": False, "python": platform.python_version(),
              "cloudpickle": cloudpickle.__version__, "skipped": skipped, "user": user}
    pipeline.save((ns, namespace), file, pipeline.SaveOptions.of(compress, threads),
                  metadata=header, reducer_override=saver, by_value=by_value, store=store,
                  toc_extra=lambda: {"module": {"code": by_value.saved,
                                                "modules": list(saver.modules)}})
    return {"variables": list(namespace), "skipped": skipped, "probes": probes}


def load_namespace(file: PathOrFile, target: dict[str, Any], *,
                   extra: Optional[Mapping[str, Any]] = None, store: Any = None,
                   threads: Optional[int] = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Internal (torpor.workspace.checkpoints): ``(header metadata, variables)``
    of a namespace dump_namespace saved, loaded trusted (code saved by value
    runs: the caller must trust the file). Functions saved by value take
    ``target`` (the live namespace) as their globals; nothing is put into
    ``target``. ``extra``: what the fixed names of ``external``'s reductions
    resolve to in this load."""
    loader = _Loader(target, True, False)
    policy = Policy(trusted=True, extra={**loader.extra, **(extra or {})},
                    producers=loader.producers)
    seen: dict[str, Any] = {}

    def before_decode(header: dict[str, Any], toc: dict[str, Any]) -> None:
        meta = header.get("metadata")
        if not isinstance(meta, dict) or meta.get("torpor_module") != MODULE_DUMP_VERSION \
                or meta.get("root") != VARIABLES_ROOT or "module" not in toc:
            raise FormatError("this torpor file is not a workspace namespace (written by "
                              "a checkpoint)")
        _check_code(meta, toc, True)
        seen["header"] = meta

    root = pipeline.load(file, pipeline.LoadOptions(policy, threads=threads),
                         before_decode=before_decode, store=store)
    if type(root) is not tuple or len(root) != 2 or root[0] is not target \
            or type(root[1]) is not dict or not all(type(k) is str for k in root[1]):
        raise FormatError("the namespace's root is not (namespace, variables)")
    loader.finish()
    return seen["header"], root[1]


# --- dill's deprecated names ---------------------------------------------------

def dump_session(filename: Optional[PathOrFile] = None,
                 main: Union[types.ModuleType, str, None] = None, byref: bool = False,
                 **kwds: Any) -> dict[str, dict[str, str]]:
    """Deprecated (as in dill): use dump_module(filename, module=main, refimported=byref)."""
    warnings.warn("torpor.dump_session is deprecated: use torpor.dump_module", DeprecationWarning,
                  stacklevel=2)
    return dump_module(filename, module=main, refimported=byref, **kwds)


def load_session(filename: Optional[PathOrFile] = None,
                 main: Union[types.ModuleType, str, None] = None,
                 **kwds: Any) -> Optional[types.ModuleType]:
    """Deprecated (as in dill): use load_module(filename, module=main)."""
    warnings.warn("torpor.load_session is deprecated: use torpor.load_module", DeprecationWarning,
                  stacklevel=2)
    return load_module(filename, module=main, **kwds)


# Files name these under the module they were first written from (torpor.modules),
# wherever the code lives now.
for _obj, _name in ((make_code, _MAKE_CODE), (import_module, _IMPORT),
                    (module_attribute, _ATTR), (SavedFile, _FILE), (namespace, _NAMESPACE),
                    (CodeDescriptor, "torpor.modules.CodeDescriptor"),
                    (_ModuleRef, "torpor.modules._ModuleRef"),
                    (_ClassStandIn, "torpor.modules._ClassStandIn")):
    fix_global_name(_obj, _name)
