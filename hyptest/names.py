"""The names hyptest shows and the lists it iterates: one home for each table.

Plain data, no imports from hyptest: the study file, the analysis, the CLI, the
workflows and the report read their display names and metric lists from here
(``docs/architecture.md``; ``tests/test_import_rules.py`` keeps this module a leaf).

Tables
------
METHOD_NAMES, SHORT_METHOD_NAMES, SENTENCE_METHOD_NAMES
    A method kind's display names: in banners, in narrow tables and in the one-line summaries.
DAI_NAMES, DAI_METRIC_NAMES
    Dai et al.'s metrics: display names, and the names themselves in the Dai stage's order.
ANALYSES, RATIO_ANALYSES
    The order analyses a study can name, and those whose statistic is a ratio of order spreads.
AGREEMENT_METRICS
    The distribution-agreement metrics and whether higher means more agreement.
SWEEP_METRICS, TRAJECTORY_METRICS
    The metrics of the N sweep and of the training trajectories.
"""

from __future__ import annotations

__all__ = ["AGREEMENT_METRICS", "ANALYSES", "DAI_METRIC_NAMES", "DAI_NAMES", "METHOD_NAMES", "RATIO_ANALYSES",
           "SENTENCE_METHOD_NAMES", "SHORT_METHOD_NAMES", "SWEEP_METRICS", "TRAJECTORY_METRICS"]

#: Plain-words display names of the known methods (report banners).
METHOD_NAMES: dict[str, str] = {
    "icl": "ICL",
    "gd": "full-batch GD",
    "sgd": "SGD (batch 1, in order)",
    "adam": "Adam (batch 1, in order)",
    "layer_causal_gd": "layer-causal GD (Deutch et al.; batch 1, in order)",
    "zs": "zero-shot (no demos)",
}

#: Short method names for narrow tables (the CLI's verdict table, the report's).
SHORT_METHOD_NAMES: dict[str, str] = {"icl": "ICL", "zs": "ZS", "gd": "GD", "sgd": "SGD", "adam": "Adam",
                                      "layer_causal_gd": "LC-GD"}

#: Method names inside a sentence (the one-line summaries of a study's comparisons).
SENTENCE_METHOD_NAMES: dict[str, str] = {"icl": "ICL", "zs": "zero-shot", "gd": "full-batch GD", "sgd": "SGD",
                                         "adam": "Adam", "layer_causal_gd": "layer-causal GD"}

#: Display names of Dai et al.'s metrics (reports, sentences); its keys are :data:`DAI_METRIC_NAMES`.
DAI_NAMES: dict[str, str] = {"rec2ftp": "Rec2FTP", "simaou": "SimAOU", "simam": "SimAM", "kendall": "Kendall",
                             "kendall_demo_token": "Kendall (demo tokens)",
                             "kendall_demo_example": "Kendall (demo examples)"}

#: Dai et al.'s metrics as the Dai stage computes them (:func:`hyptest.workflows.reanalyse.dai_comparisons`).
DAI_METRIC_NAMES: tuple[str, ...] = tuple(DAI_NAMES)

#: Analyses a study can name in ``analysis.margins`` and ``analysis.confirmatory``.
ANALYSES: tuple[str, ...] = (
    "order_sensitivity", "order_sensitivity_labels", "log_variance_ratio", "order_alignment",
    "token_overlap", "overlap_cosine", "label_js", "label_kl", "order_sensitivity_vocab",
)

#: Analyses whose statistic is a ratio of order spreads: a ``ratio`` margin applies, and the adaptive
#: collection tests them anytime-validly (per-set order-spread ratios).
RATIO_ANALYSES: tuple[str, ...] = ("order_sensitivity", "order_sensitivity_labels", "log_variance_ratio")

#: Distribution-agreement metrics -> whether a higher value means more agreement.
AGREEMENT_METRICS: dict[str, bool] = {"token_overlap": True, "overlap_cosine": True, "label_js": False,
                                      "label_kl": False}

#: Metrics of the N sweep (``results["n_sweep"]``), in display order.
SWEEP_METRICS: tuple[str, ...] = ("accuracy", "order_sd", *AGREEMENT_METRICS)

#: Metrics of the training trajectories (``results["trajectories"]``), in display order.
TRAJECTORY_METRICS: tuple[str, ...] = ("label_js_to_icl", "token_overlap_to_icl", "p_gold", "accuracy")
