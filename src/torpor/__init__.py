"""torpor: fast, safe save/restore of Python object graphs full of numpy arrays.

    torpor.dump(obj, "state.torpor")
    obj = torpor.load("state.torpor")

See README.md for the API, docs/ARCHITECTURE.md for the packages and
docs/FORMAT.md for the file format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .version import __version__  # noqa: E402

from . import session  # noqa: E402  (torpor.session.save / sdump / standard_metadata)
from .api import dump, dumps, info, load, loads, open, verify  # noqa: E402
from .engine.safety import register_safe_class, unregister_safe_class  # noqa: E402
from .engine.select import IMPLEMENTATION as implementation  # noqa: E402
from .errors import (CorruptFileError, CycleError, FormatError,  # noqa: E402
                     MissingClassError, NotInFileError, RestoreError, TorporError, UnsafeLoadError,
                     UnsupportedObjectError)
from .format.constants import FORMAT_VERSION  # noqa: E402
from .interactive.modules import (dump_module, dump_session, load_module,  # noqa: E402
                                  load_module_asdict, load_session)
from .session import (Session, State, StateManager, open_session,  # noqa: E402
                      register_snapshot_methods, unregister_snapshot_methods)

# The modules' old paths (before the packages) keep working: ``import torpor.state``,
# ``torpor.triggers.DEREGISTER``, ``%load_ext torpor.ipython``.
import sys as _sys  # noqa: E402

from .engine import fallback  # noqa: E402
from .interactive import ipython, modules  # noqa: E402
from .session import state, triggers  # noqa: E402

for _old in ("state", "triggers", "modules", "ipython", "fallback"):
    _sys.modules[f"{__name__}.{_old}"] = globals()[_old]
del _sys, _old

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def __getattr__(name: str) -> object:
    # torpor.Workspace: the workspace Session (torpor.workspace), imported when asked
    # for so that ``import torpor`` stays light
    if name == "Workspace":
        from .workspace import Session as Workspace
        return Workspace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext torpor``: the %torpor_save and %torpor_load magics."""
    from .interactive.ipython import load_ipython_extension as load
    load(ipython)


__all__ = [
    "dump", "dumps", "load", "loads", "open", "info", "verify",
    "TorporError", "FormatError", "CorruptFileError", "UnsafeLoadError",
    "UnsupportedObjectError", "CycleError", "RestoreError", "MissingClassError", "NotInFileError",
    "register_safe_class", "unregister_safe_class",
    "State", "StateManager", "Session", "session", "open_session",
    "register_snapshot_methods", "unregister_snapshot_methods",
    "dump_module", "load_module", "load_module_asdict", "dump_session", "load_session",
    "implementation", "FORMAT_VERSION", "__version__",
]
