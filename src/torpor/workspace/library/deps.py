"""A workspace's dependencies: the requirements it is configured with, kept in
its storage, and installed where its executor installs.

    storage.deps.list()                        # ["pandas>=2", "tinypkg==1.0"]
    storage.deps.add("tinypkg==1.0", installer)
    # {"installed": ["tinypkg==1.0"], "already_present": [], "failed": []}
    storage.deps.remove("tinypkg", installer)
    # {"removed": ["tinypkg"], "not_found": [], "failed": [], "removed_from_config": True}

**What a dependency is** (``check_spec``): a package name with optional extras
and version specifiers, as pip reads it (``packaging.requirements``):
``pandas``, ``pandas>=2.0``, ``numpy>=1.24,<3``, ``requests[socks]==2.31.*``.
URLs (``name @ https://...``), paths, archives, pip options (``-e``, ``-r``,
``--index-url``) and environment markers (``; python_version < "3.12"``) are
refused: a dependency names what to install, never where from or how (pip's
own configuration and ``PIP_*`` environment variables say that).

**Where the configuration lives**: ``{root}/requirements.txt`` of a local
FileStorage (comments and blank lines allowed; a line torpor refuses is
reported with the file and line number, and never silently dropped; replaced
atomically, under a lock file so two adds at once both land); the same file on
an fsspec URL (one PUT a change: conditional on S3, where a change that raced
another writer is made again; elsewhere the last writer between processes
wins); the ``{namespace}requirements``
string key of a RedisStorage (the same text, changed under ``WATCH``/``MULTI``).
Adding a requirement whose package is configured already replaces its line.

**Installing**: ``installer`` is an ``installer.Installer`` (the executor's
``deps_installer()``), or None for an executor that does not install (the
in-process one, by default). A requirement goes into the configuration only when
it is installed or already present, so a typo never makes every later
``sync`` fail. Without an installer, a requirement this interpreter already
satisfies is ``already_present``, any other ``failed`` with the reason.
``remove`` always removes the configuration's line, and uninstalls only what
the installer's environment holds itself (installer.py).

Every ``failed`` entry is ``{"spec": requirement, "error": why}``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from ...errors import InvalidRequirementError, RuntimeDepsDisabledError

if TYPE_CHECKING:
    from .installer import Installer

__all__ = ["check_spec", "Deps", "DepsNamespace", "FILENAME"]

#: The configuration's file name in a FileStorage's root.
FILENAME = "requirements.txt"
_ALLOWED = ("a package name with optional extras and version specifiers, such as 'pandas', "
            "'pandas>=2.0', 'numpy>=1.24,<3' or 'requests[socks]==2.31.*'")
_MAX_LEN = 500
_COMMENT = re.compile(r"(^|\s)#.*$")
_TRIES = 20                 # conditional writes to an object store, before giving up
_R = TypeVar("_R")


# --- requirements ----------------------------------------------------------------------

def requirement(spec: str) -> Any:
    """``spec`` parsed (a ``packaging.requirements.Requirement``)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:                   # pragma: no cover - packaging is a dependency
        raise ImportError("workspace dependencies are checked with packaging: "
                          "pip install 'torpor[workspace]'") from None
    return Requirement(spec)


def canonical_name(spec: str) -> str:
    """The distribution name of ``spec`` as pip compares names (``Foo_Bar`` is
    ``foo-bar``)."""
    from packaging.utils import canonicalize_name
    return str(canonicalize_name(requirement(spec).name))


def check_spec(spec: str) -> str:
    """``spec`` checked and written the one way (``"pandas >= 2.0"`` is
    ``"pandas>=2.0"``). Raises InvalidRequirementError (a ValueError) saying
    what is wrong and what a dependency may be."""
    if not isinstance(spec, str):
        raise TypeError(f"a dependency is a str such as 'pandas>=2.0', not "
                        f"{type(spec).__name__}")
    s = spec.strip()

    def refuse(why: str) -> InvalidRequirementError:
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        return InvalidRequirementError(f"{shown!r} is not allowed as a dependency: {why}. "
                                       f"A dependency is {_ALLOWED}")
    if not s:
        raise refuse("it is empty")
    if len(s) > _MAX_LEN:
        raise refuse(f"it is longer than {_MAX_LEN} characters")
    if any(c in s for c in "\r\n\0"):
        raise refuse("give one dependency, on one line")
    if s.startswith("-"):
        raise refuse("pip options (-e, -r, --index-url, ...) cannot be given; set where "
                     "packages come from in pip's environment (PIP_INDEX_URL, PIP_FIND_LINKS, "
                     "PIP_NO_INDEX) or pip's configuration file")
    if "://" in s or "@" in s:
        raise refuse("URLs and direct references ('name @ url') cannot be installed; give "
                     "the name (and version) of a package on your index")
    if ";" in s:
        raise refuse("environment markers (after ';') are not supported; give the "
                     "requirement without them")
    if "#" in s:
        raise refuse("it has a comment ('#')")
    if "/" in s or "\\" in s or s.startswith((".", "~")) or \
            s.lower().endswith((".whl", ".zip", ".tar.gz", ".tgz")):
        raise refuse("paths and archives cannot be installed; give the name (and version) "
                     "of a package on your index (or put the archive's folder in "
                     "PIP_FIND_LINKS)")
    from packaging.requirements import InvalidRequirement
    try:
        req = requirement(s)
    except InvalidRequirement as e:
        raise refuse(f"it is not a requirement pip can read "
                     f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if req.url or req.marker:            # cannot happen past the checks above; to be sure
        raise refuse("URLs and environment markers are not supported")
    from packaging.utils import canonicalize_name
    if canonicalize_name(req.name) == "torpor":
        raise refuse("torpor itself cannot be a dependency: installing another torpor into a "
                     "worker's environment would shadow the torpor the worker runs (the "
                     "host's); upgrade torpor on the host instead")
    return str(req)


def failure(spec: str, error: str) -> dict[str, str]:
    """One entry of a result's ``failed`` list."""
    return {"spec": spec, "error": error}


# --- the requirements text -------------------------------------------------------------

def parse(text: str, where: str) -> list[tuple[int, str]]:
    """(line index, requirement) of every requirement in ``text`` (comments
    and blank lines skipped). A line that is not one raises
    InvalidRequirementError naming ``where`` and the line."""
    out = []
    for i, raw in enumerate(text.splitlines()):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        try:
            out.append((i, check_spec(line)))
        except InvalidRequirementError as e:
            raise InvalidRequirementError(f"{where}, line {i + 1}: {e}. Fix or remove that "
                                          f"line") from None
    return out


def _join(lines: list[str]) -> str:
    return "".join(ln + "\n" for ln in lines)


def with_added(text: str, spec: str, where: str) -> str:
    """``text`` with ``spec`` in it: in place of the lines of its package (the
    first one's comment kept: ``pkg==2  # pinned because...``), or appended."""
    name = canonical_name(spec)
    same = [i for i, s in parse(text, where) if canonical_name(s) == name]
    lines = text.splitlines()
    if not same:
        return _join(lines + [spec])
    lines[same[0]] = spec + _comment_of(lines[same[0]])
    for i in reversed(same[1:]):
        del lines[i]
    return _join(lines)


def _comment_of(line: str) -> str:
    """The comment at the end of a requirement's line, with the spaces before
    it ("" if there is none)."""
    m = _COMMENT.search(line)
    if m is None:
        return ""
    hash_at = line.index("#", m.start())
    gap = line[:hash_at][len(line[:hash_at].rstrip()):]
    return (gap or "  ") + line[hash_at:]


def without(text: str, spec: str, where: str) -> tuple[str, bool]:
    """``text`` without the lines of ``spec``'s package, and whether there were."""
    name = canonical_name(spec)
    same = {i for i, s in parse(text, where) if canonical_name(s) == name}
    if not same:
        return text, False
    return _join([ln for i, ln in enumerate(text.splitlines()) if i not in same]), True


# --- where the text is kept ------------------------------------------------------------

class _LocalFile:
    """``requirements.txt`` in a local folder: replaced atomically (a temporary
    file, fsync, rename), changed under a lock file beside it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path
        folder, base = os.path.split(path)
        self._lock_path = os.path.join(folder, f".{base}.lock")

    def read(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:                # not POSIX: this process's lock only
                pass
            with _process_lock(self.path):
                yield
        finally:
            os.close(fd)

    def update(self, change: Callable[[str], tuple[str, _R]]) -> _R:
        with self._locked():
            text = self.read()
            new, result = change(text)
            if new != text:
                tmp = f"{self.path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                try:
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(new)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            return result


class _FsspecFile:
    """``requirements.txt`` at an fsspec URL, replaced by one PUT of the whole
    text: on S3 a conditional one (a change by another writer in between is
    read again and the change retried), elsewhere the last writer wins between
    processes; changes are serialised within this process."""

    def __init__(self, root: str, options: Optional[dict[str, Any]]) -> None:
        from ...storage.fsspec_store import FsspecStore
        self.objects = FsspecStore(root, storage_options=options)
        self.where = f"{root}/{FILENAME}"

    def read(self) -> str:
        try:
            return self.objects.read(FILENAME).decode("utf-8")
        except FileNotFoundError:
            return ""

    def update(self, change: Callable[[str], tuple[str, _R]]) -> _R:
        with _process_lock(self.where):
            for attempt in range(_TRIES):
                raw, tag = self.objects.read_tagged(FILENAME)
                text = raw.decode("utf-8") if raw is not None else ""
                new, result = change(text)
                if new == text or self.objects.put(FILENAME, new.encode("utf-8"), tag=tag,
                                                   existed=raw is not None):
                    return result
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** attempt)))
        raise OSError(f"{self.where}: other writers changed it {_TRIES} times while this "
                      f"change tried; nothing was changed, try again")


class _RedisKey:
    """The requirements text in one Redis string key, changed under
    ``WATCH``/``MULTI`` (retried when another writer changed it meanwhile)."""

    def __init__(self, client: Any, key: str, label: str) -> None:
        self.client = client
        self.key = key
        self.where = f"{label} key {key!r}"

    def read(self) -> str:
        value = self.client.get(self.key)
        return value.decode("utf-8") if value else ""

    def update(self, change: Callable[[str], tuple[str, _R]]) -> _R:
        from redis.exceptions import WatchError
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.key)
                    value = pipe.get(self.key)
                    text = value.decode("utf-8") if value else ""
                    new, result = change(text)
                    if new == text:
                        pipe.unwatch()
                        return result
                    pipe.multi()
                    if new:
                        pipe.set(self.key, new.encode("utf-8"))
                    else:
                        pipe.delete(self.key)
                    pipe.execute()
                    return result
                except WatchError:
                    continue


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _process_lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


# --- the configured dependencies -------------------------------------------------------

def _here_reason(spec: str, version: Optional[str]) -> str:
    name = requirement(spec).name
    has = f"has {name} {version}, which {spec!r} does not accept" if version else \
        f"does not have {name}"
    return (f"this executor does not install packages: its code runs in this interpreter "
            f"({sys.executable}), which {has}. Use Session.subprocess (a worker with its own "
            f"environment, where add_dep installs), or InProcessConfig(install_deps=True) "
            f"to install into this interpreter")


def _here(specs: Iterable[str]) -> dict[str, Any]:
    """The result of installing ``specs`` with no installer: what this
    interpreter already has is present, the rest failed."""
    from .installer import local_version
    out: dict[str, Any] = {"installed": [], "already_present": [], "failed": []}
    for s in specs:
        version = local_version(s)
        if version is not None and requirement(s).specifier.contains(version, prereleases=True):
            out["already_present"].append(s)
        else:
            out["failed"].append(failure(s, _here_reason(s, version)))
    return out


class Deps:
    """The configured dependencies of one workspace storage (``storage.deps``)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    @classmethod
    def for_storage(cls, storage: Any) -> "Deps":
        """``{root}/requirements.txt`` of a FileStorage (local or an fsspec URL),
        the ``{namespace}requirements`` key of a RedisStorage."""
        client, namespace = getattr(storage, "redis", None), getattr(storage, "namespace", None)
        if client is not None and isinstance(namespace, str):
            return cls(_RedisKey(client, namespace + "requirements", repr(storage)))
        root = getattr(storage, "root", None)
        if isinstance(root, str):
            if "://" in root:
                return cls(_FsspecFile(root, getattr(storage, "storage_options", None)))
            return cls(_LocalFile(os.path.join(root, FILENAME)))
        raise TypeError(f"{storage!r} keeps no dependencies: a FileStorage or a RedisStorage "
                        f"does")

    @property
    def where(self) -> str:
        """Where the configuration is (a path, a URL, a Redis key)."""
        return str(self._store.where)

    def __repr__(self) -> str:
        return f"<Deps in {self.where}>"

    def list(self) -> list[str]:
        """The configured requirements, in the configuration's order."""
        return [s for _, s in parse(self._store.read(), self.where)]

    def add(self, spec: str, installer: "Optional[Installer]") -> dict[str, Any]:
        """Install ``spec`` with ``installer`` (None: nothing is installed; see
        the module's docstring) and, if it is installed or already present,
        write it into the configuration (replacing its package's line):
        ``{"installed", "already_present", "failed"}``."""
        spec = check_spec(spec)
        self.list()                        # a damaged configuration fails before pip runs
        result = _here([spec]) if installer is None else installer.install([spec])
        if not result["failed"]:
            self._store.update(lambda text: (with_added(text, spec, self.where), None))
        return result

    def remove(self, spec: str, installer: "Optional[Installer]") -> dict[str, Any]:
        """Remove ``spec``'s package (by name, whatever the version) from the
        configuration and uninstall it from the installer's own environment:
        ``{"removed", "not_found", "failed", "removed_from_config"}``. Without
        an installer nothing is uninstalled: a package this interpreter has is
        in ``failed``, saying so."""
        spec = check_spec(spec)
        removed = self._store.update(lambda text: without(text, spec, self.where))
        if installer is not None:
            result = installer.uninstall([spec])
        else:
            from .installer import local_version
            version = local_version(spec)
            result = {"removed": [], "not_found": [] if version else [spec], "failed": []}
            if version:
                result["failed"].append(failure(spec, (
                    f"this executor does not uninstall packages: its code runs in this "
                    f"interpreter ({sys.executable}), which keeps "
                    f"{requirement(spec).name} {version}")))
        result["removed_from_config"] = removed
        return result

    def sync(self, installer: "Optional[Installer]", extra: tuple[str, ...] = ()
             ) -> dict[str, Any]:
        """Install every configured requirement and ``extra`` that is missing:
        ``{"installed", "already_present", "failed"}``."""
        specs = list(dict.fromkeys(self.list() + [check_spec(e) for e in extra]))
        return _here(specs) if installer is None else installer.install(specs)


class DepsNamespace:
    """``deps`` in executed code: ``deps.list()``, ``deps.add("pkg>=1")``,
    ``deps.remove("pkg")``, ``deps.sync()``, as the Session's ``list_deps`` /
    ``add_dep`` / ``remove_dep`` / ``sync_deps`` (``sync`` installs the
    configured requirements, not the Session's ``extra_deps``). With
    ``allow_runtime=False`` (``Session(allow_runtime_deps=False)``) ``add``
    and ``remove`` raise RuntimeDepsDisabledError."""

    def __init__(self, deps: Deps, installer: "Optional[Installer]", *,
                 allow_runtime: bool = True) -> None:
        self._deps = deps
        self._installer = installer
        self._allow = bool(allow_runtime)

    def __reduce__(self) -> Any:
        # a handle on this session's installer and settings: a checkpoint leaves it out
        raise TypeError("deps is a handle on the session's dependencies and is not saved; "
                        "use deps again after a restore")

    def __repr__(self) -> str:
        where = f"installs into {self._installer.python}" if self._installer is not None \
            else "does not install (in-process executor)"
        changes = "" if self._allow else "; add/remove disabled (allow_runtime_deps=False)"
        return f"<deps: configured in {self._deps.where}; {where}{changes}>"

    def _check_allowed(self, what: str) -> None:
        if not self._allow:
            raise RuntimeDepsDisabledError(
                f"deps.{what}() is disabled in this session (Session(allow_runtime_deps=False)): "
                f"executed code cannot change the workspace's dependencies. Ask for the "
                f"package to be added with session.add_dep() / remove_dep() from outside")

    def list(self) -> list[str]:
        """The configured requirements."""
        return self._deps.list()

    def add(self, spec: str) -> dict[str, Any]:
        """Install ``spec`` and add it to the configuration."""
        self._check_allowed("add")
        return self._deps.add(spec, self._installer)

    def remove(self, spec: str) -> dict[str, Any]:
        """Remove ``spec``'s package from the configuration and uninstall it."""
        self._check_allowed("remove")
        return self._deps.remove(spec, self._installer)

    def sync(self) -> dict[str, Any]:
        """Install every configured requirement that is missing."""
        return self._deps.sync(self._installer)
