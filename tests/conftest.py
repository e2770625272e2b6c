"""Shared fixtures: strict numerics and a float64 switch for reference comparisons."""

import jax
import numpy as np
import pytest

# Silent rank promotion hides shape bugs; make it an error everywhere in the suite.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def key():
    return jax.random.key(0)
