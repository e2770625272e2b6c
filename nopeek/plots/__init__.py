"""Figures as PNG files, from plain arrays and results tables: reconstruction grids, label
leakage, sweep trade-offs and histories, comparisons, the defences' frontiers. Imports matplotlib, nothing that trains."""

from nopeek.plots._attacks import ATTACK_PREFIXES, ATTACK_TITLES, attack_comparison_figure
from nopeek.plots._common import FIGURE_COLUMNS, check_results, mean_ci, save_figure
from nopeek.plots._grids import fsha_curves_figure, label_leakage_figure, reconstruction_grid
from nopeek.plots._ranking import defence_frontier_figure
from nopeek.plots._sweep import (
    compare_figure, error_tradeoff_figure, history_figure, label_tradeoff_figure, label_tradeoff_points,
    load_histories, metric_vs_alpha_figure, sweep_figures, tradeoff_figure,
)

__all__ = [
    "ATTACK_PREFIXES", "ATTACK_TITLES", "FIGURE_COLUMNS", "attack_comparison_figure", "check_results", "compare_figure", "defence_frontier_figure", "error_tradeoff_figure", "fsha_curves_figure", "history_figure",
    "label_leakage_figure", "label_tradeoff_figure", "label_tradeoff_points", "load_histories", "mean_ci",
    "metric_vs_alpha_figure", "reconstruction_grid", "save_figure", "sweep_figures", "tradeoff_figure",
]
