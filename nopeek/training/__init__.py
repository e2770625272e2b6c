"""Training split models: stacks of K models in one compiled program, the leakage of what
they send, and run folders (`run_train` writes one, `load` restores it)."""

from nopeek.training._config import OPTIMIZERS, TrainConfig, TrainingConfig, cuts_of, make_optimizer, strengths_of
from nopeek.training._health import chance_accuracy, collapse_reason
from nopeek.training._leakage import DCOR_BLOCK, LeakEntry, leak_entries, measure_leakage, probe_dcor
from nopeek.training._loop import (
    StackResult, StackState, batch_order, build_topology, data_shards, evaluate, has_conv, init_params, init_stack, make_eval_fn,
    make_step_fn, model_strengths, stack_hparams, train_stack,
)
from nopeek.training._runs import TrainedRun, load, run_metrics, run_train

__all__ = [
    "DCOR_BLOCK", "OPTIMIZERS", "LeakEntry", "StackResult", "StackState", "TrainConfig", "TrainedRun", "TrainingConfig",
    "batch_order", "build_topology", "chance_accuracy", "collapse_reason", "cuts_of", "data_shards", "evaluate", "has_conv", "init_params", "init_stack", "leak_entries",
    "load", "make_eval_fn", "make_optimizer", "make_step_fn", "measure_leakage", "model_strengths", "probe_dcor",
    "run_metrics", "run_train", "stack_hparams", "strengths_of", "train_stack",
]
