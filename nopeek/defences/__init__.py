"""Defences of what crosses the cut, each one registered unit with one strength per model.

Built in: `nopeek` (alpha * dCor(x, z) in the data holder's loss), `noise` (noise on the
messages), `dp_message` and `dp_sgd` (differential privacy with its epsilon), `mid` (an
information bottleneck at the cut), `maxnorm` and `marvell` (perturbed gradients returned by
the label holder). `register` adds one's own; `DEFENCES` lists them.
"""

from nopeek.defences._registry import (
    ACTS_ON, DEFENCES, NONE, Context, DefenceSpec, build_defence, check_combination, check_defence, defence_parameters,
    defence_setting_names, defence_settings, defence_spec, guarantee_settings, parse_defences, register,
    with_defence_parameters,
)
from nopeek.defences._accounting import ADJACENCY, EPSILON_RESOLUTION, Accounting, Releases, dp_guarantee, dpsgd_events, epsilon, message_events
from nopeek.defences._noise import NOISE_KINDS, NoiseDefence, NoiseSettings, add_noise, add_noise_per_sample  # noqa: E402 (registers)
from nopeek.defences._nopeek import NoPeek  # noqa: E402 (registers)
# MID registers before the DP defences: one model's message passes through the defences in
# registration order, so MID's KL is on what its encoder reads and the Gaussian mechanism is
# the last step before the message leaves (its guarantee is on what is sent).
from nopeek.defences._mid import MID, MIDSettings, decode, encode, init_bottleneck, kl_divergence  # noqa: E402 (registers)
from nopeek.defences._dp import DPSGD, DPSettings, GaussianMessage, clip_rows  # noqa: E402 (registers)
from nopeek.defences._labels import (  # noqa: E402 (registers)
    LABEL_DEFENSES, LabelDefence, marvell, marvell_objective, marvell_solve, max_norm, received_gradients,
)

__all__ = [
    "ACTS_ON", "ADJACENCY", "DEFENCES", "DPSGD", "DPSettings", "MIDSettings", "NoiseSettings", "defence_setting_names", "defence_settings", "EPSILON_RESOLUTION", "LABEL_DEFENSES", "MID", "NOISE_KINDS", "NONE", "Accounting", "Context",
    "DefenceSpec", "GaussianMessage", "LabelDefence", "NoPeek", "NoiseDefence", "Releases", "add_noise",
    "add_noise_per_sample", "build_defence", "check_combination", "check_defence", "clip_rows", "decode",
    "defence_parameters", "defence_spec", "dp_guarantee", "dpsgd_events", "encode", "epsilon", "guarantee_settings", "init_bottleneck",
    "kl_divergence", "marvell", "marvell_objective", "marvell_solve", "max_norm", "message_events", "parse_defences",
    "received_gradients", "register", "with_defence_parameters",
]
