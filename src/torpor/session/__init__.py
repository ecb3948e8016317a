"""Sessions after UCSF ChimeraX: the State API (state), the Session that holds an
application's state managers (core), session files (files), triggers.

    session = torpor.Session("viewer")
    session.models = Models()            # a StateManager: registered under "models"
    session.save("work.torpor")
    torpor.Session("viewer").restore("work.torpor")

``torpor.session.save``, ``sdump`` and ``standard_metadata`` are the
module-level functions of ChimeraX's ``chimerax.core.session``.
"""

from .core import (SUFFIX, TRIGGERS, Session, save, sdump, standard_metadata)
from .files import SESSION_VERSION, NamedObject, Opaque, open_session
from .state import (State, StateManager, register_snapshot_methods,
                    unregister_snapshot_methods)
from .triggers import DEREGISTER, TriggerHandler, TriggerSet

__all__ = ["Session", "save", "standard_metadata", "sdump", "open_session", "SUFFIX",
           "SESSION_VERSION", "NamedObject", "Opaque", "TRIGGERS", "State", "StateManager",
           "register_snapshot_methods", "unregister_snapshot_methods", "TriggerSet",
           "TriggerHandler", "DEREGISTER"]
