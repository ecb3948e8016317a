# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Byte loops that must not hold the GIL, on buffers the caller owns:

- the chunk filters (docs/FORMAT.md, "Chunk modes"): byte shuffle, as blosc does it,
  so that the same byte of every item lands next to its neighbours and lz4 finds
  the runs; and delta-then-shuffle, which first replaces every little-endian word
  by its difference to the previous one, so that a smooth field's high bytes
  become runs of zeros;
- one lz4 frame per chunk, compressed from and decompressed into caller buffers
  by liblz4's block functions (python-lz4 only offers calls that allocate a new
  output for every chunk, and on this kind of machine fresh pages cost more than
  the compression itself);
- a hint to the kernel to start writing back what a save has written so far.

Every function checks its sizes before it releases the GIL; nothing here allocates.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #if defined(__linux__)
    #include <fcntl.h>
    static int torpor_writeback(int fd, long long offset, long long nbytes) {
        return sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE);
    }
    #define TORPOR_HAS_WRITEBACK 1
    #else
    static int torpor_writeback(int fd, long long offset, long long nbytes) { return 0; }
    #define TORPOR_HAS_WRITEBACK 0
    #endif
    """
    int torpor_writeback(int fd, long long offset, long long nbytes) nogil
    int TORPOR_HAS_WRITEBACK

# liblz4's block API, bound at import by torpor._codec (see bind_lz4)
ctypedef int (*lz4_compress_t)(const char* src, char* dst, int src_size, int dst_capacity,
                               int param) noexcept nogil
ctypedef int (*lz4_decompress_t)(const char* src, char* dst, int src_size,
                                 int dst_capacity) noexcept nogil

cdef lz4_compress_t _lz4_fast = NULL
cdef lz4_compress_t _lz4_hc = NULL
cdef lz4_decompress_t _lz4_decompress = NULL
cdef uint8_t _frame_head[7]

cdef enum:
    LZ4_MAGIC = 0x184D2204
    BLOCK_MAX = 4 << 20
    FRAME_OVERHEAD = 15          # 7 header bytes, u32 block size, u32 end mark

HAS_WRITEBACK = bool(TORPOR_HAS_WRITEBACK)


def bind_lz4(uintptr_t fast, uintptr_t hc, uintptr_t decompress, bytes frame_head):
    """Take the addresses of LZ4_compress_fast, LZ4_compress_HC and
    LZ4_decompress_safe, and the 7-byte frame header every chunk frame starts with."""
    global _lz4_fast, _lz4_hc, _lz4_decompress
    if not fast or not hc or not decompress or len(frame_head) != 7:
        raise ValueError("bind_lz4 needs three function addresses and a 7-byte frame header")
    memcpy(_frame_head, <const char*>frame_head, 7)
    _lz4_fast = <lz4_compress_t>fast
    _lz4_hc = <lz4_compress_t>hc
    _lz4_decompress = <lz4_decompress_t>decompress


cdef inline Py_ssize_t _bound(Py_ssize_t n) noexcept nogil:
    return n + n // 255 + 16 + FRAME_OVERHEAD


def lz4_bound(Py_ssize_t n):
    """Room an output buffer needs for the frame of an ``n``-byte chunk."""
    return _bound(n)


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline uint32_t _get32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def lz4_frame(const uint8_t[::1] src, uint8_t[::1] out, int level):
    """Compress ``src`` (at most 4 MiB) into ``out`` as one lz4 frame with one
    block; return the frame's length, or -1 when the block would not be smaller
    than the data (the caller then stores the chunk). ``level`` <= 0 is the fast
    compressor with acceleration ``1 - level``; > 0 is lz4hc at that level."""
    cdef Py_ssize_t n = src.shape[0]
    cdef int got
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    if n <= 0 or n > BLOCK_MAX:
        raise ValueError(f"an lz4 chunk holds 1 byte to 4 MiB, not {n}")
    if out.shape[0] < _bound(n):
        raise ValueError("lz4_frame: the output buffer is too small")
    cdef uint8_t* o = &out[0]
    cdef int cap = <int>(n - 1)          # anything larger is not worth keeping
    with nogil:
        memcpy(o, _frame_head, 7)
        if level > 0:
            got = _lz4_hc(<const char*>&src[0], <char*>(o + 11), <int>n, cap, level)
        else:
            got = _lz4_fast(<const char*>&src[0], <char*>(o + 11), <int>n, cap, 1 - level)
        if got > 0:
            _put32(o + 7, <uint32_t>got)
            _put32(o + 11 + got, 0)
    return got + FRAME_OVERHEAD if got > 0 else -1


def lz4_trial(const uint8_t[::1] src, uint8_t[::1] out, Py_ssize_t parts):
    """Total lz4 block size of ``src`` cut into ``parts`` equal pieces, each
    compressed on its own (a piece that does not shrink counts as its own size).
    Used to pick a chunk's filter from a sample: compressing a shuffled sample
    plane by plane keeps lz4 from matching across planes, which it cannot do
    in a whole chunk, whose planes lie further apart than its 64 KiB window."""
    cdef Py_ssize_t n = src.shape[0], piece, i, total = 0
    cdef int got
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    if parts <= 0 or n % parts or n > BLOCK_MAX:
        raise ValueError("lz4_trial: the sample must cut into equal pieces of at most 4 MiB")
    piece = n // parts
    if piece == 0:
        return 0
    if out.shape[0] < _bound(piece):
        raise ValueError("lz4_trial: the output buffer is too small")
    with nogil:
        for i in range(parts):
            got = _lz4_fast(<const char*>&src[i * piece], <char*>&out[0], <int>piece, <int>piece, 1)
            total += got if got > 0 else piece
    return total


def lz4_frame_into(const uint8_t[::1] src, uint8_t[::1] dest, Py_ssize_t offset, Py_ssize_t raw):
    """Decode one lz4 frame (any that the lz4 library writes without a dictionary)
    into ``dest[offset:offset+raw]``. Every block length is checked against the
    input and the room left; raises ValueError saying what is wrong."""
    cdef Py_ssize_t n = src.shape[0], pos = 0, done = 0, size
    cdef uint32_t word
    cdef uint8_t flg
    cdef int got, stored
    if _lz4_decompress == NULL:
        raise RuntimeError("liblz4 is not bound")
    if offset < 0 or raw < 0 or offset + raw > dest.shape[0]:
        raise ValueError("lz4_frame_into: the destination is too small")
    if n < 7:
        raise ValueError("the lz4 frame is shorter than its header")
    cdef const uint8_t* s = &src[0]
    cdef uint8_t* d = &dest[offset] if raw else NULL
    if _get32(s) != LZ4_MAGIC:
        raise ValueError("the chunk is not an lz4 frame")
    flg = s[4]
    if (flg >> 6) != 1 or flg & 0x03:
        raise ValueError(f"unsupported lz4 frame flags 0x{flg:02x}")
    pos = 7 + (8 if flg & 0x08 else 0)
    if pos > n:
        raise ValueError("the lz4 frame header is truncated")
    cdef int block_sum = 4 if flg & 0x10 else 0
    with nogil:
        while True:
            if pos + 4 > n:
                got = -1
                break
            word = _get32(s + pos)
            pos += 4
            if word == 0:
                got = 0
                break
            stored = word >> 31
            size = word & 0x7FFFFFFF
            if size > n - pos or size > BLOCK_MAX:
                got = -1
                break
            if stored:
                if size > raw - done:
                    got = -2
                    break
                memcpy(d + done, s + pos, size)
                done += size
            else:
                got = _lz4_decompress(<const char*>(s + pos), <char*>(d + done), <int>size,
                                      <int>(raw - done))
                if got < 0:
                    got = -3
                    break
                done += got
            pos += size + block_sum
    if got == -1:
        raise ValueError("an lz4 block runs past the end of its chunk")
    if got == -2:
        raise ValueError("the lz4 frame holds more data than its chunk record says")
    if got == -3:
        raise ValueError("an lz4 block is damaged")
    if flg & 0x04:
        pos += 4                          # content checksum: the chunk checksum covers it
    if pos != n:
        raise ValueError("the lz4 frame does not end where its chunk record says")
    if done != raw:
        raise ValueError(f"the lz4 frame decodes to {done} bytes, not {raw}")


# --- filters ---------------------------------------------------------------------

cdef void _shuffle(const uint8_t* s, uint8_t* d, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t count = n // k, i, j
    cdef const uint8_t* p
    if k == 4:
        for i in range(count):
            p = s + 4 * i
            d[i] = p[0]
            d[count + i] = p[1]
            d[2 * count + i] = p[2]
            d[3 * count + i] = p[3]
    elif k == 8:
        for i in range(count):
            p = s + 8 * i
            for j in range(8):
                d[j * count + i] = p[j]
    else:
        for j in range(k):
            p = s + j
            for i in range(count):
                d[j * count + i] = p[i * k]


cdef void _unshuffle(const uint8_t* s, uint8_t* d, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t count = n // k, i, j
    cdef uint8_t* q
    if k == 4:
        for i in range(count):
            q = d + 4 * i
            q[0] = s[i]
            q[1] = s[count + i]
            q[2] = s[2 * count + i]
            q[3] = s[3 * count + i]
    elif k == 8:
        for i in range(count):
            q = d + 8 * i
            for j in range(8):
                q[j] = s[j * count + i]
    else:
        for j in range(k):
            q = d + j
            for i in range(count):
                q[i * k] = s[j * count + i]


cdef inline uint64_t _load_le(const uint8_t* p, Py_ssize_t k) noexcept nogil:
    cdef uint64_t w = 0
    cdef Py_ssize_t j
    for j in range(k):
        w |= (<uint64_t>p[j]) << (8 * j)
    return w


cdef void _delta_shuffle(const uint8_t* s, uint8_t* d, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    # items are little-endian unsigned words of k = 2, 4 or 8 bytes; word i becomes
    # word[i] - word[i-1] (mod 2**(8k)), then its bytes are shuffled
    cdef Py_ssize_t count = n // k, i, j, b, stop
    cdef uint64_t w, prev = 0, x
    cdef uint32_t w4, p4 = 0
    cdef uint32_t diff[2048]
    if k == 4:
        # per block that stays in L1: the differences (one subtraction each), then
        # the byte scatter, which has no dependency between items
        b = 0
        while b < count:
            stop = b + 2048 if b + 2048 < count else count
            for i in range(b, stop):
                w4 = _get32(s + 4 * i)
                diff[i - b] = w4 - p4
                p4 = w4
            for i in range(b, stop):
                w4 = diff[i - b]
                d[i] = w4 & 0xFF
                d[count + i] = (w4 >> 8) & 0xFF
                d[2 * count + i] = (w4 >> 16) & 0xFF
                d[3 * count + i] = w4 >> 24
            b = stop
        return
    cdef uint64_t mask = 0xFFFFFFFFFFFFFFFF if k == 8 else ((<uint64_t>1) << (8 * k)) - 1
    for i in range(count):
        w = _load_le(s + k * i, k)
        x = (w - prev) & mask
        prev = w
        for j in range(k):
            d[j * count + i] = (x >> (8 * j)) & 0xFF


cdef void _unshuffle_undelta(const uint8_t* s, uint8_t* d, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t count = n // k, i, j, b, stop
    cdef uint64_t w, prev = 0
    cdef uint32_t p4 = 0
    cdef uint32_t* d4
    cdef uint8_t* q
    if k == 4:
        # two passes over blocks that stay in L1: the un-shuffle has no dependency
        # between items (the compiler vectorizes it), the running sum is one add each
        b = 0
        while b < count:
            stop = b + 2048 if b + 2048 < count else count
            _unshuffle4(s, d, count, b, stop)
            for i in range(b, stop):
                p4 = p4 + _get32(d + 4 * i)
                _put32(d + 4 * i, p4)
            b = stop
        return
    cdef uint64_t mask = 0xFFFFFFFFFFFFFFFF if k == 8 else ((<uint64_t>1) << (8 * k)) - 1
    for i in range(count):
        w = 0
        for j in range(k):
            w |= (<uint64_t>s[j * count + i]) << (8 * j)
        prev = (prev + w) & mask
        q = d + k * i
        for j in range(k):
            q[j] = (prev >> (8 * j)) & 0xFF


cdef inline void _unshuffle4(const uint8_t* s, uint8_t* d, Py_ssize_t count, Py_ssize_t start,
                             Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint8_t* q
    for i in range(start, stop):
        q = d + 4 * i
        q[0] = s[i]
        q[1] = s[count + i]
        q[2] = s[2 * count + i]
        q[3] = s[3 * count + i]


cdef int _check_items(Py_ssize_t n, Py_ssize_t itemsize, bint delta) except -1:
    if itemsize <= 0 or n % itemsize:
        raise ValueError(f"the filters need whole items: {n} bytes are not items of {itemsize}")
    if delta and itemsize not in (2, 4, 8):
        raise ValueError(f"the delta filter works on items of 2, 4 or 8 bytes, not {itemsize}")
    return 0


def filter_into(const uint8_t[::1] src, uint8_t[::1] out, Py_ssize_t itemsize, bint delta):
    """Write the shuffle (``delta``: delta then shuffle) of ``src`` to the start of
    ``out``; returns a memoryview of the ``len(src)`` bytes written."""
    cdef Py_ssize_t n = src.shape[0]
    _check_items(n, itemsize, delta)
    if out.shape[0] < n:
        raise ValueError("filter_into: the output buffer is too small")
    if n:
        with nogil:
            if delta:
                _delta_shuffle(&src[0], &out[0], n, itemsize)
            else:
                _shuffle(&src[0], &out[0], n, itemsize)
    return memoryview(out)[:n]


def unfilter_into(uint8_t[::1] dest, Py_ssize_t offset, const uint8_t[::1] src,
                  Py_ssize_t itemsize, bint delta):
    """Undo ``filter_into``, writing straight into ``dest[offset:offset+len(src)]``."""
    cdef Py_ssize_t n = src.shape[0]
    _check_items(n, itemsize, delta)
    if offset < 0 or offset + n > dest.shape[0]:
        raise ValueError("unfilter_into: the destination is too small")
    if n:
        with nogil:
            if delta:
                _unshuffle_undelta(&src[0], &dest[offset], n, itemsize)
            else:
                _unshuffle(&src[0], &dest[offset], n, itemsize)


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
    without waiting (Linux ``sync_file_range``; elsewhere nothing), so that the
    fsync that ends an atomic save finds little left to do."""
    cdef int r
    with nogil:
        r = torpor_writeback(fd, offset, nbytes)
    return r == 0
