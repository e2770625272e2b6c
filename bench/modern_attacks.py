"""Time each attack of 2023-25 on the default model, against the decoder attack in the same run.

Run:  python bench/modern_attacks.py [--cut 4] [--epochs 4] [--attacks decoder,adaptive,...]

The default sweep's model (bundled mnist5k, cnn with widths 8, 16, 64, 32, vanilla split
learning at `--cut`, 4 epochs, no defence) is trained once; then every attack runs against
it with its own defaults, one model (K = 1), as `nopeek attack` would run it: the attacker
holds 10% of the training set as leaked pairs, half of the held-out set as auxiliary data,
the messages of the training set as the server observed them, and the server's model. Each
attack is timed from its call to its outputs (compilation included), and its time per
step is its wall time over the steps it ran (the adaptive attackers stop early; their
leak-fraction curve and shadow client are steps too). Ratios are against the decoder,
measured in the same run. The CPU model and its vector extensions are printed first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402

import attacks  # noqa: E402
from nopeek import data  # noqa: E402
from nopeek.attacking import AttackConfig, architecture_of, attacker_indices, heldout_split, server_of  # noqa: E402
from nopeek.training import TrainConfig, TrainedRun, train_stack  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name and its vector extensions, from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "CPU model unknown (no /proc/cpuinfo)"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = [f for f in flags if f.startswith(("sse4", "avx", "fma", "amx"))]
    return f"CPU: {model}; vector extensions: {' '.join(vector) or 'none listed'}"


def inputs_for(cut: int, epochs: int) -> attacks.AttackInputs:
    ds = data.load("mnist5k")
    config = TrainConfig(dataset="mnist5k", model="cnn", widths=(8, 16, 64, 32), cuts=(cut,), epochs=epochs)
    t0 = time.perf_counter()
    result = train_stack(config, ds, progress=False)
    run = TrainedRun(config, result.built, result.model_params(0))
    print(f"trained the default model (cut {cut}, {epochs} epochs) in {time.perf_counter() - t0:.1f} s: "
          f"test accuracy {float(result.test_accuracy[0]):.3f}")
    entry = run.entry(None)
    leak = attacker_indices(ds.y_train, leak_fraction=0.1)
    aux, targets = heldout_split(len(ds.x_test), AttackConfig(), ["sdar"])
    inputs = attacks.AttackInputs(
        x_leak=ds.x_train[leak], z_leak=run.message(None, ds.x_train[leak])[None], y_leak=ds.y_train[leak],
        x_target=ds.x_test[targets], z_target=run.message(None, ds.x_test[targets])[None], y_target=ds.y_test[targets],
        x_aux=ds.x_test[aux], y_aux=ds.y_test[aux], x_train=ds.x_train, z_train=run.message(None, ds.x_train)[None],
        y_train=ds.y_train, architecture=architecture_of(run.built, config, entry, ds.input_shape),
        alphas=np.zeros(1, np.float32))
    for field, value in server_of(run.built, [run.params], entry).items():
        setattr(inputs, field, value)
    return inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--attacks", default="decoder,adaptive,adaptive_alpha,sdar,fora")
    args = parser.parse_args()
    print(cpu_model())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    inputs = inputs_for(args.cut, args.epochs)
    names = args.attacks.split(",")
    print("\n| attack | wall (s) | steps | ms/step | wall / decoder's | MSE | mean image | SSIM |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    for name in names:
        t0 = time.perf_counter()
        output = attacks.run(name, inputs)[0]
        wall = time.perf_counter() - t0
        scores = attacks.score(name, inputs, output)
        settings = attacks.settings(name)
        steps = int(output.get("steps_run", settings.get("steps", 0)) + output.get("curve_steps", 0)
                    + output.get("shadow_steps", 0))
        if name == "decoder":
            reference = wall
        ratio = f"{wall / reference:.2f}x" if reference else "-"
        print(f"| {name} | {wall:.1f} | {steps} | {1000 * wall / max(1, steps):.1f} | {ratio} | {scores['mse']:.4f} "
              f"| {scores['baseline_mse']:.4f} | {scores['ssim']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
