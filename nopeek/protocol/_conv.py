"""A 'SAME', stride-1 2-D convolution whose kernel gradient is summed over slices of the batch.

XLA:CPU computes a convolution's kernel gradient as one more convolution over the whole
batch: the activations and the output gradient are transposed so that the batch becomes the
contracted feature axis, and the window is the size of the image. On a 2-core AVX-512/AMX
Xeon that costs about twice as much per sample at batch 256 as at batch 32 (the transposed
operands no longer fit in cache): the kernel gradient of the cnn's 16-to-32 convolution took
41 ms at batch 256, and 21 ms as the sum of the kernel gradients of slices of 16 samples.
So on the CPU, `conv_same`'s backward pass computes the input gradient whole and the kernel
gradient slice by slice (unrolled into straight-line code: XLA:CPU runs convolutions inside
loops many times slower, see `_stacking.py`), and adds the slices' kernel gradients. The
values are those of the plain convolution's gradient up to float32 round-off (the sum is
ordered differently). Measured on the whole training step in bench/README ("Kernel
gradients by slices of the batch").

`NOPEEK_CONV_SLICE` sets the slice (samples; default 32; `0` computes the kernel gradient
whole, as XLA does). Read when a program is traced. Accelerators always get the plain
convolution: their libraries' kernel gradients do not have this problem (not measured).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

#: Samples per slice of the kernel gradient on the CPU (NOPEEK_CONV_SLICE overrides; 0: whole).
DEFAULT_SLICE = 32
#: At most this many slices: a larger batch gets larger slices, so a program stays small.
MAX_SLICES = 32

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSIONS)


def kernel_gradient_slice(batch: int) -> int:
    """Samples per slice for a batch of `batch` on this backend; 0: compute the kernel gradient whole."""
    if jax.default_backend() != "cpu":
        return 0
    raw = os.environ.get("NOPEEK_CONV_SLICE", "").strip()
    try:
        size = int(raw) if raw else DEFAULT_SLICE
    except ValueError:
        raise ValueError(f"NOPEEK_CONV_SLICE must be a whole number of samples (0 to turn slicing off), got {raw!r}") from None
    if size < 0:
        raise ValueError(f"NOPEEK_CONV_SLICE must be >= 0, got {size}")
    if size == 0 or batch <= size:
        return 0
    return max(size, -(-batch // MAX_SLICES))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _sliced(x: jax.Array, kernel: jax.Array, size: int) -> jax.Array:
    return _conv(x, kernel)


def _sliced_forward(x, kernel, size):
    return _conv(x, kernel), (x, kernel)


def _sliced_backward(size, residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda x: _conv(x, kernel), x)[1](g)[0]
    dkernel = None
    for start in range(0, x.shape[0], size):
        part = jax.vjp(lambda k: _conv(x[start:start + size], k), kernel)[1](g[start:start + size])[0]
        dkernel = part if dkernel is None else dkernel + part
    return dx, dkernel


_sliced.defvjp(_sliced_forward, _sliced_backward)


def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(n, H, W, c_in) x (kh, kw, c_in, c_out) -> (n, H, W, c_out): stride 1, 'SAME' padding.

    Both operands are promoted to their common dtype (as flax's `nnx.Conv` does). On the CPU
    with n above the slice (`kernel_gradient_slice`), the kernel gradient is summed over
    slices of the batch; forward values are the plain convolution's either way.
    """
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"conv_same: x (n, H, W, c_in) and kernel (kh, kw, c_in, c_out), got {x.shape} and {kernel.shape}")
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    size = kernel_gradient_slice(x.shape[0])
    return _sliced(x, kernel, size) if size else _conv(x, kernel)
