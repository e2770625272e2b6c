"""Reading and checking the arrays a user hands to `nopeek audit`, from any framework.

Files are NumPy `.npz` archives (`numpy.savez(path, x=..., z=...)`), opened with
`allow_pickle=False`: an object (pickled) array is refused without being loaded, and a
file that is not an archive is refused unread. Every problem is one `AuditError` whose
message names the file and the array.

    pairs file (the attacker's):  x (n, ...) raw inputs, z (n, ...) their cut activations,
                                  optional y (n,) labels, attr_<name> (n,) attributes
    target file (the victim's):   the same keys, plus optional g (n, *z_shape) per-sample
                                  cut gradients dL/dz and accuracy (a scalar in [0, 1])
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

import numpy as np

from nopeek.core import npz_array, open_npz
from nopeek.errors import AuditError

PAIR_KEYS = ("x", "z", "y")
TARGET_KEYS = ("x", "z", "y", "g", "accuracy")
ATTR_PREFIX = "attr_"
SCALES = ("none", "255", "minmax")
MIN_PAIRS = 16  # fewer leaked pairs than this cannot train (or fairly test) a decoder
MIN_TARGETS = 4  # dCor and AUCs of fewer held-out samples mean nothing
_RANGE_TOL = 1e-6  # float round-off at the ends of [0, 1]




@dataclasses.dataclass
class Bundle:
    """One file's arrays after the checks: x (n, ...) in [0, 1] (images NHWC), z, labels, g."""

    name: str  # the file path (or "pairs 1" / "target 2" for arrays passed in memory)
    x: np.ndarray
    z: np.ndarray
    labels: dict  # "y" and "attr_*" -> (n,) int64
    g: np.ndarray | None = None
    accuracy: float | None = None
    scale_note: str = ""

    @property
    def n(self) -> int:
        return len(self.x)


def read_arrays(source, what: str) -> tuple[str, dict]:
    """(name, {key: array}) of an .npz path or an in-memory mapping of arrays."""
    if isinstance(source, Mapping):
        arrays = {}
        for k, v in source.items():
            a = np.asarray(v)
            if a.dtype == object:
                raise AuditError(f"{what}: array {k!r} holds Python objects; give numeric arrays")
            arrays[k] = a
        return what, arrays
    path = os.fspath(source)
    with open_npz(path, AuditError) as npz:
        arrays = {key: npz_array(npz, key, path, AuditError) for key in npz.files}
    return path, arrays


def _numeric(name, key, a, *, finite=True) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.issubdtype(a.dtype, np.complexfloating):
        raise AuditError(f"{name}: array {key!r} has dtype {a.dtype}; expected real numbers")
    if finite and np.issubdtype(a.dtype, np.floating):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise AuditError(f"{name}: array {key!r} has {bad} NaN or Inf value(s)")
    return a


def _int_labels(name, key, a) -> np.ndarray:
    if a.ndim != 1:
        raise AuditError(f"{name}: {key!r} must be one label per sample (n,), got shape {a.shape}")
    _numeric(name, key, a)
    if np.issubdtype(a.dtype, np.floating) and not np.all(a == np.round(a)):
        raise AuditError(f"{name}: {key!r} must hold integer class labels, found fractions")
    if a.size and a.min() < 0:
        raise AuditError(f"{name}: {key!r} must hold non-negative integer labels (0, 1, ...), found {a.min():g}")
    return a.astype(np.int64)


def _nhwc(a, channels_first: bool):
    return np.moveaxis(a, 1, -1) if channels_first and a.ndim == 4 else a


def check_bundle(source, role: str, index: int, *, channels_first: bool = False) -> Bundle:
    """Read one pairs or target file and check keys, dtypes, sample counts and finiteness."""
    name, arrays = read_arrays(source, f"{role} {index + 1}")
    allowed = PAIR_KEYS if role == "pairs" else TARGET_KEYS
    for key in arrays:
        if key not in allowed and not key.startswith(ATTR_PREFIX):
            raise AuditError(f"{name}: unknown array {key!r}; a {role} file holds {', '.join(allowed)} "
                             f"and {ATTR_PREFIX}<name>")
    for key in ("x", "z"):
        if key not in arrays:
            raise AuditError(f"{name}: no {key!r} array (found: {', '.join(arrays) or 'none'}); "
                             f"save it with numpy.savez({os.path.basename(name)!r}, x=..., z=...)")
    x = _numeric(name, "x", arrays["x"])
    z = _numeric(name, "z", arrays["z"])
    if x.ndim < 2 or x.ndim > 4:
        raise AuditError(f"{name}: x must be (n, d) features or (n, H, W[, C]) images, got shape {x.shape}")
    if z.ndim < 2:
        raise AuditError(f"{name}: z must be (n, ...) activations, one row per sample, got shape {z.shape}")
    if x.ndim == 4 and not channels_first and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3, 4):
        raise AuditError(f"{name}: x of shape {x.shape} looks channels-first (n, C, H, W, as PyTorch saves it); "
                         "pass --channels-first, or save x.permute(0, 2, 3, 1)")
    if x.ndim == 4 and channels_first and x.shape[1] not in (1, 3, 4):
        raise AuditError(f"{name}: x of shape {x.shape} does not look channels-first (n, C, H, W); "
                         "drop --channels-first")
    n = len(x)
    for key, a in arrays.items():
        if key != "accuracy" and (a.ndim == 0 or len(a) != n):
            shape = "a scalar" if a.ndim == 0 else f"{len(a)} samples"
            raise AuditError(f"{name}: array 'x' has {n} samples but {key!r} has {shape}")
    x = _nhwc(x, channels_first)
    x = x[..., None] if x.ndim == 3 else x
    labels = {k: _int_labels(name, k, a) for k, a in arrays.items() if k == "y" or k.startswith(ATTR_PREFIX)}
    bundle = Bundle(name, np.asarray(x, np.float32), np.asarray(_nhwc(z, channels_first), np.float32), labels)
    if "g" in arrays:
        g = _nhwc(_numeric(name, "g", arrays["g"]), channels_first)
        if g.shape != bundle.z.shape:
            raise AuditError(f"{name}: g (dL/dz per sample) must have z's shape {bundle.z.shape}, got {g.shape}")
        y = labels.get("y")
        if y is None or set(np.unique(y).tolist()) != {0, 1}:
            raise AuditError(f"{name}: g is given, so the label-leakage attacks need y with binary labels "
                             "0 and 1 (both present)")
        bundle.g = np.asarray(g, np.float64)
    if "accuracy" in arrays:
        bundle.accuracy = check_accuracy(name, arrays["accuracy"])
    return bundle


def check_accuracy(name: str, value) -> float:
    a = np.asarray(value)
    if a.size != 1 or not (np.issubdtype(a.dtype, np.number) and 0 <= float(a.reshape(())) <= 1):
        raise AuditError(f"{name}: accuracy must be one number in [0, 1], got {value!r}")
    return float(a.reshape(()))


def _range(x) -> tuple[float, float]:
    return float(x.min()), float(x.max())


def _in_unit(x) -> bool:
    lo, hi = _range(x)
    return lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL


def apply_scale(pairs: Bundle, targets: list[Bundle], scale: str) -> None:
    """Map every x into [0, 1] as `scale` says, in place; refuse what is still outside.

    "none": x must already lie in [0, 1]. "255": x / 255. "minmax": the attacker's range
    (one range for images, one per feature for tabular x, as nopeek scales its own tabular
    data) mapped to [0, 1]; the same map is applied to the held-out x, clipped to [0, 1].
    """
    hint = "pass --scale 255 (divide by 255) or --scale minmax (map the attacker's min-max range to [0, 1])"
    if scale == "minmax":
        axis = None if pairs.x.ndim == 4 else 0
        lo, hi = pairs.x.min(axis=axis), pairs.x.max(axis=axis)
        width = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
        for b in [pairs, *targets]:
            if b.scale_note:  # a pairs file shared by several targets is scaled once
                continue
            mapped = (b.x - lo) / width
            outside = float(np.mean((mapped < 0) | (mapped > 1)))
            b.x = np.clip(mapped, 0.0, 1.0).astype(np.float32)
            b.scale_note = f"minmax of {pairs.name}" + (f"; {outside:.2%} of values clipped" if outside else "")
        return
    for b in [pairs, *targets]:
        if b.scale_note:
            continue
        if scale == "255":
            top = float(np.max(b.x)) if b.x.size else 0.0
            if 0.0 < top <= 1.0 + _RANGE_TOL:  # pixels already in [0, 1]: / 255 would leave them near black
                raise AuditError(f"{b.name}: x already lies in [0, 1] (max {top:g}); --scale 255 would map it to "
                                 f"[0, {top / 255:.2g}]: leave --scale out")
            b.x = (b.x / 255.0).astype(np.float32)
        if not _in_unit(b.x):
            lo, hi = _range(b.x)
            after = " after --scale 255" if scale == "255" else ""
            raise AuditError(f"{b.name}: x ranges over [{lo:g}, {hi:g}]{after}, not [0, 1]; "
                             + ("values above 255 cannot be 8-bit pixels" if after else hint))
        b.x = np.clip(b.x, 0.0, 1.0)
        b.scale_note = "x / 255" if scale == "255" else "as given"


def check_pairing(pairs: list[Bundle], targets: list[Bundle]) -> list[int]:
    """The pairs bundle index of each target; refuses mismatched counts and shapes."""
    if len(pairs) not in (1, len(targets)):
        raise AuditError(f"--pairs takes one file (shared by every target) or one per target ({len(targets)}), "
                         f"got {len(pairs)}")
    which = [0] * len(targets) if len(pairs) == 1 else list(range(len(targets)))
    for p in pairs:
        if p.n < MIN_PAIRS:
            raise AuditError(f"{p.name}: only {p.n} leaked pairs; the decoder needs at least {MIN_PAIRS}")
    for t, i in zip(targets, which):
        p = pairs[i]
        if t.n < MIN_TARGETS:
            raise AuditError(f"{t.name}: only {t.n} held-out samples; the audit needs at least {MIN_TARGETS}")
        for key in ("x", "z"):
            a, b = getattr(p, key).shape[1:], getattr(t, key).shape[1:]
            if a != b:
                raise AuditError(f"{t.name}: {key} samples have shape {b} but {a} in the pairs file {p.name}")
    return which


def target_labels(targets: list[Bundle], given) -> list[str]:
    """A short, file-name-safe, unique label per target: `given`, or the file names."""
    if given is not None:
        given = [str(g) for g in given]
        if len(given) != len(targets):
            raise AuditError(f"--labels has {len(given)} names for {len(targets)} targets")
        if len(set(given)) != len(given):
            raise AuditError(f"--labels must be unique, got {', '.join(given)}")
        return given
    labels, seen = [], set()
    for t in targets:
        base = os.path.splitext(os.path.basename(t.name))[0].replace(" ", "") or "target"
        label, k = base, 2
        while label in seen:
            label, k = f"{base}-{k}", k + 1
        seen.add(label)
        labels.append(label)
    return labels


def safe_filename(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def shared_rows(a: np.ndarray, b: np.ndarray) -> int:
    """How many rows of `b` also appear (bit for bit) among the rows of `a`."""
    seen = {row.tobytes() for row in a.reshape(len(a), -1)}
    return sum(row.tobytes() in seen for row in b.reshape(len(b), -1))
