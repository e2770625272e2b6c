"""The training section of a config, and `TrainConfig`: data + model + training.

The loss is `task_weight * CE + alpha * D(x, z)` (NoPeek, `alpha`), with the noise defence
(`noise_scale`) and any other registered defence at its strength (`defenses`, entries
NAME=STRENGTH), an optimiser and a schedule. The functions below read what a config's
values mean (`cuts_of`, `strengths_of`); the config classes only hold and check values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import optax

from nopeek.core import Composed, Section, finite, raise_first_failure
from nopeek.data import DataConfig
from nopeek.defences import DEFENCES, check_combination, defence_settings, parse_defences
from nopeek.errors import ConfigError
from nopeek.protocol import LEAKAGE_TERMS, ModelConfig, resolve_cuts

# The optimisers a party can use: name -> factory(learning rate).
OPTIMIZERS = {
    "adam": lambda lr: optax.adam(lr),
    "sgd": lambda lr: optax.sgd(lr, momentum=0.9),
}


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr)


def _defence_names() -> str:
    return ", ".join(n for n, s in DEFENCES.items() if s.config_field is None)


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Section):
    """The loss task_weight * CE + alpha * D(x, z), the defences and the optimiser."""

    alpha: float = field(default=0.0, metadata={"help": "NoPeek weight on D(x, z)"})
    noise_scale: float = field(default=0.0, metadata={"help": "noise defence: scale of noise added to what the data holder sends"})
    seed: int = field(default=0, metadata={"help": "seed of the model's initialisation, the data order and the noise"})
    task_weight: float = field(default=1.0, metadata={"help": "weight on the cross-entropy"})
    leakage: str = field(default="dcor", metadata={"help": "D: dCor, or its log", "choices": LEAKAGE_TERMS})
    epochs: int = field(default=30, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=64, metadata={"help": "samples per step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    optimizer: str = field(default="adam", metadata={"help": "optimiser", "choices": tuple(OPTIMIZERS)})
    dcor_batch: int = field(default=512, metadata={"help": "held-out samples for the per-epoch dCor in the history"})
    null_permutations: int = field(default=200, metadata={"help": "permutations of each held-out dCor's null (its dcor_null95 and dcor_pvalue); 0: none"})
    epoch_readings: bool = field(default=False, metadata={"help": "the held-out readings (U-statistic dCor, its permutation null and p-value, partial dCor given the label) after every epoch, not only the last: the history's null over epochs, at about an evaluation's cost more per epoch"})
    alpha_warmup: float = field(default=0.0, metadata={"help": "epochs over which alpha ramps linearly from 0 to its value (0: from the start)"})
    defenses: tuple[str, ...] = field(default=(), metadata={"help": "other defences, NAME=STRENGTH each (e.g. maxnorm=1; `nopeek train --list-defenses`)"})

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
            (self.leakage in LEAKAGE_TERMS, f"unknown leakage {self.leakage!r}; choose from {', '.join(LEAKAGE_TERMS)}"),
            (self.dcor_batch >= 2, f"--dcor-batch must be >= 2, got {self.dcor_batch}"),
            (self.null_permutations >= 0, f"--null-permutations must be >= 0, got {self.null_permutations}"),
            (finite(self.alpha_warmup) and self.alpha_warmup >= 0, f"--alpha-warmup must be finite and >= 0, got {self.alpha_warmup}"),
        ]
        raise_first_failure(checks)
        given = {name: float(getattr(self, spec.config_field)) for name, spec in DEFENCES.items()
                 if spec.config_field is not None}
        check_combination({**given, **parse_defences(self.defenses)})
        return self


class TrainConfig(Composed):
    """One split model trained with the NoPeek loss task_weight * CE + alpha * D(x, z); the
    registered defences' own settings are sections of their own (`defence_settings`)."""

    SECTIONS = (("data_config", DataConfig), ("model_config", ModelConfig), ("training_config", TrainingConfig))

    @classmethod
    def extra_sections(cls) -> tuple:
        return defence_settings()

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
        # Run folders written before the defence registry: one label defence and its strength.
        if "label_defense" in d or "label_strength" in d:
            defense, strength = d.pop("label_defense", "none"), d.pop("label_strength", 1.0)
            if defense not in (None, "none"):
                d.setdefault("defenses", [f"{defense}={strength}"])
        return super().from_dict(d)


def cuts_of(config, num_classes: int) -> tuple[int, ...]:
    """The cuts of a config (any with `topology`, `model`, `widths`, `cuts`): as given, or the
    configuration's default cuts for this model."""
    return resolve_cuts(config.topology, config.model, config.widths, num_classes, config.cuts)


def strengths_of(config) -> dict[str, float]:
    """{defence name: strength} of a training config: NoPeek's alpha, the noise's scale and
    every `defenses` entry."""
    out = {name: float(getattr(config, spec.config_field)) for name, spec in DEFENCES.items()
           if spec.config_field is not None}
    out.update(parse_defences(config.defenses))
    return out
