"""The graph of a split-learning configuration: parties, model segments, losses, messages.

A `Topology` holds
  - parties: each with a name, the data it holds (raw inputs "x", labels "y", task
    labels "y_parity", ...) and a replica count (N identical parties, e.g. the clients of
    a vertical split, whose parameters are stacked and run as one vmapped program);
  - segments: model pieces, each run by one party: `output = module(merge(inputs))`;
  - losses: cross-entropy at the party that computes the logits (the labels are
    delivered to it as a message when another party holds them), or the batch mean of a
    tensor with no labels at all (`Loss(kind="mean")`: a critic's score, the loss a
    malicious server trains the client on in `nopeek.dishonest`);
  - protected messages: what a data holder sends computed from its raw inputs; defences
    act on them (see `nopeek.protocol.Defence`). A relay may protect its message too,
    against what it received (`penalty_sources`).

The topology checks itself when built: raw inputs never leave their holder, every tensor
is produced once before it is used, several inputs are merged, losses sit with the party
that computes their logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from nopeek.errors import TopologyError

MERGES = ("concat", "sum", "mean")
LOSS_KINDS = ("ce", "mean")


@dataclasses.dataclass(frozen=True)
class Party:
    """A participant: its name, the data keys it holds, and how many identical replicas."""

    name: str
    holds: tuple[str, ...] = ()
    replicas: int = 1

    def member_names(self) -> list[str]:
        """The names of the individual parties: `name` alone, or name1..nameN for replicas."""
        return [self.name] if self.replicas == 1 else self.turn_names(self.replicas)

    def turn_names(self, count: int) -> list[str]:
        """name1..name`count`: the clients that take turns as this one party (round robin's
        data shards, the hand-offs between them), as replicas are named."""
        return [f"{self.name}{i + 1}" for i in range(count)]


def merged_name(tensor: str) -> str:
    """The name of the view that merges every replica's `tensor` (vertical's server sees
    "z[all]"): how tables and `--message` name it."""
    return f"{tensor}[all]"


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
