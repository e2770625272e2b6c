"""Training split models: stacks of K models in one compiled program, the leakage of what
they send, and run folders (`run_train` writes one, `load` restores it)."""

from nopeek.training._config import OPTIMIZERS, TrainConfig, TrainingConfig, cuts_of, make_optimizer, strengths_of
from nopeek.training._health import EXPLOSION_FACTOR, chance_accuracy, collapse_reason, exploded
from nopeek.training._leakage import (
    DCOR_BLOCK, FEATURE_BUCKET, READINGS, LeakEntry, bucketed_readings, label_dcor, leak_entries, measure_leakage, measure_readings, one_hot, probe_dcor,
    readings, readings_width, stack_readings,
)
from nopeek.training._loop import (
    StackResult, StackState, batch_order, build_topology, data_shards, evaluate, has_conv, init_params, init_stack, make_eval_fn,
    make_step_fn, model_strengths, stack_hparams, train_stack,
)
from nopeek.training._runs import TrainedRun, load, message_apply, message_state, run_collapse, run_metrics, run_train

__all__ = [
    "DCOR_BLOCK", "EXPLOSION_FACTOR", "FEATURE_BUCKET", "OPTIMIZERS", "READINGS", "LeakEntry", "StackResult", "StackState", "TrainConfig",
    "TrainedRun", "TrainingConfig", "batch_order", "bucketed_readings", "build_topology", "chance_accuracy", "collapse_reason", "cuts_of",
    "data_shards", "evaluate", "exploded", "has_conv", "init_params", "init_stack", "label_dcor", "leak_entries", "load",
    "make_eval_fn", "make_optimizer", "make_step_fn", "measure_leakage", "measure_readings", "message_apply", "message_state", "model_strengths",
    "one_hot", "probe_dcor", "readings", "readings_width", "run_collapse", "stack_readings",
    "run_metrics", "run_train", "stack_hparams", "strengths_of", "train_stack",
]
