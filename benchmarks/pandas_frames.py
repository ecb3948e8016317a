"""A mixed-dtype pandas DataFrame saved and loaded by torpor, pickle and parquet (issue 17):

    python -m benchmarks.pandas_frames [--mb 1024] [--repeat 3] [--keep-order] [--drop obj ...]

The frame (seeded) has float64, int64, nullable Int64 (10% missing), bool,
datetime64[ns, Europe/Paris], category (200 labels), pandas' default string dtype
(``str``: pyarrow-backed when pyarrow is installed) and an object column of Python
strings, with a named RangeIndex and ``attrs``; ``--mb`` is its size in memory
(``memory_usage(deep=True)``), and ``--drop`` leaves columns out (to see what one
costs). Do not run the default size in CI: it needs about four
times that much memory (the frame, a loaded copy, the peers' buffers).

Peers, each writing a file and fsyncing it (torpor's save always does): torpor's
default save (lz4) and ``compress=None``, loaded without ``allow=``; pickle protocol 5
(``pickle.dump`` to the file, then fsync); ``DataFrame.to_parquet`` /
``pandas.read_parquet`` with pyarrow (snappy, its default), when pyarrow is installed.
The order of the peers rotates every round; each run starts after ``os.sync()``, and
each file is read back right after it was written (in the page cache). Printed:
best and median of ``--repeat`` rounds for save and load, the file size, and whether
the loaded frame equals the original (``assert_frame_equal``, exact, with dtypes and
attrs; parquet does not keep every dtype, and the difference is printed).
"""

import argparse
import gc
import importlib.util
import os
import pickle
import statistics
import sys
import tempfile
import time

import numpy as np
import pandas as pd

import torpor


def frame(mb, seed=0):
    """A mixed-dtype frame of about ``mb`` MiB in memory (deep)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:05d}-{'x' * (i % 11)}" for i in range(10_000)], dtype=object)
    labels = [f"label-{i:03d}" for i in range(200)]

    def make(n):
        ints = rng.integers(-10**9, 10**9, n)
        nullable = pd.array(rng.integers(0, 1000, n), dtype="Int64")
        nullable[rng.random(n) < 0.1] = pd.NA
        df = pd.DataFrame({
            "f8": rng.standard_normal(n),
            "i8": ints,
            "Int64": nullable,
            "bool": rng.random(n) < 0.5,
            "when": pd.date_range("2020-01-01", periods=n, freq="s", tz="Europe/Paris", unit="ns"),
            "cat": pd.Categorical.from_codes(rng.integers(0, len(labels), n), categories=labels),
            "str": pd.array(words[rng.integers(0, len(words), n)], dtype="str"),
            "obj": pd.Series(words[rng.integers(0, len(words), n)], dtype=object),
        })
        df.index.name = "row"
        df.attrs = {"source": "benchmarks.pandas_frames", "seed": seed}
        return df

    probe = make(10_000)
    per_row = probe.memory_usage(deep=True).sum() / len(probe)
    return make(max(1000, int((mb << 20) / per_row)))


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pickle_save(df, path):
    with open(path, "wb") as f:
        pickle.dump(df, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())


def _pickle_load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _parquet_save(df, path):
    df.to_parquet(path, engine="pyarrow")
    _fsync(path)


def peers():
    table = {
        "torpor": (lambda df, path: torpor.dump(df, path), lambda path: torpor.load(path)),
        "torpor compress=None": (lambda df, path: torpor.dump(df, path, compress=None),
                                 lambda path: torpor.load(path)),
        "pickle 5 + fsync": (_pickle_save, _pickle_load),
    }
    if importlib.util.find_spec("pyarrow") is None:
        print("pyarrow is not installed: no parquet peer", file=sys.stderr)
    else:
        table["parquet (pyarrow) + fsync"] = (_parquet_save,
                                              lambda path: pd.read_parquet(path, engine="pyarrow"))
    return table


def _same(df, got):
    """None if ``got`` equals ``df`` exactly (dtypes, index, attrs), else why not."""
    try:
        pd.testing.assert_frame_equal(df, got, check_exact=True)
        assert got.attrs == df.attrs, f"attrs {got.attrs!r}"
    except AssertionError as e:
        return " ".join(str(e).split())[:160]
    return None


def run(mb, repeat, rotate=True, out=print, drop=()):
    df = frame(mb)
    if drop:
        df = df.drop(columns=list(drop))
    size = df.memory_usage(deep=True).sum()
    out(f"frame: {len(df):,} rows x {df.shape[1]} columns, {size / 2**20:.0f} MiB in memory; "
        f"dtypes: {', '.join(str(t) for t in df.dtypes)}")
    out(f"pandas {pd.__version__}, numpy {np.__version__}, torpor {torpor.__version__} "
        f"({torpor.implementation}), python {sys.version.split()[0]}, {os.cpu_count()} cores")
    table = peers()
    names = list(table)
    saves = {k: [] for k in names}
    loads = {k: [] for k in names}
    sizes, fidelity = {}, {}
    with tempfile.TemporaryDirectory(prefix="torpor-pandas-") as d:
        path = os.path.join(d, "frame")
        for r in range(repeat):
            order = names[r % len(names):] + names[:r % len(names)] if rotate else names
            for name in order:
                save, load = table[name]
                gc.collect()
                os.sync()
                t = time.perf_counter()
                save(df, path)
                saves[name].append(time.perf_counter() - t)
                sizes[name] = os.path.getsize(path)
                gc.collect()
                t = time.perf_counter()
                got = load(path)
                loads[name].append(time.perf_counter() - t)
                if r == 0:
                    fidelity[name] = _same(df, got)
                del got
                os.unlink(path)
    ref_save, ref_load = min(saves["pickle 5 + fsync"]), min(loads["pickle 5 + fsync"])
    ref_size = sizes["pickle 5 + fsync"]
    out(f"\nseconds, best / median of {repeat} (x pickle: best against best)")
    out(f"  {'peer':27s} {'save':>17s} {'':>8s} {'load':>17s} {'':>8s} {'file MiB':>9s}  round trip")
    for name in names:
        s, lo = saves[name], loads[name]
        out(f"  {name:27s} {min(s):7.3f} / {statistics.median(s):7.3f} {min(s) / ref_save:6.2f}x "
            f"{min(lo):7.3f} / {statistics.median(lo):7.3f} {min(lo) / ref_load:6.2f}x "
            f"{sizes[name] / 2**20:9.1f} ({sizes[name] / ref_size:4.2f}x)  "
            f"{'exact' if fidelity[name] is None else 'differs: ' + fidelity[name]}")
    return saves, loads, sizes, fidelity


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=1024, help="size of the frame in memory, MiB")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (best and median are shown)")
    ap.add_argument("--keep-order", action="store_true", help="do not rotate the peers' order")
    ap.add_argument("--drop", nargs="+", default=[], metavar="COLUMN",
                    help="leave these columns out (f8 i8 Int64 bool when cat str obj)")
    a = ap.parse_args(argv)
    run(a.mb, a.repeat, rotate=not a.keep_order, drop=a.drop)


if __name__ == "__main__":
    main()
