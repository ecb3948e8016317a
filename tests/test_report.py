"""The benchmark harness's own logic: the round-trip comparator, the report
(including its "where torpor is slower" section) and a tiny end-to-end run."""

import json

import numpy as np

from benchmarks import report
from benchmarks.peers import PEERS
from benchmarks.workloads import mixed, object_heavy


def test_same_accepts_equal_and_catches_every_kind_of_difference():
    a = {"x": np.arange(4, dtype=np.int32), "l": [1.5, "s", (1, 2)], "nan": float("nan")}
    shared = [1]
    a["s1"] = a["s2"] = shared
    b = {"x": np.arange(4, dtype=np.int32), "l": [1.5, "s", (1, 2)], "nan": float("nan")}
    b["s1"] = b["s2"] = [1]
    assert report.same(a, b) is None
    for k, v, msg in [("x", np.arange(4, dtype=np.int64), "array differs"),
                      ("x", np.arange(4, dtype=np.int32).reshape(2, 2), "array differs"),
                      ("l", [1.5, "t", (1, 2)], "'s' != 't'"),
                      ("l", [1.5, "s", [1, 2]], "type tuple != list"),
                      ("s2", [1], "shared object came back as two")]:
        c = dict(b)
        c[k] = v
        assert msg in report.same(a, c), (k, report.same(a, c))


def test_same_follows_instances_and_cycles():
    a = object_heavy(50)
    import pickle
    assert report.same(a, pickle.loads(pickle.dumps(a))) is None
    b = pickle.loads(pickle.dumps(a))
    b["structure"]["atoms"][3].serial = -1
    assert "serial" in report.same(a, b)


def test_every_peer_roundtrips_what_it_claims(tmp_path):
    w = mixed(50)
    for name, peer in PEERS.items():
        if peer.arrays_only:
            w2 = {"a": np.arange(10.0), "b": np.ones((3, 3), np.float32)}
            peer.save(w2, tmp_path / name)
            assert report.same(w2, peer.load(tmp_path / name)) is None, name
            continue
        peer.save(w, tmp_path / name)
        back = peer.load(tmp_path / name)
        err = report.same(w, back)
        if name == "chimerax-style":      # names only objects with a __dict__, as ChimeraX does
            assert "shared object" in err
        else:
            assert err is None, (name, err)


def test_report_end_to_end(tmp_path):
    rc = report.main(["--size", "small", "--libs", "torpor,pickle", "--workloads", "mixed",
                      "--repeat", "1", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    r = data["results"]["mixed"]
    assert r["torpor"]["roundtrip"] == "ok" and r["pickle"]["roundtrip"] == "ok"
    assert r["torpor"]["save_s"] > 0 and r["torpor"]["size"] > 0
    assert r["torpor"]["memory"]["save"] >= 0 and "load" in r["pickle"]["memory"]
    text = (tmp_path / "REPORT.md").read_text()
    assert "| torpor |" in text and "## Where torpor is slower or larger" in text
    assert (tmp_path / "times.png").stat().st_size > 1000


def test_report_says_plainly_where_torpor_loses(tmp_path):
    data = {"size": "small", "date": "d", "command": "c", "args": {"w": 1},
            "machine": report.machine(),
            "results": {"w": {
                "torpor": {"save_s": 2.0, "load_s": 1.0, "size": 100, "roundtrip": "ok", "error": None},
                "pickle": {"save_s": 1.0, "load_s": 2.0, "size": 50, "roundtrip": "ok", "error": None}}}}
    report.write_report(data, tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "- w: pickle saves faster than torpor (1.000 s against 2.000 s)" in text
    assert "- w: pickle writes a smaller file than torpor" in text
    assert "pickle loads faster" not in text
