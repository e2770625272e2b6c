"""The evaluation's forward pass by slices of the samples (`nopeek.training._loop.in_slices`,
on the CPU): the same rows as the whole chunk at once, the per-sample draws included."""

import jax.numpy as jnp
import numpy as np
import pytest

from nopeek import data as data_lib
from nopeek.training import TrainConfig, _loop, train_stack


def test_slices_give_the_whole_chunks_rows_in_order():
    traced = []

    def fn(params, hp, x, y, index):
        traced.append(x.shape[0])
        return {"z": x * params + index[:, None]}, {"y": y * 3}, {"y": y}

    x = jnp.arange(30.0).reshape(10, 3)
    y = jnp.arange(10)
    whole = fn(2.0, None, x, y, jnp.arange(10) + 100)
    for size in (1, 3, 4, 10, 16):  # a padded last slice, exact slices, one slice, fewer samples than a slice
        traced.clear()
        sliced = _loop.in_slices(fn, size)(2.0, None, x, y, jnp.arange(10) + 100)
        assert traced[0] == min(size, 10)  # fn saw one slice's samples, not the whole chunk
        for a, b in zip(whole, sliced):
            for key in a:
                np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    assert _loop.in_slices(fn, None) is fn


@pytest.mark.parametrize("mode,topology", [("vmap", "vanilla"), ("map", "vanilla"), ("vmap", "vertical")])
def test_a_stacks_evaluation_by_slices_is_its_evaluation_whole(monkeypatch, mode, topology):
    """Two models, the noise defence (each sample's draw from its position) and 75 samples
    by slices of 16: messages and accuracy as the whole chunk gives them, bit for bit (three
    vertical clients: messages (clients, n, ...))."""
    config = TrainConfig(dataset="digits", model="mlp", epochs=1, limit=300, noise_scale=0.5, topology=topology,
                         **({"clients": 3} if topology == "vertical" else {}))
    ds = data_lib.load_config(config)
    result = train_stack(config, ds, seeds=[0, 1], noise_scales=[0.5, 1.0], progress=False, stack_mode=mode)
    messages = sorted(result.messages_test)
    x, y = ds.x_test[:75], ds.y_test[:75]
    got, loops = {}, {}
    for size in (None, 16):
        monkeypatch.setattr(_loop, "eval_slice", lambda size=size: size)
        eval_fn = _loop.make_eval_fn(result.built, config, mode, messages)
        loops[size] = eval_fn.lower(result.state.params, result.hparams, x, y, jnp.arange(75)).as_text().count(
            "stablehlo.while")
        got[size] = _loop.evaluate(eval_fn, result.state.params, result.hparams, x, y)
    assert loops[16] > loops[None]  # the slices are a loop in the program (the monkeypatch reached it)
    (acc_whole, sent_whole), (acc_sliced, sent_sliced) = got[None], got[16]
    for key in acc_whole:
        np.testing.assert_array_equal(acc_whole[key], acc_sliced[key])
    for name in messages:
        assert sent_sliced[name].shape == sent_whole[name].shape and sent_whole[name].shape[0] == 2
        assert sent_whole[name].shape[1 + (topology == "vertical")] == 75  # vertical: (K, clients, n, ...)
        np.testing.assert_array_equal(sent_sliced[name], sent_whole[name])


def test_the_slice_is_the_cpus_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("NOPEEK_EVAL_SLICE", raising=False)
    assert _loop.eval_slice() == _loop.EVAL_SLICE
    monkeypatch.setenv("NOPEEK_EVAL_SLICE", "0")
    assert _loop.eval_slice() is None
    monkeypatch.setenv("NOPEEK_EVAL_SLICE", "64")
    assert _loop.eval_slice() == 64
    from nopeek.errors import ConfigError

    for bad in ("many", "-1"):
        monkeypatch.setenv("NOPEEK_EVAL_SLICE", bad)
        with pytest.raises(ConfigError, match="NOPEEK_EVAL_SLICE must be"):
            _loop.eval_slice()


def test_outputs_whose_samples_are_not_the_first_axis():
    """A message of several clients is (clients, n, ...); a constant has no sample axis."""
    def fn(params, hp, x, y, index):
        return {"z": jnp.stack([x, -x]), "c": jnp.ones(5)}, {"y": y.astype(jnp.float32)[:, None] * index[:, None]}, {"y": y}

    x = jnp.arange(40.0).reshape(10, 4)
    y = jnp.arange(10)
    whole = fn(None, None, x, y, jnp.arange(10))
    sliced = _loop.in_slices(fn, 3)(None, None, x, y, jnp.arange(10))
    for a, b in zip(whole, sliced):
        for key in a:
            assert a[key].shape == b[key].shape
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_an_axis_of_the_slices_size_is_told_from_the_sample_axis():
    def fn(params, hp, x, y, index):
        return {"z": jnp.einsum("nd,k->knd", x, jnp.ones(4))}, {"y": y}, {"y": y}  # (4, n, 4) at slices of 4

    x = jnp.arange(40.0).reshape(10, 4)
    y = jnp.arange(10)
    whole = fn(None, None, x, y, jnp.arange(10))
    sliced = _loop.in_slices(fn, 4)(None, None, x, y, jnp.arange(10))
    assert sliced[0]["z"].shape == (4, 10, 4)
    np.testing.assert_array_equal(np.asarray(sliced[0]["z"]), np.asarray(whole[0]["z"]))
