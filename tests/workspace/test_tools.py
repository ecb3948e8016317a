"""Workspace tools (library/tools.py, toolspec.py): YAML definitions in
py-code-mode's format, every key read and checked, the command line each type
of option and positional becomes (checked exactly by a Python program that
prints its argv), the errors of a call that does not fit the schema (before
anything runs), recipes, timeouts that kill the process group, failures with
their stderr, malformed files reported by name and line without hiding the
other tools, duplicate names, files added and edited while in use, a local
folder, a Redis hash and an fsspec ``memory://`` storage, and sessions that
call tools from code in process and in a worker process (both walkers)."""

import asyncio
import json
import os
import pickle
import re
import signal
import sys
import textwrap
import time
import warnings

import pytest
import yaml

import torpor
from torpor.errors import ToolError
from torpor.workspace import (FileStorage, InProcessExecutor, Session, SubprocessConfig,
                              SubprocessExecutor)
from torpor.workspace.library import toolspec
from torpor.workspace.library.tools import (RecipeProxy, ToolArgumentError, ToolNotFoundError,
                                            ToolProxy, Tools, ToolsNamespace, ToolTimeoutError,
                                            ToolWarning)

from helpers import wait_gone

#: A program that prints the arguments it was given, as JSON: what a tool's
#: call became, exactly.
ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def arun(coro):
    return asyncio.run(coro)


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "tools"


def write(folder, file, text):
    """Write a definition (YAML text, dedented, or a dict dumped as YAML)."""
    os.makedirs(folder, exist_ok=True)
    if isinstance(text, dict):
        text = yaml.safe_dump(text, sort_keys=False)
    with open(os.path.join(folder, file), "w") as f:
        f.write(textwrap.dedent(text))


def quiet(tools_or_ns):
    """Silences the ToolWarnings of definitions a test breaks on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ToolWarning)
        return tools_or_ns.problems() if isinstance(tools_or_ns, Tools) else None


def argv_tool(folder, schema, recipes=None, name="args", **extra):
    """A tool running ARGV with ``schema``; its namespace."""
    d = {"name": name, "command": ARGV, "schema": schema, **extra}
    if recipes:
        d["recipes"] = recipes
    write(folder, f"{name}.yaml", d)
    return ToolsNamespace(Tools.from_folder(folder))


def called(ns, **kwargs):
    """The arguments ``tools.args(**kwargs)`` ran its program with."""
    return json.loads(ns.args(**kwargs))


ECHO = """\
    name: echo
    description: Print text to standard output
    command: /bin/echo
    timeout: 10
    tags: [text, output]
    schema:
      options:
        no_newline:
          type: boolean
          short: n
          description: Do not print the trailing newline
      positional:
        - name: text
          type: string
          required: true
          description: The text to print
    recipes:
      hello:
        description: Say hello
        preset:
          text: hello
"""


# --- reading a definition ---------------------------------------------------------------

def test_every_key_is_read(folder):
    write(folder, "grep.yaml", """\
        name: grep
        description: Search text for a pattern
        command: [grep, --color=never]
        timeout: 2.5
        tags: [text, search]
        schema:
          options:
            ignore_case: {type: boolean, short: i, description: Ignore case}
            context: {type: int, short: C, default: 0, description: Lines of context}
            exclude: {type: array, long: exclude-dir, items: {type: string}}
            max_count: {type: integer, required: true}
            ratio: {type: number}
          positional:
            - {name: pattern, type: str, required: true, description: The pattern}
            - {name: paths, type: array, default: ["."]}
          end_of_options: true
        recipes:
          todo:
            description: Find TODO notes
            preset: {pattern: TODO, ignore_case: true}
            params:
              paths: {default: [src], description: Where to look}
              max_count: {required: true}
    """)
    tools = Tools.from_folder(folder)
    spec = tools.get("grep")
    assert (spec.name, spec.description, spec.command, spec.timeout, spec.tags) == \
        ("grep", "Search text for a pattern", ("grep", "--color=never"), 2.5, ("text", "search"))
    assert spec.end_of_options is True
    o = spec.options
    assert list(o) == ["ignore_case", "context", "exclude", "max_count", "ratio"]
    assert (o["ignore_case"].type, o["ignore_case"].flag, o["ignore_case"].description) == \
        ("boolean", "-i", "Ignore case")
    assert (o["context"].type, o["context"].flag, o["context"].default) == ("integer", "-C", 0)
    assert (o["exclude"].type, o["exclude"].items, o["exclude"].flag) == \
        ("array", "string", "--exclude-dir")
    assert (o["max_count"].required, o["max_count"].flag) == (True, "--max_count")
    assert o["ratio"].type == "number" and not o["ratio"].has_default
    assert [(p.name, p.type, p.required, p.positional) for p in spec.positional] == \
        [("pattern", "string", True, True), ("paths", "array", False, True)]
    assert spec.positional[1].default == ["."]
    r = spec.recipes["todo"]
    assert (r.description, r.preset) == ("Find TODO notes", {"pattern": "TODO",
                                                            "ignore_case": True})
    assert r.params == {"paths": {"default": ["src"], "description": "Where to look"},
                        "max_count": {"required": True}}
    info = tools.list()
    assert [i["name"] for i in info] == ["grep"]
    assert info[0]["tags"] == ["text", "search"] and info[0]["timeout"] == 2.5
    assert info[0]["options"][2] == {"name": "exclude", "type": "array", "items": "string",
                                     "flag": "--exclude-dir", "required": False,
                                     "description": ""}
    assert info[0]["recipes"][0]["name"] == "todo"
    assert info[0]["source"] == str(folder / "grep.yaml")
    json.dumps(info)                                   # plain values only
    assert tools.problems() == []


def test_defaults_of_the_format(folder):
    write(folder, "t.yml", "name: t\n")              # .yml files count too
    spec = Tools.from_folder(folder).get("t")
    assert (spec.command, spec.timeout, spec.tags, spec.description) == (("t",), 60.0, (), "")
    assert (spec.options, spec.positional, spec.recipes, spec.end_of_options) == \
        ({}, (), {}, False)


def test_a_missing_folder_has_no_tools(tmp_path):
    tools = Tools.from_folder(tmp_path / "nowhere")
    assert tools.list() == [] and tools.problems() == [] and tools.search("x") == []
    with pytest.raises(ToolNotFoundError, match="no tool 'x'.*the tools are: none"):
        tools.get("x")


# --- the command line -------------------------------------------------------------------

def test_each_type_becomes_arguments(folder):
    ns = argv_tool(folder, {
        "options": {
            "verbose": {"type": "boolean", "short": "v"},
            "quiet": {"type": "boolean"},
            "name": {"type": "string", "short": "N"},
            "count": {"type": "integer", "long": "max-count"},
            "ratio": {"type": "number"},
            "tag": {"type": "array", "short": "t"},
            "level": {"type": "array", "items": "integer"},
        },
        "positional": [{"name": "first", "type": "string"},
                       {"name": "rest", "type": "array"}],
    })
    assert called(ns) == []
    assert called(ns, verbose=True, quiet=False) == ["-v"]           # false: no flag at all
    assert called(ns, quiet=True) == ["--quiet"]
    assert called(ns, name="a b; rm -rf x", count=3) == ["-N", "a b; rm -rf x",
                                                         "--max-count", "3"]
    assert called(ns, ratio=0.25) == ["--ratio", "0.25"]
    assert called(ns, ratio=2) == ["--ratio", "2"]
    assert called(ns, tag=["x", "y"], level=(1, 2)) == ["-t", "x", "-t", "y",
                                                        "--level", "1", "--level", "2"]
    assert called(ns, tag=[]) == []
    # options in the schema's order, whatever the call's, then the positionals
    assert called(ns, rest=["r1", "$HOME"], first="f", count=-1, verbose=True) == \
        ["-v", "--max-count", "-1", "f", "r1", "$HOME"]
    # None is "not given"
    assert called(ns, name=None, first="f") == ["f"]


def test_defaults_and_end_of_options(folder):
    ns = argv_tool(folder, {
        "options": {"color": {"type": "boolean", "default": True},
                    "mode": {"type": "string", "default": "fast", "short": "m"}},
        "positional": [{"name": "target", "type": "string", "required": True}],
        "end_of_options": True,
    })
    assert called(ns, target="-rf") == ["--color", "-m", "fast", "--", "-rf"]
    assert called(ns, target="t", color=False, mode="slow") == ["-m", "slow", "--", "t"]


def test_a_positional_starting_with_a_dash_is_refused_without_end_of_options(folder):
    ns = argv_tool(folder, {"options": {"o": {"type": "string", "short": "o"}},
                            "positional": [{"name": "path", "type": "string"},
                                           {"name": "n", "type": "integer"}]})
    with pytest.raises(ToolArgumentError, match=r"'path' is '-rf', which the program would "
                                                r"read as an option.*end_of_options: true"):
        ns.args(path="-rf")
    with pytest.raises(ToolArgumentError, match="'n' is '-3'"):
        ns.args(path="p", n=-3)
    # an option's value is the argument after its flag: taken as it is
    assert called(ns, o="-x", path="p", n=3) == ["-o", "-x", "p", "3"]


def test_the_command_may_carry_fixed_arguments_and_runs_without_a_shell(folder):
    write(folder, "sh.yaml", {"name": "sh", "command": ["sh", "-c", 'printf "%s|" "$@"', "sh"],
                              "schema": {"positional": [{"name": "words", "type": "array"}]}})
    ns = ToolsNamespace(Tools.from_folder(folder))
    assert ns.sh(words=["a b", "$(echo no)", "*", "`x`"]) == "a b|$(echo no)|*|`x`|"


# --- calls that do not fit --------------------------------------------------------------

SCHEMA = {
    "options": {
        "count": {"type": "integer", "short": "c", "description": "How many"},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array"},
        "levels": {"type": "array", "items": "integer"},
        "key": {"type": "string", "required": True},
    },
    "positional": [{"name": "first", "type": "string"},
                   {"name": "second", "type": "string"}],
}


@pytest.mark.parametrize("kwargs, message", [
    ({"key": "k", "cuont": 1}, r"tools\.never has no parameter 'cuont' \(did you mean 'count'\?\)"
                               r"; its parameters are: key: string, count: integer = None"),
    ({"key": "k", "zzz": 1}, r"no parameter 'zzz'; its parameters are: .*levels: array of "
                             r"integer = None, first: string = None, second: string = None"),
    ({}, r"tools\.never needs the option 'key' \(string\)"),
    ({"key": "k", "count": True}, r"option 'count' takes an integer, not bool True"),
    ({"key": "k", "count": "3"}, r"option 'count' takes an integer, not str '3'"),
    ({"key": "k", "count": 2.0}, r"option 'count' takes an integer, not float 2\.0"),
    ({"key": "k", "ratio": False}, r"option 'ratio' takes a number, not bool False"),
    ({"key": "k", "ratio": float("nan")}, r"option 'ratio' takes a finite number, not nan"),
    ({"key": "k", "flag": 1}, r"option 'flag' takes a boolean \(True gives --flag\), not int 1"),
    ({"key": "k", "flag": "yes"}, r"option 'flag' takes a boolean"),
    ({"key": "k", "tags": "abc"}, r"option 'tags' takes a list of string values, not str 'abc'"),
    ({"key": "k", "tags": ["a", 2]}, r"option 'tags', item 1 takes a string, not int 2"),
    ({"key": "k", "levels": [1, True]}, r"option 'levels', item 1 takes an integer, not bool"),
    ({"key": 5}, r"option 'key' takes a string, not int 5"),
    ({"key": "a\0b"}, r"cannot hold a NUL character"),
    ({"key": "k", "second": "s"}, r"'second' is given but 'first', which comes before it"),
])
def test_calls_that_do_not_fit_the_schema(folder, kwargs, message):
    # the program does not exist: an error other than the schema's would say so
    write(folder, "never.yaml", {"name": "never", "command": "/nonexistent/program",
                                 "schema": SCHEMA})
    ns = ToolsNamespace(Tools.from_folder(folder))
    with pytest.raises(ToolArgumentError, match=message) as e:
        ns.never(**kwargs)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ToolError)
    assert e.value.tool == "never"
    with pytest.raises(ToolError, match="'/nonexistent/program' was not found"):
        ns.never(key="k")                 # and a call that fits does run (and fails)


def test_positional_python_arguments_are_refused(folder):
    write(folder, "e.yaml", ECHO)
    ns = ToolsNamespace(Tools.from_folder(folder))
    with pytest.raises(ToolArgumentError, match=r"tools\.echo takes keyword arguments only: "
                                                r"tools\.echo\(text: string, no_newline"):
        ns.echo("hi")


def test_numpy_numbers_pass_and_numpy_bools_do_not(folder):
    np = pytest.importorskip("numpy")
    ns = argv_tool(folder, {"options": {"n": {"type": "integer"}, "x": {"type": "number"},
                                        "b": {"type": "boolean"}}})
    assert called(ns, n=np.int64(7), x=np.float32(0.5), b=np.bool_(True)) == \
        ["--n", "7", "--x", "0.5", "--b"]
    with pytest.raises(ToolArgumentError, match="option 'n' takes an integer, not bool"):
        ns.args(n=np.bool_(True))
    with pytest.raises(ToolArgumentError, match="option 'x' takes a number, not bool"):
        ns.args(x=np.bool_(False))


# --- recipes ----------------------------------------------------------------------------

def test_recipes_preset_and_override(folder):
    ns = argv_tool(folder, {
        "options": {"silent": {"type": "boolean", "short": "s"},
                    "method": {"type": "string", "short": "X"},
                    "header": {"type": "array", "short": "H"}},
        "positional": [{"name": "url", "type": "string", "required": True}],
    }, recipes={
        "get": {"description": "A quiet GET", "preset": {"silent": True},
                "params": {"url": {}}},
        "post": {"description": "POST", "preset": {"silent": True, "method": "POST"},
                 "params": {"url": {"default": "http://localhost/"},
                            "header": {"default": ["A: 1"]}}},
        "need": {"params": {"method": {"required": True, "description": "HTTP method"}}},
    })
    assert json.loads(ns.args.get(url="u")) == ["-s", "u"]
    assert json.loads(ns.args.get(url="u", silent=False)) == ["u"]      # kwargs win
    assert json.loads(ns.args.post()) == ["-s", "-X", "POST", "-H", "A: 1", "http://localhost/"]
    assert json.loads(ns.args.post(method="PUT", header=[], url="v")) == ["-s", "-X", "PUT", "v"]
    # None is "not given" at every level: the preset and the params' defaults stay
    assert json.loads(ns.args.post(method=None, url=None)) == \
        ["-s", "-X", "POST", "-H", "A: 1", "http://localhost/"]
    assert json.loads(ns.args.get(url="u", silent=None)) == ["-s", "u"]
    with pytest.raises(ToolArgumentError, match=r"tools\.args\.need needs 'method': HTTP method"):
        ns.args.need(url="u")
    with pytest.raises(ToolArgumentError, match=r"tools\.args\.get needs 'url'"):
        ns.args.get()
    with pytest.raises(ToolArgumentError, match=r"tools\.args\.get has no parameter 'uri'"):
        ns.args.get(uri="u")
    # introspection
    assert isinstance(ns.args, ToolProxy) and isinstance(ns.args.get, RecipeProxy)
    assert set(ns.args.recipes) == {"get", "post", "need"}
    assert ns.args.recipes["post"]["preset"] == {"silent": True, "method": "POST"}
    assert [r["name"] for r in ns.args.list()] == ["get", "post", "need"]
    assert set(dir(ns.args)) >= {"get", "post", "need", "help", "recipes"}
    assert "tools.args.post(url: string = 'http://localhost/', header: array of string = "\
           "['A: 1'])" in ns.args.help()
    assert repr(ns.args.get) == "<recipe tools.args.get(url: string): A quiet GET>"
    with pytest.raises(AttributeError, match=r"tools\.args has no recipe 'put'; its recipes "
                                             r"are: get, post, need"):
        ns.args.put


def test_a_recipe_named_like_the_tool_is_its_plain_call(folder):
    ns = argv_tool(folder, {"options": {"all": {"type": "boolean", "short": "a"}}},
                   recipes={"ls": {"preset": {"all": True}}}, name="ls")
    assert json.loads(ns.ls()) == ["-a"]
    assert json.loads(ns.ls(all=False)) == []


# --- running ----------------------------------------------------------------------------

def test_a_timeout_kills_the_process_group(folder, tmp_path):
    pidfile = tmp_path / "child.pid"
    write(folder, "slow.yaml", {
        "name": "slow", "timeout": 0.5,
        # the shell starts a grandchild (its own sleep) and waits for it
        "command": ["sh", "-c", 'sleep 30 & echo $! > "$1"; echo started; wait', "sh"],
        "schema": {"positional": [{"name": "pidfile", "type": "string"}]}})
    ns = ToolsNamespace(Tools.from_folder(folder))
    t0 = time.monotonic()
    with pytest.raises(ToolTimeoutError) as e:
        ns.slow(pidfile=str(pidfile))
    assert time.monotonic() - t0 < 20                     # not the 30 s of the sleep
    assert isinstance(e.value, TimeoutError) and isinstance(e.value, ToolError)
    assert str(e.value).startswith("tools.slow timed out after 0.5 s (its 'timeout' in ")
    assert e.value.stdout == "started\n"
    assert wait_gone(int(pidfile.read_text())), "a timed-out tool's grandchild still runs"


def test_a_failure_raises_with_exit_code_and_stderr(folder, tmp_path):
    write(folder, "ls.yaml", {"name": "ls", "command": "ls",
                              "schema": {"positional": [{"name": "path", "type": "string"}]}})
    write(folder, "false.yaml", {"name": "false", "command": "false"})
    write(folder, "noisy.yaml", {"name": "noisy", "command": [
        sys.executable, "-c",
        "import sys; sys.stderr.write('e' * 10000 + 'THE END'); sys.exit(7)"]})
    write(folder, "dies.yaml", {"name": "dies", "command": [
        sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]})
    ns = ToolsNamespace(Tools.from_folder(folder))
    missing = str(tmp_path / "no-such-dir")
    with pytest.raises(ToolError) as e:
        ns.ls(path=missing)
    assert str(e.value).startswith("tools.ls failed: exit code 2; stderr:\n")
    assert missing in str(e.value) and missing in e.value.stderr
    assert (e.value.tool, e.value.returncode, e.value.argv) == ("ls", 2, ["ls", missing])
    with pytest.raises(ToolError, match="tools.false failed: exit code 1; it wrote nothing"):
        ns.false()
    with pytest.raises(ToolError) as e:
        ns.noisy()
    assert e.value.returncode == 7 and len(e.value.stderr) == 10007
    assert str(e.value).endswith("eeeeTHE END") and "[8007 characters before]" in str(e.value)
    assert len(str(e.value)) < 2200
    with pytest.raises(ToolError, match=r"tools\.dies failed: killed by SIGTERM"):
        ns.dies()
    assert ns.ls(path=str(folder)).split() == ["dies.yaml", "false.yaml", "ls.yaml",
                                               "noisy.yaml"]


def test_a_missing_program_is_a_clear_error(folder):
    write(folder, "ghost.yaml", {"name": "ghost", "command": "no-such-program-torpor"})
    with pytest.raises(ToolError, match=r"tools\.ghost: the program 'no-such-program-torpor' "
                                        r"was not found .* fix 'command' in .*ghost\.yaml"):
        ToolsNamespace(Tools.from_folder(folder)).ghost()


def test_a_program_that_cannot_be_started_is_a_clear_error(folder, tmp_path):
    script = tmp_path / "no-shebang"
    script.write_text("echo hi\n")             # no '#!': exec fails with ENOEXEC
    script.chmod(0o755)
    write(folder, "script.yaml", {"name": "script", "command": str(script)})
    write(folder, "notdir.yaml", {"name": "notdir", "command": f"{script}/inside"})
    ns = ToolsNamespace(Tools.from_folder(folder))
    with pytest.raises(ToolError, match=rf"tools\.script: the program '{re.escape(str(script))}' "
                                        rf"cannot be started: Exec format error \(a script needs "
                                        rf"a '#!' line .*\); fix 'command' in .*script\.yaml"):
        ns.script()
    with pytest.raises(ToolError, match=r"tools\.notdir: the program '.*/inside' cannot be "
                                        r"started: Not a directory; fix 'command' in "):
        ns.notdir()


def test_handles_on_the_tools_are_not_saved_in_a_checkpoint(folder):
    write(folder, "echo.yaml", ECHO)
    ns = ToolsNamespace(Tools.from_folder(folder))
    for handle, name in [(ns, "tools"), (ns.echo, "tools.echo"),
                         (ns.echo.hello, "tools.echo.hello")]:
        message = re.escape(f"{name} is a handle on the session's tools and is not saved; "
                            f"use {name} again after a restore")
        with pytest.raises(TypeError, match=message):
            torpor.dumps(handle)
        with pytest.raises(TypeError, match=message):
            pickle.dumps(handle)
        with pytest.raises(TypeError, match=message):
            torpor.dumps({"g": handle})
    # "no default" is one object, also after a round trip (a ToolSpec's checks use `is`)
    assert pickle.loads(pickle.dumps(toolspec._MISSING)) is toolspec._MISSING
    assert torpor.loads(torpor.dumps(toolspec._MISSING), trusted=True) is toolspec._MISSING
    spec = Tools.from_folder(folder).get("echo")
    again = pickle.loads(pickle.dumps(spec))
    assert again.argv({}, "hello") == spec.argv({}, "hello") == ["/bin/echo", "hello"]
    assert not again.positional[0].has_default and again.positional[0].default is toolspec._MISSING


def test_the_tool_gets_no_stdin(folder):
    write(folder, "cat.yaml", {"name": "cat", "command": "cat", "timeout": 20})
    assert ToolsNamespace(Tools.from_folder(folder)).cat() == ""      # not a hang


# --- malformed definitions --------------------------------------------------------------

BROKEN = {
    "syntax.yaml": ("name: syntax\ndescription: ok\nschema:\n  options:\n    a: [1, 2\n",
                    "line 6: not valid YAML: while parsing a flow sequence did not find "
                    "expected ',' or ']' (what it was parsing started on line 5)", "syntax"),
    # (the wording of a syntax error is libyaml's or PyYAML's: the C loader's when built)
    "tab.yaml": ("name: tab\nschema:\n\toptions: {}\n",
                 "line 3: not valid YAML: while scanning for the next token found character",
                 "tab"),
    "type.yaml": ("name: type\ncommand: x\nschema:\n  options:\n    a:\n      type: strng\n",
                  "line 6: type 'strng' is not one of string, integer, number, boolean, array",
                  "type"),
    "typo.yaml": ("name: typo\nschema:\n  positional:\n    - name: a\n      requried: true\n",
                  "line 5: positional 'a' has an unknown key 'requried'; did you mean "
                  "'required'? the keys are name, type, short, long, required, default, "
                  "description, items", "typo"),
    "noname.yaml": ("description: nameless\ncommand: x\n",
                    "line 1: the tool has no 'name'", "noname"),
    "seq.yaml": ("- name: x\n", "line 1: a tool definition is a mapping of", "seq"),
    "timeout.yaml": ("name: slowish\n\n\ntimeout: -1\n",
                     "line 4: 'timeout' must be a positive number of seconds, not -1", "slowish"),
    "default.yaml": ("name: dflt\nschema:\n  options:\n    n:\n      type: integer\n"
                     "      default: ten\n",
                     "line 6: option 'n': the default takes an integer, not str 'ten'", "dflt"),
    "preset.yaml": ("name: preset\nschema:\n  options: {v: {type: boolean}}\nrecipes:\n  r:\n"
                    "    preset:\n      verbose: true\n",
                    "line 7: recipe 'r': 'preset' has an unknown key 'verbose'; the keys are v",
                    "preset"),
    "bytes.yaml": (b"name: bytes\ndescription: \xff\n",
                   "line 2: not UTF-8 text: byte 0xff at offset 25", "bytes"),
}


def test_malformed_files_are_reported_and_hide_nothing_else(folder):
    write(folder, "echo.yaml", ECHO)
    os.makedirs(folder, exist_ok=True)
    for file, (text, _, _) in BROKEN.items():
        with open(folder / file, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode())
    tools = Tools.from_folder(folder)
    with pytest.warns(ToolWarning) as caught:
        problems = tools.problems()
    assert sorted(str(w.message) for w in caught) == sorted(problems)
    assert len(problems) == len(BROKEN)
    for file, (_, expected, name) in BROKEN.items():
        line = next(p for p in problems if p.startswith(str(folder / file) + ","))
        assert expected in line, line
        # calling it by its name (or the file's) raises with the same message
        with pytest.raises(ToolError) as e:
            getattr(ToolsNamespace(tools), name)()
        assert str(e.value) == f"the tool {name!r} cannot be used: {line}"
    # shown and probed without raising anything but AttributeError
    assert repr(ToolsNamespace(tools).tab).startswith("<tool tools.tab: the tool 'tab' cannot be "
                                                      "used: ")
    assert not hasattr(ToolsNamespace(tools).tab, "recipe")
    # the good tool is untouched
    assert [t["name"] for t in tools.list()] == ["echo"]
    assert ToolsNamespace(tools).echo(text="still here") == "still here\n"
    # warned once, not at every use
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToolWarning)
        assert tools.problems() == problems


def test_names_that_would_hide_the_namespace_are_refused(folder):
    write(folder, "a.yaml", "name: list\n")
    write(folder, "b.yaml", "name: my-tool\n")
    write(folder, "c.yaml", "name: class\n")
    write(folder, "d.yaml", "name: d\nrecipes:\n  help: {}\n")
    write(folder, "e.yaml", "name: e\nschema:\n  options:\n    dry-run: {type: boolean}\n")
    tools = Tools.from_folder(folder)
    problems = quiet(tools)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "the tool's name 'list' must be an identifier (letters, digits, _; not a keyword, not "
        "starting with _) other than help, list, search (tools.{name} in code)",
        "the tool's name 'my-tool' must be an identifier (letters, digits, _; not a keyword, "
        "not starting with _) other than help, list, search (tools.{name} in code)",
        "the tool's name 'class' must be an identifier (letters, digits, _; not a keyword, not "
        "starting with _) other than help, list, search (tools.{name} in code)",
        "recipe 'help': the name must be an identifier other than help, list, recipes "
        "(tools.d.{recipe} in code)",
        "option 'dry-run': the name must be an identifier (code passes it as a keyword "
        "argument); use long: for a flag like --dry-run"]
    assert [p.split(", ")[1].split(":")[0] for p in problems] == \
        ["line 1", "line 1", "line 1", "line 3", "line 4"]
    assert tools.list() == []


def test_the_reserved_names_are_the_namespaces_own():
    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_")}
    assert public(ToolsNamespace) == toolspec.NAMESPACE_NAMES
    assert public(ToolProxy) == toolspec.PROXY_NAMES


def test_two_files_with_one_name_are_a_problem(folder):
    write(folder, "a.yaml", ECHO)
    write(folder, "b.yaml", "# another echo\nname: echo\ncommand: echo\n")
    write(folder, "c.yaml", "name: other\ncommand: /bin/echo\n")
    tools = Tools.from_folder(folder)
    problems = quiet(tools)
    assert problems == [f"{folder / 'b.yaml'}, line 2: the tool 'echo' is also defined in "
                        f"{folder / 'a.yaml'}; none of them is loaded: rename or remove all "
                        f"but one"]
    assert [t["name"] for t in tools.list()] == ["other"]
    with pytest.raises(ToolError, match="the tool 'echo' cannot be used: .*also defined"):
        ToolsNamespace(tools).echo(text="x")
    os.unlink(folder / "b.yaml")
    assert tools.problems() == []
    assert ToolsNamespace(tools).echo(text="x") == "x\n"


# --- reloading --------------------------------------------------------------------------

def test_files_added_edited_and_removed_are_seen(folder):
    tools = Tools.from_folder(folder)
    ns = ToolsNamespace(tools)
    assert tools.list() == [] and dir(ns) == ["help", "list", "search"]
    write(folder, "echo.yaml", ECHO)
    assert ns.echo(text="a") == "a\n"
    keep = ns.echo                                    # a proxy kept in a variable follows too
    write(folder, "echo.yaml", ECHO.replace("/bin/echo", "printf"))
    assert keep(text="b") == "b"
    write(folder, "echo.yaml", ECHO.replace("type: string", "type: strng"))
    with pytest.warns(ToolWarning, match="echo.yaml, line 14: type 'strng'"):
        with pytest.raises(ToolError, match="cannot be used"):
            keep(text="c")
    os.unlink(folder / "echo.yaml")
    with pytest.raises(AttributeError, match="there is no tool 'echo'; the tools are: none"):
        ns.echo
    with pytest.raises(ToolNotFoundError, match="there is no tool 'echo'"):
        keep(text="d")


def test_an_edit_that_keeps_size_and_mtime_is_seen(folder):
    write(folder, "t.yaml", "name: t\ndescription: aaaa\n")
    st = os.stat(folder / "t.yaml")
    tools = Tools.from_folder(folder)
    assert tools.get("t").description == "aaaa"
    with open(folder / "t.yaml", "r+") as f:          # in place: the same inode and size
        f.write("name: t\ndescription: bbbb\n")
    os.utime(folder / "t.yaml", ns=(st.st_atime_ns, st.st_mtime_ns))   # one coarse tick
    now = os.stat(folder / "t.yaml")
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert tools.get("t").description == "bbbb"


def test_unchanged_files_are_not_read_again(folder, monkeypatch):
    write(folder, "echo.yaml", ECHO)
    write(folder, "other.yaml", "name: other\n")
    tools = Tools.from_folder(folder)
    tools.list()
    reads = []
    real = toolspec.parse_text
    monkeypatch.setattr("torpor.workspace.library.tools.parse_text",
                        lambda text, source: reads.append(source) or real(text, source))
    tools.list()
    tools.get("echo")
    assert reads == []
    write(folder, "other.yaml", "name: other\ndescription: changed\n")
    assert [t["description"] for t in tools.list()] == ["Print text to standard output",
                                                        "changed"]
    assert reads == [str(folder / "other.yaml")]


# --- add, remove, search ----------------------------------------------------------------

def test_add_and_remove(folder):
    tools = Tools.from_folder(folder)
    info = tools.add(textwrap.dedent(ECHO))
    assert info["name"] == "echo" and info["source"] == str(folder / "echo.yaml")
    assert (folder / "echo.yaml").read_text() == textwrap.dedent(ECHO)   # comments kept
    assert tools.add({"name": "two", "command": "/bin/echo", "description": "Two"})["name"] \
        == "two"
    assert yaml.safe_load((folder / "two.yaml").read_text())["description"] == "Two"
    assert [t["name"] for t in tools.list()] == ["echo", "two"]
    with pytest.raises(ToolError, match=r"the tool was not added: line 2: 'timeout' must be a "
                                        r"positive number"):
        tools.add("name: three\ntimeout: 0\n")
    with pytest.raises(ToolError, match="not added: line 1: the tool's name 'list'"):
        tools.add({"name": "list"})
    class Text(str):
        pass
    with pytest.raises(ToolError, match="not added: it cannot be written as YAML"):
        tools.add({"name": "odd", "description": Text("a str YAML has no tag for")})
    assert sorted(os.listdir(folder)) == ["echo.yaml", "two.yaml"]
    # a tool defined in a file of another name is replaced where it is
    write(folder, "mine.yml", "name: mine\ndescription: old\n")
    tools.add("name: mine\ndescription: new\n")
    assert sorted(os.listdir(folder)) == ["echo.yaml", "mine.yml", "two.yaml"]
    assert tools.get("mine").description == "new"
    assert tools.remove("two") is True and tools.remove("two") is False
    assert sorted(os.listdir(folder)) == ["echo.yaml", "mine.yml"]
    # broken definitions can be removed by name too
    write(folder, "broken.yaml", "name: broken\ntimeout: no\n")
    assert len(quiet(tools)) == 1
    assert tools.remove("broken") is True and tools.problems() == []


def test_search_ranks_tools(folder):
    write(folder, "echo.yaml", ECHO)
    write(folder, "fetch.yaml", {
        "name": "fetch_url", "description": "Download a web page over HTTP",
        "tags": ["http", "network"], "command": "curl",
        "schema": {"options": {"header": {"type": "array", "description": "Request headers"}},
                   "positional": [{"name": "url", "type": "string"}]},
        "recipes": {"json": {"description": "Get JSON from an API"}}})
    write(folder, "count.yaml", {"name": "count_lines", "description": "Count the lines of "
                                 "files", "command": "wc", "tags": ["text"]})
    tools = Tools.from_folder(folder)
    assert [t["name"] for t in tools.search("fetch url")][0] == "fetch_url"
    assert [t["name"] for t in tools.search("network")] == ["fetch_url"]
    assert [t["name"] for t in tools.search("request headers")][0] == "fetch_url"
    assert [t["name"] for t in tools.search("JSON API")][0] == "fetch_url"
    assert [t["name"] for t in tools.search("print text")][0] == "echo"
    assert [t["name"] for t in tools.search("how many lines")][0] == "count_lines"
    assert len(tools.search("text", limit=1)) == 1
    best = tools.search("text")[0]
    assert best["score"] > 0 and isinstance(best["score"], float)
    assert {k: v for k, v in best.items() if k != "score"} == \
        next(t for t in tools.list() if t["name"] == best["name"])
    scores = [t["score"] for t in tools.search("text lines")]
    assert scores == sorted(scores, reverse=True)
    assert tools.search("zebra") == []
    ns = ToolsNamespace(tools)
    assert [t["name"] for t in ns.search("download page", limit=1)] == ["fetch_url"]
    write(folder, "zebra.yaml", "name: zebra\ndescription: a zebra\n")
    assert [t["name"] for t in tools.search("zebra")] == ["zebra"]          # index rebuilt


def test_the_namespace_describes_itself(folder):
    write(folder, "echo.yaml", ECHO)
    write(folder, "bad.yaml", "name: bad\ntimeout: x\n")
    ns = ToolsNamespace(Tools.from_folder(folder))
    with pytest.warns(ToolWarning, match="bad.yaml, line 2"):
        assert dir(ns) == ["echo", "help", "list", "search"]        # broken tools are not listed
    assert [t["name"] for t in ns.list()] == ["echo"]
    assert repr(ns) == "<tools: echo; tools.help() for more>"
    assert repr(ns.echo) == ("<tool tools.echo(text: string, no_newline: boolean = False): "
                             "Print text to standard output>")
    text = ns.help()
    assert "tools.echo(text: string, no_newline: boolean = False)" in text
    assert "no_newline (boolean, -n): Do not print the trailing newline" in text
    assert "tools.echo.hello(no_newline: boolean = False): Say hello [preset text='hello']" \
        in text
    assert "cannot be used: " in text and "bad.yaml, line 2: 'timeout'" in text
    with pytest.raises(AttributeError):
        ns._private
    assert not hasattr(ns, "__getstate__x")
    assert not hasattr(ns, "missing_tool")


# --- storages ---------------------------------------------------------------------------

def test_a_local_file_storage_reads_its_tools_folder(tmp_path):
    storage = FileStorage(tmp_path / "ws")
    assert storage.tools.list() == []
    write(tmp_path / "ws" / "tools", "echo.yaml", ECHO)
    assert [t["name"] for t in storage.tools.list()] == ["echo"]
    storage.tools.add({"name": "two", "command": "/bin/echo"})
    assert os.path.exists(tmp_path / "ws" / "tools" / "two.yaml")
    ws = FileStorage(tmp_path / "base", workspace_id="team")
    ws.tools.add({"name": "three"})
    assert os.path.exists(tmp_path / "base" / "team" / "tools" / "three.yaml")


def test_a_redis_storage_keeps_tools_in_a_hash(redis_storage_factory):
    storage = redis_storage_factory()
    other = redis_storage_factory()                  # another process's view
    assert storage.tools.list() == []
    storage.tools.add(textwrap.dedent(ECHO))
    key = storage.namespace + "tools"
    assert storage.redis.hget(key, "echo").decode() == textwrap.dedent(ECHO)
    assert [t["name"] for t in other.tools.list()] == ["echo"]
    assert ToolsNamespace(other.tools).echo(text="via redis") == "via redis\n"
    storage.redis.hset(key, "bad", "name: bad\nschema:\n  options: 3\n")
    storage.redis.hset(key, "wrong", "name: right\n")
    with pytest.warns(ToolWarning):
        problems = other.tools.problems()
    assert problems == [
        f"Redis hash {key} field 'bad', line 3: 'options' must be a mapping of option names "
        f"to their types, flags and descriptions",
        f"Redis hash {key} field 'wrong', line 1: the field is 'wrong' but the definition's "
        f"name is 'right'; add tools with Tools.add, which names the field"]
    assert [t["name"] for t in other.tools.list()] == ["echo"]
    assert [t["name"] for t in other.tools.search("print")] == ["echo"]
    assert other.tools.remove("bad") and other.tools.remove("wrong")
    assert storage.tools.remove("echo") is True and storage.tools.remove("echo") is False
    assert other.tools.list() == [] and not storage.redis.exists(key)


def test_an_fsspec_storage_reads_its_tools_folder(memory_storage_factory):
    import fsspec

    from torpor.storage.fsspec_store import mtime, protocols      # public helpers
    assert protocols(fsspec.filesystem("memory")) == ("memory",)
    assert mtime({"LastModified": "1970-01-01T00:00:10Z"}) == 10.0
    storage = memory_storage_factory()
    assert storage.tools.list() == []
    fs = fsspec.filesystem("memory")
    root = storage.root[len("memory://"):]
    fs.pipe_file(f"{root}/tools/echo.yaml", textwrap.dedent(ECHO).encode())
    fs.pipe_file(f"{root}/tools/bad.yml", b"name: [\n")
    fs.pipe_file(f"{root}/tools/readme.txt", b"not a tool")
    with pytest.warns(ToolWarning, match="bad.yml, line 2"):
        assert [t["name"] for t in storage.tools.list()] == ["echo"]
    problems = storage.tools.problems()
    assert len(problems) == 1
    assert problems[0].startswith(f"{storage.root}/tools/bad.yml, line 2: not valid YAML: "
                                  f"while parsing a flow node")
    fs.rm_file(f"{root}/tools/bad.yml")
    assert storage.tools.problems() == []
    assert ToolsNamespace(storage.tools).echo(text="memory") == "memory\n"
    storage.tools.add({"name": "two", "command": "/bin/echo", "description": "Second"})
    assert fs.cat_file(f"{root}/tools/two.yaml").startswith(b"name: two")
    fs.pipe_file(f"{root}/tools/echo.yaml",
                 textwrap.dedent(ECHO).replace("Print text", "Write text").encode())
    second = memory_storage_factory()                 # another view of the same place
    assert [t["description"] for t in second.tools.list()] == [
        "Write text to standard output", "Second"]
    assert [t["description"] for t in storage.tools.list()][0] == "Write text to standard output"
    assert storage.tools.remove("two") and not fs.exists(f"{root}/tools/two.yaml")


# --- from a session's code --------------------------------------------------------------

@pytest.fixture(scope="module")
def venv_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tools-venv") / "venv"


@pytest.fixture(params=["inprocess", "subprocess"])
def make_session(request, impl, tmp_path, venv_dir):
    def make(storage=None):
        storage = storage or FileStorage(tmp_path / "ws")
        if request.param == "subprocess":
            return Session(storage, SubprocessExecutor(SubprocessConfig(venv_path=venv_dir,
                                                                        grace=0.5)))
        return Session(storage, InProcessExecutor())
    return make


def test_sessions_call_tools_from_code(make_session, tmp_path, folder):
    ws = tmp_path / "ws"
    write(ws / "tools", "echo.yaml", ECHO)
    write(ws / "tools", "argv.yaml", {"name": "argv", "command": ARGV, "description":
                                      "Show the arguments",
                                      "schema": {"options": {"n": {"type": "integer"}}}})

    async def go():
        async with make_session() as s:
            r = await s.run("tools.echo(text='hi')")
            assert (r.error, r.value) == (None, "hi\n")
            r = await s.run("tools.echo.hello(no_newline=True), tools.argv(n=3)")
            assert r.error is None and r.value == ("hello", '["--n", "3"]\n')
            r = await s.run("[t['name'] for t in tools.list()], "
                            "[t['name'] for t in tools.search('arguments', limit=1)], "
                            "sorted(n for n in dir(tools) if not n.startswith('_'))")
            assert r.error is None
            assert r.value == (["argv", "echo"], ["argv"],
                               ["argv", "echo", "help", "list", "search"])
            assert [t["name"] for t in await s.list_tools()] == ["argv", "echo"]
            assert [t["name"] for t in await s.search_tools("print text")][0] == "echo"
            r = await s.run("tools.argv(n=True)")
            assert "ToolArgumentError: tools.argv: option 'n' takes an integer, not bool True" \
                in r.error
            # a tool dropped into the folder while the session runs
            write(ws / "tools", "late.yaml", {"name": "late", "command": "/bin/echo",
                                              "schema": {"positional": [{"name": "w"}]}})
            r = await s.run("tools.late(w='late')")
            assert (r.error, r.value) == (None, "late\n")
            r = await s.run("try:\n    tools.argv(n=1, m=2)\nexcept TypeError as e:\n"
                            "    caught = str(e)\ncaught")
            assert r.value.startswith("tools.argv has no parameter 'm'")
    arun(go())


def test_a_session_on_redis_calls_tools_from_a_worker(redis_storage_factory, venv_dir, impl):
    storage = redis_storage_factory()
    storage.tools.add(textwrap.dedent(ECHO))

    async def go():
        ex = SubprocessExecutor(SubprocessConfig(venv_path=venv_dir))
        async with Session(storage, ex) as s:
            r = await s.run("import os\n(tools.echo(text='worker'), os.getpid())")
            assert r.error is None and r.value[0] == "worker\n" and r.value[1] != os.getpid()
            assert [t["name"] for t in await s.list_tools()] == ["echo"]
    arun(go())


def test_a_session_timeout_kills_a_running_tool(make_session, tmp_path):
    ws = tmp_path / "ws"
    pidfile = tmp_path / "pid"
    write(ws / "tools", "slow.yaml", {
        "name": "slow", "timeout": 60,
        "command": ["sh", "-c", 'echo $$ > "$1"; exec sleep 30', "sh"],
        "schema": {"positional": [{"name": "pidfile"}]}})

    async def go():
        async with make_session() as s:
            t0 = time.monotonic()
            r = await s.run(f"tools.slow(pidfile={str(pidfile)!r})", timeout=0.5)
            assert time.monotonic() - t0 < 20
            assert r.timed_out and "TimeoutError" in r.error
    arun(go())
    pid = int(pidfile.read_text())
    if not wait_gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the tool still runs after the session's timeout")
