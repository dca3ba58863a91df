"""NeuralCoxPHInfluence against the generic engine, the linear Cox model and exact refits."""

import pickle
import warnings

import autograd.numpy as anp
import numpy as np
import pytest
from sklearn.base import clone
from sksurv.metrics import concordance_index_censored

from _accuracy import assert_agrees
from skvif import CoxPHInfluence, NeuralCoxPHInfluence, vif
from skvif.survival import mlp_risk_function
from skvif.survival._neural import _test_loss, _test_predict
from skvif.survival._objective import (RiskSets, negative_log_partial_likelihood,
                                       partial_likelihood_of_predictor)


def linear_risk(theta, X):
    return anp.dot(X, theta)


def survival_data(seed, n, d=4, ties=20):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    t = rng.exponential(np.exp(-np.tanh(X[:, 0]) - 0.5 * X[:, 1] ** 2))
    c = rng.exponential(2.0, size=n)
    time = np.minimum(t, c)
    if ties:
        time = np.ceil(time * ties) / ties
    return X, np.c_[time, t <= c], rng


@pytest.fixture(scope="module")
def fitted():
    """An MLP (p = 61) on tied, stratified, weighted data, with a stratified test set."""
    X, y, rng = survival_data(0, 400)
    w = rng.choice([0.5, 1.0, 2.0], size=300)
    strata = rng.integers(2, size=300)
    risk, theta0 = mlp_risk_function(4, hidden=(10,), random_state=0)
    model = NeuralCoxPHInfluence(risk, theta0, alpha=1.0).fit(X[:300], y[:300],
                                                               sample_weight=w, strata=strata)
    test_strata = rng.integers(2, size=100)
    test_rs = RiskSets(y[300:, 0], y[300:, 1].astype(bool), None, test_strata)
    return model, X[300:], y[300:], test_strata, test_rs


def generic(model, target, method="vif"):
    """The generic engine on the full objective as a function of theta (dense Hessian)."""
    loss = model._loss(smooth=method == "if")
    return vif(loss, model.params_, model._X.shape[0], target=target, method=method,
               solver="direct")


# ------------------------------------------------------------ objective
def test_predictor_objective_is_the_linear_objective():
    X, y, rng = survival_data(1, 200)
    rs = RiskSets(y[:, 0], y[:, 1].astype(bool), None, rng.integers(3, size=200))
    beta = rng.normal(size=4)
    w = rng.choice([0.0, 0.5, 1.0, 2.0], size=200)
    for ties in ("efron", "breslow"):
        assert partial_likelihood_of_predictor(X @ beta, w, rs, ties) == pytest.approx(
            negative_log_partial_likelihood(beta, w, X, rs, ties), rel=1e-14)


def test_zero_weight_deletes_the_row(fitted):
    model = fitted[0]
    n = model._X.shape[0]
    keep = np.setdiff1d(np.arange(n), [3, 17])
    weights = np.ones(n)
    weights[[3, 17]] = 0.0
    rs = model._risk_sets
    deleted = RiskSets(rs.time[keep], rs.event[keep], None, rs.row_stratum[keep])
    eta = model.risk_function(model.params_, model._X)
    expected = partial_likelihood_of_predictor(eta[keep], model._case_weights[keep], deleted)
    expected += 0.5 * model.alpha * model.params_ @ model.params_
    assert model._loss()(model.params_, weights) == pytest.approx(expected, rel=1e-13)


# ------------------------------------------------ fast path vs generic engine
@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_vif_loss_matches_generic_engine(fitted, ties):
    model, X_test, y_test, test_strata, test_rs = fitted
    if ties != model.ties:
        model = clone(model).set_params(ties=ties).fit(
            model._X, np.c_[model._risk_sets.time, model._risk_sets.event],
            sample_weight=model._case_weights, strata=model._risk_sets.row_stratum)
    fast = model.influence_(X_test, y_test, strata=test_strata, rtol=1e-13)
    target = lambda th: _test_loss(th, risk_function=model.risk_function, X=X_test,
                                   risk_sets=test_rs, ties=ties)
    reference = generic(model, target)[:, 0]
    np.testing.assert_allclose(fast, reference, rtol=1e-7, atol=1e-9 * np.abs(reference).max())


@pytest.mark.parametrize("method", ["vif", "if"])
def test_predict_target_matches_generic_engine(fitted, method):
    model, X_test = fitted[0], fitted[1][:6]
    fast = model.influence_(X_test, target="predict", method=method, rtol=1e-13)
    target = lambda th: _test_predict(th, risk_function=model.risk_function, X=X_test)
    reference = generic(model, target, method)
    assert fast.shape == (300, 6)
    np.testing.assert_allclose(fast, reference, rtol=1e-7, atol=1e-9 * np.abs(reference).max())


def test_solvers_agree(fitted):
    model, X_test, y_test, test_strata, _ = fitted
    cg = model.influence_(X_test, y_test, strata=test_strata, rtol=1e-12)
    for solver in ("minres", "direct"):
        other = model.influence_(X_test, y_test, strata=test_strata, solver=solver, rtol=1e-12)
        np.testing.assert_allclose(other, cg, rtol=1e-6, atol=1e-9 * np.abs(cg).max())


def test_rtol_takes_effect(fitted):
    model, X_test, y_test, test_strata, _ = fitted
    tight = model.influence_(X_test, y_test, strata=test_strata, rtol=1e-13)
    loose = model.influence_(X_test, y_test, strata=test_strata, rtol=1e-2)
    assert np.max(np.abs(loose - tight)) > 1e-8 * np.max(np.abs(tight))


def test_delayed_entry_path_equals_right_censored_fast_path(fitted):
    # entries before every time leave the risk sets unchanged: the generic
    # (entry) path and the O(n) path must give the same numbers
    model, X_test, y_test, test_strata, _ = fitted
    rs = model._risk_sets
    y = np.c_[rs.time, rs.event]
    with_entry = clone(model).fit(model._X, y, sample_weight=model._case_weights,
                                  strata=rs.row_stratum, entry=np.full(300, -1.0))
    np.testing.assert_allclose(with_entry.params_, model.params_, rtol=1e-6, atol=1e-8)
    rows = np.arange(0, 300, 15)
    slow = with_entry.influence_(X_test, y_test, strata=test_strata, rows=rows)
    reference = model.influence_(X_test, y_test, strata=test_strata, rows=rows, rtol=1e-12)
    np.testing.assert_allclose(slow, reference, rtol=1e-4, atol=1e-6 * np.abs(reference).max())


def test_vif_with_delayed_entry_matches_generic_engine(fitted):
    # the closed-form gradient changes of the linear Cox model in eta, with entry
    model, X_test, y_test, test_strata, test_rs = fitted
    rs = model._risk_sets
    entry = np.random.default_rng(3).uniform(0, 0.6, 300) * rs.time
    with_entry = clone(model).fit(model._X, np.c_[rs.time, rs.event],
                                  sample_weight=model._case_weights, strata=rs.row_stratum,
                                  entry=entry)
    fast = with_entry.influence_(X_test, y_test, strata=test_strata, rtol=1e-13)
    target = lambda th: _test_loss(th, risk_function=with_entry.risk_function, X=X_test,
                                   risk_sets=test_rs, ties=with_entry.ties)
    reference = generic(with_entry, target)[:, 0]
    np.testing.assert_allclose(fast, reference, rtol=1e-7, atol=1e-9 * np.abs(reference).max())


def test_linear_risk_function_is_coxph():
    # with risk_function = X @ theta the model is CoxPHInfluence, influence included
    X, y, _ = survival_data(2, 250)
    X_test, y_test = X[200:], y[200:]
    model = NeuralCoxPHInfluence(linear_risk, np.zeros(4), alpha=2.0).fit(X[:200], y[:200])
    cox = CoxPHInfluence(alpha=2.0, tol=1e-12).fit(X[:200], y[:200])
    np.testing.assert_allclose(model.params_, cox.coef_, rtol=1e-7, atol=1e-9)
    for target in ("loss", "predict"):
        for method in ("vif", "if"):
            expected = cox.influence_(X_test, y_test, target=target, method=method)
            got = model.influence_(X_test, y_test, target=target, method=method, rtol=1e-13)
            np.testing.assert_allclose(got, expected, rtol=1e-6,
                                       atol=1e-8 * np.abs(expected).max())
    np.testing.assert_allclose(model.predict(X_test), cox.predict(X_test), rtol=1e-7,
                               atol=1e-9)


# ------------------------------------------------------------ exact refits
def test_vif_agrees_with_refits(fitted):
    # a hard case: n = 300, p = 61, single rows moving the test loss by up to ~6
    model, X_test, y_test, test_strata, _ = fitted
    estimate = model.influence_(X_test, y_test, strata=test_strata)
    rows = np.argsort(-np.abs(estimate))[:6]  # the largest changes, where errors show
    exact = model.influence_(X_test, y_test, strata=test_strata, rows=rows, method="loo")
    assert_agrees(estimate[rows], exact, min_r=0.95, slope=(0.7, 1.05), max_error=0.45,
                  label="vif vs refits")
    # refine=k: the k largest estimates replaced by those exact refits, and marked
    refined, is_exact = model.influence_(X_test, y_test, strata=test_strata, refine=2,
                                         return_exact=True)
    assert set(np.flatnonzero(is_exact)) == set(rows[:2])
    np.testing.assert_allclose(refined[rows[:2]], exact[:2], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(refined[~is_exact], estimate[~is_exact])


@pytest.mark.slow
def test_newton_agrees_with_refits_where_the_leave_out_hessian_is_definite(fitted):
    # removing a row of weight 2 makes this MLP's leave-out Hessian indefinite at
    # params_ (smallest eigenvalue -0.24, full-data Hessian >= 0.99): the Newton
    # step is then meaningless, hence the docstring's warning; rows of weight <= 1
    model, X_test, y_test, test_strata, _ = fitted
    estimate = model.influence_(X_test, y_test, strata=test_strata)
    order = np.argsort(-np.abs(estimate))
    rows = order[model._case_weights[order] <= 1][:12]
    exact = model.influence_(X_test, y_test, strata=test_strata, rows=rows, method="loo")
    newton = model.influence_(X_test, y_test, strata=test_strata, rows=rows, method="newton")
    assert_agrees(newton, exact, min_r=0.85, slope=(0.9, 1.3), max_error=0.9,
                  label="newton vs refits")


def test_loo_is_a_warm_started_fit_without_the_row(fitted):
    model, X_test, y_test, test_strata, _ = fitted
    rs = model._risk_sets
    keep = np.setdiff1d(np.arange(300), [7])
    refit = clone(model).set_params(init_params=model.params_, tol=1e-10).fit(
        model._X[keep], np.c_[rs.time, rs.event][keep], sample_weight=model._case_weights[keep],
        strata=rs.row_stratum[keep])
    loo = model.influence_(X_test, target="predict", rows=[7], method="loo")[0]
    np.testing.assert_allclose(loo, refit.predict(X_test) - model.predict(X_test), rtol=1e-4,
                               atol=1e-6)


# ------------------------------------------------------------ sklearn glue
def test_clone_pickle_score(fitted):
    model, X_test, y_test, _, _ = fitted
    assert clone(model).get_params()["alpha"] == 1.0
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X_test), model.predict(X_test))
    expected = concordance_index_censored(y_test[:, 1].astype(bool), y_test[:, 0],
                                          model.predict(X_test))[0]
    assert model.score(X_test, y_test) == pytest.approx(expected, rel=1e-12)


def test_bad_input():
    X, y, _ = survival_data(3, 50)
    risk, theta0 = mlp_risk_function(4, hidden=(3,), random_state=0)
    with pytest.raises(ValueError, match="init_params"):
        NeuralCoxPHInfluence(risk, theta0[None]).fit(X, y)
    with pytest.raises(ValueError, match="one per row"):
        NeuralCoxPHInfluence(lambda th, X: anp.sum(X @ th[:4]), np.zeros(4)).fit(X, y)
    model = NeuralCoxPHInfluence(risk, theta0).fit(X, y)
    with pytest.raises(ValueError, match="target"):
        model.influence_(X, y, target="coef")
    with pytest.raises(ValueError, match="rows or groups"):
        model.influence_(X, y, rows=[0], groups=np.arange(50))
    with pytest.raises(ValueError, match="n_features"):
        mlp_risk_function(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.influence_(X[:10], target="predict")
