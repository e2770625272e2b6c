"""Pure leakage measures: distance correlation (plain, partial, tested), HSIC/CKA, image similarity.

Functions of arrays only; differentiable where that makes sense; no model code.

A V-statistic dCor(x, z) reads a positive floor even for independent samples; read it
with `distance_correlation_test` (its permutation null at the same n: p-value and the
null's 95% quantile), `u_distance_correlation_sqr` (bias-corrected, ~0 when independent)
and `partial_distance_correlation(x, z, y)` (what z shares with x beyond the label y).

References: Szekely, Rizzo & Bakirov, Ann. Statist. 35(6), 2007 (dCor and its
permutation test); Szekely & Rizzo, Ann. Statist. 42(6), 2014 (bias-corrected and
partial dCor).
"""

from metrics.distance_correlation import (
    distance_correlation,
    distance_correlation_sqr,
    distance_covariance_sqr,
    u_distance_correlation_sqr,
    u_distance_covariance_sqr,
)
from metrics.image import PSNR_CAP_DB, mse, psnr, ssim
from metrics.independence import DistanceCorrelationTest, distance_correlation_test, permutations
from metrics.kernel import hsic, linear_cka, median_bandwidth
from metrics.partial_distance_correlation import (
    partial_distance_correlation,
    partial_distance_covariance,
)

__all__ = [
    "PSNR_CAP_DB",
    "DistanceCorrelationTest",
    "distance_correlation",
    "distance_correlation_sqr",
    "distance_correlation_test",
    "distance_covariance_sqr",
    "hsic",
    "linear_cka",
    "median_bandwidth",
    "mse",
    "partial_distance_correlation",
    "partial_distance_covariance",
    "permutations",
    "psnr",
    "ssim",
    "u_distance_correlation_sqr",
    "u_distance_covariance_sqr",
]
