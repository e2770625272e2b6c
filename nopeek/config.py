"""Typed configuration in composable sections; the CLI's options are generated from them.

Sections: `DataConfig` (which data, how it is split), `ModelConfig` (model and topology),
`TrainingConfig` (loss, defence, optimiser), `AttackConfig` (what the attacker holds and
how hard it tries; in `nopeek.attack_run`). `nopeek train` composes data + model +
training (`TrainConfig`); `nopeek attack` reads a run's `TrainConfig` and adds an
`AttackConfig`; `nopeek sweep` composes all four and a `GridConfig` whose lists replace
the per-cell fields (topology, cuts, alpha, noise scale, seed). The same field means the
same thing in every command. A composed config is written and read as one flat JSON
object (field names are unique across sections); values are type-checked on reading.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field

OPTIMIZERS = ("adam", "sgd")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the option."""


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


class Section:
    """Base of the config dataclasses: to/from flat dicts, type-checked."""

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - cls.field_names()
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(k, v, hints[k]) for k, v in d.items()})

    def validate(self):
        return self


# ---- the sections -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Which data, and how it is split into training and held-out sets."""

    dataset: str = field(default="digits", metadata={"help": "data set: a bundled name, npz:PATH or folder:PATH"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with mnist/fashion_mnist/cifar10 files"})
    limit: int | None = field(default=None, metadata={"help": "use at most this many training samples"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/test split (and of round robin's shards)"})

    def validate(self) -> "DataConfig":
        from nopeek.data import check_dataset_name

        check_dataset_name(self.dataset)
        raise_first_failure([(self.limit is None or self.limit >= 2, f"--limit must be >= 2, got {self.limit}"),
                             (self.split_seed >= 0, f"--split-seed must be >= 0, got {self.split_seed}")])
        return self


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The model, where it is cut, and the topology of parties around the cuts."""

    model: str = field(default="mlp", metadata={"help": "model (see MODELS)"})
    widths: tuple[int, ...] = field(default=(), metadata={"help": "model widths, comma-separated; empty = the model's default"})
    topology: str = field(default="vanilla", metadata={"help": "split-learning configuration"})
    cuts: tuple[int, ...] = field(default=(), metadata={"help": "cut positions, increasing (after block k); empty = the default"})
    clients: int = field(default=2, metadata={"help": "clients of vertical and round_robin"})
    merge: str = field(default="concat", metadata={"help": "vertical: how the server merges the clients' activations"})
    slicing: str = field(default="auto", metadata={"help": "vertical: columns (tabular), halves, quadrants or strips (images); auto picks"})
    tasks: tuple[str, ...] = field(default=("digit", "parity", "ge5"), metadata={"help": "multi_task: the tasks (digit, parity, ge5)"})
    task_weights: tuple[float, ...] = field(default=(), metadata={"help": "multi_task: one loss weight per task (default all 1)"})
    partition: str = field(default="iid", metadata={"help": "round_robin: how the training set is shared, iid or dirichlet"})
    dirichlet_alpha: float = field(default=0.5, metadata={"help": "round_robin: Dirichlet concentration (smaller = more label skew)"})
    handoff: str = field(default="p2p", metadata={"help": "round_robin: client weights handed on directly (p2p) or via the server"})
    cut_activation: str = field(default="model", metadata={"help": "activation of the block before the (first) cut: model (its own), relu, linear, tanh, leaky_relu"})
    nopeek_hops: str = field(default="first", metadata={"help": "multi_hop: NoPeek at the first hop, or at all hops (each relay against what it received)"})

    def validate(self) -> "ModelConfig":
        from nopeek.models import ACTIVATIONS, MODELS
        from nopeek.topologies import HANDOFFS, MERGES, NOPEEK_HOPS, PARTITIONS, SLICINGS, TASKS, TOPOLOGIES

        checks = [
            (self.model in MODELS, f"unknown model {self.model!r}; choose from {', '.join(MODELS)}"),
            (all(w >= 1 for w in self.widths), f"--widths must be positive, got {self.widths}"),
            (self.topology in TOPOLOGIES, f"unknown topology {self.topology!r}; choose from {', '.join(TOPOLOGIES)}"),
            (all(c >= 1 for c in self.cuts), f"--cuts must be >= 1, got {','.join(map(str, self.cuts))}"),
            (all(b > a for a, b in zip(self.cuts, self.cuts[1:])), f"--cuts must be increasing, got {','.join(map(str, self.cuts))}"),
            (self.clients >= 1, f"--clients must be >= 1, got {self.clients}"),
            (self.merge in MERGES, f"--merge must be one of {', '.join(MERGES)}, got {self.merge!r}"),
            (self.slicing in SLICINGS, f"--slicing must be one of {', '.join(SLICINGS)}, got {self.slicing!r}"),
            (all(t in TASKS for t in self.tasks), f"--tasks must be among {', '.join(TASKS)}, got {','.join(self.tasks)}"),
            (all(finite(w) and w >= 0 for w in self.task_weights), f"--task-weights must be finite and >= 0, got {self.task_weights}"),
            (self.partition in PARTITIONS, f"--partition must be one of {', '.join(PARTITIONS)}, got {self.partition!r}"),
            (finite(self.dirichlet_alpha) and self.dirichlet_alpha > 0, f"--dirichlet-alpha must be > 0, got {self.dirichlet_alpha}"),
            (self.handoff in HANDOFFS, f"--handoff must be one of {', '.join(HANDOFFS)}, got {self.handoff!r}"),
            (self.cut_activation in ("model", *ACTIVATIONS), f"--cut-activation must be one of model, {', '.join(ACTIVATIONS)}, got {self.cut_activation!r}"),
            (self.nopeek_hops in NOPEEK_HOPS, f"--nopeek-hops must be one of {', '.join(NOPEEK_HOPS)}, got {self.nopeek_hops!r}"),
        ]
        raise_first_failure(checks)
        return self


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Section):
    """The loss task_weight * CE + alpha * D(x, z), the noise defence and the optimiser."""

    alpha: float = field(default=0.0, metadata={"help": "NoPeek weight on D(x, z)"})
    noise_scale: float = field(default=0.0, metadata={"help": "noise defence: scale of noise added to what the data holder sends"})
    seed: int = field(default=0, metadata={"help": "seed of the model's initialisation, the data order and the noise"})
    task_weight: float = field(default=1.0, metadata={"help": "weight on the cross-entropy"})
    leakage: str = field(default="dcor", metadata={"help": "D: dCor, or its log", "choices": ("dcor", "log_dcor")})
    noise_kind: str = field(default="gaussian", metadata={"help": "noise distribution", "choices": ("gaussian", "uniform")})
    epochs: int = field(default=30, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "samples per step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    optimizer: str = field(default="adam", metadata={"help": "optimiser", "choices": OPTIMIZERS})
    dcor_batch: int = field(default=512, metadata={"help": "held-out samples for the per-epoch dCor in the history"})
    alpha_warmup: float = field(default=0.0, metadata={"help": "epochs over which alpha ramps linearly from 0 to its value (0: from the start)"})
    label_defense: str = field(default="none", metadata={"help": "the label holder's defence of the labels against cut-gradient attacks", "choices": ("none", "maxnorm", "marvell")})
    label_strength: float = field(default=1.0, metadata={"help": "its strength: max-norm's noise multiplier (1 = Li et al.'s), Marvell's power scale s"})

    def validate(self) -> "TrainingConfig":
        checks = [
            (finite(self.alpha) and self.alpha >= 0, f"--alpha must be finite and >= 0, got {self.alpha}"),
            (finite(self.task_weight) and self.task_weight >= 0, f"--task-weight must be finite and >= 0, got {self.task_weight}"),
            (finite(self.noise_scale) and self.noise_scale >= 0, f"--noise-scale must be finite and >= 0, got {self.noise_scale}"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2 (dCor needs two samples), got {self.batch_size}"),
            (finite(self.lr) and self.lr > 0, f"--lr must be finite and > 0, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}"),
            (self.leakage in ("dcor", "log_dcor"), f"unknown leakage {self.leakage!r}; choose from dcor, log_dcor"),
            (self.noise_kind in ("gaussian", "uniform"), f"unknown noise kind {self.noise_kind!r}"),
            (self.dcor_batch >= 2, f"--dcor-batch must be >= 2, got {self.dcor_batch}"),
            (finite(self.alpha_warmup) and self.alpha_warmup >= 0, f"--alpha-warmup must be finite and >= 0, got {self.alpha_warmup}"),
            (self.label_defense in ("none", "maxnorm", "marvell"), f"--label-defense must be one of none, maxnorm, marvell, got {self.label_defense!r}"),
            (finite(self.label_strength) and self.label_strength >= 0, f"--label-strength must be finite and >= 0, got {self.label_strength}"),
        ]
        raise_first_failure(checks)
        return self


# ---- composed configs -------------------------------------------------------------------


class Composed:
    """A config made of sections; attribute access and flat dicts reach every section's fields.

    Subclasses set SECTIONS = ((attribute, SectionClass), ...) and EXCLUDED, the
    (section, field) pairs this composition does not use: fields another section's lists
    drive, or that do not apply. They are left out of the flat dict and the CLI.
    """

    SECTIONS: tuple = ()
    EXCLUDED: frozenset = frozenset()

    def __init__(self, **values):
        """Sections by name (`data_config=DataConfig(...)`), or fields by name (`epochs=3`)."""
        for name, cls in self.SECTIONS:
            object.__setattr__(self, name, values.pop(name, None) or cls())
        if values:
            changed = self.replace(**values)
            for name, _ in self.SECTIONS:
                object.__setattr__(self, name, getattr(changed, name))

    def __getattr__(self, name):
        for section, _ in type(self).SECTIONS:
            obj = self.__dict__.get(section)
            if obj is not None and name in obj.field_names() and (section, name) not in type(self).EXCLUDED:
                return getattr(obj, name)
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
        sc = dict(cls.SECTIONS)[section]
        return {n for n in sc.field_names() if (section, n) not in cls.EXCLUDED}

    @classmethod
    def field_names(cls) -> set[str]:
        return {n for name, _ in cls.SECTIONS for n in cls.section_fields(name)}

    def to_dict(self) -> dict:
        out = {}
        for name, _ in self.SECTIONS:
            mine = self.section_fields(name)
            out.update({k: v for k, v in getattr(self, name).to_dict().items() if k in mine})
        return out

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - cls.field_names()
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
        sections = {}
        for name, sc in cls.SECTIONS:
            mine = cls.section_fields(name)
            sections[name] = sc.from_dict({k: v for k, v in d.items() if k in mine})
        return cls(**sections)

    def replace(self, **changes):
        """A copy with the given fields changed (any section's fields this composition uses)."""
        unknown = set(changes) - self.field_names()
        if unknown:
            raise ConfigError(f"unknown {type(self).__name__} fields: {', '.join(sorted(unknown))}")
        sections = {}
        for name, sc in self.SECTIONS:
            mine = {k: v for k, v in changes.items() if k in self.section_fields(name)}
            sections[name] = dataclasses.replace(getattr(self, name), **mine) if mine else getattr(self, name)
        return type(self)(**sections)

    def validate(self):
        for name, _ in self.SECTIONS:
            getattr(self, name).validate()
        return self


class TrainConfig(Composed):
    """One split model trained with the NoPeek loss task_weight * CE + alpha * D(x, z)."""

    SECTIONS = (("data_config", DataConfig), ("model_config", ModelConfig), ("training_config", TrainingConfig))

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        # Run folders written before the engine had `cut` (one int) and one `seed` for the
        # split, the initialisation and the order.
        if "cut" in d:
            cut = d.pop("cut")
            d.setdefault("cuts", [] if cut is None else [cut])
        if "seed" in d and "split_seed" not in d:
            d["split_seed"] = d["seed"]
        return super().from_dict(d)

    def resolved_cuts(self, num_classes: int = 10) -> tuple[int, ...]:
        """The cuts, or the topology's default cuts for this model when none are given."""
        if self.cuts:
            return tuple(self.cuts)
        from nopeek.models import MODELS, model_blocks
        from nopeek.topologies import default_cuts

        n_blocks = len(model_blocks(self.model, num_classes, self.widths))
        return default_cuts(self.topology, self.model, n_blocks, MODELS[self.model].default_cut)
