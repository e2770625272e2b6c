"""Build argparse options from typed config dataclasses, so the CLI and configs never drift.

A field becomes `--field-name` with its type, default and the help text in
`field(metadata={"help": ...})`; tuple fields take comma-separated values.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> typing.NoReturn:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def _scalar_type(tp):
    return {int: int, float: float, str: str}.get(tp, str)


def _parse_tuple(elem_type):
    def parse(text: str):
        try:
            return tuple(elem_type(part) for part in text.split(",") if part.strip() != "")
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated {elem_type.__name__}s, got {text!r}") from err

    parse.__name__ = f"list of {elem_type.__name__}"
    return parse


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, skip=(), shown=None, shown_from: str = "") -> None:
    """Add one option per field of dataclass `cls`, or of every used field of a composed
    config's sections (defaults None: the config decides). The help shows each field's
    default, or its value in `shown` (an instance of `cls`: what the command starts from,
    named by `shown_from`); a help text that states its own default is left as written."""
    if hasattr(cls, "sections"):
        for name, section in cls.sections():
            excluded = {f for s, f in cls.EXCLUDED if s == name}
            add_dataclass_arguments(parser, section, skip=set(skip) | excluded,
                                    shown=None if shown is None else getattr(shown, name), shown_from=shown_from)
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        tp = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        if shown is not None:
            default = getattr(shown, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text:
            help_text += f" (default: {_show(default)}{shown_from})"
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is tuple:
            parser.add_argument(flag, type=_parse_tuple(_scalar_type(args[0])), default=None, help=help_text)
        elif origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            inner = next(a for a in args if a is not type(None))
            parser.add_argument(flag, type=_scalar_type(inner), default=None, help=help_text)
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(flag, type=_scalar_type(tp), default=None, choices=choices, help=help_text)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def dataclass_from_args(cls, namespace: argparse.Namespace, base=None):
    """A `cls` instance (dataclass or composed config) from parsed options: given options
    override `base` (or the defaults)."""
    if hasattr(cls, "sections"):
        base = base if base is not None else cls()
        given = {n: getattr(namespace, n) for n in cls.field_names() if getattr(namespace, n, None) is not None}
        return base.replace(**given)
    values = dataclasses.asdict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        given = getattr(namespace, f.name, None)
        if given is not None:
            values[f.name] = given
    return cls(**values)


def fail(prog: str, message: str) -> typing.NoReturn:
    """Report a usage error the argparse way: one line, exit code 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)
