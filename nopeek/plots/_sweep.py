"""Figures of a sweep's results table: trade-offs, metrics against alpha, reconstruction grids
per row, histories over epochs, comparisons of sweeps, the label-defence trade-off."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nopeek.plots._common import _f, mean_ci, save_figure
from nopeek.plots._grids import reconstruction_grid


def _family(r) -> tuple[str, float]:
    """(defence family, level) of a row: NoPeek's alpha, the noise's scale, any other
    defence's strength; the undefended cell is NoPeek's level 0 (and starts every curve)."""
    defense = r.get("defense", "none")
    if defense == "noise":
        return "noise", _f(r.get("noise_scale"))
    if defense in ("none", "nopeek"):
        return "nopeek", _f(r.get("alpha"))
    return defense, _f(r.get("strength"))


# How each family is drawn: its line, marker and name; other defences take the rest in turn.
_STYLES = {"nopeek": ("-", "o", "NoPeek"), "noise": ("--", "s", "noise")}
_MORE_STYLES = (("-.", "^"), (":", "D"), ((0, (5, 1)), "v"), ((0, (3, 1, 1, 1)), "P"))


def _style(family: str, others: list[str]):
    if family in _STYLES:
        return _STYLES[family]
    line, marker = _MORE_STYLES[others.index(family) % len(_MORE_STYLES)]
    return line, marker, family


def _flag(r, column) -> bool:
    return str(r.get(column, "")).lower() == "true"


def _series(rows):
    """{(topology, cut, message): {family: [point]}}: one point per defence level, averaged over
    seeds. A point: dict(level, n, acc, acc_ci, dcor, dcor_ci, ssim, ssim_ci, mse, mse_ci,
    null95, label (the readings' dcor_null95 and dcor_label), collapsed (every live seed
    collapsed), n_collapsed, diverged (seeds that diverged), text). Collapsed seeds are left
    out of the means unless every seed collapsed (the point is then drawn hollow): a mean of
    a collapsed and a working model is no model's accuracy."""
    groups: dict = {}
    for r in rows:
        key = (r.get("topology"), str(r.get("cut")), f"{r.get('party', 'client')}:{r.get('message', 'z')}")
        groups.setdefault(key, {}).setdefault(_family(r), []).append(r)
    out = {}
    for key, levels in groups.items():
        families = {"nopeek", "noise"} | {family for family, _ in levels}
        if ("nopeek", 0.0) in levels:  # the undefended cell starts every curve
            for family in families - {"nopeek"}:
                levels.setdefault((family, 0.0), levels[("nopeek", 0.0)])
        curves: dict = {family: [] for family in sorted(families, key=lambda f: (f not in _STYLES, f))}
        for (family, level), members in sorted(levels.items()):
            live = [m for m in members if not _flag(m, "diverged")]
            working = [m for m in live if not _flag(m, "collapsed")]
            point = {"level": level, "n": len(live), "diverged": len(members) - len(live),
                     "n_collapsed": len(live) - len(working), "collapsed": bool(live) and not working, "text": ""}
            used = working or live
            for name, column in (("acc", "accuracy"), ("dcor", "dcor"), ("ssim", "best_ssim"), ("mse", "best_mse"),
                                 ("null95", "dcor_null95"), ("label", "dcor_label")):
                values = [_f(m.get(column)) for m in used]
                if name in ("ssim", "mse") and not any(np.isfinite(values)):
                    values = [_f(m.get(f"attack_{name}")) for m in live]  # tables without best_*
                point[name], point[name + "_ci"] = mean_ci(values)
            if point["n_collapsed"] and working:
                point["text"] = f"collapsed {point['n_collapsed']} of {len(live)}"
            curves[family].append(point)
        out[key] = curves
    return out


def _readings_lines(ax, points, color, *, vertical: bool) -> None:
    """On a dCor axis: the permutation null's 95% quantile as a band from 0 (what independent
    samples read at this n) and the label's own dCor as a dotted line, means over the points."""
    null = _finite_mean([p.get("null95", float("nan")) for p in points])
    label = _finite_mean([p.get("label", float("nan")) for p in points])
    span, line = (ax.axvspan, ax.axvline) if vertical else (ax.axhspan, ax.axhline)
    if np.isfinite(null):
        span(0.0, null, color="0.5", alpha=0.12, linewidth=0)
    if np.isfinite(label):
        line(label, color=color, linestyle=":", linewidth=1, alpha=0.7)


def _key_handles(hollow: str = "hollow: every seed collapsed"):
    """Legend entries for what every trade-off figure draws the same way (`hollow`: what a
    hollow marker means in this figure)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [Line2D([], [], marker="o", linestyle="", color="0.3", markerfacecolor="white", label=hollow),
            Patch(color="0.5", alpha=0.25, label="dCor of independent samples (null 95%)"),
            Line2D([], [], color="0.3", linestyle=":", label="dCor(x, label): the label alone")]


def _label(cut, message, multi_message) -> str:
    return f"cut {cut}" + (f", {message}" if multi_message else "")


def tradeoff_figure(rows, path: str, *, annotate: str | None = None, series_label=None) -> str:
    """Accuracy against held-out dCor(x, m) and against the decoder's SSIM (MSE for tabular
    data): one row of panels per topology, one colour per cut (and message), NoPeek solid,
    noise dashed, any other defence its own line style. Means over seeds with 95% intervals; collapsed settings drawn hollow (joined dotted),
    diverged ones listed in the panel.

    Args:
      annotate: a column whose value is written beside each point (e.g. a file name).
      series_label: callable(cut, family) -> legend text (default "cut K, NoPeek|noise").
    """
    series = _series(rows)
    texts = {}
    if annotate:
        for r in rows:
            texts[(r.get("topology"), str(r.get("cut")), _family(r))] = str(r.get(annotate, ""))
    topologies = sorted({k[0] for k in series})
    use_ssim = any(np.isfinite(p["ssim"]) for c in series.values() for pts in c.values() for p in pts)
    fig, axes = plt.subplots(len(topologies), 2, figsize=(10, 3.8 * len(topologies)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for t_index, topology in enumerate(topologies):
        keys = sorted(k for k in series if k[0] == topology)
        multi_message = len({k[2] for k in keys}) > 1
        diverged_notes = []
        for i, key in enumerate(keys):
            _, cut, message = key
            color = colors[i % len(colors)]
            others = [f for f in series[key] if f not in _STYLES]
            for family in series[key]:
                style, marker, name = _style(family, others)
                pts = [p for p in series[key][family] if p["n"] > 0]
                diverged_notes += [f"{cut} {family} {p['level']:g}" for p in series[key][family] if p["diverged"]]
                if not pts or (family not in _STYLES and len(pts) == 1):  # a family with only the undefended cell
                    continue
                label = series_label(cut, family) if series_label else f"{_label(cut, message, multi_message)}, {name}"
                acc = np.array([p["acc"] for p in pts])
                acc_ci = np.array([p["acc_ci"] for p in pts])
                for ax, name in ((axes[t_index, 0], "dcor"), (axes[t_index, 1], "ssim" if use_ssim else "mse")):
                    xs = np.array([p[name] for p in pts])
                    xs_ci = np.array([p[name + "_ci"] for p in pts])
                    live = np.array([not p["collapsed"] for p in pts])
                    ax.plot(xs[live], acc[live], linestyle=style, color=color, label=label)  # a collapsed point is not on the curve
                    if not live.all():
                        ax.plot(xs, acc, ":", color=color, alpha=0.4, linewidth=1)
                    ax.errorbar(xs, acc, yerr=_bounded(acc, acc_ci), xerr=_bounded(xs, xs_ci, 0.0, np.inf),
                                fmt="none", ecolor=color, alpha=0.5, capsize=2)
                    for x_, y_, p in zip(xs, acc, pts):
                        ax.plot([x_], [y_], marker=marker, color=color,
                                markerfacecolor="white" if p["collapsed"] else color, markersize=6)
                        text = texts.get((topology, cut, (family, p["level"])), "") or p["text"]
                        if text and np.isfinite(x_) and np.isfinite(y_):
                            ax.annotate(text, (x_, y_), textcoords="offset points", xytext=(4, 4), fontsize=7)
            _readings_lines(axes[t_index, 0], [p for f in series[key].values() for p in f], color, vertical=True)
        axes[t_index, 0].set_xlabel("held-out dCor(x, m)  (lower = less leakage)")
        axes[t_index, 1].set_xlabel("decoder SSIM, better of attack and mean image" if use_ssim
                                    else "decoder MSE, better of attack and mean input (higher = less leakage)")
        for ax in axes[t_index]:
            ax.set_ylabel(f"{topology}: test accuracy" if len(topologies) > 1 else "test accuracy")
            ax.grid(alpha=0.3)
        if diverged_notes:
            axes[t_index, 0].text(0.01, 0.02, "diverged: " + "; ".join(diverged_notes), transform=axes[t_index, 0].transAxes,
                                  fontsize=7, color="tab:red", va="bottom")
        handles, labels = axes[t_index, 1].get_legend_handles_labels()
        handles, labels = handles + _key_handles(), labels + [h.get_label() for h in _key_handles()]
        axes[t_index, 1].legend(handles, labels, fontsize=7, loc="lower right")
    fig.suptitle("Privacy-utility trade-off: good defences sit top-left. Means over seeds, collapsed seeds left "
                 "out; dCor beside its null (grey band) and the label's dCor (dotted)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def metric_vs_alpha_figure(rows, metric: str, ylabel: str, path: str) -> str:
    """`metric` ("dcor", "ssim" or "acc") against the NoPeek weight, one line per (topology,
    cut, message), means over seeds with 95% intervals; symlog x so alpha 0 is included."""
    series = _series(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    topologies = {k[0] for k in series}
    for key, curves in sorted(series.items()):
        pts = [p for p in curves["nopeek"] if p["n"] > 0]
        if not pts:
            continue
        topology, cut, message = key
        label = (f"{topology} " if len(topologies) > 1 else "") + f"cut {cut}" + (f" {message}" if message != "client:z" else "")
        xs = [p["level"] for p in pts]
        ys = [p[metric] for p in pts]
        line = ax.errorbar(xs, ys, yerr=_bounded(ys, [p[metric + "_ci"] for p in pts]), fmt="-o", capsize=2, label=label)
        hollow = [(x, p[metric]) for x, p in zip(xs, pts) if p["collapsed"]]
        if hollow:
            ax.plot(*zip(*hollow), "o", markerfacecolor="white", color=line[0].get_color(), markersize=8)
        if metric == "dcor":
            _readings_lines(ax, pts, line[0].get_color(), vertical=False)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("NoPeek alpha")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    keys = _key_handles() if metric == "dcor" else _key_handles()[:1]
    ax.legend(handles + keys, labels + [h.get_label() for h in keys], fontsize=7)
    ax.set_title("means over seeds (collapsed seeds left out)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _load_samples(path: str, like: np.ndarray | None = None) -> np.ndarray:
    """A saved sample array (numeric, never unpickled); shaped like `like` when given."""
    from nopeek.errors import ConfigError

    try:
        samples = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"{path}: not a readable sample file ({err})") from err
    if not isinstance(samples, np.ndarray) or not np.issubdtype(samples.dtype, np.number) or samples.ndim < 2:
        what = f"dtype {samples.dtype}, shape {samples.shape}" if isinstance(samples, np.ndarray) else "an .npz archive"
        raise ConfigError(f"{path}: expected numeric samples (n, ...), got {what}")
    if like is not None and samples.shape[1:] != like.shape[1:]:
        raise ConfigError(f"{path}: samples of shape {samples.shape[1:]}, but the originals are {like.shape[1:]}")
    return samples


def _sample_grids(rows, samples_dir: str | None) -> list[tuple]:
    """(file name, title, grid rows, labels) of every reconstruction grid, every sample file
    read and checked before any figure is drawn."""
    grids = []
    if not (samples_dir and os.path.isdir(samples_dir)):
        return grids
    seeds = sorted({int(_f(r["seed"])) for r in rows})
    groups: dict = {}
    for r in rows:
        if r.get("defense") in ("none", "nopeek") and int(_f(r["seed"])) == seeds[0] and r.get("samples_file"):
            key = (r.get("topology"), str(r["cut"]), r.get("party", "client"), r.get("message", "z"))
            groups.setdefault(key, []).append(r)
    several = len({k[0] for k in groups}) > 1 or len({k[2:] for k in groups}) > 1
    for (topology, cut, party, message), members in sorted(groups.items()):
        originals_path = os.path.join(samples_dir, members[0].get("originals_file") or "originals.npy")
        if not os.path.isfile(originals_path):
            continue
        originals = _load_samples(originals_path)
        grid_rows, labels = [originals], ["original"]
        for r in sorted(members, key=lambda r: _f(r["alpha"])):
            path = os.path.join(samples_dir, r["samples_file"])
            if os.path.isfile(path):
                grid_rows.append(_load_samples(path, like=originals))
                labels.append(f"alpha {_f(r['alpha']):g}" + (" (collapsed)" if _flag(r, "collapsed") else ""))
        if len(grid_rows) > 1:
            name = f"reconstructions_{topology}_cut{cut}_{party}_{message}.png" if several else f"reconstructions_cut{cut}.png"
            title = f"decoder reconstructions of the same held-out samples: {topology}, cut {cut}, {party}:{message}"
            grids.append((name, title, grid_rows, labels))
    return grids


def error_tradeoff_figure(rows, path: str) -> str:
    """The NoPeek paper's trade-off: reconstruction error of the decoder attack (MSE, the
    better of attack and mean input) against test accuracy, NoPeek and the noise defence
    side by side; one colour per (topology, cut, message); means over seeds with 95% intervals."""
    series = _series(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    multi = len(series) > 1
    for i, (key, curves) in enumerate(sorted(series.items())):
        color = colors[i % len(colors)]
        for family, style, marker, name in (("nopeek", "-", "o", "NoPeek"), ("noise", "--", "s", "noise")):
            pts = [p for p in curves[family] if p["n"] > 0 and np.isfinite(p["mse"])]
            if not pts:
                continue
            xs, ys = [p["mse"] for p in pts], [p["acc"] for p in pts]
            ax.errorbar(xs, ys, xerr=_bounded(xs, [p["mse_ci"] for p in pts], 0.0, np.inf),
                        yerr=_bounded(ys, [p["acc_ci"] for p in pts]), fmt=style + marker,
                        color=color, capsize=2, label=(f"{key[0]} cut {key[1]}, " if multi else "") + name)
            for p in pts:
                ax.annotate(f"{p['level']:g}", (p["mse"], p["acc"]), textcoords="offset points", xytext=(4, 3), fontsize=6)
    ax.set_xlabel("reconstruction error of the decoder attack, MSE  (higher = less leakage)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("NoPeek against noise on the activations (labels: alpha / noise scale)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _bounded(means, cis, lo=0.0, hi=1.0):
    """Asymmetric error bars of mean +- ci kept inside [lo, hi] (the metrics here are bounded;
    a t-interval over a bimodal handful of seeds is not)."""
    means, cis = np.asarray(means, float), np.asarray(cis, float)
    return np.stack([means - np.maximum(lo, means - cis), np.minimum(hi, means + cis) - means])


def compare_figure(named_rows: dict, path: str, *, title: str | None = None) -> str:
    """Several sweeps against alpha, one line each (e.g. a constant alpha, a warm-up, a linear
    cut layer), or one per topology and cut of a sweep that holds several (never a mean over
    cuts): test accuracy, held-out dCor(x, m) and a clean classifier's accuracy on the
    decoder's reconstructions (the better of attack and mean image). The line is the mean
    over the seeds that did not collapse, each seed a small dot (collapsed ones too);
    hollow markers: a seed collapsed there. The dCor panel shows the null band and the
    label's own dCor.

    named_rows: {legend label: a sweep's rows}."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("accuracy", "test accuracy"), ("dcor", "held-out dCor(x, m)"),
              ("best_classifier_accuracy", "classifier on reconstructions"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(_by_cell(named_rows).items()):
        color = colors[i % len(colors)]
        style = ("-", "--", ":", "-.")[(i // len(colors)) % 4]  # past the colours, the line's dash tells them apart
        by_alpha: dict = {}
        for r in rows:
            if r.get("defense") in ("none", "nopeek") and r.get("diverged") != "true":
                by_alpha.setdefault(_f(r["alpha"]), []).append(r)
        alphas = sorted(by_alpha)
        for ax, (column, ylabel) in zip(axes, panels):
            def value(r, column=column):
                v = _f(r.get(column))
                return v if np.isfinite(v) or column != "best_classifier_accuracy" else _f(r.get("attack_classifier_accuracy"))

            means = [_finite_mean([value(r) for r in (_working(by_alpha[a]) or by_alpha[a])]) for a in alphas]
            ax.plot(alphas, means, style, color=color, label=label)
            for a, m in zip(alphas, means):
                collapsed = any(_flag(r, "collapsed") for r in by_alpha[a])
                ax.plot([a], [m], "o", color=color, markerfacecolor="white" if collapsed else color, markersize=6)
                seeds = [value(r) for r in by_alpha[a]]
                ax.plot([a] * len(seeds), seeds, ".", color=color, alpha=0.35, markersize=4)
            ax.set_ylabel(ylabel)
        points = [{"null95": _f(r.get("dcor_null95")), "label": _f(r.get("dcor_label"))} for r in rows]
        _readings_lines(axes[1], points, color, vertical=False)
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("NoPeek alpha")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles, labels = axes[0].get_legend_handles_labels()
    keys = [Line2D([], [], marker=".", linestyle="", color="0.3", alpha=0.5, label="one seed"),
            *_key_handles("hollow: a seed collapsed there (left out of the mean)")]
    axes[0].legend(handles + keys[:2], labels + [k.get_label() for k in keys[:2]], fontsize=7)
    axes[1].legend(keys[2:], [k.get_label() for k in keys[2:]], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _by_cell(named_rows: dict) -> dict:
    """{label: rows} with each sweep that holds several topologies, cuts or attacked messages
    split into one entry per (topology, cut, party:message), labelled "LABEL topology cut C
    party:message", naming only what varies in that sweep: each seed is then one point."""
    out = {}
    for label, rows in named_rows.items():
        cells: dict = {}
        for r in rows:
            key = (r.get("topology", ""), f"cut {r.get('cut', '')}", f"{r.get('party', '')}:{r.get('message', '')}")
            cells.setdefault(key, []).append(r)
        if len(cells) == 1:
            out[label] = rows
            continue
        varies = [len({k[i] for k in cells}) > 1 for i in range(3)]
        for key, part in cells.items():
            out[" ".join([label, *(v for v, shown in zip(key, varies) if shown)])] = part
    return out


def _working(rows) -> list:
    """The rows whose model did not collapse."""
    return [r for r in rows if not _flag(r, "collapsed")]


def _finite_mean(values) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def load_histories(folder: str, rows=None) -> list[dict]:
    """The per-cell histories a sweep saved (DIR/histories/*.json); with `rows`, only the
    cells that have a row (so a discarded sweep's files never mix in)."""
    import json

    if not folder or not os.path.isdir(folder):
        return []
    keep = None
    if rows is not None:  # cell -> whether it collapsed (any of its rows says so)
        keep = {}
        for r in rows:
            k = (r.get("topology"), str(r["cut"]), r["defense"], _f(r["alpha"]), _f(r["noise_scale"]),
                 _f(r.get("strength", 0.0)), int(_f(r["seed"])))
            keep[k] = keep.get(k, False) or str(r.get("collapsed", "")).lower() == "true"
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                h = json.load(fh)
            strength = h.get("strength", h["alpha"] if h["defense"] == "nopeek" else h["noise_scale"])
            key = (h["topology"], str(h["cut"]), h["defense"], float(h["alpha"]), float(h["noise_scale"]),
                   float(strength if h["defense"] != "none" else 0.0), int(h["seed"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a history file of ours
        if keep is None or key in keep:
            out.append({**h, "collapsed": bool(keep and keep[key])})
    return out


def history_figure(histories, metric: str, ylabel: str, path: str, *, title: str | None = None) -> str:
    """`metric` of the history ("heldout_dcor", "test_accuracy", "train_loss", ...) over epochs:
    one line per (topology, cut, defence level), the mean over seeds with a 95% band. Collapsed
    seeds (`collapsed` of `load_histories`) are left out of the mean and counted in the label;
    a level whose every seed collapsed has no line."""
    groups: dict = {}
    dropped: dict = {}
    for h in histories:
        family, level = _family(h)
        key = (h["topology"], str(h["cut"]), family, float(level))
        if h.get("collapsed"):
            dropped[key] = dropped.get(key, 0) + 1
            continue
        groups.setdefault(key, []).append(h["history"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    several = len({k[:2] for k in groups}) > 1
    for (topology, cut, family, level), runs in sorted(groups.items()):
        gone = dropped.get((topology, cut, family, level), 0)
        epochs = min(len(r) for r in runs)
        xs = [r["epoch"] for r in runs[0][:epochs]]
        stats = [mean_ci([_f(run[e].get(metric)) for run in runs]) for e in range(epochs)]
        mean = np.array([m for m, _ in stats])
        ci = np.array([c for _, c in stats])
        label = ((f"{topology} cut {cut}, " if several else "") + f"{family} {level:g}"
                 + (f" ({len(runs)} seeds)" if len(runs) > 1 and not gone else "")
                 + (f" ({len(runs)} seed{'s' * (len(runs) > 1)}; collapsed {gone} of {len(runs) + gone}: left out)"
                    if gone else ""))
        line, = ax.plot(xs, mean, "-o", markersize=3, label=label)
        if len(runs) > 1:
            ax.fill_between(xs, np.maximum(mean - ci, 0.0), np.minimum(mean + ci, 1.0), color=line.get_color(), alpha=0.2)
        if metric == "heldout_dcor":  # the null of the same n (the last epoch's, or each epoch's), the label's dCor
            null = [_finite_mean([_f(run[e].get("heldout_dcor_null95")) for run in runs]) for e in range(epochs)]
            if np.any(np.isfinite(null)):  # a dash at each epoch that took it, joined where consecutive
                ax.plot(xs, null, "--_", color=line.get_color(), linewidth=1, markersize=12, alpha=0.6)
            label_dcor = _finite_mean([_f(run[0].get("heldout_dcor_label")) for run in runs])
            if np.isfinite(label_dcor):
                ax.axhline(label_dcor, color="0.3", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if metric == "heldout_dcor":
        from matplotlib.lines import Line2D

        keys = [Line2D([], [], color="0.3", linestyle="--", marker="_", markersize=12,
                       label="null 95% (independent samples, same n; at the epochs that took it)"),
                Line2D([], [], color="0.3", linestyle=":", label="dCor(x, label): the label alone")]
        handles, labels = handles + keys, labels + [k.get_label() for k in keys]
    ax.legend(handles, labels, fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_figures(rows, fig_dir: str, *, samples_dir: str | None = None, histories_dir: str | None = None) -> list[str]:
    """Every sweep figure into `fig_dir`: trade-off, dCor and SSIM against alpha, dCor and
    accuracy over epochs (where histories were saved), reconstruction grids (where samples were).

    Raises:
      ConfigError: a sample file that is unreadable or of another shape than its originals
        (checked before any figure is drawn).
    """
    all_rows = list(rows)
    rows = [r for r in all_rows if r.get("acts_on") != "gradient"]  # the labels' defences: their own figure, below
    if not all_rows:
        return []
    label_points = label_tradeoff_points(all_rows)
    if not rows:
        return [label_tradeoff_figure(label_points, os.path.join(fig_dir, "label_tradeoff.png"))] if label_points else []
    grids = _sample_grids(rows, samples_dir)
    paths = [
        tradeoff_figure(rows, os.path.join(fig_dir, "tradeoff.png")),
        metric_vs_alpha_figure(rows, "dcor", "held-out dCor(x, m)", os.path.join(fig_dir, "dcor_vs_alpha.png")),
    ]
    if any(np.isfinite(_f(r.get("attack_ssim"))) for r in rows):
        paths.append(metric_vs_alpha_figure(rows, "ssim", "decoder SSIM (better of attack and baseline)",
                                            os.path.join(fig_dir, "ssim_vs_alpha.png")))
    if any(np.isfinite(_f(r.get("attack_mse"))) for r in rows):
        paths.append(error_tradeoff_figure(rows, os.path.join(fig_dir, "error_tradeoff.png")))
    histories = load_histories(histories_dir, rows)
    if histories:
        paths.append(history_figure(histories, "heldout_dcor", "held-out dCor(x, m), fixed batch",
                                    os.path.join(fig_dir, "dcor_over_epochs.png")))
        paths.append(history_figure(histories, "test_accuracy", "test accuracy",
                                    os.path.join(fig_dir, "accuracy_over_epochs.png")))
    for name, title, grid_rows, labels in grids:
        paths.append(reconstruction_grid(grid_rows, labels, os.path.join(fig_dir, name), title=title))
    if label_points:
        paths.append(label_tradeoff_figure(label_points, os.path.join(fig_dir, "label_tradeoff.png")))
    return paths


# ---- a dishonest server: FSHA curves, label-defence trade-off ----------------------


def label_tradeoff_points(rows) -> list[dict]:
    """Means over seeds of accuracy, label AUCs and leak AUCs max(AUC, 1 - AUC) per
    (topology, defence, strength; and cut, when the rows have several) from a sweep's rows:
    the undefended cells ("none" at strength 0) and those whose defence acts on the returned
    gradients (`acts_on`); [] when no row has label AUCs."""
    groups: dict = {}
    for r in rows:
        if not np.isfinite(_f(r.get("label_norm_auc"))) or _flag(r, "diverged"):
            continue
        defense = r.get("defense", "none")
        if defense != "none" and r.get("acts_on") != "gradient":
            continue
        strength = 0.0 if defense == "none" else _f(r.get("strength"))
        topology = r.get("topology")
        if len({x.get("cut") for x in rows}) > 1:  # several cuts: one curve per topology and cut
            topology = f"{topology} cut {r.get('cut')}"
        key = (topology, defense, strength, r.get("seed"))
        groups.setdefault(key[:3], {})[key[3]] = r  # one row per cell (a cell may have several messages)
    out = []
    for (topology, defense, strength), cells in sorted(groups.items()):
        members = list(cells.values())
        point = {"topology": topology, "defense": defense, "strength": strength, "n": len(members),
                 "accuracy": float(np.mean([_f(m.get("accuracy")) for m in members])),
                 "leak_null95": _finite_mean([_f(m.get("label_leak_null95")) for m in members])}
        for name in ("norm", "direction"):
            auc = np.array([_f(m.get(f"label_{name}_auc")) for m in members])
            point[f"{name}_auc"] = float(np.mean(auc))
            point[f"{name}_leak"] = float(np.mean(np.maximum(auc, 1 - auc)))  # an attacker may read either side
        out.append(point)
    if len({p["topology"] for p in out}) == 1:
        for p in out:
            p["topology"] = ""
    return out


def label_tradeoff_figure(points, path: str) -> str:
    """Label-defence trade-off: the norm and direction attacks' leak AUC, max(AUC, 1 - AUC),
    against test accuracy.

    points: dicts with "defense", "strength", "accuracy", "norm_leak", "direction_leak"
    (means over seeds), and optionally "topology" and "leak_null95"; one curve per
    (topology, defence), starting from the undefended point. Chance is drawn at the
    permutation null's 95% quantile of max(AUC, 1 - AUC) at the data's n (0.5 when it is
    not known): reading either side of the AUC, pure noise scores above 0.5."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    groups: dict = {}
    for p in points:
        groups.setdefault((p.get("topology", ""), p["defense"]), []).append(p)
    none = {p.get("topology", ""): p for p in points if p["defense"] == "none"}
    for (topology, defense), pts in sorted(groups.items()):
        if defense == "none":
            continue
        pts = sorted(pts, key=lambda p: p["strength"])
        if topology in none:
            pts = [none[topology]] + pts
        for ax, name in ((axes[0], "norm_leak"), (axes[1], "direction_leak")):
            line = ax.plot([p[name] for p in pts], [p["accuracy"] for p in pts], "-o", markersize=4,
                           label=f"{topology + ' ' if topology else ''}{defense}")
            for p in pts[1:]:
                ax.annotate(f"{p['strength']:g}", (p[name], p["accuracy"]), textcoords="offset points", xytext=(3, 3),
                            fontsize=7, color=line[0].get_color())
    null = _finite_mean([p.get("leak_null95", float("nan")) for p in points])
    chance = null if np.isfinite(null) else 0.5
    for ax, name in ((axes[0], "norm attack"), (axes[1], "direction attack")):
        ax.axvline(chance, color="gray", ls="--", alpha=0.6,
                   label=f"chance: null 95% ({chance:.3f})" if np.isfinite(null) else "chance (0.5)")
        ax.set_xlabel(f"{name}: max(AUC, 1 - AUC)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test accuracy")
    fig.suptitle("Label defences: leak AUC against accuracy (numbers: strength)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
