"""Every test that takes the ``impl`` fixture runs twice: once with the compiled
walker and once with the pure-Python twin (as propcache's tests do)."""

import importlib
import os

import pytest

import torpor
import torpor._impl
from torpor import fallback

IMPLS = ["python"]
try:
    _walker = importlib.import_module("torpor._walker")
    IMPLS.insert(0, "cython")
except ImportError:
    _walker = None


@pytest.fixture(params=IMPLS)
def impl(request, monkeypatch):
    mod = _walker if request.param == "cython" else fallback
    monkeypatch.setattr(torpor._impl, "Encoder", mod.Encoder)
    monkeypatch.setattr(torpor._impl, "Decoder", mod.Decoder)
    monkeypatch.setattr(torpor._impl, "IMPLEMENTATION", mod.IMPLEMENTATION)
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
