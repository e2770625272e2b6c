"""What one training step of a model costs each party: FLOPs from compiled programs, bytes
from the protocol transcript. Shapes only: nothing is initialised or trained.

`split_profile` builds a topology of the engine abstractly (its parameters are
`jax.ShapeDtypeStruct`s from `jax.eval_shape`) and, for one batch, compiles for every party
  - each of its segments' forward, and forward + backward (`jax.vjp`, the output's
    cotangent an input; gradients of the parameters and of every input that is not data);
  - the cross-entropy and its gradient where its labels sit;
  - optionally the NoPeek term `D(x, m)` and its gradient where its raw data sits;
and reads the FLOPs of each from XLA's cost analysis. The transcript of the same step
(`nopeek.engine.transcript`) gives what each party sends and receives. `whole_profile`
does the same for the unsplit model: the step of a federated-learning or large-batch SGD
client (its forward, backward and loss).

What XLA counts (`HloCostAnalysis`; checked in tests/test_cost.py on jax 0.10.2, CPU):
a multiply-add is 2 FLOPs; elementwise ops count too, 1 per element (bias add, ReLU,
normalisation), as do reductions (a bias gradient: (n - 1) * d adds); a convolution
counts only the kernel taps that fall inside the input, so SAME padding's zeros are free;
transcendentals (exp, log of the softmax) are counted apart and left out. No optimiser
update is counted (about 10 FLOPs per parameter per step with Adam).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
from flax import nnx

from nopeek.errors import ModelError
from nopeek.protocol import (
    Message, Setup, build, build_segment, cross_entropy, forward, leakage, model_blocks, segment_fn, transcript,
)

OPTIMIZER_STATES = ("none", "sgd", "adam")


@dataclasses.dataclass(frozen=True)
class PartyCost:
    """One member of a party (one client of N replicas) for one step of `batch` samples.

    forward_flops: its segments' (and loss's) forward; step_flops: forward + backward of
    everything it computes in the step. sent / received: its step messages; handoffs: the
    per-turn messages it sends or receives (round robin's client weights).
    step_seconds: measured wall time of its compiled step programs (None if not measured).
    """

    name: str
    replicas: int
    params: int
    forward_flops: float
    step_flops: float
    sent: tuple[Message, ...] = ()
    received: tuple[Message, ...] = ()
    handoffs: tuple[Message, ...] = ()
    step_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Profile:
    """Per-step costs of every party of a topology (or of the whole model) at one batch size."""

    label: str
    batch: int
    parties: tuple[PartyCost, ...]
    client: str  # the data holder, the party the cost table is about
    messages: tuple[Message, ...] = ()

    def party(self, name: str) -> PartyCost:
        return next(p for p in self.parties if p.name == name)

    @property
    def data_holder(self) -> PartyCost:
        return self.party(self.client)


def compiled_flops(fn, *args):
    """(FLOPs, compiled executable) of `jax.jit(fn)` for (abstract) arguments, from XLA's cost analysis."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0)), compiled


def _count(tree) -> int:
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _materialise(tree, seed: int = 0):
    """Concrete arrays for abstract leaves: small normal floats, zero integers (for timing)."""
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for i, leaf in enumerate(leaves):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            out.append(0.05 * jax.random.normal(jax.random.key(seed + i), leaf.shape, leaf.dtype))
        else:
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
    return jax.tree.unflatten(treedef, out)


def _seconds(compiled, args, budget: float = 0.5) -> float:
    """Median wall time of `compiled(*args)` after a warm-up call: at least 3 runs, more while under `budget` s."""
    jax.block_until_ready(compiled(*args))
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 50):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _program(fn, args, measure: bool):
    """(flops, seconds or None) of one program."""
    flops, compiled = compiled_flops(fn, *args)
    return flops, (_seconds(compiled, _materialise(args)) if measure else None)


def _segment_programs(topo, seg, params, values, measure):
    """(forward flops, forward + backward flops, seconds of the latter) of one segment."""
    fn = segment_fn(topo, seg)
    inputs = [values[t] for t in seg.inputs]
    moving = [t not in topo.data_keys() for t in seg.inputs]

    def step(p, ct, *ins):
        def closed(p, *m):
            it = iter(m)
            return fn(p, *[next(it) if d else v for v, d in zip(ins, moving)])

        out, vjp = jax.vjp(closed, p, *[v for v, d in zip(ins, moving) if d])
        return out, vjp(ct)

    p = params[seg.party][seg.name]
    fwd, _ = compiled_flops(fn, p, *inputs)
    total, seconds = _program(step, (p, values[seg.output], *inputs), measure)
    return fwd, total, seconds


def _loss_programs(logits, labels, measure):
    fwd, _ = compiled_flops(cross_entropy, logits, labels)
    total, seconds = _program(jax.value_and_grad(cross_entropy), (logits, labels), measure)
    return fwd, total, seconds


def _nopeek_programs(x, m, kind, replicated, measure):
    def term(xx, mm):
        if replicated:
            return jnp.sum(jax.vmap(lambda a, b: leakage(a, b, kind))(xx, mm))
        return leakage(xx, mm, kind)

    fwd, _ = compiled_flops(term, x, m)
    total, seconds = _program(jax.value_and_grad(term, argnums=1), (x, m), measure)
    return fwd, total, seconds


def _shapes_of(make, model: str, input_shape):
    """`jax.eval_shape(make)`; a model whose blocks shrink the samples to nothing is a ModelError."""
    try:
        return jax.eval_shape(make)
    except ZeroDivisionError as err:  # a Dense initialiser on an empty input
        raise ModelError(f"model {model!r} cannot take samples of shape {tuple(input_shape)}: "
                         "a block's input is empty (the image is too small for its pooling)") from err


def abstract_topology(topology: str, setup: Setup):
    """(Built, abstract params) without initialising anything: the builder runs under
    `jax.eval_shape`, so its parameters are shapes (the graph definitions are static)."""
    holder = {}

    def make():
        holder["built"] = build(topology, setup)
        return holder["built"].init(0)

    params = _shapes_of(make, setup.model, setup.input_shape)
    return holder["built"], params


def _handoff_state(params, optimizer: str):
    if optimizer == "none":
        return None
    from nopeek.training import make_optimizer

    opt = make_optimizer(optimizer, 1e-3)
    return {p: jax.eval_shape(lambda q: (q, opt.init(q)), params[p]) for p in params}


@functools.lru_cache(maxsize=64)
def split_profile(topology: str, setup: Setup, batch: int, *, nopeek: str | None = None,
                  handoff_optimizer: str = "adam", measure: bool = False, flops_for: str = "all") -> Profile:
    """Per-step costs of every party of `topology` built for `setup`, at `batch` samples
    (cached: the 64 most recent calls; a cost report asks for the same profile per client count).

    nopeek: None, or the leakage kind ("dcor", "log_dcor") whose term the data holder adds.
    handoff_optimizer: the optimiser state handed on with the client weights ("none": weights only).
    flops_for: compile the programs of "all" parties, only the data "holder"'s, or "none"
      (bytes and parameters only; FLOPs NaN). Cached: the same arguments compile once per process.
    """
    built, params = abstract_topology(topology, setup)
    topo = built.topology
    x = jax.ShapeDtypeStruct((batch, *setup.input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    data = jax.eval_shape(built.prepare, x, y)
    values = jax.eval_shape(lambda p, d: forward(topo, p, d), params, data)
    messages = tuple(transcript(topo, params, data, handoff_state=_handoff_state(params, handoff_optimizer)))
    holders = [p.name for p in topo.parties if topo.raw_input(p.name) is not None]
    parties = []
    for party in topo.parties:
        fwd = total = 0.0
        seconds = 0.0 if measure else None
        counted = flops_for == "all" or (flops_for == "holder" and party.name in holders)
        if not counted:
            fwd = total = float("nan")
            seconds = None
        pieces = [] if not counted else [_segment_programs(topo, s, params, values, measure) for s in topo.segments if s.party == party.name]
        pieces += [_loss_programs(values[loss.logits], values[loss.labels], measure)
                   for loss in topo.losses if loss.party == party.name]
        if nopeek is not None and counted:
            pieces += [_nopeek_programs(values[topo.raw_input(party.name)], values[m], nopeek, party.replicas > 1, measure)
                       for m in topo.protected if topo.producer(m) == party.name]
        for f, t, s in pieces:
            fwd, total = fwd + f, total + t
            if seconds is not None:
                seconds += s
        member = party.member_names()[0]
        first = party.turn_names(1)[0]  # hand-offs name the clients of a turn-taking party 1..N
        parties.append(PartyCost(
            name=party.name, replicas=party.replicas, params=_count(params[party.name]) // party.replicas,
            forward_flops=fwd / party.replicas, step_flops=total / party.replicas,
            sent=tuple(m for m in messages if m.per == "step" and m.sender == member),
            received=tuple(m for m in messages if m.per == "step" and m.receiver == member),
            handoffs=tuple(m for m in messages if m.per == "turn" and first in (m.sender, m.receiver)),
            step_seconds=None if seconds is None else seconds / party.replicas,
        ))
    label = f"{setup.model} {topology} cut {','.join(map(str, setup.cuts))}"
    return Profile(label, batch, tuple(parties), holders[0], messages)


@functools.lru_cache(maxsize=64)
def whole_profile(model: str, widths: tuple[int, ...], input_shape: tuple[int, ...], num_classes: int, batch: int,
                  *, measure: bool = False, flops: bool = True) -> Profile:
    """Per-step cost of the unsplit model for one client that holds all of it, its data and
    labels (federated learning, large-batch SGD): forward, loss, backward. No messages.
    flops=False: parameters only (FLOPs NaN), nothing compiled. Cached: the 64 most recent calls."""
    blocks = model_blocks(model, num_classes, widths)
    holder = {}

    def make():
        module, shape = build_segment(blocks, input_shape, 0, len(blocks))
        graphdef, state = nnx.split(module)
        holder["graphdef"], holder["shape"] = graphdef, shape
        return state

    state = _shapes_of(make, model, input_shape)
    if holder["shape"] != (num_classes,):
        raise ModelError(f"model {model!r} ends in shape {holder['shape']}, not logits ({num_classes},)")
    graphdef = holder["graphdef"]
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    logits = jax.ShapeDtypeStruct((batch, num_classes), jnp.float32)

    def apply(s, xx):
        return nnx.merge(graphdef, s)(xx)

    def step(s, ct, xx):
        out, vjp = jax.vjp(lambda q: apply(q, xx), s)
        return out, vjp(ct)

    if not flops:
        return Profile(f"{model} (whole)", batch, (PartyCost("client", 1, _count(state), math.nan, math.nan),), "client")
    fwd, _ = compiled_flops(apply, state, x)
    total, seconds = _program(step, (state, logits, x), measure)
    loss_fwd, loss_total, loss_seconds = _loss_programs(logits, y, measure)
    party = PartyCost(
        name="client", replicas=1, params=_count(state), forward_flops=fwd + loss_fwd, step_flops=total + loss_total,
        step_seconds=None if not measure else seconds + loss_seconds,
    )
    return Profile(f"{model} (whole)", batch, (party,), "client")


def message_bytes(message: Message, precision_bytes: int = 4) -> int:
    """Bytes of a message when floats are sent with `precision_bytes` each (integers as they are)."""
    if "float" in message.dtype:
        return int(math.prod(message.shape)) * int(precision_bytes)
    return int(message.bytes)
