"""The protocol engine: party gradients equal end-to-end autodiff for every topology, each
party sees only what is addressed to it, the transcript matches what is passed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nopeek import protocol as E
from nopeek.defences import Context, NoiseDefence, NoPeek
from nopeek.protocol import _engine
from nopeek import protocol as T
from nopeek.protocol import cross_entropy, leakage
from nopeek.protocol import build_model, list_cuts

SHAPES = {"mlp": (8, 8, 1), "cnn": (12, 12, 1), "resnet": (16, 16, 3)}
N = 24


def _built(topology, model, cuts, **kw):
    setup = T.Setup(model=model, widths=kw.pop("widths", ()), input_shape=kw.pop("shape", SHAPES[model]),
                    num_classes=kw.pop("classes", 10), cuts=tuple(cuts), **kw)
    return T.build(topology, setup)


def _batch(rng, shape, n=N, classes=10):
    # device_put, not jnp.asarray: a transfer, where jnp.asarray compiles a small program per shape
    return (jax.device_put(rng.uniform(size=(n, *shape)).astype(np.float32)),
            jax.device_put((np.arange(n) % classes).astype(np.int32)))


def _apply(b, party, segment, params, x):
    return nnx.merge(b.topology.graphdefs[(party, segment)], params[party][segment])(x)


def _assert_close_trees(got, want, atol=2e-5):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g), np.asarray(w)  # compared on the host: no program per leaf shape
        scale = float(np.max(np.abs(w))) + 1e-12
        np.testing.assert_allclose(g / scale, w / scale, atol=atol)


# The whole loss written by hand, one function of every party's parameters: the references.
def vanilla_loss(b, params, x, y, alpha, tw, kind):
    z = _apply(b, "client", "bottom", params, x)
    return tw * cross_entropy(_apply(b, "server", "top", params, z), y) + alpha * leakage(x, z, kind)


def u_shaped_loss(b, params, x, y, alpha, tw, kind):
    z1 = _apply(b, "client", "bottom", params, x)
    z2 = _apply(b, "server", "middle", params, z1)
    return tw * cross_entropy(_apply(b, "client", "top", params, z2), y) + alpha * leakage(x, z1, kind)


CASES = [
    ("vanilla", "mlp", (1,)), ("vanilla", "mlp", (2,)),
    ("vanilla", "cnn", (1,)), ("vanilla", "cnn", (3,)), ("vanilla", "cnn", (4,)),
    ("vanilla", "resnet", (1,)), ("vanilla", "resnet", (3,)),
    ("u_shaped", "mlp", (1, 2)),
    ("u_shaped", "cnn", (1, 4)), ("u_shaped", "cnn", (3, 5)),
    ("u_shaped", "resnet", (1, 3)), ("u_shaped", "resnet", (2, 4)),
]


# The leakage term's kind changes only the penalty's last formula, not how the parties'
# gradients compose: the cases alternate the two kinds, so each kind meets both topologies and
# every model (three programs per case; every case with both kinds took 275 s of the suite).
@pytest.mark.parametrize("topology,model,cuts,kind", [(*case, ("dcor", "log_dcor")[i % 2]) for i, case in enumerate(CASES)])
def test_party_gradients_equal_end_to_end(rng, topology, model, cuts, kind):
    b = _built(topology, model, cuts)
    params = b.init(1)
    x, y = _batch(rng, SHAPES[model])
    kw = dict(defence=NoPeek(0.7, kind), task_weight=0.9)
    grads, aux = jax.jit(lambda p: E.protocol_gradients(b.topology, p, b.prepare(x, y), **kw))(params)
    reference = {"vanilla": vanilla_loss, "u_shaped": u_shaped_loss}[topology]
    # Jitted as a whole (one program; op-by-op autodiff would compile every primitive alone).
    loss, want = jax.jit(jax.value_and_grad(lambda p: reference(b, p, x, y, 0.7, 0.9, kind)))(params)
    np.testing.assert_allclose(aux["loss"], loss, rtol=1e-5)
    _assert_close_trees(grads, want)
    # The engine's own end-to-end form agrees too.
    _assert_close_trees(jax.jit(jax.grad(lambda p: E.end_to_end_loss(b.topology, p, b.prepare(x, y), **kw)))(params), want)


@pytest.mark.parametrize("topology,model,cuts,kw", [
    ("vertical", "mlp", (1,), dict(shape=(30,), classes=2, clients=3)),
    ("vertical", "cnn", (3,), dict(clients=2, merge="sum")),
    ("vertical", "cnn", (4,), dict(clients=4, merge="mean")),
    ("multi_task", "mlp", (1,), dict(task_weights=(1.0, 0.5, 2.0))),
    ("multi_task", "cnn", (5,), dict(tasks=("digit", "parity"))),
    ("multi_hop", "mlp", (1, 2), dict(widths=(32, 16))),
    ("multi_hop", "cnn", (1, 3, 4), {}),
    ("round_robin", "mlp", (1,), dict(clients=3)),
])
def test_every_configuration_matches_autodiff(rng, topology, model, cuts, kw):
    b = _built(topology, model, cuts, **kw)
    params = b.init(3)
    shape = kw.get("shape", SHAPES[model])
    x, y = _batch(rng, shape, classes=kw.get("classes", 10))
    data = b.prepare(x, y)
    grads, aux = jax.jit(lambda p: E.protocol_gradients(b.topology, p, data, defence=NoPeek(0.4), task_weight=1.1))(params)
    loss, want = jax.jit(jax.value_and_grad(lambda p: E.end_to_end_loss(b.topology, p, data, defence=NoPeek(0.4),
                                                                         task_weight=1.1)))(params)
    np.testing.assert_allclose(aux["loss"], loss, rtol=1e-5)
    _assert_close_trees(grads, want)



@pytest.mark.parametrize("topology,model,cuts,kw", [
    ("vanilla", "mlp", (1,), {}), ("u_shaped", "cnn", (3, 5), {}), ("multi_hop", "mlp", (1, 2), {}),
    ("vertical", "mlp", (1,), dict(shape=(30,), classes=2, clients=3)), ("multi_task", "mlp", (1,), {}),
])
def test_parties_see_only_what_is_addressed_to_them(rng, monkeypatch, topology, model, cuts, kw):
    b = _built(topology, model, cuts, **kw)
    params = b.init(0)
    x, y = _batch(rng, kw.get("shape", SHAPES[model]), classes=kw.get("classes", 10))
    data = {k: np.asarray(v) for k, v in b.prepare(x, y).items()}
    calls = []  # (party, [input arrays], output) for every segment call, in order
    real = E.segment_fn

    def recording(topo, seg):
        fn = real(topo, seg)

        def wrapped(p, *inputs):
            out = fn(p, *inputs)
            # The runner differentiates through this call, so values are traced: record
            # them when they are computed.
            jax.debug.callback(lambda *a: calls.append((seg.party, [np.asarray(v) for v in a[:-1]], np.asarray(a[-1]))),
                               *inputs, out)
            return out

        return wrapped

    monkeypatch.setattr(_engine, "segment_fn", recording)
    spy = E.Log()
    E.protocol_gradients(b.topology, params, b.prepare(x, y), defence=NoPeek(0.5), transport=spy)
    topo = b.topology

    def among(a, arrays):
        return any(v.shape == a.shape and np.array_equal(v, a) for v in arrays)

    assert len(calls) == len(topo.segments)
    for j, (party, inputs, _) in enumerate(calls):
        holds = topo.party(party).holds
        allowed = [v for (_, r, _, v) in spy.log if r == party]  # messages addressed to it
        allowed += [v for k, v in data.items() if k in holds]  # its own data
        allowed += [out for (q, _, out) in calls[:j] if q == party]  # its own earlier outputs
        for a in inputs:
            assert among(a, allowed), f"{party} was called with something not addressed to it"
            for key, value in data.items():
                if E.is_raw_input(key) and key not in holds:
                    assert not among(a, [value]), f"{party} got raw {key}"
    for sender, receiver, tensor, value in spy.log:
        for key, raw in data.items():
            if E.is_raw_input(key):
                assert not (raw.shape == value.shape and np.array_equal(raw, value)), f"raw {key} crossed"
        if topology == "u_shaped":
            assert not tensor.startswith("y") and not (value.shape == y.shape and np.array_equal(value, y))
    label_messages = [t for (_, _, t, _) in spy.log if t.startswith("y")]
    expected = {"vanilla": ["y"], "u_shaped": [], "multi_hop": ["y"], "vertical": [],
                "multi_task": ["y", "y_parity", "y_ge5"]}[topology]
    assert sorted(label_messages) == sorted(expected)


@pytest.mark.parametrize("topology,model,cuts,kw", [
    ("vanilla", "cnn", (3,), {}), ("u_shaped", "mlp", (1, 2), {}), ("multi_hop", "cnn", (1, 4), {}),
    ("vertical", "cnn", (4,), dict(clients=2)), ("multi_task", "mlp", (1,), {}),
])
def test_transcript_bytes_equal_the_arrays_passed(rng, topology, model, cuts, kw):
    b = _built(topology, model, cuts, **kw)
    params = b.init(0)
    x, y = _batch(rng, SHAPES[model])
    data = b.prepare(x, y)
    spy = E.Log()
    E.protocol_gradients(b.topology, params, data, defence=NoPeek(0.5), transport=spy)
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), data)
    messages = E.transcript(b.topology, params, spec)
    # Expand the spy's stacked messages the way the transcript names replicated parties.
    actual = []
    for sender, receiver, tensor, value in spy.log:
        s, r = b.topology.party(sender), b.topology.party(receiver)
        if max(s.replicas, r.replicas) > 1:
            for i in range(value.shape[0]):
                a = s.member_names()[i] if s.replicas > 1 else sender
                c = r.member_names()[i] if r.replicas > 1 else receiver
                actual.append((a, c, tensor, value[i].nbytes))
        else:
            actual.append((sender, receiver, tensor, value.nbytes))
    assert [(m.sender, m.receiver, m.tensor, m.bytes) for m in messages] == actual
    assert "total per step" in E.format_transcript(messages)


def test_vanilla_transcript_names_and_shapes():
    b = _built("vanilla", "cnn", (3,), shape=(28, 28, 1))
    spec = {"x": jax.ShapeDtypeStruct((64, 28, 28, 1), jnp.float32), "y": jax.ShapeDtypeStruct((64,), jnp.int32)}
    msgs = {m.tensor: m for m in E.transcript(b.topology, b.init(0), spec)}
    z = msgs["z"]
    assert (z.sender, z.receiver, z.shape, z.bytes) == ("client", "server", (64, 14, 14, 32), 64 * 14 * 14 * 32 * 4)
    assert msgs["y"].bytes == 64 * 4 and msgs["dL/dz"].receiver == "client" and msgs["dL/dz"].shape == z.shape


def test_round_robin_handoffs_count_weights_and_optimiser_state():
    b = _built("round_robin", "mlp", (1,), clients=3, handoff="server")
    params = b.init(0)
    spec = {"x": jax.ShapeDtypeStruct((8, 8, 8, 1), jnp.float32), "y": jax.ShapeDtypeStruct((8,), jnp.int32)}
    plain = E.transcript(b.topology, params, spec)
    turns = [m for m in plain if m.per == "turn"]
    assert [(m.sender, m.receiver) for m in turns] == [
        ("client1", "server"), ("server", "client2"), ("client2", "server"), ("server", "client3"),
        ("client3", "server"), ("server", "client1")]
    n_params = sum(a.size for a in jax.tree.leaves(params["client"]))
    assert turns[0].bytes == 4 * n_params


def test_noise_is_added_to_what_is_sent(rng):
    b = _built("vanilla", "mlp", (1,))
    params = b.init(0)
    x, y = _batch(rng, SHAPES["mlp"])
    spy = E.Log()
    noise = NoiseDefence(2.0, "uniform", Context(0))
    E.protocol_gradients(b.topology, params, b.prepare(x, y), defence=noise, transport=spy)
    sent = next(v for (_, _, t, v) in spy.log if t == "z")
    clean = np.asarray(_apply(b, "client", "bottom", params, x))
    diff = sent - clean
    assert np.abs(diff).max() <= 2.0 and np.abs(diff).mean() > 0.5


def test_test_time_noise_is_per_sample_not_per_chunk(rng):
    b = _built("vanilla", "mlp", (1,))
    params = b.init(0)
    x, y = _batch(rng, SHAPES["mlp"], n=40)
    kw = dict(defence=NoiseDefence(1.0, "gaussian", Context(3, evaluation=True)))
    whole = E.forward(b.topology, params, b.prepare(x, y), sample_index=jnp.arange(40), **kw)["z"]
    parts = [E.forward(b.topology, params, b.prepare(x[i:i + 10], y[i:i + 10]), sample_index=jnp.arange(i, i + 10), **kw)["z"]
             for i in range(0, 40, 10)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)
    noise = np.asarray(whole) - np.asarray(_apply(b, "client", "bottom", params, x))
    assert not np.allclose(noise[:10], noise[10:20])  # chunks do not repeat one draw


def test_invalid_topologies_are_refused():
    b = _built("vanilla", "mlp", (1,))
    topo = b.topology
    with pytest.raises(E.TopologyError, match="raw inputs"):
        E.Topology("bad", topo.parties, (topo.segments[0], E.Segment("server", "top", ("x",), "logits")),
                   topo.losses, ("z",), topo.graphdefs)
    with pytest.raises(E.TopologyError, match="before it exists"):
        E.Topology("bad", topo.parties, tuple(reversed(topo.segments)), topo.losses, ("z",), topo.graphdefs)
    with pytest.raises(E.TopologyError, match="not sent by a data holder"):
        E.Topology("bad", topo.parties, topo.segments, topo.losses, ("logits",), topo.graphdefs)


@pytest.mark.parametrize("topology,cuts,message", [
    ("vanilla", (1, 2), "takes one cut"), ("u_shaped", (1,), "takes 2 cuts"), ("multi_hop", (2,), "at least 2"),
    ("u_shaped", (2, 1), "increasing"), ("vanilla", (3,), "between 1 and 2"),
])
def test_bad_cuts_are_refused(topology, cuts, message):
    with pytest.raises(E.TopologyError, match=message):
        _built(topology, "mlp", cuts)


@pytest.mark.parametrize("model_name,shape", [("mlp", (8, 8, 1)), ("cnn", (28, 28, 1)), ("cnn_nopeek", (28, 28, 1)),
                                              ("resnet", (32, 32, 3))])
def test_list_cuts_matches_real_activations(rng, model_name, shape):
    model = build_model(model_name, shape, 10)
    z, _ = _batch(rng, shape, n=2)
    done = 0
    for info in list_cuts(model, shape):  # the real activation after each cut, one forward pass in all
        z, done = model.part(done, info.cut)(z), info.cut
        assert z.shape[1:] == info.shape and info.bytes_per_sample == z[0].size * 4


def test_nopeek_mnist_network_layout():
    model = build_model("cnn_nopeek", (28, 28, 1), 10)
    assert model.names == ("conv1", "conv2", "pool", "fc1", "fc2", "head")
    shapes = [c.shape for c in list_cuts(model, (28, 28, 1))]
    assert shapes == [(28, 28, 32), (28, 28, 64), (14, 14, 64), (500,), (128,)]


def test_segments_built_alone_equal_the_whole_model(rng):
    """Per-block keys: a segment built on its own has the parameters it has in the whole model."""
    whole = build_model("cnn", (12, 12, 1), 10, seed=4)
    b = _built("vanilla", "cnn", (3,))
    params = b.init(4)
    x, _ = _batch(rng, (12, 12, 1))
    np.testing.assert_allclose(_apply(b, "server", "top", params, _apply(b, "client", "bottom", params, x)),
                               whole(x), rtol=1e-5, atol=1e-6)


def test_max_pool_equals_flax_and_its_gradient_away_from_ties(rng):
    from nopeek.protocol import max_pool_2x2

    x = jnp.asarray(rng.normal(size=(3, 10, 10, 4)), jnp.float32)  # continuous: no ties
    np.testing.assert_allclose(max_pool_2x2(x), nnx.max_pool(x, (2, 2), strides=(2, 2)))
    g = jax.grad(lambda a: jnp.sum(jnp.sin(max_pool_2x2(a))))(x)
    g_ref = jax.grad(lambda a: jnp.sum(jnp.sin(nnx.max_pool(a, (2, 2), strides=(2, 2)))))(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-6)
    odd = jnp.asarray(rng.normal(size=(2, 7, 9, 1)), jnp.float32)
    np.testing.assert_allclose(max_pool_2x2(odd), nnx.max_pool(odd, (2, 2), strides=(2, 2)))
