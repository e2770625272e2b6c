"""Epoch checkpoints of a training stack: what lets an interrupted `nopeek train` or sweep
resume from its last saved epoch instead of starting over.

`train_stack(..., resume_dir=DIR)` saves, after an epoch, everything the next epoch needs
into DIR/FINGERPRINT.npz (one file, written atomically, read without pickle), and a later
`train_stack` of the same training finds it there and starts at the epoch after it. The
training's fingerprint (`fingerprint`) is a digest of what determines it: the config, each
model's seed and defence strengths, the stack's layout and a sample of the data set; a
checkpoint of another training is never read (its name differs). Resuming gives what the
uninterrupted training gives: an epoch's batches and every step's randomness are functions
of (seed, epoch, step), not of the process (tests/test_resume.py compares them).

How often: after the first epoch, then after an epoch whenever the time since the last
save is at least `SAVE_SPACING` times what that save took (a stack of small models saves
every epoch, a large stack whose save takes seconds every few epochs), and always after
the last one, so an interruption during the evaluation and the attacks that follow loses
no training. Members of the file:

    leaf_00000 ...      every leaf of the StackState (parameters and optimiser states), in
                        `jax.tree.leaves` order, as host arrays
    epoch               () epochs done
    finished            () whether training stopped (every epoch run, or every model diverged)
    diverged_epoch, diverged_loss, first_loss   (K,) the health record so far
    seconds             () training seconds spent so far
    history, fingerprint  the per-epoch rows (JSON) and the digest, as UTF-8 bytes (uint8)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
import warnings

import jax
import numpy as np

from nopeek.core import atomic_write_bytes

SAVE_SPACING = 10.0  # an epoch checkpoint costs at most about 1/10 of the training between two
_SAMPLED_ROWS = 256  # rows of the training inputs hashed into the fingerprint (all labels are)


def fingerprint(config_dict: dict, per_model, seeds, mode: str, dataset) -> str:
    """Digest (hex, 24 characters) of what determines a training: the config, each model's
    defence strengths and seed (after padding the stack), its stack mode, the data set's
    shapes, every training label and an even sample of the training inputs."""
    h = hashlib.sha256()
    h.update(json.dumps({"config": config_dict, "strengths": [dict(sorted(m.items())) for m in per_model],
                         "seeds": [int(s) for s in seeds], "mode": mode,
                         "shapes": [list(np.shape(dataset.x_train)), list(np.shape(dataset.x_test))]},
                        sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(dataset.y_train).tobytes())
    x = np.asarray(dataset.x_train)
    h.update(np.ascontiguousarray(x[:: max(1, len(x) // _SAMPLED_ROWS)]).tobytes())
    return h.hexdigest()[:24]


@dataclasses.dataclass
class Progress:
    """A training's state after `epoch` epochs, as `load` reads it back."""

    epoch: int
    finished: bool
    state: object  # the StackState, host arrays in the template's structure
    history: list[dict]
    diverged_epoch: np.ndarray  # (K,)
    diverged_loss: np.ndarray  # (K,)
    first_loss: np.ndarray | None  # (K,)
    seconds: float


def path_of(resume_dir: str, digest: str) -> str:
    return os.path.join(resume_dir, f"{digest}.npz")


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-8"), np.uint8)


def save(path: str, digest: str, progress: Progress) -> None:
    """Write `progress` to `path` in one atomic replace."""
    leaves = jax.device_get(jax.tree.leaves(progress.state))
    arrays = {f"leaf_{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}
    first = progress.first_loss if progress.first_loss is not None else np.zeros((0,), np.float32)
    arrays.update(epoch=np.int64(progress.epoch), finished=np.bool_(progress.finished),
                  diverged_epoch=progress.diverged_epoch, diverged_loss=progress.diverged_loss,
                  first_loss=np.asarray(first), seconds=np.float64(progress.seconds),
                  history=_text(json.dumps(progress.history)), fingerprint=_text(digest))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: str, digest: str, template) -> Progress | None:
    """The progress saved at `path`, its state in the structure of `template` (a freshly
    initialised StackState of the same training); None when there is no file. A file that
    cannot be read, or does not fit the template, is set aside with a warning (training
    starts over): it never stops a run."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if bytes(f["fingerprint"]).decode() != digest:
                raise ValueError("it is another training's")
            leaves, treedef = jax.tree.flatten(template)
            names = sorted(n for n in f.files if n.startswith("leaf_"))
            if len(names) != len(leaves):
                raise ValueError(f"{len(names)} arrays, the model has {len(leaves)}")
            restored = []
            for name, want in zip(names, leaves):
                got = f[name]
                if got.shape != tuple(want.shape) or got.dtype != want.dtype:
                    raise ValueError(f"{name} is {got.dtype}{list(got.shape)}, the model's {want.dtype}{list(want.shape)}")
                restored.append(got)
            first = f["first_loss"]
            return Progress(epoch=int(f["epoch"]), finished=bool(f["finished"]),
                            state=jax.tree.unflatten(treedef, restored),
                            history=json.loads(bytes(f["history"]).decode()),
                            diverged_epoch=np.asarray(f["diverged_epoch"]), diverged_loss=np.asarray(f["diverged_loss"]),
                            first_loss=first if first.size else None, seconds=float(f["seconds"]))
    except Exception as err:  # a damaged file (numpy, zipfile and JSON raise their own types)
        aside = f"{path}.unreadable"
        os.replace(path, aside)
        warnings.warn(f"{path}: the saved training could not be read ({type(err).__name__}: {err}); set aside as "
                      f"{aside}, training starts over", stacklevel=2)
        return None


class Saver:
    """Decides when to save after an epoch (`SAVE_SPACING`) and saves. A save that fails (a
    full disk) warns once and training goes on without checkpoints: they must never cost
    the training they protect."""

    def __init__(self, path: str | None, digest: str):
        self.path, self.digest = path, digest
        self.last_end, self.last_cost = None, 0.0

    def after_epoch(self, progress: Progress, *, last: bool) -> None:
        if self.path is None:
            return
        now = time.perf_counter()
        if not last and self.last_end is not None and now - self.last_end < SAVE_SPACING * self.last_cost:
            return
        try:
            save(self.path, self.digest, progress)
        except OSError as err:
            warnings.warn(f"{self.path}: could not save the epoch checkpoint ({err.strerror or err}); training goes "
                          "on without them (an interruption will start it over)", stacklevel=2)
            self.path = None
            return
        self.last_end = time.perf_counter()
        self.last_cost = self.last_end - now
