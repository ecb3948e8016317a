"""``torpor info FILE``, ``torpor verify FILE`` and ``torpor dump FILE`` (a session
file or a module dump)."""

from __future__ import annotations

import argparse
import json
import os
import reprlib
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from . import api
from .errors import TorporError, UnsafeLoadError
from .storage.local import stale_temp_files


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the last unit returns")


def _info(args: argparse.Namespace) -> int:
    d = api.info(args.file)
    if args.json:
        json.dump(d, sys.stdout, indent=2, default=str)
        print()
        return 0
    h = d["header"]
    print(f"{args.file}: torpor format {h.get('format')}, written by torpor {h.get('torpor')} "
          f"({h.get('implementation')}) on Python {h.get('python')}, numpy {h.get('numpy')}")
    print(f"created {h.get('created')}, codec {h.get('codec')}, {d['objects']} named objects")
    print(f"metadata: {json.dumps(d['metadata'], default=str)}")
    if d["module_dump"] is not None:
        print(f"a module dump of module {d['module_dump']!r} (torpor.dump_module): "
              f"read it with torpor.load_module or torpor.load_module_asdict")
    print(f"{len(d['sections'])} sections, {_human(d['size']['stored'])} stored, "
          f"{_human(d['size']['raw'])} raw")
    m = d["mmap"]
    if m["arrays"]:
        print(f"load(mmap=True) maps {m['mappable']} of {m['arrays']} array sections "
              f"({_human(m['mappable_bytes'])}); only arrays saved with compress=None are mapped")
    for i, s in enumerate(d["sections"]):
        extra = ""
        if s["kind"] == "array":
            extra = f" {s.get('dtype')} {tuple(s.get('shape', ()))} order {s.get('order')}"
            extra += ", mappable" if s["mappable"] else ""
        print(f"  [{i}] {s['kind']:<6} @{s['offset']:<10} {_human(s['length']):>10} "
              f"({_human(s['raw_length'])} raw, {s['codec']}){extra}")
    if d["globals"]:
        print("classes and callables referenced: " + ", ".join(d["globals"]))
    return 0


def _verify(args: argparse.Namespace) -> int:
    n = api.verify(args.file)
    print(f"{args.file}: OK ({n} sections, every checksum matches)")
    folder = os.path.dirname(os.path.abspath(args.file))
    stale = stale_temp_files(folder)
    if stale:
        size = sum(os.path.getsize(p) for p in stale if os.path.exists(p))
        print(f"note: {len(stale)} temporary file(s) of interrupted saves ({size / 2**20:.1f} MiB) "
              f"in {folder}: {', '.join(os.path.basename(p) for p in stale)}; the next save in "
              f"that folder removes them")
    return 0


def _dump(args: argparse.Namespace) -> int:
    d = api.info(args.file)
    if d["module_dump"] is not None:
        return _dump_module(args.file, d)
    from .session import sdump
    sdump(None, args.file)
    return 0


def _dump_module(file: str, d: dict[str, Any]) -> int:
    """A module dump's header and variables, read with load_module_asdict: code
    comes back described, never run, and no module outside the stdlib is imported."""
    from .interactive.modules import load_module_asdict
    h, meta = d["header"], d["metadata"]
    print(f"torpor module dump {file}: module {d['module_dump']!r}, written by "
          f"torpor.dump_module (torpor {h.get('torpor')}, Python {meta.get('python')}, "
          f"cloudpickle {meta.get('cloudpickle')}) at {h.get('created')}")
    if meta.get("user"):
        print(f"metadata: {json.dumps(meta['user'], default=str)}")
    skipped = meta.get("skipped") or {}
    for name, why in skipped.items():
        print(f"skipped when saved: {name}: {why.get('reason') if isinstance(why, dict) else why}")
    try:
        ns = load_module_asdict(file)
    except UnsafeLoadError as e:
        print(f"variables not shown: they hold {', '.join(e.names)}, which this command does "
              f"not import; read them in Python with torpor.load_module_asdict({file!r}, "
              f"allow=[...]) if you trust the file", file=sys.stderr)
        return 1
    names = [k for k in ns if k != "__name__"]
    print(f"{len(names)} variables:")
    short = reprlib.Repr()
    short.maxstring = short.maxother = 70
    for k in names:
        v = ns[k]
        if isinstance(v, types.ModuleType):
            text = f"<module {v.__name__}>"
        elif isinstance(getattr(v, "shape", None), tuple) and hasattr(v, "dtype"):
            text = f"{type(v).__name__}({v.dtype}, shape={v.shape})"
        else:
            text = short.repr(v)
        print(f"  {k} = {text}")
    print(f"restore it with torpor.load_module({file!r}) (trusted=True if it holds code)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="torpor", description="Inspect torpor files.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info", help="print the header, metadata and table of contents")
    pi.add_argument("file")
    pi.add_argument("--json", action="store_true", help="print as JSON")
    pi.set_defaults(func=_info)
    pv = sub.add_parser("verify", help="check every checksum without loading anything")
    pv.add_argument("file")
    pv.set_defaults(func=_verify)
    pd = sub.add_parser("dump", help="print a session file's managers and named objects, or "
                                     "a module dump's variables, without restoring it "
                                     "(nothing from the file runs)")
    pd.add_argument("file")
    pd.set_defaults(func=_dump)
    args = p.parse_args(argv)
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (TorporError, OSError) as e:
        print(f"torpor {args.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
