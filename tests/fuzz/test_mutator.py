"""The fuzzing mutator (mutate.py) makes what it promises: files that still parse,
streams whose references still name the right objects after a change, and each
kind of hostile stream a review found torpor open to (shared references,
doubling chains, deep nesting, reused payloads and arguments), which a safe load
refuses. If a mutation stopped producing its kind, these fail."""

import collections
import io
import random

import numpy as np
import pytest

import torpor
from fuzz import documents as D
from fuzz import mutate


def _rewrite(data, change):
    """``data`` with its object stream's tokens replaced by ``change(toks, lay)``."""
    parts = D.parse(data)
    toks, lay = D.parse_stream(D.stream_of(parts))
    stream, n_memo = D.emit(change(toks, lay))
    D.set_stream(parts, stream)
    parts.toc = dict(parts.toc, memo=n_memo)
    return D.build(parts)


def _at(lay, code):
    """The first value that is a marker array of ``code`` (0: a list)."""
    return next(i for i in lay.values() if lay.code[i] == code)


def _shares(root):
    """Whether some container is reached twice from ``root`` (sharing or a cycle)."""
    seen = set()
    todo = [root]
    while todo:
        x = todo.pop()
        if not isinstance(x, (list, tuple, dict, set, frozenset)):
            continue
        if id(x) in seen:
            return True
        seen.add(id(x))
        todo.extend(x.values() if isinstance(x, dict) else x)
        if isinstance(x, dict):
            todo.extend(x.keys())
    return False


PLAIN = {"a": [1, 2], "b": (3, 4), "c": {"x": [5]}, "d": frozenset({(6, 7)}), "e": [(8, 9)],
         "s": {(10, 11), 12}}


# --- the token model ---------------------------------------------------------------------

@pytest.mark.parametrize("compress", [None, "lz4", "gzip"])
def test_streams_survive_tokens_and_rewriting(impl, compress):
    shared = [1, "two"]
    cyc = {"k": 1}
    cyc["self"] = cyc
    obj = {"shared": [shared, shared, ("two", shared)], "cyc": cyc, "arr": np.arange(10_000),
           "big": bytes(300_000), "s": "two", "od": collections.OrderedDict(a=1)}
    data = torpor.dumps(obj, compress=compress)
    parts = D.parse(data)
    stream = D.stream_of(parts)
    toks, _ = D.parse_stream(stream)
    assert D.emit(toks)[0] == stream
    out = torpor.loads(_rewrite(data, lambda toks, lay: toks))
    assert out["shared"][0] is out["shared"][1] is out["shared"][2][1]
    assert out["cyc"]["self"] is out["cyc"] and out["big"] == bytes(300_000)
    assert (out["arr"] == obj["arr"]).all()


def test_references_are_renumbered_after_a_change(impl):
    """Wrapping a value in new objects shifts every later memo and string index:
    the REFs and STRREFs after it must still name their objects."""
    shared = [7]
    data = torpor.dumps([[1], ("k", "v"), "k", shared, shared, {"v": shared}])
    wrapped = _rewrite(data, lambda toks, lay: mutate._replace(
        toks, lay, 1, mutate.nest(toks[1:lay.end[1]], 50, "deque")[0]))     # new objects and strings
    out = torpor.loads(wrapped)
    assert out[1:3] == [("k", "v"), "k"] and out[3] == [7]
    assert out[3] is out[4] is out[5]["v"]
    inner = out[0]
    for _ in range(50):
        assert type(inner) is collections.deque
        inner = inner[0]
    assert inner == [1]
    # the tuple holds the strings "k" and "v": later STRREFs to them become the
    # strings themselves, and the REFs after it name one index lower
    gone = _rewrite(data, lambda toks, lay: mutate._replace(toks, lay, _at(lay, D.EXT_TUPLE),
                                                            mutate.val(0)))
    out = torpor.loads(gone)
    assert out == [[1], 0, "k", [7], [7], {"v": [7]}] and out[3] is out[4] is out[5]["v"]


def test_every_kind_of_mutation_is_made():
    data = torpor.dumps({"x": [bytes(300_000), (1, 2), {"k": frozenset({3})}], "t": ("a", "b")})
    kinds = collections.Counter()
    for seed in range(400):
        out, desc = mutate.mutate_file(data, seed, len(data) + 100_000)
        if desc != "documents":                        # (which may drop what parse needs)
            assert torpor.verify(io.BytesIO(out)) >= 2     # still a file, checksums and all
        kinds[desc.split()[0]] += 1
    assert set(kinds) == set(mutate.STREAM_MUTATIONS) | {"documents"}, kinds
    assert kinds["documents"] > 100


# --- 1. shared references ----------------------------------------------------------------

def test_ref_mutations_share_objects(impl):
    data = torpor.dumps(PLAIN)
    assert not _shares(torpor.loads(data))
    shared = loaded = 0
    for seed in range(60):
        out, desc = mutate.mutate_file(data, seed, kind="ref")
        assert desc.startswith("ref")
        try:
            obj = torpor.loads(out, trusted=True)
        except torpor.TorporError:                     # e.g. a list put where a key goes
            continue
        loaded += 1
        shared += _shares(obj)
    assert loaded >= 30 and shared >= 25, (loaded, shared)


@pytest.mark.parametrize("use", [u for u in mutate.DOUBLING_USES if u != "elsewhere"])
def test_doubling_chains_are_refused(impl, use):
    data = torpor.dumps(PLAIN)
    chain = "tuple" if use != "str" else "list"
    out = _rewrite(data, lambda toks, lay: mutate._replace(
        toks, lay, _at(lay, 0), mutate.doubling(toks[_at(lay, 0):lay.end[_at(lay, 0)]], 60,
                                                chain, use)[0]))
    with pytest.raises(torpor.UnsafeLoadError, match="more work than the file pays for"):
        torpor.loads(out)


def test_doubling_mutations_make_every_chain_and_use():
    data = torpor.dumps(PLAIN)
    seen = set()
    for seed in range(300):
        _, desc = mutate.mutate_file(data, seed, kind="doubling")
        _, chain, _, use = desc.split(" ", 3)
        seen.add(chain)
        seen.add(use.split(" ")[0])
    assert {"tuple", "list", "mixed"} | set(mutate.DOUBLING_USES) <= seen, seen


# --- 2. deep nesting ---------------------------------------------------------------------

@pytest.mark.parametrize("kind, depth", [("tuple", 5000), ("tuple2", 5000), ("objarray", 200),
                                         ("deque", 1500), ("slice", 5000), ("mixed", 5000)])
def test_deep_nesting_is_refused(impl, kind, depth):
    data = torpor.dumps(PLAIN)
    out = _rewrite(data, lambda toks, lay: mutate._replace(
        toks, lay, _at(lay, 0), mutate.nest(toks[_at(lay, 0):lay.end[_at(lay, 0)]], depth, kind,
                                            random.Random(3))[0]))
    with pytest.raises(torpor.UnsafeLoadError, match="nests tuples, object arrays"):
        torpor.loads(out)


def test_nesting_wraps_the_value(impl):
    data = torpor.dumps([[1, 2], "after"])
    out = torpor.loads(_rewrite(data, lambda toks, lay: mutate._replace(
        toks, lay, 1, mutate.nest(toks[1:lay.end[1]], 3000, "tuple")[0])))
    inner, depth = out[0], 0
    while type(inner) is tuple:
        inner, depth = inner[0], depth + 1
    assert depth == 3000 and inner == [1, 2] and out[1] == "after"


def test_nest_mutations_make_every_kind_and_depth():
    data = torpor.dumps([[1, 2], "after"])
    seen = collections.Counter()
    for seed in range(200):
        _, desc = mutate.mutate_file(data, seed, len(data) + 100_000, kind="nest")
        _, kind, depth = desc.split()
        seen[kind] += 1
        seen["deep"] += int(depth) > 4096
    assert set(mutate.NEST_KINDS) <= set(seen) and seen["deep"] >= 20, seen


# --- 3. reuse: payload sections and call arguments -------------------------------------------

def test_a_section_referenced_twice_is_made_and_refused(impl):
    data = torpor.dumps([bytes(300_000), np.arange(10_000), 1])
    refused = 0
    for seed in range(30):
        out, desc = mutate.mutate_file(data, seed, kind="oob")
        assert desc.startswith("oob")
        try:
            torpor.loads(out)
        except torpor.CorruptFileError as e:
            refused += "referenced a second time" in str(e)
    assert refused >= 15


@pytest.mark.parametrize("func", ["builtins.list", "builtins.bytearray"])
def test_many_calls_on_one_argument_are_refused(impl, func):
    data = torpor.dumps([bytes(300_000), 1])

    def calls(toks, lay):
        big = mutate.val(list(range(256)) * 100)
        return mutate._replace(toks, lay, len(toks) - 1, mutate.shared_calls(big, func, 1000)[0])

    with pytest.raises(torpor.UnsafeLoadError, match="more work than the file pays for"):
        torpor.loads(_rewrite(data, calls))

    def section(toks, lay):                    # bytearray(the 300,000 bytes) again and again
        oob = _at(lay, D.EXT_BYTES_OOB)
        return mutate._replace(toks, lay, len(toks) - 1,
                               mutate.shared_calls(None, func, 100, existing=toks[oob])[0])

    with pytest.raises(torpor.UnsafeLoadError, match="more work than the file pays for"):
        torpor.loads(_rewrite(data, section))


def test_call_mutations_reuse_one_argument():
    data = torpor.dumps([bytes(300_000), list(range(1000)), 1])
    funcs, whats = set(), set()
    for seed in range(80):
        _, desc = mutate.mutate_file(data, seed, len(data) + 100_000, kind="calls")
        _, func, _, _, what = desc.split(" ", 4)
        funcs.add(func)
        whats.add(what.split()[0])
    assert set(mutate.CALL_FUNCS) <= funcs and {"list", "bytearray", "section"} <= whats


def test_the_decoder_target_gets_stream_mutations(impl):
    from torpor.engine import select
    from torpor.engine.safety import Policy
    stream = D.stream_of(D.parse(torpor.dumps(PLAIN)))
    kinds = set()
    for seed in range(100):
        out, _, desc, _ = mutate.mutate_stream(stream, random.Random(seed), (), 100_000)
        D.tokenize(out)
        kinds.add(desc.split()[0])
    assert kinds == set(mutate.STREAM_MUTATIONS)
    toks, lay = D.parse_stream(stream)
    out, _ = D.emit(mutate.nest(toks, 5000, "tuple")[0])
    with pytest.raises(torpor.UnsafeLoadError, match="nests tuples"):
        select.Decoder(Policy(), {}).decode(out)
