"""Declaring settings once: each option dataclass field carries its CLI flag, help and constraint.

The option groups (:class:`~ntonnx.graph.options.HeadQuery`, :class:`~ntonnx.graph.options.RunOptions`,
:class:`~ntonnx.data.options.DataOptions`, :class:`~ntonnx.method.options.TuneOptions`) are plain
frozen dataclasses. A field's ``metadata`` (made by :func:`option`) says how the CLI spells it, how
text is parsed into it, and what values are valid; :func:`validate` checks every field of an
instance against that table with one message template (scikit-learn's ``_parameter_constraints``
idea), once, when the object is made. The click front end builds its options from the same table,
so adding a setting is one field in one dataclass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

from ntonnx.errors import UsageError

_KEY = "ntonnx"


@dataclass(frozen=True)
class Constraint:
    """A test on a value and the phrase that completes "--flag must be ...", e.g. ``"in (0, 1)"``."""

    test: Callable[[Any], bool]
    text: str


def interval(low: float | None = None, high: float | None = None, *, closed: str = "both") -> Constraint:
    """A finite number between ``low`` and ``high``; ``closed`` is ``both``, ``left``, ``right`` or ``neither``."""
    left, right = closed in ("both", "left"), closed in ("both", "right")

    def test(value) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return False
        above = low is None or (value >= low if left else value > low)
        below = high is None or (value <= high if right else value < high)
        return above and below

    if low is not None and high is not None:
        text = f"in {'[' if left else '('}{low:g}, {high:g}{']' if right else ')'}"
    elif low is not None:
        text = f"{'>=' if left else '>'} {low:g}"
    elif high is not None:
        text = f"{'<=' if right else '<'} {high:g}"
    else:
        text = "a finite number"
    return Constraint(test, text)


def optional(constraint: Constraint) -> Constraint:
    """``constraint``, or None (the setting is not given)."""
    return Constraint(lambda value: value is None or constraint.test(value), f"{constraint.text} (or not given)")


def one_of(choices: Sequence[str]) -> Constraint:
    """One of ``choices`` (or None, for an optional setting)."""
    return Constraint(lambda value: value is None or value in choices, f"one of {', '.join(choices)}")


def option(
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    constraint: Constraint | None = None,
    parse: Callable[[str, str], Any] | None = None,
    kind: type = str,
) -> dict[str, Any]:
    """Field metadata declaring a setting: ``dataclasses.field(default=..., metadata=option(...))``.

    Parameters
    ----------
    help : the CLI help text.
    flag : the CLI flag (default ``--`` + the field name with ``-`` for ``_``).
    metavar : placeholder in the CLI help.
    choices : the allowed values, or a function returning them (for registries filled at import).
    constraint : what a valid value is; checked by :func:`validate`.
    parse : ``parse(text, flag)`` turns CLI text into the value (e.g. ``"224,224"`` -> ``(224, 224)``).
    kind : the value's type on the command line (``int``, ``float``, ``str``).
    """
    spec = {"help": help, "flag": flag, "metavar": metavar, "choices": choices, "constraint": constraint}
    return {_KEY: {**spec, "parse": parse, "kind": kind}}


def spec_of(field) -> dict[str, Any] | None:
    """The :func:`option` metadata of a dataclass field, or None for a field the CLI does not set."""
    return field.metadata.get(_KEY)


def flag_of(field) -> str:
    spec = spec_of(field) or {}
    return spec.get("flag") or "--" + field.name.replace("_", "-")


def choices_of(field) -> Sequence[str] | None:
    choices = (spec_of(field) or {}).get("choices")
    return choices() if callable(choices) else choices


def validate(instance) -> None:
    """Check every declared field of a dataclass instance; raise one :class:`UsageError` for the first bad one."""
    for field in fields(instance):
        spec = spec_of(field)
        if spec is None:
            continue
        value = getattr(instance, field.name)
        choices = choices_of(field)
        constraint = spec["constraint"] or (one_of(choices) if choices else None)
        if constraint is not None and not constraint.test(value):
            raise UsageError(f"{flag_of(field)} must be {constraint.text}, got {value!r}")


# Parsers for settings written as text on the command line. Each takes (text, flag).


def numbers(kind: type, *, single: bool = False) -> Callable[[str, str], Any]:
    """``"256"`` -> 256, ``"224,224"`` -> (224, 224), ``"1/255"`` -> 0.00392...; fractions allowed."""

    def parse(text: str, flag: str):
        try:
            values = [kind(Fraction(part.strip())) for part in str(text).split(",")]
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"{flag} must be a number or comma-separated numbers, got '{text}'") from None
        if single and len(values) != 1:
            raise UsageError(f"{flag} takes one number, got '{text}'")
        return values[0] if len(values) == 1 else tuple(values)

    return parse


def name_list(text: str, flag: str) -> tuple[str, ...]:
    """``"a,b,c"`` -> ("a", "b", "c")."""
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


def names_or_file(text: str, flag: str) -> tuple[str, ...]:
    """A comma-separated list, or a file with one name per line (blank lines skipped)."""
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as handle:
                return tuple(line.strip() for line in handle if line.strip())
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{flag} file '{text}' cannot be read ({exc})") from None
    return name_list(text, flag)
