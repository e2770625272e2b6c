"""The malicious server's settings (FSHA): its public data, its networks and how it trains them."""

from __future__ import annotations

import dataclasses
from dataclasses import field

from nopeek.core import Section, finite, raise_first_failure
from nopeek.dishonest._nets import PILOT_OUTPUTS

DEFAULT_STEPS = 2000
CLIENT_NOPEEK_STEPS = ("joint", "separate")


@dataclasses.dataclass(frozen=True)
class FSHAConfig(Section):
    """The malicious server: its public data, its networks and how it trains them."""

    fsha_steps: int = field(default=DEFAULT_STEPS, metadata={"help": "FSHA iterations (in a sweep: with --servers fsha)"})
    public_fraction: float = field(default=0.2, metadata={"help": "FSHA: share of the training samples (of --public-classes) the server holds as public data; the client trains on the rest"})
    public_classes: tuple[int, ...] = field(default=(), metadata={"help": "FSHA: the public data holds only these classes (default: all)"})
    checkpoint_every: int = field(default=250, metadata={"help": "FSHA: score and draw the reconstructions every N iterations"})
    fsha_lr: float = field(default=1e-3, metadata={"help": "FSHA: Adam learning rate of the pilot and decoder"})
    fsha_lr_critic: float = field(default=1e-3, metadata={"help": "FSHA: Adam learning rate of the critic D"})
    gp_weight: float = field(default=500.0, metadata={"help": "FSHA: gradient-penalty weight (the authors' 500)"})
    fsha_weight: float = field(default=1.0, metadata={"help": "FSHA: scale of the gradient the server sends (the authors' 50 against dCor)"})
    fsha_width: int = field(default=32, metadata={"help": "FSHA: channels (dense units / 8) of the server's networks"})
    fsha_res_blocks: int = field(default=2, metadata={"help": "FSHA: residual blocks of the critic"})
    client_nopeek_step: str = field(default="joint", metadata={"help": "the client's NoPeek term: joint (added to the gradient it receives, the honest client's code) or separate (the FSHA authors' dCor client: one optimiser stepping twice, on alpha * D(x, z), then on the received gradient, both taken at the same parameters)", "choices": CLIENT_NOPEEK_STEPS})
    pilot_output: str = field(default="auto", metadata={"help": "FSHA: the pilot's last activation: linear, relu, or auto (relu when the client's messages are non-negative)", "choices": PILOT_OUTPUTS})

    def validate(self) -> "FSHAConfig":
        checks = [
            (self.fsha_steps >= 1, f"--fsha-steps must be >= 1, got {self.fsha_steps}"),
            (finite(self.public_fraction) and 0 < self.public_fraction < 1, f"--public-fraction must be in (0, 1), got {self.public_fraction}"),
            (all(c >= 0 for c in self.public_classes), f"--public-classes must be >= 0, got {self.public_classes}"),
            (self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}"),
            (finite(self.fsha_lr) and self.fsha_lr > 0, f"--fsha-lr must be finite and > 0, got {self.fsha_lr}"),
            (finite(self.fsha_lr_critic) and self.fsha_lr_critic > 0, f"--fsha-lr-critic must be finite and > 0, got {self.fsha_lr_critic}"),
            (finite(self.gp_weight) and self.gp_weight >= 0, f"--gp-weight must be finite and >= 0, got {self.gp_weight}"),
            (finite(self.fsha_weight) and self.fsha_weight > 0, f"--fsha-weight must be finite and > 0, got {self.fsha_weight}"),
            (self.fsha_width >= 1, f"--fsha-width must be >= 1, got {self.fsha_width}"),
            (self.fsha_res_blocks >= 0, f"--fsha-res-blocks must be >= 0, got {self.fsha_res_blocks}"),
            (self.client_nopeek_step in CLIENT_NOPEEK_STEPS, f"--client-nopeek-step must be one of {', '.join(CLIENT_NOPEEK_STEPS)}, got {self.client_nopeek_step!r}"),
            (self.pilot_output in PILOT_OUTPUTS, f"--pilot-output must be one of {', '.join(PILOT_OUTPUTS)}, got {self.pilot_output!r}"),
        ]
        raise_first_failure(checks)
        return self

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if d.get("fsha_steps", 1) in (None, 0):  # written before one meaning: None or 0 was "no FSHA column"
            d.pop("fsha_steps")
        return super().from_dict(d)
