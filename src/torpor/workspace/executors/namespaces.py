"""The objects every executor puts in the code's namespace (``artifacts``: the
storage's artifacts, with their whole API), and clearing the user's variables
around them (``reset``)."""

from __future__ import annotations

from typing import Any

from .base import INJECTED, NAMESPACE_MODULE

#: Names of the module machinery, kept by ``clear``.
_KEEP = ("__name__", "__builtins__", "__doc__", "__spec__", "__loader__", "__package__")


def inject(namespace: dict[str, Any], storage: Any) -> None:
    """Put the workspace's objects in ``namespace``."""
    namespace["__name__"] = NAMESPACE_MODULE
    namespace["artifacts"] = storage.artifacts


def clear(namespace: dict[str, Any]) -> None:
    """Remove every user variable from ``namespace``, keeping the injected
    objects and the module's own names."""
    for k in [k for k in namespace if k not in _KEEP and k not in INJECTED]:
        del namespace[k]
