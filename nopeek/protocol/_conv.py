"""Convolutions whose kernel gradient is summed over slices of the batch, for flax's `nnx.Conv`.

XLA:CPU computes a convolution's kernel gradient as one more convolution over the whole
batch: the activations and the output gradient are transposed so that the batch becomes the
contracted feature axis, and the window is the size of the image. On a 2-core AVX-512/AMX
Xeon the kernel gradient of the cnn's 16-to-32 convolution took 6.2 times as long at batch
256 as at batch 64 (36.8 against 5.9 ms), and 20.7 ms at 256 as the sum over slices of 32
(`python bench/conv_slices.py --part kernel`; the resnet's convolutions, strided and 1x1
included, in `--part resnet`; bench/README, "kernel gradients by slices of the batch").

So `conv_general_dilated` here is a drop-in for `jax.lax.conv_general_dilated` that, on the
CPU, defines its derivative (a `jax.custom_jvp`) with the kernel's part written slice by
slice: the tangent is conv(dx, kernel) plus the concatenation over slices of the batch of
conv(x_slice, dkernel). Forward mode works as for any convolution; reverse mode transposes
that into the input gradient, computed whole, and the sum of the slices' kernel gradients,
unrolled into straight-line code (XLA:CPU runs convolutions inside loops many times slower,
see `_stacking.py`). The values are those of the plain convolution's gradient up to float32
round-off (the sum is ordered differently). `conv_layer` builds flax's `nnx.Conv` with it:
the parameters, their names and flax's call are unchanged.

`NOPEEK_CONV_SLICE` sets the slice (samples; default 32; `0` computes the kernel gradient
whole, as XLA does). It is read when a function is traced: a change later in the same
process does not reach functions jax has already traced. Only float32 and float64 are
sliced (a sum of bfloat16 slices would round more than XLA's whole gradient), only without
batch groups or an output sharding, and only on the CPU: accelerators always get the plain
convolution (not measured there).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_derivatives import SymbolicZero

from nopeek.core import env_count

#: Samples per slice of the kernel gradient on the CPU (NOPEEK_CONV_SLICE overrides; 0: whole).
DEFAULT_SLICE = 32
#: At most this many slices: a larger batch gets larger slices, so a program stays small.
MAX_SLICES = 32
#: The dtypes whose kernel gradient is sliced.
SLICED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def kernel_gradient_slice(batch: int, dtype=jnp.float32) -> int:
    """Samples per slice for a batch of `batch` in `dtype` on this backend; 0: the kernel
    gradient whole (not the CPU, not float32/float64, slicing off, or batch <= the slice)."""
    if not _on_cpu() or jnp.dtype(dtype) not in SLICED_DTYPES:
        return 0
    size = env_count("NOPEEK_CONV_SLICE", DEFAULT_SLICE, "0 turns slicing off")
    if size == 0 or batch <= size:
        return 0
    return max(size, -(-batch // MAX_SLICES))


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Everything of a `lax.conv_general_dilated` call but its two operands (hashable)."""

    window_strides: tuple
    padding: Any  # a string or a tuple of (low, high) pairs
    lhs_dilation: Any
    rhs_dilation: Any
    dimension_numbers: jax.lax.ConvDimensionNumbers
    feature_group_count: int
    precision: Any
    preferred_element_type: Any

    def conv(self, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(
            lhs, rhs, self.window_strides, self.padding, self.lhs_dilation, self.rhs_dilation,
            self.dimension_numbers, self.feature_group_count, precision=self.precision,
            preferred_element_type=self.preferred_element_type)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _sliced(lhs: jax.Array, rhs: jax.Array, settings: _Settings, size: int) -> jax.Array:
    return settings.conv(lhs, rhs)


def _sliced_jvp(settings, size, primals, tangents):
    lhs, rhs = primals
    d_lhs, d_rhs = tangents
    # jax calls this with at least one tangent that is not a symbolic zero
    parts = []
    if not isinstance(d_lhs, SymbolicZero):
        parts.append(settings.conv(d_lhs, rhs))
    if not isinstance(d_rhs, SymbolicZero):
        lhs_batch, out_batch = settings.dimension_numbers.lhs_spec[0], settings.dimension_numbers.out_spec[0]
        n = lhs.shape[lhs_batch]
        parts.append(jnp.concatenate(
            [settings.conv(jax.lax.slice_in_dim(lhs, i, min(i + size, n), axis=lhs_batch), d_rhs)
             for i in range(0, n, size)], axis=out_batch))
    return settings.conv(lhs, rhs), sum(parts[1:], parts[0])


_sliced.defjvp(_sliced_jvp, symbolic_zeros=True)


def _hashable(value):
    """Plain lists and tuples (of them) as tuples, so that the settings compare and hash as
    values; anything else, named tuples such as `lax.DotAlgorithm` included, as given."""
    if type(value) in (list, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None, preferred_element_type=None,
                         out_sharding=None) -> jax.Array:
    """`jax.lax.conv_general_dilated` (same arguments, values and shapes), with the kernel's
    derivative taken by slices of the batch on the CPU, in float32 or float64, when the batch
    is above the slice (`kernel_gradient_slice`). E.g. lhs (n, H, W, c_in) and rhs
    (kh, kw, c_in, c_out) with dimension numbers ("NHWC", "HWIO", "NHWC") give
    (n, H', W', c_out). Batch groups or an output sharding get the plain convolution."""
    plain = functools.partial(
        jax.lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
    if batch_group_count != 1 or out_sharding is not None:
        return plain(out_sharding=out_sharding)
    numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    size = kernel_gradient_slice(lhs.shape[numbers.lhs_spec[0]], jnp.result_type(lhs, rhs))
    if not size:
        return plain()
    settings = _Settings(_hashable(window_strides), _hashable(padding), _hashable(lhs_dilation),
                         _hashable(rhs_dilation), numbers, feature_group_count, _hashable(precision),
                         preferred_element_type)
    return _sliced(lhs, rhs, settings, size)


def conv_layer(in_features: int, out_features: int, kernel_size, strides=1, **kwargs) -> nnx.Conv:
    """flax's `nnx.Conv` (same arguments, parameters and call; channels last, e.g.
    (n, H, W, in_features) -> (n, H', W', out_features)) computing with `conv_general_dilated`,
    so that its kernel gradient on the CPU is summed over slices of the batch."""
    return nnx.Conv(in_features, out_features, kernel_size, strides, conv_general_dilated=conv_general_dilated,
                    **kwargs)
