"""FileStorage on a local folder (issue 12): the layout on disk, plain files other
tools can read, processes and threads saving at once, a save killed at any
moment, memory-mapped loads, and a large artifact streamed without a copy."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from torpor.workspace import FileStorage

def _files(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs]
    return sorted(out)


def test_layout_on_disk(tmp_path, impl):
    s = FileStorage(tmp_path, workspace_id="ws1")
    s.artifacts.save("results/run-1", np.ones(3))
    s.artifacts.save("notes.txt", "hello")
    files = _files(tmp_path / "ws1" / "artifacts")
    assert "results/run-1@info.json" in files and "notes.txt@info.json" in files
    data = [f for f in files if f.startswith("results/run-1@") and f.endswith(".torpor")]
    assert len(data) == 1
    rec = json.loads((tmp_path / "ws1" / "artifacts" / "results" / "run-1@info.json").read_text())
    assert rec["name"] == "results/run-1" and rec["versions"][0]["key"].endswith(data[0])
    assert not any(f.endswith(".torpor-tmp") for f in files)


def test_plain_artifacts_are_files_other_tools_read(tmp_path):
    s = FileStorage(tmp_path)
    t = s.artifacts.save("report.md", "# Report\nall good\n")
    b = s.artifacts.save("blob", bytes(range(256)))
    j = s.artifacts.save("cfg", {"a": [1, 2]}, format="json")
    assert open(t["path"], encoding="utf-8").read() == "# Report\nall good\n"
    assert open(b["path"], "rb").read() == bytes(range(256))
    assert json.load(open(j["path"])) == {"a": [1, 2]}
    assert t["path"].endswith(".txt") and b["path"].endswith(".bin") and j["path"].endswith(".json")


def test_torpor_artifacts_carry_their_info_in_the_header(tmp_path):
    import torpor
    s = FileStorage(tmp_path)
    info = s.artifacts.save("grid", np.zeros(5), "a grid", {"unit": "nm"})
    head = torpor.info(info["path"])["metadata"]["torpor_artifact"]
    assert head == {"name": "grid", "description": "a grid", "metadata": {"unit": "nm"},
                    "saved_at": info["updated_at"]}
    assert torpor.load(info["path"]).tolist() == [0.0] * 5       # a plain torpor file


def test_mmap_load_of_an_uncompressed_artifact(tmp_path, impl):
    s = FileStorage(tmp_path, compress=None)
    a = np.arange(1_000_000, dtype=np.float64)
    s.artifacts.save("big", {"a": a})
    out = s.artifacts.load("big", mmap=True)
    assert np.array_equal(out["a"], a)
    base = out["a"]
    while getattr(base, "base", None) is not None and not isinstance(base, __import__("mmap").mmap):
        base = base.base
    assert isinstance(base, __import__("mmap").mmap)
    # compressed artifacts load with mmap=True too (decompressed into memory)
    s.artifacts.save("small", np.ones(10), compress="lz4")
    assert s.artifacts.load("small", mmap=True).sum() == 10


_WORKER = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from torpor.workspace import FileStorage
    s = FileStorage(sys.argv[1])
    p = int(sys.argv[2])
    def work(t):
        for i in range(6):
            s.artifacts.save(f"p{p}/t{t}/a{i}", {"p": p, "t": t, "i": i, "x": np.full(1000, i)},
                             f"from {p}/{t}", {"p": p, "t": t, "i": i})
            s.artifacts.save("same", {"p": p, "t": t, "i": i})
    ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
""")


def test_two_processes_of_eight_threads_lose_nothing(tmp_path, walker_env):
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(p)],
                              env=walker_env) for p in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    s = FileStorage(tmp_path)
    listed = s.artifacts.list()
    assert len(listed) == 2 * 8 * 6 + 1
    for info in listed:
        if info["name"] == "same":
            continue
        p, t, i = (int(x[1:]) for x in info["name"].split("/"))
        assert info["metadata"] == {"p": p, "t": t, "i": i} and info["description"] == f"from {p}/{t}"
        out = s.artifacts.load(info["name"])
        assert out["p"] == p and out["t"] == t and out["i"] == i and out["x"].tolist() == [i] * 1000
    same = s.artifacts.versions("same")
    assert same[-1]["version"] == 2 * 8 * 6                  # every commit counted once
    assert set(s.artifacts.load("same")) == {"p", "t", "i"}
    assert not [f for f in _files(tmp_path) if f.endswith(".torpor-tmp")]


_KILLED = textwrap.dedent("""
    import sys
    import numpy as np
    from torpor.workspace import FileStorage
    s = FileStorage(sys.argv[1])
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        s.artifacts.save("victim", {"i": i, "a": np.full(2_000_000, i, dtype=np.int64)})
        s.artifacts.save("note", f"note {i}")
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45, 0.8])
def test_a_save_killed_at_any_moment_leaves_a_complete_version(tmp_path, walker_env, delay):
    s = FileStorage(tmp_path)
    s.artifacts.save("victim", {"i": 0, "a": np.zeros(2_000_000, dtype=np.int64)})
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path)],
                            env=walker_env, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for info in s.artifacts.list():                       # the listing agrees with the data
        out = s.artifacts.load(info["name"])
        if info["name"] == "victim":
            assert out["a"].tolist()[:3] == [out["i"]] * 3 and out["a"].shape == (2_000_000,)
            assert out["i"] == info["version"] - 1
        else:
            assert out == f"note {info['version']}"
    # the next save cleans up what the killed process left uncommitted
    s.artifacts.save("victim", {"i": -1, "a": np.zeros(1, dtype=np.int64)})
    s.artifacts.save("note", "after")
    kept = {os.path.basename(v["path"]) for n in ("victim", "note") for v in s.artifacts.versions(n)}
    data = {f.rsplit("/", 1)[-1] for f in _files(tmp_path / "artifacts")
            if "@" in f and not f.endswith(("@info.json", "@lock"))}
    leftovers = {f for f in data - kept if not f.startswith(".")}
    assert leftovers == set()


def test_a_foreign_file_in_the_folder_is_left_alone(tmp_path):
    s = FileStorage(tmp_path)
    (tmp_path / "artifacts" / "README").write_text("mine")
    (tmp_path / "artifacts" / "x@other-host.1.abc.bin").write_bytes(b"keep")
    s.artifacts.save("x", 1)
    s.artifacts.save("x", 2)
    assert (tmp_path / "artifacts" / "README").read_text() == "mine"
    assert (tmp_path / "artifacts" / "x@other-host.1.abc.bin").read_bytes() == b"keep"
    assert [i["name"] for i in s.artifacts.list()] == ["x"]


@pytest.mark.bigmem
def test_a_2gib_array_streams_without_a_second_copy(tmp_path, walker_env):
    code = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from torpor.workspace import FileStorage
        a = np.ones(2 << 30, dtype=np.uint8)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        FileStorage(sys.argv[1]).artifacts.save("big", a)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=walker_env,
                         capture_output=True, text=True, timeout=600, check=True)
    extra_mib = int(out.stdout.strip())
    assert extra_mib < 512, f"saving 2 GiB took {extra_mib} MiB beyond the array"
    s = FileStorage(tmp_path)
    assert s.artifacts.get("big")["size"] < 2 << 30


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_commit_that_fails_keeps_exactly_the_data_it_committed(tmp_path, when):
    """A connection lost after the record was written (the commit happened) must
    not delete the new data; one lost before it leaves no data behind."""
    s = FileStorage(tmp_path)
    s.artifacts.save("x", 1)
    backend = s.artifacts._b            # the test wraps the backend's commit on purpose
    real = backend.update_record

    def flaky(name, update):
        if when == "after":
            real(name, update)
        raise ConnectionError("lost the answer")
    backend.update_record = flaky
    with pytest.raises(ConnectionError):
        s.artifacts.save("x", 2)
    backend.update_record = real
    assert s.artifacts.load("x") == (2 if when == "after" else 1)
    data = [f for f in _files(tmp_path / "artifacts") if f.endswith(".torpor")]
    assert len(data) == (2 if when == "after" else 1)


def test_deleting_a_missing_name_leaves_no_trace(tmp_path):
    s = FileStorage(tmp_path)
    assert s.artifacts.delete("never/saved/here") is False
    assert _files(tmp_path) == [] and not (tmp_path / "artifacts" / "never").exists()
