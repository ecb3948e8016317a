"""Artifact names and workspace ids: what a storage accepts, checked before
anything touches a file or a key.

A name is parts joined by ``/`` (sub-folders); each part is made of
``a-z A-Z 0-9 _ - .``, is not ``.`` or ``..`` and is at most 128 bytes (so that a
backend's suffixes and temporary names still fit a file name), and the whole name
is at most 255 bytes. Backends add ``@`` to every key of their own (``report@info.json``,
``report@v3.torpor``): no name can contain it, so no name collides with a
backend's key, and no name can reach outside the workspace.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ..errors import InvalidNameError, brief

MAX_NAME_BYTES = 255
MAX_PART_BYTES = 128
_PART = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHAPE = ("names are parts of letters, digits, '_', '-' and '.', joined by '/' for "
          "sub-folders, at most 255 bytes and 128 per part (for example 'results/run-1.csv')")


def check_name(name: Any, what: str = "artifact name") -> str:
    """``name`` itself if it is a valid artifact name; InvalidNameError otherwise."""
    if not isinstance(name, str):
        raise InvalidNameError(f"an {what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError(f"an {what} cannot be empty; {_SHAPE}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidNameError(f"the {what} {brief(name)} is over {MAX_NAME_BYTES} bytes")
    if name.startswith("/"):
        raise InvalidNameError(f"the {what} {brief(name)} is an absolute path; {_SHAPE}")
    for part in name.split("/"):
        if not part:
            raise InvalidNameError(f"the {what} {brief(name)} has an empty part "
                                   f"(a doubled or trailing '/'); {_SHAPE}")
        if part in (".", ".."):
            raise InvalidNameError(f"the {what} {brief(name)} has a {part!r} part, which "
                                   f"could reach outside the workspace; {_SHAPE}")
        if len(part) > MAX_PART_BYTES:
            raise InvalidNameError(f"the {what} {brief(name)} has a part of {len(part)} "
                                   f"bytes, over {MAX_PART_BYTES}; {_SHAPE}")
        if not _PART.match(part):
            bad = sorted({c for c in part if not re.match(r"[A-Za-z0-9_.-]", c)})
            raise InvalidNameError(f"the {what} {brief(name)} contains {''.join(bad)!r}; "
                                   f"{_SHAPE}")
    return name


def check_workspace_id(workspace_id: Optional[str]) -> Optional[str]:
    """A workspace id is one name part (no ``/``), or None for the default one."""
    if workspace_id is None:
        return None
    check_name(workspace_id, "workspace id")
    if "/" in workspace_id:
        raise InvalidNameError(f"a workspace id is a single name without '/', not "
                               f"{brief(workspace_id)}")
    return workspace_id


def check_prefix(prefix: Optional[str]) -> str:
    """A name filter for ``list(prefix=...)``: '' or a valid name, maybe ending
    in '/' (a sub-folder)."""
    if prefix is None or prefix == "":
        return ""
    if isinstance(prefix, str) and prefix.endswith("/"):
        check_name(prefix[:-1], "prefix")
        return prefix
    return check_name(prefix, "prefix")
