"""The file sinks of atomic saves (torpor.storage.sinks): buffered with blocks allocated
ahead, or staged and direct; byte-exact whatever the write sizes, and safe when a
write fails."""

import errno
import os
import threading
import time

import numpy as np
import pytest

import torpor
from torpor.storage import sinks as _sink

SMALL_STAGE = 16 * _sink.BLOCK


@pytest.fixture
def small_stages(monkeypatch):
    """Stages of 64 KiB, so a few hundred KiB cross many stage boundaries."""
    monkeypatch.setattr(_sink, "STAGE_SIZE", SMALL_STAGE)


def _pieces(seed, total):
    rng = np.random.default_rng(seed)
    out, n = [], 0
    while n < total:
        k = int(rng.choice([0, 1, 7, 4095, 4096, 4097, 50_000, SMALL_STAGE, 3 * SMALL_STAGE + 5]))
        out.append(rng.integers(0, 256, k, dtype=np.uint8))
        n += k
    return out


def _write(path, pieces, **kw):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with _sink.open_sink(fd, **kw) as s:
            for p in pieces:
                assert s.write(p) == p.nbytes
        return s
    finally:
        os.close(fd)


def _direct_possible(folder):
    """Whether this filesystem takes an O_DIRECT write of one aligned block."""
    if not _sink.direct_io_enabled():
        return False
    import mmap
    path = os.path.join(folder, "probe")
    buf = mmap.mmap(-1, _sink.BLOCK)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | _sink._O_DIRECT, 0o644)
    except OSError:
        return False
    try:
        os.write(fd, buf)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(path)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bytes_are_exact(tmp_path, small_stages, direct, seed):
    pieces = _pieces(seed, 40 * SMALL_STAGE)
    p = tmp_path / "s.bin"
    s = _write(p, pieces, direct=direct)
    assert p.read_bytes() == b"".join(x.tobytes() for x in pieces)
    assert s.pos == sum(x.nbytes for x in pieces)
    if not direct:
        assert s.direct_bytes == 0


def test_non_byte_views_are_written_as_bytes(tmp_path, small_stages):
    a = np.arange(100_000, dtype=np.float64).reshape(100, 1000)
    rec = np.zeros(5000, dtype=[("x", "<f4"), ("n", ">i8", (2,))])
    rec["n"] = np.arange(10_000).reshape(5000, 2)
    p = tmp_path / "a.bin"
    _write(p, [a, memoryview(rec), a[3]])
    assert p.read_bytes() == a.tobytes() + rec.tobytes() + a[3].tobytes()


def test_direct_io_used_where_the_filesystem_takes_it(tmp_path, small_stages, monkeypatch):
    pieces = _pieces(3, 10 * SMALL_STAGE)
    assert isinstance(_write(tmp_path / "b.bin", pieces), _sink.BufferedSink)   # the default
    monkeypatch.setenv("TORPOR_DIRECT_IO", "1")
    s = _write(tmp_path / "d.bin", pieces)
    total = sum(x.nbytes for x in pieces)
    if _direct_possible(str(tmp_path)):
        # every whole stage went straight to the disk; only the tail (< one block) did not
        assert s.direct_bytes == total - total % _sink.BLOCK
    else:
        assert s.direct_bytes == 0
    assert (tmp_path / "d.bin").read_bytes() == b"".join(x.tobytes() for x in pieces)
    monkeypatch.setenv("TORPOR_DIRECT_IO", "0")
    assert _write(tmp_path / "e.bin", pieces).direct_bytes == 0


def test_small_file_is_one_plain_write(tmp_path):
    calls = []
    real = os.write

    def counting(fd, data):
        calls.append(len(data))
        return real(fd, data)
    p = tmp_path / "small.bin"
    pieces = [np.frombuffer(b"x" * 1000, np.uint8), np.frombuffer(b"y" * 5000, np.uint8)]
    os_write = _sink.os.write
    _sink.os.write = counting
    try:
        s = _write(p, pieces, direct=True)
    finally:
        _sink.os.write = os_write
    assert calls == [6000] and s.direct_bytes == 0 and s._thread is None
    assert p.read_bytes() == b"x" * 1000 + b"y" * 5000


class _FakeDirect:
    """Pretends O_DIRECT is on (on any filesystem) and makes os.write refuse or cut
    short the writes made while it is."""

    def __init__(self, monkeypatch, refuse=None, short=None):
        self.sinks = []
        real_write = os.write

        def set_direct(sink, on):
            sink.direct = on

        def write(fd, data):
            sink = self.sinks[0]
            if sink.direct and refuse is not None:
                raise OSError(refuse, os.strerror(refuse))
            if sink.direct and short is not None:
                return real_write(fd, bytes(data)[:short])
            return real_write(fd, data)
        monkeypatch.setattr(_sink.DirectSink, "_set_direct", set_direct)
        monkeypatch.setattr(_sink.os, "write", write)
        real_init = _sink.DirectSink.__init__

        def init(sink, fd):
            real_init(sink, fd)
            self.sinks.append(sink)
        monkeypatch.setattr(_sink.DirectSink, "__init__", init)


def test_refused_direct_write_goes_on_buffered(tmp_path, small_stages, monkeypatch):
    _FakeDirect(monkeypatch, refuse=errno.EINVAL)
    pieces = _pieces(4, 12 * SMALL_STAGE)
    s = _write(tmp_path / "r.bin", pieces, direct=True)
    assert s.direct_bytes == 0 and not s.direct
    assert (tmp_path / "r.bin").read_bytes() == b"".join(x.tobytes() for x in pieces)


def test_unaligned_short_direct_write_goes_on_buffered(tmp_path, small_stages, monkeypatch):
    _FakeDirect(monkeypatch, short=1000)
    pieces = _pieces(5, 12 * SMALL_STAGE)
    s = _write(tmp_path / "u.bin", pieces, direct=True)
    assert s.direct_bytes == 1000        # the short write; then the offset was unaligned
    assert (tmp_path / "u.bin").read_bytes() == b"".join(x.tobytes() for x in pieces)


def _io_threads():
    return [t for t in threading.enumerate() if t.name == "torpor-io"]


@pytest.fixture
def file_size_limit():
    """Writes past ``limit`` bytes fail in the kernel, as on a full disk (EFBIG from
    RLIMIT_FSIZE, with SIGXFSZ ignored): the real write path of either sink."""
    resource = pytest.importorskip("resource")
    import signal
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(n):
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limit[1]))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("direct", ["0", "1"])
def test_full_disk_keeps_old_file(tmp_path, small_stages, monkeypatch, impl, direct, file_size_limit):
    monkeypatch.setenv("TORPOR_DIRECT_IO", direct)
    p = tmp_path / "keep.torpor"
    torpor.dump({"v": 1}, p)
    before = p.read_bytes()
    big = np.random.default_rng(0).random(400_000)     # 3 MiB, hardly compressible
    file_size_limit(5 * SMALL_STAGE)
    try:
        with pytest.raises(OSError) as e:
            torpor.dump({"v": 2, "big": big}, p)
        assert e.value.errno in (errno.EFBIG, errno.ENOSPC)
        assert p.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["keep.torpor"]
        assert _io_threads() == []
        # a small file that fails in its last write behaves the same
        file_size_limit(100)
        with pytest.raises(OSError):
            torpor.dump({"v": 3, "pad": "x" * 1000}, p)
        assert p.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["keep.torpor"]
    finally:
        file_size_limit(-1)


def test_write_error_on_the_io_thread_is_raised(tmp_path, small_stages, monkeypatch):
    monkeypatch.setenv("TORPOR_DIRECT_IO", "1")
    p = tmp_path / "io.torpor"
    real = os.write
    seen = []

    def write(fd, data):
        seen.append(threading.current_thread().name)
        if len(seen) > 3:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, data)
    monkeypatch.setattr(_sink.os, "write", write)
    with pytest.raises(OSError) as e:
        torpor.dump(np.random.default_rng(1).random(400_000), p)
    assert e.value.errno == errno.EIO and "torpor-io" in seen
    assert os.listdir(tmp_path) == [] and _io_threads() == []


def test_write_error_found_when_the_save_ends_stops_the_io_thread(tmp_path, small_stages, monkeypatch):
    """The I/O thread fails on a stage while the writer fills the last one: close
    raises the error, and the thread (waiting for more) is stopped too."""
    monkeypatch.setenv("TORPOR_DIRECT_IO", "1")
    p = tmp_path / "late.torpor"
    real_close = _sink.DirectSink.close

    def slow_close(self):
        time.sleep(0.3)                  # the I/O thread fails meanwhile
        return real_close(self)

    def write(fd, data):
        if threading.current_thread().name == "torpor-io":
            raise OSError(errno.ENOSPC, "No space left on device")
        return os_write(fd, data)
    os_write = os.write
    monkeypatch.setattr(_sink.DirectSink, "close", slow_close)
    monkeypatch.setattr(_sink.os, "write", write)
    with pytest.raises(OSError) as e:
        torpor.dump(np.random.default_rng(2).random(SMALL_STAGE // 8 + 100), p, compress=None)
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == [] and _io_threads() == []


class _Interrupt:
    def __reduce__(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize("direct", ["0", "1"])
def test_interrupt_after_stages_were_written(tmp_path, small_stages, impl, monkeypatch, direct):
    monkeypatch.setenv("TORPOR_DIRECT_IO", direct)
    p = tmp_path / "k.torpor"
    torpor.dump([1, 2], p)
    before = p.read_bytes()
    arrays = [np.random.default_rng(i).random(100_000) for i in range(8)]
    with pytest.raises(KeyboardInterrupt):
        torpor.dump([*arrays, _Interrupt()], p)
    assert p.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["k.torpor"]
    assert _io_threads() == []


@pytest.mark.parametrize("direct", ["0", "1"])
@pytest.mark.parametrize("compress", ["lz4", None])
def test_path_round_trip_through_sinks(tmp_path, small_stages, impl, compress, monkeypatch, direct):
    monkeypatch.setenv("TORPOR_DIRECT_IO", direct)
    from torpor.engine import pipeline
    make_header = pipeline.make_header

    def fixed_time(*a):
        return dict(make_header(*a), created="2026-01-01T00:00:00.000000+00:00")
    monkeypatch.setattr(pipeline, "make_header", fixed_time)
    rng = np.random.default_rng(7)
    obj = {"a": rng.random((300, 301)), "b": np.arange(123_457, dtype=np.int32), "s": "x" * 10_001,
           "c": np.linspace(0, 1, 99_999).astype(np.float32)}
    p = tmp_path / "rt.torpor"
    torpor.dump(obj, p, compress=compress)
    # the same bytes as a dump into memory, which never goes through the sink
    assert p.read_bytes() == torpor.dumps(obj, compress=compress)
    back = torpor.load(p)
    for k in ("a", "b", "c"):
        assert back[k].dtype == obj[k].dtype and back[k].shape == obj[k].shape
        assert np.array_equal(back[k], obj[k]) and back[k].flags.writeable
    assert back["s"] == obj["s"]
    if compress is None:
        mapped = torpor.load(p, mmap=True)
        assert np.array_equal(mapped["a"], obj["a"])


def test_blocks_allocated_ahead_are_given_back(tmp_path, monkeypatch):
    """The buffered sink allocates 64 MiB ahead (here 1 MiB): the file ends at its
    length, whatever was allocated, and the allocated blocks past it are freed."""
    monkeypatch.setattr(_sink, "PREALLOC_STEP", 1 << 20)
    calls = []
    real = _sink.iohints.prealloc

    def prealloc(fd, offset, n):
        calls.append((offset, n))
        return real(fd, offset, n) if real is not None else -1
    monkeypatch.setattr(_sink.iohints, "prealloc", prealloc)
    pieces = _pieces(6, 2_500_000)
    p = tmp_path / "pre.bin"
    s = _write(p, pieces, direct=False)
    total = sum(x.nbytes for x in pieces)
    if real is not None:
        assert calls[:3] == [(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 1 << 20)]
    else:                                  # no fallocate here: tried once, then not again
        assert calls == [(0, 1 << 20)] and not s._prealloc
    assert os.path.getsize(p) == total == s.pos
    assert p.read_bytes() == b"".join(x.tobytes() for x in pieces)
    if real is not None and _fallocate_works(real, tmp_path / "probe"):
        # blocks allocated past the end were released by the final truncate
        assert os.stat(p).st_blocks * 512 < total + (64 << 10)


def test_without_preallocation_the_file_is_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(_sink.iohints, "prealloc", lambda fd, offset, n: 95)   # EOPNOTSUPP
    pieces = _pieces(8, 1_000_000)
    s = _write(tmp_path / "np.bin", pieces, direct=False)
    assert not s._prealloc
    assert (tmp_path / "np.bin").read_bytes() == b"".join(x.tobytes() for x in pieces)


def _fallocate_works(prealloc, path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return prealloc(fd, 0, 4096) == 0
    finally:
        os.close(fd)


def _cached(fd, n):
    """Whether the first ``n`` bytes of ``fd`` are in the page cache (a read that
    may not wait for the disk); None where the system cannot tell."""
    if not hasattr(os, "RWF_NOWAIT"):
        return None
    buf = bytearray(n)
    try:
        return os.preadv(fd, [buf], 0, os.RWF_NOWAIT) == n
    except BlockingIOError:
        return False
    except OSError:
        return None


def _drop_is_visible(folder):
    """Whether this file system drops clean pages on POSIX_FADV_DONTNEED and lets a
    test see it (tmpfs keeps them; some kernels cannot report it)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    probe = folder / "probe.bin"
    probe.write_bytes(b"x" * (1 << 16))
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.read(fd, 1 << 16)
        if not _cached(fd, 4096):
            return False
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return _cached(fd, 4096) is False
    finally:
        os.close(fd)
        probe.unlink()


def test_save_releases_the_cache_of_the_file_it_replaces(tmp_path, monkeypatch):
    p = tmp_path / "old.torpor"
    torpor.dump(np.arange(300_000), p)
    visible = _drop_is_visible(tmp_path)
    old = os.open(p, os.O_RDONLY)          # the old inode, kept past the rename
    try:
        os.fsync(old)                        # dirty pages are never dropped: make them clean
        os.read(old, 1 << 20)                # now cached
        calls = []
        real = os.posix_fadvise if hasattr(os, "posix_fadvise") else None

        def fadvise(fd, offset, n, advice):
            calls.append((os.fstat(fd).st_ino, advice))
            return real(fd, offset, n, advice)
        if real is not None:
            monkeypatch.setattr(os, "posix_fadvise", fadvise)
        before = _cached(old, 4096)
        torpor.dump(np.arange(10), p)
        assert np.array_equal(torpor.load(p), np.arange(10))
        if real is None:
            return                             # no fadvise here: nothing is released
        assert calls == [(os.fstat(old).st_ino, os.POSIX_FADV_DONTNEED)]
        if before and visible:                 # the system can tell: it was, and is no more
            assert _cached(old, 4096) is False
        # a first save (nothing to replace) advises nothing
        calls.clear()
        torpor.dump(1, tmp_path / "new.torpor")
        assert calls == []
    finally:
        os.close(old)


@pytest.mark.parametrize("direct", [False, True])
def test_writeback_starts_every_step(tmp_path, small_stages, monkeypatch, direct):
    """Every WRITEBACK_STEP bytes written through the page cache, the kernel is asked
    to start writing them back, each range once and in order."""
    monkeypatch.setattr(_sink, "WRITEBACK_STEP", 3 * SMALL_STAGE)
    real = _sink.iohints.start_writeback
    calls = []
    if real is not None:
        monkeypatch.setattr(_sink.iohints, "start_writeback",
                            lambda fd, offset, n: calls.append((offset, n)) or real(fd, offset, n))
    if direct:
        monkeypatch.setattr(_sink.DirectSink, "_set_direct", lambda sink, on: None)  # stays buffered
    pieces = _pieces(9, 20 * SMALL_STAGE)
    p = tmp_path / "wb.bin"
    _write(p, pieces, direct=direct)
    assert p.read_bytes() == b"".join(x.tobytes() for x in pieces)
    if real is None:
        assert calls == []
        return
    assert len(calls) >= 5 and calls[0][0] == 0
    assert all(n >= 3 * SMALL_STAGE for _, n in calls)
    assert all(a + n == b for (a, n), (b, _) in zip(calls, calls[1:]))
