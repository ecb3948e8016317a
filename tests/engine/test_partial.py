"""Partial loads: ``torpor.load(file, select=path)`` and ``torpor.open(file)``.

Every part comes back as a whole load would give it (values, types, dtypes,
flags, shared objects shared), on both walkers; only the bytes the part needs
are read (counted at the file object); a missing path, a bad path and a damaged
file each get a clear error."""

import collections
import io
import pathlib

import numpy as np
import pytest

import torpor
from benchmarks.partial_load import Counting
from helpers import Pipe, assert_same_array
from torpor.format import locate
from torpor.format.locate import parse_path, render_path

GOLDEN = sorted((pathlib.Path(__file__).parent.parent / "golden").glob("v*_*.torpor"))


class Atoms:
    def __init__(self, n):
        self.coords = np.arange(3.0 * n).reshape(n, 3)
        self.names = [f"a{i}" for i in range(n)]
        self.owner = None


def _graph():
    rng = np.random.default_rng(3)
    shared = rng.standard_normal(500)
    items = ["x", "y"]
    atoms = Atoms(4)
    g = {
        "geoms": [{"points": rng.standard_normal((200, 3)).astype(np.float32), "name": f"g{i}",
                   "ids": shared} for i in range(5)],
        "n": 5, "big": 2 ** 80, "cplx": 1 + 2j, "none": None, "text": "π" * 3,
        "tuple": ("a", np.arange(4), {"deep": [1, 2, {"k": b"raw"}]}),
        "fortran": np.asfortranarray(rng.integers(0, 100, (30, 20))),
        "readonly": np.arange(6.0), "od": collections.OrderedDict(a=1, b=np.ones(3)),
        "objects": np.array([1, "two", None, 3.5], dtype=object),
        "grid": np.array([[1, "a"], [2, "b"]], dtype=object),
        "pair": {"left": items, "right": items}, "atoms": atoms,
        "keys": {1: "int", (1, 2): "tuple", "a b": "space", "x]y": "bracket", None: "none"},
        "blob": bytes(range(256)) * 300, "scalar": np.float16(1.5),
    }
    g["readonly"].flags.writeable = False
    g["alias"] = g["geoms"][2]
    g["self"] = g
    atoms.owner = g["pair"]
    return g


PATHS = [
    "['geoms'][3]['points']", "['geoms'][1]['name']", "['n']", "['big']", "['cplx']",
    "['none']", "['text']", "['tuple'][1]", "['tuple'][2]['deep'][2]['k']", "['tuple'][0]",
    "['fortran']", "['readonly']", "['od']['b']", "['od']", "['objects'][1]", "['grid'][1, 1]",
    "['pair']['right']", "['atoms'].coords", "['atoms'].names[2]", "['keys'][1]",
    "['keys'][(1, 2)]", "['keys']['a b']", "['keys']['x]y']", "['keys'][None]", "['blob']",
    "['scalar']", "['alias']['points']", "['geoms'][4]['ids']", "['self']['n']",
    "['self']['self']['geoms'][0]['name']", "['atoms'].owner['left'][0]",
    # from the end: of a list, of a tuple, past a reference to the saved dict, of an object array
    "['geoms'][-1]['points']", "['geoms'][-5]['name']", "['tuple'][-1]['deep'][-1]['k']",
    "['self']['geoms'][-2]['name']", "['objects'][-1]",
]


def _expected(g, path):
    return eval("g" + path, {"g": g})       # the paths are Python syntax on the object


def _same(want, got):
    assert type(got) is type(want)
    if isinstance(want, np.ndarray) and want.dtype != object:
        assert_same_array(want, got) if want.flags.writeable else (
            np.testing.assert_array_equal(want, got))
        assert got.flags.writeable == want.flags.writeable
    elif isinstance(want, np.ndarray):
        assert want.shape == got.shape and list(want.ravel()) == list(got.ravel())
    elif isinstance(want, collections.OrderedDict):
        assert list(want) == list(got) and want["a"] == got["a"]
        assert_same_array(want["b"], got["b"])
    else:
        assert got == want


@pytest.fixture
def saved(tmp_path):
    g = _graph()
    path = tmp_path / "g.torpor"
    torpor.dump(g, path)
    return g, path


@pytest.mark.parametrize("path", PATHS)
def test_a_part_is_what_a_whole_load_has_there(impl, saved, path):
    g, file = saved
    got = torpor.load(file, select=path, allow=[Atoms])
    _same(_expected(g, path), got)


def test_a_part_keeps_what_it_shares_and_its_cycles(impl, saved):
    g, file = saved
    pair = torpor.load(file, select="['pair']")
    assert pair["left"] is pair["right"] and pair["left"] == ["x", "y"]
    whole = torpor.load(file, select="['self']", allow=[Atoms])
    assert whole["self"] is whole and whole["alias"] is whole["geoms"][2]
    assert whole["atoms"].owner is whole["pair"]
    geom = torpor.load(file, select="['alias']")       # a REF to an object met earlier
    assert set(geom) == {"points", "name", "ids"} and geom["name"] == "g2"
    assert_same_array(g["geoms"][2]["points"], geom["points"])
    assert_same_array(g["geoms"][0]["ids"], geom["ids"])


def test_a_cycle_through_a_tuple_loads_from_inside(impl):
    lst = []
    t = (lst, 1)
    lst.append(t)
    data = torpor.dumps({"t": t})
    got = torpor.loads(data, select="['t'][0]")
    assert type(got) is list and got[0][0] is got and got[0][1] == 1
    inner = torpor.loads(data, select="['t'][0][0]")
    assert type(inner) is tuple and inner[0][0] is inner


def test_one_array_of_a_large_file_reads_about_its_size(impl, tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(1 << 19) for _ in range(16)]      # 16 x 4 MiB
    file = tmp_path / "big.torpor"
    torpor.dump({"geoms": [{"points": a, "name": i} for i, a in enumerate(arrays)]}, file)
    size = file.stat().st_size
    stored = next(s["length"] for s in torpor.info(file)["sections"] if s["kind"] == "array")
    assert size > 56 << 20 and stored > 3 << 20
    with open(file, "rb") as raw:
        f = Counting(raw)
        got = torpor.load(io.BufferedReader(f, 1 << 16), select="['geoms'][11]['points']")
    assert_same_array(arrays[11], got)
    # the array's section, the header, the TOC and the stream: a few KiB beyond it
    assert stored <= f.read_bytes <= stored + (256 << 10), (f.read_bytes, stored, size)
    with open(file, "rb") as raw:
        f = Counting(raw)
        assert torpor.load(io.BufferedReader(f, 1 << 16), select="['geoms'][11]['name']") == 11
    assert f.read_bytes <= 256 << 10


def test_mmap_maps_the_part_it_loads(impl, tmp_path):
    a = np.arange(1 << 16, dtype=np.int32)
    file = tmp_path / "raw.torpor"
    torpor.dump({"a": a, "b": a * 2}, file, compress=None)
    got = torpor.load(file, select="['b']", mmap=True)
    np.testing.assert_array_equal(got, a * 2)
    assert not got.flags.owndata and got.flags.writeable
    got[0] = 7                                      # copy-on-write: the file is unchanged
    assert torpor.load(file, select="['b']")[0] == 0


def test_a_stream_is_read_whole_and_the_part_returned(impl):
    data = torpor.dumps({"a": np.arange(10), "b": [1, 2]})
    assert torpor.load(Pipe(data, piece=7), select="['b'][1]") == 2
    assert_same_array(np.arange(10), torpor.load(Pipe(data), select="['a']"))


def test_a_part_needs_only_its_own_classes_allowed(impl, saved):
    _, file = saved
    np.testing.assert_array_equal(torpor.load(file, select="['atoms'].coords"),
                                  Atoms(4).coords)
    with pytest.raises(torpor.UnsafeLoadError, match="Atoms"):
        torpor.load(file, select="['atoms']")
    atoms = torpor.load(file, select="['atoms']", allow=[Atoms])
    assert type(atoms) is Atoms and atoms.names == Atoms(4).names
    with pytest.raises(torpor.UnsafeLoadError):
        torpor.load(file)                           # the whole file needs it too


@pytest.mark.parametrize("path, message", [
    ("['geoms'][9]", r"\['geoms'\] is a list of 5 items without \[9\]"),
    ("['nope']", r"the saved object is a dict of \d+ items without \['nope'\]"),
    ("['n']['x']", r"\['n'\] is an int without \['x'\]"),
    ("['atoms'].mass", r"\['atoms'\] is an instance without that attribute"),
    ("['geoms'][-6]", r"\['geoms'\] is a list of 5 items without \[-6\]"),
])
def test_a_missing_part_says_how_far_the_path_goes(impl, saved, path, message):
    _, file = saved
    with pytest.raises(torpor.NotInFileError, match=message) as e:
        torpor.load(file, select=path, allow=[Atoms])
    assert isinstance(e.value, KeyError) and isinstance(e.value, IndexError)
    assert e.value.path == path and "torpor ls" in str(e.value)


@pytest.mark.parametrize("path", ["geoms", "['geoms'", "[]", "['a'] x", ". x", "[[1]]",
                                  "[{1: 2}]", "['a']." + "x" * 3, "." * 5])
def test_a_malformed_path_is_a_value_error(impl, path):
    data = torpor.dumps({"a": 1})
    if path == "['a']." + "x" * 3:
        with pytest.raises(torpor.NotInFileError):      # well formed: .xxx of an int
            torpor.loads(data, select=path)
        return
    with pytest.raises(ValueError, match="select"):
        torpor.loads(data, select=path)


def test_select_must_be_a_str():
    with pytest.raises(TypeError, match="select must be a path"):
        torpor.loads(torpor.dumps(1), select=["a"])


def test_paths_parse_as_torpor_ls_prints_them():
    assert parse_path("['geoms'][3]['points']") == ((False, "geoms"), (False, 3), (False, "points"))
    assert parse_path(".atoms.coords[0]") == ((True, "atoms"), (True, "coords"), (False, 0))
    assert parse_path(".['not a name'][(1, 2)] ['x]y']") == (
        (True, "not a name"), (False, (1, 2)), (False, "x]y"))
    assert parse_path("") == ()
    steps = parse_path("['a'].b[3][(1, 'x')]")
    assert parse_path(render_path(steps)) == steps


def test_sessions_and_module_dumps_are_refused_as_load_refuses_them(impl, tmp_path):
    s = torpor.Session("partial-test")
    file = tmp_path / "s.cxs"
    s.save(file)
    with pytest.raises(torpor.FormatError, match="session file"):
        torpor.load(file, select="['x']")
    with pytest.raises(torpor.FormatError, match="session file"):
        torpor.open(file)


def test_a_damaged_file_gives_torpor_errors_only(impl):
    data = bytearray(torpor.dumps(_graph()["geoms"] + [{"k": [1, (2, 3)], "s": "abc" * 9}]))
    rng = np.random.default_rng(5)
    for _ in range(300):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), 3):
            bad[i] ^= int(rng.integers(1, 256))
        for path in ("[5]['k'][1][0]", "[2]['points']"):
            try:
                torpor.loads(bytes(bad), select=path)
            except torpor.TorporError:
                pass
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(torpor.TorporError):
            torpor.loads(bytes(data[:cut]), select="[5]['k']")


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_every_golden_file_loads_in_parts(impl, path):
    whole = torpor.load(path)
    for key in whole:
        want = whole[key]
        got = torpor.load(path, select=f"[{key!r}]")
        assert type(got) is type(want)
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        elif key == "cycle":
            assert got["self"] is got
        elif key == "shared":
            assert got[0] is got[1] and got[0] == want[0]
        elif key not in ("objects", "extras", "dtypes", "records", "legacy_scalars"):
            assert repr(got) == repr(want)


# --- torpor.open ----------------------------------------------------------------------

def test_a_view_goes_down_and_loads_what_it_reaches(impl, saved):
    g, file = saved
    with torpor.open(file) as v:
        assert v.kind == "dict" and len(v) == len(g) and v.keys() == list(g)
        assert repr(v) == f"<torpor view of {file}: a dict of {len(g)} items>"
        geoms = v["geoms"]
        assert geoms.kind == "list" and len(geoms) == 5 and geoms.path == "['geoms']"
        assert_same_array(g["geoms"][3]["points"], geoms[3]["points"])
        assert geoms[-1]["name"] == "g4" and [x["name"] for x in geoms] == [f"g{i}" for i in range(5)]
        assert v["tuple"].kind == "tuple" and v["tuple"][0] == "a"
        assert v.select("['tuple'][2]['deep'][2]['k']") == b"raw"
        assert "n" in v and "zz" not in v and v.get("zz", 7) == 7 and v.get("n") == 5
        atoms = v["atoms"]
        assert atoms.kind == "instance" and atoms.type_name == f"{__name__}.Atoms"
        assert atoms.keys() == ["coords", "names", "owner"]
        np.testing.assert_array_equal(atoms.coords, g["atoms"].coords)   # no class needed
        assert atoms.owner.kind == "dict" and atoms.owner["left"][1] == "y"
        with pytest.raises(AttributeError, match="mass"):
            atoms.mass
        with pytest.raises(TypeError, match="attributes are"):
            atoms["coords"]
        with pytest.raises(torpor.UnsafeLoadError):
            atoms.load()
        with pytest.raises(KeyError):
            v["nope"]
        pair = v["pair"].load()
        assert pair["left"] is pair["right"]
    with pytest.raises(ValueError, match="closed"):
        geoms[0]["points"]


def test_a_view_closes_its_file(impl, saved, monkeypatch):
    _, file = saved
    opened = []
    real = open

    def spy(*a, **kw):
        f = real(*a, **kw)
        opened.append(f)
        return f

    import builtins
    monkeypatch.setattr(builtins, "open", spy)
    v = torpor.open(file)
    monkeypatch.undo()
    assert opened and not opened[-1].closed
    v.close()
    assert all(f.closed for f in opened)


def test_a_view_of_a_plain_value_and_of_an_empty_dict(impl):
    with torpor.open(io.BytesIO(torpor.dumps({}))) as v:
        assert v.kind == "dict" and len(v) == 0 and v.keys() == [] and v.load() == {}
    with torpor.open(io.BytesIO(torpor.dumps([1, [2, 3]]))) as v:
        assert v[1].kind == "list" and v[1][0] == 2 and list(v[1]) == [2, 3]
        with pytest.raises(torpor.NotInFileError):
            v[2]


@pytest.mark.bigmem
def test_one_4_mib_array_of_a_1_gib_file_reads_about_4_mib(tmp_path):
    rng = np.random.default_rng(1)
    file = tmp_path / "gib.torpor"
    parts = [rng.standard_normal(1 << 19) for _ in range(256)]      # 256 x 4 MiB
    torpor.dump({"geoms": [{"points": a} for a in parts]}, file, compress=None)
    assert file.stat().st_size > 1 << 30
    with open(file, "rb") as raw:
        f = Counting(raw)
        got = torpor.load(io.BufferedReader(f, 1 << 16), select="['geoms'][200]['points']")
    np.testing.assert_array_equal(got, parts[200])
    assert (4 << 20) <= f.read_bytes <= (4 << 20) + (512 << 10), f.read_bytes


# --- a part is guarded as a whole load is ---------------------------------------------

def test_one_guard_covers_every_part_of_a_partial_load(impl):
    """The nesting a part builds through shared objects saved before it counts as
    in a whole load (each piece alone is within the limit, together they are not)."""
    parts, prev = [], None
    for _ in range(3):
        x = prev
        for _ in range(100):
            a = np.empty(1, dtype=object)
            a[0] = x
            x = a
        parts.append(x)
        prev = x
    data = torpor.dumps(parts)
    with pytest.raises(torpor.UnsafeLoadError, match="nests"):
        torpor.loads(data)
    with pytest.raises(torpor.UnsafeLoadError, match="nests"):
        torpor.loads(data, select="[2]")
    assert torpor.loads(data, select="[2]", trusted=True)[0][0].shape == (1,)


def test_the_work_budget_covers_every_part_of_a_partial_load(impl):
    """40 sets each holding one tuple chain of 2**16 hashes: each set alone is within
    a safe load's budget, the list of them is not, whole or as a part."""
    t = ()
    for _ in range(16):
        t = (t, t)
    sets = [{t} for _ in range(40)]
    data = torpor.dumps([t] + sets + [list(sets)])
    with pytest.raises(torpor.UnsafeLoadError, match="more work"):
        torpor.loads(data)
    with pytest.raises(torpor.UnsafeLoadError, match="more work"):
        torpor.loads(data, select="[41]")


# --- views: keys, indices -------------------------------------------------------------

def test_view_keys_are_the_real_keys(impl):
    t = (1, "x")
    obj = {"a": {t: "first"}, "b": {t: "second"}, "v": t,
           "c": {1 + 2j: "cplx", (2, 1j): "ctup", 2 ** 70: "big", b"k": "bytes", 1.5: "f",
                 frozenset({1}): "fs", (t, 2): "nested"}}
    with torpor.open(io.BytesIO(torpor.dumps(obj))) as v:
        assert v["b"].keys() == [t] and v["b"][t] == "second" and t in v["b"]
        assert v["b"].get(t) == "second"
        assert v["c"].keys() == list(obj["c"])
        for k, want in obj["c"].items():
            assert v["c"][k] == want and k in v["c"]
        with pytest.raises(KeyError):
            v["c"][(3, 4)]
    assert torpor.loads(torpor.dumps(obj), select="['b'][(1, 'x')]") == "second"


def test_view_indices_as_a_list_has_them(impl):
    with torpor.open(io.BytesIO(torpor.dumps({"l": [10, 20, 30], "t": (1, 2)}))) as v:
        lst = v["l"]
        assert lst.get(0) == 10 and lst.get(-1) == 30 and lst.get(3, "no") == "no"
        assert lst.get("x", "no") == "no" and lst[-3] == 10
        with pytest.raises(torpor.NotInFileError, match=r"a tuple of 2 items, without \[-3\]"):
            v["t"][-3]
        with pytest.raises(TypeError, match="not a slice"):
            lst[0:2]


Point = collections.namedtuple("Point", "x y")


class Slots:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a, self.b = np.arange(3), [1, 2]


class Stateful:
    def __init__(self, owner):
        self.owner, self.tag = owner, "t"

    def __getstate__(self):
        return {"owner": self.owner, "tag": self.tag}

    def __setstate__(self, state):
        self.__dict__.update(state)


def test_a_path_into_an_object_rebuilt_by_its_class_loads_the_object(impl):
    holder = {"p": Point(1, np.arange(4)), "s": Slots(), "list": []}
    holder["o"] = Stateful(holder["list"])
    holder["list"].append(holder["o"])              # a cycle through the object's state
    data = torpor.dumps(holder)
    allow = [Point, Slots, Stateful]
    assert torpor.loads(data, select="['p'][0]", allow=allow) == 1
    assert_same_array(np.arange(4), torpor.loads(data, select="['p'].y", allow=allow))
    assert torpor.loads(data, select="['s'].b", allow=allow) == [1, 2]
    assert torpor.loads(data, select="['o'].tag", allow=allow) == "t"
    o = torpor.loads(data, select="['list'][0].owner[0]", allow=allow)
    assert type(o) is Stateful and o.owner[0] is o
    assert torpor.loads(data, select="['s'].b") == [1, 2]    # its state, read in the stream
    with pytest.raises(torpor.UnsafeLoadError, match="Point"):
        torpor.loads(data, select="['p'][0]")       # an item of the object needs its class
    with pytest.raises(torpor.NotInFileError, match=r"\['p'\]"):
        torpor.loads(data, select="['p'].z", allow=allow)
    with torpor.open(io.BytesIO(data), allow=allow) as v:
        p = v["p"]
        assert type(p) is Point and p.x == 1 and v.select("['s'].b").load() == [1, 2]


def test_following_a_loaded_object_reads_its_state_only(impl):
    """Where a path goes on inside a loaded object, only its state is followed:
    never a property, a method, a dunder or a dict's __missing__."""
    dd = collections.defaultdict(list, {"a": [1]})
    data = torpor.dumps({"c": collections.Counter("ab"), "dd": dd,
                         "rec": np.zeros(2, dtype=[("x", "f8")])})
    for path in ("['c'].most_common", "['c'].most_common.__globals__", "['c'].__class__",
                 "['dd']['missing']", "['rec']['nofield']", "['rec'].T"):
        with pytest.raises(torpor.NotInFileError):
            torpor.loads(data, select=path)
    assert torpor.loads(data, select="['dd']['a']") == [1]
    assert torpor.loads(data, select="['c']['a']") == 1


def test_a_path_through_many_shared_references_is_bounded(impl):
    lst = [[]] * 3000
    lst.append(lst)
    data = torpor.dumps(lst)
    assert torpor.loads(data, select="[3000][3000][0]") == []
    with pytest.raises(torpor.FormatError, match="read its object stream more than 8 times"):
        torpor.loads(data, select="[3000]" * 40 + "[0]")


def test_the_walks_through_shared_references_of_one_open_file_are_bounded_together(impl):
    """A path through a shared reference is a new walk from the object it refers
    to: the walks of every search of one open file that follow such references
    read at most ``locate.WALKS`` times the stream, together (each search had its
    own budget, so a view's eight steps could take 64 walks). Opening the file
    again starts afresh."""
    from torpor.format import locate
    lst = [[]] * 30_000
    lst.append(lst)                     # [30000] refers to the list itself
    data = torpor.dumps(lst)
    around = "[30000]" * 6              # six walks of the whole list (all but one counted)
    with torpor.open(io.BytesIO(data)) as v:
        assert v.select(around + "[0]").load() == []
        with pytest.raises(torpor.FormatError, match="open it again to go on"):
            v.select(around + "[1]")
        assert v[0].load() == []        # a search's first walk is never refused
    with torpor.open(io.BytesIO(data)) as v:
        assert v.select(around + "[1]").load() == []
    assert locate.WALKS == 8


def test_a_view_may_be_walked_as_often_as_it_is_used(impl):
    """Each step, listing and load of a view is a search whose first walk is
    not counted against the file: going through every key of a dict view, or
    every index of a list view, reading the stream up to each, is never refused
    (it was, after 53-105 steps, when every walk counted)."""
    records = {f"r{i}": {"points": np.full(50, i, np.float32), "label": f"l{i}"}
               for i in range(300)}
    listed = list(records.values())
    data = torpor.dumps({"d": records, "l": listed})
    with torpor.open(io.BytesIO(data)) as v:
        for _ in range(2):
            for i, k in enumerate(v["d"].keys()):
                assert v["d"][k]["points"][0] == i
            for i in range(len(v["l"])):
                assert v["l"][i]["label"] == f"l{i}"
        assert v._parts.walks.left > 0


def test_iterating_a_view_reads_the_list_once(impl, monkeypatch):
    items = [{"i": i, "a": np.full(3, i)} if i % 3 == 0 else i for i in range(600)]
    data = torpor.dumps({"l": items, "t": tuple(range(5))})
    walks = []                  # where each walk of the stream starts
    search = locate.Finder.search

    def counted(self, *a):
        walks.append(self.base)
        return search(self, *a)

    monkeypatch.setattr(locate.Finder, "search", counted)
    with torpor.open(io.BytesIO(data)) as v:
        got = list(v["l"])
        # one walk lists where the items start; each item's walk starts there
        assert walks.count(0) <= 3 and len(walks) <= 2 * 600 + 5, walks[:10]
        assert len(set(walks)) > 500                # (not all from the list's start)
        assert len(got) == 600 and got[1] == 1 and got[599] == 599
        assert got[3]["i"] == 3 and np.array_equal(got[3]["a"], np.full(3, 3))
        assert [type(x).__name__ for x in got[:3]] == ["View", "int", "int"]
        assert list(v["t"]) == [0, 1, 2, 3, 4]


def test_dict_keys_match_as_python_matches_them(impl):
    data = torpor.dumps({"d": {1.0: "one", (1, 2): "pair"}})
    with torpor.open(io.BytesIO(data)) as v:
        assert v["d"][1] == "one" and v["d"][1.0] == "one" and v["d"][True] == "one"
        assert 1 in v["d"] and v["d"][(1.0, 2)] == "pair"
    assert torpor.loads(data, select="['d'][1]") == "one"


def test_a_deeply_nested_key_is_no_recursion_error(impl):
    keys = {}
    for depth in (600, 1200):
        key = 1
        for _ in range(depth):
            key = (key, 1)
        keys[depth] = key
    data = torpor.dumps({"k": {keys[600]: "deep", keys[1200]: "deeper", "a": 2}})
    with torpor.open(io.BytesIO(data)) as v:
        d = v["k"]
        assert d["a"] == 2
        assert d[keys[600]] == "deep" and keys[600] in d      # matched once loaded
        # comparing 1,200 levels is a RecursionError in Python itself: not found here
        with pytest.raises(torpor.NotInFileError):
            d[keys[1200]]
        assert keys[1200] not in d


def test_loading_a_file_in_many_parts_does_no_more_work_than_loading_it_whole(impl):
    """Each namedtuple of the list holds the same 20,000 strings: a safe load
    refuses the file (building them all is more work than it pays for), and so
    does iterating a view of it, which rebuilds the shared list once per item."""
    shared = [str(i) for i in range(20_000)]
    data = torpor.dumps({"s": shared, "l": [Point(shared, i) for i in range(2_000)]})
    with pytest.raises(torpor.UnsafeLoadError, match="more work"):
        torpor.loads(data, allow=[Point])
    with torpor.open(io.BytesIO(data), allow=[Point]) as v:
        with pytest.raises(torpor.UnsafeLoadError, match="more work"):
            for _ in v["l"]:
                pass
    assert torpor.loads(data, select="['l'][5]", allow=[Point]).y == 5     # one part: fine
