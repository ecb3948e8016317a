"""How an artifact's value is stored: which format, and the bytes of the plain ones.

- ``bytes`` (bytes, bytearray, memoryview) and ``text`` (str, UTF-8) are stored as
  themselves: a plain file another tool can read;
- ``json`` on request (``format="json"``), for JSON-shaped values people want to
  read by eye; refused for anything JSON would not give back equal and of the
  same types (tuples, non-str keys, NaN);
- everything else is a ``.torpor`` file (any object graph torpor saves), written
  by the engine straight to the storage, arrays zero-copy.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import xxhash

from ..errors import ArtifactDamagedError
from .records import FORMATS, check_json

EXTENSIONS = {"torpor": ".torpor", "bytes": ".bin", "text": ".txt", "json": ".json"}


def choose_format(data: Any, format: Optional[str]) -> str:
    """The format ``data`` is stored in: ``format`` if given (checked against the
    value), else bytes for bytes-like values, text for str, torpor otherwise."""
    if format is None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return "bytes"
        if isinstance(data, str):
            return "text"
        return "torpor"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)} or None (chosen from the "
                         f"value), not {format!r}")
    if format == "bytes" and not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"format='bytes' takes bytes, a bytearray or a memoryview, not "
                        f"{type(data).__name__}")
    if format == "text" and not isinstance(data, str):
        raise TypeError(f"format='text' takes a str, not {type(data).__name__}")
    if format == "json":
        try:
            check_json(data, "the value")
        except ValueError as e:
            raise ValueError(f"format='json' cannot store this value exactly: {e}; save it "
                             f"without format= (a .torpor file keeps any value)") from None
    return format


def kind_of(data: Any) -> str:
    """The value's type as the info shows it: 'dict', 'numpy.ndarray', ..."""
    t = type(data)
    mod = getattr(t, "__module__", "") or ""
    return t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def plain_bytes(data: Any, format: str) -> memoryview:
    """The stored bytes of a value in a plain format (no copy for bytes-likes)."""
    if format == "bytes":
        return memoryview(data).cast("B")
    if format == "text":
        return memoryview(data.encode("utf-8", "surrogatepass"))
    return memoryview(json.dumps(data, ensure_ascii=False, allow_nan=False,
                                 separators=(",", ":")).encode())


def checksum(buf: Any) -> str:
    return f"xxh3:{xxhash.xxh3_64_intdigest(buf):016x}"


def from_plain(raw: bytes, entry: dict[str, Any], name: str, storage: str) -> Any:
    """The value of a plain-format version, its checksum checked."""
    if len(raw) != entry["size"] or checksum(raw) != entry["checksum"]:
        raise ArtifactDamagedError(
            f"artifact {name!r} version {entry['version']} in {storage} is damaged: its data "
            f"({len(raw)} bytes) does not match its checksum ({entry['size']} bytes, "
            f"{entry['checksum']}); load an earlier version (versions({name!r})) or save it "
            f"again", name, storage)
    fmt = entry["format"]
    if fmt == "bytes":
        return raw
    if fmt == "text":
        return raw.decode("utf-8", "surrogatepass")
    return json.loads(raw)
