"""Method options as one string: `name:key=value,...`, typed from the method's declarations.

The `--method` of every verb and `get_method` from Python name a method and its options in one
spec such as `chefer:start_layer=0,target=cosine`. A spec is parsed here
and nowhere else: values are read as the option's declared type (`true` / `false`, whole numbers,
numbers, words, `none` for an optional, `[a,b]` for a tuple or list), and written back one way
(`format_spec`: keys sorted, no spaces, `5` as `5.0` for a float), which is the canonical label
of a method instance. Errors name the method, the key and the type expected.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eclip.errors import MethodError


@dataclass(frozen=True)
class Option:
    """One option of a method: its name, declared type and default."""

    name: str
    kind: Any
    default: Any

    def describe(self) -> str:
        """`key=default (type)`, as `eclip methods` lists it."""
        return f"{self.name}={format_value(self.default)} ({type_name(self.kind)})"

    def parse(self, text: str, method: str) -> Any:
        """The value `text` as the declared type; a MethodError names the key and the type expected."""
        try:
            return parse_value(text, self.kind)
        except ValueError:
            raise MethodError(f"method '{method}' option {self.name}={text!r}: expected {type_name(self.kind)}; "
                              f"e.g. {method}:{self.name}={self.example()}") from None

    def example(self) -> str:
        """A value of the option's type as a spec writes it: the default, or for a default of none a sample."""
        if self.default is not None:
            return format_value(self.default)
        kind = _optional_parts(self.kind)[1][0]
        if typing.get_origin(kind) in (tuple, list):
            return "[1,2]"
        return {bool: "true", int: "1", float: "0.5"}.get(kind, "none")


@functools.cache
def method_options(cls: type) -> dict[str, Option]:
    """Name -> `Option` of every option a method class declares (its dataclass fields), in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: Option(f.name, hints.get(f.name, str), f.default) for f in dataclasses.fields(cls) if f.init}


_NONE = ("none", "null")
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _optional_parts(kind: Any) -> tuple[bool, list[Any]]:
    """(None allowed, the other types) of an annotation (`int | None` -> (True, [int]))."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        return type(None) in args, [a for a in args if a is not type(None)]
    return False, [kind]


def parse_value(text: str, kind: Any) -> Any:
    """A spec's value `text` as the annotation `kind` (ValueError when it is not one)."""
    text = text.strip()
    optional, kinds = _optional_parts(kind)
    if optional and text.lower() in _NONE:
        return None
    for k in kinds:
        try:
            return _parse_one(text, k)
        except ValueError:
            continue
    raise ValueError(text)


def _parse_one(text: str, kind: Any) -> Any:
    if kind is bool:
        if text.lower() not in _BOOLS:
            raise ValueError(text)
        return _BOOLS[text.lower()]
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        if not text:
            raise ValueError(text)
        return text
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        item = typing.get_args(kind)[0] if typing.get_args(kind) else str
        items = [parse_value(part, item) for part in _split_top_level(inner) if part.strip()]
        return tuple(items) if origin is tuple else items
    raise ValueError(text)


def type_name(kind: Any) -> str:
    """How an annotation reads in a message or a listing: `bool`, `int or none`, `list of int`."""
    optional, kinds = _optional_parts(kind)
    names = []
    for k in kinds:
        if typing.get_origin(k) in (tuple, list):
            args = typing.get_args(k)
            names.append(f"list of {type_name(args[0]) if args else 'str'}")
        else:
            names.append(getattr(k, "__name__", str(k)))
    return " or ".join(names + (["none"] if optional else []))


def format_value(value: Any) -> str:
    """A value as a spec writes it, one way for each value: true, none, 0.5, [100,150]."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def format_spec(name: str, options: dict[str, Any]) -> str:
    """`name`, or `name:key=value,...` with the keys sorted: the canonical form of a spec."""
    if not options:
        return name
    return name + ":" + ",".join(f"{k}={format_value(options[k])}" for k in sorted(options))


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside brackets (`a=1,b=[2,3]` -> `a=1`, `b=[2,3]`)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(text)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(text)
    return parts + [text[start:]]


def parse_spec(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """`name` or `name:key=value,...` -> the name and the (key, value text) pairs, whitespace stripped."""
    name, colon, rest = spec.partition(":")
    name = name.strip()
    example = f"{name or 'NAME'}:key=value,key=value"
    if not name:
        raise MethodError(f"method {spec!r} has no name; write NAME or {example}")
    if not colon:
        return name, []
    try:
        items = _split_top_level(rest)
    except ValueError:
        raise MethodError(f"method {spec!r}: unbalanced brackets; write a list as key=[a,b]") from None
    pairs = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise MethodError(f"method {spec!r}: {item.strip()!r} is not key=value; write {example}")
        pairs.append((key.strip(), value.strip()))
    return name, pairs


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `known` to `word`, or ''."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
