"""The benchmark harness: every library on every workload, one report.

    python -m benchmarks.report --size small|medium|large [--scaling] [--repeat N]
                                [--libs a,b] [--workloads a,b] [--no-memory] [--out DIR]

Times (best of ``--repeat``) come from this one process, the libraries
interleaved round by round so drift hits them alike; peak memory comes from a
fresh subprocess per library and workload (resident set size sampled while it
saves, then while it loads, above the level just before). Writes
``DIR/REPORT.md``, ``DIR/results.json`` and PNG charts (default DIR:
benchmarks/results). Exits 1 only if torpor fails to round-trip a workload:
never on timing.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks import workloads as W
from benchmarks.peers import PEERS, settle

#: workload -> (builder, {size: argument}); array sizes in MiB, others in items
WORKLOADS = {
    "array-heavy": (W.array_heavy, {"small": 16, "medium": 256, "large": 1024}),
    "object-heavy": (W.object_heavy, {"small": 20_000, "medium": 200_000, "large": 1_000_000}),
    "mixed": (W.mixed, {"small": 2_000, "medium": 40_000, "large": 200_000}),
    "incompressible": (W.incompressible, {"small": 16, "medium": 256, "large": 512}),
}
ARRAYS_ONLY = {"incompressible"}
#: scaling: four sizes spanning 100x, per workload (unit of the x axis)
SCALING = {"array-heavy": ([4, 19, 86, 400], "MiB"), "object-heavy": ([5_000, 23_000, 107_000, 500_000], "atoms"),
           "mixed": ([400, 1_900, 8_600, 40_000], "runs"), "incompressible": ([4, 19, 86, 400], "MiB")}
SCALING_LIBS = ["torpor", "pickle", "joblib-lz4", "chimerax-style"]


# --- round-trip check ------------------------------------------------------------

def same(a, b):
    """Deep equality of values, types, dtypes, shapes and of the sharing
    structure (an object reached twice in ``a`` is one object in ``b``)."""
    seen = {}
    todo = [(a, b, "root")]
    while todo:
        x, y, path = todo.pop()
        if type(x) is not type(y) and not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            if type(x).__qualname__ != type(y).__qualname__:
                return f"{path}: type {type(x).__qualname__} != {type(y).__qualname__}"
        if isinstance(x, (dict, list, tuple, set, np.ndarray)) or hasattr(x, "__dict__"):
            prev = seen.get(id(x))
            if prev is not None:
                if prev is not y:
                    return f"{path}: a shared object came back as two objects"
                continue
            seen[id(x)] = y
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
                return f"{path}: array differs ({x.dtype}{x.shape} vs {y.dtype}{y.shape})"
        elif isinstance(x, dict):
            if list(x) != list(y):
                return f"{path}: keys differ"
            todo.extend((x[k], y[k], f"{path}[{k!r}]") for k in x)
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return f"{path}: length {len(x)} != {len(y)}"
            todo.extend((u, v, f"{path}[{i}]") for i, (u, v) in enumerate(zip(x, y)))
        elif hasattr(x, "__dict__"):
            todo.append((vars(x), vars(y), f"{path}.__dict__"))
        elif x != y and not (isinstance(x, float) and x != x and y != y):
            return f"{path}: {x!r:.40} != {y!r:.40}"
    return None


# --- measuring ---------------------------------------------------------------------

def _rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())
        self.extra = self.peak - self.base


def build(workload, arg):
    return WORKLOADS[workload][0](arg)


def child(workload, arg, lib, folder):
    """Run in a fresh interpreter: peak extra RSS of one save and one load."""
    obj = build(workload, arg)
    gc.collect()
    peer = PEERS[lib]
    path = os.path.join(folder, "m")
    with PeakRSS() as s:
        peer.save(obj, path)
    del obj
    gc.collect()
    with PeakRSS() as ld:
        back = peer.load(path)
    del back
    os.unlink(path)
    print(json.dumps({"save": s.extra, "load": ld.extra}))


def measure_memory(workload, arg, lib, folder):
    r = subprocess.run([sys.executable, "-m", "benchmarks.report", "--child", workload, str(arg), lib,
                        folder], capture_output=True, text=True, cwd=_ROOT)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(fn):
    settle()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_workload(workload, arg, libs, repeat, folder, memory):
    obj = build(workload, arg)
    rows = {lib: {"save": [], "load": [], "size": None, "roundtrip": None} for lib in libs}
    for r in range(repeat):
        order = libs[r % len(libs):] + libs[:r % len(libs)]      # rotate: interleaved
        for lib in order:
            peer, row = PEERS[lib], rows[lib]
            if row.get("error"):
                continue
            path = os.path.join(folder, f"{workload}-{lib}")
            try:
                ts, _ = _timed(lambda: peer.save(obj, path))
                tl, back = _timed(lambda: peer.load(path))
            except Exception as e:       # a peer that cannot handle a workload is reported
                row["error"] = f"{type(e).__name__}: {e}"[:200]
                continue
            row["save"].append(ts)
            row["load"].append(tl)
            row["size"] = os.path.getsize(path)
            if r == 0:
                row["roundtrip"] = same(obj, back) or "ok"
            del back
            os.unlink(path)
    out = {}
    for lib, row in rows.items():
        res = {"save_s": min(row["save"]) if row["save"] else None,
               "load_s": min(row["load"]) if row["load"] else None,
               "size": row["size"], "roundtrip": row["roundtrip"], "error": row.get("error")}
        if memory and not row.get("error"):
            res["memory"] = measure_memory(workload, arg, lib, folder)
        out[lib] = res
    return out


def run_scaling(workloads, repeat, folder):
    result = {}
    for wl in workloads:
        sizes, unit = SCALING[wl]
        libs = [lb for lb in SCALING_LIBS if not (PEERS[lb].arrays_only and wl not in ARRAYS_ONLY)]
        points = []
        for size in sizes:
            r = run_workload(wl, size, libs, repeat, folder, memory=False)
            points.append({"size": size, **{lib: {"save_s": v["save_s"], "load_s": v["load_s"]}
                                            for lib, v in r.items()}})
        result[wl] = {"unit": unit, "points": points}
    return result


# --- the report --------------------------------------------------------------------

def machine():
    import importlib.metadata as md
    versions = {}
    for pkg in ("torpor", "numpy", "cloudpickle", "dill", "joblib", "lz4", "msgpack", "matplotlib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    import torpor
    return {"cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1) if mem else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "torpor_walker": torpor.implementation, "versions": versions}


def _fmt(v, base, unit=""):
    if v is None:
        return "-"
    ratio = f" ({v / base:.2f}x)" if base else ""
    return f"{v:.3f}{unit}{ratio}" if isinstance(v, float) else f"{v}{unit}{ratio}"


def _size_cell(size, base):
    return f"{size / 2**20:.1f}" + (f" ({size / base:.2f}x)" if base else "")


def _mib(v):
    return None if v is None else v / 2**20


def write_report(data, out):
    lines = [f"# torpor benchmark report ({data['size']})", ""]
    m = data["machine"]
    lines += [f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']} "
              f"({m['platform']}), torpor walker: {m['torpor_walker']}.",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
              f"Command: `{data['command']}` ({data['date']}).", "",
              "Times are best of the run's repeats, in seconds, with the ratio to pickle "
              "(protocol 5, to a file) in the same run; below 1 is better than pickle. "
              "Peak memory is the resident memory a fresh process needed above its level "
              "just before the save (or load), in MiB.", ""]
    slower = []
    for wl, rows in data["results"].items():
        base = rows.get("pickle", {})
        lines += [f"## {wl} ({data['args'][wl]})", "",
                  "| library | save s | load s | file MiB | peak save MiB | peak load MiB | round-trip |",
                  "|---|---|---|---|---|---|---|"]
        for lib, r in rows.items():
            if r.get("error"):
                lines.append(f"| {lib} | failed: {r['error']} | | | | | |")
                continue
            mem = r.get("memory") or {}
            lines.append(
                f"| {lib} | {_fmt(r['save_s'], base.get('save_s'))} | {_fmt(r['load_s'], base.get('load_s'))} "
                f"| {_size_cell(r['size'], base.get('size'))} "
                f"| {'-' if mem.get('save') is None else round(_mib(mem['save']), 1)} "
                f"| {'-' if mem.get('load') is None else round(_mib(mem['load']), 1)} | {r['roundtrip']} |")
        lines.append("")
        t = rows.get("torpor")
        if t and not t.get("error"):
            for lib, r in rows.items():
                if lib.startswith("torpor") or r.get("error"):
                    continue
                for key, what in (("save_s", "saves"), ("load_s", "loads")):
                    if r[key] is not None and r[key] < t[key]:
                        slower.append(f"- {wl}: {lib} {what} faster than torpor "
                                      f"({r[key]:.3f} s against {t[key]:.3f} s)")
                if r["size"] is not None and r["size"] < t["size"]:
                    slower.append(f"- {wl}: {lib} writes a smaller file than torpor "
                                  f"({_mib(r['size']):.1f} MiB against {_mib(t['size']):.1f} MiB)")
                rm, tm = (r.get("memory") or {}), (t.get("memory") or {})
                for key, what in (("save", "saving"), ("load", "loading")):
                    if rm.get(key) is not None and tm.get(key) is not None and rm[key] < tm[key] - (8 << 20):
                        slower.append(f"- {wl}: {lib} needs less memory than torpor {what} "
                                      f"({_mib(rm[key]):.0f} MiB against {_mib(tm[key]):.0f} MiB)")
    lines += ["## Where torpor is slower or larger", ""]
    lines += slower or ["Nowhere in this run: torpor (default settings) beat every peer on every "
                        "workload in save time, load time, file size and memory."]
    lines.append("")
    if data.get("scaling"):
        lines += ["## Scaling", "", "Time per unit at four sizes spanning 100x "
                  "(`scaling.png`); a cost growing faster than linearly shows as a rising line.", ""]
        for wl, s in data["scaling"].items():
            lines.append(f"- {wl} ({s['unit']}): " + "; ".join(
                f"{p['size']}: " + ", ".join(f"{lib} {p[lib]['save_s']:.3f}/{p[lib]['load_s']:.3f} s"
                                             for lib in p if lib != "size" and p[lib]['save_s'] is not None)
                for p in s["points"]))
        lines.append("")
    lines += ["Charts: `times.png` (save and load time relative to pickle), `sizes.png`, "
              "`memory.png`" + (", `scaling.png`" if data.get("scaling") else "") + ".", ""]
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines))


def write_charts(data, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = data["results"]
    wls = list(results)
    libs = [lb for lb in PEERS if any(lb in results[w] and not results[w][lb].get("error") for w in wls)]

    def bars(ax, metric, title, ylabel, ratio=True, get=None):
        width = 0.8 / len(libs)
        for i, lib in enumerate(libs):
            vals = []
            for w in wls:
                r = results[w].get(lib)
                base = results[w].get("pickle")
                v = get(r) if (get and r and not r.get("error")) else (r or {}).get(metric)
                b = get(base) if get else (base or {}).get(metric)
                vals.append(np.nan if v is None or r.get("error") else (v / b if ratio and b else v))
            ax.bar(np.arange(len(wls)) + i * width, vals, width, label=lib,
                   color=plt.get_cmap("tab20")(i % 20))
        ax.set_xticks(np.arange(len(wls)) + 0.4 - width / 2)
        ax.set_xticklabels(wls)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if ratio:
            ax.axhline(1.0, color="k", lw=0.8)

    fig, axes = plt.subplots(2, 1, figsize=(12, 8))
    bars(axes[0], "save_s", f"save time relative to pickle ({data['size']})", "x pickle (lower is better)")
    bars(axes[1], "load_s", f"load time relative to pickle ({data['size']})", "x pickle (lower is better)")
    axes[0].legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "times.png"), dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(12, 4))
    bars(ax, "size", "file size relative to pickle", "x pickle (lower is better)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sizes.png"), dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(12, 4))
    bars(ax, None, "peak extra memory while saving (MiB)", "MiB", ratio=False,
         get=lambda r: None if not r or "save" not in (r.get("memory") or {}) else r["memory"]["save"] / 2**20)
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "memory.png"), dpi=90)
    plt.close(fig)
    if data.get("scaling"):
        sc = data["scaling"]
        fig, axes = plt.subplots(1, len(sc), figsize=(4 * len(sc), 3.6))
        for ax, (wl, s) in zip(np.atleast_1d(axes), sc.items()):
            for lib in [k for k in s["points"][0] if k != "size"]:
                xs = [p["size"] for p in s["points"]]
                ys = [p[lib]["save_s"] / p["size"] if p[lib]["save_s"] else np.nan for p in s["points"]]
                ax.plot(xs, ys, marker="o", label=lib)
            ax.set_xscale("log")
            ax.set_title(f"{wl}: save s per {s['unit'].rstrip('s')}", fontsize=9)
            ax.set_xlabel(s["unit"])
        np.atleast_1d(axes)[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "scaling.png"), dpi=90)
        plt.close(fig)
    return True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _, wl, arg, lib, folder = argv
        child(wl, int(arg), lib, folder)
        return 0
    ap = argparse.ArgumentParser(description="torpor benchmark harness")
    ap.add_argument("--size", choices=["small", "medium", "large"], default="small")
    ap.add_argument("--repeat", type=int, default=None, help="default: 3 (small), 2 (medium/large)")
    ap.add_argument("--libs", default=",".join(PEERS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--no-memory", action="store_true", help="skip the per-run subprocess memory measurement")
    ap.add_argument("--scaling", action="store_true", help="also run the 4-size scaling series")
    ap.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results"))
    a = ap.parse_args(argv)
    libs = a.libs.split(",")
    for lib in libs:
        if lib not in PEERS:
            ap.error(f"unknown library {lib!r}; known: {', '.join(PEERS)}")
    wls = a.workloads.split(",")
    for wl in wls:
        if wl not in WORKLOADS:
            ap.error(f"unknown workload {wl!r}; known: {', '.join(WORKLOADS)}")
    repeat = a.repeat or (3 if a.size == "small" else 2)
    os.makedirs(a.out, exist_ok=True)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 200_000))   # dill recurses per object
    data = {"size": a.size, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "command": "python -m benchmarks.report " + " ".join(argv), "args": {}, "results": {}}
    with tempfile.TemporaryDirectory(prefix="torpor-bench-") as folder:
        for wl in wls:
            arg = WORKLOADS[wl][1][a.size]
            data["args"][wl] = arg
            use = [lb for lb in libs if not (PEERS[lb].arrays_only and wl not in ARRAYS_ONLY)]
            print(f"{wl} ({arg}): {', '.join(use)}", flush=True)
            data["results"][wl] = run_workload(wl, arg, use, repeat, folder, not a.no_memory)
        if a.scaling:
            print("scaling series", flush=True)
            data["scaling"] = run_scaling(wls, max(1, repeat - 1), folder)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    write_report(data, a.out)
    charts = write_charts(data, a.out)
    print(f"wrote {os.path.join(a.out, 'REPORT.md')}, results.json" + (" and charts" if charts else ""))
    bad = {wl: r["torpor"]["roundtrip"] or r["torpor"].get("error") for wl, r in data["results"].items()
           if "torpor" in r and (r["torpor"].get("error") or r["torpor"]["roundtrip"] != "ok")}
    if bad:
        print(f"torpor did not round-trip: {bad}", file=sys.stderr)
        return 1
    for wl, r in data["results"].items():
        for lib, v in r.items():
            if v.get("error") or v["roundtrip"] != "ok":
                print(f"note: {lib} on {wl}: {v.get('error') or v['roundtrip']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
