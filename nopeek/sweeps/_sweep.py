"""Leakage sweeps: topologies x cuts x defences x seeds -> rows of `results.csv`.

For each group (one topology at one cut list), every defence cell (no defence, NoPeek at
each alpha, the noise baseline at each scale, every other defence at each strength) and
seed is trained together as one stack (`nopeek.training.train_stack`), and each attack of
the grid is run against every attacked message, fitted as one stack where it can
(`nopeek.sweeps._columns`). A group's rows are appended to
`results.csv` in one atomic replace, and its training saves epoch checkpoints in
DIR/.resume/, so killing the process at any moment (even `kill -9`) loses at most the
epochs since the last checkpoint, and running the same command again finishes only the
missing cells, resuming a stack's training from its checkpoint. The whole config is checked before anything is
written; an output folder holding a different config is refused unless `force`.

    DIR/config.json      the SweepConfig (one flat JSON object)
    DIR/results.csv      one row per cell and attacked message (columns: RESULT_COLUMNS); each
                         row's `config_hash` is its config's digest, and a table holding rows
                         of another config is refused (`check_rows`)
    DIR/samples/*.npy    16 held-out originals and each row's reconstructions of them
    DIR/figures/*.png    trade-off, dCor and SSIM against alpha, reconstruction grids
    DIR/ranking.md, .csv the defences at matched utility (`nopeek.sweeps._ranking`), and
                         figures/defence_frontier.png, when the grid has several defences

Beyond one process, shards (`--shard I/N`) and a Ray cluster (`--ray`) run the same groups
through `load_inputs` and `run_group`, so their rows are these rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nopeek import data as data_lib
import attacks
from nopeek.attacking import attacker_indices, heldout_split
from nopeek.core import check_output_folder, check_writable, make_output_folder, read_json, relieve_code_maps, write_json
from nopeek.defences import DEFENCES
from nopeek.errors import ConfigError
from nopeek.protocol import model_blocks
from nopeek.report import write_report
from nopeek.sweeps._columns import cell_columns, message_attacks
from nopeek.sweeps._config import Cell, SweepConfig, cells, check_sweep
from nopeek.sweeps._provenance import check_rows
from nopeek.sweeps._results import CELL_COLUMNS, append_rows, cell_key, read_rows
from nopeek.sweeps._ranking import write_ranking
from nopeek.sweeps._summary import write_summary
from nopeek.training import collapse_reason, data_shards, evaluate, leak_entries, train_stack

N_SAMPLES = 16  # held-out samples kept for the reconstruction grids
RESUME_DIR = ".resume"  # DIR/.resume/*.npz: epoch checkpoints of the stacks in progress


# ---- the output folder ---------------------------------------------------------------


def finished_cells(out: str, config: SweepConfig) -> set:
    """The cells results.csv of `out` holds, after checking that its rows are this config's."""
    path = os.path.join(out, "results.csv")
    rows = read_rows(path)
    check_rows(path, rows, config, out)
    return {cell_key(r) for r in rows}


def check_output(out: str, config: SweepConfig, force: bool) -> bool:
    """Whether `out` holds results of another config that `force` discards; refuse it without
    `force`, and refuse a place `out` cannot be made or a folder that holds anything but a
    sweep (`check_writable`: another command's results, files nopeek did not write; `force`
    does not reach those). Reads only: nothing is written."""
    check_output_folder(out)
    check_writable(out, ("sweep",), force=force, replaces=False)
    config_path = os.path.join(out, "config.json")
    if not os.path.exists(config_path):
        return False
    try:
        old = SweepConfig.from_dict(read_json(config_path)).to_dict()
    except (OSError, ValueError) as err:
        if not force:
            raise ConfigError(f"{config_path}: unreadable ({err}); use another --out, or --force to start afresh") from None
        old = {}
    new = config.to_dict()
    if old != new and not force:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ConfigError(f"{out} holds results of a different sweep config (changed: {', '.join(changed)}); "
                          "use another --out, or --force to discard them")
    return old != new


def check_resumable(out: str, config: SweepConfig, force: bool) -> None:
    """Everything `prepare_output` and resuming would refuse, refused before anything is
    written: a folder of another config (without `force`), rows of another config in its
    results.csv (`check_rows`)."""
    if not check_output(out, config, force):
        finished_cells(out, config)


def _unused(path: str) -> str:
    """`path`, or `path.2`, `path.3`, ... the first that does not exist: an earlier `--force`'s
    discarded results are never overwritten by a later one's."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate


def prepare_output(out: str, config: SweepConfig, force: bool) -> None:
    """Create `out`, or check that it holds the same config (else refuse unless `force`).

    `force` moves the old results.csv aside (`results.csv.discarded`, then `.discarded.2`, ...:
    never over an earlier one) and deletes what the
    old sweep drew and saved (its samples `.npy`, figures `.png`, histories `.json`, its
    ranking, its report page, its epoch checkpoints), so nothing of it mixes with the new one;
    files of other kinds a user put in those folders stay."""
    config_path = os.path.join(out, "config.json")
    discarded = check_output(out, config, force)
    if discarded:
        results = os.path.join(out, "results.csv")
        if os.path.exists(results):
            os.replace(results, _unused(results + ".discarded"))
        shutil.rmtree(os.path.join(out, RESUME_DIR), ignore_errors=True)
        for sub, ext in (("samples", ".npy"), ("figures", ".png"), ("histories", ".json")):
            folder = os.path.join(out, sub)
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                if name.endswith(ext) and os.path.isfile(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        for name in ("ranking.csv", "ranking.md", "summary.csv", "report.html"):  # drawn from the old rows
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        shards = os.path.join(out, "shards")  # a sharded run's files (nopeek.shards): set aside like results.csv
        if os.path.isdir(shards):
            os.replace(shards, _unused(shards + ".discarded"))
    make_output_folder(out)
    if discarded or not os.path.exists(config_path):
        # the same config written by an older nopeek (fewer fields) is kept as written: its
        # rows' config_hash is that file's digest (`nopeek.sweeps._provenance`)
        write_json(config_path, config.to_dict())


# ---- running ---------------------------------------------------------------------------


def run_sweep(config: SweepConfig, out: str, *, force: bool = False, progress: bool = True, log=print) -> list[dict]:
    """Run every missing cell of the sweep, write results and figures; return all rows.

    `log` receives warning lines (diverged and collapsed cells)."""
    from nopeek.plots import sweep_figures

    check_output_folder(out)
    inputs = load_inputs(config)  # a failed start leaves no folder
    check_resumable(out, config, force)
    prepare_output(out, config, force)
    results_path = os.path.join(out, "results.csv")
    done = finished_cells(out, config)
    all_cells = cells(config)
    todo = [c for c in all_cells if c.key(config) not in done]
    samples_dir = os.path.join(out, "samples")
    os.makedirs(samples_dir, exist_ok=True)

    bar = tqdm(total=len(all_cells), initial=len(all_cells) - len(todo), desc="sweep cells", unit="cell", disable=not progress)

    def keep(rows: list[dict], stack: list[Cell]) -> None:
        append_rows(results_path, rows)
        bar.update(len(stack))

    for topology, spec in config.groups():
        group = [c for c in todo if (c.topology, c.cut) == (topology, spec)]
        if not group:
            continue
        bar.set_postfix_str(f"{topology} cut {spec}: training {min(len(group), config.max_stack or len(group))} "
                            "models as one stack")
        run_group(inputs, group, samples_dir, progress=progress, log=log, resume_dir=resume_folder_of(out), keep=keep)
    bar.close()
    # every stack's rows are in results.csv: no training left to resume (a kill during a
    # checkpoint's write may have left its temporary file there)
    shutil.rmtree(resume_folder_of(out), ignore_errors=True)
    rows = read_rows(results_path)
    write_summary(os.path.join(out, "summary.csv"), rows)
    sweep_figures(rows, os.path.join(out, "figures"), samples_dir=samples_dir,
                  histories_dir=os.path.join(out, "histories"))
    write_ranking(rows, out)  # ranking.md, ranking.csv, figures/defence_frontier.png: several defences only
    write_report(out)  # last: the page shows the ranking and every figure
    return rows


@dataclasses.dataclass(frozen=True)
class GroupInputs:
    """What every group of a sweep needs besides its cells; built once per process by
    `load_inputs` (the local sweep, each shard, each Ray worker)."""

    config: SweepConfig
    ds: data_lib.Dataset
    leak_idx: np.ndarray  # (n_leaked,) the attacker's training samples
    chance: float  # accuracy of always guessing the majority test class
    aux_idx: np.ndarray | None = None  # held-out samples that are the attacker's auxiliary data (None: none)
    target_idx: np.ndarray | None = None  # held-out samples every attack is scored on (None: all)


def load_inputs(config: SweepConfig) -> GroupInputs:
    """Check the config and load the data, checking every group against it: everything a
    sweep can refuse is refused here, before anything is written."""
    check_sweep(config)
    ds = data_lib.load_config(config)
    leak_idx = attacker_indices(ds.y_train, leak_fraction=config.leak_fraction, leak_count=config.leak_count,
                                aux_classes=config.aux_classes, seed=config.attack_seed)
    for topology, spec in config.groups():
        data_shards(config.train_config(topology, spec), ds)
    chance = float(np.max(np.bincount(ds.y_test)) / len(ds.y_test))
    aux_idx, target_idx = heldout_split(len(ds.y_test), config.attack_config, config.attacks)
    return GroupInputs(config, ds, leak_idx, chance, aux_idx, target_idx)


def run_group(inputs: GroupInputs, group: list[Cell], samples_dir: str, *, progress: bool = False, log=print,
              resume_dir: str | None = None, keep=None) -> list[dict]:
    """Train, evaluate and attack the cells of one group (one topology and cut list) as one
    stack, or as stacks of at most `max_stack` models (0: one); save their samples into
    `samples_dir`; return their rows (nothing else is written but the checkpoints below).

    resume_dir: where each stack's training saves epoch checkpoints and resumes from them
      (`train_stack`'s), so an interruption during its training or its attacks loses no
      finished epoch. keep(rows, stack): called with each stack's rows as soon as they
      exist, to store them; its checkpoint is removed after it returns."""
    size = inputs.config.max_stack or len(group)
    rows = []
    for start in range(0, len(group), size):
        stack = group[start : start + size]
        stack_rows, checkpoint = _run_stack(inputs, stack, samples_dir, progress=progress, log=log,
                                            resume_dir=resume_dir)
        if keep is not None:
            keep(stack_rows, stack)
        if checkpoint is not None:
            with contextlib.suppress(FileNotFoundError):  # a merge that found every cell may have removed it
                os.remove(checkpoint)
        rows += stack_rows
        relieve_code_maps()  # a long sweep in one process stays below the kernel's limit on memory maps
    return rows


def resume_folder_of(out: str) -> str:
    """The sweep folder's epoch checkpoints of the stacks in progress (hidden: not a result)."""
    return os.path.join(out, RESUME_DIR)


def _run_stack(inputs: GroupInputs, group: list[Cell], samples_dir: str, *, progress: bool = False,
               log=print, resume_dir: str | None = None) -> tuple[list[dict], str | None]:
    """The rows of one stack, and the epoch checkpoint its training left in `resume_dir`."""
    config, ds, leak_idx = inputs.config, inputs.ds, inputs.leak_idx
    topology, spec = group[0].topology, group[0].cut
    tc = config.train_config(topology, spec)
    t0 = time.perf_counter()
    result = train_stack(tc, ds, seeds=[c.seed for c in group], strengths=[c.strengths for c in group],
                         progress=progress, desc=f"{topology} cut {spec}", resume_dir=resume_dir, log=log)
    train_seconds = time.perf_counter() - t0 + result.seconds_resumed  # the interrupted runs' share included
    built = result.built
    _save_histories(os.path.join(os.path.dirname(samples_dir), "histories"), group, result)
    alive = np.flatnonzero(~result.diverged)
    for i in np.flatnonzero(result.diverged):
        log(f"warning: {group[i].name} diverged at epoch {int(result.diverged_epoch[i])} "
            f"(loss {float(result.diverged_loss[i])}); its rows are marked diverged")

    t0 = time.perf_counter()
    hp = {k: (jnp.asarray(v) if not isinstance(v, dict) else {n: jnp.asarray(a) for n, a in v.items()})
          for k, v in result.hparams.items()}
    x_leak, y_leak = ds.x_train[leak_idx], ds.y_train[leak_idx]
    _, sent_leak = evaluate(result.eval_fn, result.state.params, hp, x_leak, y_leak)
    sent_train = None  # every training input's messages, for attacks that read what the server observed
    if any(attacks.ATTACKS[n].reads("observed") or attacks.ATTACKS[n].reads("pool") for n in config.attacks):
        _, sent_train = evaluate(result.eval_fn, result.state.params, hp, ds.x_train, ds.y_train)
    prepared = {k: np.asarray(v) for k, v in built.prepare(jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)).items()}
    prepared_test = {k: np.asarray(v) for k, v in built.prepare(jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)).items()}
    eval_seconds = time.perf_counter() - t0

    _, shards_test = data_shards(tc, ds)
    entries = leak_entries(built, shards_test)
    t0 = time.perf_counter()
    target_idx = inputs.target_idx if inputs.target_idx is not None else np.arange(len(ds.x_test))
    scores = message_attacks(config, ds, entries, result, alive, sent_leak, prepared, prepared_test, leak_idx,
                             sent_train=sent_train, aux_idx=inputs.aux_idx, target_idx=target_idx, progress=progress,
                             desc=f"{topology} cut {spec}: attacks")
    extra = cell_columns(config, ds, group, result, alive, log)  # label attacks, FSHA
    attack_seconds = time.perf_counter() - t0
    timing = {"train_seconds": round(train_seconds, 2), "attack_seconds": round(attack_seconds, 2),
              "eval_seconds": round(eval_seconds, 2)}
    return _rows(config, group, entries, result, scores, prepared_test, samples_dir, inputs.chance, timing, log, extra,
                 target_idx=target_idx), result.checkpoint


def _save_histories(folder: str, group, result) -> None:
    """Each cell's per-epoch history (accuracy, held-out dCor, losses) as DIR/histories/CELL.json."""
    for i, cell in enumerate(group):
        rows = [{k: (v[i] if isinstance(v, list) else v) for k, v in row.items()} for row in result.history]
        write_json(os.path.join(folder, f"{cell.name}.json"),
                   {**dataclasses.asdict(cell), "alpha": cell.alpha, "noise_scale": cell.noise_scale, "history": rows})


def _validation(result, entry, i) -> dict:
    """The validation split's accuracy and dCor of model i (empty without a validation split)."""
    if not result.val_accuracy:
        return {}
    first = next(iter(result.built.tasks))
    return {"val_accuracy": float(result.val_accuracy[first][i]),
            "val_dcor": float(result.val_leakage[(entry.party, entry.label)][i])}


def _rows(config, group, entries, result, scores, prepared_test, samples_dir, chance, timing, log, extra=None,
          target_idx=None) -> list[dict]:
    """One row per (cell, attacked message); samples saved for the grids (the first
    attacked targets: `target_idx`, the held-out samples the attacks are scored on);
    `extra[i]`: more columns of cell i (label attacks, FSHA)."""
    rows, digest = [], config.digest()
    blocks = model_blocks(result.config.model, next(iter(result.built.tasks.values())), result.config.widths)
    for e in entries:
        originals_file = f"originals-{e.party}.npy" if e.replica is not None else "originals.npy"
        source = e.source_view(prepared_test[e.source])
        subset = e.subset if e.subset is not None else np.arange(len(source))
        shown = subset if target_idx is None else target_idx[np.isin(target_idx, subset)]
        np.save(os.path.join(samples_dir, originals_file), source[shown[:N_SAMPLES]])
        z_all = np.asarray(e.view(result.messages_test[e.message], models_axis=True))
        for i, cell in enumerate(group):
            base = {**dict(zip(CELL_COLUMNS, cell.key(config))), "party": e.party, "message": e.label,
                    "config_hash": digest, "leakage": config.leakage, "epochs": config.epochs, "group_size": len(group),
                    "acts_on": DEFENCES[cell.defense].acts_on if cell.defense in DEFENCES else "",
                    "cut_block": result.built.cut_block(e.message, blocks),
                    "cut_bytes_per_sample": int(np.prod(z_all.shape[2:])) * 4, **timing,
                    "originals_file": originals_file}
            if result.diverged[i]:
                rows.append({**base, "diverged": True, "diverged_epoch": int(result.diverged_epoch[i]),
                             "collapsed": False, "samples_file": ""})
                continue
            accuracy = float(result.test_accuracy[i])
            reason = collapse_reason(accuracy, chance, z_all[i][subset])
            s = dict(scores.get((i, e.party, e.label), {}))
            samples = s.pop("samples", None)
            samples_file = ""
            if samples is not None:
                samples_file = f"{cell.name}-{e.party}-{e.label}.npy".replace("[", "_").replace("]", "")
                np.save(os.path.join(samples_dir, samples_file), samples)
            row = {**base, "accuracy": accuracy, "dcor": float(result.leakage[(e.party, e.label)][i]),
                   **{name: float(v[i]) for name, v in result.readings[(e.party, e.label)].items()},
                   **_validation(result, e, i),
                   "task_accuracies": " ".join(f"{k}={float(v[i]):.4f}" for k, v in result.task_accuracy.items()),
                   "classifier_clean_accuracy": s.pop("classifier_clean_accuracy", ""),
                   "diverged": False, "diverged_epoch": 0, "collapsed": bool(reason), "collapse_reason": reason,
                   "samples_file": samples_file, **result.privacy(i), **(extra or {}).get(i, {}), **s}
            if reason and e is entries[0]:
                log(f"warning: {cell.name} collapsed ({reason}): accuracy {accuracy:.3f}, dCor {row['dcor']:.3f}")
            rows.append(row)
    return rows
