"""The chunk codec: filters, the lz4 frames torpor writes and reads without
python-lz4's allocating calls, the per-chunk filter choice, and the writer's
pipeline across sections. Native kernels are checked against the pure-Python ones
(the reference), byte for byte."""

import io

import lz4.block
import lz4.frame
import numpy as np
import pytest

import torpor
from torpor.format import codec as _codec
from torpor.errors import CorruptFileError
from torpor.format.constants import (CHUNK_SIZE, CODEC_LZ4, MODE_BITS, MODE_DELTA_BITS,
                                    MODE_DELTA_SPLIT, MODE_PACKED, MODE_SHUFFLED, MODE_SPLIT,
                                    MODE_STORED, MODE_XOR_BITS, MODE_DELTA_XOR_BITS)

from helpers import assert_same_array, with_format_version

rng = np.random.default_rng(7)

KERNELS = [pytest.param("python", id="python")]
if _codec.NATIVE_FILTERS:
    KERNELS.insert(0, pytest.param("native", id="native"))


@pytest.fixture(params=KERNELS)
def kernels(request):
    if request.param == "native":
        return _codec._filters
    return type("Py", (), {
        "filter_into": staticmethod(_codec._py_filter_into),
        "unfilter_into": staticmethod(_codec._py_unfilter_into),
    })


def _smooth(n, dtype):
    return (np.sin(np.linspace(0, 20, n)) * 1000).astype(dtype)


@pytest.mark.parametrize("dtype", ["<u2", ">i2", "<f4", ">f4", "<i4", "<f8", ">c8", "<i8", "S3", "V5"])
@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize("count, offset", [(7919, 0), (2048, 1), (1, 3), (4097, 5)])
def test_filters_invert_and_agree_with_the_reference(kernels, dtype, delta, count, offset):
    """Counts across the kernels' 2048-item blocks, and sources at odd addresses."""
    dt = np.dtype(dtype)
    k = dt.itemsize
    if delta and k not in (2, 4, 8):
        with pytest.raises(ValueError, match="delta filter works on items of 2, 4 or 8"):
            kernels.filter_into(bytes(k * 10), bytearray(k * 10), k, True)
        return
    raw = rng.integers(0, 256, count * k, dtype=np.uint8).tobytes()
    if dt.kind in "iuf":
        raw = _smooth(count, dt).tobytes()
    raw = memoryview(b"x" * offset + raw)[offset:]
    out = bytearray(len(raw) + 5)
    got = bytes(kernels.filter_into(raw, out, k, delta))
    ref = bytes(_codec._py_filter_into(raw, bytearray(len(raw)), k, delta))
    assert got == ref
    assert got != raw or k == 1 or count == 1
    back = bytearray(len(raw) + 16)
    kernels.unfilter_into(back, 8, got, k, delta)
    assert bytes(back[8:8 + len(raw)]) == raw
    assert bytes(back[:8]) == bytes(8) and bytes(back[8 + len(raw):]) == bytes(8)


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("count", [15, 16, 17, 33, 2047, 2048, 2049, 4111])
def test_shuffles_of_random_words_are_the_numpy_transpose(kernels, k, count):
    """Random bytes (where any swap of bytes or items shows), counts around the
    16-item vector steps and the 2048-item blocks, an odd address."""
    raw = rng.integers(0, 256, count * k + 1, dtype=np.uint8)
    src = memoryview(raw.tobytes())[1:]
    got = bytes(kernels.filter_into(src, bytearray(count * k), k, False))
    assert got == raw[1:].reshape(count, k).T.tobytes()
    back = bytearray(count * k + 3)
    kernels.unfilter_into(back, 3, got, k, False)
    assert bytes(back[3:]) == bytes(src)


def test_delta_is_on_little_endian_words():
    """The delta filter's words are little-endian whatever the host: byte j of the
    first filtered plane is the low byte of each difference."""
    a = np.array([1, 3, 6, 10], "<u4").tobytes()
    out = bytes(_codec._py_filter_into(a, bytearray(16), 4, True))
    assert list(out[:4]) == [1, 2, 3, 4] and out[4:] == bytes(12)
    if _codec.NATIVE_FILTERS:
        assert bytes(_codec._filters.filter_into(a, bytearray(16), 4, True)) == out


def test_filters_reject_partial_items(kernels):
    with pytest.raises(ValueError, match="whole items"):
        kernels.filter_into(b"abcde", bytearray(8), 4, False)
    with pytest.raises(ValueError):
        kernels.unfilter_into(bytearray(4), 2, b"abcd", 4, False)


FRAMERS = [pytest.param((_codec._py_lz4_frame, _codec._py_lz4_frame_into), id="python")]
if _codec.NATIVE_LZ4:
    FRAMERS.insert(0, pytest.param((_codec._filters.lz4_frame, _codec._filters.lz4_frame_into),
                                   id="native"))


@pytest.mark.parametrize("framer", FRAMERS)
@pytest.mark.parametrize("level", [0, -3, 4])
def test_lz4_frames_are_standard(framer, level):
    frame, frame_into = framer
    data = np.tile(_smooth(1000, "<f4"), 300).tobytes()
    out = bytearray(_codec.lz4_bound(len(data)))
    n = frame(data, out, level)
    assert 0 < n < len(data)
    assert lz4.frame.decompress(bytes(out[:n])) == data          # any lz4 reader
    dest = bytearray(len(data) + 3)
    frame_into(bytes(out[:n]), dest, 3, len(data))
    assert bytes(dest[3:]) == data


@pytest.mark.parametrize("framer", FRAMERS)
def test_frames_of_planes(framer):
    """A shuffled chunk is one frame with a block per plane; a plane that does not
    shrink is an uncompressed block; any lz4 reader reads the frame."""
    frame, frame_into = framer
    n = 50_000
    planes = [rng.integers(0, 256, n, dtype=np.uint8).tobytes(), bytes(n),
              np.tile(np.arange(100, dtype=np.uint8), n // 100).tobytes(), bytes(range(256)) * (n // 256) + bytes(n % 256)]
    data = b"".join(planes)
    out = bytearray(_codec.lz4_bound(len(data)))
    size = frame(data, out, 0, 4)
    f = bytes(out[:size])
    assert lz4.frame.decompress(f) == data
    dest = bytearray(len(data))
    frame_into(f, dest, 0, len(data))
    assert bytes(dest) == data
    pos, blocks = 7, []
    while (word := int.from_bytes(f[pos:pos + 4], "little")):
        blocks.append((bool(word >> 31), word & 0x7FFFFFFF))
        pos += 4 + (word & 0x7FFFFFFF)
    assert pos + 4 == size and len(blocks) == 4
    assert blocks[0] == (True, n) and not any(stored for stored, _ in blocks[1:])
    with pytest.raises(ValueError, match="equal pieces"):
        frame(data[:-1], out, 0, 4)
    with pytest.raises(ValueError, match="equal pieces"):
        frame(data, out, 0, 80)               # divides, but more than 64 pieces
    assert frame(planes[0] * 2, out, 0, 2) == -1          # no block shrank: store the chunk


@pytest.mark.parametrize("framer", FRAMERS)
def test_incompressible_chunk_reports_it(framer):
    frame, _ = framer
    data = rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    assert frame(data, bytearray(_codec.lz4_bound(len(data))), 0) == -1


@pytest.mark.parametrize("framer", FRAMERS)
@pytest.mark.parametrize("kw", [dict(store_size=True), dict(content_checksum=True),
                                dict(block_checksum=True), dict(block_size=lz4.frame.BLOCKSIZE_MAX64KB)])
def test_reads_frames_the_lz4_library_writes(framer, kw):
    """Frames with a content size, checksums or several blocks (older torpor files
    were written by python-lz4 with a content size) decode into place."""
    _, frame_into = framer
    data = np.arange(200_000, dtype="<i4").tobytes()
    f = lz4.frame.compress(data, block_linked=False, **kw)
    dest = bytearray(len(data))
    frame_into(f, dest, 0, len(data))
    assert bytes(dest) == data


@pytest.mark.skipif(not _codec.NATIVE_LZ4, reason="checks the native frame reader's bounds")
def test_native_frame_reader_bounds_every_length():
    data = np.tile(np.arange(1000, dtype="<i4"), 100).tobytes()
    out = bytearray(_codec.lz4_bound(len(data)))
    n = _codec._filters.lz4_frame(data, out, 0)
    assert n > 0
    good = bytes(out[:n])
    into = _codec._filters.lz4_frame_into
    for cut in (0, 5, 7, 11, len(good) // 2, len(good) - 1):
        with pytest.raises(ValueError):
            into(good[:cut], bytearray(len(data)), 0, len(data))
    with pytest.raises(ValueError, match="more data|damaged|decodes to"):
        into(good, bytearray(len(data) - 10), 0, len(data) - 10)
    big = bytearray(good)
    big[7:11] = (0x7FFFFFF0).to_bytes(4, "little")               # block size past the end
    with pytest.raises(ValueError, match="past the end"):
        into(bytes(big), bytearray(len(data)), 0, len(data))
    with pytest.raises(ValueError, match="destination is too small"):
        into(good, bytearray(10), 0, len(data))
    bad = bytearray(good)
    bad[4] = 0x61                                                  # a dictionary id flag
    with pytest.raises(ValueError, match="unsupported lz4 frame flags"):
        into(bytes(bad), bytearray(len(data)), 0, len(data))


def _modes(arr):
    enc = _codec.ChunkEncoder(CODEC_LZ4)
    view = memoryview(arr.reshape(-1).view(np.uint8))
    out = []
    for a, b in _codec.chunk_spans(view.nbytes, CHUNK_SIZE, arr.itemsize):
        res = enc.encode(view[a:b], arr.itemsize, True)
        out.append(res[0])
        enc.release(res[5])
    return set(out)


def test_filter_choice_follows_the_data():
    x = np.linspace(-1, 1, 1_000_000, dtype=np.float32)
    assert _modes(np.exp(-x * x * 4)) == {MODE_DELTA_BITS}                    # smooth field
    assert _modes(np.sort(rng.integers(0, 10**6, 1_000_000)).astype(np.int32)) <= {MODE_BITS, MODE_DELTA_BITS}
    # coordinates on a 0.1 grid as float64: bit planes that repeat each other,
    # and whose exponent planes flip together (XORed with their neighbours)
    assert _modes(rng.uniform(0, 500, 500_000).round(1)) == {MODE_XOR_BITS}
    assert _modes(rng.integers(0, 256, 1_000_000, dtype=np.uint8)) == {MODE_STORED}
    assert _modes(rng.standard_normal(300_000)) <= {MODE_STORED, MODE_BITS, MODE_SPLIT, MODE_XOR_BITS}
    # measured float32: three noise bytes, the exponent's planes XORed (a chunk's
    # trial may find delta bit planes 2% smaller, at the margin between the two)
    assert MODE_XOR_BITS in _modes(rng.standard_normal(1_000_000).astype(np.float32))
    # items too wide for bit planes still get the byte shuffle
    wide = np.zeros(200_000, [("a", "<f8"), ("b", "<i4"), ("c", "<i4")])
    wide["a"] = np.arange(200_000) * 0.5
    assert _modes(wide) <= {MODE_SHUFFLED, MODE_PACKED}


def test_smooth_fields_get_smaller_with_the_bit_filters():
    x = np.linspace(-1, 1, 128, dtype=np.float32)
    r2 = (x[:, None, None] - 0.3) ** 2 + (x[None, :, None] + 0.1) ** 2 + (x[None, None, :] - 0.45) ** 2
    vol = np.exp(-r2 * 3) + 0.5 * np.exp(-r2 * 11)
    sizes = {s: len(torpor.dumps(vol, shuffle=s)) for s in (False, True)}
    assert sizes[True] < 0.75 * sizes[False]
    assert_same_array(vol, torpor.loads(torpor.dumps(vol)))


def _sections(data):
    return [(s["kind"], s["offset"], s["length"], s["raw_length"], s["checksum"])
            for s in torpor.info(io.BytesIO(data))["sections"]]


def test_parallel_writer_matches_the_serial_one(impl):
    """Chunks of many small and large arrays compress on the pool and are written
    in order: the sections are identical to a one-thread save, and load back."""
    arrays = [(_smooth(50_000 + 997 * i, "<f4") + i) for i in range(40)]
    arrays += [np.arange(3 * CHUNK_SIZE // 8 + 5, dtype=np.int64), np.zeros(0), arrays[3]]
    obj = {"a": arrays, "tail": "end"}
    one = torpor.dumps(obj, threads=1)
    many = torpor.dumps(obj, threads=4)
    assert _sections(one) == _sections(many)
    out = torpor.loads(many)
    for a, b in zip(arrays, out["a"]):
        assert_same_array(a, b)
    assert out["a"][3] is out["a"][-1] and out["tail"] == "end"
    for threads in (1, 3):
        out = torpor.loads(one, threads=threads)
        assert_same_array(arrays[17], out["a"][17])


def test_failed_chunk_in_a_later_section_is_reported(impl):
    """A damaged chunk anywhere in a pipelined read surfaces as CorruptFileError."""
    arrays = [_smooth(200_000, "<f4") + i for i in range(6)]
    data = bytearray(torpor.dumps(arrays, threads=2))
    last = torpor.info(io.BytesIO(bytes(data)))["sections"][4]
    mid = last["payload_offset"] + last["length"] // 2
    data[mid] ^= 0xFF
    with pytest.raises(CorruptFileError):
        torpor.loads(bytes(data), threads=2)


def test_files_match_with_and_without_the_native_lz4_binding(tmp_path):
    """A process that cannot bind liblz4 (TORPOR_NO_NATIVE_LZ4=1) uses python-lz4's
    calls: it reads what this one writes, and writes the same sections."""
    import os
    import subprocess
    import sys
    # ("ramp": plain bit planes and delta are within 2% of each other without
    # XOR, and the two bindings' block ends chose differently, files 1.8x apart,
    # until the planner made both filters' plans)
    obj = {"field": _smooth(400_000, "<f4"), "ints": np.arange(300_000) ** 2 % 100_003,
           "ramp": np.arange(300_000, dtype=np.int64) % 1000, "s": "x"}
    here = tmp_path / "native.torpor"
    torpor.dump(obj, here)
    there = tmp_path / "python.torpor"
    code = (
        "import sys, numpy as np, torpor, torpor.format.codec as c\n"
        "assert not c.NATIVE_LZ4\n"
        "obj = torpor.load(sys.argv[1])\n"
        "torpor.dump(obj, sys.argv[2])\n"
        "print(obj['s'], float(obj['field'].sum()))\n")
    env = dict(os.environ, TORPOR_NO_NATIVE_LZ4="1")
    r = subprocess.run([sys.executable, "-c", code, str(here), str(there)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "x"
    out = torpor.load(there)
    for k in ("field", "ints", "ramp"):
        assert_same_array(obj[k], out[k])
    if _codec.NATIVE_LZ4:
        # sections of about the same size: liblz4 called directly and through
        # python-lz4 may end a block under 64 KiB differently, and a trial at the
        # margin between two filters may then choose the other one
        mine = [(s["kind"], s["length"], s["raw_length"]) for s in torpor.info(here)["sections"]]
        theirs = [(s["kind"], s["length"], s["raw_length"]) for s in torpor.info(there)["sections"]]
        assert [(k, r) for k, _, r in mine] == [(k, r) for k, _, r in theirs]
        for (_, a, _), (_, b, _) in zip(mine, theirs):
            assert abs(a - b) <= max(64, a // 4)


# --- bit planes (modes 4 and 5) ------------------------------------------------------

BITS_FRAMERS = [pytest.param((_codec._py_bits_frame, _codec._py_bits_frame_into), id="python")]
BIT_FILTERS = [pytest.param((_codec._py_bitfilter_into, _codec._py_bitunfilter_into), id="python")]
if _codec.NATIVE_LZ4:
    BITS_FRAMERS.insert(0, pytest.param((_codec._filters.bits_frame, _codec._filters.bits_frame_into),
                                        id="native"))
if _codec.NATIVE_FILTERS:
    BIT_FILTERS.insert(0, pytest.param((_codec._filters.bitfilter_into, _codec._filters.bitunfilter_into),
                                       id="native"))


def _bits_reference(raw, k):
    """Plane 8j+b, bit i%8 of byte i//8: bit b of byte j of item i (docs/FORMAT.md),
    one bit at a time."""
    n = len(raw) // k
    planes = bytearray(len(raw))
    for i in range(n):
        for j in range(k):
            for b in range(8):
                if raw[i * k + j] >> b & 1:
                    planes[(8 * j + b) * (n // 8) + i // 8] |= 1 << (i % 8)
    return bytes(planes)


@pytest.mark.parametrize("filters", BIT_FILTERS)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("count", [8, 16, 64, 72, 136, 1024])
def test_bit_planes_are_the_documented_layout(filters, k, count):
    bitfilter, bitunfilter = filters
    raw = rng.integers(0, 256, k * count, dtype=np.uint8).tobytes()
    got = bytes(bitfilter(raw, bytearray(len(raw)), bytearray(len(raw)), k, False))
    assert got == _bits_reference(raw, k)
    back = bytearray(len(raw) + 5)
    bitunfilter(back, 5, got, bytearray(len(raw)), k, False)
    assert bytes(back[5:]) == raw


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("reader", BITS_FRAMERS)
@pytest.mark.parametrize("k, delta", [(1, False), (2, True), (3, False), (4, False), (4, True), (8, True)])
@pytest.mark.parametrize("count", [1, 7, 9, 4097, 40_003])
@pytest.mark.parametrize("plain", [0, 3, "all but one", "all"])
def test_bit_plane_frames_round_trip_across_kernels(framer, reader, k, delta, count, plain):
    """Either kernel reads what either writes, tails of fewer than 8 items included,
    and with the first ``plain`` planes of every block put in as one literal run."""
    raw = (np.sin(np.arange(k * count) / 50.0) * 40 + 60).astype(np.uint8).tobytes()
    if plain != 0:              # noise in the low bits, whose planes go in as they are
        noisy = np.frombuffer(raw, np.uint8).copy().reshape(count, k)
        noisy[:, 0] ^= rng.integers(0, 8, count, dtype=np.uint8)
        raw = noisy.tobytes()
        plain = {"all": 8 * k, "all but one": 8 * k - 1}.get(plain, plain)
    block = _codec.bits_block(13, k)
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = framer[0](raw, out, bytearray(_codec.lz4_bound(1 << 13)), bytearray(1 << 13), k, delta,
                  block, 0, plain)
    if n < 0:                   # no block shrank: the caller stores the chunk
        assert count < 100 or plain >= 8 * k - 1
        return
    assert bytes(out[:7]) == _codec.FRAME_HEAD
    back = bytearray(len(raw))
    reader[1](memoryview(out)[:n], back, 0, len(raw), bytearray(1 << 13), bytearray(1 << 13), k, delta, block)
    assert bytes(back) == raw
    # and the frame is a standard lz4 frame: python-lz4 decodes it to the filtered blocks
    filtered = lz4.frame.decompress(bytes(out[:n]))
    assert len(filtered) == len(raw)
    assert filtered[-(len(raw) % (8 * k)) or len(filtered):] == raw[-(len(raw) % (8 * k)) or len(raw):]
    # a compressed block starts with the plain planes as one literal run
    word = int.from_bytes(out[7:11], "little")
    first = min(block, len(raw))
    lit = (first - first % (8 * k)) // (8 * k) * plain
    if not word >> 31 and lit:
        assert _first_literal_run(bytes(out[11:11 + word])) >= lit


def _first_literal_run(block):
    run, p = block[0] >> 4, 1
    if run == 15:
        while True:
            run += block[p]
            p += 1
            if block[p - 1] != 255:
                return run
    return run


def _lz4_blocks(lit_len, rest):
    return bytes(rng.integers(0, 256, lit_len, dtype=np.uint8)), lz4.block.compress(
        rest, mode="fast", store_size=False)


@pytest.mark.parametrize("lit_len", [1, 13, 14, 15, 254, 255, 269, 270, 300_000])
@pytest.mark.parametrize("rest", [b"a", b"abcdefghijklmn" * 40, bytes(range(256)) * 3,
                                  b"x" * 9 + bytes(range(30)) + b"x" * 500])
def test_literals_put_in_front_of_an_lz4_block(lit_len, rest):
    """_literals_first makes a block that any lz4 decoder reads as the literals
    followed by what the block held: literal runs whose length field grows
    across 15, 15 + 255 and beyond, and first sequences with a long run already."""
    lit, c = _lz4_blocks(lit_len, rest)
    got = _codec._py_literals_first(lit, c, 1 << 30)
    assert lz4.block.decompress(got, uncompressed_size=lit_len + len(rest)) == lit + rest
    assert _codec._py_literals_first(lit, c, len(got)) is None          # not under most
    assert _codec._py_literals_first(lit, c, len(got) + 1) == got


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("plane, plain", [(14, 1), (15, 1), (16, 1), (5, 3), (254, 1), (255, 1),
                                          (256, 1), (135, 2), (90, 3), (300, 7)])
def test_literal_runs_across_the_length_fields_steps(framer, plane, plain):
    """Blocks whose noise planes make literal runs of 14 to 2,100 bytes (the run
    length's field grows at 15 and every 255 after): every block decodes with
    python-lz4 to the filtered block, and the chunk round-trips."""
    k = 1
    block = 8 * plane                       # planes of ``plane`` bytes
    r = np.random.default_rng(plane * 8 + plain)
    smooth = (np.arange(block * 3) // 40 % 7).astype(np.uint8)
    raw = (smooth | (r.integers(0, 1 << plain, block * 3, dtype=np.uint8))).tobytes()
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = framer[0](raw, out, bytearray(_codec.lz4_bound(block)), bytearray(block), k, False,
                  block, 0, plain)
    assert n > 0
    pos, blocks = 7, 0
    while True:
        word = int.from_bytes(out[pos:pos + 4], "little")
        pos += 4
        if word == 0:
            break
        data = bytes(out[pos:pos + (word & 0x7FFFFFFF)])
        pos += word & 0x7FFFFFFF
        want = _codec._py_bits_block(raw[blocks * block:(blocks + 1) * block], k, False)
        if not word >> 31:
            assert _first_literal_run(data) >= plane * plain
            assert lz4.block.decompress(data, uncompressed_size=len(want)) == want
        blocks += 1
    assert blocks == 3 and pos == n
    back = bytearray(len(raw))
    framer[1](memoryview(out)[:n], back, 0, len(raw), bytearray(block), bytearray(block), k, False, block)
    assert bytes(back) == raw


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("plain", [-1, 33])
def test_plain_planes_past_the_item_are_refused(framer, plain):
    raw = bytes(4 * 64)
    with pytest.raises(ValueError, match="plain bit planes"):
        framer[0](raw, bytearray(_codec.lz4_bound(len(raw))), bytearray(1 << 14),
                  bytearray(1 << 14), 4, False, 256, 0, plain)


BITS_PLAIN = [pytest.param(_codec._py_bits_plain, id="python")]
if _codec.NATIVE_LZ4:
    BITS_PLAIN.insert(0, pytest.param(_codec._filters.bits_plain, id="native"))


@pytest.mark.parametrize("bits_plain", BITS_PLAIN)
@pytest.mark.parametrize("kind, low, high", [
    ("normal float32", 20, 28),      # 23 mantissa bits, the top few of which repeat
    ("uniform float64", 48, 56),     # 52 mantissa bits, then exponent bits that vary
    ("arange int32", 0, 0),          # the lowest bit alternates: compressible
    ("random bytes", 8, 8),          # every plane is noise
])
def test_the_noise_planes_are_found_from_the_lowest_bit(bits_plain, kind, low, high):
    r = np.random.default_rng(3)
    a = {"normal float32": lambda: r.standard_normal(16384).astype(np.float32),
         "uniform float64": lambda: r.random(8192),
         "arange int32": lambda: np.arange(16384, dtype=np.int32),
         "random bytes": lambda: r.integers(0, 256, 65536, dtype=np.uint8)}[kind]()
    sample = a.tobytes()
    got = bits_plain(sample, bytearray(len(sample)), bytearray(len(sample)),
                     bytearray(_codec.lz4_bound(len(sample))), a.itemsize, False,
                     1 - _codec.BITS_ACCELERATION, _codec.KEEP)
    assert low <= got <= high


@pytest.mark.parametrize("dtype, low, high", [("<f4", 16, 31), ("<f8", 40, 63),
                                               (">f4", 0, 7)])   # big-endian: the noise is last
def test_noisy_floats_keep_their_bit_planes_without_a_search_of_the_noise(impl, dtype, low, high):
    """Measured floats: bit planes, the noise planes put in as they are (so the
    chunk costs little more than a copy of them; whole bytes of noise as byte
    planes, mode 6; the planes above the noise XORed with their neighbours when
    that is smaller, mode 8), the file still smaller than the data, every value
    back exactly, with 1 and 2 threads."""
    r = np.random.default_rng(5)
    a = (r.standard_normal(700_000) * 30).astype(dtype)
    enc = _codec.ChunkEncoder(CODEC_LZ4)
    view = memoryview(a).cast("B")[:CHUNK_SIZE]
    mode, (mask, plain, level, xor) = enc.choose_mode(view, a.itemsize, *enc._scratch())
    noise = 8 * bin(mask).count("1") + plain
    assert low <= noise <= high and mask == (1 << noise // 8) - 1
    if xor:
        assert mode == MODE_XOR_BITS and xor == plain + 1
    else:
        assert mode == (MODE_SPLIT if noise >= 8 else MODE_BITS)
    mostly = 4 * noise >= 3 * 8 * a.itemsize
    assert level == 1 - (_codec.NOISE_ACCELERATION if mostly else _codec.BITS_ACCELERATION)
    payloads = []
    for threads in (1, 2):
        data = torpor.dumps(a, threads=threads)
        assert len(data) < 0.97 * a.nbytes
        assert_same_array(torpor.loads(data, threads=threads), a)
        sec = torpor.info(io.BytesIO(data))["sections"][0]
        payloads.append(data[sec["payload_offset"]:sec["payload_offset"] + sec["length"]])
    assert payloads[0] == payloads[1]          # the bytes do not depend on the threads


@pytest.mark.parametrize("framer", BITS_FRAMERS)
def test_damaged_bit_plane_frames_are_refused(framer):
    raw = np.arange(20_000, dtype="<u4").tobytes()
    block = _codec.bits_block(14, 4)
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = _codec.bits_frame(raw, out, bytearray(1 << 14), bytearray(1 << 14), 4, True, block, 0)
    frame = bytes(out[:n])
    into = framer[1]

    def decode(data, raw_len=len(raw), blk=block, k=4):
        into(data, bytearray(raw_len), 0, raw_len, bytearray(1 << 16), bytearray(1 << 16), k, True, blk)
    decode(frame)
    for bad in (frame[:-5], frame[:30], frame[:7] + b"\xff\xff\xff\x7f" + frame[11:],
                b"\x00" * 7 + frame[7:]):
        with pytest.raises((ValueError, RuntimeError)):     # the decoder makes both CorruptFileError
            decode(bad)
    with pytest.raises(ValueError):
        decode(frame, blk=block + 4)           # not groups of 8 items
    with pytest.raises(ValueError):
        decode(frame, k=3)


def test_chunk_records_with_a_bad_block_shift_are_refused(tmp_path):
    """A bit-plane chunk whose record gives no block size, or one outside 1 KiB to
    4 MiB, is a damaged file, as is a block size on a chunk of another mode."""
    import struct
    arr = np.sort(rng.integers(0, 1 << 20, 300_000))
    good = torpor.dumps(arr)
    pos = good.find(struct.pack("<I", _codec.CHUNK_MAGIC))
    rec = list(_codec.CHUNK_RECORD.unpack_from(good, pos))
    assert rec[4] in (MODE_BITS, MODE_DELTA_BITS) and rec[5] == 18
    for shift in (0, 9, 23, 255):
        bad = bytearray(good)
        _codec.CHUNK_RECORD.pack_into(bad, pos, *rec[:5], shift, *rec[6:])
        with pytest.raises(torpor.CorruptFileError):
            torpor.loads(bytes(bad))
    small = torpor.dumps(np.arange(5000, dtype=np.uint8) % 7, compress="gzip")
    pos = small.find(struct.pack("<I", _codec.CHUNK_MAGIC))
    rec = list(_codec.CHUNK_RECORD.unpack_from(small, pos))
    bad = bytearray(small)
    _codec.CHUNK_RECORD.pack_into(bad, pos, *rec[:5], 18, *rec[6:])
    with pytest.raises(torpor.CorruptFileError):
        torpor.loads(bytes(bad))


def test_files_are_the_current_version_only_when_they_can_hold_bit_planes():
    import struct
    a = np.arange(100_000, dtype=np.float32)
    assert torpor.FORMAT_VERSION == 4
    assert struct.unpack_from("<H", torpor.dumps(a), 8)[0] == 4
    assert struct.unpack_from("<H", torpor.dumps(a, compress=None), 8)[0] == 1
    assert struct.unpack_from("<H", torpor.dumps(a, compress="gzip"), 8)[0] == 1
    from torpor.engine import pipeline
    from torpor.format.container import header_bytes
    data = torpor.dumps(a)
    header = pipeline.read_header(io.BytesIO(data))
    head = header_bytes(header)
    assert data.startswith(head)
    newer = header_bytes(dict(header, format=5))
    assert len(newer) == len(head)
    with pytest.raises(torpor.FormatError, match="version 5.*Upgrade torpor"):
        torpor.loads(newer + data[len(head):])


# --- byte planes and bit planes (modes 6 and 7) --------------------------------------

def _split_reference(raw, k, mask):
    """One filter block of mode 6 (docs/FORMAT.md), one byte and one bit at a time:
    the byte planes of ``mask`` in order, then the bit planes of the other bytes
    (byte by byte, bit 0 first), then the items after the last group of 8."""
    n = len(raw) // k
    m = n - n % 8
    out = bytearray()
    for j in range(k):
        if mask >> j & 1:
            out += bytes(raw[i * k + j] for i in range(m))
    for j in range(k):
        if mask >> j & 1:
            continue
        for b in range(8):
            plane = bytearray(m // 8)
            for i in range(m):
                if raw[i * k + j] >> b & 1:
                    plane[i // 8] |= 1 << (i % 8)
            out += plane
    return bytes(out) + bytes(raw[m * k:])


def _frame_blocks(frame):
    """The (stored?, data) of every lz4 block of a frame torpor wrote."""
    pos, blocks = 7, []
    while (word := int.from_bytes(frame[pos:pos + 4], "little")):
        size = word & 0x7FFFFFFF
        blocks.append((bool(word >> 31), bytes(frame[pos + 4:pos + 4 + size])))
        pos += 4 + size
    assert pos + 4 == len(frame)
    return blocks


@pytest.mark.parametrize("k, mask", [(2, 1), (2, 2), (3, 0b101), (4, 0b111), (4, 0b1001),
                                     (8, 0b111111), (8, 0b10000001)])
@pytest.mark.parametrize("count", [8, 72, 1029])
def test_byte_planes_are_the_documented_layout(k, mask, count):
    """_py_bits_block (the twin that the native kernel is checked against below)
    lays a block out as the format says, for low and other masks, with tails."""
    raw = rng.integers(0, 256, k * count, dtype=np.uint8).tobytes()
    assert _codec._py_bits_block(raw, k, False, mask) == _split_reference(raw, k, mask)
    assert _codec._py_unbits_block(_split_reference(raw, k, mask), k, False, mask) == raw


def _split_cases():
    r = np.random.default_rng(11)
    n = 150_003
    noisy = r.standard_normal(n).astype("<f4")
    walk = (np.arange(n) * 100_000 + r.integers(0, 1 << 16, n)).astype("<i8")
    return [("f4 low", noisy, 0b111, False, 2), ("f4 odd mask", noisy, 0b101, False, 0),
            ("f8 high", r.random(n // 3), 0b111111, False, 7),
            ("i8 delta", walk, 0b11, True, 3), ("i8 delta odd", walk, 0b10, True, 0),
            ("u2", (r.integers(0, 256, n) + 256 * (np.arange(n) // 5000 % 3)).astype("<u2"), 0b1,
             False, 0),
            ("i4 delta", np.cumsum(r.integers(-300, 300, n)).astype("<i4"), 0b1, True, 1),
            ("3-byte", _three_byte_items(r, 40_001), 0b011, False, 0)]


def _three_byte_items(r, n):
    """Items of two noise bytes and a slowly changing third."""
    items = np.empty((n, 3), np.uint8)
    items[:, :2] = r.integers(0, 256, (n, 2))
    items[:, 2] = np.arange(n) // 1000 % 4
    return items.reshape(-1).view("V3")


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("case", _split_cases(), ids=lambda c: c[0])
def test_byte_and_bit_plane_frames_round_trip_on_both_kernels(framer, case):
    """Each filter block is two lz4 blocks: its byte planes, stored, then the bit
    planes and the tail (their noise planes in front as literals). python-lz4
    decodes every block to the documented layout, and both kernels' frames
    decode on both kernels to the input."""
    _, a, mask, delta, plain = case
    k = a.itemsize
    raw = a.tobytes()
    block = _codec.bits_block(18, k)
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = framer[0](raw, out, bytearray(_codec.lz4_bound(block)), bytearray(block), k, delta,
                  block, -4, plain, mask)
    assert n > 0
    blocks = _frame_blocks(out[:n])
    starts = range(0, len(raw), block)
    assert len(blocks) == 2 * len(starts)
    for i, start in enumerate(starts):
        part = raw[start:start + block]
        want = _codec._py_bits_block(part, k, delta, mask)
        m = len(part) // k // 8 * 8
        before = m * bin(mask).count("1")
        (stored, planes), (packed, rest) = blocks[2 * i], blocks[2 * i + 1]
        assert stored and planes == want[:before]
        if not delta:
            assert want == _split_reference(part, k, mask)
        got = rest if packed else lz4.block.decompress(rest, uncompressed_size=len(want) - before)
        assert got == want[before:]
        if plain and not packed:
            assert _first_literal_run(rest) >= m // 8 * plain
    for into in {f.values[0][1] for f in BITS_FRAMERS}:
        back = bytearray(len(raw) + 3)
        into(memoryview(out)[:n], back, 3, len(raw), bytearray(block), bytearray(block), k, delta,
             block, mask)
        assert bytes(back[3:]) == raw


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("k, mask", [(4, 0b10000), (4, 0b1111), (2, 0b11), (1, 1), (8, 256)])
def test_byte_plane_masks_that_do_not_suit_the_items_are_refused(framer, k, mask):
    raw = bytes(k * 64)
    with pytest.raises(ValueError, match="mask"):
        framer[0](raw, bytearray(_codec.lz4_bound(len(raw))), bytearray(1 << 14),
                  bytearray(1 << 14), k, False, 8 * k * 8, 0, 0, mask)
    with pytest.raises(ValueError, match="mask"):
        framer[1](raw, bytearray(len(raw)), 0, len(raw), bytearray(1 << 14), bytearray(1 << 14),
                  k, False, 8 * k * 8, mask)


@pytest.mark.parametrize("framer", BITS_FRAMERS)
def test_plain_bit_planes_past_the_bytes_left_are_refused(framer):
    """With bytes 0-2 byte planes, a 4-byte item has 8 bit planes left."""
    raw = bytes(4 * 64)
    with pytest.raises(ValueError, match="plain"):
        framer[0](raw, bytearray(_codec.lz4_bound(len(raw))), bytearray(1 << 14),
                  bytearray(1 << 14), 4, False, 256, 0, 9, 0b111)


def _noisy_split_frame(seed, count, plain):
    """(raw bytes, block size, mode 6 frame) of ``count`` noisy float32 values, bytes
    0-2 byte planes, in 16 KiB blocks (the native kernel writes it)."""
    raw = np.random.default_rng(seed).standard_normal(count).astype("<f4").tobytes()
    block = _codec.bits_block(14, 4)
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = _codec.bits_frame(raw, out, bytearray(_codec.lz4_bound(block)), bytearray(block), 4, False,
                          block, -4, plain, 0b111)
    return raw, block, bytes(out[:n])


def _split_decoder(framer, raw, block):
    """Decode a frame of ``_noisy_split_frame`` with ``framer``'s decoder (``mask``:
    the byte-plane mask it is told)."""
    def decode(data, mask=0b111):
        framer[1](data, bytearray(len(raw)), 0, len(raw), bytearray(block), bytearray(block), 4,
                  False, block, mask)
    return decode


@pytest.mark.parametrize("framer", BITS_FRAMERS)
def test_damaged_byte_and_bit_plane_frames_are_refused(framer):
    raw, block, frame = _noisy_split_frame(4, 50_000, 2)
    decode = _split_decoder(framer, raw, block)
    decode(frame)
    first = int.from_bytes(frame[7:11], "little")
    assert first >> 31 and first & 0x7FFFFFFF == block // 4 * 3      # the byte planes, stored
    shorter = frame[:7] + (first - 8).to_bytes(4, "little") + frame[11:]
    for bad in (frame[:-5], frame[:40], shorter, frame[:7] + frame[11 + (first & 0x7FFFFFFF):]):
        with pytest.raises((ValueError, RuntimeError)):
            decode(bad)
    if framer[1] is not _codec._py_bits_frame_into:
        # the native decoder checks every block against its part of a filter
        # block; the twin decodes the whole frame and checks its length
        with pytest.raises(ValueError):
            decode(frame, mask=0b11)        # other byte planes: the blocks do not fit


def _payloads(data):
    """Every section's stored payload (a file's bytes but for its header's time)."""
    return [data[s["payload_offset"]:s["payload_offset"] + s["length"]]
            for s in torpor.info(io.BytesIO(data))["sections"]]


def _first_record(data):
    import struct
    pos = data.find(struct.pack("<II", _codec.CHUNK_MAGIC, 20))
    return pos, list(_codec.CHUNK_RECORD.unpack_from(data, pos))


@pytest.mark.parametrize("mode, shift, mask, z", [
    (MODE_SPLIT, 18, 0, 0),            # mode 6 needs a mask
    (MODE_BITS, 18, 0b111, 0),         # mode 4 has none
    (MODE_SPLIT, 18, 0b1111, 0),       # every byte of a 4-byte item
    (MODE_SPLIT, 18, 0b10000, 0),      # a byte the items do not have
    (MODE_SPLIT, 9, 0b111, 0),         # no block size
    (MODE_SPLIT, 18, 0b111, 1),        # the reserved byte
    (MODE_DELTA_SPLIT, 18, 0b11, 0),   # another mask than the one the data was written with
])
def test_chunk_records_of_byte_and_bit_planes_are_checked(impl, mode, shift, mask, z):
    """A mode 6 or 7 record whose mask or block size does not suit its chunk is a
    damaged file, never a wrong array."""
    a = np.random.default_rng(9).random(300_000).astype("<f4")        # noise below the exponent
    _refused_with_first_record(a, [MODE_SPLIT, 18, 0b111, 0], [mode, shift, mask, z])


def _refused_with_first_record(a, written, layout):
    """``a``'s file, whose first chunk record has ``written`` (mode, shift, mask,
    byte 19), is refused as damaged with ``layout`` in their place."""
    good = torpor.dumps(a)
    pos, rec = _first_record(good)
    assert rec[4:8] == written
    bad = bytearray(good)
    _codec.CHUNK_RECORD.pack_into(bad, pos, *rec[:4], *layout, rec[8])
    with pytest.raises(torpor.CorruptFileError):
        torpor.loads(bytes(bad))


@pytest.mark.parametrize("version, mode", [(1, MODE_SPLIT), (2, MODE_SPLIT), (1, MODE_XOR_BITS),
                                           (2, MODE_XOR_BITS), (3, MODE_XOR_BITS)])
def test_chunk_modes_newer_than_the_files_version_are_refused(impl, version, mode, tmp_path):
    """Modes 8 and 9 came with version 4, 6 and 7 with version 3 (and 4 and 5
    with version 2): an older file holding one is damaged, whatever else checks
    out."""
    r = np.random.default_rng(9)
    a = (r.random(300_000) if mode == MODE_SPLIT else r.standard_normal(300_000)).astype("<f4")
    good = torpor.dumps({"a": a})
    assert _first_record(good)[1][4] == mode
    assert_same_array(a, torpor.loads(with_format_version(good, 4))["a"])
    if mode == MODE_SPLIT:
        assert_same_array(a, torpor.loads(with_format_version(good, 3))["a"])
    old = with_format_version(good, version)
    with pytest.raises(CorruptFileError, match=f"mode {mode}, which format version {version} does not"):
        torpor.loads(old)
    path = tmp_path / "old.torpor"
    path.write_bytes(old)
    with pytest.raises(CorruptFileError, match=f"mode {mode}"):
        torpor.load(path, mmap=True)
    with pytest.raises(CorruptFileError, match=f"mode {mode}"):
        torpor.verify(path)


def test_bit_plane_modes_in_a_version_1_file_are_refused():
    """The version 2 golden file's modes 4 and 5, under a version 1 preamble."""
    import pathlib
    golden = pathlib.Path(__file__).parent.parent / "golden" / "v2_lz4_bits.torpor"
    old = with_format_version(golden.read_bytes(), 1)
    with pytest.raises(CorruptFileError, match=r"mode [45], which format version 1 does not"):
        torpor.loads(old)
    assert torpor.loads(with_format_version(golden.read_bytes(), 2)).keys() == torpor.load(golden).keys()


def test_every_readable_version_names_its_last_chunk_mode():
    from torpor.format.constants import LAST_MODE, READABLE_VERSIONS
    assert sorted(LAST_MODE) == sorted(READABLE_VERSIONS)
    assert [LAST_MODE[v] for v in sorted(LAST_MODE)] == sorted(LAST_MODE.values())
    assert LAST_MODE[max(READABLE_VERSIONS)] == max(_codec._MODES)


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<u2", "<i8"])
def test_noise_bytes_round_trip_through_files_on_both_walkers(impl, dtype):
    """Whole arrays whose chunks take mode 6 or 7, with a tail and shared: values,
    dtype, shape and identity back, on 1 and 2 threads, bytes not depending on
    the threads."""
    r = np.random.default_rng(12)
    n = 700_005
    a = {"<f4": lambda: r.standard_normal(n).astype("<f4"), "<f8": lambda: r.random(n),
         "<u2": lambda: (r.integers(0, 256, n) + 256 * (np.arange(n) // 5000 % 3)).astype("<u2"),
         "<i8": lambda: (np.arange(n) * 100_000 + r.integers(0, 1 << 16, n)).astype("<i8")}[dtype]()
    outs = []
    for threads in (1, 2):
        data = torpor.dumps({"a": a, "again": a, "view": a[::2]}, threads=threads)
        outs.append(data)
        got = torpor.loads(data, threads=threads)
        assert got["a"] is got["again"]
        assert_same_array(a, got["a"])
        assert_same_array(a[::2], got["view"])
    _, rec = _first_record(outs[0])
    assert rec[4] in (MODE_SPLIT, MODE_DELTA_SPLIT, MODE_XOR_BITS, MODE_DELTA_XOR_BITS) and rec[6]
    assert _payloads(outs[0]) == _payloads(outs[1])


def test_encoder_buffers_are_handed_on_to_the_next_save():
    """A save's scratch and output buffers go to the next one (they are fresh
    pages otherwise), at most SPARE_BYTES of them; release_spares frees them.
    Files stay right whatever the reused buffers held."""
    _codec.release_spares()
    a = np.random.default_rng(13).standard_normal(3_000_000).astype("<f4")
    first = torpor.dumps(a, threads=2)
    kept = _codec._SPARES.nbytes
    assert 0 < kept <= _codec.SPARE_BYTES
    reused = _codec._SPARES.reused
    b = np.arange(3_000_000, dtype="<f4")           # other data in the same buffers
    second = torpor.dumps(b, threads=2)
    assert _codec._SPARES.reused >= reused + 4      # 2 threads' scratch, outputs
    assert_same_array(b, torpor.loads(second))
    assert _payloads(torpor.dumps(a, threads=2)) == _payloads(first)
    _codec.release_spares()
    assert _codec._SPARES.nbytes == 0 and not _codec._SPARES._bufs


def test_concurrent_saves_share_the_spare_buffers_safely():
    import concurrent.futures
    r = np.random.default_rng(14)
    arrays = [r.standard_normal(1_500_000).astype("<f4") * i for i in range(6)]
    want = [_payloads(torpor.dumps(x, threads=1)) for x in arrays]
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda x: _payloads(torpor.dumps(x, threads=2)), arrays))
    assert got == want


@pytest.mark.parametrize("framer", BITS_FRAMERS)
def test_both_kernels_refuse_frames_whose_blocks_do_not_match_the_layout(framer):
    """A mode 6 frame whose filter blocks are one lz4 block each (the bytes all
    there, in order), or with bytes after its end mark, is refused by the native
    decoder and the twin alike: both walk the blocks the format lays out."""
    raw, block, frame = _noisy_split_frame(15, 40_000, 0)
    one_block = [_codec.FRAME_HEAD]
    for start in range(0, len(raw), block):
        q = _codec._py_bits_block(raw[start:start + block], 4, False, 0b111)
        one_block += [(len(q) | 0x80000000).to_bytes(4, "little"), q]
    one_block.append(_codec.END_MARK)
    decode = _split_decoder(framer, raw, block)
    decode(frame)
    for bad in (b"".join(one_block), frame + b"\0"):
        with pytest.raises(ValueError):
            decode(bad)


@pytest.mark.parametrize("framer", BITS_FRAMERS)
def test_lz4_bound_holds_64_filter_blocks_of_noise(framer):
    """The worst case a frame can take: 64 filter blocks of incompressible data,
    each two lz4 blocks, in lz4_bound's room."""
    k = 8
    block = _codec.bits_block(12, k)
    raw = np.random.default_rng(16).integers(0, 256, 64 * block, dtype=np.uint8)
    raw[::k] = 0                                 # one byte that compresses: a frame, not -1
    raw = raw.tobytes()
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = framer[0](raw, out, bytearray(_codec.lz4_bound(block)), bytearray(block), k, False, block,
                  -4, 0, 0b01111110)
    assert 0 < n <= len(out) and len(_frame_blocks(out[:n])) == 128
    back = bytearray(len(raw))
    framer[1](memoryview(out)[:n], back, 0, len(raw), bytearray(block), bytearray(block), k, False,
              block, 0b01111110)
    assert bytes(back) == raw


# --- bit planes XORed with their neighbours (modes 8 and 9) -----------------------

def _xor_reference(raw, k, mask, xor):
    """One filter block of mode 8 (docs/FORMAT.md): mode 6's layout (mode 4's when
    ``mask`` is 0), then each bit plane from plane ``xor`` on (counted after the
    byte planes) XORed with the plane before it as it was."""
    block = _split_reference(raw, k, mask)
    m = len(raw) // k // 8 * 8
    before, g = m * bin(mask).count("1"), m // 8
    planes = [block[before + p * g:before + (p + 1) * g] for p in range(8 * (k - bin(mask).count("1")))]
    xored = planes[:xor] + [bytes(a ^ b for a, b in zip(planes[p], planes[p - 1]))
                            for p in range(xor, len(planes))]
    return block[:before] + b"".join(xored) + block[before + len(planes) * g:]


@pytest.mark.parametrize("k, mask, xor", [(1, 0, 1), (2, 0, 5), (2, 1, 1), (4, 0b111, 3),
                                          (4, 0b101, 15), (8, 0, 1), (8, 0b111111, 9)])
@pytest.mark.parametrize("count", [8, 72, 1029])
def test_xored_bit_planes_are_the_documented_layout(k, mask, xor, count):
    raw = rng.integers(0, 256, k * count, dtype=np.uint8).tobytes()
    want = _xor_reference(raw, k, mask, xor)
    assert want != _split_reference(raw, k, mask)
    assert _codec._py_bits_block(raw, k, False, mask, xor) == want
    assert _codec._py_unbits_block(want, k, False, mask, xor) == raw


def _xor_cases():
    r = np.random.default_rng(21)
    n = 150_003
    noisy = r.standard_normal(n).astype("<f4")
    return [("f4 noise bytes", noisy, 0b111, False, 2, 3), ("f4 no byte planes", noisy, 0, False, 0, 1),
            ("f8 grid", r.uniform(0, 500, n // 3).round(1), 0, False, 0, 1),
            ("f4 delta", (np.cumsum(r.standard_normal(n)) * 1e3).astype("<f4"), 0, True, 0, 1),
            ("i8 delta with byte planes", (np.arange(n) * 100_000 + r.integers(0, 1 << 16, n)).astype("<i8"),
             0b11, True, 0, 1),
            ("u1", (r.integers(0, 4, n) * 60).astype(np.uint8), 0, False, 0, 1),
            ("u2 high plane", (r.integers(0, 4, n) * 300).astype("<u2"), 0, False, 0, 9)]


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("case", _xor_cases(), ids=lambda c: c[0])
def test_xored_bit_plane_frames_round_trip_on_both_kernels(framer, case):
    """Every lz4 block of a mode 8 or 9 frame decodes (python-lz4) to the documented
    layout, and both kernels' frames decode on both kernels to the input; a
    decoder told another first plane, or none, gets other bytes (unless the
    planes between are all zeros, when both layouts are the same bytes)."""
    _, a, mask, delta, plain, xor = case
    k = a.itemsize
    raw = a.tobytes()
    block = _codec.bits_block(18, k)
    out = bytearray(_codec.lz4_bound(len(raw)))
    n = framer[0](raw, out, bytearray(_codec.lz4_bound(block)), bytearray(block), k, delta,
                  block, -4, plain, mask, xor)
    assert n > 0
    blocks = _frame_blocks(out[:n])
    parts = 2 if mask else 1
    starts = range(0, len(raw), block)
    assert len(blocks) == parts * len(starts)
    for i, start in enumerate(starts):
        part = raw[start:start + block]
        want = _codec._py_bits_block(part, k, delta, mask, xor)
        if not delta:
            assert want == _xor_reference(part, k, mask, xor)
        got = b""
        for stored, data in blocks[parts * i:parts * (i + 1)]:
            got += data if stored else lz4.block.decompress(data, uncompressed_size=len(want) - len(got))
        assert got == want
    for into in {f.values[0][1] for f in BITS_FRAMERS}:
        back = bytearray(len(raw) + 3)
        into(memoryview(out)[:n], back, 3, len(raw), bytearray(block), bytearray(block), k, delta,
             block, mask, xor)
        assert bytes(back[3:]) == raw
        for other in (0, xor - 1 or xor + 1):
            wrong = bytearray(len(raw))
            into(memoryview(out)[:n], wrong, 0, len(raw), bytearray(block), bytearray(block), k, delta,
                 block, mask, other)
            same = all(_codec._py_bits_block(raw[s:s + block], k, delta, mask, other)
                       == _codec._py_bits_block(raw[s:s + block], k, delta, mask, xor) for s in starts)
            assert (bytes(wrong) == raw) == same
            assert not same or other        # no XOR at all always differs here


def test_xor_makes_measured_floats_smaller_and_the_trial_keeps_it(impl, monkeypatch):
    """Noisy float32: the exponent's planes XORed are smaller than as they are, the
    trial chooses mode 8 for it, and the file is smaller than with mode 6."""
    a = np.random.default_rng(22).standard_normal(1_000_000).astype("<f4")
    raw = a.tobytes()[:CHUNK_SIZE]
    enc = _codec.ChunkEncoder(CODEC_LZ4)
    mode, (mask, plain, level, xor) = enc.choose_mode(memoryview(raw), 4, *enc._scratch())
    assert (mode, mask, xor) == (MODE_XOR_BITS, 0b111, plain + 1)
    block = _codec.bits_block(18, 4)
    sizes = {}
    for x in (0, xor):
        out = bytearray(_codec.lz4_bound(len(raw)))
        sizes[x] = _codec.bits_frame(raw, out, bytearray(_codec.lz4_bound(block)), bytearray(block), 4,
                                     False, block, level, plain, mask, x)
    assert sizes[xor] < sizes[0] * _codec.XOR_GAIN
    data = torpor.dumps(a)
    assert_same_array(a, torpor.loads(data))
    monkeypatch.setattr(_codec, "XOR_GAIN", 0.0)          # no XOR: mode 6
    without = torpor.dumps(a)
    assert _first_record(without)[1][4:8] == [MODE_SPLIT, 18, 0b111, 0]
    assert len(data) < 0.97 * len(without) and len(without) < 0.93 * a.nbytes


def test_the_planner_lets_xor_choose_between_the_bit_filters(impl):
    """A sawtooth of int64: without XOR, delta bit planes are not 2% smaller than
    plain ones, so plain ones won; with XOR, delta is half the size. The planner makes both filters' plans and takes mode 9,
    whichever lz4 binding ran the trials."""
    a = np.arange(600_000, dtype="<i8") % 1928
    raw = a.tobytes()[:CHUNK_SIZE]
    enc = _codec.ChunkEncoder(CODEC_LZ4)
    mode, (mask, plain, level, xor) = enc.choose_mode(memoryview(raw), 8, *enc._scratch())
    assert (mode, mask, plain, xor) == (MODE_DELTA_XOR_BITS, 0, 0, 1)
    assert _modes(a) == {MODE_DELTA_XOR_BITS}
    assert_same_array(a, torpor.loads(torpor.dumps(a)))
    # why: the filters' order turns round once XOR is tried
    sample = memoryview(raw)[:_codec.SAMPLE]
    s = {d: enc._trial(sample, 8, MODE_DELTA_BITS if d else MODE_BITS, *enc._scratch())[0]
         for d in (False, True)}
    assert not s[True] < s[False] * _codec.FILTER_GAIN
    plans = {d: enc._plane_plan(sample, len(sample), 8, d, s[d], *enc._scratch())
             for d in (False, True)}
    assert plans[False][1] in (MODE_BITS, MODE_XOR_BITS)
    assert plans[True][1] == MODE_DELTA_XOR_BITS and plans[True][0] < 0.6 * plans[False][0]


def test_gzip_keeps_the_filter_its_first_trial_chose(impl, monkeypatch):
    """gzip has no XOR: the lz4 trials with XOR that make lz4 swap bit filters
    must not swap gzip's (which follows delta or not), or int64 ``arange % 300``
    gzips to 2.3x the size."""
    a = np.arange(131072, dtype=np.int64) % 300
    assert _modes(a) == {MODE_DELTA_XOR_BITS}          # lz4 swaps to delta
    swapped = torpor.dumps(a, compress="gzip")
    monkeypatch.setattr(_codec, "SWAP_GAIN", 0.0)      # no swap
    assert _modes(a) != {MODE_DELTA_XOR_BITS}
    assert _sections(torpor.dumps(a, compress="gzip")) == _sections(swapped)
    assert_same_array(a, torpor.loads(swapped))


def test_a_swap_of_bit_filters_needs_a_clear_margin_on_the_sample(impl, monkeypatch):
    """The swap rests on a 64 KiB sample: a big-endian int32 sawtooth that crosses
    zero has its sample 14% smaller under delta with XOR and its chunk 28%
    larger. SWAP_GAIN keeps the first plan there."""
    a = ((np.arange(131072) % 1098) - 341).astype(">i4")
    kept = torpor.dumps(a)
    monkeypatch.setattr(_codec, "SWAP_GAIN", 0.0)
    assert _sections(torpor.dumps(a)) == _sections(kept)   # the plan of no swap
    monkeypatch.setattr(_codec, "SWAP_GAIN", 0.9)
    assert len(torpor.dumps(a)) > 1.2 * len(kept)     # what a 10% margin did
    assert_same_array(a, torpor.loads(kept))


@pytest.mark.parametrize("framer", BITS_FRAMERS)
@pytest.mark.parametrize("k, mask, xor", [(4, 0b111, 8), (4, 0, 32), (4, 0, -1), (1, 0, 8), (8, 0b1111111, 8)])
def test_xored_planes_past_the_bit_planes_are_refused(framer, k, mask, xor):
    raw = bytes(k * 64)
    with pytest.raises((ValueError, OverflowError), match="XORed|negative|convert"):
        framer[0](raw, bytearray(_codec.lz4_bound(len(raw))), bytearray(1 << 14),
                  bytearray(1 << 14), k, False, 8 * k * 8, 0, 0, mask, xor)
    with pytest.raises((ValueError, OverflowError), match="XORed|negative|convert"):
        framer[1](raw, bytearray(len(raw)), 0, len(raw), bytearray(1 << 14), bytearray(1 << 14),
                  k, False, 8 * k * 8, mask, xor)


@pytest.mark.parametrize("mode, shift, mask, xor", [
    (MODE_XOR_BITS, 18, 0b111, 0),        # mode 8 needs a first XORed plane
    (MODE_XOR_BITS, 18, 0b111, 8),        # past the 8 bit planes left
    (MODE_XOR_BITS, 18, 0b111, 2),        # another first plane than the one written
    (MODE_XOR_BITS, 18, 0b111, 4),
    (MODE_XOR_BITS, 18, 0b11, 3),         # another mask
    (MODE_XOR_BITS, 18, 0b1111, 3),       # every byte of a 4-byte item
    (MODE_XOR_BITS, 9, 0b111, 3),         # no block size
    (MODE_DELTA_XOR_BITS, 18, 0b111, 3),  # the delta filter it was not written with
    (MODE_SPLIT, 18, 0b111, 3),           # mode 6 has no XORed plane
    (MODE_SPLIT, 18, 0b111, 0),           # the same bytes without the XOR: other data
])
def test_chunk_records_of_xored_bit_planes_are_checked(impl, mode, shift, mask, xor):
    """A mode 8 or 9 record whose first XORed plane, mask or block size does not
    suit its chunk is a damaged file, never a wrong array."""
    a = np.random.default_rng(9).standard_normal(300_000).astype("<f4")
    _refused_with_first_record(a, [MODE_XOR_BITS, 18, 0b111, 3], [mode, shift, mask, xor])


@pytest.mark.parametrize("shift", [18, 21, 22])
def test_bit_plane_blocks_larger_than_this_torpors_chunks_load(impl, shift, tmp_path):
    """A block shift up to 22 (4 MiB blocks) is valid: a 1.2 MB chunk is then one
    filter block, the same frame bytes as at shift 18's first block and on. Both
    kernels read it (the native one once refused blocks over its 2 MiB scratch)."""
    r = np.random.default_rng(23)
    a = r.standard_normal(65_536).astype("<f4")          # one 256 KiB block: any shift >= 18
    good = torpor.dumps(a)
    pos, rec = _first_record(good)
    assert rec[4] == MODE_XOR_BITS and rec[5] == 18
    other = bytearray(good)
    _codec.CHUNK_RECORD.pack_into(other, pos, *rec[:5], shift, *rec[6:])
    assert_same_array(a, torpor.loads(bytes(other)))
    path = tmp_path / "big-blocks.torpor"
    path.write_bytes(bytes(other))
    assert_same_array(a, torpor.load(path, mmap=True))
