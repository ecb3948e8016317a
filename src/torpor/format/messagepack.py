"""Pure-Python MessagePack primitives.

Used for the small plain documents of the container (header, section meta, table
of contents) and by the pure-Python walker. Only the subset torpor writes is
produced; the reader accepts every MessagePack type and bounds every length by
the bytes it was given, so a hostile length can never make it allocate more than
the input holds.
"""

import os
import struct

from ..errors import CorruptFileError, FormatError

try:
    # msgpack's C unpacker reads the plain documents (header, section meta, table
    # of contents) some 20x faster than the reader below, which matters when a
    # file with hundreds of sections is memory-mapped in milliseconds. It bounds
    # every count by the input (max_*_len default to the buffer's length).
    if os.environ.get("TORPOR_PUREPYTHON"):
        raise ImportError("TORPOR_PUREPYTHON is set")
    import msgpack as _cmsgpack
except ImportError:
    _cmsgpack = None

_pack_B = struct.Struct(">B").pack
_pack_H = struct.Struct(">H").pack
_pack_I = struct.Struct(">I").pack
_pack_Q = struct.Struct(">Q").pack
_pack_b = struct.Struct(">b").pack
_pack_h = struct.Struct(">h").pack
_pack_i = struct.Struct(">i").pack
_pack_q = struct.Struct(">q").pack
_pack_d = struct.Struct(">d").pack
_unpack_H = struct.Struct(">H").unpack_from
_unpack_I = struct.Struct(">I").unpack_from
_unpack_Q = struct.Struct(">Q").unpack_from
_unpack_b = struct.Struct(">b").unpack_from
_unpack_h = struct.Struct(">h").unpack_from
_unpack_i = struct.Struct(">i").unpack_from
_unpack_q = struct.Struct(">q").unpack_from
_unpack_f = struct.Struct(">f").unpack_from
_unpack_d = struct.Struct(">d").unpack_from


# --- writing -------------------------------------------------------------------

def pack_nil(out):
    out.append(0xC0)


def pack_bool(out, v):
    out.append(0xC3 if v else 0xC2)


def pack_int(out, v):
    """Append an int that fits in 64 bits (callers route larger ones elsewhere)."""
    if 0 <= v < 0x80:
        out.append(v)
    elif -32 <= v < 0:
        out.append(v & 0xFF)
    elif v >= 0:
        if v <= 0xFF:
            out += b"\xcc" + _pack_B(v)
        elif v <= 0xFFFF:
            out += b"\xcd" + _pack_H(v)
        elif v <= 0xFFFFFFFF:
            out += b"\xce" + _pack_I(v)
        else:
            out += b"\xcf" + _pack_Q(v)
    elif v >= -0x80:
        out += b"\xd0" + _pack_b(v)
    elif v >= -0x8000:
        out += b"\xd1" + _pack_h(v)
    elif v >= -0x80000000:
        out += b"\xd2" + _pack_i(v)
    else:
        out += b"\xd3" + _pack_q(v)


def pack_float(out, v):
    out += b"\xcb" + _pack_d(v)


def pack_str_bytes(out, b):
    """Append a str whose utf-8 encoding is ``b``."""
    n = len(b)
    if n < 32:
        out.append(0xA0 | n)
    elif n <= 0xFF:
        out += b"\xd9" + _pack_B(n)
    elif n <= 0xFFFF:
        out += b"\xda" + _pack_H(n)
    else:
        out += b"\xdb" + _pack_I(n)
    out += b


def pack_bin(out, b):
    n = len(b)
    if n <= 0xFF:
        out += b"\xc4" + _pack_B(n)
    elif n <= 0xFFFF:
        out += b"\xc5" + _pack_H(n)
    else:
        out += b"\xc6" + _pack_I(n)
    out += b


def pack_array_header(out, n):
    if n < 16:
        out.append(0x90 | n)
    elif n <= 0xFFFF:
        out += b"\xdc" + _pack_H(n)
    else:
        out += b"\xdd" + _pack_I(n)


def pack_map_header(out, n):
    if n < 16:
        out.append(0x80 | n)
    elif n <= 0xFFFF:
        out += b"\xde" + _pack_H(n)
    else:
        out += b"\xdf" + _pack_I(n)


def pack_ext(out, code, data):
    n = len(data)
    if n == 1:
        out += b"\xd4" + _pack_B(code)
    elif n == 2:
        out += b"\xd5" + _pack_B(code)
    elif n == 4:
        out += b"\xd6" + _pack_B(code)
    elif n == 8:
        out += b"\xd7" + _pack_B(code)
    elif n == 16:
        out += b"\xd8" + _pack_B(code)
    elif n <= 0xFF:
        out += b"\xc7" + _pack_B(n) + _pack_B(code)
    elif n <= 0xFFFF:
        out += b"\xc8" + _pack_H(n) + _pack_B(code)
    else:
        out += b"\xc9" + _pack_I(n) + _pack_B(code)
    out += data


def uint_payload(v):
    """The shortest of 1, 2, 4 or 8 big-endian bytes holding the unsigned ``v``."""
    if v <= 0xFF:
        return _pack_B(v)
    if v <= 0xFFFF:
        return _pack_H(v)
    if v <= 0xFFFFFFFF:
        return _pack_I(v)
    return _pack_Q(v)


def read_uint_payload(data):
    n = len(data)
    if n == 1:
        return data[0]
    if n == 2:
        return _unpack_H(data)[0]
    if n == 4:
        return _unpack_I(data)[0]
    if n == 8:
        return _unpack_Q(data)[0]
    raise CorruptFileError(f"an index extension has a payload of {n} bytes; expected 1, 2, 4 or 8")


def packb(obj, _depth=0):
    """Encode a plain document (None, bool, int, float, str, bytes, list, tuple,
    dict) the way the header, section meta and table of contents are stored."""
    out = bytearray()
    _pack_plain(out, obj, 0)
    return bytes(out)


def _pack_plain(out, obj, depth):
    if depth > 64:
        raise FormatError("a metadata document is nested more than 64 levels deep")
    t = type(obj)
    if obj is None:
        pack_nil(out)
    elif t is bool:
        pack_bool(out, obj)
    elif t is int:
        if not -(1 << 63) <= obj < (1 << 64):
            raise FormatError(f"metadata integer {obj} does not fit in 64 bits")
        pack_int(out, obj)
    elif t is float:
        pack_float(out, obj)
    elif t is str:
        pack_str_bytes(out, obj.encode("utf-8"))
    elif t is bytes:
        pack_bin(out, obj)
    elif t is list or t is tuple:
        pack_array_header(out, len(obj))
        for x in obj:
            _pack_plain(out, x, depth + 1)
    elif t is dict:
        pack_map_header(out, len(obj))
        for k, v in obj.items():
            _pack_plain(out, k, depth + 1)
            _pack_plain(out, v, depth + 1)
    else:
        raise FormatError(
            f"metadata may hold only None, bool, int, float, str, bytes, list, tuple "
            f"and dict values, not {t.__module__}.{t.__qualname__}; convert it (for "
            f"example to str) before passing it as metadata")


# --- reading -------------------------------------------------------------------

class TokenReader:
    """Reads MessagePack items from ``data`` starting at ``pos``.

    Every length is checked against the bytes that remain, so truncated or hostile
    input raises CorruptFileError and never allocates beyond the input size."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data, pos=0, end=None, what="stream"):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    def fail(self, msg):
        raise CorruptFileError(f"{self.what} is corrupt at byte {self.pos}: {msg}")

    def take(self, n):
        p = self.pos
        if n > self.end - p:
            self.fail(f"needs {n} more bytes but only {self.end - p} remain (truncated?)")
        self.pos = p + n
        return self.data[p:p + n]

    def remaining(self):
        return self.end - self.pos

    def next_token(self):
        """Read one token: returns (kind, value) where kind is one of
        'v' (a complete scalar value), 'a' (array header, value = count),
        'm' (map header, value = count), 'x' (extension, value = (code, bytes))."""
        data = self.data
        p = self.pos
        if p >= self.end:
            self.fail("unexpected end of data (truncated?)")
        b = data[p]
        self.pos = p + 1
        if b <= 0x7F:
            return "v", b
        if b >= 0xE0:
            return "v", b - 0x100
        if 0xA0 <= b <= 0xBF:
            return "v", self._str(b & 0x1F)
        if 0x90 <= b <= 0x9F:
            return "a", self._count(b & 0x0F, 1)
        if 0x80 <= b <= 0x8F:
            return "m", self._count(b & 0x0F, 2)
        if b == 0xC0:
            return "v", None
        if b == 0xC2:
            return "v", False
        if b == 0xC3:
            return "v", True
        if b == 0xCC:
            return "v", self.take(1)[0]
        if b == 0xCD:
            return "v", _unpack_H(self.take(2))[0]
        if b == 0xCE:
            return "v", _unpack_I(self.take(4))[0]
        if b == 0xCF:
            return "v", _unpack_Q(self.take(8))[0]
        if b == 0xD0:
            return "v", _unpack_b(self.take(1))[0]
        if b == 0xD1:
            return "v", _unpack_h(self.take(2))[0]
        if b == 0xD2:
            return "v", _unpack_i(self.take(4))[0]
        if b == 0xD3:
            return "v", _unpack_q(self.take(8))[0]
        if b == 0xCA:
            return "v", _unpack_f(self.take(4))[0]
        if b == 0xCB:
            return "v", _unpack_d(self.take(8))[0]
        if b == 0xD9:
            return "v", self._str(self.take(1)[0])
        if b == 0xDA:
            return "v", self._str(_unpack_H(self.take(2))[0])
        if b == 0xDB:
            return "v", self._str(_unpack_I(self.take(4))[0])
        if b == 0xC4:
            return "v", bytes(self.take(self.take(1)[0]))
        if b == 0xC5:
            return "v", bytes(self.take(_unpack_H(self.take(2))[0]))
        if b == 0xC6:
            return "v", bytes(self.take(_unpack_I(self.take(4))[0]))
        if b == 0xDC:
            return "a", self._count(_unpack_H(self.take(2))[0], 1)
        if b == 0xDD:
            return "a", self._count(_unpack_I(self.take(4))[0], 1)
        if b == 0xDE:
            return "m", self._count(_unpack_H(self.take(2))[0], 2)
        if b == 0xDF:
            return "m", self._count(_unpack_I(self.take(4))[0], 2)
        if 0xD4 <= b <= 0xD8:
            n = 1 << (b - 0xD4)
            code = self.take(1)[0]
            return "x", (code, self.take(n))
        if b == 0xC7:
            n = self.take(1)[0]
        elif b == 0xC8:
            n = _unpack_H(self.take(2))[0]
        elif b == 0xC9:
            n = _unpack_I(self.take(4))[0]
        else:
            self.pos = p
            self.fail(f"byte 0x{b:02x} is not a MessagePack type")
        code = self.take(1)[0]
        return "x", (code, self.take(n))

    def _count(self, n, per_item):
        # Every item takes at least one byte, so a count larger than what is left
        # cannot be genuine: refusing it here bounds any preallocation by the input.
        if n * per_item > self.end - self.pos:
            self.fail(f"a container claims {n} items but only {self.end - self.pos} bytes remain")
        return n

    def _str(self, n):
        raw = self.take(n)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"invalid utf-8 in a string: {e}")


def _no_ext(code, data):
    raise CorruptFileError(f"unexpected MessagePack extension type {code} in a plain document")


def unpackb(data, what="document", max_depth=64):
    """Decode one plain document (no extension types) and check nothing follows."""
    if _cmsgpack is not None:
        try:
            value = _cmsgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                                      ext_hook=_no_ext)
        except CorruptFileError as e:
            raise CorruptFileError(f"{what}: {e}") from None
        except Exception as e:           # hostile bytes: any decoding error is corruption
            raise CorruptFileError(f"{what} is not valid MessagePack ({type(e).__name__}: {e})") from None
        # msgpack decodes ext type -1 to a Timestamp without asking ext_hook; only
        # bytes that could hold one are searched for it (msgpack itself bounds the
        # nesting at 1024 levels).
        if any(m in data for m in _TIMESTAMP_HEADS) and _has_timestamp(value):
            raise CorruptFileError(f"{what} holds a MessagePack timestamp; it is not a plain document")
        return value
    return _unpackb_py(data, what, max_depth)


_TIMESTAMP_HEADS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _has_timestamp(value):
    ts = _cmsgpack.Timestamp
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is ts:
            return True
        if type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v)
            stack.extend(v.values())
    return False


def _unpackb_py(data, what="document", max_depth=64):
    r = TokenReader(data, what=what)
    value = _unpack_plain(r, 0, max_depth)
    if r.pos != r.end:
        r.fail(f"{r.end - r.pos} unexpected bytes after the end")
    return value


def _unpack_plain(r, depth, max_depth):
    if depth > max_depth:
        r.fail("nested too deeply")
    kind, v = r.next_token()
    if kind == "v":
        return v
    if kind == "a":
        return [_unpack_plain(r, depth + 1, max_depth) for _ in range(v)]
    if kind == "m":
        out = {}
        for _ in range(v):
            k = _unpack_plain(r, depth + 1, max_depth)
            try:
                out[k] = _unpack_plain(r, depth + 1, max_depth)
            except TypeError:
                r.fail("a map key is not hashable")
        return out
    r.fail(f"unexpected extension type {v[0]} in a plain document")
