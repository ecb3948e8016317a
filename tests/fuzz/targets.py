"""Coverage-guided fuzz targets (atheris) for torpor's readers.

    python tests/fuzz/targets.py TARGET CORPUS_DIR [libFuzzer options...]

TARGET is one of
- ``loads``: ``torpor.loads`` of a whole file (the walker: TORPOR_PUREPYTHON);
- ``info``: ``torpor.info`` of a seekable file, and ``verify``;
- ``pipe``: ``torpor.load`` and ``torpor.info`` reading the file as a pipe;
- ``decoder``: the object-stream decoder on bare stream bytes.

The rule every target checks: an input may only raise a ``TorporError``; any
other exception is a finding (libFuzzer writes the input as ``crash-*``). Slow
inputs are findings through libFuzzer's ``-timeout`` and memory through
``-rss_limit_mb`` (``tests/fuzz/run.py`` sets both).

The file targets use a structure-aware mutator: most mutations parse the input
as a torpor file (``documents.py``), change one value inside the header, a
section's meta, the table of contents or a raw payload, and rebuild the file with
every checksum recomputed, so the fuzzer gets past the checksums (plain byte
flips stop there). Python code is instrumented for coverage by atheris; the
Cython extensions get coverage when built with clang's
``-fsanitize=fuzzer-no-link`` (run.py ``--native``).
"""

import io
import os
import random
import sys

import atheris  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))          # tests/: fuzz.documents, helpers

from fuzz import documents  # noqa: E402
from helpers import Pipe  # noqa: E402

# Instrumented for coverage. (run.py --native preloads atheris's libFuzzer, so the
# clang-instrumented extensions find their coverage callbacks when they load.)
with atheris.instrument_imports(include=["torpor"]):
    import torpor
    from torpor.engine import select
    from torpor.engine.safety import Policy

MAX_INPUT = 1 << 20


# --- the targets -----------------------------------------------------------------

def _only_torpor_errors(call, data):
    try:
        call(data)
    except torpor.TorporError:
        pass


def target_loads(data):
    _only_torpor_errors(torpor.loads, data)


def target_info(data):
    _only_torpor_errors(lambda d: torpor.info(io.BytesIO(d)), data)
    _only_torpor_errors(lambda d: torpor.verify(io.BytesIO(d), threads=1), data)


def target_pipe(data):
    _only_torpor_errors(lambda d: torpor.load(Pipe(d, piece=4093)), data)
    _only_torpor_errors(lambda d: torpor.info(Pipe(d, piece=4093)), data)


def target_decoder(data):
    _only_torpor_errors(lambda d: select.Decoder(Policy(), {}).decode(d), data)


TARGETS = {"loads": target_loads, "info": target_info, "pipe": target_pipe,
           "decoder": target_decoder}


# --- the structure-aware mutator -----------------------------------------------------

_INTERESTING = [0, 1, -1, 2, 7, 8, 64, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**62,
                2**63 - 1, 2**63, 2**64 - 1, -(2**63), 10**15, "", "x", "|O", "<f8",
                "struct", "sub", "meta", None, True, [], {}, [0], [2**62, 2**62, 0],
                b"", 1.5, float("inf")]


def _mutate_value(v, rng, depth=0):
    """A copy of ``v`` with one thing inside it changed."""
    if depth < 6 and isinstance(v, dict) and v and rng.random() < 0.8:
        k = rng.choice(list(v))
        v = dict(v)
        if rng.random() < 0.1:
            del v[k]
        else:
            v[k] = _mutate_value(v[k], rng, depth + 1)
        return v
    if depth < 6 and isinstance(v, list) and v and rng.random() < 0.8:
        v = list(v)
        i = rng.randrange(len(v))
        r = rng.random()
        if r < 0.1:
            del v[i]
        elif r < 0.2:
            v.insert(i, rng.choice(_INTERESTING))
        else:
            v[i] = _mutate_value(v[i], rng, depth + 1)
        return v
    if isinstance(v, int) and not isinstance(v, bool) and rng.random() < 0.5:
        return v + rng.choice([-1, 1, -v, v, 1 << rng.randrange(64)])
    return rng.choice(_INTERESTING)


def _mutate_file(data, seed):
    rng = random.Random(seed)
    parts = documents.parse(data)
    what = rng.random()
    fix_toc = True
    if what < 0.2 or not parts.sections:
        parts.header = _mutate_value(parts.header, rng)
    elif what < 0.55:
        s = rng.choice(parts.sections)
        s.meta = _mutate_value(s.meta, rng)
    elif what < 0.75:
        parts.toc = _mutate_value(parts.toc, rng)
        fix_toc = rng.random() < 0.3
    elif what < 0.85:
        s = rng.choice(parts.sections)
        attr = rng.choice(["kind", "codec", "index", "raw"])
        setattr(s, attr, _mutate_value(getattr(s, attr), rng) if attr != "raw" else
                rng.choice([0, 1, s.raw + 1, s.raw * 256, 2**40, 3 << 30]))
        for a in ("kind", "codec", "index"):
            if not isinstance(getattr(s, a), int) or not 0 <= getattr(s, a) < 256:
                setattr(s, a, 1)
        if not isinstance(s.raw, int) or not 0 <= s.raw < 2**64:
            s.raw = 0
    else:
        s = rng.choice(parts.sections)
        p = bytearray(s.payload)
        for _ in range(rng.randrange(1, 4)):
            if p:
                p[rng.randrange(len(p))] = rng.randrange(256)
        s.payload = bytes(p)
    return documents.build(parts, fix_toc=fix_toc, fix_chunks=True)


def custom_mutator(data, max_size, seed):
    if random.Random(seed).random() < 0.8:
        try:
            out = _mutate_file(data, seed)
            if len(out) <= max_size:
                return out
        except Exception:         # not a parseable file: mutate its bytes instead
            pass
    return atheris.Mutate(data, max_size)


def main(argv):
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: targets.py {{{'|'.join(TARGETS)}}} CORPUS [libFuzzer options]")
    name = argv[1]
    target = TARGETS[name]

    def one_input(data):
        if len(data) <= MAX_INPUT:
            target(data)
    args = [argv[0]] + argv[2:]
    if name == "decoder":
        atheris.Setup(args, one_input)
    else:
        atheris.Setup(args, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
