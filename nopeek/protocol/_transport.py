"""How tensors travel between parties in the runner: handed over, written down, kept.

`Transport.send` is called once per message, forward (activations, labels) and backward
(gradient messages, named by `gradient_name`). `Recorder` writes down every message's
shape and bytes (the transcript), `Capture` keeps the values of chosen messages (inside
jit too), `Log` keeps every message with its value (outside jit; for inspection and tests).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from nopeek.protocol._graph import Message, Topology


class Transport:
    """Carries a tensor from one party to another. This one hands it over unchanged."""

    def send(self, topo: Topology, sender: str, receiver: str, tensor: str, value):
        return value


class Recorder(Transport):
    """A transport that writes down every message (expanding replicated parties)."""

    def __init__(self):
        self.messages: list[Message] = []

    def send(self, topo, sender, receiver, tensor, value):
        s, r = topo.party(sender), topo.party(receiver)
        stacked = max(s.replicas, r.replicas) > 1
        shape = tuple(value.shape[1:]) if stacked else tuple(value.shape)
        dtype = jnp.dtype(value.dtype)
        size = int(dtype.itemsize) * math.prod(shape)
        senders, receivers = s.member_names(), r.member_names()
        pairs = zip(senders, receivers) if len(senders) == len(receivers) else (
            [(a, receivers[0]) for a in senders] if len(receivers) == 1 else [(senders[0], b) for b in receivers]
        )
        for a, b in pairs:
            self.messages.append(Message(a, b, tensor, shape, str(dtype), size))
        return value


class Capture(Transport):
    """A transport that keeps the values of the messages named in `tensors` (e.g. "dz")."""

    def __init__(self, tensors):
        self.tensors = set(tensors)
        self.values: dict[str, Any] = {}

    def send(self, topo, sender, receiver, tensor, value):
        if tensor in self.tensors:
            self.values[tensor] = value
        return value


class Log(Transport):
    """A transport that keeps every message with its value, in the order sent: `log` is a
    list of (sender, receiver, tensor, value as a NumPy array). For inspection and tests;
    values are concrete, so use it outside `jax.jit`."""

    def __init__(self):
        self.log: list[tuple[str, str, str, Any]] = []

    def send(self, topo, sender, receiver, tensor, value):
        self.log.append((sender, receiver, tensor, np.asarray(value)))
        return value


def gradient_name(tensor: str) -> str:
    """The name of the message carrying the loss gradient of `tensor` back to its producer."""
    return f"dL/d{tensor}"


# ---- the runner -------------------------------------------------------------------
