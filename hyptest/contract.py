"""The results contract: what ``results.json`` holds, typed and versioned.

``results.json`` is the interface between the analysis (a study's
:func:`hyptest.workflows.study.analyse_run`, a reanalysis) and everything that reads
it (the report, ``hyptest report``, users' own scripts).  :class:`Results`
describes it; the JSON Schema generated from it is committed as
``docs/results.schema.json`` (regenerate with ``python -m hyptest.contract``;
a test fails when the two differ).

Versions
--------
``schema_version`` is an integer that grows when a field is removed, renamed
or changes meaning (adding an optional section does not bump it).

* 1: every ``results.json`` written before the field existed (no
  ``schema_version`` key); read by adding the field (:func:`migrate`).
* 2: the current version.

:func:`read_results` migrates older versions on read and refuses a version
newer than this hyptest knows, with a message that says to upgrade.

JSON has no infinity or NaN: such values are written as ``null`` (a log
ratio against an order-invariant method is infinite).  Every section keeps
the fields it has today: rows are typed where the report
depends on a field (comparison rows, families, margins) and allow extra fields
(an analysis may add columns, e.g. ``layer`` on Dai rows); sections that only
some runs have (``dai``, ``import``, ``adaptive``, ...) are optional.

Everything the report draws is in the file: the analysis also writes what
used to be computed at render time (the per-chain rank histograms of each
Bayesian slice, :class:`RankPlot`; the convergence gate its diagnostics table
highlights, :class:`BayesGate`).  Both are optional: files written before them
still validate (``hyptest report`` recomputes the rank histograms from the
slice's NetCDF file; the gate's defaults are the values every hyptest so far
has used).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["SCHEMA_VERSION", "BayesGate", "BayesSlice", "ComparisonRow", "DaiSection", "Diagnostic", "FamilyRow",
           "MarginRow", "Posterior", "Provenance", "RankPlot", "Results", "ResultsVersionError", "json_schema",
           "migrate", "read_results"]

#: The version of the contract this hyptest writes.
SCHEMA_VERSION = 2


class ResultsVersionError(ValueError):
    """A ``results.json`` of a schema version this hyptest cannot read."""


class _Row(BaseModel):
    """A row whose typed fields are checked and whose further columns are kept (``extra="allow"``)."""

    model_config = ConfigDict(extra="allow")

    def get(self, key: str, default: Any = None) -> Any:
        """A column as written: a field or an extra column present in the input, else ``default`` (as ``dict.get``).

        A field the input did not set reads ``default``, not the field's
        default value: readers that treat a missing column differently from
        its default (an old file without ``null_value``) see the row as it was
        written.
        """
        if key in type(self).model_fields:
            return getattr(self, key) if key in self.model_fields_set else default
        return (self.model_extra or {}).get(key, default)

    def __contains__(self, key: object) -> bool:
        """Whether the input had the column ``key`` (as ``key in dict``)."""
        return key in self.model_fields_set or key in (self.model_extra or {})


class ComparisonRow(_Row):
    """One comparison and its verdict (a row of :func:`hyptest.results.decide`'s table)."""

    model: Any
    task: Any
    n_demos: float | None = None
    method_a: str | None = None  # None: a reanalysed summary metric against its own baseline
    method_b: str | None = None
    analysis: str
    family: str
    role: Literal["confirmatory", "exploratory", "bayesian"]
    rule: Literal["two_sided", "threshold", "given", "anytime"]  # anytime: an adaptive run's e-processes
    estimate: float | None = None
    scale: str = ""
    verdict: str
    p_value: float | None = None
    p_adjusted: float | None = None
    p_equivalence: float | None = None
    p_equivalence_adjusted: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    margin: float | None = None
    null_value: float = 0.0
    note: str | None = None


class FamilyRow(_Row):
    """One family of comparisons adjusted together."""

    family: str
    role: str
    size: int
    adjust: str | None = None  # None for Bayesian families (HDI + ROPE, no adjustment)
    alpha: float
    analyses: list[str]
    n_resamples: int | float | None = None  # an int stays an int (10000, not 1e+04 in the report)


class MarginRow(_Row):
    """One pre-declared equivalence margin."""

    analysis: str
    kind: str | None = None
    value: float | None = None
    margin: float | None = None
    source: str | None = None


class Provenance(_Row):
    """Where the numbers came from: versions, machine, models, seeds, timings."""

    hyptest_version: str
    python: str
    libraries: dict[str, str]
    models: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    wall_time_s: dict[str, float | None] = Field(default_factory=dict)


class Posterior(_Row):
    """A histogram of the posterior draws of one method's log SD ratio (``counts`` per bin between ``edges``)."""

    counts: list[int | float]  # numpy's histogram counts: ints stay ints
    edges: list[float]


class Diagnostic(_Row):
    """One posterior parameter's summary and convergence diagnostics (null: not finite)."""

    parameter: str
    mean: float | None = None
    sd: float | None = None
    hdi_low: float | None = None
    hdi_high: float | None = None
    hdi_prob: float | None = None
    r_hat: float | None = None
    ess_bulk: float | None = None
    ess_tail: float | None = None


class RankPlot(_Row):
    """Per-chain rank histograms of one posterior variable (Vehtari et al. 2021, Sec. 4.2).

    All chains' draws of each element are ranked together and each chain's
    ranks binned on ``bin_edges``; well-mixed chains give flat histograms at
    ``expected`` draws per bin.  Written by
    :func:`hyptest.analysis.bayes_ranks.rank_plot`.
    """

    var_name: str
    #: one per element of the variable, e.g. ``"sd_query[icl]"``
    labels: list[str]
    #: shape (element, chain, bin)
    counts: list[list[list[int]]]
    bin_edges: list[float]
    expected: float


class BayesSlice(_Row):
    """The hierarchical-Bayes fit of one (model, task, N) slice."""

    model: Any = None
    task: Any = None
    n_demos: Any = None
    #: the NetCDF file of the posterior in the run directory (None: not written)
    file: str | None = None
    converged: bool | None = None
    reason: str | None = None
    #: methods whose order SD the model fixed at 0 (their log ratio is infinite)
    order_invariant: list[str] = Field(default_factory=list)
    sampler: str | None = None
    wall_time_s: float | None = None
    posteriors: dict[str, Posterior] = Field(default_factory=dict)
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    #: rank histograms of ``sd_query``; absent in files written before the field (None: not computable)
    rank_plot: RankPlot | None = None


class BayesGate(_Row):
    """The convergence gate of the Bayesian fits: R-hat at most ``r_hat_max``, bulk and tail ESS at least ``ess_min``.

    The defaults are :data:`hyptest.stats.bayes.RHAT_MAX` and
    :data:`~hyptest.stats.bayes.ESS_MIN`, the gate of every hyptest so far
    (files written before the field read them).
    """

    r_hat_max: float = 1.01
    ess_min: float = 400.0


class DaiSection(_Row):
    """Dai et al.'s metrics of a run's own ``dai/`` logs, each tested against its baseline, and the untrained control."""

    #: one row per metric (and layer) against its baseline
    comparisons: list[dict[str, Any]] = Field(default_factory=list)
    #: the share of examples zero-shot, fine-tuning and ICL got right
    correctness: list[dict[str, Any]] = Field(default_factory=list)
    families: list[dict[str, Any]] = Field(default_factory=list)
    #: the trained model against its untrained controls (Deutch et al. 2024)
    vs_untrained: list[dict[str, Any]] = Field(default_factory=list)
    untrained_layers: list[dict[str, Any]] = Field(default_factory=list)
    untrained_statements: list[dict[str, Any]] = Field(default_factory=list)
    controls: list[dict[str, Any]] = Field(default_factory=list)


class Results(BaseModel):
    """The content of ``results.json``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_version: Literal[2] = SCHEMA_VERSION
    study: dict[str, Any]
    comparisons: list[ComparisonRow]
    provenance: Provenance
    data_files: list[str] = Field(default_factory=list)
    families: list[FamilyRow] = Field(default_factory=list)
    margins: list[MarginRow] = Field(default_factory=list)
    order_sensitivity: list[dict[str, Any]] = Field(default_factory=list)
    accuracy: list[dict[str, Any]] = Field(default_factory=list)
    agreement: list[dict[str, Any]] = Field(default_factory=list)
    #: comparison index -> resampling draws of its statistic (null: an infinite draw; JSON has no infinity)
    null_distributions: dict[str, list[float | None]] = Field(default_factory=dict)
    bayes: list[BayesSlice] = Field(default_factory=list)
    bayes_gate: BayesGate = Field(default_factory=BayesGate)
    n_sweep: list[dict[str, Any]] = Field(default_factory=list)
    trajectories: list[dict[str, Any]] = Field(default_factory=list)
    closest_to_icl: list[dict[str, Any]] = Field(default_factory=list)
    vocab_order_sensitivity: list[dict[str, Any]] = Field(default_factory=list)
    checkpoints: list[dict[str, Any]] = Field(default_factory=list)
    sparsity: list[dict[str, Any]] = Field(default_factory=list)
    dai: DaiSection = Field(default_factory=DaiSection)
    #: a ``hyptest reanalyse`` of Dai et al.'s logs: the share each method got right
    correctness: list[dict[str, Any]] = Field(default_factory=list)
    #: an adaptive run: per confirmatory comparison its running estimate and confidence sequence
    adaptive: list[dict[str, Any]] = Field(default_factory=list)
    #: reanalysis only: what was imported, and the analyses the format could not support
    import_: dict[str, Any] = Field(default_factory=dict, alias="import")
    skipped_analyses: list[dict[str, Any]] = Field(default_factory=list)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a parsed ``results.json``) brought to :data:`SCHEMA_VERSION`.

    Raises
    ------
    ResultsVersionError
        If its version is newer than this hyptest knows, or not a version at all.
    """
    if not isinstance(data, dict):
        raise ResultsVersionError(f"results.json must hold a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ResultsVersionError(f"results.json has schema_version {version!r}; a positive integer was expected")
    if version > SCHEMA_VERSION:
        raise ResultsVersionError(
            f"results.json was written by a newer hyptest (results schema version {version}; this hyptest reads "
            f"versions 1 to {SCHEMA_VERSION}): upgrade hyptest (pip install -U hyptest) to read or render it")
    if version == 1:  # before the field existed: same content
        data = {**data, "schema_version": 2}
    return data


def read_results(source: str | Path | dict[str, Any]) -> Results:
    """Validate a ``results.json`` (a path or its parsed content), migrating older versions.

    Raises
    ------
    ResultsVersionError
        A schema version newer than this hyptest's.
    ValueError
        The content does not follow the contract (the message names the field).
    """
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    try:
        return Results.model_validate(migrate(data))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"results.json does not follow the results contract (version {SCHEMA_VERSION}): "
                         f"{where}: {first['msg']} ({error.error_count()} problem(s))") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`Results` (committed as ``docs/results.schema.json``)."""
    schema = Results.model_json_schema()
    schema["$id"] = f"https://hyptest.invalid/results.schema.v{SCHEMA_VERSION}.json"
    schema["title"] = f"hyptest results.json, schema version {SCHEMA_VERSION}"
    return schema


def schema_text() -> str:
    """:func:`json_schema` as the committed file's text."""
    return json.dumps(json_schema(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - ``python -m hyptest.contract > docs/results.schema.json``
    sys.stdout.write(schema_text())
