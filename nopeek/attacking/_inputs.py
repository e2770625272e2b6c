"""What an attacker holds against a trained model, as `attacks.AttackInputs`.

From a run folder (`run_inputs`): the leaked training samples with the messages they
produced (noise defence included, as sent), the held-out targets, the sender's function
(white box), its architecture freshly initialised (UnSplit), and, for binary tasks, the
per-sample gradients the label attacks read, with the run's gradient defences applied as
in training.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nopeek.core import one_off_init
from nopeek.defences import DEFENCES, received_gradients
from nopeek.errors import ConfigError
from nopeek.protocol import Capture, build_segment, gradient_name, model_blocks, protocol_gradients
from nopeek.training import TrainedRun, cuts_of, strengths_of


def per_sample_gradients(run: TrainedRun, x, y, tensor: str) -> np.ndarray:
    """The gradients dCE_i/dm_i the producer of message `tensor` receives for each sample i:
    (n, ...) like the message. The batch loss is a mean, so row i of the gradient message
    is dCE_i/dm_i / n; this returns the rows times n, which the label attacks read."""
    capture = Capture([gradient_name(tensor)])
    data = run.built.prepare(jnp.asarray(x), jnp.asarray(y))
    protocol_gradients(run.built.topology, run.params, data, transport=capture)
    if gradient_name(tensor) not in capture.values:
        raise ConfigError(f"no gradient of {tensor!r} crosses between parties in this {run.config.topology} run")
    return np.asarray(capture.values[gradient_name(tensor)]) * len(x)


def heldout_gradients(run: TrainedRun, x, y) -> tuple[np.ndarray, str, dict]:
    """(gradients (n, ...), the tensor they are the gradient of, the gradient defences applied):
    what the party without the labels receives for held-out samples, batch by batch as in
    training when the run used a defence of the returned gradients."""
    tensor = run.built.label_gradient
    cfg = run.config
    used = {n: s for n, s in strengths_of(cfg).items() if s > 0 and DEFENCES[n].acts_on == "gradient"}
    carried = {n: s for n, s in strengths_of(cfg).items() if s > 0 and DEFENCES[n].owns_parameters}
    if not used and not carried:
        return per_sample_gradients(run, x, y, tensor), tensor, {}
    if len(used) > 1:
        raise ConfigError(f"the label attack scores one gradient defence at a time; the run uses {', '.join(used)}")
    (name, strength), = used.items() if used else ((None, 0.0),)
    grads = received_gradients(run.built, run.params, x, y, tensor, defense=name, strength=strength, seed=cfg.seed,
                               batch_size=cfg.batch_size, carried=carried, settings=cfg)
    return grads, tensor, used


def architecture_of(built, config, entry, input_shape):
    """seed -> (apply(params, x), params): the sender's blocks up to `entry`'s cut for
    inputs of `input_shape` (as built: the cut activation applied), freshly initialised:
    what an attacker who knows the architecture (not the weights) can build."""
    classes = next(iter(built.tasks.values()))
    cut = cuts_of(config, classes)[built.cut_of.get(entry.message, 0)]
    blocks = list(built.blocks) or model_blocks(config.model, classes, config.widths)
    input_shape = tuple(input_shape)

    graphdef = nnx.split(nnx.eval_shape(lambda: build_segment(blocks, input_shape, 0, cut)[0]))[0]
    # One cheap program for every seed (nopeek.core.one_off_init), not one per parameter shape.
    params_of = one_off_init(lambda seed: nnx.split(build_segment(blocks, input_shape, 0, cut, seed=seed)[0])[1])

    def build(seed):
        return (lambda p, x: nnx.merge(graphdef, p)(x)), params_of(seed)

    return build


def architecture(run: TrainedRun, entry, input_shape):
    """`architecture_of` a run folder's model."""
    return architecture_of(run.built, run.config, entry, input_shape)


def server_of(built, params: list, entry) -> dict | None:
    """What the party receiving `entry`'s message holds of the model, as `attacks.AttackInputs`
    fields (`server_apply`, `server_params`, `labels_at_server`) for K models' params
    (`{party: {segment: State}}` each), or None when it does not compute from that message
    alone (`nopeek.protocol.Built.receiver`) or the message is one replica's share."""
    found = built.receiver_apply(entry.message)
    if found is None or entry.replica is not None or entry.merged:
        return None
    apply, view = found
    return {"server_apply": apply, "server_params": [{s.name: p[view.party][s.name] for s in view.segments} for p in params],
            "labels_at_server": view.labels is not None}


def check_finite(values, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{what} holds NaN or Inf values: the model diverged; there is nothing to attack")
