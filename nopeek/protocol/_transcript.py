"""The transcript of one training step: every message between parties, from shapes alone.

The transcript runs the runner (`protocol_gradients`) under `jax.eval_shape` with a
recording transport, so it cannot drift from what a step does: sender, receiver, tensor,
shape, dtype and bytes of each message in the order sent, then the per-turn hand-offs
(round robin's weights). Nothing is computed.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from nopeek.protocol._engine import protocol_gradients
from nopeek.protocol._graph import Message, Topology
from nopeek.protocol._transport import Recorder


def transcript(topo: Topology, params, data_shapes: Mapping[str, jax.ShapeDtypeStruct], handoff_state=None) -> list[Message]:
    """The messages of one training step for a batch of the given shapes, in the order sent,
    then the per-turn hand-offs (their bytes: `handoff_state[party]`, e.g. weights and
    optimiser state, or the party's parameters). From shapes only; nothing is computed."""
    recorder = Recorder()
    jax.eval_shape(lambda p, d: protocol_gradients(topo, p, d, transport=recorder), params, data_shapes)
    out = list(recorder.messages)
    for h in topo.handoffs:
        state = (handoff_state or {}).get(h.party, params[h.party])
        leaves = jax.tree.leaves(state)
        size = sum(int(leaf.size) * jnp.dtype(leaf.dtype).itemsize for leaf in leaves)
        out.append(Message(h.sender, h.receiver, h.tensor, (sum(int(leaf.size) for leaf in leaves),), "float32", size, "turn"))
    return out


def format_transcript(messages) -> str:
    """A small table of transcript messages, with the total bytes per step."""
    width = max([22] + [len(m.tensor) for m in messages])
    lines = [f"{'sender':10s} {'receiver':10s} {'tensor':{width}s} {'shape':18s} {'dtype':8s} {'bytes':>10s} per"]
    for m in messages:
        lines.append(f"{m.sender:10s} {m.receiver:10s} {m.tensor:{width}s} {str(m.shape):18s} {m.dtype:8s} {m.bytes:>10d} {m.per}")
    step_bytes = sum(m.bytes for m in messages if m.per == "step")
    lines.append(f"{'total per step':{50 + width}s} {step_bytes:>10d}")
    return "\n".join(lines)
