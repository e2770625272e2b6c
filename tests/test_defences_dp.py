"""The defences with a guarantee or a bottleneck (issue 23): the engine's two new hooks against
independent references, the DP accountant against the library called directly, strength 0
equal to no defence bit for bit, refusals, a run folder round trip."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import NeighboringRelation, dp_event, get_epsilon_gaussian, pld

from nopeek import data
from nopeek import protocol as P
from nopeek.defences import (
    DPSGD, EPSILON_RESOLUTION, MID, Context, GaussianMessage, Releases, build_defence, clip_rows, dp_guarantee, init_bottleneck,
    kl_divergence,
)
from nopeek.errors import ConfigError
from nopeek.protocol import Defence, cross_entropy, protocol_gradients
from nopeek.training import TrainConfig, load, train_stack

N = 16


def _vanilla(model="mlp", shape=(8, 8, 1), cuts=(1,)):
    setup = P.Setup(model=model, widths=(), input_shape=shape, num_classes=10, cuts=cuts)
    return P.build("vanilla", setup)


def _batch(rng, shape=(8, 8, 1), n=N):
    return jnp.asarray(rng.uniform(size=(n, *shape)), jnp.float32), jnp.asarray(np.arange(n) % 10, jnp.int32)


def _apply(b, party, segment, params, x):
    from flax import nnx

    return nnx.merge(b.topology.graphdefs[(party, segment)], params[party][segment])(x)


class TwiceSumOfRows(Defence):
    """Returns twice the sum of the per-sample rows in place of the batch gradient: the
    factor 2 shows which parties' gradients went through the defence."""

    privatises_parameters = True

    def parameter_gradients(self, party, batch, per_sample):
        return jax.tree.map(lambda a: 2 * jnp.sum(a, axis=0), per_sample())


@pytest.mark.parametrize("model,shape,cuts", [("mlp", (8, 8, 1), (1,)), ("cnn", (12, 12, 1), (3,))])
def test_per_sample_rows_sum_to_the_batch_gradient(rng, model, shape, cuts):
    b = _vanilla(model, shape, cuts)
    params = b.init(0)
    x, y = _batch(rng, shape)
    plain, _ = jax.jit(lambda p: protocol_gradients(b.topology, p, b.prepare(x, y)))(params)
    rows, _ = jax.jit(lambda p: protocol_gradients(b.topology, p, b.prepare(x, y), defence=TwiceSumOfRows()))(params)
    for g, w in zip(jax.tree.leaves(rows["client"]), jax.tree.leaves(plain["client"])):
        np.testing.assert_allclose(g, 2 * w, rtol=2e-4, atol=2e-6)
    # the server is not a data holder: its gradients are the plain ones (not doubled), to the
    # round-off of the client's forward pass, which the per-sample program computes in
    # another order (Eigen's convolutions: up to 2e-8 here; bit for bit under YNNPACK's)
    for g, w in zip(jax.tree.leaves(rows["server"]), jax.tree.leaves(plain["server"])):
        assert float(jnp.max(jnp.abs(w))) > 1e-4  # a real gradient, which doubling would move
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


def test_dp_sgd_is_the_mean_of_clipped_per_example_gradients(rng):
    """Against per-example gradients taken one sample at a time by jax.grad of the whole loss."""
    b = _vanilla()
    params = b.init(1)
    x, y = _batch(rng)
    clip = 0.05
    defence = DPSGD(1e-7, clip, Context(0, 3))  # noise std 5e-9: the clipped mean, to float precision
    got, _ = jax.jit(lambda p: protocol_gradients(b.topology, p, b.prepare(x, y), defence=defence))(params)

    def loss(client, xi, yi):
        z = _apply(b, "client", "bottom", {"client": client}, xi)
        return cross_entropy(_apply(b, "server", "top", params, z), yi)

    one = jax.jit(jax.grad(loss))  # one program for the N single-sample gradients
    singles = [one(params["client"], x[i:i + 1], y[i:i + 1]) for i in range(N)]
    norms = [float(jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree.leaves(g)))) for g in singles]
    assert min(norms) > clip  # every row is clipped here
    want = jax.tree.map(lambda *rows: sum(r * min(1.0, clip / n) for r, n in zip(rows, norms)) / N, *singles)
    for g, w in zip(jax.tree.leaves(got["client"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)
    total = np.sqrt(sum(float(jnp.sum(a**2)) for a in jax.tree.leaves(got["client"])))
    assert total <= clip + 1e-6  # a mean of vectors of norm <= C
    noisy, _ = jax.jit(lambda p: protocol_gradients(b.topology, p, b.prepare(x, y),
                                                    defence=DPSGD(2.0, clip, Context(0, 3))))(params)
    noise = np.concatenate([np.ravel(n - w) for n, w in zip(jax.tree.leaves(noisy["client"]), jax.tree.leaves(want))])
    assert np.std(noise) == pytest.approx(2.0 * clip / N, rel=0.1)  # N(0, (sigma C)^2) on the sum, divided by B


def test_gaussian_message_clips_each_sample_and_adds_its_noise(rng):
    b = _vanilla()
    params = b.init(0)
    x, y = _batch(rng, n=64)
    z = _apply(b, "client", "bottom", params, x)
    norms = np.linalg.norm(np.asarray(z).reshape(len(z), -1), axis=1)
    clip = float(np.median(norms))
    clipped = np.asarray(clip_rows(z, clip))
    np.testing.assert_allclose(np.linalg.norm(clipped, axis=1), np.minimum(norms, clip), rtol=1e-5)
    spy = P.Log()
    P.protocol_gradients(b.topology, params, b.prepare(x, y), defence=GaussianMessage(0.5, clip, Context(2, 1)),
                         transport=spy)
    sent = next(v for (_, _, t, v) in spy.log if t == "z")
    assert np.std(sent - clipped) == pytest.approx(0.5 * clip, rel=0.05)
    evaluation = GaussianMessage(0.5, clip, Context(2, evaluation=True))
    mean = P.forward(b.topology, params, b.prepare(x, y), defence=evaluation)["z"]  # no sample positions: send_mean
    # Two programs (the protocol's and clip_rows alone) may round differently: 1 ulp of the
    # message's scale, not of each element (seen with XLA's optimisations off).
    ulps = 4 * np.finfo(np.float32).eps * float(np.abs(clipped).max())
    np.testing.assert_allclose(mean, clipped, rtol=1e-6, atol=ulps)
    whole = P.forward(b.topology, params, b.prepare(x, y), defence=evaluation, sample_index=jnp.arange(64))["z"]
    part = P.forward(b.topology, params, b.prepare(x[8:16], y[8:16]), defence=evaluation,
                     sample_index=jnp.arange(8, 16))["z"]
    np.testing.assert_allclose(part, whole[8:16], rtol=1e-6, atol=ulps)  # sample i's noise from its position


def test_mid_gradients_equal_autodiff_of_the_whole_loss(rng):
    """The engine threads the bottleneck's own parameters: every gradient, theirs included,
    equals jax.grad of CE(server(bottleneck(client(x)))) + lambda * KL with the same draws."""
    b = _vanilla()
    x, y = _batch(rng)
    lam = 0.3
    defence = build_defence({"mid": lam}, Context(5, 2))
    params = b.init(0)
    z_shape = _apply(b, "client", "bottom", params, x).shape[1:]
    params["client"]["defence"] = {"z": defence.init_parameters("z", z_shape, jax.random.key(1))}
    grads, aux = jax.jit(lambda p: protocol_gradients(b.topology, p, b.prepare(x, y), defence=defence))(params)
    mid = defence.parts[0]
    assert isinstance(mid, MID)

    def whole(p):
        own = p["client"]["defence"]["z"]["mid"]
        h = _apply(b, "client", "bottom", p, x)
        m = mid.send("z", 0, h, 1, params=own)
        return cross_entropy(_apply(b, "server", "top", p, m), y) + lam * kl_divergence(own, h)

    loss, want = jax.jit(jax.value_and_grad(whole))(params)
    np.testing.assert_allclose(aux["loss"], loss, rtol=1e-5)
    assert set(grads["client"]) == {"bottom", "defence"}
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        scale = float(jnp.max(jnp.abs(w))) + 1e-12
        np.testing.assert_allclose(np.asarray(g) / scale, np.asarray(w) / scale, atol=2e-5)
    assert float(aux["penalty"]["mid_kl"]["z"]) == pytest.approx(float(kl_divergence(params["client"]["defence"]["z"]["mid"],
                                                                                      _apply(b, "client", "bottom", params, x))))


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    p = init_bottleneck(4, 4, jax.random.key(0))
    p = jax.tree.map(jnp.zeros_like, p)
    h = jnp.ones((3, 4))
    # mu = 0 and sigma = softplus(-5): KL = k/2 (sigma^2 - 1 - 2 log sigma) per sample
    s = float(jax.nn.softplus(-5.0))
    assert float(kl_divergence(p, h)) == pytest.approx(4 * 0.5 * (s**2 - 1 - 2 * np.log(s)), rel=1e-5)
    p["enc"]["b"] = p["enc"]["b"].at[4:].set(5.0 + np.log(np.e - 1))  # sigma = softplus(log(e - 1)) = 1
    assert float(kl_divergence(p, h)) == pytest.approx(0.0, abs=1e-6)


# ---- the accountant against dp-accounting called directly ---------------------------------


class Settings:
    dp_delta = 1e-5


@pytest.mark.parametrize("sigma,epochs", [(0.8, 4), (1.0, 10), (2.0, 20)])
def test_dp_sgd_epsilon_is_the_librarys(sigma, epochs):
    releases = Releases(epochs=epochs, steps_per_epoch=79, samples=5000, batch_size=64)
    got = dp_guarantee({"dp_sgd": sigma}, Settings(), releases)
    accountant = pld.PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=EPSILON_RESOLUTION)
    step = dp_event.PoissonSampledDpEvent(64 / 5000, dp_event.GaussianDpEvent(sigma))
    accountant.compose(dp_event.SelfComposedDpEvent(step, epochs * 79))
    assert got["dp_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert got["dp_delta"] == 1e-5 and got["dp_covers"] == "the client's parameters"
    assert got["dp_epsilon_epoch"] < got["dp_epsilon"]


def test_the_accountants_grid_loses_nothing_that_shows():
    """The grid nopeek accounts on (EPSILON_RESOLUTION, coarser than the library's default
    1e-4 for speed) gives an epsilon at or above the default's (the estimate is pessimistic)
    and within 1e-4 of it, relatively, for both mechanisms."""
    releases = Releases(epochs=4, steps_per_epoch=21, samples=1347, batch_size=64)
    for strengths in ({"dp_message": 0.5}, {"dp_sgd": 1.0}):
        got = dp_guarantee(strengths, Settings(), releases)["dp_epsilon"]
        fine = pld.PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-4)
        name, sigma = next(iter(strengths.items()))
        if name == "dp_message":
            fine.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(sigma), 4))
        else:
            fine.compose(dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(64 / 1347, dp_event.GaussianDpEvent(sigma)), 84))
        want = fine.get_epsilon(1e-5)
        assert want * (1 - 1e-9) <= got <= want * (1 + 1e-4), (strengths, got, want)


@pytest.mark.parametrize("sigma,epochs", [(2.0, 1), (4.0, 10), (8.0, 20)])
def test_message_epsilon_is_the_analytic_gaussian_mechanism(sigma, epochs):
    """Replace-one: sensitivity 2C, so R releases are one Gaussian of multiplier (sigma/2)/sqrt(R)
    (dp_accounting's analytic `get_epsilon_gaussian`, a different code path from the PLD)."""
    got = dp_guarantee({"dp_message": sigma}, Settings(), Releases(epochs, 79, 5000, 64))
    assert got["dp_epsilon"] == pytest.approx(get_epsilon_gaussian(sigma / 2 / np.sqrt(epochs), 1e-5), rel=1e-3)
    assert got["dp_epsilon_epoch"] == pytest.approx(get_epsilon_gaussian(sigma / 2, 1e-5), rel=1e-3)


def test_both_mechanisms_compose_and_others_claim_nothing():
    releases = Releases(4, 62, 4000, 64)
    both = dp_guarantee({"dp_message": 4.0, "dp_sgd": 1.0, "nopeek": 0.0}, Settings(), releases)
    accountant = pld.PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=EPSILON_RESOLUTION)
    accountant.compose(dp_event.ComposedDpEvent([
        dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(4.0), 4),
        dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(64 / 4000, dp_event.GaussianDpEvent(1.0)), 248)]))
    assert both["dp_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert dp_guarantee({"nopeek": 1.0, "noise": 2.0, "mid": 0.1}, Settings(), releases) == {}
    assert dp_guarantee({"dp_sgd": 0.0}, Settings(), releases) == {}


# ---- training: strength 0, the run's own accounting, refusals, a run folder ---------------


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", limit=300)


def _segments(params):
    return {p: {k: v for k, v in d.items() if k != "defence"} for p, d in params.items()}


@pytest.mark.parametrize("mode", ["map", "vmap"])
def test_strength_zero_is_no_defence_bit_for_bit(digits, mode):
    """A model at strength 0 of each new defence, in a program where other models use them,
    trains exactly as without them: bit for bit in an unrolled stack (`map`). A vmapped stack
    batches the models' matmuls, and XLA's kernel for a batch of 3 need not sum in the order
    of its kernel for 1 (seen on an AVX2 host, not on AVX-512): there the model at 0 is held
    to float32 round-off, far below what a defence at 0.5 changes. Round-off in a sum scales
    with its terms, not with the result: an entry near 0 (a message's 7e-4, off by 3e-8 on
    the CI host) is held to 1e-5 of its array's largest entry, not of itself. Not DP-SGD in a
    vmapped stack (its conditional becomes a select there; see docs/guide/defences.md)."""
    config = TrainConfig(dataset="digits", epochs=1, limit=300)  # 3 steps (the second is where rounding showed)
    plain = train_stack(config, digits, progress=False, stack_mode=mode)
    names = ["dp_message", "mid"] + (["dp_sgd"] if mode == "map" else [])
    stack = train_stack(config, digits, strengths=[{}] + [{n: 0.5} for n in names], seeds=[0] * (1 + len(names)),
                        progress=False, stack_mode=mode)
    assert set(stack.hparams["strength"]) >= set(names)
    def same(a, b):
        if mode == "map":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))
    for a, b in zip(jax.tree.leaves(_segments(plain.model_params(0))), jax.tree.leaves(_segments(stack.model_params(0)))):
        same(np.asarray(a), np.asarray(b))
    same(plain.messages_test["z"][0], stack.messages_test["z"][0])
    for k in range(1, len(names) + 1):  # each defence at 0.5 does change the model
        assert not np.allclose(stack.messages_test["z"][0], stack.messages_test["z"][k])


def test_a_runs_epsilon_uses_its_own_steps_and_samples(digits):
    config = TrainConfig(dataset="digits", epochs=2, limit=300, batch_size=32, dp_delta=1e-4)
    result = train_stack(config, digits, strengths=[{"dp_sgd": 1.5}], progress=False)
    n = len(digits.x_train)
    assert result.releases == Releases(epochs=2, steps_per_epoch=n // 32, samples=n, batch_size=32)
    accountant = pld.PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=EPSILON_RESOLUTION)
    accountant.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(32 / n, dp_event.GaussianDpEvent(1.5)), 2 * (n // 32)))
    assert result.privacy(0)["dp_epsilon"] == pytest.approx(accountant.get_epsilon(1e-4), rel=1e-9)


@pytest.mark.parametrize("changes,message", [
    (dict(alpha=1.0, defenses=("dp_sgd=1",)), "dp_sgd: cannot be combined with nopeek"),
    (dict(defenses=("dp_sgd=1", "mid=0.1")), "dp_sgd: cannot be combined with mid"),
    (dict(topology="vertical", defenses=("dp_sgd=1",)), "vertical shares each sample"),
    (dict(topology="round_robin", defenses=("dp_sgd=1",)), "round_robin shares each sample or the samples"),
    (dict(noise_kind="laplace"), "unknown noise kind 'laplace'; choose from gaussian, uniform"),
    (dict(dp_clip=0.0), "--dp-clip must be finite and > 0"),
    (dict(dp_delta=1.0), "--dp-delta must be in (0, 1)"),
    (dict(mid_dim=0), "--mid-dim must be >= 1"),
])
def test_what_cannot_apply_is_refused(digits, changes, message):
    config = TrainConfig(dataset="digits", epochs=1, limit=300).replace(**changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.validate()
        train_stack(config, digits, progress=False)


def test_guarantee_settings_are_those_of_the_defences_that_claim_one():
    """The settings reported beside an epsilon: the DP section's fields, read from the config,
    for a model that uses a DP defence at strength > 0; nothing for MID, noise or strength 0."""
    from nopeek.defences import guarantee_settings

    config = TrainConfig(dataset="digits").replace(dp_clip=2.5, dp_delta=1e-6, mid_dim=8)
    assert guarantee_settings({"dp_sgd": 1.0, "mid": 0.1}, config) == {"dp_clip": 2.5, "dp_delta": 1e-6}
    assert guarantee_settings({"dp_message": 0.5}, config) == {"dp_clip": 2.5, "dp_delta": 1e-6}
    assert guarantee_settings({"dp_message": 0.0, "mid": 0.1, "nopeek": 1.0}, config) == {}


def test_dp_sgd_applies_where_one_holder_trains_on_whole_samples():
    """The topology fact DP-SGD's check reads: one data holder of whole samples that trains
    on all of them; not feature slices (vertical), not shards taken in turns (round robin)."""
    from nopeek.protocol import TOPOLOGIES

    assert {n for n, s in TOPOLOGIES.items() if not s.one_sample_holder} == {"vertical", "round_robin"}


def test_run_folder_keeps_the_bottleneck_and_reports_epsilon(tmp_path):
    from nopeek.cli import main

    out = str(tmp_path / "run")
    assert main(["train", "--dataset", "digits", "--limit", "300", "--epochs", "2", "--defenses",
                 "dp_message=0.5,mid=0.1", "--out", out, "--quiet"]) == 0
    metrics = json.load(open(f"{out}/metrics.json"))
    assert metrics["dp_epsilon"] > metrics["dp_epsilon_epoch"] > 0 and metrics["dp_delta"] == 1e-5
    assert metrics["dp_adjacency"] == "replace-one" and metrics["dp_epochs"] == 2
    assert metrics["dp_clip"] == 1.0 and "mid_dim" not in metrics  # MID claims no guarantee
    run = load(out)
    assert set(run.params["client"]) == {"bottom", "defence"}
    ds = data.load("digits", limit=300)
    # The restored run computes what it sent: its test-time messages, and its accuracy on them.
    sent = run.sent(None, ds.x_test)
    mean = run.message(None, ds.x_test)  # the bottleneck's mean (send_mean), clipped
    assert sent.shape == mean.shape and len(sent) == len(ds.x_test)
    assert np.all(np.linalg.norm(mean, axis=1) <= 1.0 + 1e-5)
    assert not np.allclose(sent, mean)


def test_numeric_functions_under_jit_scalar_batch_and_mismatch(rng):
    clip = jax.jit(clip_rows, static_argnums=2)
    one = jnp.asarray([[3.0, 4.0]])  # a single sample of norm 5
    np.testing.assert_allclose(clip(one, 1.0, 1), [[0.6, 0.8]], rtol=1e-6)
    batch = jnp.asarray(rng.normal(size=(3, 5, 4, 2)), jnp.float32)  # 3 replicas x 5 samples
    out = np.asarray(clip(batch, 0.5, 2))
    norms = np.linalg.norm(out.reshape(3, 5, -1), axis=-1)
    np.testing.assert_allclose(norms, np.minimum(np.linalg.norm(np.asarray(batch).reshape(3, 5, -1), axis=-1), 0.5),
                               rtol=1e-5)
    p = init_bottleneck(8, 4, jax.random.key(0))
    kl = jax.jit(kl_divergence)
    assert float(kl(p, jnp.ones((1, 8)))) > 0 and kl(p, jnp.ones((6, 2, 4))).shape == ()
    with pytest.raises(TypeError):
        kl(p, jnp.ones((6, 7)))  # 7 values per sample, the encoder takes 8
