"""The model-agnostic engine against dense autograd, finite differences and exact refits."""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, hessian
from scipy.optimize import minimize as scipy_minimize
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning

from _accuracy import assert_agrees
from skvif import vif
from skvif._engine import HessianSolver, _batch_grad, _batch_hessians, minimize

RNG = np.random.default_rng(0)
N, P = 80, 4
X = RNG.normal(size=(N, P))
LABEL = (X @ np.array([1.0, -0.5, 0.3, 0.0]) + RNG.normal(size=N) > 0)
POS, NEG = np.flatnonzero(LABEL), np.flatnonzero(~LABEL)
ALPHA = 0.5


def pairwise_auc_loss(theta, w):
    """Pairwise logistic (AUC surrogate): every positive against every negative.

    Non-decomposable: each row appears in many terms; weight 0 removes all of
    them. Batched: theta (k, p), w (k, n) -> (k,).
    """
    s = anp.dot(theta, X.T)
    margin = s[..., POS][..., :, None] - s[..., NEG][..., None, :]
    pair_w = w[..., POS][..., :, None] * w[..., NEG][..., None, :]
    terms = pair_w * anp.logaddexp(0.0, -margin)
    return anp.sum(terms, axis=(-1, -2)) + 0.5 * ALPHA * anp.sum(theta * theta, axis=-1)


def scalar_loss(theta, w):
    return pairwise_auc_loss(theta, w)


def deleted_loss(theta, keep):
    """The same loss and its gradient, written in plain numpy on the kept rows only.

    Independent of the weighted loss above and of autograd: the pairs of the data
    set without the removed rows, ``sum log(1 + exp(-(x_i - x_j)' theta))``.
    """
    diff = X[POS[keep[POS]]][:, None, :] - X[NEG[keep[NEG]]][None, :, :]
    margin = diff @ theta
    value = np.sum(np.logaddexp(0.0, -margin)) + 0.5 * ALPHA * theta @ theta
    gradient = -np.einsum("ab,abp->p", expit(-margin), diff) + ALPHA * theta
    return value, gradient


def refit(keep, x0):
    res = scipy_minimize(deleted_loss, x0, args=(keep,), method="BFGS", jac=True,
                         options={"gtol": 1e-11})
    return res.x


@pytest.fixture(scope="module")
def theta_hat():
    return refit(np.ones(N, bool), np.zeros(P))


def test_mask_identity():
    theta = RNG.normal(size=P)
    for u in [0, 5, POS[0], NEG[-1]]:
        keep = np.ones(N, bool)
        keep[u] = False
        value, gradient = deleted_loss(theta, keep)
        assert pairwise_auc_loss(theta, keep.astype(float)) == pytest.approx(value, rel=1e-12)
        # the reference's own gradient, against central finite differences
        eps = 1e-6
        fd = [(deleted_loss(theta + eps * e, keep)[0] - deleted_loss(theta - eps * e, keep)[0])
              / (2 * eps) for e in np.eye(P)]
        np.testing.assert_allclose(gradient, fd, rtol=1e-7)


def test_batched_gradients_and_hessians_match_dense_autograd(theta_hat):
    Pm = theta_hat + RNG.normal(scale=0.1, size=(3, P))
    W = RNG.uniform(size=(3, N))
    G = _batch_grad(pairwise_auc_loss, Pm, W)
    H = _batch_hessians(pairwise_auc_loss, Pm, W)
    for k in range(3):
        np.testing.assert_allclose(G[k], grad(scalar_loss)(Pm[k], W[k]), rtol=1e-12)
        np.testing.assert_allclose(H[k], hessian(scalar_loss)(Pm[k], W[k]), rtol=1e-10)
        # and the gradient against central finite differences
        eps = 1e-6
        fd = [(scalar_loss(Pm[k] + eps * e, W[k]) - scalar_loss(Pm[k] - eps * e, W[k])) / (2 * eps)
              for e in np.eye(P)]
        np.testing.assert_allclose(G[k], fd, rtol=1e-6, atol=1e-6)


def test_cg_and_direct_solves_agree(theta_hat):
    b = RNG.normal(size=(P, 3))
    direct = HessianSolver(scalar_loss, theta_hat, np.ones(N), solver="direct").solve(b)
    iterative = HessianSolver(scalar_loss, theta_hat, np.ones(N), solver="cg").solve(b)
    H = hessian(scalar_loss)(theta_hat, np.ones(N))
    np.testing.assert_allclose(direct, np.linalg.solve(H, b), rtol=1e-10)
    np.testing.assert_allclose(iterative, direct, rtol=1e-6, atol=1e-10)
    # HVPs used by CG equal the dense Hessian times the vector
    op = HessianSolver(scalar_loss, theta_hat, np.ones(N), solver="cg", damping=0.3)
    v = RNG.normal(size=P)
    np.testing.assert_allclose(op.matvec(v), H @ v + 0.3 * v, rtol=1e-10)


def test_cg_tolerance_takes_effect():
    A = RNG.normal(size=(300, 120)) * np.linspace(0.1, 3, 120)
    target = RNG.normal(size=300)

    def least_squares(theta, w):
        return 0.5 * anp.sum(w * (anp.dot(A, theta) - target) ** 2)

    theta, ones, b = np.zeros(120), np.ones(300), RNG.normal(size=120)
    exact = np.linalg.solve(A.T @ A, b)
    loose = HessianSolver(least_squares, theta, ones, solver="cg", cg_rtol=1e-2).solve(b)
    tight = HessianSolver(least_squares, theta, ones, solver="cg", cg_rtol=1e-12).solve(b)
    scale = np.abs(exact).max()
    assert np.abs(tight - exact).max() < 1e-8 * scale < 1e-3 * scale < np.abs(loose - exact).max()
    capped = HessianSolver(least_squares, theta, ones, solver="cg", cg_maxiter=2)
    with pytest.warns(ConvergenceWarning, match="residual norm"):
        capped.solve(b)


@pytest.fixture(scope="module")
def single_row_refits(theta_hat):
    rows = np.arange(0, N, 5)
    return rows, np.array([refit(np.arange(N) != u, theta_hat) - theta_hat for u in rows])


def test_single_row_influence_matches_refits(theta_hat, single_row_refits):
    rows, exact = single_row_refits
    units = [[u] for u in rows]
    est = {m: vif(pairwise_auc_loss, theta_hat, N, method=m, units=units, batched=True)
           for m in ["vif", "if", "newton", "loo"]}
    np.testing.assert_allclose(est["loo"], exact, atol=1e-7)
    # 16 rows of 80, each in ~n/2 pairs: the first-order methods understate the changes
    # by 10-15 % (measured over the 4 columns: vif = if slope [0.856, 0.903], max error
    # 0.195; newton slope [0.892, 0.989], max error 0.179); every band excludes the
    # estimate scaled by 0.9 or 1.1 in at least one column
    bands = {"vif": ((0.83, 0.93), 0.25), "if": ((0.83, 0.93), 0.25),
             "newton": ((0.87, 1.01), 0.22)}
    for m, (slope, max_error) in bands.items():
        for j in range(P):
            assert_agrees(est[m][:, j], exact[:, j], min_r=0.995, slope=slope,
                          max_error=max_error, label=f"{m}, column {j}")


def test_group_influence_matches_refits(theta_hat):
    groups = [np.arange(k, k + 4) for k in range(0, N, 5)]
    exact = []
    for g in groups:
        keep = np.ones(N, bool)
        keep[g] = False
        exact.append(refit(keep, theta_hat) - theta_hat)
    exact = np.array(exact)
    est = vif(pairwise_auc_loss, theta_hat, N, units=groups, batched=True)
    newton = vif(pairwise_auc_loss, theta_hat, N, units=groups, method="newton", batched=True)
    # groups of 4 rows of 80: vif understates by about 20 % (measured over the 4
    # columns: slope [0.763, 0.816], max error 0.32), newton by 5-10 % ([0.891, 0.963],
    # 0.23)
    for j in range(P):
        assert_agrees(est[:, j], exact[:, j], min_r=0.985, slope=(0.74, 0.84),
                      max_error=0.38, label=f"vif, column {j}")
        assert_agrees(newton[:, j], exact[:, j], min_r=0.99, slope=(0.87, 0.99),
                      max_error=0.28, label=f"newton, column {j}")


def test_batched_and_looped_losses_agree(theta_hat):
    for method in ["vif", "if", "newton"]:
        a = vif(pairwise_auc_loss, theta_hat, N, method=method, batched=True)
        b = vif(scalar_loss, theta_hat, N, method=method, batched=False)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_target_is_mapped_through_its_gradient(theta_hat):
    Xt = RNG.normal(size=(5, P))

    def target(t):
        return anp.tanh(anp.dot(Xt, t))

    delta = vif(pairwise_auc_loss, theta_hat, N, batched=True)
    out = vif(pairwise_auc_loss, theta_hat, N, target=target, batched=True)
    eps = 1e-6
    J = np.stack([(target(theta_hat + eps * e) - target(theta_hat - eps * e)) / (2 * eps)
                  for e in np.eye(P)], axis=1)
    np.testing.assert_allclose(out, delta @ J.T, rtol=1e-6, atol=1e-10)
    loo = vif(pairwise_auc_loss, theta_hat, N, target=target, method="loo", units=[[0], [7]],
              batched=True)
    for row, u in zip(loo, [0, 7]):
        np.testing.assert_allclose(row, target(refit(np.arange(N) != u, theta_hat))
                                   - target(theta_hat), atol=1e-7)


def test_damping_adds_to_the_hessian(theta_hat):
    ones = np.ones(N)
    H = hessian(scalar_loss)(theta_hat, ones)
    g_full = grad(scalar_loss)(theta_hat, ones)
    w = ones.copy()
    w[3] = 0
    expected = np.linalg.solve(H + 2.0 * np.eye(P), g_full - grad(scalar_loss)(theta_hat, w))
    out = vif(pairwise_auc_loss, theta_hat, N, units=[[3]], damping=2.0, batched=True)
    np.testing.assert_allclose(out[0], expected, rtol=1e-10)


def test_parallel_chunks_give_the_same_result(theta_hat):
    a = vif(scalar_loss, theta_hat, N)
    b = vif(scalar_loss, theta_hat, N, n_jobs=2)  # 2 chunks of units, 2 joblib workers
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_verbose_reports_progress_per_chunk(theta_hat, capsys):
    units = [[i] for i in range(10)]
    quiet = vif(pairwise_auc_loss, theta_hat, N, method="loo", units=units, batched=True)
    assert capsys.readouterr().err == ""
    loud = vif(pairwise_auc_loss, theta_hat, N, method="loo", units=units, batched=True,
               verbose=1)
    np.testing.assert_allclose(loud, quiet, rtol=1e-12)
    err = capsys.readouterr().err  # a tqdm bar: label, count and rate
    assert "[skvif] refits" in err and "10/10" in err and "unit/s" in err


def test_minimize_reaches_the_scipy_optimum(theta_hat):
    P0 = np.zeros((2, P))
    W = np.ones((2, N))
    W[1, :5] = 0
    Pm, n_iter, converged = minimize(pairwise_auc_loss, P0, W, tol=1e-10)
    assert converged.all()
    np.testing.assert_allclose(Pm[0], theta_hat, atol=1e-7)
    np.testing.assert_allclose(Pm[1], refit(np.arange(N) >= 5, theta_hat), atol=1e-7)


def test_inputs_are_not_modified(theta_hat):
    params = theta_hat.copy()
    vif(pairwise_auc_loss, params, N, method="loo", units=[[1]], batched=True)
    np.testing.assert_array_equal(params, theta_hat)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"method": "exact"}, ValueError, "method must be one of"),
    ({"solver": "lu"}, ValueError, "solver must be one of"),
    ({"damping": -1.0}, ValueError, "damping"),
    ({"units": [[0], [N]]}, ValueError, "outside"),
    ({"units": [[]]}, ValueError, "empty"),
    ({"units": [[0.5]]}, TypeError, "integer"),
    ({"target": 3}, TypeError, "target must be"),
])
def test_bad_arguments_raise_clear_errors(theta_hat, kwargs, error, match):
    with pytest.raises(error, match=match):
        vif(pairwise_auc_loss, theta_hat, N, batched=True, **kwargs)


def test_bad_loss_and_params_raise_clear_errors(theta_hat):
    with pytest.raises(TypeError, match="loss must be callable"):
        vif(None, theta_hat, N)
    with pytest.raises(ValueError, match="NaN"):
        vif(pairwise_auc_loss, [np.nan] * P, N)
    with pytest.raises(ValueError, match="finite scalar"):
        vif(lambda t, w: anp.ones(2), theta_hat, N)
    with pytest.raises(ValueError, match="n_samples"):
        vif(pairwise_auc_loss, theta_hat, 0)
    def broken(theta, w):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="raised RuntimeError"):
        vif(broken, theta_hat, N)


def test_singular_hessian_is_reported():
    def flat(theta, w):  # depends on theta[0] + theta[1] only
        return anp.sum(w * (theta[0] + theta[1] - X[:, 0]) ** 2)

    with pytest.raises(ValueError, match="singular"):
        vif(flat, [X[:, 0].mean() / 2] * 2, N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = vif(flat, [X[:, 0].mean() / 2] * 2, N, damping=1e-3)
    assert np.all(np.isfinite(out))
