"""torpor: fast, safe save/restore of Python object graphs full of numpy arrays.

    torpor.dump(obj, "state.torpor")
    obj = torpor.load("state.torpor")

See README.md for the API and docs/FORMAT.md for the file format.
"""

__version__ = "0.1.0"

from ._impl import IMPLEMENTATION as implementation  # noqa: E402
from ._safety import register_safe_class, unregister_safe_class  # noqa: E402
from .api import dump, dumps, info, load, loads, verify  # noqa: E402
from .errors import (CorruptFileError, CycleError, FormatError, RestoreError,  # noqa: E402
                     TorporError, UnsafeLoadError, UnsupportedObjectError)
from .format import FORMAT_VERSION  # noqa: E402
from .state import (State, StateManager, register_snapshot_methods,  # noqa: E402
                    unregister_snapshot_methods)
from . import session  # noqa: E402  (torpor.session.save / sdump / standard_metadata)
from .session import Session, open_session  # noqa: E402
from .modules import (dump_module, dump_session, load_module,  # noqa: E402
                      load_module_asdict, load_session)


def load_ipython_extension(ipython):
    """``%load_ext torpor``: the %torpor_save and %torpor_load magics."""
    from .ipython import load_ipython_extension as load
    load(ipython)

__all__ = [
    "dump", "dumps", "load", "loads", "info", "verify",
    "TorporError", "FormatError", "CorruptFileError", "UnsafeLoadError",
    "UnsupportedObjectError", "CycleError", "RestoreError",
    "register_safe_class", "unregister_safe_class",
    "State", "StateManager", "Session", "session", "open_session",
    "register_snapshot_methods", "unregister_snapshot_methods",
    "dump_module", "load_module", "load_module_asdict", "dump_session", "load_session",
    "implementation", "FORMAT_VERSION", "__version__",
]
