"""GroupNorm with its statistics summed per channel first (nopeek/protocol/_norm.py): values and
gradients against flax's nnx.GroupNorm and against NumPy in float64; what it leaves to flax;
the resnets' blocks built with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nopeek.protocol import _norm
from nopeek.protocol._models import Bottleneck, ResidualBlock, Stem
from nopeek.protocol._norm import GroupNorm


@pytest.fixture(autouse=True)
def as_on_the_cpu(monkeypatch):
    """The per-channel route is the CPU's: take it whatever the backend."""
    monkeypatch.setattr(_norm, "_on_cpu", lambda: True)


def _numpy_group_norm(x, groups, scale, bias, eps=1e-6):
    """float64 group normalisation of (n, *spatial, C): two-pass variance."""
    n, c = x.shape[0], x.shape[-1]
    xg = x.reshape(n, -1, groups, c // groups)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    return ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def _pair(features, **kwargs):
    """Ours and flax's, with the same parameters (random scale and bias, so both are exercised)."""
    ours = GroupNorm(features, rngs=nnx.Rngs(0), **kwargs)
    theirs = nnx.GroupNorm(features, rngs=nnx.Rngs(0), **kwargs)
    rng = np.random.default_rng(1)
    if ours.scale:
        ours.scale[...] = theirs.scale[...] = jnp.asarray(rng.normal(size=features), ours.scale[...].dtype)
    if ours.bias:
        ours.bias[...] = theirs.bias[...] = jnp.asarray(rng.normal(size=features), ours.bias[...].dtype)
    return ours, theirs


@pytest.mark.parametrize("shape, kwargs", [
    ((20, 9, 7, 16), dict(num_groups=8)),
    ((20, 9, 7, 16), dict(num_groups=1)),
    ((20, 9, 7, 12), dict(num_groups=12)),
    ((20, 30, 6), dict(num_groups=3)),
    ((6, 4, 5, 3, 8), dict(num_groups=2)),
    ((20, 9, 7, 16), dict(num_groups=4, use_scale=False)),
    ((20, 9, 7, 16), dict(num_groups=4, use_bias=False, epsilon=1e-3)),
], ids=["8-groups", "1-group", "per-channel", "rank-3", "rank-5", "no-scale", "no-bias-eps"])
def test_values_and_gradients_equal_flaxs(rng, shape, kwargs):
    ours, theirs = _pair(shape[-1], **kwargs)
    x = jnp.asarray(rng.normal(size=shape) * 3 + 1, jnp.float32)
    weights = jnp.arange(shape[-1], dtype=jnp.float32).reshape((1,) * (len(shape) - 1) + (-1,))

    def value_and_gradients(module):
        """The output and the gradients (parameters, input) of a weighted sum of tanh, one
        jitted program (eagerly, each small op would be a program of its own to compile)."""
        graph, params = nnx.split(module)

        @jax.jit
        def run(params, x):
            def loss(params, x):
                return jnp.sum(jnp.tanh(nnx.merge(graph, params)(x)) * weights)
            return nnx.merge(graph, params)(x), jax.grad(loss, argnums=(0, 1))(params, x)
        return run(params, x)

    (out_ours, (g_ours, gx_ours)), (out_flax, (g_flax, gx_flax)) = map(value_and_gradients, (ours, theirs))
    np.testing.assert_allclose(out_ours, out_flax, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(gx_ours, gx_flax, rtol=1e-3, atol=1e-4)
    assert set(g_ours) == set(g_flax) == {n for n in ("scale", "bias") if kwargs.get(f"use_{n}", True)}
    for name in g_flax:
        np.testing.assert_allclose(g_ours[name][...], g_flax[name][...], rtol=1e-4, atol=1e-4)


def test_float64_matches_numpy(rng, x64):
    ours, _ = _pair(12, num_groups=3, param_dtype=jnp.float64)
    x = rng.normal(size=(10, 5, 6, 12)) * 2 - 1
    out = ours(jnp.asarray(x))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, _numpy_group_norm(x, 3, np.asarray(ours.scale[...]), np.asarray(ours.bias[...])),
                               rtol=1e-9, atol=1e-9)
    # each group of each sample comes out with mean 0 and variance var / (var + eps)
    plain = GroupNorm(12, num_groups=3, use_scale=False, use_bias=False, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    grouped = np.asarray(plain(jnp.asarray(x))).reshape(10, -1, 3, 4)
    np.testing.assert_allclose(grouped.mean(axis=(1, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(grouped.var(axis=(1, 3)), 1, atol=1e-4)


def same(ours, theirs, x, **kwargs):
    """Both modules' outputs on x, each one jitted program, equal bit for bit."""
    got, want = (jax.jit(lambda x, m=m: m(x, **kwargs))(x) for m in (ours, theirs))
    np.testing.assert_array_equal(got, want)


def test_what_it_leaves_to_flax(rng):
    """A mask, reduction axes of one's own, the two-pass variance, bfloat16 inputs, a dtype of
    its own, an axis_name: flax's own call, the same values bit for bit."""
    x = jnp.asarray(rng.normal(size=(8, 5, 5, 8)), jnp.float32)
    mask = jnp.asarray(rng.random(size=x.shape) > 0.3)
    ours, theirs = _pair(8, num_groups=4)
    same(ours, theirs, x, mask=mask)
    for kwargs in (dict(reduction_axes=(2, -1)), dict(use_fast_variance=False)):
        same(*_pair(8, num_groups=4, **kwargs), x)
    ours, theirs = _pair(8, num_groups=4)
    same(ours, theirs, x.astype(jnp.bfloat16))
    assert not ours._fast_path(x.astype(jnp.bfloat16), None) and ours._fast_path(x, None)
    # a computation dtype of its own (statistics in float32 for a bfloat16 output, as flax does)
    ours, theirs = _pair(8, num_groups=4, dtype=jnp.bfloat16)
    assert not ours._fast_path(x, None)
    same(ours, theirs, x)
    # statistics averaged across a named axis (here the vmapped one): flax's pmean, kept
    ours, theirs = _pair(8, num_groups=4, axis_name="batch")
    stacked = jnp.stack([x, 2 * x + 1])
    got, want = (jax.jit(jax.vmap(lambda xi, m=m: m(xi), axis_name="batch"))(stacked) for m in (ours, theirs))
    np.testing.assert_array_equal(got, want)
    assert not ours._fast_path(x, None)


def test_accelerators_get_flaxs_call(rng, monkeypatch):
    monkeypatch.setattr(_norm, "_on_cpu", lambda: False)
    ours, theirs = _pair(8, num_groups=4)
    x = jnp.asarray(rng.normal(size=(8, 5, 5, 8)), jnp.float32)
    assert not ours._fast_path(x, None)
    same(ours, theirs, x)


def test_nopeek_group_norm_flax_gives_flaxs_call(rng, monkeypatch):
    """NOPEEK_GROUP_NORM=flax: flax's own call, bit for bit; `channels` (and unset) the
    per-channel route; anything else a clear error naming the variable."""
    from nopeek.errors import ConfigError

    ours, theirs = _pair(8, num_groups=4)
    x = jnp.asarray(rng.normal(size=(8, 5, 5, 8)), jnp.float32)
    monkeypatch.setenv("NOPEEK_GROUP_NORM", "flax")
    assert not ours._fast_path(x, None)
    same(ours, theirs, x)
    for value in ("channels", " Channels ", ""):
        monkeypatch.setenv("NOPEEK_GROUP_NORM", value)
        assert ours._fast_path(x, None), value
    monkeypatch.setenv("NOPEEK_GROUP_NORM", "nnx")
    with pytest.raises(ConfigError, match="NOPEEK_GROUP_NORM must be one of channels, flax.*'nnx'"):
        ours(x)


def test_parameters_are_flaxs():
    ours, theirs = _pair(16, num_groups=8)
    assert isinstance(ours, nnx.GroupNorm)
    names = [{tuple(p) for p, _ in nnx.to_flat_state(nnx.state(m, nnx.Param))} for m in (ours, theirs)]
    assert names[0] == names[1] == {("scale",), ("bias",)}


@pytest.mark.parametrize("make", [
    lambda rngs: ResidualBlock(4, 8, stride=2, rngs=rngs),
    lambda rngs: Bottleneck(8, 16, rngs=rngs),
    lambda rngs: Stem(3, 8, rngs=rngs),
], ids=["residual", "bottleneck", "stem"])
def test_resnet_blocks_use_it(make):
    """Every norm of the resnets' blocks takes the per-channel route (fails if a block goes back
    to flax's nnx.GroupNorm)."""
    block = make(nnx.Rngs(0))
    norms = [m for _, m in nnx.iter_graph(block) if isinstance(m, nnx.GroupNorm)]
    assert norms and all(type(m) is GroupNorm for m in norms)
    assert all(m._fast_path(jnp.zeros((2, 4, 4, m.num_groups * m.group_size)), None) for m in norms)
