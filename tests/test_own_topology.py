"""A configuration registered from Python is one record of the topology registry and runs
everywhere the bundled ones do: `nopeek train`, a sweep, `nopeek cost` and the attacks.
Adding a configuration touches one file (its builder and its `register` call) and its test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nopeek.cli import main
from nopeek.protocol import TOPOLOGIES, Built, Setup, build_u_shaped, register_topology


def build_mirror(setup: Setup) -> Built:
    """client <-> server <-> client, as U-shaped, under a name no module knows."""
    return build_u_shaped(setup)


@pytest.fixture
def mirror():
    register_topology("mirror", build_mirror, cuts="2", description="a U-shaped copy under a new name")
    yield "mirror"
    TOPOLOGIES.pop("mirror")


def test_a_registered_configuration_trains_sweeps_costs_and_is_attacked(mirror, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--limit", "300", "--epochs", "1", "--topology", mirror, "--cuts", "1,2",
                 "--widths", "32,16", "--quiet", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [(e["party"], e["message"]) for e in metrics["leakage"]] == [("client", "z1")]
    assert json.loads((run / "config.json").read_text())["topology"] == mirror
    assert main(["attack", "--run", str(run), "--attack", "decoder", "--attack-steps", "5"]) == 0
    assert main(["train", "--list-cuts", "--topology", mirror, "--dataset", "digits", "--widths", "32,16"]) == 0
    capsys.readouterr()

    from nopeek.sweeps import PRESETS, run_sweep

    config = PRESETS["quick"].replace(topologies=(mirror,), cuts=("1-2",), alphas=(0.0, 1.0), noise_scales=(), epochs=1,
                                      attack_steps=5, limit=300, widths=(32, 16))
    rows = run_sweep(config, str(tmp_path / "sweep"), progress=False)
    assert {(r["topology"], r["cut"], r["party"], r["message"]) for r in rows} == {(mirror, "1-2", "client", "z1")}
    assert all(np.isfinite(float(r["dcor"])) and np.isfinite(float(r["attack_mse"])) for r in rows)

    cost = tmp_path / "cost"
    assert main(["cost", "--model", "mlp", "--dataset", "digits", "--topology", mirror, "--cuts", "1,2",
                 "--client-counts", "2", "--out", str(cost)]) == 0
    assert "split_learning" in (cost / "cost.csv").read_text()
