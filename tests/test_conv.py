"""The convolution whose kernel gradient is summed over slices of the batch (nopeek/protocol/_conv.py):
its values and both gradients against NumPy in float64 and against XLA's own convolution, the
slice it picks, and that it composes (jit, vmap, forward mode, a gradient of a gradient, the
Conv block)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nopeek.errors import ConfigError, ModelError
from nopeek.protocol import _conv
from nopeek.protocol._conv import conv_same, kernel_gradient_slice
from nopeek.protocol._models import Conv


def _numpy_conv(x, k):
    """float64 'SAME' 3x3 convolution, (n, H, W, ci) x (3, 3, ci, co)."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, k.shape[-1]))
    for a in range(3):
        for b in range(3):
            out += np.einsum("nhwi,io->nhwo", xp[:, a:a + h, b:b + w], k[a, b])
    return out


def _numpy_kernel_gradient(x, g):
    """d(sum(conv(x, k) * g)) / dk in float64: (3, 3, ci, co)."""
    _, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.stack([np.stack([np.einsum("nhwi,nhwo->io", xp[:, a:a + h, b:b + w], g) for b in range(3)])
                     for a in range(3)])


def _numpy_input_gradient(g, k):
    """d(sum(conv(x, k) * g)) / dx in float64: the convolution of g with the flipped, transposed kernel."""
    return _numpy_conv(g, np.transpose(k[::-1, ::-1], (0, 1, 3, 2)))


def _plain(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Counts of convolutions in XLA:CPU's compiled text (a GPU's libraries rewrite them).
cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="counts XLA:CPU's compiled convolutions")


@pytest.fixture
def slices(monkeypatch):
    """Set NOPEEK_CONV_SLICE for the test; the slicing taken as on the CPU whatever the backend."""
    monkeypatch.setattr(_conv, "_on_cpu", lambda: True)

    def set_slice(value):
        monkeypatch.setenv("NOPEEK_CONV_SLICE", str(value))
    return set_slice


@pytest.mark.parametrize("n, size", [(70, 32), (64, 16), (9, 4)])
def test_values_and_gradients_match_numpy_float64(rng, slices, n, size):
    slices(size)
    x = rng.normal(size=(n, 7, 6, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    g = rng.normal(size=(n, 7, 6, 5)).astype(np.float32)
    assert kernel_gradient_slice(n) == size  # sliced: n is above the slice
    out, vjp = jax.vjp(conv_same, jnp.asarray(x), jnp.asarray(k))
    dx, dk = vjp(jnp.asarray(g))
    x64, k64, g64 = (a.astype(np.float64) for a in (x, k, g))
    np.testing.assert_allclose(out, _numpy_conv(x64, k64), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dk, _numpy_kernel_gradient(x64, g64), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx, _numpy_input_gradient(g64, k64), rtol=1e-4, atol=1e-4)


def test_sliced_gradient_equals_xlas_whole_one(rng, slices):
    """The sum over slices is XLA's kernel gradient up to float32 round-off; the input gradient
    and the forward values are computed whole, as XLA computes them."""
    x = jnp.asarray(rng.normal(size=(100, 12, 12, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(100, 12, 12, 8)), jnp.float32)
    slices(16)
    ours = jax.jit(lambda x, k, g: jax.vjp(conv_same, x, k)[1](g))(x, k, g)
    theirs = jax.jit(lambda x, k, g: jax.vjp(_plain, x, k)[1](g))(x, k, g)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(jax.jit(conv_same)(x, k), jax.jit(_plain)(x, k), rtol=1e-6, atol=1e-5)


def test_slice_choice(slices, monkeypatch):
    slices(32)
    assert kernel_gradient_slice(32) == 0  # not above the slice: whole
    assert kernel_gradient_slice(33) == 32
    assert kernel_gradient_slice(256) == 32
    # never more than MAX_SLICES slices: a batch of 4096 gets slices of 128
    assert kernel_gradient_slice(4096) == 4096 // _conv.MAX_SLICES
    slices(0)
    assert kernel_gradient_slice(256) == 0
    monkeypatch.delenv("NOPEEK_CONV_SLICE")
    assert kernel_gradient_slice(256) == _conv.DEFAULT_SLICE
    for bad in ("-1", "ten"):
        slices(bad)
        with pytest.raises(ConfigError, match="NOPEEK_CONV_SLICE"):
            kernel_gradient_slice(256)
    slices(32)
    assert kernel_gradient_slice(256, jnp.bfloat16) == 0  # a sum of bf16 slices would round more
    assert kernel_gradient_slice(256, jnp.float16) == 0
    assert kernel_gradient_slice(256, np.float64) == 32
    monkeypatch.setattr(_conv, "_on_cpu", lambda: False)
    slices(32)
    assert kernel_gradient_slice(256) == 0  # accelerators: XLA's own kernel gradient


@cpu_only
def test_the_program_holds_one_kernel_gradient_per_slice(rng, slices):
    """The slicing is real: with slices of 10, the backward pass of a batch of 40 holds four
    kernel-gradient convolutions (plus the forward and the input gradient); with slicing off, one.
    A gradient for the kernel alone computes no input gradient (and no convolution of zeros)."""
    x = jnp.asarray(rng.normal(size=(40, 8, 8, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)

    def convolutions(size):
        slices(size)
        grad = jax.jit(jax.grad(lambda x, k: jnp.sum(conv_same(x, k) ** 2), argnums=(0, 1)))
        return grad.lower(x, k).compile().as_text().count(" convolution(")

    assert convolutions(0) == 3
    assert convolutions(10) == 6

    def kernel_only(size):
        slices(size)
        grad = jax.jit(jax.grad(lambda k, x: jnp.sum(conv_same(x, k) ** 2)))
        return grad.lower(k, x).compile().as_text().count(" convolution(")

    assert kernel_only(0) == 2
    assert kernel_only(10) == 5


def test_composes_with_vmap_and_second_order(rng, slices):
    """A stack of models under vmap, and a gradient of a gradient norm (as gradient-matching
    attacks take), agree with XLA's plain convolution."""
    slices(8)
    x = jnp.asarray(rng.normal(size=(3, 20, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 3, 2, 4)) * 0.3, jnp.float32)

    def loss(conv, k, x):
        return jnp.sum(jnp.tanh(conv(x, k)) ** 2)

    stacked = [jax.vmap(jax.grad(lambda k, x: loss(c, k, x)))(k, x) for c in (conv_same, _plain)]
    np.testing.assert_allclose(stacked[0], stacked[1], rtol=1e-4, atol=1e-4)

    def gradient_norm(c, x):
        return jnp.sum(jax.grad(lambda k: loss(c, k, x))(k[0]) ** 2)

    second = [jax.grad(lambda x: gradient_norm(c, x))(x[0]) for c in (conv_same, _plain)]
    np.testing.assert_allclose(second[0], second[1], rtol=1e-3, atol=1e-3)


def test_conv_block_is_flaxs_convolution(rng, slices):
    """The Conv block keeps flax's parameters (names and shapes) and computes nnx.Conv's values
    and gradients."""
    slices(16)
    block = Conv(3, 8, rngs=nnx.Rngs(0))
    params = nnx.state(block, nnx.Param)
    assert {tuple(p) for p, _ in nnx.to_flat_state(params)} == {("conv", "kernel"), ("conv", "bias")}
    x = jnp.asarray(rng.normal(size=(48, 10, 10, 3)), jnp.float32)

    def ours(block, x):
        return jnp.sum(block(x) ** 2)

    def flaxs(block, x):
        return jnp.sum(jax.nn.relu(block.conv(x)) ** 2)

    np.testing.assert_allclose(block(x), jax.nn.relu(block.conv(x)), rtol=1e-6, atol=1e-6)
    g_ours, g_flax = (nnx.grad(f)(block, x) for f in (ours, flaxs))
    np.testing.assert_allclose(g_ours["conv"]["kernel"][...], g_flax["conv"]["kernel"][...], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(g_ours["conv"]["bias"][...], g_flax["conv"]["bias"][...], rtol=1e-5, atol=1e-4)


@cpu_only
def test_the_model_blocks_take_the_kernel_gradient_by_slices(rng, slices):
    """The cnn's Conv blocks run conv_same, not flax's convolution: at batch 48 with slices of 16
    the block's parameter gradient holds three kernel-gradient convolutions (plus the forward),
    with slicing off one."""
    block = Conv(3, 8, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(48, 10, 10, 3)), jnp.float32)
    graph, params = nnx.split(block)

    def convolutions(size):
        slices(size)
        grad = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p)(x) ** 2)))
        return grad.lower(params, x).compile().as_text().count(" convolution(")

    assert convolutions(0) == 2
    assert convolutions(16) == 4


def test_bad_shapes_raise():
    with pytest.raises(ModelError, match="convolution needs"):
        conv_same(jnp.zeros((2, 4, 4, 3)), jnp.zeros((3, 3, 2, 5)))
    with pytest.raises(ModelError, match="convolution needs"):
        conv_same(jnp.zeros((4, 4, 3)), jnp.zeros((3, 3, 3, 5)))


def test_forward_mode_and_vmapped_gradients(rng, slices):
    """Forward mode (jvp, jacfwd) works through the sliced convolution as through XLA's, and so
    does a gradient of a vmapped function (the engine's replicated parties)."""
    slices(4)
    x = jnp.asarray(rng.normal(size=(10, 5, 5, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
    dx = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    dk = jnp.asarray(rng.normal(size=k.shape), jnp.float32)
    ours, theirs = (jax.jvp(c, (x, k), (dx, dk)) for c in (conv_same, _plain))
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours[1], _numpy_conv(np.asarray(dx, np.float64), np.asarray(k, np.float64))
                               + _numpy_conv(np.asarray(x, np.float64), np.asarray(dk, np.float64)), rtol=1e-4, atol=1e-3)
    jac = [jax.jacfwd(lambda k, c=c: jnp.sum(jnp.tanh(c(x, k))))(k) for c in (conv_same, _plain)]
    np.testing.assert_allclose(jac[0], jac[1], rtol=1e-4, atol=1e-4)
    stacked = jnp.stack([x, 2 * x])
    vmapped = [jax.grad(lambda k, c=c: jnp.sum(jax.vmap(lambda xi: c(xi, k))(stacked) ** 2))(k)
               for c in (conv_same, _plain)]
    np.testing.assert_allclose(vmapped[0], vmapped[1], rtol=1e-5, atol=1e-3)


def test_float64_is_sliced_and_exact(rng, slices, x64):
    slices(16)
    x = rng.normal(size=(50, 6, 6, 2))
    k = rng.normal(size=(3, 3, 2, 3))
    g = rng.normal(size=(50, 6, 6, 3))
    assert kernel_gradient_slice(50, jnp.float64) == 16
    _, vjp = jax.vjp(conv_same, jnp.asarray(x), jnp.asarray(k))
    dx, dk = vjp(jnp.asarray(g))
    assert dk.dtype == jnp.float64
    np.testing.assert_allclose(dk, _numpy_kernel_gradient(x, g), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, _numpy_input_gradient(g, k), rtol=1e-10, atol=1e-10)
