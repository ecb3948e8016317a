"""A torpor reader written from docs/FORMAT.md alone, with msgpack, lz4, zlib,
struct and xxhash: deliberately independent of the torpor package (it imports
nothing from it), so the test that compares it with torpor.load checks the
document as much as the code.

read(data) -> the root object. Python objects named by GLOBAL are imported and
called (the test reads its own golden files); arrays come back as
``Array(dtype description, shape, fortran, raw bytes)``, numpy scalars as
``Scalar(dtype description, bytes)``, dtypes as ``DType(description)`` and
whatever numpy's own callables rebuild (ndarray subclasses) as ``Reduced(callable,
arguments, state)``, so no numpy is needed to read a file.
"""

import importlib
import itertools
import struct
import zlib
from typing import NamedTuple

import lz4.frame
import msgpack
import xxhash


class Array(NamedTuple):
    dtype: object
    shape: list
    fortran: bool
    data: bytes
    writeable: bool = True


def _readonly(array):
    """torpor.arrays.readonly (FORMAT.md: names torpor writes for itself)."""
    return array._replace(writeable=False)


#: torpor's own GLOBAL names this reader understands (FORMAT.md)
TORPOR_NAMES = {"torpor.arrays.readonly": _readonly}


class Scalar(NamedTuple):
    dtype: object
    data: bytes


class DType(NamedTuple):
    desc: object


class Reduced(NamedTuple):
    """A REDUCE whose callable is numpy's (an ndarray subclass's ``_reconstruct``):
    its state holds a DType placeholder no real ndarray accepts, so it stays data."""
    func: object
    args: tuple
    state: object


class Damaged(Exception):
    pass


def _xxh3(b):
    return xxhash.xxh3_64_intdigest(b)


def _plain(b):
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


# --- the container (FORMAT.md: Preamble, Section, Table of contents) -----------------

def _itemsize(desc):
    """The item size of a dtype description (FORMAT.md: dtypes)."""
    if isinstance(desc, str):
        return int(desc[2:].split("[")[0] or 0) if desc[1] not in "UO" else \
            (4 * int(desc[2:]) if desc[1] == "U" else 8)
    if desc[0] in ("meta", "record"):
        return _itemsize(desc[1])
    if desc[0] == "sub":
        n = _itemsize(desc[1])
        for d in desc[2]:
            n *= d
        return n
    return desc[4]                                  # struct: its itemsize


def _unshuffle(b, k):
    n = len(b) // k
    out = bytearray(len(b))
    for j in range(k):
        out[j::k] = b[j * n:(j + 1) * n]
    return out


def _undelta(b, k):
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[k]
    mask = (1 << (8 * k)) - 1
    words = (w for (w,) in struct.iter_unpack(fmt, b))
    sums = itertools.accumulate(words, lambda a, w: (a + w) & mask)
    return b"".join(struct.pack(fmt, s) for s in sums)


def _unbits(data, k, block, delta, mask=0, xor=0):
    """Undo mode 4 (5: then the running sums; 6 and 7: with the byte planes of
    ``mask``; 8 and 9: either, the bit planes from plane ``xor`` on XORed with
    the plane before) of docs/FORMAT.md, block by block: in a block of n whole
    groups of 8 items, byte i of the byte plane of byte j (j in the mask, in
    order) is byte j of item i; then, for the other bytes j in order, bit i % 8
    of byte i // 8 of their plane b is bit b of byte j of item i; items after
    the last group follow as they are."""
    block -= block % (8 * k)
    out = bytearray()
    for start in range(0, len(data), block):
        q = data[start:start + block]
        full = len(q) - len(q) % (8 * k)
        n = full // k
        items = [bytearray(k) for _ in range(n)]
        plane_len = n // 8
        at = 0
        for j in range(k):
            if mask >> j & 1:
                for i in range(n):
                    items[i][j] = q[at + i]
                at += n
        planes = []
        for _ in range(8 * (k - bin(mask).count("1"))):
            plane = q[at:at + plane_len]
            at += plane_len
            if xor and len(planes) >= xor:
                plane = bytes(x ^ y for x, y in zip(plane, planes[-1]))
            planes.append(plane)
        planes.reverse()
        for j in range(k):
            if mask >> j & 1:
                continue
            for b in range(8):
                plane = planes.pop()
                for i in range(n):
                    if plane[i // 8] >> (i % 8) & 1:
                        items[i][j] |= 1 << b
        raw = b"".join(items)
        if delta:
            raw = _undelta(raw, k)
        out += raw + q[full:]
    return bytes(out)


def _payload(data, pos, codec, raw, meta, itemsize, version):
    """The decoded payload of a section whose payload starts at ``pos``; returns
    (bytes, position after the payload)."""
    if codec == 0:
        out = bytes(data[pos:pos + raw])
        at = 0
        for length, digest in meta["chunks"]:
            if _xxh3(out[at:at + length]) != digest:
                raise Damaged("raw chunk checksum")
            at += length
        return out, pos + raw
    out = bytearray()
    while len(out) < raw:
        magic, size, stored, craw, mode, r1, r2, r3, digest = struct.unpack_from("<IIIIBBBBQ", data, pos)
        if magic != 0x184D2A5B or size != 20:
            raise Damaged("chunk record")
        if mode > {1: 3, 2: 5, 3: 7, 4: 9}[version]:
            raise Damaged("a chunk mode the file's version does not have")
        chunk = data[pos + 28:pos + 28 + stored]
        pos += 28 + stored
        if codec == 1:
            plain = lz4.frame.decompress(chunk)
        else:
            d = zlib.decompressobj(31)
            plain = d.decompress(chunk)
        if mode == 2:
            plain = _unshuffle(plain, itemsize)
        elif mode == 3:
            plain = _undelta(_unshuffle(plain, itemsize), itemsize)
        elif mode in (4, 5, 6, 7, 8, 9):
            plain = _unbits(plain, itemsize, 1 << r1, mode in (5, 7, 9), r2, r3 if mode >= 8 else 0)
        if len(plain) != craw or _xxh3(plain) != digest:
            raise Damaged("chunk")
        out += plain
    return bytes(out), pos


def read_container(data):
    """(header, [section payloads], stream bytes), checking every checksum."""
    magic, version, flags, hlen = struct.unpack_from("<8sHHI", data, 0)
    if magic != b"\x89TPR\r\n\x1a\n" or version not in (1, 2, 3, 4) or flags:
        raise Damaged("preamble")
    if _xxh3(data[:16 + hlen]) != struct.unpack_from("<Q", data, 16 + hlen)[0]:
        raise Damaged("header checksum")
    header = _plain(data[16:16 + hlen])
    pos = 16 + hlen + 8
    payloads, stream = {}, bytearray()
    while data[pos:pos + 4] == b"TSEC":
        _, kind, codec, r1, r2, index, mlen, raw, r3 = struct.unpack_from("<4sBBBBIIQQ", data, pos)
        meta_b = data[pos + 32:pos + 32 + mlen]
        if _xxh3(data[pos:pos + 32 + mlen]) != struct.unpack_from("<Q", data, pos + 32 + mlen)[0]:
            raise Damaged("section header")
        meta = _plain(meta_b)
        pos += 32 + mlen + 8
        pos += -pos % 64                             # the payload starts at a multiple of 64
        itemsize = _itemsize(meta["dtype"]) if kind == 2 else 1
        body, pos = _payload(data, pos, codec, raw, meta, itemsize, version)
        if kind == 1:
            stream += body
        elif kind == 2:
            payloads[index] = body
        else:
            payloads[index] = bytearray(body) if meta["type"] == "bytearray" else body
    if data[pos:pos + 4] != b"TTOC":
        raise Damaged("table of contents")
    _, _, tlen = struct.unpack_from("<4sIQ", data, pos)
    body = data[pos + 16:pos + 16 + tlen]
    if _xxh3(body) != struct.unpack_from("<Q", data, pos + 16 + tlen)[0]:
        raise Damaged("table of contents checksum")
    footer = data[pos + 16 + tlen + 8:]
    if len(footer) != 24 or struct.unpack("<QQ8s", footer) != (pos, tlen, b"\x89TPREND\n"):
        raise Damaged("footer")
    return header, payloads, bytes(stream)


# --- the object stream (FORMAT.md: The object stream) -------------------------------

MARKERS = range(16, 30)
NO_MEMO = {28, 29}                                   # DTYPE, NPSCALAR
UNBUILT = object()


class _Ctx:
    def __init__(self, payloads):
        self.memo = []
        self.strings = []
        self.payloads = payloads
        self.used = set()

    def section(self, index):
        """A payload section's data; each belongs to one object."""
        if index in self.used:
            raise ValueError(f"section {index} used twice")
        self.used.add(index)
        return self.payloads[index]


def _uint(payload):
    return int.from_bytes(payload, "big")


def _build(x, ctx):
    """Walk the MessagePack tree in stream order, as the document's reading
    algorithm says, and build the object."""
    if isinstance(x, str):
        ctx.strings.append(x)
        return x
    if isinstance(x, msgpack.ExtType):
        code, p = x.code, x.data
        if code == 1:
            obj = ctx.memo[_uint(p)]
            if obj is UNBUILT:
                raise Damaged("reference to an object not built yet")
            return obj
        if code == 2:
            return ctx.strings[_uint(p)]
        if code == 3:
            return complex(*struct.unpack("<dd", p))
        if code == 4:
            return int.from_bytes(p, "big", signed=True)
        if code == 5:
            s = p.decode("utf-8", "surrogatepass")
            ctx.strings.append(s)
            return s
        raise Damaged(f"extension {code} outside an array")
    if isinstance(x, list) and x and isinstance(x[0], msgpack.ExtType) and x[0].code in MARKERS:
        return _marker(x[0].code, _uint(x[0].data), x[1:], ctx)
    if isinstance(x, list):
        out = []
        ctx.memo.append(out)
        out.extend(_build(v, ctx) for v in x)
        return out
    if isinstance(x, _Pairs):
        out = {}
        ctx.memo.append(out)
        for k, v in x.pairs:
            key = _build(k, ctx)
            out[key] = _build(v, ctx)
        return out
    return x


class _Pairs:
    """A MessagePack map kept as its pairs, in order (keys may be lists)."""

    def __init__(self, pairs):
        self.pairs = pairs


def _marker(code, at, items, ctx):
    if code in NO_MEMO:
        slot = None
    elif at:
        slot = at - 1                                 # rebuild an object under construction
    else:
        slot = len(ctx.memo)
        ctx.memo.append(UNBUILT)

    def done(obj):
        if slot is not None:
            if ctx.memo[slot] is UNBUILT:
                ctx.memo[slot] = obj
            return ctx.memo[slot]
        return obj
    if code == 17:                                    # SET: exists at once, then filled
        s = set()
        ctx.memo[slot] = s
        s.update(_build(v, ctx) for v in items)
        return s
    if code in (16, 18):                              # TUPLE, FROZENSET: exist when complete
        vals = [_build(v, ctx) for v in items]
        return done(tuple(vals) if code == 16 else frozenset(vals))
    if code == 22:                                    # GLOBAL
        module, qualname = _build(items[0], ctx), _build(items[1], ctx)
        if f"{module}.{qualname}" in TORPOR_NAMES:
            return done(TORPOR_NAMES[f"{module}.{qualname}"])
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return done(obj)
    if code == 23:                                    # INST: exists once its class is read
        cls = _build(items[0], ctx)
        obj = cls.__new__(cls)
        ctx.memo[slot] = obj
        state = items[1]
        if state is not None:
            attrs = {}
            for k, v in state.pairs:                  # the attribute map takes no index
                key = _build(k, ctx)
                attrs[key] = _build(v, ctx)
            setstate = getattr(obj, "__setstate__", None)
            if setstate is not None:
                setstate(attrs)
            else:
                obj.__dict__.update(attrs)
        return obj
    if code == 24:                                    # REDUCE: exists once func and args are read
        func = _build(items[0], ctx)
        args = _build(items[1], ctx)
        if getattr(func, "__module__", "").split(".")[0] == "numpy":
            obj = Reduced(func, args, _build(items[2], ctx))
            ctx.memo[slot] = obj
            return obj
        if ctx.memo[slot] is UNBUILT:
            obj = func(*args)
            ctx.memo[slot] = obj
            built_here = True
        else:
            obj = ctx.memo[slot]                      # a cycle rebuilt it: the rest is nil
            built_here = False
        rest = [_build(v, ctx) for v in items[2:]]
        if built_here:
            state, listitems, dictitems = rest[0], rest[1], rest[2]
            setter = rest[3] if len(rest) > 3 else None
            for v in listitems or ():
                obj.append(v)
            for k, v in (dictitems or {}).items():
                obj[k] = v
            if state is not None:
                if setter is not None:
                    setter(obj, state)
                elif hasattr(obj, "__setstate__"):
                    obj.__setstate__(state)
                else:
                    if isinstance(state, tuple):
                        state, slots = state
                        for k, v in (slots or {}).items():
                            setattr(obj, k, v)
                    obj.__dict__.update(state or {})
        return obj
    if code == 19:                                    # BYTEARRAY
        return done(bytearray(_build(items[0], ctx)))
    if code in (20, 21):                              # BYTES_OOB, BYTEARRAY_OOB
        data = ctx.section(_build(items[0], ctx))
        return done(bytes(data) if code == 20 else bytearray(data))
    if code == 25:                                    # NDARRAY
        section = _build(items[0], ctx)
        desc, shape, fortran = (_build(v, ctx) for v in items[1:])
        return done(Array(desc, shape, fortran, bytes(ctx.section(section))))
    if code == 26:                                    # NDARRAY_INLINE
        data = _build(items[0], ctx)
        desc, shape, fortran = (_build(v, ctx) for v in items[1:])
        return done(Array(desc, shape, fortran, data))
    if code == 27:                                    # OBJARRAY
        desc, shape, fortran = (_build(v, ctx) for v in items[:3])
        arr = Array(desc, shape, fortran, [])
        ctx.memo[slot] = arr
        arr.data.extend(_build(v, ctx) for v in items[3:])
        return arr
    if code == 28:                                    # DTYPE
        return DType(_build(items[0], ctx))
    if code == 29:                                    # NPSCALAR
        desc, data = _build(items[0], ctx), _build(items[1], ctx)
        if isinstance(desc, list) and desc and isinstance(desc[0], bytes):
            desc, data = desc[1:] + [data], desc[0]   # torpor 0.1.0's layout (FORMAT.md)
        return Scalar(desc, data)
    raise Damaged(f"unknown marker {code}")


def read(data):
    header, payloads, stream = read_container(bytes(data))
    tree = msgpack.unpackb(stream, raw=False, strict_map_key=False,
                           object_pairs_hook=_Pairs, use_list=True)
    return _build(tree, _Ctx(payloads))
