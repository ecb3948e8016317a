"""Chooses the walker at import time, as msgpack-python does: the Cython extension
``torpor.engine._walker`` unless it is missing or ``TORPOR_PUREPYTHON`` is set, in
which case the pure-Python twin ``torpor.engine.fallback``. With
``TORPOR_REQUIRE_EXTENSION`` set, a missing extension is an ImportError instead
(CI sets it, so a broken build cannot pass as the pure-Python twin)."""

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Both walkers have one API; type checkers see the compiled one's (_walker.pyi).
    from ._walker import IMPLEMENTATION, Decoder, Encoder
elif os.environ.get("TORPOR_PUREPYTHON"):
    from .fallback import IMPLEMENTATION, Decoder, Encoder
else:
    try:
        from ._walker import IMPLEMENTATION, Decoder, Encoder
    except ImportError as _e:
        if os.environ.get("TORPOR_REQUIRE_EXTENSION"):
            raise ImportError(
                f"TORPOR_REQUIRE_EXTENSION is set but the compiled walker does not import: {_e}") from _e
        from .fallback import IMPLEMENTATION, Decoder, Encoder

__all__ = ["IMPLEMENTATION", "Encoder", "Decoder"]
