"""Sweeps beyond one process: `--shard I/N` (three processes, one killed with kill -9 and
rerun, merged) and the Ray executor (a local instance, 2 CPUs, loopback only) give the
local sweep's rows cell for cell; bad options end in one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from nopeek.cli import main
from nopeek.errors import ConfigError
from nopeek.sweeps import KEY_COLUMNS, TIMING_COLUMNS, read_rows
from nopeek.sweeps import merge, parse_shard, prepare_shard_output, shard_groups, shard_path
from nopeek.sweeps import PRESETS, run_sweep

# The quick preset, smaller (400 digits): 4 groups (vanilla at cuts 1, 2, 3 and u_shaped at 1-2) x (no
# defence, NoPeek 2) = 8 cells; with 3 shards, shard 0 runs two groups (vanilla 1, u_shaped 1-2).
CONFIG = PRESETS["quick"].replace(widths=(64, 32, 16), topologies=("vanilla", "u_shaped"), cuts=("1", "2", "3", "1-2"),
                                  alphas=(0.0, 2.0), noise_scales=(), epochs=2, attack_steps=10, limit=400)
ARGS = ["--preset", "quick", "--widths", "64,32,16", "--topologies", "vanilla,u_shaped", "--cuts", "1,2,3,1-2",
        "--alphas", "0,2", "--noise-scales=", "--epochs", "2", "--attack-steps", "10", "--limit", "400", "--quiet"]
# Ray starts its processes with fork + exec, which JAX warns about (harmless: exec follows at once).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
INSTALL_LINE = 'nopeek sweep: error: --ray needs Ray: pip install -e ".[ray]"\n'


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def assert_same_rows(rows, reference):
    """Cell for cell, in the same order; numbers exactly as written (timing columns aside)."""
    assert [tuple(r[c] for c in KEY_COLUMNS) for r in rows] == [tuple(r[c] for c in KEY_COLUMNS) for r in reference]
    for got, want in zip(without_timing(rows), without_timing(reference)):
        for column, value in want.items():
            try:
                assert float(got[column]) == pytest.approx(float(value), abs=1e-6), column
            except ValueError:
                assert got[column] == value, column


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("local"))
    run_sweep(CONFIG, out, progress=False, log=lambda line: None)
    return out, read_rows(os.path.join(out, "results.csv"))


# ---- shards ----------------------------------------------------------------------------


def test_shard_values_and_assignment(tmp_path, capsys):
    assert parse_shard("0/3") == (0, 3) and parse_shard("2/3") == (2, 3) and parse_shard(" 7 / 8 ") == (7, 8)
    groups = CONFIG.groups()
    for n in range(1, 7):  # round robin: every group in exactly one shard, sizes within one
        parts = [shard_groups(CONFIG, i, n) for i in range(n)]
        assert sorted(g for p in parts for g in p) == sorted(groups)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_groups(CONFIG, 0, 3) == [("vanilla", "1"), ("u_shaped", "1-2")]
    out = str(tmp_path / "x")
    cases = [([f"--shard={v}", "--out", out], "--shard must be I/N") for v in ("3/3", "4/3", "a/b", "3", "-1/3", "0/0", "")]
    cases += [(["--shard", "0/3"], "--shard needs --out"),
              (["--shard", "0/3", "--ray", "--out", out], "not both"),
              (["--ray-cpus", "2", "--out", out], "need --ray"),
              (["--merge-shards", str(tmp_path)], "no config.json"),
              (["--merge-shards", out, "--epochs", "3"], "drop --epochs")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["sweep", "--preset", "quick", *argv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("nopeek sweep: error: ") and message in err, (argv, err)
        assert err.count("\n") == 1
    assert not os.path.exists(out)  # nothing written


def test_shared_folder_checks(tmp_path):
    out = str(tmp_path / "study")
    errors = []

    def start(count):
        try:
            prepare_shard_output(out, CONFIG, count)
        except ConfigError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=start, args=(4,)) for _ in range(8)]  # a first start of 8 shards at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.load(open(os.path.join(out, "config.json"))) == json.loads(json.dumps(CONFIG.to_dict()))
    # No temporary file left; a copy of the config under its hash (which explains its rows elsewhere).
    assert sorted(os.listdir(os.path.join(out, "shards"))) == [f"config-{CONFIG.digest()}.json", "plan.json"]
    with pytest.raises(ConfigError, match=r"run as 4 shards.*--force"):
        prepare_shard_output(out, CONFIG, 3)
    prepare_shard_output(out, CONFIG, 3, force=True)  # re-planned; finished cells would be kept
    assert json.load(open(os.path.join(out, "shards", "plan.json"))) == {"shards": 3}
    for force in (False, True):
        with pytest.raises(ConfigError, match="different sweep config.*epochs.*never discards"):
            prepare_shard_output(out, CONFIG.replace(epochs=3), 3, force=force)


def test_three_shards_kill_one_rerun_merge(tmp_path, local, capsys):
    """Three shard processes at once; shard 0 is killed with kill -9 between its two groups,
    the others finish (no merge yet: a cell is missing), --merge-shards reports the missing
    group, and the rerun of shard 0 runs only that group and merges to the local rows."""
    local_out, reference = local
    out = str(tmp_path / "study")
    cmd = [sys.executable, "-m", "nopeek.cli", "sweep", *ARGS, "--out", out, "--shard"]
    # stderr to files, not pipes: a shard that writes more than a pipe holds (warnings) would
    # block on the write while this test waits for it to exit
    errs = [tmp_path / f"shard{i}.err" for i in range(3)]
    procs = []
    for i, err in enumerate(errs):
        with open(err, "wb") as fh:  # the child keeps its own descriptor
            procs.append(subprocess.Popen([*cmd, f"{i}/3"], stdout=subprocess.DEVNULL, stderr=fh))
    first = shard_path(out, 0, 3)
    deadline = time.time() + 300
    while not os.path.exists(first) and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.02)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    for p, err in zip(procs[1:], errs[1:]):
        assert p.wait(timeout=300) == 0, err.read_text(errors="replace")[-2000:]
    before = read_rows(first)
    assert len(before) == 2 and {r["cut"] for r in before} == {"1"}, "the kill should land between shard 0's groups"
    assert not os.path.exists(os.path.join(out, "results.csv"))  # nobody merged: a group is missing

    assert main(["sweep", "--merge-shards", out]) == 3
    report = capsys.readouterr().out
    assert "6 of 8 cells" in report and "missing: u_shaped cut 1-2: 2 cell(s) (shard 0/3)" in report
    assert len(read_rows(os.path.join(out, "results.csv"))) == 6  # the partial union, to look at

    assert main(["sweep", *ARGS, "--out", out, "--shard", "0/3"]) == 0  # the rerun of the killed shard
    printed = capsys.readouterr().out
    assert "ran 2 cell(s)" in printed and "merged 8 rows" in printed
    assert read_rows(first)[:2] == before  # its finished group was kept as it was, not redone
    assert_same_rows(read_rows(os.path.join(out, "results.csv")), reference)
    for r in reference:
        np.testing.assert_array_equal(np.load(os.path.join(out, "samples", r["samples_file"])),
                                      np.load(os.path.join(local_out, "samples", r["samples_file"])))
    assert os.path.getsize(os.path.join(out, "figures", "tradeoff.png")) > 5000
    text = open(os.path.join(out, "results.csv"), "rb").read()
    assert merge(out).complete and open(os.path.join(out, "results.csv"), "rb").read() == text  # idempotent
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary figure folder left


# ---- Ray --------------------------------------------------------------------------------


def test_ray_missing_gives_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *ARGS, "--ray", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2 and capsys.readouterr().err == INSTALL_LINE
    assert not os.path.exists(tmp_path / "r")


def crash_once(marker):
    """A group function whose first call kills its worker process: a lost task (a closure:
    Ray ships it by value, workers cannot import this test module)."""
    from nopeek.sweeps import group_task

    def run(config_dict, group):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return group_task(config_dict, group)
        os._exit(1)

    return run


def fail_u_shaped():
    """A group function that raises for the u_shaped group (a closure: Ray ships it by value)."""
    from nopeek.sweeps import group_task

    def run(config_dict, group):
        if group[0].topology == "u_shaped":
            raise ValueError("no data here")
        return group_task(config_dict, group)

    return run


@pytest.fixture
def ray_local():
    """A local Ray instance for this test: 2 CPUs, no dashboard, loopback only (`start_local`)."""
    from nopeek.sweeps import start_local

    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[ray]\"); CI installs it")
    start_local(ray, num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


def _listening(pid: int) -> list[tuple[str, str]]:
    """(address, process name) of every socket listening in process `pid` and its descendants."""
    import psutil

    found = []
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            sockets = proc.net_connections(kind="inet") if hasattr(proc, "net_connections") else proc.connections("inet")
            found += [(s.laddr.ip, proc.name()) for s in sockets if s.status == psutil.CONN_LISTEN]
        except psutil.Error:  # a process that ended meanwhile
            continue
    return found


def test_ray_without_an_address_listens_on_loopback_only(tmp_path, monkeypatch, capsys):
    """`--ray` with no address starts a Ray instance of its own (RAY_ADDRESS is not followed:
    reaching a cluster takes --ray ADDRESS). While its task runs, every socket its processes
    (GCS, raylets, workers, agents) listen on is on 127.0.0.1; none on 0.0.0.0 or `*`."""
    import ray

    assert not ray.is_initialized()
    seen = []
    wait = ray.wait

    def spy(*args, **kwargs):  # the driver waits while the group's task runs: look then
        seen.extend(_listening(os.getpid()))
        return wait(*args, **kwargs)

    monkeypatch.setattr(ray, "wait", spy)
    monkeypatch.setenv("RAY_ADDRESS", "192.0.2.1:6379")  # a documentation address: unreachable, and unused
    out = tmp_path / "r"
    assert main(["sweep", "--preset", "quick", "--topologies", "vanilla", "--cuts", "1", "--alphas", "0",
                 "--noise-scales=", "--epochs", "1", "--attack-steps", "10", "--limit", "200", "--quiet", "--ray",
                 "--out", str(out)]) == 0
    assert len(read_rows(str(out / "results.csv"))) == 1
    assert {"gcs_server", "raylet"} <= {name for _, name in seen}, seen
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _ in seen), seen
    assert not ray.is_initialized()  # the instance was ours: shut down at the end


def test_ray_executor_equals_local_and_resumes(tmp_path, local, ray_local):
    """Half the groups are already in results.csv (a driver killed mid-way); the Ray run
    does the other half as tasks (one task's worker dies and the task is retried), and the
    table equals the local run's, the finished rows untouched."""
    from nopeek.errors import ClusterError
    from nopeek.sweeps import run_sweep_ray
    from nopeek.sweeps import write_rows

    local_out, reference = local
    out = tmp_path / "ray"
    shutil.copytree(local_out, out)
    kept = [r for r in reference if r["topology"] == "vanilla" and r["cut"] in ("1", "2")]
    write_rows(str(out / "results.csv"), kept)
    for r in reference:
        if r not in kept:
            os.remove(out / "samples" / r["samples_file"])
    assert ray_local.cluster_resources()["CPU"] == 2
    lines = []
    rows = run_sweep_ray(CONFIG, str(out), progress=False, log=lines.append,
                         group_fn=crash_once(str(tmp_path / "crashed")))
    assert os.path.exists(tmp_path / "crashed")  # a worker did die, and its group still landed
    assert_same_rows(rows, reference)
    assert [r for r in rows if r in kept] == kept  # the finished cells were not redone
    for r in reference:
        np.testing.assert_array_equal(np.load(out / "samples" / r["samples_file"]),
                                      np.load(os.path.join(local_out, "samples", r["samples_file"])))
    # Through the command line, on the connection this process already has: nothing left to run.
    assert main(["sweep", *ARGS, "--ray", "--out", str(out)]) == 0
    assert read_rows(str(out / "results.csv")) == rows

    # A task that raises is not retried; the other groups land, and the error names the group.
    write_rows(str(out / "results.csv"), [r for r in rows if r["cut"] in ("1", "2")])
    with pytest.raises(ClusterError, match=r"1 group\(s\) failed.*u_shaped cut 1-2: ValueError: no data here"):
        run_sweep_ray(CONFIG, str(out), progress=False, log=lines.append, group_fn=fail_u_shaped())
    assert {r["cut"] for r in read_rows(str(out / "results.csv"))} == {"1", "2", "3"}
