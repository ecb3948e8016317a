"""pandas objects, taken apart by torpor and rebuilt by torpor's own functions.

pickle's protocol saves a DataFrame as pandas' own helpers (its BlockManager,
``_unpickle_block``, ``_new_Index``, Cython's ``__pyx_unpickle_NDArrayBacked``...)
called with their own arguments: a safe load would have to let a file call a
dozen pandas internals with arguments nobody checks. Instead, ``REDUCERS`` below
(consulted by ``reduce.reduce_object``, by exact type) takes each object apart
into plain values, numpy arrays (which the walkers write as their ordinary
zero-copy array sections) and the other pandas objects it holds, and names one of
the rebuild functions of this module, written under the fixed names
``torpor.pandas.*``. Those functions are on the default allow-list
(``allowlist.SAFE``), each with a check of its arguments that runs before it is
called: a file that names them can build nothing but the pandas object its own
arrays describe (see the "pandas" section of allowlist.py and docs/SAFETY.md).
The rebuild functions themselves trust their checks: they call pandas' O(1)
constructors (``_simple_new``, ``create_dataframe_from_blocks``), so an array that
many objects share is never scanned again.

This module is imported only when it is needed: by ``reduce`` the first time an
object whose type comes from pandas is saved (so pandas is already imported), and
by a load that meets a ``torpor.pandas.*`` name (``reduce.fixed_global``; without
pandas installed that is a MissingClassError). ``import torpor`` never imports it.

Covered (pandas >= 3.0): DataFrame and Series (with attrs and the
allows_duplicate_labels flag), Index of numpy values or of the arrays below,
RangeIndex, MultiIndex, DatetimeIndex (with freq, naive or with a time zone),
TimedeltaIndex, PeriodIndex, CategoricalIndex, Categorical, the masked arrays
(Int*, UInt*, Float*, boolean), DatetimeArray, TimedeltaArray, PeriodArray,
string arrays (python storage, and pyarrow storage as its offsets and data),
NumpyExtensionArray, Timestamp, Timedelta, Period, NaT and NA. Anything else
(a subclass, ArrowExtensionArray, SparseArray, IntervalArray, a dtype or offset
saved on its own, a time zone other than zoneinfo's or datetime's...) keeps
pickle's protocol, and needs ``allow=`` to load: a DataFrame holding such a
column is still taken apart here, and only that column's parts need it.
"""

from __future__ import annotations

import datetime
import importlib
from typing import Any, Callable, Optional

import numpy as np

from ..errors import CorruptFileError, MissingClassError
from .reduce import fix_global_name

pd: Any = importlib.import_module("pandas")

#: The fast path needs pandas 3: public class names (``pandas.DataFrame``, which
#: the allow-list lists), ``pandas.api.internals.create_dataframe_from_blocks``,
#: and a DatetimeIndex's freq kept on the index, not its array. With an older
#: pandas, objects keep pickle's protocol, and a file written by this path does
#: not load (MissingClassError, saying so).
SUPPORTED = int(pd.__version__.split(".")[0]) >= 3

_NA_VALUES: dict[str, Any] = {"NA": pd.NA, "nan": np.nan}
#: numpy's scalar types, called with a unit only known at run time (their stubs
#: want a literal one)
_datetime64: Any = np.datetime64
_timedelta64: Any = np.timedelta64


def require_pandas3() -> None:
    """Refuse (MissingClassError) to rebuild with a pandas older than 3."""
    if not SUPPORTED:
        raise MissingClassError(
            f"the file holds pandas objects written by torpor's pandas path "
            f"(torpor.pandas.*), which needs pandas >= 3.0; this is pandas {pd.__version__}. "
            f"Install pandas 3 to load it", "pandas", pd.__version__)


def _rebuild(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Write the decorated function under ``torpor.pandas.<name>`` in every file."""
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        return fix_global_name(func, f"torpor.pandas.{name}")
    return register


# --- rebuilding (each called only after allowlist's check of its arguments) -----

def _finish(obj: Any, attrs: dict[Any, Any], allows_duplicate_labels: bool) -> Any:
    """attrs and flags of a DataFrame or Series (pickle keeps both)."""
    if attrs:
        obj.attrs = attrs
    if not allows_duplicate_labels:
        # The public setter would look for duplicates with pandas' hash tables;
        # the argument check has already checked the labels, without them.
        object.__setattr__(obj, "_flags", pd.Flags(obj, allows_duplicate_labels=False))
    return obj


@_rebuild("frame")
def frame(columns: Any, index: Any, blocks: list[Any], placements: list[list[int]],
          attrs: dict[Any, Any], allows_duplicate_labels: bool) -> Any:
    """A DataFrame from its blocks, as they were: 2-D arrays (one row per column
    they hold) and extension arrays, each with the positions of its columns."""
    require_pandas3()
    df = pd.api.internals.create_dataframe_from_blocks(
        [(values, np.asarray(where, dtype=np.intp)) for values, where in zip(blocks, placements)],
        index=index, columns=columns)
    return _finish(df, attrs, allows_duplicate_labels)


@_rebuild("series")
def series(values: Any, index: Any, name: Any, attrs: dict[Any, Any],
           allows_duplicate_labels: bool) -> Any:
    require_pandas3()
    s = pd.Series(values, index=index, name=name, dtype=values.dtype, copy=False)
    return _finish(s, attrs, allows_duplicate_labels)


def index_class(values: Any) -> Any:
    """The Index class pandas keeps ``values`` (an array or extension array) in."""
    if type(values) is np.ndarray:
        return pd.Index
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        return {"M": pd.DatetimeIndex, "m": pd.TimedeltaIndex}.get(dtype.kind, pd.Index)
    return dtype.index_class


@_rebuild("index")
def index(values: Any, name: Any, freq: Any) -> Any:
    """An Index over ``values`` as they are (no inference, no copy); ``freq``: a
    DatetimeIndex's or TimedeltaIndex's frequency, as a string or an offset."""
    require_pandas3()
    idx = index_class(values)._simple_new(values, name=name)
    if freq is not None:
        # set as pandas' own _view() sets it: the argument check has validated it
        # (the public setter would scan the values again for every index sharing them)
        idx._freq = offset(freq)
    return idx


@_rebuild("range_index")
def range_index(start: int, stop: int, step: int, name: Any) -> Any:
    require_pandas3()
    return pd.RangeIndex(start, stop, step, name=name)


@_rebuild("multi_index")
def multi_index(levels: list[Any], codes: list[Any], names: list[Any],
                sortorder: Optional[int]) -> Any:
    require_pandas3()
    # verify_integrity=False: the argument check verified what pandas would (code
    # ranges, unique levels, sortorder), once per array
    return pd.MultiIndex(levels=levels, codes=codes, names=names, sortorder=sortorder,
                         verify_integrity=False)


@_rebuild("categorical")
def categorical(codes: Any, categories: Any, ordered: bool) -> Any:
    require_pandas3()
    dtype = pd.CategoricalDtype._from_fastpath(categories, ordered)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


_MASKED: dict[str, Any] = {"b": pd.arrays.BooleanArray, "i": pd.arrays.IntegerArray,
                           "u": pd.arrays.IntegerArray, "f": pd.arrays.FloatingArray}


@_rebuild("masked_array")
def masked_array(values: Any, mask: Any) -> Any:
    """Int8...UInt64, Float32/64 or boolean, by the dtype of ``values``."""
    require_pandas3()
    return _MASKED[values.dtype.kind](values, mask, copy=False)


@_rebuild("datetime_array")
def datetime_array(values: Any, tz: Optional[datetime.tzinfo]) -> Any:
    require_pandas3()
    dtype = values.dtype if tz is None else \
        pd.DatetimeTZDtype(unit=np.datetime_data(values.dtype)[0], tz=tz)
    return pd.arrays.DatetimeArray._simple_new(values, dtype=dtype)


@_rebuild("timedelta_array")
def timedelta_array(values: Any) -> Any:
    require_pandas3()
    return pd.arrays.TimedeltaArray._simple_new(values, dtype=values.dtype)


@_rebuild("period_array")
def period_array(ordinals: Any, freq: str) -> Any:
    require_pandas3()
    return pd.arrays.PeriodArray._simple_new(ordinals, dtype=pd.PeriodDtype(freq))


@_rebuild("string_array")
def string_array(values: Any, na: str) -> Any:
    """A string array of python storage: its object array of str and missing values."""
    require_pandas3()
    return pd.arrays.StringArray._simple_new(
        values, dtype=pd.StringDtype("python", na_value=_NA_VALUES[na]))


def _pyarrow() -> Any:
    try:
        return importlib.import_module("pyarrow")
    except ModuleNotFoundError:
        raise MissingClassError(
            "the file holds a pandas string array stored by pyarrow, but pyarrow is not "
            "installed here: install it (pip install pyarrow) and load again",
            "pyarrow", "large_string") from None


@_rebuild("arrow_string_array")
def arrow_string_array(offsets: Any, data: Any, valid: Any, na: str) -> Any:
    """A string array of pyarrow storage from its buffers: int64 offsets (n + 1),
    the UTF-8 bytes, and which items are present (None: all of them)."""
    require_pandas3()
    pa = _pyarrow()
    n = len(offsets) - 1
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if valid is None else n - int(np.count_nonzero(valid))
    arr = pa.Array.from_buffers(pa.large_string(), n,
                                [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], nulls)
    try:
        # the buffers' sizes; the argument check has checked the offsets and the
        # UTF-8 of every string (a trusted load trusts them)
        arr.validate()
    except pa.ArrowInvalid as e:
        raise CorruptFileError(f"a pandas string array holds invalid data ({e})") from None
    return pd.arrays.ArrowStringArray(pa.chunked_array([arr], pa.large_string()),
                                      dtype=pd.StringDtype("pyarrow", na_value=_NA_VALUES[na]))


@_rebuild("numpy_array")
def numpy_array(values: Any) -> Any:
    require_pandas3()
    return pd.arrays.NumpyExtensionArray(values, copy=False)


@_rebuild("timestamp")
def timestamp(value: int, unit: str, tz: Optional[datetime.tzinfo]) -> Any:
    """A Timestamp from its value in its own unit (UTC when it has a zone)."""
    require_pandas3()
    ts = pd.Timestamp(_datetime64(value, unit))
    return ts if tz is None else ts.tz_localize("UTC").tz_convert(tz)


@_rebuild("timedelta")
def timedelta(value: int, unit: str) -> Any:
    require_pandas3()
    return pd.Timedelta(_timedelta64(value, unit))


@_rebuild("period")
def period(ordinal: int, freq: str) -> Any:
    require_pandas3()
    return pd.Period(ordinal=ordinal, freq=freq)


@_rebuild("missing")
def missing(which: str) -> Any:
    """pandas' singletons: NA (missing in the nullable arrays) and NaT."""
    require_pandas3()
    return pd.NA if which == "NA" else pd.NaT


def offset(freq: Any) -> Any:
    """A frequency the file holds as a string (else an offset object)."""
    return freq if isinstance(freq, pd.offsets.BaseOffset) else pd.tseries.frequencies.to_offset(freq)


# --- taking apart ------------------------------------------------------------------
#
# Each reducer returns (rebuild function, arguments) or None, which leaves the
# object to pickle's protocol (reduce.reduce_object): what this module cannot
# take apart faithfully is not guessed at. The arguments are what the checks in
# allowlist.py accept, and the plain values among them are given as top-level
# arguments (or items of top-level lists) on purpose: the load guard charges
# what reading and hashing those cost for every call (engine/guard.py).

#: dtype kinds of the numpy arrays a Series, an Index or a DataFrame block holds
#: (datetimes and timedeltas are always DatetimeArray / TimedeltaArray)
ARRAY_KINDS = "biufcO"


def _freq_arg(freq: Any) -> Any:
    """A frequency as its string when the string gives it back, else the offset
    itself (a CustomBusinessDay with holidays: pickle's protocol, allow=)."""
    if freq is None:
        return None
    s = freq.freqstr
    return s if offset(s) == freq else freq


def _reduce_frame(df: Any) -> Any:
    mgr = df._mgr
    if type(mgr) is not _BlockManager:
        return None
    blocks, placements = [], []
    for block in mgr.blocks:
        values = block.values
        if type(values) is np.ndarray and (values.dtype.kind not in ARRAY_KINDS or values.ndim != 2):
            return None
        blocks.append(values)
        placements.append(block.mgr_locs.as_array.tolist())
    return frame, (mgr.axes[0], mgr.axes[1], blocks, placements, df.attrs,
                   df.flags.allows_duplicate_labels)


def _reduce_series(s: Any) -> Any:
    values = s._values
    if type(values) is np.ndarray and values.dtype.kind not in ARRAY_KINDS:
        return None
    return series, (values, s.index, s.name, s.attrs, s.flags.allows_duplicate_labels)


def _reduce_index(idx: Any) -> Any:
    values = idx._data
    if type(idx) is not index_class(values) or type(values) is np.ndarray and (
            values.dtype.kind not in ARRAY_KINDS or values.dtype == np.float16):
        return None
    freq = _freq_arg(idx.freq) if type(idx) in (pd.DatetimeIndex, pd.TimedeltaIndex) else None
    return index, (values, idx.name, freq)


def _reduce_range_index(idx: Any) -> Any:
    return range_index, (idx.start, idx.stop, idx.step, idx.name)


def _reduce_multi_index(mi: Any) -> Any:
    return multi_index, (list(mi.levels), list(mi.codes), list(mi.names), mi.sortorder)


def _reduce_categorical(cat: Any) -> Any:
    return categorical, (cat._codes, cat.categories, cat.ordered)


def _reduce_masked(arr: Any) -> Any:
    return masked_array, (arr._data, arr._mask)


def _reduce_datetimes(arr: Any) -> Any:
    return datetime_array, (arr._ndarray, arr.tz)


def _reduce_timedeltas(arr: Any) -> Any:
    return timedelta_array, (arr._ndarray,)


def _reduce_periods(arr: Any) -> Any:
    freq = arr.dtype._freqstr
    if pd.PeriodDtype(freq) != arr.dtype:
        return None
    return period_array, (arr._ndarray, freq)


def _na_name(dtype: Any) -> Optional[str]:
    for name, value in _NA_VALUES.items():
        if dtype.na_value is value:
            return name
    return None


def _reduce_strings(arr: Any) -> Any:
    na = _na_name(arr.dtype)
    if na is None or arr.dtype.storage != "python":
        return None
    return string_array, (arr._ndarray, na)


def _reduce_arrow_strings(arr: Any) -> Any:
    """Its offsets, data and validity, as numpy views of arrow's buffers (one
    chunk, starting at offset 0: a sliced or chunked array is copied into one)."""
    na = _na_name(arr.dtype)
    chunked = arr._pa_array
    pa = _pyarrow()
    if na is None or chunked.type != pa.large_string():
        return None
    chunk = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
    n = len(chunk)
    _, offsets_buf, data_buf = chunk.buffers()
    if offsets_buf is None:
        offsets = np.zeros(n + 1, dtype=np.int64)
    else:
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[chunk.offset:chunk.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8)[start:end] if data_buf is not None and end > start \
        else np.zeros(0, dtype=np.uint8)
    if start:
        offsets = offsets - start
    valid = None if chunk.null_count == 0 else chunk.is_valid().to_numpy(zero_copy_only=False)
    return arrow_string_array, (offsets, data, valid, na)


def _reduce_numpy_array(arr: Any) -> Any:
    values = arr._ndarray
    if values.ndim != 1 or values.dtype.kind not in ARRAY_KINDS:
        return None
    return numpy_array, (values,)


def _reduce_timestamp(ts: Any) -> Any:
    return timestamp, (ts._value, ts.unit, ts.tz)


def _reduce_timedelta(td: Any) -> Any:
    return timedelta, (td._value, td.unit)


def _reduce_period(p: Any) -> Any:
    return period, (p.ordinal, p.freqstr)


def _reduce_nat(x: Any) -> Any:
    return missing, ("NaT",)


def _reduce_na(x: Any) -> Any:
    return missing, ("NA",)


_BlockManager: Any = pd.core.internals.managers.BlockManager

#: Exact type -> reducer (subclasses keep pickle's protocol: their own code may
#: hold state this module does not know).
REDUCERS: dict[type, Callable[[Any], Any]] = {
    pd.DataFrame: _reduce_frame,
    pd.Series: _reduce_series,
    pd.Index: _reduce_index,
    pd.DatetimeIndex: _reduce_index,
    pd.TimedeltaIndex: _reduce_index,
    pd.PeriodIndex: _reduce_index,
    pd.CategoricalIndex: _reduce_index,
    pd.RangeIndex: _reduce_range_index,
    pd.MultiIndex: _reduce_multi_index,
    pd.Categorical: _reduce_categorical,
    pd.arrays.IntegerArray: _reduce_masked,
    pd.arrays.FloatingArray: _reduce_masked,
    pd.arrays.BooleanArray: _reduce_masked,
    pd.arrays.DatetimeArray: _reduce_datetimes,
    pd.arrays.TimedeltaArray: _reduce_timedeltas,
    pd.arrays.PeriodArray: _reduce_periods,
    pd.arrays.StringArray: _reduce_strings,
    pd.arrays.ArrowStringArray: _reduce_arrow_strings,
    pd.arrays.NumpyExtensionArray: _reduce_numpy_array,
    pd.Timestamp: _reduce_timestamp,
    pd.Timedelta: _reduce_timedelta,
    pd.Period: _reduce_period,
    type(pd.NaT): _reduce_nat,
    type(pd.NA): _reduce_na,
} if SUPPORTED else {}
