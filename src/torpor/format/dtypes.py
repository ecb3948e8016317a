"""numpy dtypes as plain data, and back, without eval or pickle.

A dtype is written as
  "<f4"                                   a plain dtype: its ``dtype.str``
  ["sub", base, [shape...]]               a subarray dtype
  ["struct", [names], [fields], [offsets], itemsize, aligned]
                                          a structured dtype, fields recursive
  ["struct", ..., aligned, [titles]]      the same with field titles (a title or
                                          nil per field), when any field has one
  ["record", dtype]                       the same dtype with ``numpy.record`` as
                                          its scalar type (record arrays' dtypes)
  ["meta", dtype, {metadata}]             a dtype with ``dtype.metadata``
so every non-object dtype, nested structured ones and either byte order included,
comes back with exactly the same layout (offsets, padding and itemsize), titles,
scalar type and metadata. The layout alone (``layout=True``: no titles, no
record type, no metadata) is what
a section's meta records: it is all a reader needs to place the bytes, and it is
plain MessagePack whatever the metadata holds.
"""

import re

import numpy as np

from ..errors import CorruptFileError, brief

_MAX_NEST = 32
#: numpy's array-interface typestr: byte order, kind, size, a datetime unit
_TYPESTR = re.compile(r"^[<>|][biufcmMSUVO]\d*(\[\d*[A-Za-z]+\])?$")


def encode_dtype(dt, layout=False):
    """The description of ``dt``; ``layout=True`` leaves out titles, the record
    type and metadata."""
    md = None if layout else dt.metadata
    if dt.fields is not None:
        names = list(dt.names)
        fields = [dt.fields[n] for n in names]
        desc = ["struct", names, [encode_dtype(f[0], layout) for f in fields],
                [f[1] for f in fields], dt.itemsize, bool(dt.isalignedstruct)]
        if not layout and any(len(f) > 2 for f in fields):
            desc.append([f[2] if len(f) > 2 else None for f in fields])
    elif dt.subdtype is not None:
        base, shape = dt.subdtype
        desc = ["sub", encode_dtype(base, layout), list(shape)]
    else:
        desc = dt.str
    if not layout and dt.type is np.record:
        desc = ["record", desc]
    if md:
        desc = ["meta", desc, dict(md)]
    return desc


def decode_dtype(d, allow_object=False):
    """The dtype a description stands for. Object dtypes (whose items are
    pointers) are refused unless ``allow_object``: raw array data never holds
    them, only a dtype saved on its own may."""
    try:
        return _decode(d, 0, allow_object)
    except CorruptFileError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, MemoryError) as e:
        raise CorruptFileError(f"invalid dtype description {brief(d, 200)}: {type(e).__name__}: {e}") from None


def _decode(d, depth, allow_object):
    if depth > _MAX_NEST:
        raise CorruptFileError("a dtype description is nested too deeply")
    if type(d) is str:
        if not _TYPESTR.match(d):
            raise CorruptFileError(f"{brief(d)} is not a numpy typestr (docs/FORMAT.md, dtypes)")
        dt = np.dtype(d)
        if dt.hasobject and not allow_object:
            raise CorruptFileError("an object dtype cannot describe raw array data")
        return dt
    if type(d) is not list or not d:
        raise CorruptFileError(f"invalid dtype description {brief(d, 200)}")
    if d[0] == "sub" and len(d) == 3:
        shape = tuple(_dim(x) for x in d[2])
        return np.dtype((_decode(d[1], depth + 1, allow_object), shape))
    if d[0] == "struct" and len(d) in (6, 7):
        names, fields, offsets, itemsize, aligned = d[1:6]
        if not (len(names) == len(fields) == len(offsets)):
            raise CorruptFileError("a structured dtype has fields of unequal count")
        if not all(type(n) is str for n in names):
            raise CorruptFileError("a structured dtype's field names are not strings")
        spec = {"names": list(names),
                "formats": [_decode(f, depth + 1, allow_object) for f in fields],
                "offsets": [_dim(o) for o in offsets],
                "itemsize": _dim(itemsize)}
        if len(d) == 7:
            titles = d[6]
            if type(titles) is not list or len(titles) != len(names) \
                    or not all(t is None or type(t) is str for t in titles):
                raise CorruptFileError("a structured dtype's titles do not match its fields")
            spec["titles"] = titles
        return np.dtype(spec, align=bool(aligned))
    if d[0] == "record" and len(d) == 2:
        return np.dtype((np.record, _decode(d[1], depth + 1, allow_object)))
    if d[0] == "meta" and len(d) == 3:
        if type(d[2]) is not dict:
            raise CorruptFileError("a dtype's metadata is not a map")
        return np.dtype(_decode(d[1], depth + 1, allow_object), metadata=d[2])
    raise CorruptFileError(f"invalid dtype description {brief(d, 200)}")


def _dim(x):
    if type(x) is not int or x < 0 or x > 1 << 62:
        raise CorruptFileError(f"invalid dimension {brief(x, 50)} in a dtype description")
    return x
