"""An artifact's record: its versions, newest last, as one small JSON document
per artifact (never one index for all of them), written atomically by its
backend after the version's data is complete: the record is the commit.

    {"torpor_artifact": 1, "name": "results/run-1", "created_at": "2026-...Z",
     "versions": [{"version": 1, "key": "...", "format": "torpor",
                   "kind": "numpy.ndarray", "size": 1234, "checksum": "...",
                   "saved_at": "2026-...Z", "description": "", "metadata": {}}],
     "dropped": [["...", 0]]}

``dropped`` (optional) names the data keys of versions that saves dropped beyond
``keep_versions``, each with how many later saves have deleted it again. The save
that drops a version deletes its data after its commit; a save killed between the
two leaves the key named here, and the next saves delete it again (up to
DROPPED_TRIES times, so two or more killed saves in a row lose nothing either).
Data of a version no record names any more would otherwise be left for ever when
its writer still runs (the killed save may not be the one that wrote it). Only
keys the caller's ``valid`` accepts (data keys of this very artifact) are ever
deleted, and never one a kept version uses; a malformed ``dropped`` is ignored.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Callable, Optional

from ..errors import ArtifactDamagedError, brief

RECORD_VERSION = 1
#: How many saves delete a dropped version's data before its key is forgotten.
DROPPED_TRIES = 3
#: A record larger than this is damaged (the versions it holds are few and small).
MAX_RECORD_BYTES = 16 << 20
_ENTRY_KEYS = {"version": int, "key": str, "format": str, "kind": str, "size": int,
               "checksum": str, "saved_at": str, "description": str, "metadata": dict}
FORMATS = ("torpor", "bytes", "text", "json")


def now() -> str:
    """The current time, ISO 8601 in UTC with microseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def check_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` as given if it is a dict of JSON values with str keys (it is
    kept in the JSON record and must come back exactly: tuples would come back
    as lists, so they are refused); ValueError naming the first bad place."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    check_json(metadata, "metadata")
    return metadata


def check_json(x: Any, path: str, depth: int = 0) -> None:
    if depth > 100:
        raise ValueError(f"{path} is nested more than 100 deep")
    if x is None or type(x) in (bool, int, str):
        return
    if type(x) is float:
        if not math.isfinite(x):
            raise ValueError(f"{path} is {x!r}, which JSON cannot hold")
        return
    if type(x) is list:
        for i, v in enumerate(x):
            check_json(v, f"{path}[{i}]", depth + 1)
        return
    if type(x) is dict:
        for k, v in x.items():
            if type(k) is not str:
                raise ValueError(f"{path} has the key {brief(k)}: JSON keys are strings")
            check_json(v, f"{path}[{k!r}]", depth + 1)
        return
    raise ValueError(f"{path} holds a {type(x).__name__} ({brief(x)}); it must be JSON: "
                     f"dicts with str keys, lists, str, int, float, bool or None")


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def decode(raw: bytes, name: str, storage: str) -> dict[str, Any]:
    """The record ``raw`` holds, checked; ArtifactDamagedError if it is not one."""
    def damaged(why: str) -> ArtifactDamagedError:
        return ArtifactDamagedError(f"the record of artifact {name!r} in {storage} is damaged "
                                    f"({why}); its data cannot be found. Delete the artifact "
                                    f"(storage.artifacts.delete({name!r})) or restore the record "
                                    f"from a backup", name, storage)
    if len(raw) > MAX_RECORD_BYTES:
        raise damaged(f"{len(raw)} bytes, over {MAX_RECORD_BYTES}")
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise damaged(f"not JSON: {e}") from None
    if not isinstance(rec, dict) or rec.get("torpor_artifact") != RECORD_VERSION:
        raise damaged("not a torpor artifact record of version 1")
    if rec.get("name") != name or not isinstance(rec.get("created_at"), str):
        raise damaged(f"it names {brief(rec.get('name'))}")
    versions = rec.get("versions")
    if not isinstance(versions, list) or not versions:
        raise damaged("no versions")
    last = 0
    for entry in versions:
        if not isinstance(entry, dict) \
                or any(type(entry.get(k)) is not t for k, t in _ENTRY_KEYS.items()):
            raise damaged(f"a version entry is malformed: {brief(entry, 120)}")
        if entry["format"] not in FORMATS or entry["version"] <= last:
            raise damaged(f"version {entry['version']} is malformed")
        last = entry["version"]
    return rec


def _dropped(record: dict[str, Any]) -> list[tuple[str, int]]:
    """The record's dropped keys and their tries; [] when the field is malformed
    (it only says what to clean up: the versions themselves are intact)."""
    dropped = record.get("dropped", [])
    if not isinstance(dropped, list) or len(dropped) > 10_000:
        return []
    return [(d[0], d[1]) for d in dropped
            if type(d) is list and len(d) == 2 and type(d[0]) is str and type(d[1]) is int]


def add_version(record: Optional[dict[str, Any]], name: str, entry: dict[str, Any],
                keep: int, valid: Callable[[str], bool] = lambda key: True
                ) -> tuple[dict[str, Any], list[str]]:
    """The record with ``entry`` as its newest version (numbered after the
    current one) naming the data keys of the versions it drops beyond ``keep``
    previous ones, and the keys whose data the caller deletes after the commit:
    those, and the ones the current record names that ``valid`` accepts (left by
    a save killed before it deleted them; deleting data already gone is harmless)."""
    if record is None:
        record = {"torpor_artifact": RECORD_VERSION, "name": name, "created_at": entry["saved_at"],
                  "versions": []}
    versions = list(record["versions"])
    entry = dict(entry, version=versions[-1]["version"] + 1 if versions else 1)
    versions.append(entry)
    cut = max(0, len(versions) - 1 - keep)
    dropped = [e["key"] for e in versions[:cut]]
    kept = {e["key"] for e in versions[cut:]}
    pending = [(k, n + 1) for k, n in _dropped(record)
               if n + 1 < DROPPED_TRIES and k not in kept and k not in dropped and valid(k)]
    named = [[k, 0] for k in dropped] + [[k, n] for k, n in pending]
    return dict(record, versions=versions[cut:], dropped=named), [k for k, _ in named]


def info(record: dict[str, Any], entry: dict[str, Any], where: str, storage: str) -> dict[str, Any]:
    """The public info dict of one version: what the caller gave (description,
    metadata) apart from what the storage knows; no internal key leaks into
    ``metadata``. ``record`` is one freshly decoded (or built by this save from
    a copy of the caller's metadata): the dicts are the caller's to keep."""
    return {"name": record["name"], "description": entry["description"],
            "metadata": entry["metadata"],
            "kind": entry["kind"], "format": entry["format"], "size": entry["size"],
            "checksum": entry["checksum"], "created_at": record["created_at"],
            "updated_at": entry["saved_at"], "version": entry["version"],
            "path": where, "storage": storage}
