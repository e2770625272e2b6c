"""Defences of what crosses the cut, each one registered unit with one strength per model.

Built in: `nopeek` (alpha * dCor(x, z) in the data holder's loss), `noise` (noise on the
messages), `maxnorm` and `marvell` (perturbed gradients returned by the label holder).
`register` adds one's own; `DEFENCES` lists them.
"""

from nopeek.defences._registry import (
    ACTS_ON, DEFENCES, NONE, Context, DefenceSpec, build_defence, check_defence, defence_spec, parse_defences, register,
)
from nopeek.defences._noise import NOISE_KINDS, NoiseDefence, add_noise, add_noise_per_sample  # noqa: E402 (registers)
from nopeek.defences._nopeek import NoPeek  # noqa: E402 (registers)
from nopeek.defences._labels import (  # noqa: E402 (registers)
    LABEL_DEFENSES, LabelDefence, marvell, marvell_objective, marvell_solve, max_norm, received_gradients,
)

__all__ = [
    "ACTS_ON", "DEFENCES", "LABEL_DEFENSES", "NOISE_KINDS", "NONE", "Context", "DefenceSpec", "LabelDefence", "NoPeek",
    "NoiseDefence", "add_noise", "add_noise_per_sample", "build_defence", "check_defence", "defence_spec", "marvell",
    "marvell_objective", "marvell_solve", "max_norm", "parse_defences", "received_gradients", "register",
]
