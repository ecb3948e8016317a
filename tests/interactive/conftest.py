"""Every test here runs on both walkers: module dumps go through the engine's
pipeline, so each walker must save and load them alike."""

import pytest


@pytest.fixture(autouse=True)
def _on_both_walkers(impl):
    return impl
