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

The kernel hints for a save's file (preallocation, early writeback) live in
``_iohints.pyx``, with the storage package that uses them.

Every function checks its sizes before it releases the GIL; nothing here allocates.
"""

from libc.stdint cimport uint8_t, uint32_t, uintptr_t
from libc.string cimport memcpy

# The filters on words of 2, 4 or 8 bytes, in C so that the compiler vectorizes
# them: each block of TORPOR_BLOCK items (in L1) is loaded as words once, then
# every byte plane is written (or read) as one sequential stream. Words are
# little-endian in the format whatever the host (tw_load/tw_store swap on a
# big-endian one).
cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #define TORPOR_BLOCK 2048
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define TW_SWAP16(v) __builtin_bswap16(v)
    #define TW_SWAP32(v) __builtin_bswap32(v)
    #define TW_SWAP64(v) __builtin_bswap64(v)
    #else
    #define TW_SWAP16(v) (v)
    #define TW_SWAP32(v) (v)
    #define TW_SWAP64(v) (v)
    #endif
    #define TORPOR_WORD_KERNELS(K, T, SWAP)                                           \
    static inline T tw_load##K(const uint8_t* p) { T v; memcpy(&v, p, K); return SWAP(v); } \
    static inline void tw_store##K(uint8_t* p, T v) { v = SWAP(v); memcpy(p, &v, K); }    \
    /* byte j of item i (of m, from p) goes to plane j at q + j * count + i */          \
    static inline void tw_scatter##K(const uint8_t* p, uint8_t* q, size_t m, size_t count) { \
        for (size_t i = 0; i < m; i++)                                                 \
            for (size_t j = 0; j < K; j++) q[j * count + i] = p[K * i + j];            \
    }                                                                                  \
    static inline void tw_gather##K(const uint8_t* q, uint8_t* p, size_t m, size_t count) { \
        for (size_t i = 0; i < m; i++)                                                 \
            for (size_t j = 0; j < K; j++) p[K * i + j] = q[j * count + i];            \
    }                                                                                  \
    /* shuffle (delta: of the differences of consecutive words, made per block) */     \
    static void tw_shuffle##K(const uint8_t* s, uint8_t* d, size_t count, int delta) { \
        uint8_t w[K * TORPOR_BLOCK];                                                   \
        T prev = 0;                                                                    \
        for (size_t b = 0; b < count; b += TORPOR_BLOCK) {                             \
            size_t m = count - b < TORPOR_BLOCK ? count - b : TORPOR_BLOCK, i;         \
            const uint8_t* p = s + (size_t)K * b;                                      \
            if (!delta) {                                                              \
                tw_scatter##K(p, d + b, m, count);                                     \
                continue;                                                              \
            }                                                                          \
            tw_store##K(w, (T)(tw_load##K(p) - prev));                                 \
            for (i = 1; i < m; i++)                                                    \
                tw_store##K(w + K * i, (T)(tw_load##K(p + K * i) - tw_load##K(p + K * (i - 1)))); \
            prev = tw_load##K(p + K * (m - 1));                                        \
            tw_scatter##K(w, d + b, m, count);                                         \
        }                                                                              \
    }                                                                                  \
    /* the inverse, straight into place (then the running sum over the block) */      \
    static void tw_unshuffle##K(const uint8_t* s, uint8_t* d, size_t count, int delta) { \
        T prev = 0;                                                                    \
        for (size_t b = 0; b < count; b += TORPOR_BLOCK) {                             \
            size_t m = count - b < TORPOR_BLOCK ? count - b : TORPOR_BLOCK, i;         \
            uint8_t* p = d + (size_t)K * b;                                            \
            tw_gather##K(s + b, p, m, count);                                          \
            if (delta)                                                                 \
                for (i = 0; i < m; i++) {                                              \
                    prev = (T)(prev + tw_load##K(p + K * i));                          \
                    tw_store##K(p + K * i, prev);                                      \
                }                                                                      \
        }                                                                              \
    }
    TORPOR_WORD_KERNELS(2, uint16_t, TW_SWAP16)
    TORPOR_WORD_KERNELS(4, uint32_t, TW_SWAP32)
    TORPOR_WORD_KERNELS(8, uint64_t, TW_SWAP64)
    static int tw_shuffle(const uint8_t* s, uint8_t* d, size_t n, size_t k, int delta) {
        switch (k) {
            case 2: tw_shuffle2(s, d, n / 2, delta); return 1;
            case 4: tw_shuffle4(s, d, n / 4, delta); return 1;
            case 8: tw_shuffle8(s, d, n / 8, delta); return 1;
        }
        return 0;
    }
    static int tw_unshuffle(const uint8_t* s, uint8_t* d, size_t n, size_t k, int delta) {
        switch (k) {
            case 2: tw_unshuffle2(s, d, n / 2, delta); return 1;
            case 4: tw_unshuffle4(s, d, n / 4, delta); return 1;
            case 8: tw_unshuffle8(s, d, n / 8, delta); return 1;
        }
        return 0;
    }
    """
    int tw_shuffle(const uint8_t* s, uint8_t* d, size_t n, size_t k, int delta) nogil
    int tw_unshuffle(const uint8_t* s, uint8_t* d, size_t n, size_t k, int delta) nogil

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
    """Room an output buffer needs for the frame of an ``n``-byte chunk, in up to
    64 blocks."""
    return _bound(n) + 4 * 64


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline uint32_t _get32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def lz4_frame(const uint8_t[::1] src, uint8_t[::1] out, int level, Py_ssize_t parts=1):
    """Compress ``src`` (at most 4 MiB) into ``out`` as one lz4 frame of ``parts``
    independent blocks, one per equal piece: the byte planes of a shuffled chunk,
    which differ too much for matches across them, so a fresh search per plane
    is both faster and (a little) smaller. A piece that does not shrink is an
    uncompressed block. Returns the frame's length, or -1 when no piece shrank (the
    caller then stores the chunk). ``level`` <= 0 is the fast compressor with
    acceleration ``1 - level``; > 0 is lz4hc at that level."""
    cdef Py_ssize_t n = src.shape[0], piece, i, pos = 7
    cdef int got
    cdef bint shrank = False
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    if n <= 0 or n > BLOCK_MAX:
        raise ValueError(f"an lz4 chunk holds 1 byte to 4 MiB, not {n}")
    if parts <= 0 or parts > 64 or n % parts:
        raise ValueError(f"lz4_frame: {n} bytes do not cut into {parts} equal pieces (at most 64)")
    if out.shape[0] < _bound(n) + 4 * parts:
        raise ValueError("lz4_frame: the output buffer is too small")
    piece = n // parts
    cdef uint8_t* o = &out[0]
    cdef const uint8_t* s = &src[0]
    with nogil:
        memcpy(o, _frame_head, 7)
        for i in range(parts):
            if level > 0:
                got = _lz4_hc(<const char*>(s + i * piece), <char*>(o + pos + 4), <int>piece,
                              <int>(piece - 1), level)
            else:
                got = _lz4_fast(<const char*>(s + i * piece), <char*>(o + pos + 4), <int>piece,
                                <int>(piece - 1), 1 - level)
            if got > 0:
                shrank = True
                _put32(o + pos, <uint32_t>got)
                pos += 4 + got
            else:
                _put32(o + pos, <uint32_t>piece | 0x80000000u)
                memcpy(o + pos + 4, s + i * piece, piece)
                pos += 4 + piece
        _put32(o + pos, 0)
    return pos + 4 if shrank else -1


def lz4_trial(const uint8_t[::1] src, uint8_t[::1] out, Py_ssize_t parts):
    """Total lz4 block size of ``src`` cut into ``parts`` equal pieces, each
    compressed on its own (a piece that does not shrink counts as its own size).
    Used to pick a chunk's filter from a sample: a shuffled sample is compressed
    plane by plane, as the chunk will be (see ``lz4_frame``)."""
    cdef Py_ssize_t n = src.shape[0], piece, i, total = 0
    cdef int got
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    if parts <= 0 or parts > 64 or n % parts or n > BLOCK_MAX:
        raise ValueError("lz4_trial: the sample must cut into at most 64 equal pieces of at most 4 MiB")
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
    # items of other sizes (structured records, complex, 16-byte floats); words of
    # 2, 4 and 8 bytes go to tw_shuffle
    cdef Py_ssize_t count = n // k, i, j
    cdef const uint8_t* p
    for j in range(k):
        p = s + j
        for i in range(count):
            d[j * count + i] = p[i * k]


cdef void _unshuffle(const uint8_t* s, uint8_t* d, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t count = n // k, i, j
    cdef uint8_t* q
    for j in range(k):
        q = d + j
        for i in range(count):
            q[i * k] = s[j * count + i]


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
            if not tw_shuffle(&src[0], &out[0], n, itemsize, delta):
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
            if not tw_unshuffle(&src[0], &dest[offset], n, itemsize, delta):
                _unshuffle(&src[0], &dest[offset], n, itemsize)


def copy_into(uint8_t[::1] dest, Py_ssize_t offset, const uint8_t[::1] src):
    """``dest[offset:offset+len(src)] = src`` without the GIL."""
    cdef Py_ssize_t n = src.shape[0]
    if offset < 0 or offset + n > dest.shape[0]:
        raise ValueError("copy_into: bad sizes")
    if n:
        with nogil:
            memcpy(&dest[offset], &src[0], n)
