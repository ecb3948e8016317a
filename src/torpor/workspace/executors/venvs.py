"""The virtual environments SubprocessExecutor workers run in.

A worker's environment is made with the standard library's ``venv`` (no pip:
nothing is downloaded) and is given this interpreter's packages (torpor,
numpy and everything they need) through one file in its site-packages,
``_torpor_host.pth``, which adds this interpreter's site-packages folders
*after* the environment's own: whatever is installed into the environment
later wins over the host's copy.

Cached environments (``ensure``) are made once, under a lock file beside them
(``<path>.lock``, ``flock``), so two sessions starting at once make one
environment and both use it. The folder is marked ``.torpor-venv-incomplete``
while it is made and gets its record, ``.torpor-venv.json`` (the base
interpreter, its version, the host's folders), last: a folder that was being
made when its maker was killed, or whose interpreter is gone (a Python
upgrade), is made again; a host with other site-packages folders only rewrites
the ``.pth`` file. A folder torpor did not make is never deleted: a virtual
environment of the user's own (``pyvenv.cfg``) is used as it is.

A ``python_version`` other than this interpreter's cannot borrow its packages
(compiled extensions are built for one version): that environment sees its
interpreter's own site-packages instead, and is refused with a clear error if
torpor and numpy do not import there."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

#: The record of a finished environment; the mark of one being made.
RECORD = ".torpor-venv.json"
INCOMPLETE = ".torpor-venv-incomplete"
PTH = "_torpor_host.pth"
_FORMAT = 1
_VERSION = re.compile(r"3\.(\d{1,2})\Z")
_found: dict[str, tuple[str, str]] = {}


class VenvError(RuntimeError):
    """A worker's virtual environment cannot be made or used."""


def host_version() -> str:
    return "%d.%d" % sys.version_info[:2]


def check_version(version: Any) -> Optional[str]:
    """None or a ``"3.11"``-style version torpor runs on (3.10 and later)."""
    if version is None:
        return None
    if not isinstance(version, str):
        raise TypeError(f"python_version must be a str such as '3.11' (or None: this "
                        f"interpreter's, {host_version()}), not {type(version).__name__}")
    m = _VERSION.match(version.strip())
    if not m:
        raise ValueError(f"python_version must look like '3.11' (major.minor, no patch "
                         f"level), not {version!r}")
    if int(m.group(1)) < 10:
        raise ValueError(f"python_version {version!r}: torpor needs Python 3.10 or later")
    return version.strip()


def find_python(version: Optional[str]) -> tuple[str, str]:
    """(an interpreter's path, its ``"3.11"`` version) for ``version`` (None: this
    interpreter). Another version is looked up on PATH as ``python3.X`` and run
    once to check it."""
    if version is None or version == host_version():
        return sys.executable, host_version()
    if version in _found:
        return _found[version]
    name = f"python{version}"
    exe = shutil.which(name)
    if exe is None:
        raise VenvError(f"python_version={version!r}: there is no {name!r} on PATH "
                        f"({os.environ.get('PATH', '')}). Install Python {version}, put it on "
                        f"PATH, or use python_version=None (this interpreter, Python "
                        f"{host_version()})")
    try:
        out = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise VenvError(f"python_version={version!r}: {exe} does not run ({e})") from None
    got = out.stdout.strip()
    if out.returncode != 0 or got != version:
        why = (out.stderr.strip() or out.stdout.strip())[-500:]
        raise VenvError(f"python_version={version!r}: {exe} (found on PATH as {name!r}) "
                        + (f"is Python {got}" if out.returncode == 0 else f"does not run: {why}"))
    _found[version] = (exe, version)
    return exe, version


def host_paths() -> list[str]:
    """This interpreter's site-packages folders (a worker's environment adds them
    after its own)."""
    paths = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        user = site.getusersitepackages()
        if isinstance(user, str):
            paths.append(user)
    out: list[str] = []
    for p in paths:
        p = os.path.realpath(p)
        if os.path.isdir(p) and p not in out:
            out.append(p)
    return out


def _pth_text(paths: list[str]) -> str:
    return ("# torpor: this environment's maker's packages (torpor, numpy, ...) after its own,\n"
            "# so that packages installed into this environment win over them\n"
            f"import site; list(map(site.addsitedir, {tuple(paths)!r}))\n")


@dataclass(frozen=True)
class Venv:
    """A worker's environment: ``path``, its ``python``, its ``version``
    (``"3.11"``), ``temporary`` (removed at the executor's close), ``own``
    (made by torpor, as opposed to a user's environment given as venv_path)."""

    path: Path
    python: Path
    version: str
    temporary: bool = False
    own: bool = True
    created: bool = False

    @property
    def logs(self) -> Path:
        return self.path / "logs"


def _python_in(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _site_packages(path: Path, version: str) -> Path:
    if os.name == "nt":
        return path / "Lib" / "site-packages"
    return path / "lib" / f"python{version}" / "site-packages"


def _read_record(path: Path) -> Optional[dict[str, Any]]:
    try:
        with open(path / RECORD, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _usable(path: Path, exe: str, version: str, paths: list[str]) -> Optional[str]:
    """Why the environment at ``path`` must be made again ("" if only its .pth
    must be rewritten), or None if it is ready."""
    if (path / INCOMPLETE).exists():
        return "it was being made when its maker stopped"
    rec = _read_record(path)
    if rec is None:
        return "it has no record"
    if rec.get("format") != _FORMAT or rec.get("version") != version \
            or rec.get("python") != os.path.realpath(exe):
        return "it was made by another interpreter"
    if not os.path.exists(_python_in(path)):
        return "its interpreter is gone"
    if rec.get("host_paths") != (paths if rec.get("borrows", True) else []):
        return ""
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:                   # not POSIX: no lock, best effort
            pass
        yield
    finally:
        os.close(fd)


def ensure(path: Path, exe: str, version: str) -> Venv:
    """The cached environment at ``path``, made if it is missing, stale or
    half-made (under a lock: two sessions starting at once make it once)."""
    path = Path(os.path.abspath(path))
    paths = host_paths() if version == host_version() else []
    why = _usable(path, exe, version, paths)
    if why is None:
        return Venv(path, _python_in(path), version)
    with _locked(path):
        why = _usable(path, exe, version, paths)     # another process may have made it
        if why is None:
            return Venv(path, _python_in(path), version)
        if why == "":
            _write_pth(path, version, paths)
            _write_record(path, exe, version, paths)
            return Venv(path, _python_in(path), version)
        if path.exists():
            if not path.is_dir():
                raise VenvError(f"venv_path {path} exists and is not a folder")
            entries = os.listdir(path)
            ours = RECORD in entries or INCOMPLETE in entries
            if entries and not ours:
                if (path / "pyvenv.cfg").exists() and os.path.exists(_python_in(path)):
                    return Venv(path, _python_in(path), version, own=False)
                raise VenvError(f"{path} exists and is neither a virtual environment nor one "
                                f"torpor made: give a new venv_path, or remove that folder")
            if entries:
                shutil.rmtree(path)
        _create(path, exe, version, paths)
        return Venv(path, _python_in(path), version, created=True)


def temporary(exe: str, version: str) -> Venv:
    """A new environment in a temporary folder (``remove`` it at the end)."""
    top = Path(tempfile.mkdtemp(prefix="torpor-venv-"))
    path = top / "venv"
    try:
        _create(path, exe, version, host_paths() if version == host_version() else [])
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        raise
    return Venv(path, _python_in(path), version, temporary=True, created=True)


def remove(venv: Venv) -> None:
    """Delete a temporary environment (and its temporary folder)."""
    if venv.temporary:
        top = venv.path.parent
        shutil.rmtree(top if top.name.startswith("torpor-venv-") else venv.path,
                      ignore_errors=True)


def _create(path: Path, exe: str, version: str, paths: list[str]) -> None:
    borrows = version == host_version()
    path.mkdir(parents=True, exist_ok=True)
    (path / INCOMPLETE).touch()
    if exe == sys.executable:
        import venv
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt",
                        system_site_packages=not borrows).create(str(path))
    else:
        cmd = [exe, "-m", "venv", "--without-pip"]
        if not borrows:
            cmd.append("--system-site-packages")
        out = subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise VenvError(f"{exe} -m venv {path} failed: "
                            f"{(out.stderr or out.stdout).strip()[-1000:]}")
    if borrows:
        _write_pth(path, version, paths)
    else:
        probe = subprocess.run([str(_python_in(path)), "-c", "import torpor, numpy"],
                               capture_output=True, text=True, timeout=300)
        if probe.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            last = (probe.stderr.strip() or probe.stdout.strip()).splitlines()[-1:] or ["?"]
            raise VenvError(
                f"Python {version} ({exe}) cannot import torpor and numpy ({last[0]}). A worker's "
                f"environment borrows this interpreter's packages only for its own version "
                f"({host_version()}); for Python {version}, install torpor into that "
                f"interpreter ({exe} -m pip install torpor), or use python_version=None")
    _write_record(path, exe, version, paths if borrows else [], borrows)
    os.unlink(path / INCOMPLETE)


def _write_pth(path: Path, version: str, paths: list[str]) -> None:
    sp = _site_packages(path, version)
    sp.mkdir(parents=True, exist_ok=True)
    _write_atomic(sp / PTH, _pth_text(paths))


def _write_record(path: Path, exe: str, version: str, paths: list[str],
                  borrows: bool = True) -> None:
    _write_atomic(path / RECORD, json.dumps({
        "format": _FORMAT, "python": os.path.realpath(exe), "version": version,
        "host_paths": paths, "borrows": borrows}, indent=1))


def user_cache(version: str, exe: str) -> Path:
    """The per-user place of a cached environment for storages that are not a
    local folder: ``$XDG_CACHE_HOME/torpor/venvs/py3.11-<hash>`` (the hash of
    this interpreter's environment and the base interpreter, so that hosts with
    other packages do not share one)."""
    import hashlib
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = f"{os.path.realpath(sys.prefix)}\0{os.path.realpath(exe)}".encode()
    return Path(base) / "torpor" / "venvs" / f"py{version}-{hashlib.sha1(key).hexdigest()[:12]}"


def location(storage: Any, version: str, exe: str) -> Path:
    """Where a cached environment of ``storage`` lives: beside a local
    FileStorage's artifacts (``<root>/.venv-py3.11``), else in the user's cache."""
    root = getattr(storage, "root", None)
    if isinstance(root, str) and "://" not in root and os.path.isdir(root):
        return Path(root) / f".venv-py{version}"
    return user_cache(version, exe)
