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


def test_dcor_prints_its_permutation_null(tmp_path, capsys, rng):
    """Independent 64-d noise reads a dCor far above 0: the printed null and p-value say so,
    and are `metrics.distance_correlation_test`'s with the same seed."""
    import metrics

    x, noise = rng.normal(size=(120, 64)), rng.normal(size=(120, 64))
    for name, a in (("x", x), ("noise", noise), ("y", np.tanh(x[:, :8]))):
        np.save(tmp_path / f"{name}.npy", a)

    def printed(*args):
        assert main(["dcor", *args]) == 0
        out = capsys.readouterr().out
        return {l.split()[0]: float(l.split()[1]) for l in out.splitlines() if l.split()[0] in
                ("distance_correlation", "dcor_null95", "pvalue")}, out

    independent, out = printed(str(tmp_path / "x.npy"), str(tmp_path / "noise.npy"), "--seed", "3")
    test = metrics.distance_correlation_test(x.astype(np.float32), noise.astype(np.float32), permutations=200, key=3)
    np.testing.assert_allclose(independent["dcor_null95"], float(test.dcor_null95), atol=1e-6)
    np.testing.assert_allclose(independent["pvalue"], float(test.pvalue), atol=1e-6)
    assert independent["distance_correlation"] > 0.5 and independent["pvalue"] > 0.05
    assert "no evidence of dependence" in out
    dependent, out = printed(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--permutations", "99")
    assert dependent["pvalue"] == pytest.approx(1 / 100) and dependent["distance_correlation"] > dependent["dcor_null95"]
    assert "dependent at the 5% level" in out and "no evidence" not in out
    smallest, out = printed(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--permutations", "19")
    assert smallest["pvalue"] == pytest.approx(0.05) and "dependent at the 5% level" in out  # 1/20 is significant
    none, out = printed(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--permutations", "0")
    assert "dcor_null95" not in none and "pvalue" not in none and "null" not in out
    # Blocked (meant for large n, where each permutation costs one more dCor): only when asked.
    blocked, out = printed(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--block-size", "32")
    assert "pvalue" not in blocked and "dcor_null95: not computed (120 samples, blocked" in out
