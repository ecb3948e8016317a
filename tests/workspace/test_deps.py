"""Workspace dependencies (library/deps.py, library/installer.py), without the
internet: the wheels are built here, by hand, and pip installs them from a
local folder (--no-index --find-links).

Requirement specs (what is allowed, what is refused and why); the
configuration (requirements.txt with comments, invalid lines named with file
and line, atomic replacement, no add lost when threads and processes add at
once; the same on a real redis-server and on an fsspec URL); the Installer on a
worker-style venv that borrows the host's packages (a host package counts as
present, an upgrade goes into the venv and shadows the host's copy, a host-only
package is never uninstalled, pip's errors and its timeout); the subprocess
Session end to end (add_dep, then import in the running worker; deps.add from
code; remove_dep really uninstalls; allow_runtime_deps=False; sync_deps and
sync_deps_on_start); the in-process executor (present versus failed, and
install_deps=True against a throwaway venv only). The host interpreter is
checked to be unchanged at the end."""

import asyncio
import base64
import ctypes
import hashlib
import importlib.metadata as metadata
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import venv as stdlib_venv
import zipfile
from pathlib import Path

import pytest

import torpor
from torpor.errors import InvalidRequirementError, RuntimeDepsDisabledError
from torpor.workspace import (Capability, FileStorage, InProcessConfig, InProcessExecutor,
                              Session, SyncSession)
from torpor.workspace.executors import venvs
from torpor.workspace.executors.subproc import SubprocessConfig, SubprocessExecutor
from torpor.workspace.library.deps import Deps, DepsNamespace, check_spec
from torpor.workspace.library.installer import Installer, _PipError

from helpers import wait_gone

OURS = ("tinypkg", "otherpkg", "iniconfig")       # what the tests install somewhere


def arun(coro):
    return asyncio.run(coro)


# --- wheels, venvs, the host ---------------------------------------------------------

def build_wheel(folder, name, version, body):
    """A pure-Python wheel of package ``name`` (one module, ``body``), with
    the METADATA, WHEEL and RECORD pip checks."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": body.encode(),
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 f"Summary: a test package of torpor\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: torpor-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(Path(folder) / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("deps")


@pytest.fixture(scope="module")
def wheels(module_dir):
    """tinypkg 1.0 and 2.0, otherpkg 1.0, and iniconfig 999.0: a newer version
    of a package the host has (pytest needs it), to shadow the host's copy."""
    folder = module_dir / "wheels"
    folder.mkdir()
    for name, version in [("tinypkg", "1.0"), ("tinypkg", "2.0"), ("otherpkg", "1.0"),
                          ("iniconfig", "999.0")]:
        build_wheel(folder, name, version, f"VERSION = {version!r}\n")
    return folder


@pytest.fixture
def pip_local(monkeypatch, wheels):
    """pip (run by a Session, or by a worker started after this) finds the
    test's wheels only."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def host_state():
    """What the host interpreter has: every distribution and version, and the
    entries of its site-packages folders."""
    dists = sorted((d.metadata["Name"] or "?", d.version) for d in metadata.distributions())
    listing = {p: sorted(os.listdir(p)) for p in venvs.host_paths()}
    return dists, listing


@pytest.fixture(scope="module", autouse=True)
def host_unchanged():
    """Nothing in this module installs into, or uninstalls from, the host."""
    before = host_state()
    yield
    assert host_state() == before, "the host interpreter's packages changed"


def site_packages(venv_path):
    return venvs._site_packages(Path(venv_path), venvs.host_version())


def scrub(venv_path):
    """Remove what the tests installed into a venv (a module-wide venv is
    shared by several tests)."""
    sp = site_packages(venv_path)
    if sp.is_dir():
        for entry in sp.iterdir():
            if entry.name.split("-")[0].lower() in OURS:
                shutil.rmtree(entry)


def in_venv(python, code):
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout.strip(), out.stderr.strip()


@pytest.fixture(scope="module")
def borrowing_venv(module_dir):
    """A worker's kind of venv: no pip of its own, the host's packages after
    its own site-packages (executors/venvs.py)."""
    return venvs.ensure(module_dir / "borrowing", sys.executable, venvs.host_version())


@pytest.fixture
def borrowing(borrowing_venv, wheels):
    scrub(borrowing_venv.path)
    yield Installer(borrowing_venv.python, pip_args=("--no-index", "--find-links", str(wheels)))
    scrub(borrowing_venv.path)


@pytest.fixture(scope="module")
def bare_venv(module_dir):
    """A throwaway venv with nothing in it, not even pip."""
    path = module_dir / "bare"
    stdlib_venv.EnvBuilder(with_pip=False, symlinks=True).create(str(path))
    return path


class FakeInstaller:
    """Installs everything, instantly (for the configuration's tests)."""

    python = "/fake/python"

    def install(self, specs):
        return {"installed": list(specs), "already_present": [], "failed": []}

    def uninstall(self, specs):
        return {"removed": list(specs), "not_found": [], "failed": []}


# --- specs -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, normal", [
    ("pandas", "pandas"),
    ("pandas >= 2.0", "pandas>=2.0"),
    ("  numpy>=1.24,<3 ", "numpy<3,>=1.24"),
    ("requests[socks]==2.31.*", "requests[socks]==2.31.*"),
    ("Foo_Bar.baz~=1.4", "Foo_Bar.baz~=1.4"),
    ("x===1.0", "x===1.0"),
])
def test_good_specs_are_normalised(spec, normal):
    assert check_spec(spec) == normal


@pytest.mark.parametrize("spec, why", [
    ("", "empty"),
    ("-e .", "pip options"),
    ("--index-url=https://evil/simple", "pip options"),
    ("-r other.txt", "pip options"),
    ("pkg @ https://example.com/pkg.whl", "URLs"),
    ("https://example.com/pkg-1.0.tar.gz", "URLs"),
    ("git+ssh://git@github.com/x/y", "URLs"),
    ('pkg; python_version < "3.12"', "environment markers"),
    ("./src/pkg", "paths"),
    ("/abs/pkg", "paths"),
    ("~/pkg", "paths"),
    ("pkg-1.0-py3-none-any.whl", "paths and archives"),
    ("a b", "not a requirement"),
    ("pkg>=", "not a requirement"),
    ("pkg\nother", "one line"),
    ("pkg  # why", "comment"),
    ("x" * 600, "longer than"),
    ("torpor", "torpor itself cannot be a dependency: installing another torpor into a "
               "worker's environment would shadow the torpor the worker runs"),
    ("Torpor>=1.0", "torpor itself"),
    ("TORPOR[workspace]==0.1", "torpor itself"),
])
def test_bad_specs_say_what_is_allowed(spec, why):
    with pytest.raises(InvalidRequirementError, match=why) as e:
        check_spec(spec)
    assert isinstance(e.value, ValueError)
    assert "a package name with optional extras and version specifiers" in str(e.value)
    with pytest.raises(TypeError, match="str"):
        check_spec(b"pandas")


def test_session_checks_extra_deps_with_the_same_rules(tmp_path):
    s = Session.from_base(tmp_path / "a", extra_deps=("pandas >= 2", "numpy"))
    assert s.extra_deps == ("pandas>=2", "numpy")
    for bad in ("https://evil/x.whl", "-e .", "x; os_name=='nt'"):
        with pytest.raises(ValueError, match="extra_deps: .*not allowed as a dependency"):
            Session.from_base(tmp_path / "b", extra_deps=(bad,))
    with pytest.raises(TypeError, match="not one str"):
        Session.from_base(tmp_path / "b", extra_deps="pandas")


# --- the configuration -------------------------------------------------------------------

def test_requirements_txt_comments_replacing_and_removing(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    deps = storage.deps
    path = Path(storage.root) / "requirements.txt"
    assert deps.list() == [] and not path.exists()
    path.write_text("# the analysis needs these\n\nnumpy >= 1.24   # arrays\n"
                    "TinyPkg==0.5\n  \npandas\n")
    assert deps.list() == ["numpy>=1.24", "TinyPkg==0.5", "pandas"]
    fake = FakeInstaller()
    assert deps.add("tinypkg==1.0", fake)["installed"] == ["tinypkg==1.0"]
    assert deps.add("scipy", fake)["installed"] == ["scipy"]
    # the same package (by its canonical name) replaces its line; comments stay
    assert path.read_text() == ("# the analysis needs these\n\nnumpy >= 1.24   # arrays\n"
                                "tinypkg==1.0\n  \npandas\nscipy\n")
    r = deps.remove("NUMPY", fake)
    assert r == {"removed": ["NUMPY"], "not_found": [], "failed": [], "removed_from_config": True}
    assert deps.list() == ["tinypkg==1.0", "pandas", "scipy"]
    assert deps.remove("absent", fake)["removed_from_config"] is False
    assert "# the analysis needs these" in path.read_text()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert repr(deps) == f"<Deps in {path}>"


def test_replacing_a_line_keeps_its_comment(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    path = Path(storage.root) / "requirements.txt"
    path.write_text("pkg==1  # pinned because of issue 7\nother>=1 # why\nPKG # again\n"
                    "plain==1\n")
    fake = FakeInstaller()
    storage.deps.add("pkg==2", fake)
    assert path.read_text() == "pkg==2  # pinned because of issue 7\nother>=1 # why\nplain==1\n"
    storage.deps.add("other>=2", fake)
    storage.deps.add("plain==2", fake)
    assert path.read_text() == ("pkg==2  # pinned because of issue 7\nother>=2 # why\n"
                                "plain==2\n")
    assert storage.deps.list() == ["pkg==2", "other>=2", "plain==2"]


def test_an_invalid_line_is_named_and_nothing_is_dropped(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    path = Path(storage.root) / "requirements.txt"
    path.write_text("numpy\n# fine\n-e ./mypkg\npandas\n")
    with pytest.raises(InvalidRequirementError) as e:
        storage.deps.list()
    assert f"{path}, line 3" in str(e.value) and "pip options" in str(e.value)
    with pytest.raises(InvalidRequirementError, match="line 3"):
        storage.deps.add("scipy", FakeInstaller())
    with pytest.raises(InvalidRequirementError, match="line 3"):
        storage.deps.remove("numpy", FakeInstaller())
    assert path.read_text() == "numpy\n# fine\n-e ./mypkg\npandas\n"


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    storage = FileStorage(tmp_path / "ws")
    deps = storage.deps
    deps.add("numpy", FakeInstaller())
    path = Path(storage.root) / "requirements.txt"

    def broken(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        deps.add("pandas", FakeInstaller())
    monkeypatch.undo()
    assert path.read_text() == "numpy\n"
    assert sorted(p.name for p in path.parent.iterdir() if "requirements" in p.name) == \
        [".requirements.txt.lock", "requirements.txt"]


def test_a_failed_install_is_not_configured(tmp_path):
    class Failing(FakeInstaller):
        def install(self, specs):
            return {"installed": [], "already_present": [],
                    "failed": [{"spec": s, "error": "no such package"} for s in specs]}
    deps = FileStorage(tmp_path / "ws").deps
    r = deps.add("nosuchpkg", Failing())
    assert r["failed"] == [{"spec": "nosuchpkg", "error": "no such package"}]
    assert deps.list() == []


def test_adds_at_once_in_threads_and_processes_lose_nothing(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    threads = [threading.Thread(target=storage.deps.add, args=(f"thread{i}", FakeInstaller()))
               for i in range(12)]
    script = textwrap.dedent(f"""
        import sys
        from torpor.workspace import FileStorage
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        from test_deps import FakeInstaller
        deps = FileStorage({str(tmp_path / "ws")!r}).deps
        for i in range(8):
            deps.add(f"proc{{sys.argv[1]}}-{{i}}", FakeInstaller())
        """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(p)]) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(60) for p in procs] == [0] * 4
    want = {f"thread{i}" for i in range(12)} | {f"proc{p}-{i}" for p in range(4) for i in range(8)}
    got = storage.deps.list()
    assert len(got) == len(want) and set(got) == want


def test_redis_keeps_the_configuration_in_one_key(redis_storage_factory):
    storage = redis_storage_factory(workspace_id="deps")
    deps = storage.deps
    assert deps.list() == []
    threads = [threading.Thread(target=deps.add, args=(f"pkg{i}>=1", FakeInstaller()))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(deps.list()) == sorted(f"pkg{i}>=1" for i in range(16))
    at = deps.list().index("pkg3>=1")
    deps.add("PKG3==2.0", FakeInstaller())             # replaces pkg3's line, in place
    assert deps.list()[at] == "PKG3==2.0" and len(deps.list()) == 16
    key = storage.namespace + "requirements"
    assert storage.redis.type(key) == b"string"
    assert storage.redis.get(key).decode().splitlines()[at] == "PKG3==2.0"
    # another process's view (a worker's) reads the same configuration
    assert redis_storage_factory(workspace_id="deps").deps.list() == deps.list()
    assert redis_storage_factory(workspace_id="other").deps.list() == []
    for i in range(16):
        deps.remove(f"pkg{i}", FakeInstaller())
    assert deps.list() == [] and not storage.redis.exists(key)
    storage.redis.set(key, b"numpy\n--index-url https://evil/\n")
    with pytest.raises(InvalidRequirementError, match=r"key .*requirements.*line 2"):
        deps.list()


@pytest.mark.parametrize("kind", ["memory", "s3"])
def test_fsspec_urls_keep_requirements_txt(kind, request):
    import fsspec
    make = request.getfixturevalue(f"{kind}_storage_factory")
    storage = make()
    deps = storage.deps
    deps.add("numpy>=1", FakeInstaller())
    deps.add("pandas", FakeInstaller())
    assert make().deps.list() == ["numpy>=1", "pandas"]
    with fsspec.open(f"{storage.root}/requirements.txt", "rb",
                     **(storage.storage_options or {})) as f:
        assert f.read() == b"numpy>=1\npandas\n"
    assert deps.remove("numpy", FakeInstaller())["removed_from_config"] is True
    assert deps.list() == ["pandas"]


def test_s3_a_change_that_raced_another_writer_is_retried(s3_storage_factory, monkeypatch):
    """Another writer replaces requirements.txt between this change's read and
    its conditional PUT: the PUT is refused, and the change is made again on
    the other writer's text."""
    deps = s3_storage_factory().deps
    deps.add("numpy", FakeInstaller())
    objects = deps._store.objects
    read_tagged = objects.read_tagged

    def racing(key):
        raw, tag = read_tagged(key)
        if not raced:
            raced.append(key)
            objects.put(key, raw + b"racer\n", existed=True)     # unconditional
        return raw, tag
    raced = []
    monkeypatch.setattr(objects, "read_tagged", racing)
    deps.add("pandas", FakeInstaller())
    assert raced and deps.list() == ["numpy", "racer", "pandas"]


# --- the Installer on a venv that borrows the host's packages ------------------------------

def test_a_host_package_is_present_and_never_uninstalled(borrowing, borrowing_venv):
    host_version = metadata.version("packaging")
    assert borrowing.satisfied("packaging>=1")
    assert not borrowing.satisfied("packaging>=9999")
    assert not borrowing.satisfied("tinypkg")
    r = borrowing.install(["packaging>=1", "PACKAGING"])
    assert r == {"installed": [], "already_present": ["packaging>=1", "PACKAGING"], "failed": []}
    r = borrowing.uninstall(["packaging"])
    assert r["removed"] == [] and r["not_found"] == []
    [f] = r["failed"]
    assert f["spec"] == "packaging"
    assert "outside this environment's own site-packages" in f["error"]
    assert "never uninstalls" in f["error"]
    assert metadata.version("packaging") == host_version
    assert borrowing.uninstall(["tinypkg"]) == {"removed": [], "not_found": ["tinypkg"],
                                                 "failed": []}


def test_an_upgrade_goes_into_the_venv_and_shadows_the_host(borrowing, borrowing_venv):
    host = metadata.distribution("iniconfig")
    host_files = sorted(str(p) for p in host.files or ())
    py = borrowing_venv.python
    code = "import iniconfig, importlib.metadata as m; print(m.version('iniconfig'), iniconfig.__file__)"
    rc, out, _ = in_venv(py, code)
    assert rc == 0 and out.split()[0] == host.version          # the host's, borrowed
    r = borrowing.install(["iniconfig>=999"])
    assert r == {"installed": ["iniconfig>=999"], "already_present": [], "failed": []}
    rc, out, err = in_venv(py, code)
    version, where = out.split()
    assert (version, rc) == ("999.0", 0), err
    assert where.startswith(str(site_packages(borrowing_venv.path)))   # the venv's, first
    assert borrowing.install(["iniconfig>=999"])["already_present"] == ["iniconfig>=999"]
    assert metadata.version("iniconfig") == host.version
    assert sorted(str(p) for p in metadata.distribution("iniconfig").files or ()) == host_files
    # uninstalling takes the venv's copy only: the host's is seen again
    assert borrowing.uninstall(["iniconfig"])["removed"] == ["iniconfig"]
    rc, out, _ = in_venv(py, code)
    assert out.split()[0] == host.version
    assert not any(p.name.startswith("iniconfig") for p in site_packages(borrowing_venv.path).iterdir())
    assert borrowing.uninstall(["iniconfig"])["failed"][0]["spec"] == "iniconfig"


def test_pip_errors_and_timeouts_are_reported(borrowing, borrowing_venv, wheels):
    r = borrowing.install(["nosuchpkg==1.0", "tinypkg==1.0"])
    # one pip call fails for both; one call each tells which
    assert r["installed"] == ["tinypkg==1.0"]
    [f] = r["failed"]
    assert f["spec"] == "nosuchpkg==1.0"
    assert "ERROR:" in f["error"] and "nosuchpkg" in f["error"]
    r = borrowing.install(["tinypkg==2.0"])          # a version change in the venv itself
    assert r["installed"] == ["tinypkg==2.0"]
    assert in_venv(borrowing_venv.python, "import tinypkg; print(tinypkg.VERSION)")[1] == "2.0"
    # extras are pip's to judge (pip warns that tinypkg has no such extra, and succeeds)
    assert borrowing.install(["tinypkg[fast]==2.0"]) == {
        "installed": [], "already_present": ["tinypkg[fast]==2.0"], "failed": []}
    slow = Installer(borrowing_venv.python, timeout=0.01,
                     pip_args=("--no-index", "--find-links", str(wheels)))
    [f] = slow.install(["otherpkg"])["failed"]
    assert "did not finish within 0.01 s" in f["error"]
    assert not slow.satisfied("otherpkg")
    [f] = Installer("/nonexistent/python").install(["tinypkg"])["failed"]
    assert "cannot run /nonexistent/python" in f["error"]
    with pytest.raises(ValueError, match="timeout"):
        Installer(sys.executable, timeout=0)
    with pytest.raises(TypeError, match="pip_args"):
        Installer(sys.executable, pip_args="--no-index")


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_pip_is_killed_with_its_process_group(tmp_path):
    """At its timeout, and when the waiting thread is interrupted (the in-process
    executor's timeout: an exception raised into the thread, delivered between
    short waits), pip is killed with the processes it started."""
    inst = Installer(sys.executable)
    # a grandchild that leaves the pipes alone: killing only the child would leave it
    script = 'sleep 30 >/dev/null 2>&1 & echo $! > "$1"; wait'
    pidfile = tmp_path / "timeout.pid"
    with pytest.raises(_PipError, match="did not finish within 0.3 s"):
        inst._run(["sh", "-c", script, "sh", str(pidfile)], 0.3, "pip install slowpkg")
    assert wait_gone(int(pidfile.read_text())), "a build subprocess of pip still runs"

    class Interrupted(Exception):
        pass
    pidfile = tmp_path / "interrupted.pid"
    outcome = []

    def waiting():
        try:
            inst._run(["sh", "-c", script, "sh", str(pidfile)], 600, "pip install slowpkg")
        except BaseException as e:
            outcome.append(e)
    thread = threading.Thread(target=waiting)
    thread.start()
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                               ctypes.py_object(Interrupted))
    thread.join(20)                     # not the 30 s of the sleep, nor the 600 of the wait
    assert not thread.is_alive() and isinstance(outcome[0], Interrupted)
    assert wait_gone(int(pidfile.read_text())), "a build subprocess of pip still runs"


def test_a_malformed_pip_timeout_fails_only_when_pip_would_run(monkeypatch, bare_venv):
    monkeypatch.setenv("TORPOR_PIP_TIMEOUT", "ten minutes")
    inst = Installer(bare_venv / "bin" / "python")        # every session makes one
    for call in (inst.install, inst.uninstall):
        with pytest.raises(ValueError, match="TORPOR_PIP_TIMEOUT must be seconds \\(a number\\), "
                                             "not 'ten minutes'"):
            call(["tinypkg"])
    monkeypatch.setenv("TORPOR_PIP_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="TORPOR_PIP_TIMEOUT must be positive seconds"):
        Installer(sys.executable).uninstall(["tinypkg"])
    monkeypatch.setenv("TORPOR_PIP_TIMEOUT", "12.5")
    assert Installer(sys.executable).timeout == 12.5
    assert Installer(sys.executable, timeout=3).timeout == 3.0


def test_an_installer_says_whether_it_targets_the_host(bare_venv, borrowing_venv, tmp_path):
    assert not Installer(bare_venv / "bin" / "python").targets_host()
    assert not Installer(borrowing_venv.python).targets_host()
    # the interpreter running the tests is the host (a venv's python is a symlink to
    # its base interpreter: the environment, not the resolved file, decides)
    assert Installer(sys.executable).targets_host()
    assert Installer(Path(sys.prefix) / "bin" / "python").targets_host()
    assert Installer.is_host_environment(sys.prefix)
    link = tmp_path / "host-env"
    link.symlink_to(sys.prefix)
    assert Installer(link / "bin" / "python").targets_host()
    assert not Installer.is_host_environment(bare_venv)


def test_the_deps_handle_is_not_saved_in_a_checkpoint(tmp_path):
    ns = DepsNamespace(FileStorage(tmp_path / "ws").deps, None, allow_runtime=False)
    message = re.escape("deps is a handle on the session's dependencies and is not saved; "
                        "use deps again after a restore")
    for dump in (torpor.dumps, pickle.dumps):
        with pytest.raises(TypeError, match=message):
            dump(ns)
    with pytest.raises(TypeError, match=message):
        torpor.dumps({"dd": ns})


# --- a throwaway venv, and the in-process executor ---------------------------------------

def test_in_process_install_deps_targets_only_its_installer(tmp_path, bare_venv, pip_local):
    """InProcessConfig(install_deps=True) installs with Installer(sys.executable):
    the wiring is tested with a throwaway venv's interpreter in its place (the
    host is never installed into); the venv has no pip, so this interpreter's
    pip installs into it with --python."""
    ex = InProcessExecutor(InProcessConfig(install_deps=True))
    assert {Capability.DEPS_INSTALL, Capability.DEPS_UNINSTALL} <= ex.supported_capabilities()
    assert ex.deps_installer().python == sys.executable
    python = bare_venv / "bin" / "python"
    ex.deps_installer = lambda: Installer(python)
    sp = site_packages(bare_venv)

    async def go():
        async with Session(FileStorage(tmp_path / "ws"), ex) as s:
            r = await s.add_dep("tinypkg==1.0")
            assert r == {"installed": ["tinypkg==1.0"], "already_present": [], "failed": []}
            assert (sp / "tinypkg" / "__init__.py").exists()
            r = await s.run("deps")
            assert f"installs into {python}" in repr(r.value)
            r = await s.run("deps.remove('tinypkg')")
            assert r.value == {"removed": ["tinypkg"], "not_found": [], "failed": [],
                               "removed_from_config": True}, r.error
            assert not (sp / "tinypkg").exists()
            assert await s.list_deps() == []
    arun(go())


def test_in_process_without_installing(tmp_path):
    """The default in-process executor installs nothing: what the host has is
    present (and configured), anything else fails, saying what to use."""
    ex = InProcessExecutor()
    assert ex.deps_installer() is None
    assert not ({Capability.DEPS_INSTALL, Capability.DEPS_UNINSTALL}
                & ex.supported_capabilities())
    host = metadata.version("packaging")

    async def go():
        async with Session(FileStorage(tmp_path / "ws"), ex, extra_deps=("pytest",)) as s:
            r = await s.add_dep("packaging>=1")
            assert r == {"installed": [], "already_present": ["packaging>=1"], "failed": []}
            r = await s.add_dep("tinypkg==1.0")
            [f] = r["failed"]
            assert f["spec"] == "tinypkg==1.0"
            assert "does not install" in f["error"] and "does not have tinypkg" in f["error"]
            assert "Session.subprocess" in f["error"] and "install_deps=True" in f["error"]
            [f] = (await s.add_dep("packaging>=9999"))["failed"]
            assert f"has packaging {host}, which 'packaging>=9999' does not accept" in f["error"]
            assert await s.list_deps() == ["packaging>=1", "pytest"]
            assert await s.sync_deps() == {"installed": [],
                                           "already_present": ["packaging>=1", "pytest"],
                                           "failed": []}
            r = await s.remove_dep("packaging")
            assert r["removed"] == [] and r["removed_from_config"] is True
            assert "does not uninstall" in r["failed"][0]["error"]
            assert await s.remove_dep("tinypkg") == {"removed": [], "not_found": ["tinypkg"],
                                                     "failed": [], "removed_from_config": False}
            # the same from the code
            r = await s.run("deps.add('numpy'), deps.add('tinypkg'), deps.list()")
            present, missing, listed = r.value
            assert present["already_present"] == ["numpy"]
            assert missing["failed"][0]["spec"] == "tinypkg"
            assert listed == ["numpy"]
            assert "does not install" in repr((await s.run("deps")).value)
    arun(go())
    assert metadata.version("packaging") == host


def test_sync_session_and_redis_storage(redis_storage_factory):
    storage = redis_storage_factory()
    with SyncSession(storage) as s:
        assert s.add_dep("numpy")["already_present"] == ["numpy"]
        assert s.run("deps.list()").value == ["numpy"]
        assert s.list_deps() == ["numpy"]
        assert s.remove_dep("numpy")["removed_from_config"] is True
        assert s.sync_deps() == {"installed": [], "already_present": [], "failed": []}


# --- the subprocess Session --------------------------------------------------------------

@pytest.fixture(scope="module")
def session_venv(module_dir):
    return module_dir / "session-venv"


@pytest.fixture
def subprocess_session(tmp_path, session_venv, pip_local):
    """``make(ws="ws", **session_kw)``: a Session with a subprocess executor on
    the module's venv (made once; what the tests install is removed around
    each test)."""
    scrub(session_venv)
    made = []

    def make(ws="ws", **kw):
        s = Session(FileStorage(tmp_path / ws),
                    SubprocessExecutor(SubprocessConfig(venv_path=session_venv)), **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        arun(s.close())
    scrub(session_venv)


def test_subprocess_add_dep_import_remove(subprocess_session, session_venv, tmp_path):
    sp = site_packages(session_venv)

    async def go():
        s = subprocess_session()
        with pytest.raises(RuntimeError, match="not started"):
            s.executor.deps_installer()
        async with s:
            assert s.supports("deps_install") and s.supports("deps_uninstall")
            assert s.executor.deps_installer().python == str(session_venv / "bin" / "python")
            r = await s.run("import tinypkg")
            assert "ModuleNotFoundError" in r.error
            assert await s.add_dep("tinypkg==1.0") == {"installed": ["tinypkg==1.0"],
                                                        "already_present": [], "failed": []}
            # installed from the host while the worker runs: importable at once
            r = await s.run("import tinypkg; tinypkg.VERSION")
            assert r.value == "1.0", r.error
            assert tinypkg_in(sp) == "1.0"
            assert (tmp_path / "ws" / "requirements.txt").read_text() == "tinypkg==1.0\n"
            # from the code: installed into the worker's venv and importable in the same run
            r = await s.run("r = deps.add('otherpkg==1.0')\nimport otherpkg\n"
                            "r, otherpkg.VERSION, otherpkg.__file__")
            assert r.is_ok, r.error
            result, version, where = r.value
            assert result == {"installed": ["otherpkg==1.0"], "already_present": [],
                              "failed": []}
            assert version == "1.0" and where.startswith(str(sp))
            assert r.stdout == "" and r.stderr == ""          # pip said nothing here
            assert await s.list_deps() == ["tinypkg==1.0", "otherpkg==1.0"]
            assert await s.add_dep("tinypkg==1.0") == {"installed": [],
                                                        "already_present": ["tinypkg==1.0"],
                                                        "failed": []}
            r = await s.remove_dep("tinypkg")
            assert r == {"removed": ["tinypkg"], "not_found": [], "failed": [],
                         "removed_from_config": True}
            assert tinypkg_in(sp) is None
            assert await s.list_deps() == ["otherpkg==1.0"]
            r = await s.remove_dep("packaging")          # the host's: never uninstalled
            assert r["removed_from_config"] is False and "never uninstalls" in \
                r["failed"][0]["error"]
        async with subprocess_session() as fresh:      # a fresh worker on the same workspace
            r = await fresh.run("import tinypkg")
            assert "ModuleNotFoundError" in r.error
            r = await fresh.run("import otherpkg; otherpkg.VERSION")
            assert r.value == "1.0"
    arun(go())


def tinypkg_in(site):
    """The version of tinypkg installed in ``site`` (None: no file of it there)."""
    found = [p.name for p in site.iterdir() if p.name.startswith("tinypkg")]
    if not found:
        return None
    [info] = [n for n in found if n.endswith(".dist-info")]
    return info[len("tinypkg-"):-len(".dist-info")]


def test_allow_runtime_deps_false_blocks_the_code_only(subprocess_session):
    async def go():
        async with subprocess_session(allow_runtime_deps=False) as s:
            for call in ("deps.add('tinypkg==1.0')", "deps.remove('tinypkg')"):
                r = await s.run(call)
                assert "RuntimeDepsDisabledError" in r.error and "allow_runtime_deps" in r.error
            assert (await s.run("deps.list()")).value == []
            assert "disabled" in (await s.run("repr(deps)")).value
            assert (await s.add_dep("tinypkg==1.0"))["installed"] == ["tinypkg==1.0"]
            assert (await s.run("deps.list()")).value == ["tinypkg==1.0"]
    arun(go())
    ns = DepsNamespace(Deps(None), None, allow_runtime=False)
    with pytest.raises(RuntimeDepsDisabledError) as e:
        ns.add("x")
    assert isinstance(e.value, PermissionError)


def test_sync_deps_and_sync_on_start(subprocess_session, tmp_path, session_venv):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "requirements.txt").write_text("# pinned\ntinypkg==2.0\n")

    async def go():
        s = subprocess_session(sync_deps_on_start=True, extra_deps=("otherpkg",))
        async with s:
            assert s.deps_synced == {"installed": ["tinypkg==2.0", "otherpkg"],
                                     "already_present": [], "failed": []}
            r = await s.run("import tinypkg, otherpkg; tinypkg.VERSION")
            assert r.value == "2.0", r.error
            assert await s.sync_deps() == {"installed": [],
                                           "already_present": ["tinypkg==2.0", "otherpkg"],
                                           "failed": []}
            assert (await s.run("deps.sync()")).value["already_present"] == ["tinypkg==2.0"]
        scrub(session_venv)
        async with subprocess_session() as s:      # without sync on start: nothing installed
            assert "ModuleNotFoundError" in (await s.run("import tinypkg")).error
            r = await s.sync_deps()
            assert r["installed"] == ["tinypkg==2.0"]
            assert (await s.run("import tinypkg; tinypkg.VERSION")).value == "2.0"
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "requirements.txt").write_text("nosuchpkg==1.0\n")
        s = subprocess_session("bad", sync_deps_on_start=True)
        with pytest.raises(RuntimeError, match="nosuchpkg==1.0"):
            await s.start()
    arun(go())
