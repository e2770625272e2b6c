"""The resnets' GroupNorm (nopeek/protocol/_norm.py, statistics summed per channel first)
against flax's `nnx.GroupNorm`.

    python bench/group_norm.py [--part alone|step|all] [--rounds 5]

- alone: one GroupNorm, forward and forward + backward (the input's and the parameters'
  gradients of a sum of tanh), at the resnet's shapes on mnist5k's 28x28 images, batch 64
  and 256; median ms of 30 jitted calls, flax's and nopeek's.
- step: the median step of the loop `nopeek train --dataset mnist5k --model resnet --cut 2
  --alpha 1` runs (`bench.process.loop_step_ms`), with flax's GroupNorm call (patched in, in
  the child process) and with nopeek's, each in its own process, alternating round by round;
  the median of the rounds' medians, their range, and the speed-up.

The host is printed first: the gain depends on the CPU and on XLA's reductions there.
"""

from __future__ import annotations

import argparse
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
from flax import nnx  # noqa: E402

from nopeek.protocol._norm import GroupNorm  # noqa: E402

# (batch, H, channels): the resnet's norms at 28x28 (stem, stage1), 14x14 (stage2), 7x7 (stage3)
SHAPES = ((64, 28, 16), (64, 14, 32), (64, 7, 64), (256, 28, 16), (256, 14, 32), (256, 7, 64))


def alone_part() -> None:
    print("\n## One GroupNorm (groups min(8, C)), median ms of 30 calls")
    print("| batch, H x W, channels | flax forward | nopeek forward | flax forward + backward | "
          "nopeek forward + backward | speed-up (forward + backward) |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch, h, c in SHAPES:
        x = jnp.asarray(rng.normal(size=(batch, h, h, c)), jnp.float32)
        cells = []
        for cls in (nnx.GroupNorm, GroupNorm):
            graph, params = nnx.split(cls(c, num_groups=min(8, c), rngs=nnx.Rngs(0)))
            forward = jax.jit(lambda p, x, graph=graph: nnx.merge(graph, p)(x))
            gradient = jax.jit(jax.grad(lambda p, x, graph=graph: jnp.sum(jnp.tanh(nnx.merge(graph, p)(x))),
                                        argnums=(0, 1)))
            cells.append((median_ms(forward, params, x, calls=30), median_ms(gradient, params, x, calls=30)))
        (f_flax, g_flax), (f_ours, g_ours) = cells
        print(f"| {batch}, {h}x{h}, {c} | {f_flax:.2f} | {f_ours:.2f} | {g_flax:.2f} | {g_ours:.2f} | "
              f"{g_flax / g_ours:.2f}x |", flush=True)


def step_part(rounds: int) -> None:
    print(f"\n## The loop's step (resnet, cut 2), flax's GroupNorm call against nopeek's (each in its own "
          f"process, {rounds} alternating rounds; median ms, range)")
    print("| batch | flax's GroupNorm | nopeek's | speed-up |")
    print("|---|---|---|---|")
    code = ("import sys, json; sys.path.insert(0, %r); import nopeek\n"
            "if sys.argv[2] == 'flax':\n"
            "    from flax import nnx; from nopeek.protocol import _norm\n"
            "    _norm.GroupNorm.__call__ = nnx.GroupNorm.__call__\n"
            "from bench.process import loop_step_ms\n"
            "print(json.dumps(loop_step_ms(int(sys.argv[1]), model='resnet', cut=2)['step_ms']))" % ROOT)
    for batch in (64, 256):
        times = alternating_rounds(code, {key: ([str(batch), key], None) for key in ("flax", "nopeek")}, rounds, ROOT)
        cells = [median_and_range(t) for t in times.values()]
        ratio = statistics.median(times["flax"]) / statistics.median(times["nopeek"])
        print(f"| {batch} | {cells[0]} | {cells[1]} | {ratio:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("alone", "step", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    print(host_line())
    if args.part in ("alone", "all"):
        alone_part()
    if args.part in ("step", "all"):
        step_part(args.rounds)


if __name__ == "__main__":
    main()
