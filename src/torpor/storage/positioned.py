"""The seekable, read-only binary file that torpor's own readers are: a size, a
position, ``seek``/``tell`` over them; each reader gives ``readinto`` (and may
give ``read``). Shared by ``ranged.RangedReader`` (byte ranges of a URL),
``redis_store.RedisReader`` (chunks of a Redis object) and the Dask family's
reader of a message's frames (``torpor.dask``)."""

from __future__ import annotations

import io


class PositionedReader(io.RawIOBase):
    """Read-only and seekable over ``_size`` bytes, reading at ``_pos``; ``name``
    names it in messages."""

    name: str = "<reader>"
    _size = 0
    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"whence must be 0, 1 or 2, not {whence!r}")
        pos = base + offset
        if pos < 0:
            raise ValueError(f"cannot seek to {pos}, before the start of {self.name}")
        self._pos = pos
        return pos

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed file {self.name}")
