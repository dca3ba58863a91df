"""Tests of ListwiseRankerInfluence against independent references.

The reference is a plain-numpy implementation of the two listwise objectives
written here (a loop over queries, analytic gradients), fitted with
``scipy.optimize.minimize``; leave-out references delete rows and refit it.
"""

import pickle
from functools import partial

import numpy as np
import pandas as pd
import pytest
import sklearn
from autograd import grad
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import root
from scipy.special import logsumexp, softmax
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import ndcg_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _accuracy import assert_agrees
from skvif import _engine
from skvif.ranking import ListwiseRankerInfluence
from skvif.ranking._objective import Lists, objective

LOSSES = ["listnet", "listmle"]


# --------------------------------------------------------------------------
# the independent reference
# --------------------------------------------------------------------------
def ref_list_loss(s, y, loss):
    """Loss and score gradient of one list (rows in any order), plain numpy."""
    if loss == "listnet":
        p_y = softmax(y)
        return -np.sum(p_y * (s - logsumexp(s))), softmax(s) - p_y
    order = np.argsort(-y, kind="stable")
    t = s[order]
    lse = np.logaddexp.accumulate(t[::-1])[::-1]  # log sum_{j >= k} exp(t_j)
    # d/dt_j sum_k lse_k = sum_{k <= j} exp(t_j - lse_k)
    g_t = np.exp(t) * np.cumsum(np.exp(-lse)) - 1.0
    g = np.empty_like(g_t)
    g[order] = g_t
    return np.sum(lse - t), g


def ref_query_losses(w, X, y, qid, loss):
    """Per-query losses, queries in np.unique order."""
    return np.array([ref_list_loss(X[qid == q] @ w, y[qid == q], loss)[0]
                     for q in np.unique(qid)])


def ref_objective(w, X, y, qid, loss, alpha):
    value, gradient = 0.5 * alpha * w @ w, alpha * w
    for q in np.unique(qid):
        rows = qid == q
        v, g = ref_list_loss(X[rows] @ w, y[rows], loss)
        value += v
        gradient = gradient + X[rows].T @ g
    return value, gradient


def ref_fit(X, y, qid, loss, alpha, x0=None):
    """BFGS on the reference objective, polished by solving gradient = 0 (hybr)."""
    x0 = np.zeros(X.shape[1]) if x0 is None else x0
    res = scipy_minimize(ref_objective, x0, args=(X, y, qid, loss, alpha), jac=True,
                         method="BFGS", options={"gtol": 1e-10, "maxiter": 10000})
    sol = root(lambda w: ref_objective(w, X, y, qid, loss, alpha)[1], res.x, method="hybr",
               options={"xtol": 1e-14})
    # with alpha >= 1 the objective is 1-strongly convex: |w - w*| <= |gradient|
    assert alpha >= 1.0 and np.linalg.norm(sol.fun) < 1e-9, sol.message
    return sol.x


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def synthetic(seed=0, n_queries=24, p=4):
    """Lists of 1 to 12 items, tied graded labels, shuffled (non-contiguous) qids."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 13, n_queries)
    sizes[0] = 1  # a list of one item
    qid = np.repeat(np.arange(n_queries) * 7 + 3, sizes)
    n = qid.size
    X = rng.normal(size=(n, p))
    beta = np.linspace(1.0, -0.5, p)
    y = np.clip(np.round(X @ beta + rng.normal(scale=0.8, size=n)), 0, 3)
    perm = rng.permutation(n)
    return X[perm], y[perm], qid[perm]


def diabetes():
    """Lists from scikit-learn's diabetes data: 37 queries of 12 patients, graded by target."""
    X, target = load_diabetes(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    rng = np.random.default_rng(1)
    qid = rng.permutation(np.arange(X.shape[0]) // 12)
    y = np.digitize(target, np.quantile(target, [0.25, 0.5, 0.75])).astype(float)
    return X, y, qid


DATASETS = {"synthetic": synthetic, "diabetes": diabetes}


@pytest.fixture(scope="module")
def fits():
    """Fitted rankers and exact leave-out refits, shared by the influence tests."""
    cache = {}

    def get(data, loss, unit):
        key = (data, loss, unit)
        if key not in cache:
            X, y, qid = DATASETS[data]()
            est = ListwiseRankerInfluence(loss=loss, alpha=1.0).fit(X, y, qid)
            loo = est.influence_(unit=unit, method="loo")
            cache[key] = (X, y, qid, est, loo)
        return cache[key]

    return get


# --------------------------------------------------------------------------
# the objective: exact removal
# --------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
def test_objective_equals_reference(loss):
    X, y, qid = synthetic(3)
    rng = np.random.default_rng(0)
    f = partial(objective, lists=Lists(X, y, qid), loss=loss, alpha=0.3)
    for _ in range(3):
        w = rng.normal(size=X.shape[1])
        value, gradient = ref_objective(w, X, y, qid, loss, 0.3)
        np.testing.assert_allclose(f(w, np.ones(X.shape[0])), value, rtol=1e-12)
        np.testing.assert_allclose(grad(f)(w, np.ones(X.shape[0])), gradient, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("labels", ["tied", "wide"])
def test_zero_weight_is_deletion(loss, labels):
    """w_u = 0 gives the objective of the data without row u (or query), to 1e-12."""
    X, y, qid = synthetic(5)
    if labels == "wide":  # softmax(y) underflows unless its shift follows the deletion
        y = y * 300.0
    n = X.shape[0]
    rng = np.random.default_rng(1)
    w = rng.normal(size=X.shape[1])
    f = partial(objective, lists=Lists(X, y, qid), loss=loss, alpha=0.0)
    units = [np.array([i]) for i in range(n)] + [np.flatnonzero(qid == q)
                                                 for q in np.unique(qid)]
    W = _engine._leave_out_weights(units, n)
    batched = f(np.tile(w, (len(units), 1)), W)
    for u, rows in enumerate(units):
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        expected = ref_objective(w, X[keep], y[keep], qid[keep], loss, 0.0)[0]
        own = partial(objective, lists=Lists(X[keep], y[keep], qid[keep]), loss=loss,
                      alpha=0.0)(w, np.ones(keep.sum()))
        np.testing.assert_allclose(f(w, W[u]), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(f(w, W[u]), own, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(batched[u], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_removing_every_item_of_every_query(loss):
    X, y, qid = synthetic(2)
    f = partial(objective, lists=Lists(X, y, qid), loss=loss, alpha=0.5)
    w = np.ones(X.shape[1])
    assert f(w, np.zeros(X.shape[0])) == pytest.approx(0.5 * 0.5 * X.shape[1], rel=1e-15)
    gradient = grad(f)(w, np.zeros(X.shape[0]))
    np.testing.assert_allclose(gradient, 0.5 * w, rtol=1e-15)


# --------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------
@pytest.mark.parametrize("data", list(DATASETS))
@pytest.mark.parametrize("loss", LOSSES)
def test_coef_matches_scipy_fit(data, loss):
    X, y, qid = DATASETS[data]()
    est = ListwiseRankerInfluence(loss=loss, alpha=1.0).fit(X, y, qid)
    np.testing.assert_allclose(est.coef_, ref_fit(X, y, qid, loss, 1.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(est.predict(X), X @ est.coef_, rtol=1e-14)
    assert est.n_features_in_ == X.shape[1] and est.n_iter_ >= 1
    np.testing.assert_array_equal(est.queries_, np.unique(qid))


@pytest.mark.parametrize("loss", LOSSES)
def test_row_order_and_query_labels(loss):
    """Query labels are arbitrary; ListNet ignores row order, ListMLE breaks ties by it."""
    X, y, qid = synthetic(4)
    est = ListwiseRankerInfluence(loss=loss).fit(X, y, qid)
    names = np.array([f"q{v:03d}" for v in qid], dtype=object)
    relabeled = ListwiseRankerInfluence(loss=loss).fit(X, y, names)
    np.testing.assert_allclose(relabeled.coef_, est.coef_, rtol=1e-12)
    np.testing.assert_array_equal(relabeled.queries_, np.unique(names))
    # a permutation of the rows that reverses the order of tied items
    perm = np.lexsort((-np.arange(len(y)), -y, qid))
    shuffled = ListwiseRankerInfluence(loss=loss).fit(X[perm], y[perm], qid[perm])
    expected = ref_fit(X[perm], y[perm], qid[perm], loss, 1.0)
    np.testing.assert_allclose(shuffled.coef_, expected, rtol=0, atol=1e-6)
    if loss == "listnet":
        np.testing.assert_allclose(shuffled.coef_, est.coef_, rtol=1e-9)
    else:
        assert np.abs(shuffled.coef_ - est.coef_).max() > 1e-3


def test_score_is_mean_ndcg_per_query():
    X, y, qid = synthetic(6)
    est = ListwiseRankerInfluence().fit(X, y, qid)
    scores = X @ est.coef_
    expected = np.mean([ndcg_score([y[qid == q]], [scores[qid == q]])
                        for q in np.unique(qid) if np.sum(qid == q) > 1])
    assert est.score(X, y, qid) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="two items"):
        est.score(X[:3], y[:3], np.arange(3))
    # weighted: each query by the mean weight of its rows
    weight = np.random.default_rng(0).uniform(size=len(y))
    per_query = [(ndcg_score([y[qid == q]], [scores[qid == q]]), weight[qid == q].mean())
                 for q in np.unique(qid) if np.sum(qid == q) > 1]
    value, w = np.array(per_query).T
    assert est.score(X, y, qid, sample_weight=weight) == pytest.approx(
        np.sum(value * w) / np.sum(w), rel=1e-12)


def test_convergence_warning():
    X, y, qid = synthetic(0)
    with pytest.warns(ConvergenceWarning):
        ListwiseRankerInfluence(max_iter=1).fit(X, y, qid)


# --------------------------------------------------------------------------
# influence against exact refits
# --------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["item", "query"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("data", list(DATASETS))
def test_influence_against_refits(fits, data, loss, unit):
    X, y, qid, est, loo = fits(data, loss, unit)
    # the engine's exact refits agree with independent scipy refits of the reference
    n_units = loo.shape[0]
    for u in np.random.default_rng(0).choice(n_units, 3, replace=False):
        keep = np.ones(X.shape[0], dtype=bool)
        if unit == "item":
            keep[u] = False
        else:
            keep[qid == est.queries_[u]] = False
        refit = ref_fit(X[keep], y[keep], qid[keep], loss, 1.0, x0=est.coef_)
        np.testing.assert_allclose(loo[u], refit - est.coef_, rtol=0, atol=1e-7)
    vif = est.influence_(unit=unit, method="vif")
    newton = est.influence_(unit=unit, method="newton")
    assert vif.shape == newton.shape == loo.shape == (n_units, X.shape[1])
    # entry by entry (all coefficients together), measured over the 8 cases: vif slope
    # [0.896, 0.967], max error 0.166, r >= 0.998; newton slope [0.998, 1.008], max
    # error 0.035, r >= 0.9997
    assert_agrees(vif, loo, min_r=0.995, slope=(0.87, 0.99), max_error=0.2, label="vif")
    assert_agrees(newton, loo, min_r=0.9995, slope=(0.98, 1.03), max_error=0.05,
                  label="newton")


@pytest.mark.parametrize("unit", ["item", "query"])
@pytest.mark.parametrize("loss", LOSSES)
def test_fast_path_equals_generic_engine(fits, loss, unit):
    """The query-local gradients/Hessians give what the engine's batched path gives."""
    X, y, qid, est, _ = fits("synthetic", loss, unit)
    n = X.shape[0]
    units = ([np.array([i]) for i in range(n)] if unit == "item"
             else [np.flatnonzero(qid == q) for q in np.unique(qid)])
    f = partial(objective, lists=Lists(X, y, qid), loss=loss, alpha=1.0)
    for method in ["vif", "newton"]:
        generic = _engine.influence(f, est.coef_.copy(), n, units, method=method,
                                    batched=True)
        np.testing.assert_allclose(est.influence_(unit=unit, method=method), generic,
                                   rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_if_method(fits, loss):
    """'if' is the derivative of the weighted refit in the weight (finite differences)."""
    X, y, qid, est, loo = fits("synthetic", loss, "item")
    inf = est.influence_(method="if")
    f = est._objective()
    eps = 1e-5
    for u in [0, 5, 17]:
        w = np.ones(X.shape[0])
        w[u] = 1 - eps
        P, _, conv = _engine.minimize(f, est.coef_[None], w[None], tol=1e-13)
        np.testing.assert_allclose(inf[u], (P[0] - est.coef_) / eps, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("loss", LOSSES)
def test_if_query_is_classical_influence(loss):
    """unit='query': 'if' is H^-1 grad l_q (reference gradients, finite-difference H)."""
    X, y, qid = synthetic(11)
    est = ListwiseRankerInfluence(loss=loss).fit(X, y, qid)
    p, h = X.shape[1], 1e-6
    H = np.stack([(ref_objective(est.coef_ + h * e, X, y, qid, loss, 1.0)[1]
                   - ref_objective(est.coef_ - h * e, X, y, qid, loss, 1.0)[1]) / (2 * h)
                  for e in np.eye(p)])
    G = np.stack([ref_objective(est.coef_, X[qid == q], y[qid == q], qid[qid == q],
                                loss, 0.0)[1] for q in est.queries_])
    expected = np.linalg.solve(H, G.T).T
    got = est.influence_(unit="query", method="if")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * np.abs(expected).max())
    np.testing.assert_allclose(est.influence_(unit="query", method="vif"), got, rtol=1e-9,
                               atol=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_predict_and_loss_targets(fits, loss):
    X, y, qid, est, loo = fits("diabetes", loss, "query")
    Xt, yt, qt = synthetic(9, n_queries=6, p=X.shape[1])
    queries = np.unique(qt)
    coef_loo = est.coef_ + loo
    # predict: exact for loo, the coefficient change mapped through X for the others
    np.testing.assert_allclose(est.influence_(Xt, target="predict", unit="query",
                                              method="loo"),
                               coef_loo @ Xt.T - Xt @ est.coef_, atol=1e-9)
    for method in ["vif", "newton", "if"]:
        np.testing.assert_allclose(
            est.influence_(Xt, target="predict", unit="query", method=method),
            est.influence_(unit="query", method=method) @ Xt.T, rtol=1e-9, atol=1e-12)
    # loss: change of each test query's (unpenalized) loss, reference implementation
    base = ref_query_losses(est.coef_, Xt, yt, qt, loss)
    expected = np.array([ref_query_losses(c, Xt, yt, qt, loss) for c in coef_loo]) - base
    got = est.influence_(Xt, yt, qt, target="loss", unit="query", method="loo")
    assert got.shape == (len(est.queries_), queries.size)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    vif = est.influence_(Xt, yt, qt, target="loss", unit="query")
    # measured: slope 0.951 (listnet), 0.931 (listmle); max error 0.064, 0.134
    assert_agrees(vif, expected, min_r=0.99, slope=(0.90, 0.98), max_error=0.18,
                  label="test loss, vif")
    frame = est.influence_(Xt, yt, qt, target="loss", unit="query", as_frame=True)
    assert list(frame.columns) == list(queries) and list(frame.index) == list(est.queries_)


# --------------------------------------------------------------------------
# scikit-learn integration
# --------------------------------------------------------------------------
def test_clone_get_params_pickle_and_inputs_untouched():
    X, y, qid = synthetic(7)
    copies = X.copy(), y.copy(), qid.copy()
    est = ListwiseRankerInfluence(loss="listmle", alpha=0.5, tol=1e-10, max_iter=50)
    assert est.get_params() == {"loss": "listmle", "alpha": 0.5, "tol": 1e-10,
                                "max_iter": 50}
    assert clone(est).get_params() == est.get_params()
    est.fit(X, y, qid)
    before = est.influence_()
    X[:] = 0.0  # the estimator keeps its own copy of the training data
    after = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(after.coef_, est.coef_, rtol=0)
    np.testing.assert_allclose(after.influence_(), before, rtol=1e-12)
    X[:] = copies[0]
    est.influence_(X, y, qid, target="loss", unit="query")
    for a, b in zip((X, y, qid), copies):
        np.testing.assert_array_equal(a, b)


def test_dataframe_names_and_frames():
    X, y, qid = synthetic(8)
    frame = pd.DataFrame(X, columns=list("abcd"), index=[f"r{i}" for i in range(len(X))])
    est = ListwiseRankerInfluence().fit(frame, y, qid)
    np.testing.assert_array_equal(est.feature_names_in_, list("abcd"))
    out = est.influence_(as_frame=True)
    assert list(out.columns) == list("abcd") and list(out.index) == list(frame.index)
    out = est.influence_(frame.iloc[:5], target="predict", unit="query", as_frame=True)
    assert out.shape == (len(est.queries_), 5) and list(out.index) == list(est.queries_)


def test_pipeline_and_grid_search_route_qid():
    X, y, qid = diabetes()
    X = X * 3.0 + 1.0
    with sklearn.config_context(enable_metadata_routing=True):
        ranker = ListwiseRankerInfluence().set_fit_request(qid=True).set_score_request(qid=True)
        pipe = make_pipeline(StandardScaler(), ranker).fit(X, y, qid=qid)
        Xs = StandardScaler().fit_transform(X)
        direct = ListwiseRankerInfluence().fit(Xs, y, qid)
        np.testing.assert_allclose(pipe[-1].coef_, direct.coef_, rtol=1e-10)
        assert pipe.score(X, y, qid=qid) == pytest.approx(direct.score(Xs, y, qid), rel=1e-12)

        grid = GridSearchCV(pipe, {"listwiserankerinfluence__alpha": [1.0, 10.0]},
                            cv=GroupKFold(n_splits=3))
        grid.fit(X, y, qid=qid, groups=qid)
    # reference: the same folds by hand, without routing
    means = []
    for k, alpha in enumerate([1.0, 10.0]):
        fold_scores = []
        for train, test in GroupKFold(n_splits=3).split(X, y, qid):
            scaler = StandardScaler().fit(X[train])
            r = ListwiseRankerInfluence(alpha=alpha).fit(scaler.transform(X[train]),
                                                          y[train], qid[train])
            fold_scores.append(r.score(scaler.transform(X[test]), y[test], qid[test]))
        assert grid.cv_results_["mean_test_score"][k] == pytest.approx(np.mean(fold_scores),
                                                                       rel=1e-10)
        means.append(np.mean(fold_scores))
    assert abs(means[0] - means[1]) > 1e-6  # the choice is not a tie
    best = grid.best_params_["listwiserankerinfluence__alpha"]
    assert best == [1.0, 10.0][np.argmax(means)]
    refit = ListwiseRankerInfluence(alpha=best).fit(Xs, y, qid)
    np.testing.assert_allclose(grid.best_estimator_[-1].coef_, refit.coef_, rtol=1e-10)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def test_errors():
    X, y, qid = synthetic(0)
    est = ListwiseRankerInfluence()
    with pytest.raises(ValueError, match="qid must have one query id per row"):
        est.fit(X, y, qid[:-1])
    with pytest.raises(ValueError, match="qid"):
        est.fit(X, y, None)
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X, y_nan, qid)
    with pytest.raises(ValueError, match="loss"):
        ListwiseRankerInfluence(loss="lambdamart").fit(X, y, qid)
    with pytest.raises(ValueError, match="alpha"):
        ListwiseRankerInfluence(alpha=-1.0).fit(X, y, qid)
    with pytest.raises(NotFittedError):
        est.predict(X)
    est.fit(X, y, qid)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="needs X"):
        est.influence_(target="predict")
    with pytest.raises(ValueError, match="needs X, y and qid"):
        est.influence_(X, target="loss")
    with pytest.raises(ValueError, match="qid must have one query id per row"):
        est.influence_(X, y, qid[:4], target="loss")
    with pytest.raises(ValueError, match="unit"):
        est.influence_(unit="row")
    with pytest.raises(ValueError, match="method"):
        est.influence_(method="exact")
    with pytest.raises(ValueError, match="target"):
        est.influence_(target="ndcg")
    with pytest.raises(ValueError, match="damping"):
        est.influence_(damping=-1.0)
