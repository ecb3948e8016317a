"""The objects every executor puts in the code's namespace, and clearing the
user's variables around them (``reset``):

- ``artifacts``: the storage's artifacts, with their whole API;
- ``workflows``: the saved workflows, ``workflows.NAME(**kwargs)`` runs one in
  this namespace (library/workflows.py);
- ``tools``: the YAML tools, ``tools.NAME(**kwargs)`` (library/tools.py);
- ``deps``: the workspace's dependencies, ``deps.add("pkg>=1")`` where the
  executor can install and runtime changes are allowed (library/deps.py)."""

from __future__ import annotations

from typing import Any

from .base import INJECTED, NAMESPACE_MODULE

#: Names of the module machinery, kept by ``clear``.
_KEEP = ("__name__", "__builtins__", "__doc__", "__spec__", "__loader__", "__package__")


def inject(namespace: dict[str, Any], storage: Any, *, installer: Any = None,
           allow_runtime_deps: bool = True, tools: Any = None, workflows: Any = None) -> None:
    """Put the workspace's objects in ``namespace``. ``installer``: where
    ``deps.add`` installs (None: this executor does not install);
    ``allow_runtime_deps=False``: ``deps.add`` / ``deps.remove`` refuse;
    ``tools`` / ``workflows``: libraries to use instead of the storage's (an
    executor's ``tools_path`` / ``workflows_path``)."""
    from ..library.deps import DepsNamespace
    from ..library.tools import ToolsNamespace
    from ..library.workflows import WorkflowsNamespace
    namespace["__name__"] = NAMESPACE_MODULE
    namespace["artifacts"] = storage.artifacts
    namespace["workflows"] = WorkflowsNamespace(
        workflows if workflows is not None else storage.workflows, namespace)
    namespace["tools"] = ToolsNamespace(tools if tools is not None else storage.tools)
    namespace["deps"] = DepsNamespace(storage.deps, installer,
                                      allow_runtime=allow_runtime_deps)


def clear(namespace: dict[str, Any]) -> None:
    """Remove every user variable from ``namespace``, keeping the injected
    objects and the module's own names."""
    for k in [k for k in namespace if k not in _KEEP and k not in INJECTED]:
        del namespace[k]


def library_override(kind: str, storage: Any, tools_path: Any = None,
                     workflows_path: Any = None) -> Any:
    """The ``tools`` or ``workflows`` library of an executor configured with
    py-code-mode's ``tools_path`` (YAML tools from that folder instead of the
    storage's) or ``workflows_path`` (loose ``NAME.py`` workflows from that
    folder; saved workflows stay in the storage); None: the storage's."""
    if kind == "tools" and tools_path is not None:
        from ..library.tools import Tools
        return Tools.from_folder(str(tools_path))
    if kind == "workflows" and workflows_path is not None:
        from ..library.workflows import Workflows
        return Workflows(storage.workflows.area, folder=str(workflows_path))
    return None
