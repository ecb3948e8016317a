"""``FileStorage``: a workspace in a local folder.

Layout (docs/WORKSPACE.md), under ``base_path`` (and ``workspace_id`` when given):

    artifacts/results/run-1@info.json          the record (records.py): the commit
    artifacts/results/run-1@<token>.torpor     one version's data (.bin .txt .json)
    artifacts/results/run-1@lock               serialises commits of that name
    checkpoints/<name>@info.json               a checkpoint (checkpoints.py): its record,
                                               whose metadata is the manifest
    checkpoints/<name>@<token>.bin             its graph (a module dump, as plain bytes)
    checkpoints/blobs/<digest>@<token>.torpor  one large array (raw, mappable) or bytes
                                               (.bin) that checkpoints refer to

Every file is written through torpor's atomic local writer (temporary file,
fsync, rename, fsync of the folder). A commit holds an ``flock`` on the
artifact's own lock file, so two processes (or threads) saving the same name
queue for the instant of the commit only; saves of different names never wait
for each other, and no file is shared by all artifacts.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, Union

from ..storage import LocalFileStore, Store
from .artifacts import Artifacts
from .checkpoints import Checkpoints
from .library.areas import LibraryAreas
from .names import check_workspace_id
from .objectstore import _FsspecBackend

_RECORD = "@info.json"
_LOCK = "@lock"


class _LocalBackend:
    store: Optional[Store] = None

    def __init__(self, root: str, label: str) -> None:
        self.root = root
        self.label = label
        self._files = LocalFileStore()

    def describe(self) -> str:
        return self.label

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def data_key(self, name: str, token: str, ext: str) -> str:
        path = self._path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return f"{path}@{token}{ext}"

    def where(self, key: str) -> str:
        return key

    def local_path(self, key: str) -> Optional[str]:
        return key

    def read_record(self, name: str) -> Optional[bytes]:
        try:
            with open(self._path(name) + _RECORD, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def update_record(self, name: str,
                      update: Callable[[Optional[bytes]], Optional[bytes]]) -> None:
        path = self._path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path + _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            new = update(self.read_record(name))
            if new is None:
                try:
                    os.unlink(path + _RECORD)
                except FileNotFoundError:
                    pass
            else:
                with self._files.open_writer(path + _RECORD) as w:
                    w.write(new)
        finally:
            os.close(fd)                # releases the lock

    def records(self, prefix: str) -> Iterator[tuple[str, Any]]:
        top = self.root
        start = prefix.rpartition("/")[0]
        folder = os.path.join(top, *start.split("/")) if start else top
        stack = [folder]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.name.endswith(_RECORD) and not e.name.startswith("."):
                    rel = os.path.relpath(e.path, top).replace(os.sep, "/")[:-len(_RECORD)]
                    if rel.startswith(prefix):
                        try:
                            with open(e.path, "rb") as f:
                                yield rel, f.read()
                        except OSError as exc:
                            yield rel, exc
                elif "@" not in e.name and e.is_dir(follow_symlinks=False):
                    stack.append(e.path)

    def data_keys(self, name: str) -> list[str]:
        path = self._path(name)
        folder, base = os.path.split(path)
        head = base + "@"
        try:
            return [os.path.join(folder, n) for n in os.listdir(folder)
                    if n.startswith(head) and n not in (base + _RECORD, base + _LOCK)]
        except FileNotFoundError:
            return []

    def delete_data(self, keys: Iterable[str]) -> None:
        for k in keys:
            try:
                os.unlink(k)
            except FileNotFoundError:
                pass


class FileStorage(LibraryAreas):
    """A workspace's storage in the folder ``base_path`` (created if missing).
    ``workspace_id`` keeps several workspaces apart in one folder.
    ``keep_versions``: how many earlier versions of an artifact each save keeps.
    ``allow`` / ``trusted``: how ``.torpor`` artifacts load, as ``torpor.load``.
    ``compress``: the compression of ``.torpor`` artifacts (None: raw, mappable).
    ``base_path`` may also be an fsspec URL (``s3://bucket/prefix``, ``memory://x``;
    objectstore.py), with ``storage_options`` for its filesystem (credentials,
    ``client_kwargs={"endpoint_url": ...}``).

    ``checkpoints`` (checkpoints.py) keeps the checkpoints of a running
    namespace in ``checkpoints_area``, an Artifacts of its own beside
    ``artifacts`` (``<root>/checkpoints``, created at the first checkpoint;
    one version per name: saving a checkpoint replaces it)."""

    def __init__(self, base_path: Union[str, "os.PathLike[str]"], *,
                 workspace_id: Optional[str] = None, keep_versions: int = 5,
                 allow: Iterable[Any] = (), trusted: bool = False,
                 compress: Optional[str] = "lz4",
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self.workspace_id = check_workspace_id(workspace_id)
        if isinstance(base_path, str) and "://" in base_path \
                and not base_path.startswith("file://"):
            self.base_path = base_path if base_path.endswith("://") else base_path.rstrip("/")
            self.root = f"{self.base_path}/{self.workspace_id}" if self.workspace_id \
                else self.base_path
            self.storage_options = storage_options
            self.artifacts = Artifacts(
                _FsspecBackend(f"{self.root}/artifacts", repr(self), storage_options),
                keep_versions=keep_versions, allow=allow, trusted=trusted, compress=compress)
            self.checkpoints_area = self.area("checkpoints", keep_versions=0, compress=None)
            self.checkpoints = Checkpoints(self.checkpoints_area)
            return
        if storage_options is not None:
            raise TypeError("storage_options= is for URLs (s3://bucket/prefix, ...), not "
                            "a local folder")
        if isinstance(base_path, str) and base_path.startswith("file://"):
            base_path = base_path[len("file://"):]
        base = os.path.abspath(os.fspath(base_path))
        self.base_path = base
        root = os.path.join(base, self.workspace_id) if self.workspace_id else base
        self.root = root
        self.storage_options = None
        os.makedirs(os.path.join(root, "artifacts"), exist_ok=True)
        self.artifacts = Artifacts(_LocalBackend(os.path.join(root, "artifacts"), repr(self)),
                                   keep_versions=keep_versions, allow=allow, trusted=trusted,
                                   compress=compress)
        self.checkpoints_area = self.area("checkpoints", keep_versions=0, compress=None)
        self.checkpoints = Checkpoints(self.checkpoints_area)

    def area(self, kind: str, *, keep_versions: int = 5,
             compress: Optional[str] = None) -> Artifacts:
        """An Artifacts of its own beside ``artifacts``, in the folder
        ``<root>/<kind>`` (``checkpoints``, ``workflows``): the same records,
        versions and atomic commits, apart from the user's artifacts."""
        if "://" in self.root:
            backend: Any = _FsspecBackend(f"{self.root}/{kind}", f"{self!r} {kind}",
                                          self.storage_options)
        else:
            backend = _LocalBackend(os.path.join(self.root, kind), f"{self!r} {kind}")
        return Artifacts(backend, keep_versions=keep_versions, compress=compress)

    def __repr__(self) -> str:
        ws = f", workspace_id={self.workspace_id!r}" if self.workspace_id else ""
        return f"FileStorage({self.base_path!r}{ws})"
