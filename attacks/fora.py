"""FORA: a substitute client fitted to the distribution of the messages, then inverted.

Threat model (Xu et al., "A stealthy wrongdoer: feature-oriented reconstruction attack
against split learning", CVPR 2024, arXiv 2405.04115): an honest-but-curious server holds
the messages z the client sent during training and unlabelled auxiliary inputs x_aux of the
task's distribution; it needs neither the client's architecture nor its own model nor any
label. Per step, on one batch of observed z and one of x_aux (the authors' code, 92830f2 of
github.com/X1aoyangXu/FORA):

  substitute F^ (x -> z, the attacker's design):  (1 - a) * mean D(F^(x_aux)) + a * MK-MMD(z, F^(x_aux))
  critic D (WGAN-GP, low on the client's z):      mean D(z) - mean D(F^(x_aux)) + w_gp * GP
  inverse network f^-1 (z -> x):                  MSE(f^-1(F^(x_aux)), x_aux), F^ fixed

and the client's messages are inverted as f^-1(z). MK-MMD: the unbiased squared MMD with
the sum of five Gaussian kernels whose squared bandwidths are 1/8, 1/4, 1/2, 1 and 2 times
the mean squared distance of the batch (detached), as the code's (which takes it from the
Transfer-Learning-Library). Deviations, by design: the networks are `attacks.nets`'
(the critic two layers deep, not six residual blocks; the substitute the
`SubstituteClient`); 3,000 steps at batch 64 against the final client (the code: 40,000,
while training); learning rates 1e-3 for the substitute and the inverse network (the
code's 1e-4 barely moves in 3,000 steps); data in [0, 1] with a sigmoid inverse network
(the code: [-1, 1], Tanh; its MSE reads 4x ours).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attacks import progress
from attacks.decoder import rngs_for, vmap_models
from attacks.nets import Discriminator, SubstituteClient, decoder_for, nonnegative_messages, with_relu_outputs
from attacks.sdar import _apply, _module, reconstruct

BANDWIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)


def mk_mmd(a, b):
    """Unbiased squared MMD of samples a, b: (n, ...) with a sum of Gaussian kernels
    (`BANDWIDTHS` times the batch's mean squared distance, detached)."""
    n = a.shape[0]
    f = jnp.concatenate([a.reshape(n, -1), b.reshape(n, -1)])
    sq = jnp.sum(f**2, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0.0)
    scale = jax.lax.stop_gradient(jnp.sum(d2) / (4 * n * n - 2 * n))
    kernel = sum(jnp.exp(-d2 / (2 * w * scale + 1e-12)) for w in BANDWIDTHS)
    off = 1.0 - jnp.eye(n)
    within = (jnp.sum(kernel[:n, :n] * off) + jnp.sum(kernel[n:, n:] * off)) / (n * (n - 1))
    return within - 2 * jnp.mean(kernel[:n, n:])


def gradient_penalty(critic, p, real, fake, key):
    """WGAN-GP: mean over samples of (||grad D(e real + (1 - e) fake)|| - 1)^2, e ~ U(0, 1)."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    mix = eps * real + (1 - eps) * fake
    grads = jax.grad(lambda m: jnp.sum(critic(p, m)))(mix)
    return jnp.mean((jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1) + 1e-12) - 1.0) ** 2)


def fora(x_aux, z_observed, z_target, *, steps: int = 3000, batch_size: int = 64, lr: float = 1e-3,
         decoder_lr: float = 1e-3, critic_lr: float = 3e-4, mmd_weight: float = 0.8, gp_weight: float = 1000.0,
         seed: int = 0, map_models=vmap_models, place=None) -> list[dict]:
    """FORA against K clients; one output per client.

    Args:
      x_aux: (n_a, ...) unlabelled auxiliary inputs the clients never trained on.
      z_observed: (K, n_o, ...) the messages each client sent in training.
      z_target: (K, n_t, ...) messages to invert.
      steps, batch_size: attack steps and the batch of each stream.
      lr, decoder_lr, critic_lr: Adam learning rates of the substitute, the inverse network, the critic.
      mmd_weight, gp_weight: `a` and the gradient penalty's weight (the code's run.sh: 0.8, 1000).

    Returns:
      [{"x_hat": (n_t, *x_shape), "mmd": the last logged MK-MMD, "steps_run"}] * K.
    """
    x_aux = jnp.asarray(x_aux, jnp.float32)
    z_obs = jnp.asarray(z_observed, jnp.float32)
    k = z_obs.shape[0]
    x_shape, z_shape = tuple(x_aux.shape[1:]), tuple(z_obs.shape[2:])
    gs, ps = _module(lambda i: SubstituteClient(x_shape, z_shape, rngs=rngs_for(i + 61)), k, seed)
    ps = with_relu_outputs(ps, nonnegative_messages(z_observed))  # each substitute: ReLU output where its z >= 0
    gc, pc = _module(lambda i: Discriminator(z_shape, rate=0.0, rngs=rngs_for(i + 67)), k, seed)
    gd, pd = _module(lambda i: decoder_for(z_shape, x_shape, None, i + 71), k, seed)
    sub, critic, dec = _apply(gs), _apply(gc), _apply(gd)
    opts = {"sub": optax.adam(lr), "critic": optax.adam(critic_lr), "dec": optax.adam(decoder_lr)}
    nets = {"sub": ps, "critic": pc, "dec": pd}
    states = {n: jax.jit(jax.vmap(opts[n].init))(p) for n, p in nets.items()}
    if place is not None:
        nets, states, z_obs = place(nets), place(states), place(z_obs)

    def update(name, nets, states, grads):
        updates, state = opts[name].update(grads, states[name], nets[name])
        return optax.apply_updates(nets[name], updates), state

    def one(nets, states, xa, z, key):
        new, new_states = dict(nets), dict(states)

        def sub_loss(p):
            za = sub(p, xa)
            mmd = mk_mmd(z, za)
            return (1 - mmd_weight) * jnp.mean(critic(nets["critic"], za)) + mmd_weight * mmd, (za, mmd)

        (_, (za, mmd)), g = jax.value_and_grad(sub_loss, has_aux=True)(nets["sub"])
        new["sub"], new_states["sub"] = update("sub", nets, states, g)
        za_new = jax.lax.stop_gradient(sub(new["sub"], xa))
        mse, g = jax.value_and_grad(lambda p: jnp.mean((dec(p, za_new) - xa) ** 2))(nets["dec"])
        new["dec"], new_states["dec"] = update("dec", nets, states, g)
        za = jax.lax.stop_gradient(za)

        def critic_loss(p):
            return (jnp.mean(critic(p, z)) - jnp.mean(critic(p, za))
                    + gp_weight * gradient_penalty(critic, p, z, za, key))

        new["critic"], new_states["critic"] = update("critic", nets, states, jax.grad(critic_loss)(nets["critic"]))
        return new, new_states, jnp.stack([mmd, mse])

    step = jax.jit(map_models(one, (0, 0, None, 0, None)), donate_argnums=(0, 1))
    rng = np.random.default_rng([seed, 4])
    key = jax.random.key(seed)
    batch = min(batch_size, len(x_aux), z_obs.shape[1])
    stats = None
    for i in progress.steps(steps, "FORA"):
        ia = jnp.asarray(rng.choice(len(x_aux), batch, replace=False))
        io = jnp.asarray(rng.choice(z_obs.shape[1], batch, replace=False))
        nets, states, stats = step(nets, states, x_aux[ia], z_obs[:, io], jax.random.fold_in(key, i))
    x_hat = reconstruct((dec, nets["dec"]), z_target, map_models=map_models)
    stats = np.full((k, 2), np.nan) if stats is None else np.asarray(stats)
    return [{"x_hat": x_hat[j], "mmd": float(stats[j, 0]), "decoder_mse": float(stats[j, 1]), "steps_run": steps}
            for j in range(k)]
