"""A training run on disk, and `load` to get it back.

    runs/x/config.json        the full TrainConfig
    runs/x/metrics.json       test_accuracy, task_accuracy, dcor, leakage (per message),
                              collapsed and collapse_reason (as a sweep flags a cell),
                              transcript (per step), history, seconds
    runs/x/checkpoint.msgpack every party's parameters (Flax msgpack, no pickle)

A run folder is complete or absent: `run_train` writes into a temporary folder beside
it and renames it into place when everything is written; an existing run folder is
refused unless `force`. Until then its epoch checkpoints are kept beside it, in
`.x.resume/` (`nopeek.training._resume`): an interrupted run given again resumes from its
last saved epoch, and the folder is removed when the run is written. A run whose loss or parameters become NaN or Inf, or whose loss
explodes (`exploded`), writes nothing and raises `TrainingDiverged`; a run that collapsed
(accuracy at chance, or a constant message) is written with `collapsed` set.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nopeek import data as data_lib
from nopeek.core import (
    check_output_folder, check_writable, load_params_into, publish_folder, read_json, resume_folder, save_params, staging_folder,
    write_json,
)
from nopeek.defences import ADJACENCY, DEFENCES, Context, build_defence, guarantee_settings
from nopeek.errors import ConfigError, DataError, RunFolderError, TrainingDiverged
from nopeek.protocol import Built, forward, model_at, transcript
from nopeek.training._config import TrainConfig, cuts_of, strengths_of
from nopeek.training._leakage import LeakEntry, leak_entries
from nopeek.training._health import EXPLOSION_FACTOR, chance_accuracy, collapse_reason
from nopeek.training._loop import StackResult, build_topology, data_shards, init_params, stack_hparams, train_stack

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.json", "checkpoint.msgpack"


def _message_id(entry: LeakEntry) -> str:
    return f"{entry.party}:{entry.label}"


def message_apply(built: Built, entry: LeakEntry, settings=None):
    """`apply(state, x) -> message`: the message `entry` for inputs x (n, ...) without its
    random part, what a white-box attacker inverts (jittable). The sender's weights are an
    argument, not closed over, so one compiled program serves every model of a stack (and,
    through the persistent cache, every run of the same shapes).

    state: {"params": the model's parameters, "hparams": {"strength": {name: ()}, "seed": ()}
    (its defences, whose deterministic part, `Defence.send_mean`, applies: clipping, a
    bottleneck's mean), or None (no defence)}; see `message_state`."""
    topo, prepare = built.topology, built.prepare

    def apply(state, x):
        hp = state["hparams"]
        defence = None if hp is None else build_defence(
            hp["strength"], Context(hp["seed"], settings=settings, evaluation=True))
        values = forward(topo, state["params"], prepare(x, jnp.zeros(x.shape[0], jnp.int32)), defence=defence)
        return entry.view(values[entry.message])

    return apply


def message_state(params, hparams=None) -> dict:
    """The `state` of `message_apply` for one model: its parameters and hparams
    ({"strength": {name: value}, "seed": int}, or None), values as arrays."""
    if hparams is None:
        return {"params": params, "hparams": None}
    return {"params": params, "hparams": {"strength": {n: jnp.asarray(v, jnp.float32) for n, v in hparams["strength"].items()},
                                          "seed": jnp.asarray(hparams["seed"], jnp.int32)}}


@dataclasses.dataclass
class TrainedRun:
    """A trained split model restored from a run folder: any topology."""

    config: TrainConfig
    built: Built
    params: Any  # {party: {segment: State}} (and a defence's own parameters under "defence")

    def _defence(self, evaluation: bool = True):
        """(hparams of the run's one model, its defence's hooks at evaluation)."""
        cfg = self.config
        hp = model_at(stack_hparams([strengths_of(cfg)], [cfg.seed]), 0)  # one program, not one per leaf
        return hp, build_defence(hp["strength"], Context(hp["seed"], settings=cfg, evaluation=evaluation))

    @property
    def entries(self) -> list[LeakEntry]:
        """The attackable messages (sent from raw inputs to a party that does not hold them)."""
        return leak_entries(self.built)

    def message_ids(self) -> list[str]:
        """"party:tensor" of every attackable message, the data holder's first message first."""
        return [_message_id(e) for e in self.entries]

    def entry(self, message: str | None) -> LeakEntry:
        """The message named "party:tensor" or "tensor" (its first sender); None: the first."""
        entries = self.entries
        if message is None:
            return entries[0]
        for e in entries:
            if message in (_message_id(e), e.label):
                return e
        raise ConfigError(f"--message {message!r}: this {self.config.topology} run sends "
                          f"{', '.join(self.message_ids())}")

    def values(self, x, y=None) -> dict:
        """Every tensor of a forward pass on inputs x (n, ...) without noise: data keys
        (prepared: vertical slices, task labels), segment outputs; protected messages through
        the run's defences without their random part (`Defence.send_mean`: clipped, a
        bottleneck's mean; the noise baseline leaves them as computed)."""
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        y = np.zeros(len(x), np.int32) if y is None else y
        return self._forward(self.params, self._defence()[0], x, y)

    @functools.cached_property
    def _forward(self):
        """`values`' program (weights, hparams and inputs its arguments): compiled once per
        input shape, not one small program per operation of an eager forward pass."""
        topo, prepare, cfg = self.built.topology, self.built.prepare, self.config

        @jax.jit
        def run(params, hp, x, y):
            defence = build_defence(hp["strength"], Context(hp["seed"], settings=cfg, evaluation=True))
            return forward(topo, params, prepare(x, y), defence=defence)

        return run

    def message(self, name: str | None, x) -> np.ndarray:
        """What the named message carries for inputs x: (n, ...) (one replica's share)."""
        e = self.entry(name)
        return np.asarray(e.view(self.values(x)[e.message]))

    def source(self, name: str | None, x) -> np.ndarray:
        """The raw inputs the named message is computed from: x itself, or a client's slice."""
        e = self.entry(name)
        return np.asarray(e.source_view(self.values(x)[e.source]))

    def sent(self, name: str | None, x, chunk: int = 1024) -> np.ndarray:
        """What was sent for inputs x (n, ...): the named message with the run's noise defence
        applied as at test time (sample i's noise from its position i in x), the same tensor
        `nopeek sweep` attacks. Without noise, equal to `message`."""
        e = self.entry(name)
        run = self._sent_programs.get(_message_id(e))
        if run is None:
            cfg = self.config
            topo, prepare = self.built.topology, self.built.prepare

            @jax.jit  # the weights an argument, not constants of the program (which would match no other run's)
            def run(params, hp, xb, index):
                defence = build_defence(hp["strength"], Context(hp["seed"], settings=cfg, evaluation=True))
                v = forward(topo, params, prepare(xb, jnp.zeros(xb.shape[0], jnp.int32)), defence=defence,
                            sample_index=index)[e.message]
                return e.view(v)

            self._sent_programs[_message_id(e)] = run
        hp = self._defence()[0]
        x = np.asarray(x)
        return np.concatenate([np.asarray(run(self.params, hp, jax.device_put(x[i : i + chunk], may_alias=False),
                                              jax.device_put(np.arange(i, min(i + chunk, len(x)), dtype=np.int32))))
                               for i in range(0, len(x), chunk)])

    @functools.cached_property
    def _sent_programs(self) -> dict:
        """`sent`'s compiled program per message entry (reused by every call)."""
        return {}

    def message_apply(self, name: str | None):
        """(apply, state): `apply(state, x)` -> the named message (n, ...) without its random
        part (`values`), what a white-box attacker inverts; see `message_apply`."""
        e = self.entry(name)
        return message_apply(self.built, e, self.config), message_state(self.params, self._defence()[0])

    def message_fn(self, name: str | None):
        """A jittable function x (n, ...) -> the named message (n, ...) without its random part
        (`values`), weights closed over."""
        apply, state = self.message_apply(name)
        return lambda x: apply(state, x)

    def logits(self, x) -> np.ndarray:
        """Logits of the first task for inputs x: (n, classes)."""
        return np.asarray(self.values(x)[self.built.topology.losses[0].logits])


def _transcript_rows(result: StackResult, dataset) -> list[dict]:
    built = result.built
    params = result.model_params(0)
    n = result.config.batch_size
    spec = jax.eval_shape(built.prepare, jax.ShapeDtypeStruct((n, *dataset.input_shape), jnp.float32),
                          jax.ShapeDtypeStruct((n,), jnp.int32))  # shapes only: nothing is computed
    opt = model_at(result.state.opt, 0)
    handoff_state = {p: (params[p], opt[p]) for p in params}
    return [dataclasses.asdict(m) for m in transcript(built.topology, params, spec, handoff_state=handoff_state)]


def run_collapse(result: StackResult, dataset, k: int = 0) -> str:
    """Why model k of a trained stack counts as collapsed (`collapse_reason` on its accuracy
    and the held-out values of the data holder's first message), or "" (the sweep's rule)."""
    _, shards_test = data_shards(result.config, dataset)
    first = leak_entries(result.built, shards_test)[0]
    z = np.asarray(first.view(result.messages_test[first.message], models_axis=True))[k]
    if first.subset is not None:
        z = z[first.subset]
    return collapse_reason(float(result.test_accuracy[k]), chance_accuracy(dataset.y_test), z)


def run_metrics(result: StackResult, dataset, k: int = 0) -> dict:
    """The metrics.json dict of model k of a trained stack."""
    reason = run_collapse(result, dataset, k)
    return {
        "topology": result.config.topology,
        "cuts": list(cuts_of(result.config, dataset.num_classes)),
        "test_accuracy": float(result.test_accuracy[k]),
        "chance_accuracy": chance_accuracy(dataset.y_test),
        "collapsed": bool(reason),
        "collapse_reason": reason,
        "task_accuracy": {key: float(v[k]) for key, v in result.task_accuracy.items()},
        "dcor": float(result.dcor[k]),
        "leakage": [{"party": p, "message": m, "dcor": float(v[k]),
                     **{name: float(values[k]) for name, values in result.readings[(p, m)].items()}}
                    for (p, m), v in result.leakage.items()],
        "n_test": int(len(dataset.x_test)),
        "data_digest": data_lib.data_digest(dataset),  # what `nopeek attack --run` checks the data against
        "seconds": result.seconds,
        "transcript": _transcript_rows(result, dataset),
        "history": [{key: (v[k] if isinstance(v, list) else v) for key, v in row.items()} for row in result.history],
        **privacy_metrics(result, k),
    }


def privacy_metrics(result: StackResult, k: int = 0) -> dict:
    """Model k's differential-privacy guarantee as metrics: dp_epsilon (the run), dp_epsilon_epoch,
    dp_delta, dp_covers, the accounting's terms (adjacency, accountant, releases) and the
    settings of the defences that claim it (`guarantee_settings`: DP's dp_clip); {} when none
    of its defences claims one."""
    guarantee = result.privacy(k)
    if not guarantee:
        return {}
    r = result.releases
    return {**guarantee_settings(result.strengths[k], result.config), **guarantee, "dp_adjacency": ADJACENCY,
            "dp_accountant": "pld", "dp_epochs": r.epochs, "dp_steps_per_epoch": r.steps_per_epoch,
            "dp_sampling_rate": r.sampling_rate}


def _check_out(out: str, force: bool) -> None:
    """Refuse `out` unless it is absent, empty or (with `force`) a run `nopeek train` wrote
    (`check_writable`: never another command's folder or files nopeek did not write)."""
    try:
        check_writable(out, ("run", "fsha"), force=force)
    except ConfigError as err:
        raise RunFolderError(str(err)) from None
    check_output_folder(out)


def run_train(config: TrainConfig, out: str, *, force: bool = False, progress: bool = True, fresh: bool = False,
              log=None, built=None) -> dict:
    """Train one split model as `config` says and write its run folder `out`.

    Returns:
      the metrics dict written to `out/metrics.json`.

    An interrupted run leaves its epoch checkpoints in `resume_folder(out)`; the same call
    again resumes from the last one (the result is the uninterrupted run's), unless `fresh`
    (they are discarded first). `log`: where lines about resuming go (`train_stack`'s).
    `built`: the topology, where the caller has built it already (`train_stack`'s).

    Raises:
      TrainingDiverged: the loss or parameters became non-finite, or the loss exploded
        (over `EXPLOSION_FACTOR` times the first step's); nothing written.
      RunFolderError: `out` is a file, holds another command's results or files nopeek did
        not write, or holds a run and not `force`; or cannot be written in.
    """
    config.validate()
    _check_out(out, force)
    dataset = data_lib.load_config(config)
    try:  # the temporary folder first, so an unwritable --out fails before training, not after
        tmp = staging_folder(out)
    except ConfigError as err:
        raise RunFolderError(str(err)) from None
    resume_dir = resume_folder(out)  # epoch checkpoints: an interrupted run resumes from its last
    if fresh:
        shutil.rmtree(resume_dir, ignore_errors=True)
    try:
        result = train_stack(config, dataset, progress=progress, resume_dir=resume_dir, log=log, built=built)
        if result.diverged[0]:
            shutil.rmtree(resume_dir, ignore_errors=True)  # nothing worth resuming
            loss = float(result.diverged_loss[0])
            why = "" if not np.isfinite(loss) else (f", over {EXPLOSION_FACTOR:g} times the first step's "
                                                    f"{float(result.first_loss[0]):.4g}")
            raise TrainingDiverged(f"training diverged at epoch {int(result.diverged_epoch[0])} "
                                   f"(loss {loss:.4g}{why}); nothing was written: try a smaller --lr or --alpha")
        metrics = run_metrics(result, dataset)
        write_json(os.path.join(tmp, CONFIG), config.to_dict())
        save_params(os.path.join(tmp, CHECKPOINT), result.model_params(0))
        write_json(os.path.join(tmp, METRICS), metrics)
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(resume_dir, ignore_errors=True)
    return metrics


def load(run_dir: str) -> TrainedRun:
    """Restore the trained split model of a run folder written by `run_train`.

    Raises:
      RunFolderError: not a run folder, or its config.json is unreadable or invalid.
      CheckpointError: the checkpoint is unreadable or does not match the config.
    """
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir) or not os.path.exists(config_path):
        raise RunFolderError(f"{run_dir}: not a `nopeek train` run folder (no {CONFIG})")
    try:
        raw = read_json(config_path)
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{config_path}: cannot read the run's config ({err})") from err
    if not isinstance(raw, dict):
        raise RunFolderError(f"{config_path}: expected a JSON object of TrainConfig fields")
    try:
        config = TrainConfig.from_dict(raw).validate()
    except (ConfigError, DataError) as err:
        raise RunFolderError(f"{config_path}: {err}") from None
    shape, classes = data_lib.sample_shape(config.dataset, config.data_dir)
    built = build_topology(config, shape, classes)
    checkpoint = os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(checkpoint):
        raise RunFolderError(f"{checkpoint}: not found; the run folder is incomplete")
    used = [n for n, v in strengths_of(config).items() if v > 0 or DEFENCES[n].always]
    params = load_params_into(checkpoint, init_params(built, config.seed, used, config, shape))
    return TrainedRun(config, built, params)


