"""Every config key as a reference: dotted name, type, default and doc line, read from the dataclasses of
:mod:`distgan.config` (their attribute docstrings), so ``--help`` can never list a key that does not exist
or miss one that does.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from distgan import config


@dataclass(frozen=True)
class Key:
    name: str  # dotted, e.g. train.epochs
    type: str  # e.g. "int or null", "mnist | fashion_mnist | synthetic"
    default: Any  # the built-in default, in YAML's terms (a list, not a tuple)
    doc: str  # the first sentence of the field's docstring ("" when it has none)


def _docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal right after the field, as this project writes them)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    out = {}
    for field, nxt in zip(body, body[1:], strict=False):
        named = isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
        if named and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt.value, "value", None), str):
            out[field.target.id] = " ".join(nxt.value.value.split())
    return out


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not the one of "e.g.")."""
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`(])", text)
    return text if match is None else text[: match.start() + 1]


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        joint = " | " if all(typing.get_origin(a) is Literal for a in args if a is not type(None)) else " or "
        return joint.join(named + (["null"] if type(None) in args else []))
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if tp is dict or origin is dict:
        return "mapping"
    return {bool: "true/false", int: "int", float: "number", str: "text"}.get(tp, getattr(tp, "__name__", str(tp)))


def keys(values: Any = None, prefix: str = "") -> list[Key]:
    """Every leaf key of a config in declaration order, sections expanded (optim.g.lr, not optim), with its
    value in ``values`` (a Config or one of its sections; the built-in defaults when None)."""
    values = config.Config() if values is None else values
    cls = type(values)
    hints, docs = typing.get_type_hints(cls), _docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        name, tp, value = f"{prefix}{f.name}", hints[f.name], getattr(values, f.name)
        if dataclasses.is_dataclass(tp):
            out += keys(value, f"{name}.")
        else:
            out.append(Key(name, type_name(tp), config.to_plain(value), first_sentence(docs.get(f.name, ""))))
    return out


def render(value: Any) -> str:
    """A value as --help shows it (YAML's spelling of null, booleans and the empty text)."""
    if value is None:
        return "null"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 16).strip()
    return str(value)


def help_text(
    values: Any = None,
    origin: str = "the built-in defaults, which each config file changes in part",
    how: str = "as --set KEY=VALUE (e.g. --set train.epochs=3)",
    width: int = 100,
) -> str:
    """The keys grouped by section, with their values in ``values`` (from ``origin``), for an argparse epilog."""
    lines = [f"config keys, each overridden {how}.", f"The values shown are {origin}."]
    section = None
    for k in keys(values):
        head = k.name.split(".")[0] if "." in k.name else "(top level)"
        if head != section:
            section = head
            lines += ["", f"  {section}:"]
        lines.append(f"    {k.name} ({k.type}) = {render(k.default)}")
        if k.doc:
            lines += textwrap.wrap(k.doc, width, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return "\n".join(lines)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, except that indented lines (the key list of an epilog) keep their layout."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            line if not line.strip() or line.startswith(" ") else textwrap.fill(line, width, initial_indent=indent)
            for line in text.splitlines()
        )


def parser(prog: str, description: str, values: Any = None, origin: str | None = None, how: str | None = None):
    """An entry point's ArgumentParser whose epilog lists the config keys (see :func:`help_text`)."""
    options = {k: v for k, v in (("origin", origin), ("how", how)) if v is not None}
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=help_text(values, **options), formatter_class=HelpFormatter
    )
