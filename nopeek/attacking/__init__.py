"""Attacks on trained models: what an attacker holds against a run (`attacks.AttackInputs`),
and `nopeek attack` (`run_attack`), which runs any attack of the registry `attacks.ATTACKS`."""

from nopeek.attacking._config import AttackConfig, attacker_indices, heldout_split, wants_auxiliary
from nopeek.attacking._inputs import (
    architecture, architecture_of, check_finite, heldout_gradients, per_sample_gradients, server_of,
)
from nopeek.attacking._run import list_attacks, run_attack

__all__ = ["AttackConfig", "architecture", "architecture_of", "attacker_indices", "check_finite", "heldout_gradients",
           "heldout_split", "list_attacks", "per_sample_gradients", "run_attack", "server_of", "wants_auxiliary"]
