"""pytest-benchmark suite: torpor against pickle on the same workloads.

    pytest benchmarks/ --benchmark-only                       (small sizes)
    TORPOR_BENCH_SIZE=full pytest benchmarks/ --benchmark-only (1 GiB / 500,000 atoms)

Ratios come from benchmarks/measure.py, which runs the peers in one process run.
Every benchmark also checks that torpor round-trips its workload, so the suite run
with --benchmark-disable (as CI does) is a correctness check, never a timing one.
"""

import os
import pickle

import numpy as np
import pytest

import torpor
from benchmarks.workloads import WORKLOAD_CLASSES, array_heavy, object_heavy

FULL = os.environ.get("TORPOR_BENCH_SIZE") == "full"


@pytest.fixture(scope="module")
def arrays():
    return array_heavy(1024 if FULL else 16)


@pytest.fixture(scope="module")
def objects():
    return object_heavy(500_000 if FULL else 5_000)


def _check_arrays(a, b):
    assert b["meta"] == a["meta"]
    for k, v in a["volumes"].items():
        np.testing.assert_array_equal(b["volumes"][k], v)
    for g, h in zip(a["geometries"], b["geometries"]):
        assert g.name == h.name and g.color == h.color
        np.testing.assert_array_equal(g.points, h.points)
    for m, n in zip(a["meshes"], b["meshes"]):
        np.testing.assert_array_equal(m.faces, n.faces)


def _check_objects(a, b):
    sa, sb = a["structure"], b["structure"]
    assert len(sb["atoms"]) == len(sa["atoms"])
    for x, y in zip(sa["atoms"][:1000], sb["atoms"][:1000]):
        assert (x.name, x.serial, x.coord) == (y.name, y.serial, y.coord)
    assert sb["atoms"][0].residue is sb["residues"][0] is sb["atoms"][4].residue


@pytest.mark.parametrize("lib", ["torpor", "pickle"])
def test_save_arrays(benchmark, tmp_path, arrays, lib):
    p = tmp_path / "a"
    if lib == "torpor":
        benchmark(torpor.dump, arrays, p)
        _check_arrays(arrays, torpor.load(p, allow=WORKLOAD_CLASSES))
    else:
        def save():
            with open(p, "wb") as f:
                pickle.dump(arrays, f, protocol=5)
        benchmark(save)


@pytest.mark.parametrize("lib", ["torpor", "torpor-mmap", "pickle"])
def test_load_arrays(benchmark, tmp_path, arrays, lib):
    p = tmp_path / "a"
    if lib.startswith("torpor"):
        mm = lib == "torpor-mmap"
        torpor.dump(arrays, p, compress=None if mm else "lz4")
        out = benchmark(torpor.load, p, mmap=mm, allow=WORKLOAD_CLASSES)
        _check_arrays(arrays, out)
    else:
        with open(p, "wb") as f:
            pickle.dump(arrays, f, protocol=5)

        def load():
            with open(p, "rb") as f:
                return pickle.load(f)
        benchmark(load)


@pytest.mark.parametrize("lib", ["torpor", "pickle"])
def test_save_objects(benchmark, objects, lib):
    if lib == "torpor":
        data = benchmark(torpor.dumps, objects)
        _check_objects(objects, torpor.loads(data, allow=WORKLOAD_CLASSES))
    else:
        benchmark(pickle.dumps, objects, protocol=5)


@pytest.mark.parametrize("lib", ["torpor", "pickle"])
def test_load_objects(benchmark, objects, lib):
    if lib == "torpor":
        data = torpor.dumps(objects)
        out = benchmark(torpor.loads, data, allow=WORKLOAD_CLASSES)
        _check_objects(objects, out)
    else:
        data = pickle.dumps(objects, protocol=5)
        benchmark(pickle.loads, data)


# --- sessions (issue: State API) ---------------------------------------------------

@pytest.fixture(scope="module")
def seg_session():
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    import segmentation
    return segmentation, segmentation.build(1024 if FULL else 16)


@pytest.mark.parametrize("lib", ["torpor", "pickle"])
def test_session_save(benchmark, tmp_path, seg_session, lib):
    mod, s = seg_session
    p = tmp_path / "s"
    if lib == "torpor":
        benchmark(s.save, p, include_maps=True)
        t = torpor.Session("segmentation")
        t.restore(p)
        mod.check_equal(s, t)
    else:
        def save():
            with open(p, "wb") as f:
                pickle.dump(s.state_managers, f, protocol=5)
        benchmark(save)


@pytest.mark.parametrize("lib", ["torpor", "pickle"])
def test_session_restore(benchmark, tmp_path, seg_session, lib):
    mod, s = seg_session
    p = tmp_path / "s"
    if lib == "torpor":
        s.save(p, include_maps=True)

        def restore():
            t = torpor.Session("segmentation")
            t.restore(p)
            return t
        mod.check_equal(s, benchmark(restore))
    else:
        with open(p, "wb") as f:
            pickle.dump(s.state_managers, f, protocol=5)

        def load():
            with open(p, "rb") as f:
                return pickle.load(f)
        benchmark(load)


# --- State objects that point at each other (issue 15: benchmarks/session_graph.py) ---

@pytest.fixture(scope="module")
def graph_session():
    from benchmarks.session_graph import SIZES, build
    return build(*SIZES["full" if FULL else "small"])


@pytest.mark.parametrize("lib", ["torpor", "pickle"])
@pytest.mark.parametrize("op", ["save", "restore"])
def test_session_graph(benchmark, tmp_path, graph_session, op, lib):
    from benchmarks.session_graph import check, measure_fns
    save, load = measure_fns(graph_session, lib, tmp_path)
    if op == "save":
        benchmark(save)
    else:
        save()
        check(graph_session.molecules, benchmark(load))


# --- module dumps (issue: dill's API) ------------------------------------------------

@pytest.fixture(scope="module")
def namespace():
    from benchmarks.measure_module import build
    return build(500 if FULL else 8, 500_000 if FULL else 5_000)


@pytest.mark.parametrize("lib", ["torpor", "dill"])
def test_module_save(benchmark, tmp_path, namespace, lib):
    import sys
    import types
    p = tmp_path / "m"
    if lib == "torpor":
        benchmark(torpor.dump_module, p, module=namespace)
        back = types.ModuleType("back")
        torpor.load_module(p, module=back, trusted=True, allow=WORKLOAD_CLASSES)
        _check_objects(namespace.models, back.models)
        assert back.analysis.run(np.ones(3)) == {"run 1": 0.0}
        assert type(back.analysis).method == "least squares"
    else:
        import dill
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
        benchmark(dill.dump_module, str(p), module=namespace)


@pytest.mark.parametrize("lib", ["torpor", "dill"])
def test_module_load(benchmark, tmp_path, namespace, lib):
    import sys
    import types
    p = tmp_path / "m"
    if lib == "torpor":
        torpor.dump_module(p, module=namespace)
        benchmark(lambda: torpor.load_module(p, module=types.ModuleType("t"), trusted=True,
                                             allow=WORKLOAD_CLASSES))
    else:
        import dill
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
        dill.dump_module(str(p), module=namespace)
        benchmark(lambda: dill.load_module(str(p), module=types.ModuleType("bench_ns")))
