"""nopeek: split neural networks, the NoPeek defence, and honest leakage measurement.

What users call, from one place (each name is loaded when first used, so `import nopeek`
stays cheap): `train` a split model into a run folder and `load_run` it back,
`train_stack` several as one program, `sweep` a grid of them, `attack` a trained model,
`run_audit` on activations from any framework, `run_cost` of a collaboration; the configs; and the
registries' `register_*` functions for one's own data set, model, configuration,
attack and defence. The packages below hold the rest: `nopeek.protocol`, `.training`,
`.defences`, `.attacking`, `.dishonest`, `.audit`, `.cost`, `.sweeps`, `.plots`, `.data`.

Importing nopeek turns on JAX's persistent compilation cache in the user's cache folder
(`~/.cache/nopeek/xla`; `NOPEEK_CACHE_DIR` moves it, `NOPEEK_NO_CACHE=1` turns it off),
unless a compilation cache is already configured, and sets two XLA CPU defaults (in
XLA_FLAGS, each unless the user named the flag; `NOPEEK_XLA_DEFAULTS=0` leaves XLA_FLAGS
alone): the classic fusion emitters, a fifth less compile time, and Eigen's convolutions
instead of YNNPACK's (jaxlib 0.10.2), training steps of the cnn 1.75x faster at batch 64
and 1.55x at 256 on an AVX-512/AMX Xeon; the same results to float32 round-off
(nopeek/core/_xla_flags.py). Imported after jax has started its backend (any computation, or
`jax.devices()`), nopeek warns that the flags it adds cannot apply in that process.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version

from nopeek.core import enable_compilation_cache, set_xla_defaults, warn_if_backend_started

# Compiled programs persist in the user's cache folder (NOPEEK_NO_CACHE=1: off): a second
# run of the same job skips XLA's compilations. See nopeek/core/_persistent.py.
enable_compilation_cache()
# Too late once jax has started its backend (a computation ran before `import nopeek`): warned.
_flags_before = os.environ.get("XLA_FLAGS", "")
warn_if_backend_started(_flags_before, set_xla_defaults())
del _flags_before

try:
    __version__ = version("nopeek")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

# name -> (module, attribute)
_API = {
    "train": ("nopeek.training", "run_train"),
    "train_stack": ("nopeek.training", "train_stack"),
    "load_run": ("nopeek.training", "load"),
    "sweep": ("nopeek.sweeps", "run_sweep"),
    "run_preset": ("nopeek.sweeps", "run_preset"),
    "attack": ("nopeek.attacking", "run_attack"),
    "run_audit": ("nopeek.audit", "run_audit"),
    "run_cost": ("nopeek.cost", "run_cost"),
    "TrainConfig": ("nopeek.training", "TrainConfig"),
    "SweepConfig": ("nopeek.sweeps", "SweepConfig"),
    "AttackConfig": ("nopeek.attacking", "AttackConfig"),
    "AuditConfig": ("nopeek.audit", "AuditConfig"),
    "CostConfig": ("nopeek.cost", "CostConfig"),
    "FSHAConfig": ("nopeek.dishonest", "FSHAConfig"),
    "PRESETS": ("nopeek.sweeps", "PRESETS"),
    "Topology": ("nopeek.protocol", "Topology"),
    "Dataset": ("nopeek.data", "Dataset"),
    "register_dataset": ("nopeek.data", "register_dataset"),
    "register_model": ("nopeek.protocol", "register_model"),
    "register_topology": ("nopeek.protocol", "register_topology"),
    "register_defence": ("nopeek.defences", "register"),
    "register_attack": ("attacks", "register"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attribute = _API[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nopeek' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
