"""The Cox partial likelihood as a pure, weighted, batched objective.

Nothing here knows about scikit-learn. :class:`RiskSets` holds the index
structure of a survival data set (sorted orders, risk-set boundaries, tie
groups) so that the weighted negative log partial likelihood is evaluated in
``O(n log n)`` with cumulative sums, never with an ``n x n`` at-risk matrix.
All functions accept one parameter vector ``(p,)`` with weights ``(n,)`` or a
batch ``(k, p)`` with ``(k, n)``.
"""

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp, primitive
from autograd.tracer import getval

__all__ = ["RiskSets", "negative_log_partial_likelihood", "partial_likelihood_of_predictor",
           "breslow_cumulative_hazard"]


class RiskSets:
    """Risk sets and tie groups of right-censored, possibly left-truncated, stratified data.

    Parameters
    ----------
    time : ndarray of shape (n,)
        Event or censoring times.
    event : ndarray of shape (n,) of bool
        Whether each row's time is an event.
    entry : ndarray of shape (n,), default=None
        Delayed-entry times: a row is at risk on ``(entry, time]``.
    strata : ndarray of shape (n,) of int, default=None
        Stratum codes ``0..n_strata-1``; risk sets never cross strata.

    Attributes
    ----------
    group_time, group_stratum : ndarray of shape (n_groups,)
        The distinct (stratum, event time) pairs, sorted by stratum then time.
    """

    def __init__(self, time, event, entry=None, strata=None):
        time = np.asarray(time, dtype=float)
        event = np.asarray(event, dtype=bool)
        n = time.size
        codes = np.zeros(n, dtype=np.intp) if strata is None else np.asarray(strata, np.intp)
        self.n_samples = n
        self.time, self.event, self.row_stratum = time, event, codes
        self.entry = None if entry is None else np.asarray(entry, dtype=float)
        self.n_strata = int(codes.max()) + 1 if n else 1
        self.has_entry = entry is not None

        # tie groups: distinct (stratum, time) among events, sorted by stratum then time
        ev = np.flatnonzero(event)
        order = np.lexsort((time[ev], codes[ev]))  # stable: tied deaths in row order
        stratum_sorted, time_sorted = codes[ev][order], time[ev][order]
        first = np.ones(ev.size, dtype=bool)
        first[1:] = (stratum_sorted[1:] != stratum_sorted[:-1]) | (
            time_sorted[1:] != time_sorted[:-1])
        self.group_stratum = stratum_sorted[first].astype(np.intp)
        self.group_time = time_sorted[first]
        self.deaths = ev[order]  # event rows ordered by group
        self.death_group = np.cumsum(first) - 1
        counts = np.bincount(self.death_group, minlength=self.group_time.size)
        self.death_bounds = np.concatenate([[0], np.cumsum(counts)])
        # Efron slots: the k-th tied death of its group, k = 0..d_g-1
        self.slot_group = self.death_group
        self.slot_rank = np.arange(ev.size) - self.death_bounds[self.death_group]

        # risk-set sums as differences of cumulative sums in (stratum, -time) order
        self.time_order, self.time_lo, self.time_hi = self._bounds(codes, time)
        # where each stratum starts in time_order (clipped: a test set may lack strata)
        self._time_starts = self._stratum_block_starts(self.time_order)
        self.stratum_starts = np.minimum(self._time_starts, max(n - 1, 0))
        if entry is not None:
            self.entry_order, self.entry_lo, self.entry_hi = self._bounds(
                codes, np.asarray(entry, dtype=float))
            self._entry_starts = self._stratum_block_starts(self.entry_order)

    def _bounds(self, codes, t):
        """Order rows by (stratum, -t); for each group, the slice of rows with t >= group time."""
        order = np.lexsort((-t, codes))
        sorted_codes, sorted_neg_t = codes[order], -t[order]
        starts = np.searchsorted(sorted_codes, np.arange(self.n_strata), side="left")
        lo = starts[self.group_stratum]
        hi = np.empty_like(lo)
        for s in range(self.n_strata):
            in_s = self.group_stratum == s
            stop = np.searchsorted(sorted_codes, s, side="right")
            hi[in_s] = starts[s] + np.searchsorted(
                sorted_neg_t[starts[s]:stop], -self.group_time[in_s], side="right")
        return order, lo, hi

    @staticmethod
    def _stratum_prefix_sums(values, order, lo, hi, starts):
        """Sum of ``values[..., order[lo:hi]]`` for every group, ``lo`` its stratum's start.

        Cumulative sums restart at every stratum (which starts at ``starts``
        in ``order``), so that no sum is the difference of two large running
        totals (which would lose the small risk sets of one stratum to the
        rounding of the others).
        """
        cum = segment_cumsum(values[..., order], starts)
        last = np.maximum(hi - 1, 0)
        return anp.where(hi > lo, cum[..., last], 0.0)

    def _stratum_block_starts(self, order):
        return np.searchsorted(self.row_stratum[order], np.arange(self.n_strata))

    def _later_and_waiting(self, values):
        """Sums of ``values`` per group over the rows whose time is at or after the group's
        and (``None`` without entry) over those of them not yet entered."""
        later = self._stratum_prefix_sums(values, self.time_order, self.time_lo, self.time_hi,
                                          self._time_starts)
        if not self.has_entry:
            return later, None
        return later, self._stratum_prefix_sums(values, self.entry_order, self.entry_lo,
                                                self.entry_hi, self._entry_starts)

    def risk_sums(self, values):
        """Sum of ``values`` over the risk set of every group, shape (..., n_groups)."""
        later, waiting = self._later_and_waiting(values)
        # (rows that enter at or after the group time are not yet at risk)
        return later if waiting is None else later - waiting

    def entry_rounding(self, eta, weights):
        """Relative rounding bound of the risk-set sums of ``weights * exp(eta)`` (entry).

        With delayed entry a risk-set sum ``T = A - B`` is a difference: ``A``
        over the rows whose time is at or after the group's, ``B`` over those
        of them not yet entered. Each is rounded to about ``eps`` of itself,
        so ``T`` to ``eps (A + B) / T`` of itself: large where the rows not
        yet entered carry nearly all the risk (``|x beta|`` spanning tens).
        Returns the largest over the groups whose deaths carry weight (0.0
        without entry; ``inf`` where a sum cancelled to zero or below).
        """
        if not self.has_entry:
            return 0.0
        A, B = self._later_and_waiting(_shifted_eta(eta, weights, self)[2])
        counted = self.death_sums(weights) > 0
        A, B = A[counted], B[counted]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(A > B, (A + B) / (A - B), np.inf)
        return float(np.finfo(float).eps * np.max(ratio, initial=1.0))

    def death_sums(self, values):
        """Sum of ``values`` over the tied deaths of every group, shape (..., n_groups)."""
        return segment_sums(values[..., self.deaths], self.death_bounds[:-1])


def cumsum_by_segment(values, starts, out, axis=-1):
    """Cumulative sums along ``axis`` that restart at each index of ``starts``, into ``out``.

    ``out`` may be ``values`` itself (in place).
    """
    bounds = list(starts) + [values.shape[axis]]
    at = [slice(None)] * values.ndim
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        at[axis] = slice(lo, hi)
        np.cumsum(values[tuple(at)], axis=axis, out=out[tuple(at)])
    return out


@primitive
def segment_cumsum(values, starts):
    """Cumulative sums along the last axis that restart at each index of ``starts``."""
    return cumsum_by_segment(values, starts, np.empty_like(values))


def _reversed_segment_cumsum(values, starts):
    """Sums from each position to the end of its segment (the adjoint of ``segment_cumsum``)."""
    n = values.shape[-1]
    flipped_starts = np.sort(n - np.append(np.asarray(starts)[1:], n))
    return segment_cumsum(values[..., ::-1], flipped_starts)[..., ::-1]


defvjp(segment_cumsum, lambda ans, values, starts: lambda g: _reversed_segment_cumsum(g, starts))


@primitive
def segment_sums(values, starts):
    """Sums of consecutive, non-empty segments along the last axis (``np.add.reduceat``)."""
    if len(starts) == 0:
        return np.zeros(values.shape[:-1] + (0,), dtype=values.dtype)
    return np.add.reduceat(values, starts, axis=-1)


def _segment_ids(starts, n):
    ids = np.zeros(n, dtype=np.intp)
    ids[np.asarray(starts)[1:]] = 1
    return np.cumsum(ids)


defvjp(segment_sums, lambda ans, values, starts: lambda g: g[..., _segment_ids(
    starts, values.shape[-1])])


def stratum_max(eta, rs):
    """Largest real part of ``eta`` in each stratum, shape (..., n_strata).

    The log-sum-exp shift of the risk-set sums. It is taken per stratum (risk
    sets never cross strata), so that strata whose linear predictors differ by
    more than ~700 do not underflow to empty risk sets.
    """
    e = np.real(getval(eta))
    if rs.n_strata == 1:
        return np.max(e, axis=-1, keepdims=True)
    return np.maximum.reduceat(e[..., rs.time_order], rs.stratum_starts, axis=-1)


def _shifted_risk(X, params, weights, rs):
    """Linear predictor, a stop-gradient shift per stratum and ``w exp(eta - shift)``."""
    return _shifted_eta(anp.dot(params, X.T), weights, rs)


def _shifted_eta(eta, weights, rs):
    """``eta``, a stop-gradient shift per stratum and ``w exp(eta - shift)``."""
    shift = stratum_max(eta, rs)
    return eta, shift, weights * anp.exp(eta - shift[..., rs.row_stratum])


def _group_log_terms(rs, weights, risk, ties, count_weights):
    """Per slot ``mean weight * log(risk-set sum - frac * tied-death sum)`` (shifted)."""
    S = rs.risk_sums(risk)
    death_weight = rs.death_sums(weights)
    if ties == "breslow":
        safe = anp.where(getval(death_weight) > 0, S, 1.0)
        return death_weight * anp.log(safe)
    D = rs.death_sums(risk)
    # number of tied deaths that count: those still present (exact deletion), or
    # those with positive case weight (R's smooth weighting, for method="if")
    present = getval(weights if count_weights is None else count_weights) > 0
    if np.ndim(present) < np.ndim(getval(weights)):
        present = np.broadcast_to(present, np.shape(getval(weights)))
    n_tied = rs.death_sums(present.astype(float))
    g = rs.slot_group
    n_slot = n_tied[..., g]
    valid = rs.slot_rank < n_slot
    frac = np.where(valid, rs.slot_rank / np.maximum(n_slot, 1), 0.0)
    mean_weight = death_weight / np.maximum(n_tied, 1)
    arg = anp.where(valid, S[..., g] - frac * D[..., g], 1.0)
    return anp.where(valid, mean_weight[..., g], 0.0) * anp.log(arg)


def negative_log_partial_likelihood(params, weights, X, rs, ties="efron", alpha=0.0,
                                    count_weights=None):
    r"""Weighted negative log partial likelihood plus ridge penalty.

    Parameters
    ----------
    params : ndarray of shape (p,) or (k, p)
    weights : ndarray of shape (n,) or (k, n)
        Row weights; a weight of exactly 0 deletes the row (from its risk
        sets and its tie group).
    X : ndarray of shape (n, p)
    rs : RiskSets
    ties : {"efron", "breslow"}
    alpha : float
        Ridge penalty ``alpha / 2 * ||params||^2``.
    count_weights : ndarray of shape (n,), default=None
        If given, the Efron tie counts use the rows with positive
        ``count_weights`` instead of positive ``weights``: R's weighted Efron
        likelihood, smooth in the weights (used by ``method="if"``).

    Returns
    -------
    float or ndarray of shape (k,)

    Notes
    -----
    For tie group :math:`g` (a distinct event time within a stratum) with
    present tied deaths :math:`D_g`, :math:`d_g = |D_g|`, risk set
    :math:`R_g` and :math:`r_i = w_i \exp(x_i^\top\beta)`,

    .. math::

        -\ell(\beta) = -\sum_g \Big[\sum_{i \in D_g} w_i x_i^\top\beta
            - \bar w_g \sum_{k=0}^{d_g - 1}
            \log\Big(\sum_{j \in R_g} r_j - \tfrac{k}{d_g}\sum_{j \in D_g} r_j\Big)\Big],

    with :math:`\bar w_g = \sum_{D_g} w_i / d_g` (Efron, as R's ``coxph``).
    Breslow drops the :math:`k/d_g` term.
    """
    nll = partial_likelihood_of_predictor(anp.dot(params, X.T), weights, rs, ties,
                                          count_weights)
    return nll + 0.5 * alpha * anp.sum(params * params, axis=-1)


def partial_likelihood_of_predictor(eta, weights, rs, ties="efron", count_weights=None):
    r"""Weighted negative log partial likelihood of a given linear predictor (no penalty).

    The objective of :func:`negative_log_partial_likelihood` with
    :math:`x_i^\top\beta` replaced by ``eta[i]``: the Cox loss of any risk
    score (e.g. a neural network's output), differentiable in ``eta``.

    Parameters
    ----------
    eta : ndarray of shape (n,) or (k, n)
        Log-risk score of every row.
    weights : ndarray of shape (n,) or (k, n)
        Row weights; a weight of exactly 0 deletes the row.
    rs : RiskSets
    ties : {"efron", "breslow"}
    count_weights : ndarray of shape (n,), default=None
        As in :func:`negative_log_partial_likelihood`.

    Returns
    -------
    float or ndarray of shape (k,)
    """
    eta, shift, risk = _shifted_eta(eta, weights, rs)
    log_terms = _group_log_terms(rs, weights, risk, ties, count_weights)
    death_mask = np.zeros(rs.n_samples)
    death_mask[rs.deaths] = 1.0
    # each group's log terms were shifted by its death weight times its stratum's shift
    fitted = anp.sum(weights * death_mask * (eta - shift[..., rs.row_stratum]), axis=-1)
    return anp.sum(log_terms, axis=-1) - fitted


def breslow_cumulative_hazard(params, weights, X, rs):
    """Breslow baseline cumulative hazard jumps, shifted.

    Returns ``(hazard, shift)``: ``hazard[..., g]`` times
    ``exp(-shift[..., rs.group_stratum[g]])`` is the increment of the baseline
    cumulative hazard (at ``x = 0``) at group ``g``.
    """
    _, shift, risk = _shifted_risk(X, params, weights, rs)
    S = rs.risk_sums(risk)
    W = rs.death_sums(weights)
    return W / anp.where(getval(W) > 0, S, 1.0), shift


def survival_probabilities(params, weights, X, rs, X_new, strata_new, times):
    """Predicted survival ``S(t | x) = exp(-H0_s(t) exp(x beta))``, shape (n_new, n_times)."""
    jumps, shift = breslow_cumulative_hazard(params, weights, X, rs)
    cum = anp.concatenate([anp.zeros(1), anp.cumsum(jumps)])
    lo = np.searchsorted(rs.group_stratum, np.arange(rs.n_strata), side="left")
    idx = np.empty((rs.n_strata, len(times)), dtype=np.intp)
    for s in range(rs.n_strata):
        hi = np.searchsorted(rs.group_stratum, s, side="right")
        idx[s] = lo[s] + np.searchsorted(rs.group_time[lo[s]:hi], times, side="right")
    base = cum[idx] - cum[lo][:, None]  # (n_strata, n_times), shifted
    eta_new = anp.dot(X_new, params)
    hazard = base[strata_new] * anp.exp(eta_new - shift[strata_new])[:, None]
    return anp.exp(-hazard)
