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
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
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

    x_changed = dataset.x_train.copy()
    x_changed[0] += 0.5
    variants = [digest(seeds=(1,)), digest(strengths=({"nopeek": 1.0},)), digest(config=CONFIG.replace(lr=0.01)),
                digest(ds=dataclasses.replace(dataset, y_train=dataset.y_train[::-1].copy())),
                digest(ds=dataclasses.replace(dataset, x_train=x_changed))]
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
    ran = []
    real = _loop.batch_order
    monkeypatch.setattr(_loop, "batch_order", lambda s, e, *a: ran.append(e) or real(s, e, *a))
    metrics = run_train(CONFIG, out, progress=False)
    assert set(ran) == {1, 2} and os.listdir(tmp_path) == ["run"]  # resumed; the checkpoints removed once written
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
    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_resume, "atomic_write_bytes", full)
    with pytest.warns(UserWarning, match="No space left on device.*training goes on without them"):
        result = train_stack(CONFIG, dataset, seeds=[0, 1], alphas=[0.0, 0.5], progress=False, resume_dir=str(tmp_path))
    assert_same_training(result, uninterrupted)
    assert result.checkpoint is None and os.listdir(tmp_path) == []
