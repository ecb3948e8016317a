"""Every test here runs on both walkers: sessions and module dumps go through
the engine's pipeline, so each walker must save and restore them alike."""

import pytest


@pytest.fixture(autouse=True)
def _on_both_walkers(impl):
    return impl
