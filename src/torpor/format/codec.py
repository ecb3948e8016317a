"""Chunk codecs: lz4 frames, gzip members, the shuffle and delta filters, checksums.

A ``ChunkEncoder`` turns one chunk (at most CHUNK_SIZE bytes) into what the file
stores, and a ``ChunkDecoder`` puts it back into its place; both run on worker
threads. The byte loops live in ``_ext/_filters.pyx`` and release the GIL; lz4,
zlib and xxhash release it on large buffers too.

Why the buffers are recycled: python-lz4 returns a new bytes object per call, and
a fresh multi-MiB allocation is a fresh mapping whose every page faults on first
touch. On a 2-core VM that fault cost was larger than lz4 itself (a shuffle into
fresh 4 MiB buffers ran at 0.3 GB/s, into a reused one at several GB/s). So the
encoder writes into output buffers the writer hands back after writing them, and
each worker thread keeps one scratch buffer for filtered data.
"""

import ctypes
import ctypes.util
import os
import struct
import threading
import types
import zlib
from typing import NamedTuple, Optional

import lz4.block
import lz4.frame
import numpy as np
import xxhash

from ..errors import CorruptFileError
from .constants import (CHUNK_SIZE, CODEC_GZIP, CODEC_LZ4, CODEC_RAW, LAST_MODE, MAX_CHUNK_RAW,
                        MAX_RATIO, MIN_SAVING, MODE_BITS, MODE_DELTA, MODE_DELTA_BITS,
                        MODE_DELTA_SPLIT, MODE_DELTA_XOR_BITS, MODE_PACKED, MODE_SHUFFLED, MODE_SPLIT,
                        MODE_STORED, MODE_XOR_BITS)

checksum = xxhash.xxh3_64_intdigest

# An lz4 frame header without content size: FLG 0x60 (version 01, independent
# blocks, no checksums), BD 0x70 (4 MiB maximum block size), HC the second byte of
# xxh32(FLG BD). Every chunk frame torpor writes starts with it; a chunk that does
# not compress is such a frame holding one uncompressed block, so that every lz4
# section stays a valid lz4 stream (``lz4 -d`` reads it).
_FLG_BD = b"\x60\x70"
FRAME_HEAD = b"\x04\x22\x4d\x18" + _FLG_BD + bytes([(xxhash.xxh32_intdigest(_FLG_BD) >> 8) & 0xFF])
STORED_HEAD = FRAME_HEAD
STORED_OVERHEAD = len(STORED_HEAD) + 4 + 4       # header, block size, end mark
END_MARK = b"\x00\x00\x00\x00"
_u32 = struct.Struct("<I")

#: Skippable lz4 frame that carries one chunk's record (see docs/FORMAT.md). The
#: lz4 tool skips it, so a section's payload decompresses with ``lz4 -d`` as is.
CHUNK_MAGIC = 0x184D2A5B
CHUNK_RECORD = struct.Struct("<IIIIBBBBQ")  # magic, 20, stored, raw, mode, shift, mask, xor, checksum
CHUNK_RECORD_SIZE = CHUNK_RECORD.size

#: Bytes of a chunk compressed on trial with each filter to choose the chunk's mode
#: (lz4's window is 64 KiB, so a sample this size shows what the whole chunk
#: gives; smaller samples miss repeats further apart and choose wrongly).
SAMPLE = 64 << 10
#: A costlier filter is chosen only when its trial is this much smaller than the
#: cheaper one's: an unfiltered chunk decodes straight into place, a byte shuffle is
#: cheaper than bit planes, and that is worth a little size.
FILTER_GAIN = 0.98
#: Items wider than this (large structured records) are compressed unfiltered.
MAX_FILTER_ITEM = 64
#: Bit planes are tried for items of at most this many bytes (at most 64 planes).
MAX_BITS_ITEM = 8
#: log2 of the block size of bit-plane chunks (modes 4 to 9) that this torpor
#: writes: 256 KiB blocks stay in a core's L2 cache through the filter and lz4,
#: and the planes of one byte of an item stay inside lz4's 64 KiB window.
BITS_SHIFT = 18
#: lz4's acceleration for bit-plane blocks at the default level (blosc2's default
#: level uses 5 too): their planes are runs or noise, which a faster search skips
#: through at a 2-3% cost in size (measured on smooth volumes: 1.47 -> 1.70 GB/s,
#: 1.550 -> 1.52x). An explicit level (level < 0: more acceleration, > 0: lz4hc)
#: is used as given.
BITS_ACCELERATION = 5
#: lz4's acceleration at the default level for the bit planes of chunks that are
#: mostly noise (at least 3/4 of their planes, as measured floats of full
#: precision are): what is left to compress is a few exponent planes, which lz4
#: at acceleration 5 searches at under 1 GB/s for little gain. Measured on
#: noisy float32 (benchmarks/README.md, session 9): lz4 on those planes 0.86 ->
#: 1.37 GB/s, the file 1.4% larger (still within 1% of blosc2's). Smooth volumes
#: (half their planes noise) keep acceleration 5: 20 made them 1.9% larger.
NOISE_ACCELERATION = 20
#: Noise planes (``bits_plain``) go into a bit-plane block as they are when the
#: trial's block is then at most this much larger than with lz4 run over every
#: plane: lz4 finds matches across planes that each plane alone does not show
#: (a periodic signal's low bits, the differences of noisy words), and then
#: the planes are not noise after all.
PLAIN_COST = 1.01
#: A chunk's bit planes are XORed with their neighbours (modes 8 and 9) when the
#: trial is this much smaller so: the XOR costs a pass over the planes, on save
#: and on load. Measured on noisy float32 (the exponent's planes): 0.63 of the
#: planes' lz4 size, and lz4 faster on what is left (benchmarks/README.md,
#: session 11).
XOR_GAIN = 0.97
#: The bit filter that lost the first trial (with delta or without) is planned,
#: and replaces the first one's plan, when a trial with XOR shows it this much
#: smaller (int64 ``arange % 1928``: delta's sample is 1.3% smaller without XOR,
#: short of FILTER_GAIN, and 0.39 of the size with it). A clear margin, because
#: the swap rests on a 64 KiB sample of a 2 MiB chunk: margins of 10-15% were
#: seen to turn round on the whole chunk (big-endian int32 sawtooths crossing
#: zero: the sample 14% smaller under delta with XOR, the chunk 28% larger),
#: while the swaps that pay halve the chunk.
SWAP_GAIN = 0.8
#: The block shifts a file may give (1 KiB to 4 MiB).
BITS_SHIFTS = range(10, 23)


def bits_block(shift, itemsize):
    """The block size of a bit-plane chunk: 2**shift rounded down to whole groups
    of 8 items (docs/FORMAT.md)."""
    b = 1 << shift
    return b - b % (8 * itemsize)
#: The chunks of one array, and of the small arrays of one dtype and row shape,
#: use the mode (and the planes to store) that a trial on one of them chose, and
#: a new trial runs every this many chunks: data rarely changes character from
#: one chunk to the next, and on a small array a trial costs more than the
#: compression itself.
TRIAL_EVERY = 8
#: Fraction of its size a plane must get below in a trial to be compressed; the
#: planes that do not are stored without a search (noise: the low bits of
#: measured floats), and a chunk where nothing does is stored whole.
KEEP = 1.0 - MIN_SAVING


# --- the pure-Python kernels (numpy and python-lz4), same results as _filters ----

def _py_delta(src, itemsize):
    """The bytes of mode 3's delta: each little-endian word minus the one before."""
    w = np.frombuffer(src, f"<u{itemsize}")
    d = np.empty_like(w)
    if len(w):
        d[0] = w[0]
        np.subtract(w[1:], w[:-1], out=d[1:])
    return d.view(np.uint8)


def _py_filter_into(src, out, itemsize, delta):
    n = len(src)
    if itemsize <= 0 or n % itemsize:
        raise ValueError(f"the filters need whole items: {n} bytes are not items of {itemsize}")
    a = np.frombuffer(src, np.uint8)
    if delta:
        if itemsize not in (2, 4, 8):
            raise ValueError(f"the delta filter works on items of 2, 4 or 8 bytes, not {itemsize}")
        a = _py_delta(src, itemsize)
    o = np.frombuffer(out, np.uint8, count=n)
    o.reshape(itemsize, -1)[...] = a.reshape(-1, itemsize).T
    return memoryview(out)[:n]


def _py_unfilter_into(dest, offset, src, itemsize, delta):
    n = len(src)
    if itemsize <= 0 or n % itemsize or (delta and itemsize not in (2, 4, 8)):
        raise ValueError(f"cannot undo the filter on {n} bytes of {itemsize}-byte items")
    if offset < 0 or offset + n > len(dest):
        raise ValueError("unfilter_into: the destination is too small")
    d = np.frombuffer(dest, np.uint8, count=n, offset=offset)
    d.reshape(-1, itemsize)[...] = np.frombuffer(src, np.uint8).reshape(itemsize, -1).T
    if delta:
        w = d.view(f"<u{itemsize}")
        np.cumsum(w, dtype=w.dtype, out=w)


def _bit_planes(a, itemsize):
    """The bit planes of the uint8 array ``a`` (items of ``itemsize`` bytes, a
    multiple of 8 of them): plane 8j+b holds bit b of byte j of every item, item i
    at bit i % 8 of byte i // 8."""
    bits = np.unpackbits(a.reshape(-1, itemsize), axis=1, bitorder="little")
    return np.packbits(bits.T, axis=1, bitorder="little").reshape(-1)


def _check_bits(n, itemsize, delta):
    if itemsize <= 0 or itemsize > MAX_BITS_ITEM or n % (8 * itemsize):
        raise ValueError(f"the bit filters need items of 1 to 8 bytes, 8 at a time: {n} bytes "
                         f"are not groups of 8 items of {itemsize}")
    if delta and itemsize not in (2, 4, 8):
        raise ValueError(f"the delta filter works on items of 2, 4 or 8 bytes, not {itemsize}")


def _py_bitfilter_into(src, out, tmp, itemsize, delta):
    n = len(src)
    _check_bits(n, itemsize, delta)
    a = np.frombuffer(src, np.uint8)
    if delta:
        a = _py_delta(src, itemsize)
    if n:
        np.frombuffer(out, np.uint8, count=n)[...] = _bit_planes(a, itemsize)
    return memoryview(out)[:n]


def _py_bitunfilter_into(dest, offset, src, tmp, itemsize, delta):
    n = len(src)
    _check_bits(n, itemsize, delta)
    if offset < 0 or offset + n > len(dest):
        raise ValueError("bitunfilter_into: the destination is too small")
    if not n:
        return
    planes = np.frombuffer(src, np.uint8).reshape(8 * itemsize, -1)
    bits = np.unpackbits(planes, axis=1, bitorder="little")         # (8k, items)
    d = np.frombuffer(dest, np.uint8, count=n, offset=offset)
    d[...] = np.packbits(bits.T, axis=1, bitorder="little").reshape(-1)
    if delta:
        w = d.view(f"<u{itemsize}")
        np.cumsum(w, dtype=w.dtype, out=w)


def _mask_bytes(mask, itemsize):
    """The bytes of an item kept as byte planes under ``mask`` (modes 6 to 9), and
    the others, in order."""
    kept = [j for j in range(itemsize) if (mask >> j) & 1]
    return kept, [j for j in range(itemsize) if not (mask >> j) & 1]


def _py_bits_block(src, itemsize, delta, mask=0, xor=0):
    """One block of a bit-plane chunk (see ``_filters.bits_frame``), as bytes: the
    byte planes of ``mask``, the bit planes of the other bytes (from plane ``xor``
    on, each XORed with the one before it when ``xor``), the tail."""
    n = len(src)
    full = n - n % (8 * itemsize)
    if not full:
        return bytes(src)
    a = _py_delta(src[:full], itemsize) if delta else np.frombuffer(src, np.uint8, count=full)
    items = a.reshape(-1, itemsize)
    kept, cut = _mask_bytes(mask, itemsize)
    parts = [np.ascontiguousarray(items[:, kept].T).tobytes()] if kept else []
    if cut:
        planes = _bit_planes(np.ascontiguousarray(items[:, cut]), len(cut)).reshape(8 * len(cut), -1)
        if xor:
            planes[xor:] = planes[xor:] ^ planes[xor - 1:-1]
        parts.append(planes.tobytes())
    return b"".join(parts) + bytes(src[full:])


def _py_unbits_block(q, itemsize, delta, mask=0, xor=0):
    """Undo ``_py_bits_block`` on the block ``q``: the items' bytes."""
    n = len(q)
    full = n - n % (8 * itemsize)
    if not full:
        return bytes(q)
    m = full // itemsize
    kept, cut = _mask_bytes(mask, itemsize)
    planes = np.frombuffer(q, np.uint8, count=full)
    items = np.empty((m, itemsize), np.uint8)
    if kept:
        items[:, kept] = planes[:m * len(kept)].reshape(len(kept), m).T
    if cut:
        cut_planes = planes[m * len(kept):].reshape(8 * len(cut), -1)
        if xor:
            cut_planes = cut_planes.copy()
            cut_planes[xor - 1:] = np.bitwise_xor.accumulate(cut_planes[xor - 1:], axis=0)
        bits = np.unpackbits(cut_planes, axis=1, bitorder="little")
        items[:, cut] = np.packbits(bits.T, axis=1, bitorder="little")
    if delta:
        w = items.reshape(-1).view(f"<u{itemsize}")
        np.cumsum(w, dtype=w.dtype, out=w)
    return items.tobytes() + bytes(q[full:])


def _py_check_blocks(n, itemsize, delta, block, mask=0):
    if itemsize <= 0 or itemsize > MAX_BITS_ITEM or n % itemsize or (delta and itemsize not in (2, 4, 8)):
        raise ValueError(f"bit-plane chunks hold whole items of 1 to 8 bytes (2, 4 or 8 for delta), "
                         f"not {n} bytes of {itemsize}")
    if block <= 0 or block % (8 * itemsize):
        raise ValueError(f"bit-plane blocks of {block} bytes are not groups of 8 {itemsize}-byte items")
    if mask < 0 or mask >> itemsize or (mask and mask == (1 << itemsize) - 1):
        raise ValueError(f"byte-plane mask {mask:#x} does not suit {itemsize}-byte items "
                         f"(bits 0 to {itemsize - 1}, and not all of them)")


def _py_check_xor(xor, itemsize, kept):
    if xor < 0 or (xor and xor >= 8 * (itemsize - kept)):
        raise ValueError(f"planes XORed from plane {xor} do not suit {itemsize}-byte items with "
                         f"{kept} byte planes (0 for none, or 1 to {8 * (itemsize - kept) - 1})")


def _py_bits_frame(src, out, tmp, tmp2, itemsize, delta, block, level, plain=0, mask=0, xor=0):
    n = len(src)
    _py_check_blocks(n, itemsize, delta, block, mask)
    if n <= 0 or -(-n // block) > 64:
        raise ValueError(f"bits_frame: {n} bytes in blocks of {block}: 1 to 64 blocks")
    before = bin(mask).count("1")
    if not 0 <= plain <= 8 * (itemsize - before):
        raise ValueError(f"bits_frame: {plain} plain bit planes of {itemsize}-byte items, "
                         f"{before} of whose bytes are byte planes")
    _py_check_xor(xor, itemsize, before)
    frame, shrank = [FRAME_HEAD], False
    for pos in range(0, n, block):
        q = _py_bits_block(src[pos:pos + block], itemsize, delta, mask, xor)
        m = (len(q) - len(q) % (8 * itemsize)) // itemsize
        if m * before:
            # the byte planes (noise): an lz4 block of their own, stored
            frame += [_u32.pack(m * before | 0x80000000), q[:m * before]]
            q = q[m * before:]
        b = len(q)
        lit = min(m // 8 * plain, b)
        if lit == 0:
            packed = _py_lz4_block(q, level)
        elif lit >= b:
            packed = q                          # all noise: stored
        else:
            packed = _py_literals_first(q[:lit], _py_lz4_block(q[lit:], level), b) or q
        if len(packed) < len(q):
            shrank = True
            frame += [_u32.pack(len(packed)), packed]
        else:
            frame += [_u32.pack(len(q) | 0x80000000), q]
    return _py_end_frame(frame, shrank, out)


def _py_literals_first(lit, c, most):
    """As _filters._literals_first: the lz4 block ``c`` with the bytes ``lit`` put
    in front of its first literal run, or None when it would not be under
    ``most`` bytes."""
    if not c:
        return None
    token, p = c[0], 1
    run = token >> 4
    if run == 15:
        while True:
            if p >= len(c):
                return None
            x = c[p]
            p += 1
            run += x
            if x != 255:
                break
    run += len(lit)
    if run >= 15:
        head = bytes([0xF0 | (token & 0x0F)]) + b"\xff" * ((run - 15) // 255) + bytes([(run - 15) % 255])
    else:
        head = bytes([(run << 4) | (token & 0x0F)])
    if len(head) + len(lit) + len(c) - p >= most:
        return None
    return head + bytes(lit) + bytes(c[p:])


def _py_bits_plain(src, tmp, tmp2, trial, itemsize, delta, level, keep):
    n = len(src)
    if not n or n % (8 * itemsize):
        raise ValueError("bits_plain: the sample must be whole groups of 8 items")
    q = _py_bits_block(src, itemsize, delta)
    g = n // (8 * itemsize)
    count = 0
    for j in range(8 * itemsize):
        got = len(_py_lz4_block(q[j * g:(j + 1) * g], level))
        if 0 < got <= int(g * keep):
            break
        count += 1
    return count


def _py_lz4_block(data, level):
    """lz4's block of ``data`` (no size prefix): the fast compressor at acceleration
    ``1 - level``, or lz4hc at ``level`` > 0."""
    if level > 0:
        return lz4.block.compress(data, mode="high_compression", compression=level,
                                  store_size=False)
    return lz4.block.compress(data, mode="fast", acceleration=1 - level, store_size=False)


def _py_end_frame(frame, shrank, out):
    """Close the frame's pieces ``frame`` with the end mark and write it to ``out``:
    its length, or -1 when no block shrank (the chunk is then stored as it is)."""
    if not shrank:
        return -1
    frame.append(END_MARK)
    data = b"".join(frame)
    if len(data) > len(out):
        raise ValueError("the lz4 frame's output buffer is too small")
    out[:len(data)] = data
    return len(data)


def _py_frame_blocks(data, sizes):
    """The lz4 blocks of the frame ``data`` decoded, each of which must decode to
    the next of ``sizes`` (the checks of ``_filters.bits_frame_into``)."""
    data = memoryview(data)
    n, pos, out = len(data), 7, []
    for want in sizes:
        if pos + 4 > n:
            raise ValueError("a bit-plane chunk's lz4 blocks run past its end")
        word = _u32.unpack_from(data, pos)[0]
        pos += 4
        size = word & 0x7FFFFFFF
        if word == 0 or size > n - pos:
            raise ValueError("a bit-plane chunk's lz4 blocks run past its end")
        if word >> 31:
            if size != want:
                raise ValueError("a stored block of a bit-plane chunk has the wrong length")
            out.append(bytes(data[pos:pos + size]))
        else:
            try:
                got = lz4.block.decompress(data[pos:pos + size], uncompressed_size=want)
            except lz4.block.LZ4BlockError:
                got = b""
            if len(got) != want:
                raise ValueError("an lz4 block of a bit-plane chunk is damaged or the wrong length")
            out.append(got)
        pos += size
    if pos + 4 != n or bytes(data[pos:]) != END_MARK:
        raise ValueError("a bit-plane chunk's lz4 frame does not end where its chunk record says")
    return out


def _py_bits_frame_into(data, dest, offset, raw, tmp, tmp2, itemsize, delta, block, mask=0, xor=0):
    _py_check_blocks(raw, itemsize, delta, block, mask)
    _py_check_xor(xor, itemsize, bin(mask).count("1"))
    if raw <= 0 or offset < 0 or offset + raw > len(dest):
        raise ValueError("bits_frame_into: the destination is too small")
    if bytes(data[:7]) != FRAME_HEAD or len(data) < 11:
        raise ValueError("a bit-plane chunk does not start with torpor's lz4 frame header")
    kept = bin(mask).count("1")
    spans, sizes = [], []
    for pos in range(0, raw, block):
        b = min(block, raw - pos)
        before = (b - b % (8 * itemsize)) // itemsize * kept
        spans.append((pos, 2 if before else 1))
        sizes += [before, b - before] if before else [b]
    blocks = iter(_py_frame_blocks(data, sizes))
    for pos, parts in spans:
        q = b"".join(next(blocks) for _ in range(parts))
        _py_copy_into(dest, offset + pos, _py_unbits_block(q, itemsize, delta, mask, xor))


def _py_copy_into(dest, offset, src):
    n = len(src)
    np.frombuffer(dest, np.uint8, count=n, offset=offset)[...] = np.frombuffer(src, np.uint8)


def _py_lz4_bound(n):
    return n + n // 255 + 16 + STORED_OVERHEAD + 8 * 64


def _py_lz4_frame(src, out, level, parts=1, store=0):
    n = len(src)
    if parts <= 0 or parts > 64 or n % parts:
        raise ValueError(f"lz4_frame: {n} bytes do not cut into {parts} equal pieces (at most 64)")
    piece = n // parts
    frame = [FRAME_HEAD]
    shrank = False
    for i in range(parts):
        part = src[i * piece:(i + 1) * piece]
        block = part if (store >> i) & 1 else _py_lz4_block(part, level)
        if len(block) < piece:
            shrank = True
            frame += [_u32.pack(len(block)), block]
        else:
            frame += [_u32.pack(piece | 0x80000000), bytes(part)]
    return _py_end_frame(frame, shrank, out)


def _py_lz4_trial(src, out, parts, keep=0.97):
    n = len(src)
    if parts <= 0 or parts > 64 or n % parts:
        raise ValueError("lz4_trial: the sample must cut into at most 64 equal pieces")
    piece = n // parts
    total = store = 0
    if not piece:
        return 0, 0
    for i in range(parts):
        got = len(lz4.block.compress(src[i * piece:(i + 1) * piece], store_size=False))
        if got > int(piece * keep):
            total += piece
            store |= 1 << i
        else:
            total += got
    return total, store


def _py_lz4_frame_into(data, dest, offset, raw):
    head = bytes(data[:15])
    if len(head) >= 7 and head[4] & 0x08:
        # python-lz4 allocates what a frame's content size claims: it must be raw
        if len(head) < 15 or int.from_bytes(head[6:14], "little") != raw:
            raise ValueError(f"the lz4 frame claims a content size other than {raw} bytes")
    out = lz4.frame.decompress(data)
    if len(out) != raw:
        raise ValueError(f"the lz4 frame decodes to {len(out)} bytes, not {raw}")
    _py_copy_into(dest, offset, out)


def _bind_native_lz4(filters):
    """Find liblz4's block functions in the library python-lz4 loaded (its bundled
    copy, or the system liblz4 it links), so the Cython kernels can call them on
    buffers torpor owns. Returns False when they cannot be found (a build that hides
    its symbols, as on Windows): python-lz4's own calls are used then, with the
    same results and one allocation per chunk."""
    import lz4.block._block as blk
    names = ("LZ4_compress_fast", "LZ4_compress_HC", "LZ4_decompress_safe")
    for path in (blk.__file__, ctypes.util.find_library("lz4")):
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
            addrs = [ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in names]
        except (OSError, AttributeError):
            continue
        if all(addrs):
            filters.bind_lz4(*addrs, FRAME_HEAD)
            return True
    return False


NATIVE_FILTERS = NATIVE_LZ4 = False
_filters: Optional[types.ModuleType]
try:
    if os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError("TORPOR_PUREPYTHON is set")
    from . import _filters
    NATIVE_FILTERS = True
    NATIVE_LZ4 = not os.environ.get("TORPOR_NO_NATIVE_LZ4") and _bind_native_lz4(_filters)
except ImportError as _e:
    if os.environ.get("TORPOR_REQUIRE_EXTENSION") and not os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError(
            f"TORPOR_REQUIRE_EXTENSION is set but the compiled _filters does not import: {_e}") from _e
    _filters = None

if NATIVE_FILTERS and _filters is not None:
    filter_into, unfilter_into, copy_into = _filters.filter_into, _filters.unfilter_into, _filters.copy_into
    bitfilter_into, bitunfilter_into = _filters.bitfilter_into, _filters.bitunfilter_into
else:
    filter_into, unfilter_into, copy_into = _py_filter_into, _py_unfilter_into, _py_copy_into
    bitfilter_into, bitunfilter_into = _py_bitfilter_into, _py_bitunfilter_into
if NATIVE_LZ4 and _filters is not None:
    lz4_bound, lz4_frame, lz4_frame_into = _filters.lz4_bound, _filters.lz4_frame, _filters.lz4_frame_into
    lz4_trial, bits_frame, bits_frame_into = _filters.lz4_trial, _filters.bits_frame, _filters.bits_frame_into
    bits_plain = _filters.bits_plain
else:
    lz4_bound, lz4_frame, lz4_frame_into = _py_lz4_bound, _py_lz4_frame, _py_lz4_frame_into
    lz4_trial, bits_frame, bits_frame_into = _py_lz4_trial, _py_bits_frame, _py_bits_frame_into
    bits_plain = _py_bits_plain


def stored_lz4_parts(view):
    """The buffers of a stored lz4 frame around ``view`` (nothing is copied)."""
    return [STORED_HEAD + _u32.pack(len(view) | 0x80000000), view, END_MARK]


class EncodedChunk(NamedTuple):
    """What ``ChunkEncoder.encode`` makes of one chunk."""
    mode: int                 # MODE_* of the chunk record
    parts: list               # buffers to write after the record, in order
    stored: int               # their total length
    raw: int                  # length of the chunk before encoding
    checksum: int             # xxh3-64 of the raw bytes
    buffer: Optional[bytearray]   # output buffer to hand back with release(), or None
    shift: int = 0            # bit-plane chunks: log2 of their block size
    mask: int = 0             # modes 6 to 9: the bytes of an item kept as byte planes
    xor: int = 0              # modes 8 and 9: the first bit plane XORed with the one before it


class Plan:
    """How the chunks of one array (or of small arrays of one kind) are encoded:
    the mode and the planes to store that the last trial chose (for bit planes,
    the byte-plane mask and the noise bit planes), and how many chunks may still
    use it. Only the writer's thread uses it."""
    __slots__ = ("choice", "left")

    def __init__(self):
        self.choice = None        # (mode, store): see ChunkEncoder.choose_mode
        self.left = 0             # chunks to encode before the next trial


def _candidates(itemsize, n):
    """The filters tried for items of ``itemsize`` bytes, in order of cost. Bit
    planes compress as well as the byte shuffle or better on every kind of array
    measured (benchmarks/README.md), so the byte shuffle is tried only for items
    too wide for them; it stays for the chunks bit planes cannot take."""
    yield MODE_PACKED
    if itemsize <= MAX_BITS_ITEM:
        yield MODE_BITS
        if itemsize in (2, 4, 8):
            yield MODE_DELTA_BITS
    elif itemsize > 1:
        yield MODE_SHUFFLED


#: Bytes of encoder buffers (scratch and output) kept from one save for the next.
#: A fresh multi-MiB bytearray is fresh pages, and a save's encoders use about
#: 20 MiB of them: measured on a 256 MiB save at 2 threads, its first chunks took
#: 10 ms each instead of 0.9 ms, a tenth of the save, and compress=None pays
#: nothing of the kind. ``release_spares()`` gives them back.
SPARE_BYTES = 32 << 20


class _Spares:
    """The buffers finished encoders leave for the next ones (at most SPARE_BYTES)."""

    def __init__(self):
        self._reset()

    def _reset(self):
        self._lock = threading.Lock()      # new in a forked child: the parent's may be held
        self._bufs = []
        self.nbytes = 0
        self.reused = 0                    # buffers taken from the spares (for tests)

    def take(self, size):
        """A spare buffer of ``size`` bytes (its contents are old data), or a new one."""
        with self._lock:
            for i, b in enumerate(self._bufs):
                if len(b) == size:
                    del self._bufs[i]
                    self.nbytes -= size
                    self.reused += 1
                    return b
        return bytearray(size)

    def give(self, bufs):
        with self._lock:
            for b in bufs:
                if self.nbytes + len(b) <= SPARE_BYTES:
                    self._bufs.append(b)
                    self.nbytes += len(b)

    def clear(self):
        with self._lock:
            self._bufs.clear()
            self.nbytes = 0


_SPARES = _Spares()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SPARES._reset)


def release_spares():
    """Free the encoder buffers kept for the next save (at most SPARE_BYTES).

    A save hands its output buffers to its file's ``write`` and, once written,
    on to later saves (on any thread), as the io contract allows: a file object
    must not keep a reference to what ``write`` was given. Every sink in torpor
    copies (the page cache, O_DIRECT staging, memory, fsspec, Redis)."""
    _SPARES.clear()


class ChunkEncoder:
    """Encodes chunks for one writer. ``encode`` runs on worker threads and returns
    an ``EncodedChunk``; the writer writes its ``parts`` in order, then gives its
    ``buffer`` back with ``release``, and ``close``s the encoder once no thread
    uses it (its buffers then go to the next encoder)."""

    def __init__(self, codec, filters=True, level=0):
        self.codec = codec
        self.filters = filters
        self.level = level
        self._free = []                      # output buffers ready for reuse
        self._local = threading.local()      # per thread: filter scratch, trial output
        self._scratches = []                 # every thread's scratch, for close()

    def release(self, buf):
        if buf is not None:
            self._free.append(buf)

    def close(self):
        """Hand the buffers on to the next encoder (``_Spares``); the output buffers
        not given back with ``release`` (a save that failed) are dropped."""
        _SPARES.give(self._free + [b for s in self._scratches for b in s])
        self._free = []
        self._scratches = []
        self._local = threading.local()

    def _scratch(self):
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = (_SPARES.take(CHUNK_SIZE), _SPARES.take(CHUNK_SIZE),
                                 _SPARES.take(lz4_bound(SAMPLE)))
            self._scratches.append(s)
        return s

    def _out(self):
        try:
            return self._free.pop()
        except IndexError:
            return _SPARES.take(lz4_bound(CHUNK_SIZE))

    def _trial(self, view, itemsize, mode, scratch, tmp, trial, plain=0):
        """(estimated size, planes to store) of ``view`` under ``mode`` (bit planes:
        the first ``plain`` of them put in as they are)."""
        n = len(view)
        if mode in (MODE_BITS, MODE_DELTA_BITS):
            got = self._bits_trial(view, itemsize, mode == MODE_DELTA_BITS, 1 - BITS_ACCELERATION,
                                   plain, 0, 0, scratch, tmp, trial)
            return (n if got > n * KEEP else got), 0
        if mode in (MODE_SHUFFLED, MODE_DELTA):
            return lz4_trial(filter_into(view, scratch, itemsize, mode == MODE_DELTA), trial,
                             itemsize, KEEP)
        return lz4_trial(view, trial, 1, KEEP)

    def choose_mode(self, view, itemsize, scratch, tmp, trial):
        """(mode, planes to store) for ``view``: of the filters, in order of cost,
        the one whose trial on a sample of ``view`` is smallest under lz4 (each
        costlier one must beat the cheaper by FILTER_GAIN); MODE_STORED when none
        gains MIN_SAVING. A byte-shuffled sample is compressed plane by plane, as
        the chunk will be, and the planes that do not shrink are the ones the
        chunk stores without a search (a mask). For bit planes the second item
        is instead (byte-plane mask, noise bit planes, lz4 level): the lowest
        planes that are noise (``bits_plain``); whole bytes of them make the chunk
        a mode 6 or 7 one, with those bytes byte planes rather than bit planes
        (noise goes in as literals either way, and the bit transpose of noise was
        most of the filter's cost); a chunk that is mostly noise gets a faster
        lz4 (NOISE_ACCELERATION). Then the planes above the noise are tried
        XORed with their neighbours (modes 8 and 9, a fourth item: the first
        XORed plane), and kept so when that is smaller by XOR_GAIN. As XOR can
        change which of the two bit filters (with delta or not) is smaller, the
        other one's plan is made too when one trial with XOR says it may be, and
        taken when smaller by SWAP_GAIN (lz4 only: gzip has no XOR, and takes
        the filter the first trial chose)."""
        n = len(view)
        size = SAMPLE - SAMPLE % (8 * itemsize if itemsize <= MAX_BITS_ITEM else itemsize)
        if n > size:
            start = (n - size) // 2 // itemsize * itemsize
            view = view[start:start + size]
            n = size
        best, best_len, best_store = MODE_STORED, n * KEEP, 0
        sizes = {False: n, True: n}          # bit planes' trial sizes, without and with delta
        for mode in _candidates(itemsize, n):
            total, store = self._trial(view, itemsize, mode, scratch, tmp, trial)
            if mode in (MODE_BITS, MODE_DELTA_BITS):
                sizes[mode == MODE_DELTA_BITS] = total
            if total < best_len * (1.0 if best == MODE_STORED else FILTER_GAIN):
                best, best_len, best_store = mode, total, store
        if best in (MODE_BITS, MODE_DELTA_BITS):
            whole = n - n % (8 * itemsize)
            est, best, best_store = self._plane_plan(view, whole, itemsize, best == MODE_DELTA_BITS,
                                                     best_len, scratch, tmp, trial)
            if whole and itemsize in (2, 4, 8) and self.codec == CODEC_LZ4:
                # The filters were compared without XOR, and XOR can turn the
                # order round (int64 ``arange % 1928``, its 64 KiB sample: plain
                # bit planes 898 bytes, delta with XOR 351; its chunks 21.7 against
                # 10.8 KB). One trial of the other filter, with this plan's noise
                # planes and the planes above them XORed, says whether its own plan
                # is worth making (noise put in as literals keeps the trial cheap:
                # the bit transpose of noise is the costly part).
                other = best not in _DELTA_MODES
                mask, plain, level, _ = best_store
                xor = plain + 1 if plain + 1 < 8 * (itemsize - bin(mask).count("1")) else 0
                quick = self._bits_trial(view[:whole], itemsize, other, level, plain, mask, xor,
                                         scratch, tmp, trial)
                if quick < est * SWAP_GAIN:
                    got = self._plane_plan(view, whole, itemsize, other, sizes[other],
                                           scratch, tmp, trial)
                    if got[0] < est * SWAP_GAIN:
                        est, best, best_store = got
        return best, best_store

    def _plane_plan(self, view, whole, itemsize, delta, base_len, scratch, tmp, trial):
        """(estimated size, mode, (byte-plane mask, noise bit planes, lz4 level,
        first XORed plane)) of ``view`` as bit planes (with ``delta`` or not),
        ``base_len`` being its trial size with every plane searched by lz4."""
        # how many of the lowest planes are noise, for bits_frame to put in as
        # they are rather than run lz4 over them
        mode = MODE_DELTA_BITS if delta else MODE_BITS
        plain = bits_plain(view[:whole], scratch, tmp, trial, itemsize, delta,
                           1 - BITS_ACCELERATION, KEEP) if whole else 0
        if plain and self._trial(view, itemsize, mode, scratch, tmp, trial,
                                 plain)[0] > base_len * PLAIN_COST:
            plain = 0
        mask = 0
        if 8 <= plain < 8 * itemsize:
            mask = (1 << (plain // 8)) - 1
            mode = MODE_DELTA_SPLIT if delta else MODE_SPLIT
        level = self._bits_level()
        if self.level == 0 and 4 * plain >= 3 * 8 * itemsize:
            level = 1 - NOISE_ACCELERATION
        kept = bin(mask).count("1")
        plain -= 8 * kept
        xor, size = 0, base_len
        if whole and plain + 1 < 8 * (itemsize - kept):
            # the first plane lz4 is run on stays as it is, the ones above it
            # are tried XORed with the plane below
            tried = [self._bits_trial(view[:whole], itemsize, delta, level, plain, mask, x,
                                      scratch, tmp, trial) for x in (0, plain + 1)]
            size = tried[0]
            if tried[1] < tried[0] * XOR_GAIN:
                xor, size = plain + 1, tried[1]
                mode = MODE_DELTA_XOR_BITS if delta else MODE_XOR_BITS
        return size, mode, (mask, plain, level, xor)

    @staticmethod
    def _bits_trial(view, itemsize, delta, level, plain, mask, xor, scratch, tmp, trial):
        """The size of ``view`` as one bit-plane block (its length when that does
        not shrink it)."""
        n = len(view)
        got = bits_frame(view, trial, scratch, tmp, itemsize, delta, n + (-n) % (8 * itemsize), level,
                         plain, mask, xor)
        return n if got < 0 else got

    def _bits_level(self):
        return 1 - BITS_ACCELERATION if self.level == 0 else self.level

    def _filters_apply(self, view, itemsize, use_filters):
        return (use_filters and self.filters and self.codec != CODEC_RAW
                and 1 <= itemsize <= MAX_FILTER_ITEM and len(view) % itemsize == 0)

    def choice(self, view, itemsize, use_filters, plan):
        """(mode, planes to store) for the next chunk of ``plan``'s arrays, or None
        when no filter applies. Called by the writer, in file order, so that the
        chunks that run a trial (every TRIAL_EVERY-th of a plan) and what they
        choose do not depend on the pool's timing: a file's bytes depend only
        on its data."""
        if not self._filters_apply(view, itemsize, use_filters):
            return None
        if plan.choice is None or plan.left <= 0:
            plan.choice = self.choose_mode(view, itemsize, *self._scratch())
            plan.left = TRIAL_EVERY
        plan.left -= 1
        return plan.choice

    def _gzip(self, src, mode, raw, digest):
        c = zlib.compressobj(self.level if self.level > 0 else 6, zlib.DEFLATED, 31)
        packed = c.compress(src) + c.flush()
        return EncodedChunk(mode, [packed], len(packed), raw, digest, None)

    def _stored(self, view, digest):
        """A chunk that is not worth compressing: stored (lz4), or gzipped unfiltered
        (gzip has no stored mode)."""
        raw = len(view)
        if self.codec == CODEC_LZ4:
            return EncodedChunk(MODE_STORED, stored_lz4_parts(view), raw + STORED_OVERHEAD,
                                raw, digest, None)
        return self._gzip(view, MODE_PACKED, raw, digest)

    def encode(self, view, itemsize, use_filters, choice=None):
        """Encode one chunk. ``choice``: what ``choice()`` said for it (None: a trial
        on this chunk, when filters apply)."""
        raw = len(view)
        digest = checksum(view)
        if self.codec == CODEC_RAW:
            return EncodedChunk(MODE_STORED, [view], raw, raw, digest, None)
        mode, store = MODE_PACKED, 0
        if self._filters_apply(view, itemsize, use_filters):
            scratch, tmp, trial = self._scratch()
            mode, store = choice if choice is not None else \
                self.choose_mode(view, itemsize, scratch, tmp, trial)
            if mode == MODE_STORED:
                return self._stored(view, digest)
        if self.codec == CODEC_LZ4:
            out = self._out()
            shift = mask = xor = 0
            if mode in _BIT_MODES:
                shift = BITS_SHIFT
                mask, plain, level, xor = store
                n = bits_frame(view, out, scratch, tmp, itemsize, mode in _DELTA_MODES,
                               bits_block(shift, itemsize), level, plain, mask, xor)
            elif mode == MODE_PACKED:
                n = lz4_frame(view, out, self.level, 1, store)
            else:                                   # a block per byte plane
                n = lz4_frame(filter_into(view, scratch, itemsize, mode == MODE_DELTA), out,
                              self.level, itemsize, store)
            if n < 0 or n > raw * (1.0 - MIN_SAVING):
                self._free.append(out)
                return self._stored(view, digest)
            return EncodedChunk(mode, [memoryview(out)[:n]], n, raw, digest, out, shift, mask, xor)
        # gzip: the bit planes are for lz4 (a gzip chunk takes the byte shuffle)
        if mode in _BIT_MODES:
            mode = MODE_DELTA if mode in _DELTA_MODES else MODE_SHUFFLED if itemsize > 1 else MODE_PACKED
        src = filter_into(view, scratch, itemsize, mode == MODE_DELTA) if mode != MODE_PACKED else view
        return self._gzip(src, mode, raw, digest)


class ChunkDecoder:
    """Decodes chunks into their place; ``decode_into`` runs on worker threads, each
    with its own scratch buffer for filtered chunks."""

    def __init__(self):
        self._local = threading.local()

    def _scratch(self, n, name="s"):
        """This thread's buffer ``name`` of at least ``n`` bytes ("s": filtered
        data, "t": the bit planes' second scratch)."""
        s = getattr(self._local, name, None)
        if s is None or len(s) < n:
            s = bytearray(max(n, CHUNK_SIZE))
            setattr(self._local, name, s)
        return s

    def decode_into(self, dest, offset, data, codec, mode, raw, itemsize, digest, layout=(0, 0, 0)):
        """Decode ``data`` (a whole chunk) into ``dest[offset:offset+raw]`` and verify
        the checksum of what landed there. ``layout``: a bit-plane chunk's block
        shift, byte-plane mask and first XORed plane (``read_chunk_record``)."""
        try:
            if mode == MODE_STORED:
                if codec != CODEC_LZ4:
                    raise CorruptFileError("only lz4 chunks can be stored (mode 0)")
                data = _stored_payload(data, raw)
                if len(data) != raw:
                    raise CorruptFileError(f"a stored chunk has {len(data)} bytes, not {raw}")
                copy_into(dest, offset, data)
            elif mode not in _MODES:
                raise CorruptFileError(f"unknown chunk mode {mode}")
            else:
                shift, mask, xor = layout
                _check_filtered(mode, raw, itemsize, codec, mask, xor)
                if codec == CODEC_LZ4:
                    if mode == MODE_PACKED:
                        lz4_frame_into(data, dest, offset, raw)
                    elif mode in _BIT_MODES:
                        # a block may be larger than this torpor's chunks (4 MiB at
                        # shift 22): scratch for the whole of it
                        block = bits_block(shift, itemsize)
                        room = max(CHUNK_SIZE, block)
                        bits_frame_into(data, dest, offset, raw, self._scratch(room),
                                        self._scratch(room, "t"), itemsize, mode in _DELTA_MODES,
                                        block, mask, xor)
                    else:
                        scratch = self._scratch(raw)
                        lz4_frame_into(data, scratch, 0, raw)
                        unfilter_into(dest, offset, memoryview(scratch)[:raw], itemsize,
                                      mode == MODE_DELTA)
                elif codec == CODEC_GZIP:
                    d = zlib.decompressobj(31)
                    out = d.decompress(data, raw)
                    if d.unconsumed_tail or not d.eof or d.unused_data:
                        raise CorruptFileError("a gzip chunk does not end where its record says")
                    if len(out) != raw:
                        raise CorruptFileError(f"a chunk decompressed to {len(out)} bytes, not {raw}")
                    if mode == MODE_PACKED:
                        copy_into(dest, offset, out)
                    else:
                        unfilter_into(dest, offset, out, itemsize, mode == MODE_DELTA)
                else:
                    raise CorruptFileError(f"chunk mode {mode} is not valid for a raw section")
        except CorruptFileError:
            raise
        except (RuntimeError, zlib.error, ValueError) as e:
            raise CorruptFileError(f"a chunk does not decompress: {e}") from None
        verify(memoryview(dest)[offset:offset + raw], digest)


_MODES = (MODE_PACKED, MODE_SHUFFLED, MODE_DELTA, MODE_BITS, MODE_DELTA_BITS, MODE_SPLIT,
          MODE_DELTA_SPLIT, MODE_XOR_BITS, MODE_DELTA_XOR_BITS)
#: The modes whose chunks are lz4 frames of filter blocks (``bits_frame``), those
#: that must hold byte planes too, those whose bit planes are XORed with their
#: neighbours (byte planes optional), and those with the delta filter first.
_BIT_MODES = (MODE_BITS, MODE_DELTA_BITS, MODE_SPLIT, MODE_DELTA_SPLIT, MODE_XOR_BITS,
              MODE_DELTA_XOR_BITS)
_SPLIT_MODES = (MODE_SPLIT, MODE_DELTA_SPLIT)
_XOR_MODES = (MODE_XOR_BITS, MODE_DELTA_XOR_BITS)
_DELTA_MODES = (MODE_DELTA, MODE_DELTA_BITS, MODE_DELTA_SPLIT, MODE_DELTA_XOR_BITS)


def _check_filtered(mode, raw, itemsize, codec, mask=0, xor=0):
    """A filtered chunk must hold what its filter works on (docs/FORMAT.md)."""
    if mode == MODE_PACKED:
        return
    if mode in _BIT_MODES:
        if itemsize < 1 or itemsize > MAX_BITS_ITEM or raw % itemsize:
            raise CorruptFileError(f"a bit-plane chunk does not hold whole {itemsize}-byte items")
        if codec != CODEC_LZ4:
            raise CorruptFileError("bit-plane chunks are lz4 chunks only")
        if (mode in _SPLIT_MODES or mode in _XOR_MODES) and (mask >> itemsize or mask == (1 << itemsize) - 1):
            raise CorruptFileError(f"a chunk's byte-plane mask {mask:#04x} does not suit its "
                                   f"{itemsize}-byte items (it names bytes they do not have, or all)")
        if mode in _XOR_MODES and xor >= 8 * (itemsize - bin(mask).count("1")):
            raise CorruptFileError(f"a chunk's bit planes are XORed from plane {xor}, which its "
                                   f"{itemsize}-byte items (byte-plane mask {mask:#04x}) do not have")
    elif itemsize <= 1 or raw % itemsize:
        raise CorruptFileError(f"a filtered chunk does not hold whole {itemsize}-byte items")
    if mode in _DELTA_MODES and itemsize not in (2, 4, 8):
        raise CorruptFileError(f"a delta chunk holds {itemsize}-byte items, not 2, 4 or 8")


def _stored_payload(data, raw):
    head = STORED_HEAD + _u32.pack(raw | 0x80000000)
    if len(data) != raw + STORED_OVERHEAD or bytes(data[:len(head)]) != head \
            or bytes(data[-4:]) != END_MARK:
        raise CorruptFileError("a stored lz4 chunk has a damaged frame header")
    return memoryview(data)[len(head):len(head) + raw]


def read_chunk_record(src, raw, done, codec_id, index):
    """The next chunk record of a compressed section from ``src`` (a
    container.Source), checked against what the section can hold: ``raw`` bytes
    in all, ``done`` of them decoded already. Returns (stored, raw, mode,
    checksum, layout): layout is (block shift, byte-plane mask, first XORed bit
    plane), (0, 0, 0) but for bit-plane chunks. CorruptFileError naming section
    ``index`` and the byte."""
    rec = src.read(CHUNK_RECORD_SIZE, "a chunk record")
    magic, size, stored, craw, mode, shift, mask, xor, digest = CHUNK_RECORD.unpack(rec)
    # a bit-plane chunk's block size; modes 6 and 7's mask (modes 8 and 9 may have
    # one); modes 8 and 9's first XORed plane; nothing elsewhere
    if mode in _XOR_MODES:
        bad_layout = shift not in BITS_SHIFTS or not xor
    elif mode in _BIT_MODES:
        bad_layout = shift not in BITS_SHIFTS or (mask == 0) != (mode in (MODE_BITS, MODE_DELTA_BITS)) or xor
    else:
        bad_layout = shift or mask or xor
    if magic != CHUNK_MAGIC or size != 20 or bad_layout or craw == 0 \
            or craw > MAX_CHUNK_RAW or craw > raw - done \
            or (mode != MODE_STORED and craw > stored * MAX_RATIO[codec_id] + 64):
        raise CorruptFileError(f"{src.name}: damaged chunk record in section {index} "
                               f"at byte {src.pos - len(rec)}")
    if src.version is not None and mode > LAST_MODE[src.version] and mode in _MODES:
        # a mode a newer format version added, in a file of an older one
        raise CorruptFileError(f"{src.name}: the chunk record in section {index} at byte "
                               f"{src.pos - len(rec)} has mode {mode}, which format version "
                               f"{src.version} does not have (the file is damaged)")
    return stored, craw, mode, digest, (shift, mask, xor)


def verify(view, digest):
    if checksum(view) != digest:
        raise CorruptFileError("checksum mismatch: the data was damaged after it was written")


def chunk_spans(nbytes, chunk=CHUNK_SIZE, itemsize=1):
    """(start, stop) byte ranges cutting ``nbytes`` into whole-item chunks; for
    items of at most 8 bytes, of a multiple of 8 items (as the bit planes need)."""
    group = max(1, itemsize) * (8 if 1 < itemsize <= MAX_BITS_ITEM else 1)
    step = max(group, chunk - chunk % group)
    return [(i, min(i + step, nbytes)) for i in range(0, nbytes, step)]
