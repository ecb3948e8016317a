"""Constants of torpor file format v1, shared by the writer, the reader and both
walkers. docs/FORMAT.md describes every one of them byte by byte; change the two
together, and never change the meaning of a number once a version is released:
add a new one and bump FORMAT_VERSION instead.

setup.py executes this file on its own to give the Cython walker the stream's
type codes (``_ext/_codes.pxd``, generated): it must import nothing."""

FORMAT_VERSION = 4
#: Versions this torpor reads: 2 added chunk modes 4 and 5 (bit planes), 3 added
#: modes 6 and 7 (byte planes and bit planes), 4 added modes 8 and 9 (bit planes
#: XORed with their neighbours), and nothing else: a version 1 file is a version
#: 2 file without them, a version 2 file a version 3 file without 6 and 7, a
#: version 3 file a version 4 file without 8 and 9.
READABLE_VERSIONS = (1, 2, 3, 4)

#: First 8 bytes of every file. The high-bit byte and the CR LF / ^Z / LF tail catch
#: a file mangled by a text-mode transfer, as PNG's signature does.
MAGIC = b"\x89TPR\r\n\x1a\n"
#: Last 8 bytes of every complete file: a file without them was truncated.
END_MAGIC = b"\x89TPREND\n"
SECTION_MAGIC = b"TSEC"
TOC_MAGIC = b"TTOC"

PREAMBLE_SIZE = 16        # MAGIC, u16 version, u16 flags, u32 header length
SECTION_FIXED = 32        # fixed part of a section header, before its meta
FOOTER_SIZE = 24          # u64 toc offset, u64 toc length, END_MAGIC
ALIGN = 64                # every section payload starts at a multiple of this

# Section kinds
SECTION_STREAM = 1           # a frame of the MessagePack object stream
SECTION_ARRAY = 2            # the data of one numpy array
SECTION_BYTES = 3            # the data of one large bytes or bytearray object
SECTION_NAMES = {SECTION_STREAM: "stream", SECTION_ARRAY: "array", SECTION_BYTES: "bytes"}

# Section codecs
CODEC_RAW = 0
CODEC_LZ4 = 1
CODEC_GZIP = 2
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_LZ4: "lz4", CODEC_GZIP: "gzip"}
CODEC_BY_NAME = {None: CODEC_RAW, "none": CODEC_RAW, "raw": CODEC_RAW,
                 "lz4": CODEC_LZ4, "gzip": CODEC_GZIP}

# Chunk modes (per chunk, inside a section's chunk table)
MODE_STORED = 0           # the bytes as they are (inside a stored lz4 frame for lz4)
MODE_PACKED = 1           # compressed by the section's codec
MODE_SHUFFLED = 2         # byte-shuffled, then compressed
MODE_DELTA = 3            # delta of little-endian words, byte-shuffled, then compressed
MODE_BITS = 4             # bit planes (format 2), then compressed
MODE_DELTA_BITS = 5       # delta of little-endian words, bit planes (format 2), then compressed
MODE_SPLIT = 6            # some bytes of an item byte planes, the others bit planes (format 3), then compressed
MODE_DELTA_SPLIT = 7      # delta of little-endian words, then as mode 6 (format 3)
MODE_XOR_BITS = 8         # as mode 6 (or 4: no byte planes), the bit planes XORed with their neighbours (format 4)
MODE_DELTA_XOR_BITS = 9   # delta of little-endian words, then as mode 8 (format 4)
#: The highest chunk mode each format version has: a chunk with a higher mode is
#: damage (no writer of that version could have written it).
LAST_MODE = {1: MODE_DELTA, 2: MODE_DELTA_BITS, 3: MODE_DELTA_SPLIT, 4: MODE_DELTA_XOR_BITS}

#: Raw size of the chunks a payload is cut into. 4 MiB is the largest lz4 block, so
#: every lz4 chunk is one frame holding one block.
CHUNK_SIZE = 2 << 20
#: A chunk is stored uncompressed unless compression saves at least this fraction.
MIN_SAVING = 0.03
#: Largest raw size a single chunk may claim in a file (a bound for hostile input).
MAX_CHUNK_RAW = 64 << 20
#: Largest expansion a chunk may claim over its stored size, per codec (lz4 cannot
#: expand more than 255x, deflate not more than 1032x).
MAX_RATIO = {CODEC_RAW: 1, CODEC_LZ4: 256, CODEC_GZIP: 1040}

#: Stream frames are cut at this many bytes of encoded stream.
FRAME_SIZE = 1 << 20
#: bytes / bytearray objects at least this large get their own section.
BYTES_OOB_MIN = 256 << 10
#: Arrays with at least this many bytes of data get their own section; smaller
#: ones are written inline in the stream.
ARRAY_OOB_MIN = 16 << 10

#: Default limit on nesting depth, for both saving and loading.
MAX_DEPTH = 10_000_000

# MessagePack extension type codes of the object stream.
# "Value" extensions stand alone; "marker" extensions are the first element of a
# MessagePack array and say how to build an object from the array's other elements.
EXT_REF = 1               # value: uint memo index -> the object with that name
EXT_STRREF = 2            # value: uint string-table index -> an equal str
EXT_COMPLEX = 3           # value: 16 bytes, real and imaginary float64 little-endian
EXT_BIGINT = 4            # value: signed big-endian two's complement integer
EXT_STR_SURROGATE = 5     # value: str holding lone surrogates, utf-8 "surrogatepass"

EXT_TUPLE = 16            # [m, items...]
EXT_SET = 17              # [m, items...]
EXT_FROZENSET = 18        # [m, items...]
EXT_BYTEARRAY = 19        # [m, bin]
EXT_BYTES_OOB = 20        # [m, section]            (bytes)
EXT_BYTEARRAY_OOB = 21    # [m, section]            (bytearray)
EXT_GLOBAL = 22           # [m, module, qualname]
EXT_INST = 23             # [m, class, state map or nil]
EXT_REDUCE = 24           # [m, callable, args tuple, state, list items, dict items]
EXT_NDARRAY = 25          # [m, section, dtype, shape, fortran]
EXT_NDARRAY_INLINE = 26   # [m, bin, dtype, shape, fortran]
EXT_OBJARRAY = 27         # [m, dtype, shape, fortran, items...]
EXT_DTYPE = 28            # [m, dtype]
EXT_NPSCALAR = 29         # [m, dtype, bin]

MARKERS = frozenset(range(16, 30))
#: Markers whose object takes the next memo index (a "unique name") when it starts.
MEMO_MARKERS = frozenset(MARKERS - {EXT_DTYPE, EXT_NPSCALAR})
#: Markers that may carry a memo index: the object is being rebuilt for a cycle
#: that reached it while its constructor arguments were still being written.
AT_MARKERS = frozenset({EXT_TUPLE, EXT_FROZENSET, EXT_REDUCE})
