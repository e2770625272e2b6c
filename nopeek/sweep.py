"""Leakage sweeps: cuts x defences x seeds -> one row of `results.csv` per cell.

For each (dataset, model, cut) group, every defence cell (no defence, NoPeek at each
alpha, the noise baseline at each scale) and seed is trained together as one stack
(`nopeek.train.train_stack`), and the inversion decoders against them are fitted
together too (`attacks.fit_decoders`). A group's rows are appended to `results.csv`
in one atomic replace, so killing the process at any moment (even `kill -9`) loses at
most the group in progress, and running the same command again finishes only the
missing cells. An output folder holding a different config is refused unless `force`.

    DIR/config.json      the SweepConfig
    DIR/results.csv      one row per cell (columns: RESULT_COLUMNS)
    DIR/samples/*.npy    16 held-out originals and each cell's reconstructions of them
    DIR/figures/*.png    trade-off, dCor and SSIM against alpha, reconstruction grids
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from dataclasses import field

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import attacks
from nopeek import data as data_lib
from nopeek.config import ConfigError, JsonConfig, TrainConfig, raise_first_failure
from nopeek.io import atomic_write_text, read_json, write_json
from nopeek.models import MODELS, build_model, list_cuts
from nopeek.split import LEAKAGE_TERMS, NOISE_KINDS
from nopeek.train import evaluate, train_stack

N_SAMPLES = 16  # held-out samples kept for the reconstruction grids

KEY_COLUMNS = ["dataset", "model", "cut", "defense", "alpha", "noise_scale", "seed"]
RESULT_COLUMNS = KEY_COLUMNS + [
    "accuracy", "dcor",
    "attack_mse", "attack_psnr", "attack_ssim", "attack_dcor", "attack_classifier_accuracy",
    "baseline_mse", "baseline_psnr", "baseline_ssim", "baseline_classifier_accuracy",
    "classifier_clean_accuracy", "cut_block", "cut_bytes_per_sample", "leakage", "epochs",
    "group_size", "train_seconds", "attack_seconds", "eval_seconds", "samples_file",
]


@dataclasses.dataclass(frozen=True)
class SweepConfig(JsonConfig):
    """The grid (dataset, model, cuts, alphas, noise scales, seeds) and how each cell is trained and attacked."""

    dataset: str = field(default="mnist5k", metadata={"help": "data set", "choices": tuple(data_lib.LOADERS)})
    model: str = field(default="cnn", metadata={"help": "model", "choices": tuple(MODELS)})
    widths: tuple[int, ...] = field(default=(8, 16, 64, 32), metadata={"help": "model widths; empty = the model's default"})
    cuts: tuple[int, ...] = field(default=(3, 4, 5), metadata={"help": "cut positions"})
    alphas: tuple[float, ...] = field(default=(0.0, 0.1, 0.5, 1.0, 3.0), metadata={"help": "NoPeek weights (0 = no defence)"})
    noise_scales: tuple[float, ...] = field(default=(0.5, 2.0), metadata={"help": "noise-baseline scales (empty: none)"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "model seeds"})
    leakage: str = field(default="dcor", metadata={"help": "NoPeek term", "choices": LEAKAGE_TERMS})
    noise_kind: str = field(default="gaussian", metadata={"help": "noise distribution", "choices": NOISE_KINDS})
    epochs: int = field(default=4, metadata={"help": "training epochs per cell"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    optimizer: str = field(default="adam", metadata={"help": "optimiser", "choices": ("adam", "sgd")})
    task_weight: float = field(default=1.0, metadata={"help": "weight on the cross-entropy"})
    limit: int | None = field(default=None, metadata={"help": "use at most this many training samples"})
    data_seed: int = field(default=0, metadata={"help": "seed of the train/test split and the data order"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with mnist/fashion_mnist/cifar10 files"})
    attack_steps: int = field(default=600, metadata={"help": "decoder training steps (0: no attack)"})
    leak_fraction: float = field(default=0.1, metadata={"help": "share of the training set the attacker holds"})

    def validate(self) -> "SweepConfig":
        self.train_config(self.cuts[0] if self.cuts else 1).validate()
        checks = [
            (len(self.cuts) > 0, "--cuts must name at least one cut"),
            (len(self.alphas) > 0 or len(self.noise_scales) > 0, "give at least one alpha or noise scale"),
            (all(a >= 0 for a in self.alphas), f"--alphas must be >= 0, got {self.alphas}"),
            (all(s > 0 for s in self.noise_scales), f"--noise-scales must be > 0, got {self.noise_scales}"),
            (len(self.seeds) > 0, "--seeds must name at least one seed"),
            (self.attack_steps >= 0, f"--attack-steps must be >= 0, got {self.attack_steps}"),
            (0 < self.leak_fraction <= 1, f"--leak-fraction must be in (0, 1], got {self.leak_fraction}"),
        ]
        raise_first_failure(checks)
        shape, classes = data_lib.sample_shape(self.dataset)
        n_cuts = len(list_cuts(build_model(self.model, shape, classes, self.widths), shape))
        bad = [c for c in self.cuts if not 1 <= c <= n_cuts]
        if bad:
            raise ConfigError(f"--cuts {bad} out of range: {self.model} has cuts 1..{n_cuts}")
        return self

    def train_config(self, cut: int) -> TrainConfig:
        return TrainConfig(
            dataset=self.dataset, model=self.model, widths=self.widths, cut=cut, leakage=self.leakage,
            noise_kind=self.noise_kind, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            optimizer=self.optimizer, task_weight=self.task_weight, seed=self.data_seed,
            data_dir=self.data_dir, limit=self.limit,
        )



@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of the table: a defence at one cut, one seed."""

    cut: int
    defense: str  # "none", "nopeek" or "noise"
    alpha: float
    noise_scale: float
    seed: int

    def key(self, config: SweepConfig) -> tuple:
        return (config.dataset, config.model, str(self.cut), self.defense,
                _fmt(self.alpha), _fmt(self.noise_scale), str(self.seed))

    @property
    def name(self) -> str:
        return f"cut{self.cut}-{self.defense}-a{_fmt(self.alpha)}-n{_fmt(self.noise_scale)}-s{self.seed}"


def _fmt(v: float) -> str:
    return repr(float(v))


def cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, grouped by cut (the unit trained as one stack)."""
    out = []
    for cut in config.cuts:
        for seed in config.seeds:
            defences = [("none", 0.0, 0.0)]
            defences += [("nopeek", float(a), 0.0) for a in config.alphas if a > 0]
            defences += [("noise", 0.0, float(s)) for s in config.noise_scales]
            out += [Cell(cut, d, a, s, seed) for d, a, s in defences]
    return out


# ---- the results table -----------------------------------------------------


def read_results(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def append_rows(path: str, rows: list[dict]) -> None:
    """Add rows to the CSV by writing old + new to a temporary file and renaming it over."""
    existing = read_results(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in existing + rows:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _row_key(row: dict) -> tuple:
    return tuple(row[c] for c in KEY_COLUMNS)


# ---- running ---------------------------------------------------------------


def prepare_output(out: str, config: SweepConfig, force: bool) -> None:
    """Create `out`, or check that it holds the same config (else refuse unless `force`)."""
    os.makedirs(out, exist_ok=True)
    config_path = os.path.join(out, "config.json")
    if os.path.exists(config_path):
        old = read_json(config_path)
        if old != config.to_dict():
            if not force:
                changed = sorted(k for k in set(old) | set(config.to_dict()) if old.get(k) != config.to_dict().get(k))
                raise ConfigError(
                    f"{out} holds results of a different sweep config (changed: {', '.join(changed)}); "
                    "use another --out, or --force to discard them"
                )
            results = os.path.join(out, "results.csv")
            if os.path.exists(results):
                os.replace(results, results + ".discarded")
    write_json(config_path, config.to_dict())


def run_sweep(config: SweepConfig, out: str, *, force: bool = False, progress: bool = True) -> list[dict]:
    """Run every missing cell of the sweep, write results and figures; return all rows."""
    from nopeek.plots import sweep_figures

    config.validate()
    prepare_output(out, config, force)
    results_path = os.path.join(out, "results.csv")
    done = {_row_key(r) for r in read_results(results_path)}
    todo = [c for c in cells(config) if c.key(config) not in done]
    ds = data_lib.load(config.dataset, seed=config.data_seed, data_dir=config.data_dir, limit=config.limit)
    shape = ds.input_shape
    cut_info = {c.cut: c for c in list_cuts(build_model(config.model, shape, ds.num_classes, config.widths), shape)}
    rng = np.random.default_rng(config.data_seed)
    leak_idx = np.sort(rng.choice(len(ds.x_train), max(2, round(config.leak_fraction * len(ds.x_train))), replace=False))
    x_leak = ds.x_train[leak_idx]
    samples_dir = os.path.join(out, "samples")
    os.makedirs(samples_dir, exist_ok=True)
    np.save(os.path.join(samples_dir, "originals.npy"), ds.x_test[:N_SAMPLES])
    classifier = attacks.ReferenceClassifier(ds.x_train, ds.y_train) if config.attack_steps else None
    clean_acc = classifier.accuracy(ds.x_test, ds.y_test) if classifier else float("nan")

    bar = tqdm(total=len(cells(config)), initial=len(cells(config)) - len(todo), desc="sweep cells",
               unit="cell", disable=not progress)
    for cut in config.cuts:
        group = [c for c in todo if c.cut == cut]
        if not group:
            continue
        bar.set_postfix_str(f"cut {cut}: training {len(group)} models as one stack")
        t0 = time.perf_counter()
        result = train_stack(
            config.train_config(cut), ds,
            alphas=[c.alpha for c in group], seeds=[c.seed for c in group],
            noise_scales=[c.noise_scale for c in group], progress=progress, desc=f"cut {cut}",
        )
        train_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        hp = {k: jnp.asarray(v) for k, v in result.hparams.items()}
        _, z_leak = evaluate(result.forward, result.state, hp, x_leak, ds.y_train[leak_idx])
        z_test = result.z_test  # the held-out activations training already measured dCor on
        eval_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        scores = [{} for _ in group]
        if config.attack_steps:
            bar.set_postfix_str(f"cut {cut}: fitting {len(group)} decoders as one stack")
            fitted = attacks.fit_decoders(z_leak, x_leak, steps=config.attack_steps, seed=config.data_seed)
            x_hat = fitted.reconstruct(z_test)
            for i, cell in enumerate(group):
                scores[i] = attacks.scores_with_baseline(ds.x_test, x_hat[i], x_leak, classifier=classifier, y=ds.y_test)
                np.save(os.path.join(samples_dir, f"{cell.name}.npy"), x_hat[i, :N_SAMPLES])
        attack_seconds = time.perf_counter() - t0

        rows = []
        for i, cell in enumerate(group):
            s = scores[i]
            rows.append({
                **dict(zip(KEY_COLUMNS, cell.key(config))),
                "accuracy": result.test_accuracy[i], "dcor": result.dcor[i],
                "attack_mse": s.get("mse", ""), "attack_psnr": s.get("psnr", ""), "attack_ssim": s.get("ssim", ""),
                "attack_dcor": s.get("dcor", ""), "attack_classifier_accuracy": s.get("classifier_accuracy", ""),
                "baseline_mse": s.get("baseline_mse", ""), "baseline_psnr": s.get("baseline_psnr", ""),
                "baseline_ssim": s.get("baseline_ssim", ""),
                "baseline_classifier_accuracy": s.get("baseline_classifier_accuracy", ""),
                "classifier_clean_accuracy": clean_acc, "cut_block": cut_info[cut].block,
                "cut_bytes_per_sample": cut_info[cut].bytes_per_sample, "leakage": config.leakage,
                "epochs": config.epochs, "group_size": len(group), "train_seconds": round(train_seconds, 2),
                "attack_seconds": round(attack_seconds, 2), "eval_seconds": round(eval_seconds, 2),
                "samples_file": f"{cell.name}.npy" if config.attack_steps else "",
            })
        append_rows(results_path, rows)
        bar.update(len(group))
    bar.close()
    rows = read_results(results_path)
    sweep_figures(rows, os.path.join(out, "figures"), samples_dir=samples_dir)
    return rows


def format_table(rows: list[dict]) -> str:
    """A compact text table of the results, one line per cell."""
    head = f"{'cut':>3} {'defense':8} {'alpha':>6} {'noise':>6} {'seed':>4} {'acc':>6} {'dCor':>6} {'atk SSIM':>8} {'base SSIM':>9} {'atk clf':>7}"
    lines = [head, "-" * len(head)]

    def num(v, width, digits=3):
        try:
            return f"{float(v):>{width}.{digits}f}"
        except (TypeError, ValueError):
            return f"{'-':>{width}}"

    for r in sorted(rows, key=lambda r: (int(r["cut"]), r["defense"], float(r["alpha"]), float(r["noise_scale"]), int(r["seed"]))):
        lines.append(
            f"{r['cut']:>3} {r['defense']:8} {float(r['alpha']):>6g} {float(r['noise_scale']):>6g} {r['seed']:>4} "
            f"{num(r['accuracy'], 6)} {num(r['dcor'], 6)} {num(r['attack_ssim'], 8)} {num(r['baseline_ssim'], 9)} "
            f"{num(r['attack_classifier_accuracy'], 7)}"
        )
    return "\n".join(lines)


# ---- presets and config files ----------------------------------------------

PRESETS: dict[str, SweepConfig] = {
    # CI and notebooks: digits, seconds.
    "quick": SweepConfig(
        dataset="digits", model="mlp", widths=(64, 32), cuts=(1, 2), alphas=(0.0, 1.0, 5.0),
        noise_scales=(1.0,), epochs=6, attack_steps=300,
    ),
    # `nopeek sweep` with no arguments: bundled mnist5k, within 10 minutes on 2 CPU cores.
    "default": SweepConfig(),
    # The workshop paper's MNIST setting as far as PAPERS.md gives it: the NoPeek MNIST
    # network cut after dense 500, alphas around Fig. 10/11's 0.05 and 0.15 plus larger
    # ones, 30 epochs; full MNIST from --data-dir.
    "paper-mnist": SweepConfig(
        dataset="mnist", model="cnn_nopeek", widths=(), cuts=(4,), alphas=(0.0, 0.05, 0.15, 0.5, 1.0, 3.0),
        noise_scales=(0.5, 2.0), epochs=30, attack_steps=3000,
    ),
}


def load_config_file(path: str) -> dict:
    """A partial SweepConfig from a TOML or JSON file (keys = SweepConfig fields)."""
    try:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                return tomllib.load(f)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the sweep config ({err})") from err
