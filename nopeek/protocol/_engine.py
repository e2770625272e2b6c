"""The runner: one training step of any topology, party by party, and where defences act.

`protocol_gradients` goes forward in topological order with one `jax.vjp` per segment
(each party keeps its own closures), hands a party only the tensors addressed to it
(through a `Transport`), then goes backward in reverse order: a party sends back the
cotangent of each tensor it received, the producer sums cotangents of a tensor several
parties used, and a segment with several inputs splits its cotangent among them. Each
party ends with the gradients of its own parameters only.

A defence acts at the hooks of `Defence`, called by the runner where the protocol lets a
party act on its own: the sender of a protected message transforms it on its way out
(`send`; `send_eval` at evaluation), adds penalty terms `w * P(source, m)` to its loss
(`penalties`; NoPeek's `alpha * D(x, z)`), and a party that computed a gradient message
may change it before it goes back (`gradient`; the label defences). The engine knows where
defences act; what they do is `nopeek.defences`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from nopeek.protocol._graph import Segment, Topology, segment_fn
from nopeek.protocol._losses import cross_entropy
from nopeek.protocol._transport import Transport, gradient_name


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A term `weight * P(source, m)` that the sender of protected message m adds to its loss.

    fn(source, m) -> scalar: source (n, ...) what m is compared with (the sender's raw
    inputs, or what a relay received), m (n, ...) the message before any transform.
    `name` tells the terms apart in the step's aux ("leak" is NoPeek's D(x, z)).
    """

    name: str
    weight: Any
    fn: Callable[[jax.Array, jax.Array], jax.Array]


class Defence:
    """The hooks a defence may use inside one protocol step; each does nothing by default.

    Values a defence depends on (its strength, its random keys) are closed over and may be
    traced, so one compiled step serves a stack of models with different strengths.
    `transforms_messages` and `transforms_gradients` say whether `send`/`send_eval` and
    `gradient` do anything: when they are False the runner leaves those steps out of the
    program altogether.
    """

    transforms_messages: bool = False
    transforms_gradients: bool = False

    def send(self, message: str, index: int, z: jax.Array, replicas: int) -> jax.Array:
        """Training: protected message z (n, ...), or (N, n, ...) for N replicas, as sent.
        `index`: its position among the topology's protected messages."""
        return z

    def send_eval(self, message: str, index: int, z: jax.Array, sample_index: jax.Array, replicas: int) -> jax.Array:
        """Evaluation: as `send`, with sample i's randomness from `sample_index[i]` (n,)."""
        return z

    def penalties(self, message: str) -> Sequence[Penalty]:
        """The terms the sender of protected `message` adds to its loss."""
        return ()

    def gradient(self, tensor: str, g: jax.Array, known: Mapping[str, jax.Array], index) -> jax.Array:
        """g = dL/d`tensor` (n, ...) as the party that computed it sends it back; `known` is
        what that party holds or received (its labels among them); `index` the replica of
        the producer the rows belong to (0 unless replicated)."""
        return g


class Composite(Defence):
    """Several defences at once: messages and gradients pass through each in turn, penalties add up."""

    def __init__(self, parts: Sequence[Defence]):
        self.parts = tuple(parts)
        self.transforms_messages = any(p.transforms_messages for p in self.parts)
        self.transforms_gradients = any(p.transforms_gradients for p in self.parts)

    def send(self, message, index, z, replicas):
        for p in self.parts:
            if p.transforms_messages:
                z = p.send(message, index, z, replicas)
        return z

    def send_eval(self, message, index, z, sample_index, replicas):
        for p in self.parts:
            if p.transforms_messages:
                z = p.send_eval(message, index, z, sample_index, replicas)
        return z

    def penalties(self, message):
        return [term for p in self.parts for term in p.penalties(message)]

    def gradient(self, tensor, g, known, index):
        for p in self.parts:
            if p.transforms_gradients:
                g = p.gradient(tensor, g, known, index)
        return g


NO_DEFENCE = Defence()


def _penalty(fn, x, m, replicated):
    """Sum over replicas of P(x_i, m_i) and its gradient in m; the per-replica values too."""
    if replicated:
        per = lambda mm: jax.vmap(fn)(x, mm)  # noqa: E731
    else:
        per = lambda mm: fn(x, mm)  # noqa: E731
    (total, values), grad = jax.value_and_grad(lambda mm: (jnp.sum(per(mm)), per(mm)), has_aux=True)(m)
    return total, values, grad


def _add(store: dict, key: str, value) -> None:
    store[key] = value if key not in store else store[key] + value


def _transformed(defence: Defence, topo: Topology, seg: Segment, g, known):
    """The defence's gradient hook on the gradient message of `seg.output`, per replica of its producer."""
    replicas = topo.party(seg.party).replicas
    if replicas == 1:
        return defence.gradient(seg.output, g, known, 0)
    return jax.vmap(lambda gi, i: defence.gradient(seg.output, gi, known, i))(g, jnp.arange(replicas))


def protocol_gradients(
    topo: Topology,
    params,
    data: Mapping[str, jax.Array],
    *,
    defence: Defence | None = None,
    task_weight=1.0,
    transport: Transport | None = None,
):
    """One step of the protocol: every party's gradients of the total loss.

    Args:
      topo: the topology.
      params: `{party: {segment: State}}` (leading axis N for replicated parties).
      data: `{key: array}` for every key some party holds: "x" (n, ...) or, for a
        replicated holder, (N, n, ...) slices; labels (n,) int.
      defence: what the parties do to protect their data (`nopeek.defences`); None: nothing,
        plain split learning.
      task_weight: weight of the task losses (scalar, may be traced).
      transport: carries the messages (default: hand over; `Recorder` writes them down).

    Returns:
      (grads, aux): grads shaped like params; aux = {"loss": scalar, "ce": {labels: scalar},
      "mean": {tensor: scalar} (mean losses), "leak": {message: scalar or (N,)} (the
      penalty terms named "leak", NoPeek's D(x, z), unweighted), "penalty": {name: {message:
      values}} (every penalty term), "logits": {labels: (n, classes)}}.
    """
    defence = defence or NO_DEFENCE
    transport = transport or Transport()
    known = {p.name: {k: data[k] for k in p.holds} for p in topo.parties}
    outgoing: dict[str, tuple] = {}  # protected tensor -> (value as sent, vjp of the transform)
    vjps = {}

    def fetch(party: str, tensor: str):
        if tensor not in known[party]:
            src = topo.producer(tensor)
            value = outgoing[tensor][0] if tensor in outgoing else known[src][tensor]
            known[party][tensor] = transport.send(topo, src, party, tensor, value)
        return known[party][tensor]

    for i, seg in enumerate(topo.segments):
        inputs = [fetch(seg.party, t) for t in seg.inputs]
        diff = [t not in topo.data_keys() for t in seg.inputs]
        fn = segment_fn(topo, seg)

        def closed(p, *moving, inputs=inputs, diff=diff, fn=fn):
            it = iter(moving)
            return fn(p, *[next(it) if d else v for v, d in zip(inputs, diff)])

        out, vjps[i] = jax.vjp(closed, params[seg.party][seg.name], *[v for v, d in zip(inputs, diff) if d])
        known[seg.party][seg.output] = out
        if seg.output in topo.protected:
            if not defence.transforms_messages:
                outgoing[seg.output] = (out, lambda ct: (ct,))
            else:
                index, replicas = topo.protected.index(seg.output), topo.party(seg.party).replicas
                outgoing[seg.output] = jax.vjp(
                    lambda z, m=seg.output, k=index, r=replicas: defence.send(m, k, z, r), out)

    cot = {p.name: {} for p in topo.parties}
    aux = {"ce": {}, "mean": {}, "leak": {}, "penalty": {}, "logits": {}}
    total = jnp.zeros((), jnp.float32)
    for loss in topo.losses:
        logits = known[loss.party][loss.logits]
        weight = task_weight * loss.weight
        if loss.kind == "mean":
            value, g = jax.value_and_grad(jnp.mean)(logits)
            aux["mean"][loss.logits] = value
        else:
            labels = fetch(loss.party, loss.labels)
            value, g = jax.value_and_grad(cross_entropy)(logits, labels)
            aux["ce"][loss.labels], aux["logits"][loss.labels] = value, logits
        _add(cot[loss.party], loss.logits, weight * g)
        total = total + weight * value

    grads: dict = {}
    for i in reversed(range(len(topo.segments))):
        seg = topo.segments[i]
        out = known[seg.party][seg.output]
        ct = cot[seg.party].pop(seg.output, None)
        remote = None
        for receiver in topo.consumers(seg.output):
            if receiver != seg.party:
                g = cot[receiver].pop(seg.output)
                if defence.transforms_gradients:
                    g = _transformed(defence, topo, seg, g, known[receiver])
                g = transport.send(topo, receiver, seg.party, gradient_name(seg.output), g)
                remote = g if remote is None else remote + g
        if seg.output in outgoing:
            (remote,) = outgoing[seg.output][1](remote if remote is not None else jnp.zeros_like(out))
            replicated = topo.party(seg.party).replicas > 1
            for term in defence.penalties(seg.output):
                x = known[seg.party][topo.penalty_source(seg.output)]
                term_sum, values, g_term = _penalty(term.fn, x, out, replicated)
                remote = remote + term.weight * g_term
                total = total + term.weight * term_sum
                aux["penalty"].setdefault(term.name, {})[seg.output] = values
                if term.name == "leak":
                    aux["leak"][seg.output] = values
        if remote is not None:
            ct = remote if ct is None else ct + remote
        if ct is None:
            ct = jnp.zeros_like(out)
        g_params, *g_inputs = vjps[i](ct)
        grads.setdefault(seg.party, {})[seg.name] = g_params
        moving = [t for t in seg.inputs if t not in topo.data_keys()]
        for t, g in zip(moving, g_inputs):
            _add(cot[seg.party], t, g)
    aux["loss"] = total
    return grads, aux


def forward(topo: Topology, params, data, *, defence: Defence | None = None, sample_index=None):
    """Evaluation: every segment's output, with protected messages as sent: through the
    defence's `send_eval` (sample i's randomness from `sample_index[i]`) when a defence and
    sample positions are given, else as computed.

    Returns:
      {tensor: value}: every data key, every segment output, and for protected messages the
      value as sent, which is also what the receiving segments used.
    """
    values = dict(data)
    transform = defence is not None and defence.transforms_messages and sample_index is not None
    for seg in topo.segments:
        out = segment_fn(topo, seg)(params[seg.party][seg.name], *[values[t] for t in seg.inputs])
        if seg.output in topo.protected and transform:
            out = defence.send_eval(seg.output, topo.protected.index(seg.output), out, sample_index,
                                    topo.party(seg.party).replicas)
        values[seg.output] = out
    return values


def end_to_end_loss(topo: Topology, params, data, *, defence: Defence | None = None, task_weight=1.0):
    """The same total loss as `protocol_gradients`, as one function of all parameters (no
    message transforms): the reference its gradients must equal."""
    defence = defence or NO_DEFENCE
    values = forward(topo, params, data)
    total = jnp.zeros((), jnp.float32)
    for loss in topo.losses:
        value = (jnp.mean(values[loss.logits]) if loss.kind == "mean"
                 else cross_entropy(values[loss.logits], values[loss.labels]))
        total = total + task_weight * loss.weight * value
    for m in topo.protected:
        holder = topo.producer(m)
        # The sender compares m with a constant to it (raw data, or what a relay received).
        x = jax.lax.stop_gradient(values[topo.penalty_source(m)])
        for term in defence.penalties(m):
            total = total + term.weight * _penalty(term.fn, x, values[m], topo.party(holder).replicas > 1)[0]
    return total
