"""Leakage sweeps: topologies x cut lists x defences x seeds, each group trained as one stack
and attacked by the grid's attacks; resumable results, presets, shards and Ray clusters; the
defences ranked at matched utility."""

from nopeek.sweeps._columns import format_table as format_attack_table
from nopeek.sweeps._comparison import attack_comparison, leak_curve
from nopeek.sweeps._config import (
    DISHONEST, Cell, GridConfig, SweepConfig, cell_defences, cells, check_sweep, cut_spec, load_config_file, parse_cut_spec,
)
from nopeek.sweeps._operating import RULE, operating_points
from nopeek.sweeps._presets import PRESET_INFO, PRESETS, Preset, run_preset
from nopeek.sweeps._provenance import check_rows
from nopeek.sweeps._ranking import (
    MARGINS, RANKING_COLUMNS, dcs, format_ranking, frontier_points, matched_table, ranking_rows, reconstruction_attacks,
    setting_points, several_families, write_ranking,
)
from nopeek.sweeps._ray import group_task, import_ray, run_sweep_ray, start_local
from nopeek.sweeps._results import (
    CELL_COLUMNS, KEY_COLUMNS, PRIVACY_COLUMNS, RESULT_COLUMNS, TIMING_COLUMNS, append_rows, cell_key, fmt_number, read_rows, row_key,
    write_rows,
)
from nopeek.sweeps._shards import (
    MergeStatus, ShardResult, merge, merge_report, parse_shard, prepare_shard_output, read_config, run_shard,
    shard_groups, shard_path,
)
from nopeek.sweeps._summary import SUMMARY_METRICS, format_summary, format_table, summarize, write_summary
from nopeek.sweeps._sweep import GroupInputs, load_inputs, prepare_output, run_group, run_sweep

__all__ = [
    "MARGINS", "PRIVACY_COLUMNS", "RANKING_COLUMNS", "dcs", "format_ranking", "frontier_points", "matched_table",
    "ranking_rows", "reconstruction_attacks", "setting_points", "several_families", "write_ranking",
    "CELL_COLUMNS", "KEY_COLUMNS", "PRESETS", "PRESET_INFO", "RESULT_COLUMNS", "SUMMARY_METRICS", "TIMING_COLUMNS",
    "Cell", "GridConfig", "GroupInputs", "MergeStatus", "Preset", "ShardResult", "SweepConfig", "append_rows",
    "attack_comparison", "leak_curve",
    "DISHONEST", "RULE", "cell_defences", "cell_key", "cells", "check_rows", "check_sweep", "cut_spec", "fmt_number", "format_attack_table",
    "format_summary", "format_table", "group_task", "import_ray", "load_config_file", "load_inputs", "merge",
    "merge_report", "operating_points", "parse_cut_spec", "parse_shard", "prepare_output", "prepare_shard_output",
    "read_config", "read_rows", "row_key", "run_group", "run_preset", "run_shard", "run_sweep", "run_sweep_ray",
    "shard_groups", "shard_path", "start_local", "summarize", "write_rows", "write_summary",
]
