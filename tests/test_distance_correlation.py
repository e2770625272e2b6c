"""Distance statistics against the `dcor` package (0.7), properties, gradients, errors."""

import dcor
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import metrics

NAMES = [
    "distance_covariance_sqr",
    "distance_correlation_sqr",
    "distance_correlation",
    "u_distance_covariance_sqr",
    "u_distance_correlation_sqr",
]

# (x shape, y shape): 1-D, tabular, images against flat activations, images vs images.
SHAPES = [
    ((40,), (40,)),
    ((33, 5), (33, 3)),
    ((64, 8, 8, 1), (64, 16)),
    ((50, 7, 7, 3), (50, 4, 4, 2)),
    ((5, 2), (5, 9)),
]


def _dependent_pair(rng, x_shape, y_shape):
    x = rng.normal(size=x_shape)
    flat = x.reshape(x.shape[0], -1)
    w = rng.normal(size=(flat.shape[1], int(np.prod(y_shape[1:]))))
    y = np.tanh(flat @ w / np.sqrt(flat.shape[1])) + 0.3 * rng.normal(size=(x.shape[0], w.shape[1]))
    return x, y.reshape(y_shape)


def _dcor_reference(name, x, y):
    """dcor wants (n, p) float64 arrays."""
    n = x.shape[0]
    return getattr(dcor, name)(x.reshape(n, -1).astype(np.float64), y.reshape(n, -1).astype(np.float64))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x_shape,y_shape", SHAPES)
def test_matches_dcor_float64(x64, rng, name, x_shape, y_shape):
    x, y = _dependent_pair(rng, x_shape, y_shape)
    expected = _dcor_reference(name, x, y)
    got = jax.jit(getattr(metrics, name))(x, y)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x_shape,y_shape", SHAPES)
def test_matches_dcor_float32(rng, name, x_shape, y_shape):
    x, y = _dependent_pair(rng, x_shape, y_shape)
    expected = _dcor_reference(name, x, y)
    got = jax.jit(getattr(metrics, name))(x.astype(np.float32), y.astype(np.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_matches_dcor_mnist_sized(rng):
    """784-d inputs against 256-d activations, the benchmark's shape."""
    x = rng.uniform(size=(300, 784)).astype(np.float32)
    y = np.maximum(x @ rng.normal(size=(784, 256)).astype(np.float32) / 28, 0)
    np.testing.assert_allclose(
        metrics.distance_correlation(x, y), dcor.distance_correlation(x.astype(float), y.astype(float)),
        atol=1e-4,
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("block_size", [1, 7, 16, 64, 1000])
def test_blocked_equals_plain(x64, rng, name, block_size):
    x, y = _dependent_pair(rng, (61, 6, 6, 1), (61, 10))
    fn = getattr(metrics, name)
    plain = fn(x, y)
    blocked = jax.jit(lambda a, b: fn(a, b, block_size=block_size))(x, y)
    np.testing.assert_allclose(blocked, plain, rtol=1e-12, atol=1e-12)


def test_blocked_gradient_equals_plain(x64, rng):
    x, y = _dependent_pair(rng, (37, 5), (37, 4))
    g_plain = jax.grad(metrics.distance_correlation, argnums=1)(x, y)
    g_block = jax.grad(lambda a, b: metrics.distance_correlation(a, b, block_size=8), argnums=1)(x, y)
    np.testing.assert_allclose(g_block, g_plain, rtol=1e-10, atol=1e-12)


def test_square_is_seen_as_dependent(rng):
    """Squared distances would read about 0.1 here (PAPERS.md); Euclidean dCor reads ~0.5."""
    x = rng.normal(size=2000)
    got = float(metrics.distance_correlation(x, x**2))
    assert 0.45 < got < 0.56
    np.testing.assert_allclose(got, dcor.distance_correlation(x, x**2), atol=1e-4)


def test_independent_samples_near_zero(rng):
    x = rng.normal(size=(2000, 3))
    y = rng.normal(size=(2000, 2))
    assert float(metrics.distance_correlation(x, y)) < 0.1
    assert abs(float(metrics.u_distance_correlation_sqr(x, y))) < 0.01


def test_constant_input_gives_zero_not_nan(rng):
    x = rng.normal(size=(20, 4))
    const = np.ones((20, 3))
    for name in NAMES:
        value = getattr(metrics, name)(x, const)
        assert np.isfinite(value) and float(value) == 0.0, name
    grad = jax.grad(lambda a, b: metrics.distance_correlation(a, b))(jnp.asarray(x), jnp.asarray(const))
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("block_size", [None, 4])
def test_finite_gradients_with_duplicate_rows_and_constant_feature(rng, block_size):
    x = rng.normal(size=(12, 5)).astype(np.float32)
    x[3] = x[7]  # two identical samples: a zero distance off the diagonal
    x[:, 2] = 1.5  # a constant feature
    z = jnp.asarray(x[:, :3] * 2.0)
    for name in ["distance_correlation", "distance_correlation_sqr", "u_distance_correlation_sqr"]:
        fn = getattr(metrics, name)
        g = jax.jit(jax.grad(lambda a, b: fn(a, b, block_size=block_size), argnums=(0, 1)))(x, z)
        assert all(np.all(np.isfinite(gi)) for gi in g), name


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(x64, rng, name):
    x, y = _dependent_pair(rng, (15, 4), (15, 3))
    fn = getattr(metrics, name)
    direction = rng.normal(size=y.shape)
    eps = 1e-6
    numeric = (fn(x, y + eps * direction) - fn(x, y - eps * direction)) / (2 * eps)
    analytic = jnp.vdot(jax.grad(fn, argnums=1)(x, y), direction)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_vmap_over_stack_axis(rng):
    xs = rng.normal(size=(4, 30, 6)).astype(np.float32)
    ys = np.tanh(xs[..., :2]) + 0.1 * rng.normal(size=(4, 30, 2)).astype(np.float32)
    stacked = jax.vmap(metrics.distance_correlation)(xs, ys)
    one_by_one = [metrics.distance_correlation(a, b) for a, b in zip(xs, ys)]
    assert stacked.shape == (4,)
    np.testing.assert_allclose(stacked, one_by_one, rtol=1e-6)


def test_scalar_output_and_integer_inputs(rng):
    x = rng.integers(0, 5, size=(20, 3))
    y = x * 2 + 1
    value = metrics.distance_correlation(x, y)
    assert value.shape == ()
    np.testing.assert_allclose(value, 1.0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_sample_count_mismatch_raises(name):
    with pytest.raises(ValueError, match="same number of samples"):
        getattr(metrics, name)(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="same number of samples"):
        jax.jit(getattr(metrics, name))(np.zeros((5, 2)), np.zeros((6, 2)))


def test_too_few_samples_raise():
    with pytest.raises(ValueError, match="at least 4 samples"):
        metrics.u_distance_correlation_sqr(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.distance_correlation(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="leading sample axis"):
        metrics.distance_correlation(np.float32(1.0), np.float32(2.0))
    with pytest.raises(ValueError, match="block_size"):
        metrics.distance_correlation(np.ones((5, 2)), np.ones((5, 2)), block_size=0)


# ---- properties -------------------------------------------------------------

_samples = hnp.arrays(
    np.float64,
    st.tuples(st.integers(4, 24), st.integers(1, 5)),
    elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False),
)


def _orthogonal(seed, p):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q


@settings(max_examples=25, deadline=None)
@given(x=_samples, seed=st.integers(0, 2**16), scale=st.floats(0.01, 100), shift=st.floats(-5, 5))
def test_properties(x, seed, scale, shift):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        y = np.sin(x @ rng.normal(size=(x.shape[1], 2))) + 0.1 * rng.normal(size=(x.shape[0], 2))
        base = float(metrics.distance_correlation(x, y))
        assert -1e-12 <= base <= 1 + 1e-12
        assert -1e-12 <= float(metrics.distance_correlation_sqr(x, y)) <= 1 + 1e-12
        assert float(metrics.u_distance_correlation_sqr(x, y)) <= 1 + 1e-9
        # Invariance to scaling and to orthogonal maps (and shifts) of either input.
        rotated = scale * x @ _orthogonal(seed, x.shape[1]) + shift
        np.testing.assert_allclose(metrics.distance_correlation(rotated, y), base, atol=1e-7)
        np.testing.assert_allclose(metrics.distance_correlation(x, scale * y - shift), base, atol=1e-7)
        # Symmetric in its arguments.
        np.testing.assert_allclose(metrics.distance_correlation(y, x), base, atol=1e-9)
        # dCor(x, a x + b) = 1 unless x is constant.
        if np.ptp(x, axis=0).max() > 1e-6:
            np.testing.assert_allclose(metrics.distance_correlation(x, scale * x + shift), 1.0, atol=1e-6)


def test_large_n_does_not_overflow(rng):
    """n^2 > 2^31: counts must not overflow int32. dcor's O(n log n) 1-D algorithm is the reference."""
    n = 47_000
    x = rng.normal(size=n)
    y = np.abs(x) + 0.5 * rng.normal(size=n)
    expected = dcor.distance_correlation(x, y, method="avl")
    got = metrics.distance_correlation(x.astype(np.float32), y.astype(np.float32), block_size=4096)
    np.testing.assert_allclose(got, expected, atol=1e-4)
