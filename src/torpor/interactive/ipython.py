"""IPython / Jupyter extension: ``%load_ext torpor``.

    %torpor_save [FILE] [--exclude NAME ...] [--skip-errors]
    %torpor_load [FILE] [--trusted] [--replace]

save and restore the notebook's user namespace (dump_module / load_module on
``user_ns``), and print a one-line summary: variables, size, time. FILE defaults
to ``default_path()`` (the user's cache folder; created as dump_module creates
it: the folder 0700, the file 0600). ``--help`` prints the usage; every error
is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
import types
import warnings
from typing import TYPE_CHECKING, NoReturn, Optional

from . import modules
from ..errors import TorporError, UnsafeLoadError

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the last unit always returns")


class _Parser(argparse.ArgumentParser):
    """argparse's own --help and usage errors print to stderr and exit the
    interpreter (SystemExit); a magic prints its help or a one-line error instead."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"%{name}", description=description, add_help=False,
                epilog=f"FILE defaults to {modules.default_path()}",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE", help="a torpor module dump")
    p.add_argument("-h", "--help", action="store_true", help="print this help")
    return p


def _parse(p: argparse.ArgumentParser, line: str) -> Optional[argparse.Namespace]:
    """The magic's arguments; None once the help or a usage error is printed."""
    try:
        a = p.parse_args(shlex.split(line))
    except ValueError as e:         # _Parser.error, or shlex: unbalanced quotes
        print(f"{p.format_usage().strip()}\n{p.prog}: {e} (see {p.prog} --help)")
        return None
    if a.help:
        print(p.format_help().rstrip())
        return None
    return a


def torpor_save(shell: InteractiveShell, line: str) -> None:
    p = _parser("torpor_save", "Save the notebook's variables (torpor.dump_module).")
    p.add_argument("--exclude", nargs="*", default=[], metavar="NAME",
                   help="names or glob patterns to leave out")
    p.add_argument("--skip-errors", action="store_true",
                   help="save everything else when a variable cannot be saved")
    a = _parse(p, line)
    if a is None:
        return None
    path = a.file or modules.default_path()
    ns = shell.user_ns
    hidden = getattr(shell, "user_ns_hidden", {})
    names = [k for k in ns if k not in hidden and not modules._interpreter_name(k)]
    mod = types.ModuleType("__main__")
    mod.__dict__.update({k: ns[k] for k in names})
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # with no FILE, dump_module saves to default_path() owner-only (folder
            # 0700, file 0600); the summary below names the file, not its warning
            warnings.filterwarnings("ignore", "torpor.dump_module: no filename given")
            skipped = modules.dump_module(a.file, module=mod, exclude=a.exclude,
                                          on_error="skip" if a.skip_errors else "raise")
    except (TorporError, OSError) as e:
        print(f"%torpor_save: nothing saved: {e}")
        return None
    dt = time.perf_counter() - t
    n = len(modules._select(mod.__dict__, a.exclude)) - len(skipped)
    msg = f"saved {n} variables to {path}: {_human(os.path.getsize(path))} in {dt:.2f} s"
    if skipped:
        msg += f"; skipped {', '.join(skipped)}"
    print(msg)
    return None


def torpor_load(shell: InteractiveShell, line: str) -> None:
    p = _parser("torpor_load", "Load variables saved by %torpor_save (torpor.load_module).")
    p.add_argument("--trusted", action="store_true",
                   help="also load code (functions, classes) saved by value; it runs")
    p.add_argument("--replace", action="store_true",
                   help="remove the variables the file does not have")
    a = _parse(p, line)
    if a is None:
        return None
    path = a.file or modules.default_path()
    t = time.perf_counter()
    try:
        # code is bound to the user namespace; without --trusted a file holding
        # code is refused (naming it) before anything changes
        _, ns = modules._read(path, shell.user_ns, trusted=a.trusted, describe=False)
    except FileNotFoundError:
        print(f"%torpor_load: nothing loaded: there is no file {path} (save one with "
              f"%torpor_save{'' if a.file is None else ' ' + shlex.quote(path)})")
        return None
    except (TorporError, OSError) as e:
        hint = ("" if a.trusted or not isinstance(e, UnsafeLoadError)
                else " (if you trust the file: %torpor_load FILE --trusted)")
        print(f"%torpor_load: nothing loaded: {e}{hint}")
        return None
    user = shell.user_ns
    if a.replace:
        hidden = getattr(shell, "user_ns_hidden", {})
        for k in [k for k in user if k not in hidden and not modules._interpreter_name(k) and k not in ns]:
            del user[k]
    user.update(ns)
    dt = time.perf_counter() - t
    print(f"loaded {len(ns)} variables from {path}: {_human(os.path.getsize(path))} in {dt:.2f} s")
    return None


def load_ipython_extension(ipython: InteractiveShell) -> None:
    # The ignores: IPython types register_magic_function as a functools.wraps of
    # MagicsManager.register_function, whose first parameter is the manager (IPython's
    # own calls of it need the same ignore).
    ipython.register_magic_function(
        lambda line: torpor_save(ipython, line), "line", "torpor_save")  # type: ignore[arg-type]
    ipython.register_magic_function(
        lambda line: torpor_load(ipython, line), "line", "torpor_load")  # type: ignore[arg-type]
