"""GroupNorm with its statistics taken per channel first: flax's `nnx.GroupNorm`, faster on the CPU.

flax's `nnx.GroupNorm` reshapes (n, H, W, C) to (n, H, W, groups, C/groups) and reduces over
(H, W, C/groups) at once. On a 2-core AVX-512/AMX Xeon, XLA:CPU ran that, forward and
backward, in 2.93 ms for (64, 28, 28, 16) in 8 groups and 10.84 ms at batch 256; summing each
channel over (H, W) first (channels kept) and then the channels of a group took 1.66 and
5.34 ms (`python bench/group_norm.py --part alone`; bench/README, "The resnets' GroupNorm",
with the resnet's step before and after).

`GroupNorm` is `nnx.GroupNorm` (same arguments, parameters `scale` and `bias`, and values to
float32 round-off) whose call takes that route for float32/float64 inputs of rank 3 or more
with the default reduction axes, no mask, no `axis_name`, no `dtype` other than the input's
and the fast variance
(E[x^2] - E[x]^2, clamped at 0, flax's default), on the CPU. Anything else, and every
accelerator (not measured there), goes to flax's own call.

`NOPEEK_GROUP_NORM=flax` sends every call to flax's own (its numbers exactly, e.g. to compare
with a model built on `nnx.GroupNorm`); `channels`, the default, takes the route above. Like
`NOPEEK_CONV_SLICE`, it is read when a function is traced: a change later in the same process
does not reach functions jax has already traced.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
from flax import nnx

from nopeek.errors import ConfigError

_FAST_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))
#: NOPEEK_GROUP_NORM's values: the per-channel route (default) or flax's own call throughout.
ROUTES = ("channels", "flax")


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def route() -> str:
    """NOPEEK_GROUP_NORM, checked: "channels" (the default) or "flax"."""
    raw = os.environ.get("NOPEEK_GROUP_NORM", "").strip().lower() or ROUTES[0]
    if raw not in ROUTES:
        raise ConfigError(f"NOPEEK_GROUP_NORM must be one of {', '.join(ROUTES)} (flax: flax's own GroupNorm), "
                          f"got {os.environ['NOPEEK_GROUP_NORM']!r}")
    return raw


class GroupNorm(nnx.GroupNorm):
    """flax's `nnx.GroupNorm`: (n, *spatial, C) -> the same shape, each sample's channels
    normalised in `num_groups` groups over the spatial axes, then scaled and shifted per
    channel; the statistics are summed per channel first (see the module's docstring)."""

    def _fast_path(self, x: jax.Array, mask) -> bool:
        return (route() == "channels" and _on_cpu() and mask is None and self.reduction_axes is None and self.axis_name is None and self.use_fast_variance
                and x.ndim >= 3 and jnp.dtype(x.dtype) in _FAST_DTYPES
                and (self.dtype is None or jnp.dtype(self.dtype) == jnp.dtype(x.dtype)))

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        if not self._fast_path(x, mask):
            return super().__call__(x, mask=mask)
        scale = self.scale[...] if self.scale else None
        bias = self.bias[...] if self.bias else None
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        n, channels = x.shape[0], x.shape[-1]
        spatial = tuple(range(1, x.ndim - 1))
        count = math.prod(x.shape[1:-1]) * self.group_size
        # per channel over the spatial axes, then per group: (n, C) -> (n, groups)
        sums = jnp.sum(x, axis=spatial).reshape(n, self.num_groups, self.group_size).sum(-1)
        squares = jnp.sum(x * x, axis=spatial).reshape(n, self.num_groups, self.group_size).sum(-1)
        mean = sums / count
        var = jnp.maximum(squares / count - mean * mean, 0.0)
        inverse = jax.lax.rsqrt(var + self.epsilon)
        # back to channels, (n, C), then one multiply-add on x
        mean, inverse = (jnp.repeat(v, self.group_size, axis=1) for v in (mean, inverse))
        multiplier = inverse if scale is None else inverse * scale[None, :]
        shift = -mean * multiplier if bias is None else bias[None, :] - mean * multiplier
        broadcast = (n,) + (1,) * len(spatial) + (channels,)
        return x * multiplier.reshape(broadcast) + shift.reshape(broadcast)
