"""Tests of LabelRankerInfluence (items shared across queries, label ranking).

References: autograd derivatives of the row-weighted objective (for the
closed forms), a plain-numpy loop over lists (for the objective), the
engine's generic autograd path (for the influence), fits on the data with a
label column deleted and scipy refits (for the removal), and
ListwiseRankerInfluence (for the shared linear scorer).
"""

import numpy as np
import pytest
from autograd import grad
from scipy.optimize import minimize as scipy_minimize
from scipy.special import logsumexp, softmax
from sklearn.datasets import make_multilabel_classification
from sklearn.decomposition import TruncatedSVD
from sklearn.utils._param_validation import InvalidParameterError

from _accuracy import assert_agrees

from skvif import _engine
from skvif.ranking import LabelRankerInfluence, ListwiseRankerInfluence
from skvif.ranking import _labels
from skvif.ranking._labels import (ItemLists, ItemRankerDerivatives, ItemRankingProblem,
                                   PerItemScores, SharedLinearScores)

LOSSES = ["listnet", "listmle"]
SCORERS = ["per_query", "per_position", "linear"]


def ref_list_loss(s, y, loss):
    """One list's loss, plain numpy (items in any order)."""
    if loss == "listnet":
        return -np.sum(softmax(y) * (s - logsumexp(s)))
    t = s[np.argsort(-y, kind="stable")]
    return np.sum(np.logaddexp.accumulate(t[::-1])[::-1] - t)


def random_problem(loss, kind, seed, *, scale=2.0):
    """Queries with missing items, single-item lists, tied graded labels."""
    rng = np.random.default_rng(seed)
    n, L, d = 9, 6, 3
    query = np.repeat(np.arange(n), L)
    item = np.tile(np.arange(L), n)
    keep = np.ones(n * L, bool) if kind == "per_query" else rng.random(n * L) < 0.7
    if kind != "per_query":  # (features per query: every label in every list)
        keep[query == 0] = item[query == 0] == 2  # a single-item list
    labels = rng.integers(0, 3, size=n * L).astype(float)  # many ties
    # ListNet with features per query: lists in item order (the estimator's layout)
    lists = ItemLists(labels[keep], query[keep], item[keep], n, L,
                      by_label=loss == "listmle" or kind != "per_query")
    X = rng.normal(size=(n, d)) * [1.0, 10.0, 0.1]
    if kind == "per_query":
        scores = PerItemScores(X, lists, per_query=True)
        features = X[query[keep]]
    else:
        features = rng.normal(size=(keep.sum(), d))
        F = np.zeros((n * lists.width, d))
        F[lists.row_query * lists.width + lists.row_position] = features
        scores = (PerItemScores(F, lists, per_query=False) if kind == "per_position"
                  else SharedLinearScores(F, lists))
    problem = ItemRankingProblem(lists, scores, loss, alpha=0.3)
    theta = rng.normal(scale=scale, size=problem.n_params)
    return problem, theta, (labels[keep], query[keep], item[keep], features)


def ref_objective(theta, rows, weights, kind, loss, alpha, L):
    labels, query, item, features = rows
    value = 0.5 * alpha * theta @ theta
    if kind == "linear":
        s = features @ theta
    else:
        blocks = theta.reshape(L, -1)
        s = np.sum(features * blocks[item, :-1], axis=1) + blocks[item, -1]
    for q in np.unique(query):
        m = (query == q) & (weights > 0)
        if m.any():
            value += ref_list_loss(s[m], labels[m], loss)
    return value


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", SCORERS)
def test_closed_forms_match_autograd(loss, kind):
    problem, theta, rows = random_problem(loss, kind, seed=3)
    rng = np.random.default_rng(4)
    for w in [np.ones(problem.lists.n_rows), (rng.random(problem.lists.n_rows) > 0.4) * 1.0]:
        W = problem.lists.weights(w)
        point = problem.at(theta, W)
        np.testing.assert_allclose(problem.value(theta, W),
                                   ref_objective(theta, rows, w, kind, loss, 0.3, 6),
                                   rtol=1e-12)
        g = grad(problem.objective)(theta, w)
        np.testing.assert_allclose(point.gradient, g, rtol=1e-10, atol=1e-12)
        V = rng.normal(size=(2, problem.n_params))
        for v, hv in zip(V, point.hvp(V)):
            ref = grad(lambda t: grad(problem.objective)(t, w) @ v)(theta)
            np.testing.assert_allclose(hv, ref, rtol=1e-10, atol=1e-11)
        H = point.hessian()
        np.testing.assert_allclose(H @ V[0], point.hvp(V[0]), rtol=1e-10, atol=1e-11)
        if kind != "linear":  # the preconditioner's blocks are the Hessian's diagonal blocks
            b = problem.scores.block_size
            diag = problem.scores.blocks(point.curvature.diagonal())
            for j in range(6):
                np.testing.assert_allclose(diag[j] + 0.3 * np.eye(b),
                                           H[j * b:(j + 1) * b, j * b:(j + 1) * b],
                                           rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("loss", LOSSES)
def test_kronecker_preconditioner_is_the_inverse_for_identical_lists(loss):
    # every query with the same features and labels: H = A kron (sum_q x_q x_q^T) + alpha I
    # exactly, so the Kronecker-factored preconditioner is H^-1 (checked on the dense H)
    rng = np.random.default_rng(8)
    n, L = 7, 5
    labels = np.tile(rng.integers(0, 3, size=L).astype(float), n)
    lists = ItemLists(labels, np.repeat(np.arange(n), L), np.tile(np.arange(L), n), n, L,
                      by_label=loss == "listmle")
    X = np.tile(rng.normal(size=3), (n, 1))
    problem = ItemRankingProblem(lists, PerItemScores(X, lists, per_query=True), loss, 0.4)
    point = problem.at(rng.normal(size=problem.n_params), lists.valid)
    V = rng.normal(size=(3, problem.n_params))
    M = point.preconditioner(damping=0.1)
    H = point.hessian() + 0.1 * np.eye(problem.n_params)
    for v in V:
        np.testing.assert_allclose(M @ (H @ v), v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("loss", LOSSES)
def test_large_scores_stay_finite(loss):
    problem, theta, rows = random_problem(loss, "per_position", seed=5, scale=15.0)
    w = np.ones(problem.lists.n_rows)
    assert np.max(np.abs(problem.scores.forward(theta))) > 50
    point = problem.at(theta, problem.lists.valid)
    np.testing.assert_allclose(point.gradient, grad(problem.objective)(theta, w),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", SCORERS)
def test_gradient_changes_and_vif_match_the_generic_engine(loss, kind):
    problem, theta, _ = random_problem(loss, kind, seed=7)
    lists = problem.lists
    derivatives = ItemRankerDerivatives(problem, theta)
    units = ([np.flatnonzero(lists.row_item == j) for j in range(6)]
             + [np.array([0]), np.array([5, 9]), lists.index[3, lists.valid[3] > 0]])
    units = [u for u in units if u.size]
    n = lists.n_rows
    generic = np.ones(n) - np.zeros((len(units), n))
    for i, u in enumerate(units):
        generic[i, u] = 0.0
    g = grad(problem.objective)
    ref = np.stack([g(theta, np.ones(n)) - g(theta, w) for w in generic])
    np.testing.assert_allclose(derivatives.gradient_changes(units), ref, rtol=1e-10,
                               atol=1e-11)
    # theta is not a minimum: vif is still H^-1 (gradient change), generic vs closed form
    base = _engine.influence(problem.objective, theta, n, units, method="vif", batched=True,
                             solver="direct")
    for solver in ["direct", "cg"]:
        fast = _engine.influence(problem.objective, theta, n, units, method="vif",
                                 batched=True, solver=solver, derivatives=derivatives)
        np.testing.assert_allclose(fast, base, rtol=1e-7, atol=1e-8 * np.abs(base).max())


def multilabel(n, n_labels, seed=0, n_test=40):
    X, Y = make_multilabel_classification(n_samples=n + n_test, n_features=20,
                                          n_classes=n_labels, n_labels=3, random_state=seed)
    Z = TruncatedSVD(4, random_state=0).fit_transform(X)
    Z /= Z.std(axis=0)
    return Z[:n], Y[:n], Z[n:], Y[n:]


@pytest.mark.parametrize("loss", LOSSES)
def test_item_removal_is_deleting_the_label_column(loss):
    X, Y, X_test, Y_test = multilabel(120, 6)
    ranker = LabelRankerInfluence(loss=loss, alpha=0.5).fit(X, Y)
    loo_coef = ranker.influence_(method="loo")
    loo_loss = ranker.influence_(X_test, Y_test, target="loss", method="loo")
    theta = np.column_stack([ranker.coef_, ranker.intercept_])
    for j in [0, 3]:
        keep = np.arange(6) != j
        without = LabelRankerInfluence(loss=loss, alpha=0.5).fit(X, Y[:, keep])
        np.testing.assert_allclose((theta + loo_coef[j])[keep],
                                   np.column_stack([without.coef_, without.intercept_]),
                                   atol=1e-8)
        np.testing.assert_allclose((theta + loo_coef[j])[j], 0.0, atol=1e-9)  # ridge only
        lists_test = [ref_list_loss(X_test[i] @ without.coef_.T + without.intercept_,
                                    Y_test[i, keep].astype(float), loss)
                      for i in range(len(X_test))]
        full = [ref_list_loss(X_test[i] @ ranker.coef_.T + ranker.intercept_,
                              Y_test[i].astype(float), loss) for i in range(len(X_test))]
        np.testing.assert_allclose(loo_loss[j], np.subtract(lists_test, full), atol=1e-8)


@pytest.mark.parametrize("loss", LOSSES)
def test_label_influence_matches_exact_refits(loss):
    X, Y, X_test, Y_test = multilabel(300, 8, seed=1)
    ranker = LabelRankerInfluence(loss=loss, alpha=1.0).fit(X, Y)
    exact = ranker.influence_(X_test, Y_test, target="loss", method="loo")
    assert np.abs(exact).max() > 1e-2
    for method, (r_min, slope_tol, err_max) in {"vif": (0.995, 0.05, 0.1),
                                                "newton": (0.998, 0.03, 0.06)}.items():
        est = ranker.influence_(X_test, Y_test, target="loss", method=method)
        assert_agrees(est, exact, min_r=r_min, slope=(1 - slope_tol, 1 + slope_tol),
                      max_error=err_max, label=method)
    # the parameters of the items left: "newton" (with the leave-out Hessian) as they are;
    # "vif" up to a common shift of all items' parameters, which no loss sees and only the
    # ridge (and the removed item's own parameters, zeroed by the refit) sets
    kept = ~np.eye(8, dtype=bool)

    def centred(delta):
        return np.stack([d[k] - d[k].mean(axis=0) for d, k in zip(delta, kept)])

    exact_coef = ranker.influence_(method="loo")
    assert_agrees(ranker.influence_(method="newton")[kept], exact_coef[kept], min_r=0.99,
                  slope=(0.97, 1.03), max_error=0.2, label="newton coef")
    # (ListMLE's removals are less linear: each changes every later suffix)
    r_min, slope_tol, err_max = (0.99, 0.08, 0.12) if loss == "listnet" else (0.97, 0.12, 0.4)
    for solver in ["direct", "cg"]:
        assert_agrees(centred(ranker.influence_(solver=solver)), centred(exact_coef),
                      min_r=r_min, slope=(1 - slope_tol, 1 + slope_tol), max_error=err_max,
                      label=f"vif coef, solver={solver}")


@pytest.mark.parametrize("loss", LOSSES)
def test_refits_match_scipy(loss):
    problem, theta, _ = random_problem(loss, "per_position", seed=11)
    n = problem.lists.n_rows
    fit, _, converged = _labels.newton_cg(problem, np.zeros(problem.n_params),
                                          problem.lists.valid, tol=1e-12)
    assert converged
    rows = np.flatnonzero(problem.lists.row_item == 1)
    w = np.ones(n)
    w[rows] = 0.0
    refit, _, converged = _labels.newton_cg(problem, fit, problem.lists.weights(w), tol=1e-12)
    g = grad(problem.objective)
    ref = scipy_minimize(lambda t: problem.objective(t, w), fit, jac=lambda t: g(t, w),
                         method="BFGS", options={"gtol": 1e-11, "maxiter": 5000}).x
    np.testing.assert_allclose(refit, ref, atol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_shared_linear_scorer_is_the_listwise_ranker(loss):
    rng = np.random.default_rng(2)
    n, items = 12, 5
    qid = np.repeat(np.arange(n), items)
    item_id = np.tile(["a", "b", "c", "d", "e"], n)
    X = rng.normal(size=(n * items, 3))
    y = rng.integers(0, 3, size=n * items).astype(float)
    perm = rng.permutation(n * items)
    X, y, qid, item_id = X[perm], y[perm], qid[perm], item_id[perm]
    ranker = LabelRankerInfluence(loss=loss, scorer="linear", alpha=0.7).fit(X, y, qid, item_id)
    reference = ListwiseRankerInfluence(loss=loss, alpha=0.7).fit(X, y, qid)
    np.testing.assert_allclose(ranker.coef_, reference.coef_, atol=1e-8)
    np.testing.assert_allclose(ranker.influence_(unit="query"),
                               reference.influence_(unit="query"), atol=1e-8)
    np.testing.assert_allclose(ranker.influence_(unit="row"), reference.influence_(unit="item"),
                               atol=1e-8)
    # an item removed from every list: the listwise ranker fitted without its rows
    loo = ranker.influence_(unit="item_id", method="loo", units=["c"])
    without = ListwiseRankerInfluence(loss=loss, alpha=0.7).fit(
        X[item_id != "c"], y[item_id != "c"], qid[item_id != "c"])
    np.testing.assert_allclose(ranker.coef_ + loo[0], without.coef_, atol=1e-8)


def test_per_item_long_form_matches_multilabel_form():
    X, Y, X_test, Y_test = multilabel(50, 4, seed=3)
    wide = LabelRankerInfluence(loss="listmle").fit(X, Y)
    n, L = Y.shape
    long = LabelRankerInfluence(loss="listmle").fit(
        np.repeat(X, L, axis=0), Y.ravel(), np.repeat(np.arange(n), L), np.tile(np.arange(L), n))
    np.testing.assert_allclose(long.coef_, wide.coef_, atol=1e-9)
    m = len(X_test)
    test_long = (np.repeat(X_test, L, axis=0), Y_test.ravel(), np.repeat(np.arange(m), L),
                 np.tile(np.arange(L), m))
    np.testing.assert_allclose(long.influence_(*test_long, target="loss"),
                               wide.influence_(X_test, Y_test, target="loss"), atol=1e-8)
    np.testing.assert_allclose(long.predict(X_test), wide.predict(X_test))


def test_bad_input():
    X, Y, _, _ = multilabel(30, 4)
    with pytest.raises(ValueError, match="pass no qid"):
        LabelRankerInfluence().fit(X, Y, qid=np.arange(30))
    with pytest.raises(ValueError, match="same score"):
        LabelRankerInfluence(scorer="linear").fit(X, Y)
    with pytest.raises(ValueError, match="qid and item_id are required"):
        LabelRankerInfluence().fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="twice in a query"):
        LabelRankerInfluence().fit(X[:4], [1, 0, 1, 0], [0, 0, 1, 1], [5, 5, 5, 6])
    with pytest.raises(InvalidParameterError):
        LabelRankerInfluence(alpha=0.0).fit(X, Y)
    ranker = LabelRankerInfluence().fit(X, Y)
    with pytest.raises(ValueError, match="label columns"):
        ranker.influence_(X, Y[:, :3], target="loss")
    with pytest.raises(ValueError, match="not item_id labels"):
        ranker.influence_(units=[7])
    with pytest.raises(ValueError, match="method"):
        ranker.influence_(method="if")
    long = LabelRankerInfluence().fit(X[:4], [1, 0, 1, 0], [0, 0, 1, 1], [5, 6, 5, 6])
    with pytest.raises(ValueError, match="not seen in training"):
        long.predict(X[:2], item_id=[5, 7])


def test_dense_hessian_refused_above_the_limit(monkeypatch):
    X, Y, _, _ = multilabel(30, 4)
    ranker = LabelRankerInfluence().fit(X, Y)
    monkeypatch.setattr(_labels, "DENSE_HESSIAN_MAX_PARAMS", 10)
    with pytest.raises(ValueError, match="solver='cg'"):
        ranker.influence_(solver="direct")
    cg = ranker.influence_(solver="cg")
    monkeypatch.setattr(_labels, "DENSE_HESSIAN_MAX_PARAMS", 5000)
    np.testing.assert_allclose(cg, ranker.influence_(solver="direct"), rtol=1e-6, atol=1e-9)


def test_user_arrays_untouched():
    X, Y, X_test, Y_test = multilabel(40, 4)
    copies = [a.copy() for a in (X, Y, X_test, Y_test)]
    ranker = LabelRankerInfluence().fit(X, Y)
    ranker.influence_(X_test, Y_test, target="loss")
    for a, b in zip((X, Y, X_test, Y_test), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_mediamill_shape(loss):
    X, Y = make_multilabel_classification(n_samples=5500, n_features=120, n_classes=101,
                                          n_labels=5, random_state=0)
    Z = TruncatedSVD(8, random_state=0).fit_transform(X)
    Z /= Z.std(axis=0)
    ranker = LabelRankerInfluence(loss=loss).fit(Z[:5000], Y[:5000])
    units = ranker.items_[::10]
    est = ranker.influence_(Z[5000:], Y[5000:], target="loss", units=units)
    exact = ranker.influence_(Z[5000:], Y[5000:], target="loss", units=units, method="loo")
    assert_agrees(est, exact, min_r=0.999, slope=(0.98, 1.02), max_error=0.05, label=loss)


@pytest.mark.parametrize("loss", LOSSES)
def test_refine_recomputes_the_largest_changes_by_exact_refit(loss):
    X, Y, X_test, Y_test = multilabel(200, 8, seed=4)
    ranker = LabelRankerInfluence(loss=loss, alpha=1.0).fit(X, Y)
    exact = ranker.influence_(X_test, Y_test, target="loss", method="loo")
    vif = ranker.influence_(X_test, Y_test, target="loss")
    refined, is_exact = ranker.influence_(X_test, Y_test, target="loss", refine=3,
                                          return_exact=True)
    top = np.argsort(-np.sqrt(np.mean(vif ** 2, axis=1)))[:3]
    np.testing.assert_array_equal(np.flatnonzero(is_exact), np.sort(top))
    # the refined units are exact refits, the others the unrefined estimate
    np.testing.assert_allclose(refined[is_exact], exact[is_exact], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(refined[~is_exact], vif[~is_exact])
    assert np.abs(vif[is_exact] - exact[is_exact]).max() > 1e-6  # refinement changed them
    # parameters, and the frame's marker
    coef_exact = ranker.influence_(method="loo", units=[2, 5])
    coef = ranker.influence_(method="newton", units=[2, 5], refine=1)
    k = np.argmax(np.sqrt(np.mean(ranker.influence_(method="newton", units=[2, 5]) ** 2,
                                  axis=(1, 2))))
    np.testing.assert_allclose(coef[k], coef_exact[k], rtol=1e-9, atol=1e-12)
    frame = ranker.influence_(X_test, Y_test, target="loss", refine=2, as_frame=True)
    assert frame.attrs["exact"].sum() == 2 and frame.attrs["exact"].name == "exact"
    np.testing.assert_allclose(frame.to_numpy()[frame.attrs["exact"].to_numpy()],
                               exact[frame.attrs["exact"].to_numpy()], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="refine"):
        ranker.influence_(refine=-1)
