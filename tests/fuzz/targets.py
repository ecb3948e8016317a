"""Coverage-guided fuzz targets (atheris) for torpor's readers.

    python tests/fuzz/targets.py TARGET CORPUS_DIR [libFuzzer options...]

TARGET is one of
- ``loads``: ``torpor.loads`` of a whole file (the walker: TORPOR_PUREPYTHON);
- ``info``: ``torpor.info`` of a seekable file, ``verify``, and the outline
  ``torpor ls`` prints (``format.outline``);
- ``pipe``: ``torpor.load`` and ``torpor.info`` reading the file as a pipe;
- ``decoder``: the object-stream decoder on bare stream bytes;
- ``select``: partial loads (``format.locate``, ``engine.partial``): by the
  input's length, either a view of the file opened and its last item followed
  down and loaded, or one of three ``load(select=)`` paths.

The rule every target checks: an input may only raise a ``TorporError`` (a
hostile input refused in safe mode, an ``UnsafeLoadError`` or a
``CorruptFileError``, is expected); any other exception is a finding (libFuzzer
writes the input as ``crash-*``). Slow inputs are findings through libFuzzer's
``-timeout`` and memory through ``-rss_limit_mb`` (``tests/fuzz/run.py`` sets
both).

The file targets use a structure-aware mutator (``mutate.py``): most mutations
parse the input as a torpor file (``documents.py``) and change one value inside
the header, a section's meta, the table of contents or a raw payload, or change
the object stream (shared references, chains of tuples or lists each holding the
previous one twice, thousands of nesting levels, a payload section or a big list
reused by many markers or calls); then they rebuild the file with every checksum
recomputed, so the fuzzer gets past the checksums (plain byte flips stop there).
The decoder target gets the stream mutations on bare streams. Python code is
instrumented for coverage by atheris; the Cython extensions get coverage when
built with clang's ``-fsanitize=fuzzer-no-link`` (run.py ``--native``).
"""

import io
import os
import random
import sys

import atheris  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))          # tests/: fuzz.mutate, helpers

from fuzz import mutate  # noqa: E402
from helpers import Pipe, down_the_last_items  # noqa: E402

# Instrumented for coverage (run.py --native preloads clang's libFuzzer, so the
# clang-instrumented extensions find their coverage callbacks when they load),
# unless TORPOR_FUZZ_PLAIN is set: run.py replays a slow input that way, to tell
# a slow input from slow instrumentation.
if os.environ.get("TORPOR_FUZZ_PLAIN"):
    import torpor
    from torpor.engine import select
    from torpor.engine.safety import Policy
    from torpor.format import outline
else:
    with atheris.instrument_imports(include=["torpor"]):
        import torpor
        from torpor.engine import select
        from torpor.engine.safety import Policy
        from torpor.format import outline

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
    _only_torpor_errors(lambda d: outline.outline_file(io.BytesIO(d), "fuzz"), data)  # torpor ls


def target_pipe(data):
    _only_torpor_errors(lambda d: torpor.load(Pipe(d, piece=4093)), data)
    _only_torpor_errors(lambda d: torpor.info(Pipe(d, piece=4093)), data)


def target_decoder(data):
    _only_torpor_errors(lambda d: select.Decoder(Policy(), {}).decode(d), data)


# One partial load per input, chosen by its length (mutations change it often).
# Each costs about what a whole load may (a walk of the stream plus the guard's
# budget): four in one input were timed together against the timeout of one.
_SELECT_CALLS = (down_the_last_items,
                 *((lambda path: lambda d: torpor.load(io.BytesIO(d), select=path))(path)
                   for path in ("[0]", "['a'][1]", ".x")))


def target_select(data):
    _only_torpor_errors(_SELECT_CALLS[len(data) % len(_SELECT_CALLS)], data)


TARGETS = {"loads": target_loads, "info": target_info, "pipe": target_pipe,
           "decoder": target_decoder, "select": target_select}


# --- the structure-aware mutators (mutate.py) -----------------------------------------

def custom_mutator(data, max_size, seed):
    """A torpor file: most of the time one change to its documents or its object
    stream (mutate.mutate_file), else atheris's byte mutations."""
    rng = random.Random(seed)
    if rng.random() < 0.8:
        try:
            out, _ = mutate.mutate_file(data, rng.getrandbits(32), max_size)
            if len(out) <= max_size:
                return out
        except Exception:         # not a parseable file: mutate its bytes instead
            pass
    return atheris.Mutate(data, max_size)


def stream_mutator(data, max_size, seed):
    """A bare object stream (the decoder target): often one change of
    mutate.mutate_stream, else atheris's byte mutations."""
    rng = random.Random(seed)
    if rng.random() < 0.6:
        try:
            out, _, _, _ = mutate.mutate_stream(data, rng, (), max_size - len(data))
            if len(out) <= max_size:
                return out
        except Exception:         # not whole MessagePack tokens
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
    atheris.Setup(args, one_input,
                  custom_mutator=stream_mutator if name == "decoder" else custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
