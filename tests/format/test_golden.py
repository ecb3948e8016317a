"""Every golden file ever written (tests/golden/v*_*.torpor) must keep loading, to
the same object, in both implementations."""

import pathlib

import numpy as np
import pytest

import torpor
from golden.make_golden import (golden_bits, golden_dtypes, golden_extras, golden_object,
                                golden_records, golden_split, golden_xor, legacy_scalars)
from helpers import assert_same_array

GOLDEN = pathlib.Path(__file__).parent.parent / "golden"
FILES = sorted(GOLDEN.glob("v*_*.torpor"))


def test_there_are_golden_files_for_the_current_version():
    assert any(f.name.startswith(f"v{torpor.FORMAT_VERSION}_") for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_golden_file_loads(impl, path):
    want = golden_object()
    got = torpor.load(path)
    assert torpor.info(path)["metadata"]["golden"] is True
    assert torpor.verify(path) > 0
    assert got["scalars"] == want["scalars"]
    assert got["containers"] == want["containers"]
    assert got["shared"][0] is got["shared"][1] and got["shared"][0] == want["shared"][0]
    assert got["cycle"]["self"] is got["cycle"]
    assert got["stdlib"] == want["stdlib"] and got["stdlib"][3].maxlen == 4
    for k in ("small_array", "big_array", "fortran", "structured"):
        assert_same_array(want[k], got[k])
    assert type(got["scalar"]) is np.float16 and got["scalar"] == want["scalar"]
    assert list(got["objects"]) == list(want["objects"])
    assert got["big_bytes"] == want["big_bytes"]
    meta = torpor.info(path)["metadata"]
    if meta.get("extras"):
        for k, v in golden_extras().items():
            assert_same_array(v, got["extras"][k])
    if meta.get("dtypes"):
        want_d, got_d = golden_dtypes(), got["dtypes"]
        for k in ("titled", "meta"):
            assert got_d[k] == want_d[k] and got_d[k].fields == want_d[k].fields
            assert got_d[k].metadata == want_d[k].metadata
        for k in ("titled_array", "meta_array"):
            assert got_d[k].dtype.fields == want_d[k].dtype.fields
            assert got_d[k].dtype.metadata == want_d[k].dtype.metadata
            assert got_d[k].tobytes() == want_d[k].tobytes()
        for k in ("void", "subarray_scalar"):
            assert type(got_d[k]) is np.void and got_d[k].dtype == want_d[k].dtype
            assert got_d[k].tobytes() == want_d[k].tobytes()
    if meta.get("records"):
        _check_records(got["records"])
    if meta.get("split"):
        for k, v in golden_split().items():
            assert_same_array(v, got["split"][k])
    if meta.get("xor"):
        for k, v in golden_xor().items():
            assert_same_array(v, got["xor"][k])
    if meta.get("legacy_scalars"):
        for a, b in zip(got["legacy_scalars"], legacy_scalars()):
            assert type(a) is np.void and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _check_records(got):
    want = golden_records()
    r = got["recarray"]
    assert type(r) is np.recarray and r.dtype == want["recarray"].dtype
    assert r.dtype.type is np.record and type(r[0]) is np.record
    assert r.tolist() == want["recarray"].tolist() and list(r.x) == [2.5, -1.0]
    assert type(got["record"]) is np.record and got["record"].n == 3
    assert got["record"].tobytes() == want["record"].tobytes()
    d = got["record_dtype"]
    assert d.type is np.record and d == want["record_dtype"] and d.metadata == {"k": 1}
    f = got["frozen"]
    assert type(f) is np.ndarray and f.dtype == np.dtype("<i4") and f.shape == (50_000,)
    assert f.tobytes() == want["frozen"].tobytes() and not f.flags.writeable
    base, view = got["frozen_view"]
    assert base.flags.writeable and not view.flags.writeable
    assert view.tolist() == want["frozen_view"][1].tolist()


def _chunk_modes(path, blocks=None):
    """The mode byte of every chunk record of every compressed section; with
    ``blocks`` (a dict), also the block counts of each mode's lz4 frames."""
    from torpor.format import codec as _codec
    data = path.read_bytes()
    modes = set()
    for s in torpor.info(path)["sections"]:
        if s["codec"] == "raw":
            continue
        pos, end = s["payload_offset"], s["payload_offset"] + s["length"]
        while pos < end:
            magic, _, stored, _, mode, *_ = _codec.CHUNK_RECORD.unpack_from(data, pos)
            assert magic == _codec.CHUNK_MAGIC
            modes.add(mode)
            if blocks is not None and s["codec"] == "lz4":
                blocks.setdefault(mode, set()).add(_lz4_blocks(data, pos + _codec.CHUNK_RECORD_SIZE))
            pos += _codec.CHUNK_RECORD_SIZE + stored
    return modes


def _lz4_blocks(data, pos):
    flg = data[pos + 4]
    pos += 7 + (8 if flg & 0x08 else 0)
    n = 0
    while (word := int.from_bytes(data[pos:pos + 4], "little")):
        n += 1
        pos += 4 + (word & 0x7FFFFFFF) + (4 if flg & 0x10 else 0)
    return n


def test_golden_files_cover_every_chunk_mode():
    from torpor.format.constants import MODE_DELTA, MODE_PACKED, MODE_SHUFFLED, MODE_STORED
    golden = GOLDEN
    seen = set()
    for path in golden.glob("v1_*.torpor"):
        seen |= _chunk_modes(path)
    assert {MODE_STORED, MODE_PACKED, MODE_SHUFFLED, MODE_DELTA} <= seen
    assert MODE_DELTA in _chunk_modes(golden / "v1_lz4_filters.torpor")


def test_golden_file_with_a_block_per_plane():
    """Filtered chunks of ``v1_lz4_planes`` are frames of one block per byte plane
    (4 for the float32 arrays), and the file loads (test_golden_file_loads)."""
    from torpor.format.constants import MODE_DELTA, MODE_PACKED, MODE_SHUFFLED
    blocks = {}
    _chunk_modes(GOLDEN / "v1_lz4_planes.torpor", blocks)
    assert 4 in blocks[MODE_DELTA] and blocks.get(MODE_PACKED, {1}) == {1}
    assert all(n > 1 for n in blocks.get(MODE_SHUFFLED, set()) | blocks[MODE_DELTA])
    old = {}
    _chunk_modes(GOLDEN / "v1_lz4_filters.torpor", old)
    assert old[MODE_DELTA] == {1}          # written before: one block per chunk


def test_golden_files_of_version_2_hold_bit_plane_chunks(impl):
    """v2_lz4_bits holds chunks of modes 4 and 5 in 256 KiB blocks (the record's
    first reserved byte is 18), and its arrays come back exactly."""
    import struct
    from torpor.format.constants import MODE_BITS, MODE_DELTA_BITS
    path = GOLDEN / "v2_lz4_bits.torpor"
    assert MODE_BITS in _chunk_modes(path) and MODE_DELTA_BITS in _chunk_modes(path)
    data = path.read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 2
    shifts = set()
    pos = data.find(b"\x5b\x2a\x4d\x18")
    while pos >= 0:
        magic, size, stored, raw, mode, shift, z2, digest = struct.unpack_from("<IIIIBBHQ", data, pos)
        if size == 20 and mode in (MODE_BITS, MODE_DELTA_BITS):
            shifts.add(shift)
        pos = data.find(b"\x5b\x2a\x4d\x18", pos + 1)
    assert shifts == {18}
    got = torpor.load(path)
    assert torpor.info(path)["metadata"]["bits"] is True
    for k, v in golden_bits().items():
        assert_same_array(v, got["bits"][k])


def _lz4_chunk_records(path, data):
    """(section, position, unpacked chunk record) of every chunk of every lz4
    section of ``path`` (whose bytes are ``data``)."""
    from torpor.format import codec as _codec
    for s in torpor.info(path)["sections"]:
        pos, end = s["payload_offset"], s["payload_offset"] + s["length"]
        while s["codec"] == "lz4" and pos < end:
            rec = _codec.CHUNK_RECORD.unpack_from(data, pos)
            yield s, pos, rec
            pos += _codec.CHUNK_RECORD_SIZE + rec[2]


def test_golden_file_of_version_3_holds_byte_and_bit_plane_chunks(impl):
    """v3_lz4_split holds chunks of modes 6 and 7 (2, 4 and 8-byte items) whose
    records give the block shift and the byte-plane mask, and whose frames have
    two lz4 blocks per filter block: the byte planes stored, then the rest."""
    import struct
    from torpor.format import codec as _codec
    from torpor.format.constants import MODE_DELTA_SPLIT, MODE_SPLIT
    path = GOLDEN / "v3_lz4_split.torpor"
    data = path.read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 3
    seen = set()
    for s, pos, rec in _lz4_chunk_records(path, data):
        _, _, stored, raw, mode, shift, mask, z, _ = rec
        assert z == 0
        if mode in (MODE_SPLIT, MODE_DELTA_SPLIT):
            seen.add((mode, mask))
            assert shift == 18
            k = np.dtype(s["dtype"]).itemsize
            m = min(raw, _codec.bits_block(shift, k)) // k // 8 * 8   # the first block's groups
            word = int.from_bytes(data[pos + 35:pos + 39], "little")
            assert word == (m * bin(mask).count("1")) | 0x80000000     # the stored byte planes
    assert seen == {(MODE_SPLIT, 7), (MODE_SPLIT, 63), (MODE_SPLIT, 1), (MODE_DELTA_SPLIT, 3)}
    got = torpor.load(path)
    assert torpor.info(path)["metadata"]["split"] is True
    for k, v in golden_split().items():
        assert_same_array(v, got["split"][k])


def test_golden_file_of_version_4_holds_xored_bit_plane_chunks(impl):
    """v4_lz4_xor holds chunks of modes 8 and 9 (1, 2, 4 and 8-byte items, with
    and without byte planes) whose records give the block shift, the byte-plane
    mask and the first XORed plane; both walkers read every array back, and the
    bit planes really are XORed: decoding a chunk as mode 6 or 4 (the same bytes,
    no XOR) gives other data."""
    import struct
    from torpor.format import codec as _codec
    from torpor.format.constants import MODE_DELTA_XOR_BITS, MODE_XOR_BITS
    path = GOLDEN / "v4_lz4_xor.torpor"
    data = path.read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 4
    seen = set()
    dec = _codec.ChunkDecoder()
    for s, pos, rec in _lz4_chunk_records(path, data):
        _, _, stored, raw, mode, shift, mask, xor, digest = rec
        if mode in (MODE_XOR_BITS, MODE_DELTA_XOR_BITS):
            k = np.dtype(s["dtype"]).itemsize
            seen.add((mode, k, mask, xor))
            assert shift == 18 and 1 <= xor < 8 * (k - bin(mask).count("1"))
            chunk = data[pos + _codec.CHUNK_RECORD_SIZE:pos + _codec.CHUNK_RECORD_SIZE + stored]
            dec.decode_into(bytearray(raw), 0, chunk, 1, mode, raw, k, digest, (shift, mask, xor))
            plain = 7 if mode == MODE_DELTA_XOR_BITS else 6
            if not mask:
                plain -= 2
            with pytest.raises(torpor.CorruptFileError, match="checksum"):
                dec.decode_into(bytearray(raw), 0, chunk, 1, plain, raw, k, digest, (shift, mask, 0))
    assert seen == {(MODE_XOR_BITS, 4, 7, 3), (MODE_XOR_BITS, 8, 0, 1), (MODE_XOR_BITS, 2, 0, 1),
                    (MODE_XOR_BITS, 1, 0, 1), (MODE_DELTA_XOR_BITS, 4, 0, 1)}
    got = torpor.load(path)
    assert torpor.info(path)["metadata"]["xor"] is True
    for k, v in golden_xor().items():
        assert_same_array(v, got["xor"][k])
