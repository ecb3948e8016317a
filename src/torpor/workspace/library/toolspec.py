"""One tool definition: reading and checking a YAML tool (py-code-mode's
format) and turning a call's keyword arguments into the program's argument
list. tools.py finds the definitions, runs them and offers them to code.

The format (every key but ``name`` is optional)::

    name: grep                      # an identifier: tools.grep(...)
    description: Search text for a pattern
    command: grep                   # the program (default: the name), or a list:
                                    # the program and fixed leading arguments
    timeout: 30                     # seconds (default 60)
    tags: [text, search]
    schema:
      options:                      # named: --name VALUE, -s VALUE, or a bare flag
        ignore_case: {type: boolean, short: i, description: Ignore case}
        context: {type: integer, short: C, default: 0}
        exclude: {type: array, long: exclude-dir}        # --exclude-dir A --exclude-dir B
      positional:                   # in order, after the options
        - {name: pattern, type: string, required: true}
        - {name: paths, type: array}                     # each item its own argument
      end_of_options: true          # put "--" before the positionals
    recipes:                        # presets: tools.grep.todo(paths=["src"])
      todo:
        description: Find TODO notes
        preset: {pattern: TODO, ignore_case: true}
        params: {paths: {default: ["."]}}

As in the reference, an option's flag is ``-{short}`` when it has a short form,
else ``--{long}`` (``long`` defaults to the option's name); a boolean is the
bare flag when true and nothing when false; an array repeats the flag for each
item; options come first, in the schema's order, then the positionals.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib
import keyword
import math
import numbers
import re
from typing import Any, Optional

from ...errors import brief

#: The canonical types, and the names the reference's examples also use.
TYPES = ("string", "integer", "number", "boolean", "array")
_ALIASES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
            "list": "array"}

#: Attributes of ToolsNamespace and of a tool's proxy (tools.py): a tool or a
#: recipe of these names would be hidden behind them, so they are refused.
NAMESPACE_NAMES = frozenset({"list", "search", "help"})
PROXY_NAMES = frozenset({"list", "help", "recipes"})

DEFAULT_TIMEOUT = 60.0

_TOP_KEYS = ("name", "description", "command", "timeout", "tags", "schema", "recipes", "type")
_SCHEMA_KEYS = ("options", "positional", "end_of_options")
_PARAM_KEYS = ("type", "short", "long", "required", "default", "description", "items")
_RECIPE_KEYS = ("description", "preset", "params")
_RECIPE_PARAM_KEYS = ("default", "description", "required")
_FLAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class _Missing(enum.Enum):
    """The default of a parameter that has none: a singleton that pickles by
    its name, so a ToolSpec that went through a checkpoint still has it."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing.MISSING


def yaml_module() -> Any:
    """PyYAML, imported on first use (``import torpor`` never needs it)."""
    try:
        return importlib.import_module("yaml")
    except ImportError:
        raise ImportError("workspace tools are YAML files and need PyYAML: "
                          "pip install 'torpor[workspace]' (or PyYAML)") from None


def safe_loader() -> Any:
    """PyYAML's safe loader, the C one when PyYAML was built with libyaml."""
    yaml = yaml_module()
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecError(Exception):
    """A definition is wrong: ``message`` says what and how to fix it, ``path``
    is where in the document (keys and list indexes), for the line number."""

    def __init__(self, message: str, path: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.path = message, path
        self.line = 1           # set by parse_text, which has the text


class ArgumentError(Exception):
    """A call's arguments do not fit the tool's schema (tools.py raises it as a
    ToolArgumentError)."""


def about(description: Optional[str]) -> str:
    """``": description"`` to follow a name in a message, or nothing."""
    return f": {description}" if description else ""


def is_name(name: Any) -> bool:
    """A name code can write after a dot: an identifier, not a keyword, and not
    private (``_x`` is left to Python's own attributes)."""
    return (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and not name.startswith("_"))


@dataclasses.dataclass(frozen=True)
class Param:
    """An option (``positional=False``) or a positional argument."""

    name: str
    type: str
    items: str = "string"          # an array's item type
    required: bool = False
    default: Any = _MISSING
    description: str = ""
    short: Optional[str] = None
    long: Optional[str] = None
    positional: bool = False

    @property
    def flag(self) -> str:
        """The flag an option is given with: ``-s`` or ``--long-name``."""
        return f"-{self.short}" if self.short else f"--{self.long or self.name}"

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def kind(self) -> str:
        """``string``, ``array of integer``: the type in words."""
        return f"array of {self.items}" if self.type == "array" else self.type

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "array":
            d["items"] = self.items
        if not self.positional:
            d["flag"] = self.flag
        d["required"] = self.required
        if self.has_default:
            d["default"] = self.default
        d["description"] = self.description
        return d

    def words(self, value: Any, where: str) -> list[str]:
        """The arguments ``value`` becomes (after its flag, for an option);
        ArgumentError if it is not of this parameter's type."""
        if self.type == "array":
            if not isinstance(value, (list, tuple)):
                raise ArgumentError(f"{where} takes a list of {self.items} values, "
                                    f"not {type(value).__name__} {brief(value)}")
            return [_word(self.items, v, f"{where}, item {i}") for i, v in enumerate(value)]
        return [_word(self.type, value, where)]


def _is_bool(value: Any) -> bool:
    """A Python or a numpy bool (which numbers.Integral does not cover, but
    which a tool must not receive as 1 or 0 either)."""
    t = type(value)
    return t is bool or (t.__module__ == "numpy" and t.__name__ in ("bool", "bool_"))


def _word(type_: str, value: Any, where: str) -> str:
    """One argument from a scalar ``value`` of type ``type_``. bool is refused
    where a number is meant (``True`` is an int to Python, never to a tool)."""
    is_bool = _is_bool(value)
    if type_ == "string" and isinstance(value, str):
        if "\0" in value:
            raise ArgumentError(f"{where}: a program's argument cannot hold a NUL "
                                f"character ({brief(value)})")
        return value
    if type_ == "integer" and isinstance(value, numbers.Integral) and not is_bool:
        return str(int(value))
    if type_ == "number" and isinstance(value, numbers.Real) and not is_bool:
        if isinstance(value, numbers.Integral):
            return str(int(value))
        if not math.isfinite(float(value)):
            raise ArgumentError(f"{where} takes a finite number, not {value!r}")
        return repr(float(value))
    article = "an" if type_[0] in "aeiou" else "a"
    raise ArgumentError(f"{where} takes {article} {type_}, not {type(value).__name__} "
                        f"{brief(value)}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named preset: ``preset`` values, and ``params`` the caller is meant to
    give (each may have a ``default`` and ``required``)."""

    name: str
    description: str
    preset: dict[str, Any]
    params: dict[str, dict[str, Any]]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "preset": dict(self.preset), "params": {k: dict(v) for k, v in self.params.items()}}


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """A checked tool definition. ``source`` names where it was read from."""

    name: str
    description: str
    command: tuple[str, ...]
    timeout: float
    tags: tuple[str, ...]
    options: dict[str, Param]
    positional: tuple[Param, ...]
    recipes: dict[str, Recipe]
    end_of_options: bool
    source: str

    def params(self) -> dict[str, Param]:
        """Every parameter by name: the options, then the positionals."""
        return {**self.options, **{p.name: p for p in self.positional}}

    def info(self) -> dict[str, Any]:
        """What ``Tools.list()`` says of the tool: plain values only (they cross
        the process boundary, and print well)."""
        return {"name": self.name, "description": self.description, "tags": list(self.tags),
                "command": list(self.command), "timeout": self.timeout,
                "options": [p.info() for p in self.options.values()],
                "positional": [p.info() for p in self.positional],
                "recipes": [r.info() for r in self.recipes.values()], "source": self.source}

    def search_doc(self) -> dict[str, str]:
        """The text the search ranks the tool by (search.Index's fields)."""
        params = [f"{p.name} {p.long or ''} {p.description}" for p in self.params().values()]
        recipes = [f"{r.name} {r.description}" for r in self.recipes.values()]
        return {"name": self.name, "description": self.description, "tags": " ".join(self.tags),
                "parameters": "\n".join(params), "doc": "\n".join(recipes)}

    def label(self, recipe: Optional[str] = None) -> str:
        return f"tools.{self.name}.{recipe}" if recipe else f"tools.{self.name}"

    # --- a call -------------------------------------------------------------------------

    def argv(self, kwargs: dict[str, Any], recipe: Optional[str] = None) -> list[str]:
        """The command line for a call (the program first): ``kwargs`` over the
        recipe's preset and its params' defaults, checked against the schema
        before anything runs. ArgumentError says what is wrong."""
        where = self.label(recipe)
        values = self._merged(kwargs, recipe)
        params = self.params()
        unknown = [k for k in values if k not in params]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArgumentError(f"{where} has no parameter {unknown[0]!r}{hint}; "
                                f"its parameters are: {self.signature()}")
        words: list[str] = []
        for p in self.options.values():
            value = values.get(p.name, p.default)
            if value is None or value is _MISSING:
                if p.required:
                    raise ArgumentError(f"{where} needs the option {p.name!r} ({p.kind()}"
                                        f"{about(p.description)})")
                continue
            if p.type == "boolean":
                if not _is_bool(value):
                    raise ArgumentError(f"{where}: option {p.name!r} takes a boolean (True "
                                        f"gives {p.flag}), not {type(value).__name__} "
                                        f"{brief(value)}")
                words += [p.flag] if value else []
                continue
            for w in p.words(value, f"{where}: option {p.name!r}"):
                words += [p.flag, w]
        rest = self._positional_words(values, where)
        if rest and self.end_of_options:
            words.append("--")
        return [*self.command, *words, *rest]

    def _merged(self, kwargs: dict[str, Any], recipe: Optional[str]) -> dict[str, Any]:
        """The call's values: kwargs over the recipe's params' defaults over its
        preset (as the reference). None means "not given" at every level."""
        given = {k: v for k, v in kwargs.items() if v is not None}
        if recipe is None:
            return given
        r = self.recipes[recipe]
        merged = dict(r.preset)
        for k, spec in r.params.items():
            if "default" in spec and k not in merged and k not in given:
                merged[k] = spec["default"]
        merged.update(given)
        for k, spec in r.params.items():
            if spec.get("required") and merged.get(k) is None:
                raise ArgumentError(f"{self.label(recipe)} needs {k!r}"
                                    f"{about(spec.get('description'))}")
        return {k: v for k, v in merged.items() if v is not None}

    def _positional_words(self, values: dict[str, Any], where: str) -> list[str]:
        out: list[str] = []
        skipped: Optional[str] = None        # an optional positional left out
        for p in self.positional:
            value = values.get(p.name, p.default)
            if value is None or value is _MISSING:
                if p.required:
                    raise ArgumentError(f"{where} needs {p.name!r} ({p.kind()}"
                                        f"{about(p.description)})")
                skipped = skipped or p.name
                continue
            if skipped:
                raise ArgumentError(f"{where}: {p.name!r} is given but {skipped!r}, which comes "
                                    f"before it on the command line, is not; give {skipped!r} "
                                    f"too")
            for w in p.words(value, f"{where}: {p.name!r}"):
                if w.startswith("-") and not self.end_of_options:
                    raise ArgumentError(
                        f"{where}: {p.name!r} is {brief(w)}, which the program would read as "
                        f"an option; if it takes '--' to end its options, set "
                        f"'schema: end_of_options: true' in {self.source}")
                out.append(w)
        return out

    # --- help ---------------------------------------------------------------------------

    def signature(self, recipe: Optional[str] = None) -> str:
        """``text: string, newline: boolean = False``: the keyword arguments."""
        r = self.recipes.get(recipe) if recipe else None
        parts = []
        for p in sorted(self.params().values(), key=lambda p: not p.required):
            if r is not None and (p.name not in r.params if r.params else p.name in r.preset):
                continue            # a recipe shows its params (or, with none, all but its preset)
            rp = r.params.get(p.name, {}) if r is not None else {}
            default = r.preset.get(p.name, rp.get("default", p.default)) if r else p.default
            required = p.required or bool(rp.get("required"))
            text = f"{p.name}: {p.kind()}"
            if default is not _MISSING and default is not None:
                text += f" = {default!r}"
            elif not required:
                text += " = False" if p.type == "boolean" else " = None"
            parts.append(text)
        return ", ".join(parts) or "(none)"

    def help(self) -> str:
        """The tool in words: what ``tools.NAME.help()`` prints."""
        lines = [f"{self.label()}({self.signature()})",
                 f"    {self.description}" if self.description else "",
                 f"    runs {' '.join(self.command)} (timeout {self.timeout:g} s)"
                 + (f"; tags: {', '.join(self.tags)}" if self.tags else ""),
                 f"    defined in {self.source}"]
        for p in self.params().values():
            where = "positional" if p.positional else p.flag
            extra = ", required" if p.required else (
                f", default {p.default!r}" if p.has_default else "")
            lines.append(f"  {p.name} ({p.kind()}, {where}{extra}){about(p.description)}")
        for r in self.recipes.values():
            preset = ", ".join(f"{k}={v!r}" for k, v in r.preset.items())
            lines.append(f"  {self.label(r.name)}({self.signature(r.name)})"
                         f"{about(r.description)}"
                         f"{' [preset ' + preset + ']' if preset else ''}")
        return "\n".join(line for line in lines if line)


# --- reading a definition ---------------------------------------------------------------

def parse_text(text: str, source: str) -> ToolSpec:
    """The tool ``text`` (YAML) defines. SpecError with the line for anything
    wrong: a YAML syntax error at its mark, a key at that key's line."""
    yaml = yaml_module()
    try:
        data = read_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        start = getattr(e, "context_mark", None)
        what = " ".join(str(getattr(e, k) or "") for k in ("context", "problem")).strip()
        if start is not None and mark is not None and start.line != mark.line:
            what += f" (what it was parsing started on line {start.line + 1})"
        err = SpecError(f"not valid YAML: {what or e}")
        err.line = mark.line + 1 if mark is not None else 1
        raise err from None
    try:
        return parse_data(data, source)
    except SpecError as e:
        e.line = line_of(text, e.path)
        raise


def read_yaml(text: str, how: str = "get_single_data") -> Any:
    """``yaml.safe_load`` (or ``yaml.compose`` with ``how="get_single_node"``)
    with the C safe loader when there is one."""
    loader = safe_loader()(text)
    try:
        return getattr(loader, how)()
    finally:
        loader.dispose()


def line_of(text: str, path: tuple[Any, ...]) -> int:
    """The line (1-based) of the key at ``path`` in the YAML ``text``: as deep
    as the path goes, the document's first line when nothing matches."""
    yaml = yaml_module()
    try:
        node = read_yaml(text, "get_single_node")
    except yaml.YAMLError:
        return 1
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value
                     if isinstance(k, yaml.ScalarNode) and k.value == str(key)]
            if not found:
                break
            line, node = found[-1][0].start_mark.line + 1, found[-1][1]   # the last wins
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                and 0 <= key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return int(line)


def _str(value: Any, path: tuple[Any, ...], what: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{what} must be text, not {type(value).__name__} {brief(value)}", path)
    return value


def _mapping(value: Any, path: tuple[Any, ...], what: str, keys: tuple[str, ...]
             ) -> dict[str, Any]:
    """``value`` as a mapping with no key outside ``keys`` (a misspelt key must
    not silently drop, say, ``required``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{what} must be a mapping, not {type(value).__name__} "
                        f"{brief(value)}", path)
    for k in value:
        if k not in keys:
            close = difflib.get_close_matches(str(k), keys, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(f"{what} has an unknown key {brief(k)}; {hint}the keys are "
                            f"{', '.join(keys)}", (*path, k))
    return value


def parse_data(data: Any, source: str) -> ToolSpec:
    """The tool the parsed document ``data`` defines (SpecError if wrong)."""
    if not isinstance(data, dict):
        raise SpecError(f"a tool definition is a mapping of {', '.join(_TOP_KEYS[:-1])}; "
                        f"this is {'empty' if data is None else type(data).__name__}")
    if "args" in data:
        raise SpecError("the 'args' template format is not supported: describe the "
                        "arguments in 'schema' (options, positional) and 'recipes'", ("args",))
    d = _mapping(data, (), "a tool definition", _TOP_KEYS)
    if d.get("type", "cli") != "cli":
        raise SpecError(f"tools of type {brief(d['type'])} are not supported, only command-line "
                        f"tools (type: cli, the default)", ("type",))
    if "name" not in d:
        raise SpecError("the tool has no 'name' (an identifier: code calls tools.NAME(...))")
    name = d["name"]
    if not is_name(name) or name in NAMESPACE_NAMES:
        raise SpecError(f"the tool's name {brief(name)} must be an identifier (letters, digits, "
                        f"_; not a keyword, not starting with _) other than "
                        f"{', '.join(sorted(NAMESPACE_NAMES))} (tools.{{name}} in code)", ("name",))
    command = _command(d.get("command", name))
    timeout = d.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout < math.inf:
        raise SpecError(f"'timeout' must be a positive number of seconds, not {brief(timeout)}",
                        ("timeout",))
    tags = d.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SpecError(f"'tags' must be a list of words, not {brief(tags)}", ("tags",))
    schema = _mapping(d.get("schema"), ("schema",), "'schema'", _SCHEMA_KEYS)
    options = _options(schema.get("options"))
    positional = _positionals(schema.get("positional"))
    both = set(options) & {p.name for p in positional}
    if both:
        raise SpecError(f"{sorted(both)[0]!r} is both an option and a positional; rename one",
                        ("schema", "positional"))
    end = schema.get("end_of_options", False)
    if not isinstance(end, bool):
        raise SpecError(f"'end_of_options' must be true or false, not {brief(end)}",
                        ("schema", "end_of_options"))
    spec = ToolSpec(name=name, description=_str(d.get("description") or "", ("description",),
                                                "'description'"),
                    command=command, timeout=float(timeout), tags=tuple(tags), options=options,
                    positional=positional, recipes={}, end_of_options=end, source=source)
    recipes = _recipes(d.get("recipes"), spec)
    return dataclasses.replace(spec, recipes=recipes)


def _command(cmd: Any) -> tuple[str, ...]:
    """``command``: the program (never split: no shell reads it), or a list of
    the program and fixed leading arguments."""
    parts = [cmd] if isinstance(cmd, str) else cmd
    if not isinstance(parts, list) or not parts or \
            not all(isinstance(p, str) and p and "\0" not in p for p in parts):
        raise SpecError(f"'command' must be the program to run (a name on PATH or a path), or "
                        f"a list of the program and its fixed arguments; not {brief(cmd)}",
                        ("command",))
    return tuple(parts)


def _type(spec: dict[str, Any], key: str, path: tuple[Any, ...], default: str) -> str:
    t = spec.get(key, default)
    t = _ALIASES.get(t, t) if isinstance(t, str) else t
    if t not in TYPES:
        raise SpecError(f"type {brief(t)} is not one of {', '.join(TYPES)}", (*path, key))
    return str(t)


def _param(name: Any, raw: Any, path: tuple[Any, ...], positional: bool) -> Param:
    what = f"{'positional' if positional else 'option'} {brief(name)}"
    if not is_name(name):
        raise SpecError(f"{what}: the name must be an identifier (code passes it as a keyword "
                        f"argument){'' if positional else '; use long: for a flag like --dry-run'}",
                        path)
    spec = _mapping(raw, path, what, ("name", *_PARAM_KEYS) if positional else _PARAM_KEYS)
    type_ = _type(spec, "type", path, "string")
    items = "string"
    if "items" in spec:
        if type_ != "array":
            raise SpecError(f"{what}: 'items' is for arrays only", (*path, "items"))
        raw_items = spec["items"]
        items = _type(raw_items if isinstance(raw_items, dict) else {"type": raw_items},
                      "type", (*path, "items"), "string")
        if items in ("array", "boolean"):
            raise SpecError(f"{what}: an array's items are strings, integers or numbers",
                            (*path, "items"))
    if positional and type_ == "boolean":
        raise SpecError(f"{what}: a positional cannot be a boolean (there is no flag to give or "
                        f"leave out); make it an option", (*path, "type"))
    for key in ("short", "long"):
        flag = spec.get(key)
        if flag is None:
            continue
        if positional:
            raise SpecError(f"{what}: a positional has no {key!r} flag", (*path, key))
        if not isinstance(flag, str) or not _FLAG.match(flag):
            raise SpecError(f"{what}: {key!r} is the flag without its dashes (short: v for -v, "
                            f"long: dry-run for --dry-run), not {brief(flag)}", (*path, key))
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise SpecError(f"{what}: 'required' must be true or false", (*path, "required"))
    p = Param(name=name, type=type_, items=items, required=required,
              description=_str(spec.get("description") or "", (*path, "description"),
                               f"{what}: 'description'"),
              short=spec.get("short"), long=spec.get("long"), positional=positional)
    if spec.get("default") is not None:
        _check_value(p, spec["default"], (*path, "default"), f"{what}: the default")
        p = dataclasses.replace(p, default=spec["default"])
    return p


def _check_value(p: Param, value: Any, path: tuple[Any, ...], what: str) -> None:
    try:
        if p.type == "boolean":
            if not isinstance(value, bool):
                raise ArgumentError(f"{what} must be true or false, not {brief(value)}")
        else:
            p.words(value, what)
    except ArgumentError as e:
        raise SpecError(str(e), path) from None


def _options(raw: Any) -> dict[str, Param]:
    path: tuple[Any, ...] = ("schema", "options")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("'options' must be a mapping of option names to their types, flags "
                        "and descriptions", path)
    return {name: _param(name, spec, (*path, name), False) for name, spec in raw.items()}


def _positionals(raw: Any) -> tuple[Param, ...]:
    path: tuple[Any, ...] = ("schema", "positional")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError("'positional' must be a list of {name, type, required, description}, "
                        "in command-line order", path)
    out: list[Param] = []
    for i, spec in enumerate(raw):
        if not isinstance(spec, dict) or "name" not in spec:
            raise SpecError(f"positional {i + 1} must be a mapping with a 'name'", (*path, i))
        if spec["name"] in {p.name for p in out}:
            raise SpecError(f"positional {brief(spec['name'])} is listed twice", (*path, i))
        p = _param(spec["name"], spec, (*path, i), True)
        gap = next((q for q in out if not q.required and not q.has_default), None)
        if gap is not None and (p.required or p.has_default):
            raise SpecError(f"positional {p.name!r} is {'required' if p.required else 'defaulted'}"
                            f" but comes after {gap.name!r}, which may be left out: its value "
                            f"would then take {gap.name!r}'s place; reorder them or give "
                            f"{gap.name!r} a default", (*path, i))
        out.append(p)
    return tuple(out)


def _recipes(raw: Any, spec: ToolSpec) -> dict[str, Recipe]:
    path: tuple[Any, ...] = ("recipes",)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("'recipes' must be a mapping of recipe names to "
                        "{description, preset, params}", path)
    params = spec.params()
    out: dict[str, Recipe] = {}
    for name, r in raw.items():
        where = (*path, name)
        if not is_name(name) or name in PROXY_NAMES:
            raise SpecError(f"recipe {brief(name)}: the name must be an identifier other than "
                            f"{', '.join(sorted(PROXY_NAMES))} (tools.{spec.name}.{{recipe}} in "
                            f"code)", where)
        r = _mapping(r, where, f"recipe {name!r}", _RECIPE_KEYS)
        preset = _mapping(r.get("preset"), (*where, "preset"), f"recipe {name!r}: 'preset'",
                          tuple(params))
        for k, v in preset.items():
            if v is not None:
                _check_value(params[k], v, (*where, "preset", k), f"recipe {name!r}: {k!r}")
        rparams = _mapping(r.get("params"), (*where, "params"), f"recipe {name!r}: 'params'",
                           tuple(params))
        checked: dict[str, dict[str, Any]] = {}
        for k, v in rparams.items():
            at = (*where, "params", k)
            v = _mapping(v, at, f"recipe {name!r}: param {k!r}", _RECIPE_PARAM_KEYS)
            if v.get("default") is not None:
                _check_value(params[k], v["default"], (*at, "default"),
                             f"recipe {name!r}: the default of {k!r}")
            if not isinstance(v.get("required", False), bool):
                raise SpecError(f"recipe {name!r}: param {k!r}: 'required' must be true or "
                                f"false", (*at, "required"))
            checked[k] = dict(v)
        out[name] = Recipe(name=name, description=_str(r.get("description") or "",
                                                      (*where, "description"), "a description"),
                           preset=dict(preset), params=checked)
    return out
