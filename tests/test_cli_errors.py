"""Every bad input the CLI can meet ends in one line `nopeek CMD: error: ...`, exit code 2.

A table of bad inputs covering every subcommand and the sweep's config files, each run
through `nopeek.cli.main` in this process (a few also as their own process, `python -m
nopeek.cli ...`, to see exactly what a shell sees). For each: exit code 2,
exactly one line on stderr that starts with `nopeek CMD: error:` (`nopeek: error:` for
errors argparse reports at the top level) and names the option or file, no traceback,
and nothing written: the whole test folder (fixtures and outputs) is unchanged, so no
`--out` folder, no run folder and no `.tmp-` folder is left behind.

Every case but two (runs that diverge in their first epoch: a NaN loss, and a loss that
explodes without becoming NaN) fails before any training, and the sweep and `figures`
cases before anything is drawn or written; the shared fixtures (a tiny trained run folder
and its broken copies, hand-made sweep and shard folders, bad data, images and config
files) are built once.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from _files import npy_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("NOPEEK_DEBUG", None)
    return env


def _snapshot(folder: str) -> dict:
    """{relative path: (size, mtime)} of everything under `folder`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, folder)] = (st.st_size if name in filenames else -1, st.st_mtime_ns)
    return out


def _write_results(folder, rows_samples: dict) -> None:
    """A hand-made sweep folder: results.csv with one row per alpha and the samples it names."""
    from nopeek.sweeps import write_rows

    rows = []
    for alpha, samples_file in rows_samples.items():
        rows.append(dict(
            dataset="digits", model="mlp", topology="vanilla", cut="1", defense="none" if alpha == 0 else "nopeek",
            alpha=repr(float(alpha)), noise_scale="0.0", seed="0", party="client", message="z", accuracy=0.9,
            dcor=0.8 - 0.1 * alpha, attack_ssim=0.5, baseline_ssim=0.3, best_ssim=0.5, collapsed=False,
            diverged=False, samples_file=samples_file, originals_file="originals.npy",
        ))
    os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
    write_rows(os.path.join(folder, "results.csv"), rows)
    np.save(os.path.join(folder, "samples", "originals.npy"), np.zeros((16, 8, 8, 1), np.float32))


def _png_header(path, width: int, height: int) -> None:
    """A PNG that announces width x height 8-bit grey pixels and holds none: a decompression
    bomb's header (Pillow refuses it when opening, before decoding)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _image_folder(folder, images: dict) -> None:
    """folder/<class>/<i>.png for {class: [PIL images]}."""
    for cls, ims in images.items():
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        for i, im in enumerate(ims):
            im.save(os.path.join(folder, cls, f"{i}.png"))


QUICK = dict(dataset="digits", limit=200, epochs=1, attack_steps=10)  # what SWEEP below gives over the quick preset


def _shard_folder(folder, *, foreign_epochs=None, copy_config=True, with_hash=True, table=None) -> None:
    """A sharded sweep's folder of SWEEP's config, whose shard 1/2 file (or `table`) holds a
    row written by the same grid at other epochs (a file from another sweep): its config
    copied beside it (left behind in the folder) or not (copied in alone), or a row without
    a hash."""
    from nopeek.core import write_json
    from nopeek.sweeps import PRESETS, write_rows

    config = PRESETS["quick"].replace(**QUICK)
    other = config.replace(epochs=foreign_epochs) if foreign_epochs else config
    os.makedirs(os.path.join(folder, "shards"))
    write_json(os.path.join(folder, "config.json"), config.to_dict())
    write_json(os.path.join(folder, "shards", "plan.json"), {"shards": 2})
    if copy_config:
        write_json(os.path.join(folder, "shards", f"config-{other.digest()}.json"), other.to_dict())
    row = dict(dataset="digits", model="mlp", topology="vanilla", cut="1", defense="none", strength="0.0", alpha="0.0",
               noise_scale="0.0", seed="0", party="client", message="z", accuracy=0.9, dcor=0.8, collapsed=False,
               diverged=False, epochs=other.epochs, samples_file="", originals_file="originals.npy",
               config_hash=other.digest() if with_hash else "")
    write_rows(os.path.join(folder, table or os.path.join("shards", "results-1-of-2.csv")), [row])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The folder every case runs in, with its fixtures (built once)."""
    from nopeek.training import TrainConfig
    from nopeek.training import run_train

    root = str(tmp_path_factory.mktemp("cli_errors"))
    p = lambda *parts: os.path.join(root, *parts)  # noqa: E731

    # A tiny trained run and broken copies of it.
    run_train(TrainConfig(dataset="digits", epochs=1, limit=200), p("run"), progress=False)
    for name in ("run_truncated", "run_mismatch", "run_badjson", "run_badtype", "run_unknownkey", "run_nockpt"):
        shutil.copytree(p("run"), p(name))
    ckpt = p("run_truncated", "checkpoint.msgpack")
    with open(ckpt, "rb") as f:
        raw = f.read()
    with open(ckpt, "wb") as f:
        f.write(raw[: len(raw) // 2])
    config = json.load(open(p("run", "config.json")))
    json.dump({**config, "widths": [32]}, open(p("run_mismatch", "config.json"), "w"))
    with open(p("run_badjson", "config.json"), "w") as f:
        f.write('{"dataset": "digits", "epochs": ')
    json.dump({**config, "widths": "abc"}, open(p("run_badtype", "config.json"), "w"))
    json.dump({**config, "bogus": 1}, open(p("run_unknownkey", "config.json"), "w"))
    os.remove(p("run_nockpt", "checkpoint.msgpack"))

    with open(p("picture.png"), "wb") as f:  # a user's own picture where a comparison would go
        f.write(b"not nopeek's")
    with open(p("afile.txt"), "w") as f:
        f.write("not a folder\n")

    # Arrays for `dcor`.
    np.save(p("x.npy"), np.random.default_rng(0).normal(size=(20, 3)))
    np.save(p("y_short.npy"), np.zeros((7, 2)))
    np.save(p("strings.npy"), np.array(["a", "b", "c"]))
    np.save(p("empty.npy"), np.zeros((0, 3)))
    np.save(p("objects.npy"), np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with open(p("lie.npy"), "wb") as fh:  # a header announcing 1e13 values the file does not hold
        fh.write(npy_bytes(np.zeros(12), shape=(10**13,)))
    with open(p("pk.npy"), "wb") as fh:  # an .npz archive named .npy
        fh.write(b"PK\x03\x04" + b"\0" * 60)
    np.save(p("nan.npy"), np.array([[1.0], [np.nan], [2.0]]))

    # One's own data, broken.
    rng = np.random.default_rng(0)
    np.savez(p("pickled.npz"), x=np.array([object(), 1], dtype=object), y=np.array([0, 1]), allow_pickle=True)
    np.savez(p("mismatch.npz"), x=rng.random((20, 4)), y=np.arange(19) % 2)
    np.savez(p("bright.npz"), x=rng.random((20, 8, 8)) * 3, y=np.arange(20) % 2)
    os.makedirs(p("oneclass", "cat"))
    from PIL import Image

    for i in range(3):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(p("oneclass", "cat", f"{i}.png"))
    grey = lambda: Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8))  # noqa: E731
    _image_folder(p("constant"), {c: [Image.fromarray(np.full((8, 8), 200, np.uint8)) for _ in range(4)]
                                  for c in ("cat", "dog")})
    _image_folder(p("bomb"), {c: [grey() for _ in range(3)] for c in ("cat", "dog")})
    _png_header(p("bomb", "cat", "huge.png"), 30000, 30000)
    _image_folder(p("outside"), {"cat": [grey()]})
    _image_folder(p("linked"), {c: [grey() for _ in range(3)] for c in ("cat", "dog")})
    os.symlink(p("outside", "cat"), p("linked", "mouse"))
    with zipfile.ZipFile(p("rawpickle.npz"), "w") as z:  # a member named like an array, holding a pickle
        z.writestr("x.npy", pickle.dumps(list(range(10))))
        z.writestr("y.npy", npy_bytes(np.arange(10) % 2))
    with zipfile.ZipFile(p("hugeheader.npz"), "w") as z:  # a header announcing 1e13 float64s
        z.writestr("x.npy", npy_bytes(np.zeros(12), shape=(10**13,)))
        z.writestr("y.npy", npy_bytes(np.arange(12) % 2))
    with open(p("text.npz"), "w") as f:
        f.write("x,y\n1,2\n")
    np.savez(p("empty_train.npz"), x_train=np.zeros((0, 8, 8)), y_train=np.zeros(0, np.int64),
             x_test=rng.random((10, 8, 8)), y_test=np.arange(10) % 2)
    np.savez(p("unseen_class.npz"), x_train=rng.random((40, 8, 8)), y_train=np.arange(40) % 9,
             x_test=rng.random((20, 8, 8)), y_test=np.arange(20) % 10)
    os.makedirs(p("afolder.npz"))

    # Sharded sweep folders holding another config's shard file.
    _shard_folder(p("shards_left"), foreign_epochs=3)
    _shard_folder(p("shards_copied"), foreign_epochs=3, copy_config=False)
    _shard_folder(p("shards_nohash"), with_hash=False)
    _shard_folder(p("results_foreign"), foreign_epochs=3, copy_config=False, table="results.csv")

    # Sweep config files.
    files = {
        "cuts_str.toml": 'cuts = "abc"\n',
        "epochs_float.toml": "epochs = 1.5\n",
        "cuts_bool.toml": "cuts = [true]\n",
        "unknown.toml": "epochs = 1\nbogus_key = 3\n",
        "misspelt.toml": "epohcs = 1\n",
        "broken.toml": "epochs = = 1\n[unclosed\n",
        "alphas_inf.toml": "alphas = [inf]\n",
        "broken.json": '{"epochs": 1,',
        "alphas_str.json": '{"alphas": "0,1"}',
    }
    for name, text in files.items():
        with open(p(name), "w") as f:
            f.write(text)

    # `figures` inputs: a hand-made sweep folder whose second row names a corrupt sample
    # file, one whose sample has another shape than the originals, a table missing
    # columns, a foreign CSV, undecodable bytes, a row cut short.
    _write_results(p("sweep_badsample"), {0.0: "a.npy", 1.0: "b.npy"})
    np.save(p("sweep_badsample", "samples", "a.npy"), np.zeros((16, 8, 8, 1), np.float32))
    with open(p("sweep_badsample", "samples", "b.npy"), "wb") as f:
        f.write(b"this is not an npy file")
    _write_results(p("sweep_badshape"), {0.0: "a.npy", 1.0: "b.npy"})
    np.save(p("sweep_badshape", "samples", "a.npy"), np.zeros((16, 8, 8, 1), np.float32))
    np.save(p("sweep_badshape", "samples", "b.npy"), np.zeros((3,), np.float32))
    from nopeek.core import write_json
    from nopeek.sweeps import PRESETS

    write_json(p("sweep_badsample", "config.json"), PRESETS["quick"].to_dict())
    _write_results(p("sweep_pickled"), {0.0: "a.npy"})
    np.save(p("sweep_pickled", "samples", "a.npy"), np.array([None] * 16, dtype=object), allow_pickle=True)
    os.makedirs(p("csv_missing"))
    with open(p("sweep_badsample", "results.csv")) as f:
        lines = f.read().splitlines()
    header = lines[0].split(",")
    drop = header.index("accuracy")
    with open(p("csv_missing", "results.csv"), "w") as f:
        f.write("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines) + "\n")
    os.makedirs(p("csv_foreign"))
    with open(p("csv_foreign", "results.csv"), "w") as f:
        f.write("name,age,city\nada,36,london\nalan,41,wilmslow\n")
    os.makedirs(p("csv_binary"))
    with open(p("csv_binary", "results.csv"), "wb") as f:
        f.write(b"\xff\xfe\x00\x81garbage\x00\xff")
    os.makedirs(p("csv_truncated"))
    with open(p("csv_truncated", "results.csv"), "w") as f:
        f.write(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")

    # `audit` inputs.
    np.savez(p("pairs.npz"), x=rng.random((32, 8, 8, 1)), z=rng.random((32, 4)))
    np.savez(p("targets.npz"), x=rng.random((8, 8, 8, 1)), z=rng.random((8, 4)))

    # Folders an output must not replace or mix with: the user's own files, an attack's
    # scores already there, and damaged scores for `report`.
    os.makedirs(p("foreign"))
    with open(p("foreign", "notes.txt"), "w") as f:
        f.write("my notes\n")
    os.makedirs(p("attack_done"))
    write_json(p("attack_done", "scores.json"), {"attack": "decoder", "mse": 0.05})
    # files under nopeek's names that nopeek did not write, for `report`
    os.makedirs(p("cost_garbage"))
    with open(p("cost_garbage", "cost.csv"), "w") as f:
        f.write("hello\n")
    os.makedirs(p("metrics_foreign"))
    write_json(p("metrics_foreign", "metrics.json"), {"a": 1})
    os.makedirs(p("metrics_binary"))
    with open(p("metrics_binary", "metrics.json"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\xbc\x00")
    os.makedirs(p("run_config_list"))
    write_json(p("run_config_list", "metrics.json"), {"test_accuracy": 0.5})
    write_json(p("run_config_list", "config.json"), [1, 2])
    os.makedirs(p("scores_unterminated"))
    with open(p("scores_unterminated", "scores.json"), "w") as f:
        f.write('{"attack": "deco')
    os.makedirs(p("scores_truncated"))
    with open(p("scores_truncated", "scores.json"), "w") as f:
        f.write('{"attack": "decoder", "mse": ')
    os.makedirs(p("scores_list"))
    with open(p("scores_list", "scores.json"), "w") as f:
        f.write("[1, 2]\n")
    return root


# Tiny settings everywhere, so a case that slipped through would still finish quickly.
SWEEP0 = ["sweep", "--preset", "quick", "--dataset", "digits", "--limit", "200", "--quiet", "--out", "{root}/sweep_out"]
SWEEP = [*SWEEP0, "--epochs", "1", "--attack-steps", "10"]
TRAIN = ["train", "--dataset", "digits", "--limit", "200", "--epochs", "1", "--quiet", "--out", "{root}/train_out"]
ATTACK = ["attack", "--run", "{root}/run", "--attack-steps", "10"]
UNWRITABLE = "/sys/nopeek-cannot-write-here"  # sysfs: nobody, root included, may create a folder there


def _set(argv, option, value):
    """`argv` with the value after `option` replaced."""
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2:]]

AUDIT = ["audit", "--pairs", "{root}/pairs.npz", "--targets", "{root}/targets.npz", "--attack-steps", "10",
         "--quiet"]

# (id, argv, prog, pattern the message after "error: " must match: it names the option or file)
CASES = [
    # -- argparse, top level
    ("no-such-command", ["frobnicate"], "nopeek", r"invalid choice: 'frobnicate'"),
    ("unknown-option", [*TRAIN, "--bogus"], "nopeek", r"unrecognized arguments: --bogus"),
    # -- dcor
    ("dcor-string-array", ["dcor", "{root}/strings.npy", "{root}/x.npy"], "nopeek dcor", r"strings\.npy.*numeric"),
    ("dcor-empty-array", ["dcor", "{root}/empty.npy", "{root}/x.npy"], "nopeek dcor", r"empty\.npy.*shape \(0, 3\)"),
    ("dcor-object-array", ["dcor", "{root}/objects.npy", "{root}/x.npy"], "nopeek dcor", r"objects\.npy.*pickled"),
    ("dcor-nan", ["dcor", "{root}/nan.npy", "{root}/nan.npy"], "nopeek dcor", r"nan\.npy.*NaN"),
    ("dcor-lying-header", ["dcor", "{root}/lie.npy", "{root}/x.npy"], "nopeek dcor",
     r"lie\.npy: announces shape \(10000000000000,\) of float64 .* truncated or corrupt"),
    ("dcor-npz-named-npy", ["dcor", "{root}/pk.npy", "{root}/x.npy"], "nopeek dcor", r"pk\.npy: an \.npz archive"),
    ("dcor-mismatched-lengths", ["dcor", "{root}/x.npy", "{root}/y_short.npy"], "nopeek dcor",
     r"x\.npy.*20.*y_short\.npy.*7"),
    ("dcor-block-size-0", ["dcor", "{root}/x.npy", "{root}/x.npy", "--block-size", "0"], "nopeek dcor",
     r"--block-size.*0"),
    ("dcor-block-size-0-bundled", ["dcor", "--block-size", "0"], "nopeek dcor", r"--block-size"),
    ("dcor-negative-permutations", ["dcor", "--permutations", "-5"], "nopeek dcor",
     r"--permutations must be 0 \(no test\) or at least 19"),
    ("dcor-too-few-permutations", ["dcor", "--permutations", "5"], "nopeek dcor", r"never reach a p-value of 0\.05\), got 5"),
    ("dcor-seed-out-of-range", ["dcor", "--seed", "99999999999999999999"], "nopeek dcor", r"--seed must be between 0"),
    ("dcor-missing-file", ["dcor", "{root}/missing.npy", "{root}/x.npy"], "nopeek dcor", r"missing\.npy"),
    # -- train
    ("train-out-is-file", _set(TRAIN, "--out", "{root}/afile.txt"), "nopeek train", r"--out .*afile\.txt.*file"),
    ("train-out-exists", _set(TRAIN, "--out", "{root}/run"), "nopeek train",
     r"--out .*run: holds a run \(`nopeek train`\) already; use another --out, or --force"),
    # --force replaces only what the command wrote: never another command's folder, nor
    # files nopeek did not write, nor the folder the command runs in
    ("train-force-over-sweep", [*_set(TRAIN, "--out", "{root}/sweep_badsample"), "--force"], "nopeek train",
     r"sweep_badsample: holds a sweep \(`nopeek sweep`\), not what `nopeek train` writes; choose another --out "
     r"\(--force reaches only what `nopeek train` wrote\)"),
    ("train-force-over-own-files", [*_set(TRAIN, "--out", "{root}/foreign"), "--force"], "nopeek train",
     r"foreign: holds files nopeek did not write, not what `nopeek train` writes"),
    ("train-clients-on-vanilla", [*TRAIN, "--clients", "3"], "nopeek train",
     r"--clients applies to topologies with several data holders \(vertical, round_robin\), not --topology vanilla"),
    ("train-force-current-folder", [*_set(TRAIN, "--out", "."), "--force"], "nopeek train",
     r"--out \.: is the current folder"),
    ("train-fsha-force-over-sweep", ["train", "--dataset", "digits", "--limit", "200", "--quiet", "--server", "fsha",
                                     "--model", "cnn", "--fsha-steps", "10", "--out", "{root}/sweep_badsample",
                                     "--force"], "nopeek train",
     r"sweep_badsample: holds a sweep"),
    ("train-diverges", [*TRAIN, "--lr", "1e30", "--optimizer", "sgd", "--epochs", "2"], "nopeek train",
     r"training diverged at epoch 1.*--lr"),
    ("train-widths-length", [*TRAIN, "--model", "cnn", "--widths", "1,2"], "nopeek train",
     r"--widths.*cnn takes 4 widths"),
    ("train-alpha-inf", [*TRAIN, "--alpha", "inf"], "nopeek train", r"--alpha must be finite"),
    ("train-lr-inf", [*TRAIN, "--lr", "inf"], "nopeek train", r"--lr must be finite"),
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], "nopeek train", r"--lr must be finite"),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"], "nopeek train", r"--seed must be >= 0"),
    ("train-split-seed-negative", [*TRAIN, "--split-seed", "-3"], "nopeek train", r"--split-seed must be >= 0"),
    ("train-epochs-0", [*TRAIN, "--epochs", "0"], "nopeek train", r"--epochs must be >= 1"),
    ("train-batch-size-1", [*TRAIN, "--batch-size", "1"], "nopeek train", r"--batch-size must be >= 2"),
    ("train-dataset-unknown", [*TRAIN, "--dataset", "imagenet"], "nopeek train", r"dataset 'imagenet'"),
    ("train-npz-missing", [*TRAIN, "--dataset", "npz:/missing.npz"], "nopeek train", r"--dataset npz:/missing\.npz"),
    ("train-npz-pickled", [*TRAIN, "--dataset", "npz:{root}/pickled.npz"], "nopeek train", r"pickled\.npz.*pickled"),
    ("train-npz-mismatch", [*TRAIN, "--dataset", "npz:{root}/mismatch.npz"], "nopeek train",
     r"mismatch\.npz: x has 20 samples but y has 19"),
    ("train-npz-float-range", [*TRAIN, "--dataset", "npz:{root}/bright.npz"], "nopeek train",
     r"bright\.npz.*\[0, 1\]"),
    ("train-folder-one-class", [*TRAIN, "--dataset", "folder:{root}/oneclass"], "nopeek train",
     r"oneclass.*1 class"),
    ("train-folder-constant-images", [*TRAIN, "--dataset", "folder:{root}/constant"], "nopeek train",
     r"folder:.*/constant: every one of its \d+ training images is constant"),
    ("train-folder-decompression-bomb", [*TRAIN, "--dataset", "folder:{root}/bomb"], "nopeek train",
     r"bomb/cat/huge\.png: refused unread.*decompression bomb"),
    ("train-folder-link-outside", [*TRAIN, "--dataset", "folder:{root}/linked"], "nopeek train",
     r"linked/mouse: the class folder links to .*/outside/cat, outside the data set's folder"),
    ("train-npz-raw-pickle-member", [*TRAIN, "--dataset", "npz:{root}/rawpickle.npz"], "nopeek train",
     r"rawpickle\.npz: array 'x' is not an \.npy array; refused unread, nothing was unpickled"),
    ("train-npz-header-1e13", [*TRAIN, "--dataset", "npz:{root}/hugeheader.npz"], "nopeek train",
     r"hugeheader\.npz: array 'x' announces shape \(10000000000000,\) .* but holds 96 bytes"),
    ("train-npz-text-file", [*TRAIN, "--dataset", "npz:{root}/text.npz"], "nopeek train",
     r"text\.npz: not an \.npz archive"),
    ("train-npz-is-folder", [*TRAIN, "--dataset", "npz:{root}/afolder.npz"], "nopeek train",
     r"afolder\.npz: is a folder, not an \.npz file"),
    ("train-npz-empty-x-train", [*TRAIN, "--dataset", "npz:{root}/empty_train.npz"], "nopeek train",
     r"empty_train\.npz: x_train holds no values \(shape \(0, 8, 8\)\)"),
    ("train-npz-class-only-in-test", [*TRAIN, "--dataset", "npz:{root}/unseen_class.npz"], "nopeek train",
     r"unseen_class\.npz: class 9 is in y_test \(2 sample\(s\)\) but not in y_train"),
    ("train-limit-drops-a-class", [*TRAIN, "--limit", "3"], "nopeek train",
     r"data set digits: class \d has \d+ held-out sample\(s\) but none in the training split.*--limit 3"),
    ("train-dirichlet-leaves-a-client-empty", [*TRAIN, "--topology", "round_robin", "--partition", "dirichlet",
                                               "--dirichlet-alpha", "0.01", "--clients", "10", "--split-seed", "1",
                                               "--batch-size", "2"], "nopeek train",
     r"--partition dirichlet --dirichlet-alpha 0\.01 leaves client \d+ of 10 with \d+ training and \d+ held-out"),
    ("train-loss-explodes", [*TRAIN, "--lr", "1000", "--optimizer", "sgd"], "nopeek train",
     r"training diverged at epoch 1 \(loss [0-9.e+]+, over 1e\+06 times the first step's [0-9.]+\); nothing was "
     r"written.*--lr"),
    ("train-out-unwritable", _set(TRAIN, "--out", UNWRITABLE + "/run"), "nopeek train",
     r"--out /sys/nopeek-cannot-write-here/run: cannot write"),
    ("train-model-unknown", [*TRAIN, "--model", "transformer"], "nopeek train", r"model 'transformer'"),
    ("train-topology-unknown", [*TRAIN, "--topology", "mesh"], "nopeek train", r"topology 'mesh'"),
    ("train-cuts-not-increasing", [*TRAIN, "--topology", "u_shaped", "--cuts", "2,1"], "nopeek train",
     r"--cuts must be increasing"),
    ("train-input-too-small-for-model", [*TRAIN, "--model", "vgg16"], "nopeek train",
     r"block 'pool4' leaves samples of shape \(0, 0, 512\).*too small"),
    ("train-cut-out-of-range", [*TRAIN, "--cut", "9"], "nopeek train", r"--cuts? .*between 1 and 2"),
    ("train-clients-0", [*TRAIN, "--topology", "vertical", "--clients", "0"], "nopeek train", r"--clients must be >= 1"),
    ("train-dirichlet-alpha-0", [*TRAIN, "--topology", "round_robin", "--partition", "dirichlet",
                                 "--dirichlet-alpha", "0"], "nopeek train", r"--dirichlet-alpha must be > 0"),
    # -- attack
    ("attack-out-is-file", [*ATTACK, "--out", "{root}/afile.txt"], "nopeek attack", r"--out .*afile\.txt.*file"),
    ("attack-out-unwritable", [*ATTACK, "--out", UNWRITABLE + "/a"], "nopeek attack",
     r"--out /sys/nopeek-cannot-write-here/a: cannot write"),
    ("attack-run-missing", ["attack", "--run", "{root}/norun"], "nopeek attack", r"--run .*norun"),
    ("attack-scores-already-there", [*ATTACK, "--out", "{root}/attack_done"], "nopeek attack",
     r"attack_done: holds an attack's scores \(`nopeek attack`\) already; use another --out, or --force"),
    ("attack-force-over-sweep", [*ATTACK, "--out", "{root}/sweep_badsample", "--force"], "nopeek attack",
     r"sweep_badsample: holds a sweep"),
    ("attack-truncated-checkpoint", ["attack", "--run", "{root}/run_truncated"], "nopeek attack",
     r"run_truncated/checkpoint\.msgpack"),
    ("attack-checkpoint-mismatch", ["attack", "--run", "{root}/run_mismatch"], "nopeek attack",
     r"run_mismatch/checkpoint\.msgpack: parameter .* shape"),
    ("attack-corrupt-config-json", ["attack", "--run", "{root}/run_badjson"], "nopeek attack",
     r"run_badjson/config\.json"),
    ("attack-config-json-wrong-type", ["attack", "--run", "{root}/run_badtype"], "nopeek attack",
     r"run_badtype/config\.json.*widths.*list of int"),
    ("attack-config-json-unknown-key", ["attack", "--run", "{root}/run_unknownkey"], "nopeek attack",
     r"run_unknownkey/config\.json.*bogus"),
    ("attack-no-checkpoint", ["attack", "--run", "{root}/run_nockpt"], "nopeek attack",
     r"run_nockpt/checkpoint\.msgpack.*not found"),
    ("attack-message-nope", [*ATTACK, "--message", "nope"], "nopeek attack", r"--message 'nope'"),
    ("attack-label-not-binary", [*ATTACK, "--attack", "label"], "nopeek attack", r"label attack.*binary"),
    ("attack-leak-count-1", [*ATTACK, "--leak-count", "1"], "nopeek attack", r"--leak-count must be >= 2"),
    ("attack-leak-count-too-big", [*ATTACK, "--leak-count", "100000"], "nopeek attack", r"--leak-count"),
    ("attack-probe-too-few-leaked", [*ATTACK, "--attack", "probe", "--leak-count", "6"], "nopeek attack",
     r"--leak-count.*MLP probe needs at least 11"),
    ("attack-steps-0", _set(ATTACK, "--attack-steps", "0"), "nopeek attack", r"--attack-steps must be >= 1"),
    ("attack-whiten-unknown", [*ATTACK, "--attack", "adaptive", "--whiten", "pca"], "nopeek attack",
     r"--whiten must be one of none, standard, zca"),
    ("attack-whiten-not-taken", [*ATTACK, "--whiten", "none"], "nopeek attack",
     r"--whiten: the decoder attack does not take it .*adaptive"),
    ("attack-leak-fractions-0", [*ATTACK, "--attack", "adaptive", "--leak-fractions", "0,0.5"], "nopeek attack",
     r"--leak-fractions must each be in \(0, 1\]"),
    ("attack-leak-fractions-not-taken", [*ATTACK, "--attack", "sdar", "--leak-fractions", "0.1"], "nopeek attack",
     r"--leak-fractions: the sdar attack does not take it"),
    ("sweep-whiten-not-taken", [*SWEEP, "--whiten", "none"], "nopeek sweep",
     r"--whiten: the decoder, label attacks do not take it \(attacks that do: adaptive, adaptive_alpha\)"),
    ("sweep-fsha-option-without-server", [*SWEEP, "--fsha-steps", "30"], "nopeek sweep",
     r"--fsha-steps: an FSHA option; it applies with --servers fsha"),
    ("sweep-server-unknown", [*SWEEP, "--servers", "honest"], "nopeek sweep", r"--servers must be among fsha, got honest"),
    # -- sweep
    ("sweep-out-is-file", _set(SWEEP, "--out", "{root}/afile.txt"), "nopeek sweep", r"--out .*afile\.txt.*file"),
    ("sweep-force-over-run", [*_set(SWEEP, "--out", "{root}/run"), "--force"], "nopeek sweep",
     r"--out .*run: holds a run \(`nopeek train`\), not what `nopeek sweep` writes"),
    ("sweep-force-over-own-files", [*_set(SWEEP, "--out", "{root}/foreign"), "--force"], "nopeek sweep",
     r"foreign: holds files nopeek did not write"),
    ("sweep-out-other-config", _set(SWEEP, "--out", "{root}/sweep_badsample"), "nopeek sweep",
     r"sweep_badsample.*(different sweep config|config\.json)"),
    ("sweep-config-cuts-str", [*SWEEP, "--config", "{root}/cuts_str.toml"], "nopeek sweep",
     r"cuts_str\.toml.*cuts: expected a list.*got str 'abc'"),
    ("sweep-config-epochs-float", [*SWEEP0, "--config", "{root}/epochs_float.toml"],
     "nopeek sweep", r"epochs_float\.toml.*epochs: expected int, got float 1\.5"),
    ("sweep-config-cuts-bool", [*SWEEP, "--config", "{root}/cuts_bool.toml"], "nopeek sweep",
     r"cuts_bool\.toml.*cuts: expected .*got bool True"),
    ("sweep-config-unknown-key", [*SWEEP, "--config", "{root}/unknown.toml"], "nopeek sweep",
     r"unknown\.toml.*bogus_key"),
    ("sweep-config-misspelt-key", [*SWEEP, "--config", "{root}/misspelt.toml"], "nopeek sweep",
     r"misspelt\.toml: unknown SweepConfig keys: epohcs \(did you mean epochs\?\)"),
    ("sweep-config-yaml", [*SWEEP, "--config", "{root}/study.yaml"], "nopeek sweep", r"study\.yaml: a sweep config is a \.toml or \.json"),
    ("sweep-config-invalid-toml", [*SWEEP, "--config", "{root}/broken.toml"], "nopeek sweep", r"broken\.toml"),
    ("sweep-config-alphas-inf", [*SWEEP0, "--config", "{root}/alphas_inf.toml"],
     "nopeek sweep", r"alphas"),
    ("sweep-config-corrupt-json", [*SWEEP, "--config", "{root}/broken.json"], "nopeek sweep", r"broken\.json"),
    ("sweep-config-json-alphas-str", [*SWEEP, "--config", "{root}/alphas_str.json"], "nopeek sweep",
     r"alphas_str\.json.*alphas: expected a list of number, got str"),
    ("sweep-cuts-not-increasing", [*SWEEP, "--topologies", "u_shaped", "--cuts", "2-1"], "nopeek sweep",
     r"--cuts.*2-1.*increasing"),
    ("sweep-cuts-out-of-range", [*SWEEP, "--cuts", "9"], "nopeek sweep", r"--cuts 9"),
    ("sweep-noise-scales-inf", [*SWEEP, "--noise-scales", "inf"], "nopeek sweep", r"--noise-scales must be finite"),
    ("sweep-seeds-negative", [*SWEEP, "--seeds", "0,-2"], "nopeek sweep", r"--seeds must be >= 0"),
    ("sweep-widths-length", [*SWEEP, "--model", "cnn", "--widths", "1,2"], "nopeek sweep",
     r"--widths.*cnn takes 4 widths"),
    ("sweep-batch-size-too-big", [*SWEEP, "--batch-size", "5000"], "nopeek sweep", r"--batch-size 5000 exceeds"),
    ("sweep-npz-missing", [*SWEEP, "--dataset", "npz:/missing.npz"], "nopeek sweep", r"--dataset npz:/missing\.npz"),
    ("sweep-out-unwritable", _set(SWEEP, "--out", UNWRITABLE), "nopeek sweep", r"--out /sys/nopeek-cannot-write-here"),
    # -- shards: a shard file of another config (other epochs), left in the folder with its
    # config, copied in alone, or from before rows carried their config's hash
    ("merge-shards-foreign-left", ["sweep", "--merge-shards", "{root}/shards_left"], "nopeek sweep",
     r"shards_left/shards/results-1-of-2\.csv: rows of another sweep config \(epochs 3 there, 1 here\)"),
    ("merge-shards-foreign-copied", ["sweep", "--merge-shards", "{root}/shards_copied"], "nopeek sweep",
     r"shards_copied/shards/results-1-of-2\.csv: rows of another sweep config \(epochs 3 there, 1 here; "
     r"config_hash [0-9a-f]{16}, this sweep's [0-9a-f]{16}\)"),
    ("merge-shards-no-hash", ["sweep", "--merge-shards", "{root}/shards_nohash"], "nopeek sweep",
     r"shards_nohash/shards/results-1-of-2\.csv: rows without a config_hash"),
    ("shard-foreign-left", [*_set(SWEEP, "--out", "{root}/shards_left"), "--shard", "0/2"], "nopeek sweep",
     r"shards_left/shards/results-1-of-2\.csv: rows of another sweep config \(epochs 3 there, 1 here\)"),
    ("shard-foreign-copied", [*_set(SWEEP, "--out", "{root}/shards_copied"), "--shard", "1/2"], "nopeek sweep",
     r"shards_copied/shards/results-1-of-2\.csv: rows of another sweep config"),
    ("sweep-results-of-another-config", _set(SWEEP, "--out", "{root}/results_foreign"), "nopeek sweep",
     r"results_foreign/results\.csv: rows of another sweep config \(epochs 3 there, 1 here; config_hash"),
    # -- figures
    ("figures-no-results", ["figures", "{root}/norun"], "nopeek figures", r"norun/results\.csv: not found"),
    ("figures-missing-columns", ["figures", "{root}/csv_missing"], "nopeek figures",
     r"csv_missing/results\.csv: missing column\(s\) accuracy"),
    ("figures-foreign-csv", ["figures", "{root}/csv_foreign"], "nopeek figures",
     r"csv_foreign/results\.csv: missing column"),
    ("figures-binary-csv", ["figures", "{root}/csv_binary"], "nopeek figures", r"csv_binary/results\.csv"),
    ("figures-truncated-row", ["figures", "{root}/csv_truncated"], "nopeek figures",
     r"csv_truncated/results\.csv: no complete rows"),
    ("figures-corrupt-sample", ["figures", "{root}/sweep_badsample"], "nopeek figures",
     r"sweep_badsample/samples/b\.npy"),
    ("figures-sample-wrong-shape", ["figures", "{root}/sweep_badshape"], "nopeek figures",
     r"sweep_badshape/samples/b\.npy.*shape"),
    ("figures-compare-out-not-png", ["figures", "{root}/sweep_badsample", "{root}/sweep_badshape", "--out",
                                     "{root}/afile.txt"], "nopeek figures", r"afile\.txt: .*ending in \.png"),
    ("figures-pickled-sample", ["figures", "{root}/sweep_pickled"], "nopeek figures", r"sweep_pickled/samples/a\.npy"),
    ("figures-compare-twice", ["figures", "{root}/sweep_badsample", "{root}/sweep_badsample/", "--out",
                               "{root}/new.png"], "nopeek figures", r"sweep_badsample/: given twice"),
    ("figures-compare-out-unwritable", ["figures", "{root}/sweep_badsample", "{root}/sweep_badshape", "--out",
                                        UNWRITABLE + ".png"], "nopeek figures",
     r"--out /sys/nopeek-cannot-write-here\.png: cannot write there"),
    ("figures-compare-out-exists", ["figures", "{root}/sweep_badsample", "{root}/sweep_badshape", "--out",
                                    "{root}/picture.png"], "nopeek figures",
     r"picture\.png: exists; use another --out, or --force to replace it"),
    # -- audit
    ("audit-missing-file", ["audit", "--pairs", "{root}/nothere.npz", "--targets", "{root}/targets.npz",
                            "--out", "{root}/audit_out"], "nopeek audit", r"nothere\.npz"),
    ("audit-out-is-file", [*AUDIT, "--out", "{root}/afile.txt"], "nopeek audit", r"afile\.txt.*not a folder"),
    ("audit-not-npz", ["audit", "--pairs", "{root}/afile.txt", "--targets", "{root}/targets.npz",
                       "--out", "{root}/audit_out"], "nopeek audit", r"afile\.txt.*npz"),
    ("audit-accuracy-out-of-range", [*AUDIT, "--out", "{root}/audit_out", "--accuracy", "2"], "nopeek audit",
     r"--accuracy"),
    ("audit-targets-is-folder", ["audit", "--pairs", "{root}/pairs.npz", "--targets", "{root}/afolder.npz",
                                 "--out", "{root}/audit_out"], "nopeek audit", r"afolder\.npz: is a folder, not an \.npz file"),
    ("audit-pairs-raw-pickle", ["audit", "--pairs", "{root}/rawpickle.npz", "--targets", "{root}/targets.npz",
                                "--out", "{root}/audit_out"], "nopeek audit",
     r"rawpickle\.npz: array 'x' is not an \.npy array"),
    ("audit-out-unwritable", [*AUDIT, "--out", UNWRITABLE], "nopeek audit", r"--out /sys/nopeek-cannot-write-here: cannot"),
    ("audit-force-over-run", [*AUDIT, "--out", "{root}/run", "--force"], "nopeek audit",
     r"run: holds a run \(`nopeek train`\), not what `nopeek audit` writes"),
    # -- report
    ("report-truncated-scores", ["report", "{root}/scores_truncated"], "nopeek report",
     r"scores_truncated/scores\.json: not valid JSON .*line 1"),
    ("report-unterminated-scores", ["report", "{root}/scores_unterminated"], "nopeek report",
     r"scores_unterminated/scores\.json: not valid JSON \(Unterminated string starting at line 1, column 12\)"),
    ("report-scores-not-an-object", ["report", "{root}/scores_list"], "nopeek report",
     r"scores_list/scores\.json: not the object nopeek writes"),
    ("report-foreign", ["report", "{root}/foreign"], "nopeek report", r"foreign: .*not a folder nopeek wrote"),
    ("report-foreign-results", ["report", "{root}/csv_foreign"], "nopeek report",
     r"csv_foreign/results\.csv: missing column\(s\) topology, .*; is this a `nopeek sweep` results\.csv\?"),
    ("report-binary-results", ["report", "{root}/csv_binary"], "nopeek report", r"csv_binary/results\.csv: not text"),
    ("report-truncated-results", ["report", "{root}/csv_truncated"], "nopeek report",
     r"csv_truncated/results\.csv: no complete rows to report"),
    ("report-garbage-cost", ["report", "{root}/cost_garbage"], "nopeek report",
     r"cost_garbage/cost\.csv: missing column\(s\) method, .*; is this a `nopeek cost` cost\.csv\?"),
    ("report-foreign-metrics", ["report", "{root}/metrics_foreign"], "nopeek report",
     r"metrics_foreign/metrics\.json: not the object nopeek writes"),
    ("report-binary-metrics", ["report", "{root}/metrics_binary"], "nopeek report",
     r"metrics_binary/metrics\.json: not JSON text \(invalid start byte at byte 0\)"),
    ("report-config-not-an-object", ["report", "{root}/run_config_list"], "nopeek report",
     r"run_config_list/config\.json: not the object nopeek writes"),
    # -- cost
    ("cost-out-is-sweep", ["cost", "--out", "{root}/sweep_badsample"], "nopeek cost",
     r"sweep_badsample: holds a sweep .*not what `nopeek cost` writes"),
    ("cost-out-is-file", ["cost", "--out", "{root}/afile.txt"], "nopeek cost", r"--out .*afile\.txt: is a file"),
    ("cost-out-unwritable", ["cost", "--out", UNWRITABLE], "nopeek cost", r"--out /sys/nopeek-cannot-write-here: cannot"),
    ("cost-fewer-samples-than-clients", ["cost", "--client-counts", "10", "--dataset-size", "5"], "nopeek cost",
     r"--dataset-size 5: fewer samples than --client-counts 10"),
]


def test_figures_and_report_name_the_rows_they_leave_out(tmp_path, capsys):
    """A row whose accuracy is not a number, and one cut short, are left out of the figures
    and the report page, and both say how many."""
    from nopeek.cli import main

    folder = str(tmp_path / "sweep")
    _write_results(folder, {0.0: "a.npy", 1.0: "b.npy", 2.0: "c.npy"})
    with open(os.path.join(folder, "results.csv")) as f:
        lines = f.read().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("accuracy")] = "abc"
    with open(os.path.join(folder, "results.csv"), "w") as f:
        f.write("\n".join([lines[0], ",".join(cells), lines[2], lines[3][:20]]) + "\n")
    assert main(["figures", folder]) == 0
    assert "results.csv: 2 row(s) cut short or with a value that is not a number, left out" in capsys.readouterr().err
    assert main(["report", folder]) == 0
    assert "; 1 row(s) cut short or incomplete left out" in open(os.path.join(folder, "report.html")).read()
    os.rename(os.path.join(folder, "samples"), os.path.join(tmp_path, "moved"))  # the grids' samples gone
    assert main(["figures", folder]) == 0
    assert f"{os.path.join(folder, 'samples')}: not found; the reconstruction grids are not drawn" in capsys.readouterr().err


def test_the_table_is_big_and_covers_every_subcommand():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    covered = {argv[0] for _, argv, _, _ in CASES}
    assert {"dcor", "train", "attack", "sweep", "figures", "audit", "cost", "report"} <= covered


def _check(root, before, code, stdout, stderr, prog, pattern):
    lines = stderr.splitlines()
    assert "Traceback" not in stderr + stdout, stderr
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    after = _snapshot(root)
    assert after == before, f"left behind or changed: {sorted(set(after.items()) ^ set(before.items()))}"


@pytest.mark.parametrize("argv,prog,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(root, argv, prog, pattern, capsys, monkeypatch):
    from nopeek.cli import main

    argv = [a.format(root=root) for a in argv]
    monkeypatch.chdir(root)
    monkeypatch.delenv("NOPEEK_DEBUG", raising=False)
    capsys.readouterr()
    before = _snapshot(root)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    _check(root, before, code, out.out, out.err, prog, pattern)


SHELL_CASES = {c[0] for c in CASES[::10]}  # every tenth case also as its own process


@pytest.mark.parametrize("argv,prog,pattern", [c[1:] for c in CASES if c[0] in SHELL_CASES],
                         ids=[c[0] for c in CASES if c[0] in SHELL_CASES])
def test_bad_input_from_the_shell(root, argv, prog, pattern):
    argv = [a.format(root=root) for a in argv]
    before = _snapshot(root)
    proc = subprocess.run([sys.executable, "-m", "nopeek.cli", *argv], capture_output=True, text=True,
                          cwd=root, env=_env(), timeout=300)
    _check(root, before, proc.returncode, proc.stdout, proc.stderr, prog, pattern)


def test_failed_sweep_start_leaves_no_folder_and_the_corrected_command_runs(tmp_path, capsys):
    """A sweep validates its whole config (types included) before it writes anything, so a
    failed start never locks its --out against the corrected command."""
    from nopeek.cli import main

    out = tmp_path / "sweep"
    bad = tmp_path / "bad.toml"
    bad.write_text('epochs = 1\ncuts = ["1", "x"]\n')
    args = ["sweep", "--preset", "quick", "--dataset", "digits", "--limit", "200", "--alphas", "0", "--noise-scales", "",
            "--attack-steps", "10", "--quiet", "--out", str(out)]
    for extra in (["--config", str(bad)], ["--epochs", "1", "--noise-scales", "-1"], ["--epochs", "1", "--cuts", "7"],
                  ["--epochs", "1", "--batch-size", "5000"], ["--epochs", "1", "--aux-classes", "42"]):
        with pytest.raises(SystemExit) as exc:
            main([*args, *extra])
        assert exc.value.code == 2
        assert not out.exists() and os.listdir(tmp_path) == ["bad.toml"]
    bad.write_text('epochs = 1\ncuts = ["1"]\n')
    assert main([*args, "--config", str(bad)]) == 0
    assert (out / "results.csv").exists() and (out / "config.json").exists()


def test_a_truncated_results_row_is_rerun_not_an_error(tmp_path):
    """A results.csv row cut short counts as not done (its cell reruns), so it is no error:
    `figures` draws the complete rows and ignores the broken one."""
    from nopeek.cli import main
    from nopeek.sweeps import read_rows

    _write_results(str(tmp_path), {0.0: "", 1.0: ""})
    path = tmp_path / "results.csv"
    text = path.read_text()
    path.write_text(text[: len(text) - 20])
    assert len(read_rows(str(path))) == 1 and len(read_rows(str(path), valid_only=False)) == 2
    assert main(["figures", str(tmp_path)]) == 0
    assert (tmp_path / "figures" / "tradeoff.png").exists()


def test_the_console_entry_exits_as_python_would_less_the_teardown():
    """`nopeek` / `python -m nopeek.cli` end through `exit_now`: threads still running (a thread
    pool's too) are waited for, the atexit functions run after them, what was printed reaches
    the pipe, the status is argparse's, and the interpreter's teardown (here an object's
    `__del__`) is skipped, unless NOPEEK_FULL_EXIT=1."""
    code = (
        "import atexit, sys, threading, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "class Kept:\n"
        "    def __del__(self): print('teardown', flush=True)\n"
        "kept = Kept()\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()\n"
        "pool = ThreadPoolExecutor(1)\n"
        "pool.submit(lambda: (time.sleep(0.2), print('pool done')))\n"
        "sys.argv = ['nopeek', '--version']\n"
        "from nopeek.cli import run\n"
        "run()\n"
        "print('not reached')\n"
    )
    from nopeek import __version__

    def ran(source, **env):
        proc = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                              env={**_env(), **env}, timeout=60)
        return proc.returncode, proc.stdout.splitlines(), proc.stderr

    status, lines, err = ran(code)  # the threads' lines and the version's in any order; atexit's last
    assert status == 0, err
    assert sorted(lines[:-1]) == sorted([f"nopeek {__version__}", "pool done", "thread done"]), lines
    assert lines[-1] == "atexit ran", lines
    status, lines, err = ran(code.replace("'--version'", "'--no-such-option'"))
    assert status == 2 and "--no-such-option" in err, err
    assert sorted(lines) == ["atexit ran", "pool done", "thread done"] and lines[-1] == "atexit ran", lines
    status, lines, err = ran(code, NOPEEK_FULL_EXIT="1")  # sys.exit: the teardown runs, after atexit
    assert status == 0 and lines[-2:] == ["atexit ran", "teardown"], lines
