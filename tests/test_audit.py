"""`nopeek audit`: the audit of saved activations equals `nopeek attack` on the same model;
one-line input errors that leave nothing behind; several targets; label leakage."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import attacks
from nopeek import data
from nopeek.attacking import AttackConfig, attacker_indices, per_sample_gradients, run_attack
from nopeek.audit import MIN_PAIRS, AuditConfig, AuditError, run_audit
from nopeek.cli import main
from nopeek.training import TrainConfig
from nopeek.training import load, run_train

FAST = ["--attack-steps", "20", "--quiet"]


def _images(rng, n, shape=(8, 8, 1)):
    return rng.uniform(size=(n, *shape)).astype(np.float32)


def _client(x, w):
    return np.maximum(x.reshape(len(x), -1) @ w, 0).astype(np.float32)


@pytest.fixture
def files(tmp_path, rng):
    """A leaked.npz (48 pairs) and a heldout.npz (32 samples) of 8x8 images through a random ReLU layer."""
    w = rng.normal(size=(64, 16)) / 8
    xl, xh = _images(rng, 48), _images(rng, 32)
    np.savez(tmp_path / "leaked.npz", x=xl, z=_client(xl, w), y=np.arange(48) % 3)
    np.savez(tmp_path / "heldout.npz", x=xh, z=_client(xh, w), y=np.arange(32) % 3)
    return tmp_path, {"x": xl, "z": _client(xl, w)}, {"x": xh, "z": _client(xh, w)}


def _audit(tmp_path, *extra, pairs="leaked.npz", targets=("heldout.npz",)):
    args = ["audit", "--pairs", *[str(tmp_path / p) for p in np.atleast_1d(pairs)],
            "--targets", *[str(tmp_path / t) for t in targets], "--out", str(tmp_path / "out"), *FAST, *extra]
    return main(args)


def _fails(tmp_path, capsys, *extra, match, **kw):
    """The audit ends with one `nopeek audit: error:` line, exit 2, and leaves no output folder."""
    existed = (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        _audit(tmp_path, *extra, **kw)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("nopeek audit: error: "), err
    assert match in err[0], err[0]
    assert (tmp_path / "out").exists() == existed
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f or ".old-" in f]
    return err[0]


def test_audit_of_saved_activations_equals_nopeek_attack(tmp_path):
    """Train a digits model, attack its run folder, then audit the same activations as arrays."""
    run = str(tmp_path / "run")
    train_metrics = run_train(TrainConfig(dataset="digits", epochs=2, widths=(32,)), run, progress=False)
    config = AttackConfig(attack="decoder", attack_steps=200, attack_lr=1e-3, attack_seed=0)
    attack = run_attack(run, config, str(tmp_path / "attack"))
    probe = run_attack(run, AttackConfig(attack="probe", attack_seed=0), str(tmp_path / "probe"))

    trained = load(run)
    ds = data.load("digits", seed=trained.config.split_seed)
    # the same leaked pairs and the same tensor as `nopeek attack`
    leak = attacker_indices(ds.y_train, leak_fraction=config.leak_fraction, leak_count=config.leak_count,
                            aux_classes=config.aux_classes, seed=config.attack_seed)
    np.savez(tmp_path / "leaked.npz", x=ds.x_train[leak], z=trained.sent(None, ds.x_train[leak]), y=ds.y_train[leak])
    np.savez(tmp_path / "heldout.npz", x=ds.x_test, z=trained.sent(None, ds.x_test), y=ds.y_test)
    assert main(["audit", "--pairs", str(tmp_path / "leaked.npz"), "--targets", str(tmp_path / "heldout.npz"),
                 "--out", str(tmp_path / "audit"), "--attack-steps", "200", "--attack-lr", "1e-3", "--attack-seed", "0",
                 "--quiet"]) == 0

    scores = json.loads((tmp_path / "audit" / "scores.json").read_text())["targets"]["heldout"]
    for key in ("mse", "psnr", "ssim", "dcor"):
        for k in (key, f"baseline_{key}"):
            np.testing.assert_allclose(scores["decoder"][k], attack[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert scores["n_attacker"] == attack["n_attacker"] and scores["n_heldout"] == len(ds.x_test)
    # dCor of all held-out samples: the number `nopeek train` wrote to metrics.json
    np.testing.assert_allclose(scores["dependence"]["dcor"], train_metrics["dcor"], rtol=1e-4)
    assert scores["dependence"]["dcor_shuffled"] < 0.5 * scores["dependence"]["dcor"]
    for p in probe["probes"]:
        assert scores["probes"]["y"][p["probe"]] == {"accuracy": p["accuracy"], "chance": p["chance"]}
    # the classifier on x_hat is trained on the attacker's pairs only (nopeek attack: the whole train set)
    assert 0 <= scores["decoder"]["classifier_accuracy"] <= 1
    report = (tmp_path / "audit" / "report.md").read_text()
    assert "| `heldout` |" in report and f"{scores['decoder']['ssim']:.3f}" in report
    assert (tmp_path / "audit" / "reconstructions_heldout.png").stat().st_size > 1000


def test_mismatched_sample_counts(files, capsys, rng):
    tmp_path, leaked, _ = files
    np.savez(tmp_path / "leaked.npz", x=leaked["x"], z=leaked["z"][:-1])
    _fails(tmp_path, capsys, match="array 'x' has 48 samples but 'z' has 47 samples")


def test_non_finite_values(files, capsys):
    tmp_path, _, held = files
    z = held["z"].copy()
    z[3, 2] = np.nan
    np.savez(tmp_path / "heldout.npz", x=held["x"], z=z)
    _fails(tmp_path, capsys, match="heldout.npz: array 'z' has 1 NaN or Inf value(s)")


def test_images_outside_unit_range_and_scale(files, capsys):
    tmp_path, leaked, held = files
    _fails(tmp_path, capsys, "--scale", "255", match="leaked.npz: x already lies in [0, 1] (max 0.99")  # / 255 twice
    np.savez(tmp_path / "leaked.npz", x=np.round(leaked["x"] * 255), z=leaked["z"])
    np.savez(tmp_path / "heldout.npz", x=np.round(held["x"] * 255), z=held["z"])
    line = _fails(tmp_path, capsys, match="x ranges over [")
    assert "--scale 255" in line and "--scale minmax" in line
    assert _audit(tmp_path, "--scale", "255") == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())["targets"]["heldout"]
    assert scores["scale"] == "x / 255" and 0 < scores["decoder"]["mse"] < 1
    _fails(tmp_path, capsys, "--scale", "minmax", match="holds an audit (`nopeek audit`) already; use another --out, or --force to replace it")
    # held-out samples among the pairs, and a message that is the same for all: said on the terminal too
    x = np.round(held["x"] * 255)
    x[:5] = np.round(leaked["x"][:5] * 255)
    np.savez(tmp_path / "heldout.npz", x=x, z=np.ones_like(held["z"]))
    capsys.readouterr()
    assert _audit(tmp_path, "--scale", "minmax", "--force") == 0  # replaces the folder whole
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())["targets"]["heldout"]
    assert scores["scale"].startswith("minmax of") and scores["heldout_in_pairs"] == 5 and scores["z_constant"]
    err = capsys.readouterr().err
    assert "nopeek audit: warning: heldout: 5 held-out samples also appear among the attacker's pairs" in err
    assert "nopeek audit: warning: heldout: z is the same for every held-out sample" in err
    assert "z is the same for every held-out sample" in (tmp_path / "out" / "report.md").read_text()


def test_pickled_and_object_arrays_are_refused_unread(files, capsys):
    tmp_path, leaked, _ = files
    np.savez(tmp_path / "leaked.npz", x=leaked["x"], z=leaked["z"], y=np.array([{"a": 1}] * 48, dtype=object))
    _fails(tmp_path, capsys, match="array 'y' is an object (pickled) array; refused without loading it")
    with open(tmp_path / "leaked.npz", "wb") as f:
        pickle.dump(dict(leaked), f)
    _fails(tmp_path, capsys, match="not an .npz archive")


def test_too_few_leaked_pairs(files, capsys):
    tmp_path, leaked, _ = files
    np.savez(tmp_path / "leaked.npz", x=leaked["x"][: MIN_PAIRS - 1], z=leaked["z"][: MIN_PAIRS - 1])
    _fails(tmp_path, capsys, match=f"only {MIN_PAIRS - 1} leaked pairs; the decoder needs at least {MIN_PAIRS}")


def test_missing_keys_and_other_formats(files, capsys):
    tmp_path, leaked, _ = files
    np.savez(tmp_path / "leaked.npz", x=leaked["x"], Z=leaked["z"])
    _fails(tmp_path, capsys, match="unknown array 'Z'")
    np.savez(tmp_path / "leaked.npz", x=leaked["x"])
    _fails(tmp_path, capsys, match="leaked.npz: no 'z' array (found: x)")
    (tmp_path / "leaked.npz").write_text("x,z\n1,2\n")
    _fails(tmp_path, capsys, match="not an .npz archive")
    np.save(tmp_path / "leaked.npy", leaked["x"])
    _fails(tmp_path, capsys, pairs="leaked.npy", match="a single .npy array")
    _fails(tmp_path, capsys, pairs="nowhere.npz", match="nowhere.npz: no such file")


def test_count_and_shape_mismatches(files, capsys, rng):
    tmp_path, leaked, held = files
    _fails(tmp_path, capsys, "--accuracy", "0.9", "0.8", match="--accuracy has 2 value(s) for 1 target(s)")
    _fails(tmp_path, capsys, pairs=["leaked.npz"] * 2, targets=["heldout.npz"] * 3,
           match="--pairs takes one file (shared by every target) or one per target (3), got 2")
    np.savez(tmp_path / "heldout.npz", x=held["x"], z=held["z"][:, :8])
    _fails(tmp_path, capsys, match="z samples have shape (8,) but (16,) in the pairs file")
    np.savez(tmp_path / "heldout.npz", x=np.moveaxis(_images(rng, 32, (8, 8, 3)), -1, 1), z=held["z"])
    _fails(tmp_path, capsys, match="looks channels-first")
    with pytest.raises(AuditError, match="holds the input"):  # --force must never delete the inputs
        run_audit(str(tmp_path / "leaked.npz"), str(tmp_path / "heldout.npz"), str(tmp_path), force=True)
    with pytest.raises(AuditError, match="^--out: give the folder"):  # not the current folder, by omission
        run_audit(str(tmp_path / "leaked.npz"), str(tmp_path / "heldout.npz"), "", force=True)


def test_channels_first_arrays(files):
    """(n, C, H, W) inputs and activations, as PyTorch saves them, read with channels_first."""
    tmp_path, leaked, held = files
    nchw = lambda a: np.moveaxis(a, -1, 1)  # noqa: E731
    z = lambda x: np.repeat(nchw(x[:, ::2, ::2]), 4, axis=1)  # noqa: E731  (n, 4, 4, 4) spatial activations
    result = run_audit({"x": nchw(leaked["x"]), "z": z(leaked["x"])}, {"x": nchw(held["x"]), "z": z(held["x"])},
                       str(tmp_path / "out"), AuditConfig(attack_steps=20, channels_first=True), progress=False)
    r = result["targets"]["target1"]
    assert r["x_shape"] == [8, 8, 1] and r["z_shape"] == [4, 4, 4] and r["dependence"]["dcor"] > 0.8
    with pytest.raises(AuditError, match="does not look channels-first"):
        run_audit(leaked, held, str(tmp_path / "o2"), AuditConfig(channels_first=True), progress=False)


def test_error_is_one_line_in_a_real_process(files):
    tmp_path, leaked, _ = files
    np.savez(tmp_path / "leaked.npz", x=leaked["x"], z=np.array([None] * 48, dtype=object))
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "audit", "--pairs", str(tmp_path / "leaked.npz"),
                           "--targets", str(tmp_path / "heldout.npz"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "object (pickled) array" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_several_targets_make_one_table_and_the_tradeoff(tmp_path, rng, monkeypatch):
    """One pairs file per target (fitted as one stack); accuracy from the files, then from --accuracy."""
    stacks = []
    fit = attacks.fit_decoders
    monkeypatch.setattr(attacks.decoder, "fit_decoders", lambda z, x, **kw: stacks.append(len(z)) or fit(z, x, **kw))
    w = rng.normal(size=(64, 16)) / 8
    xl, xh = _images(rng, 64), _images(rng, 40)
    names = []
    for k, noise in enumerate((0.0, 0.5, 2.0)):
        np.savez(tmp_path / f"leaked{k}.npz", x=xl, z=_client(xl, w) + noise * rng.normal(size=(64, 16)))
        np.savez(tmp_path / f"noise{k}.npz", x=xh, z=_client(xh, w) + noise * rng.normal(size=(40, 16)),
                 accuracy=0.9 - 0.1 * k)
        names.append(f"noise{k}.npz")
    assert _audit(tmp_path, pairs=[f"leaked{k}.npz" for k in range(3)], targets=names) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| `noise")]
    assert len(table) == 3 and table[2].split(" | ")[1] == "0.700"
    assert (tmp_path / "out" / "tradeoff.png").stat().st_size > 1000
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())["targets"]
    assert list(scores) == ["noise0", "noise1", "noise2"]
    # every reconstruction attack arrays alone can run: the decoder and the adaptive attacker
    # (SDAR and FORA need the receiver's training messages and auxiliary data; not in the files)
    for target in scores.values():
        assert {"decoder", "adaptive"} <= set(target) and not {"sdar", "fora"} & set(target)
        assert {"mse", "baseline_mse", "steps_run"} <= set(target["adaptive"])
    assert stacks == [3]  # the three pairs files share x: one stack of three decoders
    result = run_audit(str(tmp_path / "leaked0.npz"), [str(tmp_path / n) for n in names[:2]], str(tmp_path / "o2"),
                       AuditConfig(attack_steps=20), accuracy=[0.5, 0.4], labels=["a", "b"], progress=False)
    assert [r["accuracy"] for r in result["targets"].values()] == [0.5, 0.4]
    assert "tradeoff.png" in result["files"] and "| `b` | 0.400 |" in result["table"]
    assert stacks == [3, 1]  # one shared pairs file: one decoder for both targets


def test_label_leakage_from_gradients(tmp_path, rng):
    """Tabular x in any range (minmax), binary y, per-sample gradients g: AUCs and the histograms."""
    labels = (np.arange(120) % 5 == 0).astype(int)
    x = rng.normal(size=(120, 6)) * 10 + labels[:, None]
    z = np.tanh(x @ rng.normal(size=(6, 4)) / 10)
    g = np.where(labels[:, None] == 1, 1.0, -1.0) * rng.uniform(0.5, 1, (120, 1)) * np.where(labels[:, None], 3, 1) \
        + 0.1 * rng.normal(size=(120, 4))
    pairs = {"x": x[:60], "z": z[:60], "y": labels[:60], "attr_group": np.arange(60) % 2}
    target = {"x": x[60:], "z": z[60:], "y": labels[60:], "g": g[60:], "attr_group": np.arange(60) % 2}
    with pytest.raises(AuditError, match="ranges over"):
        run_audit(pairs, [target], str(tmp_path / "out"), AuditConfig(attack_steps=20), progress=False)
    result = run_audit(pairs, [target], str(tmp_path / "out"), AuditConfig(attack_steps=20, scale="minmax"),
                       progress=False)
    ll = result["targets"]["target1"]["label_leakage"]
    assert ll["norm_auc"] > 0.9 and ll["direction_auc"] > 0.9
    assert ll["chance"] == ll["leak_null95"] and 0.5 < ll["chance"] < 0.75  # chance at n = 60, not 0.5
    assert set(result["targets"]["target1"]["probes"]) == {"y", "attr_group"}
    assert "label_leakage_target1.png" in result["files"]
    assert (tmp_path / "out" / "label_leakage_target1.png").stat().st_size > 1000
    assert "label AUC norm / direction, max(AUC, 1 - AUC) (null 95%)" in result["table"]
    # an attack whose rule reads the labels the other way round leaks as much as 1 - AUC, and is shown so
    from nopeek.audit._audit import format_table

    ll.update(norm_auc=0.017, direction_auc=0.75)
    assert f"| 0.983* / 0.750 ({ll['chance']:.3f}) |" in format_table(result)
    with pytest.raises(AuditError, match="binary labels"):
        run_audit(pairs, [{**target, "y": np.arange(60) % 3}], str(tmp_path / "o2"), AuditConfig(scale="minmax"))


def test_label_leakage_equals_nopeek_attack(tmp_path):
    """The label attack on gradients saved as arrays gives `nopeek attack --attack label`'s AUCs."""
    run = str(tmp_path / "run")
    run_train(TrainConfig(dataset="breast_cancer", epochs=2, widths=(16,)), run, progress=False)
    attack = run_attack(run, AttackConfig(attack="label"), str(tmp_path / "attack"))
    trained = load(run)
    ds = data.load("breast_cancer", seed=trained.config.split_seed)
    g = per_sample_gradients(trained, ds.x_test, ds.y_test, "z")
    z = lambda x: trained.sent(None, x)  # noqa: E731
    target = {"x": ds.x_test, "z": z(ds.x_test), "y": ds.y_test, "g": np.asarray(g)}
    result = run_audit({"x": ds.x_train, "z": z(ds.x_train)}, [target], str(tmp_path / "audit"),
                       AuditConfig(attack_steps=20), progress=False)
    ll = result["targets"]["target1"]["label_leakage"]
    for key in ("norm_auc", "direction_auc", "reference_index"):
        assert ll[key] == pytest.approx(attack[key], rel=1e-9)
