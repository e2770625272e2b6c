"""XLA's code-generation effort: nopeek's programs compile at LLVM optimisation level 1.

Most of a short nopeek run is XLA compiling, not computing: the small modern-attacks sweep
spent 78 of its 108 s in XLA's backend compiler on a 2-core AVX2 host. At
`--xla_backend_optimization_level=1` (XLA's CPU default is 2) the same sweep compiled in
52 s, and the NoPeek cnn step ran as fast as before (49 against 54 ms at batch 64,
565 against 593 ms at batch 256): its time is in the convolution and matmul library calls,
which the level does not touch. LLVM's levels keep IEEE semantics (no reassociation
without fast-math flags), so results are the same; see bench/README.md.

The level is only a default: an `xla_backend_optimization_level` the user put in XLA_FLAGS
wins, and nothing changes once jax's backend has started (XLA reads XLA_FLAGS when the
first computation creates it). Child processes (shards, Ray workers, notebook kernels)
inherit it through the environment.
"""

from __future__ import annotations

import os

#: XLA's backend (LLVM) optimisation level for nopeek's programs; XLA's CPU default is 2.
BACKEND_OPTIMIZATION_LEVEL = 1
_FLAG = "--xla_backend_optimization_level"


def prefer_quick_compiles(level: int = BACKEND_OPTIMIZATION_LEVEL) -> str:
    """Add `--xla_backend_optimization_level=level` to XLA_FLAGS unless the user set one;
    returns XLA_FLAGS as it now reads."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:
        flags = f"{flags} {_FLAG}={int(level)}".strip()
        os.environ["XLA_FLAGS"] = flags
    return flags
