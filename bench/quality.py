"""The quality numbers the README quotes, printed by one script (fixed seeds, CPU).

Run:  python bench/quality.py     (~2 minutes on 2 cores)

- digits, mlp, cut 1, 30 epochs, adam 1e-3, batch 64: accuracy and held-out dCor at alpha 0 and 3;
- mnist5k, cnn, default cut, alpha 0, 5 epochs: accuracy;
- the decoder attack (10% leaked) on digits mlp cut 1 at alpha 0 and 20, beside the mean-image baseline;
- label leakage on breast cancer, vanilla split learning: norm and direction AUC.
The tests assert thresholds on the same settings; this prints the values.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import attacks  # noqa: E402
from nopeek import data  # noqa: E402
from nopeek.config import TrainConfig  # noqa: E402
from nopeek.split import per_sample_cut_gradients  # noqa: E402
from nopeek.train import train_stack  # noqa: E402


def main():
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
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
    clients = [r.model_params(k)[0] for k in range(2)]
    z_leak = np.stack([np.asarray(r.fns.client_apply(c, x_leak)) for c in clients])
    z_test = np.stack([np.asarray(r.fns.client_apply(c, digits.x_test)) for c in clients])
    x_hat = attacks.fit_decoders(z_leak, x_leak, steps=1500, seed=0).reconstruct(z_test)
    clf = attacks.ReferenceClassifier(digits.x_train, digits.y_train)
    print("\n## decoder attack, digits mlp cut 1, 10% leaked, 1500 steps")
    for k, a in enumerate((0, 20)):
        s = attacks.scores_with_baseline(digits.x_test, x_hat[k], x_leak, classifier=clf, y=digits.y_test)
        print(f"alpha {a} (dCor {r.dcor[k]:.3f}): SSIM {s['ssim']:.3f} (baseline {s['baseline_ssim']:.3f}), "
              f"classifier on reconstructions {s['classifier_accuracy']:.3f} (baseline {s['baseline_classifier_accuracy']:.3f})")

    bc = data.load("breast_cancer")
    r = train_stack(TrainConfig(dataset="breast_cancer", epochs=10), bc, progress=False)
    c, s = r.model_params(0)
    grads = per_sample_cut_gradients(r.fns, c, s, jnp.asarray(bc.x_test), jnp.asarray(bc.y_test))
    auc = attacks.label_leakage_auc(np.asarray(grads), bc.y_test)
    print(f"\n## label leakage, breast cancer, mlp cut 1, 10 epochs: norm AUC {auc['norm_auc']:.3f}, "
          f"direction AUC {auc['direction_auc']:.3f}")


if __name__ == "__main__":
    main()
