"""Declarative checks of configuration values: one validation layer, one error type.

A config section (a dataclass of :mod:`prompt_learning.run_spec`, or a method's ``Config``) says what its
keys accept in two places: the field annotations give the type (``int``, ``float``, ``str | None``,
``list[str]``, ...), and an optional ``RULES`` class attribute, ``{key: Rule}``, gives the range or the
choices. Subclasses inherit their parents' rules (a redeclared default keeps them) and may add their own.

:func:`check_fields` reads both for a mapping of values and records every problem in a :class:`Problems`;
:meth:`Problems.raise_if_any` raises one :class:`~prompt_learning.errors.ConfigurationError` that names each
key, the value given and what the key accepts, on one line. No torch, no Lightning, no Hydra here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prompt_learning.errors import ConfigurationError
from prompt_learning.registry import did_you_mean


def shown(value: Any) -> str:
    """A value as it is written in YAML or on the command line: ``true``, ``null``, ``0.5``, ``'text'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return repr(value)


@dataclass(frozen=True)
class Rule:
    """What one key accepts: the test, and the same in words phrased as the fix (``an integer >= 1``).
    ``hint`` may add a sentence for a refused value (close matches of a misspelt name)."""

    accepts: Callable[[Any], bool]
    expected: str
    hint: Callable[[Any], str] | None = None

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.accepts(value))
        except (TypeError, ValueError, AttributeError):
            return False

    def or_null(self) -> Rule:
        return Rule(lambda v: v is None or self(v), f"null or {self.expected}", self.hint)


def is_integer(value: Any) -> bool:
    """An int that is not a bool (YAML's ``true`` is not the number 1 here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    low = f">= {minimum}" if minimum is not None else f"> {above}" if above is not None else ""
    high = f"<= {maximum}" if maximum is not None else f"< {below}" if below is not None else ""
    if minimum is not None and maximum is not None:
        return f"from {minimum} to {maximum}"
    return " and ".join(p for p in (low, high) if p)


def _in_bounds(value: float, minimum: float | None, maximum: float | None, above: float | None,
               below: float | None) -> bool:
    return ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
            and (above is None or value > above) and (below is None or value < below))


def integer(minimum: int | None = None, maximum: int | None = None, *, special: Mapping[int, str] | None = None,
            meaning: str = "") -> Rule:
    """An integer in ``[minimum, maximum]``; ``special`` values outside it that mean something (``-1``: all);
    ``meaning`` says what the number counts (``images per class``)."""
    special = dict(special or {})
    bounds = _bounds(minimum, maximum, None, None)
    words = f"an integer {bounds}".strip() + (f" ({meaning})" if meaning else "")
    if special:
        words = " or ".join([*(f"{v} ({what})" for v, what in special.items()), words])
    return Rule(lambda v: is_integer(v) and (v in special or _in_bounds(v, minimum, maximum, None, None)), words)


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
           below: float | None = None) -> Rule:
    """A finite number within the bounds (``above`` / ``below``: exclusive)."""
    words = f"a number {_bounds(minimum, maximum, above, below)}".strip()
    return Rule(lambda v: is_number(v) and _in_bounds(v, minimum, maximum, above, below), words)


def one_of(choices: Iterable[Any], expected: str = "") -> Rule:
    """One of ``choices``; a refused string gets its close matches. ``expected``: the choices in words, for a list
    too long to print (default: the list itself)."""
    options = list(choices)
    return Rule(lambda v: v in options, expected or f"one of {options}",
                lambda v: did_you_mean(str(v), [str(o) for o in options]).strip())


def required_text(what: str = "a name") -> Rule:
    """A non-empty string that is not Hydra's ``???`` (a value the config must set)."""
    return Rule(lambda v: isinstance(v, str) and v.strip() not in ("", "???"), f"{what} (a non-empty string)")


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")


def list_of(item: Rule, *, min_length: int = 0, what: str = "") -> Rule:
    """A list whose every item passes ``item`` (and at least ``min_length`` of them)."""
    size = "a non-empty list" if min_length == 1 else f"a list of at least {min_length}" if min_length else "a list"
    return Rule(lambda v: isinstance(v, list | tuple) and len(v) >= min_length and all(item(x) for x in v),
                what or f"{size}, each item {item.expected}")


def dict_of(value: Rule, what: str = "") -> Rule:
    """A mapping whose every value passes ``value``."""
    return Rule(lambda v: isinstance(v, Mapping) and all(value(x) for x in v.values()),
                what or f"a mapping, each value {value.expected}")


def template_text() -> Rule:
    """A prompt template: a string with exactly one ``{}`` for the class name."""
    return Rule(lambda v: isinstance(v, str) and v.count("{}") == 1,
                "a text with exactly one '{}' for the class name (e.g. 'a photo of a {}.')")


# ------------------------------------------------------------------------------------------------ types


def type_rule(annotation: Any) -> Rule | None:
    """The rule of a field's resolved annotation, or None when anything goes (``Any``, unknown types)."""
    if annotation is Any:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rules = [type_rule(a) for a in args]
        if any(r is None for r in rules):
            return None
        inner = [r for r, a in zip(rules, args, strict=True) if a is not type(None)]
        words = " or ".join(["null", *(r.expected for r in inner)] if len(inner) < len(args) else
                            [r.expected for r in inner])
        return Rule(lambda v: any(r(v) for r in rules), words)
    if annotation is type(None):
        return Rule(lambda v: v is None, "null")
    if annotation is bool:
        return BOOLEAN
    if annotation is int:
        return Rule(is_integer, "an integer")
    if annotation is float:
        return Rule(is_number, "a number")
    if annotation is str:
        return Rule(lambda v: isinstance(v, str), "a string")
    if origin is list or annotation is list:
        item = type_rule(args[0]) if args else None
        return list_of(item) if item is not None else Rule(lambda v: isinstance(v, list | tuple), "a list")
    if origin is dict or annotation is dict:
        item = type_rule(args[1]) if len(args) == 2 else None
        return dict_of(item) if item is not None else Rule(lambda v: isinstance(v, Mapping), "a mapping")
    return None


def rules_of(cls: type) -> dict[str, Rule]:
    """The ``RULES`` of ``cls`` and of its bases, a subclass's own rule winning."""
    merged: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("RULES", {}))
    return merged


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an outside config whose annotations do not resolve: its rules still apply
        return {}


# ------------------------------------------------------------------------------------------- collecting


class Problems:
    """Every problem found in a config, reported together as one :class:`ConfigurationError`."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, key: str, value: Any, expected: str, hint: str = "") -> None:
        """``key=value`` is refused; ``expected`` says what the key accepts."""
        self.found.append(f"{key}={shown(value)} is not valid; use {expected}." + (f" {hint}" if hint else ""))

    def note(self, message: str) -> None:
        """A problem that is not about one value (an unknown key, two keys that contradict each other)."""
        self.found.append(message)

    def require(self, key: str, value: Any, rule: Rule) -> bool:
        """Record ``key=value`` unless ``rule`` accepts it; whether it did."""
        if rule(value):
            return True
        self.add(key, value, rule.expected, rule.hint(value) if rule.hint else "")
        return False

    def __bool__(self) -> bool:
        return bool(self.found)

    def message(self) -> str:
        if len(self.found) == 1:
            return self.found[0]
        return f"{len(self.found)} invalid config values: " + " ".join(f"({i}) {p}" for i, p in
                                                                      enumerate(self.found, 1))

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigurationError(self.message())


def check_fields(problems: Problems, cls: type, values: Any, prefix: str, *, unknown_keys: bool = True) -> None:
    """Check a mapping of values against the dataclass ``cls``: unknown keys (with close matches), each
    value's type (from the annotations) and rule (``RULES``), nested sections (``data.feature_cache``)."""
    if values is None:
        return
    if not isinstance(values, Mapping):
        problems.add(prefix, values, f"a mapping of the keys {sorted(f.name for f in dataclasses.fields(cls))}")
        return
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown and unknown_keys:
        close = did_you_mean(unknown[0], fields, prefix=f"{prefix}.", quote=False)
        problems.note(f"Unknown config key(s) {[f'{prefix}.{k}' for k in unknown]}.{close} Valid keys of "
                      f"{prefix!r}: {sorted(fields)}.")
    hints, rules = _hints(cls), rules_of(cls)
    for field_name in fields:
        if field_name not in values:
            continue
        value, key, hint = values[field_name], f"{prefix}.{field_name}", hints.get(field_name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            check_fields(problems, hint, value, key)
            continue
        typed = type_rule(hint) if hint is not None else None
        if (typed is None or problems.require(key, value, typed)) and field_name in rules:
            problems.require(key, value, rules[field_name])


def check_mapping(problems: Problems, values: Mapping[str, Any], rules: Mapping[str, Rule], prefix: str) -> None:
    """The rules of the keys present in a free-form section (a dataset's keys depend on its builder)."""
    for key, rule in rules.items():
        if key in values:
            problems.require(f"{prefix}.{key}", values[key], rule)
