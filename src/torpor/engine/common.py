"""Cold helpers both walkers share: the pure-Python walker uses them directly and
the Cython extension imports this module, so error messages, path names and the
rebuilding of reduced objects come from one copy and cannot drift apart.
Nothing here is on a hot path."""

from ..errors import CorruptFileError, CycleError, RestoreError, UnsupportedObjectError, brief
from ..format.constants import (EXT_BYTEARRAY, EXT_BYTEARRAY_OOB, EXT_BYTES_OOB, EXT_DTYPE,
                                EXT_FROZENSET, EXT_GLOBAL, EXT_INST, EXT_NDARRAY,
                                EXT_NDARRAY_INLINE, EXT_NPSCALAR, EXT_OBJARRAY, EXT_REDUCE,
                                EXT_SET, EXT_TUPLE)
from .allowlist import MAX_EQUAL_HASHES, equal_hash_check, equal_hash_error
from .guard import BIG_INT, PLAIN, short_path, work_error
from .frames import (D_ATTRS, D_BYTEARRAY, D_BYTEARRAY_OOB, D_BYTES_OOB, D_DTYPE, D_FROZENSET,
                     D_GLOBAL, D_INST, D_LIST, D_MAP, D_NDARRAY, D_NDARRAY_INLINE, D_NPSCALAR,
                     D_OBJARRAY, D_REDUCE, D_SET, D_TUPLE, F_ATTRS, F_FLAT, F_MAP, F_REDUCE,
                     F_REDUCE_STATE, F_SEQ, F_SET)

#: The decoder frame each marker extension opens.
MARKER_KIND = {
    EXT_TUPLE: D_TUPLE, EXT_SET: D_SET, EXT_FROZENSET: D_FROZENSET,
    EXT_BYTEARRAY: D_BYTEARRAY, EXT_BYTES_OOB: D_BYTES_OOB,
    EXT_BYTEARRAY_OOB: D_BYTEARRAY_OOB, EXT_GLOBAL: D_GLOBAL, EXT_INST: D_INST,
    EXT_REDUCE: D_REDUCE, EXT_NDARRAY: D_NDARRAY, EXT_NDARRAY_INLINE: D_NDARRAY_INLINE,
    EXT_OBJARRAY: D_OBJARRAY, EXT_DTYPE: D_DTYPE, EXT_NPSCALAR: D_NPSCALAR,
}
#: How many elements (after the marker) a frame of each fixed-size kind holds.
FIXED_COUNT = {D_BYTEARRAY: 1, D_BYTES_OOB: 1, D_BYTEARRAY_OOB: 1, D_GLOBAL: 2, D_INST: 2,
               D_NDARRAY: 4, D_NDARRAY_INLINE: 4, D_DTYPE: 1, D_NPSCALAR: 2}

#: How the decoder's frames name the step to their current child (as the encoder's do).
_DECODE_STEP = {D_LIST: F_SEQ, D_TUPLE: F_SEQ, D_MAP: F_MAP, D_ATTRS: F_ATTRS,
                D_SET: F_SET, D_FROZENSET: F_SET, D_REDUCE: F_REDUCE, D_OBJARRAY: F_FLAT}


class Unfilled:
    """The value of a memo slot whose object is named but not yet built."""
    __slots__ = ()

    def __repr__(self):
        return "<unfilled>"


#: The one Unfilled instance.
UNFILLED = Unfilled()


# A class's own attributes, read as the type's slots hold them: no metaclass
# __getattr__ or __getattribute__, no descriptor of the class runs (a safe load
# calls nothing a file did not ask for).
class_mro = type.__dict__["__mro__"].__get__
class_dict = type.__dict__["__dict__"].__get__


def static_attr(cls, name, default=None):
    """What ``name`` is in the first class of ``cls``'s MRO whose dict holds it,
    without running any code of the class: else ``default``."""
    for c in class_mro(cls):
        d = class_dict(c)
        if name in d:
            return d[name]
    return default


class InlineBin:
    """Bytes a walker writes as a MessagePack bin where they stand, even when they
    are large (a numpy scalar's data after its dtype description)."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class ReduceTail:
    """The state, list items and dict items of a reduced object, queued after its
    callable and arguments; written as nils when a cycle already rebuilt the
    object (its rebuild carried them)."""
    __slots__ = ("obj", "rv")

    def __init__(self, obj, rv):
        self.obj = obj
        self.rv = rv

    def items(self):
        """What follows the arguments in the stream: state, list items, dict items
        and, when there is one, the state setter."""
        rv = self.rv
        return [rv[2], rv[3], rv[4]] + ([rv[5]] if rv[5] is not None else [])


def path_step(kind, i, key):
    """The piece of a path (Python syntax) for child ``i`` of an encoder frame of
    ``kind``; ``key`` is the dict key or attribute name being written, if any."""
    if kind == F_SEQ:
        return f"[{i}]"
    if kind == F_SET:
        return f"{{item {i}}}"
    if kind == F_FLAT:
        return f".flat[{i - 3}]" if i >= 3 else ".<array header>"
    if kind == F_MAP:
        return f"[{brief(key)}]" if i % 2 else f".<key {brief(key)}>"
    if kind == F_ATTRS:
        return f".{key}" if i % 2 else f".<attribute name {brief(key)}>"
    if kind == F_REDUCE_STATE:
        return (".<state>", ".<list items>", ".<dict items>", ".<state setter>")[min(i, 3)]
    return (".<reduce callable>", ".<reduce args>")[min(i, 1)]


def decode_path(steps):
    """The path (Python syntax) of the object a decoder is building, from its
    open frames outermost first, each as ``(kind, elements read, pending key)``."""
    out = ["root"]
    for kind, i, key in steps:
        if kind == D_INST:
            if i == 0:
                out.append(".__class__")
            continue                 # its attributes frame names the step
        step_kind = _DECODE_STEP.get(kind)
        if step_kind is None:
            out.append(".<header>")
        else:
            out.append(path_step(step_kind, i, None if key is UNFILLED else key))
    return "".join(out)


def restore_error(exc, what, owner, path):
    """The RestoreError for an exception raised by code that is not torpor's while
    an object was rebuilt (chain it to ``exc``)."""
    name = getattr(owner, "__qualname__", None) or type(owner).__qualname__
    module = getattr(owner, "__module__", None)
    full = f"{module}.{name}" if module else name
    return RestoreError(
        f"{what} {full} raised {type(exc).__name__}: {exc} while rebuilding the object at "
        f"{path}; the file is intact, the code that rebuilds this object failed")


def insert_error(exc, key, container, path):
    """The error for a key that could not go into a set or dict the decoder builds:
    a damaged stream when the key's type is unhashable (no good file holds such a
    set), else the key's own __hash__ or __eq__ failed: a RestoreError."""
    if isinstance(exc, TypeError) and getattr(type(key), "__hash__", None) is None:
        return CorruptFileError(f"object stream is corrupt: the {container} at {path} holds an "
                                f"unhashable {type(key).__name__}")
    t = type(key)
    return RestoreError(
        f"{t.__module__}.{t.__qualname__}.__hash__ or __eq__ raised {type(exc).__name__}: "
        f"{exc} while a key went into the {container} at {path}; the file is intact, the "
        f"code of the key's class failed")


def count_hash(counts, key, container, where, guard=None, units=-1):
    """Count ``key``'s hash in ``counts`` (a dict, or None to start one) and
    return it; refuse a set or map whose keys share one hash value too often (a
    file crafted to make building it quadratic). ``where()`` gives the
    container's path, computed only for an error. A ``guard`` (engine.guard,
    safe loads) is charged for hashing the key and comparing it with the keys
    of equal hash before it. Plain values (ints, floats, bytes...) are not
    charged: the stream holds each of them inline, never by reference, so the
    file pays for every one it hashes (and there are at most MAX_EQUAL_HASHES
    to compare it with). ``units``: what hashing the key costs, if the caller
    knows (the Cython walker measures plain tuples itself)."""
    if guard is not None and type(key) not in PLAIN and \
            not (type(key) is int and -BIG_INT < key < BIG_INT):
        if units < 0:
            units = guard.hash_units(key)
        guard.left -= units
        if guard.left < 0:
            raise work_error(f"hashing a key of the {container} at {short_path(where())}",
                             guard.limit)
    else:
        guard = None
    try:
        h = hash(key)
    except Exception as e:
        raise insert_error(e, key, container, where()) from e
    if counts is None:
        counts = {}
    n = counts.get(h, 0) + 1
    if n > MAX_EQUAL_HASHES:
        raise equal_hash_error(f"the {container} at {where()}")
    counts[h] = n
    if n > 1 and guard is not None:
        guard.left -= units * (n - 1)
        if guard.left < 0:
            raise work_error(f"comparing keys of the {container} at {short_path(where())}",
                             guard.limit)
    return counts


def build_frozenset(items, where, guard=None):
    """The frozenset of the decoded ``items``, checked for equal hashes (and, with
    a ``guard``, charged as count_hash says), with a failing key's error as
    insert_error says."""
    if guard is not None:
        counts = None
        for x in items:
            if type(x) is not str:
                counts = count_hash(counts, x, "frozenset", where, guard)
    elif len(items) > MAX_EQUAL_HASHES:
        equal_hash_check(items, f"the frozenset at {where()}")
    try:
        return frozenset(items)
    except Exception as e:
        bad = next((x for x in items if getattr(type(x), "__hash__", None) is None), items[0])
        raise insert_error(e, bad, "frozenset", where()) from e


def unsupported(obj, path, reason):
    """The error for an object that cannot be saved, naming its type and path."""
    t = type(obj)
    return UnsupportedObjectError(
        f"cannot save {t.__module__}.{t.__qualname__} object at {path}: {reason}",
        path=path, obj_type=t)


def cycle_error(parts, obj, overridden):
    """The CycleError for a cycle through ``reducer_override`` objects that reached
    ``obj`` again; ``parts`` are the walker's ``(owner, step)`` pairs."""
    segments = cycle_segments(parts, obj, overridden)
    names = " -> ".join(type(o).__qualname__ for o, _ in segments)
    return CycleError(f"reference cycle through reducer_override objects: {names}",
                      cycle=segments)


def cycle_segments(parts, obj, overridden):
    """Cut the walker's current path (``(owner, part)`` pairs, outermost first)
    at each overridden object from ``obj`` on: ``[(owner, [part, ...]), ...]``,
    where each owner's parts lead to the next owner and the last back to ``obj``."""
    segments = []
    started = False
    for owner, part in parts:
        if owner is obj:
            started = True
        if not started:
            continue
        if id(owner) in overridden and (not segments or segments[-1][0] is not owner):
            segments.append((owner, []))
        segments[-1][1].append(part)
    return segments

