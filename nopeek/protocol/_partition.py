"""How a data set is shared among N data holders (round robin's shards).

`iid`: a seeded random split into N near-equal shards. `dirichlet`: label skew as in
federated-learning benchmarks (Hsu et al. 2019): for every class, the shares of its
samples that go to each holder are drawn from Dirichlet(alpha * 1_N); small alpha gives
each holder few classes. Each shard's indices are sorted, so one holder gets 0..n-1.
"""

from __future__ import annotations

import numpy as np

from nopeek.errors import ConfigError

PARTITIONS = ("iid", "dirichlet")


def partition(labels, clients: int, kind: str = "iid", alpha: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """Split sample indices 0..n-1 among `clients` holders.

    Args:
      labels: (n,) int class labels (used by `dirichlet`).
      clients: N >= 1.
      kind: "iid" or "dirichlet"; alpha: the Dirichlet concentration (> 0).
      seed: the partition's seed.

    Returns:
      N sorted index arrays, disjoint, covering 0..n-1.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if clients < 1:
        raise ConfigError(f"--clients must be >= 1, got {clients}")
    if clients > n:
        raise ConfigError(f"--clients {clients}: more clients than the {n} samples")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        parts = np.array_split(rng.permutation(n), clients)
    elif kind == "dirichlet":
        if not (np.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"--dirichlet-alpha must be > 0, got {alpha}")
        parts = [[] for _ in range(clients)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, float(alpha)))
            bounds = (np.cumsum(shares)[:-1] * len(members)).round().astype(int)
            for i, chunk in enumerate(np.split(members, bounds)):
                parts[i].extend(chunk.tolist())
        parts = [np.asarray(p, np.int64) for p in parts]
    else:
        raise ConfigError(f"--partition must be one of {', '.join(PARTITIONS)}, got {kind!r}")
    return [np.sort(np.asarray(p, np.int64)) for p in parts]
