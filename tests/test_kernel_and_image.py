"""HSIC and linear CKA against NumPy float64 references; MSE/PSNR/SSIM behaviour."""

import jax
import numpy as np
import pytest

import metrics


def _numpy_hsic(x, y):
    """Gretton et al. 2005 biased HSIC with the median heuristic, written the textbook way."""
    n = x.shape[0]

    def gram(a):
        a = a.reshape(n, -1)
        d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        sigma = np.sqrt(np.median(d2[np.triu_indices(n, 1)]))
        return np.exp(-d2 / (2 * sigma**2))

    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(gram(x) @ h @ gram(y) @ h) / (n - 1) ** 2


def _numpy_linear_cka(x, y):
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("shape", [(30, 4), (25, 3, 3, 1), (41, 1)])
def test_hsic_and_cka_match_numpy(x64, rng, shape):
    x = rng.normal(size=shape)
    y = np.cos(x.reshape(shape[0], -1)[:, :2]) + 0.2 * rng.normal(size=(shape[0], 2))
    np.testing.assert_allclose(jax.jit(metrics.hsic)(x, y), _numpy_hsic(x, y), rtol=1e-9)
    np.testing.assert_allclose(jax.jit(metrics.linear_cka)(x, y), _numpy_linear_cka(x, y), rtol=1e-9)


def test_cka_properties(rng):
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    np.testing.assert_allclose(metrics.linear_cka(x, 3 * x @ q + 1), 1.0, atol=1e-5)
    assert float(metrics.linear_cka(x, np.ones((50, 2)))) == 0.0
    independent = metrics.linear_cka(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)))
    assert float(independent) < 0.01


def test_hsic_independent_smaller_than_dependent(rng):
    x = rng.normal(size=(300, 2))
    assert metrics.hsic(x, rng.normal(size=(300, 2))) < 0.2 * metrics.hsic(x, x**2)


def test_kernel_shape_mismatch_raises():
    for fn in (metrics.hsic, metrics.linear_cka):
        with pytest.raises(ValueError, match="same number of samples"):
            fn(np.zeros((4, 2)), np.zeros((5, 2)))


def test_image_scores_against_numpy(rng):
    x = rng.uniform(size=(6, 12, 12, 1)).astype(np.float32)
    x_hat = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    per = np.mean((x - x_hat).reshape(6, -1).astype(np.float64) ** 2, axis=1)
    np.testing.assert_allclose(metrics.mse(x, x_hat, reduction="none"), per, rtol=1e-5)
    np.testing.assert_allclose(metrics.mse(x, x_hat), per.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics.psnr(x, x_hat, reduction="none"), -10 * np.log10(per), rtol=1e-4)
    assert metrics.ssim(x, x_hat, reduction="none").shape == (6,)
    import dm_pix

    np.testing.assert_allclose(metrics.psnr(x, x_hat, reduction="none"), jax.vmap(dm_pix.psnr)(x, x_hat), rtol=1e-5)
    assert metrics.psnr(x.reshape(6, -1), x_hat.reshape(6, -1), reduction="none").shape == (6,)


def test_ssim_properties(rng):
    x = rng.uniform(size=(4, 8, 8, 1)).astype(np.float32)  # digits-sized: window shrinks to 7
    np.testing.assert_allclose(jax.jit(metrics.ssim)(x, x), 1.0, atol=1e-5)
    slightly = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1)
    heavily = np.clip(x + 0.5 * rng.normal(size=x.shape), 0, 1)
    assert metrics.ssim(x, slightly) > metrics.ssim(x, heavily)
    assert metrics.ssim(x[..., 0], slightly[..., 0]).shape == ()  # (n, H, W) accepted


def test_psnr_capped_for_perfect_reconstruction(rng):
    x = rng.uniform(size=(3, 4, 4, 1))
    assert float(metrics.psnr(x, x)) == metrics.PSNR_CAP_DB


def test_image_errors(rng):
    with pytest.raises(ValueError, match="same shape"):
        metrics.mse(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="images"):
        metrics.ssim(np.zeros((2, 16)), np.zeros((2, 16)))
    with pytest.raises(ValueError, match="reduction"):
        metrics.mse(np.zeros((2, 3)), np.zeros((2, 3)), reduction="sum")


@pytest.mark.parametrize("n", [7, 10, 33])
def test_cka_edges(rng, n):
    """Like dCor: exactly 0 against a constant, invariant to huge and tiny scales, NaN for NaN."""
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.tanh(x[:, :2]) + 0.1 * rng.normal(size=(n, 2)).astype(np.float32)
    assert float(metrics.linear_cka(x, np.full((n, 3), 3.7, np.float32))) == 0.0
    base = float(metrics.linear_cka(x, y))
    for scale in (1e15, 1e-15):
        np.testing.assert_allclose(metrics.linear_cka(x * scale, y), base, rtol=1e-4)
    bad = x.copy()
    bad[1, 2] = np.nan
    assert np.isnan(float(metrics.linear_cka(bad, y))) and np.isnan(float(metrics.linear_cka(x, np.where(y > 0, np.inf, y))))
