"""dump / load / dumps / loads / info / verify: the drop-in API."""

import contextlib
import gc
import io
import os
import tempfile

from . import _safety, _sink, container
from .errors import FormatError, TorporError
from .format import CODEC_BY_NAME, MAX_DEPTH

_COMPRESS_HELP = 'compress must be "lz4", "gzip" or None'


def _impl():
    from . import _impl as impl
    return impl


def _codec_of(compress):
    try:
        return CODEC_BY_NAME[compress]
    except (KeyError, TypeError):
        raise ValueError(f"{_COMPRESS_HELP}, not {compress!r}") from None


def _is_path(file):
    return isinstance(file, (str, os.PathLike))


def dump(obj, file, *, compress="lz4", threads=None, metadata=None, shuffle=True,
         level=0, max_depth=MAX_DEPTH):
    """Save ``obj`` to ``file`` (a path or a writable binary file object).

    Saving to a path is atomic: the data goes to a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``file`` only when complete.
    If anything fails the previous file is untouched and no temporary file remains.

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
    """
    _dump(obj, file, compress=compress, threads=threads, metadata=metadata, shuffle=shuffle,
          level=level, max_depth=max_depth)


def _dump(obj, file, *, compress="lz4", threads=None, metadata=None, shuffle=True, level=0,
          max_depth=MAX_DEPTH, reducer_override=None, toc_extra=None, file_mode=None):
    """dump() with the hooks the session layer needs: ``reducer_override`` (see
    fallback.Encoder) and ``toc_extra()``, a dict merged into the table of
    contents once the graph is written."""
    codec = _codec_of(compress)
    header = container.make_header(metadata, _impl().IMPLEMENTATION, codec)

    def write(f):
        _dump_to(obj, f, codec, threads, header, shuffle, level, max_depth,
                 reducer_override, toc_extra)

    if _is_path(file):
        _atomic_write(os.fspath(file), write, file_mode)
    else:
        if not hasattr(file, "write"):
            raise TypeError(f"file must be a path or a binary file object with write(), not {type(file).__name__}")
        write(file)


def _dump_to(obj, f, codec, threads, header, shuffle, level, max_depth,
             reducer_override=None, toc_extra=None):
    w = container.Writer(f, codec=codec, threads=threads, shuffle=shuffle, level=level)
    try:
        w.write_header(header)
        enc = _impl().Encoder(w, max_depth, reducer_override)
        with _gc_paused():
            enc.encode(obj)
        extra = {"globals": list(enc.globals), "memo": enc.n_memo}
        if toc_extra is not None:
            extra.update(toc_extra())
        w.finish(extra)
    finally:
        w.close()


@contextlib.contextmanager
def _gc_paused():
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


def _atomic_write(path, write, file_mode=None):
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".torpor-tmp", dir=folder)
    try:
        if file_mode is not None:
            mode = file_mode
        else:
            try:
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
        _sink.release_cached(path)           # see there: why, and what it saves
        try:
            with _sink.open_sink(fd) as f:     # see _sink for how it writes
                write(f)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def dumps(obj, **kw):
    """Like ``dump``, returning the file's bytes."""
    buf = io.BytesIO()
    dump(obj, buf, **kw)
    return buf.getvalue()


class _Opened:
    """Open a path (or take a file object) for reading, with a name for messages."""

    def __init__(self, file):
        self.file = file
        self.owned = _is_path(file)

    def __enter__(self):
        if self.owned:
            self.f = open(self.file, "rb")
            self.name = os.fspath(self.file)
        else:
            if not hasattr(self.file, "read"):
                raise TypeError(f"file must be a path or a binary file object with read(), not {type(self.file).__name__}")
            self.f = self.file
            self.name = getattr(self.file, "name", None) or "the stream"
            if not isinstance(self.name, str):
                self.name = "the stream"
        return self

    def __exit__(self, *exc):
        if self.owned:
            self.f.close()


def load(file, *, mmap=False, trusted=False, allow=(), threads=None, max_depth=MAX_DEPTH):
    """Load an object saved by ``dump`` from a path or a readable binary file object.

    By default only builtin, stdlib and numpy types are rebuilt; anything else in
    the file raises UnsafeLoadError before it is imported. ``allow`` adds classes
    by ``"module.qualname"`` or glob pattern (``"mypkg.models.*"``) or by the class
    itself; ``trusted=True`` rebuilds everything. ``mmap=True`` maps the raw array
    sections of a file saved with ``compress=None`` copy-on-write instead of
    reading them (their checksums are then checked by ``torpor.verify`` only)."""
    policy = _safety.Policy(trusted=trusted, allow=allow)
    with _Opened(file) as o:
        return _load_from(o.f, o.name, policy, mmap, threads, max_depth)


def _load_from(f, name, policy, mmap, threads, max_depth, before_decode=None):
    """Read and rebuild. ``before_decode(header, toc)`` runs once both are known
    and before any object is rebuilt (for a stream: after its last section)."""
    src = container.open_source(f, name)
    header = container.read_header(src)
    toc = None
    mm = None
    if before_decode is None:
        before_decode = _refuse_session
    if src.size is not None:
        toc = container.read_toc(src)
        before_decode(header, toc)
        globals_ = toc.get("globals", [])
        if isinstance(globals_, list) and all(isinstance(g, str) for g in globals_):
            policy.check_all(globals_, name)        # name every refused class at once
        if mmap:
            try:
                mm = container.map_file(f)
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation) as e:
                raise FormatError(f"mmap=True needs a real file on disk; {name} cannot be mapped ({e})") from None
    elif mmap:
        raise FormatError(f"mmap=True needs a seekable file on disk; {name} is a stream")
    reader = container.Reader(src, threads=threads, mmap=mm)
    try:
        stream, payloads, _, toc2 = reader.read_all(toc)
    finally:
        reader.close()
    if toc is None:
        before_decode(header, toc2)
    dec = _impl().Decoder(policy, payloads, max_depth)
    with _gc_paused():
        return dec.decode(stream)


def _refuse_session(header, toc):
    if "session" in toc:
        raise FormatError(
            "this is a torpor session file (written by Session.save): restore it with "
            "torpor.Session(...).restore(file), or read its snapshot tree with "
            "torpor.open_session(file)")


def loads(data, **kw):
    """Like ``load``, from bytes (or any buffer)."""
    if kw.get("mmap"):
        raise ValueError("mmap=True needs a file on disk, not bytes")
    return load(io.BytesIO(data), **kw)


def info(file):
    """The header (with the user metadata) and the table of contents, without
    rebuilding anything. Returns a dict."""
    with _Opened(file) as o:
        src = container.open_source(o.f, o.name)
        header = container.read_header(src)
        if src.size is not None:
            toc = container.read_toc(src)
        else:
            reader = container.Reader(src, threads=1)
            *_, toc = reader.read_all()
            reader.close()
    sections = container.describe_sections(toc["sections"])
    return {"header": header, "metadata": header.get("metadata", {}),
            "sections": sections, "globals": toc.get("globals", []),
            "objects": toc.get("memo"),
            "size": {"stored": sum(s["length"] for s in sections),
                     "raw": sum(s["raw_length"] for s in sections)}}


def verify(file, threads=None):
    """Read the whole file and check every checksum (header, each section's header
    and chunks, table of contents) without rebuilding any object. Returns the
    number of sections; raises CorruptFileError on the first damage found."""
    with _Opened(file) as o:
        src = container.open_source(o.f, o.name)
        container.read_header(src)
        toc = container.read_toc(src) if src.size is not None else None
        reader = container.Reader(src, threads=threads)
        try:
            _, _, entries, _ = reader.read_all(toc)
        finally:
            reader.close()
    return len(entries)


__all__ = ["dump", "dumps", "load", "loads", "info", "verify", "TorporError"]
