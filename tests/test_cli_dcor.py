"""The `nopeek` entry point: version, the dcor subcommand, one-line errors with exit code 2."""

import subprocess
import sys

import dcor
import numpy as np
import pytest

from nopeek import __version__
from nopeek.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_dcor_from_npy_files(tmp_path, capsys, rng):
    x = rng.normal(size=(50, 4))
    y = np.sin(x[:, :2])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["dcor", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--block-size", "8"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("distance_correlation "))
    np.testing.assert_allclose(float(line.split()[1]), dcor.distance_correlation(x, y), atol=1e-5)


def test_dcor_bad_input_is_one_line_exit_2(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    np.save(tmp_path / "y.npy", np.zeros((6, 2)))
    proc = subprocess.run(
        [sys.executable, "-m", "nopeek.cli", "dcor", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "same number of samples" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pickled_npy_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SystemExit) as exc:
        main(["dcor", str(tmp_path / "x.npy"), str(tmp_path / "x.npy")])
    assert exc.value.code == 2
