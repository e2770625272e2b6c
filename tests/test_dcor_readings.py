"""Reading a dCor: partial dCor and the permutation test, against the `dcor` package (0.7).

Expected values are computed with dcor 0.7 (`dcor.partial_distance_correlation`,
`dcor.partial_distance_covariance`, `dcor.independence.distance_covariance_test`) in
float64.
"""

import dcor
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metrics

# ---- partial distance correlation ------------------------------------------------


def _labelled(rng, n, p=12, q=4, classes=10, beyond=0.0):
    """x = class mean + noise, z = other class mean + noise (+ beyond * part of x), y one-hot."""
    labels = rng.integers(0, classes, n)
    y = np.eye(classes)[labels]
    x = rng.normal(size=(classes, p))[labels] + rng.normal(size=(n, p))
    z = rng.normal(size=(classes, q))[labels] + rng.normal(size=(n, q)) + beyond * x[:, :q]
    return x, z, y


def _case(name, rng):
    """(x, z, y) for a named case; n is never a power of two."""
    if name == "random":
        return rng.normal(size=(37, 5)), rng.normal(size=(37, 3)), rng.normal(size=(37, 2))
    if name == "dependent":
        x = rng.normal(size=(101, 6))
        y = rng.normal(size=(101, 2))
        z = np.tanh(x[:, :3]) + y[:, :1] + 0.3 * rng.normal(size=(101, 3))
        return x, z, y
    if name == "z_of_y":  # z = f(y) + noise
        y = rng.normal(size=(53, 3))
        return y @ rng.normal(size=(3, 20)) + rng.normal(size=(53, 20)), np.sin(y) + 0.1 * rng.normal(size=(53, 3)), y
    if name == "constant_columns":
        x, z, y = rng.normal(size=(37, 5)), rng.normal(size=(37, 4)), rng.normal(size=(37, 3))
        x[:, 1] = 2.5
        z[:, 0] = -1.0
        y[:, 2] = 7.0
        z[:, 1] += x[:, 0]
        return x, z, y
    if name == "one_hot_y":
        return _labelled(rng, 77, beyond=0.5)
    if name == "images":  # 4-d samples against flat activations and 1-d labels
        x = rng.uniform(size=(45, 6, 6, 1))
        z = np.maximum(x.reshape(45, -1) @ rng.normal(size=(36, 8)) / 6, 0)
        return x, z, (x.reshape(45, -1).mean(axis=1) > 0.5).astype(float)
    if name == "n_is_4":
        return rng.normal(size=(4, 2)), rng.normal(size=(4, 3)), rng.normal(size=(4, 1))
    raise KeyError(name)


CASES = ["random", "dependent", "z_of_y", "constant_columns", "one_hot_y", "images", "n_is_4"]


def _flat(a):
    a = np.asarray(a, np.float64)
    return a.reshape(a.shape[0], -1)


@pytest.mark.parametrize("case", CASES)
def test_partial_matches_dcor_float64(x64, rng, case):
    x, z, y = _case(case, rng)
    expected_cor = dcor.partial_distance_correlation(_flat(x), _flat(z), _flat(y))
    expected_cov = dcor.partial_distance_covariance(_flat(x), _flat(z), _flat(y))
    cor = jax.jit(metrics.partial_distance_correlation)(x, z, y)
    cov = jax.jit(metrics.partial_distance_covariance)(x, z, y)
    assert cor.dtype == jnp.float64 and cor.shape == ()
    # n = 4 reads -1 in both, up to round-off that ours clips to [-1, 1] (dcor does not). The
    # partial statistics cancel (a projection subtracted from U-centred products): with XLA's
    # optimisations off (jax_disable_most_optimizations) they move by 3e-10 in float64, still
    # far inside 1e-9 of values of order 0.1.
    np.testing.assert_allclose(cor, np.clip(expected_cor, -1, 1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_partial_float32_agrees_with_float64(rng, case):
    x, z, y = _case(case, rng)
    expected = dcor.partial_distance_correlation(_flat(x), _flat(z), _flat(y))
    got = metrics.partial_distance_correlation(*(a.astype(np.float32) for a in (x, z, y)))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.clip(expected, -1, 1), atol=1e-4)


def test_partial_dcor_docstring_examples():
    """The examples of `dcor.partial_distance_correlation`'s docstring (n = 5)."""
    a = np.array([[1], [1], [2], [2], [3]])
    b = np.array([[1], [2], [1], [2], [1]])
    c = np.array([[1], [2], [2], [1], [2]])
    pd = metrics.partial_distance_correlation
    np.testing.assert_allclose([pd(a, a, c), pd(a, b, c), pd(b, b, c), pd(a, c, c)], [1.0, -0.5, 1.0, 0.0], atol=1e-6)


def test_constant_condition_gives_bias_corrected_dcor(x64, rng):
    """dcor's convention: <C, C> = 0 makes the projection the identity, so pdCor = R*(x, z)."""
    x = rng.normal(size=(41, 4))
    z = x[:, :2] ** 2 + 0.5 * rng.normal(size=(41, 2))
    y = np.full((41, 3), 3.7)
    for block_size in (None, 8):
        np.testing.assert_allclose(
            metrics.partial_distance_correlation(x, z, y, block_size=block_size),
            metrics.u_distance_correlation_sqr(x, z),
            rtol=1e-10,
        )
        np.testing.assert_allclose(
            metrics.partial_distance_covariance(x, z, y, block_size=block_size),
            metrics.u_distance_covariance_sqr(x, z),
            rtol=1e-10,
        )
    np.testing.assert_allclose(
        metrics.partial_distance_correlation(x, z, y), dcor.partial_distance_correlation(x, z, y), rtol=1e-9
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_x_or_z_gives_exactly_zero(rng, dtype):
    x, z, y = (a.astype(dtype) for a in _case("dependent", rng))
    const = np.full((x.shape[0], 2), 3.7, dtype)
    with jax.enable_x64(dtype == np.float64):
        for args, block_size in [((const, z, y), None), ((x, const, y), 16)]:
            for fn in (metrics.partial_distance_correlation, metrics.partial_distance_covariance):
                assert float(fn(*args, block_size=block_size)) == 0.0
    assert dcor.partial_distance_correlation(_flat(const), _flat(z), _flat(y)) == 0.0


def test_z_a_similarity_of_y_reads_zero_not_roundoff(x64, rng):
    """R*(z, y) = 1: 1 - R^2 is 0, so pdCor is 0 (dcor's convention for a zero denominator),
    and not a ratio of round-off errors."""
    y = rng.normal(size=(30, 2))
    x = rng.normal(size=(30, 4)) + y[:, :1]
    for z in (y, 2.0 * y + 1.0, -3.0 * y @ np.array([[0.6, 0.8], [-0.8, 0.6]])):
        assert float(metrics.partial_distance_correlation(x, z, y)) == 0.0
        assert float(metrics.partial_distance_correlation(z, x, y)) == 0.0
    assert dcor.partial_distance_correlation(x, y, y) == 0.0


def test_conditionally_independent_reads_near_zero(x64, rng):
    """x and z share only the label: bias-corrected dCor^2 is large, pdCor given the label ~0;
    with part of x in z, pdCor is clearly positive."""
    x, z, y = _labelled(rng, 300, p=50, q=8)
    assert float(metrics.u_distance_correlation_sqr(x, z)) > 0.1
    assert abs(float(metrics.partial_distance_correlation(x, z, y))) < 0.05
    x, z, y = _labelled(rng, 300, p=50, q=8, beyond=2.0)
    assert float(metrics.partial_distance_correlation(x, z, y)) > 0.2
    np.testing.assert_allclose(
        metrics.partial_distance_correlation(x, z, y), dcor.partial_distance_correlation(x, z, y), rtol=1e-9
    )


@pytest.mark.parametrize("block_size", [1, 7, 16, 64, 1000])
def test_partial_blocked_equals_plain(x64, rng, block_size):
    x, z, y = _case("one_hot_y", rng)
    for fn in (metrics.partial_distance_correlation, metrics.partial_distance_covariance):
        plain = fn(x, z, y)
        blocked = jax.jit(lambda a, b, c, fn=fn: fn(a, b, c, block_size=block_size))(x, z, y)
        # 1e-11 apart with XLA's default optimisations, 3e-10 with them off (a different
        # summation order in float64); a block assembled wrongly moves them by far more.
        np.testing.assert_allclose(blocked, plain, rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-12, 1e9])
def test_partial_scale_invariance(x64, rng, scale):
    """pdCor ignores each input's scale; pdCov scales with s_x s_z and ignores y's."""
    x, z, y = _case("dependent", rng)
    cor, cov = metrics.partial_distance_correlation(x, z, y), metrics.partial_distance_covariance(x, z, y)
    np.testing.assert_allclose(metrics.partial_distance_correlation(scale * x, z / scale, scale * (y + 1)), cor, atol=1e-9)
    np.testing.assert_allclose(
        metrics.partial_distance_covariance(scale * x, 3 * z, scale * y), 3 * scale * cov, rtol=1e-8
    )


def test_partial_batch_under_vmap_and_jit(rng):
    x = rng.normal(size=(3, 25, 4)).astype(np.float32)
    y = rng.normal(size=(3, 25, 2)).astype(np.float32)
    z = np.tanh(x[..., :2]) + y + 0.1 * rng.normal(size=(3, 25, 2)).astype(np.float32)
    stacked = jax.jit(jax.vmap(metrics.partial_distance_correlation))(x, z, y)
    assert stacked.shape == (3,)
    np.testing.assert_allclose(stacked, [metrics.partial_distance_correlation(*a) for a in zip(x, z, y)], rtol=1e-5)


# Few sample counts: each new shape compiles once (~1 s).
@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([5, 13, 29]), seed=st.integers(0, 2**16), mix=st.floats(0.0, 3.0))
def test_partial_properties(n, seed, mix):
    """In [-1, 1]; symmetric in x and z; as dcor for any mixture of x, y and noise in z."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
        z = mix * np.sin(x[:, :2]) + np.cos(mix) * y + rng.normal(size=(n, 2))
        value = float(metrics.partial_distance_correlation(x, z, y))
        assert -1.0 <= value <= 1.0
        np.testing.assert_allclose(metrics.partial_distance_correlation(z, x, y), value, atol=1e-12)
        np.testing.assert_allclose(value, np.clip(dcor.partial_distance_correlation(x, z, y), -1, 1), atol=1e-9)


def test_partial_finite_gradients_with_duplicate_rows(rng):
    x = rng.normal(size=(12, 5)).astype(np.float32)
    x[3] = x[7]
    x[:, 2] = 1.5
    y = (x[:, :1] > 0).astype(np.float32)
    z = x[:, :3] * 2.0 + y
    for block_size in (None, 4):
        g = jax.jit(
            jax.grad(lambda a, b: metrics.partial_distance_correlation(a, b, y, block_size=block_size), argnums=(0, 1))
        )(x, z)
        assert all(np.all(np.isfinite(gi)) for gi in g)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_partial_non_finite_gives_nan(x64, rng, where):
    args = [a.copy() for a in _case("random", rng)]
    args[where][4, 0] = np.nan
    assert np.isnan(float(metrics.partial_distance_correlation(*args)))
    assert np.isnan(float(metrics.partial_distance_covariance(*args, block_size=8)))


def test_partial_errors():
    fn = metrics.partial_distance_correlation
    ok = np.ones((6, 2))
    with pytest.raises(ValueError, match="x, z and y must hold the same number of samples, got 6, 7 and 6"):
        fn(ok, np.ones((7, 2)), ok)
    with pytest.raises(ValueError, match="same number of samples"):
        jax.jit(fn)(ok, ok, np.ones((5, 2)))
    with pytest.raises(ValueError, match="at least 4 samples"):
        fn(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="y must have a leading sample axis"):
        fn(ok, ok, np.float32(1.0))
    with pytest.raises(ValueError, match="z is empty"):
        metrics.partial_distance_covariance(ok, np.zeros((6, 0)), ok)
    with pytest.raises(TypeError, match="y must hold real numbers"):
        fn(ok, ok, np.ones((6, 2), np.complex64))
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        fn(ok, ok, ok, block_size=0)


# ---- permutation test -------------------------------------------------------------


def _numpy_permutations(seed, count, n):
    """The permutations `dcor.independence.distance_covariance_test(..., random_state=seed)` draws."""
    state = np.random.RandomState(seed)
    return np.stack([state.permutation(n) for _ in range(count)])


@pytest.mark.parametrize("strength", [0.0, 0.15, 0.4])
@pytest.mark.parametrize("seed", [0, 1])
def test_permutation_test_matches_dcor(x64, rng, strength, seed):
    """Same permutations, same counts: dcor permutes its first argument, so it gets (z, x)."""
    n, count = 45, 99
    x = rng.normal(size=(n, 6))
    z = strength * np.tanh(x[:, :3]) + rng.normal(size=(n, 3))
    perms = _numpy_permutations(seed, count, n)
    result = jax.jit(lambda a, b, p: metrics.distance_correlation_test(a, b, permutations=p))(x, z, perms)
    reference = dcor.independence.distance_covariance_test(z, x, num_resamples=count, random_state=seed)
    assert result.pvalue == pytest.approx(reference.pvalue, abs=1e-12)
    np.testing.assert_allclose(result.dcor, dcor.distance_correlation(x, z), rtol=1e-10)
    # dcor's statistic is n dCov^2_n; ours is dCor, the same ordering.
    np.testing.assert_allclose(n * metrics.distance_covariance_sqr(x, z), reference.statistic, rtol=1e-10)
    null = [dcor.distance_correlation(x, z[p]) for p in perms]
    np.testing.assert_allclose(result.null, null, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.dcor_null95, np.quantile(null, 0.95), rtol=1e-9)


def test_permutation_test_float32_matches_distance_correlation(rng):
    x = rng.uniform(size=(120, 50)).astype(np.float32)
    z = np.maximum(x @ rng.normal(size=(50, 8)).astype(np.float32) / 7, 0)
    perms = _numpy_permutations(3, 20, 120)
    result = metrics.distance_correlation_test(x, z, permutations=perms)
    assert result.dcor.dtype == jnp.float32 and result.null.shape == (20,)
    np.testing.assert_allclose(result.dcor, metrics.distance_correlation(x, z), atol=2e-6)
    np.testing.assert_allclose(result.null, [metrics.distance_correlation(x, z[p]) for p in perms], atol=2e-6)


def test_dependent_data_reads_smallest_p(rng):
    x = rng.normal(size=(80, 5)).astype(np.float32)
    z = np.tanh(x[:, :2]) + 0.2 * rng.normal(size=(80, 2)).astype(np.float32)
    result = metrics.distance_correlation_test(x, z, permutations=199, key=jax.random.key(5))
    assert float(result.pvalue) == pytest.approx(1 / 200)
    assert float(result.dcor) > float(jnp.max(result.null))


def test_drawn_permutations_are_the_tests_own_draws(rng):
    """`metrics.permutations(n, B, key)` are the permutations the test draws for (B, key):
    passed back in, the null is the same, element for element; each row permutes range(n)."""
    x = rng.normal(size=(30, 3)).astype(np.float32)
    z = x[:, :1] + rng.normal(size=(30, 1)).astype(np.float32)
    perms = metrics.permutations(30, 25, jax.random.key(3))
    assert perms.shape == (25, 30) and perms.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(np.asarray(perms), axis=1), np.broadcast_to(np.arange(30), (25, 30)))
    drawn = metrics.distance_correlation_test(x, z, permutations=25, key=jax.random.key(3))
    given = metrics.distance_correlation_test(x, z, permutations=perms)
    np.testing.assert_array_equal(np.asarray(given.null), np.asarray(drawn.null))
    assert float(given.pvalue) == float(drawn.pvalue)
    np.testing.assert_array_equal(metrics.permutations(30, 25, 3), perms)  # an integer seed is key(seed)
    for bad in [(0, 5), (30, 0), (True, 5), (30, 2.5)]:
        with pytest.raises((ValueError, TypeError)):
            metrics.permutations(*bad)


def test_independent_p_values_spread(rng):
    """Under independence the p-value is about uniform: 40 data sets, B = 99."""
    test = jax.jit(lambda a, b, k: metrics.distance_correlation_test(a, b, permutations=99, key=k).pvalue)
    p = np.array(
        [test(rng.normal(size=(40, 4)), rng.normal(size=(40, 2)), jax.random.key(i)) for i in range(40)]
    )
    assert np.all((p >= 0.01) & (p <= 1.0))
    assert np.mean(p <= 0.05) <= 0.2  # expect 0.05: 6 or more of 40 has probability ~0.01
    assert 0.3 < np.mean(p) < 0.7 and p.max() > 0.8 and p.min() < 0.3


def test_independent_noise_reads_a_positive_floor_but_p_above_005():
    """64-d noise against image-like rows reads a V dCor far from 0 (0.372 on 1,000 MNIST
    test images), at its own permutation null; the bias-corrected dCor^2 is ~0."""
    rng = np.random.default_rng(21)
    n = 500
    latent = rng.normal(size=(n, 10)).astype(np.float32)
    x = jax.nn.sigmoid(latent @ rng.normal(size=(10, 784)).astype(np.float32))  # 784-d, low-rank, in [0, 1]
    noise = rng.normal(size=(n, 64)).astype(np.float32)
    result = metrics.distance_correlation_test(x, noise, permutations=200, key=0)
    assert float(result.dcor) > 0.25
    assert float(result.pvalue) > 0.05
    assert float(result.dcor) < float(jnp.max(result.null))
    np.testing.assert_allclose(result.dcor_null95, result.dcor, atol=0.03)
    assert abs(float(metrics.u_distance_correlation_sqr(x, noise))) < 0.01


def test_constant_input_reads_p_one(rng):
    """Every dCor is 0: every null value ties the observed one. Ours (>=) reads 1; dcor,
    which counts only strictly greater values, reads 1 / (1 + B)."""
    x = rng.normal(size=(30, 3))
    const = np.full((30, 2), 3.7)
    for block_size in (None, 8):
        result = metrics.distance_correlation_test(x, const, permutations=19, block_size=block_size)
        assert float(result.pvalue) == 1.0 and float(result.dcor) == 0.0
        np.testing.assert_array_equal(result.null, 0.0)
    assert dcor.independence.distance_covariance_test(const, x, num_resamples=19, random_state=0).pvalue == 0.05


def test_blocked_test_equals_dense(x64, rng):
    x = rng.normal(size=(37, 5))
    z = 0.2 * x[:, :2] + rng.normal(size=(37, 2))
    dense = metrics.distance_correlation_test(x, z, permutations=30, key=7)
    blocked = metrics.distance_correlation_test(x, z, permutations=30, key=7, block_size=8)
    for a, b in zip(dense, blocked):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_keys_and_seeds(rng):
    x = rng.normal(size=(30, 3)).astype(np.float32)
    z = rng.normal(size=(30, 2)).astype(np.float32)
    run = metrics.distance_correlation_test
    default, seed0, key0 = run(x, z, permutations=25), run(x, z, permutations=25, key=0), run(
        x, z, permutations=25, key=jax.random.key(0)
    )
    np.testing.assert_array_equal(default.null, seed0.null)
    np.testing.assert_array_equal(key0.null, seed0.null)
    assert not np.array_equal(run(x, z, permutations=25, key=1).null, seed0.null)
    assert run(x, z, permutations=np.int64(7)).null.shape == (7,)


def test_permutation_test_under_jit_and_non_finite(rng):
    x = rng.normal(size=(20, 3)).astype(np.float32)
    z = np.sin(x[:, :2])
    jitted = jax.jit(lambda a, b, k: metrics.distance_correlation_test(a, b, permutations=15, key=k))
    eager = metrics.distance_correlation_test(x, z, permutations=15, key=jax.random.key(2))
    for a, b in zip(jitted(x, z, jax.random.key(2)), eager):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    z[3, 1] = np.inf
    assert all(np.all(np.isnan(field)) for field in metrics.distance_correlation_test(x, z, permutations=5))


def test_permutation_test_batch_under_vmap(rng):
    xs = rng.normal(size=(3, 24, 4)).astype(np.float32)
    zs = np.tanh(xs[..., :2]) + rng.normal(size=(3, 24, 2)).astype(np.float32)
    stacked = jax.jit(jax.vmap(lambda a, b: metrics.distance_correlation_test(a, b, permutations=10)))(xs, zs)
    assert stacked.null.shape == (3, 10) and stacked.pvalue.shape == (3,)
    for i, (a, b) in enumerate(zip(xs, zs)):
        one = metrics.distance_correlation_test(a, b, permutations=10)
        for field_stacked, field_one in zip(stacked, one):
            np.testing.assert_allclose(field_stacked[i], field_one, rtol=1e-5, atol=1e-6)


def test_permutation_test_errors():
    fn = metrics.distance_correlation_test
    ok = np.ones((6, 2))
    with pytest.raises(ValueError, match="x and z must hold the same number of samples"):
        fn(ok, np.ones((7, 2)))
    with pytest.raises(ValueError, match="z must have a leading sample axis"):
        fn(ok, np.float32(1.0))
    with pytest.raises(ValueError, match="at least 2 samples"):
        fn(np.ones((1, 2)), np.ones((1, 2)))
    for bad in (0, -5, True, 2.5):
        with pytest.raises(ValueError, match="permutations must be a positive integer"):
            fn(ok, ok, permutations=bad)
    with pytest.raises(ValueError, match=r"\(B, n\) array"):
        fn(ok, ok, permutations=np.zeros((3, 5), int))
    with pytest.raises(ValueError, match="permutation of range"):
        fn(ok, ok, permutations=np.zeros((3, 6), int))
    with pytest.raises(TypeError, match="permutations must hold integers"):
        fn(ok, ok, permutations=np.zeros((3, 6)))
    with pytest.raises(ValueError, match="block_size"):
        fn(ok, ok, block_size=8.0)


def test_bucketed_readings_equal_the_unpadded_program(rng):
    """Zero features change no distance: the readings of x and z padded to a common width
    (`bucketed_readings`) are the unpadded `stack_readings`' to float32 round-off, and one
    compiled program serves messages of different widths."""
    from nopeek.training import FEATURE_BUCKET, bucketed_readings, stack_readings
    from nopeek.training._leakage import null_permutations

    n = 40
    x = rng.normal(size=(n, 4, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    narrow = np.tanh(x.reshape(n, -1)[None, :, :5]) + 0.3 * rng.normal(size=(2, n, 5)).astype(np.float32)
    wide = rng.normal(size=(2, n, 2 * FEATURE_BUCKET - 7)).astype(np.float32)
    wide[..., :5] += x.reshape(n, -1)[:, :5]
    before = stack_readings._cache_size()
    for z in (narrow, wide):
        got = bucketed_readings(x, z, labels, permutations=30, width=(0, wide.shape[-1]))
        want = stack_readings(jnp.asarray(x.reshape(n, -1)), jnp.asarray(z), jnp.asarray(labels), null_permutations(n, 30))
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, err_msg=name)
    # Two unpadded shapes, one padded: three programs in all, not four.
    assert stack_readings._cache_size() - before == 3
    # x padded past its own width reads the same too.
    got = bucketed_readings(x, narrow, labels, permutations=30, width=(3 * FEATURE_BUCKET - 1, 0))
    want = stack_readings(jnp.asarray(x.reshape(n, -1)), jnp.asarray(narrow), jnp.asarray(labels), null_permutations(n, 30))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, err_msg=name)


def test_a_vertical_runs_messages_share_one_readings_program():
    """Two clients' z and the server's view of both, z[all] (twice as wide): one readings
    program for the run (readings_width gives the widest), not one per width."""
    from nopeek import data
    from nopeek.training import TrainConfig, readings_width, stack_readings, train_stack
    from nopeek.training._leakage import leak_entries

    config = TrainConfig(dataset="breast_cancer", topology="vertical", clients=2, epochs=1, widths=(100,))  # z 100, z[all] 200
    ds = data.load("breast_cancer", limit=120)
    stack_readings.clear_cache()
    result = train_stack(config, ds, progress=False)
    assert {label for _, label in result.readings} == {"z", "z[all]"}
    assert stack_readings._cache_size() == 1
    entries = leak_entries(result.built)
    prepared = result.built.prepare(np.asarray(ds.x_test), np.asarray(ds.y_test))
    wx, wz = readings_width(entries, prepared, result.messages_test)
    assert wz == 2 * np.prod(result.messages_test["z"].shape[3:]) and wx == np.prod(prepared["x"].shape[2:])
