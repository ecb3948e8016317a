"""Take a torpor file apart into its documents and put it back together with
every checksum, offset and length recomputed: what a crafted file can do past
the checksums (xxh3 has no key). Used by the crafted-file tests and by the
structure-aware fuzzing mutator. Written from docs/FORMAT.md with msgpack,
struct and xxhash only."""

import struct
from dataclasses import dataclass, field

import msgpack
import xxhash

PRE = struct.Struct("<8sHHI")
SEC = struct.Struct("<4sBBBBIIQQ")
TOC_HEAD = struct.Struct("<4sIQ")
FOOTER = struct.Struct("<QQ8s")
ALIGN = 64


def checksum(b):
    return xxhash.xxh3_64_intdigest(b)


@dataclass
class Section:
    kind: int
    codec: int
    index: int
    raw: int
    meta: object                 # usually a dict; a mutator may put anything here
    payload: bytes
    reserved: tuple = (0, 0, 0)


@dataclass
class Parts:
    magic: bytes
    version: int
    flags: int
    header: object
    sections: list = field(default_factory=list)
    toc: object = None


def unpack(b):
    return msgpack.unpackb(b, strict_map_key=False, raw=False)


def parse(data):
    """The documents of a complete, seekable torpor file."""
    magic, version, flags, hlen = PRE.unpack_from(data, 0)
    header = unpack(data[16:16 + hlen])
    toc_at, tlen, _ = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    toc = unpack(data[toc_at + TOC_HEAD.size:toc_at + TOC_HEAD.size + tlen])
    parts = Parts(magic, version, flags, header, [], toc)
    for t in toc["sections"]:
        kind, offset, payload, stored, raw, codec = t[:6]
        _, k, c, r1, r2, index, mlen, raw2, r3 = SEC.unpack_from(data, offset)
        meta = unpack(data[offset + SEC.size:offset + SEC.size + mlen])
        parts.sections.append(Section(k, c, index, raw2, meta, bytes(data[payload:payload + stored]),
                                      (r1, r2, r3)))
    return parts


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def fix_raw_chunks(section):
    """Recompute the chunk checksums of a raw section's meta for its payload (its
    chunk lengths kept when they still add up, else one chunk)."""
    meta = section.meta
    if section.codec != 0 or not isinstance(meta, dict) or not isinstance(meta.get("chunks"), list):
        return
    p = section.payload
    lengths = [c[0] for c in meta["chunks"] if isinstance(c, list) and c and type(c[0]) is int]
    if sum(lengths) != len(p) or any(n < 0 for n in lengths):
        lengths = [len(p)]
    chunks, pos = [], 0
    for n in lengths:
        chunks.append([n, checksum(p[pos:pos + n])])
        pos += n
    section.meta = dict(meta, chunks=chunks)


def build(parts, fix_toc=True, fix_chunks=False):
    """The file's bytes, every checksum and offset recomputed. With ``fix_toc``
    the table of contents' entries are rewritten to match the sections (keeping
    each entry's meta); without, the table is written as ``parts.toc`` holds it.
    With ``fix_chunks``, raw sections' chunk checksums are recomputed too."""
    if fix_chunks:
        for s in parts.sections:
            fix_raw_chunks(s)
    out = bytearray()
    body = pack(parts.header)
    pre = PRE.pack(parts.magic, parts.version, parts.flags, len(body))
    out += pre + body + struct.pack("<Q", checksum(pre + body))
    entries = []
    for s in parts.sections:
        meta_b = pack(s.meta)
        r1, r2, r3 = s.reserved
        fixed = SEC.pack(b"TSEC", s.kind, s.codec, r1, r2, s.index, len(meta_b), s.raw, r3)
        digest = checksum(fixed + meta_b)
        offset = len(out)
        out += fixed + meta_b + struct.pack("<Q", digest)
        out += b"\0" * (-len(out) % ALIGN)
        payload = len(out)
        out += s.payload
        toc_meta = {k: v for k, v in s.meta.items() if k != "chunks"} if isinstance(s.meta, dict) else {}
        entries.append([s.kind, offset, payload, len(s.payload), s.raw, s.codec, digest, toc_meta])
    toc = parts.toc
    if fix_toc and isinstance(toc, dict):
        old = toc.get("sections") if isinstance(toc.get("sections"), list) else []
        for i, e in enumerate(entries):
            if i < len(old) and isinstance(old[i], list) and len(old[i]) >= 8:
                e[7] = old[i][7]
        toc = dict(toc, sections=entries)
    body = pack(toc)
    at = len(out)
    out += TOC_HEAD.pack(b"TTOC", 0, len(body)) + body + struct.pack("<Q", checksum(body))
    out += FOOTER.pack(at, len(body), b"\x89TPREND\n")
    return bytes(out)


# --- section payloads ------------------------------------------------------------

STREAM, ARRAY, BYTES = 1, 2, 3
CHUNK = struct.Struct("<IIIIB3sQ")
CHUNK_MAGIC = 0x184D2A5B


def section_data(section):
    """A section's payload decoded (raw, or lz4/gzip chunk records). Filtered
    chunks (array sections) come out filtered: the stream never is."""
    p = section.payload
    if section.codec == 0:
        return bytes(p)
    import lz4.frame
    import zlib
    out, pos = bytearray(), 0
    while len(out) < section.raw:
        magic, size, stored, _, _, _, _ = CHUNK.unpack_from(p, pos)
        if magic != CHUNK_MAGIC or size != 20:
            raise ValueError("not a chunk record")
        chunk = p[pos + CHUNK.size:pos + CHUNK.size + stored]
        pos += CHUNK.size + stored
        out += lz4.frame.decompress(chunk) if section.codec == 1 else zlib.decompressobj(31).decompress(chunk)
    return bytes(out)


def stream_of(parts):
    """The object stream: the stream pieces decoded and concatenated."""
    pieces = [s for s in parts.sections if s.kind == STREAM]
    if not pieces:
        raise ValueError("no stream piece")
    return b"".join(section_data(s) for s in pieces)


def set_stream(parts, data):
    """Make ``data`` the object stream: cut into as many raw pieces as there were
    stream pieces, each in place of one (array and bytes sections keep their
    indices)."""
    pieces = [s for s in parts.sections if s.kind == STREAM]
    n = len(pieces)
    step = -(-len(data) // n)
    for i, s in enumerate(pieces):
        p = data[i * step:(i + 1) * step]
        s.codec, s.raw, s.payload = 0, len(p), p
        s.meta = {"chunks": [[len(p), checksum(p)]] if p else []}


# --- the object stream as tokens ---------------------------------------------------
#
# The stream is kept as a flat list of MessagePack tokens (array and map headers,
# extensions, other values) so that a mutation is a splice of that list and
# nothing recurses, however deep the stream nests. References (REF, STRREF and a
# marker rebuilding memo index k) hold the token they refer to, not a number:
# ``emit`` numbers the memo and the string table again, so a reference still
# names its object after the objects before it changed.

EXT_REF, EXT_STRREF, EXT_STR_SURROGATE = 1, 2, 5
EXT_TUPLE, EXT_SET, EXT_FROZENSET = 16, 17, 18
EXT_BYTEARRAY, EXT_BYTES_OOB, EXT_BYTEARRAY_OOB, EXT_GLOBAL, EXT_INST, EXT_REDUCE = 19, 20, 21, 22, 23, 24
EXT_NDARRAY, EXT_OBJARRAY, EXT_DTYPE, EXT_NPSCALAR = 25, 27, 28, 29
MARKERS = range(16, 30)
_NO_MEMO = (EXT_DTYPE, EXT_NPSCALAR)


class Tok:
    """One token: ``kind`` "a" array header (``n`` items), "m" map header (``n``
    pairs), "x" extension (``code``), "s" str, "v" any other value, "l" a whole
    list of ints, floats, bools or nils (``n`` items: one token, however long,
    built by a mutation); ``raw`` its bytes; ``to`` the token a REF/STRREF/rebuilding marker refers to (its
    number is computed when emitted), or None."""

    __slots__ = ("kind", "n", "code", "raw", "to")

    def __init__(self, kind, raw, n=0, code=0, to=None):
        self.kind, self.raw, self.n, self.code, self.to = kind, raw, n, code, to

    def clone(self):
        return Tok(self.kind, self.raw, self.n, self.code, self.to)

    def payload_uint(self):
        """An extension's payload as a big-endian uint."""
        return int.from_bytes(_ext_payload(self.raw), "big")


def _ext_payload(raw):
    b = raw[0]
    if 0xD4 <= b <= 0xD8:
        return raw[2:]
    return raw[{0xC7: 3, 0xC8: 4, 0xC9: 6}[b]:]


_FIXED = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
          0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_LEN = {0xC4: (1, "v"), 0xC5: (2, "v"), 0xC6: (4, "v"), 0xD9: (1, "s"), 0xDA: (2, "s"),
        0xDB: (4, "s")}


def tokenize(data):
    """The tokens of ``data`` (raises ValueError if it is not whole MessagePack
    tokens); references are linked by ``link``."""
    data = bytes(data)
    toks, pos, end = [], 0, len(data)
    while pos < end:
        b = data[pos]
        if b <= 0x7F or b >= 0xE0:
            n = 1
            toks.append(Tok("v", data[pos:pos + 1]))
        elif b <= 0x8F:
            n = 1
            toks.append(Tok("m", data[pos:pos + 1], b & 0x0F))
        elif b <= 0x9F:
            n = 1
            toks.append(Tok("a", data[pos:pos + 1], b & 0x0F))
        elif b <= 0xBF:
            n = 1 + (b & 0x1F)
            toks.append(Tok("s", data[pos:pos + n]))
        elif b in _FIXED:
            n = _FIXED[b]
            toks.append(Tok("v", data[pos:pos + n]))
        elif b in _LEN:
            w, kind = _LEN[b]
            n = 1 + w + int.from_bytes(data[pos + 1:pos + 1 + w], "big")
            toks.append(Tok(kind, data[pos:pos + n]))
        elif b in _FIXEXT:
            n = 2 + _FIXEXT[b]
            toks.append(Tok("x", data[pos:pos + n], code=data[pos + 1]))
        elif b in (0xC7, 0xC8, 0xC9):
            w = {0xC7: 1, 0xC8: 2, 0xC9: 4}[b]
            n = 2 + w + int.from_bytes(data[pos + 1:pos + 1 + w], "big")
            toks.append(Tok("x", data[pos:pos + n], code=data[pos + 1 + w]))
        elif b in (0xDC, 0xDD, 0xDE, 0xDF):
            w = 2 if b in (0xDC, 0xDE) else 4
            n = 1 + w
            toks.append(Tok("a" if b <= 0xDD else "m", data[pos:pos + n],
                            int.from_bytes(data[pos + 1:pos + n], "big")))
        else:
            raise ValueError(f"byte 0x{b:02x} starts no MessagePack token")
        if pos + n > end:
            raise ValueError("truncated token")
        pos += n
    return toks


class Layout:
    """Where the values of a token list are: ``end[i]`` the position after the
    value starting at token i (-1 for a marker token, which starts none),
    ``parent[i]`` the container's position (-1 for the root), ``slot[i]`` what
    the value is to its container ("root", "item", "key", "value", "set": an item
    of a set or frozenset, or "attrs": an instance's attribute map), ``code[i]``
    a marker array's marker code (0 for a list, -1 for a map, None for the rest);
    ``memo`` and ``strings`` the positions that take a memo or string-table index,
    in order."""

    def __init__(self, toks):
        n = len(toks)
        self.end = end = [-1] * n
        self.parent = parent = [-1] * n
        self.slot = slot = [None] * n
        self.code = code = [None] * n
        self.memo = memo = []
        self.strings = strings = []
        stack = []            # [position, elements left, code, elements seen]
        i = 0
        done = False
        while i < n:
            if done:
                raise ValueError("tokens after the root object")
            t = toks[i]
            start = i
            top = stack[-1] if stack else None
            if top is None:
                slot[i] = "root"
            else:
                parent[i] = top[0]
                if top[2] == -1:
                    slot[i] = "value" if top[3] % 2 else "key"
                elif top[2] in (EXT_SET, EXT_FROZENSET):
                    slot[i] = "set"
                elif top[2] == EXT_INST and top[3] == 2:
                    slot[i] = "attrs"
                else:
                    slot[i] = "item"
            frame = None
            if t.kind == "a":
                nxt = toks[i + 1] if t.n and i + 1 < n else None
                if nxt is not None and nxt.kind == "x" and nxt.code in MARKERS:
                    rebuild = nxt.to is not None or nxt.payload_uint() != 0
                    if nxt.code not in _NO_MEMO and not rebuild:
                        memo.append(i)
                    code[i] = nxt.code
                    frame = [i, t.n - 1, nxt.code, 1]
                    i += 2
                else:
                    memo.append(i)
                    code[i] = 0
                    frame = [i, t.n, 0, 0]
                    i += 1
            elif t.kind == "l":
                memo.append(i)
                code[i] = 0
                i += 1
            elif t.kind == "m":
                if slot[i] != "attrs":
                    memo.append(i)
                code[i] = -1
                frame = [i, 2 * t.n, -1, 0]
                i += 1
            else:
                if t.kind == "s" or (t.kind == "x" and t.code == EXT_STR_SURROGATE):
                    strings.append(i)
                i += 1
            if frame is not None and frame[1] > 0:
                stack.append(frame)
                continue
            end[start] = i
            while True:
                if not stack:
                    done = True
                    break
                top = stack[-1]
                top[1] -= 1
                top[3] += 1
                if top[1] > 0:
                    break
                stack.pop()
                end[top[0]] = i
        if stack or not done:
            raise ValueError("the stream ends inside an object")

    def values(self):
        return [i for i, e in enumerate(self.end) if e >= 0]


def link(toks):
    """Point every REF, STRREF and rebuilding marker at the token it names (by
    the memo and string-table numbering of ``toks``). Returns the layout."""
    lay = Layout(toks)
    for t in toks:
        if t.kind != "x":
            continue
        if t.code == EXT_REF:
            table = lay.memo
            k = t.payload_uint()
        elif t.code == EXT_STRREF:
            table = lay.strings
            k = t.payload_uint()
        elif t.code in MARKERS:
            table = lay.memo
            k = t.payload_uint() - 1
            if k < 0:
                continue
        else:
            continue
        if k < len(table):
            t.to = toks[table[k]]
    return lay


def parse_stream(data):
    """The linked tokens of an object stream, and their layout."""
    toks = tokenize(data)
    return toks, link(toks)


def uint_payload(k):
    for w in (1, 2, 4, 8):
        if k < 1 << (8 * w):
            return k.to_bytes(w, "big")
    raise ValueError("index too large")


def ext(code, payload):
    n = len(payload)
    if n in (1, 2, 4, 8, 16):
        head = bytes([{1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}[n], code])
    elif n < 256:
        head = bytes([0xC7, n, code])
    elif n < 65536:
        head = bytes([0xC8]) + struct.pack(">H", n) + bytes([code])
    else:
        head = bytes([0xC9]) + struct.pack(">I", n) + bytes([code])
    return head + payload


def array_header(n):
    return bytes([0x90 | n]) if n < 16 else (b"\xdc" + struct.pack(">H", n) if n < 65536
                                             else b"\xdd" + struct.pack(">I", n))


def map_header(n):
    return bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n) if n < 65536
                                             else b"\xdf" + struct.pack(">I", n))


def emit(toks):
    """The stream bytes of ``toks``, every reference numbered for where its
    object now stands: a REF to an object no longer there becomes nil, a STRREF
    to a string not before it the string itself, a marker rebuilding an object no
    longer there a new object. Returns the bytes and how many memo indices they
    use."""
    present = {id(t) for t in toks}
    toks = list(toks)
    for i, t in enumerate(toks):
        if t.kind == "x" and t.code in MARKERS and t.to is not None and id(t.to) not in present:
            toks[i] = Tok("x", ext(t.code, b"\x00"), code=t.code)
    lay = Layout(toks)
    memo = {}
    for k, i in enumerate(lay.memo):
        memo.setdefault(id(toks[i]), k)
    out = []
    strings = {}
    nstr = 0
    for t in toks:
        to = t.to
        if t.kind == "s" or (t.kind == "x" and t.code == EXT_STR_SURROGATE):
            strings.setdefault(id(t), nstr)
            nstr += 1
            out.append(t.raw)
        elif to is None or t.kind != "x":
            out.append(t.raw)
        elif t.code == EXT_STRREF:
            k = strings.get(id(to))
            if k is None:              # the string is gone, or comes later: write it
                strings.setdefault(id(to), nstr)
                nstr += 1
                out.append(to.raw)
            else:
                out.append(ext(EXT_STRREF, uint_payload(k)))
        elif t.code == EXT_REF:
            k = memo.get(id(to))
            out.append(b"\xc0" if k is None else ext(EXT_REF, uint_payload(k)))
        else:                          # a marker rebuilding memo index k
            k = memo.get(id(to))
            out.append(ext(t.code, uint_payload(0 if k is None else k + 1)))
    return b"".join(out), len(lay.memo)
