"""The array encoder alone, one thread, no file: CPU seconds per GB and the chunk
modes it chooses, per workload of ``benchmarks.arrays`` (issue 16):

    python -m benchmarks.encode_cpu [--mb 128] [--repeat 7]

A save's wall time on this VM moves with the disk and the neighbours; the
encoder's CPU time per byte is what a change to the filters changes, and it is
measured here without the write, the fsync or the page cache: every chunk of
every array goes through ``ChunkEncoder.choice`` and ``encode`` in file order,
as the writer calls them, and the output buffers are handed back. The order of
the workloads rotates every round; best and median are printed, with the
encoded size and a count of the chunk modes (``docs/FORMAT.md``). The first,
untimed pass decodes every chunk and compares it with the array's bytes.
"""

import argparse
import collections
import statistics
import time

import numpy as np

from benchmarks.arrays import workloads
from torpor.format import codec
from torpor.format.constants import CHUNK_SIZE, CODEC_LZ4

MODE_NAMES = {0: "stored", 1: "lz4", 2: "shuffle", 3: "delta", 4: "bits", 5: "delta bits",
              6: "split", 7: "delta split", 8: "xor bits", 9: "delta xor bits"}


def encode_all(encoder, arrays, modes=None):
    """Bytes out for every chunk of ``arrays``; with ``modes``, counts the modes
    into it and checks that every chunk decodes to what it was."""
    total = 0
    decoder = codec.ChunkDecoder()
    for a in arrays:
        view = memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
        plan = codec.Plan()
        for start, stop in codec.chunk_spans(len(view), CHUNK_SIZE, a.itemsize):
            chunk = view[start:stop]
            got = encoder.encode(chunk, a.itemsize, True, encoder.choice(chunk, a.itemsize, True, plan))
            total += got.stored + codec.CHUNK_RECORD_SIZE
            if modes is not None:
                modes[MODE_NAMES.get(got.mode, str(got.mode))] += 1
                back = bytearray(len(chunk))
                decoder.decode_into(back, 0, b"".join(bytes(p) for p in got.parts), CODEC_LZ4, got.mode,
                                    len(chunk), a.itemsize, got.checksum, (got.shift, got.mask, got.xor))
                if back != chunk:
                    raise AssertionError(f"a {a.dtype} chunk did not decode to its bytes")
            encoder.release(got.buffer)
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    data = workloads(a.mb)
    names = list(data)
    encoder = codec.ChunkEncoder(CODEC_LZ4)
    sizes, modes = {}, {}
    for name in names:                       # warm: the encoder's buffers, the pages
        modes[name] = collections.Counter()
        sizes[name] = encode_all(encoder, data[name], modes[name])
    cpu = {name: [] for name in names}
    for r in range(a.repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c0 = time.process_time()
            encode_all(encoder, data[name])
            cpu[name].append(time.process_time() - c0)
    encoder.close()
    print(f"encoder alone, 1 thread, {a.mb} MiB per workload, best / median of {a.repeat}")
    for name in names:
        gb = sum(x.nbytes for x in data[name]) / 1e9
        c = cpu[name]
        census = ", ".join(f"{k} {v}" for k, v in modes[name].most_common())
        print(f"  {name:16s} cpu/GB {min(c) / gb:5.3f} / {statistics.median(c) / gb:5.3f}"
              f"  size {sizes[name] / 1e6:8.2f} MB ({sizes[name] / (gb * 1e9):5.3f} of the data)"
              f"  chunks: {census}")


if __name__ == "__main__":
    main()
