"""The model-agnostic influence engine.

Everything here works on a loss ``loss(params, weights)`` written with
``autograd.numpy``, with one weight per training sample, where a weight of zero
must give exactly the loss of the data without that sample. The engine knows
nothing about any model: estimators hand it their objective and read back
parameter (or prediction) changes.

A loss may be *batched*: besides ``(p,)`` params and ``(n,)`` weights it then
also accepts ``(k, p)`` params with ``(k, n)`` weights and returns ``(k,)``
losses. The engine then evaluates the gradients (and Hessians, and refits) of
``k`` leave-out problems in one vectorized autograd pass instead of a Python
loop; every built-in objective of skvif is written this way.
"""

import numbers
import warnings
from functools import partial

import autograd.numpy as anp
import numpy as np
import scipy.linalg
from autograd import grad, jacobian
from autograd.differential_operators import make_jvp_reversemode
from joblib import Parallel, delayed
from scipy.optimize import minimize as scipy_minimize
from scipy.sparse.linalg import LinearOperator, cg, minres
from sklearn.exceptions import ConvergenceWarning

from ._progress import progress_bar

__all__ = ["vif", "ModelDerivatives", "METHODS", "SOLVERS"]

METHODS = ("vif", "if", "newton", "loo")
SOLVERS = ("auto", "direct", "cg")

# Above this many parameters ``solver="auto"`` uses conjugate gradients on
# Hessian-vector products instead of a dense factorization.
AUTO_CG_MIN_PARAMS = 2000
# Conjugate gradients usually need about this many Hessian-vector products per
# right-hand side; a dense Hessian costs p of them plus a factorization.
_CG_PRODUCTS_PER_SOLVE = 20
# Newton stops (not converged) after this many iterations without a decrease.
_FLAT_ITERATIONS = 10
# Most fixed-Hessian (chord) iterations before the Newton refits take over.
_CHORD_MAX_ITER = 20
# Newton steps accepted on the gradient norm after trust-region Newton-CG stalls.
_POLISH_STEPS = 5
# Leave-out problems evaluated together hold about this many weights at once.
_CHUNK_ELEMENTS = 2**21
# A Hessian whose (Jacobi-scaled) reciprocal condition number is below this
# is treated as singular.
_SINGULAR_RCOND = 1e-12


class ModelDerivatives:
    """Protocol: closed forms a model may hand the engine instead of autograd.

    The engine never needs any of these: each one replaces a generic autograd
    computation on the loss, must return the same numbers (every model's tests
    differential-test its closed forms against the generic path) and is looked
    up by name, so a model implements only what it has. Subclassing this class
    is optional; it only documents the protocol.

    Methods a model may provide (all at the fitted params, weights of ones
    unless said otherwise):

    ``gradient_changes(units) -> (k, p)``
        ``grad L(params; 1) - grad L(params; w^(-u))`` for each of the ``k``
        units of a chunk (a list of index arrays): ``method="vif"`` and
        ``"newton"``.
    ``hessian_changes(units) -> (k, p, p)``
        ``H(params; 1) - H(params; w^(-u))`` likewise: with
        ``gradient_changes``, ``method="newton"`` without evaluating the full
        loss once per unit.
    ``weight_derivatives() -> (p, n)``
        The derivatives of ``grad loss_if(params; w)`` in each weight at
        ``w = 1``: ``method="if"``.
    ``hessian() -> (p, p)``
        The full-data Hessian (without damping): the dense solver, the
        Newton and ``"loo"`` starts (otherwise ``p`` autograd passes).
    ``hessian_vector_product(v) -> (p,)``
        ``H v`` for the full-data Hessian: the conjugate-gradient solver.
    ``preconditioner(damping) -> LinearOperator``
        An approximation of ``(H + damping I)^-1`` (symmetric positive
        definite) that the conjugate-gradient solver uses as its ``M``.
    ``target_changes(units) -> (k, m)``
        For a target that depends on the weights (``target_uses_weights``):
        ``target(params, w^(-u)) - target(params, 1)`` at the fitted params,
        the part of ``"vif"`` and ``"newton"`` that does not move the params.
    ``gradient_and_hessian(P, W) -> ((k, p), (k, p, p))``
        Gradients and Hessians of ``k`` problems with params ``P (k, p)``
        and weights ``W (k, n)`` (any weights, zeros deleting rows exactly as
        the loss does): the Newton iterations of :func:`minimize` (fits and
        ``"loo"`` refits).
    """


def _provided(derivatives, name):
    """The model's closed form ``name``, or ``None`` (then the engine uses autograd)."""
    return getattr(derivatives, name, None) if derivatives is not None else None


# --------------------------------------------------------------------------
# batched evaluation
# --------------------------------------------------------------------------
def _looped(loss, P, W):
    return anp.stack([loss(P[i], W[i]) for i in range(P.shape[0])])


def _as_batched(loss, batched):
    """Return ``f(P (k, p), W (k, n)) -> (k,)`` for any loss (picklable if ``loss`` is)."""
    return loss if batched else partial(_looped, loss)


def _batch_grad(lossb, P, W):
    """Per-problem gradients, shape ``(k, p)``, in one reverse pass."""
    return grad(lambda Q: anp.sum(lossb(Q, W)))(P)


def _batch_hessians(lossb, P, W):
    """Per-problem Hessians, shape ``(k, p, p)``, from ``p`` batched HVPs."""
    gradient = grad(lambda Q: anp.sum(lossb(Q, W)))
    k, p = P.shape
    H = np.empty((k, p, p))
    for j in range(p):
        V = np.zeros((k, p))
        V[:, j] = 1.0
        H[:, :, j] = grad(lambda Q: anp.sum(gradient(Q) * V))(P)
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def _batch_gradient_and_hessian(lossb, P, W):
    return _batch_grad(lossb, P, W), _batch_hessians(lossb, P, W)


def _full_hessian(lossb, params, n_samples, derivatives=None):
    """The full-data Hessian ``(p, p)``: the model's closed form, else ``p`` autograd passes."""
    closed_form = _provided(derivatives, "hessian")
    if closed_form is not None:
        return np.asarray(closed_form(), dtype=float)
    return _batch_hessians(lossb, params[None], np.ones((1, n_samples)))[0]


def _leave_out_weights(units, n_samples, base=None):
    W = np.ones((len(units), n_samples)) if base is None else np.tile(base, (len(units), 1))
    for i, idx in enumerate(units):
        W[i, idx] = 0.0
    return W


def _chunks(units, n_samples, batched, size=None):
    if size is None:
        size = max(1, _CHUNK_ELEMENTS // max(n_samples, 1)) if batched else 64
    return [(start, units[start:start + size]) for start in range(0, len(units), size)]


def _map_chunks(func, units, n_samples, batched, n_jobs, verbose, label, size=None):
    """Apply ``func(chunk_units)`` to chunks of units and stack the results.

    ``verbose`` drives a progress bar over the units (see :mod:`skvif._progress`).
    """
    chunks = _chunks(units, n_samples, batched, size)
    if n_jobs is not None and n_jobs != 1 and len(chunks) > 1:
        tasks = [delayed(func)(chunk) for _, chunk in chunks]
        try:  # results as they come, for the progress bar
            computed = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
        except ValueError as exc:  # backends without generators (multiprocessing)
            if "return_as" not in str(exc):
                raise
            computed = Parallel(n_jobs=n_jobs)(tasks)
    else:
        computed = (func(chunk) for _, chunk in chunks)
    results = []
    with progress_bar(len(units), label, verbose) as bar:
        for (_, chunk), result in zip(chunks, computed):
            results.append(result)
            bar.update(len(chunk))
    return np.concatenate(results, axis=0)


# --------------------------------------------------------------------------
# minimization (fits and exact refits)
# --------------------------------------------------------------------------
def minimize(lossb, P0, W, *, tol=1e-9, max_iter=100, damping=0.0, return_hessians=False,
             derivatives=None):
    """Minimize ``k`` problems at once by damped Newton steps with step halving.

    Parameters
    ----------
    lossb : callable
        Batched loss ``lossb(P (k, p), W (k, n)) -> (k,)``.
    P0 : ndarray of shape (k, p)
        Starting points.
    W : ndarray of shape (k, n)
        Sample weights of each problem.
    tol : float
        A problem has converged once a full Newton step, measured in the
        Hessian's own units (``|step_j| sqrt(H_jj)``), is at most
        ``tol * (1 + max_j |params_j| sqrt(H_jj))``: a criterion that does not
        depend on the units of the parameters (a covariate in cents or in
        dollars converges alike).
    max_iter : int
        Maximum number of Newton iterations. A problem whose objective has not
        decreased measurably (by more than ``1e-13 (1 + |objective|)``) for
        ``10`` iterations in a row while its steps stay large is stopped
        earlier, not converged: its infimum lies at infinity (e.g. a monotone
        likelihood), which Newton's method approaches forever.
    damping : float
        Added to the Hessian's diagonal.
    return_hessians : bool
        Also return each problem's Hessian (without damping) at its last
        iteration, i.e. one (converged: tiny) step before ``P``.
    derivatives : object, default=None
        The model's closed forms (:class:`ModelDerivatives`); its
        ``gradient_and_hessian``, when provided, replaces autograd.

    Returns
    -------
    P : ndarray of shape (k, p)
    n_iter : ndarray of shape (k,)
    converged : ndarray of shape (k,) of bool
        A problem whose gradient or Hessian stops being finite is left at its
        last finite point and reported not converged (never moved to NaN).
    hessians : ndarray of shape (k, p, p)
        Only with ``return_hessians``.

    Notes
    -----
    From ``AUTO_CG_MIN_PARAMS`` parameters on (unless the model provides
    ``gradient_and_hessian``) no Hessian is formed: each problem is minimized
    by :func:`minimize_hessian_free` until its gradient norm is at most
    ``tol`` times its norm at ``P0``; ``damping`` is then unused and
    ``hessians`` is ``None``.

    The Newton direction uses the absolute values of the eigenvalues of the
    Jacobi-scaled Hessian ``D^-1/2 H D^-1/2`` (``D`` its diagonal; floored at
    ``1e-10`` times the largest), so it does not depend on the units of the
    parameters and is a descent direction even where the objective is not
    convex; each step is halved until the objective does not increase.
    """
    P = np.array(P0, dtype=float)
    k, p = P.shape
    if p >= AUTO_CG_MIN_PARAMS and _provided(derivatives, "gradient_and_hessian") is None:
        return _minimize_each_hessian_free(lossb, P, W, tol, max_iter, return_hessians)
    gradient_and_hessian = _provided(derivatives, "gradient_and_hessian") or partial(
        _batch_gradient_and_hessian, lossb)
    f = np.asarray(lossb(P, W), dtype=float)
    n_iter = np.zeros(k, dtype=int)
    converged = np.zeros(k, dtype=bool)
    stopped = np.zeros(k, dtype=bool)
    flat = np.zeros(k, dtype=int)  # consecutive iterations without a measurable decrease
    last_P, last_f = P.copy(), f.copy()  # the last iterates with finite derivatives
    hessians = np.full((k, p, p), np.nan) if return_hessians else None
    for _ in range(max_iter):
        act = np.flatnonzero(~(converged | stopped))
        if act.size == 0:
            break
        Pa, Wa, fa = P[act], W[act], f[act]
        g, H = gradient_and_hessian(Pa, Wa)
        if return_hessians:
            hessians[act] = H
        finite = (np.all(np.isfinite(g), axis=1) & np.all(np.isfinite(H), axis=(1, 2))
                  & np.isfinite(fa))
        if not finite.all():  # overflow: back to the last point with finite derivatives
            bad = act[~finite]
            P[bad], f[bad], stopped[bad] = last_P[bad], last_f[bad], True
            act, Pa, Wa, fa, g, H = (a[finite] for a in (act, Pa, Wa, fa, g, H))
            if act.size == 0:
                break
        last_P[act], last_f[act] = Pa, fa
        H = H + damping * np.eye(p)
        # eigendecomposition of the Jacobi-scaled Hessian D^-1/2 H D^-1/2, so that the
        # eigenvalue floor does not depend on the units of the parameters (features
        # in very different units would otherwise slow Newton to a crawl)
        d = np.sqrt(np.abs(np.diagonal(H, axis1=1, axis2=2)))
        d = np.where(d > 0, d, 1.0)
        try:
            lam, V = np.linalg.eigh(H / (d[:, :, None] * d[:, None, :]))
        except np.linalg.LinAlgError:  # LAPACK gave up: stop there, not converged
            stopped[act] = True
            break
        floor = 1e-10 * np.maximum(np.max(np.abs(lam), axis=1, keepdims=True), 1e-300)
        coords = np.einsum("kij,ki->kj", V, g / d) / np.maximum(np.abs(lam), floor)
        step = -np.einsum("kij,kj->ki", V, coords) / d
        t = np.ones(act.size)
        accepted = np.zeros(act.size, dtype=bool)
        f_new = fa.copy()
        slack = 1e-13 * (1.0 + np.abs(fa))
        for _ in range(50):
            todo = ~accepted
            trial = Pa[todo] + t[todo, None] * step[todo]
            ft = np.asarray(lossb(trial, Wa[todo]), dtype=float)
            ok = np.isfinite(ft) & (ft <= fa[todo] + slack[todo])
            idx = np.flatnonzero(todo)
            accepted[idx[ok]] = True
            f_new[idx[ok]] = ft[ok]
            t[idx[~ok]] *= 0.5
            if accepted.all():
                break
        P[act] = np.where(accepted[:, None], Pa + t[:, None] * step, Pa)
        f[act] = f_new
        n_iter[act] += 1
        # the step in the Hessian's units: invariant to rescaling a parameter
        scale = 1.0 + np.max(np.abs(P[act] * d), axis=1)
        small = np.max(np.abs(step * d), axis=1) <= tol * scale
        stuck = ~accepted  # no decrease possible in floating point: at the optimum
        converged[act[small | stuck]] = True
        flat[act] = np.where(fa - f_new <= slack, flat[act] + 1, 0)
        stopped[act] = ~converged[act] & (flat[act] >= _FLAT_ITERATIONS)
    if return_hessians:
        return P, n_iter, converged, hessians
    return P, n_iter, converged


def _single(lossb, th, w):
    """One problem of a batched loss: ``lossb(th[None], w[None])[0]`` (picklable)."""
    return lossb(th[None], w[None])[0]


def _minimize_each_hessian_free(lossb, P, W, tol, max_iter, return_hessians):
    """:func:`minimize` above ``AUTO_CG_MIN_PARAMS``: one matrix-free problem at a time."""
    loss = partial(_single, lossb)
    n_iter = np.zeros(P.shape[0], dtype=int)
    converged = np.zeros(P.shape[0], dtype=bool)
    for i in range(P.shape[0]):
        start = np.linalg.norm(_batch_grad(lossb, P[i:i + 1], W[i:i + 1]))
        if not np.isfinite(start):
            continue
        P[i], n_iter[i], converged[i] = minimize_hessian_free(
            loss, P[i], W[i], gtol=tol * start, max_iter=max_iter)
    return (P, n_iter, converged, None) if return_hessians else (P, n_iter, converged)


def _chord_iterations(lossb, P, W, solve, *, tol, scale, max_iter=_CHORD_MAX_ITER):
    """Approach the minima of ``k`` leave-out problems with a fixed Hessian.

    Iterates ``P <- P - H^-1 grad L(P; W)`` with ``solve`` applying the
    full-data ``H^-1`` (already factorized): one gradient per iteration
    instead of a Hessian, converging linearly at the rate
    ``rho = ||I - H^-1 H_(-u)||``, which is small when removing a unit
    changes the objective little. A step that does not decrease the
    objective ends the iterations of its problem.

    Returns
    -------
    P : ndarray of shape (k, p)
    converged : ndarray of shape (k,) of bool
        The last step, in the Hessian's units (times ``scale``, the square
        root of the Hessian's diagonal, as in :func:`minimize`), was at most
        ``tol * (1 + max |P * scale|)`` and at most half the
        one before (an observed rate ``rho <= 1/2``), so the distance left to
        the minimum, about ``rho / (1 - rho)`` times that step, is within the
        tolerance :func:`minimize` uses. Judged valid only for strongly convex
        objectives, whose leave-out minimum is unique.
    """
    P = P.copy()
    f = np.asarray(lossb(P, W), dtype=float)
    converged = np.zeros(P.shape[0], dtype=bool)
    last = np.full(P.shape[0], np.inf)
    act = np.arange(P.shape[0])
    for _ in range(max_iter):
        if act.size == 0:
            break
        step = -solve(_batch_grad(lossb, P[act], W[act]).T).T
        trial = P[act] + step
        ft = np.asarray(lossb(trial, W[act]), dtype=float)
        ok = np.isfinite(ft) & (ft <= f[act] + 1e-13 * (1.0 + np.abs(f[act])))
        P[act[ok]], f[act[ok]] = trial[ok], ft[ok]
        size = np.max(np.abs(step * scale), axis=1)
        small = size <= tol * (1.0 + np.max(np.abs(trial * scale), axis=1))
        converged[act] = ok & small & (size <= 0.5 * last[act])
        last[act] = size
        act = act[ok & ~small]
    return P, converged


def minimize_hessian_free(loss, params, weights, *, gtol, max_iter=100):
    """Minimize ``loss(., weights)`` from ``params`` without ever forming a Hessian.

    Trust-region Newton-CG (:func:`scipy.optimize.minimize` with
    ``method="trust-ncg"``) on autograd Hessian-vector products: memory
    ``O(p)``, each iteration a truncated conjugate-gradient solve that stops at
    negative curvature, so it also handles non-convex objectives (it converges
    to a nearby local minimum), then at most 5 full Newton-CG steps accepted
    on a decrease of the gradient norm (where the objective's decrease is
    below its rounding). The exact refits of large models use it,
    warm-started at the fitted params.

    Parameters
    ----------
    loss : callable
        ``loss(params (p,), weights (n,)) -> float`` in :mod:`autograd.numpy`.
    params : ndarray of shape (p,)
        Starting point (not modified).
    weights : ndarray of shape (n,)
    gtol : float
        Stop once the Euclidean norm of the gradient is at most ``gtol``.
    max_iter : int, default=100
        Maximum number of trust-region iterations.

    Returns
    -------
    params : ndarray of shape (p,)
    n_iter : int
    converged : bool
    """
    gradient = grad(loss)
    value_and_gradient = lambda th: (float(loss(th, weights)), gradient(th, weights))
    hvp = grad(lambda th, v: anp.dot(gradient(th, weights), v))
    result = scipy_minimize(value_and_gradient, np.array(params, dtype=float), jac=True,
                            hessp=hvp, method="trust-ncg",
                            options={"gtol": gtol, "maxiter": max_iter})
    theta, n_iter = result.x, int(result.nit)
    g = gradient(theta, weights)
    # near the minimum the objective's decrease drops below its rounding before the
    # gradient reaches gtol (trust-ncg then stops: "failure to predict improvement");
    # full Newton steps accepted on a decrease of the gradient norm finish the job
    for _ in range(_POLISH_STEPS):
        if not np.linalg.norm(g) > gtol:
            break
        operator = LinearOperator((theta.size,) * 2, matvec=partial(hvp, theta), dtype=float)
        step, _ = cg(operator, -g, rtol=1e-3, atol=0.0, maxiter=10 * theta.size)
        g_new = gradient(theta + step, weights)
        if not np.linalg.norm(g_new) < np.linalg.norm(g):
            break
        theta, g, n_iter = theta + step, g_new, n_iter + 1
    return theta, n_iter, bool(np.linalg.norm(g) <= gtol)


# --------------------------------------------------------------------------
# Hessian solves
# --------------------------------------------------------------------------
class HessianSolver:
    """Solve ``(H + damping I) x = b`` for the Hessian of a loss at one point.

    ``solver="direct"`` factorizes the dense Hessian (Cholesky, or a symmetric
    eigendecomposition when it is not positive definite); ``solver="cg"`` runs
    :func:`scipy.sparse.linalg.cg` on Hessian-vector products through a
    :class:`~scipy.sparse.linalg.LinearOperator`, never forming ``H``;
    ``solver="minres"`` runs :func:`scipy.sparse.linalg.minres` on the same
    operator, which (unlike conjugate gradients) stays defined when
    ``H + damping I`` is indefinite (non-convex objectives).
    """

    def __init__(self, loss, params, weights, *, solver, damping=0.0,
                 cg_rtol=1e-10, cg_maxiter=None, derivatives=None, check_indefinite=True):
        self.params = params
        self.check_indefinite = check_indefinite
        self.damping = float(damping)
        p = params.size
        self.solver = solver
        # the model's closed forms (ModelDerivatives) hold at unit weights only
        unit_weights = np.all(np.asarray(weights) == 1.0)
        closed_form = _provided(derivatives, "hessian_vector_product") if unit_weights else None
        preconditioner = _provided(derivatives, "preconditioner") if unit_weights else None
        self._preconditioner = preconditioner(self.damping) if preconditioner else None
        if closed_form is not None:
            self._hvp = lambda th, v: closed_form(v)
        else:
            gradient = grad(loss)
            self._hvp = grad(lambda th, v: anp.dot(gradient(th, weights), v))
        if solver == "direct":
            if unit_weights and _provided(derivatives, "hessian") is not None:
                H = _full_hessian(None, params, weights.size, derivatives)
            else:
                H = _batch_hessians(_as_batched(loss, False), params[None], weights[None])[0]
            self._factor(H + self.damping * np.eye(p))
        else:
            self.cg_rtol = cg_rtol
            self.cg_maxiter = cg_maxiter if cg_maxiter is not None else 10 * p
            self.operator = LinearOperator(
                (p, p), matvec=self.matvec, rmatvec=self.matvec, dtype=float
            )

    def matvec(self, v):
        v = np.ravel(v)
        return self._hvp(self.params, v) + self.damping * v

    def _factor(self, H):
        # singularity is judged on the Jacobi-scaled Hessian D^-1/2 H D^-1/2, so that
        # the units of the features do not matter; a Cholesky factorization can
        # succeed on an exactly singular H through rounding, hence the rcond check
        if not np.all(np.isfinite(H)):
            raise ValueError(
                "The Hessian of the objective contains NaN or infinite values at the fitted "
                "parameters: the loss is not twice differentiable there, or overflows.")
        scale = np.sqrt(np.abs(np.diag(H)))
        scale = np.where(scale > 0, scale, 1.0)
        scaled = H / np.outer(scale, scale)
        try:
            self._cho = scipy.linalg.cho_factor(H)
            rcond, _ = scipy.linalg.lapack.dpocon(np.triu(self._cho[0]) / scale,
                                                  np.abs(scaled).sum(axis=0).max())
            if rcond > _SINGULAR_RCOND:
                return
        except np.linalg.LinAlgError:
            pass
        self._cho = None
        lam, V = np.linalg.eigh(H)
        lam_scaled = np.linalg.eigvalsh(scaled) if np.all(np.isfinite(scaled)) else lam
        largest = np.max(np.abs(lam_scaled))
        if (not np.all(np.isfinite(lam)) or np.min(np.abs(lam_scaled))
                <= _SINGULAR_RCOND * max(largest, 1e-300)):
            raise ValueError(
                "The Hessian of the objective is singular at the fitted parameters "
                "(collinear features, or a flat direction of the objective). "
                "Set a ridge penalty (alpha) on the estimator or damping > 0."
            )
        self._eig = (lam, V)
        if self.check_indefinite:
            _warn_indefinite(lam_scaled, stacklevel=3)

    def solve(self, B):
        """Return ``(H + damping I)^{-1} B`` for ``B`` of shape (p,) or (p, r)."""
        B = np.asarray(B, dtype=float)
        if self.solver == "direct":
            if self._cho is not None:
                return scipy.linalg.cho_solve(self._cho, B)
            lam, V = self._eig
            return V @ ((V.T @ B) / (lam if B.ndim == 1 else lam[:, None]))
        cols = B.reshape(B.shape[0], -1)
        out = np.empty_like(cols)
        krylov = partial(cg, atol=0.0) if self.solver == "cg" else minres
        name = "Conjugate gradients" if self.solver == "cg" else "MINRES"
        for j in range(cols.shape[1]):
            x, info = krylov(self.operator, cols[:, j], rtol=self.cg_rtol,
                             maxiter=self.cg_maxiter, M=self._preconditioner)
            if info != 0:
                residual = np.linalg.norm(self.matvec(x) - cols[:, j])
                warnings.warn(
                    f"{name} did not converge in {self.cg_maxiter} iterations "
                    f"(residual norm {residual:.3g}, right-hand side norm "
                    f"{np.linalg.norm(cols[:, j]):.3g}). Increase damping if the Hessian "
                    "is ill-conditioned or indefinite.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            out[:, j] = x
        return out.reshape(B.shape)


def _solve_each(H, g, scale):
    """Solve ``H[k] x[k] = g[k]`` for a batch, flagging singular ``H[k]``.

    Eigendecomposition of ``D^-1/2 H[k] D^-1/2`` with ``D`` the diagonal
    ``scale ** 2`` of the full-data Hessian (so the units of the parameters do
    not matter, and a parameter that loses all its curvature when a unit is
    removed shows up as a near-zero eigenvalue); directions whose eigenvalue is
    below ``_SINGULAR_RCOND`` times the largest are left out (a
    pseudo-inverse), and those problems are flagged. Non-finite problems give
    NaN and are flagged.

    Returns
    -------
    x : ndarray of shape (k, p)
    singular : ndarray of shape (k,) of bool
    """
    finite = np.all(np.isfinite(H), axis=(1, 2)) & np.all(np.isfinite(g), axis=1)
    H = np.where(finite[:, None, None], H, np.eye(H.shape[1]))
    d = np.broadcast_to(scale, g.shape)
    lam, V = np.linalg.eigh(H / (d[:, :, None] * d[:, None, :]))
    largest = np.max(np.abs(lam), axis=1, keepdims=True)
    null = np.abs(lam) <= _SINGULAR_RCOND * np.maximum(largest, 1e-300)
    coords = np.einsum("kij,ki->kj", V, np.where(finite[:, None], g, 0.0) / d)
    coords = np.where(null, 0.0, coords / np.where(null, 1.0, lam))
    x = np.einsum("kij,kj->ki", V, coords) / d
    x[~finite] = np.nan
    return x, null.any(axis=1) | ~finite


def _singular_each(H, scale):
    """Whether each of a batch of Hessians is singular (scaled as in ``_solve_each``)."""
    return _solve_each(H, np.zeros(H.shape[:2]), scale)[1]


def _jacobi_scaled(H):
    """``D^-1/2 H D^-1/2`` with ``D = |diag H|`` (1 where zero): unit-free curvature."""
    d = _hessian_scale(H)
    return H / np.outer(d, d)


def _warn_indefinite(eigenvalues, stacklevel):
    """Warn when a (Jacobi-scaled) Hessian has a negative eigenvalue beyond rounding."""
    smallest, largest = np.min(eigenvalues), np.max(np.abs(eigenvalues))
    if smallest < -_SINGULAR_RCOND * max(largest, 1e-300):
        warnings.warn(
            f"The Hessian is not positive definite (smallest eigenvalue of the scaled "
            f"Hessian {smallest:.3g}, largest magnitude {largest:.3g}): the parameters are "
            "not at a minimum of the objective; influence estimates may be unreliable. "
            "Consider damping > 0.", UserWarning, stacklevel=stacklevel + 1)


def _hessian_scale(H):
    """``sqrt(|diag H|)`` of the full-data Hessian, 1 where it is zero."""
    d = np.sqrt(np.abs(np.diag(H)))
    return np.where(d > 0, d, 1.0)


def _positions(flags, limit=10):
    """First few positions where ``flags`` is true, for a message."""
    idx = np.flatnonzero(flags)
    shown = ", ".join(map(str, idx[:limit]))
    return f"[{shown}{', ...' if idx.size > limit else ''}]"


def auto_solver(n_params, n_rhs):
    """``"cg"`` when the solves need fewer Hessian-vector products than forming ``H``."""
    if n_params >= AUTO_CG_MIN_PARAMS or n_rhs * _CG_PRODUCTS_PER_SOLVE < n_params:
        return "cg"
    return "direct"


# --------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------
def _jacobian(fun, x):
    """Dense Jacobian of ``fun`` at ``x`` as (m, p), by the cheaper mode."""
    m = np.size(fun(x))
    if m <= x.size:
        return np.reshape(jacobian(fun)(x), (m, x.size))
    with warnings.catch_warnings():  # autograd warns spuriously on the transpose trick
        warnings.filterwarnings("ignore", "Output seems independent of input")
        jvp = make_jvp_reversemode(fun)(x)
        return np.stack([np.ravel(jvp(e)) for e in np.eye(x.size)], axis=1)


# --------------------------------------------------------------------------
# the influence computation
# --------------------------------------------------------------------------
def influence(loss, params, n_samples, units, *, target=None, target_uses_weights=False,
              method="vif", solver="auto", damping=0.0, n_jobs=None, batched=False,
              loss_if=None, tol=1e-10, max_iter=100, verbose=0, derivatives=None,
              saddle_free=False, strongly_convex=False, check_indefinite=True):
    """Influence of removing each unit; the engine behind every ``influence_``.

    Inputs are assumed valid (see :func:`vif` for the checked public entry).

    Parameters
    ----------
    target : callable or None
        ``target(params)``, or ``target(params, weights)`` when
        ``target_uses_weights``, returning a 1-D array of ``m`` quantities.
    loss_if : callable or None
        The loss whose weight derivative ``method="if"`` linearizes (defaults
        to ``loss``); it must equal ``loss`` at unit weights.
    derivatives : object or None
        The model's closed forms (see :class:`ModelDerivatives`); the engine
        uses autograd for what it does not provide.
    saddle_free : bool
        For non-convex objectives, whose leave-out Hessian ``H_{-u} = V Lambda V^T``
        can be indefinite at ``params``: ``"newton"`` (generic dense path) then
        takes the saddle-free step ``-V (|Lambda| + damping)^{-1} V^T g``, a
        descent direction of length at most ``|g| / damping``, instead of
        ``-(H_{-u} + damping I)^{-1} g``.
    strongly_convex : bool
        The model's promise that every leave-out objective is strongly convex
        (e.g. a convex loss plus a ridge penalty): ``"loo"`` then accepts
        refits converged by fixed-Hessian iterations (see
        ``_chord_iterations``) without a Newton step, and skips the check for
        a non-unique minimum.
    check_indefinite : bool
        Warn when the full-data Hessian is not positive definite (dense
        paths); :func:`vif` checks this itself, on every path.
    """
    theta = params
    n = n_samples
    n_jobs = check_n_jobs(n_jobs)
    grad_change = _provided(derivatives, "gradient_changes")
    hess_change = _provided(derivatives, "hessian_changes")
    dgrad_dw = _provided(derivatives, "weight_derivatives")
    ones = np.ones(n)
    lossb = _as_batched(loss, batched)

    if target is None:
        quantity = _parameters
    elif target_uses_weights:
        quantity = target
    else:
        quantity = partial(_unweighted, target)
    # the chunk functions are module-level functions and partials, so that any joblib
    # backend (also "multiprocessing", which pickles them) can run them
    common = dict(lossb=lossb, theta=theta, n=n)

    if method == "loo":
        chord = scale = None
        if not saddle_free and (theta.size < AUTO_CG_MIN_PARAMS
                                or _provided(derivatives, "hessian") is not None):
            H = _full_hessian(lossb, theta, n, derivatives)
            scale = _hessian_scale(H)
            # warm starts by fixed-Hessian steps, unless the model's closed-form Newton
            # steps are at hand (each then costs little more than a gradient)
            if (theta.size < AUTO_CG_MIN_PARAMS
                    and _provided(derivatives, "gradient_and_hessian") is None):
                try:
                    chord = partial(scipy.linalg.cho_solve, scipy.linalg.cho_factor(H))
                except (np.linalg.LinAlgError, ValueError):  # not PD (or not finite)
                    pass
        refit = partial(_refit_chunk, **common, quantity=quantity, chord=chord, scale=scale,
                        tol=tol, max_iter=max_iter, derivatives=derivatives,
                        check_unique=not (saddle_free or strongly_convex),
                        strongly_convex=strongly_convex)
        base = np.ravel(quantity(theta, ones))
        out = _map_chunks(refit, units, n, batched, n_jobs, verbose, "refits")
        not_converged, singular = out[:, -2] > 0, out[:, -1] > 0
        not_converged &= np.all(np.isfinite(out[:, :-2]), axis=1)  # NaN: named below
        if not_converged.any():
            warnings.warn(f"{not_converged.sum()} leave-one-out refits did not converge "
                          f"within {max_iter} Newton iterations, or stopped where their "
                          "objective no longer decreased (a monotone or flat objective "
                          f"without the unit; units at positions "
                          f"{_positions(not_converged)}).", ConvergenceWarning, stacklevel=3)
        if singular.any():
            warnings.warn(
                f"Without the unit(s) at positions {_positions(singular)} the objective has "
                "no unique minimum (its Hessian at the refit is singular: a flat direction, "
                "e.g. a column that is constant once they are removed, or a monotone "
                "likelihood): their refits along that direction are arbitrary. Set a ridge "
                "penalty (alpha) to make them unique.", UserWarning, stacklevel=3)
        return _finite_or_warn(out[:, :-2] - base, "loo")

    # linearized methods: delta_theta per unit, then mapped through the target
    J = None if target is None else _jacobian(lambda th: anp.ravel(quantity(th, ones)), theta)

    # chunk size of the local fast paths: at most about _CHUNK_ELEMENTS numbers
    # in a chunk's (k, p, p) Hessian changes
    local_size = max(1, _CHUNK_ELEMENTS // (theta.size * theta.size))
    # "newton" needs a Hessian per unit: dense below AUTO_CG_MIN_PARAMS
    newton_cg = solver == "cg" or (solver == "auto" and theta.size >= AUTO_CG_MIN_PARAMS)

    if method == "newton":
        local = grad_change is not None and hess_change is not None and not newton_cg
        H_full = None
        if local or not (newton_cg or saddle_free):
            H_full = _full_hessian(lossb, theta, n, derivatives) + damping * np.eye(theta.size)
            if check_indefinite:
                _warn_indefinite(np.linalg.eigvalsh(_jacobi_scaled(H_full)), stacklevel=2)
        if local:
            step = partial(_local_newton_chunk, g_full=grad(loss)(theta, ones), H_full=H_full,
                           grad_change=grad_change, hess_change=hess_change,
                           scale=_hessian_scale(H_full))
        else:
            step = partial(_newton_chunk, **common, loss=loss, damping=damping,
                           newton_cg=newton_cg, saddle_free=saddle_free,
                           scale=None if H_full is None else _hessian_scale(H_full))
        delta = _map_chunks(step, units, n, batched, n_jobs, verbose, "newton steps",
                            size=local_size if local else None)
        delta = _warn_singular_newton(delta)
        out = delta if J is None else delta @ J.T
    else:
        n_rhs = len(units) if J is None else min(len(units), J.shape[0])
        hess = HessianSolver(loss, theta, ones, damping=damping, derivatives=derivatives,
                             solver=auto_solver(theta.size, n_rhs) if solver == "auto" else solver,
                             check_indefinite=check_indefinite)
        if method == "vif" and grad_change is not None:
            R = _map_chunks(grad_change, units, n, batched, n_jobs, verbose, "gradients",
                            size=local_size)
        elif method == "vif":
            R = _map_chunks(partial(_gradient_change_chunk, **common,
                                    g_full=grad(loss)(theta, ones)),
                            units, n, batched, n_jobs, verbose, "gradients")
        else:  # "if": derivative of the gradient in each weight (weight change -1)
            D = dgrad_dw() if dgrad_dw is not None else jacobian(
                lambda w: grad(loss_if or loss)(theta, w))(ones)  # (p, n)
            R = _unit_sums(D, units)
        # a unit whose removal leaves a non-finite loss or gradient gets NaN, not a
        # failed solve for all units (_finite_or_warn names it)
        bad = ~np.all(np.isfinite(R), axis=1)
        R = np.where(bad[:, None], 0.0, R)
        if J is None:
            out = hess.solve(R.T).T
        elif hess.solver == "cg" and J.shape[0] < R.shape[0]:
            out = R @ hess.solve(J.T)  # H symmetric: J H^-1 R^T = (H^-1 J^T)^T R^T
        else:
            out = hess.solve(R.T).T @ J.T
        out[bad] = np.nan

    if target is not None and target_uses_weights:
        closed_form = _provided(derivatives, "target_changes") if method != "if" else None
        out = out + (closed_form(units) if closed_form is not None else
                     _direct_part(quantity, theta, n, units, method, batched, n_jobs, verbose))
    return _finite_or_warn(out, method)


def _parameters(th, w):
    return th


def _unweighted(target, th, w):
    return target(th)


def _gradient_change_chunk(chunk, *, lossb, theta, n, g_full):
    """``grad L(theta; 1) - grad L(theta; w^(-u))`` for the units of a chunk."""
    W = _leave_out_weights(chunk, n)
    return g_full - _batch_grad(lossb, np.tile(theta, (len(chunk), 1)), W)


def _local_newton_chunk(chunk, *, g_full, H_full, grad_change, hess_change, scale):
    """Newton steps from the model's closed-form gradient and Hessian changes."""
    step, singular = _solve_each(H_full - hess_change(chunk), g_full - grad_change(chunk),
                                 scale)
    return np.column_stack([-step, singular])


def _newton_chunk(chunk, *, loss, lossb, theta, n, damping, newton_cg, saddle_free, scale):
    """Newton steps on the leave-out objectives, generic autograd path."""
    W = _leave_out_weights(chunk, n)
    P = np.tile(theta, (len(chunk), 1))
    g = _batch_grad(lossb, P, W)
    if newton_cg:
        return np.column_stack([-np.stack([
            HessianSolver(loss, theta, W[i], solver="cg", damping=damping).solve(g[i])
            for i in range(len(chunk))]), np.zeros(len(chunk))])
    if saddle_free:
        lam, V = np.linalg.eigh(_batch_hessians(lossb, P, W))
        floor = 1e-10 * np.maximum(np.max(np.abs(lam), axis=1, keepdims=True), 1e-300)
        coords = np.einsum("kij,ki->kj", V, g) / np.maximum(np.abs(lam) + damping, floor)
        return np.column_stack([-np.einsum("kij,kj->ki", V, coords), np.zeros(len(chunk))])
    H = _batch_hessians(lossb, P, W) + damping * np.eye(theta.size)
    step, singular = _solve_each(H, g, scale)
    return np.column_stack([-step, singular])


def _refit_chunk(chunk, *, lossb, theta, n, quantity, chord, scale, tol, max_iter,
                 derivatives, check_unique, strongly_convex):
    """Exact refits of the units of a chunk: quantity values, not-converged, singular.

    A unit whose leave-out loss or gradient is not finite at ``theta`` is not
    refit: its values are NaN (named by ``_finite_or_warn``).
    """
    W = _leave_out_weights(chunk, n)
    P = np.tile(theta, (len(chunk), 1))
    with np.errstate(all="ignore"):
        finite = (np.isfinite(np.asarray(lossb(P, W), dtype=float))
                  & np.all(np.isfinite(_batch_grad(lossb, P, W)), axis=1))
    conv = ~finite
    singular = np.zeros(len(chunk), dtype=bool)
    if chord is not None and finite.any():
        ok = np.flatnonzero(finite)
        P[ok], done = _chord_iterations(lossb, P[ok], W[ok], chord, tol=tol, scale=scale)
        if strongly_convex:  # otherwise judged by Newton's method, below
            conv[ok] = done
    todo = np.flatnonzero(~conv)
    if todo.size:
        P[todo], _, conv[todo], H = minimize(
            lossb, P[todo], W[todo], tol=tol, max_iter=max_iter, damping=0.0,
            return_hessians=True, derivatives=derivatives)
        # a flat direction of the objective without the unit: the refit is not unique
        # (not checked for strongly convex objectives, whose minimum is unique, nor for
        # non-convex ones, whose removed parts may be flat by design)
        if check_unique and H is not None:  # (no Hessians above AUTO_CG_MIN_PARAMS)
            singular[todo] = _singular_each(H, scale)
    values = np.stack([np.ravel(quantity(P[i], W[i])) for i in range(len(chunk))])
    values[~finite] = np.nan
    return np.column_stack([values, ~conv, singular])


def _warn_singular_newton(delta):
    """Split the singular flag column off the Newton steps, warning about flagged units."""
    singular = delta[:, -1] > 0
    if singular.any():
        warnings.warn(
            f"Without the unit(s) at positions {_positions(singular)} the Hessian of the "
            "objective is singular (e.g. a column that is constant once they are removed): "
            "method='newton' leaves that direction out for them. Pass damping > 0 or use "
            "method='vif'.", UserWarning, stacklevel=4)
    return delta[:, :-1]


def _finite_or_warn(out, method):
    """Never return NaN silently: name the units whose influence is not finite."""
    bad = ~np.all(np.isfinite(np.reshape(out, (out.shape[0], -1))), axis=1)
    if bad.any():
        warnings.warn(
            f"method={method!r}: the influence of {bad.sum()} unit(s) (positions "
            f"{_positions(bad)}) is not finite: the loss, its gradient or its Hessian is not "
            "finite without them.", RuntimeWarning, stacklevel=4)
    return out


def _direct_part(quantity, theta, n, units, method, batched, n_jobs, verbose):
    """Change of a weight-dependent quantity at fixed params, in chunks of units."""
    ones = np.ones(n)
    if method == "if":
        dq_dw = _jacobian(lambda w: anp.ravel(quantity(theta, w)), ones)  # (m, n)
        return -_unit_sums(dq_dw, units)
    base = np.ravel(quantity(theta, ones))
    change = partial(_quantity_change_chunk, quantity=quantity, theta=theta, n=n, base=base)
    return _map_chunks(change, units, n, batched, n_jobs, verbose, "target at fixed params")


def _unit_sums(D, units):
    """``D[:, unit].sum(axis=1)`` for each unit, shape (n_units, m) (single rows: a slice)."""
    if isinstance(units, np.ndarray):  # (n_units, 1): one row each
        return D[:, units[:, 0]].T
    return np.stack([D[:, idx].sum(axis=1) for idx in units])


def _quantity_change_chunk(chunk, *, quantity, theta, n, base):
    W = _leave_out_weights(chunk, n)
    return np.stack([np.ravel(quantity(theta, W[i])) for i in range(len(chunk))]) - base


# --------------------------------------------------------------------------
# public entry
# --------------------------------------------------------------------------
def check_units(units, n_samples, name="units"):
    """Validate ``units``: None (each sample) or a list of index arrays.

    Returns a list of index arrays, or for ``None`` an ``(n_samples, 1)``
    array (one row per unit: sliced and iterated as the list would be).
    """
    if units is None:
        return np.arange(n_samples)[:, None]
    if isinstance(units, np.ndarray) and units.ndim == 2:
        units = list(units)
    if not isinstance(units, (list, tuple)) or len(units) == 0:
        raise TypeError(f"{name} must be None or a non-empty list of integer index arrays.")
    out = []
    for k, idx in enumerate(units):
        arr = np.atleast_1d(np.asarray(idx))
        if arr.size == 0:
            raise ValueError(f"{name}[{k}] is empty.")
        if arr.dtype == bool:
            if arr.size != n_samples:
                raise ValueError(f"Boolean {name}[{k}] must have length n_samples={n_samples}.")
            arr = np.flatnonzero(arr)
        elif not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name}[{k}] must hold integer indices, got dtype {arr.dtype}.")
        if arr.min() < 0 or arr.max() >= n_samples:
            raise ValueError(f"{name}[{k}] has indices outside [0, {n_samples}).")
        out.append(arr.astype(np.intp))
    return out


def check_choice(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}.")
    return value


def check_nonnegative(value, name):
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not np.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_n_jobs(n_jobs):
    if n_jobs is None:
        return None
    if not isinstance(n_jobs, numbers.Integral) or isinstance(n_jobs, bool):
        raise TypeError(f"n_jobs must be None or an integer, got {n_jobs!r}.")
    if n_jobs == 0:
        raise ValueError("n_jobs must not be 0: use None or 1 (serial), k > 1 workers, "
                         "or -1 (all cores).")
    return int(n_jobs)


def vif(loss, params, n_samples, *, target=None, method="vif", units=None, solver="auto",
        damping=0.0, n_jobs=None, batched=False, verbose=0, refine=None, return_exact=False):
    r"""Influence of removing training units on the parameters (or a target) of any loss.

    Parameters
    ----------
    loss : callable
        ``loss(params, weights) -> float`` written with :mod:`autograd.numpy`.
        ``weights`` has one entry per training sample and ``weights[i] = 0``
        must give exactly the loss of the data without sample ``i``.
    params : array-like of shape (n_params,)
        The fitted parameters, at (or near) a minimum of ``loss(., ones)``.
        Not modified.
    n_samples : int
        Number of training samples (length of ``weights``).
    target : callable, default=None
        ``target(params) -> 1-D array`` of ``m`` quantities. ``None`` reports
        the change of the parameters themselves.
    method : {"vif", "if", "newton", "loo"}, default="vif"
        ``"vif"``: the versatile influence function (finite difference of the
        gradient with the unit's weight set to zero); ``"if"``: the classical
        infinitesimal influence; ``"newton"``: one Newton step on the objective
        without the unit, with its own Hessian; ``"loo"``: exact refits,
        warm-started at ``params``.
    units : None or list of array-like of int, default=None
        ``None`` removes each sample alone; otherwise each entry lists the
        samples removed together.
    solver : {"auto", "direct", "cg"}, default="auto"
        ``"direct"`` factorizes the dense Hessian; ``"cg"`` runs conjugate
        gradients on Hessian-vector products and never forms it; ``"auto"``
        uses ``"cg"`` from 2000 parameters on, or when the solves (one per
        unit or per target value, whichever is fewer) would take fewer than
        about ``n_params`` Hessian-vector products at about 20 per solve
        (``benchmarks/bench_cox.py solvers`` shows the crossover).
    damping : float, default=0.0
        Added to the Hessian's diagonal; needed when the objective is singular
        or not convex at ``params``.
    n_jobs : int, default=None
        Number of joblib workers over chunks of units (any joblib backend,
        e.g. Dask or Ray through :func:`joblib.parallel_config`).
    batched : bool, default=False
        Set when ``loss`` also accepts params of shape ``(k, n_params)`` with
        weights ``(k, n_samples)`` and returns ``(k,)`` losses: leave-out
        gradients, Hessians and refits of ``k`` units are then computed in one
        vectorized pass.
    verbose : int, default=0
        Print progress over chunks of units to stderr.
    refine : int, default=None
        After the estimate for every unit, recompute the ``refine`` units
        with the largest estimated change by exact refit (``method="loo"``
        for those units only). The size of a change is the root mean square
        over its columns, of parameter changes divided by
        ``sqrt(|diag H^-1|)`` (their standard errors when the loss is a
        negative log-likelihood) and of raw target changes
        (``|change|`` for a scalar target).
    return_exact : bool, default=False
        Also return a boolean array marking the rows that are exact refits.

    Returns
    -------
    influence : ndarray of shape (n_units, n_params) or (n_units, m)
        ``influence[u, j]`` estimates ``quantity_j(fit without unit u) -
        quantity_j(fit on all data)``.
    is_exact : ndarray of shape (n_units,) of bool
        Only with ``return_exact``: ``True`` for the units refined by exact
        refit (all of them with ``method="loo"``).

    Raises
    ------
    TypeError
        When autograd cannot differentiate the loss or the target (written
        with ``math``, ``float()``, plain ``numpy`` on boxed values...).

    Warns
    -----
    UserWarning
        On every method and solver, when ``params`` is not at a minimum of
        ``loss(., ones)``: the Hessian is not positive definite, or one Newton
        step would lower the loss by more than ``1e-8 (1 + |loss|)`` (the
        influence formulas, and ``"loo"``'s differences, assume fitted
        params). From 2000 parameters on only the second check is made (by
        conjugate gradients).

    Notes
    -----
    With :math:`H` the Hessian of :math:`L(\cdot, \mathbf 1)` at
    :math:`\hat\theta` and :math:`w^{(-u)}` the unit weights with the unit's
    entries set to zero,

    .. math::

        \Delta\theta_u^{\mathrm{vif}} = H^{-1}\big(\nabla L(\hat\theta; \mathbf 1)
            - \nabla L(\hat\theta; w^{(-u)})\big), \qquad
        \Delta\theta_u^{\mathrm{if}} = H^{-1} \sum_{i \in u}
            \frac{\partial \nabla L(\hat\theta; w)}{\partial w_i}\Big|_{w=\mathbf 1},

    .. math::

        \Delta\theta_u^{\mathrm{newton}} = -H_{-u}^{-1}\nabla L(\hat\theta; w^{(-u)}),

    with :math:`H_{-u}` the Hessian of the objective without the unit. A target
    :math:`f` maps as :math:`\Delta f_u \approx \nabla f(\hat\theta)^\top
    \Delta\theta_u`; ``"loo"`` reports :math:`f(\theta_{-u}) - f(\hat\theta)`.

    Examples
    --------
    Mean of a sample as the minimizer of a squared loss: removing sample
    ``i`` moves the mean by ``(mean - x_i) / (n - 1)``.

    >>> import numpy as np
    >>> import autograd.numpy as anp
    >>> from skvif import vif
    >>> x = np.array([1.0, 2.0, 3.0, 10.0])
    >>> loss = lambda m, w: 0.5 * anp.sum(w * (x - m[0]) ** 2)
    >>> vif(loss, [x.mean()], 4, method="loo").ravel().round(4)
    array([ 1.    ,  0.6667,  0.3333, -2.    ])
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable, got {type(loss).__name__}.")
    try:
        theta = np.array(params, dtype=float)  # a copy: the user's array is never touched
    except (TypeError, ValueError) as exc:
        raise TypeError(f"params must be a 1-D array of numbers: {exc}") from None
    if theta.ndim != 1 or theta.size == 0:
        raise ValueError(f"params must be a non-empty 1-D array, got shape {theta.shape}.")
    if not np.all(np.isfinite(theta)):
        raise ValueError("params contains NaN or infinite values.")
    if (not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool)
            or n_samples < 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    check_choice(method, "method", METHODS)
    check_choice(solver, "solver", SOLVERS)
    damping = check_nonnegative(damping, "damping")
    units = check_units(units, int(n_samples))
    if target is not None and not callable(target):
        raise TypeError(f"target must be None or callable, got {type(target).__name__}.")
    ones = np.ones(n_samples)
    try:
        value = value_at_params = loss(theta, ones)
    except Exception as exc:  # the user's code: say where it failed
        raise ValueError(f"loss(params, ones(n_samples)) raised {exc!r}; check that loss "
                         "takes params of shape (n_params,) and weights of shape "
                         "(n_samples,)") from exc
    if np.ndim(value) != 0 or not np.isfinite(value):
        raise ValueError(f"loss(params, weights) must return a finite scalar, got {value!r}.")
    if not isinstance(value, (float, np.floating, np.ndarray)):
        raise TypeError(f"loss returned {type(value).__name__} {value!r}, which autograd "
                        f"cannot differentiate: {_AUTOGRAD_HINT}")
    if batched:
        try:
            value = np.asarray(loss(theta[None], ones[None]))
        except Exception as exc:
            raise ValueError(f"batched=True but loss(params[None], weights[None]) raised "
                             f"{exc!r}") from exc
        if value.shape != (1,):
            raise ValueError("batched=True needs loss(params (k, p), weights (k, n)) to "
                             f"return shape (k,); got shape {value.shape} for k = 1.")
    gradient = _traced(grad(loss), "loss", theta, ones)
    if not np.all(np.isfinite(gradient)):
        raise ValueError("The gradient of loss at params contains NaN or infinite values: "
                         "the loss is not differentiable there.")
    if target is not None:
        value = target(theta)
        if not isinstance(value, np.ndarray):
            raise TypeError(f"target(params) returned {type(value).__name__}, not an array: "
                            "build it with autograd.numpy (e.g. anp.stack([...])).")
        if value.ndim != 1 or not np.all(np.isfinite(value)):
            raise ValueError("target(params) must return a finite 1-D array.")
        _traced(grad(lambda th: anp.sum(target(th))), "target", theta)
    _check_minimum(_as_batched(loss, batched), theta, int(n_samples), gradient,
                   float(value_at_params), damping)
    from ._robustness import check_refine, parameter_scale, refine_rows

    refine = check_refine(refine, len(units))
    options = dict(target=target, solver=solver, damping=damping, n_jobs=n_jobs,
                   batched=bool(batched), verbose=verbose, check_indefinite=False)
    result = influence(loss, theta, int(n_samples), units, method=method, **options)
    is_exact = np.full(len(units), method == "loo")
    if refine and method != "loo":
        scale = None if target is not None else parameter_scale(
            loss, theta, int(n_samples), damping, batched=bool(batched))
        result, is_exact = refine_rows(result, refine, lambda top: influence(
            loss, theta, int(n_samples), [units[i] for i in top], method="loo", **options),
            scale)
    return (result, is_exact) if return_exact else result


_AUTOGRAD_HINT = ("write it with autograd.numpy (import autograd.numpy as anp; anp.exp, "
                  "anp.log, ...) instead of numpy, math or scipy functions, float() or "
                  "int(), and return the value autograd computes.")


def _traced(function, where, *args):
    """Call an autograd derivative of the user's ``where`` ("loss" or "target")."""
    try:
        return function(*args)
    except (TypeError, ValueError, AttributeError) as exc:
        raise TypeError(f"autograd cannot differentiate the {where} ({type(exc).__name__}: "
                        f"{exc}); {_AUTOGRAD_HINT}") from exc


# vif() warns when a Newton step from params would lower the loss by more than this
# times (1 + |loss|): params are then not at a minimum
_DECREMENT_RTOL = 1e-8


def _check_minimum(lossb, theta, n_samples, gradient, value, damping):
    """Warn when ``theta`` is not at a minimum of the full-data loss.

    The influence formulas hold at a minimum. Below ``AUTO_CG_MIN_PARAMS``
    parameters the dense Hessian is checked for positive definiteness (on
    every path, whatever the solver or method) and the Newton decrement
    ``g^T |H|^-1 g / 2`` (``|H|`` with absolute eigenvalues, Jacobi-scaled) is
    compared with ``_DECREMENT_RTOL * (1 + |loss|)``; above, the decrement
    comes from a conjugate-gradient solve.
    """
    p = theta.size
    if p < AUTO_CG_MIN_PARAMS:
        H = _batch_hessians(lossb, theta[None], np.ones((1, n_samples)))[0]
        H = H + damping * np.eye(p)
        if not np.all(np.isfinite(H)):
            return  # the solvers name this
        d = _hessian_scale(H)
        lam, V = np.linalg.eigh(_jacobi_scaled(H))
        _warn_indefinite(lam, stacklevel=3)
        floor = _SINGULAR_RCOND * max(np.max(np.abs(lam)), 1e-300)
        step = V @ ((V.T @ (gradient / d)) / np.maximum(np.abs(lam), floor)) / d
    else:
        step = HessianSolver(lambda th, w: lossb(th[None], w[None])[0], theta,
                             np.ones(n_samples), solver="cg", damping=damping).solve(gradient)
    decrement = 0.5 * float(gradient @ step)
    if abs(decrement) > _DECREMENT_RTOL * (1.0 + abs(value)):
        warnings.warn(
            f"params are not at a minimum of loss(., ones): a Newton step of size "
            f"{np.max(np.abs(step)):.3g} would lower the loss by about {abs(decrement):.3g} "
            f"(loss {value:.6g}). The influence formulas assume fitted params (and "
            "method='loo' then reports the distance to the minimum as influence): refit "
            "to a tighter tolerance first.", UserWarning, stacklevel=3)
