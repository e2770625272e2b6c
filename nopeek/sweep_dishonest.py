"""The sweep's part for a dishonest server and for the labels (kept apart from `nopeek.sweep`).

- Label defences as defences: `--label-defenses maxnorm,marvell --label-strengths 0.5,2`
  adds cells with `defense` maxnorm or marvell at each strength. The strength is written
  in the `noise_scale` key column (it is the scale of the noise the defence adds:
  max-norm's noise multiplier, Marvell's power scale s), so the table keeps its keys;
  those cells train with no activation noise.
- Label leakage columns for binary tasks, every cell: `label_norm_auc`,
  `label_direction_auc`, the norm and direction attacks (`attacks.label_leakage_auc`) on
  the per-sample gradients the data holder received for the held-out set, batch by batch
  with the cell's label defence (vertical: client 1's).
- FSHA as an attack column: `--fsha-steps N` (0 = off) trains, for every vanilla cell
  without a label defence, a client with the cell's defence and seed under FSHA
  (`nopeek.fsha`) and writes the server's final scores: `fsha_mse`, `fsha_psnr`,
  `fsha_ssim`, `fsha_classifier_accuracy` and their `fsha_baseline_*`.
"""

from __future__ import annotations

import numpy as np

from nopeek.config import ConfigError
from nopeek.label_defences import LABEL_DEFENSES, check_label_defense, received_gradients

LABEL_COLUMNS = ["label_norm_auc", "label_direction_auc"]
FSHA_SCORES = ("mse", "psnr", "ssim", "classifier_accuracy")
FSHA_COLUMNS = [f"fsha_{k}" for k in FSHA_SCORES] + [f"fsha_baseline_{k}" for k in FSHA_SCORES] + ["fsha_steps"]
COLUMNS = LABEL_COLUMNS + FSHA_COLUMNS


def check_grid(config, num_classes: int) -> None:
    """The label-defence lists of a sweep, against the data's number of classes."""
    defenses, strengths = tuple(config.label_defenses), tuple(config.label_strengths)
    for d in defenses:
        if d not in LABEL_DEFENSES or d == "none":
            raise ConfigError(f"--label-defenses must be among maxnorm, marvell, got {','.join(defenses)}")
    if defenses and not strengths:
        raise ConfigError("--label-defenses needs --label-strengths (one or more strengths)")
    if strengths and not defenses:
        raise ConfigError("--label-strengths needs --label-defenses")
    for s in strengths:
        if not (np.isfinite(s) and s > 0):
            raise ConfigError(f"--label-strengths must be finite and > 0, got {','.join(map(str, strengths))}")
    for d in defenses:
        check_label_defense(d, strengths[0], num_classes)


def check_attack(config, num_classes: int) -> None:
    """What a sweep's FSHA column and label defences cannot take, refused before any training."""
    if config.label_defenses and "multi_task" in config.topologies:
        raise ConfigError("--label-defenses: multi_task sends the labels to every server; a label defence "
                          "does not apply (choose other --topologies)")
    if config.fsha_steps:
        if config.alpha_warmup > 0:
            raise ConfigError("--fsha-steps: the FSHA client does not ramp alpha; drop --alpha-warmup or the FSHA column")
        bad = [c for c in config.public_classes if c >= num_classes]
        if bad:
            raise ConfigError(f"--public-classes {','.join(map(str, config.public_classes))}: the data has "
                              f"{num_classes} classes (0-{num_classes - 1})")


def label_defences(config) -> list[tuple[str, float, float]]:
    """The (defense, alpha, noise_scale column) of each label-defence cell of one seed."""
    return [(d, 0.0, float(s)) for d in config.label_defenses for s in config.label_strengths]


def train_lists(group) -> dict:
    """train_stack's per-model lists for a group of cells: activation noise only for the
    noise cells; a label defence's strength comes from its `noise_scale` column."""
    label = [c.defense in LABEL_DEFENSES and c.defense != "none" for c in group]
    return {
        "noise_scales": [0.0 if is_label else c.noise_scale for c, is_label in zip(group, label)],
        "label_defenses": [c.defense if is_label else "none" for c, is_label in zip(group, label)],
        "label_strengths": [c.noise_scale if is_label else 0.0 for c, is_label in zip(group, label)],
    }


def label_columns(config, ds, group, result, alive) -> dict[int, dict]:
    """{model index: label AUC columns} for binary tasks ({} otherwise)."""
    if ds.num_classes != 2:
        return {}
    import attacks

    topo = result.built.topology
    tensor = "z2" if topo.name == "u_shaped" else next(iter(result.leakage))[1].split("[")[0]
    lists = train_lists(group)
    out = {}
    for i in alive:
        grads = received_gradients(topo, result.model_params(int(i)), result.built.prepare, ds.x_test, ds.y_test, tensor,
                                   defense=lists["label_defenses"][i], strength=lists["label_strengths"][i],
                                   seed=group[i].seed, batch_size=config.batch_size)
        if topo.party(topo.producer(tensor)).replicas > 1:
            grads = grads[0]
        if not np.all(np.isfinite(grads)):
            continue
        scores = attacks.label_leakage_auc(grads, ds.y_test)
        out[int(i)] = {"label_norm_auc": scores["norm_auc"], "label_direction_auc": scores["direction_auc"]}
    return out


def fsha_columns(config, ds, group, log=print) -> dict[int, dict]:
    """{model index: FSHA columns} for the vanilla cells without a label defence ({} when
    `fsha_steps` is 0): one FSHA run per cell, the client with the cell's defence and seed."""
    steps = config.fsha_config.steps(default=0)
    if not steps or group[0].topology != "vanilla":
        return {}
    from nopeek.fsha import fsha_attack

    out = {}
    for i, cell in enumerate(group):
        if cell.defense not in ("none", "nopeek", "noise"):
            continue
        tc = config.train_config(cell.topology, cell.cut).replace(alpha=cell.alpha, noise_scale=cell.noise_scale,
                                                                  seed=cell.seed)
        try:
            result = fsha_attack(tc, config.fsha_config, ds, attack_seed=config.attack_seed, steps=steps,
                                 checkpoint_every=steps)
        except ConfigError as err:
            log(f"warning: FSHA on {cell.name}: {err}")
            continue
        final = result["final"]
        out[i] = {**{f"fsha_{k}": final[k] for k in FSHA_SCORES},
                  **{f"fsha_baseline_{k}": final[f"baseline_{k}"] for k in FSHA_SCORES}, "fsha_steps": steps}
    return out


def extra_columns(config, ds, group, result, alive, log=print) -> dict[int, dict]:
    """Every column of this module for each model of a trained group."""
    out: dict[int, dict] = {}
    for part in (label_columns(config, ds, group, result, alive), fsha_columns(config, ds, group, log)):
        for i, cols in part.items():
            out.setdefault(i, {}).update(cols)
    return out


def format_table(rows: list[dict]) -> str:
    """The label AUCs and FSHA scores of a sweep's rows (one line per cell), or "" if none."""
    def num(v, digits=3):
        try:
            return f"{float(v):.{digits}f}"
        except (TypeError, ValueError):
            return "-"

    useful = [r for r in rows if r.get("label_norm_auc") not in (None, "") or r.get("fsha_mse") not in (None, "")]
    if not useful:
        return ""
    seen, lines = set(), [f"{'topology':11} {'cut':>5} {'defense':8} {'alpha':>6} {'strength':>8} {'seed':>4} {'acc':>6} "
                          f"{'norm AUC':>8} {'dir AUC':>8} {'FSHA MSE':>9} {'(base)':>7} {'FSHA SSIM':>9}"]
    for r in sorted(useful, key=lambda r: (r["topology"], r["cut"], r["defense"], float(r["alpha"]), float(r["noise_scale"]),
                                           int(r["seed"]))):
        key = tuple(r[c] for c in ("topology", "cut", "defense", "alpha", "noise_scale", "seed"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{r['topology']:11} {r['cut']:>5} {r['defense']:8} {float(r['alpha']):>6g} {float(r['noise_scale']):>8g} "
                     f"{r['seed']:>4} {num(r.get('accuracy')):>6} {num(r.get('label_norm_auc')):>8} "
                     f"{num(r.get('label_direction_auc')):>8} {num(r.get('fsha_mse'), 4):>9} "
                     f"{num(r.get('fsha_baseline_mse'), 4):>7} {num(r.get('fsha_ssim')):>9}")
    return "\n".join(lines)
