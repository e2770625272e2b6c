"""Per-client compute and communication of split learning against federated learning and
large-batch synchronous SGD: the split-learning cost table, from the real models.

Every number comes from a program or a transcript, scaled by counts that are config fields:
  - split learning (any topology of the engine): a client's step FLOPs (its segments'
    forward and backward, compiled; `nopeek.cost_models`) and the bytes of the step's
    messages it sends or receives (the transcript), times its steps: `epochs * s / batch`
    with `s` its samples per epoch (D / N for N clients sharing D samples; all D for
    vertical clients, who hold a slice of every sample), a last partial batch counted pro
    rata; plus, for round robin, one hand-off of client weights sent and one received
    per epoch.
  - federated averaging: each client trains the whole model on its D / N samples,
    `fl_local_epochs` epochs a round, `rounds = fl_rounds or ceil(epochs / fl_local_epochs)`;
    it holds the whole model, so per round it receives and sends all parameters: 2 * P.
  - large-batch synchronous SGD: `epochs * ceil(D / sgd_global_batch)` synchronous steps,
    each client computing on its D / N share of each global batch and exchanging 2 * P per
    step (gradients up, weights down); its compute equals federated learning's.
Units: TFLOPs = 1e12 FLOPs, GB = 1e9 bytes. References: Vepakomma et al., "Split learning for
health", arXiv 1812.00564, and the cost table of the MIT split-learning project page (README "Cost").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field

from nopeek.core import Section, raise_first_failure
from nopeek.cost._profiles import OPTIMIZER_STATES, Profile, message_bytes, split_profile, whole_profile
from nopeek.data import DataError, check_dataset_name, sample_shape
from nopeek.errors import ConfigError
from nopeek.protocol import (
    DEFAULT_TOPOLOGY, HANDOFFS, LEAKAGE_TERMS, MODELS, TOPOLOGIES, Setup, model_blocks, resolve_cuts, spec,
)

METHODS = {"large_batch_sgd": "large-batch SGD", "federated_learning": "federated learning",
           "split_learning": "split learning"}
REPORTS = ("both", "compute", "communication")
# name -> (sample shape, classes, training samples). cifar100 is known here by its shapes only.
KNOWN_DATA = {
    "cifar10": ((32, 32, 3), 10, 50_000), "cifar100": ((32, 32, 3), 100, 50_000),
    "mnist": ((28, 28, 1), 10, 60_000), "fashion_mnist": ((28, 28, 1), 10, 60_000),
    "mnist5k": ((28, 28, 1), 10, 4_000), "digits": ((8, 8, 1), 10, 1_347), "breast_cancer": ((30,), 2, 426),
}


@dataclasses.dataclass(frozen=True)
class CostConfig(Section):
    """Per-client compute and communication of split learning, federated learning and
    large-batch SGD for one model, data set and cut, at each number of clients."""

    model: str = field(default="vgg16", metadata={"help": f"model: {', '.join(MODELS)} or a registered one; only its shapes are used"})
    widths: tuple[int, ...] = field(default=(), metadata={"help": "model widths; empty = the model's default"})
    dataset: str = field(default="cifar10", metadata={"help": f"data set: {', '.join(KNOWN_DATA)} or a nopeek data set"})
    input_shape: tuple[int, ...] = field(default=(), metadata={"help": "sample shape, e.g. 32,32,3 (overrides the data set's)"})
    num_classes: int | None = field(default=None, metadata={"help": "classes (overrides the data set's)"})
    dataset_size: int | None = field(default=None, metadata={"help": "training samples shared by the clients (default: the data set's)"})
    client_counts: tuple[int, ...] = field(default=(100, 500), metadata={"help": "numbers of clients, one column each"})
    topology: str = field(default=DEFAULT_TOPOLOGY, metadata={"help": "split-learning configuration"})
    cuts: tuple[int, ...] = field(default=(), metadata={"help": "cut positions (after block k); empty = the default"})
    handoff: str = field(default="p2p", metadata={"help": "round_robin: weights handed on directly (p2p) or via the server",
                                                "choices": HANDOFFS})
    handoff_optimizer: str = field(default="adam", metadata={"help": "round_robin: optimiser state handed on with the weights",
                                                             "choices": OPTIMIZER_STATES})
    epochs: int = field(default=10, metadata={"help": "passes over the data (split learning, large-batch SGD; FL's rounds follow)"})
    batch_size: int = field(default=64, metadata={"help": "samples per client step; FLOPs are counted on one batch of it"})
    fl_local_epochs: int = field(default=1, metadata={"help": "federated learning: local epochs per round"})
    fl_rounds: int | None = field(default=None, metadata={"help": "federated learning: rounds (default: ceil(epochs / local epochs))"})
    sgd_global_batch: int = field(default=16384, metadata={"help": "large-batch SGD: samples per synchronous step, all clients together"})
    precision_bytes: int = field(default=4, metadata={"help": "bytes per float sent (activations, gradients, weights); labels stay int32"})
    include_nopeek: bool = field(default=False, metadata={"help": "count the NoPeek term's FLOPs in the data holder's step"})
    leakage: str = field(default="dcor", metadata={"help": "NoPeek term counted", "choices": LEAKAGE_TERMS})
    report: str = field(default="both", metadata={"help": "rows printed: compute, communication or both", "choices": REPORTS})
    sensitivity: bool = field(default=False, metadata={"help": "also every cut: compute ratio and crossover"})
    measure: bool = field(default=False, metadata={"help": "also time each party's compiled step on this machine"})

    def validate(self) -> "CostConfig":
        """The values, and that a named data set exists (no data is read and no model built:
        `check_cost` adds what needs them)."""
        cuts = ",".join(map(str, self.cuts))
        raise_first_failure([
            (self.model in MODELS, f"unknown model {self.model!r}; choose from {', '.join(MODELS)}"),
            (self.topology in TOPOLOGIES, f"unknown topology {self.topology!r}; choose from {', '.join(TOPOLOGIES)}"),
            (len(self.client_counts) > 0, "--client-counts: give at least one number of clients"),
            (all(n >= 1 for n in self.client_counts), f"--client-counts must be >= 1, got {','.join(map(str, self.client_counts))}"),
            (len(set(self.client_counts)) == len(self.client_counts),
             f"--client-counts: each number once (one column each), got {','.join(map(str, self.client_counts))}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= (2 if self.include_nopeek else 1),
             f"--batch-size must be >= {2 if self.include_nopeek else 1}, got {self.batch_size}"),
            (self.fl_local_epochs >= 1, f"--fl-local-epochs must be >= 1, got {self.fl_local_epochs}"),
            (self.fl_rounds is None or self.fl_rounds >= 1, f"--fl-rounds must be >= 1, got {self.fl_rounds}"),
            (self.sgd_global_batch >= 1, f"--sgd-global-batch must be >= 1, got {self.sgd_global_batch}"),
            (self.precision_bytes in (1, 2, 4, 8), f"--precision-bytes must be 1, 2, 4 or 8, got {self.precision_bytes}"),
            (self.num_classes is None or self.num_classes >= 2, f"--num-classes must be >= 2, got {self.num_classes}"),
            (all(s >= 1 for s in self.input_shape), f"--input-shape must be positive, got {self.input_shape}"),
            (self.dataset_size is None or self.dataset_size >= 1, f"--dataset-size must be >= 1, got {self.dataset_size}"),
            (self.handoff in HANDOFFS, f"--handoff must be one of {', '.join(HANDOFFS)}, got {self.handoff!r}"),
            (self.handoff_optimizer in OPTIMIZER_STATES, f"--handoff-optimizer must be one of {', '.join(OPTIMIZER_STATES)}"),
            (self.leakage in LEAKAGE_TERMS, f"unknown leakage {self.leakage!r}; choose from {', '.join(LEAKAGE_TERMS)}"),
            (self.leakage == "dcor" or self.include_nopeek,
             f"--leakage {self.leakage} chooses the NoPeek term to count: add --include-nopeek"),
            (self.report in REPORTS, f"--report must be one of {', '.join(REPORTS)}, got {self.report!r}"),
            (all(b > a for a, b in zip(self.cuts, self.cuts[1:])), f"--cuts must be increasing, got {cuts}"),
        ])
        if self.dataset not in KNOWN_DATA and not (self.input_shape and self.num_classes is not None):
            try:
                check_dataset_name(self.dataset)
            except DataError as err:
                if not self.dataset.startswith(("npz:", "folder:")):
                    raise ConfigError(f"unknown dataset {self.dataset!r}; choose from {', '.join(KNOWN_DATA)}, another nopeek "
                                      "data set with --dataset-size, or give --input-shape and --num-classes") from err
                raise
        topology = spec(self.topology)
        if self.cuts and not topology.takes(self.cuts):
            raise ConfigError(f"--cuts: {self.topology} takes {topology.cuts_text}, got {cuts}")
        return self

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "clients" in d and "client_counts" not in d:  # cost_config.json written before the rename
            d["client_counts"] = d.pop("clients")
        return super().from_dict(d)


# ---- what the config's values mean ---------------------------------------------------


def check_cost(config: CostConfig) -> CostConfig:
    """`config.validate()`, then what needs the data set's shapes and the model: the data
    set's size is known and covers every client, the cuts lie inside the model. Raises
    ConfigError before any program is compiled; returns `config`."""
    config.validate()
    shape, classes, size = cost_data(config)
    if size is None:
        raise ConfigError(f"--dataset-size: the size of {config.dataset!r} is not known here; give it")
    if size < max(config.client_counts):
        what = f"--dataset-size {size}" if config.dataset_size is not None else f"{config.dataset} ({size} samples)"
        raise ConfigError(f"{what}: fewer samples than --client-counts {max(config.client_counts)}; each client "
                          "needs at least one sample of its own")
    blocks = len(model_blocks(config.model, classes, config.widths))
    if not all(1 <= c < blocks for c in config.cuts):
        raise ConfigError(f"--cuts must be between 1 and {blocks - 1} for {config.model} ({blocks} blocks), got "
                          f"{','.join(map(str, config.cuts))}")
    return config


def cost_data(config: CostConfig) -> tuple[tuple[int, ...], int, int | None]:
    """(sample shape, classes, training samples) with the explicit fields over the data set's."""
    if config.dataset in KNOWN_DATA:
        shape, classes, size = KNOWN_DATA[config.dataset]
    elif config.input_shape and config.num_classes is not None:
        shape, classes, size = config.input_shape, config.num_classes, None
    else:
        (shape, classes), size = sample_shape(config.dataset), None
    return (tuple(config.input_shape) or tuple(shape), config.num_classes or classes,
            config.dataset_size if config.dataset_size is not None else size)


def cost_cuts(config: CostConfig) -> tuple[int, ...]:
    """The cuts as given, or the configuration's default cuts for this model."""
    return resolve_cuts(config.topology, config.model, config.widths, cost_data(config)[1], config.cuts)


def cost_setup(config: CostConfig, clients: int) -> Setup:
    """The topology builder's setup for `clients` data holders."""
    shape, classes, _ = cost_data(config)
    return Setup(model=config.model, widths=tuple(config.widths), input_shape=shape, num_classes=classes,
                 cuts=cost_cuts(config), clients=clients, handoff=config.handoff)


def fl_rounds(config: CostConfig) -> int:
    """Federated learning's rounds: as given, or ceil(epochs / local epochs)."""
    return config.fl_rounds if config.fl_rounds is not None else math.ceil(config.epochs / config.fl_local_epochs)


# ---- the three methods, per client ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MethodCost:
    """One method's cost for one client over the whole training, at `clients` clients.

    exchanges: synchronisations the client takes part in (split-learning steps, FL rounds,
    large-batch SGD steps)."""

    method: str
    clients: int
    client_flops: float
    client_bytes: float
    exchanges: float


def profiles(config: CostConfig, clients: int, flops_for: str = "all") -> tuple[Profile, Profile]:
    """(split profile, whole-model profile) for `clients` clients (cached per process);
    flops_for: whose split-learning programs to compile ("all", "holder", "none")."""
    shape, classes, _ = cost_data(config)
    build_clients = spec(config.topology).cost_clients(clients)
    split = split_profile(config.topology, cost_setup(config, build_clients), config.batch_size,
                          nopeek=config.leakage if config.include_nopeek else None,
                          handoff_optimizer=config.handoff_optimizer, measure=config.measure, flops_for=flops_for)
    whole = whole_profile(config.model, tuple(config.widths), shape, classes, config.batch_size,
                          measure=config.measure and flops_for != "none", flops=flops_for != "none")
    return split, whole


def client_samples(config: CostConfig, clients: int) -> float:
    """Samples a client computes on per epoch: its share D / N, or all D for vertical clients."""
    size = cost_data(config)[2]
    return float(size) if spec(config.topology).splits == "features" else size / clients


def split_step_bytes(config: CostConfig, split: Profile) -> tuple[float, float]:
    """(bytes of one step's messages the client sends or receives, bytes of its hand-offs per turn)."""
    client = split.data_holder
    step = sum(message_bytes(m, config.precision_bytes) for m in client.sent + client.received)
    turn = sum(message_bytes(m, config.precision_bytes) for m in client.handoffs)
    return float(step), float(turn)


def method_costs(config: CostConfig, clients: int, flops_for: str = "all") -> list[MethodCost]:
    """Per-client cost of large-batch SGD, federated learning and split learning at `clients` clients
    (flops_for="none": bytes only, FLOPs NaN, nothing compiled)."""
    split, whole = profiles(config, clients, flops_for)
    size = cost_data(config)[2]
    steps = config.epochs * client_samples(config, clients) / config.batch_size
    step_bytes, turn_bytes = split_step_bytes(config, split)
    turns = config.epochs if clients > 1 and turn_bytes else 0
    share_steps = config.epochs * (size / clients) / config.batch_size
    model = whole.data_holder
    params_bytes = 2.0 * model.params * config.precision_bytes
    sgd_steps = config.epochs * math.ceil(size / config.sgd_global_batch)
    rounds = fl_rounds(config)
    return [
        MethodCost("large_batch_sgd", clients, share_steps * model.step_flops, sgd_steps * params_bytes, sgd_steps),
        MethodCost("federated_learning", clients,
                   rounds * config.fl_local_epochs * (size / clients) / config.batch_size * model.step_flops,
                   rounds * params_bytes, rounds),
        MethodCost("split_learning", clients, steps * split.data_holder.step_flops,
                   steps * step_bytes + turns * turn_bytes, steps),
    ]


def crossover(config: CostConfig) -> float | None:
    """The number of clients above which split learning sends less per client than federated
    learning: SL's bytes fall as a / N + h (a: its steps' messages, h: hand-offs), FL's stay F,
    so N* = a / (F - h). None when SL's bytes do not fall with N (each client holds a slice
    of every sample) or never cross."""
    if spec(config.topology).splits == "features":
        return None
    split, whole = profiles(config, 2, flops_for="none")
    step_bytes, turn_bytes = split_step_bytes(config, split)
    size = cost_data(config)[2]
    a = config.epochs * size / config.batch_size * step_bytes
    h = config.epochs * turn_bytes
    fl = fl_rounds(config) * 2.0 * whole.data_holder.params * config.precision_bytes
    return a / (fl - h) if fl > h else None


# ---- presets and the seed's table ----------------------------------------------------

# The MIT split-learning project page's cost table (README "Cost"): (quantity, method, clients) -> TFLOPs or GB.
SEED_TABLE = {
    ("compute", "large_batch_sgd", 100): 29.4, ("compute", "large_batch_sgd", 500): 5.89,
    ("compute", "federated_learning", 100): 29.4, ("compute", "federated_learning", 500): 5.89,
    ("compute", "split_learning", 100): 0.1548, ("compute", "split_learning", 500): 0.03,
    ("communication", "large_batch_sgd", 100): 13.0, ("communication", "large_batch_sgd", 500): 14.0,
    ("communication", "federated_learning", 100): 3.0, ("communication", "federated_learning", 500): 2.4,
    ("communication", "split_learning", 100): 6.0, ("communication", "split_learning", 500): 1.2,
}

COST_PRESETS: dict[str, tuple[CostConfig, ...]] = {
    # The seed's table: `nopeek cost --preset seed-table --out docs/results/cost` (89 s on 2 CPU
    # cores with the per-cut sensitivity: docs/results/cost/run.json). Compute: VGG-16 on
    # CIFAR-10; communication: ResNet-50 on CIFAR-100; both cut after their first block
    # (conv1_1; the stem), vanilla, 50,000 images shared evenly, float32, FL one round per
    # epoch, large-batch SGD at a global batch of 16,384. The epochs are each half's one free
    # number, fitted to one seed entry (FL compute at 100 clients -> 40; SL communication at
    # 100 clients -> 23); every other entry is then a prediction. Expected: SL/FL compute
    # 1/207 (seed about 1/190), communication crossover at 138 clients (seed: between 100 and 500).
    "seed-table": (
        CostConfig(model="vgg16", dataset="cifar10", cuts=(1,), epochs=40, report="compute", sensitivity=True),
        CostConfig(model="resnet50", dataset="cifar100", cuts=(1,), epochs=23, report="communication", sensitivity=True),
    ),
    # The bundled models on their bundled data, seconds: what a quick look or a test runs.
    "bundled": (
        CostConfig(model="mlp", dataset="digits", client_counts=(2, 10), epochs=30),
        CostConfig(model="cnn", dataset="mnist5k", client_counts=(2, 10), epochs=5),
    ),
}

__all__ = ["CostConfig", "KNOWN_DATA", "METHODS", "MethodCost", "COST_PRESETS", "SEED_TABLE", "check_cost", "client_samples", "crossover",
           "method_costs", "profiles", "split_step_bytes"]
