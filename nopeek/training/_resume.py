"""Epoch checkpoints of a training stack: what lets an interrupted `nopeek train` or sweep
resume from its last saved epoch instead of starting over.

`train_stack(..., resume_dir=DIR)` saves, after an epoch, everything the next epoch needs
into DIR/FINGERPRINT.npz (one file, written to a temporary file and renamed into place, read
without pickle), and a later `train_stack` of the same training finds it there and starts
at the epoch after it. The training's fingerprint (`fingerprint`) is a digest of what
determines it: the config, each model's seed and defence strengths, the stack's layout, the
whole data set as loaded (`nopeek.data.data_digest`: every split), the backend, the device
count and the jax, flax and optax versions; a checkpoint of another training is never read
(its name differs). Resuming gives what the uninterrupted training gives, bit for bit: an
epoch's batches and every step's randomness are functions of (seed, epoch, step), not of
the process (tests/test_resume.py compares them).

How often: after the first epoch, then after an epoch whenever the time since the last
save is at least `SAVE_SPACING` times what that save took (a stack of small models saves
every epoch, a large stack whose save takes seconds every few epochs), and always after
the last one, so an interruption during the evaluation and the attacks that follow loses
no training. A checkpoint never stops the training it protects: one that cannot be read is
set aside and training starts over; one that cannot be written is given up with a warning.
Members of the file:

    leaf_00000 ...      every leaf of the StackState (parameters and optimiser states), in
                        `jax.tree.leaves` order, as host arrays (dtypes NumPy cannot store,
                        bfloat16 say, as unsigned integers of their width)
    epoch               () epochs done
    finished            () whether training stopped (every epoch run, or every model diverged)
    diverged_epoch, diverged_loss, first_loss   (K,) the health record so far
    seconds             () training seconds spent so far
    history, fingerprint, dtypes  the per-epoch rows (JSON), the digest and each leaf's dtype
                        name (JSON), as UTF-8 bytes (uint8)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings

import jax
import numpy as np

SAVE_SPACING = 50.0  # an epoch checkpoint costs at most about 1/50 of the training between two


def fingerprint(config_dict: dict, per_model, seeds, mode: str, dataset) -> str:
    """Digest (hex, 24 characters) of what determines a training: the config, each model's
    defence strengths and seed (after padding the stack), its stack mode, the data set
    (`data_digest`: every split, as loaded), the backend and device count (the padding and
    the programs), and the versions of jax, flax and optax."""
    import flax
    import optax

    from nopeek.data import data_digest

    h = hashlib.sha256()
    h.update(json.dumps({"config": config_dict, "strengths": [dict(sorted(m.items())) for m in per_model],
                         "seeds": [int(s) for s in seeds], "mode": mode, "data": data_digest(dataset),
                         "backend": jax.default_backend(), "devices": jax.device_count(),
                         "versions": [jax.__version__, flax.__version__, optax.__version__]},
                        sort_keys=True, default=str).encode())
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


def _storable(a: np.ndarray) -> np.ndarray:
    """`a`, or its bytes as unsigned integers of its width when NumPy's .npy format cannot
    name its dtype (ml_dtypes' bfloat16 would be written as raw void and never read back)."""
    if a.dtype.kind in "biufc":
        return a
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def save(path: str, digest: str, progress: Progress) -> None:
    """Write `progress` to `path`: into a temporary file beside it, renamed into place (no
    second copy of the state in memory)."""
    leaves = [np.asarray(a) for a in jax.device_get(jax.tree.leaves(progress.state))]
    arrays = {f"leaf_{i:05d}": _storable(a) for i, a in enumerate(leaves)}
    first = progress.first_loss if progress.first_loss is not None else np.zeros((0,), np.float32)
    arrays.update(epoch=np.int64(progress.epoch), finished=np.bool_(progress.finished),
                  diverged_epoch=progress.diverged_epoch, diverged_loss=progress.diverged_loss,
                  first_loss=np.asarray(first), seconds=np.float64(progress.seconds),
                  history=_text(json.dumps(progress.history)), fingerprint=_text(digest),
                  dtypes=_text(json.dumps([str(a.dtype) for a in leaves])))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def warn(log, message: str) -> None:
    """`log(message)` where the caller shows lines of its own (a command's stderr), else a
    Python warning."""
    if log is not None:
        log(message)
    else:
        warnings.warn(message, stacklevel=3)


def load(path: str, digest: str, template, log=None) -> Progress | None:
    """The progress saved at `path`, its state in the structure of `template` (a freshly
    initialised StackState of the same training); None when there is no file. A file that
    cannot be read, or does not fit the template, is set aside with a warning (`log`, or a
    Python warning) and training starts over: it never stops a run."""
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
            dtypes = json.loads(bytes(f["dtypes"]).decode())
            restored = []
            for name, want, dtype in zip(names, leaves, dtypes):
                got = f[name]
                if dtype == str(want.dtype) and got.dtype != want.dtype and got.dtype.itemsize == want.dtype.itemsize:
                    got = got.view(want.dtype)  # stored as unsigned integers of its width (`_storable`)
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
        try:
            os.replace(path, aside)
            kept = f"set aside as {aside}"
        except OSError:
            kept = "left where it is"
        warn(log, f"{path}: the saved training could not be read ({type(err).__name__}: {err}); {kept}, training "
                  "starts over")
        return None


class Saver:
    """Decides when to save after an epoch (`SAVE_SPACING`) and saves. A save that fails (a
    full disk, too little memory, the folder removed under it) warns once (`log`, or a Python
    warning) and training goes on without checkpoints: they must never cost the training
    they protect."""

    def __init__(self, path: str | None, digest: str, log=None):
        self.path, self.digest, self.log = path, digest, log
        self.last_end, self.last_cost = None, 0.0
        self.saved = False

    def after_epoch(self, progress: Progress, *, last: bool) -> None:
        if self.path is None:
            return
        now = time.perf_counter()
        if not last and self.last_end is not None and now - self.last_end < SAVE_SPACING * self.last_cost:
            return
        try:
            try:
                save(self.path, self.digest, progress)
            except FileNotFoundError:  # the folder removed under us (a shard that finished): once more
                save(self.path, self.digest, progress)
        except (Exception, MemoryError) as err:
            warn(self.log, f"{self.path}: could not save the epoch checkpoint ({type(err).__name__}: "
                           f"{getattr(err, 'strerror', None) or err}); training goes on without them (an interruption "
                           "will start it over)")
            self.path = None
            return
        self.saved = True
        self.last_end = time.perf_counter()
        self.last_cost = self.last_end - now
