"""Attacks on what crosses the cut of a split network, and their honest scores.

Works on arrays and callables (activations, a client function); never imports `nopeek`.
Every attack is a unit of one registry (`ATTACKS`, `register`), run with `run(name, inputs)`
and scored beside its free baselines with `score`: the decoder of NoPeek's threat model,
white-box and UnSplit inversion, probes, label leakage, and the attacks of 2023-25 (SDAR,
FORA, the adaptive decoder attacker).
"""

from attacks.adaptive import adaptive as adaptive_attack
from attacks.adaptive import adaptive_alpha as adaptive_alpha_attack
from attacks.adaptive import WHITENING, shadow_clients, whitener
from attacks.decoder import DecoderAttack, build_decoder, fit_decoders, spatial_stages
from attacks.fora import fora as fora_attack
from attacks.fora import gradient_penalty, mk_mmd
from attacks.inversion import total_variation, unsplit_inversion, whitebox_inversion, whitebox_inversions
from attacks.label_leakage import direction_scores, label_leakage_auc, leak_null, norm_scores
from attacks.probe import PROBES, probe_accuracy
from attacks import progress
from attacks.nets import Discriminator, Head, LabelledDecoder, SubstituteClient
from attacks.sdar import Simulation, Victim
from attacks.sdar import sdar as sdar_attack
from attacks.registry import ATTACKS, KINDS, NEEDS, AttackInputs, AttackSpec, missing, register, run, score, settings
from attacks.scoring import (
    ReferenceClassifier,
    class_mean_baseline,
    mean_image_baseline,
    reconstruction_scores,
    scores_with_baseline,
)

__all__ = [
    "ATTACKS",
    "progress",
    "Discriminator",
    "Head",
    "LabelledDecoder",
    "Simulation",
    "SubstituteClient",
    "Victim",
    "WHITENING",
    "adaptive_alpha_attack",
    "adaptive_attack",
    "fora_attack",
    "gradient_penalty",
    "mk_mmd",
    "sdar_attack",
    "shadow_clients",
    "whitener",
    "AttackInputs",
    "AttackSpec",
    "KINDS",
    "NEEDS",
    "DecoderAttack",
    "PROBES",
    "ReferenceClassifier",
    "build_decoder",
    "class_mean_baseline",
    "direction_scores",
    "fit_decoders",
    "label_leakage_auc",
    "leak_null",
    "mean_image_baseline",
    "norm_scores",
    "probe_accuracy",
    "reconstruction_scores",
    "scores_with_baseline",
    "spatial_stages",
    "total_variation",
    "unsplit_inversion",
    "whitebox_inversion",
    "whitebox_inversions",
    "missing",
    "register",
    "run",
    "score",
    "settings",
]
