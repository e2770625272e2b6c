"""Reconstruction scores for image batches scaled to [0, 1]: MSE, PSNR, SSIM.

Each function returns the mean over the batch by default, or one value per sample
with `reduction="none"`. SSIM comes from dm-pix; PSNR is -10 log10(MSE).

References: Wang et al., "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["mse", "psnr", "ssim", "PSNR_CAP_DB"]

# PSNR of a perfect reconstruction is infinite; tables and means want a number.
PSNR_CAP_DB = 100.0


def _on_device(a):
    """A device array of `a` (a transfer for host arrays: `jnp.asarray` of a NumPy array
    compiles a small program per shape)."""
    if isinstance(a, jax.Array):
        return a
    a = np.asarray(a)
    # A copy, never the caller's memory: the result is computed asynchronously and the caller may change `a`.
    return jax.device_put(a.astype(jax.dtypes.canonicalize_dtype(a.dtype), copy=False), may_alias=False)


def _pair(x, x_hat, name):
    x, x_hat = _on_device(x), _on_device(x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"{name}: x and x_hat must have the same shape, got {x.shape} and {x_hat.shape}")
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a batch (n, ...), got shape {x.shape}")
    return x, x_hat


def _common(x, x_hat):
    dtype = jnp.result_type(x.dtype, x_hat.dtype, float)
    return x.astype(dtype), x_hat.astype(dtype)


_mean = jax.jit(jnp.mean)


def _reduce(per_sample, reduction):
    if reduction == "mean":
        return _mean(per_sample)
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def mse(x, x_hat, *, reduction: str = "mean") -> jax.Array:
    """Mean squared error per sample, `x, x_hat: (n, ...)` -> (n,) or its mean."""
    return _reduce(_mse_per_sample(*_pair(x, x_hat, "mse")), reduction)


@jax.jit
def _mse_per_sample(x, x_hat):
    x, x_hat = _common(x, x_hat)
    return jnp.mean((x - x_hat).reshape(x.shape[0], -1) ** 2, axis=1)


@jax.jit
def _psnr_per_sample(x, x_hat):
    cap = 10.0 ** (-PSNR_CAP_DB / 10.0)
    return -10.0 * jnp.log10(jnp.maximum(_mse_per_sample(x, x_hat), cap))


def psnr(x, x_hat, *, reduction: str = "mean") -> jax.Array:
    """Peak signal-to-noise ratio in dB for data in [0, 1]: -10 log10(MSE), capped at 100 dB.

    Any sample shape (images or tabular rows); the same value as `dm_pix.psnr` on images.
    """
    return _reduce(_psnr_per_sample(*_pair(x, x_hat, "psnr")), reduction)


def ssim(x, x_hat, *, reduction: str = "mean", filter_size: int | None = None) -> jax.Array:
    """Structural similarity (Gaussian window, sigma 1.5) for images in [0, 1].

    Args:
      x: (n, H, W) or (n, H, W, C) images.
      x_hat: their reconstructions, the same shape.
      filter_size: window size; None uses 11, or the largest odd size that fits in
        small images (7 for 8x8 digits), since the window may not exceed the image.

    Returns:
      (n,) per-sample SSIM in [-1, 1], or its mean.
    """
    x, x_hat = _pair(x, x_hat, "ssim")
    if x.ndim not in (3, 4):
        raise ValueError(f"ssim expects images (n, H, W) or (n, H, W, C), got shape {x.shape}")
    if filter_size is None:
        filter_size = min(11, x.shape[1], x.shape[2])
        filter_size -= 1 - filter_size % 2
    return _reduce(_ssim_per_sample(x, x_hat, filter_size), reduction)


@functools.partial(jax.jit, static_argnames="filter_size")
def _ssim_per_sample(x, x_hat, filter_size):
    """dm-pix's SSIM of (n, H, W) or (n, H, W, C) images as one compiled program (op by op, each new
    image shape compiled some twenty small programs)."""
    x, x_hat = _common(x, x_hat)
    if x.ndim == 3:  # (n, H, W) -> (n, H, W, 1)
        x, x_hat = x[..., None], x_hat[..., None]
    return dm_pix.ssim(x, x_hat, max_val=1.0, filter_size=filter_size)
