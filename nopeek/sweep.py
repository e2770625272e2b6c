"""Leakage sweeps: topologies x cuts x defences x seeds -> rows of `results.csv`.

For each group (one topology at one cut list), every defence cell (no defence, NoPeek at
each alpha, the noise baseline at each scale) and seed is trained together as one stack
(`nopeek.train.train_stack`), and the inversion decoders against each attacked message
are fitted together too (`attacks.fit_decoders`). A group's rows are appended to
`results.csv` in one atomic replace, so killing the process at any moment (even
`kill -9`) loses at most the group in progress, and running the same command again
finishes only the missing cells. The whole config is checked before anything is
written; an output folder holding a different config is refused unless `force`.

    DIR/config.json      the SweepConfig (one flat JSON object)
    DIR/results.csv      one row per cell and attacked message (columns: RESULT_COLUMNS)
    DIR/samples/*.npy    16 held-out originals and each row's reconstructions of them
    DIR/figures/*.png    trade-off, dCor and SSIM against alpha, reconstruction grids

Beyond one process, `nopeek.shards` (`--shard I/N`) and `nopeek.ray_executor` (`--ray`) run
the same groups through `load_inputs` and `run_group`, so their rows are these rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import field

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import attacks
from nopeek import data as data_lib
from nopeek import sweep_dishonest
from nopeek.attack_run import AttackConfig, attacker_indices
from nopeek.config import (
    Composed, ConfigError, DataConfig, ModelConfig, Section, TrainConfig, TrainingConfig, finite, raise_first_failure,
)
from nopeek.fsha import FSHAConfig
from nopeek.io import read_json, write_json
from nopeek.models import model_blocks
from nopeek.results import (
    CELL_COLUMNS, KEY_COLUMNS, RESULT_COLUMNS, append_rows, cell_key, fmt_number, read_rows, write_rows,
)
from nopeek.stacking import over_stack, resolve_stack_mode, shard_models
from nopeek.topologies import TOPOLOGIES, TopologyError
from nopeek.train import data_shards, evaluate, has_conv, leak_entries, train_stack

N_SAMPLES = 16  # held-out samples kept for the reconstruction grids
DEFENSES = ("none", "nopeek", "noise")


def parse_cut_spec(spec: str) -> tuple[int, ...]:
    """"4" -> (4,); "2-5" -> (2, 5): the cut list of one cell."""
    try:
        cuts = tuple(int(p) for p in str(spec).split("-"))
    except ValueError:
        raise ConfigError(f"--cuts: {spec!r} is not a cut (an int, or ints joined by '-' like 2-5)") from None
    return cuts


def cut_spec(cuts) -> str:
    return "-".join(str(int(c)) for c in cuts)


@dataclasses.dataclass(frozen=True)
class GridConfig(Section):
    """The grid: its lists replace the per-cell fields topology, cuts, alpha, noise_scale, seed."""

    topologies: tuple[str, ...] = field(default=("vanilla",), metadata={"help": "configurations (see `nopeek train --topology`)"})
    cuts: tuple[str, ...] = field(default=("1",), metadata={"help": "cut lists, one per cell: 4 or 2-5 (two cuts); each goes to the topologies it fits"})
    alphas: tuple[float, ...] = field(default=(0.0, 1.0), metadata={"help": "NoPeek weights (0 = no defence)"})
    noise_scales: tuple[float, ...] = field(default=(), metadata={"help": "noise-defence scales (empty: none)"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "model seeds (initialisation, data order, noise)"})
    label_defenses: tuple[str, ...] = field(default=(), metadata={"help": "label defences (maxnorm, marvell; binary tasks): one cell per defence and strength"})
    label_strengths: tuple[float, ...] = field(default=(), metadata={"help": "their strengths (written in the noise_scale column)"})

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "cuts" in d and isinstance(d["cuts"], (list, tuple)):
            cuts = d["cuts"]
            for c in cuts:
                if isinstance(c, bool) or not isinstance(c, (int, str)):
                    raise ConfigError(f"cuts: expected a list of cut lists (ints like 4 or strings like \"2-5\"), "
                                      f"got {type(c).__name__} {c!r} in the list")
            d["cuts"] = [str(c) for c in cuts]
        return super().from_dict(d)

    def validate(self) -> "GridConfig":
        checks = [
            (len(self.topologies) > 0, "--topologies must name at least one topology"),
            (all(t in TOPOLOGIES for t in self.topologies), f"--topologies must be among {', '.join(TOPOLOGIES)}, got {','.join(self.topologies)}"),
            (len(self.cuts) > 0, "--cuts must name at least one cut"),
            (len(self.alphas) > 0 or len(self.noise_scales) > 0, "give at least one alpha or noise scale"),
            (all(finite(a) and a >= 0 for a in self.alphas), f"--alphas must be finite and >= 0, got {self.alphas}"),
            (all(finite(s) and s > 0 for s in self.noise_scales), f"--noise-scales must be finite and > 0, got {self.noise_scales}"),
            (len(self.seeds) > 0, "--seeds must name at least one seed"),
            (len(set(self.seeds)) == len(self.seeds), f"--seeds must be distinct, got {self.seeds}"),
            (all(s >= 0 for s in self.seeds), f"--seeds must be >= 0, got {self.seeds}"),
        ]
        raise_first_failure(checks)
        for spec in self.cuts:
            cuts = parse_cut_spec(spec)
            if any(b <= a for a, b in zip(cuts, cuts[1:])):
                raise ConfigError(f"--cuts: {spec} must be increasing")
        return self


class SweepConfig(Composed):
    """The grid (topologies x cuts x alphas x noise scales x seeds) and how each cell is
    trained (data, model, training sections) and attacked (attack section)."""

    SECTIONS = (("data_config", DataConfig), ("model_config", ModelConfig), ("training_config", TrainingConfig),
                ("grid_config", GridConfig), ("attack_config", AttackConfig), ("fsha_config", FSHAConfig))
    EXCLUDED = frozenset({
        ("model_config", "topology"), ("model_config", "cuts"),
        ("training_config", "alpha"), ("training_config", "noise_scale"), ("training_config", "seed"),
        ("training_config", "label_defense"), ("training_config", "label_strength"), ("fsha_config", "checkpoint_every"),
        ("attack_config", "attack"), ("attack_config", "message"), ("attack_config", "n_targets"),
        ("attack_config", "tv_weight"),
    })

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "data_seed" in d and "split_seed" not in d:  # sweeps written before the engine
            d["split_seed"] = d.pop("data_seed")
        return super().from_dict(d)

    def groups(self) -> list[tuple[str, str]]:
        """(topology, cut spec) pairs, each trained as one stack: every cut list goes to every
        topology that takes that many cuts."""
        out = []
        for topology in self.topologies:
            for spec in self.cuts:
                if _fits(topology, parse_cut_spec(spec)):
                    out.append((topology, spec))
        return out

    def train_config(self, topology: str, spec: str) -> TrainConfig:
        """The TrainConfig of one group's cells (alpha, noise scale, seed come per cell)."""
        return TrainConfig(
            data_config=self.data_config,
            model_config=dataclasses.replace(self.model_config, topology=topology, cuts=parse_cut_spec(spec)),
            training_config=self.training_config,
        )

    def validate(self) -> "SweepConfig":
        super().validate()
        attack_steps = self.attack_config.attack_steps
        if attack_steps is not None and attack_steps < 0:
            raise ConfigError(f"--attack-steps must be >= 0 (0: no attack), got {attack_steps}")
        for spec in self.cuts:
            if not any(_fits(t, parse_cut_spec(spec)) for t in self.topologies):
                raise ConfigError(f"--cuts {spec}: no topology of {','.join(self.topologies)} takes "
                                  f"{len(parse_cut_spec(spec))} cut(s)")
        for t in self.topologies:
            if not any(_fits(t, parse_cut_spec(s)) for s in self.cuts):
                raise ConfigError(f"--topologies {t}: takes {TOPOLOGIES[t].cuts.replace('>=', 'at least ')} cut(s); "
                                  f"none of --cuts {','.join(self.cuts)} fits (e.g. 2-4 for two cuts)")
        shape, classes = data_lib.sample_shape(self.dataset, self.data_dir)
        sweep_dishonest.check_grid(self.grid_config, classes)
        sweep_dishonest.check_attack(self, classes)
        n_blocks = len(model_blocks(self.model, classes, self.widths))
        for topology, spec in self.groups():
            try:
                self.train_config(topology, spec).validate()
                from nopeek.train import build_topology

                if not all(1 <= c < n_blocks for c in parse_cut_spec(spec)):
                    raise ConfigError(f"--cuts {spec} out of range: {self.model} has cuts 1..{n_blocks - 1}")
                build_topology(self.train_config(topology, spec), shape, classes)
            except TopologyError as err:
                raise ConfigError(f"{topology} at cuts {spec}: {err}") from err
        return self


def _fits(topology: str, cuts) -> bool:
    rule = TOPOLOGIES[topology].cuts
    return {"1": len(cuts) == 1, "2": len(cuts) == 2, ">=2": len(cuts) >= 2}[rule]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the grid: a defence of one topology at one cut list, one seed."""

    topology: str
    cut: str  # cut spec, "4" or "2-5"
    defense: str  # "none", "nopeek", "noise", or a label defence ("maxnorm", "marvell": strength in noise_scale)
    alpha: float
    noise_scale: float
    seed: int

    def key(self, config: SweepConfig) -> tuple:
        return (config.dataset, config.model, self.topology, self.cut, self.defense,
                fmt_number(self.alpha), fmt_number(self.noise_scale), str(self.seed))

    @property
    def name(self) -> str:
        return (f"{self.topology}-cut{self.cut}-{self.defense}-a{fmt_number(self.alpha)}"
                f"-n{fmt_number(self.noise_scale)}-s{self.seed}")


def cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, grouped by (topology, cut list): the unit trained as one stack."""
    out = []
    for topology, spec in config.groups():
        for seed in config.seeds:
            defences = [("none", 0.0, 0.0)]
            defences += [("nopeek", float(a), 0.0) for a in config.alphas if a > 0]
            defences += [("noise", 0.0, float(s)) for s in config.noise_scales]
            defences += sweep_dishonest.label_defences(config)
            out += [Cell(topology, spec, d, a, s, seed) for d, a, s in defences]
    return out


# ---- the output folder ---------------------------------------------------------------


def prepare_output(out: str, config: SweepConfig, force: bool) -> None:
    """Create `out`, or check that it holds the same config (else refuse unless `force`).

    `force` moves the old results.csv aside (`results.csv.discarded`) and deletes the old
    samples and figures, so nothing of the old sweep mixes with the new one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out}: is a file, not a folder")
    config_path = os.path.join(out, "config.json")
    if os.path.exists(config_path):
        try:
            old = SweepConfig.from_dict(read_json(config_path)).to_dict()
        except (OSError, ValueError) as err:
            if not force:
                raise ConfigError(f"{config_path}: unreadable ({err}); use another --out, or --force to start afresh") from None
            old = {}
        new = config.to_dict()
        if old != new:
            if not force:
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ConfigError(
                    f"{out} holds results of a different sweep config (changed: {', '.join(changed)}); "
                    "use another --out, or --force to discard them"
                )
            results = os.path.join(out, "results.csv")
            if os.path.exists(results):
                os.replace(results, results + ".discarded")
            for sub in ("samples", "figures", "histories"):
                shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
            shards = os.path.join(out, "shards")  # a sharded run's files (nopeek.shards): set aside like results.csv
            if os.path.isdir(shards):
                shutil.rmtree(shards + ".discarded", ignore_errors=True)
                os.replace(shards, shards + ".discarded")
    os.makedirs(out, exist_ok=True)
    write_json(config_path, config.to_dict())


# ---- running ---------------------------------------------------------------------------


def _better(kind: str, attack: float, baseline: float) -> float:
    """The leakage a defence is judged by: the better of the attack and its free baseline."""
    values = [v for v in (attack, baseline) if np.isfinite(v)]
    if not values:
        return float("nan")
    return min(values) if kind == "mse" else max(values)


def collapse_reason(accuracy: float, chance: float, z_test: np.ndarray) -> str:
    """Why a trained model counts as collapsed, or "": accuracy at chance (within 1 point
    of always guessing the majority class), or a message constant over the held-out set."""
    if np.isfinite(accuracy) and accuracy <= chance + 0.01:
        return "accuracy at chance"
    flat = np.asarray(z_test, np.float64).reshape(len(z_test), -1)
    spread = float(np.max(np.ptp(flat, axis=0))) if flat.size else 0.0
    scale = float(np.max(np.abs(flat))) if flat.size else 0.0
    if spread <= 1e-6 * (1.0 + scale):
        return "constant activations"
    return ""


def _message_block(result, message: str, n_classes: int) -> str:
    """The name of the block after which `message` is produced."""
    cuts = result.config.resolved_cuts(n_classes)
    blocks = model_blocks(result.config.model, n_classes, result.config.widths)
    hop = 0 if message in ("z",) else max(0, int(message[1:]) - 1) if message[1:].isdigit() else 0
    return blocks[cuts[min(hop, len(cuts) - 1)] - 1].name


def run_sweep(config: SweepConfig, out: str, *, force: bool = False, progress: bool = True, log=print) -> list[dict]:
    """Run every missing cell of the sweep, write results and figures; return all rows.

    `log` receives warning lines (diverged and collapsed cells)."""
    from nopeek.plots import sweep_figures

    inputs = load_inputs(config)  # a failed start leaves no folder
    prepare_output(out, config, force)
    results_path = os.path.join(out, "results.csv")
    done = {cell_key(r) for r in read_rows(results_path)}
    all_cells = cells(config)
    todo = [c for c in all_cells if c.key(config) not in done]
    samples_dir = os.path.join(out, "samples")
    os.makedirs(samples_dir, exist_ok=True)

    bar = tqdm(total=len(all_cells), initial=len(all_cells) - len(todo), desc="sweep cells", unit="cell", disable=not progress)
    for topology, spec in config.groups():
        group = [c for c in todo if (c.topology, c.cut) == (topology, spec)]
        if not group:
            continue
        bar.set_postfix_str(f"{topology} cut {spec}: training {len(group)} models as one stack")
        rows = run_group(inputs, group, samples_dir, progress=progress, log=log)
        append_rows(results_path, rows)
        bar.update(len(group))
    bar.close()
    rows = read_rows(results_path)
    write_summary(os.path.join(out, "summary.csv"), rows)
    sweep_figures(rows, os.path.join(out, "figures"), samples_dir=samples_dir,
                  histories_dir=os.path.join(out, "histories"))
    return rows


@dataclasses.dataclass(frozen=True)
class GroupInputs:
    """What every group of a sweep needs besides its cells; built once per process by
    `load_inputs` (the local sweep, each shard, each Ray worker)."""

    config: SweepConfig
    ds: data_lib.Dataset
    leak_idx: np.ndarray  # (n_leaked,) the attacker's training samples
    attack_steps: int
    chance: float  # accuracy of always guessing the majority test class


def load_inputs(config: SweepConfig) -> GroupInputs:
    """Check the config and load the data, checking every group against it: everything a
    sweep can refuse is refused here, before anything is written."""
    config.validate()
    ds = data_lib.load(config.dataset, seed=config.split_seed, data_dir=config.data_dir, limit=config.limit)
    attack_steps = config.attack_config.resolved("attack_steps")
    leak_idx = attacker_indices(ds.y_train, leak_fraction=config.leak_fraction, leak_count=config.leak_count,
                                aux_classes=config.aux_classes, seed=config.attack_seed)
    for topology, spec in config.groups():
        data_shards(config.train_config(topology, spec), ds)
    chance = float(np.max(np.bincount(ds.y_test)) / len(ds.y_test))
    return GroupInputs(config, ds, leak_idx, attack_steps, chance)


def run_group(inputs: GroupInputs, group: list[Cell], samples_dir: str, *, progress: bool = False, log=print) -> list[dict]:
    """Train, evaluate and attack the cells of one group (one topology and cut list) as one
    stack; save their samples into `samples_dir`; return their rows (nothing else is written)."""
    return _run_group(inputs.config, inputs.ds, group, inputs.leak_idx, inputs.attack_steps, samples_dir,
                      inputs.chance, progress, log)


def _run_group(config: SweepConfig, ds, group, leak_idx, attack_steps, samples_dir, chance, progress, log) -> list[dict]:
    topology, spec = group[0].topology, group[0].cut
    tc = config.train_config(topology, spec)
    t0 = time.perf_counter()
    result = train_stack(tc, ds, alphas=[c.alpha for c in group], seeds=[c.seed for c in group], progress=progress,
                         desc=f"{topology} cut {spec}", **sweep_dishonest.train_lists(group))
    train_seconds = time.perf_counter() - t0
    built = result.built
    _save_histories(os.path.join(os.path.dirname(samples_dir), "histories"), group, result)
    alive = np.flatnonzero(~result.diverged)
    for i in np.flatnonzero(result.diverged):
        log(f"warning: {group[i].name} diverged at epoch {int(result.diverged_epoch[i])} "
            f"(loss {float(result.diverged_loss[i])}); its rows are marked diverged")

    t0 = time.perf_counter()
    hp = {k: jnp.asarray(v) for k, v in result.hparams.items()}
    x_leak, y_leak = ds.x_train[leak_idx], ds.y_train[leak_idx]
    _, sent_leak = evaluate(result.eval_fn, result.state.params, hp, x_leak, y_leak)
    prepared = {k: np.asarray(v) for k, v in built.prepare(jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)).items()}
    prepared_test = {k: np.asarray(v) for k, v in built.prepare(jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)).items()}
    eval_seconds = time.perf_counter() - t0

    shards_test = None
    if topology == "round_robin":
        from nopeek.partition import partition

        shards_test = partition(ds.y_test, tc.clients, tc.partition, tc.dirichlet_alpha, tc.split_seed + 1)
    entries = leak_entries(built, shards_test)
    t0 = time.perf_counter()
    scores = _attack_entries(config, ds, entries, result, alive, sent_leak, prepared, prepared_test, leak_idx, attack_steps)
    extra = sweep_dishonest.extra_columns(config, ds, group, result, alive, log)  # label AUCs, FSHA
    attack_seconds = time.perf_counter() - t0
    timing = {"train_seconds": round(train_seconds, 2), "attack_seconds": round(attack_seconds, 2),
              "eval_seconds": round(eval_seconds, 2)}
    return _rows(config, group, entries, result, scores, prepared_test, samples_dir, chance, timing, log, extra)


def _save_histories(folder: str, group, result) -> None:
    """Each cell's per-epoch history (accuracy, held-out dCor, losses) as DIR/histories/CELL.json."""
    for i, cell in enumerate(group):
        rows = [{k: (v[i] if isinstance(v, list) else v) for k, v in row.items()} for row in result.history]
        write_json(os.path.join(folder, f"{cell.name}.json"), {**dataclasses.asdict(cell), "history": rows})


def _attack_entries(config, ds, entries, result, alive, sent_leak, prepared, prepared_test, leak_idx, attack_steps):
    """Decoder scores {(model index, party, label): scores} for every attacked message of the
    models that did not diverge; the decoders of one message are fitted as one stack."""
    scores: dict = {}
    if not attack_steps or not len(alive):
        return scores
    classifiers: dict = {}
    fitted: dict = {}
    for e in entries:
        src_train, src_test = e.source_view(prepared[e.source]), e.source_view(prepared_test[e.source])
        fit_key = (e.label, e.replica)  # round robin's clients share one message function
        if fit_key not in fitted:
            z_leak = np.asarray(e.view(sent_leak[e.message][alive], models_axis=True))
            z_test = np.asarray(e.view(result.messages_test[e.message][alive], models_axis=True))
            mode = resolve_stack_mode("auto", has_conv=z_leak.ndim == 5)
            decoders = attacks.fit_decoders(
                z_leak, src_train[leak_idx], steps=attack_steps, lr=config.attack_config.resolved("attack_lr"),
                seed=config.attack_seed, map_models=lambda fn, in_axes, mode=mode: over_stack(fn, mode, in_axes),
                place=shard_models if mode == "vmap" else None,
            )
            fitted[fit_key] = decoders.reconstruct(z_test)
        key = (e.source, e.replica)
        if key not in classifiers:
            classifiers[key] = attacks.ReferenceClassifier(src_train, ds.y_train)
        subset = e.subset if e.subset is not None else np.arange(len(ds.x_test))
        for j, i in enumerate(alive):
            x_hat = fitted[fit_key][j][subset]
            s = attacks.scores_with_baseline(src_test[subset], x_hat, src_train[leak_idx], classifier=classifiers[key],
                                             y=ds.y_test[subset])
            s["classifier_clean_accuracy"] = classifiers[key].accuracy(src_test[subset], ds.y_test[subset])
            s["samples"] = x_hat[:N_SAMPLES]
            scores[(i, e.party, e.label)] = s
    return scores


def _rows(config, group, entries, result, scores, prepared_test, samples_dir, chance, timing, log, extra=None) -> list[dict]:
    """One row per (cell, attacked message); samples saved for the grids; `extra[i]`: more
    columns of cell i (nopeek.sweep_dishonest)."""
    rows = []
    n_classes = next(iter(result.built.tasks.values()))
    for e in entries:
        originals_file = f"originals-{e.party}.npy" if e.replica is not None else "originals.npy"
        source = e.source_view(prepared_test[e.source])
        subset = e.subset if e.subset is not None else np.arange(len(source))
        np.save(os.path.join(samples_dir, originals_file), source[subset[:N_SAMPLES]])
        z_all = np.asarray(e.view(result.messages_test[e.message], models_axis=True))
        for i, cell in enumerate(group):
            base = {**dict(zip(CELL_COLUMNS, cell.key(config))), "party": e.party, "message": e.label,
                    "leakage": config.leakage, "epochs": config.epochs, "group_size": len(group),
                    "cut_block": _message_block(result, e.message, n_classes),
                    "cut_bytes_per_sample": int(np.prod(z_all.shape[2:])) * 4, **timing,
                    "originals_file": originals_file}
            if result.diverged[i]:
                rows.append({**base, "diverged": True, "diverged_epoch": int(result.diverged_epoch[i]),
                             "collapsed": False, "samples_file": ""})
                continue
            accuracy = float(result.test_accuracy[i])
            reason = collapse_reason(accuracy, chance, z_all[i][subset])
            s = scores.get((i, e.party, e.label), {})
            samples_file = ""
            if "samples" in s:
                samples_file = f"{cell.name}-{e.party}-{e.label}.npy".replace("[", "_").replace("]", "")
                np.save(os.path.join(samples_dir, samples_file), s["samples"])
            row = {**base, "accuracy": accuracy, "dcor": float(result.leakage[(e.party, e.label)][i]),
                   "task_accuracies": " ".join(f"{k}={float(v[i]):.4f}" for k, v in result.task_accuracy.items()),
                   "classifier_clean_accuracy": s.get("classifier_clean_accuracy", ""),
                   "diverged": False, "diverged_epoch": 0, "collapsed": bool(reason), "collapse_reason": reason,
                   "samples_file": samples_file, **(extra or {}).get(i, {})}
            for k in ("mse", "psnr", "ssim", "dcor", "classifier_accuracy"):
                if k in s:
                    row[f"attack_{k}"], row[f"baseline_{k}"] = s[k], s[f"baseline_{k}"]
                    row[f"best_{k}"] = _better(k, s[k], s[f"baseline_{k}"])
            if reason and e is entries[0]:
                log(f"warning: {cell.name} collapsed ({reason}): accuracy {accuracy:.3f}, dCor {row['dcor']:.3f}")
            rows.append(row)
    return rows


SUMMARY_METRICS = ("accuracy", "dcor", "attack_ssim", "best_ssim", "best_mse", "attack_classifier_accuracy")


def summarize(rows: list[dict]) -> list[dict]:
    """One row per setting (every key but the seed): the number of seeds, and for each metric
    its mean over seeds and the half-width of the 95% t-interval (`*_ci`, 0 for one seed).
    Diverged seeds are counted (`diverged`) but left out of the means."""
    from nopeek.plots import _mean_ci

    groups: dict = {}
    for r in rows:
        key = tuple(r[c] for c in KEY_COLUMNS if c != "seed")
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        live = [m for m in members if m.get("diverged") != "true"]
        row = dict(zip([c for c in KEY_COLUMNS if c != "seed"], key))
        row.update(seeds=len(members), diverged=len(members) - len(live),
                   collapsed=sum(m.get("collapsed") == "true" for m in live))
        for metric in SUMMARY_METRICS:
            mean, ci = _mean_ci([_num(m.get(metric)) for m in live])
            row[metric], row[f"{metric}_ci"] = mean, ci
        out.append(row)
    return out


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def write_summary(path: str, rows: list[dict]) -> None:
    """summary.csv: `summarize(rows)`, written atomically."""
    import csv
    import io

    from nopeek.io import atomic_write_text

    summary = summarize(rows)
    columns = [c for c in KEY_COLUMNS if c != "seed"] + ["seeds", "diverged", "collapsed"]
    columns += [name for m in SUMMARY_METRICS for name in (m, f"{m}_ci")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(path, buf.getvalue())


def format_table(rows: list[dict]) -> str:
    """A compact text table of the results: one line per row (cell and message), or with
    several seeds one line per setting with means and 95% intervals over the seeds."""
    if len({r["seed"] for r in rows}) > 1:
        return format_summary(summarize(rows))
    several = len({(r["topology"], r["party"], r["message"]) for r in rows}) > 1
    head = (f"{'topology':11} {'cut':>5} " if several else f"{'cut':>5} ") + (f"{'message':15} " if several else "")
    head += f"{'defense':8} {'alpha':>6} {'noise':>6} {'seed':>4} {'acc':>6} {'dCor':>6} {'atk SSIM':>8} {'base SSIM':>9} {'best SSIM':>9} {'atk clf':>7}  note"
    lines = [head, "-" * len(head)]

    def num(v, width, digits=3):
        try:
            return f"{float(v):>{width}.{digits}f}"
        except (TypeError, ValueError):
            return f"{'-':>{width}}"

    def order(r):
        return (r["topology"], r["cut"], r["party"], r["message"], r["defense"], float(r["alpha"]), float(r["noise_scale"]), int(r["seed"]))

    for r in sorted(rows, key=order):
        note = ("diverged" if r.get("diverged") == "true" else
                ("collapsed: " + r.get("collapse_reason", "") if r.get("collapsed") == "true" else ""))
        line = (f"{r['topology']:11} {r['cut']:>5} " if several else f"{r['cut']:>5} ")
        line += f"{r['party'] + ':' + r['message']:15} " if several else ""
        line += (f"{r['defense']:8} {float(r['alpha']):>6g} {float(r['noise_scale']):>6g} {r['seed']:>4} "
                 f"{num(r.get('accuracy'), 6)} {num(r.get('dcor'), 6)} {num(r.get('attack_ssim'), 8)} "
                 f"{num(r.get('baseline_ssim'), 9)} {num(r.get('best_ssim'), 9)} {num(r.get('attack_classifier_accuracy'), 7)}  {note}")
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_summary(summary: list[dict]) -> str:
    """The summary table: mean +- 95% interval over seeds per setting."""
    several = len({(r["topology"], r["party"], r["message"]) for r in summary}) > 1
    head = (f"{'topology':11} {'cut':>5} {'message':15} " if several else f"{'cut':>5} ")
    head += (f"{'defense':8} {'alpha':>6} {'noise':>6} {'seeds':>5} {'acc':>13} {'dCor':>13} {'best SSIM':>13} "
             f"{'atk clf':>13}  note")
    lines = [head, "-" * len(head)]

    def pm(r, m):
        v, ci = r[m], r[f"{m}_ci"]
        return f"{'-':>13}" if not np.isfinite(v) else f"{v:>6.3f}+-{ci:.3f}".rjust(13)

    for r in sorted(summary, key=lambda r: (r["topology"], r["cut"], r["party"], r["message"], r["defense"],
                                            float(r["alpha"]), float(r["noise_scale"]))):
        note = ", ".join(t for t in (f"{r['diverged']} diverged" if r["diverged"] else "",
                                     f"{r['collapsed']} collapsed" if r["collapsed"] else "") if t)
        line = (f"{r['topology']:11} {r['cut']:>5} {r['party'] + ':' + r['message']:15} " if several else f"{r['cut']:>5} ")
        line += (f"{r['defense']:8} {float(r['alpha']):>6g} {float(r['noise_scale']):>6g} {r['seeds']:>5} "
                 f"{pm(r, 'accuracy')} {pm(r, 'dcor')} {pm(r, 'best_ssim')} {pm(r, 'attack_classifier_accuracy')}  {note}")
        lines.append(line.rstrip())
    return "\n".join(lines)


# ---- presets and config files ---------------------------------------------------------


def __getattr__(name):
    """`nopeek.sweep.PRESETS`: the named configurations live in `nopeek.presets`."""
    if name == "PRESETS":
        from nopeek.presets import PRESETS

        return PRESETS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config_file(path: str) -> dict:
    """A partial SweepConfig from a TOML or JSON file (keys = SweepConfig fields)."""
    try:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as fh:
                loaded = tomllib.load(fh)
        else:
            with open(path, encoding="utf-8") as fh:
                loaded = json.load(fh)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the sweep config ({err})") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a table of SweepConfig fields, got {type(loaded).__name__}")
    return loaded


__all__ = ["Cell", "GridConfig", "GroupInputs", "KEY_COLUMNS", "PRESETS", "RESULT_COLUMNS", "SweepConfig", "cells",
           "format_table", "load_config_file", "load_inputs", "read_rows", "run_group", "run_sweep", "write_rows"]
