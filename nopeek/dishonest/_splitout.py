"""Client-side detection of a training-hijacking server by outlier detection (SplitOut).

Before split learning the client simulates honest training locally: its own layers, from
the initial weights it will use, and a freshly initialised copy of the server's layers (the
client knows or approximates the architecture and holds its labels), for `so_batches`
batches of its own data. It records the vector SplitGuard compares (the gradient induced on
its first block's parameters by what comes back; `first_layer_vector`) and fits a
local-outlier-factor model on them (`sklearn.neighbors.LocalOutlierFactor`, novelty
detection, n_neighbors = n_ref - 1, contamination "auto": a vector is an outlier when its
LOF exceeds 1.5). During training each returned gradient's vector is classified; the
detector fires when the outliers are a strict majority of the last `so_window` vectors
(from the `so_window`-th on), within the first `so_steps` batches (default one epoch of
the client's data, the paper's setting: its true-positive rate is detection in the first
epoch, its false-positive rate is measured on one honest epoch; an attack that starts
later is out of its reach, a limitation the paper states). Unlike SplitGuard it sends no
fake batches: the run it watches is the run it would have without it.

The paper's setting: the client is one conv layer, the reference is the first 1% of the
batches of one simulated epoch (MNIST at batch 64: about 9 vectors), window 1 or 10. Ours
(adapted, not from the paper): the client is any segment, the reference is `so_batches`
(12) batches of its private data in an order of their own (mnist5k has 63 batches per
epoch of the client's private data, so 1% would be under one), window 10.

References: Erdogan, Teksen, Celiktenyildiz, Kupcu, Cicek, "SplitOut: out-of-the-box
training-hijacking detection in split learning via outlier detection", CANS 2024 (arXiv
2302.08618; code: github.com/ege-erdogan/splitout, `sg_ad.ipynb`); Breunig et al., "LOF:
identifying density-based local outliers", SIGMOD 2000.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import jax.numpy as jnp
import numpy as np

from nopeek.core import Section, raise_first_failure
from nopeek.training import batch_order


@dataclasses.dataclass(frozen=True)
class SplitOutConfig(Section):
    """The client's honest simulation and its decision rule."""

    so_batches: int = field(default=12, metadata={"help": "SplitOut: honest batches the client simulates locally (its reference vectors)"})
    so_window: int = field(default=10, metadata={"help": "SplitOut: fire when outliers are a strict majority of the last N gradients"})
    so_seed: int = field(default=1, metadata={"help": "SplitOut: seed of the simulated server's initialisation and the simulation's data order"})
    so_steps: int = field(default=0, metadata={"help": "SplitOut: watch the first N batches (0: one epoch of the client's data, as the paper)"})

    def validate(self) -> "SplitOutConfig":
        raise_first_failure([
            (self.so_batches >= 3, f"--so-batches must be >= 3 (LOF needs neighbours), got {self.so_batches}"),
            (self.so_window >= 1, f"--so-window must be >= 1, got {self.so_window}"),
            (self.so_seed >= 0, f"--so-seed must be >= 0, got {self.so_seed}"),
            (self.so_steps >= 0, f"--so-steps must be >= 0, got {self.so_steps}"),
        ])
        return self


def honest_reference(protocol, dataset, private, batches: int, *, client_seed: int, server_seed: int) -> np.ndarray:
    """The client's local simulation of honest training: `protocol` (an honest protocol with
    SplitGuard's vector, `build_protocol("honest", ..., splitguard=True)`) run from the
    client's initial weights (`client_seed`) and a server initialised from `server_seed`,
    for `batches` batches of the client's `private` samples in an order of `server_seed`.

    Returns:
      (batches, d) the first-layer vectors of the simulated steps.
    """
    state = protocol.init(client_seed)
    server = protocol.init(server_seed)
    state = dataclasses.replace(state, params={**state.params, "server": server.params["server"]},
                                opt={**state.opt, "server": server.opt["server"]})
    batch = protocol.config.batch_size
    per_epoch = len(private) // batch
    if per_epoch == 0:
        raise ValueError(f"the client's {len(private)} private samples hold no batch of {batch}")
    order = np.concatenate([batch_order(server_seed, e, [np.asarray(private)], batch)
                            for e in range(-(-batches // per_epoch))])[:batches]
    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    out = []
    for t, idx in enumerate(order):
        state, step = protocol.step(state, x_train[idx], y_train[idx], x_train[:1], t, jnp.asarray(True))
        out.append(np.asarray(step["sg"], np.float64))
    return np.stack(out)


class SplitOut:
    """The client's outlier detector, with SplitGuard's interface (`plan`, `observe`, `report`)
    so that `run_protocol` runs either. `reference`: (n_ref, d) honest vectors; `epoch`: the
    batches of one epoch of the client's data (what `so_steps` 0 watches)."""

    def __init__(self, config: SplitOutConfig, reference: np.ndarray, epoch: int | None = None):
        from sklearn.neighbors import LocalOutlierFactor

        self.config = config.validate()
        reference = np.asarray(reference, np.float64)
        if len(reference) < 3:
            raise ValueError(f"SplitOut needs at least 3 reference vectors, got {len(reference)}")
        self.lof = LocalOutlierFactor(n_neighbors=len(reference) - 1, novelty=True).fit(reference)
        self.watch = config.so_steps or epoch  # None: every batch
        self.predictions: list[tuple[int, bool]] = []  # (iteration, outlier?)
        self.scores: list[tuple[int, float]] = []  # (iteration, LOF)
        self.fired_at: int | None = None

    def plan(self, t: int, y: np.ndarray) -> tuple[bool, np.ndarray]:
        """SplitOut sends no fake batch."""
        return False, y

    def observe(self, t: int, vector: np.ndarray, fake: bool = False) -> bool:
        """Classify the vector of batch t; True when the detector fires now (once). Batches after
        the watched ones are not looked at."""
        if self.watch is not None and t >= self.watch:
            return False
        v = np.asarray(vector, np.float64).reshape(1, -1)
        outlier = bool(self.lof.predict(v)[0] == -1)
        self.predictions.append((t + 1, outlier))
        self.scores.append((t + 1, float(-self.lof.score_samples(v)[0])))
        w = self.config.so_window
        recent = [o for _, o in self.predictions[-w:]]
        if self.fired_at is None and len(recent) == w and sum(recent) > w / 2:
            self.fired_at = t + 1
            return True
        return False

    def report(self) -> dict:
        """{"fired", "iteration" (1-based, None), "outliers" (by then, or in all), "checked",
        "scores": [[iteration, LOF]] (the first 50)}."""
        upto = [o for t, o in self.predictions if self.fired_at is None or t <= self.fired_at]
        return {"fired": self.fired_at is not None, "iteration": self.fired_at, "outliers": int(sum(upto)),
                "checked": len(upto), "scores": [[t, s] for t, s in self.scores[:50]]}
