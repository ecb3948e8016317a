"""The library through the Session as a whole (both walkers): an executor's
own ``tools_path`` and ``workflows_path``, SyncSession's library methods, and
the injected objects surviving ``reset`` and staying out of checkpoints."""

import asyncio
import sys

import pytest

from torpor.workspace import (FileStorage, InProcessConfig, InProcessExecutor, Session,
                              SubprocessConfig, SubprocessExecutor, SyncSession)

pytestmark = pytest.mark.usefixtures("impl")

ECHO = f"""\
name: pyecho
description: Print the arguments it is given, one per line
command: [{sys.executable!r}, -c, "import sys; print(*sys.argv[1:], sep='\\\\n')"]
schema:
  positional:
    - {{name: words, type: array, required: true}}
"""


@pytest.fixture(scope="module")
def venv_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("library-venv") / "venv"


def test_a_tools_path_replaces_the_storages_tools(tmp_path, venv_dir):
    folder = tmp_path / "my-tools"
    folder.mkdir()
    (folder / "pyecho.yaml").write_text(ECHO)
    storage = FileStorage(tmp_path / "ws")
    (tmp_path / "ws" / "tools").mkdir()
    (tmp_path / "ws" / "tools" / "other.yaml").write_text(ECHO.replace("pyecho", "other"))

    async def go():
        ex = SubprocessExecutor(SubprocessConfig(venv_path=venv_dir, tools_path=folder))
        async with Session(storage, ex) as s:
            assert [t["name"] for t in await s.list_tools()] == ["pyecho"]
            assert (await s.search_tools("print arguments"))[0]["name"] == "pyecho"
            r = await s.run("tools.pyecho(words=['a', 'b c']).splitlines()")
            assert r.error is None and r.value == ["a", "b c"]
            r = await s.run("tools.other(words=['x'])")
            assert "AttributeError" in r.error or "no tool" in r.error.lower()
        async with Session(storage, InProcessExecutor()) as s:        # the storage's own
            assert [t["name"] for t in await s.list_tools()] == ["other"]
    asyncio.run(go())


def test_syncsession_has_the_library(tmp_path):
    (tmp_path / "ws" / "tools").mkdir(parents=True)
    (tmp_path / "ws" / "tools" / "pyecho.yaml").write_text(ECHO)
    with SyncSession(FileStorage(tmp_path / "ws")) as s:
        info = s.add_workflow("shout", "def run(w):\n    return tools.pyecho(words=[w]).upper()\n",
                              "Upper-case echo")
        assert info["version"] == 1
        assert [w["name"] for w in s.list_workflows()] == ["shout"]
        assert s.get_workflow("shout")["description"] == "Upper-case echo"
        assert s.search_workflows("upper case")[0]["name"] == "shout"
        assert [t["name"] for t in s.list_tools()] == ["pyecho"]
        assert s.search_tools("print the arguments")[0]["name"] == "pyecho"
        assert s.run("workflows.shout('hi')").value == "HI\n"
        assert s.remove_workflow("shout") is True
        assert isinstance(s.list_deps(), list)


def test_reset_keeps_the_injected_objects(tmp_path):
    async def go():
        ex = InProcessExecutor(InProcessConfig())
        async with Session(FileStorage(tmp_path / "ws"), ex, checkpoint="auto") as s:
            await s.run("x = 1")
            await s.reset()
            r = await s.run("[type(o).__name__ for o in (artifacts, workflows, tools, deps)]")
            assert r.value == ["Artifacts", "WorkflowsNamespace", "ToolsNamespace",
                               "DepsNamespace"]
            cp = await s.checkpoint("c")
            assert not {"artifacts", "workflows", "tools", "deps"} & set(cp["variables"])
    asyncio.run(go())


def test_only_an_installing_inprocess_executor_says_it_installs(tmp_path):
    plain = InProcessExecutor()
    assert plain.deps_installer() is None
    assert not {"deps_install", "deps_uninstall"} & plain.supported_capabilities()
    installing = InProcessExecutor(InProcessConfig(install_deps=True))
    assert {"deps_install", "deps_uninstall"} <= installing.supported_capabilities()
    assert installing.deps_installer().python == sys.executable
    with pytest.raises(TypeError, match="install_deps must be True or False"):
        InProcessConfig(install_deps="yes")


def test_allow_runtime_deps_reaches_the_code(tmp_path, venv_dir):
    async def go():
        for ex in (InProcessExecutor(),
                   SubprocessExecutor(SubprocessConfig(venv_path=venv_dir))):
            async with Session(FileStorage(tmp_path / "ws"), ex,
                               allow_runtime_deps=False) as s:
                r = await s.run("deps.add('iniconfig')")
                assert "RuntimeDepsDisabledError" in r.error, r.error
                r = await s.run("deps.list()")
                assert r.error is None and r.value == []
    asyncio.run(go())


def test_library_calls_before_start_and_config_paths(tmp_path, venv_dir):
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "triple.py").write_text("def run(x):\n    return 3 * x\n")
    ex = SubprocessExecutor(SubprocessConfig(venv_path=venv_dir, workflows_path=folder))
    s = Session(FileStorage(tmp_path / "ws"), ex, extra_deps=("iniconfig>=1", "Tomli"))

    async def go():
        # not started: the listing comes from the storage and the executor's folder
        assert [w["name"] for w in await s.list_workflows()] == ["triple"]
        (tmp_path / "ws" / "requirements.txt").write_text("iniconfig\n")
        assert await s.list_deps() == ["iniconfig", "Tomli"]      # one entry per package
    asyncio.run(go())
    with pytest.raises(ValueError, match="a local folder, not a URL"):
        SubprocessConfig(tools_path="s3://bucket/tools")
    assert SubprocessConfig(tools_path="rel/tools").tools_path.is_absolute()


def test_tool_search_blends_the_configured_embedder(tmp_path, monkeypatch):
    """As workflows': TORPOR_EMBEDDING_MODEL's embedder (sentence-transformers is
    not installed here; this one maps texts to fixed vectors) is blended in."""
    import numpy as np
    from torpor.workspace.library import search

    class Fixed:
        def encode(self, sentences):
            return np.array([[1.0, 0.0] if ("sort" in t or "order" in t) else [0.0, 1.0]
                             for t in sentences])

    (tmp_path / "ws" / "tools").mkdir(parents=True)
    for name, text in (("count", "Count the lines of files"), ("sort", "Sort lines of files")):
        (tmp_path / "ws" / "tools" / f"{name}.yaml").write_text(
            f"name: {name}\ndescription: {text}\ncommand: /bin/true\n")
    tools = FileStorage(tmp_path / "ws").tools
    assert tools.search("lines in order")[0]["name"] == "count"     # BM25 alone: a tie, by name
    monkeypatch.setenv(search.EMBEDDING_MODEL_ENV, "/models/fixed")
    monkeypatch.setitem(search._DEFAULT, "/models/fixed", Fixed())
    assert tools.search("lines in order")[0]["name"] == "sort"


def test_a_worker_never_installs_into_the_host_environment(tmp_path):
    ex = SubprocessExecutor(SubprocessConfig(venv_path=sys.prefix))

    async def go():
        async with Session(FileStorage(tmp_path / "ws"), ex) as s:
            with pytest.raises(RuntimeError, match="the environment this process runs in"):
                await s.add_dep("iniconfig")
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests run outside a virtual environment: no venv_path to reuse")
    asyncio.run(go())
