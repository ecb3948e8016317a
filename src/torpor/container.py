"""The torpor container: header, sections, table of contents and footer.

docs/FORMAT.md is the byte-level description; this module is its implementation.
The writer streams: it never seeks, so a file can go to a pipe or socket. The
reader reads in sequence from any stream, or through the table of contents when
the file is seekable (which is also how ``mmap=True`` maps raw array sections).
"""

import collections
import concurrent.futures
import datetime
import io
import mmap as _mmap
import os
import platform
import struct
import sys

import numpy as np

from . import _arrays, _codec, _msgpack
from ._dtypes import decode_dtype, encode_dtype
from .errors import CorruptFileError, FormatError
from .format import (ALIGN, CHUNK_SIZE, CODEC_LZ4, CODEC_NAMES, CODEC_RAW,
                     END_MAGIC, FOOTER_SIZE, FORMAT_VERSION, KIND_ARRAY, KIND_BYTES,
                     KIND_NAMES, KIND_STREAM, MAGIC, MAX_CHUNK_RAW, MAX_RATIO, MODE_STORED,
                     PREAMBLE_SIZE, SECTION_FIXED, SECTION_MAGIC, TOC_MAGIC)

_preamble = struct.Struct("<8sHHI")
_section = struct.Struct("<4sBBBBIIQQ")      # magic kind codec 0 0 index meta_len raw_len 0
_u64 = struct.Struct("<Q")
_footer = struct.Struct("<QQ8s")
_toc_head = struct.Struct("<4sIQ")
MAX_META = 16 << 20
#: Chunks in flight per thread: enough that a worker never waits for the next chunk
#: while the main thread writes (or reads), few enough to bound memory.
PIPELINE_DEPTH = 2
MAX_HEADER = 64 << 20


def default_threads():
    return max(1, min(8, os.cpu_count() or 1))


def _version():
    from . import __version__
    return __version__


# --- writing ---------------------------------------------------------------------

_STEP, _DONE = 0, 1


class _Done:
    """A chunk encoded on the calling thread, queued like a pool's future."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def cancel(self):
        return False


class Writer:
    """Writes a container to a binary file object, in one pass, never seeking."""

    def __init__(self, f, codec=CODEC_LZ4, threads=None, shuffle=True, level=0):
        self.f = f
        self.pos = 0
        self.codec = codec
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.depth = PIPELINE_DEPTH * self.threads   # chunks that may wait to be written
        self.encoder = _codec.ChunkEncoder(codec, filters=shuffle, level=level)
        self.sections = []
        self._pool = None
        self._queue = collections.deque()    # (_STEP, callable) or (_DONE, future)
        self._pending = 0                    # chunks in the queue

    def close(self):
        for kind, item in self._queue:
            if kind == _DONE:
                item.cancel()
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _write(self, buf):
        n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
        if n:
            self.f.write(buf)
            self.pos += n

    def write_header(self, header):
        body = _msgpack.packb(header)
        if len(body) > MAX_HEADER:
            raise FormatError(f"the header is {len(body)} bytes; keep metadata under {MAX_HEADER} bytes")
        pre = _preamble.pack(MAGIC, FORMAT_VERSION, 0, len(body))
        self._write(pre)
        self._write(body)
        self._write(_u64.pack(_codec.checksum(pre + body)))

    # sections
    #
    # Chunks of every section go to one thread pool as the walker hands them over,
    # and come back to be written strictly in file order: ``_queue`` holds, in that
    # order, pending chunk results and the small steps between them (a section
    # header, the end of a section). So the small arrays that fill most workspaces
    # compress in parallel too, not only the chunks of one big array, and no more
    # than ``depth`` chunks are ever waiting, whatever the data size.

    def _section_header(self, entry, meta):
        meta_b = _msgpack.packb(meta)
        fixed = _section.pack(SECTION_MAGIC, entry["kind"], entry["codec"], 0, 0, entry["index"],
                              len(meta_b), entry["raw"], 0)
        head = fixed + meta_b
        entry["checksum"] = _codec.checksum(head)
        entry["offset"] = self.pos
        self._write(head)
        self._write(_u64.pack(entry["checksum"]))
        self._write(b"\0" * (-self.pos % ALIGN))
        entry["payload"] = self.pos

    def _new_section(self, kind, codec, raw_len, meta):
        entry = {"kind": kind, "index": len(self.sections), "codec": codec, "raw": raw_len}
        entry.update({k: v for k, v in meta.items() if k != "chunks"})
        self.sections.append(entry)
        return entry

    def _end_section(self, entry):
        entry["stored"] = self.pos - entry["payload"]

    def _pool_get(self):
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="torpor")
        return self._pool

    def _drain(self, keep):
        """Write queued steps in order until at most ``keep`` chunks are pending."""
        q = self._queue
        while q and self._pending > keep:
            kind, item = q.popleft()
            if kind == _STEP:
                item()
            else:
                self._pending -= 1
                self._write_chunk(item.result())
        while q and q[0][0] == _STEP:
            q.popleft()[1]()

    def _write_payload(self, kind, chunks, raw_len, itemsize, meta):
        """Write one section whose payload is the byte views yielded by ``chunks``."""
        codec = self.codec if raw_len else CODEC_RAW
        entry = self._new_section(kind, codec, raw_len, meta)
        q = self._queue
        if codec == CODEC_RAW:
            # Raw payloads are contiguous (so they can be memory-mapped): the chunk
            # checksums go into the header, which therefore needs them first.
            views = list(chunks)
            meta = dict(meta, chunks=[[len(v), _codec.checksum(v)] for v in views])

            def write_raw():
                self._section_header(entry, meta)
                for v in views:
                    self._write(v)
                self._end_section(entry)
            q.append((_STEP, write_raw))
            self._drain(self.depth)
            return entry["index"]
        q.append((_STEP, lambda: self._section_header(entry, meta)))
        encode = self.encoder.encode
        filters = kind == KIND_ARRAY
        pool = self._pool_get() if self.threads > 1 else None
        for v in chunks:
            if pool is None:
                q.append((_DONE, _Done(encode(v, itemsize, filters))))
            else:
                q.append((_DONE, pool.submit(encode, v, itemsize, filters)))
            self._pending += 1
            self._drain(self.depth)
        q.append((_STEP, lambda: self._end_section(entry)))
        self._drain(self.depth)
        return entry["index"]

    def _write_chunk(self, res):
        mode, parts, stored, raw, digest, buf = res
        self._write(_codec.CHUNK_RECORD.pack(_codec.CHUNK_MAGIC, 20, stored, raw, mode, 0, 0, digest))
        for p in parts:
            self._write(p)
        self.encoder.release(buf)

    def stream_frame(self, data):
        return self._write_payload(KIND_STREAM, [memoryview(data)], len(data), 1, {})

    def add_bytes(self, obj):
        view = memoryview(obj).cast("B")
        spans = _codec.chunk_spans(len(view))
        return self._write_payload(KIND_BYTES, (view[a:b] for a, b in spans), len(view), 1,
                                   {"type": type(obj).__name__})

    def add_array(self, arr, fortran):
        meta = {"dtype": encode_dtype(arr.dtype), "shape": list(arr.shape),
                "order": "F" if fortran else "C"}
        itemsize = arr.dtype.itemsize
        if arr.flags.c_contiguous or arr.flags.f_contiguous:
            view = memoryview(_arrays.byte_view(arr))
            spans = _codec.chunk_spans(view.nbytes, CHUNK_SIZE, itemsize)
            chunks = (view[a:b] for a, b in spans)
        else:
            chunks = (memoryview(b) for b in _arrays.contiguous_blocks(arr, CHUNK_SIZE))
        return self._write_payload(KIND_ARRAY, chunks, arr.nbytes, itemsize, meta)

    def finish(self, extra):
        self._drain(0)
        toc = dict(extra, sections=[[s["kind"], s["offset"], s["payload"], s["stored"],
                                     s["raw"], s["codec"], s["checksum"],
                                     {k: v for k, v in s.items() if k in ("dtype", "shape", "order", "type")}]
                                    for s in self.sections])
        body = _msgpack.packb(toc)
        offset = self.pos
        self._write(_toc_head.pack(TOC_MAGIC, 0, len(body)))
        self._write(body)
        self._write(_u64.pack(_codec.checksum(body)))
        self._write(_footer.pack(offset, len(body), END_MAGIC))


def make_header(metadata, implementation, codec):
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    return {
        "format": FORMAT_VERSION,
        "torpor": _version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "byteorder": sys.byteorder,
        "implementation": implementation,
        "codec": CODEC_NAMES[codec],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
        "metadata": metadata,
    }


# --- reading ---------------------------------------------------------------------

class Source:
    """Sequential reads with position tracking over a binary file object."""

    def __init__(self, f, name="the file"):
        self.f = f
        self.name = name
        self.pos = 0
        self.size = None
        readinto = getattr(f, "readinto", None)
        self._readinto = readinto

    def read(self, n, what="data"):
        if n < 0:
            raise CorruptFileError(f"{self.name}: negative length for {what}")
        if self.size is not None and n > self.size - self.pos:
            raise CorruptFileError(
                f"{self.name} is truncated or damaged: {what} at byte {self.pos} needs {n} "
                f"bytes but the file ends after {self.size - self.pos}")
        if n <= 1 << 24:
            data = self.f.read(n)
        else:
            # read big pieces into a buffer of the final size: no chain of copies, and a
            # hostile length is bounded by what the stream really holds
            buf = bytearray()
            while len(buf) < n:
                piece = self.f.read(min(1 << 24, n - len(buf)))
                if not piece:
                    break
                buf += piece
            data = bytes(buf)
        if data is None:
            raise FormatError(f"{self.name} is a non-blocking stream that had no data ready")
        if len(data) != n:
            raise CorruptFileError(
                f"{self.name} is truncated: {what} at byte {self.pos} needs {n} bytes, "
                f"only {len(data)} were left")
        self.pos += n
        return data

    def read_into(self, view, what="data"):
        """Fill ``view`` from the stream (``readinto`` must exist)."""
        n = len(view)
        got = 0
        while got < n:
            more = self.f.readinto(view[got:])
            if more is None:
                raise FormatError(f"{self.name} is a non-blocking stream that had no data ready")
            if not more:
                raise CorruptFileError(
                    f"{self.name} is truncated: {what} at byte {self.pos} needs {n} bytes, "
                    f"only {got} were left")
            got += more
        self.pos += n

    def skip(self, n, what="padding"):
        if self.size is not None:
            if n > self.size - self.pos:
                raise CorruptFileError(f"{self.name} is truncated: {what} runs past the end")
            self.f.seek(n, io.SEEK_CUR)
            self.pos += n
        else:
            self.read(n, what)

    def seek(self, pos):
        self.f.seek(pos)
        self.pos = pos


def open_source(f, name):
    src = Source(f, name)
    try:
        seekable = f.seekable()
    except (AttributeError, ValueError, OSError):
        seekable = False
    if seekable:
        start = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(start)
        if start:
            raise FormatError(f"{name}: reading a torpor file that does not start at position 0 of its stream is not supported")
        src.size = end
    return src


def read_header(src):
    pre = src.read(PREAMBLE_SIZE, "the preamble")
    magic, version, flags, hlen = _preamble.unpack(pre)
    if magic != MAGIC:
        if magic[1:4] == b"TPR":
            raise CorruptFileError(f"{src.name} has a damaged torpor signature (was it transferred in text mode?)")
        raise FormatError(f"{src.name} is not a torpor file (it does not start with the torpor signature)")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{src.name} uses torpor format version {version}; this torpor ({_version()}) "
            f"reads version {FORMAT_VERSION}. Upgrade torpor to read it.")
    if flags:
        raise FormatError(f"{src.name} uses format flags 0x{flags:04x} that this torpor does not know")
    if hlen > MAX_HEADER:
        raise CorruptFileError(f"{src.name}: header length {hlen} is implausible")
    body = src.read(hlen, "the header")
    digest = _u64.unpack(src.read(8, "the header checksum"))[0]
    if _codec.checksum(pre + body) != digest:
        raise CorruptFileError(f"{src.name}: the header checksum does not match")
    header = _msgpack.unpackb(body, what=f"{src.name}'s header")
    if not isinstance(header, dict):
        raise CorruptFileError(f"{src.name}: the header is not a map")
    return header


def read_toc(src):
    """Read the table of contents of a seekable file, then return to the first section."""
    here = src.pos
    if src.size < here + FOOTER_SIZE + _toc_head.size + 8:
        raise CorruptFileError(f"{src.name} is truncated: it ends before its table of contents")
    src.seek(src.size - FOOTER_SIZE)
    offset, tlen, end = _footer.unpack(src.read(FOOTER_SIZE, "the footer"))
    if end != END_MAGIC:
        raise CorruptFileError(f"{src.name} is truncated or damaged: it does not end with the torpor end marker")
    if offset < here or offset + _toc_head.size + tlen + 8 + FOOTER_SIZE != src.size:
        raise CorruptFileError(f"{src.name}: the footer points to a table of contents outside the file")
    src.seek(offset)
    toc = _read_toc_block(src)
    toc["_offset"] = offset
    src.seek(here)
    return toc


def _read_toc_block(src, head=None):
    if head is None:
        head = src.read(_toc_head.size, "the table of contents")
    magic, _, tlen = _toc_head.unpack(head)
    if magic != TOC_MAGIC:
        raise CorruptFileError(f"{src.name}: expected the table of contents at byte {src.pos - len(head)}")
    body = src.read(tlen, "the table of contents")
    digest = _u64.unpack(src.read(8, "the table of contents checksum"))[0]
    if _codec.checksum(body) != digest:
        raise CorruptFileError(f"{src.name}: the table of contents checksum does not match")
    toc = _msgpack.unpackb(body, what=f"{src.name}'s table of contents")
    if not isinstance(toc, dict) or not isinstance(toc.get("sections"), list):
        raise CorruptFileError(f"{src.name}: the table of contents is not well formed")
    return toc


class Reader:
    """Reads every section of a container in file order and returns the stream and
    the payloads. With ``mmap`` set (a mmap object of the file), raw array sections
    become copy-on-write views of it instead of being read."""

    def __init__(self, src, threads=None, mmap=None, verify_mapped=False):
        self.src = src
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.depth = PIPELINE_DEPTH * self.threads   # chunks that may be decoding
        self.mmap = mmap
        self.verify_mapped = verify_mapped
        self.decoder = _codec.ChunkDecoder()
        self._inputs = []                     # input buffers ready for reuse
        self._inflight = collections.deque()  # (future, input buffer), in file order
        self._pool = None

    def close(self):
        for fut, _ in self._inflight:
            fut.cancel()
        self._inflight.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def read_all(self, toc=None):
        """Return (stream bytes, payloads dict, section entries, toc)."""
        src = self.src
        frames, payloads, entries = [], {}, []
        while True:
            at = src.pos
            magic = src.read(4, "a section header")
            if magic == TOC_MAGIC:
                seen = _read_toc_block(src, magic + src.read(_toc_head.size - 4, "the table of contents"))
                if toc is None:
                    toc = seen
                footer = src.read(FOOTER_SIZE, "the footer")
                if _footer.unpack(footer)[2] != END_MAGIC or _footer.unpack(footer)[0] != at:
                    raise CorruptFileError(f"{src.name}: damaged footer")
                if src.size is not None and src.pos != src.size:
                    raise CorruptFileError(f"{src.name}: unexpected bytes after the footer")
                elif src.size is None and src.f.read(1):
                    raise CorruptFileError(f"{src.name}: unexpected bytes after the footer")
                break
            if magic != SECTION_MAGIC:
                raise CorruptFileError(f"{src.name} is damaged: expected a section at byte {at}")
            mapped = self._map_from_toc(at, toc, len(entries))
            if mapped is not None:
                entry, value = mapped
            else:
                entry, value = self._section(at, magic, toc, len(entries))
            entries.append(entry)
            if entry["kind"] == KIND_STREAM:
                frames.append(value)
            else:
                payloads[entry["index"]] = value
        if toc is None or len(toc["sections"]) != len(entries):
            raise CorruptFileError(f"{src.name}: the table of contents lists a different number of sections")
        for e, t in zip(entries, toc["sections"]):
            if not isinstance(t, list) or len(t) < 7 or t[1] != e["offset"] or t[6] != e["checksum"]:
                raise CorruptFileError(f"{src.name}: the table of contents does not match section {e['index']}")
        self._wait_all()
        stream = frames[0] if len(frames) == 1 else b"".join(frames)
        return stream, payloads, entries, toc

    def _map_from_toc(self, at, toc, index):
        """With ``mmap``, a raw array section becomes a view of the mapping straight
        from its table-of-contents entry (checksummed with the table), without
        reading its header: a file of hundreds of arrays maps in milliseconds.
        Returns None for every other section, which is read as usual."""
        if self.mmap is None or toc is None or self.verify_mapped:
            return None
        ts = toc["sections"]
        t = ts[index] if index < len(ts) else None
        if not isinstance(t, list) or len(t) < 8 or t[0] != KIND_ARRAY or t[5] != CODEC_RAW \
                or not all(type(x) is int for x in t[1:7]) or not isinstance(t[7], dict) or not t[4]:
            return None
        _, offset, payload, stored, raw, codec, digest, meta = t[:8]
        if offset != at or payload % ALIGN or payload < at + SECTION_FIXED + 8 \
                or stored != raw or payload + raw > toc["_offset"]:
            raise CorruptFileError(f"{self.src.name}: the table of contents places section {index} outside the file")
        _, value = self._allocate(KIND_ARRAY, raw, meta, index)
        value = np.ndarray(value.shape, value.dtype, buffer=self.mmap, offset=payload, order=value.order)
        self.src.seek(payload + raw)
        entry = {"kind": KIND_ARRAY, "codec": codec, "index": index, "offset": offset,
                 "payload": payload, "raw": raw, "checksum": digest, "meta": meta, "stored": stored}
        return entry, value

    def _section(self, at, magic, toc, expected_index):
        src = self.src
        fixed = magic + src.read(SECTION_FIXED - 4, "a section header")
        _, kind, codec, r1, r2, index, mlen, raw, r3 = _section.unpack(fixed)
        if index != expected_index or r1 or r2 or r3 or kind not in KIND_NAMES \
                or codec not in CODEC_NAMES or mlen > MAX_META:
            raise CorruptFileError(f"{src.name}: damaged section header at byte {at}")
        meta_b = src.read(mlen, "a section's meta")
        digest = _u64.unpack(src.read(8, "a section header checksum"))[0]
        if _codec.checksum(fixed + meta_b) != digest:
            raise CorruptFileError(f"{src.name}: the header of section {index} (byte {at}) is damaged")
        meta = _msgpack.unpackb(meta_b, what=f"section {index}'s meta")
        if not isinstance(meta, dict):
            raise CorruptFileError(f"{src.name}: section {index}'s meta is not a map")
        src.skip(-src.pos % ALIGN)
        entry = {"kind": kind, "codec": codec, "index": index, "offset": at,
                 "payload": src.pos, "raw": raw, "checksum": digest, "meta": meta}
        if toc is not None:
            # a file read through its TOC must agree with it before anything is allocated
            ts = toc["sections"]
            if index >= len(ts) or not isinstance(ts[index], list) or len(ts[index]) < 7 \
                    or ts[index][1] != at or ts[index][6] != digest:
                raise CorruptFileError(f"{src.name}: section {index} is not where the table of contents says")
            stored_hint = ts[index][3]
            if type(stored_hint) is not int or stored_hint > src.size - src.pos:
                raise CorruptFileError(f"{src.name}: section {index} runs past the end of the file")
        # Bound the allocation by the bytes this section can really hold.
        limit = (src.size - src.pos if src.size is not None else None)
        if limit is not None and raw > limit * MAX_RATIO[codec] + 64:
            raise CorruptFileError(f"{src.name}: section {index} claims {raw} bytes, more than its data can hold")
        dest, value = self._allocate(kind, raw, meta, index)
        if codec == CODEC_RAW:
            self._read_raw(dest, raw, meta, entry, value)
            if isinstance(value, _MappedArray):
                value = value.arr
        else:
            self._read_chunks(dest, raw, codec, entry, _itemsize(kind, meta), wait=kind != KIND_ARRAY)
        entry["stored"] = src.pos - entry["payload"]
        if kind == KIND_BYTES and meta.get("type") == "bytes":
            value = bytes(dest)         # one copy for immutable bytes, as pickle does
        elif kind == KIND_STREAM:
            value = bytes(dest)
        return entry, value

    def _allocate(self, kind, raw, meta, index):
        if kind == KIND_ARRAY:
            try:
                dt = decode_dtype(meta["dtype"])
                shape = _arrays.check_shape(meta["shape"])
                order = meta["order"]
            except (KeyError, TypeError):
                raise CorruptFileError(f"{self.src.name}: array section {index} lacks its dtype, shape or order") from None
            if order not in ("C", "F"):
                raise CorruptFileError(f"{self.src.name}: array section {index} has order {order!r}")
            n = dt.itemsize
            for d in shape:
                n *= d
            if n != raw:
                raise CorruptFileError(f"{self.src.name}: array section {index} holds {raw} bytes, its shape needs {n}")
            if self.mmap is not None and raw:
                return None, _MappedArray(dt, shape, order)
            arr = np.empty(shape, dt, order=order)
            return _arrays.byte_view(arr), arr
        buf = bytearray(raw)
        return buf, buf

    def _read_raw(self, dest, raw, meta, entry, value):
        src = self.src
        chunks = meta.get("chunks")
        if not isinstance(chunks, list) or sum(c[0] for c in chunks if isinstance(c, list)) != raw:
            raise CorruptFileError(f"{src.name}: section {entry['index']}'s chunk list does not add up")
        if isinstance(value, _MappedArray):
            start = src.pos
            src.skip(raw, "an array section")
            mm = self.mmap
            value.arr = np.ndarray(value.shape, value.dtype, buffer=mm, offset=start, order=value.order)
            if self.verify_mapped:
                self._verify_spans(memoryview(mm)[start:start + raw], chunks)
            return
        view = memoryview(dest).cast("B") if not isinstance(dest, memoryview) else dest
        pos = 0
        for c in chunks:
            n = c[0]
            if src._readinto is None:
                view[pos:pos + n] = src.read(n, "section data")
            else:
                src.read_into(view[pos:pos + n], f"the data of section {entry['index']}")
            pos += n
        self._verify_spans(view, chunks)

    def _verify_spans(self, view, chunks):
        pos = 0
        for n, digest in chunks:
            _codec.verify(view[pos:pos + n], digest)
            pos += n

    def _read_chunks(self, dest, raw, codec, entry, itemsize, wait):
        """Read a compressed section's chunks and decode them into ``dest``. Chunks
        of all sections share one pool and ``_inflight`` (at most 2 * threads), so
        small arrays decode in parallel too; with ``wait`` the section is complete
        on return, otherwise by the end of ``read_all``."""
        src = self.src
        dest_view = memoryview(dest)
        decode = self.decoder.decode_into
        done = 0
        while done < raw:
            rec = src.read(_codec.CHUNK_RECORD_SIZE, "a chunk record")
            magic, size, stored, craw, mode, z1, z2, digest = _codec.CHUNK_RECORD.unpack(rec)
            if magic != _codec.CHUNK_MAGIC or size != 20 or z1 or z2 or craw == 0 \
                    or craw > MAX_CHUNK_RAW or craw > raw - done \
                    or (mode != MODE_STORED and craw > stored * MAX_RATIO[codec] + 64):
                raise CorruptFileError(f"{src.name}: damaged chunk record in section {entry['index']} at byte {src.pos - len(rec)}")
            buf, data = self._read_input(stored)
            job = (dest_view, done, data, codec, mode, craw, itemsize, digest)
            if self.threads == 1:
                decode(*job)
                if buf is not None:
                    self._inputs.append(buf)
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.threads, thread_name_prefix="torpor")
                self._inflight.append((self._pool.submit(decode, *job), buf))
                if len(self._inflight) >= self.depth:
                    self._finish(self._inflight.popleft())
            done += craw
        if wait:
            self._wait_all()

    def _wait_all(self):
        while self._inflight:
            self._finish(self._inflight.popleft())

    def _finish(self, job):
        fut, buf = job
        fut.result()
        if buf is not None:
            self._inputs.append(buf)

    def _read_input(self, n):
        """Read a chunk's ``n`` stored bytes into a recycled buffer (see _codec's
        docstring for why): returns (buffer, view of its first n bytes)."""
        src = self.src
        usual = _codec.lz4_bound(CHUNK_SIZE)
        if src._readinto is None or (src.size is None and n > usual) \
                or (src.size is not None and n > src.size - src.pos):
            # src.read bounds a hostile length by the bytes there are, and says what is wrong
            return None, src.read(n, "chunk data")
        buf = None
        while self._inputs:
            b = self._inputs.pop()
            if len(b) >= n:
                buf = b
                break
        if buf is None:
            buf = bytearray(max(n, usual))
        view = memoryview(buf)[:n]
        src.read_into(view, "chunk data")
        return buf, view


class _MappedArray:
    __slots__ = ("dtype", "shape", "order", "arr")

    def __init__(self, dtype, shape, order):
        self.dtype, self.shape, self.order, self.arr = dtype, shape, order, None


def _itemsize(kind, meta):
    if kind != KIND_ARRAY:
        return 1
    return decode_dtype(meta["dtype"]).itemsize


def map_file(f):
    """A copy-on-write memory map of the whole file (arrays stay writable, the file
    is never modified)."""
    return _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)


def describe_sections(entries_or_toc):
    out = []
    for s in entries_or_toc:
        kind, offset, payload, stored, raw, codec, digest, meta = s[:8]
        d = {"kind": KIND_NAMES.get(kind, kind), "offset": offset, "payload_offset": payload,
             "length": stored, "raw_length": raw, "codec": CODEC_NAMES.get(codec, codec),
             "checksum": f"{digest:016x}"}
        if isinstance(meta, dict):
            d.update(meta)
        out.append(d)
    return out
