"""The workspace's tools: command-line programs described in YAML
(py-code-mode's format, toolspec.py), one definition per file in
``{root}/tools/`` (or a Redis hash), offered to code as ``tools.NAME(...)``.

- ``Tools``: the definitions of one place, read again whenever a file changes
  (a cheap listing per use), with ``list``, ``get``, ``search``, ``problems``,
  ``add`` and ``remove``. A malformed file is a problem (file, line, what is
  wrong; a ``ToolWarning`` when it is read) and never hides the other tools.
- ``ToolsNamespace``: the ``tools`` object in executed code; calling a tool
  checks the arguments against its schema, then runs the program without a
  shell, with the tool's timeout (the whole process group is killed at the
  end), and returns its stdout; a failure raises ``ToolError`` with stderr.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import math
import os
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from typing import Any, Optional, Union

from ...errors import ToolError, brief
from .toolspec import (NAMESPACE_NAMES, PROXY_NAMES, ArgumentError, SpecError, ToolSpec,
                       about, is_name, line_of, parse_data, parse_text, read_yaml, yaml_module)

__all__ = ["Tools", "ToolsNamespace", "ToolSpec", "ToolError", "ToolArgumentError",
           "ToolNotFoundError", "ToolTimeoutError", "ToolWarning"]

#: How much of a failed tool's stderr its ToolError's message keeps (the end:
#: where programs say what went wrong); the whole of it is ``error.stderr``.
STDERR_IN_MESSAGE = 2000
_SUFFIXES = (".yaml", ".yml")
#: The longest a running tool is waited for at once (see ``run``).
WAIT_SLICE = 0.1
#: A local file changed this recently is compared by its bytes (``_LocalFolder.scan``).
RECENT_NS = 2_000_000_000


class ToolWarning(UserWarning):
    """A tool definition could not be read; the message names the file and
    the line. The other tools are not affected."""


class ToolArgumentError(ToolError, TypeError):
    """A call's arguments do not fit the tool's schema (nothing was run)."""


class ToolNotFoundError(ToolError, KeyError):
    """There is no tool of that name; the message lists the tools there are."""

    def __str__(self) -> str:             # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ToolTimeoutError(ToolError, TimeoutError):
    """A tool ran past its timeout and was killed with its process group."""


# --- where the definitions are ----------------------------------------------------------

class _LocalFolder:
    """``*.yaml`` / ``*.yml`` files in a folder; a missing folder has none."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.recheck = 0.0          # a listing of a local folder costs microseconds

    def scan(self) -> dict[str, Any]:
        """Each definition's key (file name) and a token that changes with it:
        its mtime, size and inode, and its bytes while it is recent (a file's
        mtime ticks coarsely, so two edits of one size a millisecond apart
        could share it, as git's "racily clean" files do)."""
        try:
            entries = list(os.scandir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, Any] = {}
        recent = time.time_ns() - RECENT_NS
        for e in entries:
            if e.name.endswith(_SUFFIXES) and not e.name.startswith("."):
                try:
                    st = e.stat()
                    data = self.read(e.name, None) if st.st_mtime_ns > recent else None
                except FileNotFoundError:       # removed while listed
                    continue
                out[e.name] = (st.st_mtime_ns, st.st_size, st.st_ino, data)
        return out

    def read(self, key: str, token: Any) -> bytes:
        if token is not None and token[3] is not None:
            return bytes(token[3])
        with open(os.path.join(self.path, key), "rb") as f:
            return f.read()

    def label(self, key: str) -> str:
        return os.path.join(self.path, key)

    def write(self, key: str, text: str) -> None:
        """Atomically: a reader sees the old file or the new one, never half."""
        os.makedirs(self.path, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tool-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.path, key))
        except BaseException:
            os.unlink(tmp)
            raise

    def delete(self, key: str) -> bool:
        try:
            os.unlink(os.path.join(self.path, key))
            return True
        except FileNotFoundError:
            return False


class _FsspecFolder:
    """The same folder on an fsspec filesystem (``s3://bucket/prefix/tools``).
    A listing is a request there, so it is made at most every ``recheck``
    seconds (none for the in-process ``memory://``)."""

    def __init__(self, url: str, storage_options: Optional[dict[str, Any]]) -> None:
        from ...storage.fsspec_store import filesystem, mtime, protocols
        self.fs, path = filesystem(url, storage_options)
        self.path, self.url, self._mtime = path, url.rstrip("/"), mtime
        self.recheck = 0.0 if "memory" in protocols(self.fs) else 2.0

    def scan(self) -> dict[str, Any]:
        self.fs.invalidate_cache(self.path)
        try:
            entries = self.fs.ls(self.path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, Any] = {}
        for info in entries:
            key = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") == "file" and key.endswith(_SUFFIXES) and not key.startswith("."):
                out[key] = (info.get("size"), self._mtime(info), info.get("ETag"))
        return out

    def read(self, key: str, token: Any) -> bytes:
        return bytes(self.fs.cat_file(f"{self.path}/{key}"))

    def label(self, key: str) -> str:
        return f"{self.url}/{key}"

    def write(self, key: str, text: str) -> None:
        self.fs.pipe_file(f"{self.path}/{key}", text.encode("utf-8"))    # one PUT: whole or none

    def delete(self, key: str) -> bool:
        try:
            self.fs.rm_file(f"{self.path}/{key}")
            return True
        except FileNotFoundError:
            return False


class _RedisHash:
    """A Redis hash: field = tool name, value = the YAML text. One HGETALL per
    check (the values are the tokens: small, and read in the same round trip)."""

    def __init__(self, client: Any, key: str) -> None:
        self.client, self.key = client, key
        self.recheck = 0.0

    def scan(self) -> dict[str, Any]:
        return {(k.decode() if isinstance(k, bytes) else str(k)): v
                for k, v in self.client.hgetall(self.key).items()}

    def read(self, key: str, token: Any) -> bytes:
        return token if isinstance(token, bytes) else str(token).encode("utf-8")

    def label(self, key: str) -> str:
        return f"Redis hash {self.key} field {key!r}"

    def write(self, key: str, text: str) -> None:
        self.client.hset(self.key, key, text.encode("utf-8"))

    def delete(self, key: str) -> bool:
        return bool(self.client.hdel(self.key, key))


_Source = Union[_LocalFolder, _FsspecFolder, _RedisHash]


# --- the definitions of one place -------------------------------------------------------

@dataclasses.dataclass
class _Loaded:
    """One read of every definition: good specs, problems, and which keys
    (files) define each name (good or broken), for add/remove."""

    specs: dict[str, ToolSpec]
    broken: dict[str, str]                 # tool name (or file stem) -> its problem
    problems: list[str]
    keys: dict[str, list[str]]
    index: Any = None                      # (embedder, search index), made on first search


class Tools:
    """The tool definitions of one place (a folder, an fsspec folder, a Redis
    hash). Every use checks whether they changed (a listing; a Redis HGETALL)
    and reads only the files that did."""

    def __init__(self, source: _Source) -> None:
        self._source = source
        self._lock = threading.RLock()
        self._tokens: dict[str, Any] = {}
        #: key -> (token, the spec or what is wrong, the name it defines, its text)
        self._parsed: dict[str, tuple[Any, Union[ToolSpec, SpecError], str, str]] = {}
        self._loaded: Optional[_Loaded] = None
        self._checked = -math.inf
        self._warned: set[str] = set()

    @classmethod
    def for_storage(cls, storage: Any) -> "Tools":
        """The tools of a workspace storage: ``{root}/tools`` of a FileStorage
        (a local folder or an fsspec URL), the hash ``{namespace}tools`` of a
        RedisStorage."""
        if getattr(storage, "redis", None) is not None and hasattr(storage, "namespace"):
            return cls(_RedisHash(storage.redis, f"{storage.namespace}tools"))
        root = str(storage.root)
        if "://" in root:
            return cls(_FsspecFolder(f"{root}/tools", getattr(storage, "storage_options", None)))
        return cls(_LocalFolder(os.path.join(root, "tools")))

    @classmethod
    def from_folder(cls, path: Union[str, "os.PathLike[str]"],
                    storage_options: Optional[dict[str, Any]] = None) -> "Tools":
        """The tools of a folder (a local path, or an fsspec URL)."""
        p = os.fspath(path)
        if "://" in p and not p.startswith("file://"):
            return cls(_FsspecFolder(p, storage_options))
        return cls(_LocalFolder(os.path.abspath(p.removeprefix("file://"))))

    def __repr__(self) -> str:
        where = getattr(self._source, "url", None) or getattr(self._source, "path", None) \
            or self._source.label("*")
        return f"<Tools {where}>"

    # --- reading ------------------------------------------------------------------------

    def _current(self) -> _Loaded:
        """The definitions as they are now: read again if any file changed."""
        with self._lock:
            now = time.monotonic()
            if self._loaded is not None and now - self._checked < self._source.recheck:
                return self._loaded
            tokens = self._source.scan()
            self._checked = now
            if self._loaded is None or tokens != self._tokens:
                self._loaded = self._load(tokens)
                self._tokens = tokens
            return self._loaded

    def refresh(self) -> None:
        """Check the definitions at the next use, whatever ``recheck`` says."""
        self._checked = -math.inf

    def _load(self, tokens: dict[str, Any]) -> _Loaded:
        parsed = {}
        for key in sorted(tokens):
            old = self._parsed.get(key)
            parsed[key] = old if old is not None and old[0] == tokens[key] \
                else (tokens[key], *self._parse(key, tokens[key]))
        self._parsed = parsed
        specs: dict[str, ToolSpec] = {}
        broken: dict[str, str] = {}
        problems: list[str] = []
        keys: dict[str, list[str]] = {}
        for key, (_, result, name, _) in parsed.items():
            keys.setdefault(name, []).append(key)
            if isinstance(result, SpecError):
                message = f"{self._source.label(key)}, line {result.line}: {result.message}"
                problems.append(message)
                broken.setdefault(name, message)
        for name, where in keys.items():
            good = [(k, r) for k in where for r in [parsed[k][1]] if isinstance(r, ToolSpec)]
            if len(good) == 1:
                specs[name] = good[0][1]
            elif len(good) > 1:
                second = good[1][0]
                others = [self._source.label(k) for k, _ in good if k != second]
                message = (f"{self._source.label(second)}, line "
                           f"{line_of(parsed[second][3], ('name',))}: the tool {name!r} is also "
                           f"defined in {', '.join(others)}; none of them is loaded: rename or "
                           f"remove all but one")
                problems.append(message)
                broken[name] = message
        for message in problems:
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(message, ToolWarning, stacklevel=2)
        return _Loaded(specs, broken, problems, keys)

    def _parse(self, key: str, token: Any) -> tuple[Union[ToolSpec, SpecError], str, str]:
        """A file's spec (or what is wrong with it), the name it defines (its
        stem when it is too broken to say) and its text."""
        stem = key.rsplit(".", 1)[0] if "." in key and not isinstance(self._source, _RedisHash) \
            else key
        label = self._source.label(key)
        try:
            data = self._source.read(key, token)
        except FileNotFoundError:                   # removed since listed: next check drops it
            return SpecError("the file was removed while it was read"), stem, ""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = SpecError(f"not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start}")
            bad.line = data.count(b"\n", 0, e.start) + 1
            return bad, stem, ""
        try:
            spec = parse_text(text, label)
        except SpecError as e:
            return e, _guess_name(text, stem), text
        if isinstance(self._source, _RedisHash) and spec.name != key:
            wrong = SpecError(f"the field is {key!r} but the definition's name is "
                              f"{spec.name!r}; add tools with Tools.add, which names the field")
            wrong.line = line_of(text, ("name",))
            return wrong, key, text
        return spec, spec.name, text

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every good tool's info, sorted by name (``ToolSpec.info``)."""
        loaded = self._current()
        return [loaded.specs[n].info() for n in sorted(loaded.specs)]

    def names(self) -> builtins.list[str]:
        """The names of the good tools, sorted."""
        return sorted(self._current().specs)

    def get(self, name: str) -> ToolSpec:
        """The tool ``name``; ToolError with the problem if its definition is
        broken, ToolNotFoundError (a KeyError) naming the tools there are."""
        loaded = self._current()
        spec = loaded.specs.get(name)
        if spec is not None:
            return spec
        if name in loaded.broken:
            raise ToolError(f"the tool {name!r} cannot be used: {loaded.broken[name]}")
        there = ", ".join(sorted(loaded.specs)) or "none"
        raise ToolNotFoundError(f"there is no tool {name!r} in {self!r}; the tools are: {there}")

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a tool, good or broken (``get`` says which)."""
        loaded = self._current()
        return name in loaded.specs or name in loaded.broken

    def problems(self) -> builtins.list[str]:
        """One line per definition that could not be used: where (file, line)
        and what is wrong."""
        return list(self._current().problems)

    def search(self, query: str, limit: int = 10) -> builtins.list[dict[str, Any]]:
        """The tools that best match ``query`` (BM25 over names, descriptions,
        tags, parameters and recipes), best first, as ``list()``'s dicts with
        the match's ``score``."""
        if not isinstance(query, str):
            raise TypeError(f"search takes a query string, not {type(query).__name__}")
        from .search import Index, default_embedder
        loaded = self._current()
        embedder = default_embedder()        # TORPOR_EMBEDDING_MODEL's, blended with BM25
        with self._lock:
            if loaded.index is None or loaded.index[0] is not embedder:
                loaded.index = (embedder, Index([(n, s.search_doc())
                                                 for n, s in sorted(loaded.specs.items())],
                                                embedder=embedder))
            index = loaded.index[1]
        return [dict(loaded.specs[name].info(), score=s) for name, s in index.search(query, limit)
                if name in loaded.specs]

    # --- writing ------------------------------------------------------------------------

    def add(self, definition: Union[str, dict[str, Any]]) -> dict[str, Any]:
        """Write a tool (YAML text, or the same as a dict), checked first (a
        ToolError says what is wrong, and nothing is written); it replaces the
        definition of that name (and removes duplicates of it). Returns its info."""
        yaml = yaml_module()
        try:
            if isinstance(definition, str):
                text = definition
            elif isinstance(definition, dict):
                parse_data(definition, "the added tool")      # its errors, before dumping
                text = yaml.safe_dump(definition, sort_keys=False, allow_unicode=True)
            else:
                raise TypeError(f"add takes a tool's YAML text or a dict, not "
                                f"{type(definition).__name__}")
            spec = parse_text(text, "the added tool")          # exactly what will be read
        except SpecError as e:
            raise ToolError(f"the tool was not added: line {e.line}: {e.message}") from None
        except yaml.YAMLError as e:
            raise ToolError(f"the tool was not added: it cannot be written as YAML ({e}); use "
                            f"lists, dicts, str, int, float and bool") from None
        with self._lock:
            loaded = self._current()
            where = loaded.keys.get(spec.name, [])
            key = spec.name if isinstance(self._source, _RedisHash) else \
                (where[0] if where else f"{spec.name}.yaml")
            if not where and key in self._tokens:
                raise ToolError(f"{self._source.label(key)} already defines another tool "
                                f"({self._parsed[key][2]!r}); rename it first")
            self._source.write(key, text)
            for other in where[1:]:
                self._source.delete(other)
            self.refresh()
        return dataclasses.replace(spec, source=self._source.label(key)).info()

    def remove(self, name: str) -> bool:
        """Remove every definition of ``name`` (good or broken); False if there
        was none."""
        with self._lock:
            removed = [self._source.delete(k) for k in self._current().keys.get(name, [])]
            self.refresh()
        return any(removed)


def _guess_name(text: str, stem: str) -> str:
    """The ``name`` of a definition that is wrong elsewhere, so that calling it
    by that name says what is wrong; the file's stem when there is none."""
    try:
        data = read_yaml(text)
    except Exception:                      # a syntax error: the stem it is
        return stem
    name = data.get("name") if isinstance(data, dict) else None
    return str(name) if is_name(name) else stem


# --- running a tool ---------------------------------------------------------------------

def run(spec: ToolSpec, argv: list[str], label: str) -> str:
    """Run ``argv`` (no shell; stdin empty) with ``spec``'s timeout in a
    process group of its own; its stdout, or ToolError / ToolTimeoutError.
    Whatever stops the wait (the timeout, the session's own timeout raised in
    this thread, KeyboardInterrupt) kills the whole group first, so no
    grandchild is left running."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, shell=False, start_new_session=True)
    except FileNotFoundError:
        raise ToolError(f"{label}: the program {argv[0]!r} was not found (not on PATH and not "
                        f"a path to a file); fix 'command' in {spec.source}",
                        tool=spec.name, argv=argv) from None
    except PermissionError:
        raise ToolError(f"{label}: the program {argv[0]!r} cannot be run (not executable); "
                        f"fix 'command' in {spec.source}", tool=spec.name, argv=argv) from None
    except OSError as e:             # ENOEXEC (a script without '#!'), ENOTDIR, ...
        hint = " (a script needs a '#!' line naming its interpreter)" \
            if e.errno == errno.ENOEXEC else ""
        raise ToolError(f"{label}: the program {argv[0]!r} cannot be started: "
                        f"{e.strerror or e}{hint}; fix 'command' in {spec.source}",
                        tool=spec.name, argv=argv) from None
    try:
        out, err = wait_group(proc, spec.timeout)
    except subprocess.TimeoutExpired as e:
        raise ToolTimeoutError(
            f"{label} timed out after {spec.timeout:g} s (its 'timeout' in {spec.source}) and "
            f"was killed with its child processes", tool=spec.name, argv=argv,
            stdout=(e.output or b"").decode("utf-8", "replace"),
            stderr=(e.stderr or b"").decode("utf-8", "replace")
        ) from None
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise ToolError(f"{label} failed: {_ended(proc.returncode)}; {_tail(stderr, stdout)}",
                        tool=spec.name, argv=argv, returncode=proc.returncode,
                        stdout=stdout, stderr=stderr)
    return stdout


def wait_group(proc: "subprocess.Popen[bytes]", timeout: float) -> tuple[bytes, bytes]:
    """``proc``'s stdout and stderr once it ends; ``proc`` leads a process
    group of its own (``start_new_session=True``). It is waited for in slices
    of ``WAIT_SLICE``: the in-process executor's timeout is an exception raised
    in this thread, which Python delivers only between waits. Past ``timeout``
    seconds the whole group is killed and subprocess.TimeoutExpired raised
    with what it wrote; whatever else stops the wait (that exception,
    KeyboardInterrupt) kills the group too, so no grandchild is left running."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                return proc.communicate(timeout=max(0.0, min(left, WAIT_SLICE)))
            except subprocess.TimeoutExpired:       # retrying loses no output
                if left <= WAIT_SLICE:
                    raise
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = _drain(proc)
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    except BaseException:
        kill_group(proc)
        _drain(proc)
        raise


def kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """Kill the process group ``proc`` leads (``proc`` alone if that fails)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _drain(proc: "subprocess.Popen[bytes]") -> tuple[bytes, bytes]:
    """What the killed process wrote before; a grandchild that left the group
    and holds the pipes open is not waited for."""
    try:
        return proc.communicate(timeout=2.0)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return b"", b""


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _tail(stderr: str, stdout: str) -> str:
    """The end of stderr for a message (of stdout when stderr is empty)."""
    which, text = ("stderr", stderr) if stderr.strip() else ("stdout", stdout)
    text = text.strip()
    if not text:
        return "it wrote nothing to stderr or stdout"
    if len(text) > STDERR_IN_MESSAGE:
        cut = len(text) - STDERR_IN_MESSAGE
        text = f"[{cut} characters before]...{text[cut:]}"
    return f"{which}:\n{text}"


# --- the `tools` object of executed code ------------------------------------------------

def _not_saved(handle: str) -> str:
    """Why ``handle`` (``tools``, a tool, a recipe) is not in a checkpoint."""
    return (f"{handle} is a handle on the session's tools and is not saved; use {handle} "
            f"again after a restore")


class ToolsNamespace:
    """``tools`` in executed code: ``tools.NAME(**kwargs)`` runs a tool and
    returns its stdout, ``tools.NAME.RECIPE(**kwargs)`` a recipe (kwargs over
    its presets); ``tools.list()``, ``tools.search(query)``, ``tools.help()``,
    ``tools.NAME.help()``; ``dir(tools)`` names the tools."""

    def __init__(self, tools: Tools) -> None:
        self._tools = tools

    def __getattr__(self, name: str) -> "ToolProxy":
        if name.startswith("_"):                # copy, pickle and friends probe these
            raise AttributeError(name)
        if self._tools.exists(name):
            return ToolProxy(self._tools, name)
        there = ", ".join(self._tools.names()) or "none"
        raise AttributeError(f"there is no tool {name!r}; the tools are: {there} "
                             f"(tools.search('what you need') finds one)")

    def __dir__(self) -> builtins.list[str]:
        return sorted({*self._tools.names(), *NAMESPACE_NAMES})

    def __reduce__(self) -> Any:
        # a handle on a live namespace: a checkpoint leaves it out with this reason
        raise TypeError(_not_saved("tools"))

    def __repr__(self) -> str:
        return f"<tools: {', '.join(self._tools.names()) or 'none'}; tools.help() for more>"

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every tool: name, description, tags, options, positional, recipes."""
        return self._tools.list()

    def search(self, query: str, limit: int = 10) -> builtins.list[dict[str, Any]]:
        """The tools that best match ``query``, best first."""
        return self._tools.search(query, limit)

    def help(self) -> str:
        """Every tool's help, and the problems of those that cannot be used."""
        parts = [self._tools.get(n).help() for n in self._tools.names()] or ["no tools"]
        parts += [f"cannot be used: {p}" for p in self._tools.problems()]
        return "\n\n".join(parts)


class ToolProxy:
    """``tools.NAME``: call it, or one of its recipes (``tools.NAME.RECIPE``).
    It looks its definition up at each call, so an edited file takes effect."""

    def __init__(self, tools: Tools, name: str) -> None:
        self._tools, self._name = tools, name

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        """Runs the tool (a recipe named like the tool, if there is one, as the
        reference does)."""
        spec = self._tools.get(self._name)
        return _call(spec, self._name if self._name in spec.recipes else None, args, kwargs)

    def __getattr__(self, recipe: str) -> "RecipeProxy":
        if recipe.startswith("_"):
            raise AttributeError(recipe)
        try:
            spec = self._tools.get(self._name)
        except ToolError as e:          # hasattr() and introspection expect AttributeError
            raise AttributeError(str(e)) from None
        if recipe not in spec.recipes:
            raise AttributeError(f"tools.{self._name} has no recipe {recipe!r}; its recipes are: "
                                 f"{', '.join(spec.recipes) or 'none'} (or call "
                                 f"tools.{self._name}(...) itself)")
        return RecipeProxy(self._tools, self._name, recipe)

    def __dir__(self) -> builtins.list[str]:
        return sorted({*self._tools.get(self._name).recipes, *PROXY_NAMES})

    def __reduce__(self) -> Any:
        raise TypeError(_not_saved(f"tools.{self._name}"))

    def __repr__(self) -> str:
        try:
            spec = self._tools.get(self._name)
        except ToolError as e:          # a repr that raises would break any display
            return f"<tool tools.{self._name}: {e}>"
        return f"<tool {spec.label()}({spec.signature()}): {spec.description}>"

    @property
    def recipes(self) -> dict[str, dict[str, Any]]:
        """Each recipe's description, preset and params."""
        return {r.name: r.info() for r in self._tools.get(self._name).recipes.values()}

    def list(self) -> builtins.list[dict[str, Any]]:
        """The recipes, as a list (the reference's ``tools.NAME.list()``)."""
        return list(self.recipes.values())

    def help(self) -> str:
        """The tool in words: parameters, flags, recipes, where it is defined."""
        return self._tools.get(self._name).help()


class RecipeProxy:
    """``tools.NAME.RECIPE``: the tool with the recipe's presets."""

    def __init__(self, tools: Tools, name: str, recipe: str) -> None:
        self._tools, self._name, self._recipe = tools, name, recipe

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        spec = self._tools.get(self._name)
        if self._recipe not in spec.recipes:
            raise ToolError(f"tools.{self._name} no longer has the recipe {self._recipe!r}")
        return _call(spec, self._recipe, args, kwargs)

    def __reduce__(self) -> Any:
        raise TypeError(_not_saved(f"tools.{self._name}.{self._recipe}"))

    def __repr__(self) -> str:
        try:
            spec = self._tools.get(self._name)
        except ToolError as e:
            return f"<recipe tools.{self._name}.{self._recipe}: {e}>"
        r = spec.recipes.get(self._recipe)
        return f"<recipe {spec.label(self._recipe)}({spec.signature(self._recipe)})" \
               f"{about(r.description if r else '')}>"

    def help(self) -> str:
        """The recipe's keyword arguments and description."""
        return repr(self)


def _call(spec: ToolSpec, recipe: Optional[str], args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> str:
    label = spec.label(recipe)
    if args:
        raise ToolArgumentError(f"{label} takes keyword arguments only: "
                                f"{label}({spec.signature(recipe)}); got {len(args)} "
                                f"positional ({brief(args)})", tool=spec.name)
    try:
        argv = spec.argv(kwargs, recipe)
    except ArgumentError as e:
        raise ToolArgumentError(str(e), tool=spec.name) from None
    return run(spec, argv, label)
