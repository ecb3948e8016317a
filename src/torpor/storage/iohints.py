"""The kernel hints and copy the sinks use: the ``_iohints`` extension where it
is built (Linux: preallocation and early writeback), plain Python otherwise."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

start_writeback: Callable[[int, int, int], bool] | None = None
prealloc: Callable[[int, int, int], int] | None = None
_iohints: types.ModuleType | None
try:
    if os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError("TORPOR_PUREPYTHON is set")
    from . import _iohints
except ImportError as _e:
    if os.environ.get("TORPOR_REQUIRE_EXTENSION") and not os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError(
            f"TORPOR_REQUIRE_EXTENSION is set but the compiled _iohints does not import: {_e}") from _e
    _iohints = None

if _iohints is not None:
    copy_into: Callable[[WriteableBuffer, int, ReadableBuffer], None] = _iohints.copy_into
    if _iohints.HAS_WRITEBACK:
        start_writeback = _iohints.start_writeback
        prealloc = _iohints.prealloc
else:
    def copy_into(dest: WriteableBuffer, offset: int, src: ReadableBuffer) -> None:
        """``dest[offset:offset+len(src)] = src``."""
        src = memoryview(src).cast("B")
        memoryview(dest)[offset:offset + len(src)] = src
