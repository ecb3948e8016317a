"""torpor: fast, safe save/restore of Python object graphs full of numpy arrays.

    torpor.dump(obj, "state.torpor")
    obj = torpor.load("state.torpor")

See README.md for the API and docs/FORMAT.md for the file format.
"""

__version__ = "0.1.0"

from ._impl import IMPLEMENTATION as implementation  # noqa: E402
from ._safety import register_safe_class, unregister_safe_class  # noqa: E402
from .api import dump, dumps, info, load, loads, verify  # noqa: E402
from .errors import (CorruptFileError, FormatError, TorporError,  # noqa: E402
                     UnsafeLoadError, UnsupportedObjectError)
from .format import FORMAT_VERSION  # noqa: E402

__all__ = [
    "dump", "dumps", "load", "loads", "info", "verify",
    "TorporError", "FormatError", "CorruptFileError", "UnsafeLoadError",
    "UnsupportedObjectError", "register_safe_class", "unregister_safe_class",
    "implementation", "FORMAT_VERSION", "__version__",
]
