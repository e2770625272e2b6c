"""The data section of a config: which data set, and how it is split."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from nopeek.core import Section, finite, raise_first_failure
from nopeek.data._datasets import check_dataset_name


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Which data, and how it is split into training and held-out sets."""

    dataset: str = field(default="digits", metadata={"help": "data set: a bundled name, npz:PATH or folder:PATH"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with mnist/fashion_mnist/cifar10 files"})
    limit: int | None = field(default=None, metadata={"help": "use at most this many training samples"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/test split (and of round robin's shards)"})
    validation_fraction: float = field(default=0.0, metadata={"help": "share of the training set held out to choose operating points on (never the test split); 0: none"})

    def validate(self) -> "DataConfig":
        check_dataset_name(self.dataset)
        raise_first_failure([(self.limit is None or self.limit >= 2, f"--limit must be >= 2, got {self.limit}"),
                             (self.split_seed >= 0, f"--split-seed must be >= 0, got {self.split_seed}"),
                             (finite(self.validation_fraction) and 0 <= self.validation_fraction < 1,
                              f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")])
        return self
