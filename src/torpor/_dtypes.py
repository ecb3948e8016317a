"""numpy dtypes as plain data, and back, without eval or pickle.

A dtype is written as
  "<f4"                                   a plain dtype: its ``dtype.str``
  ["sub", base, [shape...]]               a subarray dtype
  ["struct", [names], [fields], [offsets], itemsize, aligned]
                                          a structured dtype, fields recursive
so every non-object dtype, nested structured ones and either byte order included,
comes back with exactly the same layout (offsets, padding and itemsize).
"""

import numpy as np

from .errors import CorruptFileError

_MAX_NEST = 32


def encode_dtype(dt):
    if dt.fields is not None:
        names = list(dt.names)
        fields = [dt.fields[n] for n in names]
        return ["struct", names, [encode_dtype(f[0]) for f in fields],
                [f[1] for f in fields], dt.itemsize, bool(dt.isalignedstruct)]
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return ["sub", encode_dtype(base), list(shape)]
    return dt.str


def decode_dtype(d, _depth=0):
    try:
        return _decode(d, _depth)
    except CorruptFileError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise CorruptFileError(f"invalid dtype description {d!r:.200}: {e}") from None


def _decode(d, depth):
    if depth > _MAX_NEST:
        raise CorruptFileError("a dtype description is nested too deeply")
    if type(d) is str:
        if d[1:2] == "O" or d == "|O":
            raise CorruptFileError("an object dtype cannot describe raw array data")
        dt = np.dtype(d)
        if dt.hasobject:
            raise CorruptFileError("an object dtype cannot describe raw array data")
        return dt
    if type(d) is not list or not d:
        raise CorruptFileError(f"invalid dtype description {d!r:.200}")
    if d[0] == "sub" and len(d) == 3:
        shape = tuple(_dim(x) for x in d[2])
        return np.dtype((_decode(d[1], depth + 1), shape))
    if d[0] == "struct" and len(d) == 6:
        _, names, fields, offsets, itemsize, aligned = d
        if not (len(names) == len(fields) == len(offsets)):
            raise CorruptFileError("a structured dtype has fields of unequal count")
        spec = {"names": [str(n) for n in names],
                "formats": [_decode(f, depth + 1) for f in fields],
                "offsets": [_dim(o) for o in offsets],
                "itemsize": _dim(itemsize)}
        return np.dtype(spec, align=bool(aligned))
    raise CorruptFileError(f"invalid dtype description {d!r:.200}")


def _dim(x):
    if type(x) is not int or x < 0:
        raise CorruptFileError(f"invalid dimension {x!r:.50} in a dtype description")
    return x
