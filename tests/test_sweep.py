"""Leakage sweeps: the grid, the table, resume after kill -9, refusing a changed config, figures."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nopeek.cli import main
from nopeek.config import ConfigError
from nopeek.sweep import KEY_COLUMNS, PRESETS, RESULT_COLUMNS, SweepConfig, cells, read_results, run_sweep

# The quick preset, made smaller still: 2 cuts x (none, nopeek 2, noise 1) = 6 cells.
TINY = dataclasses.replace(PRESETS["quick"], alphas=(0.0, 2.0), noise_scales=(1.0,), epochs=2, attack_steps=100)
TINY_ARGS = ["--preset", "quick", "--alphas", "0,2", "--noise-scales", "1", "--epochs", "2", "--attack-steps", "100"]


def test_grid_cells():
    config = dataclasses.replace(TINY, cuts=(1, 2), alphas=(0.0, 0.5, 2.0), noise_scales=(1.0, 3.0), seeds=(0, 7))
    grid = cells(config)
    assert len(grid) == 2 * 2 * (1 + 2 + 2)  # cuts x seeds x (none + alphas>0 + noise scales)
    assert len({c.key(config) for c in grid}) == len(grid)
    assert {c.defense for c in grid} == {"none", "nopeek", "noise"}
    assert all(c.alpha == 0 for c in grid if c.defense != "nopeek")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep"))
    rows = run_sweep(TINY, out, progress=False)
    return out, rows


def test_results_table(tiny_sweep):
    out, rows = tiny_sweep
    assert len(rows) == 6
    with open(os.path.join(out, "results.csv")) as f:
        header = next(csv.reader(f))
    assert header == RESULT_COLUMNS
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["dcor"]) <= 1
        assert 0 <= float(r["attack_dcor"]) <= 1 and -1 <= float(r["attack_ssim"]) <= 1
        assert float(r["attack_mse"]) >= 0 and r["dataset"] == "digits" and int(r["group_size"]) == 3
        saved = np.load(os.path.join(out, "samples", r["samples_file"]), allow_pickle=False)
        assert saved.shape == (16, 8, 8, 1)
    undefended = [r for r in rows if r["defense"] == "none"]
    assert all(float(r["attack_ssim"]) > float(r["baseline_ssim"]) for r in undefended)
    assert json.loads(open(os.path.join(out, "config.json")).read())["alphas"] == [0.0, 2.0]
    for name in ("tradeoff.png", "dcor_vs_alpha.png", "ssim_vs_alpha.png", "reconstructions_cut1.png"):
        assert os.path.getsize(os.path.join(out, "figures", name)) > 5000


def test_rerun_is_a_no_op_and_changed_config_is_refused(tiny_sweep):
    out, rows = tiny_sweep
    t0 = time.perf_counter()
    again = run_sweep(TINY, out, progress=False)
    assert again == rows  # nothing retrained, nothing duplicated
    assert time.perf_counter() - t0 < 30
    with pytest.raises(ConfigError, match="different sweep config.*epochs"):
        run_sweep(dataclasses.replace(TINY, epochs=3), out, progress=False)


def test_figures_command_redraws(tiny_sweep, capsys):
    out, _ = tiny_sweep
    target = os.path.join(out, "figures", "tradeoff.png")
    os.remove(target)
    assert main(["figures", out]) == 0
    assert os.path.exists(target) and "tradeoff.png" in capsys.readouterr().out


def test_kill_9_then_resume(tmp_path):
    """Kill a running sweep after its first group lands; the rerun finishes only the rest."""
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "nopeek.cli", "sweep", *TINY_ARGS, "--out", out, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = os.path.join(out, "results.csv")
    deadline = time.time() + 300
    while not os.path.exists(results) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_results(results)
    assert 0 < len(before) < 6, "the kill should land between the two groups"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = read_results(results)
    keys = [tuple(r[c] for c in KEY_COLUMNS) for r in after]
    assert len(after) == 6 and len(set(keys)) == 6
    assert after[: len(before)] == before  # finished cells were kept as they were, not redone


def test_kill_before_any_row_then_resume(tmp_path):
    out = str(tmp_path / "early")
    cmd = [sys.executable, "-m", "nopeek.cli", "sweep", *TINY_ARGS, "--cuts", "1", "--out", out, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert len(read_results(os.path.join(out, "results.csv"))) == 3


def test_cli_overrides_config_file_and_errors(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('cuts = [2]\nalphas = [0.0, 1.0]\nnoise_scales = []\nepochs = 1\nattack_steps = 0\n')
    out = tmp_path / "cfg"
    assert main(["sweep", "--preset", "quick", "--config", str(cfg), "--seeds", "0,1", "--out", str(out), "--quiet"]) == 0
    rows = read_results(str(out / "results.csv"))
    assert len(rows) == 4 and {r["cut"] for r in rows} == {"2"} and {r["seed"] for r in rows} == {"0", "1"}
    assert all(r["attack_ssim"] == "" for r in rows)  # attack switched off
    for argv, message in ((["--cuts", "9"], "out of range"), (["--alphas", "-1"], "alphas must be >= 0"),
                          (["--config", str(tmp_path / "missing.json")], "cannot read")):
        proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "sweep", "--preset", "quick", *argv,
                               "--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match="unknown SweepConfig keys"):
        SweepConfig.from_dict({"cutz": [1]})


def test_default_preset_is_the_documented_grid():
    d = PRESETS["default"].validate()
    assert d.dataset == "mnist5k" and d.model == "cnn" and len(d.cuts) >= 3
    assert 0.0 in d.alphas and len(d.alphas) >= 4 and len(d.noise_scales) == 2 and d.seeds == (0,)
    assert np.isclose(sum(1 for _ in cells(d)), len(d.cuts) * (len(d.alphas) + len(d.noise_scales)))
