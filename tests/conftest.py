"""Shared fixtures: strict numerics and a float64 switch for reference comparisons.

The suite shares one persistent XLA compilation cache, fresh for each session: the many
tests that run the same small programs (in this process, in `nopeek` subprocesses and in
notebook kernels, which inherit the environment) compile each one once. It changes the
suite's time (766 s to 564 s on 2 cores, three notebooks more), not what it computes.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="nopeek-test-xla-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    # A size limit (nopeek's own, core._persistent.COMPILATION_CACHE_BYTES) is what makes jax
    # lock the cache's files: the suite's workers (pytest-xdist) write to it at once.
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_COMPILATION_CACHE_MAX_SIZE=str(2 * 1024**3))

import nopeek  # noqa: E402,F401  (its XLA_FLAGS defaults, before any computation starts jax's backend)
import jax  # noqa: E402  (after the cache settings, which jax reads at import)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Silent rank promotion hides shape bugs; make it an error everywhere in the suite.
jax.config.update("jax_numpy_rank_promotion", "raise")


#: jax's flag (and environment variable, for `nopeek` subprocesses, Ray workers and notebook
#: kernels) for XLA's least compile effort: LLVM at level 0, no expensive passes.
QUICK_COMPILE = "jax_disable_most_optimizations"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the test's fixtures: compile at XLA's least effort unless the test is marked
    `full_compile`. Most tests run each program a few times, and compiling is most of their
    time (tests/test_engine.py: 103 of 131 s); the programs compute the same functions either
    way, to float32 round-off. Tests that run long loops (attack fits, training to an accuracy,
    two notebooks) keep XLA's full effort, as users run. Where the mode changes, jax's
    in-memory programs are dropped, so that no test mixes programs of both modes (the
    persistent cache keys them apart by their compile options). A module-scoped fixture is
    built in the mode of the first test that asks for it. Child processes read the variable
    unless a test clears jax's variables on purpose (tests/test_caches.py's `_env`, to start
    `nopeek` as a user would). The mode is bench/README.md's "The test suite"."""
    quick = item.get_closest_marker("full_compile") is None
    os.environ[QUICK_COMPILE.upper()] = "1" if quick else "0"
    if jax.config.read(QUICK_COMPILE) != quick:
        jax.clear_caches()
        jax.config.update(QUICK_COMPILE, quick)


@pytest.fixture(autouse=True)
def _below_the_map_limit():
    """After each test, drop jax's compiled programs if the process holds many memory maps:
    the suite compiles thousands of programs in one process, and XLA's CPU code maps would
    otherwise reach vm.max_map_count and crash it (see nopeek.core.relieve_code_maps)."""
    yield
    from nopeek.core import relieve_code_maps

    relieve_code_maps()


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_configure(config):
    """In the controller (or a run without workers), before any worker starts: import dcor
    once. Its first import after an install compiles its numba kernels and writes numba's
    cache beside them; two workers doing that at once (a fresh clone's first run) have
    aborted one of them inside LLVM while the other was writing the same cache files."""
    if not hasattr(config, "workerinput"):
        import dcor  # noqa: F401


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (the default, pyproject.toml): one worker per core this process may use, at
    most 4 (each worker is a process with its own jax and its own compiled programs)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
