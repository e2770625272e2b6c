"""`nopeek audit`: leakage measures and every attack that arrays alone can run, on
activations saved from any framework's split model (.npz files)."""

from nopeek.audit._audit import AuditConfig, format_table, run_audit, run_reconstruction_attacks
from nopeek.audit._inputs import MIN_PAIRS, MIN_TARGETS, SCALES, Bundle, check_bundle, read_arrays
from nopeek.errors import AuditError

__all__ = ["AuditConfig", "AuditError", "Bundle", "MIN_PAIRS", "MIN_TARGETS", "SCALES", "check_bundle", "format_table",
           "read_arrays", "run_audit", "run_reconstruction_attacks"]
