"""Data sets, offline: bundled ones from packages, the papers' full ones from local files,
one's own as .npz arrays or folders of images; a registry (`register_dataset`)."""

from nopeek.data._config import DataConfig
from nopeek.data._datasets import (
    DATASETS, DataSpec, Dataset, check_content, check_dataset_name, data_digest, load, load_breast_cancer,
    load_cifar10, load_config, load_digits, load_fashion_mnist, load_folder, load_mnist, load_mnist5k, load_npz,
    read_cifar10_batch, read_idx, sample_shape, split_train_test, split_validation, with_absolute_path,
)
from nopeek.data._datasets import register as register_dataset
from nopeek.data._images import IMAGE_MODES, IMAGE_SUFFIXES, image_array
from nopeek.errors import DataError

__all__ = [
    "DATASETS", "DataConfig", "DataError", "DataSpec", "Dataset", "IMAGE_MODES", "IMAGE_SUFFIXES", "check_content",
    "check_dataset_name", "data_digest", "image_array", "load", "load_breast_cancer", "load_cifar10", "load_config",
    "load_digits", "load_fashion_mnist", "load_folder", "load_mnist", "load_mnist5k", "load_npz",
    "read_cifar10_batch", "read_idx", "register_dataset", "sample_shape", "split_train_test", "split_validation",
    "with_absolute_path",
]
