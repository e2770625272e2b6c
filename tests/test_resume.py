"""Epoch checkpoints: an interrupted training, `nopeek train` run or sweep resumes from its
last saved epoch, and gives what the uninterrupted one gives."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from nopeek import data as data_lib
from nopeek.training import TrainConfig, _loop, _resume, run_train, train_stack

CONFIG = TrainConfig(dataset="digits", model="mlp", epochs=3, batch_size=64, limit=300, alpha=0.5)


def interrupt_at(monkeypatch, epoch: int):
    """Make training raise KeyboardInterrupt when it starts `epoch` (0-based)."""
    real = _loop.batch_order

    def order(seed, e, shards, batch):
        if e == epoch:
            raise KeyboardInterrupt
        return real(seed, e, shards, batch)

    monkeypatch.setattr(_loop, "batch_order", order)


def assert_same_training(a, b):
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit for bit
    np.testing.assert_equal(a.history, b.history)  # NaN where a reading was not taken
    np.testing.assert_allclose(a.test_accuracy, b.test_accuracy)
    np.testing.assert_allclose(a.dcor, b.dcor, rtol=1e-5)
    for name in a.readings[a.primary]:
        np.testing.assert_allclose(a.readings[a.primary][name], b.readings[b.primary][name], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def dataset():
    return data_lib.load_config(CONFIG)


@pytest.fixture(scope="module")
def trained(dataset):
    """The uninterrupted training of each stack mode, trained once."""
    done = {}

    def of(mode: str = "auto"):
        if mode not in done:
            done[mode] = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, stack_mode=mode)
        return done[mode]

    return of


@pytest.fixture(scope="module")
def uninterrupted(trained):
    return trained("vmap")


@pytest.mark.parametrize("mode", ["vmap", "map"])  # stacked arrays, and a ModelList of K models' trees
def test_an_interrupted_stack_resumes_where_it_stopped(tmp_path, monkeypatch, dataset, trained, mode):
    uninterrupted = trained(mode)
    monkeypatch.setattr(_resume, "SAVE_SPACING", 0.0)  # every epoch
    with monkeypatch.context() as m:
        interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path),
                        stack_mode=mode)
    (saved,) = os.listdir(tmp_path)
    with np.load(tmp_path / saved) as f:
        assert int(f["epoch"]) == 2 and not bool(f["finished"])
    ran = []
    real = _loop.batch_order
    monkeypatch.setattr(_loop, "batch_order", lambda s, e, *a: ran.append(e) or real(s, e, *a))
    resumed = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path),
                          stack_mode=mode)
    assert set(ran) == {2}  # only the epoch not saved was trained
    assert_same_training(resumed, uninterrupted)
    assert resumed.checkpoint == str(tmp_path / saved) and resumed.seconds > 0
    with np.load(resumed.checkpoint) as f:
        assert int(f["epoch"]) == 3 and bool(f["finished"])
    # A finished training read back trains nothing, and evaluates the same model.
    ran.clear()
    again = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path),
                        stack_mode=mode)
    assert ran == []
    assert_same_training(again, uninterrupted)


def test_another_training_never_reads_the_checkpoint(dataset):
    """The file is named by what determines the training: another seed, strength, config,
    labels or inputs is another file."""
    def digest(config=CONFIG, strengths=({"nopeek": 0.5},), seeds=(0,), ds=dataset):
        return _resume.fingerprint(config.to_dict(), list(strengths), list(seeds), "vmap", ds)

    def changed(name, row):
        a = getattr(dataset, name).copy()
        a[row] = 1 - a[row]
        return dataclasses.replace(dataset, **{name: a})

    with_val = data_lib.split_validation(dataset, 0.2, 0)
    variants = [digest(seeds=(1,)), digest(strengths=({"nopeek": 1.0},)), digest(config=CONFIG.replace(lr=0.01)),
                digest(ds=dataclasses.replace(dataset, y_train=dataset.y_train[::-1].copy())),
                digest(ds=changed("x_train", 1)), digest(ds=changed("x_train", -1)), digest(ds=changed("x_test", 3)),
                digest(ds=dataclasses.replace(dataset, y_test=dataset.y_test[::-1].copy())), digest(ds=with_val),
                digest(ds=dataclasses.replace(with_val, x_val=1 - with_val.x_val))]
    assert digest() == digest() and digest() not in variants and len(set(variants)) == len(variants)


def test_a_damaged_checkpoint_is_set_aside_and_training_starts_over(tmp_path, dataset, uninterrupted):
    first = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path))
    with open(first.checkpoint, "r+b") as f:
        f.truncate(200)
    with pytest.warns(UserWarning, match="could not be read.*training starts over"):
        again = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path))
    assert_same_training(again, uninterrupted)
    assert os.path.exists(first.checkpoint + ".unreadable") and os.path.exists(again.checkpoint)


def test_nopeek_train_resumes_an_interrupted_run(tmp_path, monkeypatch):
    from nopeek.core import resume_folder

    monkeypatch.setattr(_resume, "SAVE_SPACING", 0.0)
    out = str(tmp_path / "run")
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            run_train(CONFIG, out, progress=False)
    assert os.listdir(tmp_path) == [os.path.basename(resume_folder(out))]  # no --out, its checkpoint beside it
    ran, lines = [], []
    real = _loop.batch_order
    monkeypatch.setattr(_loop, "batch_order", lambda s, e, *a: ran.append(e) or real(s, e, *a))
    metrics = run_train(CONFIG, out, progress=False, log=lines.append)
    assert set(ran) == {1, 2} and os.listdir(tmp_path) == ["run"]  # resumed; the checkpoints removed once written
    assert len(lines) == 1 and lines[0].startswith("resumed after epoch 1 of 3 from ")
    whole = run_train(CONFIG, str(tmp_path / "whole"), progress=False)
    np.testing.assert_equal(metrics["history"], whole["history"])
    assert metrics["test_accuracy"] == whole["test_accuracy"]


def test_a_sweep_interrupted_in_its_attacks_does_not_train_again(tmp_path, monkeypatch):
    """The last epoch is always saved: a sweep stopped while attacking a stack resumes with
    that stack trained; once its rows are in results.csv the checkpoints are gone."""
    from nopeek.sweeps import PRESETS, _sweep, read_rows, run_sweep

    config = PRESETS["quick"].replace(cuts=("1",), alphas=(0.0, 2.0), noise_scales=(), epochs=2, attack_steps=20)
    out = str(tmp_path / "sweep")
    with monkeypatch.context() as m:
        m.setattr(_sweep, "message_attacks", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run_sweep(config, out, progress=False)
    (saved,) = os.listdir(os.path.join(out, ".resume"))
    with np.load(os.path.join(out, ".resume", saved)) as f:
        assert int(f["epoch"]) == 2 and bool(f["finished"])
    ran = []
    real = _loop.batch_order
    monkeypatch.setattr(_loop, "batch_order", lambda s, e, *a: ran.append(e) or real(s, e, *a))
    rows = run_sweep(config, out, progress=False)
    assert ran == [] and len(rows) == 2 == len(read_rows(os.path.join(out, "results.csv")))
    assert not os.path.exists(os.path.join(out, ".resume"))


def test_a_checkpoint_that_cannot_be_written_does_not_stop_training(tmp_path, monkeypatch, dataset, uninterrupted):
    def full(path, digest, progress):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_resume, "save", full)
    with pytest.warns(UserWarning, match="No space left on device.*training goes on without them"):
        result = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path))
    assert_same_training(result, uninterrupted)
    assert result.checkpoint is None and os.listdir(tmp_path) == []


def test_fresh_discards_the_saved_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(_resume, "SAVE_SPACING", 0.0)
    out = str(tmp_path / "run")
    with monkeypatch.context() as m:
        interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            run_train(CONFIG, out, progress=False)
    ran = []
    real = _loop.batch_order
    monkeypatch.setattr(_loop, "batch_order", lambda s, e, *a: ran.append(e) or real(s, e, *a))
    run_train(CONFIG, out, progress=False, fresh=True)
    assert sorted(set(ran)) == [0, 1, 2]


def test_parameters_numpy_cannot_name_are_read_back(tmp_path):
    """bfloat16 leaves (a model of one's own) are stored as uint16 and come back as bfloat16."""
    import jax.numpy as jnp

    state = {"w": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3) / 7, "b": jnp.ones(3, jnp.float32)}
    progress = _resume.Progress(1, False, state, [{"epoch": 1}], np.zeros(1, np.int64), np.full(1, np.nan),
                                np.ones(1, np.float32), 2.5)
    path = str(tmp_path / "x.npz")
    _resume.save(path, "abc", progress)
    template = jax.tree.map(jnp.zeros_like, state)
    back = _resume.load(path, "abc", template)
    assert back.state["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(back.state["w"], np.float32), np.asarray(state["w"], np.float32))
    assert back.epoch == 1 and back.seconds == 2.5 and back.history == [{"epoch": 1}]
