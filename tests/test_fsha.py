"""A dishonest server (issue 12): FSHA as a server policy on the engine, the engine's critic
loss, the client's code under attack, the attack's quality, SplitGuard and SplitOut (issue
23), the CLI and the sweep column."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nopeek import data
from nopeek import protocol as E
from nopeek.defences import Context, NoPeek, build_defence
from nopeek import protocol as T
from nopeek.cli import main
from nopeek.training import TrainConfig
from nopeek.dishonest import FSHAConfig, build_protocol, fsha_attack, fsha_topology, split_public
from nopeek.dishonest import attacker_networks, gradient_penalty
from nopeek.dishonest import SplitGuard, SplitGuardConfig, detection_study, rank_p_value, sg_score
from nopeek.dishonest import SplitOut, SplitOutConfig, detection_summary, format_detection
from nopeek.dishonest._splitguard import _Set

# digits (8x8), a small cnn cut after conv2: z is (8, 8, 16). The critic settings that make
# 300 iterations enough on digits (the defaults are the authors' GP weight 500).
CLIENT = dict(dataset="digits", model="cnn", widths=(8, 16, 32, 16), cuts=(2,))
FAST = FSHAConfig(gp_weight=10.0, fsha_lr_critic=3e-3)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _setup(alpha=0.0, noise=0.0, seed=0):
    config = TrainConfig(**CLIENT, alpha=alpha, noise_scale=noise, seed=seed)
    nets = attacker_networks((8, 8, 16), (8, 8, 1), width=8, res_blocks=1, seed=1)
    topo = fsha_topology(config, (8, 8, 1), 10, nets)
    honest = T.build("vanilla", T.Setup(model="cnn", widths=CLIENT["widths"], input_shape=(8, 8, 1), num_classes=10,
                                        cuts=(2,)))
    from flax import nnx

    params = {"client": honest.init(seed)["client"], "server": {"critic": nnx.split(nets["critic"])[1]}}
    return config, topo, honest, params


def _batch(rng, n=16):
    return jnp.asarray(rng.uniform(size=(n, 8, 8, 1)), jnp.float32), jnp.asarray(np.arange(n) % 10, jnp.int32)


def test_mean_loss_gradients_equal_autodiff(rng):
    """The engine's critic loss: Loss(kind="mean") with a NoPeek client, against jax.grad of the whole."""
    _, topo, _, params = _setup()
    topo = E.Topology(topo.name, topo.parties, topo.segments, (E.Loss("server", "critic", None, 3.0, kind="mean"),),
                      topo.protected, topo.graphdefs)
    x, y = _batch(rng)
    grads, aux = jax.jit(lambda p: E.protocol_gradients(topo, p, {"x": x, "y": y}, defence=NoPeek(0.7)))(params)
    loss, want = jax.jit(jax.value_and_grad(lambda p: E.end_to_end_loss(topo, p, {"x": x, "y": y}, defence=NoPeek(0.7))))(params)
    np.testing.assert_allclose(aux["loss"], loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        scale = float(jnp.max(jnp.abs(w))) + 1e-12
        np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(w) / scale, atol=2e-5)
    assert set(aux["mean"]) == {"critic"} and not aux["ce"]
    with pytest.raises(E.TopologyError, match="takes no labels"):
        E.Topology("bad", topo.parties, topo.segments, (E.Loss("server", "critic", "y", kind="mean"),), ("z",), topo.graphdefs)
    with pytest.raises(E.TopologyError, match="loss kind"):
        E.Topology("bad", topo.parties, topo.segments, (E.Loss("server", "critic", None, kind="max"),), ("z",), topo.graphdefs)



def test_client_receives_only_the_gradient_of_its_message(rng):
    """Under FSHA the client sends z and gets back only dL/dz; labels and raw inputs never cross."""
    _, topo, _, params = _setup()
    x, y = _batch(rng)
    spy = E.Log()
    E.protocol_gradients(topo, params, {"x": x, "y": y}, defence=NoPeek(0.5), transport=spy)
    assert [(s, r, t) for s, r, t, _ in spy.log] == [("client", "server", "z"), ("server", "client", "dL/dz")]
    z = spy.log[0][3]
    assert spy.log[1][3].shape == z.shape
    assert z.shape == (16, 8, 8, 16) and not any(np.shape(v) == x.shape for *_, v in spy.log)  # x never crosses
    assert [m.tensor for m in E.transcript(topo, params, {"x": jax.ShapeDtypeStruct(x.shape, x.dtype),
                                                            "y": jax.ShapeDtypeStruct(y.shape, y.dtype)})] == ["z", "dL/dz"]


class Substitute(E.Transport):
    """An honest run whose server's gradient message is replaced by another (the FSHA server's)."""

    def __init__(self, received):
        self.received = received

    def send(self, topo, sender, receiver, tensor, value):
        return self.received if tensor == "dL/dz" else value


def test_client_code_is_the_honest_clients(rng, digits):
    """The FSHA step's client update is the honest vanilla client's update (NoPeek term and noise
    included) given the gradient the FSHA server sent: the client's code path is unchanged."""
    config = TrainConfig(**CLIENT, alpha=0.7, noise_scale=0.3, seed=3, lr=1e-2)
    protocol = build_protocol("fsha", config, digits, FAST, attack_seed=1)
    state = protocol.init(config.seed)
    params0 = jax.tree.map(jnp.copy, state.params)
    x, y = jnp.asarray(digits.x_train[:32]), jnp.asarray(digits.y_train[:32])
    t = 5
    kw = dict(defence=build_defence({"nopeek": 0.7, "noise": 0.3}, Context(config.seed, t, config)))

    @jax.jit
    def sent_by_server(p):
        capture = E.Capture(["dL/dz"])
        E.protocol_gradients(protocol.topology, p, {"x": x, "y": y}, transport=capture, **kw)
        return capture.values["dL/dz"]

    sent = sent_by_server(params0)
    honest = T.build("vanilla", T.Setup(model="cnn", widths=CLIENT["widths"], input_shape=(8, 8, 1), num_classes=10,
                                        cuts=(2,)))
    honest_params = {"client": params0["client"], "server": honest.init(0)["server"]}
    grads, _ = jax.jit(lambda p, s: E.protocol_gradients(honest.topology, p, {"x": x, "y": y}, transport=Substitute(s),
                                                         **kw))(honest_params, sent)
    opt = optax.adam(1e-2)
    updates, _ = opt.update(grads["client"], opt.init(params0["client"]), params0["client"])
    want = optax.apply_updates(params0["client"], updates)
    new, _ = protocol.step(state, x, y, jnp.asarray(digits.x_train[32:64]), t, jnp.asarray(True))
    for a, b in zip(jax.tree.leaves(new.params["client"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    kept = [np.asarray(a) for a in jax.tree.leaves(new.params["client"])]  # `new` is donated to the next step
    skipped, _ = protocol.step(new, x, y, jnp.asarray(digits.x_train[32:64]), t + 1, jnp.asarray(False))
    for a, b in zip(jax.tree.leaves(skipped.params["client"]), kept):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # a skipped (fake) batch leaves the client as it was


def test_public_split_is_disjoint_and_seeded(digits):
    pub, priv = split_public(digits.y_train, public_fraction=0.2, seed=4)
    assert len(np.intersect1d(pub, priv)) == 0 and len(pub) + len(priv) == len(digits.y_train)
    assert np.array_equal(pub, split_public(digits.y_train, public_fraction=0.2, seed=4)[0])
    pub9, _ = split_public(digits.y_train, public_fraction=0.3, public_classes=(1, 2, 3, 4, 5, 6, 7, 8, 9), seed=0)
    assert 0 not in set(digits.y_train[pub9])


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    z = jnp.ones((4, 3, 3, 2))
    # D(z) = sum over channels of (sum over positions / 3): per channel the spatial gradient has norm 1.
    assert float(gradient_penalty(lambda v: jnp.sum(v, axis=(1, 2, 3))[:, None] / 3.0, z, 0 * z, jax.random.key(0))) < 1e-10


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_fsha_reconstructs_far_better_than_the_mean_image(digits):
    """300 iterations on digits: the server's decoder reads the client's held-out images."""
    config = TrainConfig(**CLIENT)
    result = fsha_attack(config, FAST, digits, steps=300, checkpoint_every=300)
    final = result["final"]
    assert final["mse"] < 0.5 * final["baseline_mse"]
    assert final["ssim"] > final["baseline_ssim"] + 0.3
    assert final["classifier_accuracy"] > final["baseline_classifier_accuracy"] + 0.4
    assert result["n_public"] + result["n_private"] == len(digits.y_train)


def test_sg_score_separates_label_use_from_label_ignorance():
    rng = np.random.default_rng(0)

    def sets(fake_shift, fake_scale):
        f, r1, r2 = _Set(), _Set(), _Set()
        base = rng.normal(size=20)
        for _ in range(6):
            f.add(fake_scale * (base + fake_shift) + 0.1 * rng.normal(size=20))
        for s in (r1, r2):
            for _ in range(20):
                s.add(base + 0.1 * rng.normal(size=20))
        return f, r1, r2

    assert sg_score(*sets(rng.normal(size=20) * 3, 4.0)) > 0.9  # fake batches come back different: honest
    assert sg_score(*sets(0.0, 1.0)) < 0.5  # the same: the server ignores the labels
    # The rank test: a drifting stream of regular vectors; a fake one from the stream ranks
    # anywhere, one far off ranks first (p = 1 / (window + 1)).
    regular = [np.full(5, 0.1 * t) + rng.normal(size=5) for t in range(20)]
    assert rank_p_value(np.full(5, 2.0) + rng.normal(size=5) * 0 + 30, regular, 10) == pytest.approx(1 / 11)
    ps = [rank_p_value(np.full(5, 2.0) + rng.normal(size=5), regular, 10) for _ in range(200)]
    assert 0.3 < np.mean(ps) < 0.8 and rank_p_value(regular[0], regular[:19], 10) is None


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_splitguard_is_quiet_on_an_honest_server_and_fires_on_fsha(digits):
    config = TrainConfig(**CLIENT)
    rows = detection_study(config, FAST, SplitGuardConfig(), digits, seeds=(0, 1), honest_steps=150, fsha_steps=150)
    honest = [r for r in rows if r["server"] == "honest"]
    attacked = [r for r in rows if r["server"] == "fsha"]
    assert [r["fired"] for r in honest] == [False, False] and all(r["fake_batches"] >= 5 for r in honest)
    assert all(max(r["p_values"]) < 0.1 for r in honest)  # every fake batch came back unlike any regular one
    assert all(r["accuracy"] > 0.5 for r in honest)  # honest training went on (fake batches skipped)
    assert [r["fired"] for r in attacked] == [True, True]
    assert all(r["iteration"] <= 150 and r["fake_batches"] >= 3 and r["mse"] > 0 for r in attacked), attacked
    guard = SplitGuard(SplitGuardConfig(sg_start=3), 10, seed=0)
    plans = [guard.plan(t, np.arange(10)) for t in range(200)]
    assert not any(f for f, _ in plans[:3]) and 5 < sum(f for f, _ in plans) < 40
    for fake, y in plans:
        assert np.all((y != np.arange(10)) == fake)  # a fake batch shifts every label, a real one none


def test_splitout_fires_on_a_strict_majority_of_outliers_in_its_window(rng):
    reference = rng.normal(size=(12, 5))
    detector = SplitOut(SplitOutConfig(so_window=4), reference, epoch=30)
    inlier, outlier = np.zeros(5), np.full(5, 50.0)
    stream = [inlier, outlier, outlier, inlier, outlier, outlier, inlier]  # window of 4: 2, 3 outliers, ...
    fired = [detector.observe(t, v) for t, v in enumerate(stream)]
    assert fired == [False, False, False, False, True, False, False]  # 3 of the last 4 at batch 5, once
    report = detector.report()
    assert report["fired"] and report["iteration"] == 5 and report["outliers"] == 3 and report["checked"] == 5
    late = SplitOut(SplitOutConfig(so_window=1), reference, epoch=3)  # watches the first epoch only
    assert [late.observe(t, outlier) for t in (3, 4)] == [False, False] and late.observe(0, outlier)
    assert late.plan(0, np.arange(3))[0] is False  # no fake batches
    with pytest.raises(ValueError, match="at least 3 reference"):
        SplitOut(SplitOutConfig(), reference[:2])


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_splitout_is_quiet_on_an_honest_server_and_fires_on_fsha(digits):
    """Calibrated on the client's own honest simulation (12 batches, a server of another
    initialisation), watching the first epoch as the paper does."""
    rows = detection_study(TrainConfig(**CLIENT), FAST, SplitGuardConfig(), digits, seeds=(0, 1), honest_steps=30,
                           fsha_steps=40, detectors=("splitout",))
    honest = [r for r in rows if r["server"] == "honest"]
    attacked = [r for r in rows if r["server"] == "fsha"]
    assert all(r["detector"] == "splitout" for r in rows)
    assert [r["fired"] for r in honest] == [False, False] and all(r["checked"] >= 15 for r in honest)
    assert [r["fired"] for r in attacked] == [True, True]
    assert all(r["iteration"] <= 20 and r["outliers"] >= 6 for r in attacked), attacked
    # The attacker had not yet beaten the mean image when it was caught.
    assert all(r["ssim"] < r["baseline_ssim"] + 0.05 for r in attacked), attacked
    summary = detection_summary(rows)
    assert summary[0]["detected"] == 2 and summary[0]["false_alarms"] == 0
    assert "| splitout | 2 / 2 | 0 / 2 (" in format_detection(rows)


@pytest.mark.parametrize("argv,message", [
    (["--fsha-steps", "-1"], "--fsha-steps must be >= 1, got -1"),
    (["--public-fraction", "0"], "--public-fraction must be in (0, 1)"),
    (["--public-classes", "42"], "--public-classes 42: no training samples"),
    (["--public-classes", "3,42"], "--public-classes 3,42: no training samples of class 42"),
    (["--fsha-steps", "0"], "--fsha-steps must be >= 1, got 0"),
    (["--alpha-warmup", "2"], "--alpha-warmup does not apply to --server fsha"),
    (["--fsha-lr", "nan"], "--fsha-lr must be finite"),
    (["--gp-weight", "-1"], "--gp-weight must be finite and >= 0"),
    (["--fsha-weight", "0"], "--fsha-weight must be finite and > 0"),
    (["--pilot-output", "tanh"], "invalid choice"),
    (["--topology", "u_shaped", "--cuts", "1,2"], "one client and one server (vanilla)"),
    (["--epochs", "5"], "--epochs does not apply to --server fsha"),
    (["--dcor-batch", "5"], "its iterations are --fsha-steps"),
    (["--sg-k", "2"], "--sg-k needs --splitguard"),
    (["--splitguard", "--sg-threshold", "1.5"], "--sg-threshold must be in (0, 1)"),
    (["--splitguard", "--sg-window", "1"], "--sg-window must be >= 2"),
    (["--cut", "9"], "--cuts must be between 1 and 5"),
])
def test_bad_fsha_options_are_one_line_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--server", "fsha", "--dataset", "digits", "--model", "cnn", "--out", str(out), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nopeek train: error:") and message in err[0], err
    assert not out.exists()


def test_other_attacks_still_need_a_run(capsys):
    for argv, message in ((["attack", "--attack", "decoder"], "--run is required for --attack decoder"),
                          (["attack", "--attack", "fsha"], "run `nopeek train --server fsha"),
                          (["train", "--fsha-lr", "0.1"], "--fsha-lr is for a dishonest server's run")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_a_public_set_smaller_than_a_batch_is_drawn_with_replacement(tmp_path, capsys):
    """300 digits leave the server 60 public samples against batches of 64: each of its
    batches still pairs one public message with each private one (was an internal error)."""
    assert main(["train", "--server", "fsha", "--dataset", "digits", "--limit", "300", "--widths", "32,16",
                 "--fsha-steps", "3", "--quiet", "--out", str(tmp_path / "small")]) == 0
    assert "FSHA after 3 iterations (60 public, 240 private samples)" in capsys.readouterr().out


def test_cli_writes_scores_grids_and_curves(tmp_path, capsys):
    out = tmp_path / "fsha"
    main(["train", "--server", "fsha", "--dataset", "digits", "--model", "cnn", "--widths", "8,16,32,16", "--cut", "2",
          "--gp-weight", "10", "--fsha-lr-critic", "3e-3", "--fsha-steps", "40", "--checkpoint-every", "20",
          "--splitguard", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "FSHA after 40 iterations" in printed and "SplitGuard" in printed and "null 95%" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert [h["iteration"] for h in scores["history"]] == [20, 40]
    for k in ("mse", "psnr", "ssim", "classifier_accuracy", "client_dcor"):
        assert np.isfinite(scores[k]) and (k == "client_dcor" or np.isfinite(scores["baseline_" + k]))
    # what reading the scores needs: the label's share (the class-mean image knows the label,
    # so it beats the mean image), the dCor null (well below a live client's dCor), chance
    assert 0 < scores["class_mean_mse"] < scores["baseline_mse"]
    assert 0 < scores["client_dcor_null95"] < scores["client_dcor"] <= 1
    assert 0 < scores["client_pdcor_label"] < scores["client_dcor"]
    # the client's messages still carry its task (0.938 when written; chance 0.102)
    assert scores["task_probe_chance"] == pytest.approx(0.1, abs=0.02)
    assert scores["task_probe_accuracy"] > 5 * scores["task_probe_chance"]
    assert scores["detection"]["fake_batches"] >= 1 and scores["pilot_output"] == "relu"
    for name in ("grids/iter_000020.png", "grids/iter_000040.png", "reconstructions.png", "curves.png", "history.csv"):
        assert os.path.getsize(out / name) > 0


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_sweep_fsha_column(tmp_path):
    from nopeek.sweeps import PRESETS, format_attack_table, run_sweep

    config = PRESETS["quick"].replace(model="cnn", widths=CLIENT["widths"], cuts=("2",), alphas=(0.0,), noise_scales=(),
                                      epochs=1, attacks=(), servers=("fsha",), fsha_steps=30, gp_weight=10.0, fsha_lr_critic=3e-3)
    rows = run_sweep(config, str(tmp_path / "sweep"), progress=False)
    assert len(rows) == 1
    r = rows[0]
    for k in ("mse", "ssim", "psnr", "classifier_accuracy"):
        assert np.isfinite(float(r[f"fsha_{k}"])) and np.isfinite(float(r[f"fsha_baseline_{k}"]))
    assert r["fsha_steps"] == "30" and r["label_norm_auc"] == ""  # digits has 10 classes: no label columns
    # what reading the score needs: the class-mean image (the label's share) beats the mean
    # image; the client's dCor stands above its null and above its partial dCor given the label;
    # a probe reads the task from its messages well above chance
    v = {k: float(r[f"fsha_{k}"]) for k in ("class_mean_mse", "baseline_mse", "client_dcor", "client_dcor_null95",
                                            "client_pdcor_label", "task_probe_accuracy", "task_probe_chance")}
    assert 0 < v["class_mean_mse"] < v["baseline_mse"]
    assert 0 < v["client_dcor_null95"] < v["client_dcor"] <= 1 and 0 < v["client_pdcor_label"] < v["client_dcor"]
    assert v["task_probe_chance"] == pytest.approx(0.1, abs=0.02) and v["task_probe_accuracy"] > 5 * v["task_probe_chance"]
    table = format_attack_table(rows)
    assert "(class)" in table and "(null)" in table and f"{v['client_dcor_null95']:.3f}" in table


def test_compiled_protocols_are_shared_only_by_identical_clients(digits):
    """A protocol's compiled step is reused across seeds, never across client models."""
    base = build_protocol("honest", TrainConfig(**CLIENT), digits)
    assert build_protocol("honest", TrainConfig(**CLIENT, seed=3), digits).step is base.step
    for change in (dict(cut_activation="linear"), dict(alpha=1.0), dict(widths=(8, 16, 32, 8))):
        assert build_protocol("honest", TrainConfig(**{**CLIENT, **change}), digits).step is not base.step, change


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_the_authors_separate_nopeek_step_acts_against_fsha(digits):
    """With its NoPeek step separate from the step on what the server sent (the FSHA authors'
    dCor client: one optimiser stepping twice), a large weight drives the client's messages to
    independence of x (held-out dCor at its null, a probe at chance) and FSHA's reconstructions
    to no better than the mean image. The study records FSHA's scores beside the mean and
    class-mean images and a probe's reading of z."""
    from nopeek.dishonest import STUDY_COLUMNS, fsha_nopeek_study

    rows = fsha_nopeek_study(TrainConfig(**CLIENT), FAST, digits, alphas=(0.0, 1000.0), weights=(1.0,), seeds=(0,),
                             steps=80)
    assert [r["alpha"] for r in rows] == [0.0, 1000.0] and all(set(STUDY_COLUMNS) <= set(r) for r in rows)
    undefended, defended = rows
    assert 0 < undefended["client_dcor_null95"] < undefended["client_dcor"]  # dependent messages read above their null
    assert undefended["task_probe_chance"] < undefended["task_probe_accuracy"] <= 1
    assert defended["client_dcor"] < 1.2 * defended["client_dcor_null95"] < undefended["client_dcor"] - 0.5
    assert defended["task_probe_accuracy"] < 2 * defended["task_probe_chance"]
    assert defended["mse"] > defended["baseline_mse"]
    for r in rows:
        assert np.isfinite(r["class_mean_mse"]) and r["class_mean_mse"] < r["baseline_mse"]
