"""A stack of models (and of decoders) sharded over several devices equals the one-device run.

The devices are 4 CPU "devices" (XLA_FLAGS=--xla_force_host_platform_device_count=4), in a
child process because the flag must be set before JAX starts.
"""

import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys
import jax, numpy as np
from nopeek import data
from nopeek.training import TrainConfig
from nopeek.protocol import shard_models
from nopeek.training import train_stack
import attacks

ds = data.load("digits", limit=256)
r = train_stack(TrainConfig(epochs=2, batch_size=32, widths=(32, 16)), ds, alphas=[0.0, 0.5, 2.0],
                seeds=[0, 1, 2], stack_mode="vmap", progress=False)
leaves = [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(r.state.params)]
z = r.messages_test["z"][:, :100]
fitted = attacks.fit_decoders(z, ds.x_test[:100], steps=30, seed=0, validation=0, place=shard_models)
placed = jax.numpy.asarray(shard_models({"a": np.zeros((4, 3))})["a"])
json.dump({"devices": jax.device_count(), "acc": r.test_accuracy.tolist(), "dcor": r.dcor.tolist(),
           "params": leaves, "x_hat": fitted.reconstruct(z[:, :10]).ravel().tolist(),
           "shards": len(placed.sharding.device_set)}, sys.stdout)
"""


def _run(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_equal_one():
    one, four = _run(1), _run(4)
    assert one["devices"] == 1 and four["devices"] == 4
    assert four["shards"] == 4 and one["shards"] == 1  # the models axis really is split over 4 devices
    np.testing.assert_allclose(four["acc"], one["acc"], atol=1e-6)
    np.testing.assert_allclose(four["dcor"], one["dcor"], atol=1e-5)
    for a, b in zip(four["params"], one["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(four["x_hat"], one["x_hat"], atol=1e-4)
