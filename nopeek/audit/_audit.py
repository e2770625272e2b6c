"""`nopeek audit`: leakage and attacks on activations saved from any framework's split model.

The user hands in arrays (see `nopeek.audit_inputs` for the file format and checks):
the attacker's pairs (x, z[, y]) and one or more held-out target files (x, z[, y, g,
accuracy]). The audit runs every attack that needs only arrays, each next to its free
baseline:

- dCor(x, z) over all held-out samples (blocked, exact), HSIC and linear CKA on at most
  `kernel_samples` of them (O(n^2) memory); baseline: the same statistic with z shuffled
  across samples (what independence reads at this n);
- the black-box inversion decoder (`attacks.fit_decoders`) fitted on the pairs, scored by
  `attacks.scores_with_baseline` (baseline: the attacker's mean input), with the reference
  classifier trained on the attacker's pairs only (never on held-out data);
- linear and MLP probes for y and every attr_<name> (baseline: chance);
- the norm and direction label-leakage attacks when a target carries g and binary y
  (baseline: chance at this n, the 95% permutation null of max(AUC, 1 - AUC)).

Pairing: one pairs file serves every target (then one decoder is fitted), or one pairs
file per target, in the same order (decoders whose pairs share x and z shape are fitted
as one stack; decoder i of a stack is seeded seed + i, as in `nopeek sweep`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import field
from typing import Sequence

import numpy as np

import attacks
import metrics
from nopeek.audit._inputs import (
    SCALES,
    Bundle,
    apply_scale,
    check_accuracy,
    check_bundle,
    check_pairing,
    safe_filename,
    shared_rows,
    target_labels,
)
from nopeek.core import Section, check_output_folder, check_writable, publish_folder, staging_folder
from nopeek.errors import AuditError, ConfigError
from nopeek.plots import label_leakage_figure, reconstruction_grid, tradeoff_figure
from nopeek.training import one_hot, readings

DCOR_BLOCK = 1024
N_GRID = 16  # samples shown in each reconstruction grid


@dataclasses.dataclass(frozen=True)
class AuditConfig(Section):
    """How hard the audit's attacker tries, and how the user's inputs are read."""

    attack_steps: int | None = field(default=None, metadata={"help": "Adam steps of each reconstruction attack (default: the attack's own; the decoder's 1500)"})
    attack_lr: float | None = field(default=None, metadata={"help": "their learning rate (default: the attack's own; the decoder's 2e-3)"})
    attack_batch_size: int | None = field(default=None, metadata={"help": "their batch size (default: the attack's own; the decoder's 64)"})
    attack_seed: int = field(default=0, metadata={"help": "the attacker's seed: decoders, probes and subsamples"})
    scale: str = field(default="none", metadata={
        "help": "map x into [0, 1]: none (x must be in [0, 1]), 255 (x / 255), minmax (the attacker's range)",
        "choices": SCALES})
    channels_first: bool = field(default=False, metadata={
        "help": "4-d x, z and g are (n, C, H, W) as PyTorch saves them"})
    kernel_samples: int = field(default=4096, metadata={"help": "held-out samples for HSIC and CKA (O(n^2) memory)"})
    null_permutations: int = field(default=200, metadata={"help": "permutations of each dCor's null (its dcor_null95 and dcor_pvalue); 0: none"})

    def validate(self) -> "AuditConfig":
        checks = [
            (self.attack_steps is None or self.attack_steps >= 1, f"--attack-steps must be >= 1, got {self.attack_steps}"),
            (self.attack_lr is None or (math.isfinite(self.attack_lr) and self.attack_lr > 0), f"--attack-lr must be finite and > 0, got {self.attack_lr}"),
            (self.attack_batch_size is None or self.attack_batch_size >= 1, f"--attack-batch-size must be >= 1, got {self.attack_batch_size}"),
            (self.scale in SCALES, f"--scale must be one of {', '.join(SCALES)}, got {self.scale!r}"),
            (self.kernel_samples >= 4, f"--kernel-samples must be >= 4, got {self.kernel_samples}"),
            (self.null_permutations >= 0, f"--null-permutations must be >= 0, got {self.null_permutations}"),
            (self.attack_seed >= 0, f"--attack-seed must be >= 0, got {self.attack_seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AuditError(message)
        return self


# ---- inputs ------------------------------------------------------------------


def _as_list(sources) -> list:
    """One source (a path or a mapping of arrays) or a sequence of them, as a list."""
    return [sources] if isinstance(sources, (str, os.PathLike, Mapping)) else list(sources)


def load_inputs(pairs, targets, config: AuditConfig, accuracy=None):
    """Read and check every file before anything is fitted: (pairs, targets, pairs index per target)."""
    pairs, targets = _as_list(pairs), _as_list(targets)
    if not pairs or not targets:
        raise AuditError("give at least one pairs file and one target file")
    if accuracy is not None and len(accuracy) != len(targets):
        raise AuditError(f"--accuracy has {len(accuracy)} value(s) for {len(targets)} target(s)")
    p = [check_bundle(s, "pairs", i, channels_first=config.channels_first) for i, s in enumerate(pairs)]
    t = [check_bundle(s, "target", i, channels_first=config.channels_first) for i, s in enumerate(targets)]
    which = check_pairing(p, t)
    for i, pb in enumerate(p):
        apply_scale(pb, [tb for tb, w in zip(t, which) if w == i], config.scale)
    if accuracy is not None:  # an explicit value wins over the file's
        for tb, a in zip(t, accuracy):
            tb.accuracy = check_accuracy("--accuracy", a)
    return p, t, which


# ---- the attacks ---------------------------------------------------------------


def _stacks(pairs: list[Bundle]) -> list[list[int]]:
    """Pairs bundles grouped into stacks: those with the same x and z shape are one stack."""
    groups: list[list[int]] = []
    for i, p in enumerate(pairs):
        for g in groups:
            q = pairs[g[0]]
            if q.z.shape[1:] == p.z.shape[1:] and np.array_equal(q.x, p.x):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def run_reconstruction_attacks(pairs: list[Bundle], targets: list[Bundle], which: list[int], config: "AuditConfig",
                           log) -> dict[str, list]:
    """{attack: per target (scores, x_hat)} for every registered reconstruction attack that
    arrays alone can run (`attacks.missing`): fitted once per stack of pairs bundles, on
    every target those pairs serve."""
    out: dict[str, list] = {}
    for name, spec in attacks.ATTACKS.items():
        if spec.kind != "reconstruction":
            continue
        results: list = [None] * len(targets)
        for g in _stacks(pairs):
            served = [[j for j, w in enumerate(which) if w == i] for i in g]
            p0 = pairs[g[0]]
            inputs = attacks.AttackInputs(
                x_leak=p0.x, z_leak=np.stack([pairs[i].z for i in g]), y_leak=p0.labels.get("y"),
                x_target=[np.concatenate([targets[j].x for j in js]) for js in served],
                z_target=[np.concatenate([targets[j].z for j in js]) for js in served],
                y_target=[_joined([targets[j].labels.get("y") for j in js]) for js in served],
                seed=config.attack_seed)
            if attacks.missing(name, inputs):
                break
            settings = {"steps": config.attack_steps, "lr": config.attack_lr, "batch_size": config.attack_batch_size}
            steps = attacks.settings(name, **settings).get("steps")
            log(f"fitting {len(g)} {name} attack(s) on {p0.n} leaked pairs" + (f" (at most {steps} steps)" if steps else ""))
            outputs = attacks.run(name, inputs, **settings)
            for k, (i, js) in enumerate(zip(g, served)):
                inputs.classifier = _reference_classifier(pairs[i])
                start = 0
                for j in js:
                    subset = np.arange(start, start + targets[j].n)
                    start += targets[j].n
                    scored = attacks.score(name, inputs, outputs[k], model=k, subset=subset)
                    if inputs.classifier is not None:
                        scored["classifier_clean_accuracy"] = inputs.classifier.accuracy(targets[j].x, targets[j].labels["y"])
                    else:
                        scored["classifier_clean_accuracy"] = float("nan")
                    scored["final_train_loss"] = outputs[k].get("final_train_loss", float("nan"))
                    results[j] = (scored, np.asarray(outputs[k]["x_hat"])[subset])
        else:
            out[name] = results
    return out


def _joined(parts):
    return None if any(p is None for p in parts) else np.concatenate(parts)


def dependence_scores(x, z, config: AuditConfig, y=None) -> dict:
    """dCor over all samples (blocked) with its readings (`nopeek.training.READINGS`: the
    bias-corrected dCor^2, the permutation null's 95% quantile and p-value, and with labels
    y the label's own dCor and the partial dCor given the label), HSIC and linear CKA on a
    subsample; each also with z shuffled once."""
    rng = np.random.default_rng(config.attack_seed)
    n = len(x)
    z_shuffled = z[rng.permutation(n)]
    sub = np.sort(rng.choice(n, min(n, config.kernel_samples), replace=False))
    labels = None
    if y is not None and len(np.unique(y)) >= 2:
        labels = one_hot(np.unique(y, return_inverse=True)[1], len(np.unique(y)))
    return {
        "n": n,
        "dcor": float(metrics.distance_correlation(x, z, block_size=DCOR_BLOCK)),
        **readings(x, z, labels, permutations=config.null_permutations),
        "dcor_shuffled": float(metrics.distance_correlation(x, z_shuffled, block_size=DCOR_BLOCK)),
        "n_kernel": len(sub),
        "hsic": float(metrics.hsic(x[sub], z[sub])),
        "hsic_shuffled": float(metrics.hsic(x[sub], z_shuffled[sub])),
        "linear_cka": float(metrics.linear_cka(x[sub], z[sub])),
        "linear_cka_shuffled": float(metrics.linear_cka(x[sub], z_shuffled[sub])),
    }


def _reference_classifier(p: Bundle):
    y = p.labels.get("y")
    if y is None or len(np.unique(y)) < 2:
        return None
    return attacks.ReferenceClassifier(p.x, y)


def probe_scores(p: Bundle, t: Bundle, seed: int) -> dict:
    """Every registered attribute attack (kind "attribute": the built-in `probe`'s linear and
    MLP probes, and any registered from Python, whose probes are named "NAME:probe") for
    every label both files carry (y, attr_*); chance beside each."""
    out = {}
    for key in sorted(set(p.labels) & set(t.labels), key=lambda k: (k != "y", k)):
        if len(np.unique(p.labels[key])) < 2:
            out[key] = {"skipped": "the attacker's labels have a single class"}
            continue
        inputs = attacks.AttackInputs(x_leak=p.x, z_leak=p.z[None], y_leak=p.labels[key], x_target=t.x,
                                      z_target=t.z[None], y_target=t.labels[key], seed=seed)
        out[key] = {}
        for name, spec in attacks.ATTACKS.items():
            if spec.kind != "attribute" or attacks.missing(name, inputs):
                continue
            out[key].update({(r["probe"] if name == "probe" else f"{name}:{r['probe']}"):
                             {"accuracy": r["accuracy"], "chance": r["chance"]}
                             for r in attacks.run(name, inputs)[0]["probes"]})
    return out


def label_scores(t: Bundle, seed: int) -> dict:
    """Every registered label attack (kind "label") on the target's per-sample gradients g:
    {"label_leakage": the built-in `label` attack's scores, "NAME_label_leakage": another's},
    each with `chance`, the permutation null at this n."""
    inputs = attacks.AttackInputs(gradients=t.g[None], y_target=t.labels.get("y"), seed=seed)
    out = {}
    for name, spec in attacks.ATTACKS.items():
        if spec.kind != "label" or attacks.missing(name, inputs):
            continue
        ll = attacks.score(name, inputs, attacks.run(name, inputs)[0])
        chance = ll["leak_null95"] if "leak_null95" in ll else attacks.leak_null(t.labels["y"])  # at this n, not 0.5
        out["label_leakage" if name == "label" else f"{name}_label_leakage"] = {**ll, "chance": chance}
    return out


def audit_target(t: Bundle, p: Bundle, reconstructions: dict, config: AuditConfig) -> dict:
    """Every score of one target: dependence, each reconstruction attack's scores (given,
    `reconstructions`: {attack: scores}), probes, label leakage."""
    y = t.labels.get("y")
    scores = {
        "file": t.name, "pairs_file": p.name, "accuracy": t.accuracy,
        "n_attacker": p.n, "n_heldout": t.n, "x_shape": list(t.x.shape[1:]), "z_shape": list(t.z.shape[1:]),
        "scale": t.scale_note, "heldout_in_pairs": shared_rows(p.x, t.x),
        "z_constant": bool(np.all(t.z == t.z[:1])),  # every held-out sample sent the same z
        "dependence": dependence_scores(t.x, t.z, config, y),
        **reconstructions,
        "probes": probe_scores(p, t, config.attack_seed),
    }
    if t.g is not None:
        scores.update(label_scores(t, config.attack_seed))
    return scores


# ---- outputs -----------------------------------------------------------------


def _cell(value, base=None, fmt=".3f") -> str:
    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    return f(value) if base is None else f"{f(value)} ({f(base)})"


def format_table(scores: dict) -> str:
    """The report's markdown table: one row per target, each score with its baseline in brackets."""
    results = scores["targets"]
    rows = list(results.items())
    probe_keys = sorted({k for _, r in rows for k, v in r["probes"].items() if "skipped" not in v},
                        key=lambda k: (k != "y", k))
    columns = [("target", lambda lab, r: f"`{lab}`")]
    if any(r["accuracy"] is not None for _, r in rows):
        columns.append(("accuracy", lambda lab, r: _cell(r["accuracy"])))
    columns += [
        ("dCor(x, z) (null 95%)", lambda lab, r: _cell(r["dependence"]["dcor"], r["dependence"]["dcor_null95"])),
        ("dCor_u^2", lambda lab, r: _cell(r["dependence"]["dcor_u"])),
        ("pdCor given y (y's dCor)", lambda lab, r: _cell(r["dependence"]["pdcor_label"], r["dependence"]["dcor_label"])),
        ("linear CKA (shuffled)", lambda lab, r: _cell(r["dependence"]["linear_cka"], r["dependence"]["linear_cka_shuffled"])),
        ("HSIC (shuffled)", lambda lab, r: _cell(r["dependence"]["hsic"], r["dependence"]["hsic_shuffled"], ".3g")),
    ]
    # every reconstruction attack the audit ran (the registry's order): the decoder's columns, then each other's
    ran = [n for n, spec in attacks.ATTACKS.items() if spec.kind == "reconstruction" and any(n in r for _, r in rows)]
    for name in ran:
        def get(r, key, name=name):
            return r.get(name, {}).get(key, float("nan"))

        if any(not math.isnan(get(r, "ssim")) for _, r in rows):
            columns.append((f"{name} SSIM (mean input)", lambda lab, r, get=get: _cell(get(r, "ssim"), get(r, "baseline_ssim"))))
            if any("class_mean_ssim" in r.get(name, {}) for _, r in rows):
                columns.append((f"{name} SSIM beyond the label (class mean's SSIM)" if name != "decoder" else
                                "SSIM beyond the label (class mean's SSIM)",
                                lambda lab, r, get=get: _cell(get(r, "beyond_label_ssim"), get(r, "class_mean_ssim"))))
        columns.append((f"{name} MSE (mean input)", lambda lab, r, get=get: _cell(get(r, "mse"), get(r, "baseline_mse"), ".4f")))
        if any(not math.isnan(get(r, "classifier_accuracy")) for _, r in rows):
            columns.append(("classifier on x_hat (on mean input)" if name == "decoder" else
                            f"classifier on {name}'s x_hat (on mean input)", lambda lab, r, get=get: _cell(
                get(r, "classifier_accuracy"), get(r, "baseline_classifier_accuracy"))))
    for key in probe_keys:
        def probe(lab, r, key=key):
            v = r["probes"].get(key)
            if not v or "skipped" in v:
                return "-"
            return f"{_cell(v['linear']['accuracy'])} / {_cell(v['mlp']['accuracy'])} ({_cell(v['linear']['chance'])})"
        columns.append((f"{key} probe linear / MLP (chance)", probe))
    if any("label_leakage" in r for _, r in rows):
        def leaking(v) -> str:  # an AUC below 0.5 leaks as much as 1 - AUC: the rule read the other way round
            return _cell(v) if v is None or math.isnan(v) or v >= 0.5 else f"{_cell(1 - v)}*"

        def auc(lab, r):
            ll = r.get("label_leakage")
            return "-" if ll is None else f"{leaking(ll['norm_auc'])} / {leaking(ll['direction_auc'])} ({_cell(ll['chance'])})"
        columns.append(("label AUC norm / direction, max(AUC, 1 - AUC) (null 95%)", auc))
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(fn(lab, r) for _, fn in columns) + " |" for lab, r in rows]
    return "\n".join(lines)


def _steps_run(scores: dict) -> str:
    """The decoder's steps run per target, "`a` 850, `b` 1200" (one number where all agree)."""
    runs = {lab: r["decoder"].get("steps_run") for lab, r in scores["targets"].items()}
    if len(set(runs.values())) == 1:
        return str(next(iter(runs.values())))
    return ", ".join(f"`{lab}` {n}" for lab, n in runs.items())


def audit_notes(scores: dict) -> list[str]:
    """What a reader must know before trusting the table: held-out samples among the attacker's
    pairs, a constant message, skipped probes (in report.md, and printed by `nopeek audit`)."""
    notes = []
    for lab, r in scores["targets"].items():
        if r["heldout_in_pairs"]:
            notes.append(f"`{lab}`: {r['heldout_in_pairs']} held-out samples also appear among the attacker's pairs "
                         "(their scores flatter the attacker)")
        if r.get("z_constant"):
            notes.append(f"`{lab}`: z is the same for every held-out sample (a collapsed model, or a constant "
                         "layer): its dCor of 0 and the attacks' failure say nothing of what a working model leaks")
        notes += [f"`{lab}`: probe for `{k}` skipped: {v['skipped']}" for k, v in r["probes"].items() if "skipped" in v]
    return notes


def _report(scores: dict, figures: list[str]) -> str:
    first = next(iter(scores["targets"].values()))
    pairs_files = sorted({r["pairs_file"] for r in scores["targets"].values()})
    c = scores["config"]
    decoder = attacks.settings("decoder", steps=c["attack_steps"], lr=c["attack_lr"], batch_size=c["attack_batch_size"])
    lines = [
        "# nopeek audit", "",
        f"{len(scores['targets'])} target(s) audited with the attacker's pairs from {', '.join(pairs_files)} "
        f"({first['n_attacker']} pairs; x {tuple(first['x_shape'])}, z {tuple(first['z_shape'])}; "
        f"x scaled: {first['scale']}). Decoder: at most {decoder['steps']} Adam steps (early stopping on a "
        f"held-out share of the pairs; steps run: {_steps_run(scores)}), lr {decoder['lr']:g}, "
        f"batch {decoder['batch_size']}, seed {c['attack_seed']}.", "",
        format_table(scores), "",
        "How to read it: every score sits beside what an attacker gets for free, in brackets.",
        "",
        "- dCor(x, z): V-statistic distance correlation of **all** held-out inputs and their "
        "activations (exact, blocked); in brackets the 95% quantile of its permutation null "
        "(z's rows shuffled: what independence reads at this sample size and dimension). "
        "dCor_u^2: the bias-corrected (U-statistic) dCor^2, about 0 under independence. "
        "pdCor given y: the partial dCor of x and z given the one-hot label, what z says of x "
        "beyond the label; in brackets the label's own dCor(x, y).",
        f"- HSIC (Gaussian kernels, median bandwidth) and linear CKA use a seeded subsample of at most "
        f"{c['kernel_samples']} held-out samples (their cost is O(n^2) memory); brackets: z shuffled.",
        "- Decoder: an inversion network z -> x_hat trained on the attacker's pairs, scored on the "
        "held-out targets; brackets: the attacker's mean input as the guess for every sample. "
        "SSIM only for images.",
    ]
    results = scores["targets"].values()
    if any(not math.isnan(r["decoder"]["classifier_accuracy"]) for r in results):
        clean = ", ".join(f"`{lab}` {_cell(r['decoder']['classifier_clean_accuracy'])}"
                          for lab, r in scores["targets"].items())
        lines.append("- Classifier on x_hat: a logistic regression trained on the attacker's own (x, y) pairs "
                     "(never on held-out data), shown the reconstructions; brackets: shown the mean input. "
                     f"Shown the real held-out inputs it scores {clean}.")
    if any(v for r in results for v in r["probes"].values()):
        lines.append("- Probes: linear and MLP classifiers z -> label fitted on the attacker's pairs, tested on "
                     "the targets; brackets: chance (the majority rate of the held-out labels).")
    if any("label_leakage" in r for r in results):
        lines.append("- Label AUC: the norm and direction attacks on the per-sample cut gradients g "
                     "(Li et al., ICLR 2022), each as max(AUC, 1 - AUC): an attack whose rule reads the "
                     "labels the other way round (AUC below 0.5, marked *) leaks as much as 1 - AUC; brackets: "
                     "chance at this n, the 95% permutation null of max(AUC, 1 - AUC) (0.5 only for endless samples).")
    notes = audit_notes(scores)
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{os.path.splitext(f)[0]}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _figures(tmp: str, labels, targets, results, x_hats) -> list[str]:
    files = []
    for lab, t, x_hat in zip(labels, targets, x_hats):
        r, name = results[lab], safe_filename(lab)
        d = r["decoder"]
        what = f"SSIM {d['ssim']:.3f} (mean input {d['baseline_ssim']:.3f})" if not math.isnan(d["ssim"]) \
            else f"MSE {d['mse']:.4f} (mean input {d['baseline_mse']:.4f})"
        files.append(os.path.basename(reconstruction_grid(
            [t.x[:N_GRID], x_hat[:N_GRID]], ["original", "reconstructed"],
            os.path.join(tmp, f"reconstructions_{name}.png"), title=f"decoder attack on {lab}: {what}")))
        if t.g is not None:
            ll = r["label_leakage"]
            files.append(os.path.basename(label_leakage_figure(
                attacks.norm_scores(t.g), attacks.direction_scores(t.g, ll["reference_index"]),
                t.labels["y"], ll, os.path.join(tmp, f"label_leakage_{name}.png"))))
    if len(labels) > 1 and all(results[lab]["accuracy"] is not None for lab in labels):
        # One curve in --targets order: the position is the curve's level, counted from 1
        # because level 0 is the sweep's undefended cell, which also starts the noise curve.
        rows = [{"target": lab, "cut": 0, "defense": "nopeek", "alpha": i + 1, "noise_scale": 0.0,
                 "accuracy": results[lab]["accuracy"], "dcor": results[lab]["dependence"]["dcor"],
                 "attack_ssim": results[lab]["decoder"]["ssim"]} for i, lab in enumerate(labels)]
        files.append(os.path.basename(tradeoff_figure(
            rows, os.path.join(tmp, "tradeoff.png"), annotate="target",
            series_label=lambda cut, family: "audited targets, in --targets order")))
    return files


def _check_out(out: str, force: bool, sources) -> None:
    if not str(out).strip():
        raise AuditError("--out: give the folder to write the audit into")
    root = os.path.join(os.path.abspath(out), "")
    for s in sources:
        if isinstance(s, (str, os.PathLike)) and os.path.abspath(s).startswith(root):
            raise AuditError(f"--out {out}: holds the input {os.fspath(s)}; choose another --out")
    try:
        check_writable(out, ("audit",), force=force)
        check_output_folder(out)
    except ValueError as err:
        raise AuditError(str(err)) from None


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def run_audit(
    pairs: Sequence,
    targets: Sequence,
    out: str,
    config: AuditConfig = AuditConfig(),
    *,
    accuracy: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Audit targets' activations with the attacker's pairs; write `out/` and return the scores.

    Args:
      pairs: one .npz path (or mapping of arrays) serving every target, or a list of one per target.
      targets: one or a list of .npz paths (or mappings) of held-out x, z and optionally y, g, accuracy.
      out: folder for scores.json, report.md and the figures; written whole or not at all.
      accuracy: the user's test accuracy per target (over the files' `accuracy` entries).
      labels: a name per target (default: the file names).
      force: replace a non-empty `out`.

    Returns:
      {"config", "pairs", "targets": {label: scores}, "table", "notes" (what to know before trusting
      the table: `audit_notes`), "files", "seconds"}.

    Raises:
      AuditError: an input that cannot be used (one line naming the file and array).
    """
    t0 = time.perf_counter()
    config.validate()
    pairs, targets = _as_list(pairs), _as_list(targets)
    _check_out(out, force, [*pairs, *targets])
    log = (lambda msg: print(f"nopeek audit: {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    pair_bundles, target_bundles, which = load_inputs(pairs, targets, config, accuracy)
    names = target_labels(target_bundles, labels)
    try:
        tmp = staging_folder(out)
    except ConfigError as err:
        raise AuditError(str(err)) from None
    try:
        recon = run_reconstruction_attacks(pair_bundles, target_bundles, which, config, log)
        results, x_hats = {}, []
        for j, (lab, t, i) in enumerate(zip(names, target_bundles, which)):
            log(f"scoring {lab} ({t.n} held-out samples)")
            results[lab] = audit_target(t, pair_bundles[i], {name: per[j][0] for name, per in recon.items()}, config)
            x_hats.append(recon["decoder"][j][1])
        scores = {"config": dataclasses.asdict(config), "pairs": [p.name for p in pair_bundles], "targets": results}
        files = _figures(tmp, names, target_bundles, results, x_hats)
        with open(os.path.join(tmp, "scores.json"), "w", encoding="utf-8") as f:
            json.dump(_jsonable(scores), f, indent=2)
            f.write("\n")
        with open(os.path.join(tmp, "report.md"), "w", encoding="utf-8") as f:
            f.write(_report(scores, files))
        publish_folder(tmp, os.path.abspath(out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**scores, "table": format_table(scores), "notes": audit_notes(scores),
            "files": ["scores.json", "report.md", *files], "seconds": time.perf_counter() - t0}
