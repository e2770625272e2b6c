"""The split-learning protocol: models as block lists, configurations as graphs of parties,
and one runner that executes a training step of any of them, with the hooks defences use.

Registries: models (`register_model`, `MODELS`) and configurations (`register_topology`,
`TOPOLOGIES`). Everything here is a function of arrays and configs; nothing trains.
"""

from nopeek.errors import TopologyError
from nopeek.protocol._config import ModelConfig
from nopeek.protocol._conv import conv_layer
from nopeek.protocol._norm import GroupNorm
from nopeek.protocol._engine import NO_DEFENCE, Composite, Defence, Penalty, end_to_end_loss, forward, protocol_gradients
from nopeek.protocol._graph import (
    LOSS_KINDS, MERGES, Handoff, Loss, Message, Party, Segment, Topology, is_raw_input, merged_name, segment_fn,
)
from nopeek.protocol._losses import LEAKAGE_TERMS, cross_entropy, leakage
from nopeek.protocol._models import (
    ACTIVATIONS, MODELS, BlockSpec, BlockStack, Conv, CutInfo, Dense, MaxPool, ModelSpec, block_key, build_model,
    build_segment, check_logits, conv, dense, list_cuts, max_pool_2x2, model_blocks, out_shape, with_cut_activation,
)
from nopeek.protocol._models import register as register_model
from nopeek.protocol._partition import PARTITIONS, partition
from nopeek.protocol._stacking import (
    STACK_MODES, ModelList, device_count, model_at, model_count, over_stack, padded_size, resolve_stack_mode,
    shard_models, stack_models, stack_trees,
)
from nopeek.protocol._topologies import (
    CUT_RULES, DEFAULT_TOPOLOGY, HANDOFFS, NOPEEK_HOPS, SLICINGS, TASKS, TOPOLOGIES, Built, Receiver, Setup,
    TopologySpec, build, build_multi_hop, build_multi_task, build_round_robin, build_u_shaped, build_vanilla, build_vertical, default_cuts,
    resolve_cuts, spec, task_labels,
)
from nopeek.protocol._topologies import register as register_topology
from nopeek.protocol._transcript import format_transcript, transcript
from nopeek.protocol._transport import Capture, Log, Recorder, Transport, gradient_name

__all__ = [
    "ACTIVATIONS", "CUT_RULES", "DEFAULT_TOPOLOGY", "HANDOFFS", "LEAKAGE_TERMS", "LOSS_KINDS", "MERGES", "MODELS",
    "NOPEEK_HOPS", "NO_DEFENCE", "PARTITIONS", "SLICINGS", "STACK_MODES", "TASKS", "TOPOLOGIES", "BlockSpec",
    "BlockStack", "Built", "Capture", "Composite", "Conv", "CutInfo", "Defence", "Dense", "GroupNorm", "Handoff", "Log", "Loss",
    "MaxPool", "Message", "ModelConfig", "ModelList", "ModelSpec", "Party", "Penalty", "Receiver", "Recorder", "Segment", "Setup",
    "Topology", "TopologyError", "TopologySpec", "Transport", "block_key", "build", "build_model", "build_multi_hop", "build_multi_task",
    "build_round_robin", "build_segment", "merged_name", "build_u_shaped", "build_vanilla", "build_vertical", "check_logits", "conv",
    "conv_layer", "cross_entropy", "default_cuts", "dense", "device_count", "end_to_end_loss", "format_transcript", "forward",
    "gradient_name", "is_raw_input", "leakage", "list_cuts", "max_pool_2x2", "model_at", "model_blocks", "model_count",
    "out_shape", "over_stack", "padded_size", "partition", "protocol_gradients", "register_model",
    "register_topology", "resolve_cuts", "resolve_stack_mode", "segment_fn", "shard_models", "spec", "stack_models",
    "stack_trees", "task_labels", "transcript", "with_cut_activation",
]
