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
from .constants import (CHUNK_SIZE, CODEC_GZIP, CODEC_LZ4, CODEC_RAW, MIN_SAVING, MODE_DELTA,
                     MODE_PACKED, MODE_SHUFFLED, MODE_STORED)

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
CHUNK_RECORD = struct.Struct("<IIIIBBHQ")   # magic, 20, stored, raw, mode, 0, 0, checksum
CHUNK_RECORD_SIZE = CHUNK_RECORD.size

#: Bytes of a chunk compressed on trial with each filter to choose the chunk's mode
#: (lz4's window is 64 KiB, so a sample this size shows what the whole chunk gives).
SAMPLE = 64 << 10
#: A filter is chosen only when its trial is this much smaller than no filter: an
#: unfiltered chunk decodes straight into place, which is worth a little size.
FILTER_GAIN = 0.98
#: Items wider than this (large structured records) are compressed unfiltered.
MAX_FILTER_ITEM = 64


# --- the pure-Python kernels (numpy and python-lz4), same results as _filters ----

def _py_filter_into(src, out, itemsize, delta):
    n = len(src)
    if itemsize <= 0 or n % itemsize:
        raise ValueError(f"the filters need whole items: {n} bytes are not items of {itemsize}")
    a = np.frombuffer(src, np.uint8)
    if delta:
        if itemsize not in (2, 4, 8):
            raise ValueError(f"the delta filter works on items of 2, 4 or 8 bytes, not {itemsize}")
        w = np.frombuffer(src, f"<u{itemsize}")
        d = np.empty_like(w)
        if len(w):
            d[0] = w[0]
            np.subtract(w[1:], w[:-1], out=d[1:])
        a = d.view(np.uint8)
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


def _py_copy_into(dest, offset, src):
    n = len(src)
    np.frombuffer(dest, np.uint8, count=n, offset=offset)[...] = np.frombuffer(src, np.uint8)


def _py_lz4_bound(n):
    return n + n // 255 + 16 + STORED_OVERHEAD + 4 * 64


def _py_lz4_frame(src, out, level, parts=1):
    n = len(src)
    if parts <= 0 or parts > 64 or n % parts:
        raise ValueError(f"lz4_frame: {n} bytes do not cut into {parts} equal pieces (at most 64)")
    piece = n // parts
    frame = [FRAME_HEAD]
    shrank = False
    for i in range(parts):
        part = src[i * piece:(i + 1) * piece]
        if level > 0:
            block = lz4.block.compress(part, mode="high_compression", compression=level, store_size=False)
        else:
            block = lz4.block.compress(part, mode="fast", acceleration=1 - level, store_size=False)
        if len(block) < piece:
            shrank = True
            frame += [_u32.pack(len(block)), block]
        else:
            frame += [_u32.pack(piece | 0x80000000), bytes(part)]
    if not shrank:
        return -1
    frame.append(END_MARK)
    frame = b"".join(frame)
    out[:len(frame)] = frame
    return len(frame)


def _py_lz4_trial(src, out, parts):
    n = len(src)
    if parts <= 0 or parts > 64 or n % parts:
        raise ValueError("lz4_trial: the sample must cut into at most 64 equal pieces")
    piece = n // parts
    total = 0
    for i in range(parts):
        got = len(lz4.block.compress(src[i * piece:(i + 1) * piece], store_size=False)) if piece else 0
        total += min(got, piece)
    return total


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
else:
    filter_into, unfilter_into, copy_into = _py_filter_into, _py_unfilter_into, _py_copy_into
if NATIVE_LZ4 and _filters is not None:
    lz4_bound, lz4_frame, lz4_frame_into = _filters.lz4_bound, _filters.lz4_frame, _filters.lz4_frame_into
    lz4_trial = _filters.lz4_trial
else:
    lz4_bound, lz4_frame, lz4_frame_into = _py_lz4_bound, _py_lz4_frame, _py_lz4_frame_into
    lz4_trial = _py_lz4_trial


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


class ChunkEncoder:
    """Encodes chunks for one writer. ``encode`` runs on worker threads and returns
    an ``EncodedChunk``; the writer writes its ``parts`` in order, then gives its
    ``buffer`` back with ``release``."""

    def __init__(self, codec, filters=True, level=0):
        self.codec = codec
        self.filters = filters
        self.level = level
        self._free = []                      # output buffers ready for reuse
        self._local = threading.local()      # per thread: filter scratch, trial output

    def release(self, buf):
        if buf is not None:
            self._free.append(buf)

    def _scratch(self):
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = (bytearray(CHUNK_SIZE), bytearray(lz4_bound(SAMPLE)))
        return s

    def _out(self):
        try:
            return self._free.pop()
        except IndexError:
            return bytearray(lz4_bound(CHUNK_SIZE))

    def choose_mode(self, view, itemsize, scratch, trial):
        """The chunk mode whose filter makes a sample of ``view`` smallest under lz4.
        A filtered sample is compressed plane by plane (see ``lz4_trial``), so that
        its estimate holds for the whole chunk."""
        n = len(view)
        size = SAMPLE - SAMPLE % itemsize
        if n > size:
            start = (n - size) // 2 // itemsize * itemsize
            view = view[start:start + size]
        best_len = lz4_trial(view, trial, 1) * FILTER_GAIN
        best = MODE_PACKED
        for mode in ((MODE_SHUFFLED, MODE_DELTA) if itemsize in (2, 4, 8) else (MODE_SHUFFLED,)):
            got = lz4_trial(filter_into(view, scratch, itemsize, mode == MODE_DELTA), trial, itemsize)
            if got < best_len:
                best, best_len = mode, got
        return best

    def encode(self, view, itemsize, use_filters):
        raw = len(view)
        digest = checksum(view)
        if self.codec == CODEC_RAW:
            return EncodedChunk(MODE_STORED, [view], raw, raw, digest, None)
        mode, src, parts = MODE_PACKED, view, 1
        if use_filters and self.filters and 1 < itemsize <= MAX_FILTER_ITEM and raw % itemsize == 0:
            scratch, trial = self._scratch()
            mode = self.choose_mode(view, itemsize, scratch, trial)
            if mode != MODE_PACKED:
                src = filter_into(view, scratch, itemsize, mode == MODE_DELTA)
                parts = itemsize
        if self.codec == CODEC_LZ4:
            out = self._out()
            n = lz4_frame(src, out, self.level, parts)     # a block per plane
            if n < 0 or n > raw * (1.0 - MIN_SAVING):
                self._free.append(out)
                return EncodedChunk(MODE_STORED, stored_lz4_parts(view), raw + STORED_OVERHEAD,
                                    raw, digest, None)
            return EncodedChunk(mode, [memoryview(out)[:n]], n, raw, digest, out)
        c = zlib.compressobj(self.level if self.level > 0 else 6, zlib.DEFLATED, 31)
        packed = c.compress(src) + c.flush()
        return EncodedChunk(mode, [packed], len(packed), raw, digest, None)


class ChunkDecoder:
    """Decodes chunks into their place; ``decode_into`` runs on worker threads, each
    with its own scratch buffer for filtered chunks."""

    def __init__(self):
        self._local = threading.local()

    def _scratch(self, n):
        s = getattr(self._local, "s", None)
        if s is None or len(s) < n:
            s = self._local.s = bytearray(max(n, CHUNK_SIZE))
        return s

    def decode_into(self, dest, offset, data, codec, mode, raw, itemsize, digest):
        """Decode ``data`` (a whole chunk) into ``dest[offset:offset+raw]`` and verify
        the checksum of what landed there."""
        try:
            if mode == MODE_STORED:
                if codec != CODEC_LZ4:
                    raise CorruptFileError("only lz4 chunks can be stored (mode 0)")
                data = _stored_payload(data, raw)
                if len(data) != raw:
                    raise CorruptFileError(f"a stored chunk has {len(data)} bytes, not {raw}")
                copy_into(dest, offset, data)
            elif mode not in (MODE_PACKED, MODE_SHUFFLED, MODE_DELTA):
                raise CorruptFileError(f"unknown chunk mode {mode}")
            else:
                if mode != MODE_PACKED and (itemsize <= 1 or raw % itemsize
                                            or (mode == MODE_DELTA and itemsize not in (2, 4, 8))):
                    raise CorruptFileError(f"a filtered chunk does not hold whole {itemsize}-byte items")
                if codec == CODEC_LZ4:
                    if mode == MODE_PACKED:
                        lz4_frame_into(data, dest, offset, raw)
                    else:
                        scratch = self._scratch(raw)
                        lz4_frame_into(data, scratch, 0, raw)
                        unfilter_into(dest, offset, memoryview(scratch)[:raw], itemsize, mode == MODE_DELTA)
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


def _stored_payload(data, raw):
    head = STORED_HEAD + _u32.pack(raw | 0x80000000)
    if len(data) != raw + STORED_OVERHEAD or bytes(data[:len(head)]) != head \
            or bytes(data[-4:]) != END_MARK:
        raise CorruptFileError("a stored lz4 chunk has a damaged frame header")
    return memoryview(data)[len(head):len(head) + raw]


def verify(view, digest):
    if checksum(view) != digest:
        raise CorruptFileError("checksum mismatch: the data was damaged after it was written")


def chunk_spans(nbytes, chunk=CHUNK_SIZE, itemsize=1):
    """(start, stop) byte ranges cutting ``nbytes`` into whole-item chunks."""
    step = max(itemsize, chunk - chunk % max(1, itemsize))
    return [(i, min(i + step, nbytes)) for i in range(0, nbytes, step)]
