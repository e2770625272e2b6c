"""The registry of defences: one uniform record per defence, and how a step gets its hooks.

A defence acts inside the protocol at the engine's hooks (`nopeek.protocol.Defence`): on a
message on its way out, through a penalty its sender adds to its loss, or on a gradient
message on its way back. Its **strength** is one number per model (0 = no defence, bit
for bit: every defence is the identity at strength 0), so one compiled step trains a
stack of models with different defences and strengths side by side.

Adding a defence is one file: a `make` function that builds its hooks and a `register`
call at its bottom (import it in `nopeek/defences/__init__.py`, or call `register` from
your own code). A defence with settings besides its strength (DP's clipping norm, MID's
bottleneck size) declares them in that file as a config section (`nopeek.core.Section`)
passed as `register(..., settings=ThatSection)`: they become fields of `TrainConfig` and
`SweepConfig` and options of `nopeek train` and `nopeek sweep`, and its `make` reads them
with `context.setting(name, default)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from nopeek.errors import ConfigError
from nopeek.protocol import Composite, Defence

ACTS_ON = ("message", "loss", "gradient", "parameters")


@dataclasses.dataclass(frozen=True)
class Context:
    """What building a defence's hooks may use besides its strength.

    seed: the model's seed (its random streams, `nopeek.core.Stream`), may be traced.
    step: the training step (or the batch index at evaluation), may be traced.
    settings: the run's training config (`TrainConfig`: fields such as `leakage` and
      `alpha_warmup`, and every registered defence's own settings, such as `dp_clip`), or
      None for the defaults; read them with `setting(name, default)`.
    evaluation: hooks for evaluation (held-out messages, held-out gradients) rather than
      training: defences draw from their evaluation streams.
    warmup_steps: steps over which a defence that ramps up does so (0: from the start).
    """

    seed: Any
    step: Any = 0
    settings: Any = None
    evaluation: bool = False
    warmup_steps: int = 0

    def setting(self, name: str, default):
        return getattr(self.settings, name, default) if self.settings is not None else default


@dataclasses.dataclass(frozen=True)
class DefenceSpec:
    """A registered defence.

    name: the value in `--defenses NAME=STRENGTH`, in a sweep's `defense` column.
    acts_on: "message" (transforms what crosses), "loss" (a penalty where the data sits),
      "gradient" (perturbs the gradients a label holder returns), "parameters" (a party's
      own update).
    strength: what its strength means, for help texts and tables.
    make(strength, context) -> nopeek.protocol.Defence: its hooks for one model.
    config_field: the training-config field that holds its strength in `nopeek train`
      (NoPeek's "alpha", the noise's "noise_scale"); None: given as `--defenses NAME=S`.
    always: built into every training step, at strength 0 where a model does not use it
      (NoPeek: its D(x, z) of the batch is the training history's `train_dcor_batch`).
    check(strength, num_classes, topology_spec): raise ConfigError where it cannot apply.
    description: one line.
    owns_parameters: its hooks own parameters (`Defence.has_parameters`): training gives every
      model of a program that holds it its parameters (`defence_parameters`).
    combines(others): raise ConfigError where it cannot act together with the other
      defences a model uses ({name: strength > 0}).
    accounting(strength, settings, releases) -> `Accounting` or None: its differential-privacy
      events (`nopeek.defences.dp_guarantee`); None: it claims no guarantee.
    settings: a config section (a frozen dataclass deriving `nopeek.core.Section`) of its
      settings besides the strength, or None; defences may share one (dp_message and dp_sgd
      share their clipping norm and delta).
    """

    name: str
    acts_on: str
    strength: str
    make: Callable[[Any, Context], Defence]
    config_field: str | None = None
    always: bool = False
    check: Callable[[float, int, Any], None] | None = None
    description: str = ""
    owns_parameters: bool = False
    combines: Callable[[Mapping[str, float]], None] | None = None
    accounting: Callable[..., Any] | None = None
    settings: type | None = None


DEFENCES: dict[str, DefenceSpec] = {}
NONE = "none"  # the cell without a defence


def register(name: str, make: Callable[[Any, Context], Defence], *, acts_on: str, strength: str,
             config_field: str | None = None, always: bool = False, check=None, description: str = "",
             owns_parameters: bool = False, combines=None, accounting=None, settings: type | None = None) -> None:
    """Make defence `name` available to `nopeek train --defenses`, sweeps and the Python API.

    Args:
      name: its name (not "none").
      make: `make(strength, context) -> nopeek.protocol.Defence`, the hooks for one model;
        strength is a scalar (traced in a stacked step); at strength 0 the hooks must leave
        everything as it was.

    The keyword arguments (`acts_on`, `strength`, `config_field`, `always`, `check`,
    `description`, `owns_parameters`, `combines`, `accounting`, `settings`) are the fields of
    `DefenceSpec`, documented there.
    """
    if not isinstance(name, str) or not name or name == NONE or "=" in name or "," in name:
        raise ConfigError(f"a defence name must be a non-empty string other than 'none', without '=' or ',', got {name!r}")
    if acts_on not in ACTS_ON:
        raise ConfigError(f"acts_on must be one of {', '.join(ACTS_ON)}, got {acts_on!r}")
    if settings is not None:
        if not (dataclasses.is_dataclass(settings) and hasattr(settings, "field_names")):
            raise ConfigError(f"{name}: settings must be a config section (a dataclass deriving nopeek.core.Section), "
                              f"got {settings!r}")
        for other_name, other in defence_settings():
            clash = settings.field_names() & other.field_names() if other is not settings else set()
            if clash:
                raise ConfigError(f"{name}: its settings {', '.join(sorted(clash))} are already {other_name}'s")
    DEFENCES[name] = DefenceSpec(name, acts_on, strength, make, config_field, always, check, description,
                                 owns_parameters, combines, accounting, settings)


def defence_settings() -> tuple[tuple[str, type], ...]:
    """((attribute, section class), ...): each registered defence's settings section once, in
    registration order; the attribute is "NAME_settings", NAME the first defence registered
    with it (`dp_message_settings` for DP's, which dp_sgd shares). `TrainConfig` and
    `SweepConfig` hold one of each (`Composed.extra_sections`, which refuses a field name
    another section already has)."""
    seen: dict[type, str] = {}
    for spec in DEFENCES.values():
        if spec.settings is not None and spec.settings not in seen:
            seen[spec.settings] = f"{spec.name}_settings"
    return tuple((attribute, cls) for cls, attribute in seen.items())


def defence_setting_names() -> tuple[str, ...]:
    """Every field of the registered defences' settings sections, sorted (what a compiled
    function that builds defences from a config depends on besides their strengths)."""
    return tuple(sorted(n for _, sc in defence_settings() for n in sc.field_names()))


def guarantee_settings(strengths: Mapping[str, float], settings) -> dict[str, Any]:
    """{field: value} of the settings sections of the defences in `strengths` ({name:
    strength}; those > 0 count) that claim a differential-privacy guarantee, read from
    `settings` (a TrainConfig or SweepConfig): what a reader needs beside the epsilon to
    know what was guaranteed (DP's `dp_clip`, `dp_delta`); {} when none claims one."""
    out: dict[str, Any] = {}
    for name, strength in strengths.items():
        spec = DEFENCES.get(name)
        if strength > 0 and spec is not None and spec.accounting is not None and spec.settings is not None:
            out.update({field: getattr(settings, field) for field in spec.settings.field_names()})
    return out


def defence_spec(name: str) -> DefenceSpec:
    if name not in DEFENCES:
        raise ConfigError(f"unknown defence {name!r}; choose from {', '.join(DEFENCES)}")
    return DEFENCES[name]


def parse_defences(entries) -> dict[str, float]:
    """`("maxnorm=1", "marvell=0.5")` -> {"maxnorm": 1.0, "marvell": 0.5}, checked: registered
    names given once each, finite strengths >= 0; NoPeek and the noise are refused here
    (they have their own options, `--alpha` and `--noise-scale`)."""
    out: dict[str, float] = {}
    for entry in entries:
        name, sep, value = str(entry).partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--defenses: {entry!r} is not NAME=STRENGTH (e.g. maxnorm=1)")
        spec = defence_spec(name)
        if spec.config_field is not None:
            raise ConfigError(f"--defenses: give {name}'s strength with --{spec.config_field.replace('_', '-')}")
        try:
            strength = float(value)
        except ValueError:
            raise ConfigError(f"--defenses: {entry!r}: the strength {value!r} is not a number") from None
        if not (strength == strength and abs(strength) != float("inf") and strength >= 0):
            raise ConfigError(f"--defenses: {entry!r}: the strength must be finite and >= 0")
        if name in out:
            raise ConfigError(f"--defenses: {name} is given twice")
        out[name] = strength
    return out


def check_defence(name: str, strength: float, num_classes: int, topology_spec=None) -> None:
    """Raise ConfigError where defence `name` at `strength` cannot apply to this data and configuration."""
    spec = defence_spec(name)
    if spec.check is not None:
        spec.check(strength, num_classes, topology_spec)


def check_combination(strengths: Mapping[str, float]) -> None:
    """Raise ConfigError where the defences one model uses ({name: strength}; those > 0
    count) cannot act together (`DefenceSpec.combines`)."""
    used = {name: s for name, s in strengths.items() if s > 0}
    for name in used:
        spec = defence_spec(name)
        if spec.combines is not None:
            spec.combines({o: s for o, s in used.items() if o != name})


def build_defence(strengths: Mapping[str, Any], context: Context) -> Defence:
    """The hooks of every defence in `strengths` ({name: strength}, possibly traced), in
    registration order: one model's defence inside a step. Where one of them owns
    parameters, a `Composite` keyed by name (their parameters are `{name: theirs}`)."""
    names = [name for name in DEFENCES if name in strengths]
    parts = [DEFENCES[name].make(strengths[name], context) for name in names]
    if len(parts) == 1 and not parts[0].has_parameters:
        return parts[0]
    return Composite(parts, names)


def defence_parameters(built, params, names, seed: int, settings, input_shape) -> dict:
    """`{party: {"defence": {message: {name: parameters}}}}`: the parameters of the defences
    in `names` that own some (`owns_parameters`), for every protected message of the
    configuration `built` (whose parameters `params` give the messages' shapes), from the model's seed (stream DEFENCE_PARAMETERS); {} when none
    of them owns any. A replicated sender gets one set per replica (leading axis N)."""
    import jax
    import jax.numpy as jnp

    from nopeek.core import Stream, seed_key
    from nopeek.protocol import forward

    owning = [n for n in names if defence_spec(n).owns_parameters]
    if not owning:
        return {}
    topo = built.topology
    defence = build_defence({n: 0.0 for n in owning}, Context(seed, settings=settings))
    data = jax.eval_shape(lambda: built.prepare(jnp.zeros((1, *input_shape), jnp.float32), jnp.zeros((1,), jnp.int32)))
    shapes = jax.eval_shape(lambda p, d: forward(topo, p, d), params, data)
    out: dict = {}
    for index, message in enumerate(topo.protected):
        party = topo.party(topo.producer(message))
        key = jax.random.fold_in(seed_key(seed, Stream.DEFENCE_PARAMETERS), index)
        if party.replicas == 1:
            value = defence.init_parameters(message, tuple(shapes[message].shape[1:]), key)
        else:
            one = tuple(shapes[message].shape[2:])
            value = jax.tree.map(lambda *a: jnp.stack(a), *[
                defence.init_parameters(message, one, jax.random.fold_in(key, r)) for r in range(party.replicas)])
        out.setdefault(party.name, {}).setdefault("defence", {})[message] = value
    return out


def with_defence_parameters(params: dict, extra: dict) -> dict:
    """`params` ({party: {segment: State}}) with the defences' parameters added (`defence_parameters`)."""
    return {party: {**mine, **extra.get(party, {})} for party, mine in params.items()}
