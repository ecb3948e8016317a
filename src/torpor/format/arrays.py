"""numpy helpers shared by both walkers and the container: how an array's memory is
exposed without copying, and how arrays, scalars and dtypes are rebuilt."""

import numpy as np

from ..errors import CorruptFileError, brief
from .dtypes import decode_dtype, encode_dtype

U8 = np.dtype(np.uint8)


def is_fortran(arr):
    """True when the array is stored in Fortran order (and not also C order)."""
    f = arr.flags
    return bool(f.f_contiguous and not f.c_contiguous)


def byte_view(arr):
    """A flat uint8 view of a C- or F-contiguous array's memory, without copying
    (Fortran arrays are viewed through their transpose, which is C-contiguous)."""
    if not arr.flags.c_contiguous:
        arr = arr.T
    if arr.dtype.itemsize == 0 or arr.size == 0:
        return np.empty(0, U8)
    return arr.reshape(-1).view(U8)


def _whole_items(arr):
    """``arr`` with its items seen as opaque bytes (for structured dtypes), so a
    copy carries the padding between fields too: numpy copies structured items
    field by field, which would leave the padding of the copy uninitialised (then
    files would hold stray process memory, and differ from save to save)."""
    if arr.dtype.names is None:
        return arr
    return arr.view(np.dtype((np.void, arr.dtype.itemsize)))


def contiguous_blocks(arr, limit):
    """Yield C-order contiguous pieces of a non-contiguous array, each at most about
    ``limit`` bytes, whose concatenation is the array's data in C order: the whole
    array is never copied at once."""
    arr = _whole_items(arr)
    if arr.nbytes <= limit or arr.ndim == 0:
        yield byte_view(np.ascontiguousarray(arr))
        return
    if arr.ndim == 1:
        step = max(1, limit // max(1, arr.itemsize))
        for i in range(0, arr.shape[0], step):
            yield byte_view(np.ascontiguousarray(arr[i:i + step]))
        return
    row = arr[0].nbytes if arr.shape[0] else 0
    if row <= limit:
        step = max(1, limit // max(1, row))
        for i in range(0, arr.shape[0], step):
            yield byte_view(np.ascontiguousarray(arr[i:i + step]))
    else:
        for i in range(arr.shape[0]):
            yield from contiguous_blocks(arr[i], limit)


def inline_bytes(arr):
    """The data of a small array, in its own order, as bytes (for inline storage)."""
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(_whole_items(arr))
    return byte_view(arr).tobytes()


def array_from_bytes(data, dtype, shape, fortran):
    arr = np.empty(shape, dtype, order="F" if fortran else "C")
    view = byte_view(arr)
    if len(data) != view.nbytes:
        raise CorruptFileError(
            f"inline array data has {len(data)} bytes; dtype {dtype} and shape {shape} need {view.nbytes}")
    if view.nbytes:
        view[:] = np.frombuffer(data, U8)
    return arr


#: Largest number of bytes an array's shape may describe (numpy's own bound is
#: the largest signed 64-bit size; this leaves room for the dtype's itemsize).
MAX_ARRAY_BYTES = 1 << 62


def check_shape(shape, itemsize=1):
    """The shape as a tuple, if it is a list of at most 64 dimensions whose
    product (zeros aside) times ``itemsize`` numpy can represent."""
    if type(shape) is not list or len(shape) > 64 or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptFileError(f"invalid array shape {brief(shape, 100)}")
    n = max(1, itemsize)
    for d in shape:
        n *= max(1, d)
        if n > MAX_ARRAY_BYTES:
            raise CorruptFileError(f"array shape {brief(shape, 100)} describes more bytes than any "
                                   f"array can hold")
    return tuple(shape)


def scalar_from_bytes(dtype_desc, data):
    dt = decode_dtype(dtype_desc)
    if type(data) is not bytes or len(data) != dt.itemsize:
        raise CorruptFileError(f"a numpy scalar of dtype {dt} has {len(data)!r} bytes of data")
    if dt.itemsize == 0:
        return np.zeros((), dt)[()]
    return np.frombuffer(data, dt)[0]


def scalar_from_items(items):
    """The numpy scalar of an NPSCALAR's two elements, [dtype description, bin].

    torpor 0.1.0 wrote a structured or subarray scalar with its bin *inside* the
    description's list (before the list's items): the list then reads as [bin,
    first items...] and the description's last item stands second. Such files are
    read back too."""
    desc, data = items
    if type(desc) is list and desc and type(desc[0]) is bytes and type(data) is not bytes:
        desc, data = desc[1:] + [data], desc[0]
    return scalar_from_bytes(desc, data)


def dtype_from_desc(desc):
    """A dtype saved on its own (EXT_DTYPE): object fields are allowed here, since
    no raw memory is read through it."""
    return decode_dtype(desc, allow_object=True)


def as_described(arr, desc, shape):
    """The array a section holds, as the stream describes it: ``arr`` itself when
    the descriptions agree, a view with the stream's titles and metadata (which a
    section's meta leaves out) when only those differ, None when they disagree."""
    if list(arr.shape) != shape:
        return None
    have = encode_dtype(arr.dtype)
    if have == desc:
        return arr
    dt = decode_dtype(desc)
    if encode_dtype(dt, layout=True) != encode_dtype(arr.dtype, layout=True):
        return None
    return arr.view(dt)


def scalar_parts(obj):
    """(dtype description, raw bytes) of a non-object numpy scalar."""
    return encode_dtype(obj.dtype), np.asarray(obj).tobytes()


__all__ = ["encode_dtype", "decode_dtype"]
