"""Saved workflows (library/workflows.py), on both walkers: checking a source
without running it, names, versions, loose ``.py`` files, every storage kind,
and running them from code in every executor (in process on its thread and
inline, and in a worker process)."""

import asyncio
import os
import textwrap

import numpy as np
import pytest

from torpor.workspace import (FileStorage, InProcessConfig, InProcessExecutor, Session,
                              SubprocessConfig, SubprocessExecutor)
from torpor.workspace.library.workflows import (RESERVED, WorkflowError, check_workflow_name,
                                                inspect_source)

pytestmark = pytest.mark.usefixtures("impl")


def arun(coro):
    return asyncio.run(coro)


DOUBLE = textwrap.dedent('''
    def run(x: int, k: int = 2) -> int:
        """Multiply x by k."""
        return x * k
''')

ASYNC_SUM = textwrap.dedent('''
    import asyncio

    async def run(values: list, *, delay: float = 0.0):
        await asyncio.sleep(delay)
        return sum(values)
''')


# --- checking a source without running it ---------------------------------------------

def test_parameters_come_from_the_signature():
    facts = inspect_source(textwrap.dedent('''
        """Module doc."""
        def run(a, /, b: int, c: "list[str]" = ("x",), *rest, d: float = 1.5, e, **more):
            pass
    '''))
    assert facts["is_async"] is False
    assert facts["docstring"] == "Module doc."
    assert facts["parameters"] == [
        {"name": "a", "annotation": None, "default": None, "required": True,
         "kind": "positional_only"},
        {"name": "b", "annotation": "int", "default": None, "required": True,
         "kind": "positional_or_keyword"},
        {"name": "c", "annotation": "'list[str]'", "default": "('x',)", "required": False,
         "kind": "positional_or_keyword"},
        {"name": "rest", "annotation": None, "default": None, "required": False,
         "kind": "var_positional"},
        {"name": "d", "annotation": "float", "default": "1.5", "required": False,
         "kind": "keyword_only"},
        {"name": "e", "annotation": None, "default": None, "required": True,
         "kind": "keyword_only"},
        {"name": "more", "annotation": None, "default": None, "required": False,
         "kind": "var_keyword"},
    ]


def test_async_run_and_its_docstring_win():
    facts = inspect_source('"""module"""\nasync def run():\n    """the run."""\n')
    assert facts["is_async"] is True and facts["docstring"] == "the run."
    # the last definition of run is the one that counts
    facts = inspect_source("def run(a):\n    pass\nasync def run(b):\n    pass\n")
    assert facts["is_async"] and [p["name"] for p in facts["parameters"]] == ["b"]


@pytest.mark.parametrize("source, words", [
    ("def run(:\n", "line 1"),
    ("x = 1\n\ndef run(\n", "line 3"),
    ("return 5\ndef run(): pass\n", "'return' outside function"),
    ("x = 1\n", "defines no top-level run"),
    ("class A:\n    def run(self): pass\n", "defines no top-level run"),
    ("run = lambda: 1\n", "defines no top-level run"),
    ("def run():\n    pass\x00\n", "does not compile"),
])
def test_bad_sources_are_refused_with_the_reason(source, words):
    with pytest.raises(WorkflowError, match="'w'") as e:
        inspect_source(source, "w")
    assert words in str(e.value)


def test_a_source_is_never_run_when_saved(tmp_path):
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\ndef run():\n    pass\n"
    storage = FileStorage(tmp_path / "ws")
    info = storage.workflows.add("quiet", source)
    assert info["version"] == 1 and not marker.exists()
    assert storage.workflows.get("quiet")["source"] == source


def test_sources_that_are_not_str_or_too_big(tmp_path):
    w = FileStorage(tmp_path / "ws").workflows
    with pytest.raises(TypeError, match="bytes"):
        w.add("x", b"def run(): pass")
    with pytest.raises(WorkflowError, match="over 1 MiB"):
        w.add("x", "def run(): pass\n" + "#" * (1 << 20))
    with pytest.raises(TypeError, match="description"):
        w.add("x", DOUBLE, description=3)
    assert w.list() == []


@pytest.mark.parametrize("name", ["2x", "my-flow", "with space", "", "class", "_hidden",
                                  "ünï", *sorted(RESERVED)])
def test_names_that_cannot_be_workflows(name):
    with pytest.raises(WorkflowError):
        check_workflow_name(name)


def test_a_name_must_be_a_str():
    with pytest.raises(TypeError, match="int"):
        check_workflow_name(3)


# --- storing them --------------------------------------------------------------------

def test_add_get_list_remove_and_versions(make_storage):
    storage = make_storage()
    w = storage.workflows
    assert w.list() == [] and w.get("double") is None and w.remove("double") is False
    first = w.add("double", DOUBLE)
    assert first["description"] == "Multiply x by k."            # from the docstring
    assert first["version"] == 1 and "source" not in first
    second = w.add("double", DOUBLE.replace("x * k", "k * x"), description="k times x")
    assert second["version"] == 2
    w.add("asum", ASYNC_SUM, "Sum of values")
    listed = w.list()
    assert [i["name"] for i in listed] == ["asum", "double"]
    assert all("source" not in i for i in listed)
    assert listed[1]["description"] == "k times x"
    assert [p["name"] for p in listed[1]["parameters"]] == ["x", "k"]
    assert listed[0]["is_async"] is True
    got = w.get("double")
    assert got["source"] == DOUBLE.replace("x * k", "k * x") and got["version"] == 2
    old = w.get("double", version=1)
    assert old["source"] == DOUBLE and old["description"] == "Multiply x by k."
    assert [v["version"] for v in w.versions("double")] == [1, 2]
    # another process's view of the same storage sees the same
    again = make_storage().workflows
    assert again.get("double")["source"] == got["source"]
    assert w.remove("double") is True
    assert w.get("double") is None and w.remove("double") is False
    assert [i["name"] for i in again.list()] == ["asum"]


def test_keep_versions_applies_to_workflows(tmp_path):
    w = FileStorage(tmp_path / "ws", keep_versions=1).workflows
    for k in range(4):
        w.add("f", f"def run():\n    return {k}\n")
    assert [v["version"] for v in w.versions("f")] == [3, 4]


def test_a_failed_save_keeps_the_previous_version(tmp_path):
    w = FileStorage(tmp_path / "ws").workflows
    w.add("f", DOUBLE)
    with pytest.raises(WorkflowError):
        w.add("f", "def run(:\n")
    assert w.get("f")["source"] == DOUBLE and w.get("f")["version"] == 1


def test_loose_files_in_the_workflows_folder(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    folder = tmp_path / "ws" / "workflows"
    folder.mkdir()
    (folder / "triple.py").write_text('def run(x):\n    """Three times x."""\n    return 3 * x\n')
    (folder / "broken.py").write_text("def run(:\n")
    (folder / "_private.py").write_text("def run(): pass\n")
    (folder / "notes.txt").write_text("not a workflow")
    with pytest.warns(UserWarning, match="broken.py"):
        listed = storage.workflows.list()
    assert [i["name"] for i in listed] == ["triple"]
    assert listed[0]["description"] == "Three times x." and listed[0]["version"] is None
    assert storage.workflows.get("triple")["source"].startswith("def run(x)")
    # a saved workflow of the same name takes precedence over the file
    storage.workflows.add("triple", "def run(x):\n    return -x\n", "negated")
    assert storage.workflows.get("triple")["description"] == "negated"
    assert storage.workflows.remove("triple") is True
    assert not (folder / "triple.py").exists() and storage.workflows.get("triple") is None


# --- running them from code, in every executor ---------------------------------------------

@pytest.fixture(scope="module")
def venv_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("workflows-venv") / "venv"


@pytest.fixture(params=["thread", "inline", "subprocess"])
def executor_kind(request):
    return request.param


@pytest.fixture
def make_session(tmp_path, executor_kind, venv_dir):
    def make(storage=None, **kw):
        storage = storage or FileStorage(tmp_path / "ws")
        if executor_kind == "subprocess":
            ex = SubprocessExecutor(SubprocessConfig(venv_path=venv_dir, grace=0.5))
        else:
            ex = InProcessExecutor(InProcessConfig(inline=executor_kind == "inline"))
        return Session(storage, ex, **kw)
    return make


def test_code_calls_workflows(make_session):
    async def go():
        async with make_session() as s:
            await s.add_workflow("double", DOUBLE, "")
            await s.add_workflow("asum", ASYNC_SUM, "Sum")
            r = await s.run("workflows.double(21), workflows.double(x=2, k=5), "
                            "workflows.asum([1, 2, 3], delay=0.001)")
            assert r.error is None and r.value == (42, 10, 6)
            r = await s.run("await workflows.invoke('asum', [4, 5]) + "
                            "await workflows.invoke('double', x=1)")
            assert r.error is None and r.value == 11
            # an async workflow called without await from code that awaits
            r = await s.run("import asyncio\nawait asyncio.sleep(0)\nworkflows.asum([2, 2])")
            assert r.error is None and r.value == 4
    arun(go())


def test_workflows_see_the_workspace_and_keep_their_names_to_themselves(make_session):
    saver = textwrap.dedent('''
        import numpy as np

        HELPER = "module level of the workflow"

        def run(name, n):
            artifacts.save(name, np.arange(n))
            return workflows.double(n)
    ''')

    async def go():
        async with make_session() as s:
            await s.add_workflow("double", DOUBLE, "")
            await s.add_workflow("saver", saver, "Save a range")
            r = await s.run("workflows.saver('r', 4)")
            assert r.error is None and r.value == 8
            np.testing.assert_array_equal(await s.load_artifact("r"), np.arange(4))
            r = await s.run("'HELPER' in dir(), 'np' in dir(), 'run' in dir()")
            assert r.value == (False, False, False)
    arun(go())


def test_errors_name_the_workflow_and_its_parameters(make_session):
    failing = "def run(x):\n    y = x + 1\n    raise ValueError(f'bad {y}')\n"

    async def go():
        async with make_session() as s:
            await s.add_workflow("double", DOUBLE, "")
            await s.add_workflow("failing", failing, "")
            r = await s.run("workflows.double(y=1)")
            assert "TypeError" in r.error and "double(x: int, k: int = 2)" in r.error
            r = await s.run("workflows.failing(1)")
            assert "ValueError: bad 2" in r.error
            assert "raise ValueError(f'bad {y}')" in r.error     # the workflow's own line
            r = await s.run("workflows.nothing_here()")
            assert "AttributeError" in r.error and "double, failing" in r.error
            r = await s.run("sorted(n for n in dir(workflows) if not n.startswith('_'))")
            assert {"double", "failing", "list", "invoke"} <= set(r.value)
    arun(go())


def test_code_manages_workflows_and_a_new_version_is_picked_up(make_session):
    async def go():
        async with make_session() as s:
            r = await s.run("workflows.add('inc', 'def run(x):\\n    return x + 1\\n', 'plus one')"
                            "['version'], workflows.inc(1)")
            assert r.error is None and r.value == (1, 2)
            await s.add_workflow("inc", "def run(x):\n    return x + 100\n", "plus a hundred")
            r = await s.run("workflows.inc(1), [w['name'] for w in workflows.list()], "
                            "workflows.get('inc')['description']")
            assert r.value == (101, ["inc"], "plus a hundred")
            r = await s.run("workflows.remove('inc'), workflows.remove('inc')")
            assert r.value == (True, False)
            assert await s.get_workflow("inc") is None
            r = await s.run("workflows.add('list', 'def run(): pass')")
            assert "WorkflowError" in r.error and "shadow" in r.error
    arun(go())


def test_a_timeout_stops_a_workflow(make_session):
    spin = "def run():\n    while True:\n        pass\n"

    async def go():
        async with make_session() as s:
            await s.add_workflow("spin", spin, "")
            r = await s.run("workflows.spin()", timeout=0.5)
            assert r.timed_out and "TimeoutError" in r.error
            r = await s.run("1 + 1")
            assert r.value == 2
    arun(go())


def test_a_handle_on_a_workflow_is_left_out_of_checkpoints(make_session):
    async def go():
        async with make_session(checkpoint="auto") as s:
            await s.add_workflow("double", DOUBLE, "")
            r = await s.run("w = workflows.double\nkept = w(4)")
            assert r.error is None
            assert any("leaves out w" in n and "workflows.double" in n for n in r.notes)
            cp = await s.checkpoint("c")
            assert "kept" in cp["variables"] and "w" in cp["skipped"]
    arun(go())


def test_the_session_api(make_session):
    async def go():
        async with make_session() as s:
            info = await s.add_workflow("double", DOUBLE, "Multiply")
            assert info["name"] == "double" and info["description"] == "Multiply"
            assert [w["name"] for w in await s.list_workflows()] == ["double"]
            assert (await s.get_workflow("double"))["source"] == DOUBLE
            with pytest.raises(WorkflowError, match="does not compile"):
                await s.add_workflow("bad", "def run(:", "")
            assert await s.remove_workflow("double") is True
            assert await s.remove_workflow("double") is False
    arun(go())


def test_search_finds_workflows_by_what_they_do(make_session):
    async def go():
        async with make_session() as s:
            await s.add_workflow("fetch_json", "def run(url, timeout=10):\n    pass\n",
                                 "Download a URL and parse the JSON it returns")
            await s.add_workflow("plot_histogram", "def run(values, bins=50):\n    pass\n",
                                 "Draw a histogram of values and save it as a PNG image")
            await s.add_workflow("double", DOUBLE, "")
            found = await s.search_workflows("multiplying a number")
            assert found[0]["name"] == "double" and found[0]["score"] > 0
            found = await s.search_workflows("json from a web url", limit=1)
            assert [w["name"] for w in found] == ["fetch_json"] and "source" not in found[0]
            r = await s.run("[w['name'] for w in workflows.search('histogram bins')]")
            assert r.value[0] == "plot_histogram"
            assert await s.search_workflows("zebra quantum") == []
            await s.remove_workflow("plot_histogram")          # the index follows changes
            r = await s.run("[w['name'] for w in workflows.search('histogram bins')]")
            assert r.value == []
    arun(go())


def test_workflows_on_redis_run_in_a_worker(redis_storage_factory, tmp_path, venv_dir):
    storage = redis_storage_factory()

    async def go():
        ex = SubprocessExecutor(SubprocessConfig(venv_path=venv_dir))
        async with Session(storage, ex) as s:
            await s.add_workflow("double", DOUBLE, "")
            r = await s.run("workflows.double(7)")
            assert r.error is None and r.value == 14
    arun(go())
    assert storage.workflows.get("double")["source"] == DOUBLE
    assert not os.path.exists(tmp_path / "ws")


def test_a_workflows_path_adds_its_loose_files(tmp_path, venv_dir):
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "triple.py").write_text('def run(x):\n    """Three times x."""\n    return 3 * x\n')
    storage = FileStorage(tmp_path / "ws")

    async def go():
        ex = SubprocessExecutor(SubprocessConfig(venv_path=venv_dir, workflows_path=folder))
        async with Session(storage, ex) as s:
            await s.add_workflow("double", DOUBLE, "")
            assert [w["name"] for w in await s.list_workflows()] == ["double", "triple"]
            r = await s.run("workflows.triple(2) + workflows.double(1)")
            assert r.error is None and r.value == 8
    arun(go())
    # the folder is the executor's: the storage alone does not see it
    assert [w["name"] for w in storage.workflows.list()] == ["double"]


def test_review_edge_cases(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    w = storage.workflows
    w.add("f", DOUBLE)
    assert w.get("f", version=99) is None and w.get("g", version=1) is None
    with pytest.raises(WorkflowError, match="the limit is 200"):
        w.add("a" * 300, DOUBLE)
    with pytest.raises(WorkflowError, match="nested too deeply"):
        w.add("deep", "x = " + "-" * 200_000 + "1\ndef run(): pass\n")
    folder = tmp_path / "ws" / "workflows"
    (folder / "loose.py").write_text("def run():\n    return 1\n")
    (folder / "not-a-name.py").write_text("def run(): pass\n")
    assert [i["name"] for i in w.list()] == ["f", "loose"]
    ns = {}
    from torpor.workspace.library.workflows import WorkflowsNamespace
    flows = WorkflowsNamespace(w, ns)
    handle = flows.loose
    (folder / "loose.py").write_text("def run(:\n")
    assert "unusable" in repr(handle) and "does not compile" in repr(handle)
    assert not hasattr(flows, "a" * 300)
    assert flows.f(3) == 6


def test_a_timed_out_async_workflow_leaves_no_thread(make_session, executor_kind):
    busy = "async def run():\n    while True:\n        pass\n"

    async def go():
        async with make_session() as s:
            await s.add_workflow("busy", busy, "")
            # top-level await: the sync call runs the coroutine on a helper thread
            r = await s.run("import asyncio\nawait asyncio.sleep(0)\nworkflows.busy()",
                            timeout=0.5)
            assert r.timed_out, r.error
            r = await s.run("import threading, time\n"
                            "deadline = time.monotonic() + 10\n"
                            "while any(t.name == 'torpor-workflow' for t in threading.enumerate())"
                            " and time.monotonic() < deadline:\n"
                            "    time.sleep(0.01)\n"
                            "[t.name for t in threading.enumerate() if t.name == 'torpor-workflow']")
            assert r.error is None and r.value == []
    arun(go())


def test_search_blends_the_configured_embedder(tmp_path, monkeypatch):
    """TORPOR_EMBEDDING_MODEL's embedder (sentence-transformers is not installed
    here; this one maps texts to fixed vectors) is blended with BM25."""
    from torpor.workspace.library import search

    class Fixed:
        calls = 0

        def encode(self, sentences):
            Fixed.calls += 1
            # the query and "resample" point the same way; "average" elsewhere
            return np.array([[1.0, 0.0] if ("resample" in t or "mean" in t) else [0.0, 1.0]
                             for t in sentences])

    w = FileStorage(tmp_path / "ws").workflows
    w.add("average", "def run(values):\n    pass\n", "Average of the values")
    w.add("resample", "def run(values, rate):\n    pass\n", "Change the sampling rate of values")
    assert w.search("values mean")[0]["name"] == "average"          # BM25 alone
    monkeypatch.setenv(search.EMBEDDING_MODEL_ENV, "/models/fixed")
    monkeypatch.setitem(search._DEFAULT, "/models/fixed", Fixed())
    found = w.search("values mean")
    assert found[0]["name"] == "resample" and Fixed.calls >= 1
