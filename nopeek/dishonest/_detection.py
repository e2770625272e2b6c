"""The detection study: each client-side detector (SplitGuard's fake batches, SplitOut's
outlier detection) against an honest server and against FSHA, seed by seed, in one table:
detection rate on FSHA, false alarms on the honest server, and what the attacker had when
it was caught.

The client trains on the same private samples in every run (the training set less the
FSHA server's public share) with the same code; only the server differs. An FSHA run stops
when the detector fires (the client would); the attacker's scores at that iteration are
recorded. An honest run goes on for its full length, so a false alarm anywhere counts.
"""

from __future__ import annotations

import numpy as np

from nopeek.dishonest._splitguard import SplitGuard, SplitGuardConfig
from nopeek.dishonest._splitout import SplitOut, SplitOutConfig, honest_reference

DETECTORS = ("splitguard", "splitout")


def _make_detector(name: str, sg_config, so_config, dataset, protocol, private, seed: int):
    if name == "splitguard":
        return SplitGuard(sg_config, dataset.num_classes, seed=seed)
    reference = honest_reference(protocol, dataset, private, so_config.so_batches, client_seed=seed,
                                 server_seed=seed + 1_000_003 * (so_config.so_seed + 1))
    return SplitOut(so_config, reference, epoch=len(private) // protocol.config.batch_size)


def detection_study(config, fsha_config, sg_config: SplitGuardConfig, dataset, seeds, *, honest_steps: int,
                    fsha_steps: int, attack_seed: int = 0, detectors=("splitguard",),
                    so_config: SplitOutConfig | None = None, progress: bool = False, log=None) -> list[dict]:
    """Each detector in `detectors` ("splitguard", "splitout") against an honest server
    (vanilla training on the labels it is sent, `honest_steps` iterations, or as many as
    SplitOut watches) and against FSHA (until the detector fires, at most `fsha_steps`), one
    client seed at a time.

    Returns:
      one row per (detector, server, seed): {"detector", "server", "seed", "fired",
      "iteration", and the detector's report (SplitGuard: "fake_batches", "p_values",
      "scores"; SplitOut: "outliers", "checked", "scores"), for FSHA the attacker's "mse",
      "ssim", "classifier_accuracy" and their "baseline_*" at detection (or at the end), for
      honest runs the final "accuracy" and "iterations"}.
    """
    from nopeek.dishonest._fsha import build_protocol, fsha_attack, run_protocol, split_public

    sg_config.validate()
    so_config = (so_config or SplitOutConfig()).validate()
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise ValueError(f"detectors must be among {', '.join(DETECTORS)}, got {', '.join(unknown)}")
    public, private = split_public(dataset.y_train, public_fraction=fsha_config.public_fraction,
                                   public_classes=fsha_config.public_classes, seed=attack_seed)
    rows = []
    for seed in seeds:
        cfg = config.replace(seed=int(seed))
        protocol = build_protocol("honest", cfg, dataset, splitguard=True)
        for name in detectors:
            guard = _make_detector(name, sg_config, so_config, dataset, protocol, private, int(seed))
            steps = honest_steps if getattr(guard, "watch", None) is None else min(honest_steps, guard.watch)
            state, done, _ = run_protocol(protocol, dataset, private, public, steps, guard=guard,
                                          progress=progress, desc=f"honest {name} seed {seed}")
            rows.append({"detector": name, "server": "honest", "seed": int(seed), **_row(guard.report()),
                         "accuracy": _accuracy(protocol, state, dataset), "iterations": done})
            if log:
                log(rows[-1])
            guard = _make_detector(name, sg_config, so_config, dataset, protocol, private, int(seed))
            result = fsha_attack(cfg, fsha_config, dataset, attack_seed=attack_seed, steps=fsha_steps, guard=guard,
                                 stop_on_detection=True, checkpoint_every=10**9, progress=progress)
            det = result["detection"]
            at = det["at_detection"] or result["final"]
            rows.append({"detector": name, "server": "fsha", "seed": int(seed), **_row(det),
                         **{k: at[k] for k in ("mse", "ssim", "classifier_accuracy", "baseline_mse", "baseline_ssim",
                                               "baseline_classifier_accuracy")}})
            if log:
                log(rows[-1])
    return rows


def _row(report: dict) -> dict:
    out = {"fired": report["fired"], "iteration": report["iteration"]}
    if "p_values" in report:  # SplitGuard
        out.update(fake_batches=report["fake_batches"], p_values=[round(p, 3) for _, p in report["p_values"]],
                   scores=[round(s, 3) for _, s in report["scores"]])
    else:  # SplitOut
        out.update(outliers=report["outliers"], checked=report["checked"],
                   scores=[round(s, 3) for _, s in report["scores"]])
    return out


def _accuracy(protocol, state, dataset) -> float:
    import jax
    import jax.numpy as jnp

    from nopeek.protocol import forward

    topo = protocol.topology
    logits = jax.jit(lambda p, x: forward(topo, p, {"x": x, "y": jnp.zeros(x.shape[0], jnp.int32)})["logits"])
    pred = np.concatenate([np.asarray(jnp.argmax(logits(state.params, jnp.asarray(dataset.x_test[i : i + 500])), -1))
                           for i in range(0, len(dataset.x_test), 500)])
    return float(np.mean(pred == dataset.y_test))


def detection_summary(rows: list[dict]) -> list[dict]:
    """One row per detector: detection rate on FSHA, false alarms on the honest server, when
    it fired on FSHA, and the attacker's SSIM then (beside its mean image's)."""
    out = []
    for name in dict.fromkeys(r.get("detector", "splitguard") for r in rows):
        mine = [r for r in rows if r.get("detector", "splitguard") == name]
        fsha = [r for r in mine if r["server"] == "fsha"]
        honest = [r for r in mine if r["server"] == "honest"]
        caught = [r for r in fsha if r["fired"]]
        out.append({
            "detector": name, "fsha_runs": len(fsha), "detected": len(caught), "honest_runs": len(honest),
            "false_alarms": sum(r["fired"] for r in honest),
            "iteration_mean": float(np.mean([r["iteration"] for r in caught])) if caught else float("nan"),
            "iteration_min": min((r["iteration"] for r in caught), default=None),
            "iteration_max": max((r["iteration"] for r in caught), default=None),
            "ssim_then": float(np.mean([r["ssim"] for r in fsha])) if fsha else float("nan"),
            "baseline_ssim_then": float(np.mean([r["baseline_ssim"] for r in fsha])) if fsha else float("nan"),
            "honest_accuracy": float(np.mean([r["accuracy"] for r in honest])) if honest else float("nan"),
            "honest_iterations": sorted({r.get("iterations") for r in honest if r.get("iterations")}),
        })
    return out


def format_detection(rows: list[dict]) -> str:
    """The detection table: per detector, its detection rate on FSHA and false alarms on the
    honest server, when it fired and what the attacker had by then; then the rows."""
    lines = ["| detector | FSHA detected | honest false alarms (iterations watched per run) | iteration fired on FSHA "
             "(mean, min-max) | attacker's SSIM then (mean image) | honest accuracy then |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in detection_summary(rows):
        when = (f"{s['iteration_mean']:.0f} ({s['iteration_min']}-{s['iteration_max']})" if s["detected"] else "-")
        watched = ", ".join(str(i) for i in s.get("honest_iterations", [])) or "-"
        lines.append(f"| {s['detector']} | {s['detected']} / {s['fsha_runs']} | {s['false_alarms']} / {s['honest_runs']} "
                     f"({watched}) | {when} | {s['ssim_then']:.3f} ({s['baseline_ssim_then']:.3f}) | "
                     f"{s['honest_accuracy']:.3f} |")
    lines.append("")
    lines.append(f"{'detector':10s} {'server':6s} {'seed':>4s} {'fired':>5s} {'iter':>5s} {'acc / MSE (base)':>17s}  "
                 "SplitGuard: fake batches, rank-test p-values | SplitOut: outliers / checked, LOF (first 6)")
    for r in rows:
        what = (f"{r['accuracy']:.3f}" if r["server"] == "honest" else f"{r['mse']:.4f} ({r['baseline_mse']:.4f})")
        if "p_values" in r:
            detail = f"{r['fake_batches']} fakes, p " + " ".join(f"{v:.2f}" for v in r["p_values"][:6])
        else:
            detail = f"{r['outliers']}/{r['checked']}, LOF " + " ".join(f"{v:.2f}" for v in r["scores"][:6])
        lines.append(f"{r.get('detector', 'splitguard'):10s} {r['server']:6s} {r['seed']:>4d} {str(r['fired']):>5s} "
                     f"{str(r['iteration'] or '-'):>5s} {what:>17s}  {detail}")
    return "\n".join(lines)
