"""Messy data: clear errors and warnings, no overflow, no silent NaN, no side effects.

Every bad input to a public entry point must raise a ValueError, TypeError or
NotFittedError whose message names the problem; numerical trouble must end in a
clear error or a warning that says what to do; and influence must behave as it
should under permutation, rescaling and duplication of the data (property-based,
with hypothesis).
"""

import copy
import re
import warnings

import autograd.numpy as anp
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skvif import CoxPHInfluence, ListwiseRankerInfluence, vif
from skvif.embedding import NodeEmbeddingInfluence

N, P = 30, 3


def _cox_data(n=N, p=P, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    time = rng.exponential(size=n) + 0.1
    if ties:
        time = np.round(time, 1)
    event = rng.random(n) < 0.7
    event[0] = True
    return X, np.column_stack([time, event.astype(float)])


def _rank_data(n_queries=6, size=5, p=P, seed=0):
    rng = np.random.default_rng(seed)
    n = n_queries * size
    X = rng.normal(size=(n, p))
    y = rng.integers(0, 3, n).astype(float)
    return X, y, np.repeat(np.arange(n_queries), size)


X, Y = _cox_data()
T, E = Y[:, 0], Y[:, 1]
XR, YR, QID = _rank_data()
NAN_X = np.where(np.arange(N)[:, None] == 2, np.nan, X)
INF_X = np.where(np.arange(N)[:, None] == 2, np.inf, X)
ROW0 = np.arange(N) == 0


@pytest.fixture(scope="module")
def cox():
    return CoxPHInfluence().fit(X, Y)


@pytest.fixture(scope="module")
def ranker():
    return ListwiseRankerInfluence().fit(XR, YR, QID)


@pytest.fixture(scope="module")
def embedding():
    return NodeEmbeddingInfluence(random_state=0).fit(nx.path_graph(5))


# --------------------------------------------------------------------------
# bad input: (call, exception type, message fragment)
# --------------------------------------------------------------------------
def C(**params):
    return CoxPHInfluence(**params)


# missing values: counted and placed (CoxPHInfluence(missing='drop') drops them)
COX_FIT_CASES = {
    "X with NaN": (lambda: C().fit(NAN_X, Y), ValueError,
                   "have missing values (NaN or None) in X ("),
    "X with inf": (lambda: C().fit(INF_X, Y), ValueError, "Input X contains infinity"),
    "non-numeric DataFrame column": (
        lambda: C().fit(pd.DataFrame({"age": T, "sex": ["m", "f"] * 15}), Y),
        ValueError, "X has non-numeric column(s): sex"),
    "non-numeric array": (lambda: C().fit(np.array([["a", "b"]] * N), Y),
                          ValueError, "X has non-numeric values"),
    "empty X": (lambda: C().fit(np.empty((0, P)), np.empty((0, 2))),
                ValueError, "Found array with 0 sample(s)"),
    "no columns": (lambda: C().fit(np.empty((N, 0)), Y), ValueError, "0 feature(s)"),
    "X and y lengths differ": (lambda: C().fit(X[:-1], Y), ValueError,
                               "y has 30 rows but X has 29"),
    "1-D y": (lambda: C().fit(X, T), ValueError, "2 columns [time, event]; got shape (30,)"),
    "3-column y": (lambda: C().fit(X, np.column_stack([T, E, E])), ValueError, "got shape (30, 3)"),
    "string y": (lambda: C().fit(X, np.array([["soon", "1"]] * N)), TypeError,
                 "Survival times and event indicators must be numeric"),
    "complex y": (lambda: C().fit(X, Y + 0j), ValueError, "Complex data not supported"),
    "negative time": (lambda: C().fit(X, np.column_stack([T - 1, E])), ValueError,
                      "Survival times must be non-negative"),
    "NaN time": (lambda: C().fit(X, np.column_stack([np.where(ROW0, np.nan, T), E])),
                 ValueError, "1 of 30 row(s) have missing values (NaN or None) in y (1)"),
    "event not 0/1": (lambda: C().fit(X, np.column_stack([T, 2 * E])), ValueError,
                      "event indicator (the second column of a 2-column y [time, event]) "
                      "must be boolean or 0/1, got 2"),
    "NaN event": (lambda: C().fit(X, np.column_stack([T, np.where(ROW0, np.nan, E)])),
                  ValueError, "1 of 30 row(s) have missing values (NaN or None) in y (1)"),
    "no events": (lambda: C().fit(X, np.column_stack([T, 0 * E])), ValueError,
                  "All observations are censored"),
    "no weighted event": (lambda: C().fit(X, Y, E == 0), ValueError,
                          "No event has a positive sample weight"),
    "unknown ties": (lambda: C(ties="exact").fit(X, Y), ValueError, "'ties' parameter"),
    "negative alpha": (lambda: C(alpha=-1.0).fit(X, Y), ValueError, "'alpha' parameter"),
    "NaN alpha": (lambda: C(alpha=np.nan).fit(X, Y), ValueError, "'alpha' parameter"),
    "zero max_iter": (lambda: C(max_iter=0).fit(X, Y), ValueError, "'max_iter' parameter"),
    "negative sample_weight": (lambda: C().fit(X, Y, -np.ones(N)), ValueError,
                               "Negative values in data passed to `sample_weight`"),
    "sample_weight length": (lambda: C().fit(X, Y, np.ones(N - 1)), ValueError,
                             "sample_weight.shape == (29,), expected (30,)"),
    "strata length": (lambda: C().fit(X, Y, strata=np.ones(N - 1)), ValueError,
                      "strata must have one label per row (30 rows), got shape (29,)"),
    "NaN strata": (lambda: C().fit(X, Y, strata=np.where(ROW0, np.nan, 1.0)), ValueError,
                   "1 of 30 row(s) have missing values (NaN or None) in strata (1)"),
    "None strata": (lambda: C().fit(X, Y, strata=np.array([None] + ["a"] * (N - 1))),
                    ValueError, "1 of 30 row(s) have missing values (NaN or None) in strata (1)"),
    "unsortable strata": (lambda: C().fit(X, Y, strata=np.array([1] + ["a"] * (N - 1),
                                                                 dtype=object)),
                          TypeError, "strata labels must be mutually sortable"),
    "entry after time": (lambda: C().fit(X, Y, entry=T + 1), ValueError,
                         "entry must be strictly before time on every row"),
    "NaN entry": (lambda: C().fit(X, Y, entry=np.where(ROW0, np.nan, 0.0)), ValueError,
                  "1 of 30 row(s) have missing values (NaN or None) in entry (1)"),
}


def R(**params):
    return ListwiseRankerInfluence(**params)


RANKER_FIT_CASES = {
    "X with NaN": (lambda: R().fit(NAN_X, YR, QID), ValueError, "Input X contains NaN"),
    "X with inf": (lambda: R().fit(INF_X, YR, QID), ValueError, "Input X contains infinity"),
    "non-numeric DataFrame column": (
        lambda: R().fit(pd.DataFrame({"bm25": YR, "lang": ["en"] * N}), YR, QID),
        ValueError, "X has non-numeric column(s): lang"),
    "empty X": (lambda: R().fit(np.empty((0, P)), [], []), ValueError,
                "Found array with 0 sample(s)"),
    "X and y lengths differ": (lambda: R().fit(XR[:-1], YR, QID), ValueError,
                               "y must have one relevance label per row of X (29 rows)"),
    "2-D y": (lambda: R().fit(XR, np.column_stack([YR, YR]), QID), ValueError,
              "got shape (30, 2)"),
    "string y": (lambda: R().fit(XR, np.array(["good"] * N), QID), TypeError,
                 "Relevance labels y must be numeric"),
    "complex y": (lambda: R().fit(XR, YR + 1j, QID), ValueError, "Complex data not supported"),
    "NaN y": (lambda: R().fit(XR, np.where(ROW0, np.nan, YR), QID), ValueError,
              "Relevance labels y contain NaN"),
    "missing qid": (lambda: R().fit(XR, YR, None), ValueError, "qid is required"),
    "qid length": (lambda: R().fit(XR, YR, QID[:-1]), ValueError,
                   "qid must have one query id per row of X (30 rows), got shape (29,)"),
    "NaN qid": (lambda: R().fit(XR, YR, np.where(ROW0, np.nan, QID)), ValueError,
                "qid contains NaN"),
    "None qid": (lambda: R().fit(XR, YR, np.array([None] + ["q"] * (N - 1))), ValueError,
                 "qid contains missing values"),
    "unknown loss": (lambda: R(loss="lambdarank").fit(XR, YR, QID), ValueError,
                     "'loss' parameter"),
    "negative alpha": (lambda: R(alpha=-1.0).fit(XR, YR, QID), ValueError, "'alpha' parameter"),
}


def E_(**params):
    return NodeEmbeddingInfluence(**params)


EMBEDDING_FIT_CASES = {
    "array instead of a graph": (lambda: E_().fit(np.eye(3)), TypeError,
                                 "G must be a networkx graph, got ndarray"),
    "directed graph": (lambda: E_().fit(nx.DiGraph([(0, 1)])), ValueError,
                       "G must be undirected"),
    "multigraph": (lambda: E_().fit(nx.MultiGraph([(0, 1), (0, 1)])), ValueError,
                   "Multigraphs are not supported"),
    "empty graph": (lambda: E_().fit(nx.Graph()), ValueError,
                    "G must have at least 2 nodes and 1 edge"),
    "zero n_components": (lambda: E_(n_components=0).fit(nx.path_graph(3)), ValueError,
                          "'n_components' parameter"),
    "zero alpha": (lambda: E_(alpha=0.0).fit(nx.path_graph(3)), ValueError, "'alpha' parameter"),
    "negative damping": (lambda: E_(damping=-1.0).fit(nx.path_graph(3)), ValueError,
                         "'damping' parameter"),
}


@pytest.mark.parametrize("case", [*(("cox", k) for k in COX_FIT_CASES),
                                  *(("ranker", k) for k in RANKER_FIT_CASES),
                                  *(("embedding", k) for k in EMBEDDING_FIT_CASES)],
                         ids=lambda c: f"{c[0]}: {c[1]}")
def test_bad_fit_input_raises_a_named_error(case):
    table = {"cox": COX_FIT_CASES, "ranker": RANKER_FIT_CASES,
             "embedding": EMBEDDING_FIT_CASES}[case[0]]
    call, error, fragment = table[case[1]]
    with pytest.raises(error, match=re.escape(fragment)):
        call()


@pytest.mark.parametrize("call", [
    lambda: CoxPHInfluence().influence_(),
    lambda: CoxPHInfluence().predict(X),
    lambda: CoxPHInfluence().summary(),
    lambda: CoxPHInfluence().predict_survival_function(X, [1.0]),
    lambda: ListwiseRankerInfluence().influence_(),
    lambda: ListwiseRankerInfluence().predict(XR),
    lambda: NodeEmbeddingInfluence().influence_([(0, 1)]),
    lambda: NodeEmbeddingInfluence().score_pairs([(0, 1)]),
])
def test_use_before_fit_raises_not_fitted(call):
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        call()


COX_AFTER_FIT_CASES = [
    (lambda m: m.predict(X[:, :2]), ValueError, "X has 2 features, but CoxPHInfluence is "
                                                "expecting 3 features"),
    (lambda m: m.predict(NAN_X), ValueError, "Input X contains NaN"),
    (lambda m: m.influence_(X[:, :2], target="predict"), ValueError, "X has 2 features"),
    (lambda m: m.influence_(target="hazard"), ValueError,
     "target must be one of ['coef', 'predict', 'survival', 'loss'], got 'hazard'"),
    (lambda m: m.influence_(method="jackknife"), ValueError, "method must be one of"),
    (lambda m: m.influence_(solver="lu"), ValueError, "solver must be one of"),
    (lambda m: m.influence_(damping=-1.0), ValueError, "damping must be a finite number >= 0"),
    (lambda m: m.influence_(groups=np.arange(N - 1)), ValueError,
     "groups must have one label per row (30 rows), got shape (29,)"),
    (lambda m: m.influence_(groups=np.where(ROW0, np.nan, 1.0)), ValueError,
     "groups contains missing values"),
    (lambda m: m.influence_(groups=np.array([1] + ["a"] * (N - 1), dtype=object)), TypeError,
     "groups labels must be mutually sortable"),
    (lambda m: m.influence_(target="predict"), ValueError, "target='predict' needs X"),
    (lambda m: m.influence_(X, target="survival"), ValueError, "times is required"),
    (lambda m: m.influence_(X, target="survival", times=[np.nan]), ValueError,
     "times must be a 1-D array of finite values"),
    (lambda m: m.influence_(X, target="loss"), ValueError, "y is required"),
    (lambda m: m.influence_(X, Y[:-1], target="loss"), ValueError, "y has 29 rows but X has 30"),
    (lambda m: m.influence_(X, np.column_stack([T, 0 * E]), target="loss"), ValueError,
     "All observations are censored"),
    (lambda m: m.score(X, np.column_stack([-T, E])), ValueError,
     "Survival times must be non-negative"),
    (lambda m: m.predict_survival_function(X, [[1.0, 2.0]]), ValueError,
     "times must be a 1-D array"),
    (lambda m: m.predict_survival_function(X, [1.0], strata=np.ones(N)), ValueError,
     "fitted without strata"),
    (lambda m: m.summary(ci=1.5), ValueError, "ci must be in (0, 1)"),
]


@pytest.mark.parametrize("k", range(len(COX_AFTER_FIT_CASES)))
def test_cox_bad_call_after_fit(cox, k):
    call, error, fragment = COX_AFTER_FIT_CASES[k]
    with pytest.raises(error, match=re.escape(fragment)):
        call(cox)


RANKER_AFTER_FIT_CASES = [
    (lambda m: m.predict(XR[:, :2]), ValueError, "X has 2 features, but "
                                                 "ListwiseRankerInfluence is expecting 3"),
    (lambda m: m.influence_(XR[:, :2], target="predict"), ValueError, "X has 2 features"),
    (lambda m: m.influence_(NAN_X, target="predict"), ValueError, "Input X contains NaN"),
    (lambda m: m.influence_(unit="list"), ValueError,
     "unit must be one of ['item', 'query'], got 'list'"),
    (lambda m: m.influence_(target="ndcg"), ValueError, "target must be one of"),
    (lambda m: m.influence_(method="exact"), ValueError, "method must be one of"),
    (lambda m: m.influence_(damping=np.inf), ValueError, "damping must be a finite number"),
    (lambda m: m.influence_(target="predict"), ValueError, "target='predict' needs X"),
    (lambda m: m.influence_(XR, target="loss"), ValueError, "target='loss' needs X, y and qid"),
    (lambda m: m.influence_(XR, YR, QID[:-1], target="loss"), ValueError,
     "qid must have one query id per row of X (30 rows)"),
    (lambda m: m.score(XR, YR, np.arange(N)), ValueError, "at least one query with two items"),
]


@pytest.mark.parametrize("k", range(len(RANKER_AFTER_FIT_CASES)))
def test_ranker_bad_call_after_fit(ranker, k):
    call, error, fragment = RANKER_AFTER_FIT_CASES[k]
    with pytest.raises(error, match=re.escape(fragment)):
        call(ranker)


EMBEDDING_AFTER_FIT_CASES = [
    (lambda m: m.influence_([(0, 9)]), ValueError, "node 9 is not in the fitted graph"),
    (lambda m: m.influence_("ab"), TypeError, "pairs must be a sequence of (u, v)"),
    (lambda m: m.influence_([(0,)]), TypeError, "pairs[0] must be a pair (u, v)"),
    (lambda m: m.influence_([]), ValueError, "pairs is empty"),
    (lambda m: m.influence_([(0, 1)], unit="graph"), ValueError, "unit must be one of"),
    (lambda m: m.influence_([(0, 1)], target="embedding"), ValueError, "target must be one of"),
    (lambda m: m.influence_([(0, 1)], method="refit"), ValueError, "method must be one of"),
    (lambda m: m.influence_([(0, 1)], damping=0.0), ValueError, "damping must be > 0"),
]


@pytest.mark.parametrize("k", range(len(EMBEDDING_AFTER_FIT_CASES)))
def test_embedding_bad_call_after_fit(embedding, k):
    call, error, fragment = EMBEDDING_AFTER_FIT_CASES[k]
    with pytest.raises(error, match=re.escape(fragment)):
        call(embedding)


XS = np.array([1.0, 2.0, 3.0, 10.0])


def mean_loss(m, w):
    return 0.5 * anp.sum(w * (XS - m[0]) ** 2)


VIF_CASES = [
    (dict(loss="mean"), TypeError, "loss must be callable"),
    (dict(params=[np.nan]), ValueError, "params contains NaN or infinite values"),
    (dict(params=[[4.0]]), ValueError, "params must be a non-empty 1-D array, got shape (1, 1)"),
    (dict(params=["four"]), TypeError, "params must be a 1-D array of numbers"),
    (dict(n_samples=0), ValueError, "n_samples must be a positive integer, got 0"),
    (dict(n_samples=4.0), ValueError, "n_samples must be a positive integer"),
    (dict(n_samples=3), ValueError, "check that loss takes params of shape (n_params,) and "
                                    "weights of shape (n_samples,)"),
    (dict(method="influence"), ValueError, "method must be one of"),
    (dict(solver="lsqr"), ValueError, "solver must be one of"),
    (dict(damping=-0.1), ValueError, "damping must be a finite number >= 0"),
    (dict(damping=np.nan), ValueError, "damping must be a finite number >= 0"),
    (dict(n_jobs=0), ValueError, "n_jobs must not be 0"),
    (dict(n_jobs="2"), TypeError, "n_jobs must be None or an integer, got '2'"),
    (dict(units=[[4]]), ValueError, "units[0] has indices outside [0, 4)"),
    (dict(units=[[0.5]]), TypeError, "units[0] must hold integer indices"),
    (dict(units=[]), TypeError, "units must be None or a non-empty list"),
    (dict(target=3), TypeError, "target must be None or callable"),
    (dict(target=lambda m: anp.array([np.nan])), ValueError,
     "target(params) must return a finite 1-D array"),
    (dict(loss=lambda m, w: w * m[0]), ValueError, "must return a finite scalar"),
    (dict(loss=lambda m, w: anp.sum(w) * np.nan), ValueError, "must return a finite scalar"),
    (dict(batched=True), ValueError, "batched=True needs loss(params (k, p), weights (k, n)) "
                                     "to return shape (k,)"),
    (dict(loss=lambda m, w: anp.sum(w * anp.abs(m[0]) ** 0.5), params=[0.0]), ValueError,
     "The gradient of loss at params contains NaN or infinite values"),
    (dict(loss=lambda m, w: anp.sum(w * (XS - m[0] - m[1]) ** 2), params=[4.0, 0.0]),
     ValueError, "The Hessian of the objective is singular"),
]


@pytest.mark.parametrize("k", range(len(VIF_CASES)))
def test_vif_bad_arguments(k):
    kwargs, error, fragment = VIF_CASES[k]
    args = {"loss": mean_loss, "params": [4.0], "n_samples": 4, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy on 0 ** -0.5
        with pytest.raises(error, match=re.escape(fragment)):
            vif(args.pop("loss"), args.pop("params"), args.pop("n_samples"), **args)


# --------------------------------------------------------------------------
# numerical trouble
# --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vif", "if", "newton", "loo"])
def test_cox_huge_covariates_do_not_overflow(method):
    # exp(x beta) overflows above 709: a column shifted by 1e5 must change nothing
    # (the Cox model is invariant to shifts of a column)
    shifted = X + np.array([1e5, -1e5, 0.0])
    ref = CoxPHInfluence().fit(X, Y)
    with pytest.warns(RuntimeWarning, match=r"baseline_cumulative_hazard_ \(at x = 0\) is "
                                            r"out of floating-point range"):
        big = CoxPHInfluence().fit(shifted, Y)
    assert np.abs(shifted @ big.coef_).max() > 1000
    np.testing.assert_allclose(big.coef_, ref.coef_, rtol=1e-9)
    np.testing.assert_allclose(big.influence_(method=method), ref.influence_(method=method),
                               rtol=1e-6, atol=1e-10)
    times = [0.3, 1.0]
    np.testing.assert_allclose(big.predict_survival_function(shifted[:4], times),
                               ref.predict_survival_function(X[:4], times), rtol=1e-9)
    np.testing.assert_allclose(
        big.influence_(shifted[:4], target="survival", times=times, method=method),
        ref.influence_(X[:4], target="survival", times=times, method=method),
        rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(big.influence_(shifted, Y, target="loss", method=method),
                               ref.influence_(X, Y, target="loss", method=method),
                               rtol=1e-6, atol=1e-9)


def test_cox_strata_far_apart_do_not_underflow():
    # a stratified Cox model is invariant to a shift of a column within a stratum; with
    # 5000 the linear predictors of the two strata differ by ~800, and one log-sum-exp
    # shift for all rows would leave the other stratum's risk sets at exp(-800) = 0
    strata = np.repeat([0, 1], N // 2)
    shifted = X + 5000.0 * strata[:, None] * np.array([1.0, 0.0, 0.0])
    ref = CoxPHInfluence().fit(X, Y, strata=strata)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        big = CoxPHInfluence().fit(shifted, Y, strata=strata)
    # x = 0 is 2500 from stratum 1's data: only the baseline at x = 0 is out of range
    assert [str(w.message)[:32] for w in caught] == ["baseline_cumulative_hazard_ (at "]
    np.testing.assert_allclose(big.coef_, ref.coef_, rtol=1e-9)
    for method in ("vif", "if", "newton", "loo"):
        np.testing.assert_allclose(big.influence_(method=method), ref.influence_(method=method),
                                   rtol=1e-6, atol=1e-10)
    rows, times = [0, 1, 20, 21], [0.3, 1.0]
    np.testing.assert_allclose(
        big.predict_survival_function(shifted[rows], times, strata=strata[rows]),
        ref.predict_survival_function(X[rows], times, strata=strata[rows]), rtol=1e-9)
    np.testing.assert_allclose(
        big.influence_(shifted[rows], target="survival", times=times, strata=strata[rows]),
        ref.influence_(X[rows], target="survival", times=times, strata=strata[rows]),
        rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(big.influence_(shifted, Y, target="loss", strata=strata),
                               ref.influence_(X, Y, target="loss", strata=strata), atol=1e-9)


@pytest.mark.parametrize("loss", ["listnet", "listmle"])
def test_ranker_huge_scores_do_not_overflow(loss):
    # a per-query constant added to a column changes no listwise loss; with 1e4 the
    # scores reach exp(.) overflow unless every softmax is a shifted log-sum-exp
    offset = 1e4 * QID[:, None] * np.array([1.0, 0.0, -1.0])
    ref = ListwiseRankerInfluence(loss=loss).fit(XR, YR, QID)
    big = ListwiseRankerInfluence(loss=loss).fit(XR + offset, YR, QID)
    assert np.abs(big.predict(XR + offset)).max() > 1000
    np.testing.assert_allclose(big.coef_, ref.coef_, rtol=1e-6, atol=1e-9)
    for unit in ("item", "query"):
        np.testing.assert_allclose(big.influence_(unit=unit), ref.influence_(unit=unit),
                                   rtol=1e-5, atol=1e-8)


def test_cox_collinear_columns_warn_at_fit_and_influence_says_what_to_do():
    Xc = pd.DataFrame(X, columns=["age", "dose", "weight"]).assign(
        dose_mg=lambda d: 1000 * d.dose, site=1.0)
    with pytest.warns(UserWarning, match=r"column\(s\) dose, dose_mg, site are collinear "
                                         r"or constant.*set a ridge penalty alpha > 0"):
        model = CoxPHInfluence().fit(Xc, Y)
    with pytest.raises(ValueError, match=r"column\(s\) dose, dose_mg, site are collinear.*"
                                         r"alpha > 0 on the estimator, or damping > 0"):
        model.influence_()
    with pytest.raises(ValueError, match="dose, dose_mg, site are collinear"):
        model.summary()
    with pytest.raises(ValueError, match="dose, dose_mg, site are collinear"):
        model.summary(robust=True)
    # the advice works: a ridge penalty, or damping for influence_ alone
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge = CoxPHInfluence(alpha=1.0).fit(Xc, Y)
    assert np.all(np.isfinite(ridge.influence_()))
    assert np.all(np.isfinite(model.influence_(damping=1e-3)))


def test_cox_column_constant_within_strata_is_collinear():
    strata = np.repeat([0, 1], N // 2)
    with pytest.warns(UserWarning, match=r"column\(s\) x3 are collinear or constant"):
        CoxPHInfluence().fit(np.column_stack([X, strata]), Y, strata=strata)


def test_ranker_column_constant_within_queries_is_collinear():
    with pytest.warns(UserWarning, match=r"column\(s\) x3 are collinear.*constant within "
                                         r"every query"):
        model = ListwiseRankerInfluence(alpha=0.0).fit(np.column_stack([XR, QID]), YR, QID)
    with pytest.raises(ValueError, match=r"x3 are collinear.*the Hessian is singular"):
        model.influence_()


def test_cox_monotone_likelihood_warns_like_lifelines():
    # events only in one group of a binary covariate: the partial likelihood
    # increases forever in its coefficient (monotone likelihood)
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceWarning as LifelinesConvergenceWarning

    rng = np.random.default_rng(0)
    group = (rng.random(40) < 0.5).astype(float)
    frame = pd.DataFrame({"t": rng.exponential(size=40) + 0.1, "e": group,
                          "group": group, "z": rng.normal(size=40)})
    with pytest.warns(ConvergenceWarning, match="monotone"):
        model = CoxPHInfluence().fit(frame[["group", "z"]], frame[["t", "e"]])
    assert model.n_iter_ < model.max_iter  # stopped once the likelihood went flat
    with pytest.warns(LifelinesConvergenceWarning, match="separation"):  # the reference too
        CoxPHFitter().fit(frame, "t", "e")
    # a ridge penalty gives a finite optimum and no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CoxPHInfluence(alpha=1.0).fit(frame[["group", "z"]], frame[["t", "e"]])


def test_leave_out_singular_hessian_is_named():
    # a dummy that is 1 on row 3 only: without row 3 its coefficient is not identifiable
    Xd = np.column_stack([X, np.arange(N) == 3])
    model = CoxPHInfluence().fit(Xd, Y)
    with pytest.warns(UserWarning, match=r"Without the unit\(s\) at positions \[3\] the "
                                         r"Hessian .* is singular.*damping > 0"):
        newton = model.influence_(method="newton")
    # (removing the last event, row 18, also leaves the dummy's likelihood monotone; row
    # 3's refit may converge along the flat direction, which the singular warning names)
    with pytest.warns(UserWarning, match=r"positions \[3[,\]].* no unique minimum"), \
            pytest.warns(ConvergenceWarning, match=r"refits did not converge.*positions "
                                                   r"\[(3, )?18\]"):
        loo = model.influence_(method="loo")
    # the identifiable coefficients are still right for that row
    np.testing.assert_allclose(newton[3, :3], loo[3, :3], rtol=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isfinite(model.influence_(method="newton", damping=1e-3)))
    # the generic engine: one sample, nothing left once it is removed
    with pytest.warns(UserWarning, match=r"positions \[0\]"):
        vif(lambda m, w: 0.5 * anp.sum(w * (XS[:1] - m[0]) ** 2), [1.0], 1, method="newton")


def test_nan_influence_is_never_silent():
    # finite with every sample, infinite without sample 0
    def loss(m, w):
        return mean_loss(m, w) + 1e-3 * m[0] ** 2 / w[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's divide by zero
        warnings.filterwarnings("always", "method=", RuntimeWarning)
        with pytest.warns(RuntimeWarning, match=r"influence of 1 unit\(s\) \(positions "
                                                r"\[0\]\) is not finite"):
            out = vif(loss, [XS.mean()], 4)
    assert not np.isfinite(out[0]).all() and np.isfinite(out[1:]).all()


def test_cg_non_convergence_warns_with_the_residual():
    # least squares with singular values from 1 to 1e-7 (Hessian condition 1e14)
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.normal(size=(60, 30)))
    V, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    A, t = U @ np.diag(np.logspace(0, -7, 30)) @ V.T, rng.normal(size=60)
    theta = np.linalg.lstsq(A, t, rcond=None)[0]

    def loss(th, w):
        return 0.5 * anp.sum(w * (anp.dot(A, th) - t) ** 2)

    units = [np.arange(3)]
    with pytest.warns(ConvergenceWarning, match=r"Conjugate gradients did not converge in "
                                                r"300 iterations \(residual norm \d"):
        vif(loss, theta, 60, solver="cg", units=units)
    with pytest.raises(ValueError, match="singular.*damping > 0"):
        vif(loss, theta, 60, solver="direct", units=units)
    # the advice works: with damping, CG converges to the damped direct solution
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        damped = vif(loss, theta, 60, solver="cg", units=units, damping=1e-4)
    np.testing.assert_allclose(
        damped, vif(loss, theta, 60, solver="direct", units=units, damping=1e-4), rtol=1e-6)


# --------------------------------------------------------------------------
# no side effects
# --------------------------------------------------------------------------
def _snapshot(obj):
    if isinstance(obj, (np.ndarray, pd.DataFrame, pd.Series, pd.Index)):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    if hasattr(obj, "__dict__") and not callable(obj):
        return (type(obj), _snapshot(vars(obj)))
    return copy.deepcopy(obj)


def _assert_same(a, b, path="state"):
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path


def test_cox_inputs_and_fit_are_untouched_and_not_shared():
    from sksurv.util import Surv

    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    y = Surv.from_arrays(E.astype(bool), T)
    weights, entry = np.linspace(0.5, 2.0, N), np.zeros(N)
    strata, groups = np.arange(N) % 2, np.arange(N) // 2
    inputs = [frame, y, weights, entry, strata, groups]
    before = _snapshot(inputs)
    model = CoxPHInfluence().fit(frame, y, weights, entry=entry, strata=strata)
    state = _snapshot(vars(model))
    results = {}
    for method in ("vif", "if", "newton", "loo"):
        results[method] = model.influence_(method=method, groups=groups)
        model.influence_(frame.iloc[:3], target="survival", times=[0.5], strata=strata[:3],
                         method=method)
        model.influence_(frame, y, target="loss", strata=strata, method=method)
    model.summary(robust=True, groups=groups)
    _assert_same(before, inputs)
    _assert_same(state, _snapshot(vars(model)))
    # the fitted model holds copies: changing the user's arrays afterwards changes nothing
    frame.iloc[:, :] = 0.0
    y["time"][:] = 1.0
    weights[:] = 7.0
    entry[:] = -1.0
    for method, expected in results.items():
        np.testing.assert_array_equal(model.influence_(method=method, groups=groups), expected)


def test_ranker_and_engine_inputs_are_untouched():
    X_, y_, qid = XR.copy(), YR.copy(), QID.astype(str)
    inputs = [X_, y_, qid]
    before = _snapshot(inputs)
    model = ListwiseRankerInfluence(loss="listmle").fit(X_, y_, qid)
    state = _snapshot(vars(model))
    for method in ("vif", "if", "newton", "loo"):
        for unit in ("item", "query"):
            model.influence_(X_, y_, qid, target="loss", unit=unit, method=method)
    _assert_same(before, inputs)
    _assert_same(state, _snapshot(vars(model)))

    params = np.array([XS.mean()])
    units = [np.array([0, 1]), np.array([3])]
    for method in ("vif", "if", "newton", "loo"):
        vif(mean_loss, params, 4, units=units, method=method)
    np.testing.assert_array_equal(params, [XS.mean()])
    np.testing.assert_array_equal(units[0], [0, 1])


def test_embedding_graph_is_untouched(embedding):
    G = nx.path_graph(5)
    G.add_edge(0, 4, weight=3.0)
    nodes, edges = list(G.nodes(data=True)), list(G.edges(data=True))
    model = NodeEmbeddingInfluence(random_state=0).fit(G)
    state = _snapshot(vars(model))
    for unit in ("node", "edge"):
        model.influence_([(0, 2)], unit=unit, method="newton")
    assert list(G.nodes(data=True)) == nodes and list(G.edges(data=True)) == edges
    _assert_same(state, _snapshot(vars(model)))


# --------------------------------------------------------------------------
# properties (hypothesis)
# --------------------------------------------------------------------------
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _fit_quietly(estimator, *args, **kwargs):
    """Fit, or None when the drawn data are degenerate (separation, collinearity)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return estimator.fit(*args, **kwargs)
        except (UserWarning, ValueError):
            return None


cox_cases = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1), "n": st.integers(8, 25), "p": st.integers(1, 3),
    "ties": st.sampled_from(["efron", "breslow"]), "rounded": st.booleans()})


def _draw_cox(case):
    X_, y_ = _cox_data(case["n"], case["p"], case["seed"], ties=case["rounded"])
    return X_, y_


@PROPERTY
@given(case=cox_cases, data=st.data())
def test_permuting_rows_permutes_cox_influence(case, data):
    X_, y_ = _draw_cox(case)
    perm = np.array(data.draw(st.permutations(range(case["n"]))))
    a = _fit_quietly(CoxPHInfluence(ties=case["ties"], alpha=0.1), X_, y_)
    b = _fit_quietly(CoxPHInfluence(ties=case["ties"], alpha=0.1), X_[perm], y_[perm])
    assume(a is not None and b is not None)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-8, atol=1e-10)
    for method in ("vif", "if", "newton"):
        expected = a.influence_(method=method)[perm]
        np.testing.assert_allclose(b.influence_(method=method), expected, rtol=1e-6,
                                   atol=1e-9 * np.abs(expected).max())


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from(["listnet", "listmle"]),
       data=st.data())
def test_permuting_rows_permutes_ranker_influence(seed, loss, data):
    X_, y_, qid = _rank_data(n_queries=4, size=4, p=2, seed=seed)
    if loss == "listmle":  # its permutation keeps tied labels in row order: no ties here
        y_ = y_ + np.random.default_rng(seed).random(len(y_)) / 2
    perm = np.array(data.draw(st.permutations(range(len(y_)))))
    a = ListwiseRankerInfluence(loss=loss).fit(X_, y_, qid)
    b = ListwiseRankerInfluence(loss=loss).fit(X_[perm], y_[perm], qid[perm])
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-8, atol=1e-10)
    for method in ("vif", "if", "newton"):
        expected = a.influence_(method=method)[perm]
        np.testing.assert_allclose(b.influence_(method=method), expected, rtol=1e-6,
                                   atol=1e-9 * np.abs(expected).max())
        # a query is the same unit whatever the row order
        np.testing.assert_allclose(b.influence_(unit="query", method=method),
                                   a.influence_(unit="query", method=method),
                                   rtol=1e-6, atol=1e-9)


@PROPERTY
@given(case=cox_cases, data=st.data())
def test_rescaling_a_feature_rescales_its_coefficient_influence(case, data):
    # unpenalized Cox: x_j -> c x_j gives coef_j -> coef_j / c, and the same for its
    # influence; every other coefficient and every prediction is unchanged
    X_, y_ = _draw_cox(case)
    j = data.draw(st.integers(0, case["p"] - 1))
    c = data.draw(st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3))
    scaled = X_.copy()
    scaled[:, j] *= c
    a = _fit_quietly(CoxPHInfluence(ties=case["ties"]), X_, y_)
    b = _fit_quietly(CoxPHInfluence(ties=case["ties"]), scaled, y_)
    assume(a is not None and b is not None)
    scale = np.ones(case["p"])
    scale[j] = 1.0 / c
    np.testing.assert_allclose(b.coef_, a.coef_ * scale, rtol=1e-7, atol=1e-10)
    for method in ("vif", "if", "newton"):
        expected = a.influence_(method=method) * scale
        np.testing.assert_allclose(b.influence_(method=method), expected, rtol=1e-6,
                                   atol=1e-9 * np.abs(expected).max())
    np.testing.assert_allclose(b.influence_(scaled, target="predict"),
                               a.influence_(X_, target="predict"), rtol=1e-6, atol=1e-9)


@PROPERTY
@given(case=cox_cases, data=st.data())
def test_duplicated_cox_rows_have_equal_influence(case, data):
    X_, y_ = _draw_cox(case)
    i = data.draw(st.integers(0, case["n"] - 1))
    Xd, yd = np.vstack([X_, X_[i]]), np.vstack([y_, y_[i]])
    model = _fit_quietly(CoxPHInfluence(ties=case["ties"], alpha=0.1), Xd, yd)
    assume(model is not None)
    for method in ("vif", "if", "newton", "loo"):
        infl = model.influence_(method=method)
        np.testing.assert_allclose(infl[-1], infl[i], rtol=1e-7,
                                   atol=1e-10 * np.abs(infl).max())


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from(["listnet", "listmle"]),
       data=st.data())
def test_duplicated_ranker_items_have_equal_influence(seed, loss, data):
    X_, y_, qid = _rank_data(n_queries=4, size=4, p=2, seed=seed)
    i = data.draw(st.integers(0, len(y_) - 1))
    # the copy right after the original: ListMLE keeps tied labels in row order
    rows = np.insert(np.arange(len(y_)), i + 1, i)
    model = ListwiseRankerInfluence(loss=loss).fit(X_[rows], y_[rows], qid[rows])
    # not "if" for ListMLE: with fractional weights, tied items at different positions
    # of the permutation are not exchangeable (exact removal is)
    for method in ("vif", "newton", "loo") + (("if",) if loss == "listnet" else ()):
        infl = model.influence_(method=method)
        np.testing.assert_allclose(infl[i + 1], infl[i], rtol=1e-7,
                                   atol=1e-10 * np.abs(infl).max())


@PROPERTY
@given(case=cox_cases, method=st.sampled_from(["vif", "if", "newton", "loo"]))
def test_influence_leaves_the_cox_fit_and_inputs_unchanged(case, method):
    X_, y_ = _draw_cox(case)
    model = _fit_quietly(CoxPHInfluence(ties=case["ties"], alpha=0.1), X_, y_)
    assume(model is not None)
    inputs, state = _snapshot([X_, y_]), _snapshot(vars(model))
    first = model.influence_(method=method)
    model.influence_(X_, y_, target="loss", method=method)
    _assert_same(inputs, [X_, y_])
    _assert_same(state, _snapshot(vars(model)))
    np.testing.assert_array_equal(model.influence_(method=method), first)
