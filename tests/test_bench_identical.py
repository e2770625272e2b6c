"""bench/identical.py, the refactoring check: which environment each tree's sweep gets, and
what its cell-by-cell comparison reports."""

import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import identical  # noqa: E402

KEY = {"dataset": "digits", "model": "cnn", "topology": "vanilla", "cut": "2", "defense": "nopeek", "alpha": "1.0",
       "noise_scale": "0.0", "seed": "0", "party": "client", "message": "z"}


def test_each_tree_gets_the_users_xla_flags_not_nopeeks():
    # nopeek added its flags to this process's XLA_FLAGS; the user had set their own
    environ = {"HOME": "/h", "XLA_FLAGS": "--user_flag --nopeek_added", "PYTHONPATH": "/elsewhere"}
    env = identical.sweep_env("/tree", environ, user_xla_flags="--user_flag")
    assert env == {"HOME": "/h", "XLA_FLAGS": "--user_flag", "PYTHONPATH": "/tree"}
    # the user set none: the child gets none, and its own nopeek adds its flags
    env = identical.sweep_env("/tree", environ, user_xla_flags=None)
    assert env == {"HOME": "/h", "PYTHONPATH": "/tree"}
    assert environ["XLA_FLAGS"] == "--user_flag --nopeek_added"  # this process's is left alone


def _sweep(folder, rows, samples):
    os.makedirs(os.path.join(folder, "samples"))
    with open(os.path.join(folder, "results.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name, data in samples.items():
        with open(os.path.join(folder, "samples", name), "wb") as fh:
            fh.write(data)
    return str(folder)


def test_compare_reports_cells_and_samples_not_timings(tmp_path, capsys):
    row = {**KEY, "test_accuracy": "0.91", "dcor": "0.5", "train_seconds": "3.2", "config_hash": "ab"}
    before = _sweep(tmp_path / "before", [row], {"x.npy": b"123"})
    same = _sweep(tmp_path / "same", [{**row, "train_seconds": "9.9", "config_hash": "cd", "new_column": "1"}],
                  {"x.npy": b"123"})
    assert identical.compare(before, same) == []  # timings, the config digest and added columns aside
    assert "new_column" in capsys.readouterr().out
    moved = _sweep(tmp_path / "moved", [{**row, "dcor": "0.51"}], {"x.npy": b"124"})
    problems = identical.compare(before, moved)
    assert len(problems) == 2 and "dcor: '0.5' != '0.51'" in problems[0] and problems[1] == "samples/x.npy differs"
    other = _sweep(tmp_path / "other", [{**row, "seed": "1"}], {"x.npy": b"123"})
    assert identical.compare(before, other)[0].startswith("cells differ")
