"""`nopeek attack`: run one attack against a trained run folder and write its scores.

The attacker's data: a leaked share of the training set (`leak_fraction` or `leak_count`),
optionally only some classes (`aux_classes`, an auxiliary set from another distribution).
The targets: the held-out test set. Writes `scores.json` (and `reconstructions.png` for
reconstruction attacks, `label_leakage.png` for the label attack) into `out`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import field

import jax
import jax.numpy as jnp
import numpy as np

import attacks
from nopeek import data as data_lib
from nopeek.config import ConfigError, raise_first_failure
from nopeek.io import write_json
from nopeek.models import build_model
from nopeek.plots import label_leakage_figure, reconstruction_grid
from nopeek.runs import TrainedSplitModel, load
from nopeek.split import per_sample_cut_gradients, split

ATTACKS = ("decoder", "whitebox", "unsplit", "probe", "label")


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """What the attacker holds and how hard it tries."""

    attack: str = field(default="decoder", metadata={"help": "attack", "choices": ATTACKS})
    leak_fraction: float = field(default=0.1, metadata={"help": "share of the training set the attacker holds"})
    leak_count: int | None = field(default=None, metadata={"help": "number of leaked samples (overrides --leak-fraction)"})
    aux_classes: tuple[int, ...] = field(default=(), metadata={"help": "attacker holds only these classes (auxiliary data)"})
    steps: int = field(default=1500, metadata={"help": "optimisation steps (decoder, whitebox; unsplit: per round x rounds)"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the attack's optimiser"})
    n_targets: int = field(default=256, metadata={"help": "held-out samples to invert (whitebox, unsplit)"})
    tv_weight: float = field(default=0.0, metadata={"help": "total-variation prior weight (whitebox, unsplit)"})
    seed: int = field(default=0, metadata={"help": "the attacker's seed"})

    def validate(self) -> "AttackConfig":
        checks = [
            (self.attack in ATTACKS, f"unknown attack {self.attack!r}; choose from {', '.join(ATTACKS)}"),
            (0 < self.leak_fraction <= 1, f"--leak-fraction must be in (0, 1], got {self.leak_fraction}"),
            (self.leak_count is None or self.leak_count >= 2, f"--leak-count must be >= 2, got {self.leak_count}"),
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.n_targets >= 2, f"--n-targets must be >= 2, got {self.n_targets}"),
            (self.tv_weight >= 0, f"--tv-weight must be >= 0, got {self.tv_weight}"),
        ]
        raise_first_failure(checks)
        return self


def attacker_indices(y_train, config: AttackConfig) -> np.ndarray:
    """Indices of the training samples the attacker holds (seeded, deterministic)."""
    pool = np.arange(len(y_train))
    if config.aux_classes:
        pool = pool[np.isin(y_train, config.aux_classes)]
        if len(pool) == 0:
            raise ConfigError(f"no training samples in --aux-classes {config.aux_classes}")
    count = config.leak_count if config.leak_count is not None else max(2, round(config.leak_fraction * len(y_train)))
    if count > len(pool):
        raise ConfigError(f"the attacker's pool has {len(pool)} samples, fewer than the {count} asked for")
    return np.sort(np.random.default_rng(config.seed).choice(pool, count, replace=False))


def _grid(x, x_hat, path, title):
    return reconstruction_grid([x[:16], x_hat[:16]], ["original", "reconstructed"], path, title=title)


def run_attack(run_dir: str, config: AttackConfig, out: str) -> dict:
    """Run `config.attack` against the model in `run_dir`; write and return the scores."""
    config.validate()
    trained: TrainedSplitModel = load(run_dir)
    tc = trained.config
    ds = data_lib.load(tc.dataset, seed=tc.seed, data_dir=tc.data_dir, limit=tc.limit)
    leak = attacker_indices(ds.y_train, config)
    x_leak, y_leak = ds.x_train[leak], ds.y_train[leak]
    client = jax.jit(trained.client)
    t0 = time.perf_counter()
    scores: dict = {"attack": config.attack, "run": run_dir, "n_attacker": int(len(leak)), **dataclasses.asdict(config)}
    os.makedirs(out, exist_ok=True)

    if config.attack in ("decoder", "whitebox", "unsplit"):
        classifier = attacks.ReferenceClassifier(ds.x_train, ds.y_train)
        scores["classifier_clean_accuracy"] = classifier.accuracy(ds.x_test, ds.y_test)
        if config.attack == "decoder":
            x_t, y_t = ds.x_test, ds.y_test
            z_leak = np.asarray(client(jnp.asarray(x_leak)))[None]
            fitted = attacks.fit_decoders(z_leak, x_leak, steps=config.steps, lr=config.lr, seed=config.seed)
            x_hat = fitted.reconstruct(np.asarray(client(jnp.asarray(x_t)))[None])[0]
        else:
            x_t, y_t = ds.x_test[: config.n_targets], ds.y_test[: config.n_targets]
            z_t = client(jnp.asarray(x_t))
            if config.attack == "whitebox":
                x_hat = attacks.whitebox_inversion(
                    client, z_t, ds.input_shape, steps=config.steps, lr=max(config.lr, 0.01), tv_weight=config.tv_weight
                )
            else:
                shape, classes = data_lib.sample_shape(tc.dataset)
                clone = build_model(tc.model, shape, classes, tc.widths, seed=config.seed + 1000)
                fns, clone_params, _ = split(clone, tc.resolved_cut())
                rounds = max(1, config.steps // 100)
                x_hat, _ = attacks.unsplit_inversion(
                    fns.client_apply, clone_params, z_t, ds.input_shape, rounds=rounds,
                    tv_weight=config.tv_weight or 0.05,
                )
        scores.update(attacks.scores_with_baseline(x_t, x_hat, x_leak, classifier=classifier, y=y_t))
        scores["n_targets"] = int(len(x_t))
        _grid(x_t, x_hat, os.path.join(out, "reconstructions.png"),
              f"{config.attack} attack on {tc.model} cut {tc.resolved_cut()} (alpha {tc.alpha:g}): SSIM {scores['ssim']:.3f}")
    elif config.attack == "probe":
        z_leak = np.asarray(client(jnp.asarray(x_leak)))
        z_test = np.asarray(client(jnp.asarray(ds.x_test)))
        scores["probes"] = [
            attacks.probe_accuracy(z_leak, y_leak, z_test, ds.y_test, kind=kind, seed=config.seed)
            for kind in attacks.PROBES
        ]
    else:  # label
        if ds.num_classes != 2:
            raise ConfigError(f"the label attack needs a binary task (e.g. breast_cancer); {tc.dataset} has {ds.num_classes} classes")
        grads = np.asarray(per_sample_cut_gradients(
            trained.fns, trained.client_params, trained.server_params, jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
        ))
        result = attacks.label_leakage_auc(grads, ds.y_test)
        scores.update(result)
        label_leakage_figure(
            attacks.norm_scores(grads), attacks.direction_scores(grads, result["reference_index"]),
            ds.y_test, result, os.path.join(out, "label_leakage.png"),
        )
    scores["seconds"] = time.perf_counter() - t0
    write_json(os.path.join(out, "scores.json"), scores)
    return scores
