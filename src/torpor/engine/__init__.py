"""The object-graph engine: the two walkers (the Cython extension ``_walker`` and
its pure-Python twin ``fallback``, chosen by ``select``), how objects are taken
apart and rebuilt (reduce, common), what a load may import (safety), and the one
entry the rest of torpor calls (pipeline)."""
