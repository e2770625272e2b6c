"""Runs that mean nothing are said so, and files are written as the user's: a loss that
explodes is diverged (in `nopeek train` and in every stack a sweep trains), a run that
collapsed is written but flagged in metrics.json and scores.json with a warning line, files
written atomically get the user's umask, and an .npz member is checked before it is read."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from _files import npy_bytes

from nopeek.cli import main


# ---- diverged: non-finite, or over EXPLOSION_FACTOR times the first step's loss ----------------


def test_exploded_scalar_batch_and_edges():
    from nopeek.training import EXPLOSION_FACTOR, exploded

    assert EXPLOSION_FACTOR == 1e6
    assert not exploded(2.3e6 - 1, 2.3)[()] and exploded(2.3e6 + 1, 2.3)[()]  # scalar, at the threshold
    np.testing.assert_array_equal(exploded([3.0, 3.6e28, np.nan, np.inf, 0.5], [2.3] * 5),
                                  [False, True, True, True, False])
    # A first loss near 0 (a pretrained start) does not make every later wobble an explosion:
    # the reference is at least 1.
    np.testing.assert_array_equal(exploded([0.5, 2e6], [1e-9, 1e-9]), [False, True])
    assert exploded(1.0, np.nan)[()]  # a first step that was already not finite


def test_an_exploding_loss_is_diverged_in_the_stack(rng):
    """SGD at lr 1000 on digits: the loss explodes in epoch 1 without becoming NaN; the stack
    marks it diverged at that epoch, as a sweep's cell is marked (it reads `diverged`)."""
    from nopeek import data
    from nopeek.training import TrainConfig, train_stack

    ds = data.load("digits", limit=200)
    result = train_stack(TrainConfig(dataset="digits", epochs=2, lr=1000.0, optimizer="sgd"), ds, seeds=[0, 1],
                         progress=False)
    assert result.diverged.tolist() == [True, True] and result.diverged_epoch.tolist() == [1, 1]
    assert np.all(result.first_loss < 10)  # about ln(10) at initialisation
    exploded_finite = np.isfinite(result.diverged_loss)
    assert np.all(result.diverged_loss[exploded_finite] > 1e6 * result.first_loss[exploded_finite])
    healthy = train_stack(TrainConfig(dataset="digits", epochs=1), ds, progress=False)
    assert not healthy.diverged[0] and healthy.first_loss[0] == pytest.approx(np.log(10), rel=0.2)


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_the_step_says_which_models_parameters_are_not_finite(mode):
    """The step's fourth output (what the health check reads after each epoch): False for
    the model one of whose parameters is infinite, True for the others, in either mode."""
    import jax
    import jax.numpy as jnp

    from nopeek.protocol import ModelList
    from nopeek.training import TrainConfig, build_topology, init_stack, make_optimizer, make_step_fn, stack_hparams

    config = TrainConfig(dataset="digits", widths=(16, 8), batch_size=8, optimizer="sgd", lr=0.0)
    optimizer = make_optimizer("sgd", 0.0)
    built = build_topology(config, (8, 8, 1), 10)
    state = init_stack(built, [0, 1, 2], optimizer, mode)

    def poison(leaf):  # model 1's first weight becomes infinite
        return leaf.at[1].set(jnp.inf) if leaf.ndim else leaf

    first = jax.tree.leaves(state.params)[0] if mode == "vmap" else None
    if mode == "vmap":
        params = jax.tree.map(lambda a: poison(a) if a is first else a, state.params)
    else:
        models = list(state.params)
        leaves, tree = jax.tree.flatten(models[1])
        models[1] = jax.tree.unflatten(tree, [leaves[0].at[0].set(jnp.inf), *leaves[1:]])
        params = ModelList(models)
    state = type(state)(params, state.opt)
    step = make_step_fn(built, optimizer, config, mode)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(32, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(np.arange(32) % 10, jnp.int32)
    idx = jnp.asarray(np.stack([np.arange(8)] * 3))
    _, stats = step(state, stack_hparams([{}] * 3, [0, 1, 2]), x, y, idx, 0)
    assert len(stats) == 4 and np.asarray(stats[3]).tolist() == [True, False, True]


# ---- collapsed: written, flagged, and said ------------------------------------------------------


def test_collapsed_train_and_attack_are_flagged_and_warned(tmp_path, capsys):
    """A NoPeek weight of 1e4 drowns the task: accuracy at chance, the loss finite (about 1e4)."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--limit", "200", "--epochs", "1", "--alpha", "1e4", "--quiet",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["collapsed"] is True and metrics["collapse_reason"] == "accuracy at chance"
    assert metrics["test_accuracy"] <= metrics["chance_accuracy"] + 0.01
    assert len(err) == 1 and err[0].startswith(f"nopeek train: warning: {out}: the model collapsed (accuracy at chance")
    assert "metrics.json says collapsed" in err[0]

    assert main(["attack", "--run", str(out), "--attack", "probe", "--leak-count", "40"]) == 0
    err = capsys.readouterr().err.splitlines()
    scores = json.loads((out / "attacks" / "probe" / "scores.json").read_text())
    assert scores["collapsed"] is True and scores["collapse_reason"] == "accuracy at chance"
    assert scores["test_accuracy"] == metrics["test_accuracy"]
    assert len(err) == 1 and err[0].startswith(f"nopeek attack: warning: {out}: the model collapsed")


def test_a_healthy_run_is_not_flagged(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--limit", "300", "--epochs", "3", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["collapsed"] is False and metrics["collapse_reason"] == ""
    assert metrics["test_accuracy"] > metrics["chance_accuracy"] + 0.1
    assert "warning" not in capsys.readouterr().err


# ---- files: the user's umask; output folders checked before work --------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_files_get_the_users_umask(tmp_path, umask_027):
    from nopeek.core import atomic_write_bytes, user_umask, write_json
    from nopeek.sweeps import write_rows

    assert user_umask() == 0o027
    atomic_write_bytes(str(tmp_path / "a.bin"), b"x")
    write_json(str(tmp_path / "config.json"), {"a": 1})
    write_rows(str(tmp_path / "results.csv"), [])
    for name in ("a.bin", "config.json", "results.csv"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o640, name  # 0666 less the umask, not mkstemp's 0600


def test_output_folder_checks_write_nothing(tmp_path):
    from nopeek.core import check_output_folder, make_output_folder
    from nopeek.errors import ConfigError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--out .*file: is a file, not a folder"):
        check_output_folder(str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"--where .*file/sub/deeper: .*/file is a file, not a folder"):
        check_output_folder(str(tmp_path / "file" / "sub" / "deeper"), "--where")
    with pytest.raises(ConfigError, match=r"--out /sys/nopeek-x/y: cannot write"):  # sysfs: not even root may
        make_output_folder("/sys/nopeek-x/y")
    check_output_folder(str(tmp_path / "new" / "deeper"))
    assert sorted(os.listdir(tmp_path)) == ["file"]
    make_output_folder(str(tmp_path / "new" / "deeper"))
    assert (tmp_path / "new" / "deeper").is_dir()


# ---- .npz members: checked before they are read -------------------------------------------------


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_members_are_checked_before_they_are_read(tmp_path, compression):
    from nopeek.core import npz_array, open_npz
    from nopeek.errors import DataError

    path = str(tmp_path / "a.npz")
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("good.npy", npy_bytes(np.arange(6.0).reshape(2, 3)))
        z.writestr("huge.npy", npy_bytes(np.zeros(4), shape=(10**13, 3)))  # 240 TB announced, 32 bytes held
        z.writestr("short.npy", npy_bytes(np.zeros(4), shape=(5,)))  # one element short: truncated
        z.writestr("raw.npy", b"\x80\x04K\x01.")  # a pickle of the number 1
        z.writestr("objects.npy", npy_bytes(np.zeros(2)).replace(b"'<f8'", b"'|O' "))
    with open_npz(path, DataError) as archive:
        np.testing.assert_array_equal(npz_array(archive, "good", path, DataError), np.arange(6.0).reshape(2, 3))
        with pytest.raises(DataError, match=r"a\.npz: array 'huge' announces shape \(10000000000000, 3\) of float64 "
                                            r"\(240,000,000,000,000 bytes\) but holds 32 bytes"):
            npz_array(archive, "huge", path, DataError)
        with pytest.raises(DataError, match=r"array 'short' announces shape \(5,\) .* but holds 32 bytes"):
            npz_array(archive, "short", path, DataError)
        with pytest.raises(DataError, match=r"array 'raw' is not an \.npy array; refused unread, nothing was unpickled"):
            npz_array(archive, "raw", path, DataError)
        with pytest.raises(DataError, match=r"array 'objects' is an object \(pickled\) array"):
            npz_array(archive, "objects", path, DataError)
