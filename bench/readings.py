"""What a dCor reads when nothing leaks: independent noise against bundled mnist5k's held-out
images, and what the label alone reads (docs/guide/measures.md, "Reading a leakage number").

    python bench/readings.py [--out docs/results/noise-floor]

For messages of independent Gaussian noise of 1, 10, 32, 64 and 256 dimensions against the
1,000 held-out mnist5k images: the V-statistic dCor (the papers' number), the bias-corrected
dCor^2, the permutation null's 95% quantile and the p-value (200 permutations), and the
label's own dCor(x, onehot y) with its partial dCor. Writes OUT/results.csv and OUT/run.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench._host import host_line  # noqa: E402
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "noise-floor"))
    args = parser.parse_args()
    import importlib.util

    import numpy as np

    import metrics
    from nopeek import data
    from nopeek.training import one_hot, readings

    spec = importlib.util.spec_from_file_location("docs_results", os.path.join(ROOT, "docs", "results.py"))
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    print(host_line())
    before, t0 = results.load(), time.perf_counter()
    ds = data.load("mnist5k")
    x, y = ds.x_test, one_hot(ds.y_test, ds.num_classes)
    rng = np.random.default_rng(0)
    rows = []
    for dim in (1, 10, 32, 64, 256):
        z = rng.normal(size=(len(x), dim)).astype(np.float32)
        r = readings(x, z, y, permutations=200)
        rows.append({"message": f"independent Gaussian noise, {dim}-d", "dim": dim,
                     "dcor": float(metrics.distance_correlation(x, z)), **r})
    label = readings(x, y, y, permutations=200)
    rows.append({"message": "the one-hot label itself", "dim": ds.num_classes,
                 "dcor": float(metrics.distance_correlation(x, y)), **label})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    results.write_run(args.out, "python bench/readings.py", time.perf_counter() - t0, before)
    for r in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
