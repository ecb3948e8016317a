"""The ``torpor`` command line (also ``python -m torpor``).

    torpor --version
    torpor info FILE [--json]       header, metadata and table of contents
    torpor verify FILE              check every checksum, load nothing
    torpor dump FILE                a session file's or a module dump's contents, nothing run
    torpor ls FILE [--json]         every array and large bytes object, with its path
    torpor convert IN OUT           a pickle, joblib, .npy or .npz file to a torpor file

Every failure prints one line, "torpor: error: ...", on stderr (never a
traceback for a missing file, a damaged one, or a bad argument) and exits with:

    0    success
    1    the file is damaged (truncated, a checksum does not match): verify failed
    2    usage: a bad argument or option, an input convert cannot tell the format of
    3    a file could not be read or written (missing, a folder, no permission, disk
         full, a URL whose filesystem package is not installed, or whose storage
         refused the request: no credentials, a wrong endpoint)
    4    not a torpor file, a newer format version, a torpor file of another kind
         than the command reads (dump of a plain file), or one nested deeper than
         ls --max-depth
    5    refused as unsafe: reading the file would run code from it (convert of a
         pickle without --trusted, dump of a module dump whose variables need classes)
    6    convert: the input could not be read, or its object cannot be saved
    130  interrupted (Ctrl-C)
    141  the output was closed early ("torpor ls big.torpor | head -1"): quiet
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import reprlib
import shlex
import sys
import textwrap
import types
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Optional

import numpy as np

from . import api, storage
from .engine.safety import Policy
from .engine.select import IMPLEMENTATION
from .errors import (CorruptFileError, FormatError, TorporError, UnsafeLoadError,
                     UnsupportedObjectError)
from .format.constants import MAGIC
from .format.outline import MAX_DEPTH, Item, outline_file
from .storage.local import stale_temp_files
from .version import __version__

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
EXIT_IO = 3
EXIT_FORMAT = 4
EXIT_UNSAFE = 5
EXIT_CONVERT = 6
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141             # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped


class CommandError(Exception):
    """A failure a command reports itself: one line and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the last unit returns")


def _check_signature(file: str) -> None:
    """A local file that is not a torpor file at all (empty, or another format)
    is said to be so, not "truncated" or "damaged": the reader cannot tell a
    3-byte text file from a torpor file cut after 3 bytes, this can. Anything
    else (a URL, a missing file) is left to the command, which says what is wrong."""
    if os.path.isdir(file):     # said the same way on every system
        raise CommandError(EXIT_IO, f"{file} is a folder, not a torpor file")
    if not os.path.isfile(file):
        return
    with open(file, "rb") as f:
        head = f.read(len(MAGIC))
    if not head:
        raise FormatError(f"{file} is empty (0 bytes): not a torpor file")
    if not MAGIC.startswith(head) and head[1:4] != MAGIC[1:4]:
        raise FormatError(f"{file} is not a torpor file (it does not start with the torpor "
                          f"signature)")


# --- info, verify, dump ------------------------------------------------------------

def _located(args: argparse.Namespace, name: str = "file") -> Any:
    """The command's file: with ``--storage-option``s, a URL located with them
    (one line, exit code 2, for options given with a local path)."""
    options = getattr(args, "storage_option", None)
    if not options:
        return getattr(args, name)
    try:
        return storage.locate(getattr(args, name), dict(options))
    except (TypeError, ValueError) as e:
        raise CommandError(EXIT_USAGE, str(e)) from None


def _storage_option(text: str) -> tuple[str, Any]:
    """``KEY=TEXT`` (a str, always: a password of digits stays one), or
    ``KEY:=JSON`` for any other value (``anon:=true``, ``client_kwargs:={"endpoint_url":
    "http://..."}``), as httpie writes them."""
    key, eq, value = text.partition("=")
    is_json = key.endswith(":")
    key = key[:-1].strip() if is_json else key.strip()
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=TEXT or KEY:=JSON, not {text!r}")
    if not is_json:
        return key, value
    try:
        return key, json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: the value after := is not JSON ({e}); "
                                         f"KEY=TEXT passes it as text") from None


def _storage_option_argument(c: argparse.ArgumentParser) -> None:
    c.add_argument("--storage-option", type=_storage_option, action="append", default=[],
                   metavar="KEY=TEXT|KEY:=JSON",
                   help="for a URL: an option passed to fsspec, as text (KEY=TEXT) or JSON "
                        "(KEY:=JSON); repeat it for several, e.g. --storage-option anon:=true "
                        "--storage-option profile=lab")


def _info(args: argparse.Namespace) -> int:
    d = api.info(_located(args))
    if args.json:
        json.dump(d, sys.stdout, indent=2, default=str)
        print()
        return EXIT_OK
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
    return EXIT_OK


def _progress(args: argparse.Namespace) -> bool:
    """--progress / --no-progress, or by default: a bar when stderr is a terminal."""
    if args.progress is not None:
        return bool(args.progress)
    return sys.stderr.isatty()


def _verify(args: argparse.Namespace) -> int:
    n = api.verify(_located(args), progress=_progress(args))
    print(f"{args.file}: OK ({n} sections, every checksum matches)")
    if not os.path.isfile(args.file):
        return EXIT_OK          # a URL: no folder of temporary files to look at
    folder = os.path.dirname(os.path.abspath(args.file))
    stale = stale_temp_files(folder)
    if stale:
        size = sum(os.path.getsize(p) for p in stale if os.path.exists(p))
        print(f"note: {len(stale)} temporary file(s) of interrupted saves ({size / 2**20:.1f} MiB) "
              f"in {folder}: {', '.join(os.path.basename(p) for p in stale)}; the next save in "
              f"that folder removes them")
    return EXIT_OK


def _dump(args: argparse.Namespace) -> int:
    file = _located(args)
    d = api.info(file)
    if d["module_dump"] is not None:
        return _dump_module(file, d, args)
    from .session import sdump
    sdump(None, file)
    return EXIT_OK


def _dump_module(file: Any, d: dict[str, Any], args: argparse.Namespace) -> int:
    """A module dump's header and variables, read with load_module_asdict: code
    comes back described, never run, and no module outside the stdlib is imported."""
    from .interactive.modules import load_module_asdict
    h, meta = d["header"], d["metadata"]
    shown = repr(args.file)         # how the user names it, for the hints
    if args.storage_option:
        shown += f", storage_options={dict(args.storage_option)!r}"
    print(f"torpor module dump {args.file}: module {d['module_dump']!r}, written by "
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
        raise CommandError(
            EXIT_UNSAFE,
            f"variables not shown: they hold {', '.join(e.names)}, which this command does "
            f"not import; read them in Python with torpor.load_module_asdict({shown}, "
            f"allow=[...]) if you trust the file") from None
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
    print(f"restore it with torpor.load_module({shown}) (trusted=True if it holds code)")
    return EXIT_OK


# --- ls ----------------------------------------------------------------------------

def _ls(args: argparse.Namespace) -> int:
    with storage.reading(_located(args)) as (f, name):
        result = outline_file(f, name, max_depth=args.max_depth)
    if args.json:
        # one item a line: valid JSON that grep and head still read line by line
        head = json.dumps({"file": name, "format": result.header.get("format"),
                           "codec": result.header.get("codec")})
        items = ",\n  ".join(json.dumps(it.as_dict()) for it in result.items)
        print(f'{head[:-1]}, "items": [\n  {items}\n]}}' if items else f'{head[:-1]}, "items": []}}')
    else:
        for line in _ls_lines(result.items):
            print(line)
    if "session" in result.toc:
        _note(f"{name} is a session file: 'torpor dump {args.file}' shows its state managers "
              f"and named objects")
    return EXIT_OK


def _ls_lines(items: list[Item]) -> list[str]:
    """One aligned line per item: path, dtype, shape, stored size, codec and notes;
    a shared object seen again: its path and the path where it first appeared."""
    rows = [_ls_row(it) for it in items]
    # columns as wide as their longest cell, up to a limit (a long path or dtype
    # pushes its own line's columns right, not every line's)
    widths = [min(limit, max((len(r[k]) for r in rows if k == 0 or len(r) > 2), default=0))
              for k, limit in enumerate((60, 30, 20, 10))]
    lines = []
    for r in rows:
        if len(r) == 2:
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            path, dtype, shape, size, *rest = r
            lines.append("  ".join([f"{path:<{widths[0]}}", f"{dtype:<{widths[1]}}",
                                    f"{shape:<{widths[2]}}", f"{size:>{widths[3]}}", *rest]))
    return lines


def _ls_row(it: Item) -> tuple[str, ...]:
    path = it.path or "(root)"
    if it.kind == "ref":
        return path, f"same object as {it.same_as or '(root)'}"
    shape = str(tuple(it.shape or ()))
    size = "-" if it.stored is None else _human(it.stored)
    notes = [note for note, on in (("read-only", it.readonly), ("Fortran order", it.order == "F"))
             if on]
    return (path, it.dtype or "", shape, size, it.codec or "", *notes)


# --- convert -------------------------------------------------------------------------

_SUFFIXES = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "joblib", ".npy": "npy",
             ".npz": "npz"}
_WHY_TRUSTED = ("loading a pickle runs whatever code it names (a pickle can call any "
                "function with any arguments)")


def _convert(args: argparse.Namespace) -> int:
    src, out = args.input, args.output
    fmt = args.source_format or _SUFFIXES.get(os.path.splitext(src)[1].lower())
    if fmt is None:
        raise CommandError(EXIT_USAGE, f"cannot tell the format of {src} from its name: name it "
                                       f"*.pkl, *.pickle, *.joblib, *.npy or *.npz, or pass "
                                       f"--from pickle|joblib|npy|npz")
    with open(src, "rb"):
        pass                        # a missing or unreadable input is said so first
    target = _located(args, "output")       # and options that cannot apply, before reading
    if os.path.exists(out) and os.path.samefile(src, out):
        raise CommandError(EXIT_USAGE, f"{out} is the input file itself: write the torpor file "
                                       f"to another path")
    rerun = shlex.join(["torpor", "convert", "--trusted", src, out])
    if fmt in ("pickle", "joblib") and not args.trusted:
        raise CommandError(EXIT_UNSAFE, f"{src} is a {fmt} file, and {_WHY_TRUSTED}; convert "
                                        f"reads it only if you trust where it came from: "
                                        f"{rerun}")
    obj = _read_input(src, fmt, args.trusted, rerun)
    compress = None if args.compress == "none" else args.compress
    try:
        api.dump(obj, target, compress=compress, progress=_progress(args),
                 metadata={"converted_from": {"file": os.path.basename(src), "format": fmt}})
    except TorporError as e:
        raise CommandError(EXIT_CONVERT, f"{src} was read, but its object cannot be saved "
                                         f"as a torpor file: {e}") from None
    d = api.info(target)
    print(f"{src} ({fmt}) -> {out}: {_human(d['size']['stored'])} "
          f"({len([s for s in d['sections'] if s['kind'] == 'array'])} array sections, "
          f"codec {d['header'].get('codec')})")
    try:
        Policy().check_all(d["globals"], out)
    except UnsafeLoadError as e:
        _note(f"loading {out} needs allow=[{', '.join(map(repr, e.names))}] (or trusted=True): "
              f"it holds classes torpor does not rebuild by default")
    return EXIT_OK


def _read_input(src: str, fmt: str, trusted: bool, rerun: str) -> Any:
    """The object in ``src``; pickles are read only when ``trusted``, and numpy
    files refuse to unpickle object arrays unless ``trusted`` (``rerun``: the
    command that reads them, for the message)."""
    try:
        if fmt == "pickle":
            with open(src, "rb") as f:
                return pickle.load(f)
        if fmt == "joblib":
            try:
                import joblib  # type: ignore[import-untyped,import-not-found,unused-ignore]
            except ImportError:
                raise CommandError(EXIT_CONVERT, "reading .joblib files needs the joblib "
                                                 "package: pip install joblib") from None
            return joblib.load(src)
        loaded = np.load(src, allow_pickle=trusted)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except (CommandError, OSError):
        raise
    except ValueError as e:
        if not trusted and "allow_pickle" in str(e):
            # numpy stores object arrays as pickles; allow_pickle=False refused one
            raise CommandError(EXIT_UNSAFE, f"{src} holds object arrays, which numpy stores as "
                                            f"pickles, and {_WHY_TRUSTED}; convert reads them only "
                                            f"if you trust where the file came from: "
                                            f"{rerun}") from None
        raise CommandError(EXIT_CONVERT, f"{src} could not be read as {fmt}: {e}") from None
    except Exception as e:      # a damaged input, or a pickle naming a class not installed
        raise CommandError(EXIT_CONVERT, f"{src} could not be read as {fmt}: "
                                         f"{type(e).__name__}: {e}") from None


# --- the parser and the error handling ----------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (``torpor: error: ...``)."""

    def error(self, message: str) -> NoReturn:
        _error(f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


def _parser() -> _Parser:
    version = (f"torpor {__version__} ({IMPLEMENTATION} walker; Python "
               f"{platform.python_version()}, numpy {np.__version__})")
    _, found, codes = (__doc__ or "").partition("Every failure")   # the exit codes' table
    p = _Parser(prog="torpor", description="Inspect, check and convert torpor files.",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=found + codes)
    p.add_argument("--version", action="version", version=version)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                example: str) -> argparse.ArgumentParser:
        description = textwrap.fill(help[0].upper() + help[1:] + ".")
        c = sub.add_parser(name, help=help, description=description,
                           epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=func)
        return c

    c = command("info", _info, "print the header, metadata and table of contents",
                "torpor info results.torpor --json")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print as JSON")
    _storage_option_argument(c)
    c = command("verify", _verify, "check every checksum without loading anything "
                                   "(exit code 1 if the file is damaged)",
                "torpor verify results.torpor && echo intact")
    c.add_argument("file")
    _progress_option(c, "reading")
    _storage_option_argument(c)
    c = command("dump", _dump, "print a session file's managers and named objects, or a "
                               "module dump's variables, without restoring it (nothing "
                               "from the file runs)",
                "torpor dump viewer-session.torpor")
    c.add_argument("file")
    _storage_option_argument(c)
    c = command("ls", _ls, "list every array and large bytes object with its path in the "
                           "saved object, dtype, shape, stored size and codec (no class is "
                           "imported, nothing from the file runs)",
                "torpor ls results.torpor | grep float32")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print as JSON")
    c.add_argument("--max-depth", type=_positive, default=MAX_DEPTH, metavar="N",
                   help=f"how deep to follow nesting (default {MAX_DEPTH})")
    _storage_option_argument(c)
    c = command("convert", _convert, "convert a pickle (.pkl, .pickle), joblib (.joblib), "
                                     ".npy or .npz file to a torpor file",
                "torpor convert --trusted model.pkl model.torpor")
    c.add_argument("input", help="the file to read")
    c.add_argument("output", help="the torpor file to write (atomically; a URL too)")
    c.add_argument("--trusted", action="store_true",
                   help="read pickle-based input (pickle, joblib, numpy object arrays): "
                        "loading a pickle runs whatever code it names, so only for files "
                        "you trust")
    c.add_argument("--compress", choices=("lz4", "gzip", "none"), default="lz4",
                   help="how to compress the arrays (default lz4; none: raw sections that "
                        "load(mmap=True) maps)")
    c.add_argument("--from", dest="source_format", choices=("pickle", "joblib", "npy", "npz"),
                   help="the input's format, when its name does not say it")
    _progress_option(c, "writing")
    _storage_option_argument(c)
    return p


def _progress_option(c: argparse.ArgumentParser, what: str) -> None:
    c.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=f"a progress bar of the {what} on stderr, for work that takes more "
                        f"than a second (default: when stderr is a terminal)")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return n


def _error(message: str) -> None:
    text = " ".join(str(message).split())        # one line, whatever the message holds
    print(f"torpor: error: {text}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"torpor: note: {message}", file=sys.stderr)


def _failure(e: BaseException) -> tuple[int, str]:
    """The exit code and message of an error a user can cause."""
    if isinstance(e, CommandError):
        return e.code, str(e)
    if isinstance(e, CorruptFileError):
        return EXIT_DAMAGED, str(e)
    if isinstance(e, UnsafeLoadError):
        return EXIT_UNSAFE, str(e)
    if isinstance(e, FormatError):
        return EXIT_FORMAT, str(e)
    if isinstance(e, UnsupportedObjectError):
        return EXIT_CONVERT, str(e)
    if isinstance(e, OSError):
        if e.filename is not None and e.strerror:
            return EXIT_IO, f"{e.filename}: {e.strerror}"
        return EXIT_IO, str(e) or type(e).__name__
    if isinstance(e, ImportError):      # a URL whose filesystem is not installed
        return EXIT_IO, str(e)
    if _from_storage(e):
        return EXIT_IO, (f"the storage refused the request: {type(e).__name__}: {e} (pass its "
                         f"credentials or endpoint with --storage-option KEY=TEXT or KEY:=JSON)")
    return EXIT_DAMAGED, str(e)


# the packages behind fsspec URLs, whose errors are not OSErrors (botocore's
# NoCredentialsError, an aiohttp connection error): reported as I/O failures
_STORAGE_PACKAGES = frozenset({"fsspec", "s3fs", "botocore", "aiobotocore", "gcsfs", "google",
                               "adlfs", "azure", "aiohttp", "requests", "urllib3", "paramiko",
                               "asyncssh", "smbprotocol", "webdav4"})


def _from_storage(e: BaseException) -> bool:
    return type(e).__module__.partition(".")[0] in _STORAGE_PACKAGES


def _quiet_closed_stdout() -> None:
    """The reader of our output went away (``| head``): point stdout at devnull so
    that the interpreter's final flush does not report a BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:     # --help, --version, or a usage error (reported)
            sys.stdout.flush()
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        func: Callable[[argparse.Namespace], int] = args.func
        try:
            if args.cmd != "convert":
                _check_signature(args.file)
            code = func(args)
        except Exception as e:
            if isinstance(e, BrokenPipeError) or not (
                    isinstance(e, (TorporError, OSError, CommandError, ImportError))
                    or _from_storage(e)):
                raise
            code, message = _failure(e)
            sys.stdout.flush()
            _error(message)
            return code
        sys.stdout.flush()          # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        _quiet_closed_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
