"""IPython / Jupyter extension: ``%load_ext torpor``.

    %torpor_save [FILE] [--exclude NAME ...] [--skip-errors]
    %torpor_load [FILE] [--trusted] [--replace]

save and restore the notebook's user namespace (dump_module / load_module on
``user_ns``), and print a one-line summary: variables, size, time. FILE defaults
to ``default_path()`` (the user's cache folder).
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
import types
from typing import TYPE_CHECKING

from . import modules
from ..errors import TorporError

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the last unit always returns")


def _parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"%{name}", add_help=False, exit_on_error=False)
    p.add_argument("file", nargs="?")
    return p


def torpor_save(shell: InteractiveShell, line: str) -> None:
    p = _parser("torpor_save")
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--skip-errors", action="store_true")
    try:
        a = p.parse_args(shlex.split(line))
    except (argparse.ArgumentError, SystemExit) as e:
        print(f"usage: %torpor_save [FILE] [--exclude NAME ...] [--skip-errors] ({e})")
        return None
    path = a.file or modules.default_path()
    ns = shell.user_ns
    hidden = getattr(shell, "user_ns_hidden", {})
    names = [k for k in ns if k not in hidden and not modules._interpreter_name(k)]
    mod = types.ModuleType("__main__")
    mod.__dict__.update({k: ns[k] for k in names})
    t = time.perf_counter()
    if a.file is None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        skipped = modules.dump_module(path, module=mod, exclude=a.exclude,
                                      on_error="skip" if a.skip_errors else "raise")
    except TorporError as e:
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
    p = _parser("torpor_load")
    p.add_argument("--trusted", action="store_true")
    p.add_argument("--replace", action="store_true")
    try:
        a = p.parse_args(shlex.split(line))
    except (argparse.ArgumentError, SystemExit) as e:
        print(f"usage: %torpor_load [FILE] [--trusted] [--replace] ({e})")
        return None
    path = a.file or modules.default_path()
    t = time.perf_counter()
    try:
        # code is bound to the user namespace; without --trusted a file holding
        # code is refused (naming it) before anything changes
        _, ns = modules._read(path, shell.user_ns, trusted=a.trusted, describe=False)
    except TorporError as e:
        hint = "" if a.trusted else " (if you trust the file: %torpor_load FILE --trusted)"
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
