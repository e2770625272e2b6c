"""What a trained stack leaks: which messages are measured, and their held-out dCor.

A leak entry is one (party, message) that crosses from a data holder to a party that does
not hold the raw inputs it is computed from: every client of a vertical split (and the
server's view of all of them together), every hop of a chain, every round-robin client on
its own held-out shard. Its leakage is the V-statistic dCor of the raw inputs (the
sender's slice, or a relay's upstream holder's inputs) and the message, exact over the
whole held-out set (blocked, so any n fits in memory).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import metrics
from nopeek.protocol import Built

DCOR_BLOCK = 1024  # rows per block for held-out dCor over a whole test set


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
        return f"{self.message}[all]" if self.merged else self.message

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
            out += [LeakEntry(f"{sender}{i + 1}", tensor, source, subset=np.asarray(s)) for i, s in enumerate(shards_test)]
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
