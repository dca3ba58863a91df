"""Engine paths no estimator takes, against plain-numpy references and exact refits.

Two small problems written with ``autograd.numpy``, each with an independent
plain-numpy gradient, Hessian and refit:

- a ridge logistic regression with more parameters (80) than conjugate-gradient
  solves for a few units: ``solver="auto"`` then picks CG, ``method="newton"`` runs
  with CG, and a target with fewer values than units is solved target-first;
- an objective at a saddle point (indefinite Hessian): the direct solve takes its
  eigendecomposition branch (with its warning) and ``"loo"`` refits start without the
  fixed-Hessian (chord) iterations, whose Cholesky factorization fails.

Everything goes through the public :func:`skvif.vif`.
"""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest
from scipy.special import expit

from _accuracy import assert_agrees
from skvif import _engine, vif

# ---------------------------------------------------------------- logistic ridge
RNG = np.random.default_rng(20)
N, P, ALPHA = 100, 80, 1.0
X = RNG.normal(size=(N, P)) * np.linspace(0.3, 3.0, P)  # columns in different units
Y = (X @ RNG.normal(scale=0.3, size=P) + RNG.normal(size=N) > 0).astype(float)
UNITS = [[3], [17], [42]]  # 3 solves x ~20 products < 80 parameters: CG pays


def logistic_loss(theta, w):
    s = anp.dot(X, theta)
    return anp.sum(w * (anp.logaddexp(0.0, s) - Y * s)) + 0.5 * ALPHA * anp.dot(theta, theta)


def ref_gradient(theta, w):
    return X.T @ (w * (expit(X @ theta) - Y)) + ALPHA * theta


def ref_hessian(theta, w):
    p = expit(X @ theta)
    return (X.T * (w * p * (1 - p))) @ X + ALPHA * np.eye(P)


def ref_fit(w, theta):
    """Plain Newton on the numpy gradient and Hessian, to machine precision."""
    for _ in range(50):
        step = np.linalg.solve(ref_hessian(theta, w), ref_gradient(theta, w))
        theta = theta - step
        if np.max(np.abs(step)) < 1e-14 * (1 + np.max(np.abs(theta))):
            return theta
    raise AssertionError("reference Newton did not converge")


def without(units):
    W = np.ones((len(units), N))
    for k, rows in enumerate(units):
        W[k, rows] = 0.0
    return W


@pytest.fixture(scope="module")
def theta_hat():
    return ref_fit(np.ones(N), np.zeros(P))


@pytest.fixture
def cg_calls(monkeypatch):
    """Count the calls of scipy's conjugate gradients made by the engine."""
    calls = []
    real = _engine.cg

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_engine, "cg", counting)
    return calls


def assert_close(actual, expected, rtol):
    """Entry by entry, relative to the largest entry of ``expected``."""
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=rtol * np.max(np.abs(expected)))


def ref_vif(theta, units):
    H, g = ref_hessian(theta, np.ones(N)), ref_gradient(theta, np.ones(N))
    return np.stack([np.linalg.solve(H, g - ref_gradient(theta, w)) for w in without(units)])


def test_auto_solver_picks_cg_for_few_units(theta_hat, cg_calls):
    auto = vif(logistic_loss, theta_hat, N, units=UNITS)
    assert len(cg_calls) == len(UNITS)  # one CG solve per unit
    assert_close(auto, ref_vif(theta_hat, UNITS), 1e-8)
    del cg_calls[:]
    # with one unit per row the dense factorization pays: no CG
    every = vif(logistic_loss, theta_hat, N)
    assert not cg_calls
    assert_close(every[[u for (u,) in UNITS]], auto, 1e-8)


def test_newton_with_cg_equals_dense_newton_and_approaches_refits(theta_hat, cg_calls):
    cg = vif(logistic_loss, theta_hat, N, method="newton", solver="cg", units=UNITS)
    assert len(cg_calls) == len(UNITS)
    expected = np.stack([-np.linalg.solve(ref_hessian(theta_hat, w), ref_gradient(theta_hat, w))
                         for w in without(UNITS)])
    assert_close(cg, expected, 1e-8)
    direct = vif(logistic_loss, theta_hat, N, method="newton", solver="direct", units=UNITS)
    assert_close(direct, expected, 1e-10)
    exact = np.stack([ref_fit(w, theta_hat) - theta_hat for w in without(UNITS)])
    assert_close(vif(logistic_loss, theta_hat, N, method="loo", units=UNITS), exact, 1e-7)
    # one Newton step lands close to the exact refit, even with 80 parameters for 100
    # rows, where "vif" understates the changes about 3.5-fold (measured: newton r 0.997,
    # slope 0.997, max error 0.110; vif slope 0.28)
    units = [[i] for i in range(0, N, 5)]
    exact = np.stack([ref_fit(w, theta_hat) - theta_hat for w in without(units)])
    newton = vif(logistic_loss, theta_hat, N, method="newton", solver="cg", units=units)
    assert_agrees(newton, exact, min_r=0.995, slope=(0.97, 1.03), max_error=0.15,
                  label="newton with CG")


@pytest.mark.parametrize("method", ["vif", "if"])
def test_cg_solves_target_first_when_fewer_targets_than_units(theta_hat, cg_calls, method):
    Xt = RNG.normal(size=(2, P))

    def target(theta):
        return anp.tanh(anp.dot(Xt, theta))

    # 2 target values < 100 units: the engine solves H^-1 J^T (2 CG solves), not H^-1 R^T
    auto = vif(logistic_loss, theta_hat, N, target=target, method=method)
    assert len(cg_calls) == 2
    J = (1 - np.tanh(Xt @ theta_hat) ** 2)[:, None] * Xt
    expected = ref_vif(theta_hat, [[i] for i in range(N)]) @ J.T  # linear in w: if == vif
    assert auto.shape == (N, 2)
    assert_close(auto, expected, 1e-8)
    direct = vif(logistic_loss, theta_hat, N, target=target, method=method, solver="direct")
    assert_close(direct, expected, 1e-10)


# -------------------------------------------------------------- a saddle point
# In orthonormal coordinates (a, b, e) = Q' theta (Q a random rotation, so the
# Hessian is not diagonal in theta):
#   L(theta, w) = sum_i w_i [(a - x_i)^2 + z_i b + (e - v_i)^2] - C b^2 + b^4,
# with sum z_i = 0, stationary at a = mean(x), b = 0, e = mean(v), where the Hessian
# is Q diag(2 n, -2 C, 2 n) Q': indefinite. Removing row i moves the stationary point
# by H^-1 (its gradient terms): (mean(x) - x_i) / n along a, -z_i / (2 C) along b.
M, C = 30, 1.0
SADDLE_RNG = np.random.default_rng(21)
Q = np.linalg.qr(SADDLE_RNG.normal(size=(3, 3)))[0]
XS, VS = SADDLE_RNG.normal(size=M), SADDLE_RNG.normal(size=M)
ZS = 1.5 * SADDLE_RNG.normal(size=M)
ZS -= ZS.mean()
SADDLE = Q @ np.array([XS.mean(), 0.0, VS.mean()])


def saddle_loss(theta, w):
    a, b, e = anp.dot(theta, Q)
    return (anp.sum(w * ((a - XS) ** 2 + ZS * b + (e - VS) ** 2))
            - C * b ** 2 + b ** 4)


def saddle_hessian():
    return Q @ np.diag([2.0 * M, -2.0 * C, 2.0 * M]) @ Q.T


def saddle_row_gradient(i):
    """Row i's terms of the gradient at the saddle, plain numpy."""
    return Q @ np.array([2 * (XS.mean() - XS[i]), ZS[i], 2 * (VS.mean() - VS[i])])


@pytest.mark.parametrize("method", ["vif", "if"])
def test_indefinite_direct_solve_uses_the_eigendecomposition(method):
    with pytest.warns(UserWarning, match="not positive definite"):
        got = vif(saddle_loss, SADDLE, M, method=method, solver="direct")
    rows = np.stack([saddle_row_gradient(i) for i in range(M)])
    assert_close(got, np.linalg.solve(saddle_hessian(), rows.T).T, 1e-10)
    # closed form, in (a, b, e) coordinates: the negative curvature flips the sign along b
    coords = got @ Q
    assert_close(coords, np.column_stack([(XS.mean() - XS) / M, -ZS / (2 * C),
                                          (VS.mean() - VS) / M]), 1e-10)


# Without row i the loss along b is -z_i b - C b^2 + b^4: one well when
# |z_i| > (4 C / 3) sqrt(C / 6), two otherwise (then a refit may rightly end in either)
ONE_WELL = np.flatnonzero(np.abs(ZS) > 1.05 * (4 * C / 3) * np.sqrt(C / 6))


def saddle_refit(i):
    """The minimum of the objective without row i (one well along b), plain numpy."""
    keep = np.arange(M) != i
    roots = np.roots([4.0, 0.0, -2.0 * C, -ZS[i]])  # d/db (-z_i b - C b^2 + b^4) = 0
    (b,) = roots[np.abs(roots.imag) < 1e-9].real
    return Q @ np.array([XS[keep].mean(), b, VS[keep].mean()])


def test_loo_without_the_chord_start_reaches_the_refits():
    assert ONE_WELL.size >= 10
    units = [[i] for i in ONE_WELL]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = vif(saddle_loss, SADDLE, M, method="loo", units=units)
    # at most a warning that params is not a minimum
    assert all("positive definite" in str(w.message) for w in caught), [
        str(w.message) for w in caught]
    exact = np.stack([saddle_refit(i) for (i,) in units]) - SADDLE
    assert_close(got, exact, 1e-8)
