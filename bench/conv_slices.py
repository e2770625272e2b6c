"""Convolutions' kernel gradients by slices of the batch (nopeek/protocol/_conv.py) against
XLA's whole-batch ones, and the alternatives that were tried.

    python bench/conv_slices.py [--part kernel|step|alternatives|resnet|all] [--rounds 5] [--sizes 8,16,32]

- kernel: the kernel gradient of the cnn's 16-to-32 3x3 convolution (28x28 images) alone,
  at batch 64 and 256: XLA's (one convolution over the whole batch) against the sum over
  slices of 8, 16, 32 and 64 samples; median ms of 20 jitted calls.
- step: the median step of the loop `nopeek train` runs (`bench.process.loop_step_ms`, the
  mnist5k cnn job) with `NOPEEK_CONV_SLICE=0` (XLA's kernel gradient) and with each slice of
  `--sizes` (default: nopeek's default slice), each in its own process, alternating round by round; the median of the
  rounds' medians, their range, and the speed-up. PyTorch's step is `bench/process.py
  --part step`.
- alternatives: a stand-alone copy of the cnn's step at batch 256 (the same layers, NoPeek's
  dCor on the cut by `metrics.distance_correlation`, plain SGD) with the kernel gradient
  computed as XLA's, by nopeek's `conv_general_dilated` (slices of 32), as nine offset matmuls (whole batch; unrolled slices of 16 and 32; a
  `lax.scan` over slices of 8, 16, 32), and the client's layers in a `lax.map` over slices of
  64; median ms of 20 steps.
- resnet: the kernel gradients of the resnet's convolutions (3x3 and 1x1, strided or not, at
  mnist5k's 28x28) alone, whole against slices of 16, 32 and 64; then the step part for
  `--model resnet --cut 2` (the same job otherwise).

The host is printed first: the gain depends on the CPU's caches and XLA's convolution path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._host import host_line  # noqa: E402  (imports nopeek first: its XLA flags apply)
from bench._timing import alternating_rounds, median_and_range, median_ms  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import metrics  # noqa: E402
from nopeek.protocol import _conv  # noqa: E402

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _plain(x, kernel, stride: int = 1):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=DIMENSIONS)


def _sliced(x, kernel):
    """nopeek's drop-in, as the models call it (stride 1, 'SAME')."""
    return _conv.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DIMENSIONS)


def _kernel_gradient(x, g, kernel, size: int, stride: int = 1):
    """d(sum(conv(x, kernel) * g))/d kernel, whole (size 0) or summed over slices of `size`."""
    if not size:
        return jax.vjp(lambda k: _plain(x, k, stride), kernel)[1](g)[0]
    return sum(jax.vjp(lambda k: _plain(x[i:i + size], k, stride), kernel)[1](g[i:i + size])[0]
               for i in range(0, x.shape[0], size))


def kernel_part() -> None:
    print("\n## The kernel gradient of the cnn's 16-to-32 convolution alone (median ms of 20 calls)")
    sizes = (0, 8, 16, 32, 64)
    print("| batch | " + " | ".join("whole (XLA)" if s == 0 else f"slices of {s}" for s in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 32)) / 12, jnp.float32)
    for batch in (64, 256):
        x = jnp.asarray(rng.normal(size=(batch, 28, 28, 16)), jnp.float32)
        g = jnp.asarray(rng.normal(size=(batch, 28, 28, 32)), jnp.float32)
        cells = []
        for size in sizes:
            if size >= batch:
                cells.append("-")
                continue
            fn = jax.jit(lambda x, g, k, size=size: _kernel_gradient(x, g, k, size))
            cells.append(f"{median_ms(fn, x, g, kernel):.2f}")
        print(f"| {batch} | " + " | ".join(cells) + " |", flush=True)


# The resnet's convolutions on 28x28 mnist5k images: (H, c_in, c_out, kernel, stride).
RESNET_CONVS = ((28, 1, 16, 3, 1), (28, 16, 16, 3, 1), (28, 16, 32, 3, 2), (14, 32, 32, 3, 1),
                (28, 16, 32, 1, 2), (14, 32, 64, 3, 2), (7, 64, 64, 3, 1), (14, 32, 64, 1, 2))


def resnet_kernel_part() -> None:
    print("\n## The kernel gradients of the resnet's convolutions (mnist5k's 28x28 images) alone "
          "(median ms of 20 calls)")
    sizes = (0, 16, 32, 64)
    print("| batch | input H, channels, kernel, stride | "
          + " | ".join("whole (XLA)" if s == 0 else f"slices of {s}" for s in sizes) + " |")
    print("|---" * (len(sizes) + 2) + "|")
    rng = np.random.default_rng(0)
    for batch in (64, 256):
        for h, c_in, c_out, k, stride in RESNET_CONVS:
            x = jnp.asarray(rng.normal(size=(batch, h, h, c_in)), jnp.float32)
            kernel = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)) / (k * np.sqrt(c_in)), jnp.float32)
            g = jnp.asarray(rng.normal(size=_plain(x, kernel, stride).shape), jnp.float32)
            cells = []
            for size in sizes:
                if size >= batch:
                    cells.append("-")
                    continue
                fn = jax.jit(lambda x, g, kernel, size=size, stride=stride: _kernel_gradient(x, g, kernel, size, stride))
                cells.append(f"{median_ms(fn, x, g, kernel):.2f}")
            print(f"| {batch} | {h}x{h}, {c_in} to {c_out}, {k}x{k}, {stride} | " + " | ".join(cells) + " |", flush=True)


def step_part(rounds: int, sizes: tuple[int, ...] = (), model: str = "cnn", cut: int = 4) -> None:
    sizes = sizes or (_conv.DEFAULT_SLICE,)
    print(f"\n## The loop's step ({model}, cut {cut}), XLA's kernel gradient (NOPEEK_CONV_SLICE=0) against slices of "
          f"{', '.join(map(str, sizes))} (each in its own process, {rounds} alternating rounds; median ms, range)")
    print("| batch | XLA's whole-batch kernel gradient | " + " | ".join(f"slices of {s}" for s in sizes) + " | "
          + " | ".join(f"speed-up ({s})" for s in sizes) + " |")
    print("|---" * (2 + 2 * len(sizes)) + "|")
    code = ("import sys, json; sys.path.insert(0, %r); import nopeek; from bench.process import loop_step_ms; "
            "print(json.dumps(loop_step_ms(int(sys.argv[1]), model=sys.argv[2], cut=int(sys.argv[3]))['step_ms']))"
            % ROOT)
    base = {k: v for k, v in os.environ.items() if k != "NOPEEK_CONV_SLICE"}
    variants = {size: dict(base, NOPEEK_CONV_SLICE=str(size)) for size in (0, *sizes)}
    for batch in (64, 256):
        argv = [str(batch), model, str(cut)]
        times = alternating_rounds(code, {size: (argv, env) for size, env in variants.items()}, rounds, ROOT)
        cells = [median_and_range(t) for t in times.values()]
        ratios = [f"{statistics.median(times[0]) / statistics.median(times[s]):.2f}x" for s in sizes]
        print(f"| {batch} | " + " | ".join(cells + ratios) + " |", flush=True)


def _nine_matmuls(x, g):
    """The kernel gradient as nine offset matmuls: (m, H, W, ci), (m, H, W, co) -> (3, 3, ci, co)."""
    m, h, w, co = g.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    flat = g.reshape(m * h * w, co)
    return jnp.stack([jnp.stack([jnp.einsum("pi,po->io", xp[:, a:a + h, b:b + w].reshape(m * h * w, -1), flat)
                                 for b in range(3)]) for a in range(3)])


def _variant_kernel_gradient(kind: str, size: int):
    def gradient(x, g, kernel):
        n = x.shape[0]
        if kind == "xla":
            return _kernel_gradient(x, g, kernel, 0)
        if kind == "matmuls":
            return _nine_matmuls(x, g)
        if kind == "matmuls, unrolled slices":
            return sum(_nine_matmuls(x[i:i + size], g[i:i + size]) for i in range(0, n, size))
        if kind == "matmuls, lax.scan over slices":
            xs, gs = x.reshape(n // size, size, *x.shape[1:]), g.reshape(n // size, size, *g.shape[1:])
            return jax.lax.scan(lambda total, pair: (total + _nine_matmuls(*pair), None),
                                jnp.zeros(kernel.shape, kernel.dtype), (xs, gs))[0]
        raise ValueError(kind)
    return gradient


def _conv_with(gradient):
    @jax.custom_vjp
    def conv(x, kernel):
        return _plain(x, kernel)

    def forward(x, kernel):
        return _plain(x, kernel), (x, kernel)

    def backward(residuals, g):
        x, kernel = residuals
        return jax.vjp(lambda x: _plain(x, kernel), x)[1](g)[0], gradient(x, g, kernel)

    conv.defvjp(forward, backward)
    return conv


def _standalone_step(conv, map_slices: int = 0):
    """One SGD step of the cnn (conv 16, conv 32, pool, fc 128 | fc 64, head) with NoPeek's dCor."""
    def client(p, x):
        h = jax.nn.relu(conv(x, p["c1"]) + p["b1"])
        h = jax.nn.relu(conv(h, p["c2"]) + p["b2"])
        n = h.shape[0]
        h = h.reshape(n, 14, 2, 14, 2, 32).max(axis=(2, 4))
        return jax.nn.relu(h.reshape(n, -1) @ p["f1"] + p["g1"])

    def loss(p, x, y):
        if map_slices:
            z = jax.lax.map(lambda part: client(p, part), x.reshape(-1, map_slices, *x.shape[1:]))
            z = z.reshape(x.shape[0], -1)
        else:
            z = client(p, x)
        logits = jax.nn.relu(z @ p["f2"] + p["g2"]) @ p["h"] + p["hb"]
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
        return ce + metrics.distance_correlation(x.reshape(x.shape[0], -1), z)

    @jax.jit
    def step(p, x, y):
        grads = jax.grad(loss)(p, x, y)
        return jax.tree.map(lambda w, d: w - 0.01 * d, p, grads)
    return step


def alternatives_part() -> None:
    print("\n## A stand-alone copy of the cnn's step at batch 256, the kernel gradient computed each way "
          "(median ms of 20 steps)")
    print("| kernel gradient | step (ms) |")
    print("|---|---|")
    rng = np.random.default_rng(0)
    shapes = {"c1": (3, 3, 1, 16), "b1": (16,), "c2": (3, 3, 16, 32), "b2": (32,), "f1": (14 * 14 * 32, 128),
              "g1": (128,), "f2": (128, 64), "g2": (64,), "h": (64, 10), "hb": (10,)}
    params = {k: jnp.zeros(s, jnp.float32) if len(s) == 1 else  # biases 0, weights scaled by their fan-in
              jnp.asarray(rng.normal(size=s) / np.sqrt(np.prod(s[:-1])), jnp.float32) for k, s in shapes.items()}
    x = jnp.asarray(rng.normal(size=(256, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 256), jnp.int32)
    variants = [("XLA's (whole batch)", "xla", 0), ("nine offset matmuls, whole batch", "matmuls", 0)]
    variants += [(f"nine offset matmuls, unrolled slices of {s}", "matmuls, unrolled slices", s) for s in (16, 32)]
    variants += [(f"nine offset matmuls, lax.scan over slices of {s}", "matmuls, lax.scan over slices", s)
                 for s in (8, 16, 32)]
    os.environ["NOPEEK_CONV_SLICE"] = str(_conv.DEFAULT_SLICE)  # read when the convolution is traced
    step = _standalone_step(_sliced)
    print(f"| nopeek's conv_general_dilated (slices of {_conv.DEFAULT_SLICE}) | {median_ms(step, params, x, y):.2f} |", flush=True)
    for label, kind, size in variants:
        step = _standalone_step(_conv_with(_variant_kernel_gradient(kind, size)))
        print(f"| {label} | {median_ms(step, params, x, y):.2f} |", flush=True)
    step = _standalone_step(_plain, map_slices=64)
    print(f"| XLA's, the client's layers in a lax.map over slices of 64 (median of 5) | "
          f"{median_ms(step, params, x, y, calls=5):.2f} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("kernel", "step", "alternatives", "resnet", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default=str(_conv.DEFAULT_SLICE),
                        help="step part: comma-separated slice sizes to time against XLA's whole gradient")
    args = parser.parse_args()
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes takes whole numbers separated by commas, got {args.sizes!r}")
    if any(s <= 0 for s in sizes):
        parser.error("--sizes: each slice must be > 0 (the whole gradient is always timed)")
    print(host_line())
    if args.part in ("kernel", "all"):
        kernel_part()
    if args.part in ("step", "all"):
        step_part(args.rounds, sizes)
    if args.part in ("alternatives", "all"):
        alternatives_part()
    if args.part in ("resnet", "all"):
        resnet_kernel_part()
        step_part(args.rounds, sizes, model="resnet", cut=2)
    print(json.dumps({"slice": _conv.DEFAULT_SLICE, "max_slices": _conv.MAX_SLICES}))


if __name__ == "__main__":
    main()
