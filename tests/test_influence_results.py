"""The influence results object (issue 16): cached answers, summary_frame, solver options.

References: R's ``residuals(coxph, "dfbeta" / "dfbetas")`` (through ``Rscript``),
the GLM one-step deletion formulas of Pregibon (1981) written out here from the hat
matrix (what statsmodels' ``GLMInfluence`` computes; compared with it too when it is
installed), exact refits, and dense eigendecompositions.
"""

import pickle
import subprocess
import warnings

import autograd.numpy as anp
import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi
from scipy.sparse.linalg import LinearOperator
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skvif import CoxPHInfluence, InfluenceResults, _engine, get_influence, vif

from _accuracy import assert_agrees
from test_r_random import INSTALL, r_survival_available

# ----------------------------------------------------------- a logistic GLM
RNG = np.random.default_rng(20261202)
N, P = 150, 3
X = np.column_stack([np.ones(N), RNG.normal(size=N), RNG.normal(size=N) * 100.0])
Y = (RNG.random(N) < 1 / (1 + np.exp(-(X @ [0.2, 1.0, 0.008])))).astype(float)


def logistic_loss(b, w):
    eta = anp.dot(X, b)
    return anp.sum(w * (anp.logaddexp(0.0, eta) - Y * eta))


@pytest.fixture(scope="module")
def beta_hat():
    return _fit()


def _fit():
    from skvif._engine import minimize

    P_, _, converged = minimize(lambda B, W: anp.stack([logistic_loss(B[i], W[i])
                                                        for i in range(B.shape[0])]),
                                np.zeros((1, P)), np.ones((1, N)), tol=1e-14)
    assert converged[0]
    return P_[0]


def pregibon_one_step(beta):
    """GLM one-step deletion (Pregibon 1981): d_i = (X'WX)^-1 x_i (y_i - mu_i) / (1 - h_ii)."""
    mu = 1 / (1 + np.exp(-X @ beta))
    W = mu * (1 - mu)
    information = X.T @ (W[:, None] * X)
    inverse = np.linalg.inv(information)
    hat = W * np.einsum("ij,jk,ik->i", X, inverse, X)
    d_params = (inverse @ (X * ((Y - mu) / (1 - hat))[:, None]).T).T  # full - without
    cooks = np.einsum("ij,jk,ik->i", d_params, information, d_params) / P
    return d_params, d_params / np.sqrt(np.diag(inverse)), cooks


def test_summary_frame_is_the_glm_one_step_deletion(beta_hat):
    results = get_influence(logistic_loss, beta_hat, N, param_names=["const", "a", "b"])
    frame = results.summary_frame(method="newton")
    d_params, dfbetas, cooks = pregibon_one_step(beta_hat)
    assert list(frame.columns) == ["dfbeta_const", "dfbeta_a", "dfbeta_b", "dfbetas_const",
                                   "dfbetas_a", "dfbetas_b", "cooks_d"]
    np.testing.assert_allclose(frame.iloc[:, :3], d_params, rtol=1e-9,
                               atol=1e-12 * np.abs(d_params).max())
    np.testing.assert_allclose(frame.iloc[:, 3:6], dfbetas, rtol=1e-9,
                               atol=1e-12 * np.abs(dfbetas).max())
    np.testing.assert_allclose(frame["cooks_d"], cooks, rtol=1e-9, atol=1e-14)
    # and the one-step approximates the exact refits: dfbeta is minus the change
    exact = -results.changes(method="loo")
    assert_agrees(frame.iloc[:, :3].to_numpy(), exact, min_r=0.99, slope=(0.9, 1.1),
                  max_error=0.1)


def test_summary_frame_matches_statsmodels_when_installed(beta_hat):
    sm = pytest.importorskip("statsmodels.api")
    fit = sm.GLM(Y, X, family=sm.families.Binomial()).fit(start_params=beta_hat, tol=1e-14)
    reference = fit.get_influence()
    frame = get_influence(logistic_loss, fit.params, N).summary_frame(method="newton")
    np.testing.assert_allclose(frame.iloc[:, :3], reference.d_params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(frame.iloc[:, 3:6], reference.dfbetas, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(frame["cooks_d"], reference.cooks_distance[0], rtol=1e-8,
                               atol=1e-14)


# ----------------------------------------------------------------- caching
@pytest.fixture
def counted(monkeypatch):
    """Count the engine's generic gradient-change and refit chunks."""
    calls = {"gradients": 0, "refits": 0}
    gradient_chunk, refit_chunk = _engine._gradient_change_chunk, _engine._refit_chunk

    def gradients(*args, **kwargs):
        calls["gradients"] += 1
        return gradient_chunk(*args, **kwargs)

    def refits(chunk, **kwargs):
        calls["refits"] += len(chunk)
        return refit_chunk(chunk, **kwargs)

    monkeypatch.setattr(_engine, "_gradient_change_chunk", gradients)
    monkeypatch.setattr(_engine, "_refit_chunk", refits)
    return calls


def test_each_method_is_computed_once_and_answers_every_target(beta_hat, counted):
    results = get_influence(logistic_loss, beta_hat, N)
    first = results.changes()
    n_calls = counted["gradients"]
    assert n_calls > 0
    with pytest.raises(ValueError, match="read-only"):  # the cache cannot be edited
        first[:] = 0.0
    targets = [lambda b: anp.dot(X[:5], b), lambda b: anp.array([anp.sum(b ** 2)])]
    for target in targets:
        expected = vif(logistic_loss, beta_hat, N, target=target)
        np.testing.assert_allclose(results.changes(target), expected, rtol=1e-10, atol=1e-14)
    results.summary_frame()
    np.testing.assert_allclose(results.changes(), vif(logistic_loss, beta_hat, N),
                               rtol=1e-12, atol=1e-15)
    # one gradient pass for the object; the two vif() calls made their own
    assert counted["gradients"] == 3 * n_calls + n_calls


def test_refits_are_cached_per_unit(beta_hat, counted):
    results = get_influence(logistic_loss, beta_hat, N)
    some = results.changes(method="loo", positions=[3, 7])
    assert counted["refits"] == 2
    every = results.changes(method="loo")
    assert counted["refits"] == N  # units 3 and 7 were not refit again
    np.testing.assert_array_equal(every[[3, 7]], some)
    target = lambda b: anp.dot(X[:4], b)
    np.testing.assert_allclose(results.changes(target, method="loo"),
                               vif(logistic_loss, beta_hat, N, target=target, method="loo"),
                               rtol=1e-9, atol=1e-12)
    assert counted["refits"] == 2 * N  # the vif() call refit; the object did not


# ---------------------------------------------------------- solver options
def test_minres_and_krylov_options_give_the_direct_solution(beta_hat):
    direct = vif(logistic_loss, beta_hat, N, solver="direct")
    for solver in ["cg", "minres"]:
        got = vif(logistic_loss, beta_hat, N, solver=solver, solver_options={"rtol": 1e-12})
        np.testing.assert_allclose(got, direct, rtol=1e-7, atol=1e-9 * np.abs(direct).max())
    # an exact preconditioner: conjugate gradients converge at once (scipy sees it on
    # its second iteration)
    H = get_influence(logistic_loss, beta_hat, N).hessian_solver(kind="direct").hessian
    inverse = np.linalg.inv(H)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for M in (inverse, LinearOperator((P, P), matvec=lambda v: inverse @ v),
                  lambda v: inverse @ v):
            got = vif(logistic_loss, beta_hat, N, solver="cg",
                      solver_options={"preconditioner": M, "maxiter": 2})
            np.testing.assert_allclose(got, direct, rtol=1e-8,
                                       atol=1e-10 * np.abs(direct).max())
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 iterations"):
        vif(logistic_loss, beta_hat, N, solver="cg", solver_options={"maxiter": 1})


def test_lanczos_solves_in_the_span_of_the_largest_eigenvectors(beta_hat):
    results = get_influence(logistic_loss, beta_hat, N)
    H = results.hessian_solver(kind="direct").hessian
    lam, V = np.linalg.eigh(H)
    R = results.right_hand_sides("vif")
    for rank in (1, 2):
        top = np.argsort(-np.abs(lam))[:rank]
        expected = R @ V[:, top] @ np.diag(1 / lam[top]) @ V[:, top].T
        got = vif(logistic_loss, beta_hat, N, solver="lanczos",
                  solver_options={"rank": rank, "rtol": 1e-12})
        np.testing.assert_allclose(got, expected, rtol=1e-6,
                                   atol=1e-9 * np.abs(expected).max())
    with pytest.raises(ValueError, match="rank < n_params"):
        vif(logistic_loss, beta_hat, N, solver="lanczos", solver_options={"rank": P})


@pytest.mark.parametrize("options, error, match", [
    ({"tolerance": 1e-3}, ValueError, "Unknown solver_options"),
    ({"rtol": 0.0}, ValueError, "rtol"),
    ({"maxiter": 2.5}, ValueError, "maxiter"),
    ({"preconditioner": "jacobi"}, TypeError, "preconditioner"),
    ([("rtol", 1e-3)], TypeError, "dict"),
])
def test_bad_solver_options_are_named(beta_hat, options, error, match):
    with pytest.raises(error, match=match):
        vif(logistic_loss, beta_hat, N, solver="cg", solver_options=options)


def test_vif_takes_the_model_closed_forms():
    rossi = load_rossi()
    model = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest"]),
                                 rossi[["week", "arrest"]])
    n = rossi.shape[0]
    generic = vif(model._loss(), model.coef_, n, batched=True)
    fast = vif(model._loss(), model.coef_, n, batched=True,
               derivatives=model._derivatives(None))
    np.testing.assert_allclose(fast, generic, rtol=1e-9, atol=1e-12 * np.abs(generic).max())


# ------------------------------------------------------------- Cox and R
R_DFBETA = """
d <- read.csv(commandArgs(TRUE)[1])
fit <- coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = d,
             ties = "efron", control = coxph.control(eps = 1e-12, iter.max = 50))
write.table(residuals(fit, type = "dfbeta"), commandArgs(TRUE)[2], row.names = FALSE,
            col.names = FALSE)
write.table(residuals(fit, type = "dfbetas"), commandArgs(TRUE)[3], row.names = FALSE,
            col.names = FALSE)
write.table(residuals(fit, type = "dfbeta", collapse = d$group), commandArgs(TRUE)[4],
            row.names = FALSE, col.names = FALSE)
"""


@pytest.fixture(scope="module")
def rossi_fit():
    rossi = load_rossi()
    model = CoxPHInfluence(tol=1e-12).fit(rossi.drop(columns=["week", "arrest"]),
                                          rossi[["week", "arrest"]])
    return rossi, model


def test_cox_summary_frame_is_r_dfbeta_and_dfbetas(rossi_fit, tmp_path):
    if not r_survival_available():
        pytest.skip(f"Rscript with R package survival not found: {INSTALL}")
    rossi, model = rossi_fit
    groups = np.arange(rossi.shape[0]) // 4 + 1  # R's collapse: groups in sorted order
    rossi.assign(group=groups).to_csv(tmp_path / "rossi.csv", index=False)
    (tmp_path / "fit.R").write_text("suppressMessages(library(survival))\n" + R_DFBETA)
    outputs = [tmp_path / name for name in ("dfbeta.txt", "dfbetas.txt", "collapsed.txt")]
    done = subprocess.run(["Rscript", str(tmp_path / "fit.R"), str(tmp_path / "rossi.csv"),
                           *map(str, outputs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dfbeta, dfbetas, collapsed = (np.loadtxt(path) for path in outputs)

    frame = model.get_influence().summary_frame(method="if")
    names = list(model.feature_names_in_)
    assert frame.index.equals(rossi.index)
    for got, expected in [(frame[[f"dfbeta_{c}" for c in names]], dfbeta),
                          (frame[[f"dfbetas_{c}" for c in names]], dfbetas)]:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())
    by_group = model.get_influence(groups=groups).summary_frame(method="if")
    np.testing.assert_array_equal(by_group.index, np.unique(groups))
    np.testing.assert_allclose(by_group[[f"dfbeta_{c}" for c in names]], collapsed,
                               rtol=1e-6, atol=1e-7 * np.abs(collapsed).max())


def test_cox_influence_answers_from_one_cached_results_object(rossi_fit, monkeypatch):
    rossi, model = rossi_fit
    model = clone(model).fit(rossi.drop(columns=["week", "arrest"]), rossi[["week", "arrest"]])
    results = model.get_influence()
    assert isinstance(results, InfluenceResults)
    assert model.get_influence() is results
    assert model.get_influence(damping=0.1) is not results
    coef = model.influence_()
    X_new = rossi.drop(columns=["week", "arrest"]).iloc[:3]
    predict = model.influence_(X_new, target="predict")
    np.testing.assert_allclose(predict, coef @ X_new.to_numpy().T, rtol=1e-10,
                               atol=1e-14)
    # the estimate every influence_ call answers from is the cached one
    calls = []
    monkeypatch.setattr(InfluenceResults, "right_hand_sides",
                        lambda self, method="vif": calls.append(method) or
                        self._right_hand_sides[method])
    model.influence_(X_new, target="predict")
    model.influence_()
    assert calls == []  # parameter changes were cached: no new right-hand sides
    monkeypatch.undo()
    frame = results.summary_frame()
    np.testing.assert_allclose(frame.filter(like="dfbeta_").to_numpy(), -coef)
    # a pickled or cloned model carries no cache and gives the same numbers
    restored = pickle.loads(pickle.dumps(model))
    assert restored.get_influence() is not model.get_influence()
    pd.testing.assert_frame_equal(restored.influence_(as_frame=True),
                                  model.influence_(as_frame=True))
    # a new fit drops the old results
    refit = model.fit(rossi.drop(columns=["week", "arrest"]).iloc[:300],
                      rossi[["week", "arrest"]].iloc[:300])
    assert refit.get_influence() is not results
    assert refit.get_influence().n_units == 300


@pytest.mark.parametrize("method", ["vif", "if", "newton"])
def test_vif_out_writes_the_changes_chunk_by_chunk(beta_hat, method):
    # the generic autograd path: out= gives the in-memory numbers (3 chunks of units)
    whole = vif(logistic_loss, beta_hat, N, method=method)
    top, exact = vif(logistic_loss, beta_hat, N, method=method, refine=5, return_exact=True)
    out = np.full(whole.shape, np.nan)
    assert vif(logistic_loss, beta_hat, N, method=method, out=out) is out
    np.testing.assert_allclose(out, whole, rtol=1e-12, atol=1e-15)
    got, got_exact = vif(logistic_loss, beta_hat, N, method=method, refine=5,
                         return_exact=True, out=out)
    assert got is out
    np.testing.assert_array_equal(got_exact, exact)
    np.testing.assert_allclose(out, top, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="only for the parameter changes"):
        vif(logistic_loss, beta_hat, N, target=lambda b: b[:1], out=out)
