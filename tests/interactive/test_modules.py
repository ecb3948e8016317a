"""dump_module / load_module / load_module_asdict (dill's API), and the IPython
extension with a real InteractiveShell."""

import io
import os
import stat
import subprocess
import sys
import textwrap
import types
import weakref

import numpy as np
import pytest

import torpor
from torpor.interactive import modules

SOURCE = textwrap.dedent("""
    import json
    import numpy as np
    data = np.arange(100_000, dtype=np.float32).reshape(1000, 100)
    SCALE = 3
    def scaled(x, k=2):
        return x * SCALE + k
    square = lambda v: v * v
    def counter():
        n = [0]
        def tick():
            n[0] += 1
            return n[0]
        return tick
    tick = counter()
    def fact(n):
        return 1 if n < 2 else n * fact(n - 1)
    class Base:
        kind = "base"
        def __init__(self, m):
            self.m = m
        def run(self, xs):
            return [x * self.m * SCALE for x in xs]
        @staticmethod
        def scale():
            return SCALE
        @property
        def doubled(self):
            return 2 * self.m
    class Child(Base):
        kind = "child"
        def run(self, xs):
            return super().run(xs) + ["child"]
    obj = Child(4)
    obj.payload = data
    shared = [data, data, obj]
    config = {"name": "run 7", "when": json.dumps({"a": 1})}
    def builtin_user(n):
        return sum(range(n + 1)) + len([])
""")


def scratch(name="scratch_ns", source=SOURCE):
    mod = types.ModuleType(name)          # not in sys.modules: not importable by name
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    return mod


def check_namespace(ns):
    data = ns["data"]
    assert data.dtype == np.float32 and data.shape == (1000, 100) and data.flags.writeable
    assert np.array_equal(data, np.arange(100_000, dtype=np.float32).reshape(1000, 100))
    assert ns["shared"][0] is data and ns["shared"][1] is data and ns["obj"].payload is data
    assert ns["shared"][2] is ns["obj"]
    assert ns["scaled"](1) == 5 and ns["square"](3) == 9 and ns["fact"](5) == 120
    assert [ns["tick"](), ns["tick"]()] == [1, 2]
    obj, Base, Child = ns["obj"], ns["Base"], ns["Child"]
    assert type(obj) is Child and issubclass(Child, Base) and obj.kind == "child"
    assert obj.run([1]) == [12, "child"] and obj.doubled == 8 and Base.scale() == 3
    assert ns["json"] is __import__("json") and ns["np"] is np
    # functions see the namespace they were loaded into, live
    ns["SCALE"] = 10
    assert ns["scaled"](1) == 12 and obj.run([1]) == [40, "child"] and Base.scale() == 10
    ns["SCALE"] = 3


def test_roundtrip_into_a_module(tmp_path, impl):
    src = scratch()
    p = tmp_path / "m.torpor"
    assert torpor.dump_module(p, module=src) == {}
    dest = types.ModuleType("dest")
    assert torpor.load_module(p, module=dest, trusted=True) is None
    check_namespace(vars(dest))
    assert dest.scaled.__globals__ is vars(dest)
    assert dest.builtin_user(3) == 6                 # builtins resolve in a fresh module


def test_not_importable_module_comes_back_as_a_new_module(tmp_path):
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=scratch("made_up_mod"))
    mod = torpor.load_module(p, trusted=True)
    assert isinstance(mod, types.ModuleType) and mod.__name__ == "made_up_mod"
    assert "made_up_mod" not in sys.modules
    check_namespace(vars(mod))


def test_code_needs_trusted_and_nothing_changes(tmp_path, impl):
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=scratch())
    dest = types.ModuleType("dest")
    dest.keep = 1
    with pytest.raises(torpor.UnsafeLoadError) as e:
        torpor.load_module(p, module=dest)
    msg = str(e.value)
    for name in ("function scratch_ns.scaled(x, k=2)", "function scratch_ns.<lambda>(v)",
                 "class scratch_ns.Base", "class scratch_ns.Child", "Nothing was changed"):
        assert name in msg
    assert vars(dest).keys() == {"__name__", "__doc__", "__package__", "__loader__", "__spec__", "keep"}


def test_asdict_describes_code_without_running_it(tmp_path, impl):
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=scratch())
    ns = torpor.load_module_asdict(p)
    f = ns["scaled"]
    assert isinstance(f, modules.CodeDescriptor)
    assert (f.kind, f.name, f.qualname, f.signature) == ("function", "scaled", "scaled", "(x, k=2)")
    with pytest.raises(torpor.UnsafeLoadError, match="description only"):
        f(1)
    obj = ns["obj"]
    assert obj.m == 4 and obj.payload is ns["data"] and type(obj).__name__ == "Child"
    assert not hasattr(type(obj), "run")                  # the class's code was not loaded
    assert ns["config"] == {"name": "run 7", "when": '{"a": 1}'}
    trusted = torpor.load_module_asdict(p, trusted=True)
    check_namespace(trusted)
    assert trusted["scaled"].__globals__ is trusted


def test_asdict_update_starts_from_the_live_module(tmp_path):
    mod = types.ModuleType("live_mod_x")
    mod.a, mod.b = 1, 2
    sys.modules["live_mod_x"] = mod
    try:
        p = tmp_path / "m.torpor"
        torpor.dump_module(p, module=mod)
        mod.a, mod.c = 10, 30
        d = torpor.load_module_asdict(p, update=True)
        assert d["a"] == 1 and d["b"] == 2 and d["c"] == 30
        assert mod.a == 10                                 # the live module is untouched
    finally:
        del sys.modules["live_mod_x"]


def test_update_and_replace_modes(tmp_path):
    src = types.ModuleType("m1")
    src.a, src.b = 1, [2]
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=src)
    dest = types.ModuleType("dest")
    dest.a, dest.other = 0, "stays"
    torpor.load_module(p, module=dest)
    assert (dest.a, dest.b, dest.other) == (1, [2], "stays")
    dest.other2 = 5
    torpor.load_module(p, module=dest, mode="replace")
    assert not hasattr(dest, "other") and not hasattr(dest, "other2") and dest.b == [2]
    assert dest.__name__ == "dest"                         # interpreter names kept
    with pytest.raises(ValueError, match="mode"):
        torpor.load_module(p, module=dest, mode="merge")


def test_on_error_skip_saves_the_rest_and_reports(tmp_path, impl):
    import socket
    mod = scratch()
    mod.ref = weakref.ref(scratch)
    mod.gen = (i for i in range(3))
    mod.sock = socket.socket()
    try:
        p = tmp_path / "m.torpor"
        skipped = torpor.dump_module(p, module=mod, on_error="skip")
    finally:
        mod.sock.close()
    assert set(skipped) == {"ref", "gen", "sock"}
    assert skipped["ref"]["type"] == "weakref.ReferenceType" and "weakref" in skipped["ref"]["reason"]
    assert skipped["gen"]["type"] == "builtins.generator"
    assert torpor.info(p)["metadata"]["skipped"] == skipped
    dest = types.ModuleType("dest")
    torpor.load_module(p, module=dest, trusted=True)
    check_namespace(vars(dest))
    assert not hasattr(dest, "ref")


def test_on_error_raise_names_variable_and_path_and_keeps_old_file(tmp_path, impl):
    mod = types.ModuleType("m2")
    mod.ok = np.ones(10)
    mod.config = {"db": {"conn": (i for i in ())}}
    p = tmp_path / "m.torpor"
    p.write_bytes(b"old")
    with pytest.raises(torpor.UnsupportedObjectError) as e:
        torpor.dump_module(p, module=mod)
    assert e.value.variable == "config" and e.value.path == "config['db']['conn']"
    assert "cannot save variable 'config'" in str(e.value) and "exclude=['config']" in str(e.value)
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.torpor"]
    with pytest.raises(ValueError, match="on_error"):
        torpor.dump_module(p, module=mod, on_error="ignore")


def test_exclude_and_interpreter_names(tmp_path):
    mod = types.ModuleType("m3")
    for k in ("keep", "tmp_a", "tmp_b", "big", "In", "Out", "_", "__", "_i3", "_7", "get_ipython",
              "exit", "quit"):
        setattr(mod, k, k)
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=mod, exclude=["tmp_*", "big"])
    d = torpor.load_module_asdict(p)
    assert {k for k in d if not k.startswith("__")} == {"keep"}


def test_default_file_is_private_in_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mod = types.ModuleType("m4")
    mod.x = 1
    with pytest.warns(UserWarning, match=str(tmp_path / "cache" / "torpor" / "m4.torpor")):
        torpor.dump_module(module=mod)
    path = modules.default_path("m4")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert modules.default_path() == str(tmp_path / "cache" / "torpor" / "session.torpor")


def test_refimported_saves_references(tmp_path):
    import collections
    import json
    mod = types.ModuleType("m5")
    mod.path_list = sys.path
    mod.OrderedDict = collections.OrderedDict
    mod.dumps = json.dumps
    mod.json = json
    p, q = tmp_path / "r.torpor", tmp_path / "v.torpor"
    torpor.dump_module(p, module=mod, refimported=True)
    torpor.dump_module(q, module=mod)
    by_ref = torpor.load_module_asdict(p)
    by_value = torpor.load_module_asdict(q)
    assert by_ref["path_list"] is sys.path
    assert by_value["path_list"] == sys.path and by_value["path_list"] is not sys.path
    for d in (by_ref, by_value):
        assert d["OrderedDict"] is collections.OrderedDict and d["dumps"] is json.dumps
        assert d["json"] is json


def test_other_python_version_is_refused_before_any_change(tmp_path, monkeypatch):
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=scratch())
    here = modules.platform.python_version()
    monkeypatch.setattr(modules.platform, "python_version", lambda: "3.99.0")
    dest = types.ModuleType("dest")
    with pytest.raises(torpor.FormatError, match=rf"Python {here}.*this is Python 3.99.0"):
        torpor.load_module(p, module=dest, trusted=True)
    assert not hasattr(dest, "data")
    # data only (no code) loads anywhere
    plain = types.ModuleType("m6")
    plain.x = np.arange(3)
    torpor.dump_module(tmp_path / "d.torpor", module=plain)
    torpor.load_module(tmp_path / "d.torpor", module=dest)
    assert np.array_equal(dest.x, [0, 1, 2])


def test_open_files_are_never_reopened(tmp_path):
    target = tmp_path / "notes.txt"
    mod = types.ModuleType("m7")
    mod.fh = open(target, "w")
    mod.fh.write("hello")
    mod.fh.flush()
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=mod)
    mod.fh.close()
    target.write_text("hello, later")
    dest = types.ModuleType("dest")
    torpor.load_module(p, module=dest)
    assert target.read_text() == "hello, later"            # not truncated
    assert isinstance(dest.fh, modules.SavedFile) and dest.fh.mode == "w"
    assert dest.fh.name == str(target) and dest.fh.position == 5 and not dest.fh.closed
    with dest.fh.reopen() as f:
        assert f.read() == ", later"
    assert target.read_text() == "hello, later"


def test_modules_not_imported_need_trusted(tmp_path, walker_env):
    (tmp_path / "thirdmod_q.py").write_text("VALUE = 42\n")
    p = tmp_path / "m.torpor"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import torpor, thirdmod_q
        torpor.dump_module({str(p)!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=walker_env)
    dest = types.ModuleType("dest")
    with pytest.raises(torpor.UnsafeLoadError, match="thirdmod_q"):
        torpor.load_module(p, module=dest)
    assert "thirdmod_q" not in sys.modules and not hasattr(dest, "thirdmod_q")
    d = torpor.load_module_asdict(p)
    assert repr(d["thirdmod_q"]) == "<module 'thirdmod_q' (not imported)>"


def test_main_module_across_processes(tmp_path, walker_env):
    p = tmp_path / "main.torpor"
    save = SOURCE + f"\nimport torpor\ntorpor.dump_module({str(p)!r})\n"
    subprocess.run([sys.executable, "-c", save], check=True, env=walker_env)
    load = textwrap.dedent(f"""
        import torpor, sys
        assert torpor.load_module({str(p)!r}, trusted=True) is None
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_modules import check_namespace
        check_namespace(globals())
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=walker_env)
    assert r.stdout.strip() == "ok", r.stderr


def test_deprecated_names(tmp_path):
    mod = types.ModuleType("m8")
    mod.x = 1
    p = tmp_path / "m.torpor"
    with pytest.warns(DeprecationWarning, match="dump_module"):
        torpor.dump_session(p, main=mod, byref=True)
    assert torpor.info(p)["metadata"]["refimported"] is True
    dest = types.ModuleType("dest")
    with pytest.warns(DeprecationWarning, match="load_module"):
        torpor.load_session(p, main=dest)
    assert dest.x == 1


def test_plain_load_refuses_module_dump_gracefully(tmp_path):
    mod = scratch()
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=mod)
    with pytest.raises(torpor.FormatError, match="module dump of module 'scratch_ns'.*load_module"):
        torpor.load(p)          # not UnsafeLoadError suggesting allow= of torpor's internals
    torpor.dump([1], tmp_path / "plain.torpor")
    with pytest.raises(torpor.FormatError, match="not a module dump"):
        torpor.load_module(tmp_path / "plain.torpor", module=types.ModuleType("x"))


def test_stream_target(impl):
    mod = scratch()
    b = io.BytesIO()
    torpor.dump_module(b, module=mod)
    b.seek(0)
    d = torpor.load_module_asdict(b, trusted=True)
    check_namespace(d)


def test_ipython_magics(tmp_path, capsys):
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "torpor")
        ip.run_cell("import numpy as np\nx = np.arange(10.0)\ndef sq(v): return v * v\n"
                    "y = sq(x)\nlk = (i for i in ())")
        f = tmp_path / "nb.torpor"
        ip.run_line_magic("torpor_save", f"{f} --skip-errors")
        out = capsys.readouterr().out
        assert out.startswith(f"saved 4 variables to {f}: ") and "skipped lk" in out
        ip.run_cell("del x, y, sq")
        ip.run_line_magic("torpor_load", str(f))
        out = capsys.readouterr().out
        assert "nothing loaded" in out and "--trusted" in out and "x" not in ip.user_ns
        ip.run_line_magic("torpor_load", f"{f} --trusted")
        out = capsys.readouterr().out
        assert out.startswith(f"loaded 4 variables from {f}: ")
        res = ip.run_cell("z = sq(x)[3]")
        assert res.success and ip.user_ns["z"] == 9.0 and ip.user_ns["y"][3] == 9.0
        assert ip.user_ns["sq"].__globals__ is ip.user_ns
    finally:
        InteractiveShell.clear_instance()


def test_variable_errors_never_eval(tmp_path, monkeypatch):
    """The variable name is read back from the error's path with
    ast.literal_eval, never eval (which would run whatever the text holds)."""
    import builtins

    def no_eval(*a, **k):
        raise AssertionError("eval was called")
    monkeypatch.setattr(builtins, "eval", no_eval)
    mod = types.ModuleType("m3")
    mod.__dict__["it's \"odd\""] = {"k": (i for i in ())}
    with pytest.raises(torpor.UnsupportedObjectError) as e:
        torpor.dump_module(tmp_path / "m.torpor", module=mod)
    assert e.value.variable == "it's \"odd\"" and e.value.path == "it's \"odd\"['k']"


# --- issue 15: one graph, one memo; code by value wherever dill saves it ----------------

SHARING = textwrap.dedent("""
    import functools, typing, collections, dataclasses
    shared = []
    def make():
        def add(x):
            shared.append(x)
            return len(shared)
        def peek():
            return shared
        return add, peek
    add, peek = make()
    table = {"k": 1}
    def look(k, t=table):
        return t[k]
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a):
            return fn(*a) + 1
        return wrapper
    def quad():
        def dec(f):
            def func(x):
                return f(x) * 4
            return func
        return dec
    base = lambda x: x * 2
    wrapped = deco(base)
    quadded = quad()(base)
    def recursive():
        def me():
            return me
        return me
    me = recursive()
    T = typing.TypeVar("T", int, str)
    P = typing.ParamSpec("P")
    UserId = typing.NewType("UserId", int)
    late = eval("lambda v: v + 100", {})
    Point = collections.namedtuple("Pt", "x y")
    pt = Point(1, 2)
    DC = dataclasses.make_dataclass("Made", [("a", int)])
    dc = DC(5)
    class Slotted:
        __slots__ = ("a", "b")
        def total(self):
            return self.a + self.b
    s = Slotted()
    s.a, s.b = 1, 2
""")


def check_sharing(ns):
    assert ns["add"](7) == 1 and ns["peek"]() is ns["shared"] == [7]
    assert ns["look"].__defaults__[0] is ns["table"]
    assert ns["wrapped"].__wrapped__ is ns["base"] and ns["wrapped"](3) == 7
    assert ns["quadded"](1) == 8 and ns["quadded"].__qualname__ == "quad.<locals>.dec.<locals>.func"
    assert ns["me"]() is ns["me"]
    assert ns["T"].__name__ == "T" and ns["T"].__constraints__ == (int, str)
    assert ns["P"].__name__ == "P" and ns["UserId"](3) == 3 and ns["UserId"].__name__ == "UserId"
    assert ns["late"](1) == 101 and ns["late"].__module__ is None
    assert type(ns["pt"]) is ns["Point"] and ns["pt"] == (1, 2) and ns["pt"].x == 1
    assert type(ns["dc"]) is ns["DC"] and ns["dc"].a == 5
    assert type(ns["s"]) is ns["Slotted"] and ns["s"].total() == 3
    assert not hasattr(ns["s"], "__dict__") and ns["Slotted"].__slots__ == ("a", "b")


def test_module_dump_is_one_graph(tmp_path, impl):
    p = tmp_path / "m.torpor"
    assert torpor.dump_module(p, module=scratch("share_ns", SHARING)) == {}
    dest = types.ModuleType("dest")
    torpor.load_module(p, module=dest, trusted=True)
    check_sharing(vars(dest))
    assert dest.add.__globals__ is vars(dest) and dest.look.__globals__ is vars(dest)
    as_dict = torpor.load_module_asdict(p, trusted=True)
    check_sharing(as_dict)
    described = torpor.load_module_asdict(p)            # nothing runs
    assert isinstance(described["add"], modules.CodeDescriptor)
    assert described["add"].signature == "(x)" and described["table"] == {"k": 1}


def test_main_typevar_does_not_spoil_the_file(tmp_path):
    """T = TypeVar("T") in __main__: dump_module in a fresh interpreter, load in
    another; the whole namespace comes back."""
    p = tmp_path / "main.torpor"
    save = f"""
import typing, torpor
T = typing.TypeVar("T")
NT = typing.NewType("NT", str)
x = [T, NT]
def f(a: T) -> T:
    return a
torpor.dump_module({str(p)!r})
"""
    load = f"""
import torpor
torpor.load_module({str(p)!r}, trusted=True)
assert x[0] is T and T.__name__ == "T" and x[1] is NT and f(2) == 2, (x, T)
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", save], check=True, env=env)
    out = subprocess.run([sys.executable, "-c", load], check=True, env=env,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok"


def test_importable_module_saved_by_value(tmp_path, monkeypatch):
    """dill's dump_module saves a module's own functions and classes by value:
    loading into the emptied module brings them back."""
    (tmp_path / "imp_mod_15.py").write_text(textwrap.dedent("""
        FACTOR = 3
        def triple(x):
            return x * FACTOR
        class Box:
            def __init__(self, v):
                self.v = v
            def big(self):
                return triple(self.v)
        box = Box(2)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import imp_mod_15 as mod
    try:
        p = tmp_path / "m.torpor"
        torpor.dump_module(p, module=mod)
        for k in [k for k in vars(mod) if not k.startswith("__")]:
            delattr(mod, k)
        torpor.load_module(p, module=mod, trusted=True)
        assert mod.box.big() == 6 and mod.triple.__globals__ is vars(mod)
        assert type(mod.box) is mod.Box
    finally:
        sys.modules.pop("imp_mod_15", None)


def test_failed_load_leaves_module_unchanged(tmp_path):
    p = tmp_path / "m.torpor"
    torpor.dump_module(p, module=scratch("share_ns", SHARING))
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0xFF                          # damage the stream
    p.write_bytes(bytes(data))
    dest = types.ModuleType("dest")
    dest.keep = 1
    before = dict(vars(dest))
    with pytest.raises(torpor.TorporError):
        torpor.load_module(p, module=dest, trusted=True)
    assert vars(dest) == before
