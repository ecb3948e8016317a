"""``torpor info FILE``, ``torpor verify FILE`` and ``torpor dump FILE`` (a session file)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from . import api
from .errors import TorporError
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
    print(f"{len(d['sections'])} sections, {_human(d['size']['stored'])} stored, "
          f"{_human(d['size']['raw'])} raw")
    for i, s in enumerate(d["sections"]):
        extra = ""
        if s["kind"] == "array":
            extra = f" {s.get('dtype')} {tuple(s.get('shape', ()))} order {s.get('order')}"
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
    from .session import sdump
    sdump(None, args.file)
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
    pd = sub.add_parser("dump", help="print a session file's managers and named objects "
                                     "without restoring it (nothing from the file runs)")
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
