"""The files behind every number in the README and the documentation, and the tables drawn from them.

    python docs/results.py preset NAME [NAME ...]   # run presets' full versions into docs/results/NAME/
    python docs/results.py preset NAME --seeds 0,1 --attacks decoder   # a reduced run, recorded as such
    python docs/results.py tables                   # redraw every marked table from its file
    python docs/results.py tables --check           # exit 1 if a marked table differs from its file
    python docs/results.py notebooks [NAME ...]     # execute the notebooks (small presets) into docs/notebooks/
    python docs/results.py record NAME -- CMD ...   # run CMD (which writes into docs/results/NAME/), keep
                                                    # its printed output (output.txt) and its run.json

A results folder `docs/results/NAME/` holds what the run wrote (`results.csv`,
`summary.csv`, `config.json`; or a study's own `results.csv`) and `run.json`: the command,
its wall time, the CPU and its load, the date and the commit. A table in a markdown file is
drawn from such a folder between two markers,

    <!-- table: NAME -->
    | ... |
    <!-- /table -->

by the renderer `TABLES[NAME]`; `tests/test_docs_numbers.py` redraws every marked table and
fails when one differs from its file, and fails on a table of results (numeric cells) that
has no marker. A reference table with numeric cells (not results: a list of models, of image
modes) is exempted by the line `<!-- not results -->` just before its first row.
"""

from __future__ import annotations

import csv
import functools
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
sys.path.insert(0, ROOT)

from bench._host import cpu  # noqa: E402
MARKER = re.compile(r"<!-- table: ([\w.-]+) -->\n(.*?)<!-- /table -->", re.S)


# ---- running ---------------------------------------------------------------------------


def load() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def commit() -> str:
    """HEAD's short hash, with "+uncommitted" when the code that computes results (nopeek,
    attacks, metrics, bench) differs from it."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        clean = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "nopeek", "attacks", "metrics",
                                "bench"]).returncode == 0
        return head if clean else head + "+uncommitted"
    except (OSError, subprocess.CalledProcessError):
        return ""


def write_run(folder: str, command: str, seconds: float, load_before: float, **extra) -> None:
    """FOLDER/run.json: the command, its wall time, the CPU and its load, the date, the commit;
    listed in the folder's file list where a command wrote it whole (its `--force` replaces it)."""
    from nopeek.core import list_in_manifest

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "run.json"), "w", encoding="utf-8") as fh:
        json.dump({"command": command, "seconds": round(seconds, 1), "cpu": cpu(),
                   "load": round(max(load_before, load()), 2), "date": time.strftime("%Y-%m-%d"), "commit": commit(),
                   **extra}, fh, indent=2)
        fh.write("\n")
    list_in_manifest(folder, "run.json")


def run_preset(name: str, overrides: dict | None = None) -> None:
    """The full preset into docs/results/NAME/: its table, summary, config, figures, run.json.

    `overrides` ({"seeds": [0, 1], "attacks": ["decoder"]}) make a reduced run of it: the
    command in run.json carries them and run.json lists them, so a page citing the folder
    says what was changed (the preset's own run time is then not claimed: see
    tests/test_docs_numbers.py)."""
    from nopeek.sweeps import PRESET_INFO, run_sweep

    preset = PRESET_INFO[name]
    overrides = overrides or {}
    config = preset.config.replace(**overrides) if overrides else preset.config
    command = preset.command + "".join(f" --{k} {','.join(map(str, v))}" for k, v in overrides.items())
    folder = os.path.join(RESULTS, name)
    with tempfile.TemporaryDirectory(prefix=f"nopeek-{name}-") as tmp:
        out = os.path.join(tmp, name)
        before = load()
        t0 = time.perf_counter()
        run_sweep(config, out, progress=False, log=lambda line: print(line, file=sys.stderr))
        seconds = time.perf_counter() - t0
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for f in ("results.csv", "summary.csv", "config.json"):
            shutil.copy(os.path.join(out, f), folder)
        figures = os.path.join(out, "figures")
        if os.path.isdir(figures):
            shutil.copytree(figures, os.path.join(folder, "figures"))
        histories = os.path.join(out, "histories")
        if os.path.isdir(histories):
            shutil.copytree(histories, os.path.join(folder, "histories"))
    write_run(folder, command, seconds, before, **({"overrides": overrides} if overrides else {}))
    print(f"{name}: {seconds:.0f} s -> {folder}")


def record(name: str, argv: list[str]) -> int:
    """Run a command that writes its results into docs/results/NAME/ (e.g. `nopeek cost ...
    --out docs/results/NAME`); keep what it printed as output.txt and its run.json."""
    folder = os.path.join(RESULTS, name)
    os.makedirs(folder, exist_ok=True)
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    sys.stderr.write(proc.stderr)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(f"{' '.join(argv)}: exit {proc.returncode}; no run.json written", file=sys.stderr)
        return proc.returncode
    with open(os.path.join(folder, "output.txt"), "w", encoding="utf-8") as fh:
        fh.write(proc.stdout)
    write_run(folder, " ".join(argv), seconds, before)
    from nopeek.core import list_in_manifest

    list_in_manifest(folder, "output.txt")  # the command's `--force` replaces it with its folder
    print(f"{name}: {seconds:.0f} s -> {folder}", file=sys.stderr)
    return 0


# ---- reading -------------------------------------------------------------------------------


def rows(name: str, file: str = "results.csv") -> list[dict]:
    with open(os.path.join(RESULTS, name, file), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_info(name: str) -> dict:
    with open(os.path.join(RESULTS, name, "run.json"), encoding="utf-8") as fh:
        return json.load(fh)


def f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def num(v, digits: int = 3) -> str:
    x = f(v)
    return "-" if x != x else f"{x:.{digits}f}"


def pm(r: dict, metric: str, digits: int = 3) -> str:
    """mean +- 95% interval of a summary row's metric."""
    m, ci = f(r.get(metric)), f(r.get(f"{metric}_ci"))
    if m != m:
        return "-"
    return f"{m:.{digits}f}" if ci != ci or ci == 0 else f"{m:.{digits}f} +- {ci:.{digits}f}"


def table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# ---- the tables ---------------------------------------------------------------------------

TABLES: dict = {}


def renderer(name):
    def register(fn):
        TABLES[name] = fn
        return fn
    return register


def _cells_by(rows_, **match):
    return [r for r in rows_ if all(r.get(k) == v for k, v in match.items())]


@renderer("default-sweep")
def default_sweep() -> str:
    """The default sweep, seed 0: per cut, accuracy / dCor (null 95%) / best SSIM of selected settings."""
    table_rows = rows("default")
    settings = [("none", "0.0", "alpha 0"), ("nopeek", "1.0", "alpha 1"), ("nopeek", "3.0", "alpha 3"),
                ("noise", "2.0", "noise 2")]
    header = ["cut"] + [f"{label}: acc / dCor (null) / SSIM (class mean)" for _, _, label in settings]
    body = []
    for cut in sorted({r["cut"] for r in table_rows}, key=int):
        cells = [f"{cut} ({_cells_by(table_rows, cut=cut)[0]['cut_block']})"]
        for defense, strength, _ in settings:
            r = _cells_by(table_rows, cut=cut, defense=defense, strength=strength)[0]
            text = (f"{num(r['accuracy'])} / {num(r['dcor'])} ({num(r['dcor_null95'], 2)}) / {num(r['best_ssim'])} "
                    f"({num(r['class_mean_ssim'])})")
            cells.append(("**collapsed**: " if r["collapsed"] == "true" else "") + text)
        body.append(cells)
    return table(header, body)


def _seeds(r: dict) -> str:
    """'5' or '5 (collapsed 1)': the seeds of a summary row and how many collapsed."""
    collapsed = int(f(r.get("collapsed")) or 0)
    return r["seeds"] + (f" (collapsed {collapsed} of {r['seeds']}: left out)" if collapsed else "")


@renderer("operating-point")
def operating_point() -> str:
    """The operating-point preset: every alpha's test readings, the one the rule chose on validation marked."""
    from nopeek.sweeps import operating_points, read_rows

    summary = rows("operating-point", "summary.csv")
    chosen = {r["strength"] for r in operating_points(read_rows(os.path.join(RESULTS, "operating-point", "results.csv")))}
    header = ["alpha", "seeds", "val acc / val dCor", "test accuracy", "dCor (null 95%)", "dCor_u (dCor^2)",
              "pdCor given label", "decoder SSIM (class mean)", "beyond label SSIM", "classifier on reconstructions"]
    body = []
    for r in summary:
        strength = float(r["strength"])
        mark = " (chosen)" if strength in {float(c) for c in chosen} else ""
        body.append([f"{strength:g}{mark}", _seeds(r), f"{num(r['val_accuracy'])} / {num(r['val_dcor'])}",
                     pm(r, "accuracy"), f"{pm(r, 'dcor')} ({num(r['dcor_null95'])})", num(r["dcor_u"]),
                     pm(r, "pdcor_label"), f"{pm(r, 'best_ssim')} ({num(r['class_mean_ssim'])})",
                     pm(r, "beyond_label_ssim"), pm(r, "attack_classifier_accuracy")])
    return table(header, body)


PAPER_NOTEBOOKS = [  # notebook, the figure it rebuilds, its full presets ("below": the text after the table)
    ("fig_dcor_over_epochs", "workshop Figs. 5, 6: dCor over epochs", ["workshop-dcor-epochs"]),
    ("fig_accuracy_over_epochs", "workshop Figs. 10, 11: accuracy at alpha 0.05 and 0.15", ["workshop-accuracy-epochs"]),
    ("fig_reconstructions", "workshop Figs. 7, 8: reconstructions at alpha 0.1 and 0.9", ["workshop-reconstructions"]),
    ("fig_tradeoff_noise", "NoPeek paper: reconstruction error against accuracy, NoPeek against uniform noise",
     ["nopeek-tradeoff"]),
    ("where_nopeek_protects", "the cliff, what moves it, the classifier reading",
     ["region-constant", "region-warmup", "region-linear"]),
]


@renderer("papers-notebooks")
def papers_notebooks() -> str:
    """The papers' notebooks: each one's full presets with the run time their results files
    recorded, and what they gave (the presets' result sentences, checked against the files)."""
    from nopeek.sweeps import PRESET_INFO

    body = []
    for notebook, figure, presets in PAPER_NOTEBOOKS:
        runs = [f"`{p}`, {minutes(run_info(p)['seconds'])}" if os.path.isfile(os.path.join(RESULTS, p, "run.json"))
                else f"`{p}` (not run here)" for p in presets]
        what = "below" if len(presets) > 1 else PRESET_INFO[presets[0]].result
        body.append([f"[`{notebook}`](../notebooks/{notebook}.ipynb)", figure, "; ".join(runs), what])
    return table(["notebook", "paper figure", "full preset, run time", "what it gives"], body)


def _region(preset: str) -> str:
    """A region preset (`region-constant`, `-warmup`, `-linear`): per alpha, how many seeds
    collapsed and the others' test readings."""
    header = ["alpha", "seeds", "test accuracy", "dCor (null 95%)", "decoder SSIM (class mean)"]
    body = []
    for r in rows(preset, "summary.csv"):
        collapsed = int(f(r["collapsed"]))
        if collapsed == int(r["seeds"]):
            body.append([f"{f(r['alpha']):g}", f"{r['seeds']}, all collapsed", "-", "-", "-"])
            continue
        body.append([f"{f(r['alpha']):g}", _seeds(r), pm(r, "accuracy"), f"{pm(r, 'dcor')} ({num(r['dcor_null95'])})",
                     f"{pm(r, 'best_ssim')} ({num(r['class_mean_ssim'])})"])
    return table(header, body)


for _preset_name in ("region-constant", "region-warmup", "region-linear"):
    renderer(_preset_name)(functools.partial(_region, _preset_name))


@renderer("noise-floor")
def noise_floor() -> str:
    """bench/readings.py: the readings of independent noise (and the label) against mnist5k's held-out images."""
    header = ["message", "dCor", "dCor null 95%", "p-value", "dCor_u (dCor^2)", "pdCor given label"]
    body = [[r["message"], num(r["dcor"]), num(r["dcor_null95"]), num(r["dcor_pvalue"]), num(r["dcor_u"], 4),
             num(r["pdcor_label"], 4)] for r in rows("noise-floor")]
    return table(header, body)


def _modern_attack_tables(preset: str) -> None:
    """Register PRESET's two tables: every attack's MSE / SSIM per (topology, defence) beside
    the free guesses (`PRESET`), and the adaptive attacker's leak-fraction curve (`PRESET-curve`)."""

    def comparison() -> str:
        from nopeek.sweeps import attack_comparison

        return attack_comparison(rows(preset)) + "\n"

    def curve() -> str:
        from nopeek.sweeps import leak_curve

        return leak_curve(rows(preset)) + "\n"

    renderer(preset)(comparison)
    renderer(f"{preset}-curve")(curve)


_modern_attack_tables("modern-attacks")  # bundled mnist5k, flat cuts
_modern_attack_tables("modern-attacks-digits")  # digits, spatial 8x8x16 messages


def _ranking_tables() -> list[str]:
    """The markdown tables of the defences run's ranking (`nopeek.sweeps.format_ranking`)."""
    from nopeek.sweeps import format_ranking

    blocks, current = [], []
    for line in format_ranking(rows("defences")).split("\n") + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current) + "\n")
            current = []
    return blocks


@renderer("defences")
def defences() -> str:
    """The defences run at matched utility: each family's least-leaking setting within 1, 2
    and 5 points of the undefended accuracy."""
    return _ranking_tables()[0]


@renderer("defences-settings")
def defences_settings() -> str:
    """The defences run: every setting, means over its seeds."""
    return _ranking_tables()[1]


@renderer("topologies")
def topologies() -> str:
    """bench/quality.py --part topologies: each configuration's accuracy at alpha 0 (each task's,
    where it has several) beside vanilla's on the same data, and at NoPeek alpha 1."""
    header = ["configuration", "data", "accuracy, alpha 0", "vanilla", "difference (points)", "accuracy, alpha 1"]
    body = []
    for r in rows("topologies"):
        acc0 = num(r["accuracy_alpha0"])
        if r["task_accuracies_alpha0"]:
            tasks = json.loads(r["task_accuracies_alpha0"])
            acc0 += " (" + ", ".join(f"{k} {v:.3f}" for k, v in tasks.items()) + ")"
        if r["vanilla_accuracy"]:
            versus = [num(r["vanilla_accuracy"]), f"{100 * (f(r['accuracy_alpha0']) - f(r['vanilla_accuracy'])):+.1f}"]
        else:
            versus = ["-", "-"]
        body.append([r["configuration"], r["dataset"], acc0, *versus, num(r["accuracy_alpha1"])])
    return table(header, body)


def _topology_messages(topology: str):
    def render() -> str:
        """bench/quality.py --part topologies: the held-out dCor(x, m) of each message of one
        configuration, at alpha 0 and NoPeek alpha 1, each with its permutation null's 95%
        quantile, and the partial dCor given the label beside the label's own dCor."""
        body = [[f"{r['party']}:{r['message']}", f"{num(r['dcor_alpha0'])} ({num(r['dcor_null95_alpha0'])})",
                 f"{num(r['dcor_alpha1'])} ({num(r['dcor_null95_alpha1'])})",
                 f"{num(r['pdcor_label_alpha0'])} / {num(r['pdcor_label_alpha1'])}", num(r["dcor_label"])]
                for r in rows("topologies", "leakage.csv") if r["configuration"].split()[0] == topology]
        return table(["message", "dCor, alpha 0 (null 95%)", "dCor, alpha 1 (null 95%)",
                      "pdCor given y, alpha 0 / 1", "dCor(x, y)"], body)
    return render


for _topology in ("vanilla", "u_shaped", "vertical", "multi_task", "multi_hop", "round_robin"):
    renderer(f"topologies-messages-{_topology}")(_topology_messages(_topology))


@renderer("cost-measured")
def cost_measured() -> str:
    """bench/cost.py --out: per model, the split-learning client and server steps and the
    federated client's, XLA's FLOPs beside the measured wall time and the rate it implies."""
    def mflops(v):
        return f"{v:.2f}" if v < 100 else f"{v:,.0f}"

    def ms(v):
        return f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"

    measured = rows("cost-measured")
    header = ["model (data, cut)", "step", "MFLOPs/step", "ms/step", "GFLOP/s"]
    body = []
    for model in dict.fromkeys(r["model"] for r in measured):
        mine = _cells_by(measured, model=model)
        steps = [r["step"] for r in mine]
        label = " / ".join([steps[0]] + [s.removeprefix("SL ") if s.startswith("SL ") and steps[0].startswith("SL ")
                                         else s for s in steps[1:]])
        body.append([f"{model} ({mine[0]['dataset']}, {mine[0]['cut']})", label,
                     " / ".join(mflops(f(r["mflops"])) for r in mine), " / ".join(ms(f(r["ms"])) for r in mine),
                     " / ".join(f"{f(r['gflops']):.1f}" for r in mine)])
    return table(header, body)


def _ratio(x: float) -> str:
    return f"{x:.3f} (1/{1 / x:.0f})" if x < 0.1 else f"{x:.3f}"


@renderer("cost-sensitivity")
def cost_sensitivity() -> str:
    """`nopeek cost --preset seed-table`'s per-cut sensitivity (cost_sensitivity.csv): VGG-16's
    split/federated compute ratio and ResNet-50's communication crossover at every cut."""
    sens = rows("cost", "cost_sensitivity.csv")
    vgg = [r for r in sens if r["model"] == "vgg16"]
    resnet = [r for r in sens if r["model"] == "resnet50"]
    header = ["cut", "VGG-16 block", "compute, split / federated", "ResNet-50 block", "crossover (clients)"]
    body = []
    for i in range(max(len(vgg), len(resnet))):
        a = vgg[i] if i < len(vgg) else None
        b = resnet[i] if i < len(resnet) else None
        body.append([str(i + 1), a["block"] if a else "", _ratio(f(a["compute_ratio_sl_fl"])) if a else "",
                     b["block"] if b else "", f"{f(b['crossover_clients']):.0f}" if b else ""])
    return table(header, body)


@renderer("audit")
def audit() -> str:
    """bench/audit_example.py: `nopeek audit` of three digits models' saved activations (alpha 0,
    1, 5), the guide's columns of its scores.json, each score beside its free baseline."""
    with open(os.path.join(RESULTS, "audit", "scores.json"), encoding="utf-8") as fh:
        targets = json.load(fh)["targets"]

    def cell(value, base, fmt=".3f"):
        return f"{format(value, fmt)} ({format(base, fmt)})"

    header = ["target", "accuracy", "dCor(x, z) (null 95%)", "dCor_u^2", "pdCor given y (y's own dCor)",
              "linear CKA (shuffled)", "HSIC (shuffled)", "decoder SSIM (mean input; class mean)",
              "decoder MSE (mean input)", "classifier on x_hat (on mean input)", "y probe linear / MLP (chance)"]
    body = []
    for label, t in targets.items():
        dep, dec, y = t["dependence"], t["decoder"], t["probes"]["y"]
        body.append([f"`{label}`", num(t["accuracy"]), cell(dep["dcor"], dep["dcor_null95"]), num(dep["dcor_u"]),
                     cell(dep["pdcor_label"], dep["dcor_label"]),
                     cell(dep["linear_cka"], dep["linear_cka_shuffled"]), cell(dep["hsic"], dep["hsic_shuffled"], ".3g"),
                     f"{num(dec['ssim'])} ({num(dec['baseline_ssim'])}; {num(dec['class_mean_ssim'])})",
                     cell(dec["mse"], dec["baseline_mse"], ".4f"),
                     cell(dec["classifier_accuracy"], dec["baseline_classifier_accuracy"]),
                     f"{num(y['linear']['accuracy'])} / {num(y['mlp']['accuracy'])} ({num(y['linear']['chance'])})"])
    return table(header, body)


_COST_NAMES = {"vgg16": "VGG-16", "resnet50": "ResNet-50", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


@renderer("cost")
def cost() -> str:
    """`nopeek cost --preset seed-table`: per-client compute and communication of large-batch SGD,
    federated and split learning, the seed's numbers in brackets; then the sentence that
    quotes its compute ratio and communication crossover."""
    from nopeek.cost import METHODS, SEED_TABLE

    cost_rows = rows("cost", "cost.csv")
    with open(os.path.join(RESULTS, "cost", "cost_config.json"), encoding="utf-8") as fh:
        configs = json.load(fh)["configs"]
    counts = configs[0]["client_counts"]
    header = ["per client"] + [f"{n} clients" for n in counts]
    body, ratio, crossover = [], None, None
    for config in configs:
        what = config["report"]
        key, unit = {"compute": ("client_tflops", "TFLOPs"), "communication": ("client_gb", "GB")}[what]
        name = f"{_COST_NAMES.get(config['model'], config['model'])} on {_COST_NAMES.get(config['dataset'], config['dataset'])}"
        mine = _cells_by(cost_rows, model=config["model"], dataset=config["dataset"])
        for i, (method, label) in enumerate(METHODS.items()):
            cells = []
            for n in counts:
                value = f(_cells_by(mine, method=method, clients=str(n))[0][key])
                seed = SEED_TABLE.get((what, method, n))
                cells.append(f"{value:.4g}" + (f" ({seed:g})" if seed is not None else ""))
            body.append([f"{what}, {name} ({unit}): {label}" if i == 0 else label] + cells)
        if what == "compute":
            n = str(counts[0])
            ratio = (f(_cells_by(mine, method="split_learning", clients=n)[0][key])
                     / f(_cells_by(mine, method="federated_learning", clients=n)[0][key]))
        else:
            cut = str(config["cuts"][0])
            crossover = f(_cells_by(rows("cost", "cost_sensitivity.csv"), model=config["model"], cut=cut)[0]
                          ["crossover_clients"])
    return (table(header, body) + f"\nSplit learning's client computes **1/{1 / ratio:.0f}** of a federated client (the "
            f"seed: about 1/190),\nand sends more than a federated client below **{crossover:.1f} clients** and less "
            "above (the seed: more\nat 100, less at 500). The shape is reproduced:\n")


@renderer("splitguard")
def splitguard() -> str:
    """bench/fsha.py --part detection, SplitGuard's runs: how often it fired on honest and FSHA
    servers, when, after how many fake batches, and what FSHA's decoder had by then."""
    with open(os.path.join(RESULTS, "detection", "detection.json"), encoding="utf-8") as fh:
        runs = [r for r in json.load(fh)["rows"] if r.get("detector", "splitguard") == "splitguard"]
    header = ["server", "seeds fired", "iteration fired (mean, min-max)", "fake batches by then",
              "server's MSE then (mean image)", "SSIM then (mean image)"]
    body = []
    for server in ("honest", "fsha"):
        mine = [r for r in runs if r["server"] == server]
        fired = [r for r in mine if r["fired"]]
        cells = [f"**{len(fired)} / {len(mine)}**"]
        if server == "honest":
            fakes = sum(r["fake_batches"] for r in mine)
            cells[0] += f" (false alarm rate {len(fired) / len(mine):g} over {fakes} fake batches)"
        if fired and server == "fsha":
            its = [r["iteration"] for r in fired]
            fakes = [r["fake_batches"] for r in fired]
            mean = lambda key: sum(r[key] for r in fired) / len(fired)  # noqa: E731
            cells += [f"{sum(its) / len(its):.0f} ({min(its)}-{max(its)})", f"{min(fakes)}-{max(fakes)}",
                      f"{mean('mse'):.3f} ({mean('baseline_mse'):.3f})", f"{mean('ssim'):.2f} ({mean('baseline_ssim'):.2f})"]
        else:
            cells += ["-"] * 4
        body.append(["FSHA" if server == "fsha" else server, *cells])
    return table(header, body)


@renderer("fsha-vs-nopeek")
def fsha_vs_nopeek() -> str:
    """bench/fsha_nopeek.py: FSHA against the authors' dCor client (its NoPeek step separate), per
    (alpha, attacker weight): means over seeds with 95% intervals of FSHA's held-out MSE (the
    mean image's and the class-mean image's beside it), the client's held-out dCor (its
    null's 95% quantile) and partial dCor given the label, and a linear probe's label
    accuracy on the client's messages (chance beside it): is the client still learning?
    Seeds whose client collapsed (a constant message, or the probe at chance) are counted
    and left out of the means."""
    from nopeek.plots import mean_ci

    study = rows("fsha_vs_nopeek")
    header = ["alpha", "attacker weight", "seeds", "FSHA MSE (mean image; class mean)", "FSHA SSIM",
              "client dCor (null 95%)", "client pdCor given y", "probe on z: label accuracy (chance)"]

    def collapsed(r):  # the client's messages carry nothing: a constant z, or a probe at chance
        return f(r["client_dcor"]) < 1e-3 or f(r["task_probe_accuracy"]) <= f(r["task_probe_chance"]) + 0.02

    def stat(members, key, digits=3):  # 3 or more seeds: mean ± 95% interval; fewer: each seed's value
        if len(members) < 3:
            return ", ".join(f"{f(r[key]):.{digits}f}" for r in members)
        m, ci = mean_ci([f(r[key]) for r in members])
        return f"{m:.{digits}f} ± {ci:.{digits}f}"

    def mean(members, key):
        return sum(f(r[key]) for r in members) / len(members)

    body = []
    for alpha, weight in sorted({(f(r["alpha"]), f(r["fsha_weight"])) for r in study}):
        every = [r for r in study if f(r["alpha"]) == alpha and f(r["fsha_weight"]) == weight]
        mine = [r for r in every if not collapsed(r)]
        gone = len(every) - len(mine)
        seeds = str(len(every)) + (f" (collapsed {gone} of {len(every)}: left out)" if gone else "")
        if not mine:
            body.append([f"{alpha:g}", f"{weight:g}", seeds, f"{mean(every, 'mse'):.4f}: the client sends a constant",
                         "-", "-", "-", f"chance ({mean(every, 'task_probe_chance'):.3f})"])
            continue
        body.append([f"{alpha:g}", f"{weight:g}", seeds,
                     f"{stat(mine, 'mse', 4)} ({mean(mine, 'baseline_mse'):.4f}; {mean(mine, 'class_mean_mse'):.4f})",
                     stat(mine, "ssim"), f"{stat(mine, 'client_dcor')} ({mean(mine, 'client_dcor_null95'):.3f})",
                     stat(mine, "client_pdcor_label"),
                     f"{stat(mine, 'task_probe_accuracy')} ({mean(mine, 'task_probe_chance'):.3f})"])
    return table(header, body)


@renderer("labels")
def labels() -> str:
    """The labels preset: per topology, label defence and strength, the means over seeds of test
    accuracy and of the norm and direction label attacks' AUC (in brackets the leak,
    max(AUC, 1 - AUC)) and chance at this n (the leak's 95% permutation null); the table
    `python bench/fsha.py --part labels` prints, with the null added."""
    from nopeek.plots import label_tradeoff_points
    from nopeek.sweeps import read_rows

    points = label_tradeoff_points(read_rows(os.path.join(RESULTS, "labels", "results.csv")))
    order = {"none": 0, "maxnorm": 1, "marvell": 2}
    header = ["topology", "defence", "strength", "seeds", "test accuracy", "norm AUC (leak)", "direction AUC (leak)",
              "chance: leak's null 95%"]
    body = [[p["topology"] or "-", p["defense"], f"{p['strength']:g}", str(p["n"]), f"{p['accuracy']:.3f}",
             f"{p['norm_auc']:.3f} ({p['norm_leak']:.3f})", f"{p['direction_auc']:.3f} ({p['direction_leak']:.3f})",
             f"{p['leak_null95']:.3f}"]
            for p in sorted(points, key=lambda p: (p["topology"], order.get(p["defense"], 3), p["strength"]))]
    return table(header, body)


@renderer("fsha")
def fsha() -> str:
    """bench/fsha.py --part table: FSHA's held-out reconstructions against an undefended and a
    NoPeek client, each score beside the mean image's (MSE also beside the class-mean image's:
    what the label alone gives); MSE in bold where it beats the mean image; the client's
    held-out dCor(x, z) beside its null's 95% quantile, and a linear probe's label accuracy on
    its messages beside chance."""
    header = ["client defence", "server", "iterations", "MSE (mean image; class mean)", "SSIM (mean image)",
              "classifier on x_hat (on mean image)", "client dCor(x, z) (null 95%)", "probe on z: label accuracy (chance)"]
    body = []
    for r in rows("fsha"):
        alpha = f(r["alpha"])
        power = math.log10(alpha) if alpha > 0 else float("nan")
        defence = ("none" if alpha == 0 else f"NoPeek alpha 10^{power:.0f}" if power.is_integer()
                   else f"NoPeek alpha {alpha:g}")
        mse = num(r["mse"], 4)
        if f(r["mse"]) < f(r["baseline_mse"]):
            mse = f"**{mse}**"
        dcor = ("0.000 (constant z)" if f(r["client_dcor"]) == 0
                else f"{num(r['client_dcor'])} ({num(r['client_dcor_null95'])})")
        body.append([defence, f"FSHA, weight {f(r['fsha_weight']):g}", r["fsha_steps"],
                     f"{mse} ({num(r['baseline_mse'], 4)}; {num(r['class_mean_mse'], 4)})",
                     f"{num(r['ssim'])} ({num(r['baseline_ssim'])})",
                     f"{num(r['classifier_accuracy'])} ({num(r['baseline_classifier_accuracy'])})", dcor,
                     f"{num(r['task_probe_accuracy'])} ({num(r['task_probe_chance'])})"])
    return table(header, body)


@renderer("detection")
def detection() -> str:
    """bench/fsha.py --part detection: SplitGuard and SplitOut against honest and FSHA servers,
    the summary table the library's `format_detection` prints."""
    from nopeek.dishonest import format_detection

    with open(os.path.join(RESULTS, "detection", "detection.json"), encoding="utf-8") as fh:
        study = json.load(fh)
    return format_detection(study["rows"]).split("\n\n")[0].strip() + "\n"


def run_notebooks(names=()) -> None:
    """Execute notebooks/NAME.py (its small preset) into docs/notebooks/NAME.ipynb, outputs
    kept: the pages of the documentation site."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    os.makedirs(os.path.join(ROOT, "docs", "notebooks"), exist_ok=True)
    for source in sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.py"))):
        name = os.path.basename(source)[:-3]
        if names and name not in names:
            continue
        notebook = jupytext.read(source)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="nopeek-nb-") as tmp:
            env_before = dict(os.environ)
            os.environ.update(NOPEEK_NOTEBOOK_SIZE="small", NOPEEK_NOTEBOOK_OUT=tmp, PYTHONPATH=ROOT)
            try:
                NotebookClient(notebook, timeout=1800, kernel_name="python3",
                               resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}).execute()
            finally:
                os.environ.clear()
                os.environ.update(env_before)
        nbformat.write(notebook, os.path.join(ROOT, "docs", "notebooks", f"{name}.ipynb"))
        print(f"{name}: {time.perf_counter() - t0:.0f} s")


def render(name: str) -> str:
    return TABLES[name]()


def marked_files() -> list[str]:
    """README.md and the pages under docs/; not the markdown a command wrote into docs/results/
    (an audit's report.md), which is a results file itself."""
    files = [os.path.join(ROOT, "README.md")]
    files += sorted(p for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
                    if not p.startswith(RESULTS + os.sep))
    return files


def redraw(check: bool) -> int:
    problems = 0
    for path in marked_files():
        text = open(path, encoding="utf-8").read()

        def replace(m):
            nonlocal problems
            new = render(m.group(1))
            if new != m.group(2):
                problems += 1
                print(f"{os.path.relpath(path, ROOT)}: table {m.group(1)} differs from its file")
            return f"<!-- table: {m.group(1)} -->\n{new}<!-- /table -->"

        new_text = MARKER.sub(replace, text)
        if not check and new_text != text:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(new_text)
    return problems


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("preset", "tables", "notebooks", "record"):
        print(__doc__)
        return 2
    if sys.argv[1] == "record":
        if len(sys.argv) < 5 or sys.argv[3] != "--":
            print(__doc__)
            return 2
        return record(sys.argv[2], sys.argv[4:])
    if sys.argv[1] == "preset":
        import argparse

        parser = argparse.ArgumentParser(prog="docs/results.py preset")
        parser.add_argument("names", nargs="+")
        parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")])
        parser.add_argument("--attacks", type=lambda v: v.split(","))
        args = parser.parse_args(sys.argv[2:])
        overrides = {k: v for k, v in (("seeds", args.seeds), ("attacks", args.attacks)) if v is not None}
        for name in args.names:
            run_preset(name, overrides)
        return 0
    if sys.argv[1] == "notebooks":
        run_notebooks(sys.argv[2:])
        return 0
    problems = redraw(check="--check" in sys.argv)
    return 1 if problems and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
