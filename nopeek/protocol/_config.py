"""The model section of a config: the model, its cuts, and the topology of parties around them."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from nopeek.core import Section, finite, raise_first_failure
from nopeek.protocol._models import ACTIVATIONS, MODELS
from nopeek.protocol._partition import PARTITIONS
from nopeek.protocol._topologies import DEFAULT_TOPOLOGY, HANDOFFS, MERGES, NOPEEK_HOPS, SLICINGS, TASKS, TOPOLOGIES


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The model, where it is cut, and the topology of parties around the cuts."""

    model: str = field(default="mlp", metadata={"help": "model (see MODELS)"})
    widths: tuple[int, ...] = field(default=(), metadata={"help": "model widths, comma-separated; empty = the model's default"})
    topology: str = field(default=DEFAULT_TOPOLOGY, metadata={"help": "split-learning configuration"})
    cuts: tuple[int, ...] = field(default=(), metadata={"help": "cut positions, increasing (after block k); empty = the default"})
    clients: int = field(default=2, metadata={"help": "clients of vertical and round_robin"})
    merge: str = field(default="concat", metadata={"help": "vertical: how the server merges the clients' activations"})
    slicing: str = field(default="auto", metadata={"help": "vertical: columns (tabular), halves, quadrants or strips (images); auto picks"})
    tasks: tuple[str, ...] = field(default=tuple(TASKS), metadata={"help": f"multi_task: the tasks ({', '.join(TASKS)})"})
    task_weights: tuple[float, ...] = field(default=(), metadata={"help": "multi_task: one loss weight per task (default all 1)"})
    partition: str = field(default="iid", metadata={"help": f"round_robin: how the training set is shared, {' or '.join(PARTITIONS)}"})
    dirichlet_alpha: float = field(default=0.5, metadata={"help": "round_robin: Dirichlet concentration (smaller = more label skew)"})
    handoff: str = field(default="p2p", metadata={"help": "round_robin: client weights handed on directly (p2p) or via the server"})
    cut_activation: str = field(default="model", metadata={"help": f"activation of the block before the (first) cut: model (its own), {', '.join(ACTIVATIONS)}"})
    nopeek_hops: str = field(default="first", metadata={"help": "multi_hop: NoPeek at the first hop, or at all hops (each relay against what it received)"})

    def validate(self) -> "ModelConfig":
        checks = [
            (self.model in MODELS, f"unknown model {self.model!r}; choose from {', '.join(MODELS)}"),
            (all(w >= 1 for w in self.widths), f"--widths must be positive, got {self.widths}"),
            (self.topology in TOPOLOGIES, f"unknown topology {self.topology!r}; choose from {', '.join(TOPOLOGIES)}"),
            (all(c >= 1 for c in self.cuts), f"--cuts must be >= 1, got {','.join(map(str, self.cuts))}"),
            (all(b > a for a, b in zip(self.cuts, self.cuts[1:])), f"--cuts must be increasing, got {','.join(map(str, self.cuts))}"),
            (self.clients >= 1, f"--clients must be >= 1, got {self.clients}"),
            (self.merge in MERGES, f"--merge must be one of {', '.join(MERGES)}, got {self.merge!r}"),
            (self.slicing in SLICINGS, f"--slicing must be one of {', '.join(SLICINGS)}, got {self.slicing!r}"),
            (all(t in TASKS for t in self.tasks), f"--tasks must be among {', '.join(TASKS)}, got {','.join(self.tasks)}"),
            (all(finite(w) and w >= 0 for w in self.task_weights), f"--task-weights must be finite and >= 0, got {self.task_weights}"),
            (self.partition in PARTITIONS, f"--partition must be one of {', '.join(PARTITIONS)}, got {self.partition!r}"),
            (finite(self.dirichlet_alpha) and self.dirichlet_alpha > 0, f"--dirichlet-alpha must be > 0, got {self.dirichlet_alpha}"),
            (self.handoff in HANDOFFS, f"--handoff must be one of {', '.join(HANDOFFS)}, got {self.handoff!r}"),
            (self.cut_activation in ("model", *ACTIVATIONS), f"--cut-activation must be one of model, {', '.join(ACTIVATIONS)}, got {self.cut_activation!r}"),
            (self.nopeek_hops in NOPEEK_HOPS, f"--nopeek-hops must be one of {', '.join(NOPEEK_HOPS)}, got {self.nopeek_hops!r}"),
        ]
        raise_first_failure(checks)
        return self
