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

from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy

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
    /* SSE2: every x86-64 compiler has it (MSVC says so with _M_X64, not __SSE2__) */
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #define TW_SSE2 1
    #include <emmintrin.h>
    #endif
    /* Byte (un)shuffle of 8-byte items, 16 at a time: the compilers vectorise the
       plain loops for 2- and 4-byte items but not for 8 (2 GB/s against 19), and
       8-byte items are the float64 and int64 arrays. Returns the items done; the
       plain loop does the rest. */
    static inline size_t tw_scatter8_simd(const uint8_t* p, uint8_t* q, size_t m, size_t count) {
        size_t i = 0;
    #if defined(TW_SSE2)
        for (; i + 16 <= m; i += 16) {
            __m128i a[8], b[8], c[8];
            for (int g = 0; g < 8; g++) {     /* items 2g, 2g+1: word j = their byte j */
                __m128i r = _mm_loadu_si128((const __m128i*)(p + 8 * i + 16 * g));
                a[g] = _mm_unpacklo_epi8(r, _mm_srli_si128(r, 8));
            }
            for (int g = 0; g < 8; g += 2) {  /* then an 8x8 transpose of 16-bit words */
                b[g] = _mm_unpacklo_epi16(a[g], a[g + 1]);
                b[g + 1] = _mm_unpackhi_epi16(a[g], a[g + 1]);
            }
            for (int h = 0; h < 8; h += 4) {
                c[h] = _mm_unpacklo_epi32(b[h], b[h + 2]);
                c[h + 1] = _mm_unpackhi_epi32(b[h], b[h + 2]);
                c[h + 2] = _mm_unpacklo_epi32(b[h + 1], b[h + 3]);
                c[h + 3] = _mm_unpackhi_epi32(b[h + 1], b[h + 3]);
            }
            for (int j = 0; j < 4; j++) {     /* plane 2j and 2j+1: items i .. i+15 */
                _mm_storeu_si128((__m128i*)(q + (2 * j) * count + i),
                                 _mm_unpacklo_epi64(c[j], c[j + 4]));
                _mm_storeu_si128((__m128i*)(q + (2 * j + 1) * count + i),
                                 _mm_unpackhi_epi64(c[j], c[j + 4]));
            }
        }
    #endif
        return i;
    }
    static inline size_t tw_gather8_simd(const uint8_t* q, uint8_t* p, size_t m, size_t count) {
        size_t i = 0;
    #if defined(TW_SSE2)
        for (; i + 16 <= m; i += 16) {
            __m128i d[8], e[8], f[8];
            for (int j = 0; j < 8; j++)
                d[j] = _mm_loadu_si128((const __m128i*)(q + j * count + i));
            for (int j = 0; j < 8; j += 2) {  /* word t: bytes j, j+1 of item t (or 8+t) */
                e[j] = _mm_unpacklo_epi8(d[j], d[j + 1]);
                e[j + 1] = _mm_unpackhi_epi8(d[j], d[j + 1]);
            }
            for (int h = 0; h < 2; h++) {     /* items 8h .. 8h+7 */
                __m128i f0 = _mm_unpacklo_epi16(e[h], e[h + 2]);
                __m128i f1 = _mm_unpackhi_epi16(e[h], e[h + 2]);
                __m128i g0 = _mm_unpacklo_epi16(e[h + 4], e[h + 6]);
                __m128i g1 = _mm_unpackhi_epi16(e[h + 4], e[h + 6]);
                f[4 * h] = _mm_unpacklo_epi32(f0, g0);
                f[4 * h + 1] = _mm_unpackhi_epi32(f0, g0);
                f[4 * h + 2] = _mm_unpacklo_epi32(f1, g1);
                f[4 * h + 3] = _mm_unpackhi_epi32(f1, g1);
            }
            for (int g = 0; g < 8; g++)
                _mm_storeu_si128((__m128i*)(p + 8 * i + 16 * g), f[g]);
        }
    #endif
        return i;
    }
    static inline size_t tw_scatter_simd(size_t K, const uint8_t* p, uint8_t* q, size_t m, size_t count) {
        return K == 8 ? tw_scatter8_simd(p, q, m, count) : 0;
    }
    static inline size_t tw_gather_simd(size_t K, const uint8_t* q, uint8_t* p, size_t m, size_t count) {
        return K == 8 ? tw_gather8_simd(q, p, m, count) : 0;
    }
    #define TORPOR_WORD_KERNELS(K, T, SWAP)                                           \
    static inline T tw_load##K(const uint8_t* p) { T v; memcpy(&v, p, K); return SWAP(v); } \
    static inline void tw_store##K(uint8_t* p, T v) { v = SWAP(v); memcpy(p, &v, K); }    \
    /* byte j of item i (of m, from p) goes to plane j at q + j * count + i */          \
    static inline void tw_scatter##K(const uint8_t* p, uint8_t* q, size_t m, size_t count) { \
        for (size_t i = tw_scatter_simd(K, p, q, m, count); i < m; i++)                \
            for (size_t j = 0; j < K; j++) q[j * count + i] = p[K * i + j];            \
    }                                                                                  \
    static inline void tw_gather##K(const uint8_t* q, uint8_t* p, size_t m, size_t count) { \
        for (size_t i = tw_gather_simd(K, q, p, m, count); i < m; i++)                 \
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
    /* Bit planes (modes 4 and 5). One 8x8 bit-matrix transpose per 8 bytes of a
       byte plane (Hacker's Delight 7-3, on a little-endian word): byte i of the word
       is item i's byte, and after the transpose byte b holds bit b of the 8 items.
       Plane b of a byte plane of n bytes (n % 8 == 0) is the n/8 bytes at q + b*n/8;
       the transpose is its own inverse. */
    static inline uint64_t tw_t8(uint64_t x) {
        uint64_t t;
        t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;  x ^= t ^ (t << 7);
        t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL; x ^= t ^ (t << 14);
        t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL; x ^= t ^ (t << 28);
        return x;
    }
    static void tw_bits(const uint8_t* p, uint8_t* q, size_t n) {
        size_t m = n / 8, i = 0;
    #if defined(TW_SSE2)
        /* 16 items at a time: movemask collects the top bit of every byte, and a
           shift by one brings the next bit up (x86 is little-endian) */
        /* 64 items at a time: tw_t8 on the eight 8-byte groups (two per register),
           then an 8x8 byte transpose with unpacks so that each plane's 8 bytes are
           stored at once (the inverse of tw_unbits' loop) */
        const __m128i k7 = _mm_set1_epi64x(0x00AA00AA00AA00AALL);
        const __m128i k14 = _mm_set1_epi64x(0x0000CCCC0000CCCCLL);
        const __m128i k28 = _mm_set1_epi64x(0x00000000F0F0F0F0LL);
        for (; i + 8 <= m; i += 8) {
            __m128i x[4], t;
            for (int g = 0; g < 4; g++) {
                __m128i v = _mm_loadu_si128((const __m128i*)(p + 8 * i + 16 * g));
                t = _mm_and_si128(_mm_xor_si128(v, _mm_srli_epi64(v, 7)), k7);
                v = _mm_xor_si128(v, _mm_xor_si128(t, _mm_slli_epi64(t, 7)));
                t = _mm_and_si128(_mm_xor_si128(v, _mm_srli_epi64(v, 14)), k14);
                v = _mm_xor_si128(v, _mm_xor_si128(t, _mm_slli_epi64(t, 14)));
                t = _mm_and_si128(_mm_xor_si128(v, _mm_srli_epi64(v, 28)), k28);
                x[g] = _mm_xor_si128(v, _mm_xor_si128(t, _mm_slli_epi64(t, 28)));
            }
            __m128i a01 = _mm_unpacklo_epi8(x[0], _mm_srli_si128(x[0], 8));
            __m128i a23 = _mm_unpacklo_epi8(x[1], _mm_srli_si128(x[1], 8));
            __m128i a45 = _mm_unpacklo_epi8(x[2], _mm_srli_si128(x[2], 8));
            __m128i a67 = _mm_unpacklo_epi8(x[3], _mm_srli_si128(x[3], 8));
            __m128i b0 = _mm_unpacklo_epi16(a01, a23), b1 = _mm_unpackhi_epi16(a01, a23);
            __m128i b2 = _mm_unpacklo_epi16(a45, a67), b3 = _mm_unpackhi_epi16(a45, a67);
            __m128i c[4] = {_mm_unpacklo_epi32(b0, b2), _mm_unpackhi_epi32(b0, b2),
                            _mm_unpacklo_epi32(b1, b3), _mm_unpackhi_epi32(b1, b3)};
            for (int g = 0; g < 4; g++) {
                _mm_storel_epi64((__m128i*)(q + (2 * g) * m + i), c[g]);
                _mm_storel_epi64((__m128i*)(q + (2 * g + 1) * m + i), _mm_srli_si128(c[g], 8));
            }
        }
        for (; i + 2 <= m; i += 2) {
            __m128i v = _mm_loadu_si128((const __m128i*)(p + 8 * i));
            for (int b = 7; b >= 0; b--) {
                uint16_t mk = (uint16_t)_mm_movemask_epi8(v);
                memcpy(q + b * m + i, &mk, 2);
                v = _mm_slli_epi16(v, 1);
            }
        }
    #endif
        for (; i < m; i++) {
            uint64_t x = tw_t8(tw_load8(p + 8 * i));
            for (int b = 0; b < 8; b++) q[b * m + i] = (uint8_t)(x >> (8 * b));
        }
    }
    static void tw_unbits(const uint8_t* q, uint8_t* p, size_t n) {
        size_t m = n / 8, i = 0;
    #if defined(TW_SSE2)
        /* 64 items at a time: 8 bytes of every plane, byte-transposed with unpacks
           so that each 64-bit lane holds one group's word, then tw_t8 on both lanes */
        const __m128i k7 = _mm_set1_epi64x(0x00AA00AA00AA00AALL);
        const __m128i k14 = _mm_set1_epi64x(0x0000CCCC0000CCCCLL);
        const __m128i k28 = _mm_set1_epi64x(0x00000000F0F0F0F0LL);
        for (; i + 8 <= m; i += 8) {
            __m128i r0 = _mm_loadl_epi64((const __m128i*)(q + i));
            __m128i r1 = _mm_loadl_epi64((const __m128i*)(q + m + i));
            __m128i r2 = _mm_loadl_epi64((const __m128i*)(q + 2 * m + i));
            __m128i r3 = _mm_loadl_epi64((const __m128i*)(q + 3 * m + i));
            __m128i r4 = _mm_loadl_epi64((const __m128i*)(q + 4 * m + i));
            __m128i r5 = _mm_loadl_epi64((const __m128i*)(q + 5 * m + i));
            __m128i r6 = _mm_loadl_epi64((const __m128i*)(q + 6 * m + i));
            __m128i r7 = _mm_loadl_epi64((const __m128i*)(q + 7 * m + i));
            __m128i a01 = _mm_unpacklo_epi8(r0, r1), a23 = _mm_unpacklo_epi8(r2, r3);
            __m128i a45 = _mm_unpacklo_epi8(r4, r5), a67 = _mm_unpacklo_epi8(r6, r7);
            __m128i b0 = _mm_unpacklo_epi16(a01, a23), b1 = _mm_unpackhi_epi16(a01, a23);
            __m128i b2 = _mm_unpacklo_epi16(a45, a67), b3 = _mm_unpackhi_epi16(a45, a67);
            __m128i x[4] = {_mm_unpacklo_epi32(b0, b2), _mm_unpackhi_epi32(b0, b2),
                            _mm_unpacklo_epi32(b1, b3), _mm_unpackhi_epi32(b1, b3)};
            for (int g = 0; g < 4; g++) {
                __m128i v = x[g], t;
                t = _mm_and_si128(_mm_xor_si128(v, _mm_srli_epi64(v, 7)), k7);
                v = _mm_xor_si128(v, _mm_xor_si128(t, _mm_slli_epi64(t, 7)));
                t = _mm_and_si128(_mm_xor_si128(v, _mm_srli_epi64(v, 14)), k14);
                v = _mm_xor_si128(v, _mm_xor_si128(t, _mm_slli_epi64(t, 14)));
                t = _mm_and_si128(_mm_xor_si128(v, _mm_srli_epi64(v, 28)), k28);
                v = _mm_xor_si128(v, _mm_xor_si128(t, _mm_slli_epi64(t, 28)));
                _mm_storeu_si128((__m128i*)(p + 8 * i + 16 * g), v);
            }
        }
    #endif
        for (; i < m; i++) {
            uint64_t x = 0;
            for (int b = 0; b < 8; b++) x |= (uint64_t)q[b * m + i] << (8 * b);
            tw_store8(p + 8 * i, tw_t8(x));
        }
    }
    """
    int tw_shuffle(const uint8_t* s, uint8_t* d, size_t n, size_t k, int delta) nogil
    int tw_unshuffle(const uint8_t* s, uint8_t* d, size_t n, size_t k, int delta) nogil
    void tw_bits(const uint8_t* p, uint8_t* q, size_t n) nogil
    void tw_unbits(const uint8_t* q, uint8_t* p, size_t n) nogil

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


cdef inline Py_ssize_t _lz4_room(Py_ssize_t n) noexcept nogil:
    # LZ4_compressBound: lz4 is given the room it can always fill, as python-lz4
    # gives it (with less room liblz4 ends a block differently); the frame's room
    # covers it, since every block before took at most its own size
    return n + n // 255 + 16


def lz4_bound(Py_ssize_t n):
    """Room an output buffer needs for the frame of an ``n``-byte chunk, in up to
    64 blocks (64 filter blocks of two lz4 blocks, with byte planes)."""
    return _bound(n) + 8 * 64


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline uint32_t _get32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def lz4_frame(const uint8_t[::1] src, uint8_t[::1] out, int level, Py_ssize_t parts=1,
              uint64_t store=0):
    """Compress ``src`` (at most 4 MiB) into ``out`` as one lz4 frame of ``parts``
    independent blocks, one per equal piece: the byte planes of a shuffled chunk,
    which differ too much for matches across them, so a fresh search per plane
    is both faster and (a little) smaller. A piece that does not shrink is an
    uncompressed block. Returns the frame's length, or -1 when no piece shrank (the
    caller then stores the chunk). ``level`` <= 0 is the fast compressor with
    acceleration ``1 - level``; > 0 is lz4hc at that level. Bit i of ``store`` set:
    piece i goes in as an uncompressed block without a search (a trial found it
    does not compress; lz4 would spend time finding that out again)."""
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
            if (store >> i) & 1:
                got = 0
            elif level > 0:
                got = _lz4_hc(<const char*>(s + i * piece), <char*>(o + pos + 4), <int>piece,
                              <int>_lz4_room(piece), level)
            else:
                got = _lz4_fast(<const char*>(s + i * piece), <char*>(o + pos + 4), <int>piece,
                                <int>_lz4_room(piece), 1 - level)
            if 0 < got < piece:
                shrank = True
                _put32(o + pos, <uint32_t>got)
                pos += 4 + got
            else:
                _put32(o + pos, <uint32_t>piece | 0x80000000u)
                memcpy(o + pos + 4, s + i * piece, piece)
                pos += 4 + piece
        _put32(o + pos, 0)
    return pos + 4 if shrank else -1


def lz4_trial(const uint8_t[::1] src, uint8_t[::1] out, Py_ssize_t parts, double keep=0.97):
    """Compress ``src`` cut into ``parts`` equal pieces, each on its own, as
    ``lz4_frame`` would. Returns ``(total, store)``: the frame's estimated payload
    (a piece that does not get below ``keep`` of its size counts as its own size)
    and the mask of such pieces, for ``lz4_frame``'s ``store``. Used to pick a
    chunk's filter from a sample: a filtered sample is compressed plane by plane,
    as the chunk will be."""
    cdef Py_ssize_t n = src.shape[0], piece, i, total = 0, limit
    cdef int got
    cdef uint64_t store = 0
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    if parts <= 0 or parts > 64 or n % parts or n > BLOCK_MAX:
        raise ValueError("lz4_trial: the sample must cut into at most 64 equal pieces of at most 4 MiB")
    piece = n // parts
    if piece == 0:
        return 0, 0
    if out.shape[0] < _bound(piece):
        raise ValueError("lz4_trial: the output buffer is too small")
    limit = <Py_ssize_t>(piece * keep)
    with nogil:
        for i in range(parts):
            got = _lz4_fast(<const char*>&src[i * piece], <char*>&out[0], <int>piece, <int>piece, 1)
            if got <= 0 or got > limit:
                total += piece
                store |= (<uint64_t>1) << i
            else:
                total += got
    return total, store


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


cdef int _check_bits(Py_ssize_t n, Py_ssize_t itemsize, bint delta) except -1:
    if itemsize <= 0 or itemsize > 8 or n % (8 * itemsize):
        raise ValueError(f"the bit filters need items of 1 to 8 bytes, 8 at a time: {n} bytes "
                         f"are not groups of 8 items of {itemsize}")
    if delta and itemsize not in (2, 4, 8):
        raise ValueError(f"the delta filter works on items of 2, 4 or 8 bytes, not {itemsize}")
    return 0


def bitfilter_into(const uint8_t[::1] src, uint8_t[::1] out, uint8_t[::1] tmp,
                   Py_ssize_t itemsize, bint delta):
    """Write the bit planes of ``src`` (``delta``: of its word differences) to the
    start of ``out``, through ``tmp`` (as large as ``src``; the byte shuffle goes
    there first); returns a memoryview of the ``len(src)`` bytes written."""
    cdef Py_ssize_t n = src.shape[0]
    _check_bits(n, itemsize, delta)
    if out.shape[0] < n or tmp.shape[0] < n:
        raise ValueError("bitfilter_into: the output buffers are too small")
    if n:
        with nogil:
            _split_block(&src[0], &tmp[0], &out[0], n, itemsize, delta, 0)
    return memoryview(out)[:n]


def bitunfilter_into(uint8_t[::1] dest, Py_ssize_t offset, const uint8_t[::1] src,
                     uint8_t[::1] tmp, Py_ssize_t itemsize, bint delta):
    """Undo ``bitfilter_into``, writing into ``dest[offset:offset+len(src)]``."""
    cdef Py_ssize_t n = src.shape[0]
    _check_bits(n, itemsize, delta)
    if offset < 0 or offset + n > dest.shape[0]:
        raise ValueError("bitunfilter_into: the destination is too small")
    if tmp.shape[0] < n:
        raise ValueError("bitunfilter_into: the scratch buffer is too small")
    if n:
        with nogil:
            _unsplit_block(&src[0], &tmp[0], &dest[offset], n, itemsize, delta, 0)


# --- bit-plane chunks (modes 4 to 9): filtered and compressed block by block -----
#
# The chunk is cut into blocks of ``block`` bytes (the last one shorter), and each
# block goes through the filter into a scratch buffer and straight on to lz4 while
# it is still in cache (as blosc does), as one lz4 block of the frame. Small blocks
# also keep all the planes of a block inside lz4's 64 KiB window, where planes that
# repeat each other (the mantissa bits of decimal numbers) match.
#
# ``mask`` (modes 6 to 9; 0 is modes 4 and 5, and may be 8 and 9): bit j set, byte j of every item
# stays a byte plane and is not cut into bit planes. The writer sets it for the
# bytes that are noise (the low mantissa bytes of measured floats): they go into
# the block as literals anyway, and the bit transpose of noise was most of the
# filter's cost.

cdef int _check_blocks(Py_ssize_t n, Py_ssize_t k, bint delta, Py_ssize_t block,
                       Py_ssize_t most=64, unsigned mask=0) except -1:
    if k <= 0 or k > 8 or n % k:
        raise ValueError(f"bit-plane chunks hold whole items of 1 to 8 bytes: {n} bytes are not "
                         f"items of {k}")
    if delta and k not in (2, 4, 8):
        raise ValueError(f"the delta filter works on items of 2, 4 or 8 bytes, not {k}")
    if block <= 0 or block % (8 * k) or block > BLOCK_MAX or (n + block - 1) // block > most:
        raise ValueError(f"bit-plane blocks of {block} bytes do not suit {n} bytes of {k}-byte items "
                         f"(a multiple of 8 items, at most 4 MiB, at most 64 blocks)")
    if mask >> k or (mask and mask == (1u << k) - 1):
        raise ValueError(f"byte-plane mask {mask:#x} does not suit {k}-byte items "
                         f"(bits 0 to {k - 1}, and not all of them)")
    return 0


cdef inline int _lz4_block(const uint8_t* src, uint8_t* dst, Py_ssize_t n, Py_ssize_t room,
                           int level) noexcept nogil:
    if level > 0:
        return _lz4_hc(<const char*>src, <char*>dst, <int>n, <int>room, level)
    return _lz4_fast(<const char*>src, <char*>dst, <int>n, <int>room, 1 - level)


cdef inline Py_ssize_t _split_block(const uint8_t* s, uint8_t* t, uint8_t* q, Py_ssize_t b,
                                    Py_ssize_t k, bint delta, unsigned mask) noexcept nogil:
    """Filter one block: its groups of 8 items byte-shuffled into ``t`` (delta
    first), then the byte planes not in ``mask`` cut into bit planes at ``q``, one
    after another, and the items after the last group after them. Returns how
    many bytes of ``q`` that is; the byte planes of ``mask`` stay in ``t`` (for
    k = 1, mask 0, the bits come straight from ``s``)."""
    cdef Py_ssize_t full = b - b % (8 * k), m = full // k, nb = 0, j
    cdef const uint8_t* planes = s
    if full:
        if k > 1:
            if not tw_shuffle(s, t, full, k, delta):
                _shuffle(s, t, full, k)
            planes = t
        for j in range(k):
            if not (mask >> j) & 1:
                tw_bits(planes + j * m, q + nb, m)
                nb += m
    if b > full:
        memcpy(q + nb, s + full, b - full)
    return nb + b - full


cdef inline void _unsplit_block(const uint8_t* q, uint8_t* t, uint8_t* d, Py_ssize_t b,
                                Py_ssize_t k, bint delta, unsigned mask) noexcept nogil:
    """Undo ``_split_block``: ``q`` holds the bit planes and the tail, and the
    byte planes of ``mask`` are in their place in ``t`` already."""
    cdef Py_ssize_t full = b - b % (8 * k), m = full // k, nb = 0, j
    if full:
        if k == 1:
            tw_unbits(q, d, m)
            nb = m
        else:
            for j in range(k):
                if not (mask >> j) & 1:
                    tw_unbits(q + nb, t + j * m, m)
                    nb += m
            if not tw_unshuffle(t, d, full, k, delta):
                _unshuffle(t, d, full, k)
    if b > full:
        memcpy(d + full, q + nb, b - full)


cdef inline bint _low_mask(unsigned mask) noexcept nogil:
    # the first bytes of an item (its low bytes, for a little-endian one)
    return (mask & (mask + 1)) == 0


cdef int _check_xor(Py_ssize_t xor, Py_ssize_t itemsize, Py_ssize_t bytes_kept) except -1:
    if xor < 0 or (xor and xor >= 8 * (itemsize - bytes_kept)):
        raise ValueError(f"planes XORed from plane {xor} do not suit {itemsize}-byte items with "
                         f"{bytes_kept} byte planes (0 for none, or 1 to {8 * (itemsize - bytes_kept) - 1})")
    return 0


cdef inline void _xor_plane(uint8_t* q, Py_ssize_t g, Py_ssize_t i) noexcept nogil:
    """Plane ``i`` of ``g`` bytes at ``q`` ^= plane ``i - 1`` (a loop -O3 vectorises)."""
    cdef uint8_t* p = q + i * g
    cdef const uint8_t* r = p - g
    cdef Py_ssize_t x
    for x in range(g):
        p[x] ^= r[x]


cdef inline void _xor_planes(uint8_t* q, Py_ssize_t g, Py_ssize_t first, Py_ssize_t count) noexcept nogil:
    """Planes ``first`` to ``count - 1``, each XORed with the plane before it as it
    was: from the top down."""
    cdef Py_ssize_t i = count - 1
    while i >= first:
        _xor_plane(q, g, i)
        i -= 1


cdef inline void _unxor_planes(uint8_t* q, Py_ssize_t g, Py_ssize_t first, Py_ssize_t count) noexcept nogil:
    """Undo ``_xor_planes``: from the bottom up, each plane XORed with the one
    before it as restored."""
    cdef Py_ssize_t i
    for i in range(first, count):
        _xor_plane(q, g, i)


cdef Py_ssize_t _literals_first(uint8_t* dst, const uint8_t* lit, Py_ssize_t nlit,
                                const uint8_t* c, Py_ssize_t clen, Py_ssize_t most) noexcept nogil:
    """Write to ``dst`` the lz4 block of ``nlit`` bytes at ``lit`` followed by the
    data that ``c`` (an lz4 block of ``clen`` bytes) holds: the same block with its
    first sequence's literal run made ``nlit`` bytes longer, at its start (its
    matches point back by distances, which the literals in front leave right).
    Returns the block's length, or -1 when it would not be under ``most`` bytes."""
    cdef Py_ssize_t p = 1, run, w, total
    cdef uint8_t token, x
    if clen < 1:
        return -1
    token = c[0]
    run = token >> 4
    if run == 15:
        while True:
            if p >= clen:
                return -1
            x = c[p]
            p += 1
            run += x
            if x != 255:
                break
    run += nlit
    w = 1 + ((run - 15) // 255 + 1 if run >= 15 else 0)
    total = w + nlit + clen - p
    if total >= most:
        return -1
    if run >= 15:
        dst[0] = 0xF0 | (token & 0x0F)
        run -= 15
        w = 1
        while run >= 255:
            dst[w] = 255
            w += 1
            run -= 255
        dst[w] = <uint8_t>run
        w += 1
    else:
        dst[0] = <uint8_t>((run << 4) | (token & 0x0F))
        w = 1
    memcpy(dst + w, lit, nlit)
    memcpy(dst + w + nlit, c + p, clen - p)
    return total


def bits_frame(const uint8_t[::1] src, uint8_t[::1] out, uint8_t[::1] tmp, uint8_t[::1] tmp2,
               Py_ssize_t itemsize, bint delta, Py_ssize_t block, int level, Py_ssize_t plain=0,
               unsigned mask=0, Py_ssize_t xor=0):
    """Write ``src`` as one lz4 frame of bit-plane blocks (``delta``: of word
    differences, restarting in every block; the items after the last group of 8
    as they are) into ``out``; ``tmp2`` holds at least ``block`` bytes, ``tmp`` as
    many (``_lz4_room(block)`` with ``plain``: lz4's output goes there then).
    ``mask`` (modes 6 to 9): the bytes of an item kept as byte planes. They are
    noise: every block's byte planes are an lz4 block of their own, stored, and
    its bit planes and tail the next one.
    ``plain``: how many of the first bit planes of every block (bit 0 of the
    first byte not in ``mask`` first: its lowest bits, for a little-endian item)
    are noise too, which lz4 is not run on: they go into the block as one
    literal run (``_literals_first``), a standard lz4 block still.
    ``xor`` (modes 8 and 9): the bit planes from plane ``xor`` on are each XORed
    with the plane before it (0: none).
    Returns the frame's length, or -1 when no block shrank."""
    cdef Py_ssize_t n = src.shape[0], pos = 0, o = 7, b, nblocks, lit, nq, m, j, before, bytes_kept = 0
    cdef int got
    cdef bint shrank = False, low = _low_mask(mask)
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    if n <= 0:
        raise ValueError("bits_frame needs at least one item")
    _check_blocks(n, itemsize, delta, block, 64, mask)
    for j in range(itemsize):
        bytes_kept += (mask >> j) & 1
    if plain < 0 or plain > 8 * (itemsize - bytes_kept):
        raise ValueError(f"bits_frame: {plain} plain bit planes of {itemsize}-byte items, "
                         f"{bytes_kept} of whose bytes are byte planes")
    _check_xor(xor, itemsize, bytes_kept)
    nblocks = (n + block - 1) // block
    if out.shape[0] < _bound(n) + (8 if mask else 4) * nblocks or tmp2.shape[0] < block \
            or tmp.shape[0] < (_lz4_room(block) if plain else block):
        raise ValueError("bits_frame: a buffer is too small")
    cdef const uint8_t* s = &src[0]
    cdef uint8_t* d = &out[0]
    cdef uint8_t* t = &tmp[0]
    cdef uint8_t* q = &tmp2[0]
    with nogil:
        memcpy(d, _frame_head, 7)
        while pos < n:
            b = n - pos if n - pos < block else block
            m = (b - b % (8 * itemsize)) // itemsize
            before = m * bytes_kept
            if before:
                # the byte planes: an lz4 block of their own, stored. When they
                # are an item's first bytes, the shuffle writes them straight to
                # their place in ``out`` (the other planes land after them, and
                # are cut into bit planes before the next block overwrites them)
                nq = _split_block(s + pos, d + o + 4 if low else t, q, b, itemsize, delta, mask)
                if not low:
                    before = 0
                    for j in range(itemsize):
                        if (mask >> j) & 1:
                            memcpy(d + o + 4 + before, t + j * m, m)
                            before += m
                _put32(d + o, <uint32_t>before | 0x80000000u)
                o += 4 + before
            else:
                nq = _split_block(s + pos, t, q, b, itemsize, delta, mask)
            if xor and m:
                _xor_planes(q, m // 8, xor, 8 * (itemsize - bytes_kept))
            lit = m // 8 * plain
            if lit == 0:
                got = _lz4_block(q, d + o + 4, nq, _lz4_room(nq), level)
            elif lit >= nq:
                got = 0                     # all noise: stored
            else:
                # the rest after the noise planes, compressed into the filter's
                # scratch (free once the planes are in q)
                got = _lz4_block(q + lit, t, nq - lit, _lz4_room(nq - lit), level)
                if got > 0:
                    got = <int>_literals_first(d + o + 4, q, lit, t, got, nq)
            if 0 < got < nq:
                shrank = True
                _put32(d + o, <uint32_t>got)
                o += 4 + got
            else:
                _put32(d + o, <uint32_t>nq | 0x80000000u)
                memcpy(d + o + 4, q, nq)
                o += 4 + nq
            pos += b
        _put32(d + o, 0)
    return o + 4 if shrank else -1


def bits_plain(const uint8_t[::1] src, uint8_t[::1] tmp, uint8_t[::1] tmp2, uint8_t[::1] trial,
               Py_ssize_t itemsize, bint delta, int level, double keep):
    """How many of the first bit planes of ``src`` (a trial sample: whole groups of
    8 items) lz4 at ``level`` cannot get below ``keep`` of their size, counted
    from the lowest bit up to the first plane that compresses: the ``plain`` of
    ``bits_frame``. The low bits of measured floats are noise."""
    cdef Py_ssize_t n = src.shape[0], g, j, count = 0
    cdef int got
    if _lz4_fast == NULL:
        raise RuntimeError("liblz4 is not bound")
    _check_bits(n, itemsize, delta)
    g = n // (8 * itemsize)
    if n == 0 or tmp.shape[0] < n or tmp2.shape[0] < n or trial.shape[0] < _lz4_room(g):
        raise ValueError("bits_plain: a buffer is too small (or the sample is empty)")
    cdef const uint8_t* s = &src[0]
    cdef uint8_t* t = &tmp[0]
    cdef uint8_t* q = &tmp2[0]
    cdef uint8_t* c = &trial[0]
    with nogil:
        _split_block(s, t, q, n, itemsize, delta, 0)
        for j in range(8 * itemsize):
            got = _lz4_block(q + j * g, c, g, _lz4_room(g), level)
            if 0 < got <= <Py_ssize_t>(g * keep):
                break
            count += 1
    return count


cdef inline int _next_block(const uint8_t* s, Py_ssize_t n, Py_ssize_t* pos, uint8_t* dst,
                            Py_ssize_t want) noexcept nogil:
    """Decode the lz4 block at ``s + pos[0]`` (a frame of ``n`` bytes) into the
    ``want`` bytes at ``dst`` and move past it; 0, or -1 (it runs past the frame's
    end), -2 (a stored block of another length), -3 (damaged, or another length)."""
    cdef Py_ssize_t p = pos[0], size
    cdef uint32_t word
    if p + 4 > n:
        return -1
    word = _get32(s + p)
    p += 4
    size = word & 0x7FFFFFFF
    if word == 0 or size > n - p:
        return -1
    if word >> 31:
        if size != want:
            return -2
        memcpy(dst, s + p, want)
    elif _lz4_decompress(<const char*>(s + p), <char*>dst, <int>size, <int>want) != want:
        return -3
    pos[0] = p + size
    return 0


def bits_frame_into(const uint8_t[::1] src, uint8_t[::1] dest, Py_ssize_t offset, Py_ssize_t raw,
                    uint8_t[::1] tmp, uint8_t[::1] tmp2, Py_ssize_t itemsize, bint delta,
                    Py_ssize_t block, unsigned mask=0, Py_ssize_t xor=0):
    """Undo ``bits_frame``: decode the frame in ``src`` into ``dest[offset:offset+raw]``.
    Every lz4 block must decode to exactly its part of one filter block (with
    ``mask``: the byte planes, then the rest); ``xor``: the bit planes from plane
    ``xor`` on are XORed with the plane before (modes 8 and 9), undone here.
    Raises ValueError saying what is wrong."""
    cdef Py_ssize_t n = src.shape[0], pos = 7, done = 0, b, m, j, before, bytes_kept = 0
    cdef int got = 0
    cdef bint low = _low_mask(mask)
    if _lz4_decompress == NULL:
        raise RuntimeError("liblz4 is not bound")
    if raw <= 0 or offset < 0 or offset + raw > dest.shape[0]:
        raise ValueError("bits_frame_into: the destination is too small")
    _check_blocks(raw, itemsize, delta, block, raw, mask)
    for j in range(itemsize):
        bytes_kept += (mask >> j) & 1
    _check_xor(xor, itemsize, bytes_kept)
    if tmp.shape[0] < block or tmp2.shape[0] < block:
        raise ValueError("bits_frame_into: a scratch buffer is too small")
    if n < 11 or memcmp(&src[0], _frame_head, 7) != 0:
        raise ValueError("a bit-plane chunk does not start with torpor's lz4 frame header")
    cdef const uint8_t* s = &src[0]
    cdef uint8_t* d = &dest[offset]
    cdef uint8_t* t = &tmp[0]
    cdef uint8_t* q = &tmp2[0]
    with nogil:
        while done < raw:
            b = raw - done if raw - done < block else block
            m = (b - b % (8 * itemsize)) // itemsize
            before = m * bytes_kept
            if before:
                # the byte planes' block: straight into place when they are an
                # item's first bytes, or through q
                got = _next_block(s, n, &pos, t if low else q, before)
                if got:
                    break
                if not low:
                    before = 0
                    for j in range(itemsize):
                        if (mask >> j) & 1:
                            memcpy(t + j * m, q + before, m)
                            before += m
            got = _next_block(s, n, &pos, q, b - before)
            if got:
                break
            if xor and m:
                _unxor_planes(q, m // 8, xor, 8 * (itemsize - bytes_kept))
            _unsplit_block(q, t, d + done, b, itemsize, delta, mask)
            done += b
    if got == -1:
        raise ValueError("a bit-plane chunk's lz4 blocks run past its end")
    if got == -2:
        raise ValueError("a stored block of a bit-plane chunk has the wrong length")
    if got == -3:
        raise ValueError("an lz4 block of a bit-plane chunk is damaged or the wrong length")
    if pos + 4 != n or _get32(s + pos) != 0:
        raise ValueError("a bit-plane chunk's lz4 frame does not end where its chunk record says")
