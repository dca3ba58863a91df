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
import queue
import threading
import warnings
from functools import partial

import autograd.numpy as anp
import numpy as np
import scipy.linalg
from autograd import grad, jacobian
from autograd.differential_operators import make_jvp_reversemode
from joblib import Parallel, delayed
from scipy.optimize import minimize as scipy_minimize
from scipy.sparse.linalg import LinearOperator, cg, eigsh, minres
from sklearn.exceptions import ConvergenceWarning

from ._blas import blas_threads, single_blas_thread, single_threaded_blas
from ._progress import progress_bar

__all__ = ["vif", "get_influence", "InfluenceResults", "ModelDerivatives", "METHODS", "SOLVERS"]

METHODS = ("vif", "if", "newton", "loo")
SOLVERS = ("auto", "direct", "cg", "minres", "lanczos")
# keys of ``solver_options`` (vif, get_influence)
SOLVER_OPTIONS = ("rtol", "maxiter", "preconditioner", "rank")

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
_POLISH_CG_MAXITER = 500  # conjugate-gradient iterations of one polishing step
# Leave-out problems evaluated together hold about this many weights at once.
_CHUNK_ELEMENTS = 2**21
_LOCAL_MIN_ROWS = 2**12  # units per chunk of the local fast paths, at least (see _local_size)
# A Hessian whose (Jacobi-scaled) reciprocal condition number is below this
# is treated as singular.
_SINGULAR_RCOND = 1e-12
_NEUMANN_MAX_STEPS = 8   # fixed-point steps of a unit's local Newton solve, at most
_NEUMANN_RTOL = 1e-12    # ... until the error bound is below this, relative
_SPREAD = 2.0            # Jacobi scales within sqrt(this): ||D~||_F bounded unweighted
_NEWTON_BLOCK_ELEMENTS = 2**21  # units' Hessian changes iterated together (16 MiB: in L3;
                                # per block about 500 numpy calls, which hold the GIL)
_MAX_THREADS = 4  # for the closed forms' chunks, at most: their Python parts hold the GIL
                  # (a quarter of newton's time at 1e5 x 100), and each thread its chunks
_THREAD_MIN_UNITS = 2**10  # units per chunk, at least, where chunks are cut for threads


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
        loss once per unit. It may instead return ``(D, x, y)``, arrays of
        shape (k, p, p), (k, p) and (k, p), for the changes ``D + x y^T + y
        x^T``: the engine then never forms them (a pass over ``k p^2``
        numbers fewer) except for units it solves directly.
    ``unit_order(units) -> (n_units,)``
        A permutation of the units in which ``gradient_changes`` and
        ``hessian_changes`` are best asked for (units that share the model's
        work in the same chunks); the results keep the units' order.
    ``thread_safe`` (attribute)
        True when ``gradient_changes`` and ``hessian_changes`` may be called
        from several threads at once: without ``n_jobs`` workers,
        ``method="vif"`` and ``"newton"`` then run their chunks (with the
        solves) on as many threads as BLAS would use, up to 4
        (:func:`threadpoolctl.threadpool_limits` caps both), each with one
        BLAS thread and a contiguous run of chunks in ``unit_order``.
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
    ``loss(P, W) -> (k,)``
        The loss of ``k`` problems (params ``P (k, p)``, weights ``W (k,
        n)``): the step-halving line search of :func:`minimize`.
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


def _map_chunks(func, units, n_samples, batched, n_jobs, verbose, label, size=None,
                write=None, threads=1):
    """Apply ``func(chunk_units)`` to chunks of units and stack the results.

    ``verbose`` drives a progress bar over the units (see :mod:`skvif._progress`).
    ``write(start, result)``, when given, receives each chunk's result (the
    units from position ``start`` on) as it comes instead, and nothing is kept.
    ``threads`` > 1 (and no ``n_jobs`` workers): ``func`` on that many
    threads (:func:`_threaded`), chunks of ``size`` cut so that each thread
    has one (of at least ``_THREAD_MIN_UNITS`` units).
    """
    parallel = n_jobs is not None and n_jobs != 1
    if threads > 1 and not parallel and size is not None:   # (a chunk for each thread)
        size = min(size, max(_THREAD_MIN_UNITS, -(-len(units) // threads)))
    chunks = _chunks(units, n_samples, batched, size)
    parallel = parallel and len(chunks) > 1
    if threads > 1 and len(chunks) > 1 and not parallel:
        done = _threaded(func, chunks, threads)
    elif parallel:
        tasks = [delayed(func)(chunk) for _, chunk in chunks]
        try:  # results as they come, for the progress bar
            computed = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
        except ValueError as exc:  # backends without generators (multiprocessing)
            if "return_as" not in str(exc):
                raise
            computed = Parallel(n_jobs=n_jobs)(tasks)
        done = zip(chunks, computed)
    else:
        done = ((chunk, func(chunk[1])) for chunk in chunks)
    results = {}
    with progress_bar(len(units), label, verbose) as bar:
        for (start, chunk), result in done:
            if write is None:
                results[start] = result
            else:
                write(start, result)
            bar.update(len(chunk))
    return None if write is not None else np.concatenate(
        [results[start] for start in sorted(results)], axis=0)


def _threaded(func, chunks, threads):
    """``((start, chunk), func(chunk))`` of ``chunks`` on ``threads`` threads, as they come.

    Each thread takes a contiguous run of the chunks, in order, so that a model
    that streams work shared along the units (:meth:`ModelDerivatives.unit_order`)
    streams each run once. At most ``threads`` results wait for the caller (a
    thread that gets ahead waits), so memory stays that of about ``2 * threads``
    chunks. BLAS runs on one thread meanwhile (the threads replace its own).
    Stops the threads at the first error and raises it.
    """
    runs = np.array_split(np.arange(len(chunks)), min(threads, len(chunks)))
    finished, stop = queue.Queue(maxsize=threads), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                return finished.put(item, timeout=0.05)
            except queue.Full:
                pass

    def work(run):
        try:
            for i in run:
                if stop.is_set():
                    return
                put((chunks[i], func(chunks[i][1])))
        except BaseException as exc:   # (raised in the calling thread)
            put(exc)

    pool = [threading.Thread(target=work, args=(run,), daemon=True) for run in runs]
    with single_blas_thread():
        for thread in pool:
            thread.start()
        try:
            for _ in range(len(chunks)):
                item = finished.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            for thread in pool:
                thread.join()


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
        ``gradient_and_hessian`` and ``loss``, when provided, replace autograd.

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
    line_loss = _provided(derivatives, "loss") or lossb  # (the step halving's)
    f = np.asarray(line_loss(P, W), dtype=float)
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
            ft = np.asarray(line_loss(trial, Wa[todo]), dtype=float)
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
    to a nearby local minimum), then at most 5 full Newton-CG steps (of at
    most 500 conjugate-gradient iterations) accepted on a decrease of the
    gradient norm, where the objective's decrease is below its rounding (not
    after ``max_iter`` trust-region iterations). The exact refits of large models use it,
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
    # full Newton steps accepted on a decrease of the gradient norm finish the job.
    # Not when trust-ncg ran out of iterations (status 1): then far from a minimum,
    # where the Hessian may be indefinite and CG would not stop
    for _ in range(_POLISH_STEPS if result.status != 1 else 0):
        if not np.linalg.norm(g) > gtol:
            break
        operator = LinearOperator((theta.size,) * 2, matvec=partial(hvp, theta), dtype=float)
        step, _ = cg(operator, -g, rtol=1e-3, atol=0.0,
                     maxiter=min(10 * theta.size, _POLISH_CG_MAXITER))
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
    ``H + damping I`` is indefinite (non-convex objectives);
    ``solver="lanczos"`` computes the ``rank`` eigenpairs of largest magnitude
    by Lanczos iterations (:func:`scipy.sparse.linalg.eigsh` on the same
    operator) and solves in their span, ``V diag(1 / lambda) V^T b``: the
    low-rank (Arnoldi) influence approximation for very large models, exact
    when the right-hand sides lie in that span.

    ``cg_rtol`` and ``cg_maxiter`` are the Krylov solvers' relative tolerance
    and iteration cap (default ``10 p``); ``preconditioner`` their ``M`` (a
    :class:`~scipy.sparse.linalg.LinearOperator`, matrix or callable
    approximating ``(H + damping I)^-1``; by default the model's, if any).
    The dense solver keeps ``hessian``, ``H + damping I``.
    """

    def __init__(self, loss, params, weights, *, solver, damping=0.0,
                 cg_rtol=1e-10, cg_maxiter=None, derivatives=None, check_indefinite=True,
                 preconditioner=None, rank=None):
        self.params = params
        self.check_indefinite = check_indefinite
        self.damping = float(damping)
        p = params.size
        self.solver = solver
        # the model's closed forms (ModelDerivatives) hold at unit weights only
        unit_weights = np.all(np.asarray(weights) == 1.0)
        closed_form = _provided(derivatives, "hessian_vector_product") if unit_weights else None
        if preconditioner is None:
            model_preconditioner = (_provided(derivatives, "preconditioner") if unit_weights
                                    else None)
            if model_preconditioner is not None:
                preconditioner = model_preconditioner(self.damping)
        elif callable(preconditioner) and not isinstance(preconditioner, LinearOperator):
            preconditioner = LinearOperator((p, p), matvec=preconditioner, dtype=float)
        self._preconditioner = preconditioner
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
            self.hessian = H + self.damping * np.eye(p)
            self._factor(self.hessian)
        else:
            self.cg_rtol = cg_rtol
            self.cg_maxiter = cg_maxiter if cg_maxiter is not None else 10 * p
            self.operator = LinearOperator(
                (p, p), matvec=self.matvec, rmatvec=self.matvec, dtype=float
            )
        if solver == "lanczos":
            rank = min(p - 1, 50) if rank is None else int(rank)
            if not 1 <= rank < p:
                raise ValueError(f"solver='lanczos' needs 1 <= rank < n_params = {p}, "
                                 f"got rank={rank}.")
            lam, V = eigsh(self.operator, k=rank, which="LM", tol=cg_rtol,
                           maxiter=self.cg_maxiter)
            if np.any(lam == 0):
                raise ValueError("The Hessian has a zero eigenvalue among its largest ones.")
            self._eig = (lam, V)

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

    @single_threaded_blas
    def solve(self, B):
        """Return ``(H + damping I)^{-1} B`` for ``B`` of shape (p,) or (p, r)."""
        B = np.asarray(B, dtype=float)
        if self.solver in ("direct", "lanczos"):
            if self.solver == "direct" and self._cho is not None:
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


def _positive_definite_inverse(H, scale, scaled_eigenvalues):
    """``H^-1`` (symmetric; by a Cholesky factor of the Jacobi-scaled ``H``), or None
    when ``H`` is not positive definite."""
    if not scaled_eigenvalues[0] > 0:
        return None
    outer = np.outer(scale, scale)
    try:
        factor = scipy.linalg.cho_factor(H / outer)
    except np.linalg.LinAlgError:
        return None
    inverse = scipy.linalg.cho_solve(factor, np.eye(H.shape[0]))
    return 0.5 * (inverse + inverse.T) / outer


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
    return _listed(np.flatnonzero(flags), limit)


def _listed(idx, limit=10):
    """``[i, j, ...]``: the first few of the positions ``idx``, for a message."""
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
class InfluenceResults:
    r"""The influence of removing each training unit, computed once and cached.

    The counterpart of statsmodels' ``results.get_influence()``: built once
    for a fitted problem, it sets up the Hessian solve (a dense factorization,
    or a Krylov or low-rank solver and its preconditioner) on first use,
    computes each method's per-unit quantities (gradient changes, Newton
    steps, exact refits) once, and answers any number of questions from them:
    parameter changes, any target mapped through its Jacobian, standard
    errors, :meth:`summary_frame`. Every ``influence_`` of skvif and
    :func:`skvif.vif` run on it; :func:`skvif.get_influence` and the
    estimators' ``get_influence()`` return one.

    Parameters
    ----------
    loss : callable
        ``loss(params, weights)`` in :mod:`autograd.numpy` (see :func:`vif`).
    params : ndarray of shape (n_params,)
        The fitted parameters (not copied: the caller's own copy).
    n_samples : int
    units : list of ndarray of int, or ndarray of shape (n_units, 1)
        Validated units (:func:`check_units`).
    solver : {"auto", "direct", "cg", "minres", "lanczos"}, default="auto"
        See :func:`vif`.
    damping : float, default=0.0
    solver_options : dict, default=None
        See :func:`vif`.
    derivatives : object, default=None
        The model's closed forms (:class:`ModelDerivatives`).
    batched : bool, default=False
        As in :func:`vif`.
    loss_if : callable, default=None
        The loss whose weight derivative ``"if"`` linearizes (default ``loss``).
    tol : float, default=1e-10
        Tolerance of the exact refits of ``"loo"``.
    max_iter : int, default=100
        Newton iterations of each exact refit.
    n_jobs : int, default=None
    verbose : int, default=0
    saddle_free, strongly_convex, check_indefinite : bool
        See :func:`influence`.
    param_names : sequence of str, default=None
        Names of the parameters (columns of :meth:`summary_frame`).
    unit_labels : pandas.Index or sequence, default=None
        Labels of the units (rows of :meth:`summary_frame`).

    Notes
    -----
    What is cached: the solver of :math:`H + \text{damping}\, I` per solver
    kind; per method, the right-hand sides (``"vif"``: the gradient changes
    :math:`\nabla L(\hat\theta;\mathbf 1) - \nabla L(\hat\theta; w^{(-u)})`;
    ``"if"``: the weight derivatives summed over each unit) and the parameter
    changes :math:`\Delta\theta_u`; for ``"loo"``, the refit parameters of
    every unit refit so far (refining the largest estimates, then asking for
    all units, refits each unit once).
    """

    def __init__(self, loss, params, n_samples, units, *, solver="auto", damping=0.0,
                 solver_options=None, derivatives=None, batched=False, loss_if=None,
                 tol=1e-10, max_iter=100, n_jobs=None, verbose=0, saddle_free=False,
                 strongly_convex=False, check_indefinite=True, param_names=None,
                 unit_labels=None):
        self.loss, self.params, self.n_samples, self.units = loss, params, n_samples, units
        self.solver, self.damping = solver, float(damping)
        self.solver_options = check_solver_options(solver_options)
        self.derivatives, self.batched, self.loss_if = derivatives, batched, loss_if
        self.tol, self.max_iter = tol, max_iter
        self.n_jobs, self.verbose = check_n_jobs(n_jobs), verbose
        self.saddle_free, self.strongly_convex = saddle_free, strongly_convex
        self.check_indefinite = check_indefinite
        self.param_names = param_names
        self.unit_labels = unit_labels
        self._solvers, self._right_hand_sides, self._parameter_changes = {}, {}, {}
        self._refits = {}  # unit position -> refit params
        self._standard_errors = None

    @property
    def n_units(self):
        """Number of units."""
        return len(self.units)

    @property
    def n_params(self):
        """Number of parameters."""
        return self.params.size

    def _map(self, func, label, units=None, size=None, write=None, threads=1):
        units = self.units if units is None else units
        return _map_chunks(func, units, self.n_samples, self.batched, self.n_jobs,
                           self.verbose, label, size=size, write=write, threads=threads)

    def _closed_form_threads(self):
        """Threads for chunks of the model's closed forms: BLAS's where they are
        ``thread_safe`` (each then with one BLAS thread) and no joblib workers, else 1."""
        if self.n_jobs not in (None, 1) or not getattr(self.derivatives, "thread_safe", False):
            return 1
        return min(blas_threads(), _MAX_THREADS)

    @property
    def _lossb(self):
        return _as_batched(self.loss, self.batched)

    @property
    def _local_size(self):
        # chunks of the local fast paths: about _CHUNK_ELEMENTS numbers in (k, p, p), or
        # up to 4x that for at least _LOCAL_MIN_ROWS units (models share per-group work
        # between the units of a chunk)
        pp = self.n_params * self.n_params
        return max(1, _CHUNK_ELEMENTS // pp, min(_LOCAL_MIN_ROWS, 4 * _CHUNK_ELEMENTS // pp))

    # ------------------------------------------------------------ solves
    def hessian_solver(self, n_rhs=None, kind=None):
        """The (cached) :class:`HessianSolver` of ``H + damping I`` at the params.

        Parameters
        ----------
        n_rhs : int, default=None
            The number of right-hand sides to come (default: one per unit);
            only matters for ``solver="auto"`` (:func:`auto_solver`).
        kind : str, default=None
            A solver other than the results' own (e.g. ``"direct"``).

        Returns
        -------
        HessianSolver
        """
        kind = kind or self.solver
        if kind == "auto":
            kind = auto_solver(self.n_params, self.n_units if n_rhs is None else n_rhs)
        if kind not in self._solvers:
            self._solvers[kind] = HessianSolver(
                self.loss, self.params, np.ones(self.n_samples), solver=kind,
                damping=self.damping, derivatives=self.derivatives,
                check_indefinite=self.check_indefinite, **self.solver_options)
        return self._solvers[kind]

    def right_hand_sides(self, method="vif"):
        """Per-unit right-hand sides of the linear methods, shape (n_units, n_params).

        ``"vif"``: the gradient changes; ``"if"``: the derivatives of the
        gradient in the unit's weights, summed over its samples. A unit whose
        removal leaves a non-finite gradient has a row of NaN.

        Parameters
        ----------
        method : {"vif", "if"}, default="vif"

        Returns
        -------
        ndarray of shape (n_units, n_params)
        """
        if method not in self._right_hand_sides:
            if method == "vif":
                task, size = self._gradient_changes()
                R = self._map(*task, size=size)
            else:  # "if": derivative of the gradient in each weight (weight change -1)
                dgrad_dw = _provided(self.derivatives, "weight_derivatives")
                D = dgrad_dw() if dgrad_dw is not None else jacobian(
                    lambda w: grad(self.loss_if or self.loss)(self.params, w))(
                        np.ones(self.n_samples))
                R = _unit_sums(D, self.units)
            self._right_hand_sides[method] = _nan_rows(R)
        return self._right_hand_sides[method]

    def _gradient_changes(self):
        """``(func, label)`` of ``_map`` for chunks' gradient changes, and the chunk size."""
        grad_change = _provided(self.derivatives, "gradient_changes")
        if grad_change is not None:  # chunks of (k, p)
            return (grad_change, "gradients"), max(1, _CHUNK_ELEMENTS // self.n_params)
        return (partial(_gradient_change_chunk, lossb=self._lossb, theta=self.params,
                        n=self.n_samples, g_full=grad(self.loss)(
                            self.params, np.ones(self.n_samples))), "gradients"), None

    def _streamed_changes(self, method, out):
        """The changes by ``method`` written into ``out`` chunk by chunk, none kept."""
        if method == "newton":
            return self._newton_steps(out)
        if method == "loo":
            out[...] = self._refit(np.arange(self.n_units)) - self.params
            return out
        solver = self.hessian_solver()
        if method == "vif" and method not in self._right_hand_sides:
            (changes, label), size = self._gradient_changes()
            threads = self._closed_form_threads() if size is not None else 1

            def solved(chunk):   # (on the threads, with the solves)
                return self._solve_rows(_nan_rows(changes(chunk)), solver)

            def write(start, R):
                out[start:start + len(R)] = (R if threads > 1 else
                                             self._solve_rows(_nan_rows(R), solver))
            self._map(solved if threads > 1 else changes, label, size=size, write=write,
                      threads=threads)
            return out
        R = self.right_hand_sides(method)
        size = max(1, _CHUNK_ELEMENTS // self.n_params)
        for start in range(0, len(R), size):
            out[start:start + size] = self._solve_rows(R[start:start + size], solver)
        return out

    def _solve_rows(self, R, solver):
        """``(H + damping I)^-1 R[u]`` for each row, NaN rows left NaN."""
        bad = np.isnan(R[:, 0]) if R.size else np.zeros(len(R), dtype=bool)
        if not bad.any():  # (no copy of R)
            return solver.solve(R.T).T
        out = solver.solve(np.where(bad[:, None], 0.0, R).T).T
        out[bad] = np.nan
        return out

    # ------------------------------------------------------- the methods
    def parameter_changes(self, method="vif", out=None):
        """Estimated parameter changes, shape (n_units, n_params) (cached).

        ``influence[u, j] ≈ params_j(fit without u) - params_j(fit)``, by
        ``method`` (see :func:`vif`; ``"loo"`` refits every unit).

        Parameters
        ----------
        method : {"vif", "if", "newton", "loo"}, default="vif"
        out : ndarray of shape (n_units, n_params), default=None
            A float64 array to write the changes into, chunk of units by chunk
            (e.g. a memory-mapped file from
            :func:`numpy.lib.format.open_memmap`), returned. Nothing is then
            cached (a method already cached is copied into it), so that
            memory beyond the model's own stays that of one chunk.

        Returns
        -------
        ndarray of shape (n_units, n_params)
            The cached array itself, read-only; ``out`` when given.
        """
        check_choice(method, "method", METHODS)
        if out is not None:
            out = check_out(out, (self.n_units, self.n_params))
        if method in self._parameter_changes:
            if out is None:
                return self._parameter_changes[method]
            out[...] = self._parameter_changes[method]
            return out
        # (chunk by chunk: "vif" keeps no right-hand sides, no solve copies them)
        delta = _finite_or_warn(self._streamed_changes(
            method, np.empty((self.n_units, self.n_params)) if out is None else out), method)
        if out is None:
            delta.flags.writeable = False   # (handed out as it is: see :meth:`changes`)
            self._parameter_changes[method] = delta
        return delta

    def _newton_steps(self, out):
        theta, n, damping = self.params, self.n_samples, self.damping
        grad_change = _provided(self.derivatives, "gradient_changes")
        hess_change = _provided(self.derivatives, "hessian_changes")
        # above AUTO_CG_MIN_PARAMS (or with a Krylov solver) each unit's Newton system
        # is solved matrix-free: MINRES for the solvers meant for indefinite Hessians
        krylov = {"cg": "cg", "minres": "minres", "lanczos": "minres"}.get(self.solver)
        if self.solver == "auto" and theta.size >= AUTO_CG_MIN_PARAMS:
            krylov = "cg"
        local = grad_change is not None and hess_change is not None and krylov is None
        H_full = None
        if local or not (krylov or self.saddle_free):
            H_full = _full_hessian(self._lossb, theta, n, self.derivatives) + damping * np.eye(
                theta.size)
            if self.check_indefinite or local:
                scaled_eigenvalues = np.linalg.eigvalsh(_jacobi_scaled(H_full))
            if self.check_indefinite:
                _warn_indefinite(scaled_eigenvalues, stacklevel=4)
        if local:
            scale = _hessian_scale(H_full)
            step = partial(_local_newton_chunk, g_full=grad(self.loss)(theta, np.ones(n)),
                           H_full=H_full, grad_change=grad_change, hess_change=hess_change,
                           scale=scale, scaled_eigenvalues=scaled_eigenvalues,
                           inverse=_positive_definite_inverse(H_full, scale, scaled_eigenvalues))
        else:
            step = partial(_newton_chunk, lossb=self._lossb, theta=theta, n=n, loss=self.loss,
                           damping=damping, krylov=krylov, saddle_free=self.saddle_free,
                           solver_options=self.solver_options,
                           scale=None if H_full is None else _hessian_scale(H_full))
        # (chunks of units that share the model's work, results in the units' order)
        order = _provided(self.derivatives, "unit_order") if local else None
        order = (np.arange(self.n_units) if order is None
                 else np.asarray(order(self.units), dtype=np.intp))
        singular = np.zeros(self.n_units, dtype=bool)

        def write(start, result):
            at = order[start:start + len(result)]
            out[at], singular[at] = result[:, :-1], result[:, -1] > 0
        self._map(step, "newton steps", units=_take(self.units, order),
                  size=self._local_size if local else None, write=write,
                  threads=self._closed_form_threads() if local else 1)
        _warn_singular_newton(singular)
        return out

    def _refit(self, positions):
        """Refit parameters of the units at ``positions`` (cached per unit), (k, p)."""
        todo = [i for i in positions if i not in self._refits]
        if todo:
            theta, n = self.params, self.n_samples
            chord = scale = None
            if not self.saddle_free and (theta.size < AUTO_CG_MIN_PARAMS or _provided(
                    self.derivatives, "hessian") is not None):
                H = _full_hessian(self._lossb, theta, n, self.derivatives)
                scale = _hessian_scale(H)
                # warm starts by fixed-Hessian steps, unless the model's closed-form
                # Newton steps are at hand (each then costs little more than a gradient)
                if (theta.size < AUTO_CG_MIN_PARAMS
                        and _provided(self.derivatives, "gradient_and_hessian") is None):
                    try:
                        chord = partial(scipy.linalg.cho_solve, scipy.linalg.cho_factor(H))
                    except (np.linalg.LinAlgError, ValueError):  # not PD (or not finite)
                        pass
            refit = partial(_refit_chunk, lossb=self._lossb, theta=theta, n=n, chord=chord,
                            scale=scale, tol=self.tol, max_iter=self.max_iter,
                            derivatives=self.derivatives,
                            check_unique=not (self.saddle_free or self.strongly_convex),
                            strongly_convex=self.strongly_convex)
            out = self._map(refit, "refits", units=_take(self.units, todo))
            _warn_refits(out[:, -2] > 0, out[:, -1] > 0, self.max_iter, todo)
            for i, row in zip(todo, out[:, :-2]):
                self._refits[i] = row
        return np.stack([self._refits[i] for i in positions])

    # --------------------------------------------------------- questions
    def changes(self, target=None, method="vif", *, target_uses_weights=False,
                target_derivatives=None, positions=None, out=None):
        """Estimated change of ``target`` when each unit is removed.

        Parameters
        ----------
        target : callable, default=None
            ``target(params)`` (or ``target(params, weights)`` with
            ``target_uses_weights``) returning ``m`` values; ``None``: the
            parameters.
        method : {"vif", "if", "newton", "loo"}, default="vif"
        target_uses_weights : bool, default=False
            The target depends on the training weights too (e.g. a baseline
            hazard): its change at fixed params is added.
        target_derivatives : object, default=None
            Closed forms of this target: its ``target_changes(units) -> (k,
            m)``, that change at fixed params (:class:`ModelDerivatives`),
            replaces the model's; without either it is evaluated per unit.
        positions : array-like of int, default=None
            Only the units at these positions (``"loo"`` then refits only
            those).
        out : ndarray of shape (n_units, n_params), default=None
            For the parameters of every unit (``target=None``, no
            ``positions``): written into chunk by chunk and returned, nothing
            cached (see :meth:`parameter_changes`).

        Returns
        -------
        ndarray of shape (n_units, m), or (n_units, n_params) for ``target=None``
            For the parameters of every unit a read-only view of the cached
            array (no copy of ``n_units x n_params`` numbers; ``np.array(result)``
            for one to modify); otherwise a new array.
        """
        check_choice(method, "method", METHODS)
        if out is not None:
            if target is not None or positions is not None:
                raise ValueError("out is only for the parameter changes of every unit "
                                 "(no target, no positions).")
            return self.parameter_changes(method, out=out)
        units = self.units if positions is None else _take(self.units, positions)
        if target is None:
            if method == "loo" and positions is not None:
                return _finite_or_warn(self._refit(positions) - self.params, method)
            delta = self.parameter_changes(method)  # (read-only: the cache stays intact)
            return delta.view() if positions is None else delta[np.asarray(positions)]
        quantity = target if target_uses_weights else partial(_unweighted, target)
        ones = np.ones(self.n_samples)
        if method == "loo":
            every = np.arange(self.n_units) if positions is None else np.asarray(positions)
            P = self._refit(every)
            base = np.ravel(quantity(self.params, ones))
            return _finite_or_warn(
                _quantities_at(quantity, P, units, self.n_samples) - base, method)
        J = _jacobian(lambda th: anp.ravel(quantity(th, ones)), self.params)
        if method in self._parameter_changes or method == "newton":
            delta = self.parameter_changes(method)
            out = (delta if positions is None else delta[np.asarray(positions)]) @ J.T
        else:
            R = self.right_hand_sides(method)
            R = R if positions is None else R[np.asarray(positions)]
            solver = self.hessian_solver(min(len(R), J.shape[0]))
            if solver.solver != "direct" and J.shape[0] < R.shape[0]:
                # target first: J H^-1 R^T = (H^-1 J^T)^T R^T, one solve per target value
                out = R @ solver.solve(J.T)
            else:
                out = self._solve_rows(R, solver) @ J.T
        if target_uses_weights:
            closed_form = None if method == "if" else (
                _provided(target_derivatives, "target_changes")
                or _provided(self.derivatives, "target_changes"))
            out = out + (closed_form(units) if closed_form is not None else _direct_part(
                quantity, self.params, self.n_samples, units, method, self.batched,
                self.n_jobs, self.verbose))
        return _finite_or_warn(out, method)

    @property
    def standard_errors(self):
        """``sqrt(diag (H + damping I)^-1)``: the standard errors of a negative log-likelihood.

        Formed from ``n_params`` solves; ``ValueError`` from
        ``AUTO_CG_MIN_PARAMS`` parameters on (a dense ``(p, p)`` inverse).
        """
        if self._standard_errors is None:
            if self.n_params >= AUTO_CG_MIN_PARAMS:
                raise ValueError(
                    f"Standard errors need the diagonal of the inverse Hessian, a dense "
                    f"({self.n_params}, {self.n_params}) solve; only available below "
                    f"{AUTO_CG_MIN_PARAMS} parameters.")
            inverse_diagonal = np.diag(self.hessian_solver(kind="direct").solve(
                np.eye(self.n_params)))
            self._standard_errors = np.sqrt(np.abs(inverse_diagonal))
        return self._standard_errors

    def summary_frame(self, method="vif"):
        r"""Per-unit influence table, like statsmodels' ``get_influence().summary_frame()``.

        Parameters
        ----------
        method : {"vif", "if", "newton", "loo"}, default="vif"

        Returns
        -------
        pandas.DataFrame
            One row per unit (``unit_labels``), columns ``dfbeta_<name>`` and
            ``dfbetas_<name>`` for each parameter, then ``cooks_d``.

        Notes
        -----
        As in R and statsmodels, ``dfbeta`` is the parameter change *caused*
        by the unit, the fit on all data minus the fit without it:
        :math:`\mathrm{dfbeta}_u = -\Delta\theta_u`, the negative of
        :meth:`parameter_changes` (so with ``method="if"`` on a Cox model it
        is R's ``residuals(fit, type="dfbeta")``). ``dfbetas`` divides it by
        :attr:`standard_errors` (R's ``type="dfbetas"``). The Cook's distance
        of a likelihood fit is :math:`D_u = \Delta\theta_u^\top H
        \Delta\theta_u / p`, the change measured in the curvature of the
        objective (with a Gaussian likelihood and ``method="newton"``, the
        classical Cook's distance up to the residual variance; for a GLM,
        statsmodels' ``cooks_distance``).
        """
        import pandas as pd

        delta = self.parameter_changes(method)
        names = (list(self.param_names) if self.param_names is not None
                 else [f"x{j}" for j in range(self.n_params)])
        H_delta = delta @ self.hessian_solver(kind="direct").hessian
        cooks = np.einsum("up,up->u", delta, H_delta) / self.n_params
        columns = {f"dfbeta_{name}": -delta[:, j] for j, name in enumerate(names)}
        se = self.standard_errors
        columns.update({f"dfbetas_{name}": -delta[:, j] / se[j]
                        for j, name in enumerate(names)})
        columns["cooks_d"] = cooks
        index = (pd.Index(self.unit_labels).copy() if self.unit_labels is not None
                 else pd.RangeIndex(self.n_units, name="unit"))
        return pd.DataFrame(columns, index=index)


def unit_rows(units):
    """The rows of a chunk of units, concatenated (for single rows, without a Python loop)."""
    if isinstance(units, np.ndarray):  # (n_units, 1): one row each
        return units.ravel()
    return np.concatenate(units)


def _take(units, positions):
    """The units at ``positions`` (same kind as ``units``)."""
    if isinstance(units, np.ndarray):
        return units[np.asarray(positions, dtype=np.intp)]
    return [units[i] for i in positions]


def _quantities_at(quantity, P, units, n):
    """``quantity(P[i], w^(-units[i]))`` for each refit; NaN where ``P[i]`` is not finite."""
    rows = []
    w = np.ones(n)
    for params, idx in zip(P, units):
        if not np.all(np.isfinite(params)):
            rows.append(None)
            continue
        w[idx] = 0.0
        rows.append(np.ravel(quantity(params, w)))
        w[idx] = 1.0
    m = next((r.size for r in rows if r is not None), 1)
    return np.stack([np.full(m, np.nan) if r is None else r for r in rows])


def _warn_refits(not_converged, singular, max_iter, positions):
    positions = np.asarray(positions)
    if not_converged.any():
        warnings.warn(f"{not_converged.sum()} leave-one-out refits did not converge "
                      f"within {max_iter} Newton iterations, or stopped where their "
                      "objective no longer decreased (a monotone or flat objective "
                      f"without the unit; units at positions "
                      f"{_listed(positions[not_converged])}).", ConvergenceWarning,
                      stacklevel=5)
    if singular.any():
        warnings.warn(
            f"Without the unit(s) at positions {_listed(positions[singular])} the objective "
            "has no unique minimum (its Hessian at the refit is singular: a flat direction, "
            "e.g. a column that is constant once they are removed, or a monotone "
            "likelihood): their refits along that direction are arbitrary. Set a ridge "
            "penalty (alpha) to make them unique.", UserWarning, stacklevel=5)


def influence(loss, params, n_samples, units, *, target=None, target_uses_weights=False,
              method="vif", **options):
    """Influence of removing each unit: one question to a new :class:`InfluenceResults`.

    Inputs are assumed valid (see :func:`vif` for the checked public entry).
    ``options`` are those of :class:`InfluenceResults`, among them:

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
    results = InfluenceResults(loss, params, n_samples, units, **options)
    return results.changes(target, method, target_uses_weights=target_uses_weights,
                           out=one_answer_out(results, target))


def one_answer_out(results, target):
    """A new array for the parameter changes of every unit (``target`` None), else None.

    For a results object made for one answer: given as ``out``, the changes
    are written into it, returned writable, and nothing is cached (a kept
    results object hands out a read-only view of its cache instead).
    """
    return np.empty((results.n_units, results.n_params)) if target is None else None


def _parameters(th, w):
    return th


def _unweighted(target, th, w):
    return target(th)


def _gradient_change_chunk(chunk, *, lossb, theta, n, g_full):
    """``grad L(theta; 1) - grad L(theta; w^(-u))`` for the units of a chunk."""
    W = _leave_out_weights(chunk, n)
    return g_full - _batch_grad(lossb, np.tile(theta, (len(chunk), 1)), W)


def _local_newton_chunk(chunk, *, g_full, H_full, grad_change, hess_change, scale,
                        scaled_eigenvalues, inverse):
    """Newton steps from the model's closed-form gradient and Hessian changes.

    A unit's change is ``dH = D + R`` with ``R = x y^T + y x^T`` (``R = 0``
    when the model gives dense changes; see :class:`ModelDerivatives`). In
    Jacobi-scaled coordinates (``A = H_full / (d d^T)``, tildes the scaled
    changes, ``z = d s``), ``||R~||_2 = |x~| |y~| + |x~' y~|`` exactly and
    ``||dH~||_2 <= ||D~||_F + ||R~||_2``, so ``rho = ||D~||_F / (lambda_min(A) -
    ||R~||_2)`` (or a bound on ``||D~||_F``, :func:`_scaled_frobenius_bound`)
    bounds the contraction of the fixed-point iteration ``s <- (H_full
    - R)^-1 (g + D s)`` (``(H_full - R)^-1`` by Woodbury from ``inverse =
    H_full^-1``), and the error after a step is at most ``rho / (1 - rho)``
    times the step. Units with ``||R~||_2 <= lambda_min / 2`` and ``rho < 1/2``
    are iterated (``O(p^2)`` a step, against ``O(p^3)`` for a factorization per
    unit) until that bound is below ``_NEUMANN_RTOL`` relative, for at most
    ``_NEUMANN_MAX_STEPS`` steps; a block of units of about
    ``_NEWTON_BLOCK_ELEMENTS`` numbers at a time (their changes asked for
    then), so that they stay in cache through the steps. Of the others, a
    unit whose change is provably too small to bring an eigenvalue near zero
    (Weyl, with ``b = ||D~||_F + ||R~||_2``: ``lambda_min - b > _SINGULAR_RCOND
    (lambda_max + b)``) is solved by one LU solve; the rest by
    :func:`_solve_each`'s eigendecomposition (the same steps to rounding, 10-20x
    slower). ``scaled_eigenvalues``: those of ``A``, ascending; ``inverse`` is
    None when ``H_full`` is not positive definite.
    """
    g = g_full - grad_change(chunk)
    step = np.empty(g.shape)
    singular = np.zeros(g.shape[0], dtype=bool)
    size = max(1, _NEWTON_BLOCK_ELEMENTS // g.shape[1] ** 2)
    for lo in range(0, g.shape[0], size):
        block = slice(lo, lo + size)
        step[block], singular[block] = _local_newton_block(
            hess_change(chunk[block]), g[block], H_full, scale, scaled_eigenvalues, inverse)
    return np.column_stack([-step, singular])


def _local_newton_block(change, g, H_full, d, lam, inverse):
    """Steps ``(H_full - dH[k])^-1 g[k]`` and singular flags of one block (see above).

    ``change``: the block's ``hessian_changes``, an array ``D`` or ``(D, x, y)``.
    """
    D, x, y = change if isinstance(change, tuple) else (change, None, None)
    outer = d[:, None] * d[None, :]
    with np.errstate(all="ignore"):
        # ||D~||_F and ||R~||_2; a non-finite change gives a non-finite bound
        dense = _scaled_frobenius_bound(D, d)
        low = 0.0
        if x is not None:
            xs, ys = x / d, y / d
            low = (np.sqrt(np.einsum("ij,ij->i", xs, xs) * np.einsum("ij,ij->i", ys, ys))
                   + np.abs(np.einsum("ij,ij->i", xs, ys)))
        bound = dense + low
        safe = (np.isfinite(bound) & np.all(np.isfinite(g), axis=1)
                & (lam[0] - bound > _SINGULAR_RCOND * (lam[-1] + bound))
                & (lam[0] > bound))
        rho = np.where(safe, dense / (lam[0] - low), 1.0)
    step = np.empty(g.shape)
    singular = np.zeros(g.shape[0], dtype=bool)
    fixed_point = (safe & (rho < 0.5) & (low <= 0.5 * lam[0]) if inverse is not None
                   else np.zeros_like(safe))
    ratio = rho / (1.0 - np.minimum(rho, 0.5))
    if fixed_point.all():   # (no copy of the block)
        step, fixed_point = _neumann_steps((D, x, y), g, d, ratio, inverse)
    elif fixed_point.any():
        part = (D[fixed_point],) + ((None, None) if x is None else
                                    (x[fixed_point], y[fixed_point]))
        step[fixed_point], fixed_point[fixed_point] = _neumann_steps(
            part, g[fixed_point], d, ratio[fixed_point], inverse)
    rest = ~fixed_point
    lu = safe & rest
    if lu.any():
        H = (H_full - _dense_changes(D, x, y, lu)) / outer
        step[lu] = np.linalg.solve(H, (g[lu] / d)[:, :, None])[:, :, 0] / d
    other = rest & ~safe
    if other.any():
        step[other], singular[other] = _solve_each(H_full - _dense_changes(D, x, y, other),
                                                   g[other], d)
    return step, singular


def _scaled_frobenius_bound(D, d):
    """``||D / (d d^T)||_F`` of each ``D`` (k, p, p), or a bound at most ``_SPREAD`` times it.

    Where the scales are within ``(max d / min d)^2 <= _SPREAD`` the bound
    ``||D||_F / min(d)^2``: one batched dot product, about 3x faster than the
    weighted sum of squares.
    """
    flat = D.reshape(D.shape[0], -1)
    if (d.max() / d.min()) ** 2 <= _SPREAD:
        return np.sqrt(np.matmul(flat[:, None, :], flat[:, :, None])[:, 0, 0]) / d.min() ** 2
    inverse = 1.0 / (d[:, None] * d[None, :])
    return np.sqrt(np.square(flat) @ np.square(inverse).ravel())


def _dense_changes(D, x, y, where):
    """``D + x y^T + y x^T`` at the units ``where`` (boolean), (k, p, p)."""
    if x is None:
        return D[where]
    x, y = x[where], y[where]
    return D[where] + x[:, :, None] * y[:, None, :] + y[:, :, None] * x[:, None, :]


def _neumann_steps(change, g, d, ratio, inverse):
    """Fixed-point steps ``s <- (H_full - R)^-1 (g + D s)`` (see :func:`_local_newton_chunk`).

    ``change``: ``(D, x, y)``, ``R = x y^T + y x^T`` (``x`` None: ``R = 0``).
    Returns the steps and whether each met ``_NEUMANN_RTOL``: the error after
    a step is at most ``ratio`` times the step (both in scaled norm). Once
    most rows have met it, the others are iterated alone.
    """
    D, x, y = change
    step, done = np.empty(g.shape), np.zeros(g.shape[0], dtype=bool)
    rows = np.arange(g.shape[0])   # the rows still iterated
    solve = _woodbury_solve(x, y, inverse)
    s = solve(g)
    for _ in range(_NEUMANN_MAX_STEPS):
        s_next = solve(g + np.matmul(D, s[:, :, None])[:, :, 0])
        difference, size = (s_next - s) * d, s_next * d
        met = (ratio ** 2 * np.einsum("ij,ij->i", difference, difference)
               <= _NEUMANN_RTOL ** 2 * np.einsum("ij,ij->i", size, size))
        s = s_next
        step[rows] = s
        done[rows] |= met
        if met.all():
            break
        if 2 * np.count_nonzero(met) >= met.size:
            rest = ~met
            rows, D, g, ratio, s = rows[rest], D[rest], g[rest], ratio[rest], s[rest]
            if x is not None:
                x, y = x[rest], y[rest]
            solve = _woodbury_solve(x, y, inverse)
    return step, done


def _woodbury_solve(x, y, inverse):
    """``b -> (H - x y^T - y x^T)^-1 b`` row by row, from ``inverse = H^-1`` (Woodbury).

    With ``U = [x, y]``, ``V = [y, x]``: ``H^-1 b + H^-1 U C^-1 V^T H^-1 b``,
    ``C = I - V^T H^-1 U`` (2 x 2 per row). ``x`` None: ``b -> H^-1 b``.
    """
    if x is None:
        return lambda b: b @ inverse
    Hx, Hy = x @ inverse, y @ inverse
    xHy = np.einsum("ij,ij->i", y, Hx)
    c11, c12, c21 = 1.0 - xHy, -np.einsum("ij,ij->i", y, Hy), -np.einsum("ij,ij->i", x, Hx)
    det = c11 * c11 - c12 * c21

    def solve(b):
        t = b @ inverse
        v1, v2 = np.einsum("ij,ij->i", y, t), np.einsum("ij,ij->i", x, t)
        return (t + Hx * ((c11 * v1 - c12 * v2) / det)[:, None]
                + Hy * ((c11 * v2 - c21 * v1) / det)[:, None])
    return solve


def _newton_chunk(chunk, *, loss, lossb, theta, n, damping, krylov, saddle_free, scale,
                  solver_options):
    """Newton steps on the leave-out objectives, generic autograd path.

    ``krylov`` (``"cg"`` or ``"minres"``): each unit's system solved on
    Hessian-vector products of its own objective, never formed.
    """
    W = _leave_out_weights(chunk, n)
    P = np.tile(theta, (len(chunk), 1))
    g = _batch_grad(lossb, P, W)
    if krylov:
        # (the full-data preconditioner is not H_-u's)
        options = {key: value for key, value in solver_options.items()
                   if key in ("cg_rtol", "cg_maxiter")}
        return np.column_stack([-np.stack([
            HessianSolver(loss, theta, W[i], solver=krylov, damping=damping,
                          **options).solve(g[i])
            for i in range(len(chunk))]), np.zeros(len(chunk))])
    if saddle_free:
        lam, V = np.linalg.eigh(_batch_hessians(lossb, P, W))
        floor = 1e-10 * np.maximum(np.max(np.abs(lam), axis=1, keepdims=True), 1e-300)
        coords = np.einsum("kij,ki->kj", V, g) / np.maximum(np.abs(lam) + damping, floor)
        return np.column_stack([-np.einsum("kij,kj->ki", V, coords), np.zeros(len(chunk))])
    H = _batch_hessians(lossb, P, W) + damping * np.eye(theta.size)
    step, singular = _solve_each(H, g, scale)
    return np.column_stack([-step, singular])


def _refit_chunk(chunk, *, lossb, theta, n, chord, scale, tol, max_iter,
                 derivatives, check_unique, strongly_convex):
    """Exact refits of the units of a chunk: refit params, not-converged, singular.

    A unit whose leave-out loss or gradient is not finite at ``theta`` is not
    refit: its params are NaN (named by ``_finite_or_warn``).
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
    P[~finite] = np.nan
    return np.column_stack([P, ~conv & finite, singular])


def _warn_singular_newton(singular):
    """Warn about the units whose Newton steps were flagged singular (boolean)."""
    if singular.any():
        warnings.warn(
            f"Without the unit(s) at positions {_positions(singular)} the Hessian of the "
            "objective is singular (e.g. a column that is constant once they are removed): "
            "method='newton' leaves that direction out for them. Pass damping > 0 or use "
            "method='vif'.", UserWarning, stacklevel=4)


def _nan_rows(R):
    """``R`` as floats, with the rows holding a non-finite entry all NaN (``R`` unchanged)."""
    R = np.asarray(R, dtype=float)
    bad = ~np.all(np.isfinite(R), axis=1)
    if bad.any():
        R = R.copy()
        R[bad] = np.nan
    return R


def check_out(out, shape):
    """``out`` if it is a writable float64 ndarray of ``shape``; else a clear error."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array (e.g. numpy.lib.format.open_memmap), "
                        f"got {type(out).__name__}.")
    if out.dtype != np.float64:
        raise TypeError(f"out must have dtype float64, got {out.dtype}.")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {out.shape}.")
    if not out.flags.writeable:
        raise ValueError("out is read-only.")
    return out


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


def check_solver_options(options):
    """Validate ``solver_options``; returns :class:`HessianSolver` keyword arguments."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"solver_options must be None or a dict, got {type(options).__name__}.")
    unknown = sorted(set(options) - set(SOLVER_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown solver_options {unknown}; the options are "
                         f"{list(SOLVER_OPTIONS)}.")
    out = {}
    if "rtol" in options:
        rtol = options["rtol"]
        if (not isinstance(rtol, numbers.Real) or isinstance(rtol, bool)
                or not 0 < rtol < 1):
            raise ValueError(f"solver_options['rtol'] must be in (0, 1), got {rtol!r}.")
        out["cg_rtol"] = float(rtol)
    for key, name in (("maxiter", "cg_maxiter"), ("rank", "rank")):
        if options.get(key) is not None:
            value = options[key]
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"solver_options[{key!r}] must be a positive integer, "
                                 f"got {value!r}.")
            out[name] = int(value)
    if options.get("preconditioner") is not None:
        M = options["preconditioner"]
        if not (callable(M) or isinstance(M, (LinearOperator, np.ndarray))
                or hasattr(M, "shape")):
            raise TypeError("solver_options['preconditioner'] must be a LinearOperator, a "
                            "matrix or a callable v -> M v.")
        out["preconditioner"] = M
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
        damping=0.0, n_jobs=None, batched=False, verbose=0, refine=None, return_exact=False,
        solver_options=None, derivatives=None, out=None):
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
    solver : {"auto", "direct", "cg", "minres", "lanczos"}, default="auto"
        ``"direct"`` factorizes the dense Hessian; ``"cg"`` runs conjugate
        gradients on Hessian-vector products and never forms it; ``"minres"``
        runs MINRES on them (defined for indefinite ``H + damping I``:
        non-convex models); ``"lanczos"`` solves in the span of the ``rank``
        eigenvectors of largest eigenvalue magnitude (a low-rank
        approximation for very large models); ``"auto"`` uses ``"cg"`` from
        2000 parameters on, or when the solves (one per unit or per target
        value, whichever is fewer) would take fewer than about ``n_params``
        Hessian-vector products at about 20 per solve
        (``benchmarks/bench_cox.py solvers`` shows the crossover). With a
        Krylov solver, ``"newton"`` solves each unit's system matrix-free
        (``"cg"``, else MINRES).
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
    solver_options : dict, default=None
        Options of the Krylov and low-rank solvers: ``"rtol"`` (relative
        residual tolerance, default ``1e-10``), ``"maxiter"`` (default
        ``10 * n_params``), ``"preconditioner"`` (a
        :class:`~scipy.sparse.linalg.LinearOperator`, matrix or callable
        ``v -> M v`` approximating ``(H + damping I)^-1``, for ``"cg"`` and
        ``"minres"``), ``"rank"`` (``"lanczos"``, default
        ``min(50, n_params - 1)``).
    derivatives : object, default=None
        Closed forms of the model that replace autograd computations, looked
        up by name (:class:`ModelDerivatives`: ``gradient_changes``,
        ``hessian``, ``hessian_vector_product``, ``preconditioner``...). They
        must return what autograd would.
    out : ndarray of shape (n_units, n_params), default=None
        With ``target=None``: a float64 array to write the changes into, chunk
        of units by chunk, and return (e.g. a memory-mapped file from
        :func:`numpy.lib.format.open_memmap`, when ``n_units x n_params`` is
        large); ``refine`` then rewrites its top rows in place.

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
    check_choice(method, "method", METHODS)
    results = _checked_results(loss, params, n_samples, units, target=target, solver=solver,
                               damping=damping, solver_options=solver_options,
                               derivatives=derivatives, n_jobs=n_jobs, batched=batched,
                               verbose=verbose)
    from ._robustness import check_refine, parameter_scale, refine_rows

    refine = check_refine(refine, results.n_units)
    result = results.changes(target, method,
                             out=one_answer_out(results, target) if out is None else out)
    is_exact = np.full(results.n_units, method == "loo")
    if refine and method != "loo":
        scale = parameter_scale(results) if target is None else None
        result, is_exact = refine_rows(
            result, refine, lambda top: results.changes(target, "loo", positions=top), scale,
            in_place=target is None)
    return (result, is_exact) if return_exact else result


def get_influence(loss, params, n_samples, *, units=None, solver="auto", damping=0.0,
                  solver_options=None, derivatives=None, n_jobs=None, batched=False,
                  verbose=0, param_names=None, unit_labels=None):
    """The influence of each training unit as a results object, for many questions.

    Checks the problem as :func:`vif` does, then returns an
    :class:`InfluenceResults` that computes each method once and caches it:
    parameter changes, any target, standard errors and a statsmodels-style
    :meth:`~InfluenceResults.summary_frame` with dfbeta, dfbetas and a
    Cook's distance.

    Parameters
    ----------
    loss : callable
        As in :func:`vif`, like every parameter up to ``verbose``.
    params : array-like of shape (n_params,)
    n_samples : int
    units : None or list of array-like of int, default=None
    solver : {"auto", "direct", "cg", "minres", "lanczos"}, default="auto"
    damping : float, default=0.0
    solver_options : dict, default=None
    derivatives : object, default=None
    n_jobs : int, default=None
    batched : bool, default=False
    verbose : int, default=0
    param_names : sequence of str, default=None
        Names of the parameters, for :meth:`~InfluenceResults.summary_frame`.
    unit_labels : sequence, default=None
        Labels of the units (rows of the summary frame).

    Returns
    -------
    InfluenceResults

    Examples
    --------
    >>> import numpy as np
    >>> import autograd.numpy as anp
    >>> from skvif import get_influence
    >>> x = np.array([1.0, 2.0, 3.0, 10.0])
    >>> loss = lambda m, w: 0.5 * anp.sum(w * (x - m[0]) ** 2)
    >>> results = get_influence(loss, [x.mean()], 4, param_names=["mean"])
    >>> results.changes(method="loo").ravel().round(4)
    array([ 1.    ,  0.6667,  0.3333, -2.    ])
    >>> results.summary_frame(method="loo")["dfbeta_mean"].round(4).tolist()
    [-1.0, -0.6667, -0.3333, 2.0]
    """
    return _checked_results(loss, params, n_samples, units, target=None, solver=solver,
                            damping=damping, solver_options=solver_options,
                            derivatives=derivatives, n_jobs=n_jobs, batched=batched,
                            verbose=verbose, param_names=param_names,
                            unit_labels=unit_labels)


def _checked_results(loss, params, n_samples, units, *, target, solver, damping,
                     solver_options, derivatives, n_jobs, batched, verbose,
                     param_names=None, unit_labels=None):
    """Check a problem (and target) as :func:`vif` documents; its :class:`InfluenceResults`."""
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
    check_choice(solver, "solver", SOLVERS)
    check_solver_options(solver_options)
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
                   float(value_at_params), damping, derivatives)
    return InfluenceResults(loss, theta, int(n_samples), units, solver=solver,
                            damping=damping, solver_options=solver_options,
                            derivatives=derivatives, n_jobs=n_jobs, batched=bool(batched),
                            verbose=verbose, check_indefinite=False,
                            param_names=_names(param_names, theta.size, "param_names"),
                            unit_labels=_names(unit_labels, len(units), "unit_labels"))


def _names(names, size, what):
    if names is None:
        return None
    names = list(names)
    if len(names) != size:
        raise ValueError(f"{what} has {len(names)} entries, expected {size}.")
    return names


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


def _check_minimum(lossb, theta, n_samples, gradient, value, damping, derivatives=None):
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
        H = _full_hessian(lossb, theta, n_samples, derivatives) + damping * np.eye(p)
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
