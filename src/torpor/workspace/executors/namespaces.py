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
           allow_runtime_deps: bool = True) -> None:
    """Put the workspace's objects in ``namespace``. ``installer``: where
    ``deps.add`` installs (None: this executor does not install);
    ``allow_runtime_deps=False``: ``deps.add`` / ``deps.remove`` refuse."""
    from ..library.deps import DepsNamespace
    from ..library.tools import ToolsNamespace
    from ..library.workflows import WorkflowsNamespace
    namespace["__name__"] = NAMESPACE_MODULE
    namespace["artifacts"] = storage.artifacts
    namespace["workflows"] = WorkflowsNamespace(storage.workflows, namespace)
    namespace["tools"] = ToolsNamespace(storage.tools)
    namespace["deps"] = DepsNamespace(storage.deps, installer,
                                      allow_runtime=allow_runtime_deps)


def clear(namespace: dict[str, Any]) -> None:
    """Remove every user variable from ``namespace``, keeping the injected
    objects and the module's own names."""
    for k in [k for k in namespace if k not in _KEEP and k not in INJECTED]:
        del namespace[k]
