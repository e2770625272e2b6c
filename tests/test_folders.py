"""What a folder holds (`nopeek.core.folder_kind`), the check before a command writes there
(`check_writable`), output folders whole or absent, and what an interrupted command says."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from nopeek.core import MANIFEST, check_writable, folder_kind, foreign_files, list_in_manifest, publish_folder, staging_folder
from nopeek.errors import ConfigError


def _folder(path, files: dict) -> str:
    os.makedirs(path, exist_ok=True)
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "w", encoding="utf-8") as fh:
            fh.write(text if isinstance(text, str) else json.dumps(text))
    return str(path)


@pytest.mark.parametrize("files, kind", [
    ({"results.csv": "a,b\n"}, "sweep"),
    ({"config.json": {"alphas": [0.0], "cuts": ["1"]}}, "sweep"),  # a sweep before its first row
    ({"shards/plan.json": {"shards": 2}}, "sweep"),  # a shard's folder as the first shard makes it
    ({"metrics.json": {}, "config.json": {"alpha": 0.0}, "checkpoint.msgpack": ""}, "run"),
    ({"scores.json": {"attack": "fsha", "mse": 0.1}}, "fsha"),
    ({"scores.json": {"targets": {}, "pairs": []}}, "audit"),
    ({"scores.json": {"attack": "decoder"}}, "attack"),
    ({"cost.csv": "x\n"}, "cost"),
    ({"config.json": {"alpha": 0.0}}, "other"),  # a train config alone: nopeek never leaves that
    ({"notes.txt": "mine"}, "other"),
    ({"scores.json": "{broken"}, "attack"),  # a damaged scores.json still tells its command
], ids=["sweep", "sweep-config", "shards", "run", "fsha", "audit", "attack", "cost", "train-config", "foreign",
        "broken-scores"])
def test_folder_kind_tells_each_commands_folder(tmp_path, files, kind):
    assert folder_kind(_folder(tmp_path / "f", files)) == kind


def test_an_absent_or_empty_folder_has_no_kind_and_takes_anything(tmp_path):
    assert folder_kind(str(tmp_path / "absent")) is None
    os.makedirs(tmp_path / "empty")
    assert folder_kind(str(tmp_path / "empty")) is None
    # hidden names only (a Finder's .DS_Store, a write probe or .tmp- file of a command
    # starting at the same moment, a sweep killed while writing its config): still empty
    _folder(tmp_path / "hidden", {".DS_Store": "x", ".nopeek-probe-abc/x": "", ".config.json.tmp-1": "{"})
    assert folder_kind(str(tmp_path / "hidden")) is None
    for kinds in (("run",), ("sweep",), ("cost",)):
        assert check_writable(str(tmp_path / "empty"), kinds, force=False) is None


def test_force_replaces_only_the_commands_own_folder(tmp_path):
    run = _folder(tmp_path / "run", {"metrics.json": {}})
    with pytest.raises(ConfigError, match=r"holds a run \(`nopeek train`\) already; use another --out, or --force"):
        check_writable(run, ("run",), force=False)
    assert check_writable(run, ("run", "fsha"), force=True) == "run"
    with pytest.raises(ConfigError, match=r"holds a cost report \(`nopeek cost`\), not what `nopeek train` writes"):
        check_writable(_folder(tmp_path / "cost", {"cost.csv": "x"}), ("fsha", "run"), force=True)
    # a command that adds to its folder (a sweep resuming, cost) needs no force for its own
    sweep = _folder(tmp_path / "sweep", {"results.csv": "a\n"})
    assert check_writable(sweep, ("sweep",), force=False, replaces=False) == "sweep"
    for folder, kinds, holds in ((sweep, ("run",), "a sweep"), (run, ("sweep",), "a run"),
                                 (_folder(tmp_path / "mine", {"notes.txt": "x"}), ("audit",), "files nopeek did not write")):
        for force in (False, True):
            with pytest.raises(ConfigError, match=f"holds {holds}.*choose another --out"):
                check_writable(folder, kinds, force=force, replaces=kinds != ("sweep",))
    assert os.path.exists(tmp_path / "mine" / "notes.txt")


def test_the_current_folder_is_never_replaced(tmp_path, monkeypatch):
    here = _folder(tmp_path / "here", {"metrics.json": {}})
    monkeypatch.chdir(here)
    for out in (".", here, str(tmp_path)):  # the folder itself, by path, and one above it
        with pytest.raises(ConfigError, match="is the current folder"):
            check_writable(out, ("run", "other"), force=True)
    os.makedirs("inside")
    assert check_writable("inside", ("run",), force=True) is None  # below it: fine


def test_publish_folder_replaces_whole_and_leaves_nothing_beside(tmp_path):
    out = _folder(tmp_path / "out", {"old.txt": "old"})
    tmp = staging_folder(str(out))
    assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".out.tmp-")
    with open(os.path.join(tmp, "new.txt"), "w") as fh:
        fh.write("new")
    publish_folder(tmp, str(out))
    assert sorted(os.listdir(out)) == [MANIFEST, "new.txt"] and os.listdir(tmp_path) == ["out"]
    assert json.load(open(os.path.join(out, MANIFEST))) == ["new.txt"]  # what it wrote: what --force may replace


def test_force_never_deletes_a_file_added_to_a_commands_folder(tmp_path):
    """A file a user puts into a folder nopeek wrote whole (notes, a plot of their own) is
    refused by --force with its name, at any depth; what nopeek added later (report.html
    listed by `list_in_manifest`, a folder below written whole with its own list) is not.
    A folder from before the list (none) is replaced whole, as before."""
    run = str(tmp_path / "run")
    tmp = staging_folder(run)
    _folder(tmp, {"metrics.json": {}, "figures/curve.png": "png"})
    publish_folder(tmp, run)
    attack = os.path.join(run, "attacks", "decoder")
    tmp = staging_folder(attack)
    _folder(tmp, {"scores.json": {"attack": "decoder"}})
    publish_folder(tmp, attack)
    _folder(run, {"report.html": "<html>"})
    list_in_manifest(run, "report.html")
    assert json.load(open(os.path.join(run, MANIFEST)))[0] == "attacks/decoder/"  # named by the run it went into
    assert foreign_files(run) == [] and check_writable(run, ("run", "fsha"), force=True) == "run"
    for added in ("notes.txt", "figures/mine.png", "attacks/decoder/mine.png", "attacks/mine/x.txt", ".notes.md",
                  ".git/config"):
        _folder(run, {added: "mine"})
        with pytest.raises(ConfigError, match=rf"holds a run \(`nopeek train`\) and 1 file\(s\) `nopeek train` did "
                                              rf"not write \({added}\); --force replaces only what it wrote: move them"):
            check_writable(run, ("run", "fsha"), force=True)
        os.remove(os.path.join(run, added))
        if os.path.dirname(added) not in ("", "figures", "attacks/decoder"):  # a folder the user made for it
            os.rmdir(os.path.join(run, os.path.dirname(added)))
    # an empty folder, a link (not followed: two runs linking each other are no loop), a
    # user's copy of a folder nopeek wrote whole inside (its own list, but not named by the run's)
    os.makedirs(os.path.join(run, "emptied"))
    assert foreign_files(run) == ["emptied/"]
    os.rmdir(os.path.join(run, "emptied"))
    os.symlink(run, os.path.join(run, "loop"))
    assert foreign_files(run) == ["loop"]
    os.remove(os.path.join(run, "loop"))
    shutil.copytree(attack, os.path.join(run, "attacks", "decoder-backup"))
    assert foreign_files(run) == ["attacks/decoder-backup/"]
    shutil.rmtree(os.path.join(run, "attacks", "decoder-backup"))
    # a cost report written before the list (in place, keeping other files): only its own names are replaced
    legacy = _folder(tmp_path / "legacy", {"cost.csv": "x", "cost_config.json": {}, "report.html": ""})
    assert check_writable(legacy, ("cost",), force=True) == "cost"
    _folder(legacy, {"notes.txt": "mine"})
    with pytest.raises(ConfigError, match=r"did not write \(notes\.txt\)"):
        check_writable(legacy, ("cost",), force=True)
    with open(os.path.join(run, MANIFEST), "w") as fh:
        fh.write("{damaged")
    assert foreign_files(run) is None and check_writable(run, ("run",), force=True) == "run"


def test_publish_folder_puts_the_old_folder_back_if_the_last_rename_fails(tmp_path, monkeypatch):
    out = _folder(tmp_path / "out", {"old.txt": "old"})
    tmp = staging_folder(str(out))
    real = os.rename

    def rename(src, dst):
        if src == tmp:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        publish_folder(tmp, str(out))
    assert os.listdir(out) == ["old.txt"]


def test_an_interrupted_fsha_run_leaves_no_folder(tmp_path, monkeypatch):
    """`nopeek train --server fsha` writes its grids as it goes; interrupted after the first,
    neither --out nor the folder it was writing into is left."""
    from nopeek.dishonest import FSHAConfig, _fsha, run_fsha
    from nopeek.training import TrainConfig

    def interrupted(config, fsha, dataset, *, on_grid, **kwargs):
        import numpy as np

        x = np.zeros((4, 8, 8, 1), np.float32)
        on_grid(10, x, x, {"mse": 0.1, "baseline_mse": 0.1})
        raise KeyboardInterrupt

    monkeypatch.setattr(_fsha, "fsha_attack", interrupted)
    out = tmp_path / "fsha"
    with pytest.raises(KeyboardInterrupt):
        run_fsha(TrainConfig(dataset="digits", model="cnn", widths=(4, 8, 16, 8), limit=200), FSHAConfig(), str(out),
                 progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command, says", [
    ("sweep", "finished groups are kept in --out; run the same command again to resume"),
    ("train", "nothing was written to --out (it appears whole when the run finishes); any epochs it saved are kept"),
    ("attack", "nothing was written"),
    ("audit", "nothing was written"),
    ("figures", "figures drawn before it are kept"),
    ("cost", "files written before it are kept"),
])
def test_an_interrupted_command_says_what_it_kept(command, says, monkeypatch, capsys):
    from nopeek.cli import _commands, main

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_commands, f"cmd_{command}", stopped)
    argv = {"sweep": ["sweep"], "train": ["train"], "attack": ["attack"], "figures": ["figures", "x"],
            "audit": ["audit", "--pairs", "p.npz", "--targets", "t.npz", "--out", "o"], "cost": ["cost"]}[command]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith(f"nopeek {command}: interrupted; {says}") and err.count("\n") == 1


def test_an_attack_no_better_than_the_mean_image_is_warned_about(capsys):
    """Within 1% of the mean image's MSE, `nopeek attack` says the attack may have stopped too
    soon (a 20-step decoder reconstructs the mean image); a real reconstruction is not warned."""
    from nopeek.cli._commands import _warn_no_better

    _warn_no_better({"mse": 0.0750, "baseline_mse": 0.0750})
    err = capsys.readouterr().err
    assert err.startswith("nopeek attack: warning: the reconstructions are no better than the mean image (MSE 0.0750 "
                          "against 0.0750)") and "--attack-steps" in err and err.count("\n") == 1
    for scores in ({"mse": 0.020, "baseline_mse": 0.075}, {"norm_auc": 0.9}, {"mse": float("nan"), "baseline_mse": 0.07}):
        _warn_no_better(scores)
        assert capsys.readouterr().err == "", scores


def test_default_run_names_use_the_data_set_as_typed():
    from nopeek.cli._commands import _name_of

    assert _name_of("digits") == "digits"
    assert _name_of("npz:/very/deep/folder/of/mine.npz") == "npz_mine.npz"
    assert _name_of("folder:scans/") == "folder_scans"


def test_an_attack_is_written_whole_and_replaced_only_with_force(tmp_path, monkeypatch):
    """`run_attack` draws its figure and writes scores.json into a staged folder: interrupted
    while writing, it leaves no --out; finished, a second attack there needs `force`."""
    from nopeek.attacking import AttackConfig, _run, run_attack
    from nopeek.training import TrainConfig, run_train

    run = str(tmp_path / "run")
    run_train(TrainConfig(dataset="digits", epochs=1, limit=200), run, progress=False)
    config = AttackConfig(attack="decoder", attack_steps=5)
    out = os.path.join(run, "attacks", "decoder")

    def interrupted(path, data):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_run, "write_json", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_attack(run, config, out)
    assert not os.path.exists(out) and os.listdir(os.path.join(run, "attacks")) == []
    first = run_attack(run, config, out)
    assert sorted(os.listdir(out)) == [MANIFEST, "reconstructions.png", "scores.json"]
    with pytest.raises(ConfigError, match="already; use another --out, or --force"):
        run_attack(run, config, out)
    second = run_attack(run, dataclasses.replace(config, attack_seed=1), out, force=True)
    assert json.load(open(os.path.join(out, "scores.json")))["attack_seed"] == second["attack_seed"] == 1 != first["attack_seed"]
