r"""Exact where it matters: refined influence and the robustness of a conclusion.

Two tools built on the engine's estimates and its exact refits
(``method="loo"``):

* :func:`refine_rows` recomputes the units with the largest estimated change
  by exact refit (the ``refine=`` option of :func:`skvif.vif` and of every
  ``influence_``);
* :func:`robustness` answers "how much data would it take to change the
  conclusion?": the smallest set of units whose removal changes the sign of a
  scalar target, makes it non-significant, or significant with the opposite
  sign -- the approximate maximum influence perturbation of Broderick,
  Giordano & Meager (*An automatic finite-sample robustness metric*, 2020),
  refined greedily and confirmed by an exact refit.
"""

import numbers
import warnings
from dataclasses import dataclass, field

import autograd.numpy as anp
import numpy as np
import pandas as pd
from autograd import grad, jacobian
from scipy import stats

from ._engine import (AUTO_CG_MIN_PARAMS, _as_batched, _batch_hessians,
                      check_choice, check_nonnegative, check_units, influence)

__all__ = ["robustness", "Robustness", "RobustnessReport", "GOALS", "refine_rows",
           "check_refine", "with_exactness", "parameter_scale", "hessian_standard_error"]

GOALS = ("sign", "significance", "opposite")
_GOAL_WORDS = {"sign": "changes the sign of",
               "significance": "makes {name} non-significant",
               "opposite": "makes {name} significant with the opposite sign"}


# --------------------------------------------------------------------------
# refine=k
# --------------------------------------------------------------------------
def check_refine(refine, n_units):
    """``refine``: None or an integer >= 0 (clipped to the number of units)."""
    if refine is None:
        return 0
    if not isinstance(refine, numbers.Integral) or isinstance(refine, bool) or refine < 0:
        raise ValueError(f"refine must be None or an integer >= 0, got {refine!r}.")
    return min(int(refine), n_units)


def refinement_order(estimate, scale=None):
    """Units by decreasing size of their estimated change.

    The size of unit ``u`` is the root mean square over the columns of
    ``estimate[u] / scale`` (Cook's-distance-like: with ``scale`` the standard
    errors, the change of the coefficients in their own standard errors); for
    one column it is ``|estimate[u]|``. A non-finite estimate ranks first.
    """
    E = np.reshape(estimate, (estimate.shape[0], -1))
    if scale is not None:
        E = E / np.reshape(scale, (1, -1))
    with np.errstate(invalid="ignore"):
        size = np.sqrt(np.mean(E ** 2, axis=1))
    size = np.where(np.isfinite(size), size, np.inf)
    return np.argsort(-size, kind="stable")


def refine_rows(estimate, refine, exact, scale=None, in_place=False):
    """Replace the ``refine`` largest estimated changes by exact ones.

    Parameters
    ----------
    estimate : ndarray of shape (n_units, ...)
        The fast estimate for every unit (not modified unless ``in_place``).
    refine : int
        How many units to recompute.
    exact : callable
        ``exact(positions) -> ndarray (len(positions), ...)``: exact refits of
        the units at those positions.
    scale : array-like, default=None
        Per-column scale of the ranking (see :func:`refinement_order`).
    in_place : bool, default=False
        Write the exact rows into ``estimate`` (a float array) itself.

    Returns
    -------
    refined : ndarray like ``estimate``
    is_exact : ndarray of shape (n_units,) of bool
    """
    refined = estimate if in_place else np.array(estimate, dtype=float)
    is_exact = np.zeros(refined.shape[0], dtype=bool)
    if refine:
        top = np.sort(refinement_order(refined, scale)[:refine])
        refined[top] = np.reshape(exact(top), refined[top].shape)
        is_exact[top] = True
    return refined, is_exact


def parameter_scale(results):
    """``sqrt(|diag H^-1|)`` of an :class:`~skvif.InfluenceResults`, or ``None``.

    The standard errors when the loss is a negative log-likelihood: ranks
    parameter changes in units that do not depend on how the features are
    scaled; ``None`` (unscaled) from ``AUTO_CG_MIN_PARAMS`` parameters on or
    when the Hessian is singular.
    """
    if results.n_params >= AUTO_CG_MIN_PARAMS:
        return None
    try:
        scale = results.standard_errors
    except ValueError:  # singular Hessian
        return None
    return scale if np.all(np.isfinite(scale) & (scale > 0)) else None


def with_exactness(out, is_exact, index, as_frame, refine, return_exact):
    """Attach the exact-refit marker to an ``influence_`` result.

    With ``as_frame`` the marker is a boolean Series named ``exact`` indexed
    like the result, also stored in ``out.attrs["exact"]`` when refined.
    """
    if as_frame:
        is_exact = pd.Series(is_exact, index=index, name="exact")
        if refine:
            out.attrs["exact"] = is_exact
    return (out, is_exact) if return_exact else out


# --------------------------------------------------------------------------
# standard errors as functions of params and weights
# --------------------------------------------------------------------------
class hessian_standard_error:
    """``se_j(params, weights) = sqrt([H(params; weights)^-1]_jj)``.

    The model-based standard error of parameter ``j`` of a negative
    log-likelihood ``loss(params, weights)`` (R's ``fit$var``; with a ridge
    term in the loss, the inverse of the penalized Hessian, as
    :meth:`skvif.CoxPHInfluence.summary` reports). Written with autograd, so
    its derivatives in the params and the weights are exact; ``many`` evaluates
    it for ``k`` weight vectors at once (batched Hessians).
    """

    def __init__(self, loss, j, batched=False):
        self.loss, self.j, self.batched = loss, int(j), batched
        self._hessian = jacobian(grad(loss))

    def __call__(self, params, weights):
        return anp.sqrt(anp.linalg.inv(self._hessian(params, weights))[self.j, self.j])

    def many(self, params, W, derivatives=None):
        """For ``k`` weight vectors ``W (k, n)`` at once (the model's closed-form
        Hessians when ``derivatives`` has ``gradient_and_hessian``)."""
        P = np.tile(params, (W.shape[0], 1))
        closed_form = getattr(derivatives, "gradient_and_hessian", None)
        H = (closed_form(P, W)[1] if closed_form is not None else
             _batch_hessians(_as_batched(self.loss, self.batched), P, W))
        return np.sqrt(np.linalg.inv(H)[:, self.j, self.j])


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Robustness:
    """The smallest removal found for one goal (see :func:`robustness`).

    Parameters
    ----------
    goal : {"sign", "significance", "opposite"}
    found : bool
        A set within ``max_fraction`` of the units was found and confirmed by
        an exact refit. When ``False``, ``units`` is empty and the refit
        numbers are those of the largest set tried.
    n_removed : int
        Number of units in the set (0 when the conclusion does not hold on
        the full data to begin with).
    n_units : int
    units : tuple
        Labels of the removed units.
    estimate, se, ci_lower, ci_upper, p_value : float
        The target, its standard error, confidence interval and two-sided
        Wald p-value refitted without the set (``se`` and the rest are NaN
        without a standard error).
    confirmed : bool
        The exact refit without ``units`` crosses the boundary.
    n_linear : int or None
        The first-order answer (the units' linear influence summed to the
        boundary, no refit), or ``None`` when it finds none.
    n_refits : int
        Exact refits used.
    max_removed : int
        The most units the search may remove (``max_fraction`` of them).
    name : str
        The target's name in messages.
    unit_name : str
        What a unit is in messages ("rows", "groups", ...).
    level : float
        Confidence level of the interval, ``1 - alpha_level``.
    """

    goal: str
    found: bool
    n_removed: int
    n_units: int
    units: tuple
    estimate: float
    se: float
    ci_lower: float
    ci_upper: float
    p_value: float
    confirmed: bool
    n_linear: object
    n_refits: int
    max_removed: int = 0
    name: str = "target"
    unit_name: str = "units"
    level: float = 0.95

    @property
    def fraction(self):
        """``n_removed / n_units``."""
        return self.n_removed / self.n_units

    def describe(self):
        """One sentence, e.g. "dropping 3 of 432 rows (0.7 %) makes fin non-significant".

        Returns
        -------
        str
        """
        what = _GOAL_WORDS[self.goal].format(name=self.name)
        if self.goal == "sign":
            what = f"{what} {self.name}"
        ci = ("" if not np.isfinite(self.se) else
              f" ({100 * self.level:g} % CI {self.ci_lower:.4g} to {self.ci_upper:.4g})")
        if not self.found:
            return (f"no set of at most {self.max_removed} of {self.n_units} {self.unit_name} "
                    f"({100 * self.max_removed / self.n_units:.1f} %) found that {what} "
                    "(not found within max_fraction)")
        if self.n_removed == 0:
            return f"already on the full data: {self.name} = {self.estimate:.4g}{ci}"
        shown = ", ".join(map(str, self.units[:20])) + (", ..." if len(self.units) > 20 else "")
        return (f"dropping {self.n_removed} of {self.n_units} {self.unit_name} "
                f"({100 * self.fraction:.1f} %) {what}: {self.unit_name} {shown}; refit "
                f"{self.estimate:.4g}{ci}, "
                f"{'confirmed by refit' if self.confirmed else 'NOT confirmed by refit'}")

    def __str__(self):
        return self.describe()


@dataclass(frozen=True)
class RobustnessReport:
    """The answers of :func:`robustness` for each goal.

    ``report["significance"]`` is a :class:`Robustness`; :meth:`to_frame` is
    one row per goal; ``print(report)`` reads like a sentence per goal.

    Parameters
    ----------
    name : str
        The target's name.
    estimate : float
        The target on the full data.
    se : float
        Its standard error on the full data (NaN without one).
    alpha_level : float
        Significance level of the goals.
    results : dict
        :class:`Robustness` per goal.
    """

    name: str
    estimate: float
    se: float
    alpha_level: float
    results: dict = field(default_factory=dict)

    def __getitem__(self, goal):
        return self.results[goal]

    def __iter__(self):
        return iter(self.results.values())

    def to_frame(self):
        """The answers as a table.

        Returns
        -------
        pandas.DataFrame
            One row per goal.
        """
        rows = {goal: {"found": r.found, "n_removed": r.n_removed, "fraction": r.fraction,
                       "units": list(r.units), "estimate": r.estimate, "se": r.se,
                       "ci_lower": r.ci_lower, "ci_upper": r.ci_upper, "p_value": r.p_value,
                       "confirmed": r.confirmed, "n_linear": r.n_linear,
                       "n_refits": r.n_refits}
                for goal, r in self.results.items()}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "goal"
        return frame

    def __str__(self):
        se = f", se {self.se:.4g}" if np.isfinite(self.se) else ""
        head = (f"Robustness of {self.name} = {self.estimate:.4g}{se} "
                f"(alpha = {self.alpha_level:g}):")
        return "\n".join([head] + [f"  {goal}: {r.describe()}" for goal, r in
                                   self.results.items()])

    def __repr__(self):
        return str(self)


# --------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------
class _Problem:
    """A fitted objective with a scalar target (and optional standard error) over units."""

    def __init__(self, loss, params, n_samples, units, target, se, *, method, batched,
                 derivatives, loss_if, damping, tol, max_iter, strongly_convex,
                 exact_target=None):
        self.loss, self.theta, self.n = loss, params, n_samples
        self.units, self.target, self.se = units, target, se
        # the quantity judged at every refit; ``target`` (differentiable) guides the search
        self.exact_target = target if exact_target is None else exact_target
        self.method, self.batched, self.derivatives = method, batched, derivatives
        self.loss_if, self.damping = loss_if, damping
        self.options = dict(tol=tol, max_iter=max_iter, strongly_convex=strongly_convex)
        self.n_refits = 0

    def values(self, theta, weights):
        t = float(self.exact_target(theta))
        s = float(self.se(theta, weights)) if self.se is not None else np.nan
        return t, s

    def _weighted(self, loss, weights):
        if loss is None or np.all(weights == 1.0):
            return loss
        return lambda P, W: loss(P, W * weights)

    def linear_changes(self, theta, weights, positions):
        """Estimated changes of (target, se) when each unit at ``positions`` is also removed."""
        full = np.all(weights == 1.0)
        units = [self.units[i] for i in positions]
        delta = influence(self._weighted(self.loss, weights), theta, self.n, units,
                          method=self.method, batched=self.batched, damping=self.damping,
                          derivatives=self.derivatives if full else None,
                          loss_if=self._weighted(self.loss_if, weights), **self.options)
        dt = delta @ grad(lambda th: self.target(th))(theta)
        if self.se is None:
            return dt, np.zeros_like(dt)
        ds = delta @ grad(self.se, 0)(theta, weights)
        if self.method == "if":
            dw = grad(self.se, 1)(theta, weights)
            ds = ds - np.array([dw[idx].sum() for idx in units])
        else:
            W = np.tile(weights, (len(units), 1))
            for i, idx in enumerate(units):
                W[i, idx] = 0.0
            many = getattr(self.se, "many", None)
            removed = (many(theta, W, self.derivatives) if many is not None else
                       np.array([float(self.se(theta, w)) for w in W]))
            ds = ds + removed - float(self.se(theta, weights))
        return dt, ds

    def refit(self, positions):
        """Exact refit without the units at ``positions``: (params, weights, converged)."""
        self.n_refits += 1
        rows = np.unique(np.concatenate([self.units[i] for i in positions]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # the model's closed forms hold here: a full-data Hessian at theta, and
            # gradients and Hessians at any weights (ModelDerivatives)
            delta = influence(self.loss, self.theta, self.n, [rows], method="loo",
                              batched=self.batched, damping=self.damping,
                              derivatives=self.derivatives, **self.options)[0]
        weights = np.ones(self.n)
        weights[rows] = 0.0
        converged = not caught and np.all(np.isfinite(delta))
        return self.theta + delta, weights, converged


def _margin(goal, sign, z, t, s):
    """Positive while the conclusion holds; removal must make it negative."""
    if goal == "sign":
        return sign * t
    return sign * t - z * s if goal == "significance" else sign * t + z * s


def _search(problem, goal, z, sign, max_removed):
    """Greedy removal guided by re-estimated influence, confirmed and pruned by refits."""
    removed, theta, weights = [], problem.theta, np.ones(problem.n)
    t, s = problem.values(theta, weights)
    n_linear, converged = None, True
    first = True
    while _margin(goal, sign, z, t, s) >= 0 or not converged:
        budget = max_removed - len(removed)
        if budget <= 0:
            return None, n_linear, (t, s)
        remaining = np.setdiff1d(np.arange(len(problem.units)), removed)
        dt, ds = problem.linear_changes(theta, weights, remaining)
        dm = _margin(goal, sign, z, dt, ds)  # linear in (t, se)
        dm = np.where(np.isfinite(dm), dm, 0.0)
        order = np.argsort(dm, kind="stable")
        reach = _margin(goal, sign, z, t, s) + np.cumsum(dm[order])
        hit = np.flatnonzero(reach < 0)
        if first:
            n_linear = int(hit[0]) + 1 if hit.size else None
            first = False
        if hit.size:
            take = min(int(hit[0]) + 1, budget)
        else:  # the linear estimate reaches no boundary: move towards it
            take = min(max(1, int(np.sum(dm < 0))), budget)
        removed = removed + list(remaining[order[:take]])
        theta, weights, converged = problem.refit(removed)
        t, s = problem.values(theta, weights)
    # prune: drop units the refit does not need, least helpful first
    for u in list(reversed(removed)):
        if len(removed) == 1:
            break
        trial = [v for v in removed if v != u]
        theta_t, weights_t, conv_t = problem.refit(trial)
        t_t, s_t = problem.values(theta_t, weights_t)
        if conv_t and _margin(goal, sign, z, t_t, s_t) < 0:
            removed, t, s = trial, t_t, s_t
    return removed, n_linear, (t, s)


def search_all(problem, goals, alpha_level, labels, max_fraction, name, unit_name):
    """Run :func:`_search` for each goal and wrap the answers in a :class:`RobustnessReport`."""
    z = stats.norm.ppf(1 - alpha_level / 2)
    t0, s0 = problem.values(problem.theta, np.ones(problem.n))
    sign = 1.0 if t0 >= 0 else -1.0
    n_units = len(problem.units)
    max_removed = max(1, int(np.floor(max_fraction * n_units)))
    report = RobustnessReport(name=name, estimate=t0, se=s0, alpha_level=alpha_level)
    for goal in goals:
        problem.n_refits = 0
        removed, n_linear, (t, s) = _search(problem, goal, z, sign, max_removed)
        found = removed is not None
        crossed = _margin(goal, sign, z, t, s) < 0
        p = 2 * stats.norm.sf(abs(t / s)) if np.isfinite(s) and s > 0 else np.nan
        report.results[goal] = Robustness(
            goal=goal, found=found, n_removed=len(removed) if found else 0, n_units=n_units,
            units=tuple(labels[i] for i in sorted(removed)) if found else (), estimate=t, se=s,
            ci_lower=t - z * s, ci_upper=t + z * s, p_value=p, confirmed=found and crossed,
            n_linear=n_linear, n_refits=problem.n_refits, max_removed=max_removed,
            name=name, unit_name=unit_name, level=1 - alpha_level)
    return report


def check_goals(goals, has_se):
    if goals is None:
        return GOALS if has_se else ("sign",)
    goals = (goals,) if isinstance(goals, str) else tuple(goals)
    for goal in goals:
        check_choice(goal, "goal", GOALS)
    if not has_se and set(goals) - {"sign"}:
        raise ValueError("goals 'significance' and 'opposite' need a standard error (se=).")
    return goals


def check_robustness_options(alpha_level, max_fraction, method):
    if not isinstance(alpha_level, numbers.Real) or not 0 < alpha_level < 1:
        raise ValueError(f"alpha_level must be in (0, 1), got {alpha_level!r}.")
    if not isinstance(max_fraction, numbers.Real) or not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction!r}.")
    check_choice(method, "method", ("vif", "if", "newton"))


def robustness(loss, params, n_samples, target, *, se=None, alpha_level=0.05, goals=None,
               units=None, labels=None, method="vif", max_fraction=0.1, damping=0.0,
               batched=False, tol=1e-10, max_iter=100, name=None):
    r"""Smallest removal of units that changes a conclusion about a scalar target.

    For a fitted loss and a scalar target (e.g. one coefficient), finds a
    small set of units whose removal (a) changes the target's sign
    (``"sign"``), (b) makes it not significantly different from zero in its
    original direction at level ``alpha_level`` (``"significance"``), (c)
    makes it significant with the opposite sign (``"opposite"``). Every
    claimed set is confirmed by an exact refit.

    Parameters
    ----------
    loss : callable
        ``loss(params, weights) -> float`` as for :func:`skvif.vif` (weight 0
        deletes a sample exactly).
    params : array-like of shape (n_params,)
        The fitted parameters.
    n_samples : int
    target : int or callable
        The index of a parameter, or ``target(params) -> float`` written
        with :mod:`autograd.numpy`.
    se : callable, default=None
        ``se(params, weights) -> float``, the target's standard error as a
        function of the params and weights, written with autograd (e.g.
        :class:`hessian_standard_error` for a parameter of a negative
        log-likelihood). ``None``: only the sign goal.
    alpha_level : float, default=0.05
        Significance level of the two-sided Wald test ``|target| / se >
        z_{1 - alpha/2}``.
    goals : str or sequence of str, default=None
        Any of ``"sign"``, ``"significance"``, ``"opposite"``; ``None``: all
        (only ``"sign"`` without ``se``).
    units : None or list of array-like of int, default=None
        As for :func:`skvif.vif`: each sample alone, or groups removed together.
    labels : sequence, default=None
        A label per unit for the answer (default ``0 .. n_units - 1``).
    method : {"vif", "if", "newton"}, default="vif"
        How the influence is estimated between refits (see :func:`skvif.vif`).
        With ``"if"`` the first-order answer ``n_linear`` is exactly the
        approximate maximum influence perturbation of Broderick et al.
        (R's ``zaminfluence``).
    max_fraction : float, default=0.1
        Give up (``found=False``) beyond this fraction of the units.
    damping : float, default=0.0
    batched : bool, default=False
        See :func:`skvif.vif`.
    tol : float, default=1e-10
        Convergence tolerance of the exact refits.
    max_iter : int, default=100
        Newton iterations of the exact refits.
    name : str, default=None
        Name of the target in the messages.

    Returns
    -------
    report : RobustnessReport
        One :class:`Robustness` per goal; ``report.to_frame()`` is a DataFrame.

    Notes
    -----
    With :math:`q` the quantity whose sign decides the goal -- :math:`s\,t`
    for the sign, :math:`s\,t - z\,\mathrm{se}` for significance and
    :math:`s\,t + z\,\mathrm{se}` for the opposite significance, :math:`s`
    the sign of the target on the full data -- the first-order answer sorts
    the estimated changes :math:`\Delta q_u` (the target's through its
    gradient, the standard error's through its gradient in the params plus
    its direct change in the weights) and counts the most negative ones until
    :math:`q + \sum \Delta q_u < 0` (``n_linear``). The search then removes
    those units, refits exactly, and while the refit has not crossed the
    boundary re-estimates the influence of the remaining units *at the refit*
    (with the removed units' weights at zero) and removes the next ones it
    needs; once a refit crosses, each removed unit (last added first) is put
    back if a refit without it still crosses. The answer is a set confirmed
    by refit, not necessarily the smallest possible one (that is a
    combinatorial search); the tests compare it with exhaustive search on
    small data sets.

    Examples
    --------
    The sign of a mean rests on how many observations?

    >>> import numpy as np
    >>> import autograd.numpy as anp
    >>> from skvif import robustness
    >>> x = np.array([-1.0, -0.5, 0.2, 0.4, 0.6, 1.5, 2.0])
    >>> loss = lambda m, w: 0.5 * anp.sum(w * (x - m[0]) ** 2)
    >>> report = robustness(loss, [x.mean()], 7, 0, max_fraction=0.5)
    >>> report["sign"].n_removed, report["sign"].units
    (2, (5, 6))
    """
    theta = np.array(params, dtype=float)
    if theta.ndim != 1:
        raise ValueError(f"params must be a 1-D array, got shape {theta.shape}.")
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if not 0 <= target < theta.size:
            raise ValueError(f"target index {target} is outside [0, {theta.size}).")
        index = int(target)
        name = f"params[{index}]" if name is None else name
        target = (lambda th: th[index])
    elif not callable(target):
        raise TypeError("target must be a parameter index or a callable target(params).")
    if se is not None and not callable(se):
        raise TypeError("se must be None or a callable se(params, weights).")
    check_robustness_options(alpha_level, max_fraction, method)
    goals = check_goals(goals, se is not None)
    units = check_units(units, int(n_samples))
    labels = list(range(len(units))) if labels is None else list(labels)
    if len(labels) != len(units):
        raise ValueError(f"labels has {len(labels)} entries for {len(units)} units.")
    problem = _Problem(loss, theta, int(n_samples), units, target, se, method=method,
                       batched=batched, derivatives=None, loss_if=None,
                       damping=check_nonnegative(damping, "damping"), tol=tol,
                       max_iter=max_iter, strongly_convex=False)
    return search_all(problem, goals, alpha_level, labels, max_fraction,
                      name or "target", "units")
