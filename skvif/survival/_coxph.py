"""``CoxPHInfluence``: a Cox proportional hazards model that explains itself."""

import warnings
from functools import partial
from numbers import Integral, Real

import autograd.numpy as anp
import numpy as np
import pandas as pd
from lifelines.utils import concordance_index
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from .._base import (FittedInputMixin, InfluenceCacheMixin, check_identifiable,
                     check_influence_options, check_labels, collinear_columns,
                     collinearity_message, feature_names, feature_position, groups_key,
                     row_labels, units_from_groups, validate_X)
from .._engine import (METHODS, InfluenceResults, check_choice, check_n_jobs, check_units,
                       minimize)
from .._robustness import (_Problem, check_goals, check_refine, check_robustness_options,
                           hessian_standard_error, parameter_scale, refine_rows, search_all,
                           with_exactness)
from ._attributes import LifelinesAttributesMixin
from ._bridge import FittedElsewhereMixin
from ._fast import CoxCurvature, CoxDerivatives
from ._formula import check_no_factors, complete_cases
from ._objective import (RiskSets, breslow_cumulative_hazard,
                         negative_log_partial_likelihood, survival_probabilities)

__all__ = ["CoxPHInfluence", "check_survival_y"]

TARGETS = ("coef", "predict", "survival", "loss")
SCALES = ("raw", "se")
# relative rounding of the delayed-entry risk-set sums above which fit warns
ENTRY_ROUNDING_WARN = 1e-6

# column names read as the event indicator / the time of a 2-column y (lower case)
EVENT_NAMES = ("event", "events", "status", "arrest", "cens", "death", "dead", "died",
               "fail", "failure", "failed", "delta", "observed", "e", "d")
TIME_NAMES = ("time", "times", "duration", "durations", "week", "weeks", "day", "days",
              "month", "months", "year", "years", "t", "futime", "stop", "tte", "lenfol",
              "survival_time", "time_to_event")


def _event_time_by_name(names):
    """``(event name, time name)`` when the two names are recognisable, else ``None``."""
    if names is None or len(names) != 2:
        return None
    lower = [str(name).lower() for name in names]
    for event, time in ((0, 1), (1, 0)):
        if lower[event] in EVENT_NAMES and lower[time] in TIME_NAMES:
            return names[event], names[time]
    return None


def check_survival_y(y, n_samples=None):
    """Read survival outcomes as ``(event, time)`` arrays.

    Parameters
    ----------
    y : structured array, array-like of shape (n, 2) or DataFrame
        A structured array with a boolean event field then a float time field
        (as ``sksurv.util.Surv.from_arrays(event, time)`` makes; any names), or
        two columns ``[time, event]``. Fields or DataFrame columns with
        recognisable names (``event``, ``status``, ``arrest``, ``cens``,
        ``death``, ... and ``time``, ``duration``, ``week``, ``days``, ...;
        see ``EVENT_NAMES`` and ``TIME_NAMES``) are read by name, in either order.
    n_samples : int, default=None
        Expected number of rows.

    Returns
    -------
    event : ndarray of bool
    time : ndarray of float
    """
    if y is None:
        raise ValueError("y is required: survival outcomes (event indicator and time); "
                         "this estimator requires y to be passed, but the target y is None.")
    names = getattr(getattr(y, "dtype", None), "names", None)
    if names is not None:
        if len(names) != 2:
            raise ValueError(f"Structured y must have 2 fields (event, time), got {names}.")
        event_name, time_name = _event_time_by_name(list(names)) or names
        event, time = np.asarray(y[event_name]), np.asarray(y[time_name])
    elif _event_time_by_name(list(getattr(y, "columns", []))) is not None:
        event_name, time_name = _event_time_by_name(list(y.columns))
        event, time = y[event_name].to_numpy(), y[time_name].to_numpy()
        names = (event_name, time_name)
    else:
        arr = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                "y must be a structured array (event, time) as sksurv.util.Surv makes, "
                f"or 2 columns [time, event]; got shape {arr.shape}.")
        time, event = arr[:, 0], arr[:, 1]
    if np.iscomplexobj(time) or np.iscomplexobj(event):
        raise ValueError("Complex data not supported: survival times and event indicators "
                         "must be real.")
    try:
        time = np.array(time, dtype=float)  # copies: never a view of the user's y
        event_float = np.array(event, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Survival times and event indicators must be numeric: {exc}") from None
    if not np.all(np.isin(event_float, (0.0, 1.0))):
        bad = event_float[~np.isin(event_float, (0.0, 1.0))][0]
        where = (f"field or column {names[0]!r}" if names is not None else
                 "the second column of a 2-column y [time, event]")
        if names is None and hasattr(y, "columns"):
            where += (f", read by position because its column names "
                      f"{', '.join(map(repr, y.columns))} are not recognised as event and time")
        raise ValueError(f"The event indicator ({where}) must be boolean or 0/1, "
                         f"got {float(bad)!r}.")
    if not np.all(np.isfinite(time)):
        raise ValueError("Survival times contain NaN or infinite values.")
    if np.any(time < 0):
        raise ValueError("Survival times must be non-negative.")
    if n_samples is not None and time.shape[0] != n_samples:
        raise ValueError(f"y has {time.shape[0]} rows but X has {n_samples}.")
    event = event_float.astype(bool)
    if not event.any():
        raise ValueError("All observations are censored: at least one event is needed.")
    return event, time


def _check_clusters(n_clusters, n_features):
    """The sandwich variance needs more clusters than coefficients.

    The cluster influences sum to ``H^-1 grad J = 0`` at the fit, so ``D.T @ D``
    has rank at most ``n_clusters - 1``: one cluster gives zero variance, and
    at most ``n_features`` clusters a singular one (R reports both silently).
    """
    if n_clusters < 2:
        raise ValueError("summary(robust=True) with a single cluster: the robust variance "
                         "is zero by construction (the cluster's score is the total score, "
                         "0 at the fit). Use robust=False or more clusters.")
    if n_clusters <= n_features:
        warnings.warn(f"summary(robust=True) with {n_clusters} clusters for {n_features} "
                      f"coefficients: the robust covariance has rank at most "
                      f"{n_clusters - 1} (singular), so its standard errors and p-values "
                      "are not meaningful. Use robust=False or more clusters.",
                      UserWarning, stacklevel=3)


def _optional_rows(values, n_samples, name, dtype=None):
    if values is None:
        return None
    arr = np.array(values.to_numpy() if hasattr(values, "to_numpy") else values, dtype=dtype)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(f"{name} must have one value per row ({n_samples}), got shape "
                         f"{arr.shape}.")
    return arr


def _unit_loss(params, weights, *, X, risk_sets, ties, alpha, case_weights, smooth=False):
    """The engine's view: unit weights multiply the case weights."""
    return negative_log_partial_likelihood(
        params, case_weights * weights, X, risk_sets, ties, alpha,
        count_weights=case_weights if smooth else None)


def _survival_target(params, weights, *, X, risk_sets, case_weights, X_new, strata_new, times):
    return anp.ravel(survival_probabilities(params, case_weights * weights, X, risk_sets,
                                           X_new, strata_new, times))


def _linear_target(params, *, X_new):
    return X_new @ params


def _test_loss_target(params, *, X, risk_sets, ties):
    return negative_log_partial_likelihood(params, np.ones(X.shape[0]), X, risk_sets,
                                           ties)[None]


class SurvivalModelMixin:
    """Shared by the Cox estimators: ``y`` is required; ``score`` is Harrell's concordance."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def score(self, X, y):
        """Harrell's concordance index of ``predict(X)`` with the outcomes ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : structured array, array-like of shape (n_samples, 2) or DataFrame

        Returns
        -------
        cindex : float
        """
        risk = self.predict(X)
        event, time = check_survival_y(y, risk.shape[0])
        return concordance_index(time, -risk, event)


class CoxPHInfluence(SurvivalModelMixin, FittedElsewhereMixin, LifelinesAttributesMixin,
                     FittedInputMixin, InfluenceCacheMixin, BaseEstimator):
    r"""Cox proportional hazards model with influence diagnostics.

    Fits the Cox model by Newton's method and reports how each training row (or
    group of rows) moves the coefficients, predictions, survival curves or a
    test loss when removed, without refitting.

    Parameters
    ----------
    ties : {"efron", "breslow"}, default="efron"
        How tied event times are handled.
    alpha : float, default=0.0
        Ridge penalty on the coefficients, see Notes.
    tol : float, default=1e-9
        Newton's method stops once a full step, in the Hessian's units
        (``|step_j| sqrt(H_jj)``), is at most ``tol * (1 + max_j |coef_j|
        sqrt(H_jj))``: the fit does not depend on the units of the columns.
    max_iter : int, default=100
        Maximum number of Newton iterations.
    missing : {"raise", "drop"}, default="raise"
        Rows with a missing value (NaN or None) in ``X``, ``y``,
        ``sample_weight``, ``strata`` or ``entry``: ``"raise"`` refuses them
        (naming where and how many), ``"drop"`` leaves them out with a warning
        (R's default ``na.omit``; the kept rows keep their labels, or their
        positions for arrays, in every output). :func:`skvif.survival.coxph`
        drops by default, as R.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Log hazard ratios.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Defined when ``X`` had string column names.
    n_iter_ : int
        Newton iterations used.
    baseline_cumulative_hazard_ : pandas.DataFrame
        Breslow baseline cumulative hazard at ``x = 0``, indexed by event time,
        one column per stratum.
    log_likelihood_ : float
        Log partial likelihood at ``coef_`` (penalty excluded).
    dropped_rows_ : pandas.Index
        Labels of the rows left out for missing values (``missing="drop"``).
    params_, hazard_ratios_, standard_errors_ : pandas.Series
        ``coef_``, ``exp(coef_)`` and the standard errors, indexed by feature,
        as lifelines names them (computed when first read).
    variance_matrix_ : pandas.DataFrame
        Inverse Hessian of the objective at ``coef_`` (R's ``fit$var``).
    confidence_intervals_ : pandas.DataFrame
        95% Wald intervals (``"95% lower-bound"``, ``"95% upper-bound"``).
    concordance_index_ : float
        Harrell's concordance on the training data.

    See Also
    --------
    skvif.survival.coxph : Fit from an R-style formula on a DataFrame (factors,
        strata, missing values).
    CoxPHInfluence.from_lifelines, CoxPHInfluence.from_sksurv : The same model
        from a fit by lifelines or scikit-survival.

    Notes
    -----
    The objective, for weights :math:`w` (case weights) and the tie groups
    :math:`g` of distinct event times (within each stratum), is

    .. math::

        J(\beta) = -\sum_g \Big[\sum_{i \in D_g} w_i x_i^\top\beta - \bar w_g
            \sum_{k=0}^{d_g - 1}\log\Big(\sum_{j \in R_g} w_j e^{x_j^\top\beta}
            - \tfrac{k}{d_g}\sum_{j \in D_g} w_j e^{x_j^\top\beta}\Big)\Big]
            + \frac{\alpha}{2}\lVert\beta\rVert^2,

    summed (not averaged) over rows, with :math:`D_g` the :math:`d_g` tied
    deaths, :math:`\bar w_g` their mean weight and :math:`R_g` the rows at risk
    (``entry < t_g <= time`` in the same stratum). Breslow drops the
    :math:`k/d_g` term. Removing a row for ``"vif"``, ``"newton"`` and ``"loo"``
    deletes it exactly: it leaves its risk sets and its tie group (so
    :math:`d_g` drops by one). ``"if"`` differentiates R's weighted likelihood,
    where :math:`d_g` stays fixed, so that ``-influence_(method="if")`` is R's
    ``residuals(fit, type="dfbeta")``.

    **Mapping to lifelines.** lifelines' ``CoxPHFitter(penalizer=c)`` (with
    ``l1_ratio=0``) maximizes :math:`\ell(\tilde\beta) - \tfrac{n c}{2}
    \lVert\tilde\beta\rVert^2` on columns standardized by their sample standard
    deviation :math:`s_j` (``ddof=1``), i.e. a ridge with :math:`\alpha_j = n c
    s_j^2` in original units. On columns with :math:`s_j = 1`,
    ``CoxPHInfluence(alpha=n * c)`` fits the same coefficients.

    **Factors.** ``fit`` takes numbers only. For string or ``category``
    columns, use the formula interface (``coxph("Surv(time, event) ~ .",
    data)``), or encode them in a pipeline with treatment coding::

        from sklearn.compose import make_column_transformer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder

        encode = make_column_transformer(
            (OneHotEncoder(drop="first", sparse_output=False), ["horTh", "tgrade"]),
            remainder="passthrough", verbose_feature_names_out=False)
        X_encoded = encode.fit_transform(X)   # pandas output with set_output
        model = CoxPHInfluence().fit(X_encoded, y)

    (``encode.set_output(transform="pandas")`` keeps the column names.)

    **Sign.** ``influence_`` reports the change *upon removal*,
    :math:`\hat\beta_{(-i)} - \hat\beta`; lifelines' ``delta_beta`` residuals and
    R's ``dfbeta`` report :math:`\hat\beta - \hat\beta_{(-i)}`.

    Examples
    --------
    >>> from lifelines.datasets import load_rossi
    >>> from skvif import CoxPHInfluence
    >>> rossi = load_rossi()
    >>> X, y = rossi.drop(columns=["week", "arrest"]), rossi[["week", "arrest"]]
    >>> cox = CoxPHInfluence().fit(X, y)
    >>> cox.coef_.round(3)
    array([-0.379, -0.057,  0.314, -0.15 , -0.434, -0.085,  0.091])
    >>> cox.influence_(as_frame=True).shape
    (432, 7)
    """

    _parameter_constraints = {
        "ties": [StrOptions({"efron", "breslow"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "missing": [StrOptions({"raise", "drop"})],
    }

    def __init__(self, *, ties="efron", alpha=0.0, tol=1e-9, max_iter=100, missing="raise"):
        self.ties = ties
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.missing = missing

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None, *, strata=None, entry=None):
        """Fit the Cox model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : structured array, array-like of shape (n_samples, 2) or DataFrame
            Event indicator and time, see :func:`~skvif.survival.check_survival_y`.
        sample_weight : array-like of shape (n_samples,), default=None
            Case weights with R's semantics (``coxph(..., weights=)``): weighted
            risk sets, and with Efron ties each tied death carries the mean
            weight of its tie group. Must be non-negative.
        strata : array-like of shape (n_samples,), default=None
            Stratum label per row: a separate baseline hazard and separate
            risk sets per stratum, shared coefficients.
        entry : array-like of shape (n_samples,), default=None
            Delayed entry (left truncation) times: a row is at risk on
            ``(entry, time]``. Start-stop rows of one subject are this, with
            the subject id passed as ``groups`` to :meth:`influence_`.

        Returns
        -------
        self : CoxPHInfluence
        """
        self._validate_params()
        X, y, sample_weight, strata, entry, labels, dropped = complete_cases(
            X, y, sample_weight, strata, entry, self.missing)
        check_no_factors(X)
        X = validate_X(self, X, ensure_min_samples=2)
        n = X.shape[0]
        event, time = check_survival_y(y, n)
        case_weights = _check_sample_weight(sample_weight, X, dtype=float,
                                            ensure_non_negative=True, copy=True)
        if strata is not None:
            strata = check_labels(strata, n, "strata")
            self._strata_labels, strata = np.unique(strata, return_inverse=True)
        else:
            self._strata_labels = None
        entry = _optional_rows(entry, n, "entry", dtype=float)
        if entry is not None:
            if not np.all(np.isfinite(entry)):
                raise ValueError("entry contains NaN or infinite values.")
            if np.any(entry >= time):
                raise ValueError("entry must be strictly before time on every row.")
        if not np.any(event & (case_weights > 0)):
            raise ValueError("No event has a positive sample weight.")

        self._mean = X.mean(axis=0)
        self._X = X - self._mean
        self._time, self._event, self._case_weights = time, event, case_weights
        self._strata, self._entry = strata, entry
        self._row_labels = labels
        self.dropped_rows_ = dropped
        self._risk_sets = RiskSets(time, event, entry, strata)
        # the objective is fixed at fit: set_params afterwards changes the next fit only
        self._ties, self._alpha = self.ties, float(self.alpha)

        # the fit minimizes J / s, s a power of two near the largest case weight (same
        # minimizer, exactly): case weights of 1e-200 or 1e200 neither under- nor overflow
        weight_scale = 2.0 ** np.round(np.log2(case_weights.max()))
        P, n_iter, converged = minimize(
            self._loss(weight_scale=weight_scale), np.zeros((1, X.shape[1])), np.ones((1, n)),
            tol=self.tol, max_iter=self.max_iter, derivatives=CoxCurvature(
                self._X, self._risk_sets, case_weights / weight_scale, self._ties,
                self._alpha / weight_scale))
        self.coef_ = P[0]
        self.n_iter_ = int(n_iter[0])
        # with alpha = 0, coefficients of collinear columns are not identifiable: say
        # so now, and refuse influence_/summary (whose Hessian is then singular, up to
        # rounding that would otherwise give meaningless huge numbers)
        self._collinear = ([] if self._alpha > 0 else
                           collinear_columns(X, feature_names(self), case_weights, strata))
        if self._collinear:
            warnings.warn(collinearity_message(
                self._collinear, "drop one of them or set a ridge penalty alpha > 0 "
                "(influence_ and summary need an invertible Hessian)."),
                UserWarning, stacklevel=2)
        if not converged[0] and not self._collinear:  # (collinearity is warned above)
            reason = (f"stopped after {self.n_iter_} iterations: the partial likelihood no "
                      "longer increases but the steps do not shrink, so it is probably "
                      "monotone (a covariate separates events from non-events) or the "
                      "design is ill-conditioned"
                      if self.n_iter_ < self.max_iter else
                      f"did not converge in {self.max_iter} iterations")
            advice = "" if self.n_iter_ < self.max_iter else "increase max_iter or "
            warnings.warn(f"Newton's method {reason}; {advice}set a ridge penalty alpha.",
                          ConvergenceWarning, stacklevel=2)
        within = self._X  # spread of each column within strata (what the risk sets see)
        if strata is not None:
            means = np.zeros((strata.max() + 1, within.shape[1]))
            np.add.at(means, strata, within)
            within = within - (means / np.bincount(strata)[:, None])[strata]
        # (within has mean zero: its standard deviations are root mean squares)
        spread = self.coef_ * np.sqrt(np.einsum("ij,ij->j", within, within) / n)
        spread[np.isin(feature_names(self).astype(str), self._collinear)] = 0.0  # arbitrary
        if np.any(np.abs(spread) > 15):
            warnings.warn(
                "Some coefficients are very large (a change of one standard deviation "
                "multiplies the hazard by more than exp(15)): the partial likelihood is "
                "probably monotone (a covariate separates events from non-events). "
                "Set a ridge penalty alpha.", ConvergenceWarning, stacklevel=2)
        if entry is not None:  # (the risk-set sums are then differences of two sums)
            eta = self._X @ self.coef_
            rounding = self._risk_sets.entry_rounding(eta, case_weights)
            if rounding > ENTRY_ROUNDING_WARN:
                warnings.warn(
                    f"Delayed entry: at some event times nearly all the risk (exp(x beta)) "
                    f"is on rows not yet entered, so the risk-set sums, differences of two "
                    f"sums, are only accurate to about {min(rounding, 1.0):.0e} of "
                    f"themselves; the coefficients, standard errors and influence may be "
                    f"wrong from that digit on (x beta spans {np.ptp(eta):.0f}).",
                    UserWarning, stacklevel=2)
        self.log_likelihood_ = -float(negative_log_partial_likelihood(
            self.coef_, case_weights, self._X, self._risk_sets, self._ties))
        self.baseline_cumulative_hazard_ = self._baseline_frame()
        return self

    def _loss(self, smooth=False, weight_scale=1.0):
        """The fitted objective (divided by ``weight_scale``), in the engine's form."""
        return partial(_unit_loss, X=self._X, risk_sets=self._risk_sets, ties=self._ties,
                       alpha=self._alpha / weight_scale,
                       case_weights=self._case_weights / weight_scale, smooth=smooth)

    def _baseline_frame(self):
        rs = self._risk_sets
        jumps, shift = breslow_cumulative_hazard(self.coef_, self._case_weights, self._X, rs)
        with np.errstate(over="ignore", under="ignore"):
            at_zero = jumps * np.exp(-shift[rs.group_stratum] - self._mean @ self.coef_)
        if not np.all(np.isfinite(at_zero)) or np.any((at_zero == 0) & (jumps > 0)):
            warnings.warn("baseline_cumulative_hazard_ (at x = 0) is out of floating-point "
                          "range because x = 0 is far from the data (exp(x @ coef_) "
                          "overflows or underflows there); center the covariates to read "
                          "it. Predictions and influence are not affected.", RuntimeWarning,
                          stacklevel=3)
        jumps = at_zero
        columns = {}
        for s in range(rs.n_strata):
            in_s = rs.group_stratum == s
            name = ("baseline cumulative hazard" if self._strata_labels is None
                    else self._strata_labels[s])
            columns[name] = pd.Series(np.cumsum(jumps[in_s]), index=rs.group_time[in_s])
        frame = pd.DataFrame(columns).sort_index().ffill().fillna(0.0)
        frame.index.name = "time"
        return frame

    # -------------------------------------------------------------- predict
    def predict(self, X):
        """Linear predictor ``X @ coef_`` (higher means higher risk).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        risk_score : ndarray of shape (n_samples,)
        """
        return self._validate_X(X) @ self.coef_

    def _strata_codes(self, strata, n_rows):
        if self._strata_labels is None:
            if strata is not None:
                raise ValueError("The model was fitted without strata; do not pass strata.")
            return np.zeros(n_rows, dtype=np.intp)
        if strata is None:
            raise ValueError("The model was fitted with strata: pass the stratum of each row.")
        strata = _optional_rows(strata, n_rows, "strata")
        codes = np.searchsorted(self._strata_labels, strata)
        codes = np.minimum(codes, len(self._strata_labels) - 1)
        if np.any(self._strata_labels[codes] != strata):
            raise ValueError("strata contains labels not seen during fit.")
        return codes

    @staticmethod
    def _check_times(times):
        if times is None:
            raise ValueError("times is required for survival predictions.")
        times = np.atleast_1d(np.asarray(times, dtype=float))
        if times.ndim != 1 or not np.all(np.isfinite(times)):
            raise ValueError("times must be a 1-D array of finite values.")
        if times.size == 0:
            raise ValueError("times is empty: pass at least one time.")
        return times

    def predict_survival_function(self, X, times, *, strata=None):
        """Survival probabilities ``S(t | x) = exp(-H0(t) exp(x @ coef_))``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        times : array-like of shape (n_times,)
        strata : array-like of shape (n_samples,), default=None
            Stratum of each row; required when the model has strata.

        Returns
        -------
        survival : ndarray of shape (n_samples, n_times)
            With the Breslow estimate :math:`H_0` of the baseline cumulative
            hazard.
        """
        X = self._validate_X(X)
        codes = self._strata_codes(strata, X.shape[0])
        return survival_probabilities(self.coef_, self._case_weights, self._X,
                                      self._risk_sets, X - self._mean, codes,
                                      self._check_times(times))

    # ------------------------------------------------------------ influence
    def influence_(self, X=None, y=None, *, target="coef", method="vif", groups=None,
                   times=None, strata=None, as_frame=False, solver="auto", damping=0.0,
                   n_jobs=None, verbose=None, scale="raw", refine=None, return_exact=False,
                   out=None):
        r"""Estimated change of a fitted quantity when each training row is removed.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features), default=None
            Rows to predict on, for ``target="predict"``, ``"survival"`` and
            ``"loss"``.
        y : structured array or array-like of shape (n_rows, 2), default=None
            Outcomes of ``X``, for ``target="loss"``.
        target : {"coef", "predict", "survival", "loss"}, default="coef"
            ``"coef"``: the coefficients, ``(n_units, n_features)``;
            ``"predict"``: ``predict(X)``, ``(n_units, n_rows)``;
            ``"survival"``: ``predict_survival_function(X, times)``,
            ``(n_units, n_rows, n_times)``, including the baseline hazard's
            own dependence on the removed row; ``"loss"``: the negative log
            partial likelihood of ``(X, y)``, ``(n_units,)``.
        method : {"vif", "if", "newton", "loo"}, default="vif"
            See :func:`skvif.vif`. ``"loo"`` refits exactly (slow).
        groups : array-like of shape (n_samples,), default=None
            A label per training row; a unit is then a whole group, and the
            result's rows follow ``np.unique(groups)``.
        times : array-like of shape (n_times,), default=None
            Times for ``target="survival"``.
        strata : array-like of shape (n_rows,), default=None
            Strata of ``X`` for ``target="survival"`` (and of ``(X, y)`` for
            ``"loss"``) when the model has strata.
        as_frame : bool, default=False
            Return a pandas DataFrame (a Series for ``"loss"``) indexed by the
            training row labels (or group labels), with columns named after
            the features (``"coef"``), the rows of ``X`` (``"predict"``) or
            (row, time) pairs (``"survival"``).
        solver : {"auto", "direct", "cg"}, default="auto"
        damping : float, default=0.0
        n_jobs : int, default=None
            Number of joblib workers over chunks of units. Without workers,
            the closed forms of ``"vif"`` and ``"newton"`` run their chunks
            on as many threads as BLAS would use
            (``threadpoolctl.threadpool_limits`` caps them).
        verbose : int, bool or None, default=None
            Progress bar on stderr over the units (refits, Newton steps):
            ``None`` shows one when stderr is a terminal and the run lasts
            more than 2 s, ``0`` never, ``1`` always (see
            :mod:`skvif._progress`).
        scale : {"raw", "se"}, default="raw"
            ``"se"`` (``target="coef"`` only) divides each coefficient's change
            by its standard error, ``standard_errors_``: R's
            ``residuals(fit, type="dfbetas")`` up to the sign (statsmodels'
            ``dfbetas`` for linear models, which also uses the leave-out
            residual scale). A readable size: about 1 is a change of one
            standard error.
        refine : int, default=None
            After the estimate for every unit, recompute the ``refine`` units
            with the largest estimated change by exact refit (only those
            units). Size of a change: for ``"coef"`` the root mean square of
            the coefficient changes in standard errors (``summary()``'s
            ``se(coef)``, a Cook's-distance-like measure); for the other
            targets the root mean square of the changes (``|change|`` for
            ``"loss"``).
        return_exact : bool, default=False
            Also return which units are exact refits: a boolean ndarray of
            shape ``(n_units,)``, or with ``as_frame`` a boolean Series named
            ``exact`` indexed like the result (select it with
            ``exact.loc[frame.index]`` after sorting or filtering). With
            ``refine`` and ``as_frame`` the result also carries it as
            ``frame.attrs["exact"]``.
        out : ndarray of shape (n_units, n_features), default=None
            For ``target="coef"`` as an array (``scale="raw"``): a float64
            array the changes are written into, chunk of rows by chunk, and
            returned, e.g. a memory-mapped file from
            :func:`numpy.lib.format.open_memmap` when ``n_units x n_features``
            is large (1e6 x 100: 800 MB). Nothing is then cached in
            :meth:`get_influence`'s results (a method already computed is
            copied), so memory stays the fit's plus one chunk's.

        Returns
        -------
        influence : ndarray or pandas object
            ``influence[u]`` estimates ``quantity(fit without u) -
            quantity(fit on all rows)``. For ``target="coef"`` (raw, no
            ``refine``, no ``out``) the array is a read-only view of what
            :meth:`get_influence` keeps, so that no copy of ``n_units x
            n_features`` numbers is made: ``np.array(influence)`` gives one to
            edit (a frame, ``as_frame=True``, is a copy of its own).
        is_exact : ndarray or pandas.Series of bool
            Only with ``return_exact``.
        """
        check_is_fitted(self)
        check_choice(target, "target", TARGETS)
        check_choice(scale, "scale", SCALES)
        if out is not None and (target != "coef" or as_frame or scale != "raw"):
            raise ValueError("out is only for target='coef' as an array (as_frame=False, "
                             "scale='raw').")
        if scale == "se":
            return self._dfbetas(groups=groups, method=method, as_frame=as_frame,
                                 solver=solver, damping=damping, n_jobs=n_jobs,
                                 verbose=verbose, target=target, refine=refine,
                                 return_exact=return_exact)
        check_choice(method, "method", METHODS)
        results = self.get_influence(groups=groups, solver=solver, damping=damping,
                                     n_jobs=n_jobs, verbose=verbose)
        n_units = results.n_units

        spec, survival = {"target": None}, None
        columns = feature_names(self)
        if target != "coef":
            if X is None:
                raise ValueError(f"target={target!r} needs X.")
            labels = row_labels(X)
            X_new = self._validate_X(X) - self._mean
            columns = labels
            if target == "predict":
                spec["target"] = partial(_linear_target, X_new=X_new + self._mean)
            elif target == "survival":
                times = self._check_times(times)
                strata_new = self._strata_codes(strata, X_new.shape[0])
                survival = (X_new, strata_new, times)
                spec = {"target": partial(
                    _survival_target, X=self._X, risk_sets=self._risk_sets,
                    case_weights=self._case_weights, X_new=X_new,
                    strata_new=strata_new, times=times),
                    "target_uses_weights": True}
                columns = pd.MultiIndex.from_product([labels, times], names=["row", "time"])
            else:
                event, time = check_survival_y(y, X_new.shape[0])
                codes = None if self._strata_labels is None else self._strata_codes(
                    strata, X_new.shape[0])
                spec["target"] = partial(_test_loss_target, X=X_new, ties=self._ties,
                                         risk_sets=RiskSets(time, event, None, codes))
        if survival is not None:  # the survival target's own closed form
            spec["target_derivatives"] = self._derivatives(groups, survival)
        refine = check_refine(refine, n_units)
        result = results.changes(method=method, out=out, **spec)
        is_exact = np.full(n_units, method == "loo")
        if refine and method != "loo":
            # summary()'s se(coef) (with damping on the Hessian's diagonal)
            scale = None if target != "coef" else parameter_scale(results)
            result, is_exact = refine_rows(result, refine, lambda top: results.changes(
                method="loo", positions=top, **spec), scale, in_place=out is not None)
        index = results.unit_labels
        if target == "loss":
            result = result[:, 0]
            out = pd.Series(result, index=index.copy(), name="loss") if as_frame else result
        elif as_frame:
            # (copies: renaming a result's index renames nothing else, and a frame
            # of the results' read-only cache could not be edited)
            out = pd.DataFrame(result, index=index.copy(), columns=columns.copy(),
                               copy=not result.flags.writeable)
        elif target == "survival":
            out = result.reshape(n_units, X_new.shape[0], len(times))
        else:
            out = result
        return with_exactness(out, is_exact, index, as_frame, refine, return_exact)

    def get_influence(self, *, groups=None, solver="auto", damping=0.0, n_jobs=None,
                      verbose=None):
        """The influence of each training row (or group), as a results object.

        Like statsmodels' ``results.get_influence()``: the problem is set up
        once (closed-form derivatives, the Hessian's factorization) and each
        method computed once, then kept for this fit; :meth:`influence_`
        answers from it, and it gives a per-row table,
        :meth:`~skvif.InfluenceResults.summary_frame`, with R's ``dfbeta``
        and ``dfbetas`` and a Cook's distance.

        Parameters
        ----------
        groups : array-like of shape (n_samples,), default=None
            A label per training row; a unit is then a whole group (rows of
            the results follow ``np.unique(groups)``).
        solver : {"auto", "direct", "cg", "minres", "lanczos"}, default="auto"
        damping : float, default=0.0
        n_jobs : int, default=None
        verbose : int, bool or None, default=None
            See :meth:`influence_`.

        Returns
        -------
        skvif.InfluenceResults
            Its units are the rows (or groups), labelled by the training
            index; its parameters the coefficients, named by feature.

        Examples
        --------
        >>> from lifelines.datasets import load_rossi
        >>> from skvif import CoxPHInfluence
        >>> rossi = load_rossi()
        >>> model = CoxPHInfluence().fit(rossi.drop(columns=["week", "arrest"]),
        ...                              rossi[["week", "arrest"]])
        >>> frame = model.get_influence().summary_frame(method="if")
        >>> list(frame.columns[[0, 7, 14]])
        ['dfbeta_fin', 'dfbetas_fin', 'cooks_d']
        """
        check_is_fitted(self)
        damping = check_influence_options("vif", solver, damping)
        check_identifiable(self, damping)
        n = self._X.shape[0]

        def build():
            units, group_labels = units_from_groups(groups, n)
            # closed forms: the Hessian (dense solves, refits), R's dfbeta by prefix
            # sums ("if", any units), exact leave-one-row-out gradient and Hessian
            # changes ("vif", "newton": single rows of right-censored data)
            return InfluenceResults(
                self._loss(), self.coef_.copy(), n, check_units(units, n), solver=solver,
                damping=damping, derivatives=self._derivatives(groups), batched=True,
                loss_if=self._loss(smooth=True), tol=self.tol, max_iter=self.max_iter,
                strongly_convex=self._alpha > 0, param_names=list(feature_names(self)),
                unit_labels=group_labels if group_labels is not None else self._row_labels)

        results = self._cached_influence((groups_key(groups), solver, damping), self.coef_,
                                         build)
        results.n_jobs, results.verbose = check_n_jobs(n_jobs), verbose
        return results

    # ----------------------------------------------------------- robustness
    def robustness_(self, feature, *, alpha_level=0.05, goals=None, groups=None,
                    method="vif", max_fraction=0.1):
        """Smallest removal of rows (or groups) that changes the conclusion about a coefficient.

        The smallest set found whose removal changes the sign of the
        coefficient (``"sign"``; the hazard ratio crosses 1), makes it
        non-significant at level ``alpha_level`` (``"significance"``), or
        significant with the opposite sign (``"opposite"``), each confirmed by
        an exact refit; see :func:`skvif.robustness` for the search.

        Parameters
        ----------
        feature : str or int
            The coefficient: a feature name or its position.
        alpha_level : float, default=0.05
            Level of the two-sided Wald test with the model-based standard
            error (``summary()``'s ``se(coef)``), recomputed at every refit.
        goals : str or sequence of str, default=None
            Any of ``"sign"``, ``"significance"``, ``"opposite"`` (default all).
        groups : array-like of shape (n_samples,), default=None
            A label per row; a unit is then a whole group.
        method : {"vif", "if", "newton"}, default="vif"
            The influence estimate that guides the search between refits.
        max_fraction : float, default=0.1
            Largest fraction of the units to remove before answering "not
            found".

        Returns
        -------
        report : skvif.RobustnessReport
            One :class:`skvif.Robustness` per goal (``report["significance"]``),
            with the removed row (or group) labels, the refit coefficient and
            its confidence interval; ``report.to_frame()`` is a DataFrame.
        """
        check_is_fitted(self)
        check_robustness_options(alpha_level, max_fraction, method)
        goals = check_goals(goals, True)
        check_identifiable(self, 0.0)
        names = feature_names(self)
        j = feature_position(self, feature)
        n = self._X.shape[0]
        units, group_labels = units_from_groups(groups, n)
        units = check_units(units, n)
        labels = list(group_labels if group_labels is not None else self._row_labels)
        derivatives = self._derivatives(groups)
        loss = self._loss()
        problem = _Problem(loss, self.coef_.copy(), n, units, lambda th: th[j],
                           hessian_standard_error(loss, j, batched=True), method=method,
                           batched=True, derivatives=derivatives,
                           loss_if=self._loss(smooth=True), damping=0.0, tol=self.tol,
                           max_iter=self.max_iter, strongly_convex=self._alpha > 0)
        return search_all(problem, goals, alpha_level, labels, max_fraction, str(names[j]),
                          "rows" if groups is None else "groups")

    def _dfbetas(self, *, target, **options):
        if target != "coef":
            raise ValueError(f"scale='se' applies to target='coef' only, got {target!r}.")
        change = self.influence_(**options)
        se = self.standard_errors_ if options["as_frame"] else self.standard_errors_.to_numpy()
        if options["return_exact"]:
            return change[0] / se, change[1]
        return change / se

    def _hessian(self):
        """The full-data Hessian ``(p, p)`` of the objective at ``coef_`` (penalty included).

        The one place it is formed: ``variance_matrix_`` (and from it
        ``summary``, ``standard_errors_`` and the rest) goes through here.
        """
        return self._derivatives(None).hessian()

    def _derivatives(self, groups, survival=None):
        """The closed forms at ``coef_`` (row changes for single rows; with delayed entry
        the gradient changes only)."""
        return CoxDerivatives(self.coef_, self._X, self._risk_sets, self._case_weights,
                              self._ties, self._alpha, row_changes=groups is None,
                              survival=survival)

    # -------------------------------------------------------------- summary
    def summary(self, *, robust=False, groups=None, ci=0.95):
        """Coefficient table with standard errors, like lifelines' ``summary``.

        Parameters
        ----------
        robust : bool, default=False
            Use the sandwich variance ``D.T @ D``, with ``D`` the infinitesimal
            influence of each row, ``influence_(method="if")`` (R's
            ``robust=TRUE``), instead of the inverse Hessian. ``-D`` is R's
            ``residuals(fit, type="dfbeta")``: ``w_i U_i H^{-1}`` with ``U_i``
            the score residual and ``w_i`` the case weight, so ``D.T @ D =
            H^{-1} (sum_i w_i^2 U_i U_i^T) H^{-1}``, exactly R's robust
            variance with or without case weights.
        groups : array-like of shape (n_samples,), default=None
            With ``robust=True``, sum the influence over the rows of each group
            first (R's ``cluster()``; for start-stop data, the subject id).
        ci : float, default=0.95
            Confidence level of the intervals.

        Returns
        -------
        summary : pandas.DataFrame
            Indexed by feature, with columns ``coef``, ``exp(coef)``,
            ``se(coef)``, ``coef lower 95%``, ``coef upper 95%``, ``z``, ``p``
            (Wald statistics on the normal distribution, as R and lifelines).

        Notes
        -----
        The non-robust standard errors are those of R's ``fit$var``: the
        inverse Hessian of the case-weighted negative log partial likelihood
        (plus ``alpha`` on its diagonal). The test suite checks both kinds
        against R's published output (Efron and Breslow, strata, delayed
        entry, case weights, ``cluster()``).
        """
        check_is_fitted(self)
        if not 0 < ci < 1:
            raise ValueError(f"ci must be in (0, 1), got {ci!r}.")
        if robust:
            D = self.influence_(method="if", groups=groups)
            _check_clusters(D.shape[0], self.coef_.size)
            cov = D.T @ D
        else:
            if groups is not None:
                raise ValueError("groups is only used with robust=True.")
            cov = self.variance_matrix_.to_numpy()
        se = np.sqrt(np.diag(cov))
        z = self.coef_ / se
        q = stats.norm.ppf(0.5 + ci / 2)
        pct = f"{100 * ci:g}%"
        return pd.DataFrame({
            "coef": self.coef_, "exp(coef)": np.exp(self.coef_), "se(coef)": se,
            f"coef lower {pct}": self.coef_ - q * se, f"coef upper {pct}": self.coef_ + q * se,
            "z": z, "p": 2 * stats.norm.sf(np.abs(z)),
        }, index=feature_names(self).rename("covariate"))
