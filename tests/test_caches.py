"""What a second run does not pay again, and that it changes nothing: the persistent XLA
compilation cache, the parsed and split bundled data sets, and the command line that only
builds (and imports) the subcommand it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nopeek.core import caching_disabled, user_cache_dir
from nopeek.data import _parsed


def _env(cache: str | None, **extra) -> dict:
    """The environment of a child `nopeek` process: its own cache folder, none of the
    suite's JAX cache settings (so nopeek's own defaults apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "NOPEEK_"))}
    if cache is not None:
        env["NOPEEK_CACHE_DIR"] = cache
    env.update(extra)
    return env


def _train(out: str, env: dict, model: str = "mlp") -> subprocess.Popen:
    """`nopeek train` into `out`, started and left running; its output goes to files beside
    `out` (runs started together never block on a full pipe the test is not yet reading)."""
    logs = [open(f"{out}.{name}", "w", encoding="utf-8") for name in ("stdout", "stderr")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nopeek.cli", "train", "--dataset", "digits", "--model", model, "--limit", "400",
         "--epochs", "2", "--alpha", "0.3", "--null-permutations", "20", "--out", out, "--quiet"],
        stdout=logs[0], stderr=logs[1], text=True, env=env)
    for log in logs:  # the child holds its own copies
        log.close()
    proc.err_path = f"{out}.stderr"
    return proc


def _finish(proc: subprocess.Popen) -> str:
    """The run's stderr, once it has exited (successfully: the test fails with its stderr otherwise)."""
    proc.wait(timeout=600)
    with open(proc.err_path, encoding="utf-8") as fh:
        err = fh.read()
    assert proc.returncode == 0, err
    return err


def _numbers(run: str) -> tuple[dict, bytes]:
    """A run's metrics (its timings aside) and its checkpoint's bytes."""
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    for timing in ("seconds", "train_seconds", "eval_seconds"):
        metrics.pop(timing, None)
    with open(os.path.join(run, "checkpoint.msgpack"), "rb") as fh:
        return metrics, fh.read()


def test_runs_with_the_caches_cold_shared_warm_and_off_give_the_same_numbers(tmp_path):
    cache = str(tmp_path / "cache")
    # two runs at once into an empty cache: both compile and write the same entries
    first, second = (_train(str(tmp_path / name), _env(cache)) for name in ("a", "b"))
    errors = [_finish(first), _finish(second)]
    # no failed read or write of an entry (JAX warns "Error reading/writing persistent compilation cache entry")
    assert not any("persistent compilation cache" in e or "Traceback" in e for e in errors), errors
    entries = os.listdir(os.path.join(cache, "xla"))
    assert any(e.endswith("-cache") for e in entries), entries
    assert {f.split("-")[0] for f in os.listdir(os.path.join(cache, "data"))} >= {"digits", "split"}
    _finish(_train(str(tmp_path / "warm"), _env(cache)))
    _finish(_train(str(tmp_path / "off"), _env(cache, NOPEEK_NO_CACHE="1")))
    reference = _numbers(str(tmp_path / "a"))
    for name in ("b", "warm", "off"):
        metrics, params = _numbers(str(tmp_path / name))
        assert metrics == reference[0], name
        assert params == reference[1], f"{name}: the trained parameters differ"


def test_xla_default_flags_are_defaults_the_user_can_override(monkeypatch):
    from nopeek.core import FAST_CONVOLUTION_FLAGS, QUICK_COMPILE_FLAGS, XLA_DEFAULT_FLAGS, set_xla_defaults
    from nopeek.core import _xla_flags

    assert XLA_DEFAULT_FLAGS == {**QUICK_COMPILE_FLAGS, **FAST_CONVOLUTION_FLAGS} and len(XLA_DEFAULT_FLAGS) == 2
    emitters = [f"{flag}={value}" for flag, value in QUICK_COMPILE_FLAGS.items()]
    convolutions = [f"{flag}={value}" for flag, value in FAST_CONVOLUTION_FLAGS.items()]
    monkeypatch.setattr(_xla_flags, "_jaxlib_version", lambda: (0, 10, 2))  # the version both were checked on
    ours = emitters + convolutions
    monkeypatch.delenv("NOPEEK_XLA_DEFAULTS", raising=False)
    # set, then deleted: monkeypatch records XLA_FLAGS's value now (absent where nopeek added
    # no flags at import), so undo removes what set_xla_defaults writes below; a bare
    # delenv of an absent variable records nothing, and the next setenv would record our
    # flags as the value to restore (they leaked into later tests' subprocesses so)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv("XLA_FLAGS")
    assert set_xla_defaults().split() == ours and os.environ["XLA_FLAGS"].split() == ours
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")  # others' flags are kept
    assert set_xla_defaults().split() == ["--xla_force_host_platform_device_count=4", *ours]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")  # the user's value wins
    assert set_xla_defaults().split() == ["--xla_cpu_use_fusion_emitters=true", *convolutions]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")
    assert set_xla_defaults().split() == ["--xla_cpu_experimental_ynn_fusion_type=+individual_convolution", *emitters]
    monkeypatch.setenv("XLA_FLAGS", "/home/me/xla_flags.txt")  # a file of flags, which XLA reads: left alone
    assert set_xla_defaults() == "/home/me/xla_flags.txt"
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.setattr(_xla_flags, "_jaxlib_version", lambda: (0, 10, 1))  # the convolution flag: 0.10.2 only
    assert set_xla_defaults().split() == ["--xla_dump_to=/tmp/x", *emitters]
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.setenv("NOPEEK_XLA_DEFAULTS", "0")  # the user's opt-out
    assert set_xla_defaults() == "--xla_dump_to=/tmp/x"
    monkeypatch.delenv("NOPEEK_XLA_DEFAULTS")
    monkeypatch.setattr(_xla_flags, "_jaxlib_version", lambda: (0, 11, 0))  # a jaxlib the flags were not checked on
    assert set_xla_defaults() == "--xla_dump_to=/tmp/x"
    monkeypatch.undo()
    ours = [f"{flag}={value}" for flag, value in QUICK_COMPILE_FLAGS.items()]
    if _xla_flags._jaxlib_version() in _xla_flags.FAST_CONVOLUTION_JAXLIB:
        ours += convolutions
    # a fresh `import nopeek` sets them before jax's backend starts, without importing jax
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NOPEEK_XLA_DEFAULTS")}
    out = subprocess.run([sys.executable, "-c", "import nopeek, os, sys; print(os.environ['XLA_FLAGS'], 'jax' in sys.modules)"],
                         capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == [*ours, "False"]


def test_xla_own_defaults_give_the_same_numbers_to_float32_round_off(tmp_path):
    """nopeek's XLA flags change how XLA writes the programs, not what they compute: a
    run under XLA's own defaults (NOPEEK_XLA_DEFAULTS=0) matches one under nopeek's to float32
    round-off, metrics and trained parameters alike."""
    from flax import serialization

    env = {k: v for k, v in _env(None, NOPEEK_NO_CACHE="1").items() if k != "XLA_FLAGS"}
    # the cnn: its convolutions are what FAST_CONVOLUTION_FLAGS moves from YNNPACK to Eigen
    runs = {name: _train(str(tmp_path / name), dict(env, **extra), model="cnn")
            for name, extra in (("ours", {}), ("xla", {"NOPEEK_XLA_DEFAULTS": "0"}))}
    for proc in runs.values():
        _finish(proc)
    (ours, ours_params), (xla, xla_params) = (_numbers(str(tmp_path / name)) for name in runs)
    assert ours.keys() == xla.keys() and ours["test_accuracy"] > 2 * ours["chance_accuracy"], ours["test_accuracy"]
    for key in ("test_accuracy", "dcor"):
        np.testing.assert_allclose(ours[key], xla[key], rtol=1e-4, err_msg=key)
    assert [h["train_loss"] for h in ours["history"]] == pytest.approx([h["train_loss"] for h in xla["history"]], rel=1e-4)
    flat = [np.concatenate([np.ravel(leaf) for leaf in jax_leaves(serialization.msgpack_restore(p))])
            for p in (ours_params, xla_params)]
    np.testing.assert_allclose(flat[0], flat[1], rtol=1e-4, atol=1e-5)


def jax_leaves(tree) -> list:
    import jax

    return [np.asarray(leaf, dtype=np.float64) for leaf in jax.tree_util.tree_leaves(tree)]


def test_no_cache_turns_both_caches_off(monkeypatch, tmp_path):
    monkeypatch.setenv("NOPEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NOPEEK_NO_CACHE", "1")
    assert caching_disabled() and user_cache_dir("data") is None
    calls = []
    got = _parsed.cached_arrays("thing", "k", lambda: calls.append(1) or {"a": np.arange(3)})
    _parsed.cached_arrays("thing", "k", lambda: calls.append(1) or {"a": np.arange(3)})
    assert calls == [1, 1] and not os.listdir(tmp_path)
    np.testing.assert_array_equal(got["a"], np.arange(3))
    for off in ("0", "false", ""):
        monkeypatch.setenv("NOPEEK_NO_CACHE", off)
        assert not caching_disabled()


def test_a_cached_file_that_fails_its_digest_is_made_again(monkeypatch, tmp_path):
    monkeypatch.setenv("NOPEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NOPEEK_NO_CACHE", raising=False)
    made = []

    def make():
        made.append(1)
        return {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.array([1.5, 2.5])}

    first = _parsed.cached_arrays("thing", "abc", make)
    again = _parsed.cached_arrays("thing", "abc", make)
    assert len(made) == 1
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
        assert again[name].dtype == first[name].dtype
    path = tmp_path / "data" / "thing-abc.npz"
    with np.load(path) as archive:  # the same arrays with one value changed: the digest no longer matches
        stored = {name: archive[name] for name in archive.files}
    stored["x"][0, 0] = 99
    np.savez(path, **stored)
    repaired = _parsed.cached_arrays("thing", "abc", make)
    assert len(made) == 2 and repaired["x"][0, 0] == 0
    path.write_bytes(b"not an npz")  # truncated or foreign: made again, never unpickled
    _parsed.cached_arrays("thing", "abc", make)
    assert len(made) == 3


def test_bundled_sets_from_the_cache_equal_a_fresh_parse_and_split(monkeypatch, tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from nopeek.data import load

    monkeypatch.setenv("NOPEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NOPEEK_NO_CACHE", raising=False)
    d = load_digits()
    x_train, x_test, y_train, y_test = train_test_split((d.images / 16.0)[..., None], d.target, test_size=0.25,
                                                        random_state=3, stratify=d.target)
    for _ in range(2):  # cold, then from the cache
        ds = load("digits", seed=3)
        np.testing.assert_array_equal(ds.x_train, x_train.astype(np.float32))
        np.testing.assert_array_equal(ds.x_test, x_test.astype(np.float32))
        np.testing.assert_array_equal(ds.y_train, y_train)
        np.testing.assert_array_equal(ds.y_test, y_test)
    assert {f.split("-")[0] for f in os.listdir(tmp_path / "data")} == {"digits", "split"}


def test_a_warm_run_imports_neither_scikit_learn_nor_the_other_subcommands(tmp_path):
    code = ("import sys; from nopeek.data import load; load('digits'); "
            "from nopeek.cli._main import build_parser; build_parser(only='train'); "
            "print(sorted(m for m in ('sklearn', 'nopeek.sweeps', 'nopeek.audit', 'nopeek.cost', 'matplotlib') "
            "if m in sys.modules))")
    env = _env(str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)  # fills the data cache
    again = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    assert again.stdout.strip() == "[]", again.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sweep", "--help"], ["--version"]])
def test_the_lazy_parser_still_answers_help(argv):
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    if argv == ["--help"]:
        for name in ("dcor", "train", "attack", "audit", "sweep", "cost", "figures", "report"):
            assert f"    {name} " in text
    elif argv[0] == "train":
        assert "--alpha" in text and "--server" in text
    elif argv[0] == "sweep":
        assert "--preset" in text and "--ray" in text
    else:
        assert text.startswith("nopeek ")


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="memory maps are read from Linux's /proc")
def test_relieving_code_maps_frees_compiled_code_and_changes_no_result():
    import jax
    import jax.numpy as jnp

    from nopeek.core import map_count, map_limit, relieve_code_maps

    assert map_limit() > 0
    programs = [jax.jit(lambda x, i=i: jnp.tanh(x * i + 1.0).sum() + jnp.exp(x).mean()) for i in range(20)]
    x = jnp.linspace(0.0, 1.0, 64).reshape(8, 8)
    before = [float(p(x)) for p in programs]
    crowded = map_count()
    assert not relieve_code_maps(share=1.0)  # far below the limit: nothing dropped
    assert relieve_code_maps(share=0.0)
    assert map_count() < crowded - 20  # each program's code maps were released
    assert [float(p(x)) for p in programs] == before  # compiled again, same bits


def test_a_models_initialisation_is_one_program_compiled_at_level_0(monkeypatch):
    """A built configuration initialises every segment and replica in one program, compiled
    with nopeek's one-off options (LLVM level 0; XLA's own under NOPEEK_XLA_DEFAULTS=0):
    not one optimised program per parameter shape. Its parameters are those of the blocks
    built one by one, eagerly, to float32 round-off; the seed decides them."""
    import jax
    import jax.monitoring
    from flax import nnx

    from nopeek.core import ONE_OFF_COMPILE_OPTIONS, one_off_compiler_options
    from nopeek.protocol import build, build_segment
    from nopeek.protocol._topologies import Setup

    monkeypatch.delenv("NOPEEK_XLA_DEFAULTS", raising=False)
    assert one_off_compiler_options() == ONE_OFF_COMPILE_OPTIONS == {"xla_backend_optimization_level": 0}
    monkeypatch.setenv("NOPEEK_XLA_DEFAULTS", "0")
    assert one_off_compiler_options() is None
    monkeypatch.delenv("NOPEEK_XLA_DEFAULTS")

    setup = Setup(model="cnn", widths=(5, 7, 19, 11), input_shape=(8, 8, 1), num_classes=10, cuts=(2, 4))
    built = build("u_shaped", setup)
    lowered = []
    listener = lambda event, secs, **kw: lowered.append(event) if event.endswith("jaxpr_to_mlir_module_duration") else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        params = jax.block_until_ready(built.init(3))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(lowered) == 1, lowered  # 3 segments, 10 parameter arrays: one program

    blocks, shape = setup.blocks(), (8, 8, 1)
    for party, segment, start, stop, arrays in (("client", "bottom", 0, 2, 4), ("server", "middle", 2, 4, 2),
                                                ("client", "top", 4, 6, 4)):  # conv conv | pool dense | dense head
        module, shape = build_segment(blocks, shape, start, stop, seed=3)  # eagerly, block by block
        pairs = list(zip(jax.tree.leaves(nnx.split(module)[1]), jax.tree.leaves(params[party][segment]), strict=True))
        assert len(pairs) == arrays, (party, segment)
        for eager, ours in pairs:
            np.testing.assert_allclose(np.asarray(ours), np.asarray(eager), rtol=1e-5, atol=1e-6)
    # Inside a caller's trace (a nested jit cannot carry compiler options) it is part of the
    # caller's program: the same parameters.
    assert jax.eval_shape(lambda: built.init(3))["client"]["bottom"] is not None
    inside = jax.jit(lambda: built.init(3))()
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(inside), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    again, other = built.init(3), built.init(4)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))
    assert not np.allclose(jax.tree.leaves(params["client"])[1], jax.tree.leaves(other["client"])[1])


#: Compiled first by the unmarked test below, then called again by the marked one.
_PROBE = jax.jit(lambda a: 2.0 * a + 1.0)
_CHILD_MODE = [sys.executable, "-c", "import jax; print(jax.config.read('jax_disable_most_optimizations'))"]


@pytest.fixture
def mode_at_fixture():
    """The compile mode a test's fixtures run in."""
    return jax.config.read("jax_disable_most_optimizations")


def test_unmarked_tests_compile_at_xlas_least_effort_and_tell_their_subprocesses(mode_at_fixture):
    """tests/conftest.py: a test without the `full_compile` mark, and its fixtures, compile at
    XLA's least effort, in this process and in the processes it starts."""
    assert mode_at_fixture is True and jax.config.read("jax_disable_most_optimizations") is True
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"
    assert subprocess.run(_CHILD_MODE, capture_output=True, text=True, check=True).stdout.strip() == "True"
    _PROBE(np.ones(3, np.float32)).block_until_ready()


@pytest.mark.full_compile
def test_marked_tests_compile_at_full_effort_and_reuse_no_program_of_the_other_mode(mode_at_fixture):
    """A `full_compile` test runs at XLA's full effort, fixtures and children too, and compiles
    again a program an unmarked test compiled (jax's in-memory programs were dropped)."""
    assert mode_at_fixture is False and jax.config.read("jax_disable_most_optimizations") is False
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "0"
    assert subprocess.run(_CHILD_MODE, capture_output=True, text=True, check=True).stdout.strip() == "False"
    from jax import monitoring

    lowered = []
    listener = lambda event, secs, **kw: lowered.append(event) if event.endswith("jaxpr_to_mlir_module_duration") else None  # noqa: E731
    monitoring.register_event_duration_secs_listener(listener)
    try:
        _PROBE(np.ones(3, np.float32)).block_until_ready()
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert len(lowered) == 1
