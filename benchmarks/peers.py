"""The peers torpor is measured against, each as save(obj, path) / load(path).

``PEERS`` is the dispatch table the report runs: name -> Peer(save, load,
arrays_only). ``arrays_only`` peers (numpy.save / numpy.savez) only run on
workloads that are a flat dict of arrays.
"""

import argparse
import gc
import os
import pickle
import struct
import time
from collections import namedtuple

import numpy as np

import torpor

Peer = namedtuple("Peer", "save load arrays_only")


def settle():
    """Before each timed run: collect garbage, and write every dirty page of earlier
    runs to disk. A peer that leaves a GiB unwritten in the page cache would
    otherwise have the kernel write it back while the next library runs, and that
    library (torpor's fsync most of all) would pay for it."""
    gc.collect()
    if hasattr(os, "sync"):
        os.sync()


def best(fn, repeat):
    """Best time of ``repeat`` calls of ``fn``, each after ``settle()``."""
    times = []
    for _ in range(repeat):
        settle()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(fns, repeat):
    """{name: (times of a, times of b)} for ``fns`` {name: (a, b)}: every round
    times each pair once, the two in swapped order every other round, each run
    after ``settle()``, so drift on a noisy machine hits both alike."""
    times = {k: ([], []) for k in fns}
    for r in range(repeat):
        for name, (a, b) in fns.items():
            pair = [(times[name][0], a), (times[name][1], b)]
            for acc, fn in (pair if r % 2 == 0 else pair[::-1]):
                acc.append(best(fn, 1))
    return times


def workspace_arguments(doc, sizes, argv):
    """The command line of the workspace benchmarks."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(sizes), default="full")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--artifacts", type=int, default=10_000)
    return ap.parse_args(argv)


def median(v):
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def ratio_table(rows, a="torpor", b="pickle", width=40):
    """Print ``rows`` of (measure, times of a, times of b): best and median of
    each, and their ratios a/b."""
    print(f"{'measure':<{width}}{a + ' s':>11}{b + ' s':>11}{'ratio':>8}"
          f"{'median ' + a[0]:>10}{'median ' + b[0]:>10}{'ratio':>8}")
    for name, t, p in rows:
        bt, bp, mt, mp = min(t), min(p), median(t), median(p)
        print(f"{name:<{width}}{bt:>11.3f}{bp:>11.3f}{bt / bp:>8.3f}{mt:>10.3f}{mp:>10.3f}"
              f"{mt / mp:>8.3f}")


def pickle_save(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)


def pickle_load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


# pickle protocol 5 with out-of-band buffers: the pickle, then each buffer, in
# one file ("<Q" count, "<Q" lengths, pickle, buffers); buffers are read into
# their own bytearrays so the arrays come back writable.
def pickle_oob_save(obj, path):
    bufs = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    views = [b.raw() for b in bufs]
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(views)))
        f.write(struct.pack(f"<{len(views) + 1}Q", len(data), *(v.nbytes for v in views)))
        f.write(data)
        for v in views:
            f.write(v)


def pickle_oob_load(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        lens = struct.unpack(f"<{n + 1}Q", f.read(8 * (n + 1)))
        data = f.read(lens[0])
        bufs = []
        for ln in lens[1:]:
            b = bytearray(ln)
            f.readinto(b)
            bufs.append(b)
    return pickle.loads(data, buffers=bufs)


def cloudpickle_save(obj, path):
    import cloudpickle
    with open(path, "wb") as f:
        cloudpickle.dump(obj, f, protocol=5)


def dill_save(obj, path):
    import dill
    with open(path, "wb") as f:
        dill.dump(obj, f, protocol=5)


def dill_load(path):
    import dill
    with open(path, "rb") as f:
        return dill.load(f)


def joblib_save(compress):
    def save(obj, path):
        import joblib
        joblib.dump(obj, path, compress=compress)
    return save


def joblib_load(path):
    import joblib
    return joblib.load(path)


def npsavez_save(obj, path):
    with open(path, "wb") as f:
        np.savez(f, **obj)


def npsavez_load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def npsave_save(obj, path):
    with open(path, "wb") as f:
        pickle.dump(list(obj), f)                 # the keys, then each array in order
        for v in obj.values():
            np.save(f, v, allow_pickle=False)


def npsave_load(path):
    with open(path, "rb") as f:
        keys = pickle.load(f)
        return {k: np.load(f, allow_pickle=False) for k in keys}


def torpor_save(obj, path):
    torpor.dump(obj, path)


def torpor_load(path):
    return torpor.load(path, trusted=True)


def torpor_safe_load(path):
    # the default, safe load: the allow-list plus the workloads' own classes, with
    # the guard (engine/guard.py) charging every hash and call
    from .workloads import WORKLOAD_CLASSES
    return torpor.load(path, allow=WORKLOAD_CLASSES)


def torpor_raw_save(obj, path):
    torpor.dump(obj, path, compress=None)


# --- a ChimeraX-style baseline --------------------------------------------------
# ChimeraX writes a session as MessagePack with extension types (numpy arrays as
# dtype/shape/bytes, tuples, sets, ...) through one lz4 frame. Objects with a
# __dict__ stand for ChimeraX's State objects: each is written once into a table
# under a unique id and referenced by that id, which is how ChimeraX keeps shared
# references. Written here from that documented approach, as a baseline.
_X_ARRAY, _X_TUPLE, _X_SET, _X_REF, _X_COMPLEX = 1, 2, 3, 4, 5


def _chimerax_pack(obj):
    import msgpack
    objects = []
    ids = {}

    def default(o):
        if isinstance(o, np.ndarray):
            a = np.ascontiguousarray(o)
            head = msgpack.packb([a.dtype.str, list(a.shape)])
            return msgpack.ExtType(_X_ARRAY, struct.pack("<I", len(head)) + head + a.tobytes())
        if isinstance(o, tuple):
            return msgpack.ExtType(_X_TUPLE, pack(list(o)))
        if isinstance(o, (set, frozenset)):
            return msgpack.ExtType(_X_SET, pack(list(o)))
        if isinstance(o, complex):
            return msgpack.ExtType(_X_COMPLEX, struct.pack("<dd", o.real, o.imag))
        if isinstance(o, np.generic):
            return o.item()
        if hasattr(o, "__dict__"):
            i = ids.get(id(o))
            if i is None:
                i = ids[id(o)] = len(objects)
                objects.append(None)
                cls = type(o)
                objects[i] = [f"{cls.__module__}.{cls.__qualname__}", o.__dict__]
            return msgpack.ExtType(_X_REF, struct.pack("<Q", i))
        raise TypeError(f"cannot pack {type(o)}")

    def pack(o):
        return msgpack.packb(o, default=default, use_bin_type=True, strict_types=True)

    root = pack(obj)
    table = []
    k = 0
    while k < len(objects):               # packing a table entry may add entries
        table.append(pack(objects[k]))
        k += 1
    return msgpack.packb([len(table)]) + b"".join(table) + root


def chimerax_save(obj, path):
    import lz4.frame
    with lz4.frame.open(path, "wb") as f:
        f.write(_chimerax_pack(obj))


def chimerax_load(path):
    import importlib

    import lz4.frame
    import msgpack
    with lz4.frame.open(path, "rb") as f:
        data = f.read()
    objects = []

    def ext_hook(code, payload):
        if code == _X_ARRAY:
            (n,) = struct.unpack_from("<I", payload)
            dt, shape = msgpack.unpackb(payload[4:4 + n])
            return np.frombuffer(payload[4 + n:], dtype=np.dtype(dt)).reshape(shape).copy()
        if code == _X_TUPLE:
            return tuple(msgpack.unpackb(payload, ext_hook=ext_hook, raw=False, strict_map_key=False))
        if code == _X_SET:
            return set(msgpack.unpackb(payload, ext_hook=ext_hook, raw=False, strict_map_key=False))
        if code == _X_COMPLEX:
            return complex(*struct.unpack("<dd", payload))
        if code == _X_REF:
            return objects[struct.unpack("<Q", payload)[0]]
        raise ValueError(code)

    up = msgpack.Unpacker(ext_hook=ext_hook, raw=False, strict_map_key=False, max_buffer_size=0)
    up.feed(data)
    n = up.unpack()[0]
    # a first pass (extensions left undecoded) creates every object from its class
    # name, so references, forward ones included, resolve while states are read
    first = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    first.feed(data)
    first.unpack()
    for _ in range(n):
        name, _ = first.unpack()
        module, _, qual = name.rpartition(".")
        cls = importlib.import_module(module)
        for part in qual.split("."):
            cls = getattr(cls, part)
        objects.append(cls.__new__(cls))
    for i in range(n):
        _, state = up.unpack()
        objects[i].__dict__.update(state)
    return up.unpack()


PEERS = {
    "torpor": Peer(torpor_save, torpor_load, False),
    "torpor (raw)": Peer(torpor_raw_save, torpor_load, False),
    "torpor (safe load)": Peer(torpor_save, torpor_safe_load, False),
    "pickle": Peer(pickle_save, pickle_load, False),
    "pickle-oob": Peer(pickle_oob_save, pickle_oob_load, False),
    "cloudpickle": Peer(cloudpickle_save, pickle_load, False),
    "dill": Peer(dill_save, dill_load, False),
    "joblib": Peer(joblib_save(0), joblib_load, False),
    "joblib-lz4": Peer(joblib_save("lz4"), joblib_load, False),
    "numpy.savez": Peer(npsavez_save, npsavez_load, True),
    "numpy.save": Peer(npsave_save, npsave_load, True),
    "chimerax-style": Peer(chimerax_save, chimerax_load, False),
}
