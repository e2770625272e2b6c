"""The seed configurations: degenerate cases equal vanilla, vertical's stacked clients equal
separate ones, partitions, per-message leakage, bad input in one line."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nopeek import data
from nopeek import protocol as E
from nopeek.defences import NoPeek
from nopeek import protocol as T
from nopeek.cli import main
from nopeek.errors import ConfigError
from nopeek.training import TrainConfig
from nopeek.protocol import partition
from nopeek.training import train_stack


@pytest.fixture(scope="module")
def digits_small():
    return data.load("digits", limit=256)


def _train(ds, **kw):
    cfg = TrainConfig(epochs=2, batch_size=32, widths=(32, 16), **kw)
    return train_stack(cfg, ds, alphas=[0.5], progress=False)


def _close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x).reshape(np.shape(y)), y, rtol=1e-4, atol=1e-5)


def test_degenerate_configurations_equal_vanilla(digits_small):
    """One vertical client, one round-robin client and one multi-task head train exactly the
    parameters vanilla trains, for the same seeds."""
    vanilla = _train(digits_small).model_params(0)
    client = jax.tree.leaves(vanilla["client"]["bottom"])
    server = jax.tree.leaves(vanilla["server"]["top"])

    vertical = _train(digits_small, topology="vertical", clients=1).model_params(0)
    _close(jax.tree.leaves(vertical["client"]["bottom"]), client)  # (1, ...) replica axis
    _close(jax.tree.leaves(vertical["server"]["top"]), server)

    robin = _train(digits_small, topology="round_robin", clients=1).model_params(0)
    _close(jax.tree.leaves(robin["client"]), client)
    _close(jax.tree.leaves(robin["server"]), server)

    one_head = _train(digits_small, topology="multi_task", tasks=("digit",)).model_params(0)
    _close(jax.tree.leaves(one_head["client"]["bottom"]), client)
    trunk_then_head = jax.tree.leaves(one_head["server"]["trunk"]) + jax.tree.leaves(one_head["server"]["head_digit"])
    _close(trunk_then_head, server)


@pytest.mark.parametrize("shape,model,cut,n,merge", [((30,), "mlp", 1, 4, "concat"), ((12, 12, 1), "cnn", 4, 2, "sum"),
                                                     ((12, 12, 1), "cnn", 3, 4, "mean")])
def test_vertical_stacked_clients_equal_separate_parties(rng, shape, model, cut, n, merge):
    def build(stack):
        return T.build("vertical", T.Setup(model=model, widths=(), input_shape=shape, num_classes=2, cuts=(cut,),
                                           clients=n, merge=merge, stack_clients=stack))

    stacked, separate = build(True), build(False)
    assert stacked.topology.party("client").replicas == n and len(separate.topology.parties) == n + 1
    x = jnp.asarray(rng.uniform(size=(16, *shape)), jnp.float32)
    y = jnp.asarray(np.arange(16) % 2, jnp.int32)
    # Each protocol jitted whole: op by op, every primitive would compile alone.
    g_a, aux_a = jax.jit(lambda p: E.protocol_gradients(stacked.topology, p, stacked.prepare(x, y),
                                                        defence=NoPeek(0.5)))(stacked.init(2))
    g_b, aux_b = jax.jit(lambda p: E.protocol_gradients(separate.topology, p, separate.prepare(x, y),
                                                        defence=NoPeek(0.5)))(separate.init(2))
    np.testing.assert_allclose(aux_a["loss"], aux_b["loss"], rtol=1e-5)
    for i in range(n):
        _close(jax.tree.leaves(jax.tree.map(lambda t: t[i], g_a["client"])), jax.tree.leaves(g_b[f"client{i + 1}"]))
    _close(jax.tree.leaves(g_a["server"]), jax.tree.leaves(g_b["server"]))


def test_vertical_slices_hold_each_clients_features(rng):
    b = T.build("vertical", T.Setup(model="mlp", widths=(), input_shape=(30,), num_classes=2, cuts=(1,), clients=4))
    x = jnp.asarray(rng.uniform(size=(5, 30)), jnp.float32)
    slices = np.asarray(b.prepare(x, jnp.zeros(5, jnp.int32))["x"])
    assert slices.shape == (4, 5, 8)  # 8, 8, 7, 7 columns, the last two padded with a zero column
    np.testing.assert_array_equal(slices[2, :, :7], np.asarray(x)[:, 16:23])
    assert np.all(slices[3, :, 7] == 0)
    img = T.build("vertical", T.Setup(model="cnn", widths=(), input_shape=(12, 12, 1), num_classes=10, cuts=(4,),
                                      clients=4))
    xi = jnp.asarray(rng.uniform(size=(3, 12, 12, 1)), jnp.float32)
    quads = np.asarray(img.prepare(xi, jnp.zeros(3, jnp.int32))["x"])
    np.testing.assert_array_equal(quads[3], np.asarray(xi)[:, 6:, 6:])


def test_multi_hop_all_hops_penalise_relays(rng):
    b = T.build("multi_hop", T.Setup(model="mlp", widths=(32, 16), input_shape=(8, 8, 1), num_classes=10, cuts=(1, 2),
                                     nopeek_hops="all"))
    assert b.topology.protected == ("z1", "z2") and b.topology.penalty_source("z2") == "z1"
    x = jnp.asarray(rng.uniform(size=(16, 8, 8, 1)), jnp.float32)
    d = b.prepare(x, jnp.asarray(np.arange(16) % 10, jnp.int32))
    grads, aux = jax.jit(lambda p: E.protocol_gradients(b.topology, p, d, defence=NoPeek(0.5)))(b.init(0))
    want = jax.jit(jax.grad(lambda p: E.end_to_end_loss(b.topology, p, d, defence=NoPeek(0.5))))(b.init(0))
    _close(jax.tree.leaves(grads), jax.tree.leaves(want))
    assert set(aux["leak"]) == {"z1", "z2"}


def test_partitions():
    y = np.repeat(np.arange(10), 30)
    for kind in ("iid", "dirichlet"):
        parts = partition(y, 4, kind, 0.3, seed=1)
        joined = np.concatenate(parts)
        assert len(parts) == 4 and sorted(joined.tolist()) == list(range(len(y)))
        assert all(np.all(np.diff(p) > 0) for p in parts)
    iid = partition(y, 4, "iid", seed=1)
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1
    skewed = partition(y, 4, "dirichlet", 0.05, seed=1)
    classes_per_client = [len(np.unique(y[p])) for p in skewed if len(p)]
    assert min(classes_per_client) < 10  # label skew: some client misses classes
    with pytest.raises(ConfigError, match="dirichlet-alpha"):
        partition(y, 4, "dirichlet", 0.0)


def test_per_message_leakage_in_metrics(tmp_path):
    out = tmp_path / "v"
    assert main(["train", "--topology", "vertical", "--clients", "2", "--dataset", "breast_cancer", "--epochs", "2",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(e["party"], e["message"]) for e in metrics["leakage"]] == [
        ("client1", "z"), ("client2", "z"), ("client1", "z[all]"), ("client2", "z[all]")]
    assert [(m["sender"], m["receiver"], m["tensor"]) for m in metrics["transcript"]] == [
        ("client1", "server", "z"), ("client2", "server", "z"), ("server", "client1", "dL/dz"),
        ("server", "client2", "dL/dz")]
    hop = tmp_path / "h"
    assert main(["train", "--topology", "multi_hop", "--cuts", "1,2", "--model", "mlp", "--widths", "64,32,16",
                 "--epochs", "2", "--out", str(hop), "--quiet"]) == 0
    leak = {e["message"]: e["dcor"] for e in json.loads((hop / "metrics.json").read_text())["leakage"]}
    assert set(leak) == {"z1", "z2"}
    robin = tmp_path / "r"
    assert main(["train", "--topology", "round_robin", "--clients", "3", "--handoff", "server", "--epochs", "1",
                 "--out", str(robin), "--quiet"]) == 0
    metrics = json.loads((robin / "metrics.json").read_text())
    assert [e["party"] for e in metrics["leakage"]] == ["client1", "client2", "client3"]
    turns = [m for m in metrics["transcript"] if m["per"] == "turn"]
    assert len(turns) == 6 and {m["tensor"] for m in turns} == {"client weights and optimiser state"}
    assert main(["attack", "--run", str(out), "--message", "client2:z[all]", "--attack-steps", "20",
                 "--out", str(tmp_path / "a")]) == 0
    scores = json.loads((tmp_path / "a" / "scores.json").read_text())
    assert scores["message"] == "client2:z[all]" and scores["n_targets"] == 143


@pytest.mark.parametrize("argv,message", [
    (["--topology", "vertical", "--clients", "9"], "--clients must be between 1 and 8"),
    (["--topology", "vertical", "--clients", "3", "--slicing", "halves"], "--slicing halves needs --clients 2"),
    (["--topology", "vertical", "--dataset", "breast_cancer", "--slicing", "quadrants", "--clients", "4"],
     "needs image data"),
    (["--topology", "multi_hop", "--cuts", "2,1"], "--cuts must be increasing"),
    (["--topology", "multi_hop", "--cuts", "1"], "takes at least 2 cuts"),
    (["--topology", "round_robin", "--partition", "dirichlet", "--dirichlet-alpha", "0"], "--dirichlet-alpha must be > 0"),
    (["--topology", "multi_task", "--tasks", "digit,colour"], "--tasks must be among"),
    (["--topology", "multi_task", "--dataset", "breast_cancer", "--tasks", "ge5"], "needs more than 5 classes"),
])
def test_bad_topology_options_one_line(tmp_path, argv, message):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "train", *argv, "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_more_clients_than_features_is_refused(tmp_path, rng):
    path = tmp_path / "three.npz"
    np.savez(path, x=rng.uniform(size=(40, 3)), y=np.arange(40) % 2)
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", "train", "--topology", "vertical", "--clients", "4",
                           "--dataset", f"npz:{path}", "--epochs", "1", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "more clients than the 3 features" in proc.stderr



def test_train_stack_uses_a_built_topology_only_when_it_is_this_setups(digits_small, monkeypatch):
    """`nopeek train` hands the topology it built to check the options on to training (one
    build per run); one built for another setup is not used, but built anew."""
    from nopeek.training import _loop, build_topology

    cfg = TrainConfig(epochs=1, batch_size=32, widths=(32, 16))
    right = build_topology(cfg, digits_small.input_shape, digits_small.num_classes)
    wrong = build_topology(TrainConfig(widths=(32, 8)), digits_small.input_shape, digits_small.num_classes)
    original, builds = _loop.build, []

    def counted(*args):
        builds.append(args)
        return original(*args)

    monkeypatch.setattr(_loop, "build", counted)
    assert train_stack(cfg, digits_small, progress=False, built=right).built is right and not builds
    result = train_stack(cfg, digits_small, progress=False, built=wrong)
    assert result.built.key == right.key and len(builds) == 1
