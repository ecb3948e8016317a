"""The one internal entry to the engine: encode a graph into a file, decode a
file into a graph.

    pipeline.save(obj, file, SaveOptions.of(compress="lz4", threads=4))
    obj = pipeline.load(file, LoadOptions(policy=Policy()))

``file`` is a path (written atomically through ``torpor.storage``) or a binary
file object; ``encode``/``decode`` take an open file object. The public API
(``torpor.api``), sessions (``torpor.session``) and module dumps
(``torpor.interactive``) all call these, with the hooks they need:

- ``reducer_override(obj) -> None | (callable, args)``: asked about every object
  without a fast path before the default reduction (as pickle's hook is); the
  session layer saves State objects through it, module dumps save code by value.
- ``by_value``: an ``engine.byvalue.ByValue`` that says how code is saved by
  value (module dumps pass one that knows their module and namespace).
- ``toc_extra() -> dict``: merged into the table of contents once the graph is
  written (the session's class table).
- ``before_decode(header, toc)``: runs once both are known and before any object
  is rebuilt (for a stream: after its last section), and may refuse the file.
"""

from __future__ import annotations

import contextlib
import gc
import io
import operator
import os
import mmap as _mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional

from .. import storage
from ..errors import CorruptFileError, FormatError
from ..format.constants import (CODEC_BY_NAME, CODEC_LZ4, END_MAGIC, FOOTER_SIZE, MAX_DEPTH,
                               SECTION_STREAM)
from ..format.container import (Toc, damaged_as_corrupt, make_header, map_file, open_source,
                                read_toc)
from ..format.container import read_header as _read_header
from ..format.reader import ContainerReader
from ..format.writer import ContainerWriter
from . import progress as progress_
from . import select
from .byvalue import ByValue
from .safety import Policy

if TYPE_CHECKING:
    import numpy as np
    from _typeshed import ReadableBuffer, SupportsWrite

    from ..storage import PathOrFile

_COMPRESS_HELP = 'compress must be "lz4", "gzip" or None'


def check_threads(threads: Optional[int]) -> Optional[int]:
    """``threads`` as given to dump/load: None (one per core, at most 8) or an int >= 1."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not hasattr(type(threads), "__index__"):
        raise TypeError(f"threads must be None or an int of at least 1, not "
                        f"{type(threads).__name__} {threads!r:.40}")
    threads = operator.index(threads)        # numpy integers too
    if threads < 1:
        raise ValueError(f"threads must be at least 1 (or None for one per core), not {threads}")
    return threads


def codec_of(compress: Optional[str]) -> int:
    try:
        return CODEC_BY_NAME[compress]
    except (KeyError, TypeError):
        raise ValueError(f"{_COMPRESS_HELP}, not {compress!r}") from None


def _check_depth(max_depth: int) -> int:
    if type(max_depth) is not int or max_depth < 1:
        raise ValueError(f"max_depth must be an int of at least 1, not {max_depth!r:.40}")
    return max_depth


@dataclass(frozen=True)
class SaveOptions:
    """How a graph is encoded; ``SaveOptions.of`` checks user arguments."""
    codec: int = CODEC_LZ4
    threads: Optional[int] = None
    shuffle: bool = True
    level: int = 0
    max_depth: int = MAX_DEPTH
    progress: Any = None                # engine/progress.py

    @classmethod
    def of(cls, compress: Optional[str] = "lz4", threads: Optional[int] = None,
           shuffle: bool = True, level: int = 0, max_depth: int = MAX_DEPTH,
           progress: Any = None) -> SaveOptions:
        if type(level) is not int:
            raise TypeError(f"level must be an int, not {type(level).__name__}")
        return cls(codec_of(compress), check_threads(threads), bool(shuffle), level,
                   _check_depth(max_depth), progress_.check(progress))


@dataclass(frozen=True)
class LoadOptions:
    """How a file is decoded."""
    policy: Policy = field(default_factory=Policy)
    mmap: bool = False
    threads: Optional[int] = None
    max_depth: int = MAX_DEPTH
    progress: Any = None                # engine/progress.py

    def __post_init__(self) -> None:
        check_threads(self.threads)
        _check_depth(self.max_depth)
        progress_.check(self.progress)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Walking a graph allocates many objects (frames, memo entries, rebuilt objects)
    that are all still alive at the end; cyclic GC passes over them meanwhile find
    nothing to free and cost a large share of the time, so they wait until the end."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --- saving ------------------------------------------------------------------------

def encode(obj: Any, f: SupportsWrite[ReadableBuffer], options: SaveOptions,
           header: dict[str, Any], reducer_override: Optional[Callable[[Any], Any]] = None,
           toc_extra: Optional[Callable[[], dict[str, Any]]] = None,
           by_value: Optional[ByValue] = None) -> None:
    """Write ``obj`` as a complete torpor file to the file object ``f``."""
    w = ContainerWriter(f, codec_id=options.codec, threads=options.threads, shuffle=options.shuffle,
               level=options.level)
    try:
        w.write_header(header)
        enc = select.Encoder(w, options.max_depth, reducer_override, by_value)
        with gc_paused():
            enc.encode(obj)
        extra = {"globals": list(enc.globals), "memo": enc.n_memo}
        if toc_extra is not None:
            extra.update(toc_extra())
        w.finish(extra)
    finally:
        w.close()


def save(obj: Any, file: PathOrFile, options: SaveOptions, *,
         metadata: Optional[dict[str, Any]] = None,
         reducer_override: Optional[Callable[[Any], Any]] = None,
         toc_extra: Optional[Callable[[], dict[str, Any]]] = None,
         file_mode: Optional[int] = None, store: Optional[storage.Store] = None,
         by_value: Optional[ByValue] = None) -> None:
    """``encode`` into a path (atomically: the old file stays intact on any error),
    a key of ``store`` (likewise), or a binary file object. ``file_mode``:
    permission bits of a new file."""
    header = make_header(metadata, select.IMPLEMENTATION, options.codec)
    with storage.writing(file, mode=file_mode, store=store) as out, \
            saving(out, options, file) as out:
        encode(obj, out, options, header, reducer_override, toc_extra, by_value)


def _name(file: Any) -> str:
    """What a progress bar calls ``file``: its file name, else "a stream"."""
    name = file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", None)
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    return os.path.basename(name.rstrip("/")) or name if isinstance(name, str) else "a stream"


def saving(out: Any, options: SaveOptions, file: Any) -> Any:
    """``out`` as the save writes it: counted when ``options.progress`` asks for it."""
    return progress_.watching_writes(out, options.progress, f"saving {_name(file)}")


class _NullWriter:
    """Takes a walk and keeps nothing (``dry_run``)."""

    def __init__(self) -> None:
        self.n = 0

    def stream_frame(self, data: bytes) -> None:
        pass

    def add_array(self, arr: np.ndarray[Any, Any], fortran: bool) -> int:
        self.n += 1
        return self.n - 1

    def add_bytes(self, obj: bytes | bytearray) -> int:
        self.n += 1
        return self.n - 1


def dry_run(obj: Any, reducer_override: Optional[Callable[[Any], Any]] = None,
            max_depth: int = MAX_DEPTH, by_value: Optional[ByValue] = None) -> None:
    """Walk ``obj`` as a save would, writing nothing: raises what the save would."""
    select.Encoder(_NullWriter(), max_depth, reducer_override, by_value).encode(obj)


# --- loading -----------------------------------------------------------------------

def decode(f: BinaryIO, name: str, options: LoadOptions,
           before_decode: Optional[Callable[[dict[str, Any], dict[str, Any]], None]] = None
           ) -> Any:
    """Read the torpor file in ``f`` (named ``name`` in messages) and rebuild it."""
    with damaged_as_corrupt(name):
        src = open_source(f, name)
        header = _read_header(src)
    toc: Optional[Toc] = None
    mm: Optional[_mmap.mmap] = None
    policy = options.policy
    if src.size is not None:
        with damaged_as_corrupt(name):
            toc = read_toc(src)
        if before_decode is not None:
            before_decode(header, toc)
        globals_ = toc.get("globals", [])
        if isinstance(globals_, list) and all(isinstance(g, str) for g in globals_):
            policy.check_all(globals_, name)        # name every refused class at once
        if options.mmap:
            try:
                mm = map_file(f)
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation) as e:
                raise FormatError(f"mmap=True needs a real file on disk; {name} cannot be mapped ({e})") from None
    elif options.mmap:
        raise FormatError(f"mmap=True needs a seekable file on disk; {name} is a stream")
    # a file object that holds its bytes in memory may lend them to raw arrays
    # (torpor.dask.FramesFile: the frames Dask received)
    views = getattr(f, "payload_view", None) if mm is None and toc is not None else None
    reader = ContainerReader(src, threads=options.threads, mmap=mm, views=views)
    try:
        with damaged_as_corrupt(name):
            contents = reader.read_all(toc)
    finally:
        reader.close()
    if toc is None and before_decode is not None:
        before_decode(header, contents.toc)
    # a safe load's work budget counts payload sections as stored (engine/guard.py)
    policy.payload_bytes = sum(e.stored for e in contents.entries if e.kind != SECTION_STREAM)
    dec = select.Decoder(policy, contents.payloads, options.max_depth)
    with gc_paused():
        return dec.decode(contents.stream)


def load(file: PathOrFile, options: LoadOptions,
         before_decode: Optional[Callable[[dict[str, Any], dict[str, Any]], None]] = None,
         store: Optional[storage.Store] = None) -> Any:
    """``decode`` from a path, a key of ``store``, or a readable binary file object."""
    with storage.reading(file, store=store) as (f, name), \
            progress_.watching_reads(f, options.progress, f"loading {_name(name)}") as f:
        return decode(f, name, options, before_decode)


def read_header(file: Any, store: Optional[storage.Store] = None) -> dict[str, Any]:
    """The header of the torpor file at ``file`` (a path or a readable binary file
    object), read and checked without reading anything else."""
    with storage.reading(file, store=store) as (f, name), damaged_as_corrupt(name):
        return _read_header(open_source(f, name))


def inspect(file: Any, store: Optional[storage.Store] = None) -> tuple[dict[str, Any], Toc]:
    """The header and the table of contents of the torpor file at ``file``,
    rebuilding nothing (a stream is read to its end, a seekable file is not)."""
    with storage.reading(file, store=store) as (f, name), damaged_as_corrupt(name):
        src = open_source(f, name)
        header = _read_header(src)
        if src.size is not None:
            return header, read_toc(src)
        reader = ContainerReader(src, threads=1)
        try:
            return header, reader.read_all().toc
        finally:
            reader.close()


def content_checksum(file: Any, store: Optional[storage.Store] = None) -> tuple[int, str]:
    """The size of a whole torpor file and a digest of it, read in O(1): the
    checksum of its table of contents, which covers every section's checksum
    (each of which covers its chunks'), as ``"xxh3-toc:<16 hex digits>"``.
    Needs a seekable file."""
    with storage.reading(file, store=store) as (f, name):
        try:
            size = f.seek(0, io.SEEK_END)
            f.seek(max(0, size - FOOTER_SIZE - 8))
            tail = f.read(FOOTER_SIZE + 8)
        except OSError:
            size, tail = 0, b""
        if len(tail) != FOOTER_SIZE + 8 or not tail.endswith(END_MAGIC):
            raise CorruptFileError(f"{name}: no torpor footer at the end (truncated or not a "
                                   f"torpor file)")
        return size, f"xxh3-toc:{int.from_bytes(tail[:8], 'little'):016x}"


def verify(file: Any, threads: Optional[int] = None, store: Optional[storage.Store] = None,
           progress: Any = None) -> int:
    """Read the whole file and check every checksum, rebuilding nothing; the
    number of sections."""
    with storage.reading(file, store=store) as (f, name), damaged_as_corrupt(name), \
            progress_.watching_reads(f, progress_.check(progress), f"verifying {_name(name)}") as f:
        src = open_source(f, name)
        _read_header(src)
        toc = read_toc(src) if src.size is not None else None
        reader = ContainerReader(src, threads=threads)
        try:
            return len(reader.read_all(toc).entries)
        finally:
            reader.close()
