"""The O(n p) Cox closed forms (skvif/survival/_fast.py) against the generic autograd path."""

import sys
import warnings

import numpy as np
import pytest
from autograd import grad, hessian, jacobian
from hypothesis import Phase, given, settings, strategies as st

from _accuracy import assert_agrees
from skvif import _engine, get_influence
from skvif.survival import CoxPHInfluence
from skvif.survival import _fast_hessian
from skvif.survival._fast import negative_log_partial_likelihood as closed_form_loss
from skvif.survival._fast import (CoxDerivatives, _group_intervals, cumulative_at,
                                  gradient_and_hessian, gradient_change_rows, gradient_changes,
                                  hessian_changes, weight_derivatives)
from skvif.survival._objective import RiskSets
from skvif.survival._fast_hessian import closed_form_hessian_changes


def _generic_vif(model, n):
    return np.asarray(_engine.influence(model._loss(), model.coef_, n,
                                        [[i] for i in range(n)], method="vif", batched=True))


def test_efron_sums_match_slot_by_slot_sums():
    """Every regime of _efron_sums (slot by slot, series, digamma) against math.fsum."""
    import math

    from skvif.survival._fast import _efron_sums

    rng = np.random.default_rng(11)
    d = np.array([1, 2, 5, 40, 64, 65, 70, 300, 1000] * 6)
    q = np.repeat([1e-12, 1e-6, 1e-3, 0.2, 0.5, 0.9], 9)   # d0 / s0
    s0 = 10.0 ** rng.uniform(-100, 100, d.size)
    d0 = q * s0
    got = _efron_sums(s0, d0, d, squares=True)
    for i in range(d.size):
        f = [k / d[i] for k in range(d[i])]
        a = [s0[i] - fk * d0[i] for fk in f]
        want = [math.fsum(1 / ak for ak in a), math.fsum(fk / ak for fk, ak in zip(f, a)),
                math.fsum(1 / ak ** 2 for ak in a),
                math.fsum(fk / ak ** 2 for fk, ak in zip(f, a)),
                math.fsum(fk * fk / ak ** 2 for fk, ak in zip(f, a))]
        np.testing.assert_allclose(got[:, i], want, rtol=1e-12, atol=0,
                                   err_msg=f"d={d[i]}, q={q[i]}")


def test_efron_low_risk_tied_deaths_match_refits():
    # issue 11 item 1: two tied first deaths with very low risk (digamma cancellation)
    rng = np.random.default_rng(1)
    n = 3000
    X = rng.normal(size=(n, 1))
    t = rng.exponential(np.exp(-X[:, 0]))
    c = rng.exponential(3, n)
    time, event = np.minimum(t, c) + 0.01, t <= c
    X[:2, 0] = -30.0
    time[:2] = 0.001
    event[:2] = True
    m = CoxPHInfluence().fit(X, np.c_[time, event])
    refit = m.influence_(method="loo", groups=np.arange(n))[:2, 0]   # generic exact refits
    np.testing.assert_allclose(m.influence_()[:2, 0], refit, rtol=5e-3)
    np.testing.assert_allclose(m.influence_(method="newton")[:2, 0], refit, rtol=5e-3)
    np.testing.assert_allclose(m.influence_()[:2], _generic_vif(m, n)[:2], rtol=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_zero_weight_event_row_matches_generic(ties):
    # issue 11 item 5: a zero-weight death at the first event time gave 0/0 for the top-risk row
    rng = np.random.default_rng(0)
    n = 200
    X = rng.normal(size=(n, 2))
    time = rng.exponential(size=n)
    event = rng.random(n) < 0.7
    w = np.ones(n)
    deaths = np.flatnonzero(event)
    w[deaths[np.argmin(time[deaths])]] = 0.0
    m = CoxPHInfluence(ties=ties).fit(X, np.c_[time, event], sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = np.asarray(m.influence_())
    generic = _generic_vif(m, n)
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, generic, rtol=1e-9, atol=1e-12 * np.abs(generic).max())


def _adversarial(seed, n, ties_level, big_group, eta_max, n_strata):
    rng = np.random.default_rng(seed)
    units = 10.0 ** rng.uniform(-6, 6, size=3)
    X = rng.normal(size=(n, 3)) * units
    time = rng.exponential(size=n)
    if ties_level:
        time = np.ceil(time * ties_level) / ties_level
    if big_group:
        time[:big_group] = np.median(time)
    event = rng.random(n) < 0.7
    if big_group:
        event[:big_group] = True
    w = rng.choice([0.0, 0.5, 1.0, 2.5], size=n, p=[0.1, 0.2, 0.5, 0.2])
    strata = rng.integers(n_strata, size=n)
    return X, np.c_[time, event], w, strata, units, rng


def _at_params(model, units, eta_max, rng):
    """Params with max |x beta| = eta_max on the model's (centered) design."""
    beta = rng.normal(size=units.size) / units
    eta = model._X @ beta
    return beta * eta_max / np.abs(eta).max()


@settings(max_examples=12, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 2**16), ties_level=st.sampled_from([0, 2, 20]),
       big_group=st.sampled_from([0, 30]), eta_max=st.sampled_from([1.0, 20.0, 50.0]),
       n_strata=st.sampled_from([1, 3]), ties=st.sampled_from(["efron", "breslow"]))
def test_closed_forms_match_autograd(seed, ties_level, big_group, eta_max, n_strata, ties):
    n = 50
    X, y, w, strata, units, rng = _adversarial(seed, n, ties_level, big_group, eta_max, n_strata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata)
    beta = _at_params(m, units, eta_max, rng)
    args = (beta, m._X, m._risk_sets, m._case_weights, ties)
    loss = m._loss()
    g, H = grad(loss), hessian(loss)
    ones = np.ones(n)
    g_full, H_full = g(beta, ones), H(beta, ones)
    g_ref = np.empty((n, beta.size))
    H_ref = np.empty((n, beta.size, beta.size))
    for u in range(n):
        keep = ones.copy()
        keep[u] = 0.0
        g_ref[u], H_ref[u] = g_full - g(beta, keep), H_full - H(beta, keep)
    scale_g = np.abs(g_ref).max(axis=0) + 1e-300           # per column: units differ by 1e12
    scale_H = np.abs(H_ref).max(axis=0) + 1e-300
    assert np.abs((gradient_changes(*args) - g_ref) / scale_g).max() < 1e-8
    some = rng.permutation(n)[:n // 2]   # any rows, in any order (newton's chunks)
    assert np.abs((gradient_change_rows(*args)(some) - g_ref[some]) / scale_g).max() < 1e-8
    for weights in (ones, keep):  # (keep: the last row deleted)
        value = loss(beta, weights)
        assert abs(closed_form_loss(beta, m._X, m._risk_sets, m._case_weights * weights,
                                    ties) - value) <= 1e-12 * (1 + abs(value))
    assert np.abs((hessian_changes(*args) - H_ref) / scale_H).max() < 1e-7
    assert np.abs((closed_form_hessian_changes(*args) - H_ref) / scale_H).max() < 1e-7
    loss_if = m._loss(smooth=True)
    D_ref = jacobian(lambda v: grad(loss_if)(beta, v))(ones)
    scale_D = np.abs(D_ref).max(axis=1, keepdims=True) + 1e-300
    assert np.abs((weight_derivatives(*args) - D_ref) / scale_D).max() < 1e-8


@pytest.mark.parametrize("risk", [-30.0, 0.0, 3.0])
def test_big_efron_tie_group_matches_autograd(risk):
    # groups above the slot-by-slot size: the series in d0/s0 (low risk) and digamma (high risk)
    rng = np.random.default_rng(3)
    n, d = 200, 100
    X = rng.normal(size=(n, 2))
    time = rng.exponential(size=n) + 1.0
    time[:d] = 0.5
    X[:d, 0] += risk
    event = rng.random(n) < 0.7
    event[:d] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence().fit(X, np.c_[time, event])
    beta = m.coef_
    g, ones = grad(m._loss()), np.ones(n)
    g_full = g(beta, ones)
    ref = np.array([g_full - g(beta, np.where(np.arange(n) == u, 0.0, 1.0)) for u in range(n)])
    fast = gradient_changes(beta, m._X, m._risk_sets, m._case_weights, "efron")
    assert np.abs((fast - ref) / np.abs(ref).max(axis=0)).max() < 1e-9


@pytest.mark.parametrize("risk", [-30.0, 0.0, 3.0])
@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_big_tie_group_hessian_changes_match_autograd(risk, ties, monkeypatch):
    # own-group Efron sums of the closed-form Hessian changes above the slot-by-slot size:
    # series in d0/s0 (low risk), digamma and trigamma (high risk); weights and strata;
    # the risk-set second moments kept whole and in blocks of 3 segments
    rng = np.random.default_rng(7)
    n, d = 160, 90
    X = rng.normal(size=(n, 2)) * [1.0, 1e3]
    time = rng.exponential(size=n) + 1.0
    time[:d] = 0.5
    X[:d, 0] += risk
    event = rng.random(n) < 0.7
    event[:d] = True
    w = rng.choice([0.0, 1.0, 2.0], size=n, p=[0.1, 0.6, 0.3])
    w[:d] = np.maximum(w[:d], 1.0)
    strata = (np.arange(n) >= 130).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties=ties).fit(X, np.c_[time, event], sample_weight=w,
                                          strata=strata)
    beta = np.array([1.0, 1e-4])   # (not the fit: low-risk tied deaths stay low-risk)
    H, ones = hessian(m._loss()), np.ones(n)
    H_full = H(beta, ones)
    ref = np.array([H_full - H(beta, np.where(np.arange(n) == u, 0.0, 1.0)) for u in range(n)])
    fast = closed_form_hessian_changes(beta, m._X, m._risk_sets, m._case_weights, ties)
    assert np.abs((fast - ref) / (np.abs(ref).max(axis=0) + 1e-300)).max() < 1e-7
    monkeypatch.setattr(_fast_hessian, "_segments_per_block", lambda *shape: 3)
    blocks = _fast_hessian.CoxHessianChanges(beta, m._X, m._risk_sets, m._case_weights, ties)
    assert blocks.second_moments.whole is None
    assert np.abs((blocks.rows(np.arange(n)) - ref) / (np.abs(ref).max(axis=0) + 1e-300)
                  ).max() < 1e-7


@pytest.mark.parametrize("direct_rows", [0, 16])
def test_closed_form_hessian_changes_match_complex_step(direct_rows, monkeypatch):
    # larger adversarial problems against the complex-step reference, all code paths:
    # rows dominating a slot by full Hessians (few) or by the complex step (many), the
    # series tables streamed in blocks of any size (and restarted when rows come out of
    # order), blocks of rows of any size, both ways of summing second moments and of
    # summing the series
    for seed, (ties_level, big_group, eta_max, n_strata) in enumerate(
            [(0, 0, 50.0, 1), (20, 80, 20.0, 3), (2, 80, 50.0, 2), (0, 0, 1.0, 1)]):
        X, y, w, strata, units, rng = _adversarial(seed, 400, ties_level, big_group, eta_max,
                                                   n_strata)
        for ties in ("efron", "breslow"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata)
            beta = _at_params(m, units, eta_max, rng)
            args = (beta, m._X, m._risk_sets, m._case_weights, ties)
            ref = hessian_changes(*args)
            scale = np.abs(ref).max(axis=0) + 1e-300
            monkeypatch.setattr(_fast_hessian, "_DIRECT_ROWS", direct_rows)
            # second-moment sums by one matrix product per segment, or by outer products
            monkeypatch.setattr(_fast_hessian, "_GEMM_NUMBERS", 0 if direct_rows else 10**9)
            # series by one product per group, or term by term
            monkeypatch.setattr(_fast_hessian, "_SHARED_GROUP", 0 if direct_rows else 10**9)
            changes = _fast_hessian.CoxHessianChanges(*args)
            # the series tables streamed one group at a time, in windows of one group, the
            # risk-set second moments in blocks of segments (summed again from each
            # block's start)
            monkeypatch.setattr(_fast_hessian, "_STREAM_ELEMENTS", 0)
            monkeypatch.setattr(_fast_hessian, "_WINDOW_ELEMENTS", 0)
            monkeypatch.setattr(_fast_hessian, "_segments_per_block",
                                lambda *shape: 1 if direct_rows else 7)
            streamed = _fast_hessian.CoxHessianChanges(*args)
            assert streamed.second_moments.whole is None
            rows = rng.permutation(400)
            for out in (changes.rows(np.arange(400)), streamed.rows(np.arange(400)),
                        np.concatenate([changes.rows(rows[:7]), changes.rows(rows[7:])])[
                            np.argsort(rows)]):
                assert np.abs((out - ref) / scale).max() < 1e-7
            monkeypatch.undo()


def test_closed_forms_extreme_linear_predictor():
    # |x beta| = 50 with ties: a risk set dominated by one row (a_s - r_u cancelled)
    test_closed_forms_match_autograd.hypothesis.inner_test(
        seed=342, ties_level=20, big_group=0, eta_max=50.0, n_strata=1, ties="efron")


def _explicit_risk_sets(time, event, entry, strata, w):
    """Each (stratum, event time) with weighted deaths: its at-risk, later and not-entered rows."""
    for s in np.unique(strata):
        for t in np.unique(time[event & (strata == s)]):
            dead = event & (strata == s) & (time == t)
            if w[dead].sum() > 0:
                later = (strata == s) & (time >= t)
                yield dead, later & (entry < t), later, later & (entry >= t)


def _entry_rounding_reference(eta, time, event, entry, strata, w):
    """eps (A + B) / T over the risk sets: A later rows, B not entered, T = A - B at risk."""
    r = w * np.exp(eta - eta.max())
    return np.finfo(float).eps * max(
        (r[later].sum() + r[waiting].sum()) / r[at_risk].sum()
        for _, at_risk, later, waiting in _explicit_risk_sets(time, event, entry, strata, w))


def _breslow_hessian_long_double(beta, X, time, event, entry, strata, w):
    """The Breslow Hessian from explicit risk sets in long double: no differences of sums."""
    X, eta = X.astype(np.longdouble), X.astype(np.longdouble) @ beta.astype(np.longdouble)
    H = np.zeros((X.shape[1],) * 2, dtype=np.longdouble)
    for dead, at_risk, _, _ in _explicit_risk_sets(time, event, entry, strata, w):
        r = w[at_risk] * np.exp(eta[at_risk] - eta[at_risk].max())
        centered = X[at_risk] - (r @ X[at_risk]) / r.sum()
        H += w[dead].sum() * (centered.T * r) @ centered / r.sum()
    return H.astype(float)


def _breslow_gradient_changes_long_double(beta, X, time, event, entry, strata, w):
    """``g(all) - g(without u)`` of the Breslow objective, explicit risk sets in long double."""
    X, eta = X.astype(np.longdouble), X.astype(np.longdouble) @ beta.astype(np.longdouble)

    def gradient(wt):
        r, g = wt * np.exp(eta - eta.max()), np.zeros(X.shape[1], dtype=np.longdouble)
        for dead, at_risk, _, _ in _explicit_risk_sets(time, event, entry, strata, wt):
            g += wt[dead].sum() * (r[at_risk] @ X[at_risk]) / r[at_risk].sum() - wt[dead] @ X[dead]
        return g
    w = w.astype(np.longdouble)
    full = gradient(w)
    return np.array([full - gradient(np.where(np.arange(w.size) == u, 0, w))
                     for u in range(w.size)]).astype(float)


@settings(max_examples=10, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 2**16), ties_level=st.sampled_from([0, 2, 20]),
       big_group=st.sampled_from([0, 30]), eta_max=st.sampled_from([1.0, 20.0]),
       n_strata=st.sampled_from([1, 3]))
def test_gradient_changes_with_delayed_entry(seed, ties_level, big_group, eta_max, n_strata):
    # every (row, slot) pair summed exactly, risk sets that one row dominates summed again
    # without it: Breslow against explicit risk sets in long double, Efron against autograd
    # (whose own rounding the delayed-entry bound allows); some rows enter at -1, before all
    n = 60
    X, y, w, strata, units, rng = _adversarial(seed, n, ties_level, big_group, eta_max, n_strata)
    entry = np.where(rng.random(n) < 0.3, -1.0, rng.uniform(0, 0.5, n) * y[:, 0])
    time, event = y[:, 0], y[:, 1].astype(bool)
    for ties in ["breslow", "efron"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata, entry=entry)
        beta = _at_params(m, units, eta_max, rng)
        got = gradient_changes(beta, m._X, m._risk_sets, m._case_weights, ties)
        rounding = _entry_rounding_reference(m._X @ beta, time, event, entry, strata, w)
        if ties == "breslow":
            reference = _breslow_gradient_changes_long_double(beta, m._X, time, event, entry,
                                                              strata, w)
            tolerance = 1e-12 + 40 * rounding
        else:
            g, ones = grad(m._loss()), np.ones(n)
            reference = np.array([g(beta, ones) - g(beta, np.where(np.arange(n) == u, 0.0, 1.0))
                                  for u in range(n)])
            tolerance = 1e-9 + 40 * rounding
        scale = np.abs(reference).max(axis=0) + 1e-300
        assert np.abs((got - reference) / scale).max() < tolerance
    # the estimator's vif takes this path, and equals the generic one (per unit autograd)
    generic = get_influence(m._loss(), m.coef_.copy(), n, derivatives=CoxDerivatives(
        m.coef_, m._X, m._risk_sets, m._case_weights, "efron", row_changes=False)).changes()
    assert m.get_influence().derivatives.gradient_changes is not None
    rounding = _entry_rounding_reference(m._X @ m.coef_, time, event, entry, strata, w)
    scale = np.abs(generic).max(axis=0) + 1e-300
    assert np.abs((m.influence_() - generic) / scale).max() < 1e-9 + 40 * rounding


@pytest.mark.parametrize("seed, ties_level, big_group, eta_max, n_strata",
                         [(3, 20, 30, 5.0, 2), (1, 0, 0, 20.0, 1), (2, 5, 60, 50.0, 3),
                          (4, 0, 0, 1.0, 1)])
def test_delayed_entry_interval_tree_equals_every_pair_exactly(seed, ties_level, big_group,
                                                               eta_max, n_strata, monkeypatch):
    # with delayed entry the gradient changes' series runs over each row's interval of
    # event times, from a segment tree of direct sums (nodes where the row holds more
    # than _RATIO of the smallest risk set split, groups where it still does summed
    # exactly): the sums of every (row, slot) pair, for rows entering before all times,
    # early (small first risk sets) or late, heavy ties, strata, zero weights, |x beta|
    from skvif.survival import _fast
    n = 400
    X, y, w, strata, units, rng = _adversarial(seed, n, ties_level, big_group, eta_max,
                                               n_strata)
    entries = [np.where(rng.random(n) < 0.3, -1.0, rng.uniform(0, 0.5, n) * y[:, 0]),
               rng.uniform(0, 0.9, n) * y[:, 0],
               np.where(rng.random(n) < 0.5, -1.0, rng.uniform(0.5, 1.0, n) * y[:, 0] - 1e-9)]
    for entry, ties in zip(entries, ["efron", "breslow", "efron"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata,
                                              entry=entry)
        beta = _at_params(m, units, eta_max, rng)
        args = (beta, m._X, m._risk_sets, m._case_weights, ties)
        changes = _fast.gradient_change_rows(*args)
        assert changes.tree is not None
        tree = changes(np.arange(n))
        with monkeypatch.context() as patch:
            patch.setattr(_fast, "_TREE_ELEMENTS", 0)   # (too large: every pair exactly)
            every_pair = _fast.gradient_change_rows(*args)
            assert every_pair.tree is None
            reference = every_pair(np.arange(n))
        scale = np.abs(reference).max(axis=0) + 1e-300
        assert np.abs((tree - reference) / scale).max() < 1e-12


@pytest.mark.parametrize("seed, ties_level, big_group, eta_max, n_strata, ties", [
    (3, 0, 0, 1.0, 1, "efron"), (4, 20, 30, 20.0, 3, "efron"), (5, 2, 0, 5.0, 2, "breslow")])
def test_newton_with_delayed_entry_equals_the_generic_engine(seed, ties_level, big_group,
                                                             eta_max, n_strata, ties):
    # with delayed entry, newton's Hessian changes are the complex step of the exact
    # gradient changes (p passes of O(pairs p), not one autograd fit per row): the steps
    # of the generic engine, zero weights, rows entering before all times, strata, ties
    n = 60
    X, y, w, strata, units, rng = _adversarial(seed, n, ties_level, big_group, eta_max, n_strata)
    entry = np.where(rng.random(n) < 0.3, -1.0, rng.uniform(0, 0.5, n) * y[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata, entry=entry)
        results = m.get_influence()
        assert results.derivatives.hessian_changes is not None
        fast = m.influence_(method="newton", as_frame=False)
        generic = get_influence(m._loss(), m.coef_.copy(), n, derivatives=CoxDerivatives(
            m.coef_, m._X, m._risk_sets, m._case_weights, ties, row_changes=False)).changes(
                method="newton")
    rounding = _entry_rounding_reference(m._X @ m.coef_, y[:, 0], y[:, 1].astype(bool), entry,
                                         strata, w)
    scale = np.abs(generic).max(axis=0)
    assert np.all(scale > 0)
    assert np.abs((fast - generic) / scale).max() < 1e-11 + 40 * rounding   # (seen: 4e-13)
    # and against exact refits, column by column (seen: slope 0.99-1.024, max error
    # 0.017-0.045 of the largest change, r >= 0.9995)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refits = m.influence_(method="loo", as_frame=False)
    for j in range(fast.shape[1]):
        assert_agrees(fast[:, j], refits[:, j], min_r=0.999, slope=(0.95, 1.05),
                      max_error=0.08, label=f"newton with entry, column {j}")


@pytest.mark.parametrize("seed", [7919 * k for k in range(1, 13)] + [65536])
def test_entry_rounding_bounds_the_error_of_delayed_entry_sums(seed):
    # delayed entry with x beta spanning ~40: the risk-set sums are differences that lose up
    # to all their digits; the bound says how many, against explicit sums in long double
    n = 60
    X, y, w, strata, units, rng = _adversarial(seed, n, 0, 0, 20.0, 3)
    entry = rng.uniform(0, 0.5, n) * y[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties="breslow").fit(X, y, sample_weight=w, strata=strata,
                                               entry=entry)
    beta = _at_params(m, units, 20.0, rng)
    time, event = y[:, 0], y[:, 1].astype(bool)
    bound = m._risk_sets.entry_rounding(m._X @ beta, m._case_weights)
    reference = _entry_rounding_reference(m._X @ beta, time, event, entry, strata, w)
    assert reference / 2 <= bound <= max(2 * reference, 1e-15) or bound == np.inf
    _, H = gradient_and_hessian(beta, m._X, m._risk_sets, m._case_weights, "breslow")
    exact = _breslow_hessian_long_double(beta, m._X, time, event, entry, strata, w)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    assert np.abs((H - exact) / scale).max() <= 20 * bound + 1e-13


def test_fit_warns_when_delayed_entry_sums_lose_digits():
    # the riskiest rows (log hazard 20 x) enter late: before they do, each risk set holds
    # ~exp(-10) of the risk of the rows counted as not yet entered
    rng = np.random.default_rng(0)
    n = 300
    x = rng.uniform(-1, 1, n)
    entry = np.where(x > 0.5, 10.0, 0.0)
    time = np.minimum(entry + rng.exponential(np.exp(-20.0 * x)), 20.0)
    y = np.c_[time, time < 20.0]
    with pytest.warns(UserWarning, match="Delayed entry.*accurate to about"):
        m = CoxPHInfluence().fit(x[:, None], y, entry=entry)
    reference = _entry_rounding_reference(m._X @ m.coef_, time, y[:, 1].astype(bool), entry,
                                          np.zeros(n, dtype=int), np.ones(n))
    assert reference > 1e-6
    # every row entered from the start: no differences, no such warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CoxPHInfluence().fit(x[:, None], y, entry=np.full(n, -1.0))
    assert not [w for w in caught if "Delayed entry" in str(w.message)]


@settings(max_examples=12, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 2**16), ties_level=st.sampled_from([0, 2, 20]),
       big_group=st.sampled_from([0, 30]), eta_max=st.sampled_from([1.0, 20.0, 50.0]),
       n_strata=st.sampled_from([1, 3]), ties=st.sampled_from(["efron", "breslow"]),
       entry=st.booleans(), alpha=st.sampled_from([0.0, 0.5]))
def test_closed_form_gradient_and_hessian_match_autograd(seed, ties_level, big_group, eta_max,
                                                         n_strata, ties, entry, alpha):
    # the fit's, the standard errors' and every refit's gradient and Hessian
    # (with delayed entry both sides subtract the not-yet-entered rows' risk from the
    # risk-set sums, which loses digits as |x beta| spans tens: capped at 40, and the
    # tolerance widened by the rounding those differences allow, an independent bound)
    n = 60
    eta_max = min(eta_max, 20.0) if entry else eta_max
    X, y, w, strata, units, rng = _adversarial(seed, n, ties_level, big_group, eta_max, n_strata)
    start = rng.uniform(0, 0.5, n) * y[:, 0] if entry else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties=ties, alpha=alpha).fit(X, y, sample_weight=w, strata=strata,
                                                       entry=start)
    beta = _at_params(m, units, eta_max, rng)
    # (back to the first weights last: what was kept for the weights before is not reused)
    ones = np.ones(n)
    for weights in (ones, rng.choice([0.0, 1.0], size=n, p=[0.2, 0.8]), ones):
        g_ref = grad(m._loss())(beta, weights)
        H_ref = hessian(m._loss())(beta, weights)
        g, H = gradient_and_hessian(beta, m._X, m._risk_sets, m._case_weights * weights, ties,
                                    alpha)
        rounding = 0.0 if start is None else _entry_rounding_reference(
            m._X @ beta, y[:, 0], y[:, 1].astype(bool), start, strata, w * weights)
        scale = np.sqrt(np.outer(np.abs(np.diag(H_ref)), np.abs(np.diag(H_ref)))) + 1e-300
        assert np.abs((H - H_ref) / scale).max() < 1e-9 + 40 * rounding
        assert np.abs((g - g_ref) / (np.sqrt(np.abs(np.diag(H_ref))) + 1e-300)).max() < 1e-6
        value = m._loss()(beta, weights)  # the line search's loss too
        assert abs(closed_form_loss(beta, m._X, m._risk_sets, m._case_weights * weights, ties,
                                    alpha) - value) <= 1e-12 * (1 + abs(value))


@pytest.mark.parametrize("seed,eta_max,n_strata", [(0, 1.0, 1), (1, 20.0, 3), (2, 20.0, 1)])
def test_survival_target_closed_form_matches_generic(seed, eta_max, n_strata, monkeypatch):
    # issue 11: target="survival" at fixed params by O(n k) baseline-hazard changes,
    # not a dense (units x rows) weight array; ties, zero weights, strata, large |x beta|
    n = 80
    X, y, w, strata, units, rng = _adversarial(seed, n, 20, 30, eta_max, n_strata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
    X_new = X[:4] + rng.normal(size=(4, 3)) * units
    times = np.quantile(y[:, 0], [0.1, 0.5, 0.9])
    new_strata = strata[:4]
    fast = {method: m.influence_(X_new, target="survival", times=times, strata=new_strata,
                                 method=method, as_frame=False) for method in ("vif", "newton")}
    provided = _engine._provided
    monkeypatch.setattr(_engine, "_provided", lambda d, name: None if name == "target_changes"
                        else provided(d, name))
    for method, value in fast.items():
        generic = m.influence_(X_new, target="survival", times=times, strata=new_strata,
                               method=method, as_frame=False)
        np.testing.assert_allclose(value, generic, rtol=0, atol=1e-9 * np.abs(generic).max())


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_newton_over_joblib_workers_equals_one_worker(backend, monkeypatch):
    # the closed-form Hessian changes stream their prefix tables along the groups: threads
    # sharing one model each stream their own (they once raced: errors or wrong steps),
    # processes start afresh
    import pickle
    from joblib import parallel_backend
    monkeypatch.setattr(_engine, "_CHUNK_ELEMENTS", 2**9)
    monkeypatch.setattr(_engine, "_LOCAL_MIN_ROWS", 16)
    n = 600
    X, y, w, strata, units, rng = _adversarial(3, n, 20, 30, 5.0, 2)
    m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
    one = m.influence_(method="newton")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # threads switch often: their chunks interleave
    try:
        with parallel_backend(backend, n_jobs=2):
            for _ in range(2):
                workers = pickle.loads(pickle.dumps(m)).influence_(method="newton", n_jobs=2)
                np.testing.assert_allclose(workers, one, rtol=1e-12,
                                           atol=1e-14 * np.abs(one).max())
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("method, entry", [("vif", False), ("newton", False),
                                           ("newton-blocks", False), ("vif", True),
                                           ("newton", True)])
def test_closed_forms_on_blas_threads_equal_one_thread(method, entry, monkeypatch):
    # all-rows vif and newton run the closed forms' chunks on as many threads as BLAS
    # would use (here made 3), each a contiguous run of chunks (newton's streaming its own
    # tables and its own blocks of second moments, or with delayed entry taking the
    # complex step of its chunk's rows): the changes of one thread (threadpoolctl's limit
    # of one), chunk for chunk
    from threadpoolctl import threadpool_limits
    from skvif import _blas
    if method == "newton-blocks":
        method = "newton"
        monkeypatch.setattr(_fast_hessian, "_segments_per_block", lambda *shape: 5)
    monkeypatch.setattr(_engine, "_CHUNK_ELEMENTS", 2**9)
    monkeypatch.setattr(_engine, "_LOCAL_MIN_ROWS", 16)
    X, y, w, strata, units, rng = _adversarial(3, 600, 20, 30, 5.0, 2)
    if entry:
        entry = np.where(rng.random(600) < 0.3, -1.0, rng.uniform(0, 0.5, 600) * y[:, 0])
    else:
        entry = None

    def fit():
        return CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata, entry=entry)
    used, threaded = [], _engine._threaded

    def recorded(func, chunks, threads):
        used.append((len(chunks), threads))
        return threaded(func, chunks, threads)
    monkeypatch.setattr(_engine, "_threaded", recorded)
    with threadpool_limits(1):
        assert _blas.blas_threads() == 1
        one = fit().influence_(
            method=method, as_frame=False)
    assert used == []
    monkeypatch.setattr(_engine, "blas_threads", lambda: 3)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # threads switch often
    try:
        m = fit()
        many = m.influence_(method=method, as_frame=False)
        assert len(used) == 1 and used[0][0] >= 3 and used[0][1] == 3
        monkeypatch.setattr(_engine, "blas_threads", lambda: 64)   # (at most _MAX_THREADS)
        np.testing.assert_allclose(
            fit().influence_(
                method=method, as_frame=False), one, rtol=1e-12, atol=1e-14 * np.abs(one).max())
        assert len(used) == 2 and used[1][1] == _engine._MAX_THREADS == 4
        used.pop()
        # joblib workers instead: no threads of skvif's own
        from joblib import parallel_backend
        with parallel_backend("threading"):
            workers = fit().influence_(
                method=method, as_frame=False, n_jobs=2)
        assert len(used) == 1
        np.testing.assert_allclose(workers, one, rtol=1e-12, atol=1e-14 * np.abs(one).max())
    finally:
        sys.setswitchinterval(interval)
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-14 * np.abs(one).max())


def test_threaded_chunks_raise_the_first_error_and_stop_the_other_threads():
    # two threads of 20 chunks each; the first fails on its fifth, the second's chunks
    # take 10 ms: it stops after the one it is on
    import time
    calls = []

    def func(chunk):
        calls.append(int(chunk[0]))
        if chunk[0] == 4:
            raise ValueError("chunk 4")
        if chunk[0] >= 20:
            time.sleep(0.01)
        return chunk
    chunks = [(i, np.array([i])) for i in range(40)]
    with pytest.raises(ValueError, match="chunk 4"):
        list(_engine._threaded(func, chunks, 2))
    assert sorted(c for c in calls if c < 20) == [0, 1, 2, 3, 4]
    assert 1 <= sum(c >= 20 for c in calls) < 10


def test_hessian_changes_in_blocks_equal_all_at_once(monkeypatch):
    # the (k, p, p) chunks of method="newton" (bounded memory) give the same steps, with
    # the series tables streamed one group at a time
    X, y, w, strata, units, rng = _adversarial(4, 60, 2, 0, 1.0, 1)
    m = CoxPHInfluence().fit(X, y, sample_weight=w)
    whole = m.influence_(method="newton", as_frame=False)
    monkeypatch.setattr(_fast_hessian, "_STREAM_ELEMENTS", 0)
    monkeypatch.setattr(_fast_hessian, "_WINDOW_ELEMENTS", 0)
    monkeypatch.setattr(_engine, "_CHUNK_ELEMENTS", 5 * 9)  # chunks of 5 rows
    m = CoxPHInfluence().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(m.influence_(method="newton", as_frame=False), whole,
                               rtol=1e-12, atol=1e-15)


def test_newton_second_moments_in_blocks_or_by_the_complex_step(monkeypatch):
    # where the closed form's per-group second moments would exceed their bound (many
    # event times, many columns), the risk-set moments come in blocks summed again from
    # each block's start; where even the sums at the blocks' ends would, newton's Hessian
    # changes come from the complex step in blocks of rows (bounded memory): the same
    # steps, chunks across block boundaries too
    from skvif.survival import _fast
    X, y, w, strata, units, rng = _adversarial(6, 90, 0, 0, 20.0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
        closed = m.influence_(method="newton", as_frame=False)
        pp, n_groups = X.shape[1] ** 2, m._risk_sets.group_time.size
        monkeypatch.setattr(_fast_hessian, "_MOMENT_ELEMENTS", 2 * n_groups * pp - 1)
        monkeypatch.setattr(_fast_hessian, "_MOMENT_BLOCK", 4 * pp)
        m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
        blocks = m.influence_(method="newton", as_frame=False)
        derivatives = m.get_influence().derivatives
        assert derivatives.thread_safe
        assert derivatives._closed_form_hessian_changes().second_moments.size == 4
        np.testing.assert_allclose(blocks, closed, rtol=1e-12, atol=1e-14 * np.abs(closed).max())
        monkeypatch.setattr(_fast_hessian, "_MOMENT_ELEMENTS", 0)
        monkeypatch.setattr(_fast, "_CACHE_ELEMENTS", 13 * 9)   # blocks of 13 rows
        monkeypatch.setattr(_engine, "_CHUNK_ELEMENTS", 5 * 9)  # chunks of 5 rows
        m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
        stepped = m.influence_(method="newton", as_frame=False)
    # (its one block of Hessian changes is shared: no threads)
    assert not m.get_influence().derivatives.thread_safe
    assert np.isfinite(closed).all()
    assert np.abs((stepped - closed) / np.abs(closed).max(axis=0)).max() < 1e-8


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_newton_steps_unchanged_by_closed_form_hessian_changes(ties, monkeypatch):
    # all-rows method="newton" from CoxPHInfluence: the closed-form Hessian changes give
    # the steps of the complex-step reference (ties, zero weights, strata, units, |x beta|)
    from skvif.survival._fast import CoxDerivatives
    X, y, w, strata, units, rng = _adversarial(5, 120, 20, 30, 20.0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata)
        fast = m.influence_(method="newton", as_frame=False)

    def reference(self, units):
        return hessian_changes(*self._at, rows=np.concatenate(units), design=self._design)

    monkeypatch.setattr(CoxDerivatives, "hessian_changes", reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CoxPHInfluence(ties=ties).fit(X, y, sample_weight=w, strata=strata)
        ref = m.influence_(method="newton", as_frame=False)
    assert np.isfinite(ref).all()
    assert np.abs((fast - ref) / np.abs(ref).max(axis=0)).max() < 1e-8


@pytest.mark.parametrize("low_rank", [False, True])
@pytest.mark.parametrize("spread", [3.0, 0.05])
def test_local_newton_solve_fast_path_matches_eigendecomposition(low_rank, spread, monkeypatch):
    # the engine's fixed-point (Neumann) and LU solves (Weyl's bound: the unit's Hessian
    # is well away from singular) give _solve_each's steps; units near or at singular
    # still go through it and are flagged. The changes given dense, or as D + x y^T + y x^T
    # with a dominant rank-two part (the Cox form: the fixed point around H - x y^T - y x^T);
    # parameters in units 1e-3 to 1e3 (the weighted Frobenius bound) or within 1.1 of each
    # other (the unweighted one, made to be taken)
    monkeypatch.setattr(_engine, "_SPREAD", 0.0 if spread > 1 else np.inf)
    rng = np.random.default_rng(11)
    p, k = 5, 60
    A = rng.normal(size=(p, p))
    units = 10.0 ** rng.uniform(-spread, spread, size=p)
    H_full = (A @ A.T + p * np.eye(p)) * np.outer(units, units)
    # changes from 1e-7 to 0.3 of the Hessian: a few fixed-point steps, many, or LU
    size = 10.0 ** rng.uniform(-7, -0.5, size=(k, 1, 1))
    dH = size * rng.normal(size=(k, p, p)) * np.outer(units, units)
    dH = dH + np.swapaxes(dH, 1, 2)
    converged = []
    neumann = _engine._neumann_steps
    monkeypatch.setattr(_engine, "_neumann_steps",
                        lambda *a: converged.append(neumann(*a)[1].sum()) or neumann(*a))
    dH[:5] = H_full                       # removing the unit leaves no curvature: singular
    dH[5:10] = 0.9 * H_full               # not covered by the bound: eigendecomposition
    x, y = np.sqrt(size[:, :, 0]) * rng.normal(size=(2, k, p)) * units
    R = x[:, :, None] * y[:, None, :] + y[:, :, None] * x[:, None, :]
    if low_rank:
        dH[10:] = 0.1 * dH[10:] + R[10:]
        x[:10] = y[:10] = 0.0
    g_full = rng.normal(size=p) * units
    dg = rng.normal(size=(k, p)) * units
    scale = _engine._hessian_scale(H_full)
    lam = np.linalg.eigvalsh(_engine._jacobi_scaled(H_full))
    monkeypatch.setattr(_engine, "_NEWTON_BLOCK_ELEMENTS", 20 * p * p)   # three blocks
    inverse = _engine._positive_definite_inverse(H_full, scale, lam)
    changes = ((lambda c: (dH[c] - R[c] * (c[:, None, None] >= 10), x[c], y[c])) if low_rank
               else (lambda c: dH[c]))
    out = _engine._local_newton_chunk(np.arange(k), g_full=g_full, H_full=H_full,
                                      grad_change=lambda c: dg[c], hess_change=changes,
                                      scale=scale, scaled_eigenvalues=lam, inverse=inverse)
    step, singular = _engine._solve_each(H_full - dH, g_full - dg, scale)
    np.testing.assert_array_equal(out[:, -1].astype(bool), singular)
    assert singular[:5].all() and not singular[5:].any()
    # each step within the documented bound of the exact one, in scaled norm
    error = np.linalg.norm((out[:, :-1] + step) * scale, axis=1)
    assert (error <= 1.01 * _engine._NEUMANN_RTOL * np.linalg.norm(step * scale, axis=1)).all()
    assert sum(converged) > k // 2   # the fixed-point path ran, and met its bound


def test_cumulative_at_against_python_sums():
    # cumulative sums over segments restarting per stratum, taken at each group's segment
    # (-1: none), in place or into a strided out, against sums written out in Python
    rng = np.random.default_rng(4)
    values = rng.normal(size=(9, 4))
    restart = [0, 4, 7]
    for last in (np.arange(9), np.array([2, -1, 3, 3, 8, 0, -1])):
        expected = np.zeros((last.size, 4))
        for g, at in enumerate(last):
            if at >= 0:
                begin = max(r for r in restart if r <= at)
                expected[g] = values[begin:at + 1].sum(axis=0)
        np.testing.assert_allclose(cumulative_at(values.copy(), restart, last), expected,
                                   rtol=1e-14, atol=1e-14)
        out = np.full((last.size, 2, 4), np.nan)
        cumulative_at(values.copy(), restart, last, out=out[:, 1])
        np.testing.assert_allclose(out[:, 1], expected, rtol=1e-14, atol=1e-14)
        assert np.isnan(out[:, 0]).all()


def test_scaled_frobenius_bound():
    # ||D / (d d^T)||_F exactly where the scales differ, and bounded within _SPREAD of it
    # (never below) where they do not, against the norm of the scaled matrices
    rng = np.random.default_rng(3)
    D = rng.normal(size=(40, 6, 6)) * 10.0 ** rng.uniform(-8, 8, size=(40, 1, 1))
    for spread in (1e-3, 0.1, 0.15, 6.0):
        d = 10.0 ** rng.uniform(-spread, spread, size=6)
        exact = np.linalg.norm(D / np.outer(d, d), axis=(1, 2))
        bound = _engine._scaled_frobenius_bound(D, d)
        assert np.all(bound >= exact * (1 - 1e-14))
        assert np.all(bound <= exact * _engine._SPREAD)
        if (d.max() / d.min()) ** 2 > _engine._SPREAD:
            np.testing.assert_allclose(bound, exact, rtol=1e-14)


@pytest.mark.parametrize("method", ["vif", "if", "newton", "loo"])
def test_out_is_written_chunk_by_chunk_into_a_memory_map(method, tmp_path, monkeypatch):
    # out= (for n x p too large to hold twice): the same changes as in memory, written
    # into the user's array (a .npy memory map) by chunks in the model's unit order, with
    # refine rewriting its top rows in place; nothing kept in the results' cache
    X, y, w, strata, units, rng = _adversarial(5, 60, 2, 0, 1.0, 3)
    m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
    whole = m.influence_(method=method)
    top, exact = m.influence_(method=method, refine=4, return_exact=True)
    monkeypatch.setattr(_engine, "_CHUNK_ELEMENTS", 5 * 9)  # chunks of 5 or 20 rows
    m = CoxPHInfluence().fit(X, y, sample_weight=w, strata=strata)
    out = np.lib.format.open_memmap(tmp_path / "changes.npy", mode="w+", shape=whole.shape)
    assert m.influence_(method=method, out=out) is out
    assert m.get_influence()._parameter_changes == {}
    np.testing.assert_allclose(np.load(tmp_path / "changes.npy"), whole, rtol=1e-12,
                               atol=1e-15 * np.abs(whole).max())
    got, got_exact = m.influence_(method=method, refine=4, return_exact=True, out=out)
    assert got is out
    np.testing.assert_array_equal(got_exact, exact)
    np.testing.assert_allclose(out, top, rtol=1e-12, atol=1e-15 * np.abs(top).max())


def test_out_holds_the_only_copy_of_the_changes(tmp_path, monkeypatch):
    # traced numpy memory of all-rows vif once the problem is set up (results object): in
    # memory the changes, (n, p), returned as a read-only view of the cache; with out= one
    # chunk's (here of 2**14 numbers) and the model's O(n) statistics. On one thread: each
    # of BLAS's threads adds its chunk's temporaries (here up to 0.5 n p)
    import tracemalloc
    monkeypatch.setattr(_engine, "blas_threads", lambda: 1)
    monkeypatch.setattr(_engine, "_CHUNK_ELEMENTS", 2**14)
    rng = np.random.default_rng(7)
    n, p = 20_000, 40
    X = rng.normal(size=(n, p))
    y = np.c_[np.ceil(rng.exponential(size=n) * 5), rng.random(n) < 0.7]  # ~40 times
    peaks = []
    for out in [None, np.lib.format.open_memmap(tmp_path / "c.npy", mode="w+",
                                                shape=(n, p))]:
        model = CoxPHInfluence().fit(X, y)
        model.get_influence().hessian_solver()
        tracemalloc.start()
        try:
            model.influence_(out=out)
            peaks.append(tracemalloc.get_traced_memory()[1] / (n * p * 8))
        finally:
            tracemalloc.stop()
    assert 1 <= peaks[0] < 2 and peaks[1] <= 0.5


def test_changes_of_every_row_are_a_read_only_view_of_the_cache():
    X, y, w, strata, units, rng = _adversarial(5, 60, 2, 0, 1.0, 1)
    m = CoxPHInfluence().fit(X, y)
    first = m.influence_()
    cached = m.get_influence().parameter_changes("vif")
    assert np.shares_memory(first, cached) and not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0
    with pytest.raises(ValueError):
        first.flags.writeable = True
    frame = m.influence_(as_frame=True)   # a frame of its own, editable
    frame.iloc[0, 0] = 1e3
    edited = np.array(first)
    edited[1, 1] = -1e3
    np.testing.assert_array_equal(m.influence_(), cached)
    assert cached[0, 0] != 1e3 and cached[1, 1] != -1e3


@pytest.mark.parametrize("kwargs, error, match", [
    ({"out": np.zeros((60, 3)).tolist()}, TypeError, "numpy array"),
    ({"out": np.zeros((60, 3), dtype=np.float32)}, TypeError, "float64"),
    ({"out": np.zeros((59, 3))}, ValueError, r"shape \(60, 3\)"),
    ({"out": np.zeros((60, 3)), "as_frame": True}, ValueError, "as an array"),
    ({"out": np.zeros((60, 3)), "scale": "se"}, ValueError, "as an array"),
])
def test_bad_out_is_named(kwargs, error, match):
    X, y, w, strata, units, rng = _adversarial(5, 60, 2, 0, 1.0, 1)
    m = CoxPHInfluence().fit(X, y)
    with pytest.raises(error, match=match):
        m.influence_(**kwargs)
    frozen = np.zeros((60, 3))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m.influence_(out=frozen)
    with pytest.raises(ValueError, match="as an array"):
        m.influence_(X[:2], target="predict", out=np.zeros((60, 2)))


def test_group_intervals_against_python_loops():
    # the tie groups at which each row is at risk, by strata, with delayed entry and heavy
    # ties; "before its own death" leaves out the row's own event time
    rng = np.random.default_rng(8)
    n = 300
    time = rng.integers(1, 12, size=n).astype(float)
    event = rng.random(n) < 0.6
    strata = rng.integers(0, 3, size=n)
    entry = np.floor(time * rng.random(n))
    dying = event & (rng.random(n) < 0.8)
    for rs in (RiskSets(time, event, strata=strata), RiskSets(time, event, entry, strata)):
        g_lo, g_hi = _group_intervals(rs)
        _, before = _group_intervals(rs, before_own_death=dying)
        for i in range(n):
            groups = [g for g in range(rs.group_time.size) if rs.group_stratum[g] == strata[i]
                      and (rs.entry is None or rs.group_time[g] > entry[i])]
            at_risk = [g for g in groups if rs.group_time[g] <= time[i]]
            own = [g for g in at_risk if not (dying[i] and rs.group_time[g] == time[i])]
            start = at_risk[0] if at_risk else None
            assert g_hi[i] - g_lo[i] == len(at_risk) and before[i] - g_lo[i] == len(own)
            if start is not None:
                assert g_lo[i] == start
