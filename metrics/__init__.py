"""Pure leakage measures: distance correlation, HSIC/CKA and image similarity.

Functions of arrays only; differentiable where that makes sense; no model code.
"""

from metrics.distance_correlation import (
    distance_correlation,
    distance_correlation_sqr,
    distance_covariance_sqr,
    u_distance_correlation_sqr,
    u_distance_covariance_sqr,
)
from metrics.image import PSNR_CAP_DB, mse, psnr, ssim
from metrics.kernel import hsic, linear_cka, median_bandwidth

__all__ = [
    "PSNR_CAP_DB",
    "distance_correlation",
    "distance_correlation_sqr",
    "distance_covariance_sqr",
    "hsic",
    "linear_cka",
    "median_bandwidth",
    "mse",
    "psnr",
    "ssim",
    "u_distance_correlation_sqr",
    "u_distance_covariance_sqr",
]
