"""Fixtures of the workspace tests. ``storage`` runs a test on every workspace
storage torpor has (each one real: a folder, a redis-server process on
127.0.0.1, an S3 API served by moto on 127.0.0.1); ``make_storage(**kw)``
makes another storage of the same kind and place (a second process's view, or
other options)."""

import pytest

from torpor.workspace import FileStorage
from s3_server import s3_server, s3_storage_factory, memory_storage_factory  # noqa: F401
from redis_server import redis_server, redis_storage_factory  # noqa: F401

#: The kinds of storage every contract test runs on (servers add theirs below).
KINDS = ["file"]
KINDS += ["s3", "memory"]
KINDS += ["redis"]


@pytest.fixture
def file_storage_factory(tmp_path):
    def make(**kw):
        return FileStorage(tmp_path / "ws", **kw)
    return make


@pytest.fixture(params=KINDS)
def make_storage(request, impl):
    """A factory of storages of one kind, all on the same place; the test runs
    on both walkers (``impl``)."""
    return request.getfixturevalue(f"{request.param}_storage_factory")


@pytest.fixture
def storage(make_storage):
    return make_storage()
