"""Matrix-free loo / newton / minimize above AUTO_CG_MIN_PARAMS, against the dense paths."""

from functools import partial

import autograd.numpy as anp
import numpy as np
import pytest

from skvif import _engine, vif


def logistic_loss(theta, weights, *, X, y, alpha):
    margin = anp.dot(X, theta) * y
    return anp.sum(weights * anp.logaddexp(0.0, -margin)) + 0.5 * alpha * anp.sum(theta ** 2)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, p = 80, 60
    X = rng.normal(size=(n, p)) / np.sqrt(p)
    y = np.where(X @ rng.normal(size=p) + 0.3 * rng.normal(size=n) > 0, 1.0, -1.0)
    loss = partial(logistic_loss, X=X, y=y, alpha=1.0)
    theta, _, converged = _engine.minimize_hessian_free(loss, np.zeros(p), np.ones(n),
                                                        gtol=1e-9)
    assert converged
    return loss, theta, n


def _no_dense(*args, **kwargs):
    raise AssertionError("a dense Hessian was formed above AUTO_CG_MIN_PARAMS")


@pytest.mark.parametrize("method", ["loo", "newton"])
def test_large_p_paths_match_dense_paths(problem, method, monkeypatch):
    loss, theta, n = problem
    units = [[0], [5], [7, 9]]
    target = lambda th: th[:3]
    dense = vif(loss, theta, n, method=method, units=units, target=target)
    monkeypatch.setattr(_engine, "AUTO_CG_MIN_PARAMS", 50)   # p = 60 counts as large now
    monkeypatch.setattr(_engine, "_batch_hessians", _no_dense)
    free = vif(loss, theta, n, method=method, units=units, target=target)
    np.testing.assert_allclose(free, dense, rtol=1e-6, atol=1e-9 * np.abs(dense).max())


def test_minimize_large_p_matches_dense(problem, monkeypatch):
    loss, theta, n = problem
    lossb = _engine._as_batched(loss, False)
    W = np.ones((2, n))
    W[0, 3] = W[1, 11] = 0.0
    P0 = np.tile(theta, (2, 1))
    dense, _, ok = _engine.minimize(lossb, P0, W, tol=1e-10)
    monkeypatch.setattr(_engine, "AUTO_CG_MIN_PARAMS", 50)
    monkeypatch.setattr(_engine, "_batch_hessians", _no_dense)
    free, _, ok_free, hessians = _engine.minimize(lossb, P0, W, tol=1e-10,
                                                  return_hessians=True)
    assert ok.all() and ok_free.all() and hessians is None
    np.testing.assert_allclose(free, dense, rtol=1e-7, atol=1e-10)


def test_hessian_free_minimize_stops_at_max_iter_far_from_a_minimum():
    # Rosenbrock in 40 dimensions from far away: 2 trust-region iterations leave the
    # gradient large and the Hessian indefinite; no polishing Newton-CG step is taken
    # there (it could run 10 p conjugate-gradient iterations each), the result says
    # "not converged", and its point is trust-ncg's own
    from scipy.optimize import minimize as scipy_minimize

    def rosenbrock(x, weights):
        return anp.sum(weights[:-1] * (100.0 * (x[1:] - x[:-1] ** 2) ** 2
                                       + (1.0 - x[:-1]) ** 2))

    start, ones = np.full(40, 3.0), np.ones(40)
    theta, n_iter, converged = _engine.minimize_hessian_free(rosenbrock, start, ones,
                                                             gtol=1e-9, max_iter=2)
    gradient = _engine.grad(rosenbrock)
    reference = scipy_minimize(lambda x: (float(rosenbrock(x, ones)), gradient(x, ones)),
                               start, jac=True, method="trust-ncg",
                               hessp=_engine.grad(lambda x, v: anp.dot(gradient(x, ones), v)),
                               options={"gtol": 1e-9, "maxiter": 2})
    assert reference.status == 1 and not converged and n_iter == 2
    np.testing.assert_array_equal(theta, reference.x)
