"""The `nopeek` command line: parses arguments and calls library functions, nothing more.

Every error a user can cause ends in one line `nopeek CMD: error: ...` and exit code 2;
an unexpected internal error ends in one line too (exit 1), with the traceback only when
NOPEEK_DEBUG=1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from nopeek import __version__
from nopeek.cliargs import OneLineErrorParser, add_dataclass_arguments, dataclass_from_args, fail
from nopeek.config import ConfigError, TrainConfig


def _user_errors():
    from nopeek.audit import AuditError
    from nopeek.data import DataError
    from nopeek.engine import TopologyError
    from nopeek.io import CheckpointError
    from nopeek.models import ModelError
    from nopeek.ray_executor import ClusterError
    from nopeek.runs import RunFolderError, TrainingDiverged

    return (AuditError, ConfigError, DataError, ModelError, TopologyError, RunFolderError, CheckpointError, TrainingDiverged,
            FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, ClusterError)


def _load_npy(path: str, prog: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        fail(prog, f"{path}: a pickled or object array; refusing to load it ({err})")
    except OSError as err:
        fail(prog, f"cannot read {path}: expected a .npy array ({err})")
    if not isinstance(array, np.ndarray):
        fail(prog, f"{path}: expected a .npy array, got an .npz archive")
    return array


def cmd_dcor(args: argparse.Namespace) -> int:
    """Distance statistics between two arrays (.npy files, or a bundled example)."""
    import metrics

    prog = "nopeek dcor"
    if (args.x is None) != (args.y is None):
        fail(prog, "give both X.npy and Y.npy, or neither for the bundled example")
    if args.block_size is not None and args.block_size < 1:
        fail(prog, f"--block-size must be >= 1, got {args.block_size}")
    if args.x is None:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x, y = data.data, data.data ** 2
        names = ("X", "Y")
        print("bundled example: breast-cancer features x (569, 30) and x**2")
    else:
        x, y = _load_npy(args.x, prog), _load_npy(args.y, prog)
        names = (args.x, args.y)
    for name, a in zip(names, (x, y)):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
            fail(prog, f"{name}: expected a real numeric array, got dtype {a.dtype}")
        if a.ndim == 0 or a.shape[0] == 0:
            fail(prog, f"{name}: expected samples along axis 0, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            fail(prog, f"{name} contains NaN or Inf")
    if len(x) != len(y):
        fail(prog, f"{names[0]} has {len(x)} samples but {names[1]} has {len(y)}; "
                   "x and y must hold the same number of samples")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    rows = [
        ("distance_correlation", metrics.distance_correlation(x, y, block_size=args.block_size)),
        ("distance_correlation_sqr", metrics.distance_correlation_sqr(x, y, block_size=args.block_size)),
        ("u_distance_correlation_sqr", metrics.u_distance_correlation_sqr(x, y, block_size=args.block_size)),
    ]
    for name, value in rows:
        print(f"{name:28s} {float(value):.6f}")
    return 0


def _print_cuts(config: TrainConfig) -> None:
    from nopeek.data import sample_shape
    from nopeek.models import build_model, list_cuts

    shape, classes = sample_shape(config.dataset, config.data_dir)
    cuts = list_cuts(build_model(config.model, shape, classes, config.widths), shape)
    print(f"{config.model} on {config.dataset} (input {shape}); cut k = after block k")
    print(f"{'cut':>3s}  {'after block':12s} {'activation shape':18s} {'bytes/sample':>12s}")
    for c in cuts:
        print(f"{c.cut:>3d}  {c.block:12s} {str(c.shape):18s} {c.bytes_per_sample:>12d}")


def _print_transcript(config: TrainConfig, built, shape) -> None:
    import jax
    import jax.numpy as jnp

    from nopeek.engine import format_transcript, transcript

    n = config.batch_size
    data = built.prepare(jnp.zeros((n, *shape), jnp.float32), jnp.zeros((n,), jnp.int32))
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), data)
    from nopeek.train import make_optimizer

    params = built.init(0)
    optimizer = make_optimizer(config.optimizer, config.lr)
    handoff_state = {p: (v, optimizer.init(v)) for p, v in params.items()}
    print(f"{config.topology} {config.model} cuts {','.join(map(str, config.resolved_cuts()))} on {config.dataset}, "
          f"batch {n}: what crosses in one step")
    print(format_transcript(transcript(built.topology, params, spec, handoff_state=handoff_state)))


def cmd_train(args: argparse.Namespace) -> int:
    """Train one NoPeek split model of any topology, or list a model's cuts with --list-cuts."""
    from nopeek.data import sample_shape
    from nopeek.runs import run_train
    from nopeek.train import build_topology

    if args.cut is not None:
        if args.cuts is not None:
            raise ConfigError("give --cut K (one cut) or --cuts K1,K2, not both")
        args.cuts = (args.cut,)
    config = dataclass_from_args(TrainConfig, args).validate()
    if args.list_cuts:
        _print_cuts(config)
        return 0
    shape, classes = sample_shape(config.dataset, config.data_dir)
    built = build_topology(config, shape, classes)  # topology errors before any data is loaded
    if args.transcript:
        _print_transcript(config, built, shape)
        return 0
    cuts = "-".join(map(str, config.resolved_cuts(classes)))
    out = args.out or (f"runs/train-{config.dataset.replace(':', '_').replace('/', '_')}-{config.model}-{config.topology}"
                       f"-cut{cuts}-alpha{config.alpha:g}-seed{config.seed}")
    metrics = run_train(config, out, force=args.force, progress=not args.quiet)
    print(
        f"{out}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"held-out dCor(x, z) {metrics['dcor']:.4f} over {metrics['n_test']} samples, "
        f"{metrics['seconds']:.1f} s"
    )
    if len(metrics["leakage"]) > 1:
        for item in metrics["leakage"]:
            print(f"  {item['party']:>8s} sends {item['message']:4s}: held-out dCor {item['dcor']:.4f}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a message of a trained run folder and score the attack."""
    from nopeek.attack_run import AttackConfig, run_attack

    config = dataclass_from_args(AttackConfig, args).validate()
    if config.attack == "fsha":
        return _cmd_fsha(args, config)
    given = _given(args, _FSHA_ONLY)
    if given:
        raise ConfigError(f"{given[0]} is for --attack fsha (which trains its own client); --attack {config.attack} "
                          "reads the run's config from --run")
    if args.run is None:
        raise ConfigError(f"--run is required for --attack {config.attack} (only --attack fsha trains its own client)")
    if not os.path.isdir(args.run) or not os.path.exists(os.path.join(args.run, "config.json")):
        raise ConfigError(f"--run {args.run}: not a `nopeek train` run folder (no config.json)")
    out = args.out or os.path.join(args.run, "attacks", config.attack)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out}: is a file, not a folder")
    scores = run_attack(args.run, config, out)
    keys = [k for k in ("mse", "psnr", "ssim", "dcor", "classifier_accuracy", "norm_auc", "direction_auc") if k in scores]
    parts = [f"{k} {scores[k]:.4f}" + (f" (baseline {scores['baseline_' + k]:.4f})" if "baseline_" + k in scores else "")
             for k in keys]
    for probe in scores.get("probes", []):
        parts.append(f"{probe['probe']} probe accuracy {probe['accuracy']:.4f} (chance {probe['chance']:.4f})")
    print(f"{out} ({scores['message']}): " + "; ".join(parts))
    return 0


def _fsha_option_names() -> list[str]:
    """The `nopeek attack` options only `--attack fsha` takes: the client's training options
    (but the epochs), the server's (FSHAConfig) and the client's detector (SplitGuardConfig)."""
    from nopeek.fsha import FSHAConfig
    from nopeek.splitguard import SplitGuardConfig

    names = sorted(TrainConfig.field_names() - set(_FSHA_SKIP)) + ["cut"]
    return names + [f.name for f in dataclasses.fields(FSHAConfig)] + [f.name for f in dataclasses.fields(SplitGuardConfig)] + [
        "splitguard", "quiet"]


_FSHA_SKIP = ("epochs", "dcor_batch", "task_weight", "label_defense", "label_strength")
_FSHA_ONLY: list[str] = []  # filled by build_parser
_NOT_FSHA = ("message", "leak_fraction", "leak_count", "aux_classes", "attack_steps", "attack_lr", "n_targets", "tv_weight")


def _given(args: argparse.Namespace, names) -> list[str]:
    """The options among `names` given on the command line, as --option-name."""
    return ["--" + n.replace("_", "-") for n in names
            if getattr(args, n, None) not in (None, False)]


def _cmd_fsha(args: argparse.Namespace, attack) -> int:
    """`nopeek attack --attack fsha`: train a client under the feature-space hijacking attack."""
    from nopeek.fsha import FSHAConfig, run_fsha
    from nopeek.splitguard import SplitGuard, SplitGuardConfig

    if args.run is not None:
        raise ConfigError("--run: --attack fsha trains its own client under attack; give the client's training "
                          "options (--dataset, --model, --cut, --alpha, ...) instead of a run folder")
    bad = _given(args, _NOT_FSHA)
    if bad:
        hint = " (its iterations are --fsha-steps)" if bad[0] == "--attack-steps" else ""
        raise ConfigError(f"{bad[0]} does not apply to --attack fsha{hint}")
    if args.cut is not None:
        if args.cuts is not None:
            raise ConfigError("give --cut K (one cut) or --cuts K, not both")
        args.cuts = (args.cut,)
    config = dataclass_from_args(TrainConfig, args).validate()
    fsha = dataclass_from_args(FSHAConfig, args).validate()
    if config.alpha_warmup > 0:
        raise ConfigError("--alpha-warmup does not apply to --attack fsha: its client uses --alpha from the first step")
    if fsha.fsha_steps == 0:
        raise ConfigError("--fsha-steps must be >= 1 for --attack fsha (0 means off only in nopeek sweep)")
    sg = dataclass_from_args(SplitGuardConfig, args).validate()
    if not args.splitguard and _given(args, [f.name for f in dataclasses.fields(SplitGuardConfig)]):
        raise ConfigError(f"{_given(args, [f.name for f in dataclasses.fields(SplitGuardConfig)])[0]} needs --splitguard")
    from nopeek.data import sample_shape
    from nopeek.train import build_topology

    shape, classes = sample_shape(config.dataset, config.data_dir)
    build_topology(config, shape, classes)  # topology and cut errors before any data is loaded
    if config.topology != "vanilla":
        raise ConfigError(f"--topology {config.topology}: --attack fsha runs on the vanilla topology (one client, one server)")
    cuts = "-".join(map(str, config.resolved_cuts(classes)))
    out = args.out or (f"runs/fsha-{config.dataset.replace(':', '_').replace('/', '_')}-{config.model}-cut{cuts}"
                       f"-alpha{config.alpha:g}-seed{config.seed}")
    guard = SplitGuard(sg, classes, seed=config.seed) if args.splitguard else None
    scores = run_fsha(config, fsha, out, attack_seed=attack.attack_seed, guard=guard, progress=not args.quiet)
    parts = [f"{k} {scores[k]:.4f} (baseline {scores['baseline_' + k]:.4f})"
             for k in ("mse", "psnr", "ssim", "classifier_accuracy")]
    print(f"{out}: FSHA after {scores['fsha_steps']} iterations ({scores['n_public']} public, {scores['n_private']} "
          f"private samples): " + "; ".join(parts))
    det = scores["detection"]
    if det is not None:
        if det["fired"]:
            at = det["at_detection"]
            print(f"SplitGuard fired at iteration {det['iteration']} after {det['fake_batches']} fake batches; "
                  f"the server's reconstructions then: mse {at['mse']:.4f} (baseline {at['baseline_mse']:.4f}), "
                  f"ssim {at['ssim']:.4f} (baseline {at['baseline_ssim']:.4f})")
        else:
            print(f"SplitGuard did not fire ({det['fake_batches']} fake batches)")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit activations saved from any framework: leakage and attacks on the user's arrays."""
    from nopeek.audit import AuditConfig, run_audit

    config = dataclass_from_args(AuditConfig, args).validate()
    result = run_audit(args.pairs, args.targets, args.out, config, accuracy=args.accuracy,
                       labels=args.labels, force=args.force, progress=not args.quiet)
    print(result["table"])
    print(f"\n{len(result['targets'])} target(s) audited in {result['seconds']:.0f} s; "
          f"{', '.join(result['files'])} in {args.out}/")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a leakage sweep: topologies x cuts x defences x seeds, resumable, with figures."""
    import time as _time

    from nopeek.presets import PRESET_INFO
    from nopeek.sweep import SweepConfig, format_table, load_config_file, run_sweep

    if args.merge_shards is not None:
        return _sweep_merge(args)
    _check_cluster_args(args)
    preset = PRESET_INFO[args.preset]
    base = preset.small if args.small else preset.config
    if args.config:
        loaded = load_config_file(args.config)
        try:
            base = SweepConfig.from_dict({**base.to_dict(), **loaded})
        except ConfigError as err:
            raise ConfigError(f"{args.config}: {err}") from None
    config = dataclass_from_args(SweepConfig, args, base=base).validate()
    out = args.out or _time.strftime("runs/%Y%m%d-%H%M%S")
    t0 = _time.perf_counter()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    if args.shard is not None or args.ray is not None:
        return _sweep_cluster(args, config, out, log)
    rows = run_sweep(config, out, force=args.force, progress=not args.quiet, log=log)
    print(format_table(rows))
    from nopeek.sweep_dishonest import format_table as format_dishonest

    extra = format_dishonest(rows)  # label AUCs and FSHA scores, when the sweep has them
    if extra:
        print("\n" + extra)
    print(f"\n{len(rows)} rows in {out}/results.csv; figures in {out}/figures/ ({_time.perf_counter() - t0:.0f} s)")
    return 0


# ---- sweeps on a cluster: --shard I/N, --merge-shards DIR, --ray [ADDRESS] (nopeek.shards, nopeek.ray_executor)


def _add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on a cluster (README: Running on a cluster)")
    g.add_argument("--shard", metavar="I/N", default=None,
                   help="run shard I of N (0 <= I < N; e.g. $SLURM_ARRAY_TASK_ID/8) into --out, shared by all "
                        "shards; the last to finish merges into results.csv")
    g.add_argument("--merge-shards", metavar="DIR", default=None,
                   help="merge DIR's shard files into DIR/results.csv and draw the figures; lists missing groups (exit 3)")
    g.add_argument("--ray", metavar="ADDRESS", nargs="?", const="", default=None,
                   help="run the groups as Ray tasks: auto (the cluster `ray start --head` started), HOST:PORT, "
                        "ray://HOST:10001, or local (start one here); no value: RAY_ADDRESS or a local instance")
    g.add_argument("--ray-cpus", type=float, default=None, help="CPUs each group's task asks for (default 1)")
    g.add_argument("--ray-retries", type=int, default=None, help="retries of a task whose worker died (default 3)")


def _check_cluster_args(args: argparse.Namespace) -> None:
    """Refuse a bad --shard, a missing Ray, or options that do not go together, before anything runs."""
    if args.shard is not None and args.ray is not None:
        raise ConfigError("give --shard I/N (one process of a batch array) or --ray (a Ray cluster), not both")
    if args.ray is None and (args.ray_cpus is not None or args.ray_retries is not None):
        raise ConfigError("--ray-cpus and --ray-retries need --ray")
    if args.shard is not None:
        from nopeek.shards import parse_shard

        parse_shard(args.shard)
        if args.out is None:
            raise ConfigError("--shard needs --out DIR: the folder every shard shares")
    if args.ray is not None:
        from nopeek.ray_executor import import_ray

        import_ray(args.ray or None)


def _sweep_cluster(args: argparse.Namespace, config, out: str, log) -> int:
    """`nopeek sweep --shard I/N` or `--ray [ADDRESS]`: the table, then where things stand."""
    from nopeek.sweep import format_table

    if args.ray is not None:
        from nopeek.ray_executor import run_sweep_ray

        retries = {} if args.ray_retries is None else {"max_retries": args.ray_retries}
        rows = run_sweep_ray(config, out, address=args.ray or None, force=args.force, progress=not args.quiet, log=log,
                             num_cpus=args.ray_cpus, **retries)
        print(format_table(rows))
        print(f"\n{len(rows)} rows in {out}/results.csv; figures in {out}/figures/")
        return 0
    from nopeek.shards import parse_shard, run_shard

    result = run_shard(config, out, *parse_shard(args.shard), force=args.force, progress=not args.quiet, log=log)
    if result.rows:
        print(format_table(result.rows) + "\n")
    print(result.report(out, config))
    return 0


def _sweep_merge(args: argparse.Namespace) -> int:
    """`nopeek sweep --merge-shards DIR`: exit 0 when every cell is there, 3 when some are missing."""
    from nopeek.shards import merge, merge_report, read_config
    from nopeek.sweep import SweepConfig

    given = [a for a in ("shard", "ray", "out", "config") if getattr(args, a) is not None]
    given += [n for n in SweepConfig.field_names() if getattr(args, n, None) is not None]
    if given or args.force:
        raise ConfigError(f"--merge-shards DIR reads the sweep's config from DIR/config.json; drop "
                          f"--{(given or ['force'])[0].replace('_', '-')}")
    config = read_config(args.merge_shards)
    status = merge(args.merge_shards, config)
    print(merge_report(status, args.merge_shards, config))
    return 0 if status.complete else 3


def cmd_figures(args: argparse.Namespace) -> int:
    """Redraw a sweep's figures from its results.csv, or compare several sweeps (--out FILE)."""
    from nopeek.plots import check_results, compare_figure, sweep_figures
    from nopeek.results import read_rows

    named = {}
    for folder in args.dirs:
        path = os.path.join(folder, "results.csv")
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: not found (run `nopeek sweep --out {folder}` first)")
        check_results(path)
        rows = read_rows(path)
        if not rows:
            raise ConfigError(f"{path}: no complete rows to draw")
        named[os.path.basename(os.path.normpath(folder))] = rows
    if len(args.dirs) > 1 or args.out:
        if not args.out:
            raise ConfigError("comparing several sweeps needs --out FILE.png")
        if os.path.isdir(args.out):
            raise ConfigError(f"--out {args.out}: is a folder; give a .png file name")
        print(compare_figure(named, args.out))
        return 0
    folder = args.dirs[0]
    for p in sweep_figures(named[os.path.basename(os.path.normpath(folder))], os.path.join(folder, "figures"),
                           samples_dir=os.path.join(folder, "samples"), histories_dir=os.path.join(folder, "histories")):
        print(p)
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    """Per-client compute and communication of split learning, federated learning and large-batch SGD."""
    from nopeek.cost import PRESETS, CostConfig
    from nopeek.cost_report import run_cost

    base = PRESETS[args.preset] if args.preset else (CostConfig(),)
    configs = [dataclass_from_args(CostConfig, args, base=c).validate() for c in base]
    report = run_cost(configs, args.out, reference=args.preset == "seed-table")
    print(report.text)
    if report.files:
        print(f"\nwrote {', '.join(report.files)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="nopeek",
        description="Measure and reduce what leaks between the parties of a split neural network.",
    )
    parser.add_argument("--version", action="version", version=f"nopeek {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)

    p = sub.add_parser("dcor", help="distance correlation between two arrays")
    p.add_argument("x", nargs="?", help="X.npy, samples along axis 0")
    p.add_argument("y", nargs="?", help="Y.npy, as many samples as X")
    p.add_argument("--block-size", type=int, default=None, help="exact blocked form, O(n*block) memory")
    p.set_defaults(func=cmd_dcor)

    p = sub.add_parser("train", help="train a NoPeek split model of any topology", description=TrainConfig.__doc__)
    add_dataclass_arguments(p, TrainConfig)
    p.add_argument("--cut", type=int, default=None, help="one cut: shorthand for --cuts K")
    p.add_argument("--out", default=None, help="run folder (default: runs/train-<dataset>-<model>-...)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--list-cuts", action="store_true", help="print each cut's activation shape and size, then exit")
    p.add_argument("--transcript", action="store_true", help="print what crosses between the parties in one step, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    from nopeek.attack_run import AttackConfig

    p = sub.add_parser("attack", help="attack a message of a trained split model, or train one under FSHA",
                       description=AttackConfig.__doc__ + " --attack fsha trains a client under a malicious server "
                       "instead (nopeek.fsha): it takes the client's training options and the FSHA options, not --run.")
    p.add_argument("--run", default=None, help="run folder written by `nopeek train` (every attack but fsha)")
    add_dataclass_arguments(p, AttackConfig)
    p.add_argument("--out", default=None, help="output folder (default: RUN/attacks/ATTACK; fsha: runs/fsha-...)")
    from nopeek.fsha import FSHAConfig
    from nopeek.splitguard import SplitGuardConfig

    fsha = p.add_argument_group("--attack fsha: the client (as in `nopeek train`), the server, the client's detector")
    add_dataclass_arguments(fsha, TrainConfig, skip=_FSHA_SKIP)
    fsha.add_argument("--cut", type=int, default=None, help="one cut: shorthand for --cuts K")
    add_dataclass_arguments(fsha, FSHAConfig)
    fsha.add_argument("--splitguard", action="store_true", help="the client runs SplitGuard (fake batches) and reports detection")
    add_dataclass_arguments(fsha, SplitGuardConfig)
    fsha.add_argument("--quiet", action="store_true", help="no progress bar")
    _FSHA_ONLY[:] = _fsha_option_names()
    p.set_defaults(func=cmd_attack)

    from nopeek.audit import AuditConfig

    p = sub.add_parser("audit", help="audit activations saved from any framework (.npz files)",
                       description="Leakage and attacks on a split model's activations saved as .npz: "
                       "LEAKED.npz holds the attacker's x, z (and y); each HELDOUT.npz the victim's x, z "
                       "(and y, g, accuracy). Writes scores.json, report.md and figures to --out.")
    p.add_argument("--pairs", nargs="+", required=True, metavar="LEAKED.npz",
                   help="the attacker's pairs: one file for every target, or one per target in the same order")
    p.add_argument("--targets", nargs="+", required=True, metavar="HELDOUT.npz",
                   help="held-out activations, one file per model (cut, alpha, ...) to audit")
    p.add_argument("--out", required=True, help="output folder (written whole or not at all)")
    p.add_argument("--accuracy", nargs="+", type=float, default=None, metavar="ACC",
                   help="each target's test accuracy in [0, 1] (over an `accuracy` entry in its file)")
    p.add_argument("--labels", nargs="+", default=None, metavar="NAME", help="a name per target (default: file names)")
    add_dataclass_arguments(p, AuditConfig)
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_audit)

    from nopeek.presets import PRESETS
    from nopeek.sweep import SweepConfig

    p = sub.add_parser("sweep", help="leakage sweep over topologies x cuts x defences x seeds (the main job)",
                       description=SweepConfig.__doc__)
    p.add_argument("--preset", choices=tuple(PRESETS), default="default", help="starting point (default: default)")
    p.add_argument("--small", action="store_true", help="the preset's small version (seconds, on digits)")
    p.add_argument("--config", default=None, help="TOML or JSON file of SweepConfig fields (over the preset)")
    add_dataclass_arguments(p, SweepConfig)
    p.add_argument("--out", default=None, help="output folder (default: runs/<timestamp>)")
    p.add_argument("--force", action="store_true", help="discard results of a different config in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_cluster_arguments(p)
    p.set_defaults(func=cmd_sweep)

    from nopeek.cost import PRESETS as COST_PRESETS, CostConfig

    p = sub.add_parser("cost", help="per-client compute and communication against federated learning",
                       description=CostConfig.__doc__)
    p.add_argument("--preset", choices=tuple(COST_PRESETS), default=None,
                   help="start from a preset (seed-table: the split-learning cost table); options given override it")
    add_dataclass_arguments(p, CostConfig)
    p.add_argument("--out", default=None, help="folder for cost.csv, cost.png (and the sensitivity files)")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("figures", help="redraw a sweep's figures from its results.csv, or compare sweeps")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep output folder(s)")
    p.add_argument("--out", default=None, help="with several folders: the comparison figure's .png file")
    p.set_defaults(func=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = f"nopeek {args.command}"
    try:
        return args.func(args)
    except _user_errors() as err:
        fail(prog, str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; finished work is kept, run the same command again to resume\n")
        return 130
    except Exception as err:  # an unexpected internal error: still one line unless debugging
        if os.environ.get("NOPEEK_DEBUG"):
            raise
        sys.stderr.write(f"{prog}: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                         "(set NOPEEK_DEBUG=1 for the traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
