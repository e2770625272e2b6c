"""A dishonest server: its training protocols as server policies (`SERVER_POLICIES`: honest,
FSHA), and what a client can do about it (detectors: SplitGuard's fake batches, SplitOut's
outlier detection; `detection_study` runs both against honest and FSHA servers)."""

from nopeek.dishonest._config import CLIENT_NOPEEK_STEPS, DEFAULT_STEPS, FSHAConfig
from nopeek.dishonest._fsha import (
    SCORE_KEYS, SERVER_POLICIES, SERVERS, Protocol, ProtocolState, Targets, build_protocol, check_client,
    client_readings,
    first_layer_vector, fsha_attack, fsha_topology, pilot_output_for, prepare, reference_classifier, run_fsha,
    run_protocol, score, split_public,
)
from nopeek.dishonest._study import STUDY_COLUMNS, fsha_nopeek_study
from nopeek.dishonest._nets import PILOT_OUTPUTS, attacker_networks, gradient_penalty
from nopeek.dishonest._splitguard import SplitGuard, SplitGuardConfig, rank_p_value, sg_score
from nopeek.dishonest._splitout import SplitOut, SplitOutConfig, honest_reference
from nopeek.dishonest._detection import DETECTORS, detection_study, detection_summary, format_detection

__all__ = [
    "CLIENT_NOPEEK_STEPS", "DEFAULT_STEPS", "DETECTORS", "FSHAConfig", "STUDY_COLUMNS", "SplitOut", "SplitOutConfig",
    "detection_summary", "fsha_nopeek_study", "honest_reference", "PILOT_OUTPUTS", "SCORE_KEYS", "SERVERS",
    "SERVER_POLICIES", "Protocol",
    "ProtocolState", "SplitGuard", "SplitGuardConfig", "Targets", "attacker_networks", "build_protocol", "check_client",
    "client_readings",
    "detection_study", "first_layer_vector", "format_detection", "fsha_attack", "fsha_topology", "gradient_penalty",
    "pilot_output_for", "prepare", "rank_p_value", "reference_classifier", "run_fsha", "run_protocol", "score",
    "sg_score", "split_public",
]
