"""The independent units of run summaries: stated, inferred, and checked against the data.

Runs that share data are not independent: several orders or learning rates of
one (task, seed), or two settings that reuse the same zero-shot and ICL passes.
:func:`plan_units` decides which runs form one unit (cluster), says how, and
checks the decision against the runs' own lists:

1. **Stated or inferred.**  ``cluster_by`` when given (CLI ``--cluster-by``,
   mapping ``cluster_by:``); else ``task`` and ``seed`` where the runs have
   them; else every run is its own unit.
2. **Identical lists.**  Runs in different units whose list of some metric or
   baseline is identical share a pass: they are merged into one unit.  Only
   lists that cannot coincide by chance count: at least 4 layers, not constant,
   and not rounded (some value differs from its rounding to 3 decimals), as a
   float computed from model states is.
3. **Nearly identical lists.**  For each setting ``s``, the runs that differ
   only in ``s`` ("partners") are compared: when every such run's nearest
   neighbour, by the RMS difference of some list over layers, among all runs
   of its group is one of its partners, and the median over those runs of
   d(partner) / d(nearest other run) is at most 0.5 (with at least 3 sets of
   partners and 3 other runs), the partners share passes and are merged.
   Under independent runs that happens with small probability (each run's
   nearest neighbour is a partner with probability about
   partners / (runs − 1)).  Settings that are the declared source of
   replication (``seed``, ``task``, ``fold``, ... :data:`REPLICATION_SETTINGS`)
   are exempt: runs of one task under two seeds resemble each other without
   sharing a pass, so only identical lists merge them.
4. **Loud warning** when every run is its own unit and the file names differ
   only by a counter (``run_1``, ``run_2``, ...): nothing says which runs
   share seeds, demo sets or passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..importers.names import counter_template

__all__ = ["FIXED_COLUMNS", "UnitPlan", "plan_units"]

#: Columns of a summaries table that are not settings.
FIXED_COLUMNS: frozenset[str] = frozenset({"file", "line", "run", "metric", "baseline_name", "layer", "value",
                                           "baseline"})
#: Default cluster settings, where present.
DEFAULT_CLUSTER_BY: tuple[str, ...] = ("task", "seed")
#: An identical list counts only with at least this many layers (and values not rounded to 3 decimals).
MIN_IDENTICAL_LAYERS = 4
#: Near-identity needs at least this many sets of partners and this many other runs.
MIN_PARTNER_SETS = 3
MIN_OTHER_RUNS = 3
#: ... and the median over partnered runs of d(partner) / d(nearest other run) at most this.
MAX_NEAR_RATIO = 0.5
#: Settings that are the declared source of replication: their partners are expected to resemble each other
#: (same task), so only identical lists merge them, never nearly identical ones.
REPLICATION_SETTINGS: frozenset[str] = frozenset({"seed", "seeds", "run", "rep", "repeat", "replicate", "trial",
                                                  "fold", "split", "demo_set", "set", "sample", "task"})
#: Beyond this many runs in a group the near-identity check is skipped (it compares all pairs).
MAX_RUNS_CHECKED = 3000


@dataclass(frozen=True, slots=True)
class UnitPlan:
    """Which runs form one independent unit, and how that was decided.

    Attributes
    ----------
    unit : dict
        Run index -> unit label (0, 1, ...).
    cluster_by : tuple of str
        The settings of step 1 (``("run",)``: every run its own unit).
    stated : bool
        Whether `cluster_by` was given.
    n_runs, n_units : int
    how : str
        One sentence: how the units were found.
    checks : list of str
        What the data checks found (merges, and confirmations).
    warnings : list of str
        What the user must see (pseudo-replication risks).
    merged_by : list of str
        The settings (or ``"identical <list>"``) whose runs were merged.
    """

    unit: dict[int, int]
    cluster_by: tuple[str, ...]
    stated: bool
    n_runs: int
    n_units: int
    how: str
    checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    merged_by: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``results.json``)."""
        return {"n_runs": self.n_runs, "n_units": self.n_units, "cluster_by": list(self.cluster_by),
                "stated": self.stated, "how": self.how, "checks": list(self.checks),
                "warnings": list(self.warnings), "merged_by": list(self.merged_by)}


class _Union:
    def __init__(self, items: Iterable[int]) -> None:
        self.parent = {i: i for i in items}

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def _lists(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """List name -> runs x layers matrix, for every metric and (non-constant) baseline."""
    out: dict[str, pd.DataFrame] = {}
    for metric, sub in table.groupby("metric", sort=False):
        out[f"{metric}"] = sub.pivot_table(index="run", columns="layer", values="value", aggfunc="first")
        names = pd.unique(sub["baseline_name"])
        if len(names) == 1 and not str(names[0]).startswith("constant "):
            out[str(names[0])] = sub.pivot_table(index="run", columns="layer", values="baseline", aggfunc="first")
    return out


def _settings(table: pd.DataFrame, groups: Sequence[str]) -> pd.DataFrame:
    names = [c for c in table.columns if c not in FIXED_COLUMNS]
    runs = table.groupby("run", sort=True)[names].first() if names else pd.DataFrame(index=sorted(table["run"].unique()))
    return runs


def _fmt(x: float) -> str:
    return f"{x:.2g}"


def _near_identity(matrix: pd.DataFrame, partner_sets: list[list[int]]) -> dict[str, float] | None:
    """Evidence that partners share passes: every partnered run's nearest neighbour is a partner."""
    m = matrix.dropna(axis=0, how="any")
    runs = list(m.index)
    pos = {r: i for i, r in enumerate(runs)}
    sets = [[r for r in s if r in pos] for s in partner_sets]
    sets = [s for s in sets if len(s) >= 2]
    partnered = {r for s in sets for r in s}
    if len(sets) < MIN_PARTNER_SETS or len(runs) - 2 < MIN_OTHER_RUNS or len(runs) > MAX_RUNS_CHECKED:
        return None
    x = m.to_numpy(dtype=float)
    if np.ptp(x, axis=1).max() == 0:
        return None
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).mean(axis=2))
    np.fill_diagonal(d, np.inf)
    partner_of = {r: set(s) - {r} for s in sets for r in s}
    partner_d, other_d, ratios = [], [], []
    for r in partnered:
        i = pos[r]
        if runs[int(np.argmin(d[i]))] not in partner_of[r]:
            return None
        mine = np.array([pos[p] for p in partner_of[r]])
        mask = np.ones(len(runs), dtype=bool)
        mask[mine] = False
        mask[i] = False
        if not mask.any():
            return None
        partner_d += list(d[i, mine])
        other_d += list(d[i, mask])
        ratios.append(float(d[i, mine].min() / d[i, mask].min()) if d[i, mask].min() > 0 else np.inf)
    if float(np.median(ratios)) > MAX_NEAR_RATIO:
        return None
    return {"partner": float(np.median(partner_d)), "other": float(np.median(other_d)), "n_sets": len(sets),
            "n_runs": len(runs), "ratio": float(np.median(ratios))}


def plan_units(
    table: pd.DataFrame,
    *,
    cluster_by: Iterable[str] | None = None,
    group_by: Iterable[str] | None = None,
) -> UnitPlan:
    """Decide the independent units of a summaries table, and check them against the data.

    Parameters
    ----------
    table : pandas.DataFrame
        The ``table`` of :func:`hyptest.importers.read_run_summaries`.
    cluster_by : iterable of str, optional
        Settings whose combinations are the units (``[]`` or ``["run"]``:
        every run).  Default: ``task`` and ``seed`` where present and not in
        `group_by`, else every run.
    group_by : iterable of str, optional
        Settings tested separately; units never span groups.

    Returns
    -------
    UnitPlan

    Raises
    ------
    ValueError
        If a name in `cluster_by` or `group_by` is not a setting of the runs.

    Notes
    -----
    The data checks only ever merge units (fewer, larger units: the
    conservative direction); see the module docstring for the rules.
    """
    groups = list(group_by or [])
    settings = _settings(table, groups)
    known = [c for c in settings.columns]
    for name in groups:
        if name not in known:
            raise ValueError(f"`group_by`: {name!r} is not a setting of the runs (settings: "
                             f"{', '.join(known) or 'none'})")
    stated = cluster_by is not None
    if cluster_by is None:
        base = [c for c in DEFAULT_CLUSTER_BY if c in known and c not in groups]
    else:
        base = [c for c in cluster_by if c != "run"]
        for name in base:
            if name not in known:
                raise ValueError(f"`cluster_by`: {name!r} is not a setting of the runs (settings: "
                                 f"{', '.join(known) or 'none'}; `run` makes every run its own unit)")
    runs = list(settings.index)
    n_runs = len(runs)
    keys = settings[[*groups, *base]].astype(str).agg("\x1f".join, axis=1) if (groups or base) else None
    uf = _Union(runs)
    if base:
        first: dict[str, int] = {}
        for run, key in zip(runs, keys):
            uf.join(first.setdefault(key, run), run)
    by = tuple(base) if base else ("run",)
    n_base = len({uf.find(r) for r in runs})
    if base:
        how = (f"runs with the same {', '.join(base)} form one unit ("
               + ("stated: cluster_by" if stated else "default: task and seed where the runs have them") + ")")
    elif stated:
        how = "every run is its own unit (stated: cluster_by run / [])"
    else:
        how = "every run is its own unit: the runs have no task or seed setting to cluster by"
    checks: list[str] = []
    warnings: list[str] = []
    merged_by: list[str] = []
    group_of = (settings[groups].astype(str).agg("\x1f".join, axis=1) if groups else
                pd.Series("", index=settings.index))
    files = table.groupby("run", sort=True)["file"].first() if "file" in table.columns else None
    lists = _lists(table)
    _merge_identical_lists(lists, group_of, uf, files, checks, merged_by)  # check 2
    _merge_setting_partners(settings, known, groups, group_of, lists, uf, checks, merged_by)  # check 3
    labels: dict[int, int] = {}
    roots: dict[int, int] = {}
    for run in runs:
        labels[run] = roots.setdefault(uf.find(run), len(roots))
    n_units = len(roots)
    if n_units < n_base:
        how += f"; the data checks merged {n_base} units into {n_units}"
    if groups:
        how += f"; the groups of {', '.join(groups)} are tested separately, so units never span them"
    if n_units == n_runs and n_runs > 1:
        warnings += _every_run_its_own_unit(n_runs, files, stated)
    return UnitPlan(labels, by, stated, n_runs, n_units, how, checks, warnings, merged_by)


def _merge_identical_lists(lists: dict[str, pd.DataFrame], group_of: pd.Series, uf: "_Union", files: Any,
                           checks: list[str], merged_by: list[str]) -> None:
    """Check 2: runs of different units with identical per-layer lists share a pass; join their units.

    What was merged is appended to ``checks`` and ``merged_by``.
    """
    for name, matrix in lists.items():
        seen: dict[tuple[Any, ...], int] = {}
        pairs = []
        for run, row in matrix.iterrows():
            values = row.to_numpy(dtype=float)
            if (np.isnan(values).any() or len(values) < MIN_IDENTICAL_LAYERS or np.ptp(values) == 0
                    or np.allclose(values, np.round(values, 3), rtol=0, atol=1e-12)):
                continue
            key = (group_of[run], *values.tolist())
            if key in seen and uf.find(seen[key]) != uf.find(run):
                pairs.append((seen[key], run))
                uf.join(seen[key], run)
            seen.setdefault(key, run)
        if pairs:
            a, b = pairs[0]
            example = (f" (e.g. {Path(str(files[a])).name} and {Path(str(files[b])).name})" if files is not None
                       else "")
            checks.append(f"{len(pairs)} pair(s) of runs in different units have identical '{name}' lists{example}: "
                          "they share a pass, so they were merged into one unit")
            merged_by.append(f"identical {name}")


def _merge_setting_partners(settings: pd.DataFrame, known: list[str], groups: list[str], group_of: pd.Series,
                            lists: dict[str, pd.DataFrame], uf: "_Union", checks: list[str],
                            merged_by: list[str]) -> None:
    """Check 3: runs differing in one setting only whose lists are each other's nearest neighbours share passes.

    The first list that shows it for a setting joins those runs' units; what
    was found is appended to ``checks`` (and the setting to ``merged_by``).
    """
    varying = [c for c in known if c not in groups and settings[c].nunique(dropna=False) > 1]
    for s in (c for c in varying if c.lower() not in REPLICATION_SETTINGS):
        others = [c for c in varying if c != s]
        key = (group_of + "\x1f" + settings[others].astype(str).agg("\x1f".join, axis=1)) if others else group_of
        partner_sets = [list(idx) for _, idx in settings.groupby(key, sort=False).groups.items()]
        partner_sets = [p for p in partner_sets if settings.loc[p, s].nunique(dropna=False) > 1]
        for name, matrix in lists.items():
            found = None
            for g in pd.unique(group_of):
                in_group = [r for r in matrix.index if group_of[r] == g]
                sets = [p for p in partner_sets if group_of[p[0]] == g]
                found = _near_identity(matrix.loc[in_group], sets)
                if found is None:
                    break
            if found is None:
                continue
            joined = sum(uf.join(p[0], q) for p in partner_sets for q in p[1:])
            evidence = (f"runs that differ only in {s} have nearly the same '{name}' lists: each such run's nearest "
                        f"neighbour among the {found['n_runs']} runs (RMS difference over layers) is its {s} "
                        f"partner, in all {found['n_sets']} sets (median RMS difference {_fmt(found['partner'])} vs "
                        f"{_fmt(found['other'])} to other runs; median ratio to the nearest other run "
                        f"{_fmt(found['ratio'])}): they share passes")
            if joined:
                checks.append(evidence + f"; merged into one unit each ({s} is not a source of independent runs)")
                merged_by.append(s)
            else:
                checks.append(evidence + "; they are already in one unit")
            break


def _every_run_its_own_unit(n_runs: int, files: Any, stated: bool) -> list[str]:
    """The warning for a plan where every run is its own unit: loud when the file names are only a counter."""
    stems = [Path(str(f)).stem for f in files] if files is not None else []
    template = counter_template(stems) if stems else None
    if template is not None:
        return [f"EVERY RUN IS ITS OWN UNIT ({n_runs} runs) and the file names differ only by a counter "
                f"({template!r}): nothing says which runs share seeds, demo sets or passes. If any do, "
                "these p-values are too small (pseudo-replication). State the units with --cluster-by "
                "(mapping: cluster_by) or name the settings with --pattern (mapping: pattern)"]
    if not stated:
        return [f"each of the {n_runs} runs is its own unit: the runs have no task or seed setting to "
                "cluster by. If runs share seeds, demo sets or passes, state the units with --cluster-by "
                "(mapping: cluster_by) or name the settings with --pattern"]
    return []
