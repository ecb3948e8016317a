# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Hints to the kernel for the file a save writes (``torpor.storage.sinks``), and
the GIL-free copy into the O_DIRECT staging buffers:

- allocate the file's blocks ahead of the writes (``fallocate``), so page-cache
  writes skip the filesystem's delayed allocation page by page;
- start writing back what has been written so far (``sync_file_range``), so the
  fsync that ends an atomic save finds little left to do.

Linux only; elsewhere ``HAS_WRITEBACK`` is False and the sinks write plainly.
"""

from libc.stdint cimport uint8_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #if defined(__linux__)
    #include <fcntl.h>
    #include <errno.h>
    static int torpor_writeback(int fd, long long offset, long long nbytes) {
        return sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE);
    }
    /* fallocate(2) itself, not posix_fallocate, whose fallback on filesystems
       without it writes zeros over the whole range */
    static int torpor_prealloc(int fd, long long offset, long long nbytes) {
        return fallocate(fd, 0, offset, nbytes) == 0 ? 0 : errno;
    }
    #define TORPOR_HAS_WRITEBACK 1
    #else
    static int torpor_writeback(int fd, long long offset, long long nbytes) { return 0; }
    static int torpor_prealloc(int fd, long long offset, long long nbytes) { return -1; }
    #define TORPOR_HAS_WRITEBACK 0
    #endif
    """
    int torpor_writeback(int fd, long long offset, long long nbytes) nogil
    int torpor_prealloc(int fd, long long offset, long long nbytes) nogil
    int TORPOR_HAS_WRITEBACK


HAS_WRITEBACK = bool(TORPOR_HAS_WRITEBACK)


def copy_into(uint8_t[::1] dest, Py_ssize_t offset, const uint8_t[::1] src):
    """``dest[offset:offset+len(src)] = src`` without the GIL."""
    cdef Py_ssize_t n = src.shape[0]
    if offset < 0 or offset + n > dest.shape[0]:
        raise ValueError("copy_into: bad sizes")
    if n:
        with nogil:
            memcpy(&dest[offset], &src[0], n)


def start_writeback(int fd, long long offset, long long nbytes):
    """Ask the kernel to start writing ``nbytes`` at ``offset`` of ``fd`` to disk now,
    without waiting (Linux ``sync_file_range``; elsewhere nothing). True if it did."""
    cdef int r
    with nogil:
        r = torpor_writeback(fd, offset, nbytes)
    return r == 0


def prealloc(int fd, long long offset, long long nbytes):
    """Allocate the file's blocks for ``nbytes`` at ``offset`` (Linux ``fallocate``,
    extending the file). Returns 0, or the errno (-1 where there is no fallocate):
    the caller then simply writes without it."""
    cdef int r
    with nogil:
        r = torpor_prealloc(fd, offset, nbytes)
    return r
