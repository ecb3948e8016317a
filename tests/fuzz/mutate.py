"""The structure-aware mutations of the fuzz targets (targets.py), kept apart from
atheris so that tests can call them.

``mutate_file`` changes one thing in a torpor file and rebuilds it with every
checksum, offset and length recomputed (documents.py): a value of the header,
a section's meta, the table of contents, a section's fixed fields, a few payload
bytes, or the object stream. ``mutate_stream`` changes the object stream, as
tokens (documents.Layout), in one of these ways:

- ``ref``: a value becomes a REF to an earlier object (or to a list, map or set
  it sits in: a cycle), often a tuple put where it is hashed (a set item, a
  dict key);
- ``doubling``: a value becomes a list of a chain of tuples or lists, each
  holding the previous one twice, and then a use of the last one that walks all
  of it: a set item, a frozenset item, a dict key, ``str()``, ``dict()``,
  ``set()``, ``frozenset()``;
- ``nest``: a value is wrapped in up to some 200,000 levels of tuples, object
  arrays (``"|O"``, shape [1]), ``collections.deque`` or ``slice`` reduces,
  frozensets, lists, or a mixture;
- ``oob``: a bytes or array section is referenced a second time (an existing
  BYTES_OOB, BYTEARRAY_OOB or NDARRAY copied, or two new markers);
- ``calls``: one big list, bytes or section (or an existing list) is the
  argument of many REDUCE calls (``list``, ``bytearray``, ``tuple``, ``bytes``,
  ``set``, ``frozenset``, ``str``, ``collections.deque``), sharing one
  argument tuple or each with its own;
- ``scalar``: a value becomes an interesting plain value, or a REF with a raw
  index.

Every new object takes its memo index where it now stands and every older
reference is renumbered (documents.emit), so the result is a well-formed file
that reaches the decoder's checks, not a broken reference.
"""

import random

import msgpack

from fuzz import documents as D

Tok, ext, uint_payload = D.Tok, D.ext, D.uint_payload

INTERESTING = [0, 1, -1, 2, 7, 8, 64, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**62,
               2**63 - 1, 2**63, 2**64 - 1, -(2**63), 10**15, "", "x", "|O", "<f8",
               "struct", "sub", "meta", None, True, [], {}, [0], [2**62, 2**62, 0],
               b"", 1.5, float("inf")]


# --- file documents (header, metas, table of contents, fixed fields) --------------------

def mutate_value(v, rng, depth=0):
    """A copy of ``v`` with one thing inside it changed."""
    if depth < 6 and isinstance(v, dict) and v and rng.random() < 0.8:
        k = rng.choice(list(v))
        v = dict(v)
        if rng.random() < 0.1:
            del v[k]
        else:
            v[k] = mutate_value(v[k], rng, depth + 1)
        return v
    if depth < 6 and isinstance(v, list) and v and rng.random() < 0.8:
        v = list(v)
        i = rng.randrange(len(v))
        r = rng.random()
        if r < 0.1:
            del v[i]
        elif r < 0.2:
            v.insert(i, rng.choice(INTERESTING))
        else:
            v[i] = mutate_value(v[i], rng, depth + 1)
        return v
    if isinstance(v, int) and not isinstance(v, bool) and rng.random() < 0.5:
        return v + rng.choice([-1, 1, -v, v, 1 << rng.randrange(64)])
    return rng.choice(INTERESTING)


def _mutate_documents(parts, rng):
    """One change to a document or a section's fields; whether to rewrite the
    table of contents' entries."""
    what = rng.random()
    fix_toc = True
    if what < 0.2 or not parts.sections:
        parts.header = mutate_value(parts.header, rng)
    elif what < 0.55:
        s = rng.choice(parts.sections)
        s.meta = mutate_value(s.meta, rng)
    elif what < 0.75:
        parts.toc = mutate_value(parts.toc, rng)
        fix_toc = rng.random() < 0.3
    elif what < 0.85:
        s = rng.choice(parts.sections)
        attr = rng.choice(["kind", "codec", "index", "raw"])
        setattr(s, attr, mutate_value(getattr(s, attr), rng) if attr != "raw" else
                rng.choice([0, 1, s.raw + 1, s.raw * 256, 2**40, 3 << 30]))
        for a in ("kind", "codec", "index"):
            if not isinstance(getattr(s, a), int) or not 0 <= getattr(s, a) < 256:
                setattr(s, a, 1)
        if not isinstance(s.raw, int) or not 0 <= s.raw < 2**64:
            s.raw = 0
    else:
        s = rng.choice(parts.sections)
        p = bytearray(s.payload)
        for _ in range(rng.randrange(1, 4)):
            if p:
                p[rng.randrange(len(p))] = rng.randrange(256)
        s.payload = bytes(p)
    return fix_toc


#: How often mutate_file changes the object stream rather than a document.
STREAM_SHARE = 0.45


def mutate_file(data, seed, max_size=1 << 20, kind=None):
    """``data`` (a torpor file) with one thing changed, rebuilt; and what was
    done. ``kind``: one of STREAM_MUTATIONS (the object stream), "documents", or
    None for a random choice. Raises if ``data`` is not a parseable file."""
    rng = random.Random(seed)
    parts = D.parse(data)
    if kind is None:
        kind = "stream" if rng.random() < STREAM_SHARE else "documents"
    if kind == "documents":
        fix_toc = _mutate_documents(parts, rng)
        return D.build(parts, fix_toc=fix_toc, fix_chunks=True), "documents"
    stream = D.stream_of(parts)
    if kind == "stream":
        kind = rng.choice(list(STREAM_MUTATIONS))
    added = 0
    if (kind in ("oob", "calls") and all(s.kind != D.BYTES for s in parts.sections)
            and rng.random() < 0.8) or (kind in ("doubling", "calls", "nest") and rng.random() < 0.1):
        # a bytes section for the stream to reuse (after the last one): small and
        # raw, or zeros compressed up to 1040 times, which the file does not pay
        # for in bytes (does the work budget count them?)
        if rng.random() < 0.6:
            parts.sections.append(raw_section(len(parts.sections), rng.choice([1, 100, 5000, 60_000]),
                                              rng.choice(["bytes", "bytearray"])))
        else:
            parts.sections.append(zeros_section(len(parts.sections), rng.choice([1, 2]),
                                                rng.choice([1, 4, 16, 64]) << 20,
                                                rng.choice(["bytes", "bytearray"])))
        added = len(parts.sections[-1].payload)
    sections = [(i, s.kind) for i, s in enumerate(parts.sections)]
    room = max_size - len(data) - added - 512
    new, n_memo, desc, names = mutate_stream(stream, rng, sections, room, kind)
    D.set_stream(parts, new)
    if isinstance(parts.toc, dict):
        toc = dict(parts.toc, memo=n_memo)
        if names and isinstance(toc.get("globals"), list):
            toc["globals"] = toc["globals"] + sorted(set(names) - set(toc["globals"]))
        parts.toc = toc
    return D.build(parts, fix_toc=True), desc


def raw_section(index, n, type_="bytes"):
    """A raw bytes section of ``n`` zero bytes."""
    p = bytes(n)
    return D.Section(D.BYTES, 0, index, n, {"type": type_, "chunks": [[n, D.checksum(p)]]}, p)


_ZEROS = {}


def _zero_chunk(codec, n):
    """A chunk record and its data: ``n`` zero bytes compressed (cached)."""
    key = (codec, n)
    if key not in _ZEROS:
        import lz4.frame
        import zlib
        z = bytes(n)
        if codec == 1:
            data = lz4.frame.compress(z, block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_linked=False,
                                      compression_level=12)
        else:
            c = zlib.compressobj(9, zlib.DEFLATED, 31)
            data = c.compress(z) + c.flush()
        _ZEROS[key] = D.CHUNK.pack(D.CHUNK_MAGIC, 20, len(data), n, 1, b"\0\0\0", D.checksum(z)) + data
    return _ZEROS[key]


def zeros_section(index, codec, n, type_="bytes"):
    """A bytes section of ``n`` zero bytes, lz4 (codec 1) or gzip (2), in chunks of
    at most 64 MiB: a few hundred bytes per MiB."""
    chunks = []
    left = n
    while left:
        k = min(left, 64 << 20)
        chunks.append(_zero_chunk(codec, k))
        left -= k
    return D.Section(D.BYTES, codec, index, n, {"type": type_}, b"".join(chunks))


# --- token builders -------------------------------------------------------------------

def val(x):
    """Tokens of a plain value."""
    return D.tokenize(msgpack.packb(x, use_bin_type=True))


def flat_list(items):
    """A list of plain scalars as one token (a long one costs no more to splice)."""
    return [Tok("l", msgpack.packb(items), len(items))]


def lst(*items):
    out = [Tok("a", D.array_header(len(items)), len(items))]
    for it in items:
        out += it
    return out


def dct(pairs):
    out = [Tok("m", D.map_header(len(pairs)), len(pairs))]
    for k, v in pairs:
        out += k
        out += v
    return out


def marker(code, *items):
    out = [Tok("a", D.array_header(len(items) + 1), len(items) + 1),
           Tok("x", ext(code, b"\x00"), code=code)]
    for it in items:
        out += it
    return out


def tup(*items):
    return marker(D.EXT_TUPLE, *items)


def ref(tok):
    """A REF to the object that starts with ``tok`` (numbered when emitted)."""
    return [Tok("x", ext(D.EXT_REF, b"\x00"), code=D.EXT_REF, to=tok)]


def glob(name):
    module, _, qualname = name.rpartition(".")
    return marker(D.EXT_GLOBAL, val(module), val(qualname))


def reduce(func, args, state=None, listitems=None, dictitems=None):
    """REDUCE of ``func`` (tokens) with ``args`` (tokens of a TUPLE or a REF to one)."""
    return marker(D.EXT_REDUCE, func, args, state or val(None), listitems or val(None),
                  dictitems or val(None))


def objarray(child):
    return marker(D.EXT_OBJARRAY, val("|O"), val([1]), val(False), child)


def _size(toks):
    return sum(len(t.raw) for t in toks)


# --- stream mutations ---------------------------------------------------------------------

def _values(lay, rng, avoid=(), within=None):
    """A value position, not in a slot of ``avoid``."""
    vals = [i for i in lay.values() if lay.slot[i] not in avoid]
    if within is not None:
        vals = [i for i in vals if within(i)]
    if not vals:
        raise ValueError("no value to mutate")
    return rng.choice(vals)


def _replace(toks, lay, p, new):
    return toks[:p] + new + toks[lay.end[p]:]


def _exists_at_start(lay, q):
    """Objects a REF may name while they are still being filled."""
    return lay.code[q] in (0, -1, D.EXT_SET) and lay.slot[q] != "attrs"


def mut_ref(toks, lay, rng, sections, room):
    """A value becomes a REF to an earlier object, or to a list, map or set around it."""
    hashed = [i for i in lay.values() if lay.slot[i] in ("key", "set")]
    if hashed and rng.random() < 0.5:
        p = rng.choice(hashed)
    else:
        p = _values(lay, rng, avoid=("root",))
    before = [q for q in lay.memo if lay.end[q] <= p]
    around = []
    q = lay.parent[p]
    while q >= 0:
        if _exists_at_start(lay, q):
            around.append(q)
        q = lay.parent[q]
    tuples = [q for q in before if lay.code[q] == D.EXT_TUPLE]
    r = rng.random()
    if tuples and r < 0.4:
        q, how = rng.choice(tuples), "tuple"
    elif around and r < 0.55:
        q, how = rng.choice(around), "cycle"
    elif before:
        q, how = rng.choice(before), "earlier"
    elif around:
        q, how = rng.choice(around), "cycle"
    else:
        raise ValueError("nothing to refer to")
    return _replace(toks, lay, p, ref(toks[q])), f"ref {how} in {lay.slot[p]}", ()


DOUBLING_USES = ["set", "frozenset", "key", "str", "dict()", "set()", "frozenset()", "elsewhere"]


def doubling(value, depth, chain="tuple", use="set", rng=None):
    """A list: [t0, t1, ..., t(depth), use], t0 a tuple or list holding ``value``
    (tokens), t(i+1) holding t(i) twice (REFs), and ``use`` walking t(depth)
    (with "elsewhere", no use). Returns its tokens, the first token of
    t(depth) and the names of the functions the use calls."""
    rng = rng or random.Random(0)

    def one(*items):
        c = chain if chain != "mixed" else rng.choice(["tuple", "list"])
        return tup(*items) if c == "tuple" else lst(*items)

    links = [one(value)]
    for _ in range(depth):
        prev = links[-1][0]
        links.append(one(ref(prev), ref(prev)))
    last = links[-1][0]
    names = ()
    if use == "elsewhere":              # the caller puts a REF to the last link elsewhere
        return lst(*links), last, names
    if use == "set":
        u = marker(D.EXT_SET, ref(last))
    elif use == "frozenset":
        u = marker(D.EXT_FROZENSET, ref(last), val(2))
    elif use == "key":
        u = dct([(ref(last), val(0))])
    else:
        func = {"str": "builtins.str", "dict()": "builtins.dict", "set()": "builtins.set",
                "frozenset()": "builtins.frozenset"}[use]
        arg = ref(last) if use == "str" else lst(lst(ref(last), val(0))) if use == "dict()" \
            else lst(ref(last))
        u = reduce(glob(func), tup(arg))
        names = (func,)
    return lst(*links, u), last, names


def mut_doubling(toks, lay, rng, sections, room):
    p = _values(lay, rng, avoid=("key", "set", "attrs"))
    depth = rng.choice([rng.randint(2, 20), rng.randint(20, 40), rng.randint(40, 130)])
    chain = rng.choice(["tuple", "tuple", "list", "mixed"])
    use = rng.choice(DOUBLING_USES) if chain == "tuple" else rng.choice(["str", "str", "set", "elsewhere", "elsewhere"])
    new, last, names = doubling(toks[p:lay.end[p]], depth, chain, use, rng)
    if use == "elsewhere":
        # and a later value refers to the last link: whatever the stream holds
        # there (a global's name, a section index, a dtype, a state) is walked
        later = [q for q in lay.values() if q >= lay.end[p]]
        if later:
            q = rng.choice(later)
            toks = _replace(toks, lay, q, ref(last))
            use = f"elsewhere ({lay.slot[q]})"
        else:
            use = "nowhere"
    return _replace(toks, lay, p, new), f"doubling {chain} {depth} {use}", names


NEST_KINDS = ["tuple", "tuple2", "objarray", "deque", "slice", "frozenset", "list", "mixed"]
#: what "mixed" levels are: each holds the next on the C stack
MIXED_KINDS = ["tuple", "tuple2", "objarray", "deque", "slice"]
_NIL = Tok("v", b"\xc0")


def _level(kind, callables):
    """The tokens before and after the child of one wrapping level. ``callables``
    holds the GLOBAL token of each function already written (inner levels
    refer to it)."""
    if kind == "tuple":
        return [Tok("a", b"\x92", 2), Tok("x", ext(D.EXT_TUPLE, b"\x00"), code=D.EXT_TUPLE)], []
    if kind == "tuple2":
        return [Tok("a", b"\x93", 3), Tok("x", ext(D.EXT_TUPLE, b"\x00"), code=D.EXT_TUPLE)], \
            [Tok("v", b"\x01")]
    if kind == "frozenset":
        return [Tok("a", b"\x92", 2), Tok("x", ext(D.EXT_FROZENSET, b"\x00"), code=D.EXT_FROZENSET)], []
    if kind == "list":
        return [Tok("a", b"\x91", 1)], []
    if kind == "objarray":
        head = objarray([])
        return head, []
    name = "collections.deque" if kind == "deque" else "builtins.slice"
    g = callables.get(name)
    func = ref(g) if g is not None else glob(name)
    if g is None:
        callables[name] = func[0]
    head = [Tok("a", b"\x96", 6), Tok("x", ext(D.EXT_REDUCE, b"\x00"), code=D.EXT_REDUCE)] + func \
        + [Tok("a", b"\x92", 2), Tok("x", ext(D.EXT_TUPLE, b"\x00"), code=D.EXT_TUPLE)]
    if kind == "deque":
        head.append(Tok("a", b"\x91", 1))
    return head, [_NIL, _NIL, _NIL]


def nest(value, depth, kind="tuple", rng=None):
    """``value`` (tokens) wrapped in ``depth`` levels of ``kind``; the names of
    the functions the levels call."""
    rng = rng or random.Random(0)
    kinds = MIXED_KINDS
    heads, tails = [], []
    callables = {}
    cache = {}
    for _ in range(depth):
        k = kind if kind != "mixed" else rng.choice(kinds)
        hit = cache.get(k)
        if hit is None:
            # a deque or slice level names its function the first time, and
            # refers to it from then on: those tokens serve every later level
            # (nothing refers to a wrapping level, so one token list may repeat)
            had = len(callables)
            hit = _level(k, callables)
            if len(callables) == had:
                cache[k] = hit
        h, t = hit
        heads += h
        tails.append(t)
    out = heads + list(value)
    for t in reversed(tails):
        out += t
    return out, tuple(callables)


def mut_nest(toks, lay, rng, sections, room):
    p = _values(lay, rng)
    kind = rng.choice(NEST_KINDS)
    depth = rng.choices([rng.randint(1, 64), rng.randint(64, 1024), rng.randint(1024, 8192),
                         rng.randint(8192, 65536), rng.randint(65536, 200_000)],
                        weights=[6, 6, 10, 3, 1])[0]
    per_level = {"tuple": 3, "tuple2": 4, "frozenset": 3, "list": 1, "objarray": 10,
                 "deque": 16, "slice": 15, "mixed": 16}[kind]
    depth = max(1, min(depth, (room - 64) // per_level))
    new, names = nest(toks[p:lay.end[p]], depth, kind, rng)
    return _replace(toks, lay, p, new), f"nest {kind} {depth}", names


def mut_oob(toks, lay, rng, sections, room):
    """A payload section referenced a second time."""
    oob = [i for i in lay.values() if lay.code[i] in (D.EXT_BYTES_OOB, D.EXT_BYTEARRAY_OOB, D.EXT_NDARRAY)]
    if oob and rng.random() < 0.8:
        q = rng.choice(oob)
        copy = [t.clone() for t in toks[q:lay.end[q]]]
        if lay.code[q] != D.EXT_NDARRAY and rng.random() < 0.5:
            c = rng.choice([D.EXT_BYTES_OOB, D.EXT_BYTEARRAY_OOB])
            copy[1] = Tok("x", ext(c, b"\x00"), code=c)
        p = _values(lay, rng, avoid=("root",), within=lambda i: not i <= q < lay.end[i])
        how = "copied"
    else:
        ids = [i for i, kind in sections if kind == D.BYTES] or \
            [i for i, kind in sections if kind == D.ARRAY] or [0]
        idx = rng.choice(ids)
        copy = lst(marker(rng.choice([D.EXT_BYTES_OOB, D.EXT_BYTEARRAY_OOB]), val(idx)),
                   marker(rng.choice([D.EXT_BYTES_OOB, D.EXT_BYTEARRAY_OOB]), val(idx)))
        p = _values(lay, rng)
        how = "new"
    if rng.random() < 0.2:
        n = min(rng.choice([2, 10, 1000]), max(1, room // (_size(copy) + 1)))
        many = []
        for _ in range(n):
            many.append([t.clone() for t in copy])
        copy = lst(*many)
        how += f" {n} times"
    return _replace(toks, lay, p, copy), f"oob {how}", ()


CALL_FUNCS = ["builtins.list", "builtins.bytearray", "builtins.tuple", "builtins.bytes",
              "builtins.set", "builtins.frozenset", "builtins.str", "collections.deque"]


def shared_calls(big, func, calls, shared_args=True, existing=None):
    """A list: [big, func(big), then ``calls - 1`` more calls of func on it], the
    later calls naming func and the argument by REF (one argument tuple for all
    with ``shared_args``). ``existing``: a token already in the stream to use as
    the argument instead of ``big`` (then not in the list)."""
    target = existing if existing is not None else big[0]
    g = glob(func)
    args = tup(ref(target))
    items = ([] if existing is not None else [big]) + [reduce(g, args)]
    for _ in range(calls - 1):
        items.append(reduce(ref(g[0]), ref(args[0]) if shared_args else tup(ref(target))))
    return lst(*items), (func,)


def mut_calls(toks, lay, rng, sections, room):
    p = _values(lay, rng, avoid=("key", "set", "attrs"))
    func = rng.choice(CALL_FUNCS)
    lists = [q for q in lay.memo if lay.end[q] <= p and lay.code[q] == 0]
    bytes_sections = [i for i, kind in sections if kind == D.BYTES]
    r = rng.random()
    existing, big = None, None
    if lists and r < 0.25:
        existing = toks[max(lists, key=lambda q: toks[q].n)]
        what = f"list of {existing.n}"
    elif bytes_sections and r < 0.45:
        big = marker(rng.choice([D.EXT_BYTES_OOB, D.EXT_BYTEARRAY_OOB]), val(rng.choice(bytes_sections)))
        what = "section"
    else:
        k = min(rng.choice([10, 100, 1000, 10_000, 30_000, 100_000]), max(1, room // 3))
        if rng.random() < 0.3:
            big = marker(D.EXT_BYTEARRAY, val(bytes(k)))     # inline bytes take no memo index
            what = f"bytearray of {k}"
        else:
            big = flat_list([i % 256 for i in range(k)])
            what = f"list of {k}"
    left = room - (_size(big) if big else 0) - 64
    calls = max(1, min(rng.choice([2, 10, 100, 1000, 3000, 30_000]), left // 14))
    new, names = shared_calls(big, func, calls, rng.random() < 0.5, existing)
    return _replace(toks, lay, p, new), f"calls {func} {calls} of {what}", names


def mut_scalar(toks, lay, rng, sections, room):
    p = _values(lay, rng, avoid=("root",))
    if rng.random() < 0.2:
        k = rng.choice([0, 1, len(lay.memo) - 1, len(lay.memo), len(lay.memo) + 1, 2**31, 2**64 - 1])
        new = [Tok("x", ext(D.EXT_REF, uint_payload(max(k, 0))), code=D.EXT_REF)]
        return _replace(toks, lay, p, new), "scalar raw ref", ()
    return _replace(toks, lay, p, val(rng.choice(INTERESTING))), "scalar", ()


STREAM_MUTATIONS = {"ref": mut_ref, "doubling": mut_doubling, "nest": mut_nest, "oob": mut_oob,
                    "calls": mut_calls, "scalar": mut_scalar}


def mutate_stream(stream, rng, sections=(), room=1 << 20, kind=None):
    """An object stream with one change (see the module). ``sections``: (index,
    kind) of the file's sections; ``room``: bytes the stream may grow by.
    Returns the new stream, its memo count, what was done, and the names of the
    functions the new parts call. Raises ValueError if ``stream`` is not whole
    MessagePack tokens."""
    toks, lay = D.parse_stream(stream)
    kind = kind or rng.choice(list(STREAM_MUTATIONS))
    new, desc, names = STREAM_MUTATIONS[kind](toks, lay, rng, sections, room)
    data, n_memo = D.emit(new)
    return data, n_memo, desc, names
