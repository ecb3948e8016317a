"""Crafted files that use references (a file names every shared object once) to
make a safe load crash, stall or balloon: chains nested deeper than CPython's C
stack allows, shared parts hashed or printed exponentially often, one payload or
list reused thousands of times. Before engine/guard.py each of these crashed the
interpreter or ran for minutes; now each is refused, fast, on both walkers.

The crashing cases run in a subprocess, so a regression fails one test instead of
killing the run."""

import collections
import sys
import time

import numpy as np
import pytest

import torpor
from crafted import D, G, I, M, R, Raw, Ref, S, T, file_of, nested
from helpers import load_in_subprocess
from torpor.engine.guard import MAX_NESTING, NEST_BUILT, NEST_OBJARRAY
from torpor.format.constants import EXT_BYTEARRAY_OOB, EXT_BYTES_OOB, EXT_OBJARRAY


def _refused(data, match, *, within=2.0, error=torpor.UnsafeLoadError):
    t = time.perf_counter()
    with pytest.raises(error, match=match) as ei:
        torpor.loads(data)
    assert time.perf_counter() - t < within
    return ei.value


def _load_in_subprocess(tmp_path, env, data):
    """Load ``data`` in a fresh interpreter; what it printed (a crash fails)."""
    path = tmp_path / "crafted.torpor"
    path.write_bytes(data)
    return load_in_subprocess(path, env)


# --- chains deeper than the C stack --------------------------------------------------

CHAINS = {
    # CPython hashes a tuple's items recursively: the set hashes the whole chain
    "tuples in a set": lambda n: S([nested(lambda x: T(x), 0, n)]),
    "tuples as a dict key": lambda n: D([(nested(lambda x: T(x, 1), 0, n), 0)]),
    # numpy frees an object array's items recursively, with a large frame
    "object arrays": lambda n: nested(lambda x: M(EXT_OBJARRAY, "|O", [1], False, x), 0, n // 8),
    # a deque frees its items recursively too
    "deques": lambda n: nested(lambda x: R(G("collections", "deque"), [x]), 0, n // 2),
    "slices": lambda n: nested(lambda x: R(G("builtins", "slice"), x), 0, n),
    "tuples and object arrays": lambda n: nested(
        lambda x: T(M(EXT_OBJARRAY, "|O", [1], False, T(x))), 0, n // 16),
}


@pytest.mark.parametrize("make", CHAINS.values(), ids=CHAINS.keys())
def test_chains_deeper_than_the_c_stack_are_refused(impl, walker_env, tmp_path, make):
    out = _load_in_subprocess(tmp_path, walker_env, file_of(make(200_000)))
    assert out.startswith("refused:") and "nests tuples, object arrays" in out, out


def test_the_nesting_bound_counts_stack_cost(impl):
    arrays = MAX_NESTING // NEST_OBJARRAY
    ok = file_of(nested(lambda x: M(EXT_OBJARRAY, "|O", [1], False, x), 0, arrays))
    out = torpor.loads(ok)
    for _ in range(arrays - 1):
        out = out[0]
    assert out.dtype == object and out[0] == 0
    over = file_of(nested(lambda x: M(EXT_OBJARRAY, "|O", [1], False, x), 0, arrays + 1))
    _refused(over, "nests tuples")
    deques = MAX_NESTING // NEST_BUILT
    assert isinstance(torpor.loads(file_of(nested(lambda x: R(G("collections", "deque"), [x]),
                                                  0, deques))), collections.deque)
    _refused(file_of(nested(lambda x: R(G("collections", "deque"), [x]), 0, deques + 1)),
             "nests tuples")
    # the error names where, without printing thousands of path steps
    chain = nested(lambda x: T(x), 0, MAX_NESTING + 5)
    e = _refused(file_of(nested(lambda x: [x], chain, 500)), "nests tuples")
    assert len(str(e)) < 1000 and "steps)" in str(e)


def test_lists_and_dicts_nest_freely(impl):
    """Lists, dicts and instances of Python classes break a chain (CPython frees
    them through its trashcan), so deep lists stay loadable by default."""
    data = file_of(nested(lambda x: [T(x)], 0, 3 * MAX_NESTING))
    out = torpor.loads(data)
    for _ in range(3 * MAX_NESTING):
        out = out[0][0]
    assert out == 0


def test_trusted_loads_are_not_bounded(impl):
    data = file_of(nested(lambda x: T(x), 0, 2 * MAX_NESTING))
    out = torpor.loads(data, trusted=True)
    depth = 0
    while type(out) is tuple:
        out = out[0]
        depth += 1
    assert depth == 2 * MAX_NESTING


# --- shared parts multiplied ----------------------------------------------------------

def _doubling_tuples(n):
    """[t0, t1, ...] where t(i+1) = (t(i), t(i)): memo index of t(i) is i + 1."""
    return [T(1)] + [T(Ref(i + 1), Ref(i + 1)) for i in range(n)]


def _doubling_lists(n):
    return [[1]] + [[Ref(i + 1), Ref(i + 1)] for i in range(n)]


SHARED = {
    # hashing t(100) walks 2**100 items
    "tuple in a set": lambda: _doubling_tuples(100) + [S([Ref(101)])],
    "tuple as a dict key": lambda: _doubling_tuples(100) + [D([(Ref(101), 0)])],
    "tuple in a frozenset": lambda: _doubling_tuples(100) + [S([Ref(101), 2], frozen=True)],
    "tuple in dict()": lambda: _doubling_tuples(100) + [R(G("builtins", "dict"), [[Ref(101), 0]])],
    # str() of l(100) prints 2**100 items
    "str() of a list": lambda: _doubling_lists(100) + [R(G("builtins", "str"), Ref(101))],
    # one list of 200,000 items copied by 1,000 calls sharing one argument tuple:
    # list at 1, the first call at 2, its global at 3, its argument tuple at 4
    "list() of a shared list": lambda: [list(range(100)) * 2000, R(G("builtins", "list"), Ref(1))]
        + [R(Ref(3), args_at=4)] * 1000,
    # out-of-band bytes (section 0) at 1, copied 15,000 times
    "bytearray() of shared bytes": lambda: [M(EXT_BYTES_OOB, 0), R(G("builtins", "bytearray"), Ref(1))]
        + [R(Ref(3), args_at=4)] * 15_000,
}


@pytest.mark.parametrize("make", SHARED.values(), ids=SHARED.keys())
def test_shared_parts_cannot_multiply_work(impl, make):
    data = file_of(make(), sections=[b"x" * 60_000])
    assert len(data) < 400_000
    e = _refused(data, "more work than the file pays for")
    assert "trusted=True" in str(e)


def test_a_payload_section_belongs_to_one_object(impl):
    data = file_of([M(EXT_BYTES_OOB, 0), M(EXT_BYTEARRAY_OOB, 0)], sections=[b"x" * 5000])
    _refused(data, "referenced a second time", error=torpor.CorruptFileError)
    ok = file_of([M(EXT_BYTES_OOB, 0), M(EXT_BYTEARRAY_OOB, 1)], sections=[b"x" * 5000, b"y" * 9000])
    a, b = torpor.loads(ok)
    assert a == b"x" * 5000 and type(a) is bytes and b == bytearray(b"y" * 9000)


def test_a_shared_dtype_description_is_paid_for(impl):
    """A structured description of 2,000 fields, shared by 3,000 empty arrays."""
    from torpor.format.arrays import encode_dtype
    from torpor.format.constants import EXT_NDARRAY_INLINE
    desc = encode_dtype(np.dtype([(f"f{i}", "<f8") for i in range(2000)]))
    items = [desc] + [M(EXT_NDARRAY_INLINE, b"", Ref(1), [0], False)] * 3000
    _refused(file_of(items), "more work than the file pays for")


def test_str_of_a_huge_int_is_refused(impl):
    """Python 3.10 before 3.10.7 prints any int, in quadratic time."""
    _refused(file_of(R(G("builtins", "str"), [1 << 20_000])), "int of 20,001 bits")


# --- state applied where it does not belong -------------------------------------------

@pytest.mark.parametrize("obj, match", [
    (R(G("builtins", "bytearray"), b"ab", listitems=[1, 2]), "appends list items"),
    (R(G("builtins", "list"), dictitems={0: 5}), "sets dict items"),
    (R(G("builtins", "object"), dictitems={"a": 1}), "sets dict items"),
], ids=["list items on a bytearray", "dict items on a list", "dict items on an object"])
def test_list_and_dict_items_go_only_into_lists_and_dicts(impl, obj, match):
    _refused(file_of(obj), match)


# --- what real data does with sharing still loads ---------------------------------------

def test_real_data_with_shared_parts_loads_by_default(impl):
    shared = tuple(range(50))
    keys = {(shared, i): i for i in range(20_000)}
    arr = None
    for _ in range(MAX_NESTING // NEST_OBJARRAY - 1):
        outer = np.empty(1, dtype=object)
        outer[0] = arr
        arr = outer
    dq = collections.deque([0])
    for _ in range(500):
        dq = collections.deque([dq])
    od = collections.OrderedDict(a=1)
    for _ in range(50):
        od = collections.OrderedDict(child=od, n=len(od))
    big = list(range(10_000))
    records = [(i, "name", shared) for i in range(20_000)]
    data = {"keys": keys, "arr": arr, "dq": dq, "od": od, "views": [big] * 1000,
            "records": records, "frozen": frozenset(records[:5000])}
    out = torpor.loads(torpor.dumps(data))
    assert out["keys"] == keys
    k0 = next(iter(out["keys"]))
    assert all(k[0] is k0[0] for k in out["keys"])                   # still shared
    assert out["od"] == od and out["records"] == records
    assert out["frozen"] == data["frozen"]
    assert all(v is out["views"][0] for v in out["views"]) and out["views"][0] == big
    a = out["arr"]
    depth = 0
    while a is not None:
        a = a[0]
        depth += 1
    assert depth == MAX_NESTING // NEST_OBJARRAY - 1
    d, depth = out["dq"], 0
    while type(d[0]) is collections.deque:
        d = d[0]
        depth += 1
    assert depth == 500


# --- found by the attack review of the guard --------------------------------------------

def _doubling(n, start=1):
    """Tuples t(0) .. t(n), t(i+1) = (t(i), t(i)); t(i) has memo index start + i."""
    return [T(1)] + [T(Ref(start + i), Ref(start + i)) for i in range(n)]


@pytest.mark.parametrize("obj, match", [
    # a UUID hashes as its int: an int that is a doubling tuple hashes forever
    (_doubling(100) + [I(G("uuid", "UUID"), {"int": Ref(101)})], "from attributes"),
    (_doubling(100) + [R(G("copyreg", "__newobj__"), G("uuid", "UUID"),
                         state={"int": Ref(101)})], "a state of its own choosing"),
    # a path's slots (its hash, the parts it compares) set by the file
    (R(G("copyreg", "__newobj__"), G("pathlib", "PurePosixPath"),
       state=T(None, D([("_hash", 0), ("_cached_cparts", T(1, 2))]))), "a state of its own"),
    # SafeUUID(0) is a process-wide enum member: a state would rewrite it for everyone
    (R(G("uuid", "SafeUUID"), 0, state={"name": "hacked"}), "a state of its own choosing"),
], ids=["UUID from attributes", "UUID with a state", "path slots", "enum member state"])
def test_allow_listed_classes_take_no_state_of_the_files_choosing(impl, obj, match):
    _refused(file_of(obj), match)
    import uuid
    assert uuid.SafeUUID.safe.name == "safe"


def test_a_shared_big_int_is_charged_when_hashed(impl):
    """int(x) returns x itself: a big int gets a memo index and can be named
    again for a few bytes (root 0, the int() reduce 1, its global 2, its args 3)."""
    big = 1 << 3_000_000
    items = [R(G("builtins", "int"), big)] + [D([(Ref(1), None)])] * 60_000
    data = file_of(items)
    assert len(data) < 1_000_000
    _refused(data, "more work than the file pays for")
    # a list of those keys passed to set() is charged the same way
    items = [R(G("builtins", "int"), big), R(G("builtins", "set"), [Ref(1)] * 40_000)] * 1
    _refused(file_of(items), "more work than the file pays for")


def test_error_messages_never_print_the_files_values_in_full(impl):
    """An error message that repr()s a doubling list would itself never end."""
    lists = [[1]] + [[Ref(1 + i), Ref(1 + i)] for i in range(100)]
    for bad in (R(G("copyreg", "__newobj__"), Ref(101)),
                R(G("builtins", "str"), b"x", Ref(101)),
                R(G("uuid", "SafeUUID"), Ref(101)),
                M(EXT_BYTES_OOB, Ref(101))):
        with pytest.raises(torpor.TorporError) as ei:
            t = time.perf_counter()
            torpor.loads(file_of(lists + [bad]))
        assert time.perf_counter() - t < 2 and len(str(ei.value)) < 1000


def test_str_makes_strings_only_from_strings(impl):
    assert torpor.loads(file_of(R(G("builtins", "str"), b"caf\xc3\xa9", "utf-8"))) == "café"
    assert torpor.loads(file_of(R(G("builtins", "str"), "abc"))) == "abc"
    for arg in ([1, 2], b"bytes without an encoding", 12):
        _refused(file_of(R(G("builtins", "str"), arg)), "strings from strings")


def test_objects_still_open_count_as_deep_as_allowed(impl):
    """Y(k) holds Y(k-1) while Y(k-1) is still open (Y(k) is a dict value of
    Y(k-1), overwritten at once, so there is no cycle): each Y's cost was 32 when
    computed at its end, yet the chain is thousands deep and crashes when freed."""
    mark = b"\xff\x00\xfeOPEN\xfe\x00\xff"
    heads, tails = [], []
    n = 3000
    for k in range(1, n + 1):
        prev = Ref(1 + 3 * (k - 2)) if k > 1 else None
        if k < n:
            h, t = M(EXT_OBJARRAY, "|O", [2], False, prev,
                     D([(0, Raw(mark)), (0, None)])).data.split(mark)
        else:
            h, t = M(EXT_OBJARRAY, "|O", [2], False, prev, None).data, b""
        heads.append(h)
        tails.append(t)
    chain = Raw(b"".join(heads) + b"".join(reversed(tails)))
    _refused(file_of([chain, Ref(1 + 3 * (n - 1))]), "nests tuples")
    # a cycle through the object itself stays loadable
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = arr, 5
    out = torpor.loads(torpor.dumps(arr))
    assert out[0] is out and out[1] == 5
    dq = collections.deque([1])
    dq.append(dq)
    back = torpor.loads(torpor.dumps(dq))
    assert back[1] is back


def test_the_budget_counts_payloads_as_stored(impl):
    """A gzip section may decode to 1,040 times its size: the budget must not
    grow with it (engine/guard.py, guard_for)."""
    from torpor.engine.guard import WORK_FLOOR, WORK_PER_BYTE, guard_for
    from torpor.engine.safety import Policy
    policy = Policy()
    payloads = {0: np.zeros(1 << 20)}
    assert guard_for(policy, b"x" * 10, payloads).limit == WORK_PER_BYTE * (10 + (8 << 20)) + WORK_FLOOR
    policy.payload_bytes = 1000
    assert guard_for(policy, b"x" * 10, payloads).limit == WORK_PER_BYTE * 1010 + WORK_FLOOR
    assert guard_for(Policy(trusted=True), b"", payloads) is None
    # and the pipeline sets it: a file whose array compresses 1000x still loads
    arr = np.zeros(4 << 20, dtype=np.uint8)
    out = torpor.loads(torpor.dumps({"a": arr, "keys": {(i, i): i for i in range(1000)}},
                                    compress="gzip"))
    assert out["a"].shape == arr.shape and len(out["keys"]) == 1000


def test_time_zones_come_from_the_cache_and_the_tz_database(impl, monkeypatch):
    import zoneinfo
    z = zoneinfo.ZoneInfo("Europe/Paris")
    assert torpor.loads(torpor.dumps(z)) is z
    nocache = zoneinfo.ZoneInfo.no_cache("Europe/Paris")
    with pytest.raises(torpor.UnsafeLoadError, match="no_cache"):
        torpor.loads(torpor.dumps(nocache))
    assert str(torpor.loads(torpor.dumps(nocache), trusted=True)) == "Europe/Paris"
    # a key on no tz path, without the tzdata package: refused before zoneinfo looks
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tzdata" else real(name, *a))
    before = set(sys.modules)
    _refused(file_of(R(G("zoneinfo", "ZoneInfo"), "No/Such_Zone")), "not installed here")
    assert not {m for m in set(sys.modules) - before if m.startswith(("tzdata", "zipfile"))}


def test_pathlib_local_names_exist_only_where_the_module_does():
    from torpor.engine.allowlist import SAFE
    assert ("pathlib._local.Path" in SAFE) == (sys.version_info >= (3, 13))
