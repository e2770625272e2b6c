"""The split protocol: gradients equal end-to-end autodiff; the server never sees x; transcript."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nopeek import split as S
from nopeek.models import build_model, list_cuts

CASES = [
    ("mlp", (8, 8, 1), 1), ("mlp", (8, 8, 1), 2),
    ("mlp", (30,), 1),
    ("cnn", (12, 12, 1), 1), ("cnn", (12, 12, 1), 3), ("cnn", (12, 12, 1), 4),
    ("resnet", (16, 16, 3), 1), ("resnet", (16, 16, 3), 3),
]


def _batch(rng, shape, n=24, classes=10):
    return jnp.asarray(rng.uniform(size=(n, *shape)), jnp.float32), jnp.asarray(np.arange(n) % classes, jnp.int32)


@pytest.mark.parametrize("model_name,shape,cut", CASES)
@pytest.mark.parametrize("leakage_kind", ["dcor", "log_dcor"])
def test_protocol_gradients_equal_end_to_end(rng, model_name, shape, cut, leakage_kind):
    fns, client, server = S.split(build_model(model_name, shape, 10, seed=1), cut)
    x, y = _batch(rng, shape)
    kw = dict(alpha=0.7, task_weight=0.9, leakage_kind=leakage_kind)
    g_client, g_server, aux = jax.jit(lambda c, s: S.protocol_gradients(fns, c, s, x, y, **kw))(client, server)
    loss, (e_client, e_server) = jax.value_and_grad(
        lambda c, s: S.end_to_end_loss(fns, c, s, x, y, **kw), argnums=(0, 1)
    )(client, server)
    np.testing.assert_allclose(aux["loss"], loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves((g_client, g_server)), jax.tree.leaves((e_client, e_server))):
        scale = float(jnp.max(jnp.abs(want))) + 1e-12
        np.testing.assert_allclose(got / scale, want / scale, atol=2e-5)


class RecordingFns(S.SplitFns):
    """SplitFns that records every array the server part is called with."""

    seen: list

    def server_apply(self, params, z):
        RecordingFns.seen.append(z.shape)
        return super().server_apply(params, z)


def test_server_receives_only_z(rng):
    fns, client, server = S.split(build_model("mlp", (8, 8, 1), 10), 1)
    rec = RecordingFns(fns.client_graph, fns.server_graph, fns.cut)
    RecordingFns.seen = []
    x, y = _batch(rng, (8, 8, 1))
    S.protocol_gradients(rec, client, server, x, y, alpha=1.0)
    assert RecordingFns.seen and all(shape == (24, 128) for shape in RecordingFns.seen)


def test_transcript_counts_bytes():
    fns, client, server = S.split(build_model("cnn", (28, 28, 1), 10), 3)
    msgs = S.transcript(fns, client, server, (64, 28, 28, 1))
    by_name = {m.name: m for m in msgs}
    z = by_name["z (cut activations)"]
    assert z.direction == "client->server" and z.shape == (64, 14, 14, 32) and z.nbytes == 64 * 14 * 14 * 32 * 4
    g = by_name["dL/dz (cut gradient)"]
    assert g.direction == "server->client" and g.shape == z.shape
    assert by_name["y (labels)"].nbytes == 64 * 4
    assert "total per step" in S.format_transcript(msgs)


@pytest.mark.parametrize("model_name,shape", [("mlp", (8, 8, 1)), ("cnn", (28, 28, 1)), ("cnn_nopeek", (28, 28, 1)), ("resnet", (32, 32, 3))])
def test_list_cuts_matches_real_activations(rng, model_name, shape):
    model = build_model(model_name, shape, 10)
    x, _ = _batch(rng, shape, n=2)
    for info in list_cuts(model, shape):
        fns, client, _ = S.split(model, info.cut)
        z = fns.client_apply(client, x)
        assert z.shape[1:] == info.shape and info.bytes_per_sample == z[0].size * 4


def test_nopeek_mnist_network_layout():
    model = build_model("cnn_nopeek", (28, 28, 1), 10)
    assert model.names == ("conv1", "conv2", "pool", "fc1", "fc2", "head")
    shapes = [c.shape for c in list_cuts(model, (28, 28, 1))]
    assert shapes == [(28, 28, 32), (28, 28, 64), (14, 14, 64), (500,), (128,)]


def test_bad_cut_raises():
    model = build_model("mlp", (8, 8, 1), 10)
    for cut in (0, 3):
        with pytest.raises(ValueError, match="cut must be between 1 and 2"):
            S.split(model, cut)


def test_noise_is_added_to_what_is_sent(rng):
    fns, client, server = S.split(build_model("mlp", (8, 8, 1), 10), 1)
    x, y = _batch(rng, (8, 8, 1))
    clean = fns.client_apply(client, x)
    *_, aux = S.protocol_gradients(fns, client, server, x, y, alpha=0.0, noise_scale=2.0,
                                   noise_kind="uniform", key=jax.random.key(0))
    diff = aux["z"] - clean
    assert float(jnp.abs(diff).max()) <= 2.0 and float(jnp.abs(diff).mean()) > 0.5
