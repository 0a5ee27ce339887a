"""Options given as text (``--set KEY=VALUE``, recipe keys) checked against what a class takes: its
constructor's parameter names and type hints (:class:`~synth.common.params.Configurable`). One
checker for the command line, the recipes and the benchmarks, so that each accepts exactly what the
classes do."""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence as AbcSequence
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Union


class OptionError(ValueError):
    """An option that a class does not take, or a value of the wrong type; the message names it."""


def describe(hint: Any) -> str:
    """A type hint in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "anything"
    if hint is type(None) or hint is None:
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list"}
    if hint in names:
        return names[hint]
    if origin in (tuple,) and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if origin in (tuple, list, AbcSequence):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin in (dict, AbcMapping):
        return f"a mapping of {describe(args[0])} to {describe(args[1])}" if args else "a mapping"
    if isinstance(hint, type) and issubclass(hint, Path):
        return "a path"
    return getattr(hint, "__name__", str(hint))


def conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(True, value)`` when ``value`` has type ``hint`` (numbers written as strings, e.g. YAML's
    ``1e-4``, become numbers); ``(False, None)`` otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True, value
    if hint is None or hint is type(None):
        return value is None, None
    if origin in (Union, types.UnionType):
        for arg in sorted(args, key=lambda a: a is str):  # try str last: "1e-4" for float | str is a number
            ok, out = conform(value, arg)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return False, None
            return math.isfinite(number), number
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if hint is str or (isinstance(hint, type) and issubclass(hint, Path)):
        return isinstance(value, str), value
    if origin in (tuple, list, AbcSequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, None
            items = list(zip(value, args))
        else:
            items = [(v, args[0] if args else Any) for v in value]
        out = []
        for item, item_hint in items:
            ok, converted = conform(item, item_hint)
            if not ok:
                return False, None
            out.append(converted)
        return True, out
    if origin in (dict, AbcMapping) or hint in (dict,):
        if not isinstance(value, dict):
            return False, None
        key_hint, value_hint = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            ok_key, _ = conform(k, key_hint)
            ok_value, converted = conform(v, value_hint)
            if not (ok_key and ok_value):
                return False, None
            out[k] = converted
        return True, out
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'epochs'?)`` for a misspelt ``name`` with a close match among ``known``; else ''."""
    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def checked_options(klass: type, options: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Command-line ``--set`` options checked the way a recipe's are: every key a constructor
    parameter of ``klass``, every value of its type (numbers given as text become numbers)."""
    hints = klass.param_hints()
    out = {}
    for key, value in options.items():
        if key not in hints:
            raise OptionError(f"--set {key}: unknown {what} option{closest(key, hints)}; known options: "
                              f"{', '.join(sorted(hints))}")
        ok, converted = conform(value, hints[key])
        if not ok:
            raise OptionError(f"--set {key}={value!r}: {key} must be {describe(hints[key])}")
        out[key] = converted
    return out


def parse_assignments(items: list[str]) -> list[tuple[list[str], Any]]:
    """``["train.epochs=5"]`` -> ``[(["train", "epochs"], 5)]``; values are read as YAML."""
    import yaml

    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out.append(([part.strip() for part in key.split(".")], value))
    return out


def parse_options(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` options of one class, read as a recipe's overrides are (values as YAML)."""
    return {".".join(keys): value for keys, value in parse_assignments(items)}
