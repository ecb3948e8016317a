import io
import subprocess
import sys
import textwrap
import time

import numpy as np


def assert_same_array(a, b):
    """Values, type, dtype, shape, order and writeability must all match."""
    assert type(b) is np.ndarray
    assert b.dtype == a.dtype, (a.dtype, b.dtype)
    assert b.dtype.itemsize == a.dtype.itemsize
    assert b.shape == a.shape
    if a.dtype.kind == "f" or a.dtype.kind == "c":
        np.testing.assert_array_equal(a, b)
    else:
        assert a.tobytes() == np.ascontiguousarray(b).tobytes()
    if a.flags.c_contiguous or a.flags.f_contiguous:
        assert b.flags.c_contiguous == a.flags.c_contiguous
        assert b.flags.f_contiguous == a.flags.f_contiguous
    else:
        assert b.flags.c_contiguous
    assert b.flags.writeable


class Pipe(io.RawIOBase):
    """A non-seekable stream, like a pipe or a socket: reads come in pieces of at
    most ``piece`` bytes, writes are collected in ``out``."""

    def __init__(self, data=b"", piece=1 << 30):
        self.b = io.BytesIO(data)
        self.piece = piece
        self.out = bytearray()

    def readable(self):
        return True

    def writable(self):
        return True

    def readinto(self, mv):
        chunk = self.b.read(min(len(mv), self.piece))
        mv[:len(chunk)] = chunk
        return len(chunk)

    def write(self, data):
        self.out += data
        return len(memoryview(data))


def load_in_subprocess(path, env):
    """torpor.load ``path`` (safe) in a fresh interpreter, so a crash fails one
    test: what it printed ("refused: <message>" or "loaded")."""
    code = textwrap.dedent(f"""
        import torpor
        try:
            torpor.load({str(path)!r})
        except torpor.UnsafeLoadError as e:
            print("refused:", str(e)[:300])
        else:
            print("loaded")
    """)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, f"the load crashed (exit {p.returncode}): {p.stderr[-2000:]}"
    return p.stdout


def flip_middle_bytes(key, store=None):
    """Damage the data at ``key`` (a path, or a key of ``store``): invert 4 bytes
    in its middle, so a checksum no longer matches."""
    from torpor import storage as st
    with st.reading(key, store=store) as (f, _):
        data = bytearray(f.read())
    mid = len(data) // 2
    data[mid:mid + 4] = bytes(x ^ 0xFF for x in data[mid:mid + 4])
    with st.writing(key, store=store) as w:
        w.write(bytes(data))


def gone(pid):
    """Whether process ``pid`` has ended (a zombie nobody reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.01)
    return False


def down_the_last_items(data):
    """``torpor.open`` a file's bytes and follow its last items down, loading the
    first thing that is not a view (the ``select`` fuzz target and its replay)."""
    import torpor
    with torpor.open(io.BytesIO(data)) as view:
        for _ in range(8):
            if view.kind == "dict":
                keys = view.keys()
                item = view[keys[-1]] if keys else None
            elif view.kind in ("list", "tuple"):
                item = view[len(view) - 1] if len(view) else None
            else:
                item = view.load()
            if type(item) is not type(view):
                return
            view = item


def with_format_version(data, version):
    """A torpor file's bytes with the preamble's u16 format version set to
    ``version`` and the header checksum made to match, as a file written that
    way would be (not damage: the checksum holds)."""
    import struct
    from torpor.format.codec import checksum
    out = bytearray(data)
    hlen = struct.unpack_from("<I", out, 12)[0]
    struct.pack_into("<H", out, 8, version)
    struct.pack_into("<Q", out, 16 + hlen, checksum(bytes(out[:16 + hlen])))
    return bytes(out)
