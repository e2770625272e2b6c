"""A 'SAME', stride-1 2-D convolution whose kernel gradient is summed over slices of the batch.

XLA:CPU computes a convolution's kernel gradient as one more convolution over the whole
batch: the activations and the output gradient are transposed so that the batch becomes the
contracted feature axis, and the window is the size of the image. On a 2-core AVX-512/AMX
Xeon the kernel gradient of the cnn's 16-to-32 convolution took 6.2 times as long at batch
256 as at batch 64 (36.8 against 5.9 ms), and 20.7 ms at 256 as the sum over slices of 32
(`python bench/conv_slices.py --part kernel`; bench/README, "kernel gradients by slices of
the batch"). So on the CPU `conv_same` defines its derivative (a `jax.custom_jvp`)
with the kernel's part written slice by slice: the tangent is conv(dx, kernel) plus the
concatenation over slices of conv(x_slice, dkernel). Forward mode works as for any
convolution; reverse mode transposes that into the input gradient, computed whole, and the
sum of the slices' kernel gradients, unrolled into straight-line code (XLA:CPU runs
convolutions inside loops many times slower, see `_stacking.py`). The values are those of
the plain convolution's gradient up to float32 round-off (the sum is ordered differently).

`NOPEEK_CONV_SLICE` sets the slice (samples; default 32; `0` computes the kernel gradient
whole, as XLA does). It is read when a function is traced: a change later in the same
process does not reach functions jax has already traced. Only float32 and float64 are
sliced (a sum of bfloat16 slices would round more than XLA's whole gradient), and only on
the CPU: accelerators always get the plain convolution (not measured there).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from nopeek.errors import ConfigError, ModelError

#: Samples per slice of the kernel gradient on the CPU (NOPEEK_CONV_SLICE overrides; 0: whole).
DEFAULT_SLICE = 32
#: At most this many slices: a larger batch gets larger slices, so a program stays small.
MAX_SLICES = 32
#: The dtypes whose kernel gradient is sliced.
SLICED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSIONS)


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def kernel_gradient_slice(batch: int, dtype=jnp.float32) -> int:
    """Samples per slice for a batch of `batch` in `dtype` on this backend; 0: the kernel
    gradient whole (not the CPU, not float32/float64, slicing off, or batch <= the slice)."""
    if not _on_cpu() or jnp.dtype(dtype) not in SLICED_DTYPES:
        return 0
    raw = os.environ.get("NOPEEK_CONV_SLICE", "").strip()
    try:
        size = int(raw) if raw else DEFAULT_SLICE
    except ValueError:
        raise ConfigError(f"NOPEEK_CONV_SLICE must be a whole number of samples (0 turns slicing off), got {raw!r}") from None
    if size < 0:
        raise ConfigError(f"NOPEEK_CONV_SLICE must be >= 0 (0 turns slicing off), got {size}")
    if size == 0 or batch <= size:
        return 0
    return max(size, -(-batch // MAX_SLICES))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _sliced(x: jax.Array, kernel: jax.Array, size: int) -> jax.Array:
    return _conv(x, kernel)


def _sliced_jvp(size, primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    # jax calls this with at least one tangent that is not a symbolic zero
    parts = []
    if not isinstance(dx, SymbolicZero):
        parts.append(_conv(dx, kernel))
    if not isinstance(dkernel, SymbolicZero):
        parts.append(jnp.concatenate([_conv(x[i:i + size], dkernel) for i in range(0, x.shape[0], size)]))
    return _conv(x, kernel), sum(parts[1:], parts[0])


_sliced.defjvp(_sliced_jvp, symbolic_zeros=True)


def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(n, H, W, c_in) x (kh, kw, c_in, c_out) -> (n, H, W, c_out): stride 1, 'SAME' padding.

    Both operands are promoted to their common dtype (as flax's `nnx.Conv` does). On the CPU,
    in float32 or float64, with n above the slice (`kernel_gradient_slice`), the kernel's
    derivative is taken by slices of the batch; the values are the plain convolution's.
    """
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ModelError(f"a convolution needs inputs (n, H, W, c_in) and a kernel (kh, kw, c_in, c_out), "
                         f"got {tuple(x.shape)} and {tuple(kernel.shape)}")
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    size = kernel_gradient_slice(x.shape[0], dtype)
    return _sliced(x, kernel, size) if size else _conv(x, kernel)
