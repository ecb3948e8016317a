"""The kernel hints and copy the sinks use: the ``_iohints`` extension where it
is built (Linux: preallocation and early writeback), plain Python otherwise."""

import os

start_writeback = prealloc = None
try:
    if os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError("TORPOR_PUREPYTHON is set")
    from . import _iohints
except ImportError:
    _iohints = None

if _iohints is not None:
    copy_into = _iohints.copy_into
    if _iohints.HAS_WRITEBACK:
        start_writeback = _iohints.start_writeback
        prealloc = _iohints.prealloc
else:
    def copy_into(dest, offset, src):
        """``dest[offset:offset+len(src)] = src``."""
        src = memoryview(src).cast("B")
        memoryview(dest)[offset:offset + len(src)] = src
