"""Every test that takes the ``impl`` fixture runs twice: once with the compiled
walker and once with the pure-Python twin (as propcache's tests do)."""

import importlib
import os

import pytest

import torpor
import torpor.engine.select
from torpor.engine import fallback

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
