"""Saved workflows: Python source defining ``def run(...)`` or ``async def
run(...)``, kept in the workspace storage with versions, and called from the
code a Session runs.

    await session.add_workflow("fetch_json", '''
    async def run(url: str, timeout: float = 10.0) -> dict:
        "Fetch a URL and parse its JSON."
        import json
        return json.loads(tools.curl(url=url, max_time=timeout))
    ''', description="")
    await session.run("workflows.fetch_json(url='https://example.org/x.json')")

Storage: an area of its own beside the artifacts (``storage.area("workflows")``:
``<root>/workflows/NAME@info.json`` and ``NAME@<token>.txt`` in a folder,
``workflows:`` keys in Redis), so every save is a new version with its
description and metadata (the parameters), committed atomically; earlier
versions stay readable (``get(name, version=)``). A local folder's loose
``workflows/NAME.py`` files (py-code-mode's layout) are workflows too: listed,
searched and run, read fresh from the file each time; a saved workflow of the
same name takes precedence.

``add`` checks the source without running it: it must parse, compile, and
define ``run`` at top level; its parameters (names, annotations, defaults as
source text) come from ``run``'s signature, the description from the argument
or else ``run``'s docstring (else the module's).
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import keyword
import linecache
import os
import threading
from typing import Any, Optional

from ...errors import ArtifactNotFoundError
from ..executors.base import NAMESPACE_MODULE
from ..executors.inprocess import raise_in_thread

__all__ = ["Workflows", "WorkflowsNamespace", "WorkflowError", "check_workflow_name",
           "inspect_source", "RESERVED"]

#: What the injected ``workflows`` object answers itself: no workflow may be
#: named so (``workflows.list`` must stay the listing).
RESERVED = frozenset({"list", "get", "add", "create", "remove", "delete", "search", "invoke",
                      "names", "versions"})

#: The largest workflow source accepted (a workflow is code, not data: save data
#: as an artifact).
MAX_SOURCE = 1 << 20

#: The longest workflow name (a file name, and an artifact name, must fit).
MAX_NAME = 200

_LOOSE = ".py"


class WorkflowError(ValueError):
    """A workflow's name or source is not acceptable (the message says why)."""


def check_workflow_name(name: Any) -> str:
    """``name`` if it can name a workflow: an identifier, not a keyword, not
    starting with ``_``, not one of the ``workflows`` object's own methods."""
    if not isinstance(name, str):
        raise TypeError(f"a workflow name is a str, not {type(name).__name__}")
    if len(name) > MAX_NAME:
        raise WorkflowError(f"workflow name {name[:40]!r}... is {len(name)} characters long; "
                            f"the limit is {MAX_NAME}")
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise WorkflowError(f"workflow name {name!r} is not a Python identifier (ASCII "
                            f"letters, digits and '_', not starting with a digit, not a "
                            f"keyword): code calls it as workflows.NAME(...)")
    if name.startswith("_"):
        raise WorkflowError(f"workflow name {name!r} starts with '_'; such names are kept "
                            f"for the workflows object itself")
    if name in RESERVED:
        raise WorkflowError(f"workflow name {name!r} would shadow workflows.{name}(); "
                            f"choose another (reserved: {', '.join(sorted(RESERVED))})")
    return name


def _unparse(node: Optional[ast.AST]) -> Optional[str]:
    return None if node is None else ast.unparse(node)


def _parameters(fn: ast.AsyncFunctionDef | ast.FunctionDef) -> list[dict[str, Any]]:
    a = fn.args
    out: list[dict[str, Any]] = []
    positional = [*a.posonlyargs, *a.args]
    defaults: list[Optional[ast.expr]] = [None] * (len(positional) - len(a.defaults))
    defaults += list(a.defaults)
    for i, (arg, d) in enumerate(zip(positional, defaults)):
        kind = "positional_only" if i < len(a.posonlyargs) else "positional_or_keyword"
        out.append({"name": arg.arg, "annotation": _unparse(arg.annotation),
                    "default": _unparse(d), "required": d is None, "kind": kind})
    if a.vararg is not None:
        out.append({"name": a.vararg.arg, "annotation": _unparse(a.vararg.annotation),
                    "default": None, "required": False, "kind": "var_positional"})
    for arg, kd in zip(a.kwonlyargs, a.kw_defaults):
        out.append({"name": arg.arg, "annotation": _unparse(arg.annotation),
                    "default": _unparse(kd), "required": kd is None, "kind": "keyword_only"})
    if a.kwarg is not None:
        out.append({"name": a.kwarg.arg, "annotation": _unparse(a.kwarg.annotation),
                    "default": None, "required": False, "kind": "var_keyword"})
    return out


def inspect_source(source: Any, name: str = "workflow") -> dict[str, Any]:
    """What a workflow's source says of itself, found without running it:
    ``parameters`` (run's), ``is_async``, ``docstring`` (run's, else the
    module's). WorkflowError if it does not parse or defines no ``run``."""
    if not isinstance(source, str):
        raise TypeError(f"workflow {name!r}: the source is a str of Python code, not "
                        f"{type(source).__name__}")
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE:
        raise WorkflowError(f"workflow {name!r}: the source is over {MAX_SOURCE >> 20} MiB; "
                            f"keep data in artifacts and load it from the workflow")
    filename = f"<workflow {name}>"
    try:
        tree = ast.parse(source, filename)
        # compile too (never run): it catches what parsing lets through, such as
        # 'return' outside a function or a nonlocal at module level
        compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        raise WorkflowError(f"workflow {name!r} does not compile ({where}: {e.msg}); "
                            f"nothing was saved") from None
    except ValueError as e:          # e.g. a NUL byte in the source
        raise WorkflowError(f"workflow {name!r} does not compile ({e}); nothing was saved") \
            from None
    except (MemoryError, RecursionError):
        # the parser's own limits: an expression nested thousands deep
        raise WorkflowError(f"workflow {name!r} is nested too deeply for Python's parser; "
                            f"nothing was saved") from None
    runs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name == "run"]
    if not runs:
        raise WorkflowError(f"workflow {name!r} defines no top-level run function: write "
                            f"'def run(...):' or 'async def run(...):' (its parameters are "
                            f"the workflow's)")
    fn = runs[-1]                    # the last definition is the one that counts
    doc = ast.get_docstring(fn) or ast.get_docstring(tree) or ""
    return {"parameters": _parameters(fn), "is_async": isinstance(fn, ast.AsyncFunctionDef),
            "docstring": doc}


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "source"}


def _signature_text(params: list[dict[str, Any]]) -> str:
    parts = []
    for p in params:
        s = {"var_positional": "*", "var_keyword": "**"}.get(p["kind"], "") + p["name"]
        if p["annotation"]:
            s += f": {p['annotation']}"
        if p["default"] is not None:
            s += f" = {p['default']}"
        parts.append(s)
    return ", ".join(parts)


class Workflows:
    """The saved workflows of one workspace storage (``storage.workflows``).
    ``area``: the Artifacts they are kept in; ``folder``: a local folder whose
    loose ``*.py`` files are workflows too (None: none)."""

    def __init__(self, area: Any, folder: Optional[str] = None) -> None:
        self.area = area
        self.folder = folder
        self._lock = threading.Lock()
        self._index: Optional[tuple[Any, Any]] = None

    @classmethod
    def for_storage(cls, storage: Any) -> "Workflows":
        area = storage.area("workflows", keep_versions=storage.artifacts.keep_versions)
        root = getattr(storage, "root", None)
        folder = os.path.join(root, "workflows") \
            if isinstance(root, str) and "://" not in root else None
        return cls(area, folder)

    def __repr__(self) -> str:
        return f"<workflows of {self.area!r}>"

    # --- reading -------------------------------------------------------------------

    def _loose_path(self, name: str) -> Optional[str]:
        if self.folder is None:
            return None
        path = os.path.join(self.folder, name + _LOOSE)
        return path if os.path.isfile(path) else None

    def _loose_names(self) -> list[str]:
        if self.folder is None:
            return []
        try:
            files = os.listdir(self.folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for f in files:
            if f.endswith(_LOOSE):
                try:
                    out.append(check_workflow_name(f[:-len(_LOOSE)]))
                except WorkflowError:
                    continue         # not a workflow's file name (_helpers.py, my-notes.py)
        return out

    def _from_loose(self, name: str, path: str) -> dict[str, Any]:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        facts = inspect_source(source, name)
        st = os.stat(path)
        return {"name": name, "description": facts["docstring"].strip().split("\n\n")[0],
                "parameters": facts["parameters"], "is_async": facts["is_async"],
                "docstring": facts["docstring"], "version": None, "file": path,
                "updated_at": st.st_mtime, "source": source}

    def _from_record(self, info: dict[str, Any], source: Optional[str]) -> dict[str, Any]:
        meta = info.get("metadata") or {}
        out = {"name": info["name"], "description": info["description"],
               "parameters": meta.get("parameters", []), "is_async": meta.get("is_async"),
               "docstring": meta.get("docstring", ""), "version": info["version"],
               "created_at": info["created_at"], "updated_at": info["updated_at"]}
        if source is not None:
            out["source"] = source
        return out

    def get(self, name: str, version: Optional[int] = None) -> Optional[dict[str, Any]]:
        """Workflow ``name`` (its newest version, or ``version``) with its
        ``source``, or None if there is none."""
        check_workflow_name(name)
        for _ in range(3):           # a save that prunes the version between the reads: again
            try:
                kept = self.area.versions(name)
            except ArtifactNotFoundError:
                break
            info = kept[-1] if version is None else \
                next((v for v in kept if v["version"] == version), None)
            if info is None:
                return None          # that version is not kept
            try:
                # the version's own source, with its own description and parameters
                return self._from_record(info, self.area.load(name, version=info["version"]))
            except ArtifactNotFoundError:
                continue
        if version is not None:
            return None
        path = self._loose_path(name)
        if path is None:
            return None
        try:
            return self._from_loose(name, path)
        except FileNotFoundError:    # removed since
            return None

    def stamp(self, name: str) -> Optional[tuple[Any, ...]]:
        """What changes when workflow ``name`` changes (its version and time of
        saving, or its file's time), read without its source; None if there is
        no such workflow."""
        check_workflow_name(name)
        info = self.area.get(name)
        if info is not None:
            return (info["version"], info["updated_at"])
        path = self._loose_path(name)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:    # removed since
            return None
        return (None, st.st_mtime_ns, st.st_size)

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every kept version of saved workflow ``name`` (oldest first, no source)."""
        check_workflow_name(name)
        if not self.area.exists(name):
            return []
        return [self._from_record(i, None) for i in self.area.versions(name)]

    def list(self) -> list[dict[str, Any]]:
        """Every workflow's summary (name, description, parameters...; no
        source), sorted by name. A loose file that does not compile is left out
        with a warning naming it."""
        out = {i["name"]: self._from_record(i, None) for i in self.area.list()}
        broken = []
        for name in self._loose_names():
            if name in out:
                continue
            path = self._loose_path(name)
            if path is None:
                continue
            try:
                out[name] = _summary(self._from_loose(name, path))
            except (WorkflowError, OSError, UnicodeDecodeError) as e:
                broken.append(f"{path}: {e}")
        if broken:
            import warnings
            warnings.warn("left out workflow file(s) that cannot be used: " + "; ".join(broken),
                          UserWarning, stacklevel=2)
        return [out[k] for k in sorted(out)]

    def search(self, query: str, limit: int = 5) -> builtins.list[dict[str, Any]]:
        """The workflows that best match ``query`` (library/search.py), best
        first, as ``list`` gives them."""
        from .search import Index, default_embedder
        items = {w["name"]: w for w in self.list()}
        embedder = default_embedder()
        key = (tuple((n, w.get("version"), w.get("updated_at")) for n, w in items.items()),
               id(embedder))
        with self._lock:
            if self._index is None or self._index[0] != key:
                docs = [(n, {"name": n, "description": w["description"],
                             "parameters": " ".join(p["name"] for p in w["parameters"]),
                             "doc": w.get("docstring", "")}) for n, w in items.items()]
                self._index = (key, Index(docs, embedder=embedder))
            index = self._index[1]
        return [dict(items[k], score=s) for k, s in index.search(query, limit)]

    # --- writing -------------------------------------------------------------------

    def add(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        """Save ``source`` as the newest version of workflow ``name`` and return
        its summary. The source is checked (parses, compiles, defines ``run``),
        never run; on any error nothing is saved."""
        check_workflow_name(name)
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, not {type(description).__name__}")
        facts = inspect_source(source, name)
        description = description.strip() or facts["docstring"].strip().split("\n\n")[0]
        info = self.area.save(name, source, description, metadata=facts, format="text")
        return self._from_record(info, None)

    create = add

    def remove(self, name: str) -> bool:
        """Remove workflow ``name`` (every saved version, and its loose file):
        True if there was one."""
        check_workflow_name(name)
        removed = self.area.delete(name)
        path = self._loose_path(name)
        if path is not None:
            try:
                os.unlink(path)
                removed = True
            except FileNotFoundError:        # removed by someone else meanwhile
                pass
        return bool(removed)

    delete = remove


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _run_coroutine(awaitable: Any) -> Any:
    """Run ``awaitable`` to its end from synchronous code: with
    ``asyncio.run`` in this thread, or, when this thread already runs an event
    loop (code with top-level ``await``, an inline executor), on a helper thread
    with a loop of its own, waited for in short steps so that a timeout raised
    in this thread lands; the helper is then stopped too (its task cancelled,
    the same exception raised in it), so no workflow runs on after its run."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(awaitable))
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["value"] = asyncio.run(_awaited(awaitable))
        except BaseException as e:         # noqa: B036 - re-raised in the caller
            box["error"] = e
    t = threading.Thread(target=drive, name="torpor-workflow", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.05)
    except BaseException as e:
        # interrupted (a timeout, the session closing): stop the workflow as well,
        # whether it awaits (the exception ends its task) or spins in Python
        while t.is_alive():
            if t.ident is not None:
                raise_in_thread(t.ident, type(e))
            t.join(0.05)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Workflow:
    """``workflows.NAME``: call it with the workflow's parameters."""

    def __init__(self, owner: "WorkflowsNamespace", name: str) -> None:
        self._owner = owner
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(self._name, args, kwargs)

    def __reduce__(self) -> Any:
        # a handle on a live namespace: a checkpoint leaves it out with this reason
        raise TypeError(f"workflows.{self._name} is a handle on the session's workflows and "
                        f"is not saved; call workflows.{self._name}(...) again after a restore")

    def __repr__(self) -> str:
        try:
            w = self._owner._workflows.get(self._name)
        except Exception as e:       # a loose file that no longer compiles...
            return f"<workflow {self._name} (unusable: {e})>"
        if w is None:
            return f"<workflow {self._name} (removed)>"
        kind = "async " if w["is_async"] else ""
        return f"<workflow {kind}{self._name}({_signature_text(w['parameters'])})>"

    @property
    def __doc__(self) -> Optional[str]:  # type: ignore[override]
        try:
            w = self._owner._workflows.get(self._name)
        except Exception:
            return None
        return None if w is None else (w["docstring"] or w["description"])


class WorkflowsNamespace:
    """``workflows`` in the code a Session runs: ``workflows.NAME(**kwargs)``
    runs a workflow and returns its result (an async one is run to its end);
    ``await workflows.invoke(name, **kwargs)`` does the same from async code;
    ``list()``, ``get(name)``, ``search(query)``, ``add(name, source,
    description)``, ``remove(name)`` manage them.

    A workflow runs in a module namespace of its own that sees what the code
    sees (``artifacts``, ``tools``, ``workflows``, ``deps``); its definitions do
    not spill into the code's variables. Compiled functions are cached per
    version: a workflow saved again is picked up at its next call."""

    def __init__(self, workflows: Workflows, namespace: dict[str, Any]) -> None:
        self._workflows = workflows
        self._namespace = namespace
        self._compiled: dict[str, tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        names = [w["name"] for w in self._workflows.list()]
        return f"<workflows: {', '.join(names) if names else 'none yet'}>"

    def __dir__(self) -> list[str]:
        return sorted(set(RESERVED) | {w["name"] for w in self._workflows.list()})

    def __reduce__(self) -> Any:
        raise TypeError("the workflows object belongs to the running session and is not "
                        "saved; every session injects its own")

    def __getattr__(self, name: str) -> _Workflow:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            check_workflow_name(name)
            stamp = self._workflows.stamp(name)
        except Exception as e:       # attribute lookup says AttributeError, whatever the cause
            raise AttributeError(f"workflows.{name[:60]}: {e}") from None
        if stamp is None:
            have = [w["name"] for w in self._workflows.list()]
            raise AttributeError(f"no workflow named {name!r}; there are: "
                                 f"{', '.join(have) if have else 'none'} "
                                 f"(workflows.add(name, source) saves one)")
        return _Workflow(self, name)

    # --- management, as the Session's --------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        return self._workflows.list()

    def get(self, name: str, version: Optional[int] = None) -> Optional[dict[str, Any]]:
        return self._workflows.get(name, version)

    def versions(self, name: str) -> builtins.list[dict[str, Any]]:
        return self._workflows.versions(name)

    def search(self, query: str, limit: int = 5) -> builtins.list[dict[str, Any]]:
        return self._workflows.search(query, limit)

    def add(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        return self._workflows.add(name, source, description)

    create = add

    def remove(self, name: str) -> bool:
        self._compiled.pop(name, None)
        return self._workflows.remove(name)

    delete = remove

    def names(self) -> builtins.list[str]:
        return [w["name"] for w in self._workflows.list()]

    # --- running ---------------------------------------------------------------

    def _function(self, name: str) -> Any:
        stamp = self._workflows.stamp(name)
        cached = self._compiled.get(name)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        w = self._workflows.get(name)
        if w is None or stamp is None:
            raise LookupError(f"no workflow named {name!r} (it was removed?)")
        ns: dict[str, Any] = {"__name__": NAMESPACE_MODULE, "__builtins__": builtins,
                              "__doc__": w["docstring"] or None}
        for k in ("artifacts", "tools", "workflows", "deps"):
            if k in self._namespace:
                ns[k] = self._namespace[k]
        filename = w.get("file") or f"<workflow {name} v{w['version']}>"
        # tracebacks through the workflow show its lines
        linecache.cache[filename] = (len(w["source"]), None, w["source"].splitlines(True),
                                     filename)
        code = compile(w["source"], filename, "exec", dont_inherit=True)
        exec(code, ns)
        fn = ns.get("run")
        if not callable(fn):
            raise WorkflowError(f"workflow {name!r}: running its source left no callable run")
        self._compiled[name] = (stamp, fn)
        return fn

    def _bind(self, name: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            params = _signature_text(self._workflows.get(name)["parameters"])  # type: ignore[index]
            raise TypeError(f"workflow {name}({params}): {e}") from None

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = self._function(name)
        self._bind(name, fn, args, kwargs)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return _run_coroutine(result)
        return result

    async def invoke(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run workflow ``name`` from async code: ``await workflows.invoke(...)``."""
        check_workflow_name(name)
        fn = self._function(name)
        self._bind(name, fn, args, kwargs)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result
