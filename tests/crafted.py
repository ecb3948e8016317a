"""Hand-built torpor files, for tests of what a hostile file can do: object
streams written token by token (as no torpor writer would), wrapped in a valid
container with valid checksums (xxh3 has no key: anyone can recompute them)."""

import io

from torpor.format import messagepack as mp
from torpor.format.constants import (CODEC_RAW, EXT_BIGINT, EXT_FROZENSET, EXT_GLOBAL,
                                     EXT_INST, EXT_REDUCE, EXT_REF, EXT_SET, EXT_TUPLE)
from torpor.format.container import make_header
from torpor.format.writer import ContainerWriter


class Raw:
    """Bytes put into the stream as they are."""

    def __init__(self, data):
        self.data = bytes(data)


def _marker(out, code, count):
    mp.pack_array_header(out, count + 1)
    mp.pack_ext(out, code, b"\x00")


def put(out, v):
    """Append ``v``: plain values as MessagePack, the helpers below as markers."""
    if isinstance(v, Raw):
        out += v.data
    elif v is None:
        out.append(0xC0)
    elif isinstance(v, bool):
        out.append(0xC3 if v else 0xC2)
    elif isinstance(v, int):
        if -(1 << 63) <= v < (1 << 64):
            mp.pack_int(out, v)
        else:
            mp.pack_ext(out, EXT_BIGINT, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True))
    elif isinstance(v, float):
        mp.pack_float(out, v)
    elif isinstance(v, str):
        mp.pack_str_bytes(out, v.encode())
    elif isinstance(v, bytes):
        mp.pack_bin(out, v)
    elif isinstance(v, list):
        mp.pack_array_header(out, len(v))
        for x in v:
            put(out, x)
    elif isinstance(v, dict):
        mp.pack_map_header(out, len(v))
        for k, x in v.items():
            put(out, k)
            put(out, x)
    else:
        raise TypeError(f"cannot craft {type(v).__name__}")


def stream(v):
    out = bytearray()
    put(out, v)
    return bytes(out)


def G(module, qualname):
    out = bytearray()
    _marker(out, EXT_GLOBAL, 2)
    put(out, module)
    put(out, qualname)
    return Raw(out)


def T(*items):
    out = bytearray()
    _marker(out, EXT_TUPLE, len(items))
    for x in items:
        put(out, x)
    return Raw(out)


def S(items, frozen=False):
    """A set (or frozenset) of ``items``, without building it here."""
    out = bytearray()
    _marker(out, EXT_FROZENSET if frozen else EXT_SET, len(items))
    for x in items:
        put(out, x)
    return Raw(out)


def D(pairs):
    """A dict of ``pairs`` (key, value), without building it here."""
    out = bytearray()
    mp.pack_map_header(out, len(pairs))
    for k, x in pairs:
        put(out, k)
        put(out, x)
    return Raw(out)


def R(func, *args, state=None, listitems=None, dictitems=None, args_at=None):
    """REDUCE: func(*args), then the state, list items and dict items;
    ``args_at``: the arguments are the tuple with that memo index instead."""
    out = bytearray()
    _marker(out, EXT_REDUCE, 5)
    put(out, func)
    put(out, T(*args) if args_at is None else Ref(args_at))
    put(out, state)
    put(out, listitems)
    put(out, dictitems)
    return Raw(out)


def Ref(i):
    """A reference to the object with memo index ``i`` (every list, map, tuple,
    set, reduce, instance, global and out-of-band bytes takes the next index)."""
    out = bytearray()
    mp.pack_ext(out, EXT_REF, mp.uint_payload(i))
    return Raw(out)


def M(code, *items):
    """Any marker extension ``code`` with its ``items``."""
    out = bytearray()
    _marker(out, code, len(items))
    for x in items:
        put(out, x)
    return Raw(out)


def nested(make, inner, depth):
    """``make`` applied ``depth`` times around ``inner`` (``make(x)`` must put
    ``x`` once, as a Raw), built without recursion."""
    mark = b"\xff\x00\xfeNESTED\xfe\x00\xff"
    made = make(Raw(mark))
    head, tail = (made.data if isinstance(made, Raw) else stream(made)).split(mark)
    out = bytearray(head * depth)
    put(out, inner)
    out += tail * depth
    return Raw(out)


def I(cls, attrs=None):
    """INST: an instance of cls with attrs."""
    out = bytearray()
    _marker(out, EXT_INST, 2)
    put(out, cls)
    put(out, attrs)
    return Raw(out)


def file_of(obj, globals_=(), toc=None, sections=()):
    """A complete, valid torpor file whose object stream is ``obj`` crafted;
    ``sections``: bytes payloads, sections 0, 1, ... in order; ``toc``: entries
    of the table of contents to add or replace."""
    buf = io.BytesIO()
    w = ContainerWriter(buf, codec_id=CODEC_RAW, threads=1)
    w.write_header(make_header({}, "crafted", CODEC_RAW))
    for data in sections:
        w.add_bytes(data)
    w.stream_frame(stream(obj))
    w.finish({"globals": list(globals_), "memo": 0, **(toc or {})})
    w.close()
    return buf.getvalue()
