"""CoxPHInfluence against lifelines, scikit-survival, a naive likelihood and exact refits."""

import pickle

import numpy as np
import pandas as pd
import pytest
from autograd import grad
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2, load_rossi
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from _accuracy import assert_agrees
from skvif import CoxPHInfluence
from skvif.survival._objective import RiskSets, negative_log_partial_likelihood

TIGHT = {"precision": 1e-16, "r_precision": 1e-18}


def rossi():
    df = load_rossi()
    return df.drop(columns=["week", "arrest"]), df[["week", "arrest"]]


def gbsg2():
    df = load_gbsg2()
    X = pd.DataFrame({
        "horTh": (df.horTh == "yes").astype(float),
        "age": df.age.astype(float),
        "menostat": (df.menostat == "Post").astype(float),
        "tsize": df.tsize.astype(float),
        "tgrade": df.tgrade.map({"I": 1.0, "II": 2.0, "III": 3.0}),
        "pnodes": df.pnodes.astype(float),
        "progrec": df.progrec.astype(float),
        "estrec": df.estrec.astype(float),
    })
    return X, df[["time", "cens"]].astype(float)


def lifelines_coef(X, y, penalizer=0.0):
    frame = pd.concat([X, y.set_axis(["T", "E"], axis=1)], axis=1)
    cph = CoxPHFitter(penalizer=penalizer)
    cph.fit(frame, "T", "E", fit_options=TIGHT)
    return cph.params_.to_numpy()


def refit_without(X, y, rows, **params):
    keep = np.setdiff1d(np.arange(len(X)), rows)
    return CoxPHInfluence(**params).fit(X.iloc[keep], y.iloc[keep])


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("data", [rossi, gbsg2])
def test_coef_matches_lifelines(data):
    X, y = data()
    np.testing.assert_allclose(CoxPHInfluence().fit(X, y).coef_, lifelines_coef(X, y),
                               rtol=1e-6)


@pytest.mark.parametrize("data", [rossi, gbsg2])
def test_penalized_coef_matches_lifelines(data):
    # lifelines penalizer c on sample-standardized columns == alpha = n c
    X, y = data()
    Z = (X - X.mean()) / X.std(ddof=1)
    c = 0.05
    model = CoxPHInfluence(alpha=len(X) * c).fit(Z, y)
    np.testing.assert_allclose(model.coef_, lifelines_coef(Z, y, penalizer=c), rtol=1e-6)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_coef_matches_scikit_survival(ties):
    X, y = gbsg2()
    yy = Surv.from_arrays(y.cens.astype(bool), y.time)
    ref = CoxPHSurvivalAnalysis(ties=ties, tol=1e-12, n_iter=200).fit(X, yy).coef_
    np.testing.assert_allclose(CoxPHInfluence(ties=ties).fit(X, yy).coef_, ref, rtol=1e-6)


def test_survival_function_matches_lifelines():
    X, y = rossi()
    frame = pd.concat([X, y], axis=1)
    cph = CoxPHFitter().fit(frame, "week", "arrest", fit_options=TIGHT)
    times = np.array([5.0, 20.0, 37.0, 52.0])  # lifelines interpolates between event times
    ref = cph.predict_survival_function(X.iloc[:10], times=times).to_numpy().T
    ours = CoxPHInfluence().fit(X, y).predict_survival_function(X.iloc[:10], times)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_score_is_harrells_concordance():
    X, y = rossi()
    model = CoxPHInfluence().fit(X, y)
    ref = concordance_index_censored(y.arrest.astype(bool), y.week.astype(float),
                                     model.predict(X))[0]
    assert model.score(X, y) == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------- the objective itself
def naive_nll(beta, X, time, event, w, ties, strata, entry):
    """Straight from the textbook formula: loops over tie groups, explicit risk sets."""
    total = 0.0
    eta = X @ beta
    for s in np.unique(strata):
        for t in np.unique(time[event & (strata == s) & (w > 0)]):
            dead = (time == t) & event & (strata == s) & (w > 0)
            at_risk = (time >= t) & (entry < t) & (strata == s)
            r = w * np.exp(eta)
            S, D, d = r[at_risk].sum(), r[dead].sum(), dead.sum()
            total += np.sum(w[dead] * eta[dead])
            mean_w = w[dead].sum() / d
            if ties == "breslow":
                total -= w[dead].sum() * np.log(S)
            else:
                total -= mean_w * sum(np.log(S - k / d * D) for k in range(d))
    return -total


def tied_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    time = rng.integers(1, 8, size=n).astype(float)
    event = rng.uniform(size=n) < 0.7
    strata = rng.integers(0, 2, size=n)
    entry = np.where(rng.uniform(size=n) < 0.3, time - rng.uniform(0.5, 3, size=n), -1.0)
    return X, time, event, strata, entry


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("design", ["plain", "strata+entry"])
def test_objective_matches_naive_formula_and_mask_is_deletion(ties, design):
    X, time, event, strata, entry = tied_data()
    if design == "plain":
        strata, entry = np.zeros_like(strata), np.full_like(entry, -np.inf)
    rs_args = (None, None) if design == "plain" else (entry, strata)
    rng = np.random.default_rng(1)
    beta = rng.normal(size=3)
    rs = RiskSets(time, event, *rs_args)
    ones = np.ones(len(time))
    assert negative_log_partial_likelihood(beta, ones, X, rs, ties) == pytest.approx(
        naive_nll(beta, X, time, event, ones, ties, strata, entry), rel=1e-12)
    # removing a row through its weight == deleting it, tied deaths included
    tied_deaths = [i for i in np.flatnonzero(event)
                   if np.sum(event & (time == time[i]) & (strata == strata[i])) > 1]
    for u in tied_deaths[:6] + list(rng.choice(len(time), 6, replace=False)):
        w = ones.copy()
        w[u] = 0.0
        keep = np.arange(len(time)) != u
        rs_del = RiskSets(time[keep], event[keep],
                          *(None, None) if design == "plain" else (entry[keep], strata[keep]))
        deleted = negative_log_partial_likelihood(beta, ones[keep], X[keep], rs_del, ties)
        assert negative_log_partial_likelihood(beta, w, X, rs, ties) == pytest.approx(
            deleted, rel=1e-12)
    # batched evaluation equals one-at-a-time
    W = rng.uniform(size=(4, len(time)))
    B = rng.normal(size=(4, 3))
    batched = negative_log_partial_likelihood(B, W, X, rs, ties)
    single = [negative_log_partial_likelihood(B[k], W[k], X, rs, ties) for k in range(4)]
    np.testing.assert_allclose(batched, single, rtol=1e-13)


def test_gradient_matches_finite_differences():
    X, time, event, strata, entry = tied_data()
    rs = RiskSets(time, event, entry, strata)
    beta = np.array([0.3, -0.2, 0.5])
    w = np.random.default_rng(2).uniform(0.5, 2, size=len(time))
    f = lambda b: negative_log_partial_likelihood(b, w, X, rs, "efron", alpha=0.7)  # noqa: E731
    eps = 1e-6
    fd = [(f(beta + eps * e) - f(beta - eps * e)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(grad(f)(beta), fd, rtol=1e-7)


def test_weighted_fit_matches_lifelines_with_integer_weights():
    # integer case weights without ties across weighted rows == replicated rows
    X, y = rossi()
    w = np.random.default_rng(3).integers(1, 4, size=len(X))
    rep = np.repeat(np.arange(len(X)), w)
    a = CoxPHInfluence(ties="breslow").fit(X, y, sample_weight=w).coef_
    b = CoxPHInfluence(ties="breslow").fit(X.iloc[rep], y.iloc[rep]).coef_
    np.testing.assert_allclose(a, b, rtol=1e-8)


# --------------------------------------------------------- influence vs refits
@pytest.fixture(scope="module")
def rossi_fit():
    X, y = rossi()
    model = CoxPHInfluence().fit(X, y)
    return X, y, model, model.influence_(method="loo")


def test_loo_equals_independent_refits(rossi_fit):
    X, y, model, loo = rossi_fit
    for u in [0, 17, 100, 251, 431]:
        keep = np.arange(len(X)) != u
        ref = lifelines_coef(X[keep], y[keep]) - lifelines_coef(X, y)
        np.testing.assert_allclose(loo[u], ref, atol=1e-7)


def test_penalized_loo_equals_refits_from_scratch():
    # alpha > 0: the refits are accepted from fixed-Hessian iterations without a
    # Newton step (strongly convex objective); the reference is a fresh fit of
    # the data without the unit (Newton from zero, itself checked against
    # lifelines' penalized fits above)
    X, y = rossi()
    alpha = 20.0
    model = CoxPHInfluence(alpha=alpha).fit(X, y)
    pairs = np.arange(len(X)) // 2
    loo = model.influence_(method="loo", groups=pairs)
    rows = model.influence_(method="loo")
    for g in [0, 50, 215]:
        ref = refit_without(X, y, np.flatnonzero(pairs == g), alpha=alpha).coef_
        np.testing.assert_allclose(loo[g], ref - model.coef_, atol=1e-8)
        ref = refit_without(X, y, [g], alpha=alpha).coef_
        np.testing.assert_allclose(rows[g], ref - model.coef_, atol=1e-8)


# Bands of (r, slope of estimate on refit, max |error| / max |change|), per column, set
# from the measured values (in brackets: their range over the 7 columns) with a small
# margin: every band excludes the same estimate scaled by 0.9 or 1.1.
COEF_BANDS = {
    # slope [0.939, 0.982], max error 0.087: the first-order methods understate the
    # largest changes a little
    "vif": {"min_r": 0.999, "slope": (0.92, 1.0), "max_error": 0.12},
    "if": {"min_r": 0.999, "slope": (0.92, 1.0), "max_error": 0.12},  # [0.937, 0.980], 0.090
    "newton": {"min_r": 0.999, "slope": (0.95, 1.02), "max_error": 0.08},  # [0.967, 1.000], 0.053
}


@pytest.mark.parametrize("method", ["vif", "newton", "if"])
def test_coef_influence_agrees_with_refits(rossi_fit, method):
    X, y, model, loo = rossi_fit
    est = model.influence_(method=method)
    for j in range(X.shape[1]):
        assert_agrees(est[:, j], loo[:, j], **COEF_BANDS[method], label=f"{method}, column {j}")


def test_influence_if_is_minus_the_weight_derivative():
    X, y = rossi()
    model = CoxPHInfluence().fit(X, y)
    est = model.influence_(method="if")
    eps = 1e-5
    for u in [3, 50, 200]:
        w_up, w_dn = np.ones(len(X)), np.ones(len(X))
        w_up[u], w_dn[u] = 1 + eps, 1 - eps
        deriv = (CoxPHInfluence().fit(X, y, sample_weight=w_up).coef_
                 - CoxPHInfluence().fit(X, y, sample_weight=w_dn).coef_) / (2 * eps)
        np.testing.assert_allclose(est[u], -deriv, rtol=1e-4, atol=1e-8)


def test_predict_and_survival_targets_match_refits():
    X, y = rossi()
    model = CoxPHInfluence().fit(X, y)
    X_new, times = X.iloc[:6], np.array([8.0, 26.0, 45.0])
    units = np.arange(0, len(X), 9)
    pred = model.influence_(X_new, target="predict")[units]
    surv = model.influence_(X_new, target="survival", times=times)[units]
    surv_newton = model.influence_(X_new, target="survival", times=times, method="newton")[units]
    surv_loo = model.influence_(X_new, target="survival", times=times, method="loo",
                                groups=np.arange(len(X)))[units]
    ref_pred, ref_surv = [], []
    for u in units:
        refit = refit_without(X, y, [u])
        ref_pred.append(refit.predict(X_new) - model.predict(X_new))
        ref_surv.append(refit.predict_survival_function(X_new, times)
                        - model.predict_survival_function(X_new, times))
    ref_pred, ref_surv = np.array(ref_pred), np.array(ref_surv)
    np.testing.assert_allclose(surv_loo, ref_surv, atol=1e-8)
    # measured: slope 0.958, 0.971, 0.994; max error 0.039, 0.051, 0.042
    assert_agrees(pred, ref_pred, min_r=0.999, slope=(0.93, 1.0), max_error=0.06,
                  label="predict, vif")
    assert_agrees(surv, ref_surv, min_r=0.999, slope=(0.94, 1.01), max_error=0.07,
                  label="survival, vif")
    assert_agrees(surv_newton, ref_surv, min_r=0.999, slope=(0.97, 1.03), max_error=0.06,
                  label="survival, newton")


def test_loss_target_matches_refits():
    X, y = rossi()
    train, test = np.arange(0, 300), np.arange(300, 432)
    model = CoxPHInfluence().fit(X.iloc[train], y.iloc[train])
    est = model.influence_(X.iloc[test], y.iloc[test], target="loss")
    assert est.shape == (300,)
    units = np.arange(0, 300, 10)

    def test_nll(m):
        yt = y.iloc[test]
        rs = RiskSets(yt.week.to_numpy(float), yt.arrest.to_numpy(bool))
        Xt = X.iloc[test].to_numpy(float)
        return negative_log_partial_likelihood(m.coef_, np.ones(len(test)), Xt, rs, "efron")

    ref = np.array([test_nll(refit_without(X.iloc[train], y.iloc[train], [u]))
                    for u in units]) - test_nll(model)
    # measured: r 0.9998, slope 0.994, max error 0.026
    assert_agrees(est[units], ref, min_r=0.999, slope=(0.97, 1.03), max_error=0.04,
                  label="test loss, vif")


def test_group_influence_matches_group_refits():
    X, y = rossi()
    groups = np.arange(len(X)) // 4
    model = CoxPHInfluence().fit(X, y)
    est = model.influence_(groups=groups)
    newton = model.influence_(groups=groups, method="newton")
    assert est.shape == (108, 7)
    picked = np.arange(0, 108, 6)
    ref = np.array([refit_without(X, y, np.flatnonzero(groups == g)).coef_ - model.coef_
                    for g in picked])
    # measured over the 7 columns: vif slope [0.907, 0.972], max error 0.122; newton
    # slope [0.969, 0.999], max error 0.042
    for j in range(7):
        assert_agrees(est[picked, j], ref[:, j], min_r=0.998, slope=(0.88, 0.99),
                      max_error=0.16, label=f"vif, column {j}")
        assert_agrees(newton[picked, j], ref[:, j], min_r=0.999, slope=(0.95, 1.02),
                      max_error=0.06, label=f"newton, column {j}")
    frame = model.influence_(groups=np.where(groups % 2, "odd", "even"), as_frame=True)
    assert list(frame.index) == ["even", "odd"]


def test_cg_solver_agrees_with_direct(rossi_fit):
    X, y, model, _ = rossi_fit
    np.testing.assert_allclose(model.influence_(solver="cg"), model.influence_(solver="direct"),
                               rtol=1e-6, atol=1e-10)


# ----------------------------------------------------------- scikit-learn glue
def test_y_formats_agree():
    X, y = rossi()
    structured = Surv.from_arrays(y.arrest.astype(bool), y.week)
    a = CoxPHInfluence().fit(X, structured).coef_
    b = CoxPHInfluence().fit(X, y.to_numpy()).coef_
    c = CoxPHInfluence().fit(X, y).coef_
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_clone_pickle_pipeline_gridsearch():
    X, y = rossi()
    yy = Surv.from_arrays(y.arrest.astype(bool), y.week)
    model = CoxPHInfluence(alpha=1.0, ties="breslow")
    assert clone(model).get_params() == model.get_params()
    model.fit(X, yy)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.influence_(), model.influence_())

    pipe = make_pipeline(StandardScaler(), CoxPHInfluence()).fit(X, yy)
    Z = StandardScaler().fit_transform(X)
    np.testing.assert_allclose(pipe[-1].coef_, CoxPHInfluence().fit(Z, yy).coef_, rtol=1e-12)
    assert pipe.score(X, yy) == pytest.approx(CoxPHInfluence().fit(Z, yy).score(Z, yy))

    # the grid search equals a loop by hand over the grid and the folds, scored by
    # scikit-survival's concordance index; its choice is the argmax of that loop
    grid = [0.0, 300.0]
    search = GridSearchCV(make_pipeline(StandardScaler(), CoxPHInfluence()),
                          {"coxphinfluence__alpha": grid}, cv=KFold(3)).fit(X, yy)
    by_hand = []
    for alpha in grid:
        folds = []
        for train, test in KFold(3).split(X):
            scaler = StandardScaler().fit(X.iloc[train])
            fitted = CoxPHInfluence(alpha=alpha).fit(scaler.transform(X.iloc[train]),
                                                     yy[train])
            risk = fitted.predict(scaler.transform(X.iloc[test]))
            folds.append(concordance_index_censored(yy[test]["event"], yy[test]["time"],
                                                    risk)[0])
        by_hand.append(folds)
    by_hand = np.array(by_hand)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], by_hand.mean(axis=1),
                               rtol=1e-12)
    assert abs(by_hand[0].mean() - by_hand[1].mean()) > 1e-3  # the choice is not a tie
    assert search.best_params_["coxphinfluence__alpha"] == grid[np.argmax(by_hand.mean(1))]
    np.testing.assert_allclose(
        cross_val_score(make_pipeline(StandardScaler(), CoxPHInfluence()), X, yy, cv=KFold(3)),
        by_hand[0], rtol=1e-12)


def test_as_frame_uses_labels():
    X, y = rossi()
    X = X.set_index(pd.Index([f"p{i}" for i in range(len(X))]))
    y = y.set_axis(X.index)
    model = CoxPHInfluence().fit(X, y)
    frame = model.influence_(as_frame=True)
    assert list(frame.columns) == list(X.columns) and frame.index[5] == "p5"
    np.testing.assert_array_equal(frame.to_numpy(), model.influence_())
    pred = model.influence_(X.iloc[:3], target="predict", as_frame=True)
    assert list(pred.columns) == ["p0", "p1", "p2"]
    summary = model.summary()
    assert list(summary.columns) == ["coef", "exp(coef)", "se(coef)", "coef lower 95%",
                                     "coef upper 95%", "z", "p"]


def test_summary_matches_lifelines():
    X, y = rossi()
    cph = CoxPHFitter().fit(pd.concat([X, y], axis=1), "week", "arrest", fit_options=TIGHT)
    ours = CoxPHInfluence().fit(X, y).summary()
    for col in ["coef", "se(coef)", "z", "p", "coef lower 95%"]:
        np.testing.assert_allclose(ours[col], cph.summary[col], rtol=1e-5)


def test_inputs_not_modified_and_errors():
    X, y = rossi()
    Xa, ya = X.to_numpy(float), y.to_numpy(float)
    Xc, yc = Xa.copy(), ya.copy()
    model = CoxPHInfluence().fit(Xa, ya)
    model.influence_(Xa[:4], target="survival", times=[10.0])
    np.testing.assert_array_equal(Xa, Xc)
    np.testing.assert_array_equal(ya, yc)
    with pytest.raises(ValueError, match="ties"):
        CoxPHInfluence(ties="exact").fit(Xa, ya)
    with pytest.raises(ValueError, match="censored"):
        CoxPHInfluence().fit(Xa, np.c_[ya[:, 0], np.zeros(len(ya))])
    with pytest.raises(ValueError, match="non-negative"):
        CoxPHInfluence().fit(Xa, np.c_[-ya[:, 0], ya[:, 1]])
    with pytest.raises(ValueError, match="rows"):
        CoxPHInfluence().fit(Xa, ya[:10])
    with pytest.raises(ValueError, match="features"):
        model.predict(Xa[:, :3])
    with pytest.raises(ValueError, match="target"):
        model.influence_(target="hazard")
    with pytest.raises(ValueError, match="needs X"):
        model.influence_(target="predict")
    with pytest.raises(ValueError, match="groups"):
        model.influence_(groups=[1, 2])


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("with_strata", [False, True])
def test_fast_gradient_changes_equal_the_generic_engine(ties, with_strata):
    from autograd import grad as agrad

    from skvif._engine import _batch_grad, _leave_out_weights
    from skvif.survival._fast import gradient_changes

    X, time, event, strata, _ = tied_data(n=300, seed=4)
    X[7] += 3.0  # an outlying risk score takes the exact branch
    w = np.random.default_rng(5).uniform(0.5, 2.0, size=300)
    w[11] = 0.0
    model = CoxPHInfluence(ties=ties).fit(X, np.c_[time, event], sample_weight=w,
                                          strata=strata if with_strata else None)
    loss, n = model._loss(), 300
    generic = agrad(loss)(model.coef_, np.ones(n)) - _batch_grad(
        loss, np.tile(model.coef_, (n, 1)), _leave_out_weights([[i] for i in range(n)], n))
    fast = gradient_changes(model.coef_, model._X, model._risk_sets, w, ties)
    np.testing.assert_allclose(fast, generic, rtol=0, atol=1e-10 * np.abs(generic).max())


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_fast_newton_equals_the_generic_engine(ties):
    from skvif._engine import influence

    X, time, event, strata, _ = tied_data(n=200, seed=6)
    model = CoxPHInfluence(ties=ties).fit(X, np.c_[time, event], strata=strata)
    fast = model.influence_(method="newton")
    generic = influence(model._loss(), model.coef_, 200, [[i] for i in range(200)],
                        method="newton", batched=True)
    np.testing.assert_allclose(fast, generic, rtol=0, atol=1e-10 * np.abs(generic).max())


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_fast_weight_derivatives_equal_autograd(ties):
    from autograd import grad as agrad
    from autograd import jacobian

    from skvif.survival._fast import weight_derivatives

    X, time, event, strata, entry = tied_data(n=150, seed=7)
    w = np.random.default_rng(8).uniform(0.5, 2.0, size=150)
    model = CoxPHInfluence(ties=ties).fit(X, np.c_[time, event], sample_weight=w,
                                          strata=strata, entry=entry)
    loss = model._loss(smooth=True)
    generic = jacobian(lambda u: agrad(loss)(model.coef_, u))(np.ones(150))
    fast = weight_derivatives(model.coef_, model._X, model._risk_sets, w, ties)
    np.testing.assert_allclose(fast, generic, rtol=0, atol=1e-10 * np.abs(generic).max())
