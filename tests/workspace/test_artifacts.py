"""The artifact contract every workspace storage keeps (issue 12): what an
artifact holds comes back equal and of the same type; names are checked; versions
are kept; a failed save changes nothing; damage is reported with the artifact's
name and never breaks the listing of the others. Runs on every storage kind
(conftest.KINDS) and both walkers."""

import collections
import dataclasses
import datetime
import json
import os
import re
import threading

import numpy as np
import pytest

import torpor
from torpor.errors import (ArtifactDamagedError, ArtifactNotFoundError, InvalidNameError,
                           UnsafeLoadError, UnsupportedObjectError)
from torpor.workspace import ArtifactWarning, StorageBackend
from helpers import flip_middle_bytes


@dataclasses.dataclass
class Run:
    name: str
    grid: np.ndarray
    tags: tuple


def test_storage_is_a_storage_backend(storage):
    assert isinstance(storage, StorageBackend)
    assert storage.artifacts.list() == []


VALUES = {
    "int": 42, "float": 1.5, "none": None, "tuple": (1, "a", (2,)), "set": {1, 2, 3},
    "frozenset": frozenset({"x"}), "complex": 1 + 2j, "date": datetime.date(2026, 11, 22),
    "counter": collections.Counter("abca"), "nested": {"a": [1, {"b": (2, 3)}], 7: b"x"},
}


@pytest.mark.parametrize("key", sorted(VALUES))
def test_plain_values_come_back_equal_and_of_the_same_type(storage, key):
    value = VALUES[key]
    info = storage.artifacts.save(key, value)
    assert info["format"] == "torpor" and info["kind"] == type(value).__qualname__ \
        or info["kind"].endswith("." + type(value).__qualname__)
    out = storage.artifacts.load(key)
    assert out == value and type(out) is type(value)


def test_arrays_and_graphs_of_arrays(storage):
    a = np.arange(100_000, dtype=np.float32).reshape(100, 1000)
    f = np.asfortranarray(np.ones((30, 40), ">i2"))
    graph = {"a": a, "again": a, "f": f, "rec": np.zeros(4, [("x", "<f8"), ("n", "u1")])}
    storage.artifacts.save("graph", graph)
    out = storage.artifacts.load("graph")
    assert out["a"] is out["again"]
    for k in ("a", "f", "rec"):
        assert out[k].dtype == graph[k].dtype and out[k].shape == graph[k].shape
        assert out[k].tobytes() == graph[k].tobytes() and out[k].flags.writeable
    assert out["f"].flags.f_contiguous


def test_instances_load_safely_only_when_allowed(storage, make_storage):
    run = Run("r", np.eye(3), ("a", 1))
    storage.artifacts.save("run", run)
    with pytest.raises(UnsafeLoadError, match="Run"):
        storage.artifacts.load("run")
    out = storage.artifacts.load("run", allow=[Run])
    assert type(out) is Run and out.name == "r" and out.tags == ("a", 1)
    np.testing.assert_array_equal(out.grid, np.eye(3))
    assert type(storage.artifacts.load("run", trusted=True)) is Run
    assert type(make_storage(allow=[Run]).artifacts.load("run")) is Run
    assert type(make_storage(trusted=True).artifacts.load("run")) is Run


def test_bytes_and_str_are_stored_as_themselves(storage):
    i = storage.artifacts.save("blob.bin", b"\x00\xffdata")
    assert i["format"] == "bytes" and i["kind"] == "bytes" and i["size"] == 6
    assert storage.artifacts.load("blob.bin") == b"\x00\xffdata"
    storage.artifacts.save("ba", bytearray(b"ab"))
    assert storage.artifacts.load("ba") == b"ab"
    storage.artifacts.save("mv", memoryview(np.arange(3, dtype="u1")))
    assert storage.artifacts.load("mv") == b"\x00\x01\x02"
    t = storage.artifacts.save("notes/readme.md", "héllo\n")
    assert t["format"] == "text" and t["size"] == len("héllo\n".encode())
    assert storage.artifacts.load("notes/readme.md") == "héllo\n"
    # asked for as torpor, bytes and str come back through the engine
    storage.artifacts.save("as-torpor", "x", format="torpor")
    assert storage.artifacts.get("as-torpor")["format"] == "torpor"
    assert storage.artifacts.load("as-torpor") == "x"


def test_json_on_request(storage):
    cfg = {"lr": 0.1, "layers": [64, 32], "name": "m", "ok": True, "none": None}
    info = storage.artifacts.save("cfg", cfg, format="json")
    assert info["format"] == "json"
    out = storage.artifacts.load("cfg")
    assert out == cfg and type(out["layers"]) is list
    for bad, what in [({"t": (1, 2)}, "tuple"), ({1: 2}, "key"), ({"x": float("nan")}, "nan"),
                      (np.zeros(2), "ndarray")]:
        with pytest.raises(ValueError, match="format='json'") as e:
            storage.artifacts.save("bad", bad, format="json")
        assert what in str(e.value).lower()
    assert not storage.artifacts.exists("bad")


def test_format_mismatches_are_clear(storage):
    with pytest.raises(TypeError, match="format='bytes'"):
        storage.artifacts.save("x", "text", format="bytes")
    with pytest.raises(TypeError, match="format='text'"):
        storage.artifacts.save("x", b"b", format="text")
    with pytest.raises(ValueError, match="format must be one of"):
        storage.artifacts.save("x", 1, format="pickle")
    assert storage.artifacts.list() == []


def test_info_fields(storage):
    before = datetime.datetime.now(datetime.timezone.utc)
    meta = {"owner": "ana", "tags": ["a", "b"], "n": 3, "nested": {"k": None}}
    info = storage.artifacts.save("res", np.zeros(10), "the result", meta)
    assert set(info) >= {"name", "description", "metadata", "kind", "format", "size", "checksum",
                         "created_at", "updated_at", "version", "path", "storage"}
    assert info["name"] == "res" and info["description"] == "the result"
    assert info["metadata"] == meta                      # exactly what the caller gave
    assert info["kind"] == "numpy.ndarray" and info["version"] == 1 and info["size"] > 80
    assert re.fullmatch(r"xxh3(-toc)?:[0-9a-f]{16}", info["checksum"])
    created = datetime.datetime.fromisoformat(info["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None and created >= before - datetime.timedelta(seconds=5)
    assert info["updated_at"] == info["created_at"]
    assert storage.artifacts.get("res") == info
    meta["owner"] = "changed"                            # the caller's dict is not kept
    assert storage.artifacts.get("res")["metadata"]["owner"] == "ana"
    info["metadata"]["owner"] = "mutated"                # nor is the returned one
    assert storage.artifacts.get("res")["metadata"]["owner"] == "ana"


def test_metadata_must_be_json(storage):
    for bad in ({"t": (1,)}, {"a": np.int64(1)}, {1: "x"}, ["not a dict"]):
        with pytest.raises((TypeError, ValueError), match="metadata|JSON|dict"):
            storage.artifacts.save("m", 1, metadata=bad)
    with pytest.raises(TypeError, match="description"):
        storage.artifacts.save("m", 1, description=5)
    assert not storage.artifacts.exists("m")


def test_versions_are_kept_and_numbered(storage):
    infos = [storage.artifacts.save("v", {"i": i}, f"save {i}") for i in range(8)]
    assert [i["version"] for i in infos] == list(range(1, 9))
    kept = storage.artifacts.versions("v")
    assert [k["version"] for k in kept] == [3, 4, 5, 6, 7, 8]          # 5 previous + current
    assert len({k["path"] for k in kept}) == 6
    assert all(k["created_at"] == infos[0]["created_at"] for k in kept)
    assert kept[-1]["updated_at"] >= kept[0]["updated_at"]
    assert storage.artifacts.load("v") == {"i": 7}
    assert storage.artifacts.load("v", version=4) == {"i": 3}
    assert storage.artifacts.get("v")["description"] == "save 7"
    with pytest.raises(ArtifactNotFoundError, match=r"no version 2.*\[3, 4, 5, 6, 7, 8\]") as e:
        storage.artifacts.load("v", version=2)
    assert e.value.name == "v" and e.value.version == 2


def test_keep_versions_is_configurable(make_storage):
    s = make_storage(keep_versions=1)
    for i in range(4):
        s.artifacts.save("k", i)
    assert [v["version"] for v in s.artifacts.versions("k")] == [3, 4]
    s0 = make_storage(keep_versions=0)
    s0.artifacts.save("k", 9)
    assert [v["version"] for v in s0.artifacts.versions("k")] == [5]
    with pytest.raises(ValueError, match="keep_versions"):
        make_storage(keep_versions=-1)


def test_a_save_killed_before_deleting_dropped_versions_leaves_them_to_the_next(
        make_storage, monkeypatch):
    """The record's commit drops a version; the save is killed before it deletes
    that version's data. The writer of the dropped data (this process) still
    runs, so only the record can say the data is garbage: the next save deletes it."""
    s = make_storage(keep_versions=1)
    b = s.artifacts._b                  # the test stands in for the kill, on purpose
    for i in range(2):
        s.artifacts.save("k", np.full(1000, i))
    first = s.artifacts.versions("k")[0]["version"]
    keys = set(b.data_keys("k"))
    assert len(keys) == 2

    def killed(keys):
        raise KeyboardInterrupt("killed between the commit and the deletion")
    monkeypatch.setattr(b, "delete_data", killed)
    with pytest.raises(KeyboardInterrupt):
        s.artifacts.save("k", np.full(1000, 2))
    monkeypatch.undo()
    assert [v["version"] for v in s.artifacts.versions("k")] == [first + 1, first + 2]
    assert len(b.data_keys("k")) == 3                       # version 1's data is left
    s.artifacts.save("k", np.full(1000, 3))
    left = set(b.data_keys("k"))
    assert len(left) == 2 and not left & keys               # both old versions' data gone
    assert [int(s.artifacts.load("k", version=v)[0]) for v in (first + 2, first + 3)] == [2, 3]
    assert s.artifacts.delete("k") and b.data_keys("k") == []


def test_two_saves_killed_in_a_row_lose_no_dropped_data(make_storage, monkeypatch):
    """Each of two saves is killed between its commit and its deletions: the next
    save that completes deletes what both dropped."""
    s = make_storage(keep_versions=0)
    b = s.artifacts._b                  # the test stands in for the kills, on purpose
    s.artifacts.save("k", np.full(10, 0))

    def killed(keys):
        raise KeyboardInterrupt("killed between the commit and the deletion")
    monkeypatch.setattr(b, "delete_data", killed)
    for i in (1, 2):
        with pytest.raises(KeyboardInterrupt):
            s.artifacts.save("k", np.full(10, i))
    monkeypatch.undo()
    assert len(b.data_keys("k")) == 3
    s.artifacts.save("k", np.full(10, 3))
    assert len(b.data_keys("k")) == 1                       # only the current version's
    assert int(s.artifacts.load("k")[0]) == 3


def test_a_hostile_dropped_list_deletes_nothing_but_this_artifacts_old_data(tmp_path):
    """A record's dropped keys are checked: a key of a kept version, of another
    artifact or outside the storage is never deleted; a malformed list is ignored
    and the versions stay readable."""
    from torpor.workspace import FileStorage, records
    s = FileStorage(str(tmp_path / "ws"))
    s.artifacts.save("k", "one")
    s.artifacts.save("other", "theirs")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    rec_path = [p for p in (tmp_path / "ws").rglob("k@info.json")][0]
    rec = json.loads(rec_path.read_text())
    live = rec["versions"][0]["key"]
    other = s.artifacts._b.data_keys("other")[0]
    rec["dropped"] = [[live, 0], [str(outside), 0], [other, 0], [live + "/../../x", 0]]
    rec_path.write_text(json.dumps(rec))
    s.artifacts.save("k", "two")
    assert outside.read_text() == "keep me" and os.path.exists(other)
    assert s.artifacts.load("k", version=1) == "one" and s.artifacts.load("other") == "theirs"
    for bad in ("x", [1], [["k", "0"]], {"a": 1}):
        rec = json.loads(rec_path.read_text())
        rec["dropped"] = bad
        rec_path.write_text(json.dumps(rec))
        assert s.artifacts.load("k") == "two"           # not damaged: only cleanup data
        assert records.decode(rec_path.read_bytes(), "k", "here")["versions"]
    s.artifacts.save("k", "three")
    assert [v["version"] for v in s.artifacts.versions("k")] == [1, 2, 3]


def test_versions_of_different_formats(storage):
    storage.artifacts.save("mixed", b"raw")
    storage.artifacts.save("mixed", "text")
    storage.artifacts.save("mixed", [1, 2], format="json")
    storage.artifacts.save("mixed", np.ones(3))
    vs = storage.artifacts.versions("mixed")
    assert [v["format"] for v in vs] == ["bytes", "text", "json", "torpor"]
    assert storage.artifacts.load("mixed", version=1) == b"raw"
    assert storage.artifacts.load("mixed", version=2) == "text"
    assert storage.artifacts.load("mixed", version=3) == [1, 2]


def test_list_get_exists_delete(storage):
    for n in ("b", "a", "sub/c", "sub/deeper/d", "subx"):
        storage.artifacts.save(n, n)
    assert [i["name"] for i in storage.artifacts.list()] == ["a", "b", "sub/c", "sub/deeper/d",
                                                             "subx"]
    assert [i["name"] for i in storage.artifacts.list("sub/")] == ["sub/c", "sub/deeper/d"]
    assert [i["name"] for i in storage.artifacts.list("sub")] == ["sub/c", "sub/deeper/d", "subx"]
    assert storage.artifacts.exists("sub/c") and not storage.artifacts.exists("sub")
    assert storage.artifacts.get("nope") is None
    assert storage.artifacts.delete("sub/c") is True
    assert storage.artifacts.delete("sub/c") is False
    assert not storage.artifacts.exists("sub/c") and storage.artifacts.get("sub/c") is None
    with pytest.raises(ArtifactNotFoundError, match="no artifact named 'sub/c'") as e:
        storage.artifacts.load("sub/c")
    assert e.value.name == "sub/c" and isinstance(e.value, KeyError)
    with pytest.raises(ArtifactNotFoundError):
        storage.artifacts.versions("sub/c")
    # a name saved again after delete starts afresh
    assert storage.artifacts.save("sub/c", 1)["version"] == 1


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/", "..", "a/../b", "./a", "a b", "a@b",
                                 "é", "a\\b", "x" * 129, "a/" + "b" * 129,
                                 "/".join(["p" * 100] * 3), "a:b", "*", "a\x00"])
def test_bad_names_are_refused_before_anything_is_written(storage, bad):
    for call in (lambda: storage.artifacts.save(bad, 1), lambda: storage.artifacts.load(bad),
                 lambda: storage.artifacts.get(bad), lambda: storage.artifacts.delete(bad),
                 lambda: storage.artifacts.exists(bad)):
        with pytest.raises(InvalidNameError, match="name"):
            call()
    assert storage.artifacts.list() == []


def test_name_type_is_checked(storage):
    with pytest.raises(InvalidNameError, match="must be a str"):
        storage.artifacts.save(b"x", 1)


def test_long_names_up_to_255_bytes_work(storage):
    for name in ("n" * 128, "a" * 126 + "/" + "b" * 128):
        assert len(name) <= 255
        storage.artifacts.save(name, 1)
        storage.artifacts.save(name, "two")
        assert storage.artifacts.load(name) == "two" and storage.artifacts.load(name, version=1) == 1


def test_a_failed_save_changes_nothing(storage):
    storage.artifacts.save("keep", {"v": 1}, "first")
    before = storage.artifacts.get("keep")
    with pytest.raises(UnsupportedObjectError):
        storage.artifacts.save("keep", {"v": 2, "gen": (i for i in ())}, "second")
    assert storage.artifacts.get("keep") == before
    assert storage.artifacts.load("keep") == {"v": 1}
    assert [v["version"] for v in storage.artifacts.versions("keep")] == [1]
    with pytest.raises(UnsupportedObjectError):
        storage.artifacts.save("new", (i for i in ()))
    assert not storage.artifacts.exists("new")
    assert [i["name"] for i in storage.artifacts.list()] == ["keep"]


def test_workspaces_share_a_place_apart(make_storage):
    a, b = make_storage(workspace_id="alpha"), make_storage(workspace_id="beta")
    a.artifacts.save("x", 1)
    b.artifacts.save("x", 2)
    assert a.artifacts.load("x") == 1 and b.artifacts.load("x") == 2
    assert [i["name"] for i in a.artifacts.list()] == ["x"]
    assert make_storage().artifacts.list() == []
    for bad in ("a/b", "..", "", "a b"):
        with pytest.raises(InvalidNameError, match="workspace id"):
            make_storage(workspace_id=bad)


def test_another_storage_object_sees_the_same_artifacts(storage, make_storage):
    storage.artifacts.save("shared", np.arange(4))
    other = make_storage()
    assert other.artifacts.load("shared").tolist() == [0, 1, 2, 3]
    other.artifacts.save("shared", "v2")
    assert storage.artifacts.load("shared") == "v2"
    assert storage.artifacts.get("shared")["version"] == 2


def test_threads_saving_different_and_same_names_lose_nothing(storage):
    errors = []

    def work(t):
        try:
            for i in range(5):
                storage.artifacts.save(f"t{t}/item{i}", {"t": t, "i": i, "a": np.full(100, t)})
                storage.artifacts.save("contended", {"t": t, "i": i})
        except BaseException as e:          # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    names = [i["name"] for i in storage.artifacts.list()]
    assert len(names) == 41 and "contended" in names
    for t in range(8):
        for i in range(5):
            out = storage.artifacts.load(f"t{t}/item{i}")
            assert out["t"] == t and out["i"] == i and out["a"].tolist() == [t] * 100
    last = storage.artifacts.load("contended")
    assert set(last) == {"t", "i"}
    vs = storage.artifacts.versions("contended")
    assert vs[-1]["version"] >= 6 and [v["version"] for v in vs] == sorted({v["version"] for v in vs})


def test_damaged_data_is_reported_with_the_name(storage, make_storage):
    storage.artifacts.save("good", 1)
    storage.artifacts.save("bad", np.arange(1000.0))
    storage.artifacts.save("bad-bytes", b"0123456789")
    damage(storage, "bad")
    damage(storage, "bad-bytes")
    for name in ("bad", "bad-bytes"):
        with pytest.raises(ArtifactDamagedError, match=f"artifact '{name}'") as e:
            storage.artifacts.load(name)
        assert e.value.name == name and e.value.storage and e.value.storage in str(e.value)
        assert isinstance(e.value, torpor.CorruptFileError)
    assert storage.artifacts.load("good") == 1
    assert len(storage.artifacts.list()) == 3


def test_damaged_record_never_breaks_the_listing(storage):
    storage.artifacts.save("fine", 1)
    storage.artifacts.save("broken", 2)
    put_record(storage, "broken", b"{not json")
    with pytest.warns(ArtifactWarning, match="broken"):
        listed = storage.artifacts.list()
    assert [i["name"] for i in listed] == ["fine"]
    with pytest.raises(ArtifactDamagedError, match="record of artifact 'broken'"):
        storage.artifacts.load("broken")
    # saving again over a damaged record starts the artifact afresh
    assert storage.artifacts.save("broken", 3)["version"] == 1
    assert storage.artifacts.load("broken") == 3
    put_record(storage, "broken", json.dumps({"torpor_artifact": 1, "name": "other"}).encode())
    with pytest.raises(ArtifactDamagedError, match="names 'other'"):
        storage.artifacts.get("broken")
    assert storage.artifacts.delete("broken") is True


# --- how tests reach into a storage's own keys (each kind's layout) ---------------------

def _backend(storage):
    return storage.artifacts._b         # the test looks inside on purpose


def put_record(storage, name, raw):
    _backend(storage).update_record(name, lambda old: raw)


def damage(storage, name):
    """Flip bytes in the middle of the current version's data."""
    b = _backend(storage)
    key = storage.artifacts.get(name)["path"]
    key = key if b.store is None else _key_of(b, name)
    flip_middle_bytes(key, b.store)


def _key_of(b, name):
    raw = b.read_record(name)
    return json.loads(raw)["versions"][-1]["key"]


def test_checksums_follow_the_content(storage):
    import xxhash
    a = storage.artifacts.save("c1", np.arange(50_000))
    b = storage.artifacts.save("c2", np.arange(50_000))
    c = storage.artifacts.save("c3", np.arange(1, 50_001))
    assert a["checksum"] == b["checksum"] != c["checksum"]
    raw = storage.artifacts.save("raw", b"abc")
    assert raw["checksum"] == f"xxh3:{xxhash.xxh3_64_intdigest(b'abc'):016x}"


def test_pandas_objects_come_back_equal(storage):
    import pandas as pd                 # in the test extra: .ci/run installs it
    df = pd.DataFrame({"a": np.arange(5), "b": list("abcde"),
                       "t": pd.date_range("2026-01-01", periods=5, tz="UTC")})
    ser = pd.Series([1.5, 2.5], index=["x", "y"], name="s")
    info = storage.artifacts.save("frames", {"df": df, "s": ser})
    assert info["kind"] == "dict"
    # torpor rebuilds pandas objects itself (engine/pandas_types.py): no allow= needed
    for out in (storage.artifacts.load("frames"), storage.artifacts.load("frames", trusted=True),
                storage.artifacts.load("frames", allow=["pandas.*"])):
        pd.testing.assert_frame_equal(out["df"], df)
        pd.testing.assert_series_equal(out["s"], ser)
        assert type(out["df"]) is pd.DataFrame
