"""Typed configuration of a training run; the CLI's options are generated from it."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from nopeek.data import LOADERS
from nopeek.models import MODELS
from nopeek.split import LEAKAGE_TERMS, NOISE_KINDS

OPTIMIZERS = ("adam", "sgd")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the option."""


def raise_first_failure(checks) -> None:
    """`checks`: (ok, message) pairs; raise ConfigError with the first failing message."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


class JsonConfig:
    """To and from JSON-able dicts for config dataclasses (tuples <-> lists, unknown keys refused)."""

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """One split model trained with the NoPeek loss task_weight * CE + alpha * D(x, z)."""

    dataset: str = field(default="digits", metadata={"help": "data set", "choices": tuple(LOADERS)})
    model: str = field(default="mlp", metadata={"help": "model", "choices": tuple(MODELS)})
    widths: tuple[int, ...] = field(default=(), metadata={"help": "model widths, comma-separated; empty = the model's default"})
    cut: int | None = field(default=None, metadata={"help": "cut after this block (1-based); default: the model's"})
    alpha: float = field(default=0.0, metadata={"help": "NoPeek weight on D(x, z)"})
    task_weight: float = field(default=1.0, metadata={"help": "weight on the cross-entropy"})
    leakage: str = field(default="dcor", metadata={"help": "D: dCor, or its log", "choices": LEAKAGE_TERMS})
    noise_scale: float = field(default=0.0, metadata={"help": "noise baseline: scale of noise added to z (train and test)"})
    noise_kind: str = field(default="gaussian", metadata={"help": "noise distribution", "choices": NOISE_KINDS})
    epochs: int = field(default=30, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "samples per step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    optimizer: str = field(default="adam", metadata={"help": "optimiser", "choices": OPTIMIZERS})
    seed: int = field(default=0, metadata={"help": "seed of the model's initialisation and the data order"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with mnist/fashion_mnist/cifar10 files"})
    limit: int | None = field(default=None, metadata={"help": "use at most this many training samples"})
    dcor_batch: int = field(default=512, metadata={"help": "held-out samples for the per-epoch dCor in the history"})

    def resolved_cut(self) -> int:
        return self.cut if self.cut is not None else MODELS[self.model].default_cut

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad option; return self when all are fine."""
        checks = [
            (self.dataset in LOADERS, f"unknown dataset {self.dataset!r}; choose from {', '.join(LOADERS)}"),
            (self.model in MODELS, f"unknown model {self.model!r}; choose from {', '.join(MODELS)}"),
            (self.alpha >= 0, f"--alpha must be >= 0, got {self.alpha}"),
            (self.task_weight >= 0, f"--task-weight must be >= 0, got {self.task_weight}"),
            (self.noise_scale >= 0, f"--noise-scale must be >= 0, got {self.noise_scale}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2 (dCor needs two samples), got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}"),
            (self.leakage in LEAKAGE_TERMS, f"unknown leakage {self.leakage!r}; choose from {', '.join(LEAKAGE_TERMS)}"),
            (self.noise_kind in NOISE_KINDS, f"unknown noise kind {self.noise_kind!r}"),
            (self.cut is None or self.cut >= 1, f"--cut must be >= 1, got {self.cut}"),
            (self.limit is None or self.limit >= 2, f"--limit must be >= 2, got {self.limit}"),
            (self.dcor_batch >= 2, f"--dcor-batch must be >= 2, got {self.dcor_batch}"),
            (all(w >= 1 for w in self.widths), f"--widths must be positive, got {self.widths}"),
        ]
        raise_first_failure(checks)
        return self
