"""A training run on disk: `config.json`, `metrics.json`, `checkpoint.msgpack`; and `load`.

    runs/x/config.json        the full TrainConfig
    runs/x/metrics.json       test_accuracy, dcor (all held-out samples), history, seconds
    runs/x/checkpoint.msgpack client and server parameters (Flax msgpack, no pickle)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from nopeek import data as data_lib
from nopeek.config import TrainConfig
from nopeek.io import load_params_into, read_json, save_params, write_json
from nopeek.models import build_model
from nopeek.split import SplitFns, split, transcript
from nopeek.train import StackResult, train_stack

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.json", "checkpoint.msgpack"


@dataclasses.dataclass
class TrainedSplitModel:
    """A split model restored from a run folder."""

    config: TrainConfig
    fns: SplitFns
    client_params: Any
    server_params: Any

    def client(self, x):
        """z = client(x) for x: (n, ...) -> (n, ...) cut activations (no noise)."""
        return self.fns.client_apply(self.client_params, x)

    def server(self, z):
        """logits = server(z): (n, classes)."""
        return self.fns.server_apply(self.server_params, z)


def run_train(config: TrainConfig, out: str, *, progress: bool = True) -> dict:
    """Train one split model as `config` says and write its run folder `out`.

    Returns:
      the metrics dict written to `out/metrics.json`.
    """
    config.validate()
    dataset = data_lib.load(config.dataset, seed=config.seed, data_dir=config.data_dir, limit=config.limit)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, CONFIG), config.to_dict())
    result: StackResult = train_stack(config, dataset, progress=progress)
    client, server = result.model_params(0)
    save_params(os.path.join(out, CHECKPOINT), {"client": client, "server": server})
    messages = transcript(result.fns, client, server, (config.batch_size, *dataset.input_shape))
    metrics = {
        "test_accuracy": float(result.test_accuracy[0]),
        "dcor": float(result.dcor[0]),
        "n_test": int(len(dataset.x_test)),
        "seconds": result.seconds,
        "cut_messages_per_step": [dataclasses.asdict(m) for m in messages],
        "history": [{k: (v[0] if isinstance(v, list) else v) for k, v in row.items()} for row in result.history],
    }
    write_json(os.path.join(out, METRICS), metrics)
    return metrics


def load(run_dir: str) -> TrainedSplitModel:
    """Restore the trained split model of a run folder written by `run_train`."""
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: not found; is {run_dir} a `nopeek train` run folder?")
    config = TrainConfig.from_dict(read_json(config_path))
    shape, classes = data_lib.sample_shape(config.dataset, config.data_dir)
    model = build_model(config.model, shape, classes, config.widths, seed=config.seed)
    fns, client, server = split(model, config.resolved_cut())
    params = load_params_into(os.path.join(run_dir, CHECKPOINT), {"client": client, "server": server})
    return TrainedSplitModel(config, fns, params["client"], params["server"])
