"""A sweep on a Ray cluster: each group (one topology at one cut list) is one Ray task.

The driver (the machine running `nopeek sweep --ray`) owns the output folder: it checks
the config and data, writes `config.json` as a local sweep does, submits one task per
unfinished group, and as each task finishes (`ray.wait`) writes its samples and appends
its rows to `results.csv` with the same atomic append as the local sweep. So killing the
driver loses at most the groups in flight, and the same command resumes. A task returns
its rows and its sample arrays (nothing is written on the workers: no shared filesystem
is needed, only `nopeek` installed and the data reachable on every node). A task whose
worker or node dies is retried (`max_retries`); a task that raises is not (the same
inputs would raise again), the other groups go on and the error is reported at the end.

Each task asks for `num_cpus` CPUs (default 1) and one GPU when the cluster has GPUs.
A group's cells are trained as one stack on one worker, exactly as in the local sweep,
so the rows equal the local sweep's (timing columns aside).

Without an address (`--ray`, `--ray local`) the driver starts a Ray instance of its own that
listens on 127.0.0.1 only (`start_local`): Ray's control plane has no authentication, so
reaching other machines is always explicit (`--ray ADDRESS`, on a trusted network).

Ray is an optional dependency (`pip install -e ".[ray]"`), imported only here and only
when a Ray sweep starts.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings

import numpy as np
from tqdm.auto import tqdm

from nopeek.core import atomic_write_bytes, check_output_folder
from nopeek.errors import ClusterError, ConfigError
from nopeek.report import write_report
from nopeek.sweeps._config import Cell, SweepConfig, cells
from nopeek.sweeps._results import append_rows, read_rows, write_rows
from nopeek.sweeps._shards import order_rows
from nopeek.sweeps._sweep import check_resumable, finished_cells, load_inputs, prepare_output, run_group
from nopeek.sweeps._ranking import write_ranking

INSTALL_HINT = '--ray needs Ray: pip install -e ".[ray]"'


def import_ray(address: str | None = None):
    """The `ray` module, or ConfigError with the install command."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


LOOPBACK = "127.0.0.1"
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_local(ray=None, **kwargs) -> None:
    """Start a Ray instance on this machine whose processes listen on 127.0.0.1 only.

    Ray's control plane (GCS, raylets, workers) has no authentication, and on Linux a new
    instance listens on every interface of the machine. Ray's single-machine mode (what it
    runs on macOS and Windows) uses the loopback address; its switch is read by Ray when it
    is imported (in this process: set here for the start) and by the processes it starts
    (their environment). The dashboard stays off. If any node of the new instance is not on
    127.0.0.1, it is shut down and ClusterError raised: a sweep never runs on an exposed
    instance. `kwargs` go to `ray.init` (num_cpus, logging, ...).
    """
    ray = ray if ray is not None else import_ray("local")
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    saved_env, saved_flag = os.environ.get(_SINGLE_MACHINE), getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_SINGLE_MACHINE] = "0"
    if saved_flag is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        with warnings.catch_warnings():  # Ray forks and execs its processes at once: JAX's fork warning is moot
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, **kwargs)
    finally:
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE, None)
        else:
            os.environ[_SINGLE_MACHINE] = saved_env
        if saved_flag is not None:
            constants.ENABLE_RAY_CLUSTER = saved_flag
    exposed = sorted({str(n.get("NodeManagerAddress")) for n in ray.nodes()} - {LOOPBACK})
    if exposed:
        ray.shutdown()
        raise ClusterError(f"the local Ray instance came up on {', '.join(exposed)}, not {LOOPBACK} only; "
                           "refusing to run a sweep on it (this Ray version binds differently): start Ray yourself "
                           "on a trusted network and pass --ray ADDRESS")


# ---- on the workers ---------------------------------------------------------------------

_INPUTS: dict[str, object] = {}  # per worker process: the loaded data of the sweep it serves


def group_task(config_dict: dict, group: list[Cell]) -> tuple[list[dict], dict[str, np.ndarray], list[str]]:
    """Run one group on a worker: (rows, {sample file name: array}, warning lines)."""
    key = json.dumps(config_dict, sort_keys=True)
    if key not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[key] = load_inputs(SweepConfig.from_dict(config_dict))
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nopeek-group-") as samples_dir:
        rows = run_group(_INPUTS[key], group, samples_dir, progress=False, log=lines.append)
        samples = {name: np.load(os.path.join(samples_dir, name), allow_pickle=False)
                   for name in sorted(os.listdir(samples_dir))}
    return rows, samples, lines


# ---- on the driver ----------------------------------------------------------------------


def _save_samples(samples_dir: str, samples: dict[str, np.ndarray]) -> None:
    for name, array in samples.items():
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        atomic_write_bytes(os.path.join(samples_dir, os.path.basename(name)), buf.getvalue())


def _connect(ray, address: str | None, quiet: bool) -> bool:
    """Connect to (or start) Ray unless this process already did; True if we connected."""
    if ray.is_initialized():
        return False
    kwargs = dict(log_to_driver=False, logging_level=logging.ERROR if quiet else logging.WARNING)
    if address in (None, "local"):  # an instance of our own: loopback only, no dashboard
        start_local(ray, **kwargs)
        return True
    try:
        with warnings.catch_warnings():  # Ray forks and execs its processes at once: JAX's fork warning is moot
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({str(err).splitlines()[0]}); "
                          "start one with `ray start --head`, or use --ray local") from None
    return True


def run_sweep_ray(config: SweepConfig, out: str, *, address: str | None = None, force: bool = False,
                  progress: bool = True, log=print, num_cpus: float | None = None, num_gpus: float | None = None,
                  max_retries: int = 3, group_fn=group_task) -> list[dict]:
    """Run every missing cell of the sweep as Ray tasks, one per group; return all rows.

    address: a Ray address (`auto`: RAY_ADDRESS, else the cluster `ray start` started on
      this machine; `HOST:PORT`; `ray://HOST:10001`), or None / `local`: start an instance
      on this machine that listens on 127.0.0.1 only (`start_local`). Reaching a cluster is
      always explicit. If this process is already connected (`ray.init` was called), that
      connection is used.
    num_cpus: CPUs per task (default 1); num_gpus: GPUs per task (default 1 when the
      cluster has GPUs, else 0); max_retries: retries of a task whose worker died.
    group_fn: what a task runs for one group (default `group_task`).
    """
    from nopeek.plots import sweep_figures

    ray = import_ray(address)
    if num_cpus is not None and not num_cpus > 0:
        raise ConfigError(f"--ray-cpus must be > 0, got {num_cpus}")
    if max_retries < 0:
        raise ConfigError(f"--ray-retries must be >= 0, got {max_retries}")
    check_output_folder(out)
    load_inputs(config)  # the driver refuses what a worker would, before anything is written
    check_resumable(out, config, force)
    prepare_output(out, config, force)
    results_path = os.path.join(out, "results.csv")
    samples_dir = os.path.join(out, "samples")
    os.makedirs(samples_dir, exist_ok=True)
    done = finished_cells(out, config)
    all_cells = cells(config)
    todo = [c for c in all_cells if c.key(config) not in done]
    groups = [[c for c in todo if (c.topology, c.cut) == g] for g in config.groups()]
    groups = [g for g in groups if g]

    started = _connect(ray, address, quiet=not progress) if groups else False
    failures: list[str] = []
    try:
        if groups:
            if num_gpus is None:
                num_gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
            num_cpus = 1 if num_cpus is None else num_cpus
            largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
            if num_cpus > largest:  # the task could never be scheduled: say so rather than wait forever
                raise ConfigError(f"--ray-cpus {num_cpus:g}: no node of the cluster has that many CPUs "
                                  f"(the largest has {largest:g})")
            remote = ray.remote(group_fn).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                                                  retry_exceptions=False)
            config_dict = config.to_dict()
            pending = {remote.remote(config_dict, group): group for group in groups}
            bar = tqdm(total=len(all_cells), initial=len(all_cells) - len(todo), desc="sweep cells (ray)",
                       unit="cell", disable=not progress)
            bar.set_postfix_str(f"{len(pending)} group(s) running")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    group = pending.pop(ref)
                    name = f"{group[0].topology} cut {group[0].cut}"
                    try:
                        rows, samples, lines = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        cause = getattr(err, "cause", None) or err
                        text = str(cause).strip().splitlines()
                        failures.append(f"{name}: {type(cause).__name__}: {text[-1] if text else ''}")
                        log(f"error: {failures[-1]}")
                        continue
                    for line in lines:
                        log(line)
                    _save_samples(samples_dir, samples)  # before the rows, as the local sweep does
                    append_rows(results_path, rows)
                    bar.update(len(group))
                bar.set_postfix_str(f"{len(pending)} group(s) running")
            bar.close()
    finally:
        if started:
            ray.shutdown()
    if failures:
        raise ClusterError(f"{len(failures)} group(s) failed on the cluster, first {failures[0]}; "
                           "finished groups are kept: run the same command again to retry the others")
    rows = order_rows(read_rows(results_path), config)  # the local sweep's order: the two tables diff cleanly
    write_rows(results_path, rows)
    sweep_figures(rows, os.path.join(out, "figures"), samples_dir=samples_dir)
    write_ranking(rows, out)
    write_report(out)  # last: the page shows the ranking and every figure
    return rows


__all__ = ["ClusterError", "INSTALL_HINT", "LOOPBACK", "group_task", "import_ray", "run_sweep_ray", "start_local"]
