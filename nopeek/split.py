"""The split protocol: a client part and a server part that exchange only `z` and `dL/dz`.

One training step, as split learning really runs it:

  client:  z = client(x)                        (keeps a VJP closure; x never leaves)
  -> server receives z (plus noise, if that defence is on) and the labels y
  server:  L_task = task_weight * CE(server(z), y); grads of its params and of z
  <- client receives only g = dL_task/dz
  client:  adds alpha * dD(x, z)/dz (the NoPeek term, computed where x lives),
           finishes its backward pass with the VJP.

`protocol_gradients` returns exactly `jax.grad` of the whole loss, which a test proves.
`transcript` lists every tensor that crosses the cut, with shape and bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import metrics
from nopeek.models import BlockStack

LEAKAGE_TERMS = ("dcor", "log_dcor")
NOISE_KINDS = ("gaussian", "uniform")


@dataclasses.dataclass(frozen=True)
class SplitFns:
    """The two parties as pure functions of their parameters.

    client_apply(params, x: (n, ...)) -> z: (n, ...) cut activations.
    server_apply(params, z) -> logits: (n, classes).
    """

    client_graph: Any
    server_graph: Any
    cut: int

    def client_apply(self, params, x: jax.Array) -> jax.Array:
        return nnx.merge(self.client_graph, params)(x)

    def server_apply(self, params, z: jax.Array) -> jax.Array:
        return nnx.merge(self.server_graph, params)(z)


def split(model: BlockStack, cut: int):
    """Cut `model` after block `cut` (1 <= cut < number of blocks).

    Returns:
      (fns: SplitFns, client_params, server_params): the pure functions and each party's
      parameter pytree (nnx.State).
    """
    if not 1 <= cut < len(model):
        raise ValueError(
            f"cut must be between 1 and {len(model) - 1} for this model "
            f"(blocks: {', '.join(model.names)}), got {cut}"
        )
    client_graph, client_params = nnx.split(model.part(0, cut))
    server_graph, server_params = nnx.split(model.part(cut, len(model)))
    return SplitFns(client_graph, server_graph, cut), client_params, server_params


def leakage(x: jax.Array, z: jax.Array, kind: str = "dcor") -> jax.Array:
    """The NoPeek penalty D(x, z): V-statistic dCor, or its log (the workshop paper's text).

    x: (n, ...) raw inputs; z: (n, ...) cut activations. Returns a scalar.
    """
    d = metrics.distance_correlation(x, z)
    if kind == "dcor":
        return d
    if kind == "log_dcor":
        # dCor is 0 only for a constant z; keep the log (and its gradient) finite there.
        return jnp.log(jnp.maximum(d, 1e-6))
    raise ValueError(f"leakage term must be one of {LEAKAGE_TERMS}, got {kind!r}")


def add_noise(z: jax.Array, key: jax.Array, scale: jax.Array, kind: str) -> jax.Array:
    """The noise baseline: z + scale * N(0, 1), or + scale * U(-1, 1). Scale 0 is a no-op."""
    if kind == "gaussian":
        noise = jax.random.normal(key, z.shape, z.dtype)
    elif kind == "uniform":
        noise = jax.random.uniform(key, z.shape, z.dtype, -1.0, 1.0)
    else:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    return z + scale * noise


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of logits (n, classes) against int labels (n,). Logits, not probabilities."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ---- the three parts of a step --------------------------------------------


def client_forward(fns: SplitFns, client_params, x):
    """Client: z = client(x), and the VJP closure that stays on the client."""
    return jax.vjp(lambda p: fns.client_apply(p, x), client_params)


def server_step(fns: SplitFns, server_params, z_received, y, task_weight):
    """Server: its loss, its parameter gradients, and dL/dz to send back. It never sees x.

    Returns:
      (ce, logits, server_grads, grad_z)
    """

    def loss(p, z):
        logits = fns.server_apply(p, z)
        ce = cross_entropy(logits, y)
        return task_weight * ce, (ce, logits)

    (_, (ce, logits)), (server_grads, grad_z) = jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True
    )(server_params, z_received)
    return ce, logits, server_grads, grad_z


def client_backward(client_vjp, x, z, grad_z_received, alpha, leakage_kind):
    """Client: add alpha * dD(x, z)/dz to the received cotangent and finish backward.

    `leakage_kind=None` is plain split learning: no D term is computed at all (leak = 0).

    Returns:
      (client_grads, leak): parameter gradients, and D(x, z) for the record.
    """
    if leakage_kind is None:
        (client_grads,) = client_vjp(grad_z_received)
        return client_grads, jnp.zeros((), z.dtype)
    leak, grad_leak = jax.value_and_grad(lambda zz: leakage(x, zz, leakage_kind))(z)
    (client_grads,) = client_vjp(grad_z_received + alpha * grad_leak)
    return client_grads, leak


def protocol_gradients(
    fns: SplitFns,
    client_params,
    server_params,
    x,
    y,
    *,
    alpha,
    task_weight=1.0,
    leakage_kind: str = "dcor",
    noise_scale=0.0,
    noise_kind: str = "gaussian",
    key=None,
):
    """One split-protocol pass: each party's gradients of task_weight*CE + alpha*D(x, z).

    Args:
      x: (n, ...) inputs (client only); y: (n,) int labels (sent to the server).
      alpha, task_weight: loss weights (scalars, may be traced).
      noise_scale, noise_kind, key: the noise baseline, applied to what is sent.

    Returns:
      (client_grads, server_grads, aux) with aux = {"loss", "ce", "leak", "logits", "z"}.
    """
    z, client_vjp = client_forward(fns, client_params, x)
    z_sent = z if key is None else add_noise(z, key, noise_scale, noise_kind)
    ce, logits, server_grads, grad_z = server_step(fns, server_params, z_sent, y, task_weight)
    client_grads, leak = client_backward(client_vjp, x, z, grad_z, alpha, leakage_kind)
    aux = {
        "loss": task_weight * ce + alpha * leak,
        "ce": ce,
        "leak": leak,
        "logits": logits,
        "z": z_sent,
    }
    return client_grads, server_grads, aux


def end_to_end_loss(fns, client_params, server_params, x, y, *, alpha, task_weight=1.0, leakage_kind="dcor"):
    """The same loss as one function of both parameter sets (the reference for the protocol)."""
    z = fns.client_apply(client_params, x)
    return task_weight * cross_entropy(fns.server_apply(server_params, z), y) + alpha * leakage(
        x, z, leakage_kind
    )


# ---- what crosses the cut ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Message:
    """One tensor that crosses the cut in one step."""

    direction: str  # "client->server" or "server->client"
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


def transcript(fns: SplitFns, client_params, server_params, batch_shape, labels_to_server=True):
    """The messages of one training step for inputs of `batch_shape` (n, ...), from shapes only.

    Traces the same three functions the step runs (`client_forward`, `server_step`) with
    `jax.eval_shape`; nothing is computed.
    """
    n = batch_shape[0]
    x = jax.ShapeDtypeStruct(tuple(batch_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)
    z = jax.eval_shape(lambda p, xx: client_forward(fns, p, xx)[0], client_params, x)
    grad_z = jax.eval_shape(lambda p, zz, yy: server_step(fns, p, zz, yy, 1.0)[3], server_params, z, y)

    def msg(direction, name, s):
        size = 1
        for d in s.shape:
            size *= d
        return Message(direction, name, tuple(s.shape), str(s.dtype), size * s.dtype.itemsize)

    out = [msg("client->server", "z (cut activations)", z)]
    if labels_to_server:
        out.append(msg("client->server", "y (labels)", y))
    out.append(msg("server->client", "dL/dz (cut gradient)", grad_z))
    return out


def format_transcript(messages) -> str:
    """A small table of `transcript` messages, with the total bytes per step."""
    lines = [f"{'direction':16s} {'tensor':22s} {'shape':18s} {'dtype':8s} {'bytes':>10s}"]
    for m in messages:
        lines.append(f"{m.direction:16s} {m.name:22s} {str(m.shape):18s} {m.dtype:8s} {m.nbytes:>10d}")
    lines.append(f"{'total per step':58s} {sum(m.nbytes for m in messages):>17d}")
    return "\n".join(lines)


def per_sample_cut_gradients(fns: SplitFns, client_params, server_params, x, y) -> jax.Array:
    """The gradients dCE_i/dz_i the client receives for each sample i: (n, ...) like z.

    The server's batch loss is a mean, so row i of its dL/dz is dCE_i/dz_i / n; this
    returns the per-sample gradients (the rows times n), which is what the label-leakage
    attacks read.
    """
    z = fns.client_apply(client_params, x)
    _, _, _, grad_z = server_step(fns, server_params, z, y, 1.0)
    return grad_z * z.shape[0]
