"""Statistical core of hyptest: permutation tests, bootstrap intervals and
multiple-testing adjustment (pure numpy/scipy, no torch)."""

from __future__ import annotations

from hyptest.stats.bootstrap import BootstrapResult, bootstrap_ci, paired_bootstrap_ci
from hyptest.stats.multiplicity import adjust_pvalues
from hyptest.stats.permutation import (
    PermutationResult,
    paired_permutation_test,
    two_sample_permutation_test,
)

__all__ = [
    "BootstrapResult",
    "PermutationResult",
    "adjust_pvalues",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_permutation_test",
    "two_sample_permutation_test",
]
