"""XLA's CPU defaults nopeek changes: its classic (LLVM IR) fusion emitters, for less compile
effort, and Eigen's convolutions instead of YNNPACK's, for faster training steps.

Convolutions (`FAST_CONVOLUTION_FLAGS`). jaxlib 0.10's XLA:CPU hands every convolution to
YNNPACK (an `__ynn_fusion` of kind "individual convolution") on hosts where it can. On a
2-core Xeon with AVX-512 and AMX those ran one thread at a time: the default cnn's mnist5k training
step took 27.7 ms at batch 64 and 154 ms at 256, against PyTorch's 19.7 and 102 ms
(0.71x, 0.66x). With `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`
XLA keeps its own (Eigen, both cores) convolutions: 15.8 and 99.3 ms, 1.25x and 0.98x of
PyTorch's 19.7 and 97.1 ms in the same run (bench/README.md, "The same Xeon, Eigen's
convolutions instead of YNNPACK's"). A convolution's kernel gradient written as nine offset
matmuls was tried too (the step 1.45x faster under YNNPACK's convolutions) and dropped:
with this flag it no longer paid. Removing YNNPACK's other fusion types (dot, elementwise,
reduce) changed nothing measurable, so they stay. Checked on jaxlib 0.10.2 only
(`FAST_CONVOLUTION_JAXLIB`): the flag is experimental, and an XLA that does not know it,
or its value, aborts.

Compile effort (`QUICK_COMPILE_FLAGS`).

Most of a short nopeek run is XLA compiling, not computing: 71% of the test suite's time
(3,144 of 4,415 s of test bodies, `jax.monitoring`, 7,946 programs) and about half of a
small sweep. On jaxlib 0.10 XLA's CPU backend emits fusions through its newer MLIR-based
emitters, which cost most of the compile time of small elementwise programs (a parameter
initialiser's `truncated_normal`). Measured on a 2-core AVX2 host (bench/README.md, "XLA's
compile effort"; every program compiled, whole processes alternated): a one-epoch mnist5k
cnn `nopeek train` compiles its 51 programs in 5.7 s instead of 7.0 s; the training step
and the attacks' long training loops run as fast (within the host's noise). Results agree
to float32 round-off (not bit for bit: the two emitters order some arithmetic differently).

Tried and not adopted: LLVM level 1 (`--xla_backend_optimization_level=1`) on top cut that
compile time to 3.9 s, but made programs that run thousands of times slower (the FORA and
adaptive attackers' test: 55 s to 84-90 s with the caches warm).

Programs that run once per run (a model's parameter initialisation) compile with LLVM at
level 0 instead, through `one_off_jit` (jax's per-program `compiler_options`): XLA's full
optimisation of a `truncated_normal` initialiser costs about 0.6 s per parameter shape
(the random bits' hash and the inverse error function, optimised and vectorised) and buys
nothing for a program that runs once; at level 0 it costs about 0.06 s. The programs that
run thousands of times (the training step, the attacks' loops) keep XLA's full effort:
level 1 or 0 for a whole mnist5k cnn run made its epochs 45-90% slower.

A default only: a flag the user already put in XLA_FLAGS wins, and nothing is added where
jaxlib is outside the versions each flag was checked on (an XLA that does not know a flag
aborts the process). Nothing changes once jax's backend has started (XLA reads XLA_FLAGS
when the first computation creates it): `import nopeek` then warns (`warn_if_backend_started`),
since that process runs under XLA's own defaults (on the Xeon of bench/README, YNNPACK's
convolutions, the slower ones there); child processes (shards, Ray workers, notebook
kernels) inherit it through the environment. `NOPEEK_XLA_DEFAULTS=0` leaves XLA_FLAGS as it
is, and `one_off_jit` then compiles with XLA's own effort too.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

#: flag -> value for less compile effort (the docstring's "Compile effort").
QUICK_COMPILE_FLAGS = {
    "--xla_cpu_use_fusion_emitters": "false",
}
#: flag -> value for Eigen's multi-threaded convolutions instead of YNNPACK's (the docstring's
#: "Convolutions"); added only on the jaxlib versions in FAST_CONVOLUTION_JAXLIB.
FAST_CONVOLUTION_FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}
#: jaxlib versions (major, minor, patch) FAST_CONVOLUTION_FLAGS was checked on.
FAST_CONVOLUTION_JAXLIB = ((0, 10, 2),)
#: every flag -> value nopeek asks for unless XLA_FLAGS already names the flag.
XLA_DEFAULT_FLAGS = {**QUICK_COMPILE_FLAGS, **FAST_CONVOLUTION_FLAGS}
#: jaxlib versions (major, minor) the flags were measured on; elsewhere XLA's defaults stand.
CHECKED_JAXLIB = ((0, 10),)


def _jaxlib_version() -> tuple[int, ...] | None:
    """jaxlib's (major, minor, patch), or None when it is not installed or not numeric."""
    try:
        return tuple(int(part) for part in version("jaxlib").split(".")[:3])
    except (PackageNotFoundError, ValueError):
        return None


def _jaxlib_checked() -> bool:
    found = _jaxlib_version()
    return found is not None and found[:2] in CHECKED_JAXLIB


#: jax `compiler_options` for a program that runs once per run (see `one_off_jit`).
ONE_OFF_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}


def _defaults_wanted() -> bool:
    return os.environ.get("NOPEEK_XLA_DEFAULTS", "").strip().lower() not in ("0", "false", "no") and _jaxlib_checked()


def one_off_compiler_options() -> dict | None:
    """`ONE_OFF_COMPILE_OPTIONS`, or None (XLA's own effort) where nopeek's defaults are off
    (NOPEEK_XLA_DEFAULTS=0, or a jaxlib they were not checked on)."""
    return dict(ONE_OFF_COMPILE_OPTIONS) if _defaults_wanted() else None


def one_off_jit(fn, **jit_kwargs):
    """`jax.jit(fn, **jit_kwargs)` compiled with `one_off_compiler_options()` (LLVM level 0),
    for a program that runs once or a few times per run, where compiling costs more than
    running (parameter initialisation). Not for anything that runs per step or per sample:
    at level 0 the leakage readings ran 7-8x slower."""
    import jax

    return jax.jit(fn, compiler_options=one_off_compiler_options(), **jit_kwargs)


def set_xla_defaults() -> str:
    """Add XLA_DEFAULT_FLAGS to XLA_FLAGS, each unless the user set it (or set
    NOPEEK_XLA_DEFAULTS=0, or jaxlib is not a checked version: CHECKED_JAXLIB for all,
    FAST_CONVOLUTION_JAXLIB for the convolution flag); returns XLA_FLAGS as it now reads.
    An XLA_FLAGS that does not start with "-" names a file of flags (XLA reads it so) and is
    left as it is."""
    flags = os.environ.get("XLA_FLAGS", "")
    if not _defaults_wanted() or (flags.strip() and not flags.strip().startswith("-")):
        return flags
    named = {item.split("=", 1)[0] for item in flags.split()}
    wanted = dict(QUICK_COMPILE_FLAGS)
    if _jaxlib_version() in FAST_CONVOLUTION_JAXLIB:
        wanted.update(FAST_CONVOLUTION_FLAGS)
    added = [f"{flag}={value}" for flag, value in wanted.items() if flag not in named]
    if added:
        flags = " ".join([flags, *added]).strip()
        os.environ["XLA_FLAGS"] = flags
    return flags


def one_off_init(init):
    """`init(seed) -> parameters` (a pytree) as one `one_off_jit` program of the seed, which
    it receives as `jax.random.key` takes a Python int (int32 unless x64; out of range
    raises), passed as a NumPy scalar so that nothing else compiles: one program per model
    shape instead of an optimised program per parameter shape (eager initialisers)."""
    import jax
    import numpy as np

    jitted = one_off_jit(init)

    def call(seed):
        seed = np.asarray(int(seed), jax.dtypes.canonicalize_dtype(np.int64))
        return _call_top_level(jitted, init, seed)

    return call


def _call_top_level(jitted, fn, *args):
    """`jitted(*args)`, or `fn(*args)` (part of the caller's program) when a jax trace
    (`jax.jit`, `jax.eval_shape`) is staging the call: a nested jit cannot carry compiler
    options, and jax says so when it is staged (a ValueError naming `compiler_options`)."""
    try:
        return jitted(*args)
    except ValueError as err:
        if "compiler_options" not in str(err):
            raise
        return fn(*args)


def _backend_started() -> bool:
    """Whether jax has created its backend (False where this jax does not say)."""
    if "jax" not in sys.modules:  # not imported: certainly not started
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if callable(started) else False


def warn_if_backend_started(before: str, after: str) -> bool:
    """Warn (RuntimeWarning) when set_xla_defaults changed XLA_FLAGS from `before` to `after`
    but jax's backend had already started, so this process does not get the flags; True if
    it warned. Import nopeek before running any jax computation."""
    if before == after or not _backend_started():
        return False
    added = " ".join(after.split()[len(before.split()):])
    warnings.warn(f"nopeek's XLA flags ({added}) do not apply in this process: jax had already started its "
                  "backend when nopeek was imported, so its programs run under XLA's own defaults (on some CPUs "
                  "slower convolutions). Import nopeek before running any jax "
                  "computation (child processes get the flags either way).", RuntimeWarning, stacklevel=3)
    return True
