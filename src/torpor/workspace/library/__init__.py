"""The workspace's library: what a Session offers its code besides artifacts.

- ``workflows.py``: saved Python workflows (``async def run(...)``), versioned
  in the storage, called from code as ``workflows.NAME(**kwargs)``;
- ``tools.py``: command-line tools described in YAML (``{root}/tools/``),
  called from code as ``tools.NAME(**kwargs)`` / ``tools.NAME.RECIPE(...)``,
  run without a shell;
- ``deps.py``: the workspace's dependencies (``{root}/requirements.txt``),
  installed into a subprocess executor's own environment;
- ``search.py``: BM25 ranking of workflows and tools (optionally blended with
  a local embedding model).

Every storage (FileStorage, RedisStorage) reaches them as ``storage.workflows``,
``storage.tools`` and ``storage.deps`` (areas.py); executors inject their
namespace objects into the code's namespace (executors/namespaces.py).
"""
