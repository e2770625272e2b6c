"""The protocol engine: every split-learning configuration is a graph of parties, and one
runner executes a training step of any of them.

A `Topology` holds
  - parties: each with a name, the data it holds (raw inputs "x", labels "y", task
    labels "y_parity", ...) and a replica count (N identical parties, e.g. the clients of
    a vertical split, whose parameters are stacked and run as one vmapped program);
  - segments: model pieces, each run by one party: `output = module(merge(inputs))`;
  - losses: cross-entropy at the party that computes the logits (the labels are
    delivered to it as a message when another party holds them), or the batch mean of a
    tensor with no labels at all (`Loss(kind="mean")`: a critic's score, the loss a
    malicious server trains the client on in `nopeek.fsha`);
  - protected messages: what a data holder sends computed from its raw inputs. The
    NoPeek penalty `alpha * D(x_p, m)` is added by that holder to the cotangent it gets
    back for m, and the noise defence is applied to m on its way out. A relay may
    protect its message too, against what it received (`penalty_sources`).

The runner (`protocol_gradients`) goes forward in topological order with one `jax.vjp`
per segment (each party keeps its own closures), hands a party only the tensors
addressed to it (through a `Transport`), then goes backward in reverse order: a party
sends back the cotangent of each tensor it received, the producer sums cotangents of a
tensor several parties used, and a segment with several inputs splits its cotangent
among them. Each party ends with the gradients of its own parameters only. A
`gradient_transform` lets the party that computed a gradient message change it before it
is sent (the label defences of `nopeek.label_defences` perturb the rows of dL/dz there).

The transcript of a step (`transcript`) runs the same function under `jax.eval_shape`
with a recording transport: every message with sender, receiver, tensor, shape, dtype
and bytes, in the order sent; nothing is computed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nopeek.defences import add_noise, add_noise_per_sample
from nopeek.losses import cross_entropy, leakage

MERGES = ("concat", "sum", "mean")
LOSS_KINDS = ("ce", "mean")


class TopologyError(ValueError):
    """A topology that is not a valid protocol (a raw input crossing, a cycle, a bad merge...)."""


@dataclasses.dataclass(frozen=True)
class Party:
    """A participant: its name, the data keys it holds, and how many identical replicas."""

    name: str
    holds: tuple[str, ...] = ()
    replicas: int = 1

    def member_names(self) -> list[str]:
        """The names of the individual parties: `name` alone, or name1..nameN for replicas."""
        return [self.name] if self.replicas == 1 else [f"{self.name}{i + 1}" for i in range(self.replicas)]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A model piece run by `party`: `output = module(merge(inputs))`, one output tensor.

    `inputs` name data keys the party holds or tensors other segments produce; several
    inputs, or one stacked input from a replicated party, are combined by `merge`.
    """

    party: str
    name: str
    inputs: tuple[str, ...]
    output: str
    merge: str | None = None


@dataclasses.dataclass(frozen=True)
class Loss:
    """A weighted loss on tensor `logits` of `party`: kind "ce", the cross-entropy against the
    label key `labels`; kind "mean", the mean of the tensor over the batch and its other
    axes, with no labels (`labels` None): a critic's score D(z) to be minimised."""

    party: str
    logits: str
    labels: str | None = None
    weight: float = 1.0
    kind: str = "ce"


@dataclasses.dataclass(frozen=True)
class Handoff:
    """A message sent between turns rather than in a step (round robin's client weights)."""

    sender: str
    receiver: str
    tensor: str
    party: str  # whose parameters (and optimiser state) are handed on


@dataclasses.dataclass(frozen=True)
class Message:
    """One tensor that crosses from one party to another."""

    sender: str
    receiver: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    per: str = "step"  # "step", or "turn" for hand-offs between turns


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """A split-learning configuration as a graph of parties (see the module docstring).

    `graphdefs[(party, segment)]` is the Flax NNX graph of each segment; parameters live
    outside, as `params[party][segment]` (leading axis N for a party with N replicas).
    """

    name: str
    parties: tuple[Party, ...]
    segments: tuple[Segment, ...]
    losses: tuple[Loss, ...]
    protected: tuple[str, ...]
    graphdefs: Mapping[tuple[str, str], Any]
    handoffs: tuple[Handoff, ...] = ()
    penalty_sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    replica_mode: str = "vmap"  # how a replicated party's segments run: "vmap", or "map" (unrolled)

    def __post_init__(self):
        self._check()

    # ---- structure ------------------------------------------------------------

    def party(self, name: str) -> Party:
        for p in self.parties:
            if p.name == name:
                return p
        raise TopologyError(f"{self.name}: no party named {name!r}")

    def data_keys(self) -> set[str]:
        return {k for p in self.parties for k in p.holds}

    def producer(self, tensor: str) -> str:
        """The party that computes `tensor`, or that holds it if it is data."""
        for s in self.segments:
            if s.output == tensor:
                return s.party
        for p in self.parties:
            if tensor in p.holds:
                return p.name
        raise TopologyError(f"{self.name}: nothing produces {tensor!r}")

    def consumers(self, tensor: str) -> list[str]:
        """Parties that use `tensor` (as a segment input or a loss's logits), in order, once each."""
        users = [s.party for s in self.segments if tensor in s.inputs]
        users += [loss.party for loss in self.losses if loss.logits == tensor]
        return list(dict.fromkeys(users))

    def penalty_source(self, message: str) -> str:
        """What the NoPeek term of protected `message` compares it with: its sender's raw
        inputs, or (for a relay) the tensor it received (`penalty_sources`)."""
        return self.penalty_sources.get(message) or self.raw_input(self.producer(message))

    def raw_input(self, party: str) -> str | None:
        """The raw-input key ("x") a party holds, if any."""
        keys = [k for k in self.party(party).holds if is_raw_input(k)]
        return keys[0] if keys else None

    def messages(self) -> list[tuple[str, str, str]]:
        """Forward activation messages: (sender, receiver, tensor) for every tensor a segment
        produces that another party uses."""
        out = []
        for s in self.segments:
            for r in self.consumers(s.output):
                if r != s.party:
                    out.append((s.party, r, s.output))
        return out

    def upstream_inputs(self, tensor: str) -> set[str]:
        """The raw-input keys `tensor` is computed from (transitively)."""
        if is_raw_input(tensor):
            return {tensor}
        for s in self.segments:
            if s.output == tensor:
                found = set()
                for t in s.inputs:
                    found |= self.upstream_inputs(t)
                return found
        return set()

    def _check(self) -> None:
        names = [p.name for p in self.parties]
        if len(set(names)) != len(names):
            raise TopologyError(f"{self.name}: party names must be unique, got {names}")
        data = self.data_keys()
        known = set(data)
        for s in self.segments:
            p = self.party(s.party)
            if (s.party, s.name) not in self.graphdefs:
                raise TopologyError(f"{self.name}: segment {s.party}/{s.name} has no model")
            for t in s.inputs:
                if t not in known:
                    raise TopologyError(f"{self.name}: segment {s.party}/{s.name} uses {t!r} before it exists")
                if t in data and t not in p.holds and is_raw_input(t):
                    raise TopologyError(f"{self.name}: raw inputs {t!r} may not leave their holder ({s.party} uses them)")
                src = self.party(self.producer(t))
                if p.replicas > 1 and src.name != p.name:
                    raise TopologyError(f"{self.name}: replicated party {p.name} may only use its own tensors")
                if src.replicas > 1 and p.replicas == 1 and s.merge is None:
                    raise TopologyError(f"{self.name}: {s.party}/{s.name} receives {t!r} from {src.replicas} "
                                        "replicas and needs a merge")
            if s.merge is not None and s.merge not in MERGES:
                raise TopologyError(f"merge must be one of {', '.join(MERGES)}, got {s.merge!r}")
            if s.output in known:
                raise TopologyError(f"{self.name}: tensor {s.output!r} is produced twice")
            known.add(s.output)
        for loss in self.losses:
            if loss.kind not in LOSS_KINDS:
                raise TopologyError(f"{self.name}: loss kind must be one of {', '.join(LOSS_KINDS)}, got {loss.kind!r}")
            if loss.kind == "mean" and loss.labels is not None:
                raise TopologyError(f"{self.name}: a mean loss takes no labels, got {loss.labels!r}")
            if loss.kind == "ce" and loss.labels not in data:
                raise TopologyError(f"{self.name}: loss labels {loss.labels!r} are held by no party")
            if self.producer(loss.logits) != loss.party:
                raise TopologyError(f"{self.name}: the loss on {loss.logits!r} must sit with the party computing it")
        for m in self.protected:
            source = self.penalty_sources.get(m)
            if source is None and self.raw_input(self.producer(m)) is None:
                raise TopologyError(f"{self.name}: protected message {m!r} is not sent by a data holder")
            if source is not None and not any(s.output == m and source in s.inputs for s in self.segments):
                raise TopologyError(f"{self.name}: the penalty of {m!r} must use an input of the segment sending it")


def is_raw_input(key: str) -> bool:
    """Raw-input data keys are "x" or start with "x_"; they never leave their holder."""
    return key == "x" or key.startswith("x_")


# ---- applying segments ------------------------------------------------------------


def _merge(inputs, stacked, how):
    """Combine a segment's inputs: each stacked input (N, n, ...) counts as N sources."""
    sources = []
    for value, is_stacked in zip(inputs, stacked):
        sources += [value[i] for i in range(value.shape[0])] if is_stacked else [value]
    if len(sources) == 1:
        return sources[0]
    if how == "concat":
        return jnp.concatenate(sources, axis=-1)
    if how == "sum":
        return sum(sources[1:], sources[0])
    if how == "mean":
        return sum(sources[1:], sources[0]) / len(sources)
    raise TopologyError(f"several inputs need a merge ({', '.join(MERGES)})")


def segment_fn(topo: Topology, seg: Segment):
    """`f(params, *inputs) -> output` of one segment (vmapped over replicas for a replicated party)."""
    graphdef = topo.graphdefs[(seg.party, seg.name)]
    party = topo.party(seg.party)
    stacked = [party.replicas == 1 and topo.party(topo.producer(t)).replicas > 1 for t in seg.inputs]

    def run(params, *inputs):
        return nnx.merge(graphdef, params)(_merge(inputs, stacked, seg.merge))

    if party.replicas > 1 and topo.replica_mode == "vmap":
        return jax.vmap(run)
    if party.replicas > 1:  # unrolled: XLA:CPU runs vmapped (grouped) convolutions 10-20x slower

        def unrolled(params, *inputs):
            outs = [run(jax.tree.map(lambda a: a[r], params), *[a[r] for a in inputs]) for r in range(party.replicas)]
            return jnp.stack(outs)

        return unrolled
    return run


# ---- transports -----------------------------------------------------------------


class Transport:
    """Carries a tensor from one party to another. This one hands it over unchanged."""

    def send(self, topo: Topology, sender: str, receiver: str, tensor: str, value):
        return value


class Recorder(Transport):
    """A transport that writes down every message (expanding replicated parties)."""

    def __init__(self):
        self.messages: list[Message] = []

    def send(self, topo, sender, receiver, tensor, value):
        s, r = topo.party(sender), topo.party(receiver)
        stacked = max(s.replicas, r.replicas) > 1
        shape = tuple(value.shape[1:]) if stacked else tuple(value.shape)
        dtype = jnp.dtype(value.dtype)
        size = int(dtype.itemsize) * math.prod(shape)
        senders, receivers = s.member_names(), r.member_names()
        pairs = zip(senders, receivers) if len(senders) == len(receivers) else (
            [(a, receivers[0]) for a in senders] if len(receivers) == 1 else [(senders[0], b) for b in receivers]
        )
        for a, b in pairs:
            self.messages.append(Message(a, b, tensor, shape, str(dtype), size))
        return value


class Capture(Transport):
    """A transport that keeps the values of the messages named in `tensors` (e.g. "dz")."""

    def __init__(self, tensors):
        self.tensors = set(tensors)
        self.values: dict[str, Any] = {}

    def send(self, topo, sender, receiver, tensor, value):
        if tensor in self.tensors:
            self.values[tensor] = value
        return value


class Log(Transport):
    """A transport that keeps every message with its value, in the order sent: `log` is a
    list of (sender, receiver, tensor, value as a NumPy array). For inspection and tests;
    values are concrete, so use it outside `jax.jit`."""

    def __init__(self):
        self.log: list[tuple[str, str, str, Any]] = []

    def send(self, topo, sender, receiver, tensor, value):
        self.log.append((sender, receiver, tensor, np.asarray(value)))
        return value


def gradient_name(tensor: str) -> str:
    """The name of the message carrying the loss gradient of `tensor` back to its producer."""
    return f"dL/d{tensor}"


# ---- the runner -------------------------------------------------------------------


def _penalty(x, m, kind, replicated):
    """Sum over replicas of D(x_i, m_i) and its gradient in m; the per-replica values too."""
    if replicated:
        per = lambda mm: jax.vmap(lambda a, b: leakage(a, b, kind))(x, mm)  # noqa: E731
    else:
        per = lambda mm: leakage(x, mm, kind)  # noqa: E731
    (total, values), grad = jax.value_and_grad(lambda mm: (jnp.sum(per(mm)), per(mm)), has_aux=True)(m)
    return total, values, grad


def _add(store: dict, key: str, value) -> None:
    store[key] = value if key not in store else store[key] + value


def _transformed(fn, topo: Topology, seg: Segment, g, known):
    """`fn` applied to the gradient message of `seg.output`, per replica of its producer."""
    replicas = topo.party(seg.party).replicas
    if replicas == 1:
        return fn(seg.output, g, known, 0)
    return jax.vmap(lambda gi, i: fn(seg.output, gi, known, i))(g, jnp.arange(replicas))


def protocol_gradients(
    topo: Topology,
    params,
    data: Mapping[str, jax.Array],
    *,
    alpha,
    task_weight=1.0,
    leakage_kind: str | None = "dcor",
    noise_scale=0.0,
    noise_kind: str = "gaussian",
    key=None,
    transport: Transport | None = None,
    gradient_transform=None,
):
    """One step of the protocol: every party's gradients of the total loss.

    Args:
      topo: the topology.
      params: `{party: {segment: State}}` (leading axis N for replicated parties).
      data: `{key: array}` for every key some party holds: "x" (n, ...) or, for a
        replicated holder, (N, n, ...) slices; labels (n,) int.
      alpha, task_weight: loss weights (scalars, may be traced).
      leakage_kind: "dcor" or "log_dcor"; None computes no penalty at all (plain split learning).
      noise_scale, noise_kind, key: the noise defence on protected messages; key None = off.
      transport: carries the messages (default: hand over; `Recorder` writes them down).
      gradient_transform: optional `f(tensor, g, known, index) -> g'`, called by the party
        that computed the gradient message g = dL/d`tensor` before it sends it back (so it
        changes only what the producer receives, and gradients no longer equal autodiff's):
        `known` is everything that party holds or has received (its labels among them),
        `index` the replica of the producer the rows belong to (0 unless replicated; the
        function is vmapped over replicas). None: gradients are sent as computed.

    Returns:
      (grads, aux): grads shaped like params; aux = {"loss": scalar, "ce": {labels: scalar},
      "mean": {tensor: scalar} (mean losses), "leak": {message: scalar or (N,)},
      "logits": {labels: (n, classes)}}.
    """
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
            if key is None:
                outgoing[seg.output] = (out, lambda ct: (ct,))
            else:
                k = jax.random.fold_in(key, topo.protected.index(seg.output))
                outgoing[seg.output] = jax.vjp(lambda z: add_noise(z, k, noise_scale, noise_kind), out)

    cot = {p.name: {} for p in topo.parties}
    aux = {"ce": {}, "mean": {}, "leak": {}, "logits": {}}
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
                if gradient_transform is not None:
                    g = _transformed(gradient_transform, topo, seg, g, known[receiver])
                g = transport.send(topo, receiver, seg.party, gradient_name(seg.output), g)
                remote = g if remote is None else remote + g
        if seg.output in outgoing:
            (remote,) = outgoing[seg.output][1](remote if remote is not None else jnp.zeros_like(out))
            if leakage_kind is not None:
                x = known[seg.party][topo.penalty_source(seg.output)]
                leak_sum, leak, g_leak = _penalty(x, out, leakage_kind, topo.party(seg.party).replicas > 1)
                remote = remote + alpha * g_leak
                total = total + alpha * leak_sum
                aux["leak"][seg.output] = leak
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


def forward(topo: Topology, params, data, *, noise_scale=0.0, noise_kind="gaussian", key=None, sample_index=None):
    """Evaluation: every segment's output and the protected messages as sent (test-time noise
    per sample when `key` is given: sample i from `fold_in(key, sample_index[i])`).

    Returns:
      {tensor: value}: every data key, every segment output, and for protected messages the
      value as sent (noise included), which is also what the receiving segments used.
    """
    values = dict(data)
    for seg in topo.segments:
        out = segment_fn(topo, seg)(params[seg.party][seg.name], *[values[t] for t in seg.inputs])
        if seg.output in topo.protected and key is not None:
            k = jax.random.fold_in(key, topo.protected.index(seg.output))
            if topo.party(seg.party).replicas > 1:
                ks = jax.vmap(lambda r: jax.random.fold_in(k, r))(jnp.arange(out.shape[0]))
                out = jax.vmap(lambda o, kk: add_noise_per_sample(o, kk, noise_scale, noise_kind, sample_index))(out, ks)
            else:
                out = add_noise_per_sample(out, k, noise_scale, noise_kind, sample_index)
        values[seg.output] = out
    return values


def end_to_end_loss(topo: Topology, params, data, *, alpha, task_weight=1.0, leakage_kind="dcor"):
    """The same total loss as `protocol_gradients`, as one function of all parameters (no noise):
    the reference its gradients must equal."""
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
        total = total + alpha * _penalty(x, values[m], leakage_kind, topo.party(holder).replicas > 1)[0]
    return total


def transcript(topo: Topology, params, data_shapes: Mapping[str, jax.ShapeDtypeStruct], handoff_state=None) -> list[Message]:
    """The messages of one training step for a batch of the given shapes, in the order sent,
    then the per-turn hand-offs (their bytes: `handoff_state[party]`, e.g. weights and
    optimiser state, or the party's parameters). From shapes only; nothing is computed."""
    recorder = Recorder()
    jax.eval_shape(lambda p, d: protocol_gradients(topo, p, d, alpha=1.0, transport=recorder), params, data_shapes)
    out = list(recorder.messages)
    for h in topo.handoffs:
        state = (handoff_state or {}).get(h.party, params[h.party])
        leaves = jax.tree.leaves(state)
        size = sum(int(leaf.size) * jnp.dtype(leaf.dtype).itemsize for leaf in leaves)
        out.append(Message(h.sender, h.receiver, h.tensor, (sum(int(leaf.size) for leaf in leaves),), "float32", size, "turn"))
    return out


def format_transcript(messages) -> str:
    """A small table of transcript messages, with the total bytes per step."""
    width = max([22] + [len(m.tensor) for m in messages])
    lines = [f"{'sender':10s} {'receiver':10s} {'tensor':{width}s} {'shape':18s} {'dtype':8s} {'bytes':>10s} per"]
    for m in messages:
        lines.append(f"{m.sender:10s} {m.receiver:10s} {m.tensor:{width}s} {str(m.shape):18s} {m.dtype:8s} {m.bytes:>10d} {m.per}")
    step_bytes = sum(m.bytes for m in messages if m.per == "step")
    lines.append(f"{'total per step':{50 + width}s} {step_bytes:>10d}")
    return "\n".join(lines)
