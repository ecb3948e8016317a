"""Bounds on what one safe load may make the interpreter do: work and nesting.

The allow-list (``allowlist``) decides *what* a file may build; this module
bounds *how much* a file can make of what it holds. Two attacks need it, both
built from references (the object stream names every shared object once, so a
file can use one object many times for the price of a few bytes):

- **Work**: a chain of tuples each holding the previous one twice hashes in
  exponential time; ``str()`` of a list shared the same way prints an
  exponentially long string; a call whose argument is one big shared list runs
  (and copies it) once per reference. A ``LoadGuard`` holds a budget of work
  units proportional to the input (``WORK_PER_BYTE`` per byte of stream and
  payload, plus ``WORK_FLOOR``). Every hash of a non-string key, every call the
  file makes and every state it applies spends what it will cost, measured
  *before* it runs by a walk that stops as soon as the budget is gone, so
  measuring never costs more than the budget either. Data torpor wrote uses a
  small part of it: a file pays for each item once.
- **Nesting**: CPython hashes tuples and frees object arrays (and C containers
  such as deques) recursively on the C stack. A few hundred kilobytes of
  tuples nested 160,000 deep, or object arrays 5,000 deep, crash the process
  when a set hashes them or when they are freed. The guard gives every such
  object its *stack cost* (the deepest chain of them below it, each level
  weighted by the stack it takes) and refuses any above ``MAX_NESTING``.
  Lists, dicts, sets, frozensets and instances of Python classes break a chain:
  CPython frees them through its "trashcan" (which defers deep frees), and a
  frozenset hashes from the stored hashes of its items.

Trusted loads have no guard: their objects cost what the program that saved
them paid.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..errors import UnsafeLoadError
from .allowlist import SAFE
from .reduce import HEAPTYPE

#: Work units a safe load may spend per byte of input (object stream plus payloads).
WORK_PER_BYTE = 8
#: Work units every safe load may spend, however small the file.
WORK_FLOOR = 1 << 20
#: Most stack cost (see NEST_*) a built object may have: about 50 bytes of C stack
#: a unit, so the deepest allowed chain needs some 200 KiB, well inside the
#: smallest thread stacks in use (512 KiB on macOS).
MAX_NESTING = 4096
#: Stack cost of one level: a tuple (hashed recursively), an object array (freed
#: recursively, with a frame some 30 times larger), any other object of a C type
#: built by a call (a deque or slice: freed recursively).
NEST_TUPLE, NEST_OBJARRAY, NEST_BUILT = 1, 32, 4
#: Largest int str() may print in safe mode (Python 3.10 before 3.10.7 has no
#: limit of its own, and printing an int is quadratic in its digits).
MAX_PRINTED_INT_BITS = 14_300

#: Ints inside (-BIG_INT, BIG_INT) hash in a step or two.
BIG_INT = 1 << 64
_LEAF = frozenset({int, float, bool, type(None), complex, str, bytes, bytearray})
#: Values whose hash costs nothing worth charging: fixed-size ones, and str and
#: bytes, which cache their hash. (An int is cheap only when small: a call such
#: as int(x) returns a big int the file can then name by reference.)
PLAIN = frozenset({float, bool, type(None), complex, str, bytes})
_SEQUENCES = (list, tuple, set, frozenset, deque)
# never recorded in LoadGuard.nest (they break a chain): their stack cost is 0
_FLAT = _LEAF | {list, dict, set, frozenset}
_ndarray = np.ndarray


def input_size(stream: Any, payloads: dict[int, Any]) -> int:
    """Bytes a load decodes: the object stream and every payload section."""
    size = len(stream)
    for data in payloads.values():
        size += data.nbytes if isinstance(data, _ndarray) else len(data)
    return size


def short_path(path: str, keep: int = 60) -> str:
    """A graph path cut in the middle when it is long (deep chains make paths of
    thousands of steps)."""
    if len(path) <= 2 * keep + 20:
        return path
    return f"{path[:keep]}...{path[-keep:]} ({path.count('[') + path.count('.'):,} steps)"


def work_error(what: str, limit: int) -> UnsafeLoadError:
    return UnsafeLoadError(
        f"{what} would take more work than the file pays for (a safe load may do "
        f"{limit:,} units of work for this file, about {WORK_PER_BYTE} per byte it "
        f"holds): the file repeats shared objects to make the load stall or balloon. "
        f"torpor never writes such a file. If you trust it, load it with trusted=True.", [])


def nesting_error(what: str, depth: int) -> UnsafeLoadError:
    return UnsafeLoadError(
        f"{what} nests tuples, object arrays or other C containers {depth:,} units deep "
        f"(at most {MAX_NESTING:,} in safe mode; an object array counts {NEST_OBJARRAY}): "
        f"CPython hashes and frees them recursively, and a deep enough chain crashes "
        f"the interpreter. If you trust the file, load it with trusted=True.", [])


class LoadGuard:
    """The work budget and nesting record of one safe load (see the module)."""

    __slots__ = ("limit", "left", "nest", "restricted")

    def __init__(self, size: int, restricted: Callable[[type], bool] = lambda cls: False) -> None:
        self.limit = WORK_PER_BYTE * size + WORK_FLOOR
        self.left = self.limit
        # restricted(cls): the class is one the default allow-list lets a file
        # build (not one the caller allowed): its objects take no state but their own
        self.restricted = restricted
        # id -> stack cost, for the built objects that have one (a tuple of plain
        # items is not recorded: its cost is NEST_TUPLE). The memo keeps every
        # recorded object alive, so an id names one object for the whole load.
        self.nest: dict[int, int] = {}

    # -- work -----------------------------------------------------------------
    def spend(self, units: int, what: str | Callable[[], str]) -> None:
        """Spend ``units``; ``what`` (or what it returns) names the work for the error."""
        self.left -= units
        if self.left < 0:
            raise work_error(what if isinstance(what, str) else what(), self.limit)

    def hash_units(self, x: Any) -> int:
        """What hashing ``x`` costs (tuples hash their items every time; str,
        bytes and frozenset cache their hash), at most ``left + 1``."""
        t = type(x)
        if t is int:
            return 1 + int(x).bit_length() // 64
        if t is tuple:
            # the common key, a tuple of plain values, without the walk
            for y in x:
                ty = type(y)
                if ty is tuple or ty is slice or (ty is int and not -BIG_INT < y < BIG_INT):
                    return self.walk(x, False)
            return 1 + len(x)
        if t is not slice and t is not range:
            return 1
        return self.walk(x, False)

    def print_units(self, x: Any) -> int:
        """What ``str(x)`` costs: it prints every shared part again."""
        return self.walk(x, True) * 4

    def walk(self, root: Any, printing: bool) -> int:
        """Units to hash ``root`` (tuples and slices are walked) or, ``printing``,
        to print it (every container is walked), at most ``left + 1``."""
        cap = self.left + 1
        total = 0
        todo = [root]
        while todo:
            x = todo.pop()
            t = type(x)
            if t in _LEAF:
                if t is int:
                    bits = x.bit_length()
                    if printing and bits > MAX_PRINTED_INT_BITS:
                        raise UnsafeLoadError(
                            f"the file prints an int of {bits:,} bits with str() (at most "
                            f"{MAX_PRINTED_INT_BITS:,} in safe mode: printing is quadratic "
                            f"in its digits). If you trust the file, load it with "
                            f"trusted=True.", [])
                    total += 1 + bits // 64
                elif printing and (t is str or t is bytes or t is bytearray):
                    total += 1 + len(x) // 16
                else:
                    total += 1
            elif t is tuple or t is slice or t is range or (printing and isinstance(x, _SEQUENCES)):
                items = (x.start, x.stop, x.step) if t is slice or t is range else x
                total += 1 + len(items)
                if total > cap:
                    return total
                todo.extend(items)
            elif printing and isinstance(x, dict):
                total += 1 + 2 * len(x)
                if total > cap:
                    return total
                todo.extend(x.keys())
                todo.extend(x.values())
            elif printing and isinstance(x, _ndarray) and x.dtype.hasobject:
                total += 1 + x.size
                if total > cap:
                    return total
                todo.extend(x.ravel().tolist())
            else:
                total += 1
            if total > cap:
                return total
        return total

    def call(self, func: Any, args: tuple[Any, ...]) -> None:
        """Before the file calls ``func(*args)``: the call reads each argument
        (containers one level down, hashing their items); ``str()`` prints it."""
        if func is str and args:
            units = self.print_units(args[0]) + len(args)
        else:
            units = self.argument_units(args)
        self.left -= units
        if self.left < 0:
            raise work_error(f"calling {getattr(func, '__qualname__', func)!s:.80}", self.limit)

    def described(self, desc: Any) -> None:
        """Before a dtype is built from a structured description (one description
        may be shared by many arrays)."""
        if type(desc) is list:
            self.spend(self.walk(desc, True), "building the dtypes the file describes")

    def argument_units(self, args: Iterable[Any]) -> int:
        """What reading ``args`` costs: containers and the lists inside them (a
        dict's key/value pairs) are read, and what they hold may be hashed."""
        units = 1
        for a in args:
            t = type(a)
            if t in _LEAF:
                units += 1 + (len(a) if t is str or t is bytes or t is bytearray
                              else a.bit_length() // 64 if t is int else 0)
            elif t is tuple:
                units += self.walk(a, False)
            elif isinstance(a, dict):
                units += 1 + 2 * len(a)
            elif isinstance(a, (list, set, frozenset, deque)):
                units += 1 + len(a)
                for x in a:
                    tx = type(x)
                    if tx is list:            # a (key, value) pair, or a row
                        units += 1 + len(x)
                        for y in x:
                            if type(y) not in PLAIN:
                                units += self.hash_units(y)
                                if units > self.left:
                                    return units
                    elif tx not in PLAIN:
                        units += self.hash_units(x)
                    if units > self.left:
                        return units
            else:
                units += 1
            if units > self.left:
                return units
        return units

    def state(self, obj: Any, state: Any, listitems: Optional[list[Any]],
              dictitems: Optional[dict[Any, Any]], where: Callable[[], str]) -> None:
        """Before a reduced object gets its state: list items go only into lists and
        deques (a deque's reduction uses them), dict items only into dicts (pickle puts them into anything with ``extend``
        or ``__setitem__``: a file could slice-assign a range into a list), and
        applying them costs what reading them does."""
        if listitems and not isinstance(obj, (list, deque)):
            raise UnsafeLoadError(
                f"the file appends list items to the object at {short_path(where())}, a {type(obj).__qualname__}, not a "
                f"list (safe loading applies list items to lists and deques only). torpor never "
                f"writes this. If you trust the file, load it with trusted=True.", [])
        if dictitems and not isinstance(obj, dict):
            raise UnsafeLoadError(
                f"the file sets dict items on the object at {short_path(where())}, a {type(obj).__qualname__}, not a "
                f"dict (safe loading applies dict items to dicts only). torpor never "
                f"writes this. If you trust the file, load it with trusted=True.", [])
        applying = 0
        if state is not None and self.restricted(type(obj)):
            applying = check_default_state(obj, state, where)
        if type(state) in _LEAF and not listitems and not dictitems:
            self.left -= 1 + applying
        else:
            self.left -= self.argument_units((state, listitems, dictitems)) + applying
        if self.left < 0:
            raise work_error(f"restoring the state of the object at {short_path(where())}",
                             self.limit)

    # -- nesting --------------------------------------------------------------
    def cost_of(self, x: Any) -> int:
        c = self.nest.get(id(x))
        if c is not None:
            return c
        return NEST_TUPLE if type(x) is tuple else 0

    def opened(self, obj: Any) -> None:
        """An object array or an object of a C type exists, and what it holds is
        still arriving: until it is finished its cost is unknown, so anything
        that refers to it meanwhile (a cycle, or a chain built through objects
        still open) is charged as if it were already as deep as allowed."""
        self.nest[id(obj)] = MAX_NESTING

    def _record(self, obj: Any, cost: int, where: Callable[[], str]) -> None:
        if cost > MAX_NESTING:
            raise nesting_error(f"the object at {short_path(where())}", cost)
        self.nest[id(obj)] = cost

    def deepest(self, items: Iterable[Any], owner: Any, skip: frozenset[Any] = _LEAF) -> int:
        """The largest stack cost among ``items`` whose type is not in ``skip``
        (``owner`` itself, a cycle, left out), or -1 if there is none."""
        deepest = -1
        for x in items:
            if type(x) not in skip and x is not owner:
                c = self.cost_of(x)
                if c > deepest:
                    deepest = c
        return deepest

    def built_tuple(self, t: tuple[Any, ...], where: Callable[[], str]) -> None:
        """A tuple with items that are not plain values was built."""
        deepest = self.deepest(t, t, _FLAT)
        if deepest > 0:
            self._record(t, deepest + NEST_TUPLE, where)

    def built_objarray(self, arr: Any, where: Callable[[], str]) -> None:
        deepest = self.deepest(arr.ravel(order="K").tolist(), arr)
        self._record(arr, max(deepest, 0) + NEST_OBJARRAY, where)

    def built_reduced(self, obj: Any, args: tuple[Any, ...], state: Any,
                      listitems: Optional[list[Any]], dictitems: Optional[dict[Any, Any]],
                      where: Callable[[], str]) -> None:
        """An object a call built, with its state applied. Instances of Python
        classes are freed through the trashcan and break a chain; an object of a
        C type may hold what it was built from (a deque its list's items) and free
        it recursively."""
        if type(obj).__flags__ & HEAPTYPE or isinstance(obj, type):
            # (a class, which only a loader the caller allowed builds: its dict
            # is freed through the trashcan like an instance's)
            return
        self.nest.pop(id(obj), None)  # its provisional cost (opened)
        # -1: it holds only plain values, nothing to record
        deepest = max((self.deepest(_one_level(part), obj)
                       for part in (args, state, listitems, dictitems) if type(part) not in _LEAF),
                      default=-1)
        if deepest >= 0:
            self._record(obj, deepest + (NEST_OBJARRAY if isinstance(obj, _ndarray) else NEST_BUILT),
                         where)


def _one_level(part: Any) -> list[Any]:
    """What ``part`` (an argument tuple, a state, list or dict items) holds, and
    what those hold one level further: what the object built from it may keep."""
    out: list[Any] = []
    t = type(part)
    if t is tuple or t is list:
        items = list(part)
    elif t is dict:
        items = list(part.values())
    else:
        return [] if part is None else [part]
    for x in items:
        out.append(x)
        tx = type(x)
        if tx is list or tx is tuple:
            out.extend(x)
        elif tx is dict:
            out.extend(x.values())
    return out


def check_default_state(obj: Any, state: Any, where: Callable[[], str]) -> int:
    """The state of an object of an allow-listed class: none, unless its entry
    has a state check (``allowlist.Entry.state``: a UUID's int, numpy's array and
    random generator states, an exception's attributes), which refuses any other
    and returns what applying it costs. A file could otherwise set any attribute
    or slot of a path, a UUID or an enum member (a process-wide object) to
    anything: a UUID's hash is its int's, a path compares its cached parts."""
    cls = type(obj)
    entry = SAFE.get(f"{cls.__module__}.{cls.__qualname__}")
    if entry is not None and entry.state is not None:
        return entry.state(obj, state)
    raise UnsafeLoadError(
        f"the file gives the {cls.__module__}.{cls.__qualname__} at {short_path(where())} a state "
        f"of its own choosing (safe loading builds allow-listed classes from their arguments "
        f"only). torpor never writes this. If you trust the file, load it with trusted=True.", [])


class WorkAccount:
    """The work the safe partial loads of one open file may still do, together
    (engine/partial.py): each rebuild's guard starts with what is left, so loading
    a file in many parts never does more than loading it whole may."""

    def __init__(self, size: int) -> None:
        self.left = WORK_PER_BYTE * size + WORK_FLOOR
        self.guard: Optional[LoadGuard] = None      # the guard of the rebuild under way

    def settle(self) -> None:
        """After a rebuild: what its guard left is what is left."""
        if self.guard is not None:
            self.left = min(self.left, self.guard.left)
            self.guard = None


def guard_for(policy: Any, stream: Any, payloads: dict[int, Any]) -> Optional[LoadGuard]:
    """The guard of a load: None when the load is trusted. The budget counts the
    stream as decoded (``stream``: it, or its size in bytes), and payload sections
    as stored in the file when the pipeline says (``policy.payload_bytes``): a gzip
    section may decode to 1,040 times its size, and must not buy that much work."""
    if getattr(policy, "trusted", False):
        return None
    stored = getattr(policy, "payload_bytes", None)
    if type(stream) is int:
        stream = range(stream)          # (only its length counts)
    size = len(stream) + stored if stored is not None else input_size(stream, payloads)
    guard = LoadGuard(size, getattr(policy, "default_only", lambda cls: False))
    account = getattr(policy, "account", None)
    if isinstance(account, WorkAccount):
        guard.left = min(guard.left, account.left)
        account.guard = guard
    return guard

