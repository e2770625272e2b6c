"""Training: stacked models equal separate runs for every topology, the issue's numbers,
run folders (complete or absent), divergence, the CLI."""

import json
import os
import subprocess
import sys

import jax
import msgpack
import numpy as np
import pytest

from nopeek import data
from nopeek.cli import main
from nopeek.errors import ConfigError
from nopeek.training import TrainConfig
from nopeek.training import READINGS, load, one_hot, readings
from nopeek.training import train_stack


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def digits_small():
    return data.load("digits", limit=256)


def _assert_stack_equals_separate(cfg, ds, mode):
    alphas, seeds, noise = [0.0, 0.5, 2.0], [0, 1, 2], [0.0, 0.0, 0.3]
    stacked = train_stack(cfg, ds, alphas=alphas, seeds=seeds, noise_scales=noise, stack_mode=mode, progress=False)
    for k in range(3):
        alone = train_stack(cfg, ds, alphas=[alphas[k]], seeds=[seeds[k]], noise_scales=[noise[k]],
                            stack_mode=mode, progress=False)
        for got, want in zip(jax.tree.leaves(stacked.model_params(k)), jax.tree.leaves(alone.model_params(0))):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        for key in stacked.task_accuracy:
            np.testing.assert_allclose(stacked.task_accuracy[key][k], alone.task_accuracy[key][0], atol=1e-6)
        for key in stacked.leakage:
            np.testing.assert_allclose(stacked.leakage[key][k], alone.leakage[key][0], atol=1e-5)


@pytest.mark.parametrize("mode", ["map", "vmap"])
def test_stack_equals_separate_runs(digits_small, mode):
    _assert_stack_equals_separate(TrainConfig(epochs=2, batch_size=32, widths=(32, 16)), digits_small, mode)


@pytest.mark.parametrize("topology,extra", [
    ("u_shaped", dict(cuts=(1, 2))), ("vertical", dict(clients=2)), ("multi_task", {}),
    ("multi_hop", dict(cuts=(1, 2))), ("round_robin", dict(clients=3)),
])
def test_stack_equals_separate_runs_every_topology(digits_small, topology, extra):
    cfg = TrainConfig(epochs=2, batch_size=32, widths=(32, 16), topology=topology, **extra)
    _assert_stack_equals_separate(cfg, digits_small, "vmap")


def test_digits_numbers(digits):
    """The issue's target: alpha 0 >= 0.95; alpha 3 lowers dCor by >= 0.15, accuracy >= 0.93."""
    result = train_stack(TrainConfig(epochs=30), digits, alphas=[0.0, 3.0], progress=False)
    acc0, acc3 = result.test_accuracy
    dcor0, dcor3 = result.dcor
    assert acc0 >= 0.95
    assert dcor0 - dcor3 >= 0.15
    assert acc3 >= 0.93
    history = result.history
    assert len(history) == 30 and {"train_loss", "train_ce", "heldout_dcor", "test_accuracy"} <= set(history[0])
    assert history[-1]["heldout_dcor"][1] < history[0]["heldout_dcor"][1]  # falls over epochs at alpha 3


def test_log_dcor_and_sgd_train(digits_small):
    cfg = TrainConfig(epochs=10, leakage="log_dcor", optimizer="sgd", lr=0.05, widths=(32,), batch_size=32)
    result = train_stack(cfg, digits_small, alphas=[0.0, 1.0], progress=False)
    assert np.all(result.test_accuracy > 0.7)
    assert result.dcor[1] < result.dcor[0] - 0.05  # the log-dCor penalty also lowers dCor


def test_bad_config_raises(digits_small):
    with pytest.raises(ConfigError, match="alpha"):
        train_stack(TrainConfig(alpha=-1.0), digits_small)
    with pytest.raises(ConfigError, match="alphas must be finite"):
        train_stack(TrainConfig(), digits_small, alphas=[float("nan")])
    with pytest.raises(ConfigError, match="batch-size"):
        train_stack(TrainConfig(batch_size=10_000), digits_small)
    with pytest.raises(ValueError, match="stack of 3"):
        train_stack(TrainConfig(epochs=1), digits_small, alphas=[0, 1, 2], seeds=[0, 1])


def test_epoch_readings_every_epoch_change_no_training_number(digits_small):
    """--epoch-readings adds the readings (null, U-statistic, partial dCor) to every epoch's row
    and leaves every other number of the history as it was."""
    settings = dict(dataset="digits", model="mlp", cuts=(1,), alpha=0.5, epochs=3)
    last = train_stack(TrainConfig(**settings), digits_small, progress=False).history
    every = train_stack(TrainConfig(**settings, epoch_readings=True), digits_small, progress=False).history
    for name in ("heldout_dcor_null95", "heldout_dcor_pvalue", "heldout_dcor_u", "heldout_pdcor_label"):
        assert [np.isfinite(row[name]).all() for row in last] == [False, False, True], name
        assert all(np.isfinite(row[name]).all() for row in every), name
        assert every[-1][name] == last[-1][name]
    for name in ("train_loss", "test_accuracy"):
        assert [row[name] for row in every] == [row[name] for row in last], name
    # dCor(x, label): the readings program's (features padded) or the evaluation's, to round-off
    np.testing.assert_allclose([row["heldout_dcor_label"] for row in every],
                               [row["heldout_dcor_label"] for row in last], rtol=1e-6)
    # the dCor of the epochs without readings comes from another compiled program: equal to round-off
    np.testing.assert_allclose([row["heldout_dcor"] for row in every], [row["heldout_dcor"] for row in last],
                               rtol=0, atol=1e-6)


def test_train_cli_writes_run_and_load_restores(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--model", "mlp", "--cut", "1", "--alpha", "0.5", "--epochs", "2",
            "--batch-size", "64", "--lr", "1e-3", "--optimizer", "adam", "--seed", "0", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["alpha"] == 0.5 and config["cuts"] == [1] and config["topology"] == "vanilla"
    assert 0 <= metrics["dcor"] <= 1 and 0 <= metrics["test_accuracy"] <= 1 and len(metrics["history"]) == 2
    assert [{k: e[k] for k in ("party", "message", "dcor")} for e in metrics["leakage"]] == [
        {"party": "client", "message": "z", "dcor": metrics["dcor"]}]
    entry = metrics["leakage"][0]  # every leakage value comes with its readings
    assert entry["dcor_null95"] < entry["dcor"] and entry["dcor_pvalue"] < 0.05 and 0 < entry["dcor_u"] <= 1
    assert 0 < entry["dcor_label"] < 1 and -1 <= entry["pdcor_label"] <= 1
    # the probe's readings at the last epoch only (the probe is all 360 held-out digits here, so
    # they are the run's own); --epoch-readings takes them every epoch
    assert np.isnan(metrics["history"][0]["heldout_dcor_null95"])
    assert metrics["history"][-1]["heldout_dcor_null95"] == pytest.approx(entry["dcor_null95"], abs=1e-6)
    assert metrics["history"][-1]["heldout_dcor_u"] == pytest.approx(entry["dcor_u"], abs=1e-6)
    assert [(m["sender"], m["receiver"], m["tensor"]) for m in metrics["transcript"]] == [
        ("client", "server", "z"), ("client", "server", "y"), ("server", "client", "dL/dz")]
    assert metrics["transcript"][0]["bytes"] == 64 * 128 * 4
    assert (out / "checkpoint.msgpack").read_bytes()[:1] != b"\x80"  # not a pickle
    # every map key a string: the strict reader (flax's msgpack_restore before 0.12.8) reads it too,
    # though the model's layers sit in an nnx.List keyed 0, 1, ...
    msgpack.unpackb((out / "checkpoint.msgpack").read_bytes(), strict_map_key=True)
    trained = load(str(out))
    ds = data.load("digits")
    acc = float(np.mean(np.argmax(trained.logits(ds.x_test), -1) == ds.y_test))
    assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    # The run's readings are the last epoch's (the probe is the whole held-out set); computed
    # again from the saved model's messages they are the same.
    again = readings(trained.source(None, ds.x_test), trained.message(None, ds.x_test),
                     one_hot(ds.y_test, 10), permutations=TrainConfig().null_permutations)
    for name in READINGS:
        assert again[name] == pytest.approx(entry[name], abs=1e-5), name
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folder left
    # An existing run folder is refused unless --force.
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert main([*argv, "--force", "--epochs", "1"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 1


def test_a_checkpoint_with_integer_keys_still_loads(tmp_path):
    """Checkpoints written before their keys were strings (an nnx.List's layers keyed 0, 1
    as flax 0.12.8 writes them) load into the same model; where this flax cannot read them,
    the error says why."""
    from flax import nnx, serialization

    from nopeek.core import load_params_into, save_params
    from nopeek.errors import CheckpointError

    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])

    template = nnx.state(nnx.eval_shape(lambda: Stack(nnx.Rngs(0))))  # shapes only: nothing compiled
    rng = np.random.default_rng(0)
    saved = jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), nnx.to_pure_dict(template))
    assert 0 in saved["layers"]  # the old format's integer key
    old, new = tmp_path / "old.msgpack", tmp_path / "new.msgpack"
    old.write_bytes(serialization.msgpack_serialize({"client": {"encoder": saved}}))
    try:
        got = load_params_into(str(old), {"client": {"encoder": template}})
    except CheckpointError as err:  # a flax before 0.12.8: it refuses integer map keys
        assert "upgrade flax to 0.12.8" in str(err), err
    else:
        np.testing.assert_array_equal(nnx.to_pure_dict(got["client"]["encoder"])["layers"][1]["kernel"],
                                      saved["layers"][1]["kernel"])
    nnx.replace_by_pure_dict(template, saved)
    save_params(str(new), {"client": {"encoder": template}})
    msgpack.unpackb(new.read_bytes(), strict_map_key=True)  # what nopeek writes now: string keys only
    got = load_params_into(str(new), {"client": {"encoder": nnx.state(nnx.eval_shape(lambda: Stack(nnx.Rngs(0))))}})
    np.testing.assert_array_equal(nnx.to_pure_dict(got["client"]["encoder"])["layers"][0]["bias"], saved["layers"][0]["bias"])


def test_u_shaped_run_keeps_labels_with_the_client(tmp_path):
    out = tmp_path / "u"
    assert main(["train", "--topology", "u_shaped", "--cuts", "1,2", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(m["sender"], m["receiver"], m["tensor"]) for m in metrics["transcript"]] == [
        ("client", "server", "z1"), ("server", "client", "z2"), ("client", "server", "dL/dz2"),
        ("server", "client", "dL/dz1")]
    assert [(e["party"], e["message"]) for e in metrics["leakage"]] == [("client", "z1")]
    trained = load(str(out))
    assert trained.message_ids() == ["client:z1"]


def test_diverged_training_stops_and_writes_nothing(tmp_path):
    out = tmp_path / "boom"
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "train", "--epochs", "3", "--lr", "1e30",
                           "--optimizer", "sgd", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "nopeek train: error: training diverged at epoch 1 (loss" in proc.stderr
    assert "try a smaller --lr or --alpha" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "nope"], "unknown dataset"),
    (["--cut", "7"], "--cuts must be between 1 and 2"),
    (["--alpha", "-0.5"], "--alpha must be finite and >= 0"),
    (["--alpha", "inf"], "--alpha must be finite"),
    (["--topology", "u_shaped", "--cuts", "2,1"], "increasing"),
    (["--epochs", "x"], "invalid int value"),
])
def test_train_cli_errors_are_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "train", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_list_cuts_cli(capsys):
    assert main(["train", "--list-cuts", "--model", "cnn", "--dataset", "mnist5k"]) == 0
    out = capsys.readouterr().out
    assert "(14, 14, 32)" in out and "25088" in out and "fc2" in out


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
@pytest.mark.slow
def test_mnist5k_cnn_accuracy():
    """The issue's target: mnist5k, cnn, default cut, alpha 0 -> test accuracy >= 0.95."""
    ds = data.load("mnist5k")
    result = train_stack(TrainConfig(dataset="mnist5k", model="cnn", epochs=5), ds, progress=False)
    assert result.test_accuracy[0] >= 0.95


def test_auto_stack_mode_follows_the_benchmark():
    from nopeek.protocol import resolve_stack_mode

    assert resolve_stack_mode("auto", has_conv=False) == "vmap"
    assert resolve_stack_mode("auto", has_conv=True) == ("map" if jax.default_backend() == "cpu" else "vmap")
    with pytest.raises(ValueError):
        resolve_stack_mode("pmap")
