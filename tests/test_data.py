"""Offline data: bundled sets, IDX and CIFAR-10 binary readers, clear errors."""

import gzip
import os

import numpy as np
import pytest

from nopeek import data


@pytest.mark.parametrize("name,shape,classes", [
    ("digits", (8, 8, 1), 10), ("mnist5k", (28, 28, 1), 10), ("breast_cancer", (30,), 2),
])
def test_bundled_sets(name, shape, classes):
    ds = data.load(name, seed=0)
    assert ds.input_shape == shape and ds.num_classes == classes
    assert data.sample_shape(name) == (shape, classes)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_train)) == set(range(classes))
    again = data.load(name, seed=0)
    np.testing.assert_array_equal(ds.x_test, again.x_test)  # deterministic
    other = data.load(name, seed=1)
    assert not np.array_equal(ds.y_test, other.y_test)  # and seeded


def test_limit_keeps_a_proportional_test_share():
    ds = data.load("digits", limit=200)
    assert len(ds.x_train) == 200 and 50 <= len(ds.x_test) <= 80


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_mnist_and_fashion(tmp_path, rng, compress):
    suffix = ".gz" if compress else ""
    images = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
    for prefix, img in images.items():
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", img, compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(len(img)) % 10, compress)
    for name in ("mnist", "fashion_mnist"):
        ds = data.load(name, data_dir=str(tmp_path))
        assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
        np.testing.assert_allclose(ds.x_train[..., 0] * 255, images["train"], atol=1e-4)
        np.testing.assert_array_equal(ds.y_test, np.arange(5) % 10)


def test_idx_errors_name_the_file(tmp_path, rng):
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.*not found"):
        data.load("mnist", data_dir=str(tmp_path))
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78garbage")
    with pytest.raises(data.DataError, match=f"{bad}: not an IDX file"):
        data.read_idx(str(bad))
    _write_idx(bad, rng.integers(0, 256, (3, 28, 28)), False)
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(data.DataError, match="announces shape"):
        data.read_idx(str(bad))
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(data.DataError, match="corrupt gzip"):
        data.read_idx(str(gz))
    with pytest.raises(data.DataError, match="--data-dir"):
        data.load("mnist")


def test_cifar10_binary(tmp_path, rng):
    def batch(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        return labels, pixels, np.concatenate([labels[:, None], pixels.reshape(n, -1)], 1).tobytes()

    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}.bin").write_bytes(batch(4)[2])
    labels, pixels, raw = batch(3)
    (tmp_path / "test_batch.bin").write_bytes(raw)
    ds = data.load("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_test, labels)
    np.testing.assert_allclose(ds.x_test[1, 5, 7, 2] * 255, pixels[1, 2, 5, 7], atol=1e-3)  # CHW -> HWC
    (tmp_path / "test_batch.bin").write_bytes(raw[:-1])
    with pytest.raises(data.DataError, match="test_batch.bin: .* not a whole number"):
        data.load("cifar10", data_dir=str(tmp_path))
    os.remove(tmp_path / "data_batch_3.bin")
    with pytest.raises(data.DataError, match="data_batch_3.bin: cannot read"):
        data.load("cifar10", data_dir=str(tmp_path))


def test_non_finite_data_refused():
    x = np.ones((20, 3))
    x[4, 1] = np.nan
    with pytest.raises(data.DataError, match="NaN or Inf"):
        data.split_train_test("toy", x, np.arange(20) % 2, 0.25, 0, 2)


def test_unknown_dataset():
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.load("imagenet")
