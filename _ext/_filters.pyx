# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Byte loops that must not hold the GIL: the byte-shuffle filter (as blosc does it,
so that the same byte of every item lands next to its neighbours and lz4 finds the
runs) and the copy of a decompressed chunk into its place in the destination."""

from libc.string cimport memcpy


def shuffle(const unsigned char[::1] src, Py_ssize_t itemsize):
    """Return bytes holding byte j of every item, for j = 0..itemsize-1 in turn."""
    cdef Py_ssize_t n = src.shape[0]
    if itemsize <= 0 or n % itemsize:
        raise ValueError("shuffle needs whole items")
    out = bytearray(n)
    cdef unsigned char[::1] dst = out
    if n:
        with nogil:
            _shuffle(&src[0], &dst[0], n, itemsize)
    return out


cdef void _shuffle(const unsigned char* s, unsigned char* d, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t count = n // k, i, j
    cdef const unsigned char* p
    cdef unsigned char* q
    for j in range(k):
        p = s + j
        q = d + j * count
        for i in range(count):
            q[i] = p[i * k]


def unshuffle_into(unsigned char[::1] dest, Py_ssize_t offset, const unsigned char[::1] src,
                   Py_ssize_t itemsize):
    """Undo ``shuffle`` writing straight into ``dest[offset:offset+len(src)]``."""
    cdef Py_ssize_t n = src.shape[0], count, i, j
    if itemsize <= 0 or n % itemsize or offset < 0 or offset + n > dest.shape[0]:
        raise ValueError("unshuffle_into: bad sizes")
    if not n:
        return
    count = n // itemsize
    cdef const unsigned char* s = &src[0]
    cdef unsigned char* d = &dest[offset]
    with nogil:
        for j in range(itemsize):
            for i in range(count):
                d[i * itemsize + j] = s[j * count + i]


def copy_into(unsigned char[::1] dest, Py_ssize_t offset, const unsigned char[::1] src):
    """``dest[offset:offset+len(src)] = src`` without the GIL."""
    cdef Py_ssize_t n = src.shape[0]
    if offset < 0 or offset + n > dest.shape[0]:
        raise ValueError("copy_into: bad sizes")
    if n:
        with nogil:
            memcpy(&dest[offset], &src[0], n)
