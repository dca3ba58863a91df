"""Issue 11: no silent wrong number. Each test reproduces one reported case and
checks it against an independent reference (an exact refit, a closed form, a
scale identity) or the named error/warning."""

import math
import warnings
from functools import partial

import autograd.numpy as anp
import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from autograd import grad
from scipy.optimize import minimize as scipy_minimize
from sklearn.exceptions import ConvergenceWarning

from skvif import CoxPHInfluence, NodeEmbeddingInfluence, vif
from skvif._engine import _batch_grad, _batch_hessians, _leave_out_weights, minimize
from skvif.ranking import ListwiseRankerInfluence
from skvif.ranking._objective import LocalChanges, Lists, objective


def _survival(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    t = rng.exponential(np.exp(-X @ [0.5, -0.3]))
    c = rng.exponential(2, n)
    return X, np.c_[np.minimum(t, c), t <= c]


def _ranking(n_queries=15, size=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_queries * size, 3))
    y = np.digitize(X @ [1, -0.5, 0] + rng.normal(scale=0.5, size=len(X)), [-0.5, 0.5])
    return X, y.astype(float), np.repeat(np.arange(n_queries), size)


def _squares(m, w, x):
    """Squared loss of a mean (module level: picklable for every joblib backend)."""
    return 0.5 * anp.sum(w * (x - m[0]) ** 2)


# ---------------------------------------------------------------- item 2
@pytest.mark.parametrize("factor", [1e9, 1e-9])
def test_cox_fit_does_not_depend_on_units(factor):
    # main: 1e9 stopped after one iteration, coef_ 5.4 % off, no warning
    X, y = _survival()
    reference = CoxPHInfluence().fit(X, y).coef_
    scaled = CoxPHInfluence().fit(X * factor, y).coef_ * factor
    np.testing.assert_allclose(scaled, reference, rtol=1e-8)


def test_ranker_fit_does_not_depend_on_units():
    # main: relative error 3.3 with alpha=0 on X * 1e9
    X, y, qid = _ranking()
    reference = ListwiseRankerInfluence(alpha=0.0).fit(X, y, qid).coef_
    scaled = ListwiseRankerInfluence(alpha=0.0).fit(X * 1e9, y, qid).coef_ * 1e9
    np.testing.assert_allclose(scaled, reference, rtol=1e-8)
    # and the fit is the minimum itself: scipy on the same objective
    lists = Lists(X, y, qid)
    ones = np.ones(len(X))
    f = partial(objective, lists=lists, loss="listnet", alpha=0.0)
    ref = scipy_minimize(f, np.zeros(3), args=(ones,), jac=grad(f), method="BFGS",
                         options={"gtol": 1e-12}).x
    np.testing.assert_allclose(reference, ref, rtol=1e-6)


# ---------------------------------------------------------------- item 3
def test_set_params_after_fit_keeps_the_fitted_cox_objective():
    X, y = _survival()
    model = CoxPHInfluence().fit(X, y)
    model.set_params(alpha=50.0, ties="breslow")
    fresh = CoxPHInfluence().fit(X, y)
    np.testing.assert_allclose(model.influence_(), fresh.influence_(), rtol=1e-12)
    np.testing.assert_allclose(model.summary().to_numpy(), fresh.summary().to_numpy(),
                               rtol=1e-12)
    # the next fit uses the new parameters
    np.testing.assert_allclose(model.fit(X, y).coef_,
                               CoxPHInfluence(alpha=50.0, ties="breslow").fit(X, y).coef_)


def test_set_params_after_fit_keeps_the_fitted_ranker_objective():
    X, y, qid = _ranking()
    model = ListwiseRankerInfluence().fit(X, y, qid)
    model.set_params(loss="listmle", alpha=10.0)
    fresh = ListwiseRankerInfluence().fit(X, y, qid)
    np.testing.assert_allclose(model.influence_(method="newton"),
                               fresh.influence_(method="newton"), rtol=1e-12)
    np.testing.assert_allclose(model.influence_(X[:8], y[:8], qid[:8], target="loss"),
                               fresh.influence_(X[:8], y[:8], qid[:8], target="loss"),
                               rtol=1e-12)


def test_set_params_after_fit_keeps_the_fitted_embedding_objective():
    import networkx as nx
    G = nx.karate_club_graph()
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    pairs = [(0, 33), (1, 2)]
    before = model.influence_(pairs)
    model.set_params(alpha=5.0, window=1)
    np.testing.assert_array_equal(model.influence_(pairs), before)


# ---------------------------------------------------------------- item 4
def test_monotone_likelihood_gives_finite_coefficients_and_a_convergence_warning():
    # main: coef_ = [nan, nan] and influence_ failed
    n = 40
    t = np.arange(1.0, n + 1)
    X = np.column_stack([-t, np.random.default_rng(0).normal(size=n)])
    with pytest.warns(ConvergenceWarning, match="monotone"):
        model = CoxPHInfluence().fit(X, np.column_stack([t, np.ones(n)]))
    assert np.all(np.isfinite(model.coef_))
    assert model.coef_[0] > 5  # moving towards the infimum at +infinity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert model.influence_().shape == (n, 2)


@pytest.mark.parametrize("weight", [1e200, 1e-200])
def test_uniform_extreme_weights_fit_the_unweighted_model(weight):
    # main: coef_ = [nan, nan]; uniform case weights do not change Cox coefficients
    X, y = _survival()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, no convergence warning
        model = CoxPHInfluence().fit(X, y, sample_weight=np.full(len(X), weight))
    np.testing.assert_allclose(model.coef_, CoxPHInfluence().fit(X, y).coef_, rtol=1e-10)


def test_minimize_never_moves_to_nan():
    # the derivatives are NaN beyond p = 6 while the loss stays finite: Newton steps
    # there; main moved to NaN (or died in LAPACK's eigh)
    def loss(P, W):
        return anp.sum((P - 10.0) ** 2, axis=1) + 0.0 * anp.sum(
            anp.sqrt(anp.maximum(6.0 - P, 0.0)), axis=1)

    with np.errstate(all="ignore"):
        P, _, converged = minimize(loss, np.zeros((1, 1)), np.ones((1, 3)))
    assert np.all(np.isfinite(P)) and not converged[0]
    assert P[0, 0] <= 6.0


def test_listmle_without_penalty_on_separable_lists_warns():
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4.0), 10)
    X = np.column_stack([y, rng.normal(size=40)])
    with pytest.warns(ConvergenceWarning):
        model = ListwiseRankerInfluence(loss="listmle", alpha=0.0).fit(
            X, y, np.repeat(np.arange(10), 4))
    assert np.all(np.isfinite(model.coef_))


# ---------------------------------------------------------------- item 6
X_MEAN = np.array([1.0, 2.0, 3.0, 10.0])


def test_vif_warns_away_from_the_minimum_on_every_method():
    loss = partial(_squares, x=X_MEAN)
    for method in ("vif", "if", "newton", "loo"):
        with pytest.warns(UserWarning, match="not at a minimum"):
            vif(loss, [0.0], 4, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # at the minimum: no warning, and the exact leave-one-out means
        out = vif(loss, [X_MEAN.mean()], 4, method="loo").ravel()
    loo = np.array([np.delete(X_MEAN, i).mean() for i in range(4)]) - X_MEAN.mean()
    np.testing.assert_allclose(out, loo, rtol=1e-12)


@pytest.mark.parametrize("options", [dict(solver="direct"), dict(solver="cg"),
                                     dict(method="newton"), dict(method="loo")])
def test_indefinite_hessian_is_named_on_every_path(options):
    def saddle(m, w):
        return anp.sum(w * (-0.5 * m[0] ** 2 + 0.1 * m[1] ** 2))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vif(saddle, [0.0, 0.0], 4, **options)
    messages = [str(w.message) for w in caught]
    assert sum("not positive definite" in m for m in messages) == 1, messages


# ---------------------------------------------------------------- item 7
def test_robust_summary_refuses_one_cluster_and_warns_on_few():
    # main: se ~ 2e-16 and p = 0 with one cluster, without a word
    X, y = _survival()
    model = CoxPHInfluence().fit(X, y)
    with pytest.raises(ValueError, match="single cluster"):
        model.summary(robust=True, groups=np.zeros(len(X)))
    with pytest.warns(UserWarning, match="rank at most 1"):
        model.summary(robust=True, groups=np.arange(len(X)) % 2)
    # enough clusters: D.T @ D from the per-cluster sums of R's dfbeta
    groups = np.arange(len(X)) % 10
    D = model.influence_(method="if")
    sums = np.stack([D[groups == g].sum(axis=0) for g in range(10)])
    np.testing.assert_allclose(model.summary(robust=True, groups=groups)["se(coef)"],
                               np.sqrt(np.diag(sums.T @ sums)), rtol=1e-12)


# ---------------------------------------------------------------- item 8
def test_results_do_not_share_the_users_index():
    X, y = _survival()
    frame = pd.DataFrame(X, columns=["a", "b"], index=pd.Index(np.arange(len(X)) + 100))
    model = CoxPHInfluence().fit(frame, y)
    first = model.influence_(as_frame=True)
    first.index.name = "renamed"
    assert frame.index.name is None
    assert model.influence_(as_frame=True).index.name is None
    assert model.influence_(frame.iloc[:3], target="predict", as_frame=True).columns.name is None
    Xr, yr, qid = _ranking()
    ranker_frame = pd.DataFrame(Xr)
    ranker = ListwiseRankerInfluence().fit(ranker_frame, yr, qid)
    ranker.influence_(as_frame=True).index.name = "renamed"
    assert ranker_frame.index.name is None
    assert ranker.influence_(as_frame=True).index.name is None


# ---------------------------------------------------------- collinearity scale
@pytest.mark.parametrize("factor", [1e9, 1e-9])
def test_a_column_in_other_units_is_not_collinear(factor):
    # main: x1 (or x0) flagged "collinear or constant", summary refused
    X, y = _survival()
    Xs = X.copy()
    Xs[:, 0] *= factor
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = CoxPHInfluence().fit(Xs, y)
    reference = CoxPHInfluence().fit(X, y)
    scale = np.array([factor, 1.0])
    np.testing.assert_allclose(model.summary()["se(coef)"] * scale,
                               reference.summary()["se(coef)"], rtol=1e-7)
    np.testing.assert_allclose(model.influence_() * scale, reference.influence_(), rtol=1e-6,
                               atol=1e-12)


def test_a_constant_column_is_still_named():
    X, y = _survival()
    X[:, 1] = 5.0
    with pytest.warns(UserWarning, match="x1 are collinear or constant"):
        CoxPHInfluence().fit(X, y)


# ------------------------------------------------ loo with a non-finite unit
def test_loo_marks_only_the_unit_whose_loss_is_not_finite():
    # main: "array must not contain infs or NaNs" for every unit
    x = X_MEAN

    def loss(m, w):
        return 0.5 * anp.sum(w * (x - m[0]) ** 2) + 1e-3 * m[0] ** 2 / w[0]

    optimum = x.sum() / (4 + 2e-3)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match=r"positions \[0\]"):
        out = vif(loss, [optimum], 4, method="loo").ravel()
    assert np.isnan(out[0])
    exact = [np.delete(x, i).sum() / (3 + 2e-3) - optimum for i in (1, 2, 3)]
    np.testing.assert_allclose(out[1:], exact, rtol=1e-10)


# ------------------------------------------------------------ joblib backends
@pytest.mark.parametrize("backend", ["multiprocessing", "loky"])
@pytest.mark.parametrize("method", ["vif", "newton", "loo"])
def test_any_joblib_backend_gives_the_serial_result(backend, method):
    # main: "Can't pickle local object" with the multiprocessing backend
    x = np.arange(200.0)
    loss = partial(_squares, x=x)  # not batched: chunks of 64, so 4 chunks
    with joblib.parallel_config(backend=backend):
        out = vif(loss, [x.mean()], x.size, method=method, n_jobs=2).ravel()
    # closed forms: the mean moves by (mean - x_i) / (n - 1) (exact: "newton", "loo"),
    # the versatile influence H^-1 (grad change) is (mean - x_i) / n
    exact = (x.mean() - x) / (x.size - (method != "vif"))
    np.testing.assert_allclose(out, exact, rtol=1e-9)


# ---------------------------------------------------------------- clear errors
def test_survival_target_with_no_times():
    X, y = _survival()
    model = CoxPHInfluence().fit(X, y)
    with pytest.raises(ValueError, match="times is empty"):
        model.influence_(X[:2], target="survival", times=[])


@pytest.mark.parametrize("column", [pd.date_range("2020", periods=200),
                                    pd.to_timedelta(np.arange(200), "D")])
def test_date_columns_are_named(column):
    X, y = _survival()
    frame = pd.DataFrame({"a": X[:, 0], "when": column})
    with pytest.raises(ValueError, match="date or duration column.*when"):
        CoxPHInfluence().fit(frame, y)


@pytest.mark.parametrize("loss", [
    lambda m, w: float(anp.sum(w * (X_MEAN - m[0]) ** 2)),
    lambda m, w: anp.sum(w * (X_MEAN - m[0]) ** 2) + math.exp(m[0]),
    lambda m, w: 3,
])
def test_untraceable_losses_say_how_to_write_them(loss):
    with pytest.raises(TypeError, match="the loss|loss returned") as info:
        vif(loss, [4.0], 4)
    assert "autograd.numpy" in str(info.value)


def test_untraceable_targets_are_named():
    loss = partial(_squares, x=X_MEAN)
    with pytest.raises(TypeError, match="target.*list.*autograd.numpy"):
        vif(loss, [X_MEAN.mean()], 4, target=lambda m: [m[0], 2 * m[0]])
    with pytest.raises(TypeError, match="the target.*autograd.numpy"):
        vif(loss, [X_MEAN.mean()], 4, target=lambda m: np.array([math.exp(m[0])]))


def test_event_values_are_reported_in_full_precision():
    X, y = _survival()
    y[0, 1] = 1.0000001
    with pytest.raises(ValueError, match=r"got 1\.0000001"):
        CoxPHInfluence().fit(X, y)


# ------------------------------------- ranking fast path vs the generic engine
@st.composite
def _adversarial_lists(draw):
    n_queries = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 5), min_size=n_queries, max_size=n_queries))
    n = sum(sizes)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * np.array([1e-3, 1.0, 1e3])  # wildly different units
    y = rng.integers(0, draw(st.integers(1, 3)), size=n).astype(float)  # heavy ties
    qid = rng.permutation(np.repeat(np.arange(n_queries), sizes))  # not contiguous
    params = rng.normal(size=3) * draw(st.sampled_from([1.0, 50.0])) / np.array(
        [1e-3, 1.0, 1e3]) / 3  # scores up to ~50
    return X, y, qid, params


@settings(derandomize=True, max_examples=40, deadline=None)
@given(data=_adversarial_lists(), loss=st.sampled_from(["listnet", "listmle"]))
def test_ranking_local_changes_match_the_generic_engine(data, loss):
    X, y, qid, params = data
    lists = Lists(X, y, qid)
    n = len(y)
    units = [np.array([i]) for i in range(n)] + [np.flatnonzero(qid == q)
                                                 for q in np.unique(qid)]
    f = partial(objective, lists=lists, loss=loss, alpha=0.0)
    P = np.tile(params, (len(units), 1))
    W = _leave_out_weights(units, n)
    g_full = _batch_grad(f, params[None], np.ones((1, n)))[0]
    H_full = _batch_hessians(f, params[None], np.ones((1, n)))[0]
    generic_g = g_full - _batch_grad(f, P, W)
    generic_H = H_full - _batch_hessians(f, P, W)
    local = LocalChanges(lists, loss, params)
    # rounding bound of each entry: 1e-12 times the sum of its terms' sizes (measured: 6e-16)
    # (score derivatives of a list loss are at most ~ the list length), so columns in
    # any units are checked to their own precision; a wrong formula is off by O(1)
    A = np.abs(X)
    bound_g = 1e-12 * A.sum(axis=0)
    bound_H = 1e-12 * (A.T @ A)
    assert np.all(np.abs(local.gradient_changes(units) - generic_g) <= bound_g)
    assert np.all(np.abs(local.hessian_changes(units) - generic_H) <= bound_H)
