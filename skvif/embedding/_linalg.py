"""Matrix-free solves on Hessian-vector products: block CG and Krylov saddle-free steps."""

import warnings

import numpy as np
import scipy.linalg
from sklearn.exceptions import ConvergenceWarning

__all__ = ["block_cg", "saddle_free_solve", "dense_saddle_free_solve"]


def block_cg(matvec, B, *, rtol=1e-10, max_iter=None, diagonal=None):
    """Solve ``M X = B`` column by column by conjugate gradients, products batched.

    ``diagonal``: the diagonal of ``M`` (Jacobi preconditioner), optional.

    ``matvec(V)`` applies the symmetric positive definite ``M`` to the
    columns of ``V`` (``(p, q)``); every column runs its own CG, and the
    products of the still active columns are evaluated together (one pass
    over the softmax for all of them). A column stops once its residual is at
    most ``rtol`` times the norm of its right-hand side.
    """
    B = np.asarray(B, dtype=float)
    p, q = B.shape
    max_iter = 10 * p if max_iter is None else max_iter
    X = np.zeros_like(B)
    R = B.copy()
    inverse = 1.0 if diagonal is None else 1.0 / np.asarray(diagonal)[:, None]
    D = R * inverse
    rz = np.sum(R * D, axis=0)
    bound = (rtol * np.linalg.norm(B, axis=0)) ** 2
    active = np.sum(R * R, axis=0) > bound
    for _ in range(max_iter):
        act = np.flatnonzero(active)
        if act.size == 0:
            break
        MD = matvec(D[:, act])
        curvature = np.sum(D[:, act] * MD, axis=0)
        if np.any(curvature <= 0):
            raise ValueError("The damped Hessian is not positive definite at the fit; "
                             "increase damping.")
        step = rz[act] / curvature
        X[:, act] += step * D[:, act]
        R[:, act] -= step * MD
        Z = R[:, act] * inverse
        rz_new = np.sum(R[:, act] * Z, axis=0)
        D[:, act] = Z + (rz_new / rz[act]) * D[:, act]
        rz[act] = rz_new
        active[act] = np.sum(R[:, act] ** 2, axis=0) > bound[act]
    if active.any():
        warnings.warn(f"Conjugate gradients did not converge in {max_iter} iterations "
                      f"for {active.sum()} right-hand side(s); increase damping.",
                      ConvergenceWarning, stacklevel=3)
    return X


def dense_saddle_free_solve(H, g, damping):
    """``V (|Lambda| + damping)^{-1} V^T g`` from the eigendecomposition of ``H``."""
    lam, V = np.linalg.eigh(H)
    return V @ ((V.T @ g) / (np.abs(lam) + damping))


def saddle_free_solve(matvec, g, damping, *, rtol=1e-8, max_iter=300, check_every=5):
    r"""``(|H| + damping I)^{-1} g`` on the Krylov space of ``H`` and ``g`` (Lanczos).

    ``k`` Lanczos steps (full reorthogonalization) give ``H Q_k ~ Q_k T_k``;
    the step is ``|g| Q_k f(T_k) e_1`` with ``f(t) = 1 / (|t| + damping)``, the
    saddle-free step restricted to the Krylov space. It equals the dense
    ``V (|Lambda| + damping)^{-1} V^T g`` once the space holds ``g``'s
    eigencomponents; iterations stop when the estimate changes by at most
    ``rtol`` (relative) between checks, or the space is exhausted.
    """
    p = g.size
    beta0 = np.linalg.norm(g)
    if beta0 == 0:
        return np.zeros_like(g)
    max_iter = min(max_iter, p)
    Q = np.zeros((p, max_iter + 1))
    alphas, betas = [], []
    Q[:, 0] = g / beta0
    previous = None
    for k in range(max_iter):
        w = matvec(Q[:, k])
        alphas.append(Q[:, k] @ w)
        w = w - Q[:, :k + 1] @ (Q[:, :k + 1].T @ w)
        w = w - Q[:, :k + 1] @ (Q[:, :k + 1].T @ w)  # twice is enough
        beta = np.linalg.norm(w)
        done = beta <= 1e-12 * max(abs(alphas[0]), 1.0) or k == max_iter - 1
        if (k + 1) % check_every == 0 or done:
            lam, S = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas))
            coef = S @ (S[0] / (np.abs(lam) + damping)) * beta0
            x = Q[:, :k + 1] @ coef
            if previous is not None and np.linalg.norm(x - previous) <= rtol * np.linalg.norm(x):
                return x
            if done:
                if k == max_iter - 1 and beta > 1e-12 * max(abs(alphas[0]), 1.0):
                    warnings.warn(f"The Krylov saddle-free step did not settle in {max_iter} "
                                  "Lanczos iterations.", ConvergenceWarning, stacklevel=3)
                return x
            previous = x
        betas.append(beta)
        Q[:, k + 1] = w / beta
    return x  # pragma: no cover
