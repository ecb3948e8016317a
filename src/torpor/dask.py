"""torpor as a Dask serialization family: ``import torpor.dask`` registers it as
``"torpor"`` with ``distributed``, and

    cluster = LocalCluster(preload=["torpor.dask"])     # registers it in the workers
    client = Client(cluster, serializers=torpor.dask.FAMILIES,
                    deserializers=torpor.dask.FAMILIES)

moves task results (between workers, and to the client) as torpor files cut into
Dask frames (``FAMILIES`` is ``["torpor", "dask", "pickle"]``). docs/DASK.md is the guide; how the frames are made:

- Sending: ``torpor.dump(obj, FrameSink(), compress=None)``. With ``compress=None``
  the writer hands the sink every array's (and large bytes object's) memory as
  views of that memory, and the object stream as fresh ``bytes``; the sink keeps
  those large writes by reference as frames (adjacent views of one array merged
  into one frame) and copies the small ones (section headers, padding, the table
  of contents) into byte frames between them. Joined, the frames are exactly
  the torpor file ``torpor.dump(obj, path, compress=None)`` writes.
- Receiving: ``torpor.load(FramesFile(frames))``, the frames read as one file
  without being joined: each array is copied once, from its frames into the
  array the reader allocates.

Nothing here is imported by ``import torpor``: only this module imports dask and
distributed.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Optional, Union, cast

import dask.config
import msgpack
import numpy as np
from dask.utils import parse_bytes
from distributed.protocol.serialize import register_serialization_family

from .api import dump, load
from .errors import FormatError, UnsafeLoadError, UnsupportedObjectError
from .storage.positioned import PositionedReader

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer as Buffer
    from distributed import Worker

__all__ = ["FAMILY", "FAMILIES", "configure", "settings", "serialize", "deserialize",
           "FrameSink", "FramesFile", "counters", "spill_buffer"]

#: The name of the family, as it goes in ``serializers=`` and ``deserializers=``.
FAMILY = "torpor"
#: The families to give the Client and the workers: torpor first, then Dask's
#: own, which take what torpor declines (objects it cannot save: see ``serialize``).
FAMILIES = [FAMILY, "dask", "pickle"]

#: Writes of at least this many bytes are kept by reference as frames of their
#: own; smaller ones are copied (a frame costs Dask a header entry, and on TCP a
#: buffer and a read of its own).
KEEP_MIN = 64 << 10

#: The header's ``format``: a torpor file in frames, or (for a plain scalar,
#: where a whole container would cost more than the value) one MessagePack frame.
CONTAINER, PLAIN = "container", "msgpack"
_PLAIN_TYPES = (type(None), bool, int, float, str, bytes)
_PLAIN_MAX = 64 << 10

#: The name received values go by in error messages.
SOURCE = "a value Dask received (torpor family)"

Frame = Union[bytes, memoryview]


# --- what a load allows --------------------------------------------------------------

def configure(*, allow: Optional[Iterable[Any]] = None, trusted: Optional[bool] = None) -> None:
    """Set what values received through the torpor family may rebuild, in this
    process: Dask config ``torpor.allow`` (``"module.qualname"`` strings, glob
    patterns such as ``"mypkg.*"``, or classes, kept as their names) and
    ``torpor.trusted`` (rebuild anything). Arguments left as None keep their value.

    Worker processes copy the Dask config when the cluster starts, so call this
    before; for workers already running, ``client.run(torpor.dask.configure,
    allow=[...])``. The environment works too (``DASK_TORPOR__ALLOW='["mypkg.*"]'``,
    ``DASK_TORPOR__TRUSTED=true``), for every process that inherits it."""
    new: dict[str, Any] = {}
    if allow is not None:
        new["torpor.allow"] = _allow_names(allow)
    if trusted is not None:
        if not isinstance(trusted, bool):
            raise TypeError(f"trusted must be True or False, not {trusted!r:.60}")
        new["torpor.trusted"] = trusted
    dask.config.set(new)


def _allow_names(allow: Iterable[Any]) -> list[str]:
    """``allow`` as names: the config must hold plain strings to reach worker
    processes and environment variables."""
    if isinstance(allow, str):
        allow = [allow]
    names = []
    for a in allow:
        if isinstance(a, str):
            names.append(a)
        elif isinstance(a, type) or callable(a):
            names.append(f"{a.__module__}.{a.__qualname__}")
        else:
            raise TypeError(f"allow takes 'module.qualname' strings, glob patterns such as "
                            f"'mypkg.models.*', or classes; got {type(a).__name__} {a!r:.60}")
    return names


def settings() -> tuple[list[str], bool]:
    """(allow, trusted) as this process's Dask config has them now, checked."""
    allow = dask.config.get("torpor.allow", default=None) or []
    trusted = dask.config.get("torpor.trusted", default=False)
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, (list, tuple)) or not all(isinstance(a, str) for a in allow):
        raise TypeError(f"Dask config torpor.allow must be a list of 'module.qualname' strings "
                        f"or glob patterns, not {allow!r:.100}")
    if not isinstance(trusted, bool):
        raise TypeError(f"Dask config torpor.trusted must be true or false, not {trusted!r:.60} "
                        f"(in the environment: DASK_TORPOR__TRUSTED=true)")
    return list(allow), trusted


# --- counters ------------------------------------------------------------------------

_lock = threading.Lock()
_counts = {"serialized": 0, "deserialized": 0, "declined": 0,
           "bytes_out": 0, "bytes_in": 0, "frames_out": 0, "frames_in": 0}


def _count(**add: int) -> None:
    with _lock:           # serialization runs on Dask's offload threads too
        for k, v in add.items():
            _counts[k] += v


def counters() -> dict[str, int]:
    """What the family did in this process: values ``serialized`` and
    ``deserialized``, ``declined`` (left to the next family), bytes and frames
    each way. ``client.run(torpor.dask.counters)`` asks every worker: a way to
    check that a cluster really uses torpor."""
    with _lock:
        return dict(_counts)


# --- sending -------------------------------------------------------------------------

def _address(view: memoryview) -> int:
    """Where the memory of a contiguous byte view starts."""
    return int(np.frombuffer(view, np.uint8).__array_interface__["data"][0])


class FrameSink:
    """A binary file object that keeps what is written to it as Dask frames:
    ``bytes`` and ``memoryview`` writes of at least ``keep_min`` bytes by
    reference (views of the same object that follow each other in memory merged
    into one frame of at most ``frame_max`` bytes), everything else copied into
    byte frames between them.

    Keeping a write by reference is right only if its memory is not changed
    afterwards. ``torpor.dump(..., compress=None)`` writes, as large pieces, only
    views of the saved arrays and bytes (or of copies made for that write, for
    arrays that are not contiguous) and fresh ``bytes`` of the object stream:
    nothing the writer reuses (its recycled buffers serve compressed chunks
    only, which is why ``serialize`` never compresses). tests/test_dask.py
    checks it on both walkers."""

    def __init__(self, keep_min: int = KEEP_MIN, frame_max: Optional[int] = None) -> None:
        self.keep_min = keep_min
        self.frame_max = frame_max if frame_max is not None else _shard_size()
        self.frames: list[Frame] = []
        self.nbytes = 0
        self._small: list[bytes] = []      # copies of small writes, the next byte frame
        self._run: list[memoryview] = []   # views being merged into one frame
        self._run_end = 0                  # address just past the run's last view
        self._run_bytes = 0

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        n = view.nbytes
        self.nbytes += n
        if n >= self.keep_min and isinstance(data, (bytes, memoryview)) and view.c_contiguous:
            self._end_small()
            self._keep(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
        else:
            self._end_run()
            self._small.append(view.tobytes())
        return n

    def close(self) -> list[Frame]:
        """The frames, once everything is written."""
        self._end_run()
        self._end_small()
        return self.frames

    def _keep(self, view: memoryview) -> None:
        start = _address(view)
        if self._run and view.obj is self._run[0].obj and start == self._run_end \
                and self._run_bytes + view.nbytes <= self.frame_max:
            self._run.append(view)
        else:
            self._end_run()
            self._run = [view]
            self._run_bytes = 0
        self._run_end = start + view.nbytes
        self._run_bytes += view.nbytes

    def _end_run(self) -> None:
        if self._run:
            self.frames.append(_merged(self._run, self._run_bytes))
            self._run = []

    def _end_small(self) -> None:
        if self._small:
            self.frames.append(b"".join(self._small))
            self._small = []


def _merged(views: list[memoryview], nbytes: int) -> memoryview:
    """One view over the adjacent ``views`` of one object, without copying (the
    object's own buffer, sliced); the views as they are joined if that buffer
    cannot be sliced so (never the case for arrays' memory)."""
    if len(views) == 1:
        return views[0]
    try:
        whole = memoryview(views[0].obj).cast("B")
        offset = _address(views[0]) - _address(whole)
        frame = whole[offset:offset + nbytes]
        if views[0].readonly and not frame.readonly:
            frame = frame.toreadonly()
        if offset >= 0 and frame.nbytes == nbytes:
            return frame
    except (TypeError, ValueError, BufferError):
        pass
    return memoryview(b"".join(views))


def _shard_size() -> int:
    """Dask cuts frames larger than ``distributed.comm.shard`` into shards, and on
    TCP receives each into a buffer of its own, then copies them together: frames
    of at most that size are received as they are."""
    shard = dask.config.get("distributed.comm.shard", default="64MiB")
    return int(parse_bytes(shard) if isinstance(shard, str) else shard)


def serialize(obj: Any, context: Optional[dict[str, Any]] = None
              ) -> tuple[dict[str, Any], list[Frame]]:
    """``(header, frames)`` for Dask: a plain scalar as one MessagePack frame,
    anything else as a torpor file in frames (arrays' memory by reference).
    An object torpor cannot save raises NotImplementedError, Dask's way of
    passing it to the next family (``"dask"``, ``"pickle"``)."""
    plain = _plain_frame(obj)
    if plain is not None:
        _count(serialized=1, bytes_out=len(plain), frames_out=1)
        return {"format": PLAIN}, [plain]
    sink = FrameSink()
    try:
        dump(obj, cast(BinaryIO, sink), compress=None, threads=1)
    except UnsupportedObjectError as e:
        _count(declined=1)
        raise NotImplementedError(f"torpor cannot save this object ({e}); the next "
                                  f"serialization family takes it") from e
    frames = sink.close()
    _count(serialized=1, bytes_out=sink.nbytes, frames_out=len(frames))
    return {"format": CONTAINER}, frames


def _plain_frame(obj: Any) -> Optional[bytes]:
    """A small None, bool, int, float, str or bytes packed with MessagePack (which
    gives back exactly these types), or None for anything else."""
    if type(obj) not in _PLAIN_TYPES or (type(obj) in (str, bytes) and len(obj) > _PLAIN_MAX):
        return None
    try:
        return bytes(msgpack.packb(obj, use_bin_type=True))
    except (OverflowError, ValueError):     # ints beyond 64 bits; lone surrogates
        return None


# --- receiving -----------------------------------------------------------------------

class FramesFile(PositionedReader):
    """The frames of one value read as one seekable binary file, without joining
    them: reads copy from the frames straight into the reader's buffers."""

    def __init__(self, frames: Sequence[Buffer], name: str = SOURCE) -> None:
        super().__init__()
        self.name = name
        self._views = []
        for f in frames:
            view = memoryview(f)
            if view.nbytes:
                self._views.append(view.cast("B") if view.format != "B" or view.ndim != 1
                                   else view)
        self._starts = []        # where each frame starts in the file
        size = 0
        for v in self._views:
            self._starts.append(size)
            size += v.nbytes
        self._size = size
        self._pos = 0

    def payload_view(self, offset: int, length: int) -> Optional[memoryview]:
        """The bytes ``offset`` to ``offset + length`` as a writable view of the one
        frame holding them all, or None (they span frames, or the frame is
        read-only): the reader then places a raw array over the received frame
        instead of copying it (pipeline.decode)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or length <= 0:
            return None
        view = self._views[i]
        at = offset - self._starts[i]
        if view.readonly or at + length > view.nbytes:
            return None
        return view[at:at + length]

    def readinto(self, buffer: Buffer) -> int:
        out = memoryview(buffer).cast("B")
        want = min(out.nbytes, max(0, self._size - self._pos))
        done = 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        while done < want:
            view = self._views[i]
            at = self._pos - self._starts[i]
            n = min(want - done, view.nbytes - at)
            out[done:done + n] = view[at:at + n]
            done += n
            self._pos += n
            i += 1
        return done

    def read(self, size: Optional[int] = -1) -> bytes:
        left = max(0, self._size - self._pos)
        n = left if size is None or size < 0 else min(size, left)
        i = bisect.bisect_right(self._starts, self._pos) - 1
        if n and self._pos + n <= self._starts[i] + self._views[i].nbytes:
            at = self._pos - self._starts[i]           # within one frame: one copy
            self._pos += n
            return self._views[i][at:at + n].tobytes()
        buf = bytearray(n)
        return bytes(buf[:self.readinto(buf)])


def deserialize(header: dict[str, Any], frames: Sequence[Buffer]) -> Any:
    """The value of ``serialize``'s ``(header, frames)``, loaded with the
    safe-loading settings of this process's Dask config (``settings``)."""
    fmt = header.get("format")
    nbytes = sum(memoryview(f).nbytes for f in frames)
    if fmt == PLAIN and len(frames) == 1:
        value = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
    elif fmt == CONTAINER:
        value = _load_container(frames)
    else:
        raise FormatError(f"{SOURCE}: unknown torpor frame format {fmt!r} in {len(frames)} "
                          f"frames; was it sent by a newer torpor? Use the same torpor "
                          f"version on the client and every worker")
    _count(deserialized=1, bytes_in=nbytes, frames_in=len(frames))
    return value


def _load_container(frames: Sequence[Buffer]) -> Any:
    allow, trusted = settings()
    try:
        return load(cast(BinaryIO, FramesFile(frames)), allow=allow, trusted=trusted, threads=1)
    except UnsafeLoadError as e:
        raise UnsafeLoadError(_refusal(e.names), e.names) from e


def _refusal(names: Sequence[str]) -> str:
    """What a refused load says in Dask: where to allow the names."""
    listed = ", ".join(repr(n) for n in names)
    if any(n.startswith("torpor.code.") for n in names):
        what = (f"{SOURCE} holds code saved by value (a lambda, or a function or class "
                f"defined inside a function), which loading would run; only "
                f"torpor.trusted=True loads it")
        how = "torpor.trusted: true"
    else:
        what = (f"{SOURCE} refers to {listed}, which torpor's safe loading will not "
                f"import or call")
        how = f"torpor.allow: [{listed}] (or torpor.trusted: true)"
    return (f"{what}. Allow it in the Dask config of every process that receives values "
            f"(the client and the workers): {how}, set before the cluster starts, or "
            f"torpor.dask.configure(...) in the client and "
            f"client.run(torpor.dask.configure, ...) on running workers (docs/DASK.md)")


# --- spilling to disk ----------------------------------------------------------------

def spill_buffer(worker_local_directory: str, target: Union[int, str],
                 max_spill: Union[int, str, Literal[False]] = False) -> Any:
    """A worker's data store that spills to disk through torpor: Dask's own
    ``SpillBuffer`` (same memory manager, metrics and limits) whose files are
    written with ``serialize`` and read back with ``deserialize``, trusted (the
    worker reads back what it wrote itself, in its own local directory, as
    Dask's pickle-based spilling does). Give it to the workers as
    ``data=(torpor.dask.spill_buffer, {"target": "2GiB"})``; ``target``: the
    bytes of values kept in memory before spilling (Dask computes it as
    memory_limit x distributed.worker.memory.target when it builds its own)."""
    from distributed.spill import SpillBuffer

    target = parse_bytes(target) if isinstance(target, str) else int(target)
    limit = parse_bytes(max_spill) if isinstance(max_spill, str) else max_spill
    buffer = SpillBuffer(f"{worker_local_directory}/storage", target=target, max_spill=limit)
    slow: Any = getattr(buffer.slow, "data", None)       # SpillBuffer: Cache(Slow(Func))
    if not (hasattr(slow, "dump") and hasattr(slow, "load")):
        raise RuntimeError(f"this distributed's SpillBuffer is not built as torpor.dask "
                           f"expects (its slow store {type(slow).__name__} has no dump and "
                           f"load): spill with Dask's own serialization (leave data= unset)")
    slow.dump = _spill_dump
    slow.load = _spill_load
    return buffer


def _spill_dump(value: Any) -> list[Frame]:
    """A spill file: the torpor file itself (the frames, written one after the
    other), so ``torpor.info`` and ``torpor.load`` read it as it is."""
    sink = FrameSink(frame_max=1 << 62)
    dump(value, cast(BinaryIO, sink), compress=None, threads=1)
    return sink.close()


def _spill_load(data: Buffer) -> Any:
    return load(cast(BinaryIO, FramesFile([data], name="a Dask spill file")), trusted=True,
                threads=1)


# --- registration --------------------------------------------------------------------

def dask_setup(worker: Worker) -> None:
    """Run by Dask when a worker preloads this module (``preload=["torpor.dask"]``,
    ``dask worker --preload torpor.dask``): a worker given no serializers of its
    own then asks other workers for torpor frames first (``FAMILIES``). A
    scheduler or a nanny preloading it only registers the family: neither
    deserializes values, and their connections keep Dask's defaults."""
    from distributed import Worker

    if not isinstance(worker, Worker):
        return
    rpc = worker.rpc
    if rpc.serializers is None:
        rpc.serializers = list(FAMILIES)
    if rpc.deserializers is None:
        rpc.deserializers = list(FAMILIES)


# distributed leaves this function without annotations: typed here for mypy --strict
_register = cast("Callable[[str, Callable[..., Any], Callable[..., Any]], None]",
                 register_serialization_family)
_register(FAMILY, serialize, deserialize)
