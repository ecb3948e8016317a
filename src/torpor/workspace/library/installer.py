"""``Installer``: installs and uninstalls a workspace's dependencies with pip,
into ONE interpreter's environment: a subprocess executor's worker venv, or the
host interpreter only when asked explicitly (``InProcessConfig(install_deps=True)``).

    inst = Installer("/work/.venv-py3.11/bin/python")
    inst.install(["tinypkg==1.0"])   # {"installed": [...], "already_present": [...], "failed": [...]}
    inst.uninstall(["tinypkg"])      # {"removed": [...], "not_found": [...], "failed": [...]}

Why it is careful:

- A worker's venv sees the host's site-packages through a ``.pth`` file placed
  after its own (executors/venvs.py), so a naive "is it installed?" or ``pip
  uninstall`` would see, and could touch, the host's packages. Every question is
  asked of the target interpreter itself (``_PROBE``, a stdlib-only script it
  runs), which reports each copy of a distribution in ``sys.path`` order and
  whether it lies in the environment's own site-packages. Only a copy there is
  ever uninstalled (pip itself also refuses the others: "outside environment").
  An upgrade the host's copy does not satisfy is installed into the venv, whose
  site-packages comes first, so it shadows the host's copy.
- pip runs without a shell, as ``<python> -m pip`` (in a worker's venv pip is
  the host's, found through the ``.pth``; pip installs into the running
  interpreter's environment), or, where the target has no pip at all, as this
  interpreter's pip with ``--python <target>`` (pip >= 22.3). Its output is
  captured, never printed into a session; a failure is explained by pip's last
  error lines.
- pip's own environment variables pass through (``PIP_INDEX_URL``,
  ``PIP_FIND_LINKS``, ``PIP_NO_INDEX``, ...), except those that would install
  somewhere else than the target's environment (``PIP_USER``, ``PIP_TARGET``,
  ``PIP_PREFIX``, ``PIP_ROOT``, ``PIP_PYTHON``).
- One pip at a time per environment (a lock file in its prefix): two adds at
  once do not run two pips over the same site-packages.
- pip is given ``timeout`` seconds (default 600, or ``$TORPOR_PIP_TIMEOUT``, read
  at the first install or uninstall), then killed with its process group (the
  builds it started too), as it is when the waiting thread is interrupted (a
  session's timeout); the affected requirements fail with an error saying so.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .deps import canonical_name, check_spec, failure, requirement
from .tools import wait_group

__all__ = ["Installer", "DEFAULT_TIMEOUT", "local_version"]

#: Seconds pip may take for one call (``$TORPOR_PIP_TIMEOUT`` overrides it).
DEFAULT_TIMEOUT = 600.0
#: pip settings that would install outside the target's environment.
_REDIRECTS = ("PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_PYTHON")
_PROBE_TIMEOUT = 120.0
_ERROR_CHARS = 2000

# Run by the TARGET interpreter (stdlib only: a bare venv has nothing else):
# for each name, every installed copy in sys.path order (the first is the one
# `import` and pip see), and whether it lies in the environment's own
# site-packages; and whether that interpreter has pip.
_PROBE = r"""
import importlib.util, json, os, sys, sysconfig
from importlib import metadata
own = sorted({os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})
found = {}
for name in json.loads(sys.argv[1]):
    copies, seen = [], set()
    for entry in sys.path:
        where = os.path.realpath(entry or os.getcwd())
        if where in seen:
            continue
        seen.add(where)
        for d in metadata.distributions(name=name, path=[entry or "."]):
            copies.append({"version": d.version, "where": where, "own": where in own})
    found[name] = copies
print(json.dumps({"prefix": sys.prefix, "own": own, "found": found,
                  "pip": importlib.util.find_spec("pip") is not None}))
"""

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class _PipError(Exception):
    """pip (or the probe) could not run or did not finish; the message says why."""


@dataclass
class _Copy:
    version: str
    where: str
    own: bool


@dataclass
class _Probe:
    """What the target interpreter has: ``found[name]``, every copy in
    ``sys.path`` order; ``own``, its environment's site-packages folders."""

    prefix: str
    own: list[str]
    pip: bool
    found: dict[str, list[_Copy]] = field(default_factory=dict)

    def first(self, spec: str) -> Optional[_Copy]:
        copies = self.found.get(canonical_name(spec)) or []
        return copies[0] if copies else None

    def satisfies(self, spec: str) -> bool:
        """Whether the copy ``import`` finds is of a version ``spec`` accepts."""
        c = self.first(spec)
        return c is not None and _accepts(spec, c.version)


def _accepts(spec: str, version: str) -> bool:
    return requirement(spec).specifier.contains(version, prereleases=True)


def local_version(spec: str) -> Optional[str]:
    """The version of ``spec``'s distribution that THIS interpreter imports
    (None: not installed): what an in-process executor's code gets."""
    from importlib import metadata
    try:
        return metadata.distribution(requirement(spec).name).version
    except metadata.PackageNotFoundError:
        return None


def _default_timeout() -> float:
    env = os.environ.get("TORPOR_PIP_TIMEOUT")
    if env:
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"TORPOR_PIP_TIMEOUT must be seconds (a number), not {env!r}") from None
        if value > 0:
            return value
        raise ValueError(f"TORPOR_PIP_TIMEOUT must be positive seconds, not {env!r}")
    return DEFAULT_TIMEOUT


def _last_errors(stderr: str, stdout: str) -> str:
    """pip's explanation of a failure: its ``ERROR:`` lines (and what follows
    the first), else its last lines."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("ERROR:"):
            return "\n".join(lines[i:])[-_ERROR_CHARS:]
    tail = lines or [ln.rstrip() for ln in stdout.splitlines() if ln.strip()]
    return "\n".join(tail[-8:])[-_ERROR_CHARS:] or "pip failed without saying why"


class Installer:
    """Installs into the environment of the interpreter ``python``.
    ``pip_args``: more ``pip install`` options (``("--no-index",
    "--find-links", folder)``: no network); ``timeout``: seconds for one pip
    call (None: ``$TORPOR_PIP_TIMEOUT`` or 600)."""

    def __init__(self, python: "str | os.PathLike[str]", *, pip_args: Sequence[str] = (),
                 timeout: Optional[float] = None) -> None:
        self.python = os.fspath(python)
        if not isinstance(self.python, str) or not self.python:
            raise TypeError(f"python must be the path of an interpreter, not {python!r}")
        if isinstance(pip_args, str) or not all(isinstance(a, str) for a in pip_args):
            raise TypeError(f"pip_args must be a sequence of str, e.g. ('--no-index',), "
                            f"not {pip_args!r}")
        self.pip_args = tuple(pip_args)
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        # None: $TORPOR_PIP_TIMEOUT, read when pip first runs (an Installer is
        # made for every session; a bad variable must not break those that
        # never install)
        self._timeout = None if timeout is None else float(timeout)

    @property
    def timeout(self) -> float:
        """Seconds one pip call may take. ValueError if it comes from a
        malformed ``$TORPOR_PIP_TIMEOUT``."""
        if self._timeout is None:
            self._timeout = _default_timeout()
        return self._timeout

    def __repr__(self) -> str:
        return f"Installer({self.python!r})"

    @staticmethod
    def is_host_environment(venv: "str | os.PathLike[str]") -> bool:
        """Whether the environment (venv) folder ``venv`` is the one this
        interpreter runs in (``sys.prefix``), symlinks resolved."""
        return os.path.realpath(os.fspath(venv)) == os.path.realpath(sys.prefix)

    def targets_host(self) -> bool:
        """Whether this installer would install into the host's own environment:
        the target interpreter's environment (the folder above its ``bin``, as
        in a venv; the interpreter itself is not resolved, a venv's being a
        symlink to its base's) is this interpreter's ``sys.prefix``. Asks
        nothing of the target."""
        python = os.path.abspath(self.python)
        return self.is_host_environment(os.path.dirname(os.path.dirname(python)))

    # --- asking the target ------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _REDIRECTS}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    def _run(self, cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        """Run ``cmd`` (no shell, output captured) in a process group of its
        own; kill the whole group (pip's build subprocesses too) if it takes
        longer than ``timeout`` or if this thread is interrupted (a run's
        timeout, delivered between short waits: tools.wait_group)."""
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self._env(),
                                    start_new_session=True)
        except OSError as e:
            raise _PipError(f"{what}: cannot run {cmd[0]} ({e})") from None
        try:
            out, err = wait_group(proc, timeout)
        except subprocess.TimeoutExpired:
            raise _PipError(f"{what} did not finish within {timeout:g} s and was stopped "
                            f"(Installer(timeout=...), or $TORPOR_PIP_TIMEOUT; is the "
                            f"package index reachable?)") from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out.decode("utf-8", "replace"),
                                           err.decode("utf-8", "replace"))

    def probe(self, specs: Sequence[str]) -> _Probe:
        """Ask the target interpreter what it has of ``specs``' distributions."""
        names = sorted({canonical_name(s) for s in specs})
        done = self._run([self.python, "-c", _PROBE, json.dumps(names)], _PROBE_TIMEOUT,
                         f"asking {self.python} what it has installed")
        try:
            data = json.loads(done.stdout.strip().splitlines()[-1])
            return _Probe(data["prefix"], data["own"], data["pip"],
                          {n: [_Copy(**c) for c in cs] for n, cs in data["found"].items()})
        except (ValueError, IndexError, KeyError, TypeError):
            raise _PipError(f"{self.python} does not run as a Python interpreter: "
                            f"{_last_errors(done.stderr, done.stdout)}") from None

    def _probe_or_fail(self, specs: list[str], out: dict[str, Any]) -> Optional[_Probe]:
        """The probe of ``specs`` (None if there are none), or None with every
        one of them in ``out["failed"]`` saying why the target could not be asked."""
        if not specs:
            return None
        try:
            return self.probe(specs)
        except _PipError as e:
            out["failed"] += [failure(s, str(e)) for s in specs]
            return None

    def satisfied(self, spec: str) -> bool:
        """Whether the target's importable copy of ``spec``'s distribution has
        a version ``spec`` accepts (extras are not checked)."""
        return self.probe([spec]).satisfies(check_spec(spec))

    def _pip(self, probe: _Probe) -> list[str]:
        if probe.pip:
            return [self.python, "-m", "pip"]
        if importlib.util.find_spec("pip") is not None:      # this one's, run for the target
            return [sys.executable, "-m", "pip", "--python", self.python]
        raise _PipError(f"there is no pip for {self.python} (nor in this interpreter, "
                        f"{sys.executable}): install pip (python -m ensurepip)")

    def _pip_call(self, probe: _Probe, args: list[str], what: str
                  ) -> tuple[Optional[str], bool]:
        """Run pip with ``args``: (None, False) if it succeeded, else (why it
        failed, whether pip could not run or finish at all)."""
        try:
            done = self._run(self._pip(probe) + args, self.timeout, what)
        except _PipError as e:
            return str(e), True
        finally:
            importlib.invalidate_caches()      # what was installed is importable at once
        if done.returncode == 0:
            return None, False
        return _last_errors(done.stderr, done.stdout), False

    # --- installing --------------------------------------------------------------------

    def install(self, specs: Sequence[str]) -> dict[str, Any]:
        """Install whatever of ``specs`` the target does not satisfy yet (one
        pip call; if it fails, one call each to say which fail):
        ``{"installed": [spec], "already_present": [spec], "failed":
        [{"spec", "error"}]}``. ``already_present`` counts a copy the target
        imports from the host's packages too (a worker's venv borrows them)."""
        specs = list(dict.fromkeys(check_spec(s) for s in specs))
        self.timeout                       # a malformed $TORPOR_PIP_TIMEOUT fails here, first
        out: dict[str, Any] = {"installed": [], "already_present": [], "failed": []}
        before = self._probe_or_fail(specs, out)
        if before is None:
            return out
        todo = []
        for s in specs:
            if not requirement(s).extras and before.satisfies(s):
                out["already_present"].append(s)
            else:
                todo.append(s)
        if not todo:
            return out
        args = ["install", "--no-input", "--progress-bar", "off", "--no-warn-script-location",
                *self.pip_args]
        with _locked(before.prefix):
            err, fatal = self._pip_call(before, args + todo, f"pip install {' '.join(todo)}")
            errors = dict.fromkeys(todo, err)
            if err is not None and not fatal and len(todo) > 1:     # which of them fail?
                errors = {s: self._pip_call(before, args + [s], f"pip install {s}")[0]
                          for s in todo}
        after = self._probe_or_fail(todo, out)
        if after is None:
            return out
        for s in todo:
            err = errors[s] or self._shadowed(after, s)
            if err:
                out["failed"].append(failure(s, err))
            elif before.satisfies(s):               # extras of a present package
                out["already_present"].append(s)
            else:
                out["installed"].append(s)
        return out

    def _shadowed(self, after: _Probe, spec: str) -> Optional[str]:
        """Why ``spec`` is still not what ``import`` finds after pip succeeded,
        if it is not."""
        c = after.first(spec)
        if c is None:
            return f"pip succeeded but {requirement(spec).name} is not installed afterwards"
        if _accepts(spec, c.version):
            return None
        return (f"pip succeeded, but the copy of {requirement(spec).name} that comes first on "
                f"sys.path is version {c.version} at {c.where}, which {spec!r} does not accept")

    # --- uninstalling ------------------------------------------------------------------

    def uninstall(self, specs: Sequence[str]) -> dict[str, Any]:
        """Uninstall ``specs``' distributions (by name, whatever their version)
        from the target's OWN site-packages: ``{"removed": [spec],
        "not_found": [spec], "failed": [{"spec", "error"}]}``. A distribution
        the target only imports from elsewhere (the host's packages a worker's
        venv borrows, ``PYTHONPATH``) is never touched: it is in ``failed``,
        saying where it is."""
        specs = list(dict.fromkeys(check_spec(s) for s in specs))
        self.timeout                       # a malformed $TORPOR_PIP_TIMEOUT fails here, first
        out: dict[str, Any] = {"removed": [], "not_found": [], "failed": []}
        before = self._probe_or_fail(specs, out)
        if before is None:
            return out
        ours = []
        for s in specs:
            c = before.first(s)
            if c is None:
                out["not_found"].append(s)
            elif c.own:
                ours.append(s)
            else:
                out["failed"].append(failure(s, self._outside(before, s, c)))
        if not ours:
            return out
        names = [requirement(s).name for s in ours]
        with _locked(before.prefix):
            err, _ = self._pip_call(before, ["uninstall", "--yes", "--no-input", *names],
                                 f"pip uninstall {' '.join(names)}")
        after = self._probe_or_fail(ours, out)
        if after is None:
            return out
        for s in ours:
            left = [c for c in after.found.get(canonical_name(s), []) if c.own]
            if left:
                out["failed"].append(failure(s, err or f"{requirement(s).name} {left[0].version} "
                                             f"is still installed at {left[0].where}"))
            else:
                out["removed"].append(s)
        return out

    def _outside(self, probe: _Probe, spec: str, c: _Copy) -> str:
        name = requirement(spec).name
        own = " or ".join(probe.own)
        text = (f"{name} {c.version} is installed at {c.where}, outside this environment's "
                f"own site-packages ({own}): those are the host interpreter's packages (or "
                f"PYTHONPATH), which this environment only borrows, and torpor never "
                f"uninstalls them")
        shadowed = [x for x in probe.found.get(canonical_name(spec), []) if x.own]
        if shadowed:
            text += (f"; this environment's own copy ({shadowed[0].version}) comes after it on "
                     f"sys.path and was left as it is")
        return text


@contextlib.contextmanager
def _locked(prefix: str) -> Iterator[None]:
    """One pip at a time over the environment at ``prefix``: a lock file in it
    between processes (none if the prefix is read-only), a lock in this
    process."""
    with _process_locks_guard:
        lock = _process_locks.setdefault(os.path.realpath(prefix), threading.Lock())
    with lock:
        try:
            fd = os.open(os.path.join(prefix, ".torpor-pip.lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            yield
            return
        try:
            try:
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:                 # not POSIX: this process's lock only
                pass
            yield
        finally:
            os.close(fd)
