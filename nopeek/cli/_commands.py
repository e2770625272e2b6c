"""What each `nopeek` subcommand does: read its parsed options into configs and call the
library function a notebook would call; print what it returns. Nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from nopeek.cli._args import dataclass_from_args, fail
from nopeek.errors import USER_ERRORS, ConfigError

# `nopeek train --server fsha`: training options the FSHA client does not take (it runs
# --fsha-steps iterations, its loss is the server's, its labels stay home).
FSHA_SKIP = ("epochs", "dcor_batch", "task_weight", "defenses", "fresh")


def _load_npy(path: str, prog: str) -> np.ndarray:
    from nopeek.core import npy_array

    try:
        return npy_array(path, ConfigError)  # the header checked first: a lying one allocates nothing
    except ConfigError as err:
        fail(prog, str(err))


# `nopeek dcor`'s permutation test: on by default up to DEFAULT_TEST_MAX_SAMPLES dense samples
# (its n x n matrices fit and it takes seconds); 19 permutations are the fewest that can
# give a p-value of 0.05 ((1 + 0) / (1 + 19)).
DEFAULT_PERMUTATIONS, DEFAULT_TEST_MAX_SAMPLES, MIN_PERMUTATIONS = 200, 5000, 19


def cmd_dcor(args: argparse.Namespace) -> int:
    """Distance statistics between two arrays (.npy files, or a bundled example)."""
    import metrics

    prog = "nopeek dcor"
    if (args.x is None) != (args.y is None):
        fail(prog, "give both X.npy and Y.npy, or neither for the bundled example")
    if args.block_size is not None and args.block_size < 1:
        fail(prog, f"--block-size must be >= 1, got {args.block_size}")
    if args.permutations is not None and (args.permutations < 0 or 0 < args.permutations < MIN_PERMUTATIONS):
        fail(prog, f"--permutations must be 0 (no test) or at least {MIN_PERMUTATIONS} (fewer can never reach a "
                   f"p-value of 0.05), got {args.permutations}")
    if not 0 <= args.seed < 2**32:
        fail(prog, f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
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
    permutations = args.permutations
    if permutations is None:  # the test by default where it costs about as much as the statistics above
        permutations = DEFAULT_PERMUTATIONS if args.block_size is None and len(x) <= DEFAULT_TEST_MAX_SAMPLES else 0
        if not permutations:
            print(f"dcor_null95: not computed ({len(x)} samples{', blocked' if args.block_size else ''}: each "
                  f"permutation costs one more dCor; --permutations {DEFAULT_PERMUTATIONS} computes it)")
    if permutations:
        # A V-statistic dCor reads well above 0 for independent samples (more so in high
        # dimension): print what the same n of independent pairs reads, and the p-value.
        test = metrics.distance_correlation_test(x, y, permutations=permutations, key=args.seed,
                                                 block_size=args.block_size)
        print(f"{'dcor_null95':28s} {float(test.dcor_null95):.6f}")
        print(f"{'pvalue':28s} {float(test.pvalue):.6f}")
        dependent = float(test.pvalue) <= 0.05 * (1 + 1e-6)  # 1/20 in float32 reads 0.0500000007
        print(f"null: dCor of {len(x)} independent pairs ({permutations} permutations of Y's rows, "
              f"seed {args.seed}); {'dependent' if dependent else 'no evidence of dependence'} at the 5% level")
    return 0


# ---- train ---------------------------------------------------------------------------------


def _print_cuts(config) -> None:
    from nopeek.data import sample_shape
    from nopeek.protocol import build_model, list_cuts

    shape, classes = sample_shape(config.dataset, config.data_dir)
    cuts = list_cuts(build_model(config.model, shape, classes, config.widths), shape)
    print(f"{config.model} on {config.dataset} (input {shape}); cut k = after block k")
    print(f"{'cut':>3s}  {'after block':12s} {'activation shape':18s} {'bytes/sample':>12s}")
    for c in cuts:
        print(f"{c.cut:>3d}  {c.block:12s} {str(c.shape):18s} {c.bytes_per_sample:>12d}")


def _print_transcript(config, built, shape) -> None:
    import jax
    import jax.numpy as jnp

    from nopeek.protocol import format_transcript, transcript
    from nopeek.training import cuts_of, make_optimizer

    n = config.batch_size
    data = built.prepare(jnp.zeros((n, *shape), jnp.float32), jnp.zeros((n,), jnp.int32))
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), data)
    params = built.init(0)
    optimizer = make_optimizer(config.optimizer, config.lr)
    handoff_state = {p: (v, optimizer.init(v)) for p, v in params.items()}
    classes = next(iter(built.tasks.values()))
    print(f"{config.topology} {config.model} cuts {','.join(map(str, cuts_of(config, classes)))} on {config.dataset}, "
          f"batch {n}: what crosses in one step")
    print(format_transcript(transcript(built.topology, params, spec, handoff_state=handoff_state)))


def list_defences() -> str:
    from nopeek.defences import DEFENCES

    lines = [f"{'defence':10s} {'acts on':10s} {'option':16s} strength", "-" * 90]
    for name, s in DEFENCES.items():
        option = f"--{s.config_field.replace('_', '-')}" if s.config_field else f"--defenses {name}=S"
        lines.append(f"{name:10s} {s.acts_on:10s} {option:16s} {s.strength}")
        lines.append(f"{'':10s} {s.description}")
    return "\n".join(lines)


def given_options(args: argparse.Namespace, names) -> list[str]:
    """The options among `names` given on the command line, as --option-name."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) not in (None, False)]


def server_option_names() -> list[str]:
    """The `nopeek train` options only a dishonest server's run takes (FSHA's, SplitGuard's)."""
    from nopeek.dishonest import FSHAConfig, SplitGuardConfig

    return ([f.name for f in dataclasses.fields(FSHAConfig)] + [f.name for f in dataclasses.fields(SplitGuardConfig)]
            + ["splitguard", "attack_seed"])


def _own_data_absolute(config):
    """`config` with an own data set's path made absolute (`nopeek.data.with_absolute_path`),
    so that the run folder's config.json finds the data from wherever `nopeek attack --run` is
    started."""
    from nopeek.data import with_absolute_path

    return config.replace(dataset=with_absolute_path(config.dataset))


def _name_of(dataset: str) -> str:
    """A data set as typed, fit for a folder name: npz:data/mine.npz -> npz_mine.npz."""
    kind, sep, path = dataset.partition(":")
    return f"{kind}_{os.path.basename(os.path.normpath(path))}" if sep else dataset


def _check_clients_apply(args: argparse.Namespace, config) -> None:
    """Refuse --clients on a topology without several clients (it would be recorded and do nothing)."""
    from nopeek.protocol import TOPOLOGIES, spec

    if getattr(args, "clients", None) is not None and not spec(config.topology).takes_clients:
        takes = ", ".join(name for name, s in TOPOLOGIES.items() if s.takes_clients)
        raise ConfigError(f"--clients applies to topologies with several data holders ({takes}), "
                          f"not --topology {config.topology}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train one split model of any topology (against an honest server, or a dishonest one
    with --server), or list a model's cuts, the defences, or one step's transcript."""
    from nopeek.data import sample_shape
    from nopeek.training import TrainConfig, build_topology, cuts_of, run_train

    if args.list_defenses:
        print(list_defences())
        return 0
    if args.cut is not None:
        if args.cuts is not None:
            raise ConfigError("give --cut K (one cut) or --cuts K1,K2, not both")
        args.cuts = (args.cut,)
    if args.server != "honest":
        return _train_dishonest(args)
    given = given_options(args, server_option_names())
    if given:
        raise ConfigError(f"{given[0]} is for a dishonest server's run (--server fsha)")
    config = _own_data_absolute(dataclass_from_args(TrainConfig, args)).validate()
    _check_clients_apply(args, config)
    if args.list_cuts:
        _print_cuts(config)
        return 0
    shape, classes = sample_shape(config.dataset, config.data_dir)
    built = build_topology(config, shape, classes)  # topology errors before any data is loaded
    if args.transcript:
        _print_transcript(config, built, shape)
        return 0
    cuts = "-".join(map(str, cuts_of(config, classes)))
    out = args.out or (f"runs/train-{_name_of(args.dataset or config.dataset)}-{config.model}-{config.topology}"
                       f"-cut{cuts}-alpha{config.alpha:g}-seed{config.seed}")
    metrics = run_train(config, out, force=args.force, progress=not args.quiet, fresh=args.fresh,
                        log=lambda line: print(f"nopeek train: {line}", file=sys.stderr, flush=True), built=built)
    print(
        f"{out}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"held-out dCor(x, z) {metrics['dcor']:.4f} over {metrics['n_test']} samples, "
        f"{metrics['seconds']:.1f} s"
    )
    if len(metrics["leakage"]) > 1:
        for item in metrics["leakage"]:
            print(f"  {item['party']:>8s} sends {item['message']:4s}: held-out dCor {item['dcor']:.4f}")
    _warn_collapsed("nopeek train", out, metrics["collapse_reason"], metrics["test_accuracy"],
                    metrics["chance_accuracy"], "metrics.json")
    return 0


def _warn_collapsed(prog: str, where: str, reason: str, accuracy: float, chance: float, file: str) -> None:
    """One warning line on stderr for a model that collapsed (its results are kept, flagged)."""
    if reason:
        print(f"{prog}: warning: {where}: the model collapsed ({reason}: test accuracy {accuracy:.4f}, chance "
              f"{chance:.4f}); its scores mean little, {file} says collapsed", file=sys.stderr)


def _train_dishonest(args: argparse.Namespace) -> int:
    """`nopeek train --server fsha`: train a client under the feature-space hijacking attack."""
    from nopeek.data import sample_shape
    from nopeek.dishonest import FSHAConfig, SplitGuard, SplitGuardConfig, check_client, run_fsha
    from nopeek.training import TrainConfig, build_topology, cuts_of

    bad = given_options(args, FSHA_SKIP + ("list_cuts", "transcript"))
    if bad:
        raise ConfigError(f"{bad[0]} does not apply to --server {args.server} (its iterations are --fsha-steps)")
    config = _own_data_absolute(dataclass_from_args(TrainConfig, args)).validate()
    _check_clients_apply(args, config)
    fsha = dataclass_from_args(FSHAConfig, args).validate()
    if config.alpha_warmup > 0:
        raise ConfigError(f"--alpha-warmup does not apply to --server {args.server}: its client uses --alpha from the "
                          "first step")
    sg = dataclass_from_args(SplitGuardConfig, args).validate()
    sg_given = given_options(args, [f.name for f in dataclasses.fields(SplitGuardConfig)])
    if not args.splitguard and sg_given:
        raise ConfigError(f"{sg_given[0]} needs --splitguard")
    shape, classes = sample_shape(config.dataset, config.data_dir)
    build_topology(config, shape, classes)  # topology and cut errors before any data is loaded
    check_client(config)
    attack_seed = args.attack_seed if args.attack_seed is not None else 0
    if attack_seed < 0:
        raise ConfigError(f"--attack-seed must be >= 0, got {attack_seed}")
    cuts = "-".join(map(str, cuts_of(config, classes)))
    out = args.out or (f"runs/{args.server}-{_name_of(args.dataset or config.dataset)}-{config.model}-cut{cuts}"
                       f"-alpha{config.alpha:g}-seed{config.seed}")
    guard = SplitGuard(sg, classes, seed=config.seed) if args.splitguard else None
    scores = run_fsha(config, fsha, out, attack_seed=attack_seed, guard=guard, progress=not args.quiet, force=args.force)
    parts = [f"{k} {scores[k]:.4f} (baseline {scores['baseline_' + k]:.4f})"
             for k in ("mse", "psnr", "ssim", "classifier_accuracy")]
    print(f"{out}: FSHA after {scores['fsha_steps']} iterations ({scores['n_public']} public, {scores['n_private']} "
          f"private samples): " + "; ".join(parts) + f"; class-mean image (the label alone) mse {scores['class_mean_mse']:.4f}, "
          f"ssim {scores['class_mean_ssim']:.4f}")
    print(f"the client's held-out dCor(x, z) {scores['client_dcor']:.3f} (null 95% {scores['client_dcor_null95']:.3f}, "
          f"partial given the label {scores['client_pdcor_label']:.3f}); a linear probe on its messages reads the label "
          f"at {scores['task_probe_accuracy']:.3f} (chance {scores['task_probe_chance']:.3f})")
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


# ---- attack, audit -------------------------------------------------------------------------


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a message of a trained run folder and score the attack (`--list`: the attacks)."""
    from nopeek.attacking import AttackConfig, list_attacks, run_attack
    from nopeek.dishonest import SERVER_POLICIES

    if args.list:
        print(list_attacks())
        return 0
    if args.attack in SERVER_POLICIES:
        raise ConfigError(f"--attack {args.attack}: {args.attack} is a server's training policy, not an attack on a "
                          f"trained model; run `nopeek train --server {args.attack} ...`")
    config = dataclass_from_args(AttackConfig, args).validate()
    config.check_taken([config.attack])
    if args.run is None:
        raise ConfigError(f"--run is required for --attack {config.attack}: the run folder `nopeek train` wrote")
    if not os.path.isdir(args.run) or not os.path.exists(os.path.join(args.run, "config.json")):
        raise ConfigError(f"--run {args.run}: not a `nopeek train` run folder (no config.json)")
    out = args.out or os.path.join(args.run, "attacks", config.attack)
    import attacks

    with attacks.progress.shown(not args.quiet):  # a bar over the attack's steps (a sweep shows its own, over cells)
        scores = run_attack(args.run, config, out, force=args.force)
    keys = [k for k in ("mse", "psnr", "ssim", "dcor", "classifier_accuracy", "norm_auc", "direction_auc") if k in scores]
    parts = [f"{k} {scores[k]:.4f}" + (f" (baseline {scores['baseline_' + k]:.4f})" if "baseline_" + k in scores else "")
             + (f" (leaks as {1 - scores[k]:.4f}: the rule read the other way round)"
                if k.endswith("_auc") and scores[k] < 0.5 else "") for k in keys]
    if "leak_null95" in scores:  # what a label AUC is read against at this n
        parts.append(f"chance: max(AUC, 1 - AUC) up to {scores['leak_null95']:.4f} (95% permutation null)")
    if "label_accuracy" in scores:
        parts.append(f"label accuracy {scores['label_accuracy']:.4f} (chance {scores['label_chance']:.4f})")
    for probe in scores.get("probes", []):
        parts.append(f"{probe['probe']} probe accuracy {probe['accuracy']:.4f} (chance {probe['chance']:.4f})")
    print(f"{out} ({scores['message']}): " + "; ".join(parts))
    _warn_no_better(scores)
    _warn_collapsed("nopeek attack", args.run, scores["collapse_reason"], scores["test_accuracy"],
                    scores["chance_accuracy"], "scores.json")
    return 0


def _warn_no_better(scores: dict) -> None:
    """One warning line when a reconstruction attack did no better than the mean image (within
    1% of its MSE): the message may hide the input, or the attack stopped too soon."""
    mse, baseline = scores.get("mse"), scores.get("baseline_mse")
    if mse is None or baseline is None or not (np.isfinite(mse) and np.isfinite(baseline)) or mse < 0.99 * baseline:
        return
    sys.stderr.write(f"nopeek attack: warning: the reconstructions are no better than the mean image (MSE {mse:.4f} "
                     f"against {baseline:.4f}): the message may hide the input, or the attack stopped too soon; "
                     f"try a larger --attack-steps before reading it as a defence\n")


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit activations saved from any framework: leakage and attacks on the user's arrays."""
    from nopeek.audit import AuditConfig, run_audit

    config = dataclass_from_args(AuditConfig, args).validate()
    result = run_audit(args.pairs, args.targets, args.out, config, accuracy=args.accuracy,
                       labels=args.labels, force=args.force, progress=not args.quiet)
    print(result["table"])
    for note in result["notes"]:  # also under report.md's "Notes"
        print(f"nopeek audit: warning: {note.replace('`', '')}", file=sys.stderr)
    print(f"\n{len(result['targets'])} target(s) audited in {result['seconds']:.0f} s; "
          f"{', '.join(result['files'])} in {args.out}/")
    return 0


# ---- sweep ---------------------------------------------------------------------------------


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a leakage sweep: topologies x cuts x defences x seeds, resumable, with figures."""
    from nopeek.sweeps import (
        PRESET_INFO, SweepConfig, check_sweep, format_attack_table, format_table, load_config_file, run_sweep,
    )

    if args.merge_shards is not None:
        if args.print_config:
            raise ConfigError("--print-config prints a sweep to run; --merge-shards DIR runs none (its config is "
                              "DIR/config.json)")
        return _sweep_merge(args)
    _check_cluster_args(args)
    preset = PRESET_INFO[args.preset]
    base = preset.small if args.small else preset.config
    if args.config:
        loaded = load_config_file(args.config)
        try:
            base = SweepConfig.from_dict({**base.to_dict(), **SweepConfig.upgrade(loaded)})
        except ConfigError as err:
            raise ConfigError(f"{args.config}: {err}") from None
    config = check_sweep(dataclass_from_args(SweepConfig, args, base=base))
    if args.print_config:
        import json

        from nopeek.sweeps import cells

        print(json.dumps(config.to_dict(), indent=2))
        groups = config.groups()

        def count(groups) -> str:
            n = sum(1 for c in cells(config) if (c.topology, c.cut) in groups)
            return f"{n} cells in {len(groups)} group(s) ({', '.join(f'{t} cut {s}' for t, s in groups) or 'none'})"

        print(f"{count(groups)}, {config.epochs} epochs each", file=sys.stderr)
        if args.shard is not None:
            from nopeek.sweeps import parse_shard, shard_groups

            index, n = parse_shard(args.shard)
            print(f"shard {index}/{n}: {count(shard_groups(config, index, n))}", file=sys.stderr)
        return 0
    out = args.out or time.strftime("runs/%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    if args.shard is not None or args.ray is not None:
        return _sweep_cluster(args, config, out, _log)
    rows = run_sweep(config, out, force=args.force, progress=not args.quiet, log=_log)
    print(format_table(rows))
    extra = format_attack_table(rows)  # label AUCs and FSHA scores, when the sweep has them
    if extra:
        print("\n" + extra)
    print(f"\n{len(rows)} rows in {out}/results.csv; figures in {out}/figures/ ({time.perf_counter() - t0:.0f} s)")
    return 0


def _check_cluster_args(args: argparse.Namespace) -> None:
    """Refuse a bad --shard, a missing Ray, or options that do not go together, before anything runs."""
    if args.shard is not None and args.ray is not None:
        raise ConfigError("give --shard I/N (one process of a batch array) or --ray (a Ray cluster), not both")
    if args.ray is None and (args.ray_cpus is not None or args.ray_retries is not None):
        raise ConfigError("--ray-cpus and --ray-retries need --ray")
    if args.shard is not None:
        from nopeek.sweeps import parse_shard

        parse_shard(args.shard)
        if args.out is None:
            raise ConfigError("--shard needs --out DIR: the folder every shard shares")
    if args.ray is not None and not args.print_config:
        from nopeek.sweeps import import_ray

        import_ray(args.ray or None)


def _sweep_cluster(args: argparse.Namespace, config, out: str, log) -> int:
    """`nopeek sweep --shard I/N` or `--ray [ADDRESS]`: the table, then where things stand."""
    from nopeek.sweeps import format_table

    if args.ray is not None:
        from nopeek.sweeps import run_sweep_ray

        retries = {} if args.ray_retries is None else {"max_retries": args.ray_retries}
        rows = run_sweep_ray(config, out, address=args.ray or None, force=args.force, progress=not args.quiet, log=log,
                             num_cpus=args.ray_cpus, **retries)
        print(format_table(rows))
        print(f"\n{len(rows)} rows in {out}/results.csv; figures in {out}/figures/")
        return 0
    from nopeek.sweeps import parse_shard, run_shard

    result = run_shard(config, out, *parse_shard(args.shard), force=args.force, progress=not args.quiet, log=log)
    if result.rows:
        print(format_table(result.rows) + "\n")
    print(result.report(out, config))
    return 0


def _sweep_merge(args: argparse.Namespace) -> int:
    """`nopeek sweep --merge-shards DIR`: exit 0 when every cell is there, 3 when some are missing."""
    from nopeek.sweeps import SweepConfig, merge, merge_report, read_config

    given = [a for a in ("shard", "ray", "out", "config") if getattr(args, a) is not None]
    given += [n for n in SweepConfig.field_names() if getattr(args, n, None) is not None]
    if given or args.force:
        raise ConfigError(f"--merge-shards DIR reads the sweep's config from DIR/config.json; drop "
                          f"--{(given or ['force'])[0].replace('_', '-')}")
    config = read_config(args.merge_shards)
    status = merge(args.merge_shards, config)
    print(merge_report(status, args.merge_shards, config))
    return 0 if status.complete else 3


# ---- figures, cost ---------------------------------------------------------------------------


def cmd_figures(args: argparse.Namespace) -> int:
    """Redraw a sweep's figures from its results.csv, or compare several sweeps (--out FILE)."""
    from nopeek.plots import check_results, compare_figure, sweep_figures
    from nopeek.sweeps import read_rows, write_ranking

    if args.out and not os.path.isdir(args.out) and not args.out.lower().endswith(".png"):
        raise ConfigError(f"--out {args.out}: the comparison figure is a PNG; give a file name ending in .png")
    real = [os.path.realpath(folder) for folder in args.dirs]
    twice = next((folder for i, folder in enumerate(args.dirs) if real[i] in real[:i]), None)
    if twice is not None:
        raise ConfigError(f"{twice}: given twice; name each sweep once")
    names = [os.path.basename(os.path.normpath(folder)) for folder in args.dirs]
    # each sweep's legend label: its folder's name, or the path as given where two names are the same
    labels = [name if names.count(name) == 1 else os.path.normpath(folder) for name, folder in zip(names, args.dirs)]
    named = {}
    for label, folder in zip(labels, args.dirs):
        path = os.path.join(folder, "results.csv")
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: not found (run `nopeek sweep --out {folder}` first)")
        check_results(path)
        rows = read_rows(path)
        if not rows:
            raise ConfigError(f"{path}: no complete rows to draw")
        left_out = len(read_rows(path, valid_only=False)) - len(rows)
        if left_out:  # drawn without them, and said so
            print(f"nopeek figures: {path}: {left_out} row(s) cut short or with a value that is not a number, "
                  "left out", file=sys.stderr)
        named[label] = rows
    if len(args.dirs) > 1 or args.out:
        if not args.out:
            raise ConfigError("comparing several sweeps needs --out FILE.png")
        if os.path.isdir(args.out):
            raise ConfigError(f"--out {args.out}: is a folder; give a .png file name")
        if os.path.exists(args.out) and not args.force:
            raise ConfigError(f"--out {args.out}: exists; use another --out, or --force to replace it")
        try:
            print(compare_figure(named, args.out))
        except OSError as err:  # named as given, not as the temporary file the figure is written to first
            raise ConfigError(f"--out {args.out}: cannot write there ({err.strerror or err})") from None
        return 0
    folder = args.dirs[0]
    rows = named[labels[0]]
    samples = os.path.join(folder, "samples")
    if any(r.get("samples_file") for r in rows) and not os.path.isdir(samples):
        print(f"nopeek figures: {samples}: not found; the reconstruction grids are not drawn", file=sys.stderr)
    for p in sweep_figures(rows, os.path.join(folder, "figures"), samples_dir=os.path.join(folder, "samples"),
                           histories_dir=os.path.join(folder, "histories")):
        print(p)
    for p in write_ranking(rows, folder):  # several defences: the ranking at matched utility
        print(p)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write DIR/report.html: one self-contained page for any folder nopeek wrote."""
    from nopeek.report import write_report

    failed = 0
    for folder in args.dirs:  # a folder that cannot be reported does not stop the others
        try:
            print(write_report(folder))
        except (*USER_ERRORS, OSError) as err:  # a read-only folder, say: still one line, and on to the next
            failed += 1
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"nopeek report: error: {message}", file=sys.stderr)
    if failed and len(args.dirs) > 1:
        print(f"nopeek report: {failed} of {len(args.dirs)} folders not reported", file=sys.stderr)
    return 2 if failed else 0


def cmd_cost(args: argparse.Namespace) -> int:
    """Per-client compute and communication of split learning, federated learning and large-batch SGD."""
    from nopeek.cost import COST_PRESETS, CostConfig, check_cost, run_cost

    base = COST_PRESETS[args.preset] if args.preset else (CostConfig(),)
    configs = [check_cost(dataclass_from_args(CostConfig, args, base=c)) for c in base]
    report = run_cost(configs, args.out, reference=args.preset == "seed-table", force=args.force)
    print(report.text)
    if report.files:
        print(f"\nwrote {', '.join(report.files)}")
    return 0
