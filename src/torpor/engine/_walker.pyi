"""Type stub of the Cython walker ``_ext/_walker.pyx`` (same API as ``fallback``)."""

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from _typeshed import ReadableBuffer

import numpy as np

from .safety import Policy

IMPLEMENTATION: str
#: the compiled values of the generated type codes and frame kinds, by name
CODES: dict[str, int]

class _Writer(Protocol):
    """What ``Encoder`` writes to (a ``format.writer.ContainerWriter``)."""

    def stream_frame(self, data: bytes, /) -> object: ...
    def add_array(self, arr: np.ndarray[Any, Any], fortran: bool, /) -> int: ...
    def add_bytes(self, obj: bytes | bytearray, /) -> int: ...

class Encoder:
    #: "module.qualname" of every global written, in order (values are None)
    globals: dict[str, None]
    def __init__(self, container: _Writer, max_depth: int = ...,
                 reducer_override: Callable[[Any], Any] | None = None,
                 by_value: Any = None) -> None: ...
    @property
    def n_memo(self) -> int: ...
    def encode(self, root: object) -> None: ...
    def path_parts(self) -> list[tuple[Any, str]]: ...
    def path(self) -> str: ...

class Decoder:
    def __init__(self, policy: Policy, payloads: Mapping[int, Any],
                 max_depth: int = ...) -> None: ...
    def decode(self, data: ReadableBuffer) -> Any: ...
    def path(self) -> str: ...
