"""The attack section of a config: what the attacker holds, which message it attacks, and
how hard it tries; and which training samples leak to it (`attacker_indices`)."""

from __future__ import annotations

import dataclasses
from dataclasses import field

import numpy as np

import attacks
from nopeek.core import Section, finite, raise_first_failure
from nopeek.errors import ConfigError


def _defaults(setting: str) -> str:
    """"decoder 1500, whitebox 1500, ..." for a setting's per-attack defaults."""
    return ", ".join(f"{n} {s.defaults[setting]:g}" for n, s in attacks.ATTACKS.items() if setting in s.defaults)


@dataclasses.dataclass(frozen=True)
class AttackConfig(Section):
    """What the attacker holds, which message it attacks, and how hard it tries."""

    attack: str = field(default="decoder", metadata={"help": "attack (`nopeek attack --list`)"})
    message: str | None = field(default=None, metadata={"help": "message to attack, party:tensor or tensor (default: the data holder's first)"})
    leak_fraction: float = field(default=0.1, metadata={"help": "share of the training set the attacker holds"})
    leak_count: int | None = field(default=None, metadata={"help": "number of leaked samples (overrides --leak-fraction)"})
    aux_classes: tuple[int, ...] = field(default=(), metadata={"help": "attacker holds only these classes (auxiliary data)"})
    attack_steps: int | None = field(default=None, metadata={"help": f"optimisation steps; default: the attack's own ({_defaults('steps')}; unsplit: rounds x 100)"})
    attack_lr: float | None = field(default=None, metadata={"help": f"learning rate; default: the attack's own ({_defaults('lr')})"})
    n_targets: int | None = field(default=None, metadata={"help": f"held-out samples to invert; default: the attack's own ({_defaults('n_targets')}; the decoder: all)"})
    tv_weight: float | None = field(default=None, metadata={"help": f"total-variation prior weight; default: the attack's own ({_defaults('tv_weight')})"})
    attack_seed: int = field(default=0, metadata={"help": "the attacker's seed: which samples leak, decoder init"})

    def validate(self) -> "AttackConfig":
        checks = [
            (self.attack in attacks.ATTACKS, f"unknown attack {self.attack!r}; choose from {', '.join(attacks.ATTACKS)}"),
            (finite(self.leak_fraction) and 0 < self.leak_fraction <= 1, f"--leak-fraction must be in (0, 1], got {self.leak_fraction}"),
            (self.leak_count is None or self.leak_count >= 2, f"--leak-count must be >= 2, got {self.leak_count}"),
            (self.attack_steps is None or self.attack_steps >= 1, f"--attack-steps must be >= 1 (to run no attack in a sweep, give --attacks with none), got {self.attack_steps}"),
            (self.attack_lr is None or (finite(self.attack_lr) and self.attack_lr > 0), f"--attack-lr must be finite and > 0, got {self.attack_lr}"),
            (self.n_targets is None or self.n_targets >= 2, f"--n-targets must be >= 2, got {self.n_targets}"),
            (self.attack_seed >= 0, f"--attack-seed must be >= 0, got {self.attack_seed}"),
            (self.tv_weight is None or (finite(self.tv_weight) and self.tv_weight >= 0), f"--tv-weight must be finite and >= 0, got {self.tv_weight}"),
        ]
        raise_first_failure(checks)
        return self

    def settings(self, name: str | None = None) -> dict:
        """The settings given to attack `name` (default: this config's): explicit values
        only; the attack's own defaults fill the rest (`attacks.settings`)."""
        given = {"steps": self.attack_steps, "lr": self.attack_lr, "tv_weight": self.tv_weight,
                 "n_targets": self.n_targets}
        resolved = attacks.settings(name or self.attack, **given)
        resolved.pop("_ignored")
        return resolved


def attacker_indices(y_train, *, leak_fraction: float = 0.1, leak_count: int | None = None,
                     aux_classes=(), seed: int = 0) -> np.ndarray:
    """Indices of the training samples the attacker holds (seeded, deterministic, sorted).

    `leak_count` samples (or `leak_fraction` of the training set) drawn without
    replacement from the training set, or only from the classes in `aux_classes`.
    """
    y_train = np.asarray(y_train)
    pool = np.arange(len(y_train))
    if len(aux_classes):
        pool = pool[np.isin(y_train, aux_classes)]
        if len(pool) == 0:
            raise ConfigError(f"no training samples in --aux-classes {tuple(aux_classes)}")
    count = leak_count if leak_count is not None else max(2, round(leak_fraction * len(y_train)))
    if count > len(pool):
        option = f"--leak-count {leak_count}" if leak_count is not None else f"--leak-fraction {leak_fraction:g}"
        where = f"in --aux-classes {','.join(map(str, aux_classes))}" if len(aux_classes) else "in the training set"
        raise ConfigError(f"{option}: the attacker's pool has {len(pool)} samples {where}, fewer than the {count} asked for")
    return np.sort(np.random.default_rng(seed).choice(pool, count, replace=False))
