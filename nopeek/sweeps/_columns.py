"""A sweep's attack columns: every attack of the grid's `attacks` that applies, run on every
cell, scored beside its free baseline; and a dishonest server's column (FSHA).

- Reconstruction attacks (per attacked message): `NAME_mse, NAME_psnr, NAME_ssim,
  NAME_dcor, NAME_classifier_accuracy`, their `NAME_baseline_*` (the attacker's mean input)
  and `NAME_best_*` (the better of the two: the leakage a defence is judged by), the
  label-only baseline `NAME_class_mean_*` and the margin over it `NAME_beyond_label_ssim`,
  `NAME_beyond_label_mse`. The decoder's columns have no prefix but `attack_` on its own
  scores (`attack_*`, `baseline_*`, `best_*`, `class_mean_*`, `beyond_label_*`), the names
  sweeps always had.
  Attacks that report more: `NAME_label_accuracy` beside `NAME_label_chance` (labels
  inferred, e.g. SDAR in U-shaped split learning), and further reconstructions `NAME_E_*`
  beside `NAME_E_baseline_*` (the adaptive attacker's leak-fraction curve, E = leak1 ..
  leak50, with `NAME_E_n_pairs`). When an attack of the grid uses auxiliary data (a seeded
  share of the held-out set, `aux_fraction`), every attack of the sweep is scored on the
  rest of the held-out set.
- Attribute attacks (per message): `NAME_linear_accuracy`, `NAME_mlp_accuracy`, `NAME_chance`.
- Label attacks (per cell, binary tasks): `NAME_norm_auc`, `NAME_direction_auc` on the
  per-sample gradients the party without the labels received for the held-out set, batch by
  batch with the cell's gradient defence (a replicated sender: its first replica).
- FSHA (`--servers fsha`, `--fsha-steps` iterations): for every cell of a configuration a dishonest server's
  protocol applies to, whose defence is the data holder's, a client with the cell's defence
  and seed trained under FSHA; the server's final scores `fsha_*` beside the mean image's
  `fsha_baseline_*` and the class-mean image's `fsha_class_mean_mse`, `fsha_class_mean_ssim`
  (what the label alone gives); the client's held-out `fsha_client_dcor` beside its null
  `fsha_client_dcor_null95` and its partial dCor given the label `fsha_client_pdcor_label`;
  and a linear probe's reading of the task from the client's messages,
  `fsha_task_probe_accuracy` beside `fsha_task_probe_chance` (`client_readings`).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

import attacks
from nopeek.defences import DEFENCES, NONE, received_gradients
from nopeek.errors import ConfigError
from nopeek.attacking import architecture_of, server_of
from nopeek.protocol import over_stack, resolve_stack_mode, shard_models, spec
from nopeek.training import message_apply, message_state

RECONSTRUCTION_SCORES = ("mse", "psnr", "ssim", "dcor", "classifier_accuracy")
# The decoder's columns, named as sweeps always had them.
LEGACY = {**{f"decoder_{k}": f"attack_{k}" for k in RECONSTRUCTION_SCORES},
          **{f"decoder_baseline_{k}": f"baseline_{k}" for k in RECONSTRUCTION_SCORES},
          **{f"decoder_best_{k}": f"best_{k}" for k in RECONSTRUCTION_SCORES},
          **{f"decoder_class_mean_{k}": f"class_mean_{k}" for k in RECONSTRUCTION_SCORES},
          **{f"decoder_beyond_label_{k}": f"beyond_label_{k}" for k in ("ssim", "mse")}}
FSHA_SCORES = ("mse", "psnr", "ssim", "classifier_accuracy")
# What reading an FSHA score needs (nopeek.dishonest.client_readings), as sweep columns.
FSHA_READINGS = ("client_dcor", "client_dcor_null95", "client_pdcor_label", "class_mean_mse", "class_mean_ssim",
                 "task_probe_accuracy", "task_probe_chance")


def column(name: str) -> str:
    return LEGACY.get(name, name)


def better(kind: str, attack: float, baseline: float) -> float:
    """The leakage a defence is judged by: the better of the attack and its free baseline."""
    values = [v for v in (attack, baseline) if np.isfinite(v)]
    if not values:
        return float("nan")
    return min(values) if kind == "mse" else max(values)


def reconstruction_columns(name: str, scores: dict) -> dict:
    """An attack's scores as columns: NAME_k, NAME_baseline_k, NAME_best_k, NAME_class_mean_k
    and NAME_beyond_label_{ssim,mse} (the decoder's names without the prefix, as sweeps had
    them); its label inference NAME_label_accuracy beside NAME_label_chance, and each further
    reconstruction it made (NAME_E_k, NAME_E_baseline_k for E in `extra`, e.g. adaptive's
    leak1..leak50)."""
    out = {}
    for k in RECONSTRUCTION_SCORES:
        if k in scores:
            out[column(f"{name}_{k}")] = scores[k]
            out[column(f"{name}_baseline_{k}")] = scores[f"baseline_{k}"]
            out[column(f"{name}_best_{k}")] = better(k, scores[k], scores[f"baseline_{k}"])
        if f"class_mean_{k}" in scores:
            out[column(f"{name}_class_mean_{k}")] = scores[f"class_mean_{k}"]
    for k in ("ssim", "mse"):
        if f"beyond_label_{k}" in scores:
            out[column(f"{name}_beyond_label_{k}")] = scores[f"beyond_label_{k}"]
    for k in ("label_accuracy", "label_chance"):
        if k in scores:
            out[f"{name}_{k}"] = scores[k]
    extras = {key[: -len("_baseline_mse")] for key in scores if key.endswith("_baseline_mse") and key != "baseline_mse"}
    for e in sorted(extras):
        for k in RECONSTRUCTION_SCORES:
            if f"{e}_{k}" in scores:
                out[f"{name}_{e}_{k}"] = scores[f"{e}_{k}"]
                out[f"{name}_{e}_baseline_{k}"] = scores[f"{e}_baseline_{k}"]
        if f"{e}_n_pairs" in scores:
            out[f"{name}_{e}_n_pairs"] = scores[f"{e}_n_pairs"]
    return out


def attribute_columns(name: str, output: dict) -> dict:
    out = {f"{name}_{p['probe']}_accuracy": p["accuracy"] for p in output["probes"]}
    out[f"{name}_chance"] = output["probes"][0]["chance"] if output["probes"] else float("nan")
    return out


def message_attacks(config, ds, entries, result, alive, sent_leak, prepared, prepared_test, leak_idx, *,
                    sent_train=None, aux_idx=None, target_idx=None, progress: bool = False, desc: str = "attacks") -> dict:
    """{(model index, party, label): columns (and "samples", the first reconstruction
    attack's first 16)} of every reconstruction and attribute attack of the grid, for every
    attacked message of the models that did not diverge; an attack's K models are fitted
    as one stack where it can.

    sent_train: every training input's messages {name: (K, n_train, ...)} (for attacks that
    read what the server observed, or a leak-fraction curve), or None. aux_idx: the held-out
    samples that are the attacker's auxiliary data (None: none); target_idx: those every
    attack is scored on (None: all). progress: a bar over (message, attack) pairs, named
    `desc`, showing the attack being fitted."""
    names = [n for n in config.attacks if attacks.ATTACKS[n].kind in ("reconstruction", "attribute")]
    out: dict = {}
    if not names or not len(alive):
        return out
    bar = tqdm(total=len(entries) * len(names), desc=desc, unit="attack", leave=False, disable=not progress)
    target_idx = np.arange(len(ds.x_test)) if target_idx is None else np.asarray(target_idx)
    first_reconstruction = next((n for n in names if attacks.ATTACKS[n].kind == "reconstruction"), None)
    classifiers: dict = {}
    outputs: dict = {}
    params = [result.model_params(int(i)) for i in alive]
    for e in entries:
        src_train, src_test = e.source_view(prepared[e.source]), e.source_view(prepared_test[e.source])
        whole = e.replica is None and not e.merged and e.source == "x"
        fit_key = (e.label, e.replica)  # round robin's clients share one message function
        key = (e.source, e.replica)
        if key not in classifiers and first_reconstruction is not None:
            classifiers[key] = attacks.ReferenceClassifier(src_train, ds.y_train)
        z_leak = np.asarray(e.view(sent_leak[e.message][alive], models_axis=True))
        z_test = np.asarray(e.view(result.messages_test[e.message][alive], models_axis=True))
        mode = resolve_stack_mode("auto", has_conv=z_leak.ndim == 5)
        inputs = attacks.AttackInputs(
            x_leak=src_train[leak_idx], z_leak=z_leak, y_leak=ds.y_train[leak_idx], x_target=src_test[target_idx],
            z_target=z_test[:, target_idx], y_target=ds.y_test[target_idx],
            message_apply=message_apply(result.built, e, result.config) if whole else None,
            message_states=[message_state(p, result.model_hparams(int(i))) for p, i in zip(params, alive)]
            if whole else None,
            architecture=architecture_of(result.built, result.config, e, ds.input_shape) if whole else None,
            classifier=classifiers.get(key), seed=config.attack_seed,
            map_models=lambda fn, in_axes, mode=mode: over_stack(fn, mode, in_axes),
            place=shard_models if mode == "vmap" else None,
            alphas=np.asarray([result.strengths[int(i)].get("nopeek", 0.0) for i in alive], np.float32),
        )
        if aux_idx is not None:
            inputs.x_aux, inputs.y_aux = src_test[aux_idx], ds.y_test[aux_idx]
        if sent_train is not None:
            inputs.x_train, inputs.y_train = src_train, ds.y_train
            inputs.z_train = np.asarray(e.view(sent_train[e.message][alive], models_axis=True))
        if whole:
            for field, value in (server_of(result.built, params, e) or {}).items():
                setattr(inputs, field, value)
        subset = e.subset if e.subset is not None else np.arange(len(ds.x_test))
        covered_all = np.flatnonzero(np.isin(target_idx, subset))  # positions among the targets
        for name in names:
            bar.set_postfix_str(f"{name} on {e.label} ({len(alive)} models)")
            if attacks.missing(name, inputs) or (attacks.ATTACKS[name].whole_input and not whole):
                bar.update(1)
                continue
            if (name, fit_key) not in outputs:
                outputs[(name, fit_key)] = attacks.run(name, inputs, **config.attack_config.settings(name))
            bar.update(1)
            for j, i in enumerate(alive):
                cols = out.setdefault((int(i), e.party, e.label), {})
                output = outputs[(name, fit_key)][j]
                if attacks.ATTACKS[name].kind == "attribute":
                    cols.update(attribute_columns(name, output))
                    continue
                covered = covered_all[covered_all < len(output["x_hat"])]
                scores = attacks.score(name, inputs, output, model=j, subset=covered)
                cols.update(reconstruction_columns(name, scores))
                if name == first_reconstruction:
                    cols["classifier_clean_accuracy"] = classifiers[key].accuracy(src_test[subset], ds.y_test[subset])
                    cols["samples"] = np.asarray(output["x_hat"])[covered][:16]
    bar.close()
    return out


def label_columns(config, ds, group, result, alive) -> dict[int, dict]:
    """{model index: label-attack columns} for the grid's label attacks, binary tasks only."""
    names = [n for n in config.attacks if attacks.ATTACKS[n].kind == "label"]
    if ds.num_classes != 2 or not names:
        return {}
    built = result.built
    tensor = built.label_gradient
    out = {}
    for i in alive:
        cell = group[i]
        gradient_defence = cell.defense if cell.defense != NONE and DEFENCES[cell.defense].acts_on == "gradient" else None
        carried = {n: v for n, v in cell.strengths.items() if DEFENCES[n].owns_parameters}
        grads = received_gradients(built, result.model_params(int(i)), ds.x_test, ds.y_test, tensor, carried=carried,
                                   defense=gradient_defence, strength=cell.strength, seed=cell.seed,
                                   batch_size=config.batch_size, settings=result.config)
        if built.topology.party(built.topology.producer(tensor)).replicas > 1:
            grads = grads[0]
        if not np.all(np.isfinite(grads)):
            continue
        inputs = attacks.AttackInputs(gradients=grads[None], y_target=ds.y_test, seed=config.attack_seed)
        for name in names:
            scores = attacks.score(name, inputs, attacks.run(name, inputs)[0])
            out.setdefault(int(i), {}).update({f"{name}_norm_auc": scores["norm_auc"],
                                               f"{name}_direction_auc": scores["direction_auc"],
                                               f"{name}_leak_null95": scores["leak_null95"]})
    return out


def fsha_columns(config, ds, group, log=print) -> dict[int, dict]:
    """{model index: FSHA columns} ({} unless `servers` holds "fsha" and the configuration has a
    server a dishonest protocol applies to): one FSHA run per cell whose defence is the data
    holder's (none, or one acting on its messages or loss), with the cell's defence and seed,
    scored with what reading it needs (`FSHA_READINGS`: the class-mean image, the client's
    dCor null, a task probe)."""
    if "fsha" not in config.servers or not spec(group[0].topology).malicious_server:
        return {}
    steps = config.fsha_steps
    from nopeek.dishonest import client_readings, fsha_attack

    out = {}
    for i, cell in enumerate(group):
        if cell.defense != NONE and DEFENCES[cell.defense].acts_on not in ("message", "loss"):
            continue
        tc = config.train_config(cell.topology, cell.cut).replace(
            alpha=cell.alpha, noise_scale=cell.noise_scale,
            defenses=tuple(f"{d}={s}" for d, s in cell.strengths.items() if DEFENCES[d].config_field is None))
        try:
            result = fsha_attack(tc, config.fsha_config, ds, attack_seed=config.attack_seed, steps=steps,
                                 checkpoint_every=steps)
        except ConfigError as err:
            log(f"warning: FSHA on {cell.name}: {err}")
            continue
        final = {**result["final"], **client_readings(tc, config.fsha_config, ds, result, config.attack_seed)}
        out[i] = {**{f"fsha_{k}": final[k] for k in FSHA_SCORES},
                  **{f"fsha_baseline_{k}": final[f"baseline_{k}"] for k in FSHA_SCORES},
                  **{f"fsha_{k}": final[k] for k in FSHA_READINGS}, "fsha_steps": steps}
    return out


def cell_columns(config, ds, group, result, alive, log=print) -> dict[int, dict]:
    """Every per-cell column (label attacks, FSHA) for each model of a trained group."""
    out: dict[int, dict] = {}
    for part in (label_columns(config, ds, group, result, alive), fsha_columns(config, ds, group, log)):
        for i, cols in part.items():
            out.setdefault(i, {}).update(cols)
    return out


def format_table(rows: list[dict]) -> str:
    """The label AUCs and FSHA scores of a sweep's rows (one line per cell), or "" if none:
    FSHA's MSE beside the mean image's and the class-mean image's, its SSIM, and the client's
    dCor beside its null."""
    def num(v, digits=3):
        try:
            return f"{float(v):.{digits}f}"
        except (TypeError, ValueError):
            return "-"

    useful = [r for r in rows if r.get("label_norm_auc") not in (None, "") or r.get("fsha_mse") not in (None, "")]
    if not useful:
        return ""
    seen, lines = set(), [f"{'topology':11} {'cut':>5} {'defense':8} {'strength':>8} {'seed':>4} {'acc':>6} "
                          f"{'norm AUC':>8} {'dir AUC':>8} {'FSHA MSE':>9} {'(mean)':>7} {'(class)':>7} {'FSHA SSIM':>9} "
                          f"{'dCor(x,z)':>9} {'(null)':>6}"]
    for r in sorted(useful, key=lambda r: (r["topology"], r["cut"], r["defense"], float(r["strength"]), int(r["seed"]))):
        key = tuple(r[c] for c in ("topology", "cut", "defense", "strength", "seed"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{r['topology']:11} {r['cut']:>5} {r['defense']:8} {float(r['strength']):>8g} "
                     f"{r['seed']:>4} {num(r.get('accuracy')):>6} {num(r.get('label_norm_auc')):>8} "
                     f"{num(r.get('label_direction_auc')):>8} {num(r.get('fsha_mse'), 4):>9} "
                     f"{num(r.get('fsha_baseline_mse'), 4):>7} {num(r.get('fsha_class_mean_mse'), 4):>7} "
                     f"{num(r.get('fsha_ssim')):>9} {num(r.get('fsha_client_dcor')):>9} "
                     f"{num(r.get('fsha_client_dcor_null95')):>6}")
    return "\n".join(lines)
