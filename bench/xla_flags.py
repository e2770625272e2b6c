"""The loop's step under extra XLA CPU flags, on top of nopeek's own (`nopeek.core.XLA_DEFAULT_FLAGS`).

    python bench/xla_flags.py [--batch 256] [--rounds 3]

Each variant runs `bench.process.loop_step_ms(batch)` (the median step of `train_stack` on
the mnist5k job, a sync after each step) in its own process with `XLA_FLAGS` set, the
variants alternating round by round; prints the median of the rounds and their range. The
host first: flags that pay on one CPU may not on another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._host import host_line  # noqa: E402

VARIANTS = {
    "none (nopeek's defaults)": "",
    "--xla_cpu_enable_concurrency_optimized_scheduler=false": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "--xla_cpu_enable_concurrency_optimized_scheduler=true": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-dot,-eltwise,-reduce":
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-dot,-eltwise,-reduce",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(host_line())
    code = ("import sys, json; sys.path.insert(0, %r); from bench.process import loop_step_ms; "
            "print(json.dumps(loop_step_ms(%d)['step_ms']))" % (ROOT, args.batch))
    results: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.rounds):
        for name, flags in VARIANTS.items():
            env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
            if flags:
                env["XLA_FLAGS"] = flags  # nopeek adds its own defaults to these when imported
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                sys.exit(f"{name}: failed\n{out.stderr[-2000:]}")
            results[name].append(float(out.stdout.strip().splitlines()[-1]))
    print(f"\n## The loop's median step at batch {args.batch} (ms; median of {args.rounds} alternating rounds, range)")
    print("| flags added | median ms (range) |")
    print("|---|---|")
    for name, values in results.items():
        print(f"| `{name}` | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")


if __name__ == "__main__":
    main()
