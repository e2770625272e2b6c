"""Attacks on what crosses the cut of a split network, and their honest scores.

Works on arrays and callables (activations, a client function); never imports `nopeek`.
Every attack is a unit of one registry (`ATTACKS`, `register`), run with `run(name, inputs)`
and scored beside its free baselines with `score`.
"""

from attacks.decoder import DecoderAttack, build_decoder, fit_decoders, spatial_stages
from attacks.inversion import total_variation, unsplit_inversion, whitebox_inversion
from attacks.label_leakage import direction_scores, label_leakage_auc, leak_null, norm_scores
from attacks.probe import PROBES, probe_accuracy
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
    "missing",
    "register",
    "run",
    "score",
    "settings",
]
