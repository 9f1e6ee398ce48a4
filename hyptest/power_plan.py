"""Power of a study design before running it (``hyptest power``).

Variance components come from a pilot run directory (its ``per_order.parquet``)
or from the command line; the design (demo sets, queries, orders) comes from
the study file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .stats.power import minimum_detectable_effect, simulate_power, variance_components_from_pilot
from .study import Study

__all__ = ["power_table"]


def _design(study: Study, n_pool_queries: int | None) -> tuple[int, int, int]:
    n_orders_spec = study.demos.n_orders
    n = max(study.demos.n_demos)
    n_orders = math.factorial(n) if n_orders_spec == "all" else int(n_orders_spec)
    n_queries = study.demos.n_queries
    if n_queries == "all":
        n_queries = n_pool_queries or 100
    return study.demos.n_sets, int(n_queries), n_orders


def power_table(
    study: Study,
    *,
    pilot_dir: str | Path | None = None,
    sd_icl: float | None = None,
    sd_gd: float | None = None,
    between_query_sd: float | None = None,
    n_simulations: int = 300,
    target_power: float = 0.8,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulated power of the Theorem-1 check for each GD method of a study.

    Parameters
    ----------
    study : Study
        The design: ``n_sets``, ``n_queries``, ``n_orders`` (of the largest N).
    pilot_dir : path, optional
        A run directory with ``per_order.parquet``: its order SD per method and
        between-query SD (logit scale) are used.
    sd_icl, sd_gd, between_query_sd : float, optional
        Variance components on the logit scale, overriding the pilot's.
    n_simulations : int
        Simulated studies per power estimate.
    target_power : float
        Power for the minimum detectable effect.
    seed : int
        Seed of the simulations (common random numbers across rows).

    Returns
    -------
    pandas.DataFrame
        One row per method: sd_icl, sd_method, power (at alpha and at the
        Bonferroni level of the study's family), its Wilson CI, and the
        minimum detectable ICL/method order-SD ratio at ``target_power``.
    """
    n_sets, n_queries, n_orders = _design(study, None)
    reference = study.analysis.reference
    methods = [m for m in study.method_names() if m != reference]
    order_sd: dict[str, float] = {}
    between_set_sd = 0.0
    if pilot_dir is not None:
        frame = pd.read_parquet(Path(pilot_dir) / "per_order.parquet")
        frame = frame.groupby(["method", "demo_set", "order_id", "query_id"], as_index=False)["p_gold"].mean()
        components = variance_components_from_pilot(frame)
        order_sd = dict(components.order_sd)
        between_query_sd = components.between_query_sd if between_query_sd is None else between_query_sd
        if math.isfinite(components.between_set_sd):
            between_set_sd = components.between_set_sd
    if sd_icl is not None:
        order_sd[reference] = sd_icl
    if reference not in order_sd or between_query_sd is None:
        raise ValueError(
            "power needs the reference method's order SD and the between-query SD: give --pilot RUN_DIR "
            "or --sd-icl and --between-query-sd (logit scale)"
        )
    alpha = study.analysis.alpha
    family = max(1, len(methods))
    rows: list[dict[str, Any]] = []
    for method in methods:
        sd_m = sd_gd if sd_gd is not None else order_sd.get(method, 0.0)
        common = dict(n_sets=n_sets, n_queries=n_queries, n_orders=n_orders, sd_gd=sd_m,
                      between_query_sd=between_query_sd, between_set_sd=between_set_sd)
        power = simulate_power(sd_icl=order_sd[reference], n_simulations=n_simulations, alpha=alpha,
                               rng=seed, **common)
        power_adj = simulate_power(sd_icl=order_sd[reference], n_simulations=n_simulations,
                                   alpha=alpha / family, rng=seed, **common)
        mde = minimum_detectable_effect(target_power=target_power, alpha=alpha / family,
                                        n_simulations=max(100, n_simulations // 2), rng=seed,
                                        scale="ratio", **common) if sd_m > 0 else None
        rows.append({
            "method": method, "sd_icl_logit": order_sd[reference], "sd_method_logit": sd_m,
            "between_query_sd": between_query_sd, "n_sets": n_sets, "n_queries": n_queries,
            "n_orders": n_orders, "power": power.power, "power_ci_low": power.ci_low,
            "power_ci_high": power.ci_high, "power_bonferroni": power_adj.power,
            "mde_ratio": None if mde is None else mde.effect,
        })
    return pd.DataFrame(rows)
