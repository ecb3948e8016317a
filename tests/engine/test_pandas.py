"""pandas objects: taken apart by torpor and rebuilt by its own torpor.pandas.*
functions, so they load without allow= on both walkers; crafted files calling
those functions with bad arguments are refused."""

import datetime
import importlib.util
import io
import subprocess
import sys
import textwrap
import time
import zoneinfo

import numpy as np
import pytest

pd = pytest.importorskip("pandas", minversion="3.0")
import pandas.testing as tm  # noqa: E402

import torpor  # noqa: E402
from crafted import G, R, T, file_of  # noqa: E402
from torpor.engine import allowlist, pandas_types  # noqa: E402

HAVE_ARROW = importlib.util.find_spec("pyarrow") is not None
needs_arrow = pytest.mark.skipif(not HAVE_ARROW, reason="pyarrow is not installed")

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def rt(obj, **kw):
    """dumps + loads with the walker under test, and no allow=."""
    return torpor.loads(torpor.dumps(obj), **kw)


def globals_of(obj):
    return torpor.info(io.BytesIO(torpor.dumps(obj)))["globals"]


def mixed_frame(n=6):
    rng = np.random.default_rng(0)
    cols = {
        "f8": rng.random(n),
        "f4": rng.random(n).astype(np.float32),
        "i8": np.arange(n, dtype=np.int64),
        "u2": np.arange(n, dtype=np.uint16),
        "bool": np.arange(n) % 2 == 0,
        "c16": np.arange(n) + 1j,
        "Int64": pd.array([1, None] + list(range(n - 2)), dtype="Int64"),
        "UInt8": pd.array([None] + list(range(n - 1)), dtype="UInt8"),
        "Float32": pd.array([0.5, None] + [1.5] * (n - 2), dtype="Float32"),
        "boolean": pd.array([True, None] + [False] * (n - 2), dtype="boolean"),
        "dt": pd.date_range("2020-01-01", periods=n, freq="h"),
        "dt_ns": pd.date_range("2020-01-01", periods=n, freq="s", unit="ns"),
        "dt_utc": pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"),
        "dt_paris": pd.date_range("2021-03-27", periods=n, freq="6h", tz=PARIS),
        "td": pd.to_timedelta(np.arange(n), unit="s"),
        "period": pd.period_range("2020-01", periods=n, freq="M"),
        "cat": pd.Categorical(["a", "b", None] * (n // 3), categories=["b", "a", "z"]),
        "cat_ordered": pd.Categorical(list(range(n)), ordered=True),
        "str_python": pd.array(["x", None] * (n // 2), dtype=pd.StringDtype("python", na_value=np.nan)),
        "string": pd.array(["y", None] * (n // 2), dtype=pd.StringDtype("python")),
        "object": np.array([{"k": 1}, None, 3, "s", (1, 2), [5]] * (n // 6), dtype=object),
    }
    if HAVE_ARROW:
        cols["str_arrow"] = pd.array(["é", None, ""] * (n // 3), dtype=pd.StringDtype("pyarrow", na_value=np.nan))
        cols["string_arrow"] = pd.array(["a", "bb", None] * (n // 3), dtype=pd.StringDtype("pyarrow"))
    df = pd.DataFrame(cols)
    df.index.name = "row"
    df.attrs = {"source": "test", "n": n}
    return df


def assert_frames(a, b):
    tm.assert_frame_equal(a, b, check_exact=True, check_dtype=True, check_index_type=True,
                          check_column_type=True, check_frame_type=True, check_flags=True)
    assert a.attrs == b.attrs
    assert a.index.names == b.index.names and a.columns.names == b.columns.names


# --- round trips ---------------------------------------------------------------------

def test_mixed_frame_round_trips_without_allow(impl):
    df = mixed_frame()
    back = rt(df)
    assert_frames(df, back)
    # the blocks come back as they were: same layout, no consolidation copies
    assert [b.dtype for b in back._mgr.blocks] == [b.dtype for b in df._mgr.blocks]
    assert [list(b.mgr_locs.as_array) for b in back._mgr.blocks] == \
           [list(b.mgr_locs.as_array) for b in df._mgr.blocks]


def test_both_walkers_write_identical_bytes():
    _walker = pytest.importorskip("torpor.engine._walker",
                                  reason="the compiled walker is not built here")
    from torpor.engine import fallback
    from torpor.format import constants
    from torpor.format.container import make_header
    from torpor.format.writer import ContainerWriter

    header = make_header({}, "twin-test", constants.CODEC_LZ4)      # (it holds the time)

    def stream_of(mod, obj):
        buf = io.BytesIO()
        w = ContainerWriter(buf, codec_id=constants.CODEC_LZ4, threads=1)
        w.write_header(header)
        enc = mod.Encoder(w)
        enc.encode(obj)
        w.finish({"globals": list(enc.globals), "memo": enc.n_memo})
        w.close()
        return buf.getvalue()
    obj = {"df": mixed_frame(), "mi": next(i for i in _indexes() if isinstance(i, pd.MultiIndex)),
           "ts": pd.Timestamp("2020", tz=PARIS), "nat": pd.NaT}
    assert stream_of(_walker, obj) == stream_of(fallback, obj)


def test_file_names_no_pandas_internals(impl):
    """Only torpor's own rebuild functions (and the time zones' stdlib types):
    never pandas' reduce callables, not even as bytes somewhere in the stream."""
    df = mixed_frame()
    data = torpor.dumps({"df": df, "s": df["Int64"], "ts": pd.Timestamp("2020", tz=PARIS),
                         "mi": pd.MultiIndex.from_product([[1, 2], ["a", "b"]])})
    names = torpor.info(io.BytesIO(data))["globals"]
    assert names and all(n.startswith(("torpor.pandas.", "torpor.arrays.", "datetime.", "zoneinfo."))
                         for n in names), names
    assert "torpor.pandas.frame" in names
    for needle in (b"pandas._libs", b"pandas.core", b"_unpickle_block", b"NDArrayBacked",
                   b"BlockManager", b"_new_Index"):
        assert needle not in data


def test_blocks_travel_as_array_sections(impl):
    """Large columns are written as the engine's array sections (zero-copy), one
    per block, not as objects in the stream."""
    df = pd.DataFrame({"a": np.arange(100_000.0), "b": np.arange(100_000.0),
                       "i": np.arange(100_000)})
    info = torpor.info(io.BytesIO(torpor.dumps(df, compress=None)))
    shapes = sorted(tuple(s["shape"]) for s in info["sections"] if s.get("kind") == "array")
    assert (2, 100_000) in shapes and (1, 100_000) in shapes, info["sections"]
    back = rt(df)
    assert_frames(df, back)


@pytest.mark.parametrize("make", [
    lambda: pd.DataFrame(),
    lambda: pd.DataFrame(index=pd.RangeIndex(5, name="r")),
    lambda: pd.DataFrame({"a": []}, dtype=float),
    lambda: pd.DataFrame(np.arange(18).reshape(3, 6), columns=[1, 2.5, None, (1, "x"), b"b", True]),
    lambda: pd.DataFrame(np.arange(6.0).reshape(2, 3), columns=["a", "a", "b"]),
    lambda: pd.DataFrame(np.ones((2, 2)), columns=pd.date_range("2020", periods=2, tz=PARIS)),
    lambda: pd.DataFrame(np.ones((3, 2)), index=pd.Index(["x", "y", "z"], dtype=object, name=("a", 1))),
    lambda: pd.DataFrame(np.ones((4, 2)),
                         index=pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["n", None]),
                         columns=pd.MultiIndex.from_tuples([("x", 1), ("y", 2)], names=["u", "v"])),
    lambda: pd.DataFrame({"a": [1, 2]}, index=pd.CategoricalIndex(["p", "q"], name="c")),
    lambda: pd.DataFrame({"a": [1, 2]}).set_flags(allows_duplicate_labels=False),
    lambda: pd.DataFrame(np.arange(6).reshape(3, 2).T.copy().T),     # Fortran-ordered block
    lambda: mixed_frame(30).iloc[::3, ::2],                            # views of the blocks
], ids=["empty", "no-columns", "no-rows", "label-types", "duplicate-labels", "datetime-columns",
        "object-index", "multiindex", "categorical-index", "no-duplicates-flag", "fortran", "views"])
def test_frames_round_trip(impl, make):
    df = make()
    assert_frames(df, rt(df))


@pytest.mark.parametrize("make", [
    lambda: pd.Series([1.5, 2.5], name="x"),
    lambda: pd.Series(pd.array([1, None], dtype="Int16"), index=["a", "b"], name=("t", 1)),
    lambda: pd.Series(pd.date_range("2020", periods=3, tz="UTC"), name=None),
    lambda: pd.Series(pd.Categorical(["a", "b", "a"], ordered=True)),
    lambda: pd.Series(np.array([None, 1, "x"], dtype=object), index=pd.date_range("2020", periods=3, freq="D")),
    lambda: pd.Series(["a", None], dtype=pd.StringDtype("python")),
    lambda: pd.Series(dtype=float),
    lambda: pd.Series([1, 2], index=pd.MultiIndex.from_tuples([(1, "a"), (2, "b")])),
    lambda: pd.Series([1, 2]).set_flags(allows_duplicate_labels=False),
], ids=["float", "Int16", "tz", "category", "object", "string", "empty", "multiindex", "flags"])
def test_series_round_trip(impl, make):
    s = make()
    s.attrs["unit"] = "m"
    back = rt(s)
    tm.assert_series_equal(s, back, check_exact=True, check_index_type=True, check_flags=True)
    assert back.attrs == s.attrs and back.name == s.name


def _indexes():
    yield pd.Index([3, 1, 2], name="ints")
    yield pd.Index([1.5, np.nan], dtype=np.float32)
    yield pd.Index([True, False])
    yield pd.Index([1 + 2j])
    yield pd.Index(["a", 1, None, (2, 3)], dtype=object, name="mixed")
    yield pd.Index(["a", "b"], dtype=object)
    yield pd.Index(["a", None], dtype=pd.StringDtype("python", na_value=np.nan))
    yield pd.Index(pd.array([1, None], dtype="Int64"))
    yield pd.RangeIndex(2, 20, 3, name="r")
    yield pd.RangeIndex(0)
    yield pd.date_range("2020-01-01", periods=5, freq="D", name="days")
    yield pd.date_range("2020-01-31", periods=5, freq="ME")
    yield pd.date_range("2021-10-30", periods=48, freq="h", tz=PARIS)
    yield pd.date_range("2021-10-30", periods=3, freq="D", tz=PARIS)
    yield pd.date_range("2020", periods=3, freq="B", tz="UTC")
    yield pd.DatetimeIndex(["2020-01-03", "2020-01-01", "NaT"], name="irregular")
    yield pd.timedelta_range("1 day", periods=4, freq="6h", name="td")
    yield pd.period_range("2020Q1", periods=4, freq="Q-DEC", name="q")
    yield pd.CategoricalIndex(["a", "b", "a"], categories=["b", "a", "c"], ordered=True, name="c")
    yield pd.MultiIndex.from_product([range(3), ["a", "b"]], names=["n", "s"])
    yield pd.MultiIndex.from_arrays([[1, np.nan, 2], ["x", "y", None]])
    yield pd.MultiIndex.from_product([[1, 2], ["a", "b"]]).sort_values()
    if HAVE_ARROW:
        yield pd.Index(["a", None, "ç"], dtype=pd.StringDtype("pyarrow", na_value=np.nan), name="s")


@pytest.mark.parametrize("idx", list(_indexes()), ids=lambda i: f"{type(i).__name__}-{i.dtype}")
def test_indexes_round_trip(impl, idx):
    back = rt(idx)
    tm.assert_index_equal(idx, back, exact=True, check_exact=True, check_names=True,
                          check_categorical=True)
    assert type(back) is type(idx)
    if isinstance(idx, (pd.DatetimeIndex, pd.TimedeltaIndex)):
        assert back.freq == idx.freq
    if isinstance(idx, pd.DatetimeIndex):
        assert back.tz == idx.tz and type(back.tz) is type(idx.tz)
    if isinstance(idx, pd.MultiIndex):
        assert back.sortorder == idx.sortorder and back.names == idx.names


def _arrays():
    yield pd.array([1, None, 3], dtype="Int8")
    yield pd.array([1, None], dtype="UInt64")
    yield pd.array([0.5, None], dtype="Float64")
    yield pd.array([True, None, False], dtype="boolean")
    yield pd.array(np.array(["2020-01-01", "NaT"], dtype="M8[s]"))
    yield pd.array(pd.date_range("2020", periods=3, tz=PARIS))
    yield pd.array(np.array([1, 2], dtype="m8[ms]"))
    yield pd.array(pd.period_range("2020", periods=3, freq="Y"))
    yield pd.array(["a", None], dtype=pd.StringDtype("python"))
    yield pd.arrays.NumpyExtensionArray(np.array([1, 2]))
    yield pd.Categorical([], categories=[1, 2])
    yield pd.Categorical(["x", None, "y"], categories=pd.Index(["y", "x"], dtype=object))
    yield pd.Categorical(range(3))
    yield pd.Categorical(pd.date_range("2020", periods=2, tz="UTC"))
    if HAVE_ARROW:
        yield pd.array(["a", None, "bc", ""], dtype=pd.StringDtype("pyarrow"))
        yield pd.array(list("abcdef"), dtype=pd.StringDtype("pyarrow"))[2:5]      # sliced


@pytest.mark.parametrize("arr", list(_arrays()), ids=lambda a: f"{type(a).__name__}-{a.dtype}")
def test_extension_arrays_round_trip(impl, arr):
    back = rt(arr)
    assert type(back) is type(arr)
    tm.assert_extension_array_equal(arr, back, check_exact=True)


@needs_arrow
def test_chunked_arrow_strings_round_trip(impl):
    import pyarrow as pa
    chunked = pa.chunked_array([["a", None], ["bcd"], []], pa.large_string())
    arr = pd.arrays.ArrowStringArray(chunked, dtype=pd.StringDtype("pyarrow", na_value=np.nan))
    back = rt(arr)
    tm.assert_extension_array_equal(arr, back)
    assert back._pa_array.num_chunks == 1


@pytest.mark.parametrize("x", [
    pd.Timestamp("2021-03-28 01:30:00.123456789", tz=PARIS),
    pd.Timestamp("2020-01-01 00:00:01"),
    pd.Timestamp(np.datetime64("1600-01-01", "s")),
    pd.Timestamp("2020", tz="UTC"),
    pd.Timestamp("2020", tz=datetime.timezone(datetime.timedelta(hours=-5), "EST")),
    pd.Timedelta("1 days 2 ns"),
    pd.Timedelta(seconds=-3),
    pd.Period("2020Q3", freq="Q-DEC"),
    pd.Period("2020-01-01 10:00", freq="h"),
], ids=repr)
def test_scalars_round_trip(impl, x):
    back = rt(x)
    assert type(back) is type(x) and back == x
    assert back.unit == x.unit if hasattr(x, "unit") else back.freq == x.freq
    if isinstance(x, pd.Timestamp):
        assert back.tz == x.tz and type(back.tz) is type(x.tz)


def test_missing_values_are_pandas_singletons(impl):
    back = rt([pd.NA, pd.NaT, np.array([pd.NA, pd.NaT], dtype=object)])
    assert back[0] is pd.NA and back[1] is pd.NaT
    assert back[2][0] is pd.NA and back[2][1] is pd.NaT


def test_shared_references_survive(impl):
    df = mixed_frame().set_index(pd.Index(np.array([10, 12, 11, 15, 14, 13]), name="k"))
    s = df["f8"].copy()
    other = pd.DataFrame({"x": np.arange(6)}, index=df.index)
    renamed = s.rename("renamed")                     # a new Series sharing the index values
    assert other.index is df.index and renamed.index is not s.index
    assert renamed.index._data is s.index._data
    out = rt({"a": s, "b": s, "frames": [df, other], "renamed": renamed, "s2": s.index})
    assert out["a"] is out["b"]
    assert out["frames"][0].index is out["frames"][1].index
    assert out["renamed"].index._data is out["a"].index._data
    assert out["s2"] is out["a"].index
    cat = pd.Categorical(["a", "b"])
    pair = rt([cat, pd.Series(cat), cat])
    assert pair[0] is pair[2]
    tm.assert_extension_array_equal(pair[0], pair[1].array)


def test_index_values_shared_by_renamed_copies_are_written_once(impl):
    idx = pd.Index(np.arange(200_000), name="a")
    copies = [idx.rename(f"n{i}") for i in range(5)]
    assert all(c._data is idx._data for c in copies)
    data = torpor.dumps(copies, compress=None)
    assert len(data) < 2 * idx.nbytes
    back = torpor.loads(data)
    assert [c.name for c in back] == [f"n{i}" for i in range(5)]
    assert all(c._data is back[0]._data for c in back)


def test_unknown_pandas_objects_keep_pickles_protocol(impl):
    """An IntervalArray column (no fast path): the frame is still torpor's, the
    column needs allow= for pandas' own helpers, and loads with it."""
    df = pd.DataFrame({"a": [1.0, 2.0], "iv": pd.arrays.IntervalArray.from_breaks([0, 1, 2])})
    data = torpor.dumps(df)
    names = torpor.info(io.BytesIO(data))["globals"]
    assert "torpor.pandas.frame" in names
    with pytest.raises(torpor.UnsafeLoadError) as e:
        torpor.loads(data)
    assert "pandas" in str(e.value) and "allow=" in str(e.value)
    assert_frames(df, torpor.loads(data, allow=["pandas.*"]))


@pytest.mark.parametrize("make, allow", [
    # a frequency its string does not give back (holidays): the offset itself
    (lambda: pd.bdate_range("2020-01-01", periods=5, freq="C", holidays=["2020-01-02"]),
     "pandas._libs.tslibs.offsets.*"),
    # a time zone other than zoneinfo's or datetime's
    (lambda: pd.Series([1, 2], index=pd.DatetimeIndex(["2020-01-01", "2020-06-01"],
                                                      tz="dateutil/Europe/Paris")),
     "dateutil.*"),
], ids=["custom-offset", "dateutil-zone"])
def test_parts_without_a_fast_path_need_allow(impl, make, allow):
    obj = make()
    data = torpor.dumps(obj)
    assert any(n.startswith("torpor.pandas.") for n in torpor.info(io.BytesIO(data))["globals"])
    with pytest.raises(torpor.UnsafeLoadError):
        torpor.loads(data)
    back = torpor.loads(data, allow=[allow])
    if isinstance(obj, pd.Index):
        tm.assert_index_equal(obj, back, exact=True)
        assert back.freq == obj.freq
    else:
        tm.assert_series_equal(obj, back, check_exact=True)


def test_subclasses_keep_pickles_protocol(impl):
    data = torpor.dumps(MyFrame({"a": [1, 2]}))
    assert "torpor.pandas.frame" not in torpor.info(io.BytesIO(data))["globals"]
    back = torpor.loads(data, trusted=True)
    assert type(back) is MyFrame


class MyFrame(pd.DataFrame):
    @property
    def _constructor(self):
        return MyFrame


def test_import_torpor_does_not_import_pandas_and_loads_import_it():
    code = textwrap.dedent("""
        import sys, torpor
        assert "pandas" not in sys.modules, "import torpor imported pandas"
        torpor.loads(torpor.dumps({"a": [1, 2.0]}))
        assert "pandas" not in sys.modules and "torpor.engine.pandas_types" not in sys.modules
        data = open(sys.argv[1], "rb").read()
        df = torpor.loads(data)
        assert "pandas" in sys.modules
        print(type(df).__name__, list(df.columns))
    """)
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".torpor") as f:
        torpor.dump(pd.DataFrame({"a": [1.0], "b": ["x"]}), f.name)
        r = subprocess.run([sys.executable, "-c", code, f.name], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["DataFrame", "['a',", "'b']"]


def test_loading_without_pandas_is_a_missing_class_error(tmp_path):
    path = tmp_path / "df.torpor"
    torpor.dump(pd.DataFrame({"a": [1.0]}), path)
    code = textwrap.dedent("""
        import sys
        class NoPandas:
            def find_spec(self, name, path=None, target=None):
                if name == "pandas" or name.startswith("pandas."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoPandas())
        import torpor
        try:
            torpor.load(sys.argv[1])
        except torpor.MissingClassError as e:
            print(type(e).__name__, e)
        else:
            raise SystemExit("loaded without pandas")
    """)
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("MissingClassError") and "pandas is not installed" in r.stdout, r.stdout


# --- hostile files: torpor's rebuild functions called with bad arguments -------------

class Call:
    """Saved as ``func(*args)``: a file calling one of torpor's rebuild functions
    with arguments no torpor writer would give it (arrays as array sections)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def crafted(func, *args):
    return torpor.dumps(Call(func, *args))


def refused(data, match=None, within=2.0):
    t = time.perf_counter()
    with pytest.raises(torpor.UnsafeLoadError) as e:
        torpor.loads(data)
    assert time.perf_counter() - t < within
    if match is not None:
        assert match in str(e.value), str(e.value)
    return e.value


P = pandas_types
I8 = np.arange(4, dtype=np.int8)
F8 = np.arange(4.0)
RANGE4 = pd.RangeIndex(4)
COLS2 = pd.Index(["a", "b"])


@pytest.mark.parametrize("func, args, match", [
    # frame: placements, shapes, kinds, lengths
    (P.frame, (COLS2, RANGE4, [F8.reshape(1, 4)], [[0]], {}, True), "for 2 columns"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 4))], [[0, 0]], {}, True), "column position"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 4))], [[0, 2]], {}, True), "column position"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 5))], [[0, 1]], {}, True), "shape (2, 5)"),
    (P.frame, (COLS2, RANGE4, [np.ones((1, 4)), F8], [[0], [1]], {}, True), "block"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 4), "M8[ns]")], [[0, 1]], {}, True), "block"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 4), "U3")], [[0, 1]], {}, True), "block"),
    (P.frame, (COLS2, RANGE4, [[1, 2]], [[0, 1]], {}, True), "block"),
    (P.frame, (["a", "b"], RANGE4, [np.ones((2, 4))], [[0, 1]], {}, True), "not a pandas Index"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 4))], [[0, 1]], [], True), "attrs"),
    (P.frame, (COLS2, RANGE4, [np.ones((2, 4))], [[0, 1]], {}, 1), "allows_duplicate_labels"),
    (P.frame, (pd.Index(["a", "a"]), RANGE4, [np.ones((2, 4))], [[0, 1]], {}, False), "twice"),
    (P.frame, (pd.RangeIndex(10**15), RANGE4, [], [], {}, True), "for 1000000000000000 columns"),
    (P.frame, (COLS2, pd.RangeIndex(10**15), [np.ones((2, 4))], [[0, 1]], {}, True), "rows"),
    (P.frame, (COLS2, RANGE4, [pd.array([1, 2, 3, 4])], [[0, 1]], {}, True), "columns"),
    (P.frame, (COLS2, RANGE4), "arguments"),
    # series
    (P.series, (F8, pd.RangeIndex(5), None, {}, True), "4 values for an index of 5"),
    (P.series, (np.ones((2, 2)), pd.RangeIndex(2), None, {}, True), "values"),
    (P.series, (F8, RANGE4, ["unhashable"], {}, True), "hashed"),
    (P.series, (np.array(["x"] * 4), RANGE4, None, {}, True), "values"),
    (P.series, (F8, pd.Index([1, 1, 2, 3]), None, {}, False), "twice"),
    (P.series, (F8, pd.RangeIndex(10**15), None, {}, True), "index of 1000000000000000"),
    (P.categorical, (np.zeros(4, np.int8), pd.RangeIndex(10**15), False), "dtype int8"),
    # index
    (P.index, (np.ones((2, 2)), None, None), "values"),
    (P.index, (np.ones(3, np.float16), None, None), "float16"),
    (P.index, (np.array(["a", "b"]), None, None), "values"),
    (P.index, (np.arange(3, dtype=">i8"), None, None), "values"),
    (P.index, (np.arange(3), None, "D"), "frequency"),
    (P.index, (pd.array(np.array([0, 5, 6], "M8[s]")), None, "s"), "do not follow"),
    (P.index, (pd.array(np.array([0, 1], "M8[s]")), None, "every second"), "does not know"),
    (P.index, (pd.array(np.array([0, 1], "M8[s]")), None, 5), "short string"),
    (P.index, (pd.array(np.array([0, 1], "m8[s]")), None, "ME"), "fixed one"),
    # range_index
    (P.range_index, (0, 10, 0, None), "step of 0"),
    (P.range_index, (0, 1 << 64, 1, None), "64-bit"),
    (P.range_index, (0.5, 10, 1, None), "64-bit"),
    # multi_index
    (P.multi_index, ([pd.Index([1, 2])], [np.array([0, 2], np.int8)], [None], None), "outside"),
    (P.multi_index, ([pd.Index([1, 2])], [np.array([-2, 1], np.int8)], [None], None), "outside"),
    (P.multi_index, ([pd.Index([1, 2])], [np.array([0, 1], np.int64)], [None], None), "dtype int64"),
    (P.multi_index, ([pd.Index([1, 1])], [np.array([0, 1], np.int8)], [None], None), "twice"),
    (P.multi_index, ([pd.Index([1.0, np.nan])], [np.array([0, 1], np.int8)], [None], None), "missing"),
    (P.multi_index, ([pd.Index([1, 2]), pd.Index([1, 2])],
                     [np.array([0, 1], np.int8), np.array([0], np.int8)], [None, None], None), "lengths"),
    (P.multi_index, ([pd.Index([1, 2])], [np.array([1, 0], np.int8)], [None], 1), "not in order"),
    (P.multi_index, ([pd.Index([1, 2])], [np.array([0, 1], np.int8)], [None], 5), "sortorder"),
    (P.multi_index, ([pd.Index([1, 2])], [np.array([0, 1], np.int8)], [], None), "three lists"),
    (P.multi_index, ([[1, 2]], [np.array([0, 1], np.int8)], [None], None), "pandas Index"),
    # categorical
    (P.categorical, (np.array([0, 3], np.int8), pd.Index(["a", "b"]), False), "outside"),
    (P.categorical, (np.array([0, 1], np.int32), pd.Index(["a", "b"]), False), "dtype int32"),
    (P.categorical, (np.array([0, 1], np.int8), pd.Index(["a", "a"]), False), "twice"),
    (P.categorical, (np.array([0, 1], np.int8), pd.Index(["a", None], dtype=object), False), "missing"),
    (P.categorical, (np.array([0, 1], np.int8), pd.Index(["a", "b"]), "yes"), "ordered"),
    (P.categorical, (np.array([0.0, 1.0]), pd.Index(["a", "b"]), False), "codes"),
    # masked arrays
    (P.masked_array, (np.arange(3), np.zeros(4, bool)), "mask of shape"),
    (P.masked_array, (np.arange(3), np.zeros(3, np.int8)), "mask"),
    (P.masked_array, (np.arange(3, dtype=np.float16), np.zeros(3, bool)), "float16"),
    (P.masked_array, (np.array(["a"], dtype=object), np.zeros(1, bool)), "values"),
    # datetimes, timedeltas, periods
    (P.datetime_array, (np.arange(3).astype("M8[D]"), None), "units"),
    (P.datetime_array, (np.arange(3).astype(">M8[ns]"), None), "values"),
    (P.datetime_array, (np.arange(3).astype("M8[ns]"), "Europe/Paris"), "time zone"),
    (P.datetime_array, (np.arange(3), None), "values"),
    (P.timedelta_array, (np.arange(3).astype("m8[h]"),), "units"),
    (P.period_array, (np.arange(3, dtype=np.int32), "M"), "int64"),
    (P.period_array, (np.arange(3), "nonsense"), "does not know"),
    # strings
    (P.string_array, (np.array(["a", 1], dtype=object), "NA"), "int among its strings"),
    (P.string_array, (np.array(["a", None], dtype=object), "NA"), "NoneType among"),
    (P.string_array, (np.array(["a"], dtype=object), "None"), "missing value"),
    (P.string_array, (np.array(["a"]), "NA"), "values"),
    # scalars
    (P.timestamp, (-(1 << 63), "ns", None), "NaT"),
    (P.timestamp, (0, "D", None), "unit"),
    (P.timestamp, (0, "ns", "UTC"), "time zone"),
    (P.timestamp, (1 << 70, "ns", None), "64-bit"),
    (P.timedelta, (0, "W"), "unit"),
    (P.period, (0, "every day"), "does not know"),
    (P.period, (0, "M" * 100), "short string"),
    (P.missing, ("None",), "'NA' or 'NaT'"),
    (P.numpy_array, (np.ones((2, 2)),), "values"),
])
def test_bad_arguments_are_refused(impl, func, args, match):
    e = refused(crafted(func, *args), match)
    assert "torpor.pandas." in str(e) and "trusted=True" in str(e)


@needs_arrow
@pytest.mark.parametrize("args, match", [
    ((np.array([0, 2, 1, 3], np.int64), np.frombuffer(b"abc", np.uint8), None, "NA"), "decrease"),
    ((np.array([0, 1, 5], np.int64), np.frombuffer(b"abc", np.uint8), None, "NA"), "for 3 bytes"),
    ((np.array([1, 3], np.int64), np.frombuffer(b"abc", np.uint8), None, "NA"), "offsets from 1"),
    ((np.array([0, 3], np.int32), np.frombuffer(b"abc", np.uint8), None, "NA"), "int64"),
    ((np.array([0, 3], np.int64), np.array([1, 2, 3], np.int64), None, "NA"), "uint8"),
    ((np.array([0, 3], np.int64), np.frombuffer(b"abc", np.uint8), np.ones(2, bool), "NA"), "validity"),
])
def test_bad_arrow_buffers_are_refused(impl, args, match):
    refused(crafted(P.arrow_string_array, *args), match)


@needs_arrow
@pytest.mark.parametrize("offsets, data, match", [
    ([0, 2], b"\xff\xfe", "not UTF-8"),
    ([0, 1, 3], "éa".encode(), "inside a UTF-8 character"),      # splits the é
    ([0, 1, 1, 3], "éa".encode(), "inside a UTF-8 character"),   # so does an empty string
    ([0, 1, 2], b"a\xc3", "not UTF-8"),                         # cut at the end
    ([0, 4], b"a\xed\xa0\x80", "not UTF-8"),                   # a surrogate
])
@pytest.mark.parametrize("checker", ["pyarrow", "codecs"])
def test_invalid_utf8_in_arrow_strings_is_refused(impl, offsets, data, match, checker, monkeypatch):
    if checker == "codecs":                                     # the check without pyarrow
        monkeypatch.setattr(allowlist, "_loaded_pyarrow", lambda: None)
        monkeypatch.setattr(allowlist, "_UTF8_CHUNK", 1)       # characters split by chunks too
    refused(crafted(P.arrow_string_array, np.array(offsets, np.int64),
                    np.frombuffer(data, np.uint8), None, "NA"), match)
    ok = torpor.loads(crafted(P.arrow_string_array, np.array([0, 2, 3], np.int64),
                              np.frombuffer("éa".encode(), np.uint8), None, "NA"))
    assert list(ok) == ["é", "a"]


@needs_arrow
def test_arrow_buffers_serve_one_string_array(impl):
    offsets, data = np.array([0, 1], np.int64), np.frombuffer(b"a", np.uint8)
    ok = torpor.loads(torpor.dumps(Call(P.arrow_string_array, offsets, data, None, "NA")))
    assert list(ok) == ["a"]
    twice = [Call(P.arrow_string_array, offsets, data, None, "NA"),
             Call(P.arrow_string_array, offsets, data, None, "nan")]
    refused(torpor.dumps(twice), "another string array")


def test_colliding_hashes_in_categories_are_refused(impl):
    mod = (1 << 61) - 1
    cats = pd.Index(np.array([k * mod for k in range(1, 2001)], dtype=object), dtype=object)
    codes = np.zeros(1, np.int16)
    refused(crafted(P.categorical, codes, cats, False), "same hash value")


def test_labels_that_hash_forever_are_refused(impl):
    """Tuples each holding the previous one twice: 60 levels hash in 2^60 steps."""
    x = ()
    for _ in range(60):
        x = (x, x)
    labels = np.empty(2, dtype=object)
    labels[0], labels[1] = x, 1
    cats = pd.Index(labels, dtype=object)
    refused(crafted(P.categorical, np.zeros(1, np.int8), cats, False), "hashes take")


def test_one_array_used_by_many_calls_is_scanned_once(impl):
    """A file naming one big codes array in 3000 categorical calls pays for
    one scan of it (scanning it 3000 times takes seconds): what a check
    found is kept with the array."""
    codes = np.zeros(20_000_000, np.int32)           # 40,000 categories: int32 codes
    cats = pd.RangeIndex(40_000)
    data = torpor.dumps([Call(P.categorical, codes, cats, bool(i % 2)) for i in range(3000)])
    assert len(data) < 1_000_000
    t = time.perf_counter()
    out = torpor.loads(data)
    assert time.perf_counter() - t < 2.0
    assert len(out) == 3000 and all(out[0]._codes is c._codes for c in out)
    assert allowlist._summary(out[0]._codes)["range"] == (0, 0)


def test_one_array_checked_many_ways_is_refused(impl):
    """Each time zone would scan the shared values again for the frequency:
    MAX_SCANS at most per array."""
    values = np.arange(0, 10**5, dtype="M8[h]").astype("M8[s]")
    zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Africa/Cairo",
             "Australia/Sydney", "Asia/Kolkata", "America/Sao_Paulo", "Europe/Moscow", "Asia/Dubai"]
    arrays = [pd.arrays.DatetimeArray._simple_new(values, dtype=pd.DatetimeTZDtype("s", z))
              for z in zones]
    ok = torpor.loads(torpor.dumps([Call(P.index, a, None, "h") for a in arrays[:4]]))
    assert all(np.shares_memory(i._data._ndarray, ok[0]._data._ndarray) for i in ok)
    refused(torpor.dumps([Call(P.index, a, None, "h") for a in arrays]), "different ways")


def test_period_frequencies_pandas_would_cache_are_bounded(impl, monkeypatch):
    """PeriodDtype caches every frequency it meets for the life of the process."""
    monkeypatch.setattr(allowlist, "_period_freqs", set())
    monkeypatch.setattr(allowlist, "MAX_PERIOD_FREQS", 3)
    ordinals = np.arange(2)
    ok = torpor.loads(torpor.dumps([Call(P.period_array, ordinals.copy(), f) for f in
                                    ("D", "2D", "D", "M", "2D")]))
    assert [str(a.dtype) for a in ok] == ["period[D]", "period[2D]", "period[D]", "period[M]",
                                          "period[2D]"]
    refused(torpor.dumps([Call(P.period_array, ordinals, "7D")]), "after 3 others")


def test_rebuilt_objects_take_no_state(impl):
    e = refused(file_of(R(G("torpor.pandas", "range_index"), 0, 3, 1, None, state={"_range": 5})))
    assert "state" in str(e)
    e = refused(file_of(R(G("torpor.pandas", "missing"), "NA", state={"x": 1})))
    assert "state" in str(e)


def test_pandas_classes_are_names_not_calls(impl):
    assert torpor.loads(file_of(G("pandas", "DataFrame"))) is pd.DataFrame
    refused(file_of(R(G("pandas", "DataFrame"), [1, 2])), "name but not call")
    refused(file_of(R(G("copyreg", "__newobj__"), G("pandas", "DataFrame"))), "may not call")


def test_no_attribute_of_a_pandas_object_is_read(impl):
    """getattr(df, 'values') would copy every column (df.style imports modules)."""
    frame = R(G("torpor.pandas", "range_index"), 0, 3, 1, None)
    for name in ("values", "style", "is_unique", "sum"):
        refused(file_of(R(G("builtins", "getattr"), frame, name)), "properties compute")


def test_crafted_stream_calls_are_checked(impl):
    refused(file_of(R(G("torpor.pandas", "range_index"), 0, 10, 0, None)), "step of 0")
    refused(file_of(R(G("torpor.pandas", "series"), [1, 2], R(G("torpor.pandas", "range_index"),
                                                             0, 2, 1, None), None, {}, True)),
            "values")
    refused(file_of(R(G("torpor.pandas", "index"), T(1, 2), None, None)), "values")
    out = torpor.loads(file_of(R(G("torpor.pandas", "range_index"), 0, 10, 2, "r")))
    tm.assert_index_equal(out, pd.RangeIndex(0, 10, 2, name="r"), exact=True)


def test_unknown_torpor_pandas_names_are_refused(impl):
    refused(file_of(G("torpor.pandas", "eval")), "allow=")


def test_trusted_loads_skip_the_checks(impl):
    data = crafted(P.range_index, 0, 10, 0, None)
    refused(data)
    with pytest.raises(torpor.RestoreError):
        torpor.loads(data, trusted=True)            # pandas' own ValueError


# --- the allow-list and the docs -----------------------------------------------------

def test_every_rebuild_function_has_a_checked_entry():
    fixed = {name for name in allowlist.SAFE if name.startswith("torpor.pandas.")}
    written = {f"torpor.pandas.{f.__name__}" for f in (
        P.frame, P.series, P.index, P.range_index, P.multi_index, P.categorical, P.masked_array,
        P.datetime_array, P.timedelta_array, P.period_array, P.string_array,
        P.arrow_string_array, P.numpy_array, P.timestamp, P.timedelta, P.period, P.missing)}
    assert fixed == written
    assert all(allowlist.SAFE[n].call and allowlist.SAFE[n].check is not None for n in fixed)


def test_listed_classes_are_the_ones_pandas_names():
    """The classes the rebuild functions build are listed under this pandas'
    names, as values with no state."""
    built = [pd.DataFrame, pd.Series, pd.Index, pd.RangeIndex, pd.MultiIndex, pd.DatetimeIndex,
             pd.TimedeltaIndex, pd.PeriodIndex, pd.CategoricalIndex, pd.Categorical,
             pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray,
             pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray, pd.arrays.PeriodArray,
             pd.arrays.StringArray, pd.arrays.ArrowStringArray, pd.arrays.NumpyExtensionArray,
             pd.Timestamp, pd.Timedelta, pd.Period, type(pd.NaT), type(pd.NA)]
    for cls in built:
        entry = allowlist.SAFE[f"{cls.__module__}.{cls.__qualname__}"]
        assert not entry.call and entry.state is None


@pytest.mark.parametrize("n", [0, 1, 126, 127, 128, 32766, 32767, 2**31 - 2, 2**31 - 1, 2**31])
def test_codes_dtype_is_pandas_own(n):
    from pandas.core.arrays.categorical import coerce_indexer_dtype
    assert allowlist._codes_dtype(n) == coerce_indexer_dtype(np.zeros(1, np.int64), range(n)).dtype


def test_the_benchmark_runs_small():
    """benchmarks/pandas_frames.py at 1 MiB: every peer that keeps dtypes gives the
    frame back exactly (CI never runs it at its default size)."""
    bench = pytest.importorskip("benchmarks.pandas_frames")
    lines = []
    saves, loads, sizes, fidelity = bench.run(1, 1, out=lines.append)
    assert fidelity["torpor"] is None and fidelity["torpor compress=None"] is None
    assert fidelity["pickle 5 + fsync"] is None
    assert sizes["torpor"] < sizes["pickle 5 + fsync"]
    assert any(line.lstrip().startswith("torpor ") for line in lines)
