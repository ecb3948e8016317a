"""Where torpor files live: the ``Store`` protocol (base), local files with
atomic saves (local, sinks), an in-memory store (memory), and the two helpers
the rest of torpor uses to write to or read from "a path or a file object".

Later stores (fsspec URLs, Redis) implement ``Store`` and pass the same contract
tests (tests/storage/test_contract.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, Union

from .base import Store, StoreStat, StoreWriter
from .local import LocalFileStore
from .memory import MemoryStore

__all__ = ["Store", "StoreStat", "StoreWriter", "LocalFileStore", "MemoryStore",
           "is_path", "writing", "reading"]

if TYPE_CHECKING:
    from typing_extensions import TypeIs

#: What torpor's functions take as ``file``: a path, or a binary file object.
PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]

_LOCAL = LocalFileStore()


def is_path(file: object) -> TypeIs[Union[str, os.PathLike[Any]]]:
    return isinstance(file, (str, os.PathLike))


@contextlib.contextmanager
def writing(file: PathOrFile, *, mode: Optional[int] = None, store: Optional[Store] = None
            ) -> Iterator[Union[StoreWriter, BinaryIO]]:
    """Yield something to write a torpor file into: for a path (or a key of
    ``store``), an atomic writer that is committed when the block ends normally
    and aborted (the old file left intact) when it raises; otherwise ``file``
    itself, a binary file object."""
    if store is not None:
        with store.open_writer(os.fspath(file), mode=mode) as sw:   # type: ignore[arg-type]
            yield sw
        return
    if is_path(file):
        with _LOCAL.open_writer(file, mode=mode) as w:
            yield w
        return
    if not hasattr(file, "write"):
        raise TypeError(f"file must be a path or a binary file object with write(), "
                        f"not {type(file).__name__}")
    yield file


@contextlib.contextmanager
def reading(file: PathOrFile, *, store: Optional[Store] = None
            ) -> Iterator[tuple[BinaryIO, str]]:
    """Yield ``(binary file object, name for messages)`` for a path (or a key of
    ``store``; opened and closed here) or an open file object."""
    if store is not None:
        key = os.fspath(file)               # type: ignore[arg-type]
        with store.open_reader(key) as sf:
            yield sf, store.describe(key)
        return
    if is_path(file):
        with _LOCAL.open_reader(file) as f:
            yield f, os.fspath(file)
        return
    if not hasattr(file, "read"):
        raise TypeError(f"file must be a path or a binary file object with read(), "
                        f"not {type(file).__name__}")
    name = getattr(file, "name", None)
    yield file, name if isinstance(name, str) and name else "<stream>"
