"""Cost of a collaboration: per-client compute (XLA's count of compiled programs) and
communication (the protocol's transcript) of split learning, federated learning and
large-batch SGD; the split-learning paper's table (`nopeek cost`, `run_cost`)."""

from nopeek.cost._methods import (
    COST_PRESETS, KNOWN_DATA, METHODS, REPORTS, SEED_TABLE, CostConfig, MethodCost, check_cost, client_samples, cost_cuts, cost_data,
    cost_setup, crossover, fl_rounds, method_costs, profiles, split_step_bytes,
)
from nopeek.cost._profiles import (
    OPTIMIZER_STATES, PartyCost, Profile, abstract_topology, compiled_flops, message_bytes, split_profile, whole_profile,
)
from nopeek.cost._report import (
    CSV_COLUMNS, CURVE_CLIENTS, SENSITIVITY_COLUMNS, CostReport, cost_figure, cost_rows, run_cost, sensitivity_figure,
    sensitivity_rows,
)

__all__ = [
    "CSV_COLUMNS", "CURVE_CLIENTS", "KNOWN_DATA", "METHODS", "OPTIMIZER_STATES", "COST_PRESETS", "REPORTS", "SEED_TABLE",
    "SENSITIVITY_COLUMNS", "CostConfig", "CostReport", "MethodCost", "PartyCost", "Profile", "abstract_topology", "check_cost",
    "client_samples", "compiled_flops", "cost_cuts", "cost_data", "cost_figure", "cost_rows", "cost_setup", "crossover",
    "fl_rounds", "message_bytes", "method_costs", "profiles", "run_cost", "sensitivity_figure", "sensitivity_rows",
    "split_profile", "split_step_bytes", "whole_profile",
]
