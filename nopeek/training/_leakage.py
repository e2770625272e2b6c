"""What a trained stack leaks: which messages are measured, their held-out dCor, and what
is needed to read it.

A leak entry is one (party, message) that crosses from a data holder to a party that does
not hold the raw inputs it is computed from: every client of a vertical split (and the
server's view of all of them together), every hop of a chain, every round-robin client on
its own held-out shard. Its leakage is the V-statistic dCor of the raw inputs (the
sender's slice, or a relay's upstream holder's inputs) and the message, exact over the
whole held-out set (blocked, so any n fits in memory).

A V-statistic dCor has a floor that depends on n and on the message's dimension and
distribution, so every value comes with its readings (`READINGS`, computed by
`measure_readings`):

    dcor_u       bias-corrected dCor^2 (U-statistic): ~0 for independent samples
    dcor_null95  the 95% quantile of dCor(x, z[pi]) over random permutations pi (the same
                 n, the same marginals, independent by construction): the floor
    dcor_pvalue  the permutation test's p-value, (1 + #{null >= dcor}) / (1 + B)
    dcor_label   dCor(x, onehot(y)): what the label alone reads against the same inputs
    pdcor_label  partial dCor(x, z; onehot(y)): what z says of x beyond the label

References: Szekely & Rizzo, "Partial distance correlation with methods for
dissimilarities", Ann. Statist. 42(6), 2014; Szekely, Rizzo & Bakirov 2007 (the test).
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import metrics
from nopeek.core import Stream, seed_key
from nopeek.protocol import Built, merged_name

DCOR_BLOCK = 1024  # rows per block for held-out dCor over a whole test set
FEATURE_BUCKET = 128  # readings' inputs are zero-padded to a multiple of this many features
DENSE_NULL_MAX = 4096  # held-out samples up to which the permutation null uses n x n matrices
READINGS = ("dcor_u", "dcor_null95", "dcor_pvalue", "dcor_label", "pdcor_label")


@dataclasses.dataclass(frozen=True)
class LeakEntry:
    """One (party, message) whose leakage is measured: dCor of the party's (or, for a relay,
    the upstream holder's) raw inputs with what it sends.

    replica: which replica of a replicated sender; subset: held-out sample indices
    (round robin: each client's shard of the test set), None for all.
    """

    party: str
    message: str
    source: str
    replica: int | None = None
    subset: Any = None
    merged: bool = False  # vertical: the server's view, every client's message together

    @property
    def label(self) -> str:
        """The message's name in tables: the tensor, or "z[all]" for the merged view."""
        return merged_name(self.message) if self.merged else self.message

    def view(self, value, models_axis: bool = False):
        """The entry's tensor from the message's value (N, n, ...) for a replicated sender
        (with a leading models axis K when `models_axis`): one replica's share, or for the
        merged view all replicas side by side, (n, N * d)."""
        off = 1 if models_axis else 0
        if self.merged:
            v = jnp.moveaxis(jnp.asarray(value), off, off + 1)
            return v.reshape(*v.shape[: off + 1], -1)
        if self.replica is not None:
            return value[:, self.replica] if models_axis else value[self.replica]
        return value

    def source_view(self, value, models_axis: bool = False):
        """The raw inputs the entry is compared with: all of x, or the sender's slice."""
        if self.replica is not None:
            return value[:, self.replica] if models_axis else value[self.replica]
        return value


def leak_entries(built: Built, shards_test=None) -> list[LeakEntry]:
    """Every forward message computed from raw inputs that reaches a party not holding them."""
    topo = built.topology
    out, seen = [], set()
    for sender, receiver, tensor in topo.messages():
        sources = topo.upstream_inputs(tensor)
        if not sources or (sender, tensor) in seen:
            continue
        if all(s in topo.party(receiver).holds for s in sources):
            continue  # back to the party that holds the inputs (u_shaped's z2)
        seen.add((sender, tensor))
        source = sorted(sources)[0]
        party = topo.party(sender)
        if party.replicas > 1:
            out += [LeakEntry(name, tensor, source, replica=i) for i, name in enumerate(party.member_names())]
            # What the receiver can rebuild of client i's slice from everything it received.
            out += [LeakEntry(name, tensor, source, replica=i, merged=True) for i, name in enumerate(party.member_names())]
        elif shards_test is not None and len(shards_test) > 1:
            out += [LeakEntry(name, tensor, source, subset=np.asarray(s))
                    for name, s in zip(party.turn_names(len(shards_test)), shards_test)]
        else:
            out.append(LeakEntry(sender, tensor, source))
    return out


@jax.jit
def probe_dcor(x, zs):
    """Plain dCor of a small held-out batch x with each of K message sets zs -> (K,)."""
    return jax.vmap(lambda z: metrics.distance_correlation(x, z))(zs)


@jax.jit
def _stack_dcor(x, zs):
    """dCor of x with each of K message sets zs: (K, n, ...) -> (K,), blocked."""
    return jax.lax.map(lambda z: metrics.distance_correlation(x, z, block_size=DCOR_BLOCK), zs)


def measure_leakage(entries, data_test: dict, sent: dict) -> dict:
    """{(party, message label): (K,) dCor} over all held-out samples (or the entry's subset)."""
    out = {}
    for e in entries:
        x = e.source_view(np.asarray(data_test[e.source]))
        z = e.view(sent[e.message], models_axis=True)
        if e.subset is not None:
            x, z = x[e.subset], z[:, e.subset]
        out[(e.party, e.label)] = np.asarray(_stack_dcor(jnp.asarray(x), jnp.asarray(z)))
    return out


def one_hot(y, classes: int) -> np.ndarray:
    """(n,) int labels -> (n, classes) float32."""
    return np.eye(classes, dtype=np.float32)[np.asarray(y)]


def null_key():
    """The permutations' key: the same draws for every model, so the nulls are comparable."""
    return seed_key(0, Stream.NULL)


@functools.lru_cache(maxsize=8)
def null_permutations(n: int, count: int):
    """The (count, n) permutations of every null over n held-out samples (`null_key()`'s
    draws; None when count is 0): drawn once per (n, count) and passed to `stack_readings`,
    not drawn inside each of its programs (the draws' sort doubled their compile time).
    Cached: the 8 most recent (n, count)."""
    return metrics.permutations(n, count, null_key()) if count else None


def _block(n: int) -> int | None:
    return None if n <= DCOR_BLOCK else DCOR_BLOCK


@jax.jit
def stack_readings(x, zs, labels, perms) -> dict:
    """dCor of x with each of K message sets and its readings, in one program.

    x: (n, ...) raw inputs; zs: (K, n, ...) the K models' messages; labels: (n, classes)
    one-hot labels or None; perms: (B, n) the null's permutations
    (`null_permutations(n, B)`), or None for none. Returns {"dcor", "dcor_u", "dcor_null95", "dcor_pvalue", "dcor_label",
    "pdcor_label": (K,)}; the null's fields are NaN without permutations, dcor_label and
    pdcor_label without labels. dcor_label, dCor(x, labels), does not depend on the model:
    computed once, the same for all K (so a run's measurement needs no second program).
    Needs n >= 4 (the U-statistic's minimum).
    """
    n = x.shape[0]
    block, null_block = _block(n), (None if n <= DENSE_NULL_MAX else DCOR_BLOCK)
    nan = jnp.full((), jnp.nan, jnp.float32)
    dcor_label = nan if labels is None else metrics.distance_correlation(x, labels, block_size=block).astype(jnp.float32)

    def one(z):
        out = {"dcor": metrics.distance_correlation(x, z, block_size=block),
               "dcor_u": metrics.u_distance_correlation_sqr(x, z, block_size=block),
               "dcor_null95": nan, "dcor_pvalue": nan, "pdcor_label": nan}
        if perms is not None:
            test = metrics.distance_correlation_test(x, z, permutations=perms, block_size=null_block)
            out["dcor_null95"], out["dcor_pvalue"] = test.dcor_null95, test.pvalue
        if labels is not None:
            out["pdcor_label"] = metrics.partial_distance_correlation(x, z, labels, block_size=block)
        return {name: v.astype(jnp.float32) for name, v in out.items()}

    out = jax.lax.map(one, zs)
    out["dcor_label"] = jnp.broadcast_to(dcor_label, (zs.shape[0],))
    return out


def readings_width(entries, data: dict, messages: dict) -> tuple[int, int]:
    """(x features, z features): the most raw-input features and message features among
    `entries` (from the shapes of data {name: (n, ...)} and messages {name: (K, n, ...)}
    only, so any n and K give the same)."""
    def features(shape, lead: int) -> int:
        return int(np.prod(shape[lead:], dtype=np.int64))

    wx = max(features(jax.eval_shape(e.source_view, data[e.source]).shape, 1) for e in entries)
    wz = max(features(jax.eval_shape(partial(e.view, models_axis=True), messages[e.message]).shape, 2) for e in entries)
    return wx, wz


def bucketed_readings(x, zs, labels, *, permutations: int, width: tuple[int, int] = (0, 0)) -> dict:
    """`stack_readings` of x: (n, ...) and zs: (K, n, ...), each flattened to its features
    and zero-padded to at least `width` (x's, z's; `readings_width` of a run's entries)
    rounded up to a multiple of FEATURE_BUCKET, with the null's permutations.

    Zero features change no distance, so no reading (the same values to float32 round-off);
    they let a run's messages of different widths (a vertical client's z and the server's
    z[all], the hops of a chain) share one compiled program for each n, and runs of other
    models share it too (n, K, the label count and B equal), where each width would compile
    its own. Above DENSE_NULL_MAX samples the null recomputes the distances for every
    permutation, at a cost that grows with the width: there the inputs are only flattened.
    Device arrays are padded on the device (a sharded stack stays sharded), host arrays on
    the host.
    """
    n = np.shape(x)[0]

    def padded(a, lead: int, least: int):
        a = a.reshape(*a.shape[:lead], -1)
        if n > DENSE_NULL_MAX:
            return a.astype(jnp.float32) if isinstance(a, jax.Array) else jax.device_put(np.asarray(a, np.float32), may_alias=False)
        extra = [(0, 0)] * lead + [(0, -(-max(a.shape[-1], least) // FEATURE_BUCKET) * FEATURE_BUCKET - a.shape[-1])]
        if isinstance(a, jax.Array):
            return jnp.pad(a.astype(jnp.float32), extra)
        return jax.device_put(np.pad(np.asarray(a, np.float32), extra))  # a transfer, not a compiled copy

    x = x if isinstance(x, jax.Array) else np.asarray(x)
    zs = zs if isinstance(zs, jax.Array) else np.asarray(zs)
    return stack_readings(padded(x, 1, width[0]), padded(zs, 2, width[1]), labels,
                          null_permutations(n, int(permutations)))


def label_dcor(x, labels) -> float:
    """dCor(x, onehot(y)): what the label alone reads against the inputs (no model in it)."""
    x, labels = jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.float32)
    return float(metrics.distance_correlation(x, labels, block_size=_block(x.shape[0])))


def readings(x, z, labels=None, *, permutations: int = 200, dcor_label: float | None = None) -> dict:
    """The readings of dCor(x, z) over n samples (see the module docstring) for one model.

    x: (n, ...) raw inputs; z: (n, ...) the message; labels: (n, classes) one-hot labels
    or None (then `dcor_label` and `pdcor_label` are NaN); permutations: B for the null
    (0: no null, `dcor_null95` and `dcor_pvalue` NaN); dcor_label: a precomputed
    dCor(x, labels) (it does not depend on the model). Returns {name: float}.
    """
    x, z = jnp.asarray(x, jnp.float32), jnp.asarray(z, jnp.float32)
    if x.shape[0] < 4:
        return {name: float("nan") for name in READINGS}
    labels = None if labels is None else jnp.asarray(labels, jnp.float32)
    got = bucketed_readings(x, z[None], labels, permutations=permutations)
    out = {name: float(got[name][0]) for name in READINGS}
    if labels is not None and dcor_label is not None:
        out["dcor_label"] = float(dcor_label)
    return out


def measure_readings(entries, data_test: dict, sent: dict, labels, *, permutations: int = 200,
                     known: dict | None = None) -> dict:
    """{(party, message label): {"dcor" and each reading: (K,)}} over the held-out samples
    (or the entry's subset), each entry's K models in one program (`bucketed_readings`): the
    held-out dCor (what `measure_leakage` computes) and its readings together. labels: (n,
    classes) one-hot labels of the held-out set, or None. known: {(party, message label):
    stack_readings' output} an entry already has for these samples and messages (the
    training loop's last epoch, when its probe is the whole held-out set): used as they
    are, not computed again."""
    out = {}
    known = known or {}
    width = readings_width(entries, data_test, sent)
    for e in entries:
        x = e.source_view(np.asarray(data_test[e.source]))
        z = np.asarray(e.view(sent[e.message], models_axis=True))
        y = labels
        if e.subset is not None:
            x, z = x[e.subset], z[:, e.subset]
            y = None if labels is None else labels[e.subset]
        k = len(z)
        if len(x) < 4:  # too few for the readings: the plain dCor alone (2 samples suffice)
            dcor = np.asarray(_stack_dcor(jnp.asarray(x), jnp.asarray(z)))
            out[(e.party, e.label)] = {"dcor": dcor, **{name: np.full(k, np.nan) for name in READINGS}}
            continue
        y = None if y is None else jnp.asarray(y, jnp.float32)
        got = known.get((e.party, e.label))
        if got is None:
            got = bucketed_readings(x, z, y, permutations=permutations, width=width)
        out[(e.party, e.label)] = {name: np.asarray(got[name], np.float64) for name in ("dcor", *READINGS)}
    return out
