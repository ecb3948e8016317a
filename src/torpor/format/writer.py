"""Writes a torpor container to a binary file object in one pass, never seeking
(docs/FORMAT.md). The walker hands it the object stream in frames and large
arrays and bytes out of band; their chunks are encoded on a thread pool."""

from __future__ import annotations

import collections
import concurrent.futures
from typing import TYPE_CHECKING, Any, Optional

from . import arrays, codec, messagepack
from .constants import (ALIGN, CHUNK_SIZE, CODEC_LZ4, CODEC_RAW, END_MAGIC, SECTION_ARRAY,
                        SECTION_BYTES, SECTION_MAGIC, SECTION_STREAM, TOC_MAGIC)
from .container import (FOOTER, PIPELINE_DEPTH, SECTION, TOC_HEAD, U64, TocEntry,
                        default_threads, header_bytes)
from .dtypes import encode_dtype

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, SupportsWrite

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


class _Section:
    """A section being written; its TocEntry once it is complete."""
    __slots__ = ("kind", "index", "codec", "raw", "meta", "offset", "payload", "stored",
                 "checksum")

    def __init__(self, kind, index, codec_id, raw, meta):
        self.kind, self.index, self.codec, self.raw, self.meta = kind, index, codec_id, raw, meta
        self.offset = self.payload = self.stored = self.checksum = 0

    def entry(self):
        return TocEntry(self.kind, self.offset, self.payload, self.stored, self.raw,
                        self.codec, self.checksum, self.meta)


class ContainerWriter:
    """Writes a container to ``f`` (anything with ``write``), in one pass."""

    def __init__(self, f: SupportsWrite[ReadableBuffer], codec_id: int = CODEC_LZ4,
                 threads: Optional[int] = None, shuffle: bool = True, level: int = 0) -> None:
        self.f = f
        self.pos = 0
        self.codec = codec_id
        self.threads = default_threads() if threads is None else threads
        self.depth = PIPELINE_DEPTH * self.threads   # chunks that may wait to be written
        self.encoder = codec.ChunkEncoder(codec_id, filters=shuffle, level=level)
        self.sections: list[_Section] = []
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        # (_STEP, callable) or (_DONE, future)
        self._queue: collections.deque[tuple[int, Any]] = collections.deque()
        self._pending = 0                    # chunks in the queue
        self._plans: dict[Any, codec.Plan] = {}   # filter choices shared by small arrays

    def close(self) -> None:
        for kind, item in self._queue:
            if kind == _DONE:
                item.cancel()
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.encoder.close()

    def _write(self, buf):
        n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
        if n:
            self.f.write(buf)
            self.pos += n

    def write_header(self, header: dict[str, Any]) -> None:
        self._write(header_bytes(header))

    # sections
    #
    # Chunks of every section go to one thread pool as the walker hands them over,
    # and come back to be written strictly in file order: ``_queue`` holds, in that
    # order, pending chunk results and the small steps between them (a section
    # header, the end of a section). So the small arrays that fill most workspaces
    # compress in parallel too, not only the chunks of one big array, and no more
    # than ``depth`` chunks are ever waiting, whatever the data size.

    def _section_header(self, sec, meta):
        meta_b = messagepack.packb(meta)
        fixed = SECTION.pack(SECTION_MAGIC, sec.kind, sec.codec, 0, 0, sec.index,
                             len(meta_b), sec.raw, 0)
        head = fixed + meta_b
        sec.checksum = codec.checksum(head)
        sec.offset = self.pos
        self._write(head)
        self._write(U64.pack(sec.checksum))
        self._write(b"\0" * (-self.pos % ALIGN))
        sec.payload = self.pos

    def _new_section(self, kind, codec_id, raw_len, meta):
        sec = _Section(kind, len(self.sections), codec_id, raw_len,
                       {k: v for k, v in meta.items() if k != "chunks"})
        self.sections.append(sec)
        return sec

    def _end_section(self, sec):
        sec.stored = self.pos - sec.payload

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

    def _write_payload(self, kind, chunks, raw_len, itemsize, meta, plan_key=None):
        """Write one section whose payload is the byte views yielded by ``chunks``."""
        codec_id = self.codec if raw_len else CODEC_RAW
        sec = self._new_section(kind, codec_id, raw_len, meta)
        q = self._queue
        if codec_id == CODEC_RAW:
            # Raw payloads are contiguous (so they can be memory-mapped): the chunk
            # checksums go into the header, which therefore needs them first.
            views = list(chunks)
            meta = dict(meta, chunks=[[len(v), codec.checksum(v)] for v in views])

            def write_raw():
                self._section_header(sec, meta)
                for v in views:
                    self._write(v)
                self._end_section(sec)
            q.append((_STEP, write_raw))
            self._drain(self.depth)
            return sec.index
        q.append((_STEP, lambda: self._section_header(sec, meta)))
        encode = self.encoder.encode
        filters = kind == SECTION_ARRAY
        plan = None
        if filters:                 # one filter trial for several chunks (codec.TRIAL_EVERY)
            key = plan_key if raw_len < CHUNK_SIZE else None
            plan = self._plans.get(key) if key is not None else None
            if plan is None:
                plan = codec.Plan()
                if key is not None:
                    self._plans[key] = plan
        pool = self._pool_get() if self.threads > 1 else None
        for v in chunks:
            choice = self.encoder.choice(v, itemsize, filters, plan) if plan is not None else None
            if pool is None:
                q.append((_DONE, _Done(encode(v, itemsize, filters, choice))))
            else:
                q.append((_DONE, pool.submit(encode, v, itemsize, filters, choice)))
            self._pending += 1
            self._drain(self.depth)
        q.append((_STEP, lambda: self._end_section(sec)))
        self._drain(self.depth)
        return sec.index

    def _write_chunk(self, chunk):
        self._write(codec.CHUNK_RECORD.pack(codec.CHUNK_MAGIC, 20, chunk.stored, chunk.raw,
                                            chunk.mode, chunk.shift, chunk.mask, chunk.xor,
                                            chunk.checksum))
        for p in chunk.parts:
            self._write(p)
        self.encoder.release(chunk.buffer)

    # what the walker calls

    def stream_frame(self, data):
        return self._write_payload(SECTION_STREAM, [memoryview(data)], len(data), 1, {})

    def add_bytes(self, obj):
        view = memoryview(obj).cast("B")
        spans = codec.chunk_spans(len(view))
        return self._write_payload(SECTION_BYTES, (view[a:b] for a, b in spans), len(view), 1,
                                   {"type": type(obj).__name__})

    def add_array(self, arr, fortran):
        meta = {"dtype": encode_dtype(arr.dtype, layout=True), "shape": list(arr.shape),
                "order": "F" if fortran else "C"}
        itemsize = arr.dtype.itemsize
        if arr.flags.c_contiguous or arr.flags.f_contiguous:
            view = memoryview(arrays.byte_view(arr))
            spans = codec.chunk_spans(view.nbytes, CHUNK_SIZE, itemsize)
            chunks = (view[a:b] for a, b in spans)
        else:
            chunks = (memoryview(b) for b in arrays.contiguous_blocks(arr, CHUNK_SIZE))
        return self._write_payload(SECTION_ARRAY, chunks, arr.nbytes, itemsize, meta,
                                   (arr.dtype.str, arr.shape[1:]))

    def finish(self, extra: dict[str, Any]) -> None:
        """Write the table of contents (``extra`` merged in) and the footer."""
        self._drain(0)
        toc = dict(extra, sections=[s.entry().to_list() for s in self.sections])
        body = messagepack.packb(toc)
        offset = self.pos
        self._write(TOC_HEAD.pack(TOC_MAGIC, 0, len(body)))
        self._write(body)
        self._write(U64.pack(codec.checksum(body)))
        self._write(FOOTER.pack(offset, len(body), END_MAGIC))
