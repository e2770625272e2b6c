"""The convolution whose kernel gradient is summed over slices of the batch (nopeek/protocol/_conv.py):
its values and both gradients against NumPy in float64 and against XLA's own convolution (strided,
1x1, dilated, grouped, explicit padding, the batch at other axes, every precision form), the slice it picks, and that it composes
(jit, vmap, forward mode, a gradient of a gradient, flax's nnx.Conv, the model blocks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nopeek.errors import ConfigError
from nopeek.protocol import _conv
from nopeek.protocol._conv import conv_layer, kernel_gradient_slice
from nopeek.protocol._models import Bottleneck, Conv, ResidualBlock, Stem

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


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
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


def conv_same(x, k):
    """The drop-in as the Conv block calls it: stride 1, 'SAME', channels last."""
    return _conv.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


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

    stacked = [jax.jit(jax.vmap(jax.grad(lambda k, x, c=c: loss(c, k, x))))(k, x) for c in (conv_same, _plain)]
    np.testing.assert_allclose(stacked[0], stacked[1], rtol=1e-4, atol=1e-4)

    def gradient_norm(c, x):
        return jnp.sum(jax.grad(lambda k: loss(c, k, x))(k[0]) ** 2)

    second = [jax.jit(jax.grad(lambda x, c=c: gradient_norm(c, x)))(x[0]) for c in (conv_same, _plain)]
    np.testing.assert_allclose(second[0], second[1], rtol=1e-3, atol=1e-3)


def test_conv_block_is_flaxs_convolution(rng, slices):
    """The Conv block keeps flax's parameters (names and shapes) and computes what a plain
    nnx.Conv with the same parameters computes: values and gradients."""
    slices(16)
    block = Conv(3, 8, rngs=nnx.Rngs(0))
    params = nnx.state(block, nnx.Param)
    assert {tuple(p) for p, _ in nnx.to_flat_state(params)} == {("conv", "kernel"), ("conv", "bias")}
    plain = nnx.Conv(3, 8, (3, 3), padding="SAME", rngs=nnx.Rngs(1))
    assert plain.conv_general_dilated is jax.lax.conv_general_dilated
    plain.kernel[...] = block.conv.kernel[...]
    plain.bias[...] = jnp.asarray(rng.normal(size=8), jnp.float32)
    block.conv.bias[...] = plain.bias[...]
    x = jnp.asarray(rng.normal(size=(48, 10, 10, 3)), jnp.float32)

    def ours(block, x):
        return jnp.sum(block(x) ** 2)

    def flaxs(conv, x):
        return jnp.sum(jax.nn.relu(conv(x)) ** 2)

    np.testing.assert_allclose(block(x), jax.nn.relu(plain(x)), rtol=1e-6, atol=1e-5)
    g_ours, g_flax = nnx.grad(ours)(block, x), nnx.grad(flaxs)(plain, x)
    np.testing.assert_allclose(g_ours["conv"]["kernel"][...], g_flax["kernel"][...], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(g_ours["conv"]["bias"][...], g_flax["bias"][...], rtol=1e-5, atol=1e-4)


def test_forward_mode_and_vmapped_gradients(rng, slices):
    """Forward mode (jvp, jacfwd) works through the sliced convolution as through XLA's, and so
    does a gradient of a vmapped function (the engine's replicated parties)."""
    slices(4)
    x = jnp.asarray(rng.normal(size=(10, 5, 5, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
    dx = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    dk = jnp.asarray(rng.normal(size=k.shape), jnp.float32)
    ours, theirs = (jax.jit(lambda x, k, dx, dk, c=c: jax.jvp(c, (x, k), (dx, dk)))(x, k, dx, dk)
                    for c in (conv_same, _plain))
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours[1], _numpy_conv(np.asarray(dx, np.float64), np.asarray(k, np.float64))
                               + _numpy_conv(np.asarray(x, np.float64), np.asarray(dk, np.float64)), rtol=1e-4, atol=1e-3)
    jac = [jax.jit(jax.jacfwd(lambda k, c=c: jnp.sum(jnp.tanh(c(x, k)))))(k) for c in (conv_same, _plain)]
    np.testing.assert_allclose(jac[0], jac[1], rtol=1e-4, atol=1e-4)
    stacked = jnp.stack([x, 2 * x])
    vmapped = [jax.jit(jax.grad(lambda k, c=c: jnp.sum(jax.vmap(lambda xi: c(xi, k))(stacked) ** 2)))(k)
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


# (lhs shape, rhs shape, keyword arguments of lax.conv_general_dilated) beyond the Conv block's
CASES = {
    "strided 3x3": ((40, 9, 9, 3), (3, 3, 3, 4), dict(window_strides=(2, 2), padding="SAME")),
    "strided 1x1": ((40, 8, 8, 3), (1, 1, 3, 5), dict(window_strides=(2, 2), padding="SAME")),
    "explicit padding, dilated kernel": ((40, 9, 9, 2), (3, 3, 2, 3),
                                         dict(window_strides=(1, 1), padding=((2, 1), (0, 2)), rhs_dilation=(2, 1))),
    "feature groups, valid": ((40, 8, 8, 4), (3, 3, 2, 6),
                              dict(window_strides=(1, 2), padding="VALID", feature_group_count=2)),
    "input dilation (transposed)": ((40, 5, 5, 3), (3, 3, 3, 2),
                                    dict(window_strides=(1, 1), padding=[(2, 2), (2, 2)], lhs_dilation=(2, 2))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_convolution_flax_sends_matches_xlas_gradient(rng, slices, case):
    """Strides, 1x1 kernels, explicit padding, dilations and feature groups: the drop-in's value
    and both gradients equal lax.conv_general_dilated's, sliced (12 slices of 4 over 40)."""
    lhs_shape, rhs_shape, kwargs = CASES[case]
    slices(4)
    x = jnp.asarray(rng.normal(size=lhs_shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=rhs_shape), jnp.float32)

    def run(conv):
        return lambda x, k: conv(x, k, dimension_numbers=DIMENSIONS, **kwargs)

    ours, theirs = run(_conv.conv_general_dilated), run(jax.lax.conv_general_dilated)
    out = jax.jit(theirs)(x, k)
    g = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    np.testing.assert_allclose(jax.jit(ours)(x, k), out, rtol=1e-6, atol=1e-5)
    def gradients(conv):
        return jax.jit(lambda x, k, g: jax.vjp(conv, x, k)[1](g))(x, k, g)

    for a, b in zip(gradients(ours), gradients(theirs)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("numbers", [("CHWN", "HWIO", "NHWC"), ("HWCN", "HWIO", "NHWC")])
def test_batch_axis_from_the_dimension_numbers(rng, slices, numbers):
    """The batch is the input's last axis and the output's first. The slice is chosen from the
    input's batch (30 > 8: sliced, though CHWN's first axis holds 2 channels), the slices are
    taken along it (HWCN's first axis, 10 rows, would give slices of the wrong shape) and
    concatenated along the output's, and the values are NumPy's in float64."""
    slices(8)
    x = rng.normal(size=(30, 10, 6, 2))
    k = rng.normal(size=(3, 3, 2, 3))
    g = rng.normal(size=(30, 10, 6, 3))
    to_input = ["NHWC".index(axis) for axis in numbers[0]]

    def ours(x, k):
        return _conv.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=numbers)

    x_t = jnp.asarray(np.transpose(x, to_input), jnp.float32)
    k32 = jnp.asarray(k, jnp.float32)
    assert "custom_jvp_call" in str(jax.make_jaxpr(ours)(x_t, k32))  # sliced
    out, vjp = jax.vjp(ours, x_t, k32)
    np.testing.assert_allclose(out, _numpy_conv(x, k), rtol=1e-4, atol=1e-4)
    dx, dk = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(dk, _numpy_kernel_gradient(x, g), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.transpose(dx, np.argsort(to_input)), _numpy_input_gradient(g, k), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", [
    jax.lax.Precision.HIGHEST, "highest", ["highest", "high"], jax.lax.DotAlgorithmPreset.F32_F32_F32,
    jax.lax.DotAlgorithm(jnp.float32, jnp.float32, jnp.float32),
], ids=["enum", "string", "pair-as-list", "algorithm-preset", "dot-algorithm"])
def test_every_precision_form_lax_takes(rng, slices, precision):
    """Whatever precision lax accepts, the sliced path accepts and computes the same gradients."""
    slices(4)
    x = jnp.asarray(rng.normal(size=(12, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)

    def grads(conv):
        return jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k, (1, 1), "SAME", dimension_numbers=DIMENSIONS,
                                                                  precision=precision))), argnums=(0, 1)))(x, k)

    for a, b in zip(grads(_conv.conv_general_dilated), grads(jax.lax.conv_general_dilated)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_preferred_element_type_is_kept(rng, slices, x64):
    """float32 operands with a float64 result: the output and the gradients in lax's dtypes."""
    slices(4)
    x = jnp.asarray(rng.normal(size=(12, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)

    def run(conv):
        def f(x, k):
            return conv(x, k, (1, 1), "SAME", dimension_numbers=DIMENSIONS, preferred_element_type=jnp.float64)
        out, vjp = jax.vjp(f, x, k)
        return (out, *vjp(jnp.ones_like(out)))

    ours, theirs = run(_conv.conv_general_dilated), run(jax.lax.conv_general_dilated)
    assert ours[0].dtype == theirs[0].dtype == jnp.float64
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


def test_an_output_sharding_goes_to_lax_untouched(rng, slices, monkeypatch):
    """An out_sharding is handed to lax as given, with no custom rule in between."""
    slices(4)
    seen = []
    plain = jax.lax.conv_general_dilated

    def recording(*args, **kwargs):
        seen.append(kwargs.get("out_sharding"))
        kwargs.pop("out_sharding", None)
        return plain(*args, **kwargs)

    monkeypatch.setattr(jax.lax, "conv_general_dilated", recording)
    x = jnp.asarray(rng.normal(size=(12, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
    marker = object()
    jaxpr = str(jax.make_jaxpr(lambda x, k: _conv.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=DIMENSIONS, out_sharding=marker))(x, k))
    assert seen == [marker] and "custom_jvp_call" not in jaxpr


def test_batch_groups_take_the_plain_convolution(rng, slices):
    """Batch groups split the batch themselves: the drop-in leaves them to XLA (no custom rule)."""
    slices(4)
    x = jnp.asarray(rng.normal(size=(40, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    args = ((1, 1), "SAME")
    kw = dict(dimension_numbers=DIMENSIONS, batch_group_count=2)
    jaxpr = str(jax.make_jaxpr(lambda x, k: _conv.conv_general_dilated(x, k, *args, **kw))(x, k))
    assert "custom_jvp_call" not in jaxpr
    assert "custom_jvp_call" in str(jax.make_jaxpr(conv_same)(x, k))
    np.testing.assert_allclose(_conv.conv_general_dilated(x, k, *args, **kw),
                               jax.lax.conv_general_dilated(x, k, *args, **kw), rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda rngs: ResidualBlock(4, 8, stride=2, rngs=rngs),
    lambda rngs: Bottleneck(8, 16, stride=2, rngs=rngs),
    lambda rngs: Stem(3, 4, rngs=rngs),
], ids=["residual", "bottleneck", "stem"])
def test_resnet_blocks_equal_flaxs_own_convolutions(rng, slices, make):
    """The resnets' blocks (strided 3x3 and 1x1 shortcuts) built with conv_layer compute what the
    same blocks with flax's plain nnx.Conv compute: values and every parameter's gradient."""
    slices(8)
    block = make(nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(36, 8, 8, block_in(block))), jnp.float32)
    graph, params = nnx.split(block)
    plain_block = nnx.merge(graph, params)
    for layer in (m for _, m in nnx.iter_graph(plain_block) if isinstance(m, nnx.Conv)):
        assert layer.conv_general_dilated is _conv.conv_general_dilated
        layer.conv_general_dilated = jax.lax.conv_general_dilated
    plain_graph, _ = nnx.split(plain_block)

    def loss(graph):
        return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(jnp.tanh(nnx.merge(graph, p)(x)))))

    (v_ours, g_ours), (v_flax, g_flax) = loss(graph)(params, x), loss(plain_graph)(params, x)
    np.testing.assert_allclose(v_ours, v_flax, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_flax)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def block_in(block) -> int:
    """The input channels of a block's first convolution."""
    first = next(m for _, m in nnx.iter_graph(block) if isinstance(m, nnx.Conv))
    return first.in_features


@cpu_only
@pytest.mark.parametrize("make, x_shape, whole, sliced", [
    # the cnn's Conv block: forward 1, kernel gradient 1 (whole) or 3 (slices of 16 over 48)
    (lambda rngs: Conv(3, 8, rngs=rngs), (48, 10, 10, 3), 2, 4),
    # a strided residual block (3x3 stride 2, 3x3, 1x1 shortcut stride 2): forward 3, the
    # input gradient of conv2 1, kernel gradients 3 (whole) or 9 (by slices)
    (lambda rngs: ResidualBlock(4, 8, stride=2, rngs=rngs), (48, 8, 8, 4), 7, 13),
], ids=["conv-block", "residual-block"])
def test_the_model_blocks_take_the_kernel_gradient_by_slices(rng, slices, make, x_shape, whole, sliced):
    """The models' blocks take the sliced kernel gradient (conv_layer), not XLA's whole one: the
    compiled parameter gradient holds one kernel-gradient convolution per slice."""
    graph, params = nnx.split(make(nnx.Rngs(0)))
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)

    def convolutions(size):
        slices(size)
        grad = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p)(x) ** 2)))
        return grad.lower(params, x).compile().as_text().count(" convolution(")

    assert convolutions(0) == whole
    assert convolutions(16) == sliced


def test_conv_layer_is_flaxs_conv():
    layer = conv_layer(3, 5, (3, 3), strides=2, use_bias=False, rngs=nnx.Rngs(0))
    assert isinstance(layer, nnx.Conv) and layer.strides == 2 and layer.bias is None
    assert layer.kernel[...].shape == (3, 3, 3, 5)
