"""The audit guide's example (docs/guide/audit.md), end to end: three digits models trained
as another framework's would be, their activations saved with numpy.savez, then audited.

    python bench/audit_example.py [--out docs/results/audit]

1. `nopeek train --dataset digits --alpha A --epochs 30 --cut 1` for A = 0, 1, 5 (mlp, seed 0);
2. for each model, with `numpy.savez` as a PyTorch or TensorFlow user would: the attacker's
   leaked pairs `leaked_alphaA.npz` (x, z, y of the 10% of training images `nopeek attack`
   leaks, the attack seed 0) and the held-out activations `alphaA.npz` (x, z, y of the test
   images, and the model's test accuracy);
3. `nopeek audit --pairs leaked_alpha0.npz leaked_alpha1.npz leaked_alpha5.npz --targets
   alpha0.npz alpha1.npz alpha5.npz --out audit` (the guide's second command).

Writes the audit's folder to OUT (scores.json, report.md, the reconstructions of each
target, tradeoff.png; the guide shows reconstructions_alpha5.png) and OUT/run.json (this
script's command and wall time; the audit's own time as `audit_seconds`). The models and
arrays live in a temporary folder, whose name is taken out of scores.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._host import docs_results, host_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALPHAS = (0, 1, 5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "audit"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    import numpy as np

    from nopeek import data
    from nopeek.attacking import AttackConfig, attacker_indices
    from nopeek.cli import main as nopeek
    from nopeek.training import load

    results = docs_results()
    print(host_line())
    before, t0 = results.load(), time.perf_counter()
    leak_config = AttackConfig()  # what `nopeek attack` leaks by default: 10% of the training set, seed 0
    with tempfile.TemporaryDirectory(prefix="nopeek-audit-example-") as tmp:
        pairs, targets = [], []
        for alpha in ALPHAS:
            run = os.path.join(tmp, f"run_alpha{alpha}")
            assert nopeek(["train", "--dataset", "digits", "--alpha", str(alpha), "--epochs", str(args.epochs),
                           "--cut", "1", "--out", run, "--quiet"]) == 0
            with open(os.path.join(run, "metrics.json"), encoding="utf-8") as fh:
                accuracy = json.load(fh)["test_accuracy"]
            trained = load(run)
            ds = data.load("digits", seed=trained.config.split_seed)
            leak = attacker_indices(ds.y_train, leak_fraction=leak_config.leak_fraction,
                                    leak_count=leak_config.leak_count, aux_classes=leak_config.aux_classes,
                                    seed=leak_config.attack_seed)
            # what another framework would save: plain arrays, nothing of nopeek's
            pairs.append(os.path.join(tmp, f"leaked_alpha{alpha}.npz"))
            np.savez(pairs[-1], x=ds.x_train[leak], z=np.asarray(trained.sent(None, ds.x_train[leak])),
                     y=ds.y_train[leak])
            targets.append(os.path.join(tmp, f"alpha{alpha}.npz"))
            np.savez(targets[-1], x=ds.x_test, z=np.asarray(trained.sent(None, ds.x_test)), y=ds.y_test,
                     accuracy=accuracy)
            print(f"alpha {alpha}: test accuracy {accuracy:.3f}, {len(leak)} leaked pairs, {len(ds.x_test)} held out",
                  flush=True)
        audit = os.path.join(tmp, "audit")
        t_audit = time.perf_counter()
        assert nopeek(["audit", "--pairs", *pairs, "--targets", *targets, "--out", audit, "--quiet"]) == 0
        audit_seconds = time.perf_counter() - t_audit
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(audit, args.out)
        for name in ("scores.json", "report.md"):  # the temporary folder's name out of the files
            path = os.path.join(args.out, name)
            with open(path, encoding="utf-8") as fh:
                text = fh.read().replace(tmp + os.sep, "")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
    seconds = time.perf_counter() - t0
    out = os.path.relpath(os.path.abspath(args.out), ROOT)
    command = "python bench/audit_example.py" + ("" if out == os.path.join("docs", "results", "audit") else f" --out {out}")
    if args.epochs != 30:
        command += f" --epochs {args.epochs}"
    results.write_run(args.out, command, seconds, before, audit_seconds=round(audit_seconds, 1))
    print(open(os.path.join(args.out, "report.md"), encoding="utf-8").read())
    print(f"{seconds:.0f} s (the audit {audit_seconds:.0f} s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
