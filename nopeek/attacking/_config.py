"""The attack section of a config: what the attacker holds, which message it attacks, and
how hard it tries; and which training samples leak to it (`attacker_indices`)."""

from __future__ import annotations

import dataclasses
from dataclasses import field

import numpy as np

import attacks
from nopeek.core import NumpyStream, Section, finite, numpy_rng, raise_first_failure
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
    aux_fraction: float | None = field(default=None, metadata={"help": "share of the held-out set that is the attacker's auxiliary labelled data, never trained on (attacks that use it: default 0.5); every attack is then scored on the rest"})
    aux_count: int | None = field(default=None, metadata={"help": "number of auxiliary held-out samples (overrides --aux-fraction)"})
    whiten: str | None = field(default=None, metadata={"help": "how the adaptive attackers whiten the messages before decoding: none, standard (per feature) or zca; default: the attack's own (zca)", "choices": ("none", "standard", "zca")})
    leak_fractions: tuple[float, ...] = field(default=(), metadata={"help": "the adaptive attacker's leak-fraction curve: shares of the training set, each in (0, 1]; default: the attack's own (0.01,0.05,0.1,0.25,0.5)"})

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
            (self.aux_fraction is None or (finite(self.aux_fraction) and 0 < self.aux_fraction < 1), f"--aux-fraction must be in (0, 1), got {self.aux_fraction}"),
            (self.aux_count is None or self.aux_count >= 2, f"--aux-count must be >= 2, got {self.aux_count}"),
            (self.whiten is None or self.whiten in attacks.WHITENING, f"--whiten must be one of {', '.join(attacks.WHITENING)}, got {self.whiten!r}"),
            (all(finite(v) and 0 < v <= 1 for v in self.leak_fractions), f"--leak-fractions must each be in (0, 1], got {','.join(map(str, self.leak_fractions))}"),
        ]
        raise_first_failure(checks)
        return self

    def check_taken(self, names) -> None:
        """Refuse `--whiten` or `--leak-fractions` where no attack of `names` takes it (they
        would be silently ignored)."""
        for option, value, setting in (("--whiten", self.whiten, "whiten"),
                                       ("--leak-fractions", self.leak_fractions, "leak_fractions")):
            if value not in (None, ()) and not any(setting in attacks.ATTACKS[n].defaults for n in names):
                users = ", ".join(n for n, s in attacks.ATTACKS.items() if setting in s.defaults)
                raise ConfigError(f"{option}: the {', '.join(names) or 'no'} attack{'s' if len(names) != 1 else ''} "
                                  f"do{'es' if len(names) == 1 else ''} not take it (attacks that do: {users})")

    def settings(self, name: str | None = None) -> dict:
        """The settings given to attack `name` (default: this config's): explicit values
        only; the attack's own defaults fill the rest (`attacks.settings`)."""
        given = {"steps": self.attack_steps, "lr": self.attack_lr, "tv_weight": self.tv_weight,
                 "n_targets": self.n_targets, "whiten": self.whiten,
                 "leak_fractions": tuple(sorted(set(self.leak_fractions))) or None}
        resolved = attacks.settings(name or self.attack, **given)
        resolved.pop("_ignored")
        return resolved


AUX_FRACTION = 0.5  # the auxiliary share of the held-out set when an attack uses one and none is given


def wants_auxiliary(config, names) -> bool:
    """Whether the held-out set is split into auxiliary data and targets: an attack of `names`
    reads auxiliary data, or the config gives its size."""
    return (config.aux_fraction is not None or config.aux_count is not None
            or any(attacks.ATTACKS[n].reads("aux") for n in names))


def heldout_split(n_heldout: int, config, names) -> tuple[np.ndarray | None, np.ndarray]:
    """(aux, targets): indices into the held-out set of the attacker's auxiliary samples
    (`aux_count`, or `aux_fraction` of the held-out set, 0.5 by default; seeded by the
    attacker's seed) and of the targets every attack of a comparison is scored on: the
    rest. Without auxiliary data (`wants_auxiliary`): (None, every held-out index)."""
    if not wants_auxiliary(config, names):
        return None, np.arange(n_heldout)
    fraction = AUX_FRACTION if config.aux_fraction is None else config.aux_fraction
    count = config.aux_count if config.aux_count is not None else int(round(fraction * n_heldout))
    if not 2 <= count <= n_heldout - 2:
        option = f"--aux-count {config.aux_count}" if config.aux_count is not None else f"--aux-fraction {fraction:g}"
        raise ConfigError(f"{option}: {count} auxiliary samples of the {n_heldout} held-out ones; "
                          "between 2 and all but 2 (the targets) are needed")
    order = numpy_rng(config.attack_seed, NumpyStream.HELDOUT_SPLIT).permutation(n_heldout)
    return np.sort(order[:count]), np.sort(order[count:])


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
