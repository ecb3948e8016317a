"""dump / load / dumps / loads / info / verify: the drop-in API."""

from __future__ import annotations

import io
from typing import Any, Iterable, Optional

from . import storage
from .engine import partial, pipeline
from .engine.progress import check as progress_check
from .engine.safety import Policy
from .errors import FormatError, TorporError
from .format.constants import MAX_DEPTH
from .format.container import describe_sections
from .format.locate import parse_path

PathOrFile = storage.PathOrFile


def dump(obj: Any, file: PathOrFile, *, compress: Optional[str] = "lz4",
         threads: Optional[int] = None, metadata: Optional[dict[str, Any]] = None,
         shuffle: bool = True, level: int = 0, max_depth: int = MAX_DEPTH,
         storage_options: Optional[dict[str, Any]] = None, progress: Any = None) -> None:
    """Save ``obj`` to ``file`` (a path, a URL such as ``"s3://bucket/x.torpor"``,
    an ``fsspec.open(...)`` object, or a writable binary file object).

    Saving to a path is atomic: the data goes to a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``file`` only when complete.
    If anything fails the previous file is untouched and no temporary file remains.
    Saving to a URL is as atomic as the store allows: on S3 or GCS one PUT, or a
    multipart upload completed only at the end (a failed save leaves the previous
    object and no upload); elsewhere a temporary key moved over the file.
    ``storage_options``: for a URL, passed to fsspec (an endpoint, credentials:
    ``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}``).

    ``compress``: "lz4" (default), "gzip" or None (raw sections, which
    ``load(..., mmap=True)`` maps without reading). ``threads``: compression
    threads (default: the number of cores, at most 8). ``metadata``: a dict of
    plain values stored in the header, readable with ``torpor.info`` alone.
    ``shuffle``: let each chunk of an array be filtered before it is compressed
    (byte shuffle, or delta then shuffle), whichever a trial on a sample of the
    chunk finds smallest, or none (docs/FORMAT.md, "Chunk modes"); False
    compresses every chunk as it is. ``level``: lz4's speed/size trade-off, 0 the
    default fast compressor, negative values faster (acceleration ``1 - level``),
    positive values lz4hc at that level (much slower, a little smaller).
    ``progress``: True shows a progress bar in bytes (tqdm: on a terminal or in
    Jupyter) once the save has taken about a second; a callable is called as
    ``progress(bytes_written, None)`` after every write.
    """
    options = pipeline.SaveOptions.of(compress, threads, shuffle, level, max_depth, progress)
    pipeline.save(obj, storage.locate(file, storage_options), options, metadata=metadata)


def dumps(obj: Any, **kw: Any) -> bytes:
    """Like ``dump``, returning the file's bytes."""
    buf = io.BytesIO()
    dump(obj, buf, **kw)
    return buf.getvalue()


def load(file: PathOrFile, *, mmap: bool = False, trusted: bool = False,
         allow: Iterable[Any] = (), threads: Optional[int] = None,
         max_depth: int = MAX_DEPTH, storage_options: Optional[dict[str, Any]] = None,
         progress: Any = None, select: Optional[str] = None) -> Any:
    """Load an object saved by ``dump`` from a path, a URL (read in byte ranges,
    streaming), an ``fsspec.open(...)`` object or a readable binary file object.

    By default only builtin, stdlib and numpy types are rebuilt; anything else in
    the file raises UnsafeLoadError before it is imported. ``allow`` adds classes
    by ``"module.qualname"`` or glob pattern (``"mypkg.models.*"``) or by the class
    itself; ``trusted=True`` rebuilds everything. ``mmap=True`` maps the raw array
    sections (those of a file saved with ``compress=None``) copy-on-write instead
    of reading them (their checksums are then checked by ``torpor.verify`` only);
    compressed sections are read as usual, so it works on any file on disk
    (``info(file)["mmap"]`` says how many arrays it maps); a remote URL cannot be
    mapped and raises ValueError (``file://`` URLs are files on disk).
    ``storage_options``: for a URL, passed to fsspec, as for ``dump``.
    ``progress``: as for ``dump``; a callable gets ``(bytes_read, file_size)``.
    ``select``: load only the part at this path (``"['geoms'][3]['points']"``,
    ``".atoms"``; ``torpor ls`` prints them), reading only the bytes it needs:
    one array of a large file costs about its own size (docs/PARTIAL.md)."""
    steps = parse_path(select) if select is not None else ()
    options = pipeline.LoadOptions(Policy(trusted=trusted, allow=allow), bool(mmap), threads,
                                   max_depth, progress)
    file = _local_or_remote(file, storage_options, mmap)
    if steps:
        return partial.load(file, options, steps, before_decode=_refuse_other_kinds)
    return pipeline.load(file, options, before_decode=_refuse_other_kinds)


def open(file: PathOrFile, *, mmap: bool = False, trusted: bool = False,
         allow: Iterable[Any] = (), threads: Optional[int] = None,
         max_depth: int = MAX_DEPTH, storage_options: Optional[dict[str, Any]] = None
         ) -> partial.View:
    """A lazy view of the object saved in ``file``: only the header, the table of
    contents and the object stream are read. ``view["geoms"][3]`` goes down
    (a dict, list, tuple or instance is another view; ``.name`` for an
    attribute); an array or any other object is read when it is reached, and
    only its own sections. ``view.load()`` rebuilds a whole part. Close it with
    ``view.close()`` or a ``with`` block. The arguments are ``load``'s; nothing
    is imported before it is reached, and then only as ``load`` would."""
    options = pipeline.LoadOptions(Policy(trusted=trusted, allow=allow), bool(mmap), threads,
                                   max_depth)
    return partial.open_view(_local_or_remote(file, storage_options, mmap), options,
                             before_decode=_refuse_other_kinds)


def _local_or_remote(file: PathOrFile, storage_options: Optional[dict[str, Any]],
                     mmap: bool) -> Any:
    file = storage.locate(file, storage_options)
    if mmap and isinstance(file, storage.RemoteFile):
        raise ValueError(f"mmap=True maps a file on disk into memory, and {file.name} is "
                         f"remote: load it without mmap=True (it is read in byte ranges), "
                         f"or copy it to a local disk first")
    return file


def module_dump_of(header: dict[str, Any], toc: dict[str, Any]) -> Optional[str]:
    """The module's name if the file is a module dump (written by
    ``torpor.dump_module``), else None."""
    meta = header.get("metadata")
    if isinstance(meta, dict) and "torpor_module" in meta and "module" in toc:
        return str(meta.get("module"))
    return None


def _refuse_other_kinds(header: dict[str, Any], toc: dict[str, Any]) -> None:
    """Session files and module dumps hold torpor's own records: ``load`` points
    to the call that reads them."""
    if "session" in toc:
        raise FormatError(
            "this is a torpor session file (written by Session.save): restore it with "
            "torpor.Session(...).restore(file), or read its snapshot tree with "
            "torpor.open_session(file)")
    module = module_dump_of(header, toc)
    if module is not None:
        raise FormatError(
            f"this is a torpor module dump of module {module!r} (written by "
            f"torpor.dump_module), not a torpor.dump file: restore it with "
            f"torpor.load_module(file) (trusted=True if it holds code), or read its "
            f"variables without running anything with torpor.load_module_asdict(file)")


def loads(data: Any, **kw: Any) -> Any:
    """Like ``load``, from bytes (or any buffer)."""
    if kw.get("mmap"):
        raise ValueError("mmap=True needs a file on disk, not bytes")
    return load(io.BytesIO(data), **kw)


def info(file: PathOrFile, *, storage_options: Optional[dict[str, Any]] = None
         ) -> dict[str, Any]:
    """The header (with the user metadata) and the table of contents, without
    rebuilding anything; of a URL, read with two or three ranged requests
    whatever its size (``storage_options`` as for ``dump``). Returns a dict;
    each array section has ``mappable``
    (whether ``load(..., mmap=True)`` maps it rather than reading it), and
    ``mmap`` sums them up: ``{"arrays": array sections, "mappable": how many
    of them are mapped, "mappable_bytes": their size}``; ``module_dump`` is the
    module's name for a module dump (``torpor.dump_module``), else None."""
    header, toc = pipeline.inspect(storage.locate(file, storage_options))
    sections = describe_sections(toc["sections"])
    arrays = [s for s in sections if s["kind"] == "array"]
    mappable = [s for s in arrays if s["mappable"]]
    return {"header": header, "metadata": header.get("metadata", {}),
            "sections": sections, "globals": toc.get("globals", []),
            "objects": toc.get("memo"),
            "size": {"stored": sum(s["length"] for s in sections),
                     "raw": sum(s["raw_length"] for s in sections)},
            "mmap": {"arrays": len(arrays), "mappable": len(mappable),
                     "mappable_bytes": sum(s["raw_length"] for s in mappable)},
            "module_dump": module_dump_of(header, toc)}


def verify(file: PathOrFile, threads: Optional[int] = None, *,
           storage_options: Optional[dict[str, Any]] = None, progress: Any = None) -> int:
    """Read the whole file and check every checksum (header, each section's header
    and chunks, table of contents) without rebuilding any object. Returns the
    number of sections; raises CorruptFileError on the first damage found.
    ``storage_options``, ``progress``: as for ``load``."""
    threads = pipeline.check_threads(threads)
    progress_check(progress)                  # before the file is opened
    return pipeline.verify(storage.locate(file, storage_options), threads, progress=progress)


__all__ = ["dump", "dumps", "load", "loads", "open", "info", "verify", "TorporError"]
