"""Importers: outputs that others logged -> hyptest's records or tables.

``read_long``
    The generic long format (CSV, TSV, JSONL, Parquet) -> records in the
    store's schema (``hyptest.store.RECORD_COLUMNS``).
``read_dai`` / ``iter_dai_examples``
    Dai et al.'s ``ana_rlt/<model>/<task>/{zs,ftzs,ft,icl}/record_info.jsonl``.
``read_run_summaries``
    Per-run, per-layer metric values with their baselines.
``read_lm_eval``
    lm-evaluation-harness ``--log_samples`` output -> records in the
    store's schema, demo sets and orders recovered from the prompts.
``detect_format``
    Which of these a path holds.

Importers only read and check; the statistics are in :mod:`hyptest.workflows.reanalyse`.
The formats are described in ``docs/reanalyse.md``.
"""

from ._problems import ImportProblems, Problem
from .dai import (
    DAI_SETTINGS,
    DaiExample,
    DaiImport,
    DaiTaskData,
    DaiTaskDir,
    DaiTaskReader,
    find_dai_tasks,
    iter_dai_examples,
    read_dai,
)
from .detect import FORMATS, detect_format
from .lm_eval import LM_EVAL_OUTPUT_TYPES, LmEvalImport, find_lm_eval_runs, read_lm_eval
from .long import LONG_SUFFIXES, SUM_TOLERANCE, ImportResult, long_columns_problems, read_long, unit_key
from .mapping import KINDS, LONG_COLUMNS, PROB_PREFIX, ColumnMapping, load_mapping, mapping_from_options
from .summaries import BASELINE_WORDS, SummariesImport, baseline_pairs, read_run_summaries, summary_files

__all__ = [
    "BASELINE_WORDS",
    "ColumnMapping",
    "DAI_SETTINGS",
    "DaiExample",
    "DaiImport",
    "DaiTaskData",
    "DaiTaskDir",
    "DaiTaskReader",
    "FORMATS",
    "ImportProblems",
    "ImportResult",
    "KINDS",
    "LM_EVAL_OUTPUT_TYPES",
    "LmEvalImport",
    "LONG_COLUMNS",
    "LONG_SUFFIXES",
    "PROB_PREFIX",
    "Problem",
    "SUM_TOLERANCE",
    "SummariesImport",
    "baseline_pairs",
    "detect_format",
    "find_dai_tasks",
    "find_lm_eval_runs",
    "iter_dai_examples",
    "load_mapping",
    "long_columns_problems",
    "mapping_from_options",
    "read_dai",
    "read_lm_eval",
    "read_long",
    "read_run_summaries",
    "summary_files",
    "unit_key",
]
