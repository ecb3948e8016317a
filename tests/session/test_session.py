"""Session: managers, triggers, metadata, save/restore all-or-nothing, combine,
threads, inspection (sdump, open_session, ``torpor dump``) and the examples."""

import io
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import segmentation
import torpor
import viewer
from helpers import Pipe


from session_apps import Counter


def test_attributes_register_state_managers():
    s = torpor.Session("app")
    c = Counter()
    s.counter = c
    assert s.get_state_manager("counter") is c and s.state_managers == {"counter": c}
    s.plain = 3                               # not a manager: not registered
    assert "plain" not in s.state_managers
    s.counter = 5                             # replaced by a non-manager: unregistered
    assert s.get_state_manager("counter") is None
    s.counter = c
    del s.counter
    assert s.state_managers == {} and not hasattr(s, "counter")
    s.add_state_manager("by tag", c)
    assert s.get_state_manager("by tag") is c
    s.remove_state_manager("by tag")
    with pytest.raises(KeyError, match="no state manager"):
        s.remove_state_manager("by tag")
    with pytest.raises(TypeError, match="StateManager API"):
        s.add_state_manager("x", object())
    assert "metadata" not in s.state_managers and isinstance(s.logger, logging.Logger)
    assert s.logger.name.endswith(".app")


def test_init_state_manager_picks_unique_tags():
    s = torpor.Session("app")
    a, b = Counter(), Counter()
    assert a.init_state_manager(s) == "Counter"
    assert b.init_state_manager(s, "Counter") == "Counter_2"
    assert s.state_managers == {"Counter": a, "Counter_2": b}


def test_save_restore_path_stream_and_pipe(tmp_path, impl):
    s = torpor.Session("app")
    s.counter = Counter(7, np.linspace(0, 1, 5, dtype=np.float32))
    for compress in ("lz4", "gzip", None):
        p = tmp_path / f"s-{compress}.torpor"
        s.save(p, compress=compress)
        t = torpor.Session("app")
        t.restore(p)
        assert t.counter.n == 7 and t.counter.arr.dtype == np.float32
        assert np.array_equal(t.counter.arr, s.counter.arr) and t.counter is not s.counter
    pipe = Pipe()
    s.save(pipe)
    t = torpor.Session("app")
    t.restore(Pipe(bytes(pipe.out), piece=1000))
    assert t.counter.n == 7


def test_module_save_adds_suffix_and_is_atomic(tmp_path, impl):
    s = torpor.Session("app")
    s.counter = Counter(1)
    path = torpor.session.save(s, tmp_path / "work", compress="gzip")
    assert path == str(tmp_path / "work.torpor") and os.path.exists(path)
    assert torpor.session.save(s, tmp_path / "keep.ses").endswith("keep.ses")
    old = open(path, "rb").read()

    class Bad(torpor.State):
        def take_snapshot(self, session, flags):
            return {"lock": (i for i in ())}
    s.bad = Counter(2, arr=Bad())
    with pytest.raises(torpor.UnsupportedObjectError, match="generator"):
        torpor.session.save(s, path)
    assert open(path, "rb").read() == old
    assert sorted(os.listdir(tmp_path)) == ["keep.ses", "work.torpor"]
    with pytest.raises(ValueError, match="session version 2"):
        torpor.session.save(s, path, version=3)


def test_triggers_fire_around_save_and_restore(impl):
    s = torpor.Session("app")
    s.counter = Counter(3)
    calls = []
    h = s.triggers.add_handler("begin save session", lambda name, data: calls.append((name, data)))
    s.triggers.add_handler("end save session", lambda name, data: calls.append((name, data)))
    s.triggers.add_handler("begin restore session",
                           lambda name, data: calls.append((name, data.restore_options)))
    s.triggers.add_handler("end restore session", lambda name, data: calls.append(name) or
                           torpor.session.DEREGISTER)

    def broken(name, data):
        raise RuntimeError("handler bug")
    s.triggers.add_handler("end save session", broken)
    b = io.BytesIO()
    s.save(b)                                 # a raising handler is logged, not raised
    assert calls == [("begin save session", s), ("end save session", s)]
    s.triggers.remove_handler(h)
    b.seek(0)
    s.restore(b, combine=True)
    b.seek(0)
    s.restore(b)
    assert calls[2:] == [("begin restore session", {"combine": True}), "end restore session",
                         ("begin restore session", {"combine": False})]
    assert s.restore_options == {}
    with pytest.raises(KeyError, match="no trigger"):
        s.triggers.add_handler("nonexistent", print)
    with pytest.raises(ValueError):
        s.triggers.remove_handler(h)


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_standard_metadata():
    md = torpor.session.standard_metadata(app_name="viewer", app_version="1.2")
    assert md["generator"].startswith("viewer 1.2 (") and md["generator"].endswith(")")
    assert ISO.match(md["created"]) and ISO.match(md["modified"])
    assert isinstance(md["creator"], str) and md["dateCopyrighted"].startswith("\u00a9 ")
    prev = {"created": "2001-01-01T00:00:00Z", "creator": "alice",
            "dateCopyrighted": "\u00a9 2001 alice", "title": "kept"}
    md2 = torpor.session.standard_metadata(prev)
    assert md2["created"] == "2001-01-01T00:00:00Z" and md2["title"] == "kept"
    assert md2["creator"][0] == "alice" and len(md2["creator"]) == 2
    assert md2["dateCopyrighted"][0] == "\u00a9 2001 alice"
    same = torpor.session.standard_metadata({"creator": md["creator"]})
    assert same["creator"] == md["creator"]               # no duplicate entry
    assert prev == {"created": "2001-01-01T00:00:00Z", "creator": "alice",
                    "dateCopyrighted": "\u00a9 2001 alice", "title": "kept"}


def test_metadata_saved_and_metadata_only(tmp_path):
    s = torpor.Session("app")
    s.counter = Counter(1)
    s.metadata["title"] = "my work"
    p = tmp_path / "m.torpor"
    s.save(p)
    assert s.metadata["title"] == "my work" and ISO.match(s.metadata["modified"])
    t = torpor.Session("app")
    t.counter = mine = Counter(9)
    md = t.restore(p, metadata_only=True)
    assert md["title"] == "my work" and md["created"] == s.metadata["created"]
    assert t.counter is mine and mine.n == 9 and t.metadata == {}
    assert torpor.info(p)["metadata"]["session"]["title"] == "my work"


def test_reset_and_restore_resets_managers_not_in_file(impl):
    s = torpor.Session("app")
    s.a = Counter(5)
    s.reset()
    assert s.a.n == 0 and s.a.resets == 1
    src = torpor.Session("app")
    src.a = Counter(2)
    b = io.BytesIO()
    src.save(b)
    s.extra = extra = Counter(4)
    b.seek(0)
    s.restore(b)
    assert s.a.n == 2 and s.extra is extra and extra.n == 0 and extra.resets == 1


def test_plain_load_and_session_restore_refuse_the_wrong_kind_of_file(saved, tmp_path):
    with pytest.raises(torpor.FormatError, match="session file"):
        torpor.load(saved)
    plain = tmp_path / "plain.torpor"
    torpor.dump({"a": 1}, plain)
    with pytest.raises(torpor.FormatError, match="not a session file"):
        torpor.Session("app").restore(plain)


def test_combine_merges_through_restore_options(impl):
    a = viewer.build(2_000, n_structures=2, seed=1)
    b = io.BytesIO()
    a.save(b)
    target = viewer.build(1_000, n_structures=1, seed=2)
    old_models = target.models
    names = [s.name for s in a.models.structures]
    target.models.structures[0].name = names[0]           # force a name collision
    b.seek(0)
    target.restore(b, combine=True)
    got = [s.name for s in target.models.structures]
    assert got == [names[0], f"{names[0]}.2", names[1]]
    assert old_models.structures[0] is target.models.structures[0] and len(old_models.structures) == 1
    assert len(target.selection.picked) == 3


def test_combine_renumbers_segmentation_uids(impl):
    a = segmentation.build(2, seed=1)
    b = io.BytesIO()
    a.save(b)
    target = segmentation.build(1, seed=2)
    n_before = len(target.data.geometries)
    b.seek(0)
    target.restore(b, combine=True)
    uids = [g.uid for g in target.data.geometries]
    assert len(uids) == len(set(uids)) == n_before + len(a.data.geometries)
    assert all("renumbered_from" in g.meta for g in target.data.geometries[n_before:])


def test_two_sessions_save_and_restore_in_two_threads(tmp_path, impl):
    errors = []

    def work(k):
        try:
            for i in range(4):
                s = segmentation.build(2, seed=k * 10 + i)
                p = tmp_path / f"t{k}.torpor"
                s.save(p, include_maps=True)
                t = torpor.Session("segmentation")
                t.restore(p)
                segmentation.check_equal(s, t)
        except BaseException as e:           # reported by the main thread
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


@pytest.mark.parametrize("app", ["viewer", "segmentation"])
def test_examples_roundtrip(app, impl, tmp_path):
    mod = viewer if app == "viewer" else segmentation
    s = mod.build(5_000) if app == "viewer" else mod.build(8)
    p = tmp_path / "e.torpor"
    s.save(p, include_maps=True)
    t = torpor.Session(app)
    t.restore(p)
    mod.check_equal(s, t)


def test_maps_left_out_without_include_maps(impl):
    s = segmentation.build(2)
    b = io.BytesIO()
    s.save(b)
    b.seek(0)
    t = torpor.Session("segmentation")
    t.restore(b)
    segmentation.check_equal(s, t, include_maps=False)
    assert t.volume.data is None


def test_structure_upgrade_from_version_1(impl, monkeypatch):
    s = viewer.build(500, n_structures=1)
    monkeypatch.setattr(viewer.Structure, "version", 1)
    old_snapshot = viewer.Structure.take_snapshot
    monkeypatch.setattr(viewer.Structure, "take_snapshot",
                        lambda self, session, flags: {k: v for k, v in old_snapshot(self, session, flags).items()
                                                      if k != "bfactors"})
    b = io.BytesIO()
    s.save(b)
    monkeypatch.undo()
    b.seek(0)
    t = torpor.Session("viewer")
    t.restore(b)
    st = t.models.structures[0]
    assert np.array_equal(st.bfactors, np.zeros(len(st.coords), np.float32))


def test_save_streams_arrays_without_copying(tmp_path):
    arrays = [np.random.default_rng(i).standard_normal(4 << 20) for i in range(6)]   # 192 MiB
    s = torpor.Session("app")
    s.a = Counter(1, arr=arrays)
    live = sum(a.nbytes for a in arrays)
    tracemalloc.start()
    try:
        s.save(tmp_path / "big.torpor")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < live / 3, (peak, live)


def test_sdump_and_cli_dump(tmp_path, impl, walker_env):
    s = viewer.build(1_000, n_structures=2)
    p = tmp_path / "v.torpor"
    s.save(p)
    out = io.StringIO()
    text = torpor.session.sdump(s, p, output=out)
    assert out.getvalue() == text
    assert "state managers:" in text and "models: @1 viewer.Models" in text
    assert re.search(r"@\d+ viewer.Structure \(version 2\):", text)
    assert "array(float32, shape=(500, 3))" in text
    # the view and the selection name the same structure object as the models
    uid = re.search(r"'center_of': (@\d+) viewer.Structure", text).group(1)
    assert text.count(f"{uid} viewer.Structure") >= 3
    r = subprocess.run([sys.executable, "-m", "torpor", "dump", str(p)], capture_output=True, text=True, env=walker_env)
    assert r.returncode == 0 and r.stdout == text
    outfile = tmp_path / "dump.txt"
    torpor.session.sdump(None, p, output=outfile)
    assert outfile.read_text() == text


def test_open_session_runs_nothing_from_the_file(tmp_path, walker_env):
    mod = tmp_path / "appmod.py"
    mod.write_text(textwrap.dedent("""
        import numpy as np, torpor
        class Thing:
            def __init__(self): self.label = "plain"
        class Doc(torpor.State):
            pass
        class Mgr(torpor.StateManager):
            def reset_state(self, session): pass
    """))
    p = tmp_path / "a.torpor"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np, torpor, appmod
        d = appmod.Doc(); d.arr = np.arange(6.0).reshape(2, 3); d.thing = appmod.Thing()
        s = torpor.Session("app"); s.mgr = appmod.Mgr(); s.mgr.docs = [d, d]
        s.save({str(p)!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=walker_env)
    check = textwrap.dedent(f"""
        import sys, torpor, numpy as np
        tree = torpor.open_session({str(p)!r})
        assert "appmod" not in sys.modules
        mgr = tree["managers"]["mgr"]
        assert isinstance(mgr, torpor.session.NamedObject) and mgr.class_name == "appmod.Mgr"
        a, b = mgr.data["docs"]
        assert a is b and a.class_name == "appmod.Doc" and a.uid in tree["objects"]
        assert np.array_equal(a.data["arr"], np.arange(6.0).reshape(2, 3))
        thing = a.data["thing"]
        assert isinstance(thing, torpor.session.Opaque) and thing.torpor_class == "appmod.Thing"
        assert thing.label == "plain"
        assert tree["app"] == "app" and tree["versions"]["session"] == 2
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=walker_env)
    assert r.stdout.strip() == "ok", r.stderr


def test_save_honours_threads(tmp_path, monkeypatch):
    """Session.save(threads=N) reaches the writer (it was accepted and dropped)."""
    from torpor.format.writer import ContainerWriter
    seen = []
    real = ContainerWriter.__init__

    def spy(self, f, **kw):
        seen.append(kw["threads"])
        real(self, f, **kw)
    monkeypatch.setattr(ContainerWriter, "__init__", spy)
    s = torpor.Session("app")
    s.a = Counter(1)
    s.save(tmp_path / "t.torpor", threads=3)
    s.save(tmp_path / "u.torpor")
    assert seen == [3, None]


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (0, ValueError), ("4", TypeError),
                                        (2.0, TypeError), (True, TypeError)])
def test_save_and_restore_refuse_bad_threads(tmp_path, bad, error):
    s = torpor.Session("app")
    s.a = Counter(1)
    p = tmp_path / "t.torpor"
    with pytest.raises(error, match="threads"):
        s.save(p, threads=bad)
    assert not p.exists()
    s.save(p)
    with pytest.raises(error, match="threads"):
        torpor.Session("app").restore(p, threads=bad)
