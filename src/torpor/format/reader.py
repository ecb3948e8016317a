"""Reads a torpor container (docs/FORMAT.md): every section in file order, chunks
decoded on a thread pool, raw array sections optionally mapped instead of read."""

from __future__ import annotations

import collections
import concurrent.futures
import mmap as _mmap
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from ..errors import CorruptFileError, TorporError
from . import arrays, codec, messagepack
from .constants import (ALIGN, CHUNK_SIZE, CODEC_NAMES, CODEC_RAW, END_MAGIC, FOOTER_SIZE,
                        MAX_RATIO, SECTION_ARRAY, SECTION_BYTES, SECTION_FIXED, SECTION_MAGIC, SECTION_NAMES, SECTION_STREAM, TOC_MAGIC)
from .container import (FOOTER, MAX_META, PIPELINE_DEPTH, SECTION, TOC_HEAD, U64, Source, Toc,
                        TocEntry, default_threads, read_toc_block)
from .dtypes import decode_dtype


class Contents(NamedTuple):
    """What ``ContainerReader.read_all`` returns."""
    stream: bytes          # the object stream, its frames joined
    payloads: dict[int, Any]  # section index -> array, bytes or bytearray
    entries: list[TocEntry]   # TocEntry of every section, as read
    toc: Toc               # the table of contents


class ContainerReader:
    """Reads every section of a container in file order and returns the stream and
    the payloads. With ``mmap`` set (a mmap object of the file), raw array sections
    become copy-on-write views of it instead of being read."""

    def __init__(self, src: Source, threads: Optional[int] = None,
                 mmap: Optional[_mmap.mmap] = None, verify_mapped: bool = False,
                 views: Optional[Callable[[int, int], Any]] = None) -> None:
        self.src = src
        self.threads = default_threads() if threads is None else threads
        self.depth = PIPELINE_DEPTH * self.threads   # chunks that may be decoding
        self.mmap = mmap
        self.verify_mapped = verify_mapped
        # views(offset, length): a writable buffer already holding those bytes of the
        # file, or None (torpor.dask: a received frame the array can be placed over)
        self.views = views
        self.decoder = codec.ChunkDecoder()
        self._inputs: list[Any] = []          # input buffers ready for reuse
        # (future, input buffer, section), in file order
        self._inflight: collections.deque[tuple[Any, Any, Any]] = collections.deque()
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def close(self) -> None:
        for fut, _, _ in self._inflight:
            fut.cancel()
        self._inflight.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def read_all(self, toc: Optional[Toc] = None) -> Contents:
        """Read every section; ``toc``: the table of contents if it was read first."""
        src = self.src
        frames: list[bytes]
        payloads: dict[int, Any]
        entries: list[TocEntry]
        frames, payloads, entries = [], {}, []
        while True:
            at = src.pos
            magic = src.read(4, "a section header")
            if magic == TOC_MAGIC:
                seen = read_toc_block(src, magic + src.read(TOC_HEAD.size - 4, "the table of contents"))
                if toc is None:
                    toc = seen
                footer = src.read(FOOTER_SIZE, "the footer")
                toc_at, _, end = FOOTER.unpack(footer)
                if end != END_MAGIC or toc_at != at:
                    raise CorruptFileError(f"{src.name}: damaged footer")
                if not src.at_end():
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
            if entry.kind == SECTION_STREAM:
                frames.append(value)
            else:
                payloads[len(entries) - 1] = value
        if toc is None or len(toc["sections"]) != len(entries):
            raise CorruptFileError(f"{src.name}: the table of contents lists a different number of sections")
        for i, (e, t) in enumerate(zip(entries, toc["sections"])):
            if t.offset != e.offset or t.checksum != e.checksum:
                raise CorruptFileError(f"{src.name}: the table of contents does not match section {i}")
        self._wait_all()
        stream = frames[0] if len(frames) == 1 else b"".join(frames)
        return Contents(stream, payloads, entries, toc)

    def read_sections(self, toc: Toc, indices: Any) -> dict[int, Any]:
        """Only the sections ``indices`` (a partial load), each found through the
        table of contents and checked as ``read_all`` checks it: section index ->
        its array, bytes or bytearray (a stream section: its bytes)."""
        src = self.src
        ts = toc["sections"]
        out: dict[int, Any] = {}
        for index in sorted(set(indices)):
            if not 0 <= index < len(ts):
                raise CorruptFileError(f"{src.name}: there is no section {index}")
            t = ts[index]
            src.seek(t.offset)
            mapped = self._map_from_toc(t.offset, toc, index)
            if mapped is not None:
                out[index] = mapped[1]
                continue
            magic = src.read(4, "a section header")
            if magic != SECTION_MAGIC:
                raise CorruptFileError(f"{src.name}: section {index} is not where the table of "
                                       f"contents says")
            entry, out[index] = self._section(t.offset, magic, toc, index)
            if entry.kind != t.kind or entry.raw != t.raw or entry.stored != t.stored:
                raise CorruptFileError(f"{src.name}: section {index} does not match the table "
                                       f"of contents")
        self._wait_all()
        return out

    def _map_from_toc(self, at, toc, index):
        """With ``mmap``, a raw array section becomes a view of the mapping straight
        from its table-of-contents entry (checksummed with the table), without
        reading its header: a file of hundreds of arrays maps in milliseconds.
        Returns None for every other section, which is read as usual."""
        if self.mmap is None or toc is None or self.verify_mapped:
            return None
        ts = toc["sections"]
        t = ts[index] if index < len(ts) else None
        if t is None or t.kind != SECTION_ARRAY or t.codec != CODEC_RAW or not t.raw:
            return None
        if t.offset != at or t.payload % ALIGN or t.payload < at + SECTION_FIXED + 8 \
                or t.stored != t.raw or toc.offset is None or t.payload + t.raw > toc.offset:
            raise CorruptFileError(f"{self.src.name}: the table of contents places section {index} outside the file")
        dt, shape, order = self._array_layout(t.raw, t.meta, index)
        value = np.ndarray(shape, dt, buffer=self.mmap, offset=t.payload, order=order)
        self.src.seek(t.payload + t.raw)
        return t, value

    def _section(self, at, magic, toc, expected_index):
        src = self.src
        fixed = magic + src.read(SECTION_FIXED - 4, "a section header")
        _, kind, codec_id, r1, r2, index, mlen, raw, r3 = SECTION.unpack(fixed)
        if index != expected_index or r1 or r2 or r3 or kind not in SECTION_NAMES \
                or codec_id not in CODEC_NAMES or mlen > MAX_META:
            raise CorruptFileError(f"{src.name}: damaged section header at byte {at}")
        meta_b = src.read(mlen, "a section's meta")
        digest = U64.unpack(src.read(8, "a section header checksum"))[0]
        if codec.checksum(fixed + meta_b) != digest:
            raise CorruptFileError(f"{src.name}: the header of section {index} (byte {at}) is damaged")
        meta = messagepack.unpackb(meta_b, what=f"section {index}'s meta")
        if not isinstance(meta, dict):
            raise CorruptFileError(f"{src.name}: section {index}'s meta is not a map")
        src.skip(-src.pos % ALIGN)
        payload = src.pos
        if toc is not None:
            # a file read through its TOC must agree with it before anything is allocated
            ts = toc["sections"]
            if index >= len(ts) or ts[index].offset != at or ts[index].checksum != digest:
                raise CorruptFileError(f"{src.name}: section {index} is not where the table of contents says")
            if ts[index].stored > src.size - src.pos:
                raise CorruptFileError(f"{src.name}: section {index} runs past the end of the file")
        # Bound the allocation by the bytes this section can really hold.
        limit = (src.size - src.pos if src.size is not None else None)
        if limit is not None and raw > limit * MAX_RATIO[codec_id] + 64:
            raise CorruptFileError(f"{src.name}: section {index} claims {raw} bytes, more than its data can hold")
        if src.size is None and raw:
            # A stream of unknown length: what the section claims is believed only
            # once its bytes have arrived, so they are read first, then placed.
            dest, value = self._staged(kind, raw, codec_id, meta, index)
        elif (lent := self._lent(kind, codec_id, raw, meta, index)) is not None:
            dest, value = None, lent
        else:
            dest, value = self._allocate(kind, raw, meta, index, mapped=codec_id == CODEC_RAW)
            if codec_id == CODEC_RAW:
                self._read_raw(dest, raw, meta, index, value, kind)
                if isinstance(value, _MappedArray):
                    value = value.arr
            else:
                self._read_chunks(dest, raw, codec_id, (kind, meta, index), _itemsize(kind, meta),
                                  wait=kind != SECTION_ARRAY)
        entry = TocEntry(kind, at, payload, src.pos - payload, raw, codec_id, digest, meta)
        if kind == SECTION_STREAM or (kind == SECTION_BYTES and meta.get("type") == "bytes"):
            value = dest.tobytes()      # one copy for immutable bytes, as pickle does
        elif kind == SECTION_BYTES:
            value = bytearray(dest)
        return entry, value

    def _allocate(self, kind, raw, meta, index, mapped=False):
        """The destination of a section's decoded bytes and the value it becomes;
        with ``mapped`` (a raw section) and a mapping, an array to be placed over
        the mapping instead (compressed sections are decoded into memory)."""
        if kind == SECTION_ARRAY:
            dt, shape, order = self._array_layout(raw, meta, index)
            if mapped and self.mmap is not None and raw:
                return None, _MappedArray(dt, shape, order)
            arr = np.empty(shape, dt, order=order)
            return arrays.byte_view(arr), arr
        # Not bytearray(raw), which fills every page with zeros: the memory of a
        # section that claims more than it holds is never touched.
        buf = np.empty(raw, np.uint8)
        return buf, buf

    def _lent(self, kind, codec_id, raw, meta, index):
        """With ``views``: a raw array section placed over the buffer ``views`` lends
        for its payload (its chunks' checksums checked there), skipped in the
        file; None when there is no such buffer (the section is then read)."""
        if self.views is None or kind != SECTION_ARRAY or codec_id != CODEC_RAW or not raw:
            return None
        buffer = self.views(self.src.pos, raw)
        if buffer is None:
            return None
        dt, shape, order = self._array_layout(raw, meta, index)
        self._verify_spans(memoryview(buffer), self._raw_chunk_list(raw, meta, index),
                           (kind, meta, index))
        self.src.skip(raw, "an array section")
        return np.ndarray(shape, dt, buffer=buffer, order=order)

    def _array_layout(self, raw, meta, index):
        """An array section's dtype, shape and order, checked against its size."""
        try:
            dt = decode_dtype(meta["dtype"])
            shape = arrays.check_shape(meta["shape"], dt.itemsize)
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
        return dt, shape, order

    def _staged(self, kind, raw, codec_id, meta, index):
        """Read a section of a stream whole (each piece bounded by the bytes that
        really arrive), then allocate its destination and decode into it."""
        src = self.src
        where = (kind, meta, index)
        if codec_id == CODEC_RAW:
            chunks = self._raw_chunk_list(raw, meta, index)
            pieces = [src.read(n, f"the data of section {index}") for n, _ in chunks]
            dest, value = self._allocate(kind, raw, meta, index)
            view = memoryview(dest).cast("B")
            pos = 0
            for piece in pieces:
                view[pos:pos + len(piece)] = piece
                pos += len(piece)
            self._verify_spans(view, chunks, where)
            return dest, value
        # Compressed: chunks are held until the bytes received make the claim
        # possible (received x the codec's largest ratio covers it), then the
        # destination is allocated and the rest streams as usual; so a large real
        # section holds back at most 1/ratio of itself, a false claim nothing.
        records = []
        dest = value = dest_view = None
        itemsize = _itemsize(kind, meta)
        done = received = 0
        while done < raw:
            stored, craw, mode, digest, layout = codec.read_chunk_record(src, raw, done, codec_id,
                                                                         index)
            received += codec.CHUNK_RECORD_SIZE + stored
            if dest_view is None:
                records.append((src.read(stored, "chunk data"), done, mode, craw, digest, layout))
                if received * MAX_RATIO[codec_id] + 64 >= raw:
                    dest, value = self._allocate(kind, raw, meta, index)
                    dest_view = memoryview(dest)
                    for data, at, m, n, d, lay in records:
                        self._dispatch((dest_view, at, data, codec_id, m, n, itemsize, d, lay), None, where)
                    records = []
            else:
                buf, data = self._read_input(stored)
                self._dispatch((dest_view, done, data, codec_id, mode, craw, itemsize, digest, layout), buf, where)
            done += craw
        if dest_view is None:      # every chunk is here and still short of the ratio
            dest, value = self._allocate(kind, raw, meta, index)
            dest_view = memoryview(dest)
            for data, at, m, n, d, lay in records:
                self._dispatch((dest_view, at, data, codec_id, m, n, itemsize, d, lay), None, where)
        self._wait_all()
        return dest, value

    def _raw_chunk_list(self, raw, meta, index):
        chunks = meta.get("chunks")
        if not isinstance(chunks, list) or not all(
                type(c) is list and len(c) == 2 and type(c[0]) is int and type(c[1]) is int
                and 0 <= c[0] <= raw for c in chunks):
            raise CorruptFileError(f"{self.src.name}: section {index}'s chunk list is not well formed")
        if sum(c[0] for c in chunks) != raw:
            raise CorruptFileError(f"{self.src.name}: section {index}'s chunk list does not add up")
        return chunks

    def _read_raw(self, dest, raw, meta, index, value, kind):
        src = self.src
        where = (kind, meta, index)
        chunks = self._raw_chunk_list(raw, meta, index)
        if isinstance(value, _MappedArray):
            start = src.pos
            src.skip(raw, "an array section")
            mm = self.mmap
            value.arr = np.ndarray(value.shape, value.dtype, buffer=mm, offset=start, order=value.order)
            if self.verify_mapped:
                self._verify_spans(memoryview(mm)[start:start + raw], chunks, where)
            return
        view = memoryview(dest).cast("B") if not isinstance(dest, memoryview) else dest
        pos = 0
        for c in chunks:
            n = c[0]
            if not src.can_readinto:
                view[pos:pos + n] = src.read(n, "section data")
            else:
                src.read_into(view[pos:pos + n], f"the data of section {index}")
            pos += n
        self._verify_spans(view, chunks, where)

    def _verify_spans(self, view, chunks, where):
        pos = 0
        for n, digest in chunks:
            try:
                codec.verify(view[pos:pos + n], digest)
            except CorruptFileError as e:
                raise self._damaged(where, e) from None
            pos += n

    def _damaged(self, where, e):
        """``e`` (a chunk that fails to decode or to match its checksum) naming the
        file and the section: "f.torpor: array section 3 (float64, shape (1000,)): ..."."""
        kind, meta, index = where
        what = f"{SECTION_NAMES.get(kind, 'a')} section {index}"
        if kind == SECTION_ARRAY:
            try:
                what += f" ({decode_dtype(meta['dtype'])}, shape {tuple(meta['shape'])})"
            except (TorporError, KeyError, TypeError, ValueError):
                pass            # a damaged meta: the index alone says where
        return CorruptFileError(f"{self.src.name}: {what}: {e}")

    def _read_chunks(self, dest, raw, codec_id, where, itemsize, wait):
        """Read a compressed section's chunks and decode them into ``dest``. Chunks
        of all sections share one pool and ``_inflight`` (at most 2 * threads), so
        small arrays decode in parallel too; with ``wait`` the section is complete
        on return, otherwise by the end of ``read_all``. ``where``: (kind, meta,
        index) of the section, for messages."""
        dest_view = memoryview(dest)
        done = 0
        while done < raw:
            stored, craw, mode, digest, layout = codec.read_chunk_record(self.src, raw, done,
                                                                         codec_id, where[2])
            buf, data = self._read_input(stored)
            self._dispatch((dest_view, done, data, codec_id, mode, craw, itemsize, digest, layout), buf, where)
            done += craw
        if wait:
            self._wait_all()

    def _dispatch(self, job, buf, where):
        """Decode a chunk, here or on the pool (``buf``: its recycled input buffer;
        ``where``: its section, for messages)."""
        if self.threads == 1:
            try:
                self.decoder.decode_into(*job)
            except CorruptFileError as e:
                raise self._damaged(where, e) from None
            if buf is not None:
                self._inputs.append(buf)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="torpor")
        self._inflight.append((self._pool.submit(self.decoder.decode_into, *job), buf, where))
        if len(self._inflight) >= self.depth:
            self._finish(self._inflight.popleft())

    def _wait_all(self):
        while self._inflight:
            self._finish(self._inflight.popleft())

    def _finish(self, job):
        fut, buf, where = job
        try:
            fut.result()
        except CorruptFileError as e:
            raise self._damaged(where, e) from None
        if buf is not None:
            self._inputs.append(buf)

    def _read_input(self, n):
        """Read a chunk's ``n`` stored bytes into a recycled buffer (see codec's
        docstring for why): returns (buffer, view of its first n bytes)."""
        src = self.src
        usual = codec.lz4_bound(CHUNK_SIZE)
        if not src.can_readinto or (src.size is None and n > usual) \
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
    if kind != SECTION_ARRAY:
        return 1
    return decode_dtype(meta["dtype"]).itemsize


