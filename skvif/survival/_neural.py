"""``NeuralCoxPHInfluence``: a Cox model with a user (e.g. neural) log-risk function.

The partial likelihood, ties, strata, case weights and delayed entry are those
of :class:`~skvif.survival.CoxPHInfluence`; only the linear predictor
``x @ beta`` becomes ``risk_function(theta, X)``, any function written with
:mod:`autograd.numpy`. Influence on a few targets (a test loss, test
predictions) is computed target first: one Hessian solve per target value,
one Jacobian-vector product of the risk function, then the ``O(n)``
closed-form leave-one-row-out gradient changes of the linear Cox model
(:mod:`skvif.survival._fast`) applied to that vector, for all rows at once.
"""

import warnings
from functools import partial
from numbers import Integral, Real

import autograd.numpy as anp
import numpy as np
import pandas as pd
from autograd import grad
from autograd.differential_operators import make_jvp_reversemode
from scipy.optimize import minimize as scipy_minimize
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from .._base import FittedInputMixin, check_labels, row_labels, units_from_groups, validate_X
from .._engine import (HessianSolver, _jacobian, check_choice, check_nonnegative, check_units,
                       influence, minimize_hessian_free, unit_rows)
from .._robustness import check_refine, refine_rows, with_exactness
from ._coxph import (CoxPHInfluence, SurvivalModelMixin, _optional_rows,
                     check_survival_y)
from ._fast import gradient_changes, weight_derivatives
from ._objective import RiskSets, partial_likelihood_of_predictor

__all__ = ["NeuralCoxPHInfluence", "mlp_risk_function", "mlp_risk"]

ACTIVATIONS = ("tanh", "softplus")
TARGETS = ("loss", "predict")
METHODS = ("vif", "if", "newton", "loo")
SOLVERS = ("cg", "minres", "direct")


# --------------------------------------------------------------------------
# a multilayer perceptron as a risk function
# --------------------------------------------------------------------------
def _activate(z, activation):
    return anp.tanh(z) if activation == "tanh" else anp.logaddexp(0.0, z)


def mlp_risk(theta, X, *, layer_sizes, activation="tanh"):
    """Log-risk of a multilayer perceptron with parameters ``theta``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,)
        For each hidden layer of width ``b`` after a layer of width ``a``, its
        ``a * b`` weights (row-major ``(a, b)``) then its ``b`` biases; last,
        the ``layer_sizes[-1]`` output weights (no output bias: the partial
        likelihood does not see a constant shift of the log-risk).
    X : ndarray of shape (n, layer_sizes[0])
    layer_sizes : tuple of int
        ``(n_features, hidden_1, ..., hidden_k)``.
    activation : {"tanh", "softplus"}, default="tanh"
        Smooth activations only: influence needs second derivatives.

    Returns
    -------
    ndarray of shape (n,)
    """
    out, start = X, 0
    for a, b in zip(layer_sizes[:-1], layer_sizes[1:]):
        W = anp.reshape(theta[start:start + a * b], (a, b))
        bias = theta[start + a * b:start + a * b + b]
        out = _activate(anp.dot(out, W) + bias, activation)
        start += a * b + b
    return anp.dot(out, theta[start:start + layer_sizes[-1]])


def mlp_risk_function(n_features, hidden=(32, 32), *, activation="tanh", random_state=None):
    """A picklable MLP risk function and its initial parameters.

    Parameters
    ----------
    n_features : int
        Number of input columns.
    hidden : tuple of int, default=(32, 32)
        Widths of the hidden layers.
    activation : {"tanh", "softplus"}, default="tanh"
    random_state : int, RandomState instance or None, default=None
        Seed of the Glorot-uniform initial weights (biases start at 0).

    Returns
    -------
    risk_function : functools.partial
        :func:`mlp_risk` with the layer sizes bound: ``risk_function(theta, X)``.
    init_params : ndarray of shape (n_params,)
        ``n_params = sum_l (a_l + 1) b_l + hidden[-1]``.

    Examples
    --------
    >>> from skvif.survival import mlp_risk_function
    >>> risk, theta0 = mlp_risk_function(14, hidden=(64, 64), random_state=0)
    >>> theta0.size
    5184
    """
    if not isinstance(n_features, Integral) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}.")
    hidden = tuple(hidden)
    if not hidden or not all(isinstance(h, Integral) and h >= 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty tuple of positive integers, got {hidden!r}.")
    check_choice(activation, "activation", ACTIVATIONS)
    rng = check_random_state(random_state)
    sizes = (int(n_features),) + tuple(int(h) for h in hidden)
    parts = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (a + b))
        parts += [rng.uniform(-limit, limit, a * b), np.zeros(b)]
    parts.append(rng.uniform(-1.0, 1.0, sizes[-1]) / np.sqrt(sizes[-1]))
    return partial(mlp_risk, layer_sizes=sizes, activation=activation), np.concatenate(parts)


# --------------------------------------------------------------------------
# the objective in the engine's form
# --------------------------------------------------------------------------
def _neural_loss(theta, weights, *, risk_function, X, risk_sets, ties, alpha, case_weights,
                 smooth=False):
    """Negative log partial likelihood of ``risk_function(theta, X)`` plus the ridge."""
    nll = partial_likelihood_of_predictor(
        risk_function(theta, X), case_weights * weights, risk_sets, ties,
        count_weights=case_weights if smooth else None)
    return nll + 0.5 * alpha * anp.sum(theta * theta)


def _test_loss(theta, *, risk_function, X, risk_sets, ties):
    eta = risk_function(theta, X)
    return partial_likelihood_of_predictor(eta, np.ones(X.shape[0]), risk_sets, ties)[None]


def _test_predict(theta, *, risk_function, X):
    return risk_function(theta, X)


class NeuralCoxPHInfluence(SurvivalModelMixin, FittedInputMixin, BaseEstimator):
    r"""Cox model with a user log-risk function (e.g. a neural network), with influence.

    Parameters
    ----------
    risk_function : callable
        ``risk_function(theta, X) -> (n,)``, the log-risk of each row, written
        with :mod:`autograd.numpy` and twice differentiable in ``theta``. It
        must be picklable (a module-level function or a
        :func:`functools.partial` of one) for :func:`pickle` and joblib;
        :func:`mlp_risk_function` builds one.
    init_params : array-like of shape (n_params,)
        Starting parameters of the fit (not modified).
    ties : {"efron", "breslow"}, default="efron"
    alpha : float, default=1.0
        Ridge penalty (weight decay) ``alpha / 2 * ||theta||^2`` on the
        summed objective, see Notes.
    tol : float, default=1e-8
        The fit stops once the Euclidean norm of the objective's gradient is
        at most ``tol`` times the total case weight (a mean-loss gradient of
        ``tol``).
    max_iter : int, default=2000
        Maximum L-BFGS iterations of the fit (then at most 100 trust-region
        Newton-CG iterations polish it to ``tol``).

    Attributes
    ----------
    params_ : ndarray of shape (n_params,)
        The fitted parameters (a local minimum of the objective).
    n_iter_ : int
        Iterations of the fit (L-BFGS plus Newton-CG).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Defined when ``X`` had string column names.
    log_likelihood_ : float
        Log partial likelihood at ``params_`` (penalty excluded).

    See Also
    --------
    CoxPHInfluence : The linear model (``risk_function = X @ beta``), with
        closed-form fits and every target.

    Notes
    -----
    With :math:`\eta_i(\theta)` = ``risk_function(theta, X)[i]``, the objective
    is the summed negative log partial likelihood of
    :class:`CoxPHInfluence` with :math:`x_i^\top\beta` replaced by
    :math:`\eta_i(\theta)`,

    .. math::

        J(\theta) = -\sum_g \Big[\sum_{i \in D_g} w_i \eta_i - \bar w_g
            \sum_{k=0}^{d_g - 1}\log\Big(\sum_{j \in R_g} w_j e^{\eta_j}
            - \tfrac{k}{d_g}\sum_{j \in D_g} w_j e^{\eta_j}\Big)\Big]
            + \frac{\alpha}{2}\lVert\theta\rVert^2

    (Efron ties; Breslow drops the :math:`k/d_g` term; risk sets within
    strata, ``entry < t_g <= time``). Removing a row deletes it exactly, as
    for :class:`CoxPHInfluence`.

    **Influence, target first.** For a target :math:`T(\theta)` (the test
    loss, or the test log-risks), with :math:`H` the Hessian of :math:`J` at
    :math:`\hat\theta`, :math:`s = (H + \lambda I)^{-1}\nabla T` is found by
    conjugate gradients (or MINRES) on Hessian-vector products, then
    :math:`z = J_\eta s` (one Jacobian-vector product of the risk function,
    an :math:`n`-vector). By the chain rule the influence of row :math:`u`
    is :math:`z^\top \Delta_u \nabla_\eta \ell`, the leave-one-row-out change
    of the Cox gradient in :math:`\eta` (the ridge cancels): exactly the
    gradient change of a *linear* Cox model with the covariate :math:`z` at
    linear predictor :math:`\eta`, which
    :mod:`skvif.survival._fast` gives for all rows in :math:`O(n)`. All rows
    thus cost one solve per target value (with delayed entry summed over each
    row's (row, event) pairs, exactly). With ``groups``, and ``"if"`` with
    delayed entry, the generic engine evaluates the leave-out gradients instead
    (:math:`O(n)` gradients).

    **Accuracy.** The objective is not convex: the influence describes the
    local minimum the fit found, and ``"loo"`` refits warm-started from
    :math:`\hat\theta` converge to the nearby local minimum, which is what
    ``"vif"`` linearizes. ``damping`` :math:`\lambda > 0` biases the
    estimates towards 0 (by about :math:`\lambda / \mu` relative along a
    curvature direction :math:`\mu`). ``"vif"`` uses the full-data Hessian,
    positive definite at a minimum with ``alpha > 0``; ``"newton"`` uses the
    Hessian without the row, which need not be: on the tests' MLP (``n =
    300``, ``p = 61``, ``alpha = 1``) removing a row of case weight 2 leaves a
    smallest eigenvalue of -0.24 and a Newton step off by a factor 7. There,
    on the rows with the largest changes, ``"vif"`` agrees with exact refits
    to Pearson ``r = 0.97``, slope 0.83 (``tests/test_neural_cox.py``). At
    10^4 parameters (``benchmarks/bench_engine.py``) ``"vif"`` agreed with
    refits on random rows to slope 0.999 on SUPPORT (``alpha = 100``) and
    0.83 on synthetic data (``alpha = 10``, ``r = 0.98``). On the synthetic
    data a row whose removal sends the refit to another basin (a test-loss
    change of 5.9) is missed by ``"vif"`` and ``"newton"`` alike: confirm the
    rows that matter with ``method="loo"``.

    Examples
    --------
    >>> import numpy as np
    >>> from skvif.survival import NeuralCoxPHInfluence, mlp_risk_function
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> time = rng.exponential(np.exp(-np.tanh(X[:, 0]) - X[:, 1]))
    >>> y = np.c_[time, rng.random(200) < 0.8]
    >>> risk, theta0 = mlp_risk_function(3, hidden=(8,), random_state=0)
    >>> model = NeuralCoxPHInfluence(risk, theta0).fit(X[:150], y[:150])
    >>> model.influence_(X[150:], y[150:], target="loss").shape
    (150,)
    """

    _parameter_constraints = {
        "risk_function": [callable],
        "init_params": ["array-like"],
        "ties": [StrOptions({"efron", "breslow"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, risk_function, init_params, *, ties="efron", alpha=1.0, tol=1e-8,
                 max_iter=2000):
        self.risk_function = risk_function
        self.init_params = init_params
        self.ties = ties
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter

    def __sklearn_is_fitted__(self):
        return hasattr(self, "params_")

    # the test rows' strata, as CoxPHInfluence reads them
    _strata_codes = CoxPHInfluence._strata_codes

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None, *, strata=None, entry=None):
        """Fit the parameters by L-BFGS, polished by trust-region Newton-CG.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : structured array, array-like of shape (n_samples, 2) or DataFrame
            Event indicator and time, see :func:`~skvif.survival.check_survival_y`.
        sample_weight : array-like of shape (n_samples,), default=None
            Case weights, as for :class:`CoxPHInfluence`.
        strata : array-like of shape (n_samples,), default=None
            Stratum label per row (separate risk sets).
        entry : array-like of shape (n_samples,), default=None
            Delayed-entry times: a row is at risk on ``(entry, time]``.

        Returns
        -------
        self : NeuralCoxPHInfluence
        """
        self._validate_params()
        labels = row_labels(X)
        X = np.array(validate_X(self, X, ensure_min_samples=2), dtype=float)  # a copy
        n = X.shape[0]
        event, time = check_survival_y(y, n)
        w = _check_sample_weight(sample_weight, X, dtype=float, ensure_non_negative=True,
                                 copy=True)
        if strata is not None:
            self._strata_labels, strata = np.unique(check_labels(strata, n, "strata"),
                                                    return_inverse=True)
        else:
            self._strata_labels = None
        entry = _optional_rows(entry, n, "entry", dtype=float)
        if entry is not None and (not np.all(np.isfinite(entry)) or np.any(entry >= time)):
            raise ValueError("entry must be finite and strictly before time on every row.")
        if not np.any(event & (w > 0)):
            raise ValueError("No event has a positive sample weight.")
        theta0 = self._check_init(X)
        self._X, self._case_weights, self._entry = X, w, entry
        self._row_labels = labels
        self._risk_sets = RiskSets(time, event, entry, strata)
        self._ties, self._alpha = self.ties, float(self.alpha)
        self._gtol = self.tol * float(w.sum())

        loss = self._loss()
        gradient = grad(loss)
        ones = np.ones(n)
        first = scipy_minimize(lambda th: (float(loss(th, ones)), gradient(th, ones)), theta0,
                               jac=True, method="L-BFGS-B",
                               options={"maxiter": self.max_iter, "maxcor": 20,
                                        "ftol": 0.0, "gtol": 0.0})
        self.params_, polish, converged = minimize_hessian_free(loss, first.x, ones,
                                                                gtol=self._gtol, max_iter=100)
        self.n_iter_ = int(first.nit) + polish
        if not converged:
            norm = np.linalg.norm(gradient(self.params_, ones))
            warnings.warn(f"The fit stopped with gradient norm {norm:.3g} above "
                          f"tol * total weight = {self._gtol:.3g}; increase max_iter, alpha "
                          "or tol. Influence assumes fitted params.", ConvergenceWarning,
                          stacklevel=2)
        self.log_likelihood_ = -float(partial_likelihood_of_predictor(
            self.risk_function(self.params_, X), w, self._risk_sets, self._ties))
        return self

    def _check_init(self, X):
        try:
            theta = np.array(self.init_params, dtype=float)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"init_params must be a 1-D array of numbers: {exc}") from None
        if theta.ndim != 1 or theta.size == 0 or not np.all(np.isfinite(theta)):
            raise ValueError("init_params must be a non-empty finite 1-D array, got shape "
                             f"{theta.shape}.")
        try:
            eta = np.asarray(self.risk_function(theta, X))
        except Exception as exc:  # the user's code: say where it failed
            raise ValueError(f"risk_function(init_params, X) raised {exc!r}") from exc
        if eta.shape != (X.shape[0],) or not np.all(np.isfinite(eta)):
            raise ValueError(f"risk_function(theta, X) must return {X.shape[0]} finite values "
                             f"(one per row), got shape {eta.shape}.")
        return theta

    def _loss(self, smooth=False):
        """The fitted objective in the engine's form ``loss(theta, unit_weights)``."""
        return partial(_neural_loss, risk_function=self.risk_function, X=self._X,
                       risk_sets=self._risk_sets, ties=self._ties, alpha=self._alpha,
                       case_weights=self._case_weights, smooth=smooth)

    # -------------------------------------------------------------- predict
    def predict(self, X):
        """Log-risk ``risk_function(params_, X)`` (higher means higher risk).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        risk_score : ndarray of shape (n_samples,)
        """
        return np.asarray(self.risk_function(self.params_, self._validate_X(X)))

    # ------------------------------------------------------------ influence
    def influence_(self, X, y=None, *, target="loss", method="vif", rows=None, groups=None,
                   strata=None, solver="cg", damping=0.0, rtol=1e-8, maxiter=None,
                   as_frame=False, refine=None, return_exact=False):
        """Estimated change of a test loss or test predictions when each training row is removed.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Test rows.
        y : structured array or array-like of shape (n_rows, 2), default=None
            Outcomes of ``X``, for ``target="loss"``.
        target : {"loss", "predict"}, default="loss"
            ``"loss"``: the negative log partial likelihood of ``(X, y)``
            (no penalty), ``(n_units,)``; ``"predict"``: ``predict(X)``,
            ``(n_units, n_rows)``.
        method : {"vif", "if", "newton", "loo"}, default="vif"
            See :func:`skvif.vif`. ``"vif"`` and ``"if"`` cost one solve per
            target value for all rows; ``"newton"`` one conjugate-gradient
            solve with the leave-out Hessian per unit; ``"loo"`` one exact
            refit per unit (trust-region Newton-CG warm-started at
            ``params_``, to the fit's ``tol``).
        rows : array-like of int, default=None
            Positions of the training rows to remove, one at a time (default:
            all); the result's rows follow them.
        groups : array-like of shape (n_samples,), default=None
            A label per training row; a unit is then a whole group (generic
            path), rows of the result ordered as ``np.unique(groups)``.
        strata : array-like of shape (n_rows,), default=None
            Strata of ``(X, y)`` for ``target="loss"`` when the model has strata.
        solver : {"cg", "minres", "direct"}, default="cg"
            Solver of ``(H + damping I) s = grad T``: conjugate gradients or
            MINRES (for an indefinite ``H + damping I``) on Hessian-vector
            products, or a dense factorization (``p`` Hessian-vector products
            and a ``(p, p)`` array: small models only).
        damping : float, default=0.0
            Added to the Hessian's diagonal (non-convex objectives).
        rtol : float, default=1e-8
            Relative residual tolerance of the Krylov solves.
        maxiter : int, default=None
            Iteration cap of each Krylov solve (default ``10 * n_params``).
        as_frame : bool, default=False
            Return a pandas Series (``"loss"``) or DataFrame (``"predict"``)
            indexed by the training row (or group) labels.
        refine : int, default=None
            Recompute the ``refine`` units with the largest estimated change
            (root mean square over the target values) by exact refits
            (``method="loo"``'s), as the other estimators do.
        return_exact : bool, default=False
            Also return a boolean array: which rows of the result are exact
            refits (with ``as_frame``, also in ``result.attrs["exact"]``).

        Returns
        -------
        influence : ndarray or pandas object
            ``influence[u]`` estimates ``quantity(fit without u) -
            quantity(fit on all rows)``.
        is_exact : ndarray of shape (n_units,) of bool
            Only with ``return_exact=True``.
        """
        check_is_fitted(self)
        check_choice(target, "target", TARGETS)
        check_choice(method, "method", METHODS)
        check_choice(solver, "solver", SOLVERS)
        damping = check_nonnegative(damping, "damping")
        n = self._X.shape[0]
        units, index = self._units(rows, groups)
        X_new = self._validate_X(X)
        if target == "loss":
            event, time = check_survival_y(y, X_new.shape[0])
            codes = None if self._strata_labels is None else self._strata_codes(
                strata, X_new.shape[0])
            quantity = partial(_test_loss, risk_function=self.risk_function, X=X_new,
                               risk_sets=RiskSets(time, event, None, codes), ties=self._ties)
        else:
            quantity = partial(_test_predict, risk_function=self.risk_function, X=X_new)
        if (method == "vif" or (method == "if" and self._entry is None)) and groups is None:
            result = self._target_first(quantity, method, solver, damping, rtol,
                                        maxiter)[unit_rows(units)]
        elif method == "loo":
            result = self._refits(quantity, units)
        else:  # the generic engine (delayed entry, groups, "newton")
            result = influence(self._loss(), self.params_.copy(), n, units, target=quantity,
                               method=method, solver="cg" if solver == "minres" else solver,
                               damping=damping, loss_if=self._loss(smooth=True),
                               check_indefinite=False)
        refine = check_refine(refine, len(units))
        is_exact = np.full(len(units), method == "loo")
        if refine and method != "loo":
            result, is_exact = refine_rows(result, refine, lambda top: self._refits(
                quantity, [units[i] for i in top]), None)
        if target == "loss":
            out = pd.Series(result[:, 0], index=index, name="loss") if as_frame else result[:, 0]
        else:
            out = (pd.DataFrame(result, index=index, columns=row_labels(X)) if as_frame
                   else result)
        return with_exactness(out, is_exact, index, as_frame, refine, return_exact)

    def _units(self, rows, groups):
        n = self._X.shape[0]
        if groups is not None:
            if rows is not None:
                raise ValueError("Pass rows or groups, not both.")
            units, labels = units_from_groups(groups, n)
            return check_units(units, n), labels
        if rows is None:
            return check_units(None, n), self._row_labels.copy()
        rows = np.atleast_1d(np.asarray(rows))
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise TypeError("rows must be a 1-D array of integer positions.")
        units = check_units([np.array([r]) for r in rows], n, "rows")
        return units, self._row_labels[rows]

    def _target_first(self, quantity, method, solver, damping, rtol, maxiter):
        """All rows' influence on the ``m`` target values, ``(n, m)``, by ``m`` solves."""
        theta, X, w = self.params_, self._X, self._case_weights
        ones = np.ones(X.shape[0])
        G = _jacobian(quantity, theta)  # (m, p)
        hess = HessianSolver(self._loss(), theta, ones, solver=solver, damping=damping,
                             cg_rtol=rtol, cg_maxiter=maxiter, check_indefinite=False)
        S = hess.solve(G.T).reshape(theta.size, -1)  # (p, m)
        jvp = make_jvp_reversemode(self.risk_function)(theta, X)
        with warnings.catch_warnings():  # autograd warns spuriously on the transpose trick
            warnings.filterwarnings("ignore", "Output seems independent of input")
            Z = np.stack([np.asarray(jvp(S[:, j])) for j in range(S.shape[1])], axis=1)
        eta = np.asarray(self.risk_function(theta, X))
        # the linear Cox model with covariates [eta, z_1..z_m] at coefficients [1, 0..0]
        # has linear predictor eta and gradient in coefficient j equal to z_j^T grad_eta
        design = np.column_stack([eta, Z])
        coef = np.zeros(design.shape[1])
        coef[0] = 1.0
        if method == "vif":
            return gradient_changes(coef, design, self._risk_sets, w, self._ties)[:, 1:]
        return weight_derivatives(coef, design, self._risk_sets, w, self._ties)[1:].T

    def _refits(self, quantity, units):
        """Exact refits warm-started at ``params_``: quantity changes, ``(k, m)``."""
        loss, n = self._loss(), self._X.shape[0]
        base = np.ravel(quantity(self.params_))
        out, failed = [], 0
        for idx in units:
            weights = np.ones(n)
            weights[idx] = 0.0
            theta, _, converged = minimize_hessian_free(loss, self.params_, weights,
                                                        gtol=self._gtol, max_iter=100)
            failed += not converged
            out.append(np.ravel(quantity(theta)) - base)
        if failed:
            warnings.warn(f"{failed} exact refits did not reach the fit's tolerance in 100 "
                          "trust-region iterations.", ConvergenceWarning, stacklevel=3)
        return np.array(out)
