"""The storage seam: what torpor needs from a place that holds torpor files.

A ``Store`` maps keys (strings) to byte objects. Writing goes through a
``StoreWriter`` that either commits atomically or aborts: until ``commit``
returns, readers see the previous object (or none), and after ``abort``, or an
exception inside ``with store.open_writer(key) as w:``, the previous object is
intact and nothing of the new one remains. ``tests/storage/test_contract.py``
holds every store to this.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer
    from typing_extensions import Self


class StoreStat(NamedTuple):
    """What ``Store.stat`` reports of an object."""
    size: int               # bytes
    mtime: float            # seconds since the epoch of the last commit


@runtime_checkable
class StoreWriter(Protocol):
    """An object being written. ``write`` appends any C-contiguous buffer and
    returns its length; ``commit`` makes the object visible under its key in one
    step; ``abort`` throws it away. Exactly one of the two ends a writer; as a
    context manager, it commits on a normal exit and aborts on an exception."""

    def write(self, data: ReadableBuffer) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> StoreWriter: ...
    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None: ...


@runtime_checkable
class Store(Protocol):
    """A place that holds torpor files under keys."""

    def open_writer(self, key: str, *, mode: Optional[int] = None) -> StoreWriter:
        """Start writing ``key``. ``mode``: permission bits where the store has
        them (default: those of the object replaced, or the umask's)."""
        ...

    def open_reader(self, key: str) -> BinaryIO:
        """A binary file object positioned at the start of ``key`` (seekable where
        the store allows). Raises FileNotFoundError for a missing key."""
        ...

    def stat(self, key: str) -> StoreStat:
        """Size and time of ``key``; FileNotFoundError when it does not exist."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; False when there was nothing to remove."""
        ...

    def describe(self, key: str) -> str:
        """How messages name ``key`` (a path, a URL)."""
        ...


class WriterBase:
    """The context-manager half of a StoreWriter, and the one-ending rule."""

    _ended = False

    if TYPE_CHECKING:       # what the writers define
        def commit(self) -> None: ...
        def abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self._ended:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _end(self, what: str) -> None:
        if self._ended:
            raise ValueError(f"cannot {what}: this writer was already committed or aborted")
        self._ended = True
