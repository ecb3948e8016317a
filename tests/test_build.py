import pathlib
import shutil
import subprocess
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_cibuildwheel_configuration_parses():
    exe = shutil.which("cibuildwheel")
    assert exe, "cibuildwheel is a test dependency (pip install .[test])"
    r = subprocess.run([exe, "--print-build-identifiers", "--platform", "linux", str(ROOT)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    for v in ("cp310", "cp311", "cp312", "cp313", "cp314"):
        assert any(i.startswith(f"{v}-manylinux") for i in ids), (v, ids)
        assert any(i.startswith(f"{v}-musllinux") for i in ids), (v, ids)


def test_sdist_carries_ext_and_no_generated_c(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--help"], capture_output=True)
    assert r.returncode == 0
    r = subprocess.run([sys.executable, "-c",
                        "import setuptools.build_meta as b, sys; print(b.build_sdist(sys.argv[1]))",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    sdist = tmp_path / r.stdout.strip().splitlines()[-1]
    names = tarfile.open(sdist).getnames()
    assert any(n.endswith("_ext/_walker.pyx") for n in names)
    assert any(n.endswith("_ext/_filters.pyx") for n in names)
    assert any(n.endswith("_ext/_iohints.pyx") for n in names)
    assert not any(n.endswith(".c") for n in names)


def test_no_generated_c_committed():
    r = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT)
    if r.returncode == 0:
        assert not [f for f in r.stdout.split() if f.endswith((".c", ".so", ".html"))]
