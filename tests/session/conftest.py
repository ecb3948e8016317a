"""Every test here runs on both walkers: sessions go through the engine's
pipeline, so each walker must save and restore them alike."""

import numpy as np
import pytest

import torpor
from session_apps import Counter, Fragile


@pytest.fixture(autouse=True)
def _on_both_walkers(impl):
    return impl


@pytest.fixture
def saved(tmp_path):
    s = torpor.Session("app")
    s.a = Counter(1)
    s.b = Counter(2, arr=[Fragile(), np.ones(100_000)])
    p = tmp_path / "s.torpor"
    s.save(p)
    return p
