"""The one exception hierarchy shared by the Cython engine and the pure-Python twin.

Kept in a pure-Python module (as msgpack-python does) so both implementations raise
the very same classes and callers can catch them whichever engine is loaded.
"""

__all__ = [
    "TorporError",
    "FormatError",
    "CorruptFileError",
    "UnsafeLoadError",
    "UnsupportedObjectError",
]


class TorporError(Exception):
    """Base class of every error torpor raises on purpose."""


class FormatError(TorporError):
    """The input is not a torpor file, or uses a format version or feature this
    version of torpor does not know."""


class CorruptFileError(FormatError):
    """The file is a torpor file but is damaged: truncated, a checksum does not
    match, or a length or index points outside the data it was read from."""


class UnsafeLoadError(TorporError):
    """The file refers to a class or callable that loading is not allowed to import
    or call. Nothing from the file has been imported or called when this is raised."""

    def __init__(self, message, names=()):
        super().__init__(message)
        self.names = tuple(names)


class UnsupportedObjectError(TorporError, TypeError):
    """An object in the graph cannot be saved. The message names its type and its
    path inside the graph (for example ``root['models'][3].mesh.handle``)."""

    def __init__(self, message, path=None, obj_type=None):
        super().__init__(message)
        self.path = path
        self.obj_type = obj_type
