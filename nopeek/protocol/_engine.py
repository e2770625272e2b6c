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
may change it before it goes back (`gradient`; the label defences). Two hooks reach past the
messages, each behind a flag so that a program without them is unchanged: a defence may own
parameters of its own, trained by the sender of each protected message with its own
optimiser (`has_parameters`: they sit at `params[sender]["defence"][message]`, the runner
passes them to `send`, `send_eval`, `send_mean` and to penalties that ask for them, and
returns their gradients with the party's; MID's bottleneck), and it may replace the data
holder's parameter gradients given each sample's contribution to them
(`privatises_parameters`: `parameter_gradients`; DP-SGD's clipping and noise). The engine
knows where defences act; what they do is `nopeek.defences`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from nopeek.errors import TopologyError
from nopeek.protocol._graph import Segment, Topology, segment_fn
from nopeek.protocol._losses import cross_entropy
from nopeek.protocol._transport import Transport, gradient_name


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A term `weight * P(source, m)` that the sender of protected message m adds to its loss.

    fn(source, m) -> scalar: source (n, ...) what m is compared with (the sender's raw
    inputs, or what a relay received), m (n, ...) the message before any transform.
    `name` tells the terms apart in the step's aux ("leak" is NoPeek's D(x, z)).
    parameters: fn takes a third argument, the defence's own parameters for m
      (`Defence.has_parameters`), and the sender trains them on the term too.
    """

    name: str
    weight: Any
    fn: Callable[..., jax.Array]
    parameters: bool = False


class Defence:
    """The hooks a defence may use inside one protocol step; each does nothing by default.

    Values a defence depends on (its strength, its random keys) are closed over and may be
    traced, so one compiled step serves a stack of models with different strengths.
    `transforms_messages` and `transforms_gradients` say whether `send`/`send_eval` and
    `gradient` do anything: when they are False the runner leaves those steps out of the
    program altogether. `has_parameters` and `privatises_parameters` (see the module
    docstring) likewise: the runner passes `params=` to the message hooks only when
    `has_parameters`, and computes per-sample gradients only when `privatises_parameters`.
    """

    transforms_messages: bool = False
    transforms_gradients: bool = False
    has_parameters: bool = False
    privatises_parameters: bool = False

    def send(self, message: str, index: int, z: jax.Array, replicas: int) -> jax.Array:
        """Training: protected message z (n, ...), or (N, n, ...) for N replicas, as sent.
        `index`: its position among the topology's protected messages. With
        `has_parameters` it is called with `params=` (this defence's parameters for it)."""
        return z

    def send_eval(self, message: str, index: int, z: jax.Array, sample_index: jax.Array, replicas: int) -> jax.Array:
        """Evaluation: as `send`, with sample i's randomness from `sample_index[i]` (n,)."""
        return z

    def send_mean(self, message: str, index: int, z: jax.Array, replicas: int) -> jax.Array:
        """The message without its random part (noise left out, a bottleneck's mean): the
        sender's function as a white-box attacker knows it, and what `forward` computes with
        a defence but no sample positions."""
        return z

    def init_parameters(self, message: str, sample_shape: tuple, key: jax.Array):
        """The parameters this defence owns for protected `message`, one sample of which has
        shape `sample_shape` (one replica's); called only when `has_parameters`."""
        return None

    def parameter_gradients(self, party: str, batch: Mapping[str, Any], per_sample: Callable[[], Mapping[str, Any]]):
        """The data holder `party`'s parameter gradients as it applies them, from
        `batch` ({segment: gradient of the batch loss}) and `per_sample()` ({segment: the same
        with a leading axis n, each sample's contribution; they sum to `batch`}; a function,
        so that a defence can compute them only where it uses them, e.g. inside a
        `lax.cond`); called only when `privatises_parameters`, for every party that holds raw
        inputs."""
        return batch

    def penalties(self, message: str) -> Sequence[Penalty]:
        """The terms the sender of protected `message` adds to its loss."""
        return ()

    def gradient(self, tensor: str, g: jax.Array, known: Mapping[str, jax.Array], index) -> jax.Array:
        """g = dL/d`tensor` (n, ...) as the party that computed it sends it back; `known` is
        what that party holds or received (its labels among them); `index` the replica of
        the producer the rows belong to (0 unless replicated)."""
        return g


def _with(part: Defence, params, name):
    """The keyword giving `part` its own parameters (none for a part without them)."""
    return {"params": params[name]} if part.has_parameters else {}


class Composite(Defence):
    """Several defences at once: messages and gradients pass through each in turn, penalties
    add up. The parameters of those that own some are `{name: theirs}` (`names`: one per
    part; default their positions)."""

    def __init__(self, parts: Sequence[Defence], names: Sequence[str] | None = None):
        self.parts = tuple(parts)
        self.names = tuple(names) if names is not None else tuple(str(i) for i in range(len(self.parts)))
        self.transforms_messages = any(p.transforms_messages for p in self.parts)
        self.transforms_gradients = any(p.transforms_gradients for p in self.parts)
        self.has_parameters = any(p.has_parameters for p in self.parts)
        self.privatises_parameters = any(p.privatises_parameters for p in self.parts)

    def send(self, message, index, z, replicas, params=None):
        for p, name in zip(self.parts, self.names):
            if p.transforms_messages:
                z = p.send(message, index, z, replicas, **_with(p, params, name))
        return z

    def send_eval(self, message, index, z, sample_index, replicas, params=None):
        for p, name in zip(self.parts, self.names):
            if p.transforms_messages:
                z = p.send_eval(message, index, z, sample_index, replicas, **_with(p, params, name))
        return z

    def send_mean(self, message, index, z, replicas, params=None):
        for p, name in zip(self.parts, self.names):
            if p.transforms_messages:
                z = p.send_mean(message, index, z, replicas, **_with(p, params, name))
        return z

    def init_parameters(self, message, sample_shape, key):
        return {name: p.init_parameters(message, sample_shape, jax.random.fold_in(key, i))
                for i, (p, name) in enumerate(zip(self.parts, self.names)) if p.has_parameters}

    def penalties(self, message):
        out = []
        for p, name in zip(self.parts, self.names):
            for term in p.penalties(message):
                if term.parameters:  # the term sees its own defence's share of the parameters
                    term = dataclasses.replace(term, fn=lambda x, m, q, fn=term.fn, name=name: fn(x, m, q[name]))
                out.append(term)
        return out

    def parameter_gradients(self, party, batch, per_sample):
        for p in self.parts:  # (DP-SGD refuses company; several would each see the same rows)
            if p.privatises_parameters:
                batch = p.parameter_gradients(party, batch, per_sample)
        return batch

    def gradient(self, tensor, g, known, index):
        for p in self.parts:
            if p.transforms_gradients:
                g = p.gradient(tensor, g, known, index)
        return g


NO_DEFENCE = Defence()


def _penalty(fn, x, m, replicated, params=None):
    """Sum over replicas of P(x_i, m_i) and its gradient in m; the per-replica values too.
    With `params` (a term that uses its defence's parameters): P(x_i, m_i, params_i), and
    the gradient is the pair (in m, in params)."""
    def per(mm, pp):
        args = (x, mm) if params is None else (x, mm, pp)
        return jax.vmap(fn)(*args) if replicated else fn(*args)

    def summed(mm, pp):
        values = per(mm, pp)  # traced once: the per-replica values are the aux of their own sum
        return jnp.sum(values), values

    argnums = 0 if params is None else (0, 1)
    (total, values), grad = jax.value_and_grad(summed, argnums=argnums, has_aux=True)(m, params)
    return total, values, grad


def _own(defence: Defence, params, party: str, message: str):
    """The defence's own parameters for `message` (None when it owns none)."""
    if not defence.has_parameters:
        return None
    return params[party]["defence"][message]


def _per_sample(fn, p, inputs, ct):
    """Each sample's contribution to the parameter gradient of segment `fn(p, *inputs)` under
    cotangent ct (n, ...): a pytree like p with a leading axis n, summing to the batch's."""
    def one(row_inputs, row_ct):
        _, vjp = jax.vjp(lambda q: fn(q, *[v[None] for v in row_inputs]), p)
        return vjp(row_ct[None])[0]

    return jax.vmap(one)(tuple(inputs), ct)  # a segment treats its samples independently


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
    private_segments: dict[int, tuple] = {}  # data holders' segments whose per-sample gradients a defence asks for

    def private(party: str) -> bool:
        if not defence.privatises_parameters or topo.raw_input(party) is None:
            return False
        if topo.party(party).replicas > 1:
            raise TopologyError(f"{topo.name}: per-sample parameter gradients (DP-SGD) need one data holder per "
                                f"sample; {party} has {topo.party(party).replicas} replicas")
        return True

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
        if private(seg.party):
            private_segments[i] = (fn, inputs)
        known[seg.party][seg.output] = out
        if seg.output in topo.protected:
            if not defence.transforms_messages:
                outgoing[seg.output] = (out, lambda ct: (ct, None))
            elif not defence.has_parameters:
                index, replicas = topo.protected.index(seg.output), topo.party(seg.party).replicas
                sent, vjp = jax.vjp(lambda z, m=seg.output, k=index, r=replicas: defence.send(m, k, z, r), out)
                outgoing[seg.output] = (sent, lambda ct, vjp=vjp: (*vjp(ct), None))
            else:
                index, replicas = topo.protected.index(seg.output), topo.party(seg.party).replicas
                outgoing[seg.output] = jax.vjp(
                    lambda z, q, m=seg.output, k=index, r=replicas: defence.send(m, k, z, r, params=q), out,
                    _own(defence, params, seg.party, seg.output))

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
    per_sample: dict = {}
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
            remote, g_own = outgoing[seg.output][1](remote if remote is not None else jnp.zeros_like(out))
            replicated = topo.party(seg.party).replicas > 1
            own = _own(defence, params, seg.party, seg.output)
            for term in defence.penalties(seg.output):
                x = known[seg.party][topo.penalty_source(seg.output)]
                term_sum, values, g_term = _penalty(term.fn, x, out, replicated, own if term.parameters else None)
                if term.parameters:
                    g_term, g_q = g_term
                    g_own = jax.tree.map(lambda a, b: a + term.weight * b, g_own, g_q)
                remote = remote + term.weight * g_term
                total = total + term.weight * term_sum
                aux["penalty"].setdefault(term.name, {})[seg.output] = values
                if term.name == "leak":
                    aux["leak"][seg.output] = values
            if own is not None:
                grads.setdefault(seg.party, {}).setdefault("defence", {})[seg.output] = g_own
        if remote is not None:
            ct = remote if ct is None else ct + remote
        if ct is None:
            ct = jnp.zeros_like(out)
        g_params, *g_inputs = vjps[i](ct)
        grads.setdefault(seg.party, {})[seg.name] = g_params
        if i in private_segments:
            fn, inputs = private_segments[i]
            per_sample.setdefault(seg.party, {})[seg.name] = (fn, params[seg.party][seg.name], inputs, ct)
        moving = [t for t in seg.inputs if t not in topo.data_keys()]
        for t, g in zip(moving, g_inputs):
            _add(cot[seg.party], t, g)
    for party, mine in per_sample.items():  # the data holders' gradients as they apply them (DP-SGD)
        batch = {name: grads[party][name] for name in mine}
        contributions = lambda mine=mine: {name: _per_sample(*args) for name, args in mine.items()}  # noqa: E731
        grads[party].update(defence.parameter_gradients(party, batch, contributions))
    aux["loss"] = total
    return grads, aux


def forward(topo: Topology, params, data, *, defence: Defence | None = None, sample_index=None):
    """Evaluation: every segment's output, with protected messages as sent: through the
    defence's `send_eval` (sample i's randomness from `sample_index[i]`) when a defence and
    sample positions are given, through its `send_mean` (no randomness) when a defence alone
    is given, else as computed.

    Returns:
      {tensor: value}: every data key, every segment output, and for protected messages the
      value as sent, which is also what the receiving segments used.
    """
    values = dict(data)
    transform = defence is not None and defence.transforms_messages
    for seg in topo.segments:
        out = segment_fn(topo, seg)(params[seg.party][seg.name], *[values[t] for t in seg.inputs])
        if seg.output in topo.protected and transform:
            index, replicas = topo.protected.index(seg.output), topo.party(seg.party).replicas
            own = {"params": _own(defence, params, seg.party, seg.output)} if defence.has_parameters else {}
            if sample_index is not None:
                out = defence.send_eval(seg.output, index, out, sample_index, replicas, **own)
            else:
                out = defence.send_mean(seg.output, index, out, replicas, **own)
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
            own = _own(defence, params, holder, m) if term.parameters else None
            total = total + term.weight * _penalty(term.fn, x, values[m], topo.party(holder).replicas > 1, own)[0]
    return total
