"""Client-side detection of a label-ignoring server: SplitGuard's fake batches and a rank test.

The client cannot see what the server does, but it can test it. After batch `start`, each
batch is, with probability `fake_prob`, a *fake* batch: every label is shifted by one
random offset r in 1..C-1, (y + r) mod C. The client skips its own update on a fake batch.
An honest server trains on the labels it is sent, so the gradient it returns for a fake
batch differs from those of real batches; a server that ignores the labels (FSHA: its
gradient is a critic's, not the task's) returns the same kind of gradient for both. What
the client compares is the gradient the server's message induces on its first layer (its
own NoPeek term left out: it does not depend on the labels).

SplitGuard's score (Erdogan et al.; reported, not used to decide): regular batches after
`start` are split at random into R1 and R2, and at each fake batch, over all fake (F), R1
and R2 vectors so far,

    x  = (angle(mean F, mean R) * d_FR - angle(mean R1, mean R2) * d_12) / (d_FR + d_12)
    SG = sigmoid(mult * x) ** exp

with mean R = (mean R1 + mean R2) / 2, angles in radians, d_FR = |n_F - n_R|, d_12 =
|n_1 - n_2|, n the mean L2 norm of a set's vectors. Honest servers score near 1. But on
FSHA it was not reliably low in our runs (on digits, one calibration seed in eight scored
0.97-0.99 throughout): the mean of a few fake vectors differs from the mean of many
regular ones by chance more than two large regular sets differ from each other, and
FSHA's gradients change fast as the attack proceeds.

The decision (ours; the reference code has none) is a rank test robust to that drift: at
each fake batch f, with m the mean of the last `window` regular vectors, the client ranks
|f - m| among the same distance for each of the last `window` regular vectors r_j,
measured out of sample (|r_j - mean of the `window` regular vectors before r_j|);
p = (1 + #{j: d_j >= |f - m|}) / (window + 1). An honest server's fake gradient is farther
than every regular one (p = 1 / (window + 1), 0.09 at window 10); a label-ignoring
server's is not (p roughly uniform). The detector fires at the first fake batch where the
mean p of the last `k` fake batches exceeds `threshold` (defaults 3 and 0.2). Regular
vectors are kept from the first batch on, so the test can start at the first fake batch.

References: Erdogan, Kupcu, Cicek, "SplitGuard: detecting and mitigating training-hijacking
attacks in split learning", WPES 2022 (code: github.com/ege-erdogan/splitguard).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import numpy as np

from nopeek.core import NumpyStream, Section, finite, numpy_rng, raise_first_failure


@dataclasses.dataclass(frozen=True)
class SplitGuardConfig(Section):
    """The client's fake batches and its decision rule."""

    sg_start: int = field(default=20, metadata={"help": "SplitGuard: first batch that may be fake (the authors' 20)"})
    sg_fake_prob: float = field(default=0.1, metadata={"help": "SplitGuard: probability that a batch is fake (the authors' 0.1)"})
    sg_window: int = field(default=10, metadata={"help": "SplitGuard: regular batches the rank test compares a fake batch with"})
    sg_k: int = field(default=3, metadata={"help": "SplitGuard: fire when the mean p-value of the last k fake batches exceeds the threshold"})
    sg_threshold: float = field(default=0.2, metadata={"help": "SplitGuard: p-value threshold in (0, 1)"})
    sg_mult: float = field(default=5.0, metadata={"help": "SplitGuard: the SG score's sigmoid steepness (the authors' 5)"})
    sg_exp: float = field(default=2.0, metadata={"help": "SplitGuard: the SG score's exponent (the authors' 2)"})

    def validate(self) -> "SplitGuardConfig":
        raise_first_failure([
            (self.sg_start >= 0, f"--sg-start must be >= 0, got {self.sg_start}"),
            (finite(self.sg_fake_prob) and 0 < self.sg_fake_prob < 1, f"--sg-fake-prob must be in (0, 1), got {self.sg_fake_prob}"),
            (self.sg_window >= 2, f"--sg-window must be >= 2, got {self.sg_window}"),
            (self.sg_k >= 1, f"--sg-k must be >= 1, got {self.sg_k}"),
            (finite(self.sg_threshold) and 0 < self.sg_threshold < 1, f"--sg-threshold must be in (0, 1), got {self.sg_threshold}"),
            (finite(self.sg_mult) and self.sg_mult > 0, f"--sg-mult must be > 0, got {self.sg_mult}"),
            (finite(self.sg_exp) and self.sg_exp > 0, f"--sg-exp must be > 0, got {self.sg_exp}"),
        ])
        return self


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return 0.0
    return float(np.arccos(np.clip(a @ b / denom, -1.0, 1.0)))


class _Set:
    """Running sum of vectors and of their norms."""

    def __init__(self):
        self.count, self.total, self.norms = 0, None, 0.0

    def add(self, v: np.ndarray) -> None:
        self.count += 1
        self.total = v.copy() if self.total is None else self.total + v
        self.norms += float(np.linalg.norm(v))

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def mean_norm(self) -> float:
        return self.norms / self.count


def sg_score(fake: _Set, r1: _Set, r2: _Set, *, mult: float = 5.0, exp: float = 2.0) -> float:
    """SplitGuard's score of the sets so far (the module docstring's formula), in (0, 1)."""
    mean_r = (r1.mean + r2.mean) / 2
    d_fr = abs(fake.mean_norm - (r1.mean_norm + r2.mean_norm) / 2)
    d_12 = abs(r1.mean_norm - r2.mean_norm)
    if d_fr + d_12 == 0:
        x = 0.0
    else:
        x = (_angle(fake.mean, mean_r) * d_fr - _angle(r1.mean, r2.mean) * d_12) / (d_fr + d_12)
    return float((1.0 / (1.0 + np.exp(-mult * x))) ** exp)


def rank_p_value(fake: np.ndarray, regular, window: int) -> float | None:
    """The rank test's p-value of one fake vector against the regular vectors before it
    (oldest first; the last 2 * window are used), or None with fewer than 2 * window."""
    if len(regular) < 2 * window:
        return None
    reg = np.asarray(regular[-2 * window:])
    d_fake = np.linalg.norm(fake - reg[window:].mean(axis=0))
    null = [np.linalg.norm(reg[window + j] - reg[j : window + j].mean(axis=0)) for j in range(window)]
    return float((1 + np.sum(np.asarray(null) >= d_fake)) / (window + 1))


class SplitGuard:
    """The client's detector: `plan(t, y)` says whether batch t is fake (and shifts its labels),
    `observe(t, vector, fake)` takes the vector of what came back and returns True when the
    detector fires (once). The client's randomness comes from its own `seed`."""

    def __init__(self, config: SplitGuardConfig, num_classes: int, seed: int = 0):
        self.config = config.validate()
        if num_classes < 2:
            raise ValueError("SplitGuard needs at least 2 classes")
        self.num_classes = num_classes
        self.rng = numpy_rng(seed, NumpyStream.SPLITGUARD)
        self.fake, self.r1, self.r2 = _Set(), _Set(), _Set()
        self.regular: list[np.ndarray] = []  # the last 2 * window regular vectors
        self.scores: list[tuple[int, float]] = []  # (iteration, SG score)
        self.p_values: list[tuple[int, float]] = []  # (iteration, rank-test p-value)
        self.fired_at: int | None = None
        self.fake_batches = self.fakes_at_fire = 0

    def plan(self, t: int, y: np.ndarray) -> tuple[bool, np.ndarray]:
        """(fake?, the labels to send) for batch t."""
        if t < self.config.sg_start or self.rng.random() >= self.config.sg_fake_prob:
            return False, y
        shift = int(self.rng.integers(1, self.num_classes))
        return True, (np.asarray(y) + shift) % self.num_classes

    def observe(self, t: int, vector: np.ndarray, fake: bool) -> bool:
        """Record what the server's message induced on batch t; True when the detector fires now."""
        cfg = self.config
        v = np.asarray(vector, np.float64).ravel()
        if not fake:
            self.regular = (self.regular + [v])[-2 * cfg.sg_window:]
            if t >= cfg.sg_start:
                (self.r1 if self.rng.random() < 0.5 else self.r2).add(v)
            return False
        self.fake.add(v)
        self.fake_batches += 1
        if self.r1.count and self.r2.count:
            self.scores.append((t + 1, sg_score(self.fake, self.r1, self.r2, mult=cfg.sg_mult, exp=cfg.sg_exp)))
        p = rank_p_value(v, self.regular, cfg.sg_window)
        if p is None:
            return False
        self.p_values.append((t + 1, p))
        recent = [q for _, q in self.p_values[-cfg.sg_k:]]
        if self.fired_at is None and len(recent) == cfg.sg_k and np.mean(recent) > cfg.sg_threshold:
            self.fired_at, self.fakes_at_fire = t + 1, self.fake_batches
            return True
        return False

    def report(self) -> dict:
        """{"fired", "iteration" (when it fired, 1-based; None), "fake_batches" (by then, or in
        all), "p_values": [[iteration, p]], "scores": [[iteration, SG]]}."""
        return {"fired": self.fired_at is not None, "iteration": self.fired_at,
                "fake_batches": self.fakes_at_fire if self.fired_at else self.fake_batches,
                "p_values": [[t, p] for t, p in self.p_values], "scores": [[t, s] for t, s in self.scores]}
