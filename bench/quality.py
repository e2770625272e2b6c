"""The quality numbers the README quotes, printed by one script (fixed seeds, CPU).

Run:  python bench/quality.py     (~2 minutes on 2 cores)

- digits, mlp, cut 1, 30 epochs, adam 1e-3, batch 64: accuracy and held-out dCor at alpha 0 and 3;
- mnist5k, cnn, default cut, alpha 0, 5 epochs: accuracy;
- the decoder attack (10% leaked) on digits mlp cut 1 at alpha 0 and 20, beside the mean-image baseline;
- label leakage on breast cancer, vanilla split learning: norm and direction AUC;
- the seed configurations against vanilla on the same data (`--part topologies`): vertical
  (2 clients, breast cancer), multi_task (digits), multi_hop (digits mlp 128,64,32, cuts
  1,2), round_robin (4 clients, digits), each with its per-message held-out dCor.
The tests assert thresholds on the same settings; this prints the values.

Run:  python bench/quality.py [--part basics|topologies|all] [--out DIR]

With --out (and --part topologies): DIR/results.csv (one row per configuration: accuracy
at alpha 0 and 1, each task's accuracy, vanilla's on the same data), DIR/leakage.csv (the
held-out dCor of every message at alpha 0 and 1) and DIR/run.json, the files behind the
table of docs/guide/topologies.md (`--out docs/results/topologies`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import attacks  # noqa: E402
from bench._host import docs_results  # noqa: E402
from nopeek import data  # noqa: E402
from nopeek.training import TrainConfig  # noqa: E402
from nopeek.attacking import per_sample_gradients  # noqa: E402
from nopeek.training import TrainedRun  # noqa: E402
from nopeek.training import train_stack  # noqa: E402


def topologies(out=None):
    """The six configurations at alpha 0 and 1 (one stack each), the four of the
    configurations issue beside vanilla on the same data; with `out`, their rows written to
    out/results.csv and out/leakage.csv, and out/run.json."""
    results = docs_results()
    before, t0 = results.load(), time.perf_counter()
    table, leakage = [], []
    cases = [
        ("vanilla", "digits", {}, None),
        ("u_shaped --cuts 1,2", "digits", dict(topology="u_shaped", cuts=(1, 2)), None),
        ("vertical --clients 2", "breast_cancer", dict(topology="vertical", clients=2), {}),
        ("multi_task", "digits", dict(topology="multi_task"), {}),
        ("multi_hop --cuts 1,2 --widths 128,64,32", "digits", dict(topology="multi_hop", cuts=(1, 2), widths=(128, 64, 32)),
         dict(widths=(128, 64, 32))),
        ("round_robin --clients 4", "digits", dict(topology="round_robin", clients=4), {}),
    ]
    print("\n## The configurations (mlp, 30 epochs, adam 1e-3, batch 64); alpha 0 beside vanilla, then NoPeek alpha 1")
    print("| configuration | data | accuracy, alpha 0 | vanilla | difference (points) | accuracy, alpha 1 |")
    print("|---|---|---|---|---|---|")
    leak_tables = []
    for name, dataset, kw, vanilla_kw in cases:
        ds = data.load(dataset)
        r = train_stack(TrainConfig(dataset=dataset, **kw), ds, alphas=[0.0, 1.0], progress=False)
        acc = r.test_accuracy
        vacc = None
        if vanilla_kw is not None:
            vacc = float(train_stack(TrainConfig(dataset=dataset, **vanilla_kw), ds, progress=False).test_accuracy[0])
            versus = f"{vacc:.3f} | {100 * (acc[0] - vacc):+.1f}"
        else:
            versus = "- | -"
        table.append({"configuration": name, "dataset": dataset, "accuracy_alpha0": float(acc[0]),
                      "accuracy_alpha1": float(acc[1]), "vanilla_accuracy": "" if vacc is None else vacc,
                      "task_accuracies_alpha0": json.dumps({k: float(a[0]) for k, a in r.task_accuracy.items()})
                      if len(r.task_accuracy) > 1 else ""})
        leakage += [{"configuration": name, "party": p, "message": m, "dcor_alpha0": float(d[0]),
                     "dcor_alpha1": float(d[1]),
                     **{f"{reading}_alpha{a}": float(r.readings[(p, m)][reading][k])
                        for reading in ("dcor_null95", "dcor_u", "pdcor_label") for k, a in ((0, 0), (1, 1))},
                     "dcor_label": float(r.readings[(p, m)]["dcor_label"][0])}
                    for (p, m), d in r.leakage.items()]
        tasks = "" if len(r.task_accuracy) == 1 else " (" + ", ".join(
            f"{k} {float(a[0]):.3f}" for k, a in r.task_accuracy.items()) + ")"
        print(f"| {name} | {dataset} | {acc[0]:.3f}{tasks} | {versus} | {acc[1]:.3f} |", flush=True)
        rows = [f"| {p}:{m} | {float(d[0]):.3f} | {float(d[1]):.3f} |" for (p, m), d in r.leakage.items()]
        leak_tables.append((name, rows))
    for name, rows in leak_tables:
        print(f"\n### {name}: held-out dCor(x, m) of every message")
        print("| message | alpha 0 | alpha 1 |")
        print("|---|---|---|")
        print("\n".join(rows))
    if out:
        os.makedirs(out, exist_ok=True)
        for file, rows_ in (("results.csv", table), ("leakage.csv", leakage)):
            with open(os.path.join(out, file), "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows_[0]), lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows_)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        command = f"python bench/quality.py --part topologies --out {os.path.relpath(os.path.abspath(out), root)}"
        results.write_run(out, command, time.perf_counter() - t0, before)
        print(out)


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["basics", "topologies", "all"], default="all")
    parser.add_argument("--out", default=None, help="topologies: write results.csv, leakage.csv and run.json here")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    if args.part in ("basics", "all"):
        basics()
    if args.part in ("topologies", "all"):
        topologies(args.out)


def basics():
    digits = data.load("digits")
    r = train_stack(TrainConfig(epochs=30), digits, alphas=[0.0, 3.0], progress=False)
    print("\n## digits, mlp, cut 1, 30 epochs")
    for a, acc, d in zip((0, 3), r.test_accuracy, r.dcor):
        print(f"alpha {a}: test accuracy {acc:.3f}, held-out dCor {d:.3f}")

    mnist = data.load("mnist5k")
    r = train_stack(TrainConfig(dataset="mnist5k", model="cnn", epochs=5), mnist, progress=False)
    print(f"\n## mnist5k, cnn, default cut, alpha 0, 5 epochs: test accuracy {r.test_accuracy[0]:.3f}")

    r = train_stack(TrainConfig(epochs=30), digits, alphas=[0.0, 20.0], progress=False)
    x_leak = digits.x_train[: len(digits.x_train) // 10]
    runs = [TrainedRun(r.config, r.built, r.model_params(k)) for k in range(2)]
    z_leak = np.stack([run.message(None, x_leak) for run in runs])
    z_test = np.stack([run.message(None, digits.x_test) for run in runs])
    x_hat = attacks.fit_decoders(z_leak, x_leak, steps=1500, seed=0).reconstruct(z_test)
    clf = attacks.ReferenceClassifier(digits.x_train, digits.y_train)
    print("\n## decoder attack, digits mlp cut 1, 10% leaked, 1500 steps")
    for k, a in enumerate((0, 20)):
        s = attacks.scores_with_baseline(digits.x_test, x_hat[k], x_leak, classifier=clf, y=digits.y_test)
        print(f"alpha {a} (dCor {r.dcor[k]:.3f}): SSIM {s['ssim']:.3f} (baseline {s['baseline_ssim']:.3f}), "
              f"classifier on reconstructions {s['classifier_accuracy']:.3f} (baseline {s['baseline_classifier_accuracy']:.3f})")

    bc = data.load("breast_cancer")
    r = train_stack(TrainConfig(dataset="breast_cancer", epochs=10), bc, progress=False)
    grads = per_sample_gradients(TrainedRun(r.config, r.built, r.model_params(0)), bc.x_test, bc.y_test, "z")
    auc = attacks.label_leakage_auc(grads, bc.y_test)
    print(f"\n## label leakage, breast cancer, mlp cut 1, 10 epochs: norm AUC {auc['norm_auc']:.3f}, "
          f"direction AUC {auc['direction_auc']:.3f}")


if __name__ == "__main__":
    main()
