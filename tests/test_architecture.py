"""The packages keep to docs/ARCHITECTURE.md: which may import which (the
import-linter contracts in pyproject.toml), and no module imports another
package's underscore names."""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "torpor"


def _module_name(path):
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module, is_package):
    """torpor.engine.fallback -> torpor.engine; top-level modules -> torpor."""
    parts = module.split(".")
    if is_package:
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) > 2 else "torpor"


def _imports(path):
    """(imported module, imported name or None) for every import in ``path``."""
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                yield target, a.name


def _violations():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        own = _package_of(module, path.name == "__init__.py")
        for target, name in _imports(path):
            if not target or not target.startswith("torpor"):
                continue
            full = f"{target}.{name}" if name else target
            parts = full.split(".")
            is_pkg_target = (SRC.parent / pathlib.Path(*target.split("."))).is_dir()
            other = _package_of(target, is_pkg_target)
            if other == own:
                continue
            private = [p for p in parts[1:] if p.startswith("_") and not p.startswith("__")]
            if private:
                found.append(f"{module} imports {full}")
    return found


def test_no_module_imports_another_packages_underscore_names():
    assert _violations() == []


def test_the_underscore_check_can_fail(tmp_path, monkeypatch):
    """The checker itself sees a forbidden import (guards against a vacuous pass)."""
    fake = tmp_path / "torpor"
    (fake / "session").mkdir(parents=True)
    (fake / "engine").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "engine" / "__init__.py").write_text("")
    (fake / "engine" / "pipeline.py").write_text("def _private(): pass\n")
    (fake / "session" / "__init__.py").write_text("")
    (fake / "session" / "files.py").write_text("from ..engine.pipeline import _private\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert _violations() == ["torpor.session.files imports torpor.engine.pipeline._private"]


def test_import_contracts_hold():
    """import-linter checks the layers of docs/ARCHITECTURE.md against the code
    as installed (contracts: pyproject.toml, [tool.importlinter])."""
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency (pip install .[test])"
    r = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.lower() or "0 broken" in r.stdout.lower()


@pytest.mark.parametrize("forbidden", [
    "from torpor import api",                 # format may not import the public face
    "from torpor.engine import pipeline",     # ... nor the engine above it
])
def test_import_contracts_can_fail(tmp_path, forbidden):
    """A copy of the package with one forbidden import breaks a contract."""
    exe = shutil.which("lint-imports")
    assert exe
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy / "torpor", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    target = copy / "torpor" / "format" / "dtypes.py"
    target.write_text(forbidden + "\n" + target.read_text())
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], capture_output=True,
                       text=True, cwd=tmp_path, env=env)
    assert r.returncode != 0, r.stdout
    assert "torpor.format.dtypes" in r.stdout


def test_docs_safety_lists_the_whole_allow_list():
    """docs/SAFETY.md names every entry of the default allow-list (numpy's scalar
    and dtype classes as a group)."""
    from torpor.engine.allowlist import SAFE
    text = (ROOT / "docs" / "SAFETY.md").read_text()
    missing = [n for n in SAFE if not n.startswith("numpy.") and f"`{n}`" not in text]
    assert missing == []
    assert "`numpy.dtype`" in text
