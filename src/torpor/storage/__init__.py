"""Where torpor files live: the ``Store`` protocol (base), local files with
atomic saves (local, sinks), an in-memory store (memory), and the two helpers
the rest of torpor uses to write to or read from "a path, a URL or a file
object".

Later stores (fsspec URLs, Redis) implement ``Store`` and pass the same contract
tests (tests/storage/test_contract.py). A URL (``s3://bucket/x.torpor``,
``memory://x.torpor``, any fsspec filesystem's) or an fsspec ``OpenFile`` is a
``RemoteFile`` (urls): an FsspecStore's key, written atomically as the store
allows and read in byte ranges (ranged); ``locate`` applies ``storage_options``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, Union

from .base import Store, StoreStat, StoreWriter
from .local import LocalFileStore
from .memory import MemoryStore
from .urls import RemoteFile, is_url, locate, ranged_file

__all__ = ["Store", "StoreStat", "StoreWriter", "LocalFileStore", "MemoryStore",
           "RemoteFile", "is_path", "is_url", "locate", "writing", "reading"]

if TYPE_CHECKING:
    from typing_extensions import TypeIs

#: What torpor's functions take as ``file``: a path or a URL (a str), a binary file
#: object, or a RemoteFile (``locate``'s answer for a URL with storage_options).
PathOrFile = Union[str, "os.PathLike[str]", BinaryIO, RemoteFile]

_LOCAL = LocalFileStore()


def is_path(file: object) -> TypeIs[Union[str, os.PathLike[Any]]]:
    return isinstance(file, (str, os.PathLike))


@contextlib.contextmanager
def writing(file: PathOrFile, *, mode: Optional[int] = None, store: Optional[Store] = None
            ) -> Iterator[Union[StoreWriter, BinaryIO]]:
    """Yield something to write a torpor file into: for a path, a URL (see
    ``locate``) or a key of ``store``, an atomic writer that is committed when the
    block ends normally and aborted (the old file left intact) when it raises;
    otherwise ``file`` itself, a binary file object."""
    if store is not None:
        with store.open_writer(os.fspath(file), mode=mode) as sw:   # type: ignore[arg-type]
            yield sw
        return
    file = locate(file)
    if isinstance(file, RemoteFile):
        try:
            with file.open_writer(mode=mode) as rw:
                yield rw
        except FileNotFoundError:
            file.store.check()      # a missing bucket: an error that says so, with the URL
            raise
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
    """Yield ``(binary file object, name for messages)`` for a path, a URL (read
    in byte ranges) or a key of ``store`` (opened and closed here), or an open
    file object (an fsspec file is read in ranges too: ``urls.ranged_file``)."""
    if store is not None:
        key = os.fspath(file)               # type: ignore[arg-type]
        with store.open_reader(key) as sf:
            yield sf, store.describe(key)
        return
    file = locate(file)
    if isinstance(file, RemoteFile):
        with file.open_reader() as rf:
            yield rf, file.name
        return
    if is_path(file):
        with _LOCAL.open_reader(file) as f:
            yield f, os.fspath(file)
        return
    if not hasattr(file, "read"):
        raise TypeError(f"file must be a path or a binary file object with read(), "
                        f"not {type(file).__name__}")
    ranged = ranged_file(file)
    if ranged is not None:
        yield ranged, ranged.name
        return
    name = getattr(file, "name", None)
    yield file, name if isinstance(name, str) and name else "<stream>"
