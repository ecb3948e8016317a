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
