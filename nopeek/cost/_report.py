"""The cost report: the table in the seed's shape, the assumptions behind it, the sensitivity
to the cut, measured step times, and the files (`cost.csv`, `cost.png`,
`cost_sensitivity.csv`, `cost_sensitivity.png`, `cost_config.json`, `cost.txt`: the printed text).

`run_cost(configs, out)` is what `nopeek cost` calls; a notebook can call it too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import shutil

import numpy as np

from nopeek.core import atomic_write_text, check_output_folder, check_writable, publish_folder, staging_folder, write_json
from nopeek.cost._methods import (
    METHODS, SEED_TABLE, CostConfig, check_cost, cost_cuts, cost_data, crossover, fl_rounds, method_costs, profiles, split_step_bytes,
)
from nopeek.protocol import TOPOLOGIES, model_blocks, spec

CSV_COLUMNS = ["method", "model", "dataset", "clients", "client_tflops", "client_gb",
               "topology", "cuts", "epochs", "client_flops", "client_bytes", "exchanges"]
SENSITIVITY_COLUMNS = ["model", "dataset", "topology", "cut", "block", "client_params", "client_step_flops_per_sample",
                       "compute_ratio_sl_fl", "client_bytes_per_sample", "crossover_clients"]
CURVE_CLIENTS = tuple(int(n) for n in np.unique(np.round(np.geomspace(10, 1000, 61))))
SHAPE = {"compute_ratio": (1 / 400, 1 / 95), "crossover": (100, 500)}  # the seed's shape, as the issue bounds it


@dataclasses.dataclass
class CostReport:
    """What `run_cost` produced: the CSV rows, sensitivity rows, crossovers, the printed text, files."""

    rows: list[dict]
    sensitivity: list[dict]
    crossovers: dict[str, float | None]
    text: str
    files: list[str]


def _shows(config: CostConfig, what: str) -> bool:
    return config.report in ("both", what)


def _name(config: CostConfig) -> str:
    return f"{config.model} on {config.dataset}"


def _ratio(x: float) -> str:
    return f"1/{1 / x:.0f}" if 0 < x < 0.2 else f"{x:.2f}"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if value < 1000 else f"{value:,.0f}"


def cost_rows(config: CostConfig) -> list[dict]:
    """One CSV row per (number of clients, method)."""
    rows = []
    for n in config.client_counts:
        for c in method_costs(config, n):
            rows.append({
                "method": c.method, "model": config.model, "dataset": config.dataset, "clients": n,
                "client_tflops": f"{c.client_flops / 1e12:.6g}", "client_gb": f"{c.client_bytes / 1e9:.6g}",
                "topology": config.topology, "cuts": "-".join(map(str, cost_cuts(config))), "epochs": config.epochs,
                "client_flops": f"{c.client_flops:.6g}", "client_bytes": f"{c.client_bytes:.6g}", "exchanges": f"{c.exchanges:.6g}",
            })
    return rows


def format_table(configs, rows, reference: bool) -> str:
    """Rows: methods; columns: numbers of clients. Seed's numbers in brackets where it has them."""
    lines = []
    for config in configs:
        mine = [r for r in rows if r["model"] == config.model and r["dataset"] == config.dataset]
        for what, unit, key in (("compute", "TFLOPs", "client_tflops"), ("communication", "GB", "client_gb")):
            if not _shows(config, what):
                continue
            head = f"{what}, {_name(config)} ({unit} per client)"
            width = max(46, len(head))
            lines.append(f"{head:{width}s}" + "".join(f"{f'{n} clients':>18s}" for n in config.client_counts))
            for method, label in METHODS.items():
                cells = []
                for n in config.client_counts:
                    value = float(next(r[key] for r in mine if r["method"] == method and r["clients"] == n))
                    seed = SEED_TABLE.get((what, method, n)) if reference else None
                    cells.append(_fmt(value) + (f" ({seed:g})" if seed is not None else ""))
                lines.append(f"  {label:{width - 2}s}" + "".join(f"{c:>18s}" for c in cells))
            if what == "compute":
                n = config.client_counts[0]
                get = lambda m: float(next(r[key] for r in mine if r["method"] == m and r["clients"] == n))  # noqa: E731
                ratio = get("split_learning") / get("federated_learning")
                lines.append(f"  {'split / federated':{width - 2}s}{_ratio(ratio):>18s}" + (" (seed 1/190)" if reference else ""))
            else:
                n_star = crossover(config)  # split learning sends less for N > N*: from the next whole client
                text = "never" if n_star is None else ("always" if n_star < 1 else f"{math.floor(n_star) + 1} clients")
                lines.append(f"  {'crossover (split below federated from)':{width - 2}s}{text:>18s}")
            lines.append("")
    return "\n".join(lines).rstrip()


def shape_checks(configs) -> list[str]:
    """The seed's shape, as the issue bounds it, checked on these configs."""
    out = []
    for config in configs:
        split, whole = profiles(config, config.client_counts[0])
        if _shows(config, "compute") and spec(config.topology).splits != "features":
            ratio = split.data_holder.step_flops / (config.fl_local_epochs * fl_rounds(config) / config.epochs
                                                    * whole.data_holder.step_flops)
            lo, hi = SHAPE["compute_ratio"]
            out.append(f"{_name(config)}: split learning's client compute is {_ratio(ratio)} of federated learning's "
                       f"(seed: about 1/190; shape holds if between 1/400 and 1/95): {'yes' if lo <= ratio <= hi else 'NO'}")
        if _shows(config, "communication"):
            n_star = crossover(config)
            lo, hi = SHAPE["crossover"]
            ok = n_star is not None and lo < n_star < hi
            out.append(f"{_name(config)}: split learning sends more than federated learning below N* = {n_star or float('inf'):.1f} "
                       f"clients and less above (seed: more at 100, less at 500): {'yes' if ok else 'NO'}")
    return out


def implied_epochs(configs, rows) -> list[str]:
    """Epochs at which each of our numbers would equal the seed's (all scale linearly with epochs)."""
    out = ["epochs at which each number equals the seed's (ours scale linearly with epochs):"]
    for config in configs:
        for what, key in (("compute", "client_tflops"), ("communication", "client_gb")):
            if not _shows(config, what):
                continue
            parts = []
            for method, label in METHODS.items():
                cells = []
                for n in config.client_counts:
                    seed = SEED_TABLE.get((what, method, n))
                    row = next(r for r in rows if r["model"] == config.model and r["method"] == method and r["clients"] == n)
                    if seed is not None and float(row[key]) > 0:
                        cells.append(f"{config.epochs * seed / float(row[key]):.1f}")
                if cells:
                    parts.append(f"{label} {' / '.join(cells)}")
            out.append(f"  {what} ({_name(config)}, {config.epochs} epochs used): " + "; ".join(parts))
    return out


def assumptions(config: CostConfig) -> list[str]:
    """Every field and the derived counts, in words."""

    shape, classes, size = cost_data(config)
    cuts = cost_cuts(config)
    blocks = model_blocks(config.model, classes, config.widths)
    split, whole = profiles(config, config.client_counts[0])
    client, b = split.data_holder, config.batch_size
    step_bytes, turn_bytes = split_step_bytes(config, split)
    def shown(v) -> str:  # as the command line takes it: lists comma-separated, unset fields named so
        if isinstance(v, list):
            return ",".join(map(str, v)) if v else "(default)"
        return "none" if v is None else str(v)

    fields = ", ".join(f"{k}={shown(v)}" for k, v in config.to_dict().items())
    sent = ", ".join([f"{m.tensor} {m.shape[1:]} {m.dtype} out" for m in client.sent]
                     + [f"{m.tensor} {m.shape[1:]} {m.dtype} in" for m in client.received])
    others = "; ".join(f"{p.name} {p.params:,} params, {_fmt(p.step_flops / b)} FLOPs/sample"
                       for p in split.parties if p.name != client.name)
    lines = [
        f"{_name(config)}: {fields}",
        f"  data: samples {shape}, {classes} classes, {size:,} training samples shared evenly by the clients "
        f"({'each client holds a slice of all of them' if spec(config.topology).splits == 'features' else 'D / N each'})",
        f"  cut after block {', '.join(f'{c} ({blocks[c - 1].name})' for c in cuts)}; {config.topology}: "
        f"{client.name} {client.params:,} params, {_fmt(client.step_flops / b)} FLOPs/sample (forward "
        f"{_fmt(client.forward_flops / b)}{', NoPeek term included' if config.include_nopeek else ''}); {others}",
        f"  whole model: {whole.data_holder.params:,} params, {_fmt(whole.data_holder.step_flops / b)} FLOPs/sample "
        f"(forward {_fmt(whole.data_holder.forward_flops / b)}, loss included): the FL and large-batch SGD client's work",
        f"  FLOPs: XLA cost analysis of the compiled programs for one batch of {b} (multiply-add = 2; elementwise and "
        f"reductions counted; padding taps and transcendentals not; no optimiser update)",
        f"  split learning messages per step (client): {sent}: {step_bytes:,.0f} bytes at {config.precision_bytes}-byte floats"
        + (f"; hand-offs per turn {turn_bytes:,.0f} bytes (weights + {config.handoff_optimizer} state)" if turn_bytes else ""),
        f"  federated learning: {fl_rounds(config)} round(s) of {config.fl_local_epochs} local epoch(s); per round 2 x "
        f"{whole.data_holder.params:,} params down and up",
        f"  large-batch SGD: global batch {config.sgd_global_batch:,} -> {-(-size // config.sgd_global_batch)} "
        f"synchronous step(s) per epoch, 2 x params each (gradients up, weights down)",
    ]
    return lines


def sensitivity_rows(config: CostConfig) -> list[dict]:
    """Every single cut of the model: the client's share of compute and the communication crossover."""

    if TOPOLOGIES[config.topology].cuts != "1":
        return []
    shape, classes, _ = cost_data(config)
    blocks = model_blocks(config.model, classes, config.widths)
    rows = []
    for cut in range(1, len(blocks)):
        c = dataclasses.replace(config, cuts=(cut,), sensitivity=False, measure=False)
        split, whole = profiles(c, 2, flops_for="holder" if _shows(c, "compute") else "none")
        step_bytes, _ = split_step_bytes(c, split)
        flops = split.data_holder.step_flops
        row = {"model": c.model, "dataset": c.dataset, "topology": c.topology, "cut": cut, "block": blocks[cut - 1].name,
               "client_params": split.data_holder.params, "client_step_flops_per_sample": "", "compute_ratio_sl_fl": "",
               "client_bytes_per_sample": f"{step_bytes / c.batch_size:.6g}", "crossover_clients": ""}
        if _shows(c, "compute"):
            row["client_step_flops_per_sample"] = f"{flops / c.batch_size:.6g}"
            row["compute_ratio_sl_fl"] = f"{flops / whole.data_holder.step_flops:.6g}"
        if _shows(c, "communication"):
            n_star = crossover(c)
            row["crossover_clients"] = "" if n_star is None else f"{n_star:.1f}"
        rows.append(row)
    return rows


def format_sensitivity(config: CostConfig, rows: list[dict]) -> list[str]:
    if not rows:
        return [f"{_name(config)}: no per-cut sensitivity for {config.topology} (several cuts)"]
    lines = [f"sensitivity to the cut, {_name(config)} ({config.topology}; the seed's shape needs compute ratio in "
             f"[1/400, 1/95] and crossover in (100, 500)):",
             f"  {'cut':>3s} {'block':10s} {'client params':>13s} {'SL/FL compute':>13s} {'client B/sample':>15s} {'crossover N':>11s}"]
    for r in rows:
        lines.append(f"  {r['cut']:>3d} {r['block']:10s} {r['client_params']:>13,d} {(_ratio(float(r['compute_ratio_sl_fl'])) if r['compute_ratio_sl_fl'] else '-'):>13s} "
                     f"{float(r['client_bytes_per_sample']):>15,.0f} {(r['crossover_clients'] or '-'):>11s}")
    if _shows(config, "communication") and spec(config.topology).splits != "features":
        parts = []
        for local in (1, 2, 5):
            n_star = crossover(dataclasses.replace(config, fl_local_epochs=local, fl_rounds=None))
            parts.append(f"{local} local epoch(s) per round: {'never' if n_star is None else f'{n_star:.1f}'}")
        lines.append(f"  crossover at cut {cost_cuts(config)[0]} against FL with " + "; ".join(parts))
    return lines


def format_timings(config: CostConfig) -> list[str]:
    """Measured wall time of each party's compiled step next to its FLOPs."""
    split, whole = profiles(config, config.client_counts[0])
    lines = [f"measured on this machine, {_name(config)}, batch {config.batch_size} (compiled step: forward + backward):",
             f"  {'step':40s} {'MFLOPs/step':>12s} {'ms/step':>10s} {'GFLOP/s':>9s}"]
    items = [(f"split learning, {p.name}", p) for p in split.parties] + [("federated learning client (whole model)", whole.data_holder)]
    for label, p in items:
        if p.step_seconds:
            lines.append(f"  {label:40s} {p.step_flops / 1e6:>12.2f} {p.step_seconds * 1e3:>10.3f} "
                         f"{p.step_flops / p.step_seconds / 1e9:>9.2f}")
    return lines


def _write_csv(path: str, rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def cost_figure(config: CostConfig, path: str, *, reference: bool = False) -> str:
    """Per-client communication against the number of clients, one line per method, the crossover marked."""
    import matplotlib.pyplot as plt

    from nopeek.plots import save_figure

    clients = CURVE_CLIENTS if spec(config.topology).splits != "features" else tuple(range(1, 9))
    curves = {m: [] for m in METHODS}
    for n in clients:
        for c in method_costs(config, n, flops_for="none"):
            curves[c.method].append(c.client_bytes / 1e9)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = {"large_batch_sgd": "tab:gray", "federated_learning": "tab:blue", "split_learning": "tab:red"}
    for method, label in METHODS.items():
        ax.plot(clients, curves[method], color=colors[method], label=label, lw=2)
        if reference:
            seeds = [(n, SEED_TABLE[("communication", method, n)]) for n in (100, 500)]
            ax.plot(*zip(*seeds), "o", mfc="none", color=colors[method], ms=8)
    n_star = crossover(config)
    if n_star is not None and clients[0] <= n_star <= clients[-1]:
        fl = method_costs(config, 2, flops_for="none")[1].client_bytes / 1e9
        ax.axvline(n_star, color="k", ls=":", lw=1)
        ax.plot([n_star], [fl], "k*", ms=12)
        ax.annotate(f"crossover: {n_star:.1f} clients", (n_star, fl), textcoords="offset points", xytext=(8, 14), fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of clients")
    ax.set_ylabel("communication per client (GB)")
    cut = ",".join(map(str, cost_cuts(config)))
    ax.set_title(f"{_name(config)}, {config.topology} cut {cut}, {config.epochs} epochs"
                 + ("\n(hollow circles: the seed's table)" if reference else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def sensitivity_figure(rows: list[dict], path: str) -> str:
    """Crossover against the cut (communication configs) and SL/FL compute against the cut (compute configs)."""
    import matplotlib.pyplot as plt

    from nopeek.plots import save_figure

    comm = [r for r in rows if r["crossover_clients"] != ""]
    comp = [r for r in rows if r["compute_ratio_sl_fl"] != ""]
    panels = [p for p in (("compute", comp), ("communication", comm)) if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (what, rs) in zip(axes[0], panels):
        cuts = [int(r["cut"]) for r in rs]
        if what == "compute":
            ax.plot(cuts, [1 / float(r["compute_ratio_sl_fl"]) for r in rs], "o-", color="tab:red")
            ax.axhspan(95, 400, color="tab:green", alpha=0.15, label="seed's shape: 1/400 to 1/95")
            ax.set_ylabel("FL / SL client compute (x)")
        else:
            ax.plot(cuts, [float(r["crossover_clients"]) for r in rs], "o-", color="tab:blue")
            ax.axhspan(100, 500, color="tab:green", alpha=0.15, label="seed's shape: 100 to 500")
            ax.set_ylabel("crossover (clients)")
        ax.set_yscale("log")
        ax.set_xticks(cuts)
        ax.set_xticklabels([r["block"] for r in rs], rotation=90, fontsize=7)
        ax.set_title(f"{rs[0]['model']} on {rs[0]['dataset']}: {what} against the cut", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def run_cost(configs, out: str | None = None, *, reference: bool = False, force: bool = False) -> CostReport:
    """Cost every config (`CostConfig`s, each checked by `check_cost`); print-ready text; files in `out` if given.

    reference: compare with the seed's table (the `seed-table` preset).
    out: written whole or not at all (`publish_folder`); an earlier cost report there is
    replaced only with `force`, never another command's results or files a user added."""
    configs = tuple(check_cost(c) for c in configs)
    if out is not None:
        check_output_folder(out)  # before any work: a file in the way, or a place the user cannot write in
        check_writable(out, ("cost",), force=force)  # nor another command's results, nor a user's files
    rows = [r for c in configs for r in cost_rows(c)]
    text = [format_table(configs, rows, reference), ""]
    if reference:
        text += shape_checks(configs) + [""] + implied_epochs(configs, rows) + [""]
    text.append("assumptions:")
    for c in configs:
        text += assumptions(c)
    sens = []
    for c in configs:
        if c.sensitivity:
            rs = sensitivity_rows(c)
            sens += rs
            text += [""] + format_sensitivity(c, rs)
    for c in configs:
        if c.measure:
            text += [""] + format_timings(c)
    files = []
    if out is not None:
        tmp = staging_folder(out)
        try:
            names = [_write_csv(os.path.join(tmp, "cost.csv"), rows, CSV_COLUMNS)]
            comm = next((c for c in configs if _shows(c, "communication")), configs[0])
            names.append(cost_figure(comm, os.path.join(tmp, "cost.png"), reference=reference))
            if sens:
                names.append(_write_csv(os.path.join(tmp, "cost_sensitivity.csv"), sens, SENSITIVITY_COLUMNS))
                names.append(sensitivity_figure(sens, os.path.join(tmp, "cost_sensitivity.png")))
            write_json(os.path.join(tmp, "cost_config.json"), {"configs": [c.to_dict() for c in configs]})
            names.append(os.path.join(tmp, "cost_config.json"))
            atomic_write_text(os.path.join(tmp, "cost.txt"), "\n".join(text) + "\n")  # the tables, assumptions, timings
            names.append(os.path.join(tmp, "cost.txt"))
            publish_folder(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already once published
        files = [os.path.join(out, os.path.basename(name)) for name in names]
    return CostReport(rows, sens, {_name(c): crossover(c) for c in configs}, "\n".join(text), files)


__all__ = ["CSV_COLUMNS", "CostReport", "cost_figure", "cost_rows", "format_table", "run_cost", "sensitivity_figure",
           "sensitivity_rows", "shape_checks"]
