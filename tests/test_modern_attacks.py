"""The attacks of 2023-25 (SDAR, FORA, the adaptive decoder attacker): each beats its free
baseline on an undefended digits model with spatial messages and stays at it against a
client that sends noise; SDAR reads U-shaped labels; their pieces; how nopeek feeds them."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attacks
from attacks import gradient_penalty, mk_mmd, whitener
from nopeek import data
from nopeek.attacking import AttackConfig, architecture_of, heldout_split, server_of
from nopeek.cli import main
from nopeek.training import TrainConfig, TrainedRun, train_stack

# A small cnn cut after its second convolution: 8x8x8 messages (the regime where the
# passive attacks work; see docs/guide/modern-attacks.md for the flat cut).
CNN = dict(dataset="digits", model="cnn", widths=(4, 8, 32, 16), epochs=20)
STEPS = {"sdar": 600, "fora": 600}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _inputs(digits, topology, cuts):
    """What a server attacker holds against an undefended digits cnn of `topology`."""
    config = TrainConfig(topology=topology, cuts=cuts, **CNN)
    result = train_stack(config, digits, progress=False)
    run = TrainedRun(config, result.built, result.model_params(0))
    entry = run.entry(None)
    aux, targets = heldout_split(len(digits.x_test), AttackConfig(), ["sdar"])
    inputs = attacks.AttackInputs(
        x_leak=digits.x_train[:200], z_leak=run.message(None, digits.x_train[:200])[None], y_leak=digits.y_train[:200],
        x_target=digits.x_test[targets], z_target=run.message(None, digits.x_test[targets])[None],
        y_target=digits.y_test[targets], x_aux=digits.x_test[aux], y_aux=digits.y_test[aux],
        x_train=digits.x_train, z_train=run.message(None, digits.x_train)[None], y_train=digits.y_train,
        architecture=architecture_of(run.built, config, entry, digits.input_shape), alphas=np.zeros(1, np.float32))
    for field, value in server_of(run.built, [run.params], entry).items():
        setattr(inputs, field, value)
    return inputs


@pytest.fixture(scope="module")
def vanilla(digits):
    return _inputs(digits, "vanilla", (2,))


@pytest.fixture(scope="module")
def u_shaped(digits):
    return _inputs(digits, "u_shaped", (2, 5))


def _noise(inputs):
    """The same attacker against an untrained client that sends noise: every message it
    sees (leaked, observed, targets) independent of the inputs."""
    rng = np.random.default_rng(1)
    noisy = lambda a: rng.normal(size=np.shape(a)).astype(np.float32)  # noqa: E731
    return attacks.AttackInputs(**{**vars(inputs), "z_leak": noisy(inputs.z_leak), "z_train": noisy(inputs.z_train),
                                   "z_target": noisy(inputs.z_target)})


def _score(name, inputs, **settings):
    return attacks.score(name, inputs, attacks.run(name, inputs, **settings)[0])


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_sdar_reconstructs_and_reads_u_shaped_labels(vanilla, u_shaped):
    s = _score("sdar", vanilla, steps=STEPS["sdar"])
    # Vanilla: the labels are sent, so the label-only guess is the bar to beat, and it is beaten.
    assert s["mse"] < 0.6 * s["baseline_mse"] and s["mse"] < 0.8 * s["class_mean_mse"]
    assert s["ssim"] > s["class_mean_ssim"] + 0.05
    u = _score("sdar", u_shaped, steps=STEPS["sdar"])
    # U-shaped: labels that never left the client (0.63-0.65 over three settings at 600 steps, 0.88 at 2,000).
    assert u["label_accuracy"] > u["label_chance"] + 0.3


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_fora_and_the_adaptive_attackers_beat_the_mean_image(vanilla):
    fora = _score("fora", vanilla, steps=STEPS["fora"])  # MSE 0.019 at 600 steps, 0.013 at 800 (baseline 0.074)
    assert fora["mse"] < 0.5 * fora["baseline_mse"]
    # 600 decoder steps: MSE 0.0087 against 0.0073 at 1,500 and 0.0070 at 4,000 (baseline 0.075)
    adaptive = _score("adaptive", vanilla, steps=600)
    assert adaptive["mse"] < 0.3 * adaptive["baseline_mse"]
    # The leak-fraction curve: more leaked pairs, better reconstructions; from 5% on every point
    # beats the mean image of its own pairs, and the 13 pairs of 1% never do much worse.
    curve = {p: adaptive[f"leak{p}_mse"] for p in (1, 5, 10, 25, 50)}
    assert curve[50] < curve[5] < curve[1] <= 1.05 * adaptive["leak1_baseline_mse"]
    assert all(curve[p] < 0.5 * adaptive[f"leak{p}_baseline_mse"] for p in (5, 10, 25, 50))
    assert adaptive["leak1_n_pairs"] == round(0.01 * len(vanilla.x_train))
    known = _score("adaptive_alpha", vanilla, steps=600, shadow_steps=150)  # 0.0128 (0.0087 at 1,500, 0.0076 at 4,000)
    assert known["mse"] < 0.3 * known["baseline_mse"]


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
@pytest.mark.parametrize("name", ["sdar", "fora", "adaptive", "adaptive_alpha"])
def test_each_attack_stays_at_its_baseline_against_noise(name, vanilla, u_shaped):
    noise = _noise(u_shaped if name == "sdar" else vanilla)
    settings = {"sdar": {"steps": 300}, "fora": {"steps": 300}, "adaptive": {"steps": 3000, "leak_fractions": ()},
                "adaptive_alpha": {"steps": 3000, "shadow_steps": 100}}[name]
    s = _score(name, noise, **settings)
    assert s["mse"] > 0.95 * s["baseline_mse"] and s["ssim"] < s["baseline_ssim"] + 0.05
    if name == "sdar":
        assert s["label_accuracy"] < s["label_chance"] + 0.1


def test_attack_list_and_cli_scores_beside_baselines(tmp_path, capsys):
    assert main(["attack", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("sdar", "fora", "adaptive", "adaptive_alpha"))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--limit", "400", "--epochs", "2", "--topology", "u_shaped",
                 "--cuts", "1,2", "--widths", "32,16", "--quiet", "--out", str(run)]) == 0
    out = tmp_path / "sdar"
    assert main(["attack", "--run", str(run), "--attack", "sdar", "--attack-steps", "3", "--aux-count", "30",
                 "--out", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_aux"] == 30 and scores["steps_run"] == 3
    assert {"mse", "baseline_mse", "class_mean_mse", "label_accuracy", "label_chance"} <= set(scores)
    assert "label accuracy" in capsys.readouterr().out
    # the adaptive attacker's whitening and leak-fraction curve, from the command line
    for whiten in ("none", "zca"):
        out = tmp_path / f"adaptive-{whiten}"
        assert main(["attack", "--run", str(run), "--attack", "adaptive", "--attack-steps", "3", "--whiten", whiten,
                     "--leak-fractions", "0.5,0.05", "--out", str(out)]) == 0
        scores = json.loads((out / "scores.json").read_text())
        assert sorted(k for k in scores if k.startswith("leak") and k.endswith("_n_pairs")) == ["leak50_n_pairs",
                                                                                               "leak5_n_pairs"]
        assert scores["whiten"] == whiten and scores["leak_fractions"] == [0.05, 0.5]  # the settings it ran with


def test_receiver_facts():
    """Who computes what from a message alone, and whether it holds the labels: read from the graph."""
    from nopeek.protocol import Setup, build

    setup = Setup(model="mlp", widths=(16, 8), input_shape=(8, 8, 1), num_classes=10, cuts=(1,))
    vanilla = build("vanilla", setup).receiver("z")
    assert vanilla.party == "server" and vanilla.labels == "y" and vanilla.output == "logits"
    u = build("u_shaped", Setup(**{**vars(setup), "cuts": (1, 2)})).receiver("z1")
    assert u.party == "server" and u.labels is None and u.output == "z2"
    assert build("vertical", setup).receiver("z") is None  # merged with the other clients' first
    assert [b.name for b in build("vanilla", Setup(**{**vars(setup), "cut_activation": "linear"})).blocks] == \
        ["fc1", "fc2", "head"]


def test_decoders_on_a_share_of_a_pool_equal_decoders_on_the_share_alone(rng):
    """`fit_decoders(..., pairs=take)` reads only the pairs `take` of the whole arrays (one
    program for every share of a leak-fraction curve) and fits what the share alone fits,
    bit for bit: the same held-out pairs, batches, mean image and reconstructions."""
    x = rng.uniform(size=(120, 12)).astype(np.float32)
    z = np.stack([np.tanh(x @ rng.normal(size=(12, 6))) for _ in range(2)]).astype(np.float32)
    take = np.sort(rng.permutation(120)[:50])
    kw = dict(steps=30, eval_every=5, patience=100, seed=3, holdout=np.arange(0, 50, 5))
    pooled = attacks.fit_decoders(z, x, pairs=take, **kw)
    alone = attacks.fit_decoders(z[:, take], x[take], **kw)
    np.testing.assert_array_equal(pooled.val_history, alone.val_history)
    np.testing.assert_array_equal(pooled.mean, alone.mean)
    np.testing.assert_array_equal(pooled.reconstruct(z[:, :7]), alone.reconstruct(z[:, :7]))
    for bad in ([3, 2], [0, 120], [], [[1, 2]], [True, False, True], [0.0, 1.0]):
        with pytest.raises(ValueError, match="pairs must be increasing"):
            attacks.fit_decoders(z, x, pairs=bad, steps=1)


def test_heldout_split():
    config = AttackConfig()
    none, everything = heldout_split(100, config, ["decoder"])
    assert none is None and np.array_equal(everything, np.arange(100))
    aux, targets = heldout_split(100, config, ["sdar"])
    assert len(aux) == 50 and len(targets) == 50 and not set(aux) & set(targets)
    again, _ = heldout_split(100, config, ["decoder", "fora"])
    np.testing.assert_array_equal(aux, again)  # the same aux whichever attacks ask for it
    aux, targets = heldout_split(100, AttackConfig(aux_count=10), ["decoder"])  # given: split for every attack
    assert len(aux) == 10 and len(targets) == 90
    with pytest.raises(Exception, match="aux-count"):
        heldout_split(100, AttackConfig(aux_count=99), ["sdar"])


def test_whitening(rng):
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    z = rng.normal(size=(500, 6)) @ (rotation * np.arange(1.0, 7.0)) + 3  # correlated, scales 1..6 (above the floor)
    white = whitener(z, "zca")(z)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(6), atol=1e-3)
    std = whitener(z, "standard")(z)
    np.testing.assert_allclose(std.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(std.std(0), 1, atol=1e-3)
    spatial = rng.normal(size=(50, 4, 4, 2))
    assert whitener(spatial, "zca")(spatial).shape == spatial.shape  # spatial messages are standardised
    with pytest.raises(ValueError, match="whiten"):
        whitener(z, "pca")


def test_mk_mmd_and_gradient_penalty(rng):
    a = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
    shifted = b + 2.0
    mmd = jax.jit(mk_mmd)
    assert abs(float(mmd(a, b))) < 0.1 < float(mmd(a, shifted))  # same distribution ~0, a shift is seen
    assert float(mmd(a, shifted)) == pytest.approx(float(mmd(shifted, a)), rel=1e-5)
    g = jax.grad(lambda s: mmd(a, s))(shifted)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.sum(g * (b - shifted))) < 0  # pulled towards a
    linear = lambda p, z: z.reshape(z.shape[0], -1) @ p  # noqa: E731  |grad| = |p| everywhere
    p = jnp.asarray([[3.0], [4.0], [0.0], [0.0], [0.0]])
    assert float(gradient_penalty(linear, p, a, b, jax.random.key(0))) == pytest.approx(16.0, rel=1e-5)


def test_an_attackers_networks_are_made_in_one_program_as_eagerly(monkeypatch):
    """K networks (a label-conditioned discriminator, a decoder) made by `init_stacked`: one
    program for all K, at LLVM level 0 (XLA's own effort under NOPEEK_XLA_DEFAULTS=0), with
    the parameters eager construction gives seed by seed, to float32 round-off."""
    import jax.monitoring
    from flax import nnx

    from attacks.decoder import build_decoder, init_compiler_options, init_stacked, rngs_for
    from attacks.nets import Discriminator

    monkeypatch.delenv("NOPEEK_XLA_DEFAULTS", raising=False)
    assert init_compiler_options() == {"xla_backend_optimization_level": 0}
    monkeypatch.setenv("NOPEEK_XLA_DEFAULTS", "0")
    assert init_compiler_options() is None
    monkeypatch.delenv("NOPEEK_XLA_DEFAULTS")
    makers = {"discriminator": lambda s: Discriminator((8, 8, 4), classes=3, rngs=rngs_for(s + 23)),
              "decoder": lambda s: build_decoder((4, 4, 8), (8, 8, 1), seed=s)}
    for name, make in makers.items():
        lowered = []
        listener = lambda event, secs, **kw: lowered.append(event) if event.endswith("jaxpr_to_mlir_module_duration") else None  # noqa: E731
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            graphdef, params = init_stacked(make, 3, 5)
            jax.block_until_ready(params)
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
        assert len(lowered) == 1, (name, len(lowered))
        for i in range(3):
            eager = nnx.split(make(5 + i))[1]
            pairs = list(zip(jax.tree.leaves(eager), jax.tree.leaves(params), strict=True))
            assert len(pairs) >= 4, name
            for a, b in pairs:
                if jnp.issubdtype(a.dtype, jnp.floating):
                    np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), rtol=1e-5, atol=1e-6, err_msg=name)
        assert type(nnx.merge(graphdef, jax.tree.map(lambda a: a[0], params))) is type(make(0))
        inside = jax.jit(lambda: init_stacked(make, 3, 5)[1])()  # within a caller's program
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(inside), strict=True):
            if jnp.issubdtype(a.dtype, jnp.floating):
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6, err_msg=name)


def test_one_compiled_step_per_simulation(digits):
    """SDAR's step compiles once and is reused for every batch (no retracing per step)."""
    from attacks.sdar import Settings

    from attacks import Simulation, Victim

    apply = lambda p, z: z @ p  # noqa: E731  a linear "server" to logits
    victim = Victim(apply, [jnp.ones((6, 10)) * 0.1], True, 10)
    settings = Settings(3, 8, 1e-3, 5e-4, 1e-3, 1.0, 1e-5, 0.0, True, True, df_lr=1e-4)
    sim = Simulation(digits.x_train[:40], digits.y_train[:40], (6,), victim, settings, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        sim.step(jnp.ones((1, 6, 10)) * 0.1, rng.normal(size=(1, 8, 6)), rng.integers(0, 10, 8))
    assert sim.count == 3 and sim._step._cache_size() == 1
    assert np.all(np.isfinite(sim.final_stats()))


def test_the_committed_results_cover_every_attack_and_cell():
    """docs/results/modern-attacks (the README's table): every (topology, defence) of the
    preset, every attack scored beside its baselines, SDAR's labels where the client keeps them."""
    import math
    import os

    from nopeek.plots import ATTACK_PREFIXES
    from nopeek.sweeps import PRESET_INFO, read_rows

    root = os.path.join(os.path.dirname(__file__), "..")
    rows = read_rows(os.path.join(root, "docs", "results", "modern-attacks", "results.csv"))
    config = PRESET_INFO["modern-attacks"].config
    assert sorted((r["topology"], r["defense"]) for r in rows) == sorted(
        (t, d) for t in config.topologies for d in ("none", "nopeek", "noise"))
    for r in rows:
        for name in config.attacks:
            p = ATTACK_PREFIXES[name]
            free = "" if p == "attack" else f"{p}_"  # the decoder's baselines keep the names sweeps always had
            keys = (f"{p}_mse", f"{p}_ssim", f"{free}baseline_mse", f"{free}class_mean_mse")
            assert all(math.isfinite(float(r[k])) for k in keys), (name, r["topology"], r["defense"])
        has_labels = math.isfinite(float(r.get("sdar_label_accuracy") or "nan"))
        assert has_labels == (r["topology"] == "u_shaped")


@pytest.mark.parametrize("name,settings", [("adaptive", {"steps": 200, "leak_fractions": ()}),
                                           ("fora", {"steps": 60})])
def test_a_stacked_models_attack_is_its_attack_alone(name, settings, digits):
    """Stacked over a sweep's models (`map_models`), model 0's result is the one it gets
    attacked alone, whatever the other model of the stack sends."""
    rng = np.random.default_rng(0)
    x = digits.x_train[:300]
    w = rng.normal(size=(int(np.prod(x.shape[1:])), 16)).astype(np.float32) / 8
    z = np.maximum(x.reshape(len(x), -1) @ w, 0)
    other = rng.normal(size=z.shape).astype(np.float32)
    xt, zt = x[200:], z[200:]

    def inputs(*zs):
        return attacks.AttackInputs(
            x_leak=x[:100], z_leak=np.stack([m[:100] for m in zs]), y_leak=digits.y_train[:100],
            x_target=xt, z_target=np.stack([zt if m is z else m[200:] for m in zs]), y_target=digits.y_train[200:],
            x_aux=x[100:200], y_aux=digits.y_train[100:200], z_train=np.stack([m[:200] for m in zs]),
            x_train=x[:200], y_train=digits.y_train[:200])

    alone = attacks.run(name, inputs(z), **settings)[0]["x_hat"]
    stacked = attacks.run(name, inputs(z, other), **settings)
    assert len(stacked) == 2
    np.testing.assert_allclose(stacked[0]["x_hat"], alone, rtol=1e-4, atol=1e-5)
    assert not np.allclose(stacked[1]["x_hat"], alone, atol=1e-3)  # the other model's attack is its own


@pytest.mark.full_compile  # long loops: compiled as users run them (conftest.py)
def test_a_stacked_sdar_is_its_sdar_alone(vanilla):
    """SDAR with a substitute simulator, stacked with a model whose messages go negative (so
    its substitute has a linear output while model 0's keeps its ReLU): model 0 gets what it
    gets alone."""
    rng = np.random.default_rng(3)
    z = np.asarray(vanilla.z_train)
    assert np.all(z >= 0)  # the digits cnn's cut is after a ReLU: model 0's substitute ReLUs its output

    def noisy(a):
        return rng.normal(size=np.shape(a)).astype(np.float32)

    fields = vars(vanilla)
    stacked = attacks.AttackInputs(**{**fields, "z_leak": np.concatenate([vanilla.z_leak, noisy(vanilla.z_leak)]),
                                      "z_train": np.concatenate([vanilla.z_train, noisy(vanilla.z_train)]),
                                      "z_target": np.concatenate([vanilla.z_target, noisy(vanilla.z_target)]),
                                      "server_params": [vanilla.server_params[0]] * 2,
                                      "alphas": np.zeros(2, np.float32)})
    settings = dict(steps=40, simulator="substitute")
    alone = attacks.run("sdar", vanilla, **settings)[0]["x_hat"]
    both = attacks.run("sdar", stacked, **settings)
    np.testing.assert_allclose(both[0]["x_hat"], alone, rtol=1e-4, atol=1e-5)
    assert not np.allclose(both[1]["x_hat"], alone, atol=1e-3)
