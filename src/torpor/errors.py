"""The one exception hierarchy shared by the Cython engine and the pure-Python twin.

Kept in a pure-Python module (as msgpack-python does) so both implementations raise
the very same classes and callers can catch them whichever engine is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "TorporError",
    "FormatError",
    "CorruptFileError",
    "UnsafeLoadError",
    "UnsupportedObjectError",
    "CycleError",
    "RestoreError",
    "MissingClassError",
    "NotInFileError",
    "ArtifactNotFoundError",
    "CheckpointNotFoundError",
    "ArtifactDamagedError",
    "InvalidNameError",
    "InvalidRequirementError",
    "RuntimeDepsDisabledError",
    "ToolError",
]


class TorporError(Exception):
    """Base class of every error torpor raises on purpose."""


class FormatError(TorporError):
    """The input is not a torpor file, or uses a format version or feature this
    version of torpor does not know."""


class CorruptFileError(FormatError):
    """The file is a torpor file but is damaged: truncated, a checksum does not
    match, or a length or index points outside the data it was read from."""


class UnsafeLoadError(TorporError):
    """The file refers to a class or callable that loading is not allowed to import
    or call. Nothing from the file has been imported or called when this is raised."""

    def __init__(self, message: str, names: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.names: tuple[str, ...] = tuple(names)


class UnsupportedObjectError(TorporError, TypeError):
    """An object in the graph cannot be saved. The message names its type and its
    path inside the graph (for example ``root['models'][3].mesh.handle``)."""

    def __init__(self, message: str, path: str | None = None,
                 obj_type: type | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.obj_type = obj_type


class CycleError(TorporError):
    """Objects saved through snapshots (``torpor.State`` and registered snapshot
    methods) reference each other in a cycle, so none of them can be restored
    before the others. Raised at save time. ``cycle`` lists the objects on the
    cycle, each with the path inside its snapshot that leads to the next one."""

    def __init__(self, message: str, cycle: Iterable[tuple[Any, Any]] = ()) -> None:
        super().__init__(message)
        self.cycle: list[tuple[Any, Any]] = list(cycle)


class RestoreError(TorporError):
    """A good file could not be rebuilt: a class it needs is missing, a snapshot
    is newer than the code, or code that rebuilds an object (a ``__setstate__``,
    a reduce callable, a ``restore_snapshot``) raised; that exception is chained
    as ``__cause__`` and the message names the object's path. Never raised for a
    damaged file (that is ``CorruptFileError``). A session restore that fails
    leaves the session exactly as it was before ``restore`` was called."""


class MissingClassError(RestoreError):
    """The file names a class or function that cannot be found here: its module
    is not installed, or no longer defines that name. ``module`` and ``qualname``
    say which; install or import the package that provides it."""

    def __init__(self, message: str, module: str = "", qualname: str = "") -> None:
        super().__init__(message)
        self.module = module
        self.qualname = qualname


class NotInFileError(TorporError, KeyError, IndexError):
    """A partial load (``torpor.load(file, select=...)``, ``torpor.open``) names a
    part the file does not have. ``path`` is the path asked for; the message says
    how far it matched (``matched``: the steps the file has) and what is there
    instead. A KeyError and an IndexError,
    as a missing dict key or list index is."""

    def __init__(self, message: str, path: str = "", matched: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.matched = matched          # how many of the path's steps the file has

    def __str__(self) -> str:           # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArtifactNotFoundError(TorporError, KeyError):
    """A workspace has no artifact of that name (or no such version of it).
    ``name`` and ``version`` say which; ``storage`` names the storage."""

    def __init__(self, message: str, name: str = "", version: Any = None,
                 storage: str = "") -> None:
        super().__init__(message)
        self.name, self.version, self.storage = name, version, storage

    def __str__(self) -> str:           # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(ArtifactNotFoundError):
    """A workspace has no checkpoint of that name (``storage.checkpoints``);
    ``name`` and ``storage`` say which."""


class ArtifactDamagedError(CorruptFileError):
    """An artifact's data or its info record is damaged (truncated, checksum
    mismatch, unreadable record). ``name`` and ``storage`` say which; the other
    artifacts of the storage are not affected."""

    def __init__(self, message: str, name: str = "", storage: str = "") -> None:
        super().__init__(message)
        self.name, self.storage = name, storage


class InvalidNameError(TorporError, ValueError):
    """An artifact name or workspace id that a storage refuses (characters, an
    empty or ``..`` part, an absolute path, over 255 bytes). The message says
    what was wrong and what names look like."""


class InvalidRequirementError(TorporError, ValueError):
    """A workspace dependency torpor refuses: not a package name with optional
    extras and version specifiers (a URL, a path, a pip option, an environment
    marker), or such a line in ``requirements.txt`` (the message names the file
    and the line)."""


class RuntimeDepsDisabledError(TorporError, PermissionError):
    """Executed code called ``deps.add`` or ``deps.remove`` in a Session made
    with ``allow_runtime_deps=False``; the Session's own ``add_dep`` /
    ``remove_dep`` still work."""


class ToolError(TorporError):
    """A workspace tool (a command-line program described in YAML) could not be
    used: its definition is broken, a call's arguments do not fit its schema,
    or the program failed or timed out. ``tool`` names it; for a run,
    ``argv`` is the command line, ``returncode`` its exit code (None if it did
    not end by itself), ``stdout`` and ``stderr`` everything it wrote (the
    message holds the end of stderr)."""

    def __init__(self, message: str, *, tool: str = "", argv: Iterable[str] = (),
                 returncode: int | None = None, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.tool, self.argv, self.returncode = tool, list(argv), returncode
        self.stdout, self.stderr = stdout, stderr


def brief(x: Any, limit: int = 60) -> str:
    """A short repr of a value read from a file, for an error message. It never
    builds the value's full repr (``f"{x!r:.60}"`` does, then cuts it): a file can
    make that repr exponentially long with shared references, or quadratic with
    a huge int."""
    return _brief(x, limit, 2)[:limit]


def _brief(x: Any, limit: int, depth: int) -> str:
    t = type(x)
    if t is int:
        return repr(x) if x.bit_length() <= 128 else f"<int of {x.bit_length():,} bits>"
    if t is float or t is bool or x is None or t is complex:
        return repr(x)
    if t is str or t is bytes or t is bytearray:
        return repr(x[:limit]) + ("..." if len(x) > limit else "")
    if (t is list or t is tuple) and depth > 0:
        shown = ", ".join(_brief(v, limit, depth - 1) for v in x[:6])
        more = ", ..." if len(x) > 6 else ""
        return f"[{shown}{more}]" if t is list else f"({shown}{more}{',' if len(x) == 1 else ''})"
    if t is list or t is tuple or t is dict or t is set or t is frozenset:
        return f"<{t.__name__} of {len(x)} items>"
    if isinstance(x, type):
        return f"<class {getattr(x, '__module__', '?')}.{getattr(x, '__qualname__', '?')}>"
    return f"<{t.__module__}.{t.__qualname__} object>"
