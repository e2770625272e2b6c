"""`nopeek attack`: run one attack against any message of a trained run folder.

The attacker's data (`AttackConfig`): a leaked share of the training set
(`leak_fraction` or `leak_count`), optionally only some classes (`aux_classes`, an
auxiliary set from another distribution), chosen by `attacker_indices` with the
attacker's seed; `nopeek sweep` uses the same function, so the same settings mean the
same samples. The targets: the held-out test set. The message: `--message party:tensor`
(default: the first message the data holder sends). Writes `scores.json` (and
`reconstructions.png` for reconstruction attacks, `label_leakage.png` for the label
attack) into `out`.

Each attack has its own defaults (steps, learning rate, TV weight); a value given
explicitly is always obeyed.
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
from nopeek.config import ConfigError, Section, finite, raise_first_failure
from nopeek.engine import Capture, gradient_name, protocol_gradients
from nopeek.io import write_json
from nopeek.models import build_segment
from nopeek.plots import label_leakage_figure, reconstruction_grid
from nopeek.runs import TrainedRun, load

ATTACKS = ("decoder", "whitebox", "unsplit", "probe", "label", "fsha")

# Per-attack defaults of the settings left unset (None): an explicit value always wins.
DEFAULTS = {
    "decoder": {"attack_steps": 1500, "attack_lr": 2e-3, "tv_weight": 0.0},
    "whitebox": {"attack_steps": 1500, "attack_lr": 0.05, "tv_weight": 0.0},
    "unsplit": {"attack_steps": 2000, "attack_lr": 0.05, "tv_weight": 0.05},
    "probe": {"attack_steps": 0, "attack_lr": 0.0, "tv_weight": 0.0},
    "label": {"attack_steps": 0, "attack_lr": 0.0, "tv_weight": 0.0},
    "fsha": {"attack_steps": 0, "attack_lr": 0.0, "tv_weight": 0.0},  # trains its own client: nopeek.fsha
}


@dataclasses.dataclass(frozen=True)
class AttackConfig(Section):
    """What the attacker holds, which message it attacks, and how hard it tries."""

    attack: str = field(default="decoder", metadata={"help": "attack", "choices": ATTACKS})
    message: str | None = field(default=None, metadata={"help": "message to attack, party:tensor or tensor (default: the data holder's first)"})
    leak_fraction: float = field(default=0.1, metadata={"help": "share of the training set the attacker holds"})
    leak_count: int | None = field(default=None, metadata={"help": "number of leaked samples (overrides --leak-fraction)"})
    aux_classes: tuple[int, ...] = field(default=(), metadata={"help": "attacker holds only these classes (auxiliary data)"})
    attack_steps: int | None = field(default=None, metadata={"help": "optimisation steps (decoder 1500, whitebox 1500; unsplit 2000 = rounds x 100)"})
    attack_lr: float | None = field(default=None, metadata={"help": "learning rate of the attack (decoder 2e-3, whitebox 0.05, unsplit 0.05 on the inputs)"})
    n_targets: int = field(default=256, metadata={"help": "held-out samples to invert (whitebox, unsplit)"})
    tv_weight: float | None = field(default=None, metadata={"help": "total-variation prior weight (whitebox 0, unsplit 0.05)"})
    attack_seed: int = field(default=0, metadata={"help": "the attacker's seed: which samples leak, decoder init"})

    def validate(self) -> "AttackConfig":
        checks = [
            (self.attack in ATTACKS, f"unknown attack {self.attack!r}; choose from {', '.join(ATTACKS)}"),
            (finite(self.leak_fraction) and 0 < self.leak_fraction <= 1, f"--leak-fraction must be in (0, 1], got {self.leak_fraction}"),
            (self.leak_count is None or self.leak_count >= 2, f"--leak-count must be >= 2, got {self.leak_count}"),
            (self.attack_steps is None or self.attack_steps >= 0, f"--attack-steps must be >= 0, got {self.attack_steps}"),
            (self.attack_lr is None or (finite(self.attack_lr) and self.attack_lr > 0), f"--attack-lr must be finite and > 0, got {self.attack_lr}"),
            (self.n_targets >= 2, f"--n-targets must be >= 2, got {self.n_targets}"),
            (self.attack_seed >= 0, f"--attack-seed must be >= 0, got {self.attack_seed}"),
            (self.tv_weight is None or (finite(self.tv_weight) and self.tv_weight >= 0), f"--tv-weight must be finite and >= 0, got {self.tv_weight}"),
        ]
        raise_first_failure(checks)
        return self

    def resolved(self, name: str):
        """Setting `name` as given, or the attack's default when not given."""
        value = getattr(self, name)
        return DEFAULTS[self.attack][name] if value is None else value


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


def per_sample_gradients(run: TrainedRun, x, y, tensor: str) -> np.ndarray:
    """The gradients dCE_i/dm_i the producer of message `tensor` receives for each sample i:
    (n, ...) like the message. The batch loss is a mean, so row i of the gradient message
    is dCE_i/dm_i / n; this returns the rows times n, which the label attacks read."""
    capture = Capture([gradient_name(tensor)])
    data = run.built.prepare(jnp.asarray(x), jnp.asarray(y))
    protocol_gradients(run.built.topology, run.params, data, alpha=0.0, leakage_kind=None, transport=capture)
    if gradient_name(tensor) not in capture.values:
        raise ConfigError(f"no gradient of {tensor!r} crosses between parties in this {run.config.topology} run")
    return np.asarray(capture.values[gradient_name(tensor)]) * len(x)


def label_attack_tensor(run: TrainedRun) -> str:
    """The gradient the label attack reads: in u_shaped the one the server receives (the
    labels stay with the client); elsewhere the one the data holder receives for its first
    message (two-party split learning with labels at the server, Li et al. 2022)."""
    if run.config.topology == "u_shaped":
        return "z2"
    return run.entry(None).message


def _grid(x, x_hat, path, title):
    return reconstruction_grid([x[:16], x_hat[:16]], ["original", "reconstructed"], path, title=title)


def run_attack(run_dir: str, config: AttackConfig, out: str) -> dict:
    """Run `config.attack` against one message of the model in `run_dir`; write and return the scores."""
    config.validate()
    if config.attack == "fsha":
        raise ConfigError("--attack fsha trains a client under attack (nopeek.fsha.run_fsha); it attacks no run folder")
    run = load(run_dir)
    tc = run.config
    entry = run.entry(config.message)
    message = f"{entry.party}:{entry.label}"
    ds = data_lib.load(tc.dataset, seed=tc.split_seed, data_dir=tc.data_dir, limit=tc.limit)
    leak = attacker_indices(ds.y_train, leak_fraction=config.leak_fraction, leak_count=config.leak_count,
                            aux_classes=config.aux_classes, seed=config.attack_seed)
    x_leak, y_leak = ds.x_train[leak], ds.y_train[leak]
    steps, lr, tv = (config.resolved(n) for n in ("attack_steps", "attack_lr", "tv_weight"))
    if config.attack in ("decoder", "whitebox", "unsplit") and steps < 1:
        raise ConfigError(f"--attack-steps must be >= 1 for the {config.attack} attack, got {steps}")
    t0 = time.perf_counter()
    scores: dict = {**config.to_dict(), "attack": config.attack, "run": run_dir, "message": message,
                    "n_attacker": int(len(leak)), "attack_steps": steps, "attack_lr": lr, "tv_weight": tv}
    # `out` is created by its first file (figure or scores.json), after every check: a refused attack leaves nothing.
    send = jax.jit(run.message_fn(message))  # the sender's function, before any noise

    def sent(x):  # what crossed: noise defence included, as the sweep attacks it
        return run.sent(message, x)

    def source(x):  # what the message is computed from: all of x, or the sender's slice
        return run.source(message, x)

    if config.attack in ("decoder", "whitebox", "unsplit"):
        z_leak = sent(x_leak)
        _check_finite(z_leak, message)
        classifier = attacks.ReferenceClassifier(source(ds.x_train), ds.y_train)
        if config.attack == "decoder":
            x_t, y_t = ds.x_test, ds.y_test
            fitted = attacks.fit_decoders(z_leak[None], source(x_leak), steps=steps, lr=lr, seed=config.attack_seed)
            x_hat = fitted.reconstruct(sent(x_t)[None])[0]
        else:
            if entry.replica is not None or entry.merged or entry.source != "x":
                raise ConfigError(f"--attack {config.attack} inverts a message computed from the whole input; "
                                  f"{message} is computed from a slice (use --attack decoder)")
            x_t, y_t = ds.x_test[: config.n_targets], ds.y_test[: config.n_targets]
            z_t = jnp.asarray(sent(x_t))
            if config.attack == "whitebox":
                x_hat = attacks.whitebox_inversion(send, z_t, ds.input_shape, steps=steps, lr=lr, tv_weight=tv)
            else:
                x_hat = _unsplit(run, entry, z_t, ds.input_shape, steps, lr, tv, config.attack_seed)
        x_t_src = source(x_t)
        scores["classifier_clean_accuracy"] = classifier.accuracy(x_t_src, y_t)
        scores.update(attacks.scores_with_baseline(x_t_src, x_hat, source(x_leak), classifier=classifier, y=y_t))
        scores["n_targets"] = int(len(x_t))
        _grid(x_t_src, x_hat, os.path.join(out, "reconstructions.png"),
              f"{config.attack} attack on {tc.topology} {tc.model} {message} (alpha {tc.alpha:g}): "
              + (f"SSIM {scores['ssim']:.3f}" if np.isfinite(scores["ssim"]) else f"MSE {scores['mse']:.4f}"))
    elif config.attack == "probe":
        z_leak = sent(x_leak)
        _check_finite(z_leak, message)
        z_test = sent(ds.x_test)
        try:
            scores["probes"] = [
                attacks.probe_accuracy(z_leak, y_leak, z_test, ds.y_test, kind=kind, seed=config.attack_seed)
                for kind in attacks.PROBES
            ]
        except ValueError as err:
            raise ConfigError(f"--leak-fraction/--leak-count: {err}") from None
    else:  # label
        if ds.num_classes != 2:
            raise ConfigError(f"the label attack needs a binary task (e.g. breast_cancer); {tc.dataset} has {ds.num_classes} classes")
        tensor = label_attack_tensor(run)
        if tc.label_defense == "none":
            grads = per_sample_gradients(run, ds.x_test, ds.y_test, tensor)
        else:  # what the defended label holder sends, batch by batch as in training
            from nopeek.label_defences import received_gradients

            grads = received_gradients(run.built.topology, run.params, run.built.prepare, ds.x_test, ds.y_test, tensor,
                                       defense=tc.label_defense, strength=tc.label_strength, seed=tc.seed,
                                       batch_size=tc.batch_size)
            scores["label_defense"], scores["label_strength"] = tc.label_defense, tc.label_strength
        _check_finite(grads, gradient_name(tensor))
        result = attacks.label_leakage_auc(grads, ds.y_test)
        scores.update(result, gradient=gradient_name(tensor))
        label_leakage_figure(
            attacks.norm_scores(grads), attacks.direction_scores(grads, result["reference_index"]),
            ds.y_test, result, os.path.join(out, "label_leakage.png"),
        )
    scores["seconds"] = time.perf_counter() - t0
    write_json(os.path.join(out, "scores.json"), scores)
    return scores


def _check_finite(values, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{what} holds NaN or Inf values: the model diverged; there is nothing to attack")


def _unsplit(run: TrainedRun, entry, z_t, input_shape, steps, lr, tv, seed):
    """UnSplit: the attacker knows the architecture up to the message (not its weights) and
    fits a clone of it together with the inputs."""
    from flax import nnx

    from nopeek.models import model_blocks

    cuts = run.config.resolved_cuts(next(iter(run.built.tasks.values())))
    hop = 0 if entry.message == "z" else int(entry.message[1:]) - 1  # z, or z1, z2, ... of a chain
    blocks = model_blocks(run.config.model, next(iter(run.built.tasks.values())), run.config.widths)
    clone, _ = build_segment(blocks, tuple(input_shape), 0, cuts[hop], seed=seed + 1000)
    graphdef, clone_params = nnx.split(clone)
    x_hat, _ = attacks.unsplit_inversion(
        lambda p, x: nnx.merge(graphdef, p)(x), clone_params, z_t, input_shape,
        rounds=max(1, steps // 100), lr_input=lr, tv_weight=tv,
    )
    return x_hat
