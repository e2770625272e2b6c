"""Optimisation inversion: recover inputs from cut activations by gradient descent.

White-box (He et al., "Model inversion attacks against collaborative inference", ACSAC
2019): the attacker has the client function with its weights and solves
  x_hat = argmin_x ||client(x) - z||^2 + tv_weight * TV(x)
for a whole batch of z at once.

Model-free, UnSplit-style (Erdogan et al., "UnSplit", WPES 2022): the attacker knows the
client's architecture but not its weights; it alternates between optimising the inputs
and a clone of the client so that clone(x_hat) matches z. The reference implementation
optimises one image at a time on the CPU; here every image of the batch, and the clone,
move together in one jitted step.

Inputs are parametrised as sigmoid(u) so reconstructions stay in [0, 1].
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attacks import progress


def total_variation(x: jax.Array) -> jax.Array:
    """Mean anisotropic total variation of images x: (n, H, W, C); 0 for flat samples."""
    if x.ndim != 4:
        return jnp.zeros((), x.dtype)
    dh = jnp.abs(x[:, 1:] - x[:, :-1]).mean()
    dw = jnp.abs(x[:, :, 1:] - x[:, :, :-1]).mean()
    return dh + dw


def _matching_loss(z_hat, z):
    return jnp.mean(jnp.sum((z_hat - z).reshape(z.shape[0], -1) ** 2, axis=1))


def _logit(x):
    x = jnp.clip(x, 1e-4, 1 - 1e-4)
    return jnp.log(x) - jnp.log1p(-x)


def _inversion_step(client: Callable, lr: float, tv_weight: float):
    """(optimizer, the jitted Adam step) of a white-box inversion of `client(params, x)`: one
    program for every model it is given (weights and messages are its arguments)."""
    optimizer = optax.adam(lr)

    def loss(u, params, z):
        x_hat = jax.nn.sigmoid(u)
        return _matching_loss(client(params, x_hat), z) + tv_weight * total_variation(x_hat)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(u, opt_state, params, z):
        grads = jax.grad(loss)(u, params, z)
        updates, opt_state = optimizer.update(grads, opt_state, u)
        return optax.apply_updates(u, updates), opt_state

    return optimizer, step


def _invert(optimizer, step, params, z, x_shape, steps: int, init) -> np.ndarray:
    z = jnp.asarray(z, jnp.float32)
    start = jnp.full((z.shape[0], *x_shape), 0.5, jnp.float32) if init is None else jnp.asarray(init, jnp.float32)
    u = _logit(start)
    opt_state = optimizer.init(u)
    # Steps driven from Python: XLA:CPU runs convolutions inside loops ~13x slower.
    for _ in progress.steps(steps, "white-box inversion"):
        u, opt_state = step(u, opt_state, params, z)
    return np.asarray(jax.nn.sigmoid(u))


def whitebox_inversion(
    client: Callable,
    z,
    x_shape,
    *,
    params=None,
    steps: int = 500,
    lr: float = 0.05,
    tv_weight: float = 0.0,
    init=None,
) -> np.ndarray:
    """Invert `client` for a batch of activations.

    Args:
      client: `client(params, x) -> z` with the weights `params` given, or `client(x) -> z`
        (weights closed over) without.
      z: (n, ...) observed activations.
      x_shape: shape of one input.
      params: the client's weights (a pytree), an argument of the compiled step.
      steps: Adam steps on all images together.
      lr: Adam's learning rate.
      tv_weight: weight of the total-variation prior (images only).
      init: optional (n, *x_shape) starting guess in [0, 1]; default 0.5 everywhere.

    Returns:
      (n, *x_shape) reconstructions in [0, 1].
    """
    apply = client if params is not None else (lambda _, x: client(x))
    optimizer, step = _inversion_step(apply, float(lr), float(tv_weight))
    return _invert(optimizer, step, params, z, x_shape, steps, init)


def whitebox_inversions(client: Callable, zs, x_shapes, params, *, steps: int = 500, lr: float = 0.05,
                        tv_weight: float = 0.0) -> list[np.ndarray]:
    """`whitebox_inversion` of K models of one architecture with one compiled step: model k's
    messages zs[k] (n_k, ...) through `client(params[k], x)`, inputs of shape x_shapes[k].

    Returns:
      [(n_k, *x_shapes[k]) reconstructions in [0, 1]] * K.
    """
    optimizer, step = _inversion_step(client, float(lr), float(tv_weight))
    return [_invert(optimizer, step, p, z, shape, steps, None) for p, z, shape in zip(params, zs, x_shapes)]


def unsplit_inversion(
    apply_fn: Callable,
    init_params,
    z,
    x_shape,
    *,
    rounds: int = 20,
    input_steps: int = 50,
    model_steps: int = 50,
    lr_input: float = 0.05,
    lr_model: float = 1e-3,
    tv_weight: float = 0.05,
):
    """UnSplit-style model-free inversion: alternate input and clone-model optimisation.

    Args:
      apply_fn: (params, x) -> z, the client architecture.
      init_params: the attacker's own initialisation of the clone (not the target's weights).
      z: (n, ...) observed activations; x_shape: shape of one input.
      rounds: alternations; each runs `input_steps` on x_hat then `model_steps` on the clone.

    Returns:
      (x_hat (n, *x_shape) in [0, 1], clone_params).
    """
    z = jnp.asarray(z, jnp.float32)
    n = z.shape[0]
    u = jnp.zeros((n, *x_shape), jnp.float32)
    params = init_params
    opt_x, opt_m = optax.adam(lr_input), optax.adam(lr_model)
    state_x, state_m = opt_x.init(u), opt_m.init(params)

    def loss(params, u, z):
        x_hat = jax.nn.sigmoid(u)
        return _matching_loss(apply_fn(params, x_hat), z) + tv_weight * total_variation(x_hat)

    @jax.jit  # the messages an argument, not a constant of the program
    def input_step(params, u, state_x, z):
        grads = jax.grad(loss, argnums=1)(params, u, z)
        updates, state_x = opt_x.update(grads, state_x, u)
        return optax.apply_updates(u, updates), state_x

    @jax.jit
    def model_step(params, u, state_m, z):
        grads = jax.grad(loss, argnums=0)(params, u, z)
        updates, state_m = opt_m.update(grads, state_m, params)
        return optax.apply_updates(params, updates), state_m

    for _ in progress.steps(rounds, "UnSplit rounds"):
        for _ in range(input_steps):
            u, state_x = input_step(params, u, state_x, z)
        for _ in range(model_steps):
            params, state_m = model_step(params, u, state_m, z)
    return np.asarray(jax.nn.sigmoid(u)), params
