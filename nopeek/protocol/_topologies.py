"""The split-learning configurations, each a builder of an engine `Topology`.

| name        | parties (what they hold)                              | what crosses per step            |
| ----------- | ----------------------------------------------------- | -------------------------------- |
| vanilla     | client (x, y, blocks < c) -> server (blocks >= c)     | z, y forward; dL/dz back         |
| u_shaped    | client (x, y, blocks < c1 and >= c2) <-> server       | z1 forward, z2 back, their grads |
| vertical    | client1..N (slice x_i, blocks < c) -> server (y, rest) | z_i forward; dL/dz_i back        |
| multi_task  | client (x, task labels) -> server (trunk, M heads)     | z, labels forward; dL/dz back    |
| multi_hop   | client -> relay1..R -> server, cuts c1 < c2 < ...     | each hop's z and its gradient    |
| round_robin | client1..N in turns -> server; weights handed on      | z, y, dL/dz; weights per turn    |

Every fact about a configuration lives here, in its `TopologySpec` and in what its builder
returns (`Built`): how many cuts it takes, which cut each message comes from, whose
gradient the label attacks read, how the training set is shared among its parties,
whether label defences and a dishonest server apply. No other module names a
configuration. Adding one touches this file only (or, from Python, `register`): write
`build_<name>(setup) -> Built` and register it. References: Vepakomma et al., "Split learning for health:
distributed deep learning without sharing raw patient data", arXiv 1812.00564; Gupta &
Raskar, "Distributed learning of deep neural network over multiple agents", J. Network
and Computer Applications 116, 2018.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nopeek.core import one_off_init
from nopeek.errors import TopologyError
from nopeek.protocol._graph import MERGES, Handoff, Loss, Party, Segment, Topology, segment_fn
from nopeek.protocol._models import MODELS, BlockSpec, build_segment, model_blocks, with_cut_activation
from nopeek.protocol._partition import partition
from nopeek.protocol._stacking import resolve_stack_mode

SLICINGS = ("auto", "columns", "halves", "quadrants", "strips")
TASKS = {"digit": "y", "parity": "y_parity", "ge5": "y_ge5"}  # task name -> label key
HANDOFFS = ("p2p", "server")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a topology builder needs: the model, the data's shapes, and the topology options."""

    model: str
    widths: tuple[int, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    cuts: tuple[int, ...]
    clients: int = 2
    merge: str = "concat"
    slicing: str = "auto"
    tasks: tuple[str, ...] = ("digit", "parity", "ge5")
    task_weights: tuple[float, ...] = ()
    handoff: str = "p2p"
    nopeek_hops: str = "first"
    stack_clients: bool = True
    replica_mode: str = "auto"  # vertical's clients: vmap, map (unrolled), or auto (by backend and model)
    cut_activation: str = "model"  # the activation of the block whose output the data holder sends

    def blocks(self, num_classes: int | None = None) -> list[BlockSpec]:
        blocks = model_blocks(self.model, self.num_classes if num_classes is None else num_classes, self.widths)
        if self.cut_activation != "model" and self.cuts and 1 <= self.cuts[0] < len(blocks):
            blocks = with_cut_activation(blocks, self.cuts[0], self.cut_activation)
        return blocks


@dataclasses.dataclass(frozen=True)
class Receiver:
    """What a message's receiver computes from it alone (`Built.receiver`): its party, its
    segments in order, their output, and the label key of the loss on that output when the
    receiver holds it (None: the output leaves the receiver)."""

    party: str
    segments: tuple
    output: str
    labels: str | None


@dataclasses.dataclass(frozen=True, eq=False)
class Built:
    """A configured topology: the graph, how to initialise it, and how to feed it.

    init(seed) -> params `{party: {segment: State}}`.
    prepare(x, y) -> the data dict the parties hold for a batch (pure jnp: runs under jit);
      it holds every task's labels under its label key.
    tasks: label key -> number of classes; the first is the accuracy column.
    cuts: the cuts it was built at; cut_of: tensor -> index into `cuts` of the cut it
      crosses (every message computed from raw inputs).
    label_gradient: the tensor whose gradient the label attacks read (the one a party
      without the labels gets back from the label holder).
    """

    topology: Topology
    init: Callable[[int], dict]
    prepare: Callable[[jax.Array, jax.Array], dict]
    tasks: dict[str, int]
    cuts: tuple[int, ...] = ()
    cut_of: Mapping[str, int] = dataclasses.field(default_factory=dict)
    label_gradient: str | None = None
    slices: tuple = ()  # vertical: per-client (description) of the slice it holds
    key: tuple = ()  # (configuration, Setup): equal for equal builds; what caches of compiled programs key on
    blocks: tuple = ()  # the model's blocks as built (the cut activation applied): what an attacker who knows the architecture builds

    def receiver(self, tensor: str) -> "Receiver | None":
        """What the party that receives message `tensor` computes from it alone (the server's
        model, as attacks that simulate the sender use it), or None when it merges it with
        other tensors first (vertical) or the sender is replicated.

        Its segments are followed while each takes only the previous one's output and stays
        with that party; the chain ends at logits it computes a loss on (`labels`: their key;
        the labels are then at the receiver) or at a tensor that leaves it (`labels` None: the
        labels' holder keeps the head, as in U-shaped split learning)."""
        topo = self.topology
        sender = topo.producer(tensor)
        users = [s for s in topo.segments if tensor in s.inputs]
        if (len(users) != 1 or users[0].inputs != (tensor,) or users[0].party == sender
                or topo.party(sender).replicas > 1 or topo.party(users[0].party).replicas > 1):
            return None
        party, chain = users[0].party, [users[0]]
        while True:
            out = chain[-1].output
            losses = [loss for loss in topo.losses if loss.logits == out and loss.kind == "ce"]
            if losses and losses[0].party == party:
                return Receiver(party, tuple(chain), out, losses[0].labels)
            nxt = [s for s in topo.segments if out in s.inputs]
            if len(nxt) != 1 or nxt[0].party != party or nxt[0].inputs != (out,) or losses:
                return Receiver(party, tuple(chain), out, None)
            chain.append(nxt[0])

    def receiver_apply(self, tensor: str):
        """(apply(party_params, m) -> output, Receiver) of `receiver(tensor)`, or None:
        party_params is the receiving party's `{segment: State}`."""
        view = self.receiver(tensor)
        if view is None:
            return None
        fns = [(seg.name, segment_fn(self.topology, seg)) for seg in view.segments]

        def apply(params, m):
            for name, fn in fns:
                m = fn(params[name], m)
            return m

        return apply, view

    def cut_block(self, tensor: str, blocks: Sequence[BlockSpec]) -> str:
        """The name of the block after which `tensor` crosses."""
        return blocks[self.cuts[self.cut_of.get(tensor, 0)] - 1].name


def _segment_builder(blocks, specs):
    """specs: [(party, segment, in_shape, start, stop, replicas)] -> (graphdefs, init).

    The graphs come from abstract evaluation (`jax.eval_shape`): nothing is initialised
    until `init(seed)` is called. `init` is one program for every segment and replica
    (`nopeek.core.one_off_init`: compiled once per model shape, cheaply, instead of one
    optimised program per parameter shape)."""

    def build(seed):
        graphdefs, params = {}, {}
        for party, name, in_shape, start, stop, replicas, block_list in specs:
            states = []
            for r in range(replicas):
                module, _ = build_segment(block_list, in_shape, start, stop, seed=seed, replica=r)
                graphdef, state = nnx.split(module)
                states.append(state)
                graphdefs[(party, name)] = graphdef
            state = states[0] if replicas == 1 else jax.tree.map(lambda *a: jnp.stack(a), *states)
            params.setdefault(party, {})[name] = state
        return graphdefs, params

    graphs = []
    jax.eval_shape(lambda: graphs.append(build(0)[0]))  # the graphs do not depend on the seed
    return graphs[0], one_off_init(lambda seed: build(seed)[1])


def _shape_after(blocks, in_shape, start, stop):
    """Per-sample shape after blocks [start, stop), from shapes only (nothing initialised)."""
    shape = []
    jax.eval_shape(lambda: shape.append(build_segment(blocks, in_shape, start, stop)[1]))
    return shape[0]


def _check_cuts(setup: Setup, count: str, n_blocks: int, name: str) -> None:
    cuts = setup.cuts
    text, takes = CUT_RULES[count]
    if not takes(len(cuts)):
        raise TopologyError(f"--cuts: {name} takes {text}, got {','.join(map(str, cuts)) or 'none'}")
    if any(b <= a for a, b in zip(cuts, cuts[1:])):
        raise TopologyError(f"--cuts must be increasing, got {','.join(map(str, cuts))}")
    if not all(1 <= c < n_blocks for c in cuts):
        raise TopologyError(f"--cuts must be between 1 and {n_blocks - 1} for {setup.model} "
                            f"({n_blocks} blocks), got {','.join(map(str, cuts))}")


def _identity(x, y):
    return {"x": x, "y": y}


# ---- vanilla, u_shaped, multi_hop: chains ---------------------------------------


def _chain(setup: Setup, name: str, owners: list[str], labels_with: str, relay_penalties: bool = False) -> Built:
    """Blocks cut at setup.cuts into len(cuts)+1 segments, segment j run by owners[j].
    With `relay_penalties`, every relay also protects what it sends against what it got."""
    blocks = setup.blocks()
    bounds = [0, *setup.cuts, len(blocks)]
    specs, segments, shape = [], [], setup.input_shape
    tensors = ["x"] + [f"z{j + 1}" if len(setup.cuts) > 1 else "z" for j in range(len(setup.cuts))] + ["logits"]
    for j, owner in enumerate(owners):
        seg_name = "bottom" if j == 0 else ("top" if j == len(owners) - 1 else "middle")
        specs.append((owner, seg_name, shape, bounds[j], bounds[j + 1], 1, blocks))
        segments.append(Segment(owner, seg_name, (tensors[j],), tensors[j + 1]))
        shape = _shape_after(blocks, shape, bounds[j], bounds[j + 1])
    graphdefs, init = _segment_builder(blocks, specs)
    holders = {"client": ("x", "y")}
    parties = tuple(Party(p, holders.get(p, ())) for p in dict.fromkeys(owners))
    protected, sources = [tensors[1]], {}
    if relay_penalties:
        for j in range(1, len(owners) - 1):
            protected.append(tensors[j + 1])
            sources[tensors[j + 1]] = tensors[j]
    topo = Topology(
        name, parties, tuple(segments), (Loss(labels_with, "logits", "y"),), tuple(protected), graphdefs,
        penalty_sources=sources,
    )
    cut_of = {t: j for j, t in enumerate(tensors[1:-1])}
    # The label attacks read the gradient a party without the labels gets back from the
    # label holder: the client's first message when the labels are at the server; when
    # they stay with the client (u_shaped), the server's message back to it.
    label_gradient = tensors[1] if labels_with != "client" else tensors[len(owners) - 1]
    return Built(topo, init, _identity, {"y": setup.num_classes}, tuple(setup.cuts), cut_of, label_gradient)


def build_vanilla(setup: Setup) -> Built:
    """client (x, y, blocks < c) -> server (blocks >= c): z and the labels forward, dL/dz back."""
    _check_cuts(setup, "1", len(setup.blocks()), "vanilla")
    return _chain(setup, "vanilla", ["client", "server"], "server")


def build_u_shaped(setup: Setup) -> Built:
    """Split learning without label sharing: the client holds blocks < c1, blocks >= c2 and
    the labels; the server the middle. z1 forward, z2 back to the client, their gradients
    the other way; labels never leave the client."""
    _check_cuts(setup, "2", len(setup.blocks()), "u_shaped")
    return _chain(setup, "u_shaped", ["client", "server", "client"], "client")


NOPEEK_HOPS = ("first", "all")


def build_multi_hop(setup: Setup) -> Built:
    """A chain client -> relay1 .. relayR -> server at cuts c1 < c2 < ...; each relay sees only
    the previous hop's activations and returns only the gradient of what it received.
    NoPeek at the first hop (the client, against its raw inputs), or with
    `nopeek_hops="all"` also at every relay, against the activations it received."""
    _check_cuts(setup, ">=2", len(setup.blocks()), "multi_hop")
    if setup.nopeek_hops not in NOPEEK_HOPS:
        raise TopologyError(f"--nopeek-hops must be one of {', '.join(NOPEEK_HOPS)}, got {setup.nopeek_hops!r}")
    relays = [f"relay{i + 1}" for i in range(len(setup.cuts) - 1)]
    return _chain(setup, "multi_hop", ["client", *relays, "server"], "server", relay_penalties=setup.nopeek_hops == "all")


# ---- round robin: vanilla's graph, turns between clients ------------------------


def build_round_robin(setup: Setup) -> Built:
    """N data holders train one network in turns (Gupta & Raskar 2018): the active client runs
    vanilla split learning on its shard, then hands its client weights (and optimiser
    state) to the next, directly (`handoff="p2p"`) or through the server."""
    _check_cuts(setup, "1", len(setup.blocks()), "round_robin")
    if not 1 <= setup.clients <= 64:
        raise TopologyError(f"--clients must be between 1 and 64, got {setup.clients}")
    if setup.handoff not in HANDOFFS:
        raise TopologyError(f"--handoff must be one of {', '.join(HANDOFFS)}, got {setup.handoff!r}")
    built = _chain(setup, "round_robin", ["client", "server"], "server")
    n = setup.clients
    handoffs = []
    for i in range(n if n > 1 else 0):
        a, b = f"client{i + 1}", f"client{(i + 1) % n + 1}"
        if setup.handoff == "p2p":
            handoffs.append(Handoff(a, b, "client weights and optimiser state", "client"))
        else:
            handoffs += [Handoff(a, "server", "client weights and optimiser state", "client"), Handoff("server", b, "client weights and optimiser state", "client")]
    topo = dataclasses.replace(built.topology, handoffs=tuple(handoffs))
    return dataclasses.replace(built, topology=topo)


# ---- vertical: N clients, each a slice of the features --------------------------


def _slices(input_shape, n: int, slicing: str):
    """How the features of one sample are split among n clients.

    Returns (kind, parts, shape): parts is a list of per-client index tuples (columns for
    tabular, (rows, cols) ranges for images); `shape` the common (padded) slice shape.
    """
    if slicing == "auto":
        slicing = "columns" if len(input_shape) == 1 else {2: "halves", 4: "quadrants"}.get(n, "strips")
    if len(input_shape) == 1:
        if slicing != "columns":
            raise TopologyError(f"--slicing {slicing} needs image data; tabular features are split by columns")
        d = input_shape[0]
        if n > d:
            raise TopologyError(f"--clients {n}: more clients than the {d} features; each client needs at least one")
        parts = [tuple(int(i) for i in idx) for idx in np.array_split(np.arange(d), n)]
        width = max(len(p) for p in parts)
        return "columns", parts, (width,)
    if len(input_shape) != 3:
        raise TopologyError(f"vertical splits need tabular (d,) or image (H, W, C) samples, got {input_shape}")
    h, w, _ = input_shape
    if slicing == "columns":
        raise TopologyError("--slicing columns is for tabular data; use halves, quadrants or strips for images")
    if slicing == "halves":
        if n != 2:
            raise TopologyError(f"--slicing halves needs --clients 2, got {n}")
        parts = [((0, h), (0, w // 2)), ((0, h), (w // 2, w))]
    elif slicing == "quadrants":
        if n != 4:
            raise TopologyError(f"--slicing quadrants needs --clients 4, got {n}")
        parts = [((r0, r1), (c0, c1)) for r0, r1 in ((0, h // 2), (h // 2, h)) for c0, c1 in ((0, w // 2), (w // 2, w))]
    elif slicing == "strips":
        if n > w:
            raise TopologyError(f"--clients {n}: more clients than the {w} image columns")
        cols = np.array_split(np.arange(w), n)
        parts = [((0, h), (int(c[0]), int(c[-1]) + 1)) for c in cols]
    else:
        raise TopologyError(f"--slicing must be one of {', '.join(SLICINGS)}, got {slicing!r}")
    rows = max(r1 - r0 for (r0, r1), _ in parts)
    cols_ = max(c1 - c0 for _, (c0, c1) in parts)
    return "image", parts, (rows, cols_, input_shape[2])


def _slicer(kind, parts, shape):
    """prepare(x) -> (N, n, *shape): each client's slice, zero-padded to the common shape
    (a zero column changes neither a client's output nor its dCor)."""

    def take(x):
        out = []
        for p in parts:
            if kind == "columns":
                s = x[:, jnp.asarray(p)]
                s = jnp.pad(s, ((0, 0), (0, shape[0] - len(p))))
            else:
                (r0, r1), (c0, c1) = p
                s = x[:, r0:r1, c0:c1]
                s = jnp.pad(s, ((0, 0), (0, shape[0] - (r1 - r0)), (0, shape[1] - (c1 - c0)), (0, 0)))
            out.append(s)
        return jnp.stack(out)

    return take


def build_vertical(setup: Setup) -> Built:
    """N clients each hold one slice of every sample's features and run their own client
    segment; the server merges their activations (`merge`: concat, sum, mean) and holds
    the rest of the network and the labels. Client i's NoPeek term uses its own slice."""
    blocks = setup.blocks()
    _check_cuts(setup, "1", len(blocks), "vertical")
    n = setup.clients
    if not 1 <= n <= 8:
        raise TopologyError(f"--clients must be between 1 and 8 for vertical, got {n}")
    if setup.merge not in MERGES:
        raise TopologyError(f"--merge must be one of {', '.join(MERGES)}, got {setup.merge!r}")
    cut = setup.cuts[0]
    if n == 1:
        kind, parts, shape = "whole", [None], setup.input_shape
        slicer = lambda x: x  # noqa: E731  (one party, no replica axis)
    else:
        kind, parts, shape = _slices(setup.input_shape, n, setup.slicing)
        slicer = _slicer(kind, parts, shape)
    z_shape = _shape_after(blocks, shape, 0, cut)
    if setup.merge == "concat":
        merged = (*z_shape[:-1], z_shape[-1] * n)
    else:
        merged = z_shape
    if not setup.stack_clients:
        return _vertical_unstacked(setup, blocks, n, cut, shape, merged, slicer, parts)
    specs = [("client", "bottom", shape, 0, cut, n, blocks), ("server", "top", merged, cut, len(blocks), 1, blocks)]
    graphdefs, init = _segment_builder(blocks, specs)
    replica_mode = resolve_stack_mode(setup.replica_mode, has_conv=setup.model != "mlp")
    topo = Topology(
        "vertical",
        (Party("client", ("x",), replicas=n), Party("server", ("y",))),
        (Segment("client", "bottom", ("x",), "z"), Segment("server", "top", ("z",), "logits", merge=setup.merge)),
        (Loss("server", "logits", "y"),),
        ("z",),
        graphdefs,
        replica_mode=replica_mode,
    )

    def prepare(x, y):
        return {"x": slicer(x), "y": y}

    return Built(topo, init, prepare, {"y": setup.num_classes}, tuple(setup.cuts), {"z": 0}, "z", tuple(parts))


def _vertical_unstacked(setup, blocks, n, cut, shape, merged, slicer, parts) -> Built:
    """The same vertical split with N separate client parties (client1..N, slices x_1..x_N,
    messages z_1..z_N) instead of one replicated party: the same parameters for the same
    seed, but N client programs instead of one vmapped one (the benchmark's reference)."""
    names = [f"client{i + 1}" for i in range(n)]
    specs = [(name, "bottom", shape, 0, cut, 1, blocks) for name in names]
    specs.append(("server", "top", merged, cut, len(blocks), 1, blocks))
    graphdefs, _ = _segment_builder(blocks, specs)

    def init(seed):
        params = {}
        for i, name in enumerate(names):
            module, _ = build_segment(blocks, shape, 0, cut, seed=seed, replica=i)
            params[name] = {"bottom": nnx.split(module)[1]}
        params["server"] = {"top": nnx.split(build_segment(blocks, merged, cut, len(blocks), seed=seed)[0])[1]}
        return params

    topo = Topology(
        "vertical",
        tuple(Party(name, (f"x_{i + 1}",)) for i, name in enumerate(names)) + (Party("server", ("y",)),),
        tuple(Segment(name, "bottom", (f"x_{i + 1}",), f"z_{i + 1}") for i, name in enumerate(names))
        + (Segment("server", "top", tuple(f"z_{i + 1}" for i in range(n)), "logits", merge=setup.merge),),
        (Loss("server", "logits", "y"),),
        tuple(f"z_{i + 1}" for i in range(n)),
        graphdefs,
    )

    def prepare(x, y):
        slices = slicer(x)
        return {**{f"x_{i + 1}": slices[i] for i in range(n)}, "y": y}

    messages = [f"z_{i + 1}" for i in range(n)]
    return Built(topo, one_off_init(init), prepare, {"y": setup.num_classes}, tuple(setup.cuts), {m: 0 for m in messages}, messages[0],
                 tuple(parts))


# ---- multi-task: one client, M heads on the server -----------------------------


def task_labels(y, task: str, num_classes: int):
    """The labels of a bundled task from the class labels y: (n,) int."""
    if task == "digit":
        return y
    if task == "parity":
        return y % 2
    if task == "ge5":
        return (y >= 5).astype(y.dtype)
    raise TopologyError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def _task_classes(task: str, num_classes: int) -> int:
    if task == "digit":
        return num_classes
    if task == "ge5" and num_classes <= 5:
        raise TopologyError(f"task ge5 (label >= 5) needs more than 5 classes, the data has {num_classes}")
    return 2


def build_multi_task(setup: Setup) -> Built:
    """One data holder, M tasks: the client runs blocks < c; the server a shared trunk (blocks
    c .. L-2) and one head per task, each with its own label set and loss weight. The
    client's cotangent is the sum over heads (the runner sums it through the trunk)."""
    blocks = setup.blocks()
    _check_cuts(setup, "1", len(blocks), "multi_task")
    tasks = tuple(setup.tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise TopologyError(f"--tasks must name distinct tasks, got {','.join(tasks) or 'none'}")
    weights = tuple(setup.task_weights) or (1.0,) * len(tasks)
    if len(weights) != len(tasks):
        raise TopologyError(f"--task-weights: {len(weights)} weights for {len(tasks)} tasks")
    if any(not w >= 0 for w in weights):
        raise TopologyError(f"--task-weights must be >= 0, got {weights}")
    classes = {TASKS[t]: _task_classes(t, setup.num_classes) for t in tasks}
    cut, last = setup.cuts[0], len(blocks) - 1
    z_shape = _shape_after(blocks, setup.input_shape, 0, cut)
    specs = [("client", "bottom", setup.input_shape, 0, cut, 1, blocks)]
    segments = [Segment("client", "bottom", ("x",), "z")]
    trunk_out = "z"
    if cut < last:
        specs.append(("server", "trunk", z_shape, cut, last, 1, blocks))
        segments.append(Segment("server", "trunk", ("z",), "h"))
        trunk_out = "h"
    h_shape = _shape_after(blocks, z_shape, cut, last)
    losses = []
    for task, w in zip(tasks, weights):
        key = TASKS[task]
        head_blocks = setup.blocks(classes[key])
        specs.append(("server", f"head_{task}", h_shape, last, last + 1, 1, head_blocks))
        segments.append(Segment("server", f"head_{task}", (trunk_out,), f"logits_{task}"))
        losses.append(Loss("server", f"logits_{task}", key, float(w)))
    graphdefs, init = _segment_builder(blocks, specs)
    label_keys = tuple(TASKS[t] for t in tasks)
    topo = Topology(
        "multi_task",
        (Party("client", ("x", *label_keys)), Party("server")),
        tuple(segments), tuple(losses), ("z",), graphdefs,
    )

    def prepare(x, y):
        return {"x": x, **{TASKS[t]: task_labels(y, t, setup.num_classes) for t in tasks}}

    return Built(topo, init, prepare, classes, tuple(setup.cuts), {"z": 0}, "z")


# ---- the registry ----------------------------------------------------------------------

CUT_RULES = {"1": ("one cut", lambda n: n == 1), "2": ("2 cuts", lambda n: n == 2),
             ">=2": ("at least 2 cuts", lambda n: n >= 2)}


def _one_party(labels, clients, kind, alpha, seed):
    return None


def _shared_in_turns(labels, clients, kind, alpha, seed):
    return partition(labels, clients, kind, alpha, seed)


@dataclasses.dataclass(frozen=True)
class TopologySpec:
    """A registered configuration: how to build it and the facts other modules ask of it.

    build(setup) -> Built.
    cuts: how many cuts it takes: "1", "2" or ">=2" (`CUT_RULES`).
    splits: how the data holders hold the data: "samples" (whole samples: all of them, or a
      share each, see `shard`) or "features" (each a slice of every sample).
    shard(labels, clients, partition, dirichlet_alpha, seed) -> one index array per data
      holder of the samples it trains on (and is scored on), or None when one party holds
      them all.
    label_defences: whether a label holder can defend the labels by perturbing the
      gradients it returns (not when the labels are sent to every server's head).
    malicious_server: whether a dishonest server's training protocol (FSHA) applies: one
      data holder and one server that owns the rest of the network.
    cost_clients(n): how many data holders to build to cost a collaboration of n (the
      per-client messages do not depend on more).
    takes_clients: whether `--clients` sets how many data holders it has (elsewhere the
      option is refused: it would be recorded and change nothing).
    `one_sample_holder` (derived from splits and shard): each sample's data sits whole with
    one data holder that trains on all of them (not feature slices, not shards).
    """

    name: str
    build: Callable[[Setup], Built]
    cuts: str
    description: str
    splits: str = "samples"
    shard: Callable = _one_party
    label_defences: bool = True
    malicious_server: bool = False
    cost_clients: Callable[[int], int] = lambda n: 1
    takes_clients: bool = False

    @property
    def one_sample_holder(self) -> bool:
        """Whether one data holder holds every sample whole and trains on all of them (what
        per-sample clipping and its accounting need)."""
        return self.splits == "samples" and self.shard is _one_party

    def takes(self, cuts) -> bool:
        """Whether the configuration takes this many cuts."""
        return CUT_RULES[self.cuts][1](len(tuple(cuts)))

    @property
    def cuts_text(self) -> str:
        """"one cut", "2 cuts" or "at least 2 cuts"."""
        return CUT_RULES[self.cuts][0]


TOPOLOGIES: dict[str, TopologySpec] = {}
DEFAULT_TOPOLOGY = "vanilla"


def register(name: str, build: Callable[[Setup], Built], *, cuts: str = "1", description: str = "", **facts) -> None:
    """Make configuration `name` available to `nopeek train`, `sweep`, `cost` and the Python API.

    Args:
      name: the `--topology` value.
      build: `build(setup) -> Built` (see the builders of this module).
      cuts: "1", "2" or ">=2", the number of cuts it takes.
      facts: the other fields of `TopologySpec` (splits, shard, label_defences,
        malicious_server, cost_clients, takes_clients).
    """
    if not isinstance(name, str) or not name:
        raise TopologyError(f"a topology name must be a non-empty string, got {name!r}")
    if cuts not in CUT_RULES:
        raise TopologyError(f"cuts must be one of {', '.join(CUT_RULES)}, got {cuts!r}")
    TOPOLOGIES[name] = TopologySpec(name, build, cuts, description or (build.__doc__ or "").split("\n")[0], **facts)


register("vanilla", build_vanilla, cuts="1", description="client -> server; labels sent to the server",
         malicious_server=True)
register("u_shaped", build_u_shaped, cuts="2", description="client <-> server <-> client; labels stay with the client")
register("vertical", build_vertical, cuts="1", description="N clients, one feature slice each -> server (merge, labels)",
         splits="features", cost_clients=lambda n: n, takes_clients=True)
register("multi_task", build_multi_task, cuts="1", description="one client -> server with one head per task",
         label_defences=False)
register("multi_hop", build_multi_hop, cuts=">=2", description="client -> relay(s) -> server")
register("round_robin", build_round_robin, cuts="1", description="N clients in turns -> server; client weights handed on",
         shard=_shared_in_turns, cost_clients=lambda n: 2 if n > 1 else 1, takes_clients=True)


def spec(topology: str) -> TopologySpec:
    """The registered configuration `topology`."""
    if topology not in TOPOLOGIES:
        raise TopologyError(f"unknown topology {topology!r}; choose from {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[topology]


def build(topology: str, setup: Setup) -> Built:
    """Build registered configuration `topology` for `setup`."""
    return dataclasses.replace(spec(topology).build(setup), key=(topology, setup), blocks=tuple(setup.blocks()))


def default_cuts(topology: str, model: str, n_blocks: int, default_cut: int) -> tuple[int, ...]:
    """The cuts used when none are given: the model's default cut, and for two-cut
    configurations the block before the head as the second."""
    if spec(topology).cuts == "1":
        return (default_cut,)
    first = min(default_cut, n_blocks - 2)
    return (first, n_blocks - 1)


def resolve_cuts(topology: str, model: str, widths, num_classes: int, cuts=()) -> tuple[int, ...]:
    """The cuts as given, or the configuration's default cuts for this model when none are."""
    if cuts:
        return tuple(cuts)
    n_blocks = len(model_blocks(model, num_classes, widths))
    return default_cuts(topology, model, n_blocks, MODELS[model].default_cut)
