"""Attacks: the decoder sees through alpha 0 and less through large alpha; white-box
inversion of an invertible client; UnSplit; probes; label leakage; scores; CLI."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attacks
import metrics
from nopeek import data
from nopeek.cli import main
from flax import nnx

from nopeek.attacking import per_sample_gradients
from nopeek.training import TrainConfig
from nopeek.protocol import build_model
from nopeek.training import TrainedRun
from nopeek.training import train_stack


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def digits_models(digits):
    """mlp cut 1 trained at alpha 0 and alpha 20, 30 epochs, seed 0."""
    return train_stack(TrainConfig(epochs=30), digits, alphas=[0.0, 20.0], progress=False)


def _client(result, k):
    return jax.jit(TrainedRun(result.config, result.built, result.model_params(k)).message_fn(None))


def test_decoder_sees_alpha0_and_less_at_large_alpha(digits, digits_models):
    x_leak = digits.x_train[: len(digits.x_train) // 10]  # 10% leaked
    z_leak = np.stack([np.asarray(_client(digits_models, k)(x_leak)) for k in range(2)])
    z_test = np.stack([np.asarray(_client(digits_models, k)(digits.x_test)) for k in range(2)])
    fitted = attacks.fit_decoders(z_leak, x_leak, steps=1500, seed=0)  # both decoders in one program
    x_hat = fitted.reconstruct(z_test)
    assert x_hat.shape == (2, *digits.x_test.shape) and x_hat.min() >= 0 and x_hat.max() <= 1
    clf = attacks.ReferenceClassifier(digits.x_train, digits.y_train)
    s0, s_big = (attacks.scores_with_baseline(digits.x_test, x_hat[k], x_leak, classifier=clf, y=digits.y_test)
                 for k in range(2))
    assert s0["ssim"] > s0["baseline_ssim"] + 0.3  # well above the mean-image baseline
    assert s0["classifier_accuracy"] > 0.9 and s0["baseline_classifier_accuracy"] < 0.2
    assert s_big["ssim"] < s0["ssim"] - 0.1  # the defence costs the attacker SSIM ...
    assert s_big["classifier_accuracy"] < s0["classifier_accuracy"] - 0.03  # ... and legibility
    assert fitted.steps <= 1500 and fitted.loss_history.shape == (-(-fitted.steps // 100), 2)
    assert np.all(fitted.loss_history[-1] < fitted.loss_history[0])
    # Held-out loss starts at the mean input's and both decoders beat it.
    assert np.all(fitted.val_history.min(axis=0) < fitted.val_history[0]) and not np.any(fitted.use_mean)


def test_decoder_never_loses_to_the_mean_input(digits):
    """Against activations that carry nothing (constant), the decoder answers with the mean
    input rather than something worse: the collapsed cells' failure mode."""
    x = digits.x_train[:300]
    z = np.zeros((1, 300, 16), np.float32)
    fitted = attacks.fit_decoders(z, x, steps=300, seed=0)
    x_hat = fitted.reconstruct(np.zeros((1, len(digits.x_test), 16), np.float32))[0]
    s = attacks.scores_with_baseline(digits.x_test, x_hat, x)
    # On held-out targets it can differ from the mean input only by sampling noise (the
    # guarantee is on the attacker's own held-out pairs), not by the 2-3x of a lost attack.
    assert s["mse"] <= 1.01 * s["baseline_mse"] and s["ssim"] >= s["baseline_ssim"] - 0.01


def test_decoder_shapes_follow_activations():
    assert isinstance(attacks.build_decoder((14, 14, 8), (28, 28, 1)), attacks.decoder.ConvDecoder)
    assert isinstance(attacks.build_decoder((28, 28, 8), (28, 28, 1)), attacks.decoder.ConvDecoder)
    assert isinstance(attacks.build_decoder((128,), (28, 28, 1)), attacks.decoder.MLPDecoder)
    assert isinstance(attacks.build_decoder((9, 9, 4), (28, 28, 1)), attacks.decoder.MLPDecoder)
    z = jnp.zeros((3, 7, 7, 4))
    for upsample in ("resize", "transpose"):
        assert attacks.build_decoder((7, 7, 4), (28, 28, 1), upsample=upsample)(z).shape == (3, 28, 28, 1)
    with pytest.raises(ValueError, match="upsample"):
        attacks.build_decoder((7, 7, 4), (28, 28, 1), upsample="bilinear")
    with pytest.raises(ValueError, match="attacker samples"):
        attacks.fit_decoders(np.zeros((1, 5, 4)), np.zeros((6, 2)))


def test_whitebox_inverts_an_invertible_client(digits):
    """A dense layer wider than its input, untrained (alpha 0): recovered to MSE < 1e-3."""
    client = build_model("mlp", (8, 8, 1), 10, widths=(256,)).part(0, 1)
    x = digits.x_test[:64]
    x_hat = attacks.whitebox_inversion(client, client(x), (8, 8, 1), steps=1000, lr=0.1)
    assert float(metrics.mse(x, x_hat)) < 1e-3


def test_whitebox_weights_as_an_argument_one_program_for_every_model(digits):
    """`whitebox_inversions`: the weights are an argument of one compiled step, not constants
    baked into a program per model; each model's reconstruction equals its own
    `whitebox_inversion`'s, closed-over weights included."""
    graphdef, _ = nnx.split(build_model("mlp", (8, 8, 1), 10, widths=(64,), seed=0).part(0, 1))
    weights = [nnx.split(build_model("mlp", (8, 8, 1), 10, widths=(64,), seed=s).part(0, 1))[1] for s in (0, 1, 2)]
    apply = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
    x = digits.x_test[:16]
    z = [np.asarray(apply(p, x)) for p in weights]
    assert not np.allclose(z[0], z[1])  # different models
    traced = []
    counted = lambda p, xb: traced.append(1) or apply(p, xb)  # noqa: E731  (runs once per trace)
    x_hat = attacks.whitebox_inversions(counted, z, [(8, 8, 1)] * 3, weights, steps=5, lr=0.1)
    assert len(traced) == 1  # one program for the three models
    for k, p in enumerate(weights):
        np.testing.assert_allclose(x_hat[k], attacks.whitebox_inversion(apply, z[k], (8, 8, 1), params=p, steps=5,
                                                                        lr=0.1), rtol=1e-6, atol=1e-7)
        closed = attacks.whitebox_inversion(lambda xb, p=p: apply(p, xb), z[k], (8, 8, 1), steps=5, lr=0.1)
        np.testing.assert_allclose(x_hat[k], closed, rtol=1e-5, atol=1e-6)


def test_unsplit_matches_the_activations_without_the_weights(digits):
    graphdef, target_params = nnx.split(build_model("mlp", (8, 8, 1), 10, widths=(64,), seed=0).part(0, 1))
    _, clone_init = nnx.split(build_model("mlp", (8, 8, 1), 10, widths=(64,), seed=123).part(0, 1))
    apply = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
    x = digits.x_test[:32]
    z = apply(target_params, x)
    x_hat, clone = attacks.unsplit_inversion(apply, clone_init, z, (8, 8, 1), rounds=6)
    assert x_hat.shape == x.shape and 0 <= x_hat.min() and x_hat.max() <= 1
    before = float(jnp.mean((apply(clone_init, jnp.full_like(x, 0.5)) - z) ** 2))
    after = float(jnp.mean((apply(clone, x_hat) - z) ** 2))
    assert after < 0.2 * before


def test_probes_read_labels_only_when_present(rng):
    y = rng.integers(0, 4, 600)
    informative = np.eye(4)[y] + 0.3 * rng.normal(size=(600, 4))
    noise = rng.normal(size=(600, 4))
    for kind in attacks.PROBES:
        good = attacks.probe_accuracy(informative[:400], y[:400], informative[400:], y[400:], kind=kind)
        bad = attacks.probe_accuracy(noise[:400], y[:400], noise[400:], y[400:], kind=kind)
        assert good["accuracy"] > 0.9 and good["chance"] < 0.4
        assert bad["accuracy"] < good["chance"] + 0.15
    with pytest.raises(ValueError, match="two classes"):
        attacks.probe_accuracy(noise[:10], np.zeros(10, int), noise[10:20], y[10:20])


def test_label_leakage_on_vanilla_split_learning():
    ds = data.load("breast_cancer")
    result = train_stack(TrainConfig(dataset="breast_cancer", epochs=10), ds, progress=False)
    run = TrainedRun(result.config, result.built, result.model_params(0))
    grads = per_sample_gradients(run, ds.x_test, ds.y_test, "z")
    scores = attacks.label_leakage_auc(grads, ds.y_test)
    assert max(scores["norm_auc"], scores["direction_auc"]) > 0.9


def test_label_leakage_scores_synthetic(rng):
    labels = np.array([0] * 80 + [1] * 20)
    direction = np.where(labels[:, None] == 1, 1.0, -1.0) * np.ones((100, 5))
    grads = direction * rng.uniform(0.5, 1.0, (100, 1)) * np.where(labels[:, None] == 1, 3.0, 1.0)
    scores = attacks.label_leakage_auc(grads, labels)
    assert scores["norm_auc"] > 0.95 and scores["direction_auc"] == 1.0
    with pytest.raises(ValueError, match="binary"):
        attacks.label_leakage_auc(grads, np.arange(100) % 3)


def test_scores_and_baseline(rng):
    x = rng.uniform(size=(20, 8, 8, 1)).astype(np.float32)
    perfect = attacks.reconstruction_scores(x, x)
    assert perfect["mse"] == 0 and perfect["ssim"] > 0.999 and perfect["dcor"] > 0.999
    base = attacks.mean_image_baseline(x, 5)
    assert base.shape == (5, 8, 8, 1)
    np.testing.assert_allclose(base[0], x.mean(0), rtol=1e-6)
    tab = attacks.reconstruction_scores(x.reshape(20, -1), x.reshape(20, -1))
    assert np.isnan(tab["ssim"]) and tab["mse"] == 0
    with pytest.raises(ValueError, match="shapes differ"):
        attacks.reconstruction_scores(x, x[:5])


def test_attacks_package_never_imports_nopeek():
    code = "import sys, attacks; assert not any(m == 'nopeek' or m.startswith('nopeek.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys, metrics; assert not any(m.split('.')[0] in ('nopeek', 'attacks') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports(package):
    """(module file, imported module name) for every import statement in a package."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / package
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, alias.name, None
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    yield path.name, node.module, alias.name


def test_layering_is_one_way_and_public():
    """metrics <- attacks <- nopeek: no upward import, and nopeek uses only the public names of
    the other two (no submodules, no underscore names)."""
    for package, forbidden in (("metrics", ("attacks", "nopeek")), ("attacks", ("nopeek",))):
        for file, module, _ in _imports(package):
            assert module.split(".")[0] not in forbidden, f"{package}/{file} imports {module}"
    for file, module, name in _imports("nopeek"):
        top = module.split(".")[0]
        if top in ("attacks", "metrics"):
            assert module == top, f"nopeek/{file} imports the submodule {module}"
            assert name is None or not name.startswith("_"), f"nopeek/{file} imports {top}.{name}"
            assert name is None or name in __import__(top).__all__, f"nopeek/{file} imports non-public {top}.{name}"


def test_attack_cli(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--quiet", "--out", str(run), "--widths", "64"]) == 0
    out = tmp_path / "dec"
    assert main(["attack", "--run", str(run), "--attack", "decoder", "--attack-steps", "200", "--out", str(out),
                 "--leak-count", "300", "--aux-classes", "0,1,2,3,4"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_attacker"] == 300 and scores["aux_classes"] == [0, 1, 2, 3, 4]
    assert {"mse", "psnr", "ssim", "dcor", "classifier_accuracy", "baseline_ssim"} <= set(scores)
    assert (out / "reconstructions.png").stat().st_size > 1000
    # The white box inverts the run's own sender (its weights an argument of the program).
    assert main(["attack", "--run", str(run), "--attack", "whitebox", "--out",
                 str(tmp_path / "wb")]) == 0
    scores = json.loads((tmp_path / "wb" / "scores.json").read_text())
    assert scores["attack"] == "whitebox" and scores["mse"] < scores["baseline_mse"]
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "attack", "--run", str(run), "--attack", "label"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "binary task" in proc.stderr and "Traceback" not in proc.stderr


def test_class_mean_baseline(rng):
    x = rng.uniform(size=(30, 4, 4, 1)).astype(np.float32)
    y = np.arange(30) % 3
    base = attacks.class_mean_baseline(x, y, np.array([2, 0, 7]))
    np.testing.assert_allclose(base[0], x[y == 2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(base[1], x[y == 0].mean(0), rtol=1e-6)
    np.testing.assert_allclose(base[2], x.mean(0), rtol=1e-6)  # a class the attacker never saw


def test_attack_progress_bars_only_when_shown(capsys):
    """The attacks' loops step through `attacks.progress.steps`: a plain range by default (a
    sweep and the tests stay quiet), a bar on stderr inside `shown()` (`nopeek attack`)."""
    from attacks import progress

    assert isinstance(progress.steps(3, "x"), range)
    with progress.shown():
        assert list(progress.steps(3, "decoder")) == [0, 1, 2]
        with progress.shown(False):
            assert isinstance(progress.steps(3, "x"), range)
    assert "decoder" in capsys.readouterr().err
    assert isinstance(progress.steps(3, "x"), range)
