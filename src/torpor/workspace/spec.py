"""A workspace storage as a plain dict, and back: what a SubprocessExecutor's
worker rebuilds its storage from (the dict travels in the handshake, over the
executor's pipe; never in the worker's command line or environment, since it
may hold credentials).

    spec = describe(storage)      # {"kind": "file", "base_path": ..., ...}
    storage = build(spec)         # in the worker: the same workspace

Kinds: ``FileStorage`` on a local folder or on an fsspec URL (with its
``storage_options``, which must then be plain values), and ``RedisStorage``
(its client's connection settings, password included, with the key prefix and
workspace). Every kind carries ``workspace_id``, ``keep_versions``, ``allow``
(classes as ``"module.qualname"``), ``trusted`` and ``compress``. fsspec's
``memory://`` filesystem lives in one process's memory, so a worker would see
another, empty one: ``describe`` refuses it."""

from __future__ import annotations

from typing import Any

from ..engine.safety import global_name

#: Redis connection settings copied into the spec (values of other settings,
#: such as retry objects or credential providers, cannot cross a process).
_REDIS_KEYS = ("host", "port", "db", "username", "password", "path", "socket_timeout",
               "socket_connect_timeout", "socket_keepalive", "client_name",
               "health_check_interval", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs",
               "ssl_ca_certs", "ssl_ca_path", "ssl_check_hostname", "ssl_min_version")
_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    """``value`` if it is made of JSON-like parts (dicts with str keys, lists,
    tuples, str, int, float, bool, None); TypeError naming ``where`` if not."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key that is not a str ({k!r:.60})")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise TypeError(f"{where} is a {type(value).__name__}: a worker process can only be given "
                    f"plain values (str, int, float, bool, None, lists and dicts of them)")


def _base(value: Any) -> Any:
    """An int, float or str subclass (an ssl.VerifyMode) as the plain type."""
    for t in (bool, int, float, str):
        if isinstance(value, t):
            return t(value)
    return value


def _allow(entries: Any) -> list[str]:
    out = []
    for a in entries:
        out.append(a if isinstance(a, str) else global_name(a))
    return out


def _common(storage: Any) -> dict[str, Any]:
    arts = storage.artifacts
    return {"workspace_id": storage.workspace_id, "keep_versions": arts.keep_versions,
            "allow": _allow(arts.allow), "trusted": bool(arts.trusted), "compress": arts.compress}


def describe(storage: Any) -> dict[str, Any]:
    """The plain dict ``build`` makes ``storage`` again from (in another process)."""
    from .files import FileStorage
    from .redis_storage import RedisStorage
    if isinstance(storage, FileStorage):
        spec = {"kind": "file", "base_path": storage.base_path, **_common(storage)}
        if "://" in storage.base_path:
            objects = getattr(storage.artifacts._b, "objects", None)
            fs = getattr(objects, "fs", None)
            protocols = getattr(objects, "protocols", ())
            if "memory" in protocols:
                raise ValueError(f"{storage!r} is in fsspec's memory filesystem, which lives in "
                                 f"this process only: a worker process would see an empty one. "
                                 f"Use a folder or an object store (s3://...) with the "
                                 f"subprocess executor, or run code in process")
            options = dict(getattr(fs, "storage_options", None) or {})
            spec["storage_options"] = _plain(options, "storage_options")
        return spec
    if isinstance(storage, RedisStorage):
        pool = storage.redis.connection_pool
        kwargs = dict(getattr(pool, "connection_kwargs", {}))
        cls = getattr(pool, "connection_class", None)
        cname = getattr(cls, "__name__", "")
        transport = "unix" if "Unix" in cname or kwargs.get("path") else (
            "ssl" if "SSL" in cname else "tcp")
        conn = {k: _base(kwargs[k]) for k in _REDIS_KEYS if k in kwargs
                and isinstance(kwargs[k], _PLAIN)}
        objects = getattr(storage.artifacts._b, "objects", None)
        return {"kind": "redis", "transport": transport, "connection": conn,
                "url": storage.url, "prefix": storage.prefix,
                "chunk_size": int(getattr(objects, "chunk_size", 8 << 20)),
                **_common(storage)}
    raise TypeError(f"the subprocess executor runs on a FileStorage or a RedisStorage, not a "
                    f"{type(storage).__name__}")


def build(spec: dict[str, Any]) -> Any:
    """The storage ``spec`` (from ``describe``) describes."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"not a storage spec: {spec!r:.200}")
    common = {"workspace_id": spec.get("workspace_id"),
              "keep_versions": spec.get("keep_versions", 5),
              "allow": tuple(spec.get("allow", ())), "trusted": bool(spec.get("trusted")),
              "compress": spec.get("compress", "lz4")}
    kind = spec["kind"]
    if kind == "file":
        from .files import FileStorage
        options = spec.get("storage_options")
        if options is not None:
            return FileStorage(spec["base_path"], storage_options=options, **common)
        return FileStorage(spec["base_path"], **common)
    if kind == "redis":
        from ..storage.redis_store import import_redis
        from .redis_storage import RedisStorage
        redis = import_redis()
        cls = {"tcp": redis.Connection, "ssl": redis.SSLConnection,
               "unix": redis.UnixDomainSocketConnection}[spec.get("transport", "tcp")]
        pool = redis.ConnectionPool(connection_class=cls, **spec.get("connection", {}))
        client = redis.Redis(connection_pool=pool)
        return RedisStorage(redis=client, prefix=spec["prefix"],
                            chunk_size=spec.get("chunk_size", 8 << 20), **common)
    raise ValueError(f"unknown storage kind {kind!r} in a storage spec")
