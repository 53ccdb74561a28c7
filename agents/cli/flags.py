"""Command-line flags made from config dataclasses.

Each field of a config becomes ``--field-name``; its help is the field's attribute docstring (the string literal
right after it, read from the source with :mod:`ast`, base classes included) with Sphinx markup removed, and its
default. A value the config refuses (``ValueError`` from ``__post_init__``) becomes a :class:`UsageError` whose
message names the flag (``--lr``), not the field (``lr``); see :mod:`agents.cli.errors`.

>>> plain("the :class:`~agents.core.onpolicy.OnPolicyConfig` fields; ``None``: 10% of :func:`train`")
'the OnPolicyConfig fields; None: 10% of train'
>>> parse_bool("Yes"), parse_bool("0")
(True, False)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import re
import textwrap
import types
import typing

from agents.cli.errors import UsageError, name_flags

# ----------------------------------------------------------------------------------------------- field docs
_ROLE = re.compile(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :class:`~a.b.C`, :func:`f`, :ref:`text <target>`


def plain(text: str) -> str:
    """``text`` with Sphinx roles and double backticks removed (``~a.b.C`` keeps the last name)."""

    def role(match: re.Match) -> str:
        name = match.group(1).strip()
        return name.rsplit(".", 1)[-1] if match.group(0).split("`", 1)[1].startswith("~") else name

    return _ROLE.sub(role, text).replace("``", "")


def field_docs(cls) -> dict[str, str]:
    """The attribute docstring of every field of dataclass ``cls`` (base classes first, a subclass's doc wins),
    first paragraph, one line, markup removed; a field without one is left out."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (a frozen install): flags still work, without docs
            continue
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                paragraph = inspect.cleandoc(after.value.value).split("\n\n", 1)[0]
                docs[node.target.id] = plain(" ".join(paragraph.split()))
    return docs


# ----------------------------------------------------------------------------------------------- values
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (or ``on/off``), any case; anything else is refused."""
    word = text.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true/false, 1/0 or yes/no (any case)")


def value_parser(kind):
    """An argparse ``type`` for a field annotation (``int``, ``float | None``, ``bool``, ``tuple[int, ...]``, ``dict``).
    Its ``__name__`` is what argparse's "invalid ... value" message shows."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = type(None) in typing.get_args(kind)
    base = args[0] if (optional or isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union) and args else kind
    if typing.get_origin(base) is tuple:
        inner = typing.get_args(base)[0]
        convert, name = (lambda text: tuple(inner(x) for x in text.split(",") if x)), f"comma-separated {inner.__name__}"
    elif base is dict or typing.get_origin(base) is dict:
        convert, name = json.loads, "JSON"
    elif base is bool:
        convert, name = parse_bool, "boolean"
    else:
        convert, name = base, getattr(base, "__name__", "value")

    def parse(text):
        if optional and text.strip().lower() == "none":
            return None
        return convert(text)

    parse.__name__ = name
    return parse


def _metavar(kind, default) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args and typing.get_origin(kind) is not tuple and typing.get_origin(kind) is not dict else kind
    if base is bool:
        return "{true,false}"
    if typing.get_origin(base) is tuple:
        return "A,B,..."
    if base is dict or typing.get_origin(base) is dict:
        return "JSON"
    return getattr(base, "__name__", "X").upper()


def _shown(default) -> str:
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    if isinstance(default, dict):
        return json.dumps(default)
    return str(default)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, config_cls, preset: dict | None = None, *,
                     defaults: dict | None = None, aliases: dict | None = None) -> None:
    """One ``--field-name`` per field of ``config_cls`` (those in ``preset`` are fixed, no flag), its help the field's
    docstring and default. ``defaults`` replaces a field's default on the command line; ``aliases`` gives a field
    more option strings (``{"output_dir": ["--out"]}``). A field without a default is a required flag."""
    preset, defaults, aliases = preset or {}, defaults or {}, aliases or {}
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    flags = dict(parser.get_default("config_flags") or {})
    names = {f.name: flag(f.name) for f in dataclasses.fields(config_cls) if f.name not in preset}
    for f in dataclasses.fields(config_cls):
        if f.name in preset:
            continue
        options = [flag(f.name), *aliases.get(f.name, ())]
        flags[f.name] = options[-1] if aliases.get(f.name) else options[0]
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        doc = name_flags(docs.get(f.name, ""), {k: v for k, v in names.items() if "_" in k}).rstrip(".")
        tail = "required" if default is dataclasses.MISSING else f"default: {_shown(default)}"
        text = f"{doc} ({tail})" if doc else tail
        extra = {"required": True} if default is dataclasses.MISSING else {"default": argparse.SUPPRESS}
        if f.name in defaults:
            extra["default"] = default
        parser.add_argument(*options, dest=f"cfg_{f.name}", type=value_parser(hints[f.name]),
                            metavar=_metavar(hints[f.name], default), help=text.replace("%", "%%"), **extra)
    parser.set_defaults(config_flags=flags)


def config_values(args) -> dict:
    """The config fields given on the command line (``cfg_*`` of ``args``)."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}


def make_config(args, config_cls, preset: dict | None = None, *, values: dict | None = None, base=None):
    """``config_cls(**preset, **values)`` with ``values`` the flags given (default: all of ``args``' config flags), or
    ``dataclasses.replace(base, ...)``; a value the config refuses becomes a :class:`UsageError` naming the flag."""
    values = {**(preset or {}), **(config_values(args) if values is None else values)}
    try:
        return dataclasses.replace(base, **values) if base is not None else config_cls(**values)
    except (ValueError, TypeError) as error:
        raise UsageError(name_flags(str(error), getattr(args, "config_flags", {}))) from error
