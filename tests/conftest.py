"""Every test that takes the ``impl`` fixture runs twice: once with the compiled
walker and once with the pure-Python twin (as propcache's tests do)."""

import copyreg
import importlib
import os

import pytest

import torpor
import torpor.engine.select
from torpor.engine import fallback

#: copyreg as the interpreter starts. Importing distributed (tests/test_dask.py, at
#: collection) runs tblib's pickling_support.install(), which registers a reducer in
#: copyreg for every exception class there is, for the rest of the process; torpor
#: honours copyreg as pickle does, so every other module's tests run without those
#: (only tblib's entries that were not there at the start are taken out, and put back).
_COPYREG = dict(copyreg.dispatch_table)


@pytest.fixture(autouse=True)
def _copyreg_without_tblib(request):
    if request.module.__name__.endswith("test_dask"):
        yield                       # distributed needs its reducers while its cluster runs
        return
    table = copyreg.dispatch_table
    taken = {cls: f for cls, f in list(table.items())
             if cls not in _COPYREG
             and getattr(getattr(f, "func", f), "__module__", "").startswith("tblib")}
    for cls in taken:
        del table[cls]
    try:
        yield
    finally:
        table.update(taken)


IMPLS = ["python"]
_walker = None
if not os.environ.get("TORPOR_PUREPYTHON"):
    try:
        _walker = importlib.import_module("torpor.engine._walker")
        IMPLS.insert(0, "cython")
    except ImportError:
        if os.environ.get("TORPOR_REQUIRE_EXTENSION"):
            raise


@pytest.fixture(params=IMPLS)
def impl(request, monkeypatch):
    """The walker under test, installed where the pipeline looks it up."""
    mod = _walker if request.param == "cython" else fallback
    monkeypatch.setattr(torpor.engine.select, "Encoder", mod.Encoder)
    monkeypatch.setattr(torpor.engine.select, "Decoder", mod.Decoder)
    monkeypatch.setattr(torpor.engine.select, "IMPLEMENTATION", mod.IMPLEMENTATION)
    return mod


@pytest.fixture
def roundtrip(impl):
    """dumps + loads with the implementation under test."""
    def rt(obj, **kw):
        load_kw = {k: kw.pop(k) for k in ("trusted", "allow") if k in kw}
        return torpor.loads(torpor.dumps(obj, **kw), **load_kw)
    return rt


def pytest_report_header(config):
    return [f"torpor walker: {torpor.implementation}; tested implementations: {IMPLS}; "
            f"TORPOR_REQUIRE_EXTENSION={os.environ.get('TORPOR_REQUIRE_EXTENSION', '')}"]


@pytest.fixture
def walker_env(impl):
    """The environment for a subprocess that must use the walker under test."""
    env = dict(os.environ)
    env.pop("TORPOR_PUREPYTHON", None)
    if impl is fallback:
        env["TORPOR_PUREPYTHON"] = "1"
        env.pop("TORPOR_REQUIRE_EXTENSION", None)
    return env
