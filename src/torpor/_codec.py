"""Chunk codecs: lz4 frames, gzip members, byte shuffle and checksums.

Each function here works on one chunk (at most CHUNK_SIZE bytes) and is safe to
run on a worker thread: lz4, zlib and xxhash release the GIL on large buffers, and
so do the Cython shuffle kernels in ``_ext/_filters.pyx``.
"""

import os
import struct
import zlib

import lz4.frame
import numpy as np
import xxhash

from .errors import CorruptFileError
from .format import (CHUNK_SIZE, CODEC_GZIP, CODEC_LZ4, CODEC_RAW, MIN_SAVING, MODE_PACKED,
                     MODE_SHUFFLED, MODE_STORED)

checksum = xxhash.xxh3_64_intdigest

try:
    if os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError("TORPOR_PUREPYTHON is set")
    from ._filters import copy_into, shuffle, unshuffle_into
    NATIVE_FILTERS = True
except ImportError:
    NATIVE_FILTERS = False

    def shuffle(src, itemsize):
        a = np.frombuffer(src, np.uint8)
        return a.reshape(-1, itemsize).T.tobytes()

    def unshuffle_into(dest, offset, src, itemsize):
        n = len(src)
        d = np.frombuffer(dest, np.uint8, count=n, offset=offset)
        d.reshape(-1, itemsize)[...] = np.frombuffer(src, np.uint8).reshape(itemsize, -1).T

    def copy_into(dest, offset, src):
        n = len(src)
        np.frombuffer(dest, np.uint8, count=n, offset=offset)[...] = np.frombuffer(src, np.uint8)

# An lz4 frame holding one uncompressed block: how a chunk that does not compress is
# stored, so that every lz4 section stays a valid lz4 stream (``lz4 -d`` reads it)
# while a reader can still copy the data straight into place. Frame descriptor:
# FLG 0x60 (version 01, independent blocks, no checksums, no content size),
# BD 0x70 (4 MiB maximum block size), HC the second byte of xxh32(FLG BD).
_FLG_BD = b"\x60\x70"
STORED_HEAD = (b"\x04\x22\x4d\x18" + _FLG_BD
               + bytes([(xxhash.xxh32_intdigest(_FLG_BD) >> 8) & 0xFF]))
STORED_OVERHEAD = len(STORED_HEAD) + 4 + 4       # header, block size, end mark
END_MARK = b"\x00\x00\x00\x00"
_u32 = struct.Struct("<I")

#: Skippable lz4 frame that carries one chunk's record (see docs/FORMAT.md). The
#: lz4 tool skips it, so a section's payload decompresses with ``lz4 -d`` as is.
CHUNK_MAGIC = 0x184D2A5B
CHUNK_RECORD = struct.Struct("<IIIIBBHQ")   # magic, 20, stored, raw, mode, 0, 0, checksum
CHUNK_RECORD_SIZE = CHUNK_RECORD.size


def stored_lz4_parts(view):
    """The buffers of a stored lz4 frame around ``view`` (nothing is copied)."""
    return [STORED_HEAD + _u32.pack(len(view) | 0x80000000), view, END_MARK]


def encode_chunk(view, codec, itemsize, use_shuffle, level):
    """Compress one chunk. Returns (mode, parts, stored_len, raw_len, checksum);
    ``parts`` are buffers to write in order, ``view`` itself among them when the
    chunk is stored, so stored data is never copied."""
    raw = len(view)
    digest = checksum(view)
    if codec == CODEC_RAW:
        return MODE_STORED, [view], raw, raw, digest
    src, mode = view, MODE_PACKED
    if use_shuffle and itemsize > 1 and raw % itemsize == 0:
        src, mode = shuffle(view, itemsize), MODE_SHUFFLED
    if codec == CODEC_LZ4:
        packed = lz4.frame.compress(src, compression_level=level,
                                    block_size=lz4.frame.BLOCKSIZE_MAX4MB,
                                    block_linked=False, store_size=True)
        if len(packed) > raw * (1.0 - MIN_SAVING):
            parts = stored_lz4_parts(view)
            return MODE_STORED, parts, raw + STORED_OVERHEAD, raw, digest
    else:
        c = zlib.compressobj(level if level > 0 else 6, zlib.DEFLATED, 31)
        packed = c.compress(src) + c.flush()
    return mode, [packed], len(packed), raw, digest


def decode_chunk_into(dest, offset, data, codec, mode, raw, itemsize, digest):
    """Decompress ``data`` (a whole chunk) into ``dest[offset:offset+raw]`` and verify
    the checksum of what landed there."""
    try:
        if mode == MODE_STORED:
            if codec == CODEC_LZ4:
                data = _stored_payload(data, raw)
            if len(data) != raw:
                raise CorruptFileError(f"a stored chunk has {len(data)} bytes, not {raw}")
            copy_into(dest, offset, data)
        else:
            if codec == CODEC_LZ4:
                out = lz4.frame.decompress(data)
            elif codec == CODEC_GZIP:
                d = zlib.decompressobj(31)
                out = d.decompress(data, raw)
                if d.unconsumed_tail or not d.eof or d.unused_data:
                    raise CorruptFileError("a gzip chunk does not end where its record says")
            else:
                raise CorruptFileError(f"chunk mode {mode} is not valid for a raw section")
            if len(out) != raw:
                raise CorruptFileError(f"a chunk decompressed to {len(out)} bytes, not {raw}")
            if mode == MODE_SHUFFLED:
                if itemsize <= 1 or raw % itemsize:
                    raise CorruptFileError("a shuffled chunk does not hold whole items")
                unshuffle_into(dest, offset, out, itemsize)
            elif mode == MODE_PACKED:
                copy_into(dest, offset, out)
            else:
                raise CorruptFileError(f"unknown chunk mode {mode}")
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
