"""Click options built from the library's option groups, so each setting is declared once.

Every field of :class:`~ntonnx.HeadQuery`, :class:`~ntonnx.RunOptions`, :class:`~ntonnx.DataOptions`
(with its nested :class:`~ntonnx.ImagePreprocess`) and :class:`~ntonnx.TuneOptions` carries its
flag, help, choices and parser (:func:`ntonnx.options.option`). :class:`OptionGroup` turns them
into click options for a command and builds the dataclass back from the parsed values, in the
manner of polygraphy's ``tools/args``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from ntonnx.options import choices_of, flag_of, spec_of


class OptionGroup:
    """The click options of one option dataclass; :meth:`build` makes the dataclass from a command's values.

    Nested option dataclasses (a field whose default is one) contribute their fields too. Click
    stores each value under ``<prefix><field name>``, so groups never collide.
    """

    def __init__(self, cls: type, prefix: str, *, exclude: tuple[str, ...] = ()):
        self.cls = cls
        self.prefix = prefix
        self.exclude = exclude

    def __call__(self, command: Callable) -> Callable:
        for decorator in reversed(list(self._options(self.cls, self.prefix))):
            command = decorator(command)
        return command

    def build(self, params: dict[str, Any]) -> Any:
        """The dataclass from the command's ``params`` (its values are popped, so the rest stay the command's)."""
        return self._build(self.cls, self.prefix, params)

    def _options(self, cls: type, prefix: str):
        defaults = cls()
        for field in dataclasses.fields(cls):
            if field.name in self.exclude:
                continue
            spec = spec_of(field)
            if spec is None:
                if dataclasses.is_dataclass(getattr(defaults, field.name)):
                    yield from self._options(type(getattr(defaults, field.name)), f"{prefix}{field.name}__")
                continue
            yield self._option(field, spec, getattr(defaults, field.name), prefix)

    @staticmethod
    def _option(field, spec: dict, default, prefix: str) -> Callable:
        help_text = spec["help"]() if callable(spec["help"]) else spec["help"]
        choices = choices_of(field)
        kwargs: dict[str, Any] = {"help": help_text, "metavar": spec["metavar"]}
        if choices:
            kwargs["type"] = click.Choice(list(choices), case_sensitive=False)
        elif spec["parse"] is None:
            kwargs["type"] = spec["kind"]
        if default is not None:
            kwargs.update(default=default, show_default=True)
        return click.option(flag_of(field), prefix + field.name, **kwargs)

    def _build(self, cls: type, prefix: str, params: dict[str, Any]) -> Any:
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in self.exclude:
                continue
            spec = spec_of(field)
            if spec is None:
                nested = getattr(cls(), field.name)
                if dataclasses.is_dataclass(nested):
                    values[field.name] = self._build(type(nested), f"{prefix}{field.name}__", params)
                continue
            value = params.pop(prefix + field.name)
            if value is not None and spec["parse"] is not None:
                value = spec["parse"](value, flag_of(field))
            values[field.name] = value
        return cls(**values)
