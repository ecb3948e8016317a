"""Frame kinds of the two walkers' explicit stacks.

Both walkers (the Cython one in ``_ext/_walker.pyx`` and ``engine.fallback``) use
these numbers: the encoder's kinds name the step of a path in an error message
(``common.path_step``), the decoder's kinds say what a frame is building. The
Cython build reads this file and the stream's type codes in
``format/constants.py`` to generate ``_ext/_codes.pxd`` (see setup.py), so each
number is written in one place. This module imports nothing: setup.py executes
it on its own.
"""

# Encoder frames: what the children of an open container are.
F_SEQ = 0       # items of a list or tuple, or a small fixed sequence
F_MAP = 1       # keys and values of a dict
F_ATTRS = 2     # names and values of an instance's __dict__
F_REDUCE = 3    # callable, args, then the state, list items and dict items
F_FLAT = 4      # an object array: its header, then its items in memory order
F_SET = 5       # items of a set or frozenset
F_REDUCE_STATE = 6  # a reduced object's state, list items, dict items and state setter

# Decoder frames: what the frame is building.
D_LIST = 0
D_MAP = 1
D_TUPLE = 2
D_SET = 3
D_FROZENSET = 4
D_BYTEARRAY = 5
D_BYTES_OOB = 6
D_BYTEARRAY_OOB = 7
D_GLOBAL = 8
D_INST = 9
D_REDUCE = 10
D_NDARRAY = 11
D_NDARRAY_INLINE = 12
D_OBJARRAY = 13
D_DTYPE = 14
D_NPSCALAR = 15
D_ATTRS = 16
