"""State classes the session tests share (importable by name, as applications'
classes are)."""

import numpy as np

import torpor


class Counter(torpor.StateManager):
    def __init__(self, n=0, arr=None):
        self.n = n
        self.arr = np.arange(4) if arr is None else arr
        self.resets = 0

    def reset_state(self, session):
        self.n = 0
        self.resets += 1


class Fragile(torpor.State):
    fail = False

    @classmethod
    def restore_snapshot(cls, session, data):
        if cls.fail:
            raise ValueError("cannot rebuild the GPU texture")
        return super().restore_snapshot(session, data)


class Other:
    """A plain class (not State) held in snapshot data."""
