"""The data section of a config: which data set, and how it is split."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from nopeek.core import Section, raise_first_failure
from nopeek.data._datasets import check_dataset_name


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Which data, and how it is split into training and held-out sets."""

    dataset: str = field(default="digits", metadata={"help": "data set: a bundled name, npz:PATH or folder:PATH"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with mnist/fashion_mnist/cifar10 files"})
    limit: int | None = field(default=None, metadata={"help": "use at most this many training samples"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/test split (and of round robin's shards)"})

    def validate(self) -> "DataConfig":
        check_dataset_name(self.dataset)
        raise_first_failure([(self.limit is None or self.limit >= 2, f"--limit must be >= 2, got {self.limit}"),
                             (self.split_seed >= 0, f"--split-seed must be >= 0, got {self.split_seed}")])
        return self
