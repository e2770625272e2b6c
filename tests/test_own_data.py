"""One's own data and one's own model: `npz:PATH`, `folder:PATH`, and the registries.

`--dataset npz:PATH` and `--dataset folder:PATH` work in `train`, `sweep` and `attack`
with the bundled sets' scaling rules; `nopeek.register_dataset` and `nopeek.register_model`
make a data set and a model available to the CLI and the sweep in the same process. The
registration example is the README's ("Your own data and model"), kept true here.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nopeek import data
from nopeek.cli import main
from nopeek.sweeps import read_rows

TINY = ["--epochs", "1", "--quiet"]
SWEEP_TINY = ["--preset", "quick", "--epochs", "1", "--alphas", "0,1", "--noise-scales", "", "--cuts", "1",
              "--attack-steps", "10", "--quiet"]


def _digits_uint8(n=240):
    """The first n scikit-learn digits as uint8 images (n, 8, 8) in 0..255, and their labels."""
    d = load_digits()
    return (d.images[:n] * 16).clip(0, 255).astype(np.uint8), d.target[:n]


@pytest.fixture(scope="module")
def npz_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npz")
    x, y = _digits_uint8()
    split = str(folder / "split.npz")
    np.savez(split, x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:])
    whole = str(folder / "whole.npz")
    np.savez(whole, x=x, y=y)
    return {"split": split, "whole": whole, "x": x, "y": y}


# ---- npz: the two layouts and the scaling rules ----------------------------------------


def test_npz_split_layout_scales_uint8_images(npz_files):
    ds = data.load("npz:" + npz_files["split"])
    x = npz_files["x"]
    assert ds.x_train.shape == (180, 8, 8, 1) and ds.x_test.shape == (60, 8, 8, 1)  # a channel axis added
    assert ds.x_train.dtype == np.float32 and ds.num_classes == 10 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train[..., 0], x[:180] / 255.0, rtol=1e-6)  # uint8 / 255
    np.testing.assert_array_equal(ds.y_test, npz_files["y"][180:])
    assert data.sample_shape("npz:" + npz_files["split"]) == ((8, 8, 1), 10)


def test_npz_xy_layout_is_split_with_the_split_seed(npz_files):
    x, y = npz_files["x"], npz_files["y"]
    for seed in (0, 3):
        ds = data.load("npz:" + npz_files["whole"], seed=seed)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
        np.testing.assert_allclose(ds.x_test[..., 0], x_te / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(ds.y_train, y_tr)
    assert not np.array_equal(data.load("npz:" + npz_files["whole"], seed=0).y_test,
                              data.load("npz:" + npz_files["whole"], seed=3).y_test)


def test_npz_labels_are_mapped_to_0_to_c_minus_1(tmp_path, rng):
    path = str(tmp_path / "labels.npz")
    np.savez(path, x=rng.random((20, 4, 4)).astype(np.float32), y=np.repeat([3, 7], 10))
    ds = data.load("npz:" + path)
    assert ds.num_classes == 2 and set(np.unique(ds.y_train)) == {0, 1}
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1  # float images in [0, 1] are kept as they are


def test_npz_tabular_rows_are_min_max_scaled_on_the_training_split(tmp_path, rng):
    x_train = rng.normal(50.0, 20.0, (40, 5))
    x_test = rng.normal(50.0, 40.0, (12, 5))  # wider: some test values fall outside the train range
    path = str(tmp_path / "tab.npz")
    np.savez(path, x_train=x_train, y_train=np.arange(40) % 2, x_test=x_test, y_test=np.arange(12) % 2)
    ds = data.load("npz:" + path)
    lo, hi = x_train.min(0), x_train.max(0)
    np.testing.assert_allclose(ds.x_train.min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(ds.x_train.max(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(ds.x_test, np.clip((x_test - lo) / (hi - lo), 0, 1), rtol=1e-5, atol=1e-6)
    assert not ds.is_image and ds.input_shape == (5,)


def test_npz_float_images_outside_0_1_are_refused_with_one_line(tmp_path, rng, capsys):
    path = str(tmp_path / "bright.npz")
    np.savez(path, x=rng.random((20, 8, 8)) * 255.0, y=np.arange(20) % 2)
    with pytest.raises(data.DataError, match=r"bright\.npz: x images must be uint8 \(0\.\.255\) or floats in \[0, 1\]"):
        data.load("npz:" + path)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "npz:" + path, *TINY, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nopeek train: error: ") and "bright.npz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arrays,message", [
    (dict(x=np.zeros((6, 2, 2, 2, 2)), y=np.arange(6) % 2), "must be .n, d. rows or .n, H, W"),
    (dict(x=np.zeros((6, 3)), y=np.linspace(0, 1, 6)), "labels must be a 1-D integer array"),
    (dict(x=np.zeros((6, 3)), y=np.zeros(6, int)), "1 class"),
    (dict(x=np.array([["a", "b"]] * 6), y=np.arange(6) % 2), "real numeric array"),
    (dict(x_train=np.zeros((6, 3)), y_train=np.arange(6) % 2, x_test=np.zeros((4, 2)), y_test=np.arange(4) % 2),
     "x_train samples .3,. and x_test samples .2,. differ"),
])
def test_npz_shape_and_dtype_checks(tmp_path, arrays, message):
    path = str(tmp_path / "bad.npz")
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=message):
        data.load("npz:" + path)


# ---- npz in train, attack and sweep -------------------------------------------------------


def test_npz_in_train_attack_and_sweep(npz_files, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    dataset = "npz:" + npz_files["split"]
    # trained with the path as typed, relative to where it ran: the run records it absolute,
    # so the attack finds the data from any folder
    monkeypatch.chdir(os.path.dirname(npz_files["split"]))
    from nopeek.training import _loop

    original, builds = _loop.build, []
    monkeypatch.setattr(_loop, "build", lambda *args: builds.append(args) or original(*args))
    assert main(["train", "--dataset", "npz:" + os.path.basename(npz_files["split"]), *TINY, "--out", str(run)]) == 0
    assert len(builds) == 1  # built to check the options before the data is loaded, and trained with that
    monkeypatch.setattr(_loop, "build", original)
    assert json.loads((run / "config.json").read_text())["dataset"] == dataset
    assert json.loads((run / "metrics.json").read_text())["n_test"] == 60
    monkeypatch.chdir(tmp_path)
    assert main(["attack", "--run", str(run), "--attack", "decoder", "--attack-steps", "10"]) == 0
    scores = json.loads((run / "attacks" / "decoder" / "scores.json").read_text())
    assert scores["n_targets"] == 60 and np.isfinite(scores["ssim"])
    assert json.loads((run / "metrics.json").read_text())["data_digest"] == data.data_digest(data.load(dataset))

    out = tmp_path / "sweep"
    assert main(["sweep", "--dataset", "npz:" + npz_files["whole"], *SWEEP_TINY, "--out", str(out)]) == 0
    rows = read_rows(str(out / "results.csv"))
    assert len(rows) == 2 and {r["dataset"] for r in rows} == {"npz:" + npz_files["whole"]}
    assert np.load(out / "samples" / "originals.npy").shape == (16, 8, 8, 1)


# ---- folder: one sub-folder of images per class -------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    x, y = _digits_uint8(300)
    pictures = {}
    for label in (0, 1, 7):
        os.makedirs(root / f"class_{label}")
        for i, img in enumerate(x[y == label][:20]):
            Image.fromarray(img, mode="L").save(root / f"class_{label}" / f"{i:02d}.png")
            pictures[(label, i)] = img
    (root / "notes.txt").write_text("files beside the class folders are ignored\n")
    return root, pictures


def test_folder_loads_grayscale_pngs(image_folder):
    root, pictures = image_folder
    ds = data.load(f"folder:{root}")
    assert ds.num_classes == 3 and ds.input_shape == (8, 8, 1)
    assert len(ds.x_train) + len(ds.x_test) == 60 and len(ds.x_test) == 12
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    every = {img.tobytes() for img in pictures.values()}
    assert all(np.round(s[..., 0] * 255).astype(np.uint8).tobytes() in every for s in ds.x_test)  # pixels / 255
    np.testing.assert_array_equal(np.bincount(ds.y_test), [4, 4, 4])  # stratified by class folder


def test_folder_in_train_and_sweep(image_folder, tmp_path):
    root, _ = image_folder
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"folder:{root}", "--model", "cnn", "--widths", "4,4,8,8", "--batch-size", "16",
                 *TINY, "--out", str(run)]) == 0
    assert main(["attack", "--run", str(run), "--attack", "probe", "--leak-count", "20"]) == 0
    out = tmp_path / "sweep"
    assert main(["sweep", "--dataset", f"folder:{root}", *SWEEP_TINY, "--batch-size", "16", "--out", str(out)]) == 0
    assert (out / "figures" / "tradeoff.png").exists()


def test_folder_errors_name_the_file(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        for i in range(2):
            Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / cls / f"{i}.png")
    Image.fromarray(np.zeros((6, 6), np.uint8), mode="L").save(tmp_path / "b" / "2.png")
    with pytest.raises(data.DataError, match=r"b/2\.png: image of shape \(6, 6, 1\)"):
        data.load(f"folder:{tmp_path}")
    (tmp_path / "b" / "2.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match=r"b/2\.png: cannot read the image"):
        data.load(f"folder:{tmp_path}")


# ---- folder: one rule per image mode (data.IMAGE_MODES) ----------------------------------------


def _reopened(tmp_path, image, name="im.png"):
    """`image` saved and opened again, decoded: what the loader sees."""
    from PIL import Image

    path = tmp_path / name
    image.save(path)
    decoded = Image.open(path)
    decoded.load()
    return decoded, str(path)


def test_16_bit_images_are_read_at_their_full_range(tmp_path, rng):
    """A 16-bit PNG (values 256..65535) is divided by 65535, not clipped to 8 bits (which
    made every pixel 1.0 and the whole data set constant)."""
    from PIL import Image

    raws = {}
    for cls in ("a", "b"):
        os.makedirs(tmp_path / "set" / cls)
        for i in range(4):
            raw = rng.integers(256, 65536, size=(8, 8)).astype(np.uint16)
            Image.fromarray(raw).save(tmp_path / "set" / cls / f"{i}.png")
            raws[(cls, i)] = raw
    image, _ = _reopened(tmp_path, Image.fromarray(raws[("a", 0)]))
    assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(data.image_array(image, "im.png"), raws[("a", 0)][..., None].astype(np.float32) / 65535)
    ds = data.load(f"folder:{tmp_path / 'set'}")
    every = {(raw.astype(np.float32) / 65535).tobytes() for raw in raws.values()}
    assert all(sample[..., 0].tobytes() in every for sample in np.concatenate([ds.x_train, ds.x_test]))
    assert ds.x_train.max() > 0.9 and ds.x_train.min() < 0.1


def test_each_image_mode_has_its_rule(tmp_path, rng):
    from PIL import Image

    rgb = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    alpha = (rng.random((8, 8)) * 255).astype(np.uint8)
    grey = (rng.random((8, 8)) * 255).astype(np.uint8)

    bits, _ = _reopened(tmp_path, Image.fromarray(rng.random((8, 8)) > 0.5), "bits.png")  # 1-bit: 0 or 1
    assert bits.mode == "1" and set(np.unique(data.image_array(bits, "bits.png"))) == {0.0, 1.0}

    palette, _ = _reopened(tmp_path, Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
                           "palette.png")  # the palette's colours, three channels
    np.testing.assert_array_equal(data.image_array(palette, "palette.png"),
                                  np.asarray(palette.convert("RGB"), np.float32) / 255)
    grey_palette, _ = _reopened(tmp_path, Image.fromarray(grey).convert("P"), "grey.gif")  # grey: one channel
    assert grey_palette.mode == "P"
    np.testing.assert_array_equal(data.image_array(grey_palette, "grey.gif"),
                                  np.asarray(grey_palette.convert("L"), np.float32)[..., None] / 255)

    rgba, _ = _reopened(tmp_path, Image.fromarray(np.dstack([rgb, alpha])), "rgba.png")  # over black
    want = rgb.astype(np.float32) / 255 * (alpha.astype(np.float32)[..., None] / 255)
    np.testing.assert_allclose(data.image_array(rgba, "rgba.png"), want, atol=1e-6)
    la, _ = _reopened(tmp_path, Image.fromarray(np.dstack([grey, alpha])).convert("LA"), "la.png")
    assert la.mode == "LA"
    np.testing.assert_allclose(data.image_array(la, "la.png")[..., 0],
                               grey.astype(np.float32) / 255 * alpha.astype(np.float32) / 255, atol=1e-6)

    ints = Image.fromarray(rng.integers(0, 65536, (8, 8)).astype(np.int32))  # "I": 16-bit values in 32 bits
    np.testing.assert_array_equal(data.image_array(ints, "i.png")[..., 0], np.asarray(ints, np.float32) / 65535)
    with pytest.raises(data.DataError, match=r"big\.tif: 32-bit integer image with values in \[0, 70000\]"):
        data.image_array(Image.fromarray(np.array([[0, 70000]], np.int32)), "big.tif")
    floats = Image.fromarray(rng.random((8, 8)).astype(np.float32))
    np.testing.assert_array_equal(data.image_array(floats, "f.tif")[..., 0], np.asarray(floats))
    with pytest.raises(data.DataError, match=r"f2\.tif: floating-point image with values in \[0, 3\]"):
        data.image_array(Image.fromarray(np.array([[0.0, 3.0]], np.float32)), "f2.tif")
    assert set(data.IMAGE_MODES) >= {"1", "L", "I;16", "I", "F", "LA", "P", "RGB", "RGBA"}  # each one documented


def test_links_inside_a_folder_data_set_are_read_and_outside_refused(tmp_path, rng):
    from PIL import Image

    for cls in ("a", "b"):
        os.makedirs(tmp_path / "set" / cls)
        for i in range(3):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "set" / cls / f"{i}.png")
    os.symlink(tmp_path / "set" / "a" / "0.png", tmp_path / "set" / "b" / "3.png")  # inside: read
    ds = data.load(f"folder:{tmp_path / 'set'}")
    assert len(ds.x_train) + len(ds.x_test) == 7
    os.makedirs(tmp_path / "elsewhere")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "elsewhere" / "secret.png")
    os.symlink(tmp_path / "elsewhere" / "secret.png", tmp_path / "set" / "b" / "4.png")
    with pytest.raises(data.DataError, match=r"set/b/4\.png: the image links to .*elsewhere/secret\.png, outside"):
        data.load(f"folder:{tmp_path / 'set'}")


def test_a_constant_data_set_or_a_class_missing_from_training_is_refused(tmp_path, rng):
    """From any loader: checked in `data.load` after the split and --limit."""
    data.register_dataset("flat_test_set", lambda seed=0, data_dir=None: data.Dataset(
        "flat_test_set", rng.random((20, 4, 4, 1)).astype(np.float32), np.arange(20) % 2,
        np.full((6, 4, 4, 1), 0.5, np.float32), np.arange(6) % 2, 2))
    data.register_dataset("rows_all_alike", lambda seed=0, data_dir=None: data.Dataset(
        "rows_all_alike", np.ones((20, 3), np.float32), np.arange(20) % 2, rng.random((6, 3)).astype(np.float32),
        np.arange(6) % 2, 2))
    try:
        with pytest.raises(data.DataError, match=r"flat_test_set: every one of its 6 held-out images is constant"):
            data.load("flat_test_set")
        with pytest.raises(data.DataError, match=r"rows_all_alike: its 20 training rows are all the same"):
            data.load("rows_all_alike")
    finally:
        del data.DATASETS["flat_test_set"], data.DATASETS["rows_all_alike"]


# ---- registering a data set and a model from Python (the README's example) ------------------


def readme_example() -> dict:
    """Run the guide's registration block (docs/guide/own-data.md) as it stands there."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "guide",
                           "own-data.md")) as f:
        readme = f.read()
    section = readme[readme.index("# Your own data and model"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[: code.index("```")]
    assert "nopeek.register_model(" in code and "nopeek.register_dataset(" in code
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "docs/guide/own-data.md", "exec"), namespace)
    return namespace


@pytest.fixture
def registered():
    from nopeek.protocol import MODELS

    readme_example()
    yield
    data.DATASETS.pop("blobs", None)
    MODELS.pop("tanh_mlp", None)


def test_registered_data_and_model_in_train_attack_and_sweep(registered, tmp_path, capsys):
    from nopeek.protocol import build_model, build_segment, model_blocks

    assert main(["train", "--list-cuts", "--dataset", "blobs", "--model", "tanh_mlp"]) == 0
    listing = capsys.readouterr().out
    assert "embed" in listing and "hidden" in listing and "(32,)" in listing

    run = tmp_path / "run"
    assert main(["train", "--dataset", "blobs", "--model", "tanh_mlp", "--alpha", "0.5", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cuts"] == [1] and metrics["n_test"] == 150 and 0 <= metrics["test_accuracy"] <= 1
    assert main(["attack", "--run", str(run), "--attack", "probe"]) == 0

    out = tmp_path / "sweep"
    assert main(["sweep", "--preset", "quick", "--dataset", "blobs", "--model", "tanh_mlp", "--widths", "16,8",
                 "--cuts", "1,2", "--epochs", "1", "--alphas", "0,1", "--noise-scales", "", "--attack-steps", "10",
                 "--quiet", "--out", str(out)]) == 0
    rows = read_rows(str(out / "results.csv"))
    assert {(r["model"], r["cut"], r["cut_block"]) for r in rows} == {("tanh_mlp", "1", "embed"), ("tanh_mlp", "2", "hidden")}

    # A segment built alone has the parameters it has inside the whole model.
    blocks = model_blocks("tanh_mlp", 3)
    whole = build_model("tanh_mlp", (16,), 3, seed=5)
    server, shape = build_segment(blocks, (32,), 1, 3, seed=5)
    assert shape == (3,)
    np.testing.assert_array_equal(whole.blocks[2].kernel[...], server.blocks[1].kernel[...])


def test_registered_model_with_wrong_widths_or_logits_is_refused(registered, tmp_path, capsys):
    from nopeek.protocol import BlockSpec, Dense
    from nopeek.protocol import register_model as register

    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "blobs", "--model", "tanh_mlp", "--widths", "8", *TINY, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "nopeek train: error: --widths: tanh_mlp takes 2 widths, got 1\n"

    register("no_head", lambda num_classes, widths=(): [BlockSpec("a", lambda s, rngs: Dense(s[0], 4, rngs=rngs)),
                                                        BlockSpec("b", lambda s, rngs: Dense(4, 5, rngs=rngs))])
    try:
        with pytest.raises(SystemExit) as exc:
            main(["train", "--dataset", "blobs", "--model", "no_head", *TINY, "--out", str(tmp_path / "run")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "model 'no_head' ends in shape (5,), not logits (3,)" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "run").exists()
    finally:
        from nopeek.protocol import MODELS

        MODELS.pop("no_head", None)


def test_an_attack_refuses_data_changed_since_training(npz_files, tmp_path, capsys):
    """The run records its data's digest: the same file attacks, a file replaced since is
    refused (its scores would be of other samples), naming the data set."""
    import shutil

    mine = tmp_path / "mine.npz"
    shutil.copy(npz_files["split"], mine)
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"npz:{mine}", *TINY, "--out", str(run)]) == 0
    assert main(["attack", "--run", str(run), "--attack", "probe", "--leak-count", "20", "--quiet"]) == 0
    x, y = npz_files["x"].copy(), npz_files["y"]
    x[185] = 255 - x[185]  # one held-out image changed
    np.savez(mine, x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--run", str(run), "--attack", "probe", "--leak-count", "20", "--out", str(tmp_path / "a2")])
    assert exc.value.code == 2 and not (tmp_path / "a2").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"npz:{mine}: not the data {run} was trained on" in err
