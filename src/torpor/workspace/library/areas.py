"""``LibraryAreas``: what every workspace storage gains from the library: its
``workflows``, ``tools`` and ``deps``, each made on first use (a storage that
never runs a workflow reads no workflow folder)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .deps import Deps
    from .tools import Tools
    from .workflows import Workflows


class LibraryAreas:
    """Mixed into FileStorage and RedisStorage."""

    @functools.cached_property
    def workflows(self) -> "Workflows":
        """The saved workflows (workflows.py)."""
        from .workflows import Workflows
        return Workflows.for_storage(self)

    @functools.cached_property
    def tools(self) -> "Tools":
        """The YAML-described tools (tools.py)."""
        from .tools import Tools
        return Tools.for_storage(self)

    @functools.cached_property
    def deps(self) -> "Deps":
        """The configured dependencies (deps.py)."""
        from .deps import Deps
        return Deps.for_storage(self)
