"""The family monitor of the adaptive design, and its calibration under continuous monitoring.

Unmarked: :func:`monitor_family` against a naive loop written from the rule
(Bonferroni: stop a comparison once ``e >= m / alpha``), the replay of a
prefix of the data agreeing with the replay of all of it (what makes a
resumed run take the same decisions), and decisions never undone.
Marked ``calibration``: simulated adaptive families of the default design
(3 methods vs ICL sharing ICL's outputs, 2 orders per independent demo set,
32 queries, rank-1 order effects), a look after every set, at planted ratio 1
(false "different") and at the margin 1.25 (false "equivalent"); fails when
the lower end of a Clopper-Pearson 95 % interval exceeds alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hyptest.validation.adaptive_calibration import AdaptiveDesign, calibrate_adaptive, run_adaptive_family
from hyptest.validation.calibration import OutputModel
from hyptest.stats.anytime import anytime_test
from hyptest.stats.anytime_family import closed_mean_pvalues, monitor_family

BOUND = math.log(4)
MARGIN = math.log(1.25)


def _family(seed: int, m: int = 4, n: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.choice([0.0, 0.1, 0.8, 1.3], size=m)
    return [np.clip(rng.normal(mu, 0.8, size=n), -BOUND, BOUND) for mu in means]


def _naive_bonferroni(xs, alpha, max_n):
    """A comparison stops at the first n with either e-value >= m / alpha (or its budget), frozen there."""
    m = len(xs)
    out = []
    for x, budget in zip(xs, max_n):
        t = anytime_test(x, bound=BOUND, margin=MARGIN)
        stop, status = budget, "budget"
        for n in range(1, budget + 1):
            if t.e_difference[n - 1] >= m / alpha or t.e_equivalence[n - 1] >= m / alpha:
                stop, status = n, "decided"
                break
        sig = t.e_difference[stop - 1] >= m / alpha
        eq = t.e_equivalence[stop - 1] >= m / alpha
        verdict = "negligible" if sig and eq else "different" if sig else "equivalent" if eq else "inconclusive"
        out.append((stop, status, verdict))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_bonferroni_monitor_matches_the_naive_rule(seed):
    xs = _family(seed)
    max_n = [30, 25, 30, 12]
    state = monitor_family(xs, bound=BOUND, margins=[MARGIN] * 4, max_n=max_n, adjust="bonferroni")
    got = [(s.n_used, s.status, s.verdict) for s in state.comparisons]
    assert got == _naive_bonferroni(xs, 0.05, max_n)


def _closure_by_enumeration(e):
    """Closed testing with the mean of e-values, by listing every subset that holds i."""
    m = len(e)
    out = []
    for i in range(m):
        worst = math.inf
        for mask in range(1 << m):
            if mask >> i & 1:
                members = [e[j] for j in range(m) if mask >> j & 1]
                worst = min(worst, sum(members) / len(members))
        out.append(1.0 if worst <= 1 else 1.0 / worst)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_closed_mean_pvalues_equal_the_enumerated_closure(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 9))
    e = np.exp(rng.normal(1.0, 2.0, size=m))
    e[rng.random(m) < 0.2] = rng.choice([0.0, 1.0, np.inf])
    np.testing.assert_allclose(closed_mean_pvalues(e), _closure_by_enumeration(list(e)), rtol=1e-12, atol=0)


def _holm(p):
    """Holm's adjusted p-values from the definition: max over j <= i of (m - j + 1) p_(j), capped at 1."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    out = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_closed_mean_rejects_everything_holm_rejects():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(5)
    families = [np.exp(rng.normal(1.5, 2.0, size=int(rng.integers(2, 12)))) for _ in range(200)]
    for e in families[:10]:  # the hand-written Holm is statsmodels' (each call of which costs a gc pass)
        np.testing.assert_allclose(_holm(np.minimum(1.0, 1.0 / e)),
                                   multipletests(np.minimum(1.0, 1.0 / e), method="holm")[1], rtol=1e-12)
    for e in families:
        assert (closed_mean_pvalues(e) <= _holm(np.minimum(1.0, 1.0 / e)) + 1e-12).all()
    # and strictly more when every comparison is far from its null: e = 30 each, m = 3, alpha = 0.05
    assert (closed_mean_pvalues([30.0] * 3) <= 0.05).all()
    assert (_holm([1 / 30] * 3) > 0.05).all()


def _naive_closed(xs, alpha, max_n):
    """Look after every observation; e-values frozen at a decision or the budget; the closure enumerated at
    every look; a comparison's verdict is its first rejection (difference or equivalence), which stands."""
    m = len(xs)
    tests = [anytime_test(x, bound=BOUND, margin=MARGIN) for x in xs]
    stop = [None] * m
    sig, eq = [False] * m, [False] * m
    for n in range(1, max(max_n) + 1):
        used = [stop[i] if stop[i] is not None else min(n, max_n[i]) for i in range(m)]
        pd_ = _closure_by_enumeration([tests[i].e_difference[used[i] - 1] for i in range(m)])
        pe_ = _closure_by_enumeration([tests[i].e_equivalence[used[i] - 1] for i in range(m)])
        for i in range(m):
            sig[i] = sig[i] or pd_[i] <= alpha
            eq[i] = eq[i] or pe_[i] <= alpha
        for i in range(m):
            if stop[i] is None and (sig[i] or eq[i] or used[i] >= max_n[i]):
                stop[i] = used[i]
        if all(s is not None for s in stop):
            break
    verdicts = ["negligible" if s and q else "different" if s else "equivalent" if q else "inconclusive"
                for s, q in zip(sig, eq)]
    return list(zip(stop, verdicts))


@pytest.mark.parametrize("seed", range(6))
def test_holm_monitor_matches_the_naive_closed_rule(seed):
    xs = _family(seed, m=4)
    max_n = [30, 25, 30, 12]
    state = monitor_family(xs, bound=BOUND, margins=[MARGIN] * 4, max_n=max_n, adjust="holm")
    assert [(s.n_used, s.verdict) for s in state.comparisons] == _naive_closed(xs, 0.05, max_n)


@pytest.mark.parametrize("adjust", ["holm", "bh", "bonferroni"])
@pytest.mark.parametrize("check_every", [1, 3])
def test_a_prefix_replays_the_same_decisions(adjust, check_every):
    # what a resumed run sees: the data of its finished rounds; the decisions up to there must agree
    for seed in range(6):
        xs = _family(seed, m=5)
        full = monitor_family(xs, bound=BOUND, margins=[MARGIN] * 5, max_n=[30] * 5, adjust=adjust,
                              check_every=check_every)
        for looks in (1, 2, 4):
            cut = [x[: min(len(x), looks * check_every)] for x in xs]
            part = monitor_family(cut, bound=BOUND, margins=[MARGIN] * 5, max_n=[30] * 5, adjust=adjust,
                                  check_every=check_every)
            assert part.n_looks == looks
            for a, b in zip(part.comparisons, full.comparisons):
                if a.stopped:  # stopped in the prefix: the same stop in the full replay
                    assert (a.stop_look, a.n_used, a.status) == (b.stop_look, b.n_used, b.status)
                else:
                    assert b.stop_look is None or b.stop_look > looks


@pytest.mark.parametrize("adjust", ["holm", "bh"])
def test_decisions_are_never_undone(adjust):
    for seed in range(10):
        xs = _family(seed, m=6)
        state = monitor_family(xs, bound=BOUND, margins=[MARGIN] * 6, max_n=[30] * 6, adjust=adjust)
        for s in state.comparisons:
            if s.status == "decided":
                assert s.verdict != "inconclusive"
                last = s.looks[-1]
                assert min(last["p_difference_adjusted"], last["p_equivalence_adjusted"]) <= 0.05


def test_the_stopped_data_are_not_needed():
    # a comparison that stopped early has no more observations; the replay must not wait for them
    xs = [np.full(30, BOUND), _family(1, m=1)[0]]
    first = monitor_family(xs, bound=BOUND, margins=[MARGIN] * 2, max_n=[30, 30])
    stop = first.comparisons[0].n_used
    assert first.comparisons[0].status == "decided" and stop < 30
    again = monitor_family([xs[0][:stop], xs[1]], bound=BOUND, margins=[MARGIN] * 2, max_n=[30, 30])
    assert [(s.n_used, s.verdict) for s in again.comparisons] == [(s.n_used, s.verdict) for s in first.comparisons]


def test_simulated_family_runs_and_stops_strong_effects_early():
    rows = run_adaptive_family(AdaptiveDesign(max_sets=24), 3, 4.0, OutputModel(), [1])
    assert list(rows.columns) == ["slice", "true_ratio", "verdict", "status", "n_sets", "estimate"]
    assert (rows["verdict"] == "different").all() and (rows["n_sets"] < 24).all()


def test_a_mixed_family_plants_each_methods_ratio():
    rows = run_adaptive_family(AdaptiveDesign(max_sets=24), 6, (4.0, 4.0, 1.0), OutputModel(), [3])
    assert rows["true_ratio"].tolist() == [4.0, 4.0, 1.0] * 2 and rows["slice"].tolist() == [0, 0, 0, 1, 1, 1]
    strong = rows[rows["true_ratio"] == 4.0]
    assert (strong["verdict"] == "different").all()


@pytest.mark.calibration
def test_adaptive_error_rates_under_continuous_monitoring():
    table = calibrate_adaptive(AdaptiveDesign(max_sets=24), family_sizes=(3,), ratios=(1.0, 1.25),
                               rhos=(0.0, 0.8), n_sims=100, seed=7)
    assert len(table) == 8
    for row in table.itertuples():
        assert row.mc_low <= 0.05, row
    power = calibrate_adaptive(AdaptiveDesign(max_sets=24), family_sizes=(3,), ratios=(4.0,), rhos=(0.0,),
                               n_sims=20, seed=7)
    assert power["rate"].iloc[0] >= 0.9
