"""NoPeek: the data holder adds `alpha * D(x, m)` to its loss for every message m it sends.

D is the V-statistic distance correlation of the raw inputs (or, for a relay, what it
received) and the message over the batch (`--leakage dcor`), or its log (`log_dcor`, the
workshop paper's text). The gradient of the term joins the cotangent the sender gets back
for m, so only the sender's parameters feel it. With `alpha_warmup`, alpha ramps linearly
from 0 over that many epochs.

References: Vepakomma et al., "Reducing leakage in distributed deep learning for sensitive
health data", ICLR 2019 AI4SG workshop, Eq. (1); Vepakomma et al., "NoPeek: information
leakage reduction to share activations in distributed deep learning", ICDMW 2020 (arXiv
2008.09161).
"""

from __future__ import annotations

import jax.numpy as jnp

from nopeek.defences._registry import Context, register
from nopeek.protocol import Defence, Penalty, leakage


class NoPeek(Defence):
    """The penalty alpha * D(source, m) on every protected message (D named "leak")."""

    def __init__(self, alpha, kind: str = "dcor"):
        self.alpha, self.kind = alpha, kind

    def penalties(self, message):
        return (Penalty("leak", self.alpha, lambda x, m: leakage(x, m, self.kind)),)


def _make(alpha, ctx: Context) -> NoPeek:
    if ctx.warmup_steps:  # alpha ramps linearly from 0 to its value
        alpha = alpha * jnp.minimum(1.0, (ctx.step + 1) / ctx.warmup_steps)
    return NoPeek(alpha, ctx.setting("leakage", "dcor"))


register("nopeek", _make, acts_on="loss", strength="alpha, the weight on D(x, z)", config_field="alpha", always=True,
         description="NoPeek: alpha * dCor(x, z) (or its log) added to the data holder's loss")
