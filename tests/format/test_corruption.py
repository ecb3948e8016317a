import io
import random
import re

import numpy as np
import pytest

import torpor
from helpers import Pipe, with_format_version
from torpor.format import messagepack as _msgpack
from torpor.errors import CorruptFileError


def small_file():
    return torpor.dumps({"a": [1, 2.5, "x", (3, None)], "arr": np.arange(6000, dtype=np.int32),
                         "b": b"q" * 10}, metadata={"k": "v"})


def test_every_truncated_prefix_is_detected(impl):
    data = small_file()
    for n in range(len(data)):
        with pytest.raises(torpor.CorruptFileError) if n >= 16 else pytest.raises(torpor.FormatError):
            torpor.loads(data[:n])


def test_truncated_prefixes_in_sequence(impl):
    data = small_file()
    for n in range(0, len(data), 7):
        with pytest.raises(torpor.FormatError):
            torpor.load(io.BufferedReader(Pipe(data[:n], piece=1000)))


@pytest.mark.parametrize("seed", range(4))
def test_random_byte_changes(impl, seed):
    data = small_file()
    good = torpor.loads(data)
    rnd = random.Random(seed)
    for _ in range(150):
        bad = bytearray(data)
        i = rnd.randrange(len(bad))
        bad[i] = (bad[i] + rnd.randrange(1, 256)) % 256
        try:
            out = torpor.loads(bytes(bad))
        except torpor.TorporError:
            continue
        # a change that loads must be harmless (padding): the data is equal
        assert out.keys() == good.keys()
        assert out["a"] == good["a"] and out["b"] == good["b"]
        np.testing.assert_array_equal(out["arr"], good["arr"])


def test_trailing_garbage(impl):
    with pytest.raises(torpor.CorruptFileError):
        torpor.loads(small_file() + b"\0")


def test_not_a_torpor_file():
    with pytest.raises(torpor.FormatError, match="not a torpor file"):
        torpor.loads(b"\x80\x05this is a pickle, or anything else")


def test_newer_format_version():
    """A file of a newer format version (its header checksum valid) asks for an
    upgrade; a flipped version byte is damage, not a newer file."""
    with pytest.raises(torpor.FormatError, match="version 99.*Upgrade") as ei:
        torpor.loads(with_format_version(small_file(), 99))
    assert not isinstance(ei.value, torpor.CorruptFileError)
    flipped = bytearray(small_file())
    flipped[8] ^= 0x40
    with pytest.raises(torpor.CorruptFileError, match="header checksum"):
        torpor.loads(bytes(flipped))


def test_hostile_stream_lengths(impl):
    # Containers claiming more items than bytes exist are refused before allocating
    for stream in [b"\xdd\xff\xff\xff\xff", b"\xdf\x7f\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                   b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xd4\x01\x05",
                   b"\x92\xd4\x01\x00", b"\xc1", b"\x91\xd4\x16\x00"]:
        dec = impl.Decoder(torpor.engine.safety.Policy(), {})
        with pytest.raises(torpor.CorruptFileError):
            dec.decode(stream)


def test_verify_detects_damage_in_an_array_chunk(tmp_path):
    p = tmp_path / "v.torpor"
    a = np.arange(1_000_000, dtype=np.float64)
    torpor.dump(a, p, compress=None)
    assert torpor.verify(p) >= 1
    info = torpor.info(p)
    sec = next(s for s in info["sections"] if s["kind"] == "array")
    raw = bytearray(p.read_bytes())
    raw[sec["payload_offset"] + 12345] ^= 0x40
    p.write_bytes(bytes(raw))
    with pytest.raises(torpor.CorruptFileError, match="checksum"):
        torpor.verify(p)
    with pytest.raises(torpor.CorruptFileError, match="checksum"):
        torpor.load(p)


PLAIN_READERS = [pytest.param(_msgpack._unpackb_py, id="pure")]
if _msgpack._cmsgpack is not None:
    PLAIN_READERS.insert(0, pytest.param(_msgpack.unpackb, id="msgpack"))


@pytest.mark.parametrize("read", PLAIN_READERS)
def test_plain_documents_refuse_extensions_and_trailing_bytes(read):
    """Header, section meta and table of contents are plain MessagePack: both
    readers refuse extension types (msgpack's timestamp, type -1, included),
    truncation, trailing bytes and impossible counts, with CorruptFileError."""
    import msgpack
    good = msgpack.packb({"sections": [[1, 2, "x"]], "meta": {"a": b"b"}})
    assert read(good) == {"sections": [[1, 2, "x"]], "meta": {"a": b"b"}}
    bad = [
        msgpack.packb({"t": msgpack.Timestamp(1, 0)}),              # ext -1 (fixext4)
        msgpack.packb([msgpack.Timestamp(2**40, 5)]),               # ext -1 (fixext8)
        msgpack.packb({"e": msgpack.ExtType(7, b"xy")}),
        good[:-1],
        good + b"\x00",
        b"\xdd\xff\xff\xff\xff",                                    # array of 2**32-1 items
        b"\xc1",                                                    # never-used byte
    ]
    for data in bad:
        with pytest.raises(CorruptFileError):
            read(data)


def _damaged_array_file(path, compress):
    """A file whose second array section (random float64, incompressible, so lz4
    stores its chunks and a flipped byte fails the checksum) is damaged; returns
    the file's bytes and that section's index."""
    a = np.arange(30_000, dtype=np.int32)
    b = np.random.default_rng(3).integers(0, 256, 80_000, dtype=np.uint8).view(np.float64)
    torpor.dump({"a": a, "b": b}, path, compress=compress)
    index, sec = [(i, s) for i, s in enumerate(torpor.info(path)["sections"])
                  if s["kind"] == "array"][1]
    data = bytearray(path.read_bytes())
    data[sec["payload_offset"] + sec["length"] // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return bytes(data), index


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("compress", [None, "lz4", "gzip"])
def test_damaged_array_names_the_file_and_the_section(tmp_path, impl, compress, threads):
    p = tmp_path / "d.torpor"
    data, index = _damaged_array_file(p, compress)
    where = rf"array section {index} \(float64, shape \(10000,\)\): "
    # gzip's own check finds the damage before torpor's checksum does
    what = "a chunk does not decompress" if compress == "gzip" else "checksum mismatch"
    for load in (lambda: torpor.load(p, threads=threads), lambda: torpor.verify(p, threads=threads),
                 lambda: torpor.load(p, mmap=compress is not None, threads=threads)):
        with pytest.raises(CorruptFileError, match=f"^{re.escape(str(p))}: {where}{what}"):
            load()
    with pytest.raises(CorruptFileError, match=f"^<stream>: {where}{what}"):
        torpor.load(io.BytesIO(data), threads=threads)
    with pytest.raises(CorruptFileError, match=f"^<stream>: {where}{what}"):
        torpor.load(Pipe(data, piece=5000), threads=threads)


def test_mapped_sections_verified_name_the_section(tmp_path):
    """mmap=True maps raw arrays without reading them (torpor.verify checks them);
    a reader told to verify mapped sections names the damaged one."""
    from torpor.format.container import map_file, open_source, read_header, read_toc
    from torpor.format.reader import ContainerReader
    p = tmp_path / "m.torpor"
    _, index = _damaged_array_file(p, None)
    assert torpor.load(p, mmap=True)["b"].shape == (10_000,)
    with open(p, "rb") as f:
        src = open_source(f, str(p))
        read_header(src)
        reader = ContainerReader(src, threads=1, mmap=map_file(f), verify_mapped=True)
        with pytest.raises(CorruptFileError, match=rf"^{re.escape(str(p))}: array section {index} \(float64, "
                                                   rf"shape \(10000,\)\): checksum mismatch"):
            reader.read_all(read_toc(src))
        reader.close()
