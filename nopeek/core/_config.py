"""Typed configuration in composable sections: the machinery every config of nopeek shares.

A `Section` is a frozen dataclass of values (no computing: what a value means is the
business of the package that uses it); `Composed` puts sections together and reaches every
section's fields by name. Each package keeps its own sections: `nopeek.data.DataConfig`,
`nopeek.protocol.ModelConfig`, `nopeek.training.TrainingConfig` (and `TrainConfig`, the three
together), `nopeek.attacking.AttackConfig`, `nopeek.sweeps.GridConfig` and `SweepConfig`, ...
The same field name means the same thing in every command. A composed config is written and
read as one flat JSON object (field names are unique across sections); values are
type-checked on reading. The CLI's options are generated from the fields (`nopeek.cli`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing

from nopeek.errors import ConfigError


def raise_first_failure(checks) -> None:
    """`checks`: (ok, message) pairs; raise ConfigError with the first failing message."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---- type-checked values ----------------------------------------------------------


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    return {int: "int", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def coerce(name: str, value, tp):
    """`value` as type `tp`, or ConfigError naming the field, the expected type and what it got."""

    def bad(got=value):
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {type(got).__name__} {got!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return coerce(name, value, inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            bad()
        elem = typing.get_args(tp)[0]
        out = []
        for v in value:
            try:
                out.append(coerce(name, v, elem))
            except ConfigError:
                raise ConfigError(f"{name}: expected {_type_name(tp)}, got {type(v).__name__} {v!r} in the list") from None
        return tuple(out)
    if tp is bool:
        if not isinstance(value, bool):
            bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            bad()
        return value
    return value


def env_count(name: str, default: int, zero: str) -> int:
    """A whole number >= 0 from the environment variable `name` (`default` when unset or
    empty); `zero` says what 0 means, for the error.

    Raises:
      ConfigError: not a whole number, or negative."""
    import os

    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of samples ({zero}), got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be >= 0 ({zero}), got {value}")
    return value


def check_known(given, known: set[str], what: str) -> None:
    """Refuse names not in `known`, naming each with the nearest known name.

    Raises:
      ConfigError: "unknown WHAT: a (did you mean b?), c"."""
    import difflib

    unknown = sorted(set(given) - set(known))
    if unknown:
        named = []
        for name in unknown:
            near = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
            named.append(f"{name} (did you mean {near[0]}?)" if near else str(name))
        raise ConfigError(f"unknown {what}: {', '.join(named)}")


class Section:
    """Base of the config dataclasses: to/from flat dicts, type-checked."""

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict):
        check_known(d, cls.field_names(), f"{cls.__name__} keys")
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(k, v, hints[k]) for k, v in d.items()})

    def validate(self):
        return self



# ---- composed configs -------------------------------------------------------------------


@functools.lru_cache(maxsize=64)  # one entry per composition and set of registered sections
def _checked_sections(cls, sections: tuple) -> tuple:
    owner: dict[str, str] = {}
    for attribute, sc in sections:
        for name in sc.field_names():
            if (attribute, name) in cls.EXCLUDED:
                continue
            if name in owner or hasattr(cls, name):
                where = f"{owner[name]}'s" if name in owner else f"a name of {cls.__name__}"
                raise ConfigError(f"{sc.__name__} ({attribute}): its field {name!r} is already {where}; "
                                  "rename the field")
            owner[name] = attribute
    return sections


class Composed:
    """A config made of sections; attribute access and flat dicts reach every section's fields.

    Subclasses set SECTIONS = ((attribute, SectionClass), ...) and EXCLUDED, the
    (section, field) pairs this composition does not use: fields another section's lists
    drive, or that do not apply. They are left out of the flat dict and the CLI. A
    subclass whose sections come from a registry as well (the defences' own settings)
    overrides `extra_sections`; `sections()` is the whole list.
    """

    SECTIONS: tuple = ()
    EXCLUDED: frozenset = frozenset()

    @classmethod
    def extra_sections(cls) -> tuple:
        """Sections added to SECTIONS at call time ((attribute, SectionClass), ...)."""
        return ()

    @classmethod
    def sections(cls) -> tuple:
        """((attribute, SectionClass), ...): SECTIONS, then `extra_sections()`; ConfigError
        where an extra section's field is another section's or a name of the class."""
        return _checked_sections(cls, tuple(cls.SECTIONS) + tuple(cls.extra_sections()))

    def __init__(self, **values):
        """Sections by name (`data_config=DataConfig(...)`), or fields by name (`epochs=3`)."""
        for name, cls in self.sections():
            object.__setattr__(self, name, values.pop(name, None) or cls())
        if values:
            changed = self.replace(**values)
            for name, _ in self.sections():
                object.__setattr__(self, name, getattr(changed, name))

    def section(self, name: str):
        """Section `name`: this config's, or the section's defaults where the config was made
        before the section was registered."""
        obj = self.__dict__.get(name)
        return obj if obj is not None else dict(self.sections())[name]()

    def __getattr__(self, name):
        for section, sc in type(self).sections():
            if name in sc.field_names() and (section, name) not in type(self).EXCLUDED:
                return getattr(self.section(section), name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"{type(self).__name__} is frozen; use .replace(...)")

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    @classmethod
    def section_fields(cls, section: str) -> set[str]:
        """The fields of `section` this composition uses."""
        sc = dict(cls.sections())[section]
        return {n for n in sc.field_names() if (section, n) not in cls.EXCLUDED}

    @classmethod
    def field_names(cls) -> set[str]:
        return {n for name, _ in cls.sections() for n in cls.section_fields(name)}

    def to_dict(self) -> dict:
        out = {}
        for name, _ in self.sections():
            mine = self.section_fields(name)
            out.update({k: v for k, v in self.section(name).to_dict().items() if k in mine})
        return out

    @classmethod
    def from_dict(cls, d: dict):
        check_known(d, cls.field_names(), f"{cls.__name__} keys")
        sections = {}
        for name, sc in cls.sections():
            mine = cls.section_fields(name)
            sections[name] = sc.from_dict({k: v for k, v in d.items() if k in mine})
        return cls(**sections)

    def replace(self, **changes):
        """A copy with the given fields changed (any section's fields this composition uses)."""
        check_known(changes, self.field_names(), f"{type(self).__name__} fields")
        sections = {}
        for name, _ in self.sections():
            mine = {k: v for k, v in changes.items() if k in self.section_fields(name)}
            sections[name] = dataclasses.replace(self.section(name), **mine) if mine else self.section(name)
        return type(self)(**sections)

    def validate(self):
        for name, _ in self.sections():
            self.section(name).validate()
        return self
