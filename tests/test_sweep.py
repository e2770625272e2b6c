"""Leakage sweeps: the grid, the table, resume after kill -9 (and from tables written before
the engine), refusing a changed config, malformed rows, figures, topologies."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nopeek.cli import main
from nopeek.errors import ConfigError
from nopeek.sweeps import KEY_COLUMNS, RESULT_COLUMNS, read_rows
from nopeek.sweeps import PRESETS, SweepConfig, cells, check_sweep, run_sweep

# The quick preset, made smaller still: 2 cuts x (none, nopeek 2, noise 1) = 6 cells.
TINY = PRESETS["quick"].replace(alphas=(0.0, 2.0), noise_scales=(1.0,), epochs=2, attack_steps=100)


def read_results(path):
    return read_rows(path)
TINY_ARGS = ["--preset", "quick", "--alphas", "0,2", "--noise-scales", "1", "--epochs", "2", "--attack-steps", "100"]


def test_grid_cells():
    config = TINY.replace(cuts=("1", "2"), alphas=(0.0, 0.5, 2.0), noise_scales=(1.0, 3.0), seeds=(0, 7))
    grid = cells(config)
    assert len(grid) == 2 * 2 * (1 + 2 + 2)  # cuts x seeds x (none + alphas>0 + noise scales)
    assert len({c.key(config) for c in grid}) == len(grid)
    assert {c.defense for c in grid} == {"none", "nopeek", "noise"}
    assert all(c.alpha == 0 for c in grid if c.defense != "nopeek")
    # Each cut list goes to the topologies that take that many cuts.
    mixed = TINY.replace(topologies=("vanilla", "u_shaped"), cuts=("1", "2", "1-2"))
    assert mixed.groups() == [("vanilla", "1"), ("vanilla", "2"), ("u_shaped", "1-2")]
    with pytest.raises(ConfigError, match="u_shaped: takes 2 cut"):
        TINY.replace(topologies=("vanilla", "u_shaped")).validate()


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
        assert (r["topology"], r["party"], r["message"], r["diverged"]) == ("vanilla", "client", "z", "false")
        assert float(r["best_ssim"]) == max(float(r["attack_ssim"]), float(r["baseline_ssim"]))
        assert float(r["best_mse"]) == min(float(r["attack_mse"]), float(r["baseline_mse"]))
        assert r["collapsed"] in ("true", "false")
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
        run_sweep(TINY.replace(epochs=3), out, progress=False)


def test_force_discards_what_the_old_sweep_wrote_and_nothing_else(tiny_sweep, tmp_path):
    """`--force` with another config: the old rows set aside, its samples, figures, ranking and
    page gone (a later report would show them as the new sweep's), a user's notes kept."""
    from nopeek.sweeps._sweep import prepare_output

    out = str(tmp_path / "copy")
    shutil.copytree(tiny_sweep[0], out)
    for name in ("ranking.csv", "ranking.md", "figures/notes.txt"):
        with open(os.path.join(out, name), "w") as fh:
            fh.write("old ranking" if name.startswith("ranking") else "mine")
    prepare_output(out, TINY.replace(epochs=3), force=True)
    assert sorted(os.listdir(out)) == ["config.json", "figures", "results.csv.discarded"]
    assert os.listdir(os.path.join(out, "figures")) == ["notes.txt"]
    assert json.load(open(os.path.join(out, "config.json")))["epochs"] == 3
    with open(os.path.join(out, "results.csv"), "w") as fh:  # the second sweep's rows, discarded in turn
        fh.write("second\n")
    prepare_output(out, TINY.replace(epochs=4), force=True)
    assert open(os.path.join(out, "results.csv.discarded.2")).read() == "second\n"  # the first kept
    assert sorted(os.listdir(out)) == ["config.json", "figures", "results.csv.discarded", "results.csv.discarded.2"]


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


def test_tables_from_before_the_engine_resume(tmp_path, tiny_sweep):
    """A results.csv without topology/party/message columns (and its old config.json) reads
    as vanilla, and the rerun adds only the missing cells."""
    old_out, rows = tiny_sweep
    out = tmp_path / "old"
    out.mkdir()
    old_columns = [c for c in RESULT_COLUMNS if c not in ("topology", "party", "message", "best_mse", "best_psnr",
                                                          "best_ssim", "best_dcor", "best_classifier_accuracy",
                                                          "collapsed", "collapse_reason", "diverged", "diverged_epoch")]
    keep = [r for r in rows if r["cut"] == "1"]
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)
    old_config = {k: v for k, v in TINY.to_dict().items() if k in (
        "dataset", "model", "widths", "alphas", "noise_scales", "seeds", "leakage", "noise_kind", "epochs",
        "batch_size", "lr", "optimizer", "task_weight", "limit", "data_dir", "attack_steps", "leak_fraction")}
    old_config.update(cuts=[1, 2], data_seed=0)
    (out / "config.json").write_text(json.dumps(old_config))
    assert {r["topology"] for r in read_results(str(out / "results.csv"))} == {"vanilla"}
    again = run_sweep(TINY, str(out), progress=False)
    assert len(again) == 6
    assert {(r["cut"], r["defense"]) for r in again} == {(r["cut"], r["defense"]) for r in rows}


def test_a_folder_from_before_a_new_config_field_resumes(tmp_path, tiny_sweep):
    """A sweep folder written by a nopeek without some config field (here the attack's
    `whiten` and `leak_fractions`): its rows' config_hash is its config.json's, not this
    version's digest of the same sweep, and it resumes without rerunning a cell."""
    from nopeek.sweeps._config import dict_digest

    old_out, rows = tiny_sweep
    out = tmp_path / "older"
    out.mkdir()
    old_config = {k: v for k, v in json.load(open(os.path.join(old_out, "config.json"))).items()
                  if k not in ("whiten", "leak_fractions")}
    (out / "config.json").write_text(json.dumps(old_config))
    old_hash = dict_digest(old_config)
    assert old_hash != TINY.digest()
    with open(os.path.join(old_out, "results.csv"), newline="") as fh:
        reader = csv.DictReader(fh)
        fields, table = reader.fieldnames, [{**r, "config_hash": old_hash} for r in reader]
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
    again = run_sweep(TINY, str(out), progress=False)
    assert len(again) == len(rows) and {r["config_hash"] for r in again} == {old_hash}  # nothing rerun
    # a config.json that does not hash to the rows' digest explains nothing: still refused
    (out / "config.json").write_text(json.dumps(TINY.to_dict()))
    with pytest.raises(ConfigError, match="rows of another sweep config"):
        run_sweep(TINY, str(out), progress=False)


def test_truncated_row_is_rerun(tmp_path, tiny_sweep):
    old_out, _ = tiny_sweep
    out = tmp_path / "trunc"
    out.mkdir()
    (out / "config.json").write_text(open(os.path.join(old_out, "config.json")).read())
    text = open(os.path.join(old_out, "results.csv")).read().rstrip("\n")
    (out / "results.csv").write_text(text[: len(text) - 40] + "\n")  # the last row cut short
    assert len(read_results(str(out / "results.csv"))) == 5
    rows = run_sweep(TINY, str(out), progress=False)
    assert len(rows) == 6 and len({tuple(r[c] for c in KEY_COLUMNS) for r in rows}) == 6


def test_topology_sweep_rows(tmp_path):
    config = TINY.replace(topologies=("vanilla", "u_shaped"), cuts=("1", "1-2"), alphas=(0.0,), noise_scales=(),
                          epochs=1, attack_steps=20)
    rows = run_sweep(config, str(tmp_path / "topo"), progress=False)
    assert sorted((r["topology"], r["cut"], r["party"], r["message"]) for r in rows) == [
        ("u_shaped", "1-2", "client", "z1"), ("vanilla", "1", "client", "z")]
    assert os.path.exists(tmp_path / "topo" / "figures" / "tradeoff.png")


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
    for argv, message in ((["--cuts", "9"], "out of range"), (["--alphas", "-1"], "alphas must be finite and >= 0"),
                          (["--config", str(tmp_path / "missing.json")], "cannot read")):
        proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "sweep", "--preset", "quick", *argv,
                               "--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match=r"unknown SweepConfig keys: cutz \(did you mean cuts\?\), zzz$"):
        SweepConfig.from_dict({"cutz": [1], "zzz": 2})


def test_config_judges_values_and_check_sweep_the_data_and_models():
    """`SweepConfig.validate` reads no data and builds no model: what needs the data set's
    shapes or the models (a cut past the model's blocks, a defence the task cannot take) is
    refused by `check_sweep`, which every sweep entry point runs before any training."""
    for changes, message in ((dict(cuts=("9",)), "out of range: mlp has cuts 1..2"),
                             (dict(defenses=("marvell=1.0",)), "marvell needs a binary task")):
        config = TINY.replace(**changes)
        assert config.validate() is config
        with pytest.raises(ConfigError, match=message):
            check_sweep(config)


def test_fsha_steps_means_iterations_everywhere():
    """`fsha_steps` is FSHA's iterations in train and sweep alike (2000 by default); a sweep's
    FSHA column is `servers`. A config.json written before reads back as it ran."""
    from nopeek.dishonest import DEFAULT_STEPS, FSHAConfig

    assert FSHAConfig().fsha_steps == DEFAULT_STEPS == TINY.fsha_steps and TINY.servers == ()
    old = {k: v for k, v in TINY.to_dict().items() if k != "servers"}
    for steps, servers, read in ((None, (), DEFAULT_STEPS), (0, (), DEFAULT_STEPS), (30, ("fsha",), 30)):
        config = SweepConfig.from_dict({**old, "fsha_steps": steps})
        assert (config.servers, config.fsha_steps) == (servers, read)
    # A --config file is upgraded alone, before the command line's fields are merged in.
    assert SweepConfig.upgrade({"fsha_steps": 30}) == {"fsha_steps": 30, "servers": ["fsha"]}


def test_default_preset_is_the_documented_grid():
    d = PRESETS["default"].validate()
    assert d.dataset == "mnist5k" and d.model == "cnn" and len(d.cuts) >= 3 and d.topologies == ("vanilla",)
    assert 0.0 in d.alphas and len(d.alphas) >= 4 and len(d.noise_scales) == 2 and d.seeds == (0,)
    assert np.isclose(sum(1 for _ in cells(d)), len(d.cuts) * (len(d.alphas) + len(d.noise_scales)))


def test_sweep_and_attack_use_the_same_leaked_samples_and_tensor(tmp_path, monkeypatch):
    """For the same settings, `nopeek sweep` and `nopeek attack` fit the decoder on the same
    leaked samples and the same tensor: what was sent, noise defence included."""
    import attacks
    from nopeek.attacking import AttackConfig, run_attack

    seen = []
    real = attacks.fit_decoders

    def spy(z, x, **kw):
        seen.append((np.asarray(z), np.asarray(x)))
        return real(z, x, **kw)

    monkeypatch.setattr(attacks.decoder, "fit_decoders", spy)
    config = TINY.replace(cuts=("1",), alphas=(0.0,), noise_scales=(1.0,), epochs=1, attack_steps=5)
    run_sweep(config, str(tmp_path / "sweep"), progress=False)
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--widths", "64,32", "--cut", "1", "--epochs", "1",
                 "--noise-scale", "1", "--out", run, "--quiet"]) == 0
    run_attack(run, AttackConfig(attack_steps=5), str(tmp_path / "attack"))
    (z_sweep, x_sweep), (z_attack, x_attack) = seen
    np.testing.assert_array_equal(x_sweep, x_attack)
    np.testing.assert_allclose(z_sweep[1], z_attack[0], rtol=1e-4, atol=1e-5)  # the noise cell of the stack
    assert not np.allclose(z_sweep[0], z_attack[0], atol=1e-2)  # and the noise is really in it


def test_sweep_shows_the_attack_being_fitted(tmp_path, capsys):
    """A long attack phase is not silent: with progress on, a bar over (message, attack)
    pairs names the attack being fitted and on how many models."""
    config = TINY.replace(alphas=(0.0, 1.0), noise_scales=(), epochs=1, attack_steps=5, limit=200)
    run_sweep(config, str(tmp_path / "sweep"), progress=True)
    err = capsys.readouterr().err
    assert "vanilla cut 1: attacks" in err and "decoder on z (2 models)" in err


def test_print_config_shows_what_would_run_and_reads_back(tmp_path, monkeypatch, capsys):
    """`--print-config` prints the resolved config (preset, file, options) as JSON that
    `--config` reads back, and its cell count; it writes nothing."""
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--preset", "quick", "--epochs", "7", "--seeds", "0,1", "--print-config"]) == 0
    printed = capsys.readouterr()
    want = PRESETS["quick"].replace(epochs=7, seeds=(0, 1))
    assert json.loads(printed.out) == want.to_dict()
    assert printed.err.startswith(f"{len(cells(want))} cells in {len(want.groups())} group(s)")
    (tmp_path / "c.json").write_text(printed.out)
    assert main(["sweep", "--config", "c.json", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == want.to_dict()
    assert main(["sweep", "--config", "c.json", "--print-config", "--shard", "1/2", "--out", "s"]) == 0
    in_shard = sum(c.cut == "2" for c in cells(want))
    assert capsys.readouterr().err.splitlines()[1] == f"shard 1/2: {in_shard} cells in 1 group(s) (vanilla cut 2)"
    with pytest.raises(SystemExit):
        main(["sweep", "--print-config", "--merge-shards", "s"])
    assert "--merge-shards DIR runs none" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["c.json"]
