"""Type stub of the Cython extension ``_ext/_iohints.pyx``: kernel hints for the
file a save writes, and the GIL-free copy into the O_DIRECT staging buffers."""

from _typeshed import ReadableBuffer, WriteableBuffer

HAS_WRITEBACK: bool

def copy_into(dest: WriteableBuffer, offset: int, src: ReadableBuffer) -> None: ...
def start_writeback(fd: int, offset: int, nbytes: int) -> bool: ...
def prealloc(fd: int, offset: int, nbytes: int) -> int: ...
