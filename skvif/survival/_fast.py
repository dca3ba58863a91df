"""Exact leave-one-row-out gradient changes of the Cox objective in ``O(n p)``.

The versatile influence function needs, for every row ``u``, the gradient
change ``g(beta; all) - g(beta; without u)``. The generic engine evaluates the
``n`` leave-out gradients in vectorized batches (``O(n^2)`` work). Here the
same numbers come from cumulative sums over the tie groups: removing a row
that is at risk at a group (but does not die there) changes that group's
gradient term by

    r_u * sum_k c_k (m_k - x_u) / (a_k - r_u),

with ``a_k`` the (Efron-adjusted) risk-set sum, ``m_k`` the weighted covariate
mean and ``c_k`` the slot weight. ``1 / (a - r)`` is expanded as a geometric
series in ``r / a``, whose partial sums over a row's risk interval are prefix
sums; slots where ``r / a`` is not small (the last, nearly empty risk sets, and
rows with an outlying risk score) are summed exactly in chunks. The row's own
tie group (when it dies) is recomputed exactly, its Efron sum over the
remaining tied deaths in closed form with the digamma function. The result equals the generic
path to rounding (tests check 1e-10).

Only right-censored data (no delayed entry) take this path: with entry times
a risk interval does not start at the first event time and the prefix-sum
differences would cancel catastrophically.
"""

import numpy as np
from scipy.special import digamma

from ._objective import stratum_max

__all__ = ["CoxDerivatives", "gradient_changes", "hessian_changes", "weight_derivatives"]

_RATIO = 0.1        # series terms are used only where r / a <= _RATIO
_TERMS = 16         # _RATIO ** _TERMS ~ 1e-16: the truncation is below rounding
_OUTLIER_QUANTILE = 0.99
_CHUNK = 2**21
_DIRECT = 64        # tie groups up to this size: own-group Efron sums slot by slot
_EFRON_TERMS = 60   # 0.5 ** 60 ~ 1e-18: series in d0 / s0 for larger groups


def _slots(rs, S0, S1, D0, D1, W, n_present, ties):
    """Per slot: denominator a, mean m (p, n_slots), weight c, and slot bounds per group."""
    if ties == "breslow":
        bounds = np.arange(len(S0) + 1)
        a = np.where(W > 0, S0, 1.0)
        return a, S1 / a, W, bounds
    g, k = rs.slot_group, rs.slot_rank
    d = n_present[g]
    valid = k < d
    frac = np.where(valid, k / np.maximum(d, 1), 0.0)
    a = np.where(valid, S0[g] - frac * D0[g], 1.0)
    m = (S1[:, g] - frac * D1[:, g]) / a
    c = np.where(valid, W[g] / np.maximum(d, 1), 0.0)
    return a, m, c, rs.death_bounds


def _own_group_change(rs, X, w, r, S0, S1, D0, D1, W, n_present, ties, a, m, c, bounds):
    """For each dying row: its own term plus its tie group's term before minus after removal."""
    p = X.shape[1]
    out = np.zeros((X.shape[0], p), dtype=r.dtype)
    present = w[rs.deaths] > 0
    dead, gid = rs.deaths[present], rs.death_group[present]
    # term of each group with all its deaths: sum over its slots of c * m
    before = np.add.reduceat((c * m).T, bounds[:-1], axis=0)[gid]  # (n_dead, p)
    xu, ru, wu = X[dead], r[dead], w[dead]
    s0, s1 = S0[gid] - ru, S1[:, gid].T - ru[:, None] * xu
    rest = W[gid] - wu
    if ties == "breslow":
        safe = np.where(rest > 0, s0, 1.0)
        after = np.where((rest > 0)[:, None], rest[:, None] * s1 / safe[:, None], 0.0)
    else:
        # sum_{k < d'} (s1 - f_k d1) / (s0 - f_k d0), f_k = k / d'
        d_new = n_present[gid] - 1
        some = d_new > 0
        d0 = np.where(some, D0[gid] - ru, 1.0)
        d1 = D1[:, gid].T - ru[:, None] * xu
        inv_sum, frac_sum = _efron_sums(np.where(some, s0, 1.0), d0, d_new)
        mean_weight = np.where(some, rest / np.maximum(d_new, 1), 0.0)
        after = mean_weight[:, None] * (s1 * inv_sum[:, None] - d1 * frac_sum[:, None])
    out[dead] = -wu[:, None] * xu + before - after
    return out


def _efron_sums(s0, d0, d):
    """``sum_{k<d} 1 / (s0 - f_k d0)`` and ``sum_{k<d} f_k / (s0 - f_k d0)``, ``f_k = k / d``.

    Summed slot by slot for small ``d``; for large ``d`` a series in
    ``d0 / s0`` with exact power sums of ``k / d`` when that ratio is small,
    the digamma closed form otherwise. The closed form alone cancels
    catastrophically when ``d0 << s0`` (low-risk tied deaths).
    """
    d = d.astype(np.intp)
    inv_sum = np.zeros(s0.shape, dtype=np.result_type(s0, d0))
    frac_sum = np.zeros_like(inv_sum)
    small = np.flatnonzero((d > 0) & (d <= _DIRECT))
    for k in range(int(d[small].max()) if small.size else 0):
        rows = small[d[small] > k]
        f = k / d[rows]
        term = 1.0 / (s0[rows] - f * d0[rows])
        inv_sum[rows] += term
        frac_sum[rows] += f * term
    large = np.flatnonzero(d > _DIRECT)
    ratio = d0[large] / s0[large]
    near = np.abs(ratio) <= 0.5
    series = large[near]
    for size in np.unique(d[series]):
        rows = series[d[series] == size]
        q = ratio[near][d[series] == size]
        f = np.arange(size) / size
        power = np.ones(size)                       # f ** j
        qj = np.ones_like(q)                        # q ** j
        for _ in range(_EFRON_TERMS):
            inv_sum[rows] += qj * power.sum()
            frac_sum[rows] += qj * (power * f).sum()
            power = power * f
            qj = qj * q
        inv_sum[rows] /= s0[rows]
        frac_sum[rows] /= s0[rows]
    far = large[~near]
    if far.size:
        dd, z = d[far], d[far] * s0[far] / d0[far]
        inv_sum[far] = dd / d0[far] * (digamma(z + 1) - digamma(z - dd + 1))
        frac_sum[far] = (s0[far] * inv_sum[far] - dd) / d0[far]
    return inv_sum, frac_sum


def _exact_pairs(rows, slot_cols, lo, hi, r, X, a, m, c, out):
    """Add ``-r_u sum_s c_s (m_s - x_u) / (a_s - r_u)`` over ``slot_cols`` in each row's interval."""
    if rows.size == 0 or slot_cols.size == 0:
        return
    step = max(1, _CHUNK // slot_cols.size)
    a_s, c_s, m_s = a[slot_cols], c[slot_cols], m[:, slot_cols].T
    for start in range(0, rows.size, step):
        u = rows[start:start + step]
        inside = (slot_cols[None, :] >= lo[u, None]) & (slot_cols[None, :] < hi[u, None])
        K = np.where(inside, c_s / np.where(inside, a_s - r[u, None], 1.0), 0.0)
        out[u] -= r[u, None] * (K @ m_s - K.sum(axis=1)[:, None] * X[u])


def _group_intervals(rs, before_own_death=None):
    """First and one-past-last tie group at which each row is at risk.

    Where ``before_own_death`` is set, the row's own event time is left out.
    """
    g_lo = np.empty(rs.n_samples, dtype=np.intp)
    g_hi = np.empty(rs.n_samples, dtype=np.intp)
    for s in range(rs.n_strata):
        rows = np.flatnonzero(rs.row_stratum == s)
        first = np.searchsorted(rs.group_stratum, s, side="left")
        last = np.searchsorted(rs.group_stratum, s, side="right")
        times = rs.group_time[first:last]
        g_lo[rows] = first if rs.entry is None else first + np.searchsorted(
            times, rs.entry[rows], side="right")
        g_hi[rows] = first + np.searchsorted(times, rs.time[rows], side="right")
        if before_own_death is not None:
            own = rows[before_own_death[rows]]
            g_hi[own] = first + np.searchsorted(times, rs.time[own], side="left")
    return g_lo, g_hi


def _risk_statistics(params, X, rs, w, ties):
    """Shifted risk scores and the slots of every tie group."""
    eta = X @ params
    r = w * np.exp(eta - stratum_max(eta, rs)[rs.row_stratum])  # log-sum-exp shift per stratum
    S0, S1 = rs.risk_sums(r), rs.risk_sums(r * X.T)
    D0, D1 = rs.death_sums(r), rs.death_sums(r * X.T)
    W = rs.death_sums(w)
    n_present = rs.death_sums((w > 0).astype(float))
    return r, (S0, S1, D0, D1, W, n_present), _slots(rs, S0, S1, D0, D1, W, n_present, ties)


def weight_derivatives(params, X, rs, case_weights, ties):
    """Derivative of the gradient in each row's weight, shape (p, n): ``method="if"``.

    Differentiates R's weighted likelihood (tie counts fixed): for row ``u``
    with risk score ``r_u``, at risk on the slots ``I_u`` and dying in group
    ``h`` (``delta_u = 1``),

        dg/dw_u = c_u [ -delta_u (x_u - mean_{s in h} m_s)
                        + r_u sum_{s in I_u} c_s (x_u - m_s) / a_s
                        - delta_u r_u sum_{s in h} c_s f_s (x_u - m_s) / a_s ]

    with prefix sums over the slots (``c_u`` the case weight, ``r_u`` without it).
    """
    w = case_weights
    r, (_, _, _, _, W, n_present), (a, m, c, bounds) = _risk_statistics(params, X, rs, w,
                                                                          ties)
    e = np.where(w > 0, r / np.where(w > 0, w, 1.0), 0.0)  # exp(eta - shift)
    g_lo, g_hi = _group_intervals(rs)
    lo, hi = bounds[g_lo], bounds[g_hi]
    ca = c / a
    scalar = np.concatenate([[0.0], np.cumsum(ca)])
    vector = np.concatenate([np.zeros((1, X.shape[1])), np.cumsum((ca * m).T, axis=0)])
    q, Q = scalar[hi] - scalar[lo], vector[hi] - vector[lo]
    out = e[:, None] * (X * q[:, None] - Q)

    # the row's own tie group: its death term and the Efron fractions
    if ties == "breslow":
        frac = np.zeros(a.size)
        per_death = m.T  # one slot per group, weight derivative 1
    else:
        frac = np.where(rs.slot_rank < n_present[rs.slot_group],
                        rs.slot_rank / np.maximum(n_present[rs.slot_group], 1), 0.0)
        valid = (c > 0).astype(float)
        per_death = np.add.reduceat((valid * m).T, bounds[:-1], axis=0) / np.maximum(
            n_present, 1)[:, None]
    F1 = np.add.reduceat(ca * frac, bounds[:-1])
    F2 = np.add.reduceat((ca * frac * m).T, bounds[:-1], axis=0)
    present = w[rs.deaths] > 0
    dead, gid = rs.deaths[present], rs.death_group[present]
    out[dead] += -(X[dead] - per_death[gid]) - e[dead, None] * (X[dead] * F1[gid, None]
                                                                 - F2[gid])
    return (w[:, None] * out).T


def gradient_changes(params, X, rs, case_weights, ties):
    """``g(params; all rows) - g(params; without row u)`` for every row, shape (n, p).

    ``g`` is the gradient of the negative log partial likelihood (the ridge
    penalty cancels). ``X`` is the (centered) design the objective uses.
    """
    if rs.has_entry:
        raise ValueError("the O(n p) Cox path does not handle delayed entry")
    p = X.shape[1]
    w = case_weights
    r, sums, (a, m, c, bounds) = _risk_statistics(params, X, rs, w, ties)
    out = _own_group_change(rs, X, w, r, *sums, ties, a, m, c, bounds)

    # each row's interval of slots: its stratum's groups up to its time
    # (strictly before it when it dies there: that group was handled above)
    g_lo, g_hi = _group_intervals(rs, before_own_death=rs.event & (w > 0))
    lo, hi = bounds[g_lo], bounds[g_hi]

    # rows with an outlying risk score: every slot exactly
    size = r.real
    r_cut = np.quantile(size[size > 0], _OUTLIER_QUANTILE)
    outliers = np.flatnonzero(size > r_cut)
    _exact_pairs(outliers, np.flatnonzero(c != 0), lo, hi, r, X, a, m, c, out)

    # the others: slots with a small risk-set sum exactly, the rest by the series
    regular = np.flatnonzero((size <= r_cut) & (size > 0))
    tail = (a.real * _RATIO < r_cut) & (c > 0)
    _exact_pairs(regular, np.flatnonzero(tail), lo, hi, r, X, a, m, c, out)

    series = (c > 0) & ~tail
    inv = np.where(series, r_cut / np.where(series, a, 1.0), 0.0)  # 1 / a~ <= _RATIO
    rho = r[regular] / r_cut                                        # <= 1
    power = np.ones(regular.size)
    weight = c * inv                                # c / a~^(j+1)
    for _ in range(_TERMS):
        scalar = np.concatenate([[0.0], np.cumsum(weight)])
        vector = np.concatenate([np.zeros((1, p)), np.cumsum((weight * m).T, axis=0)])
        q = scalar[hi[regular]] - scalar[lo[regular]]
        Q = vector[hi[regular]] - vector[lo[regular]]
        out[regular] -= (rho * power)[:, None] * (Q - q[:, None] * X[regular])
        power = power * rho
        weight = weight * inv
    return out


def hessian_changes(params, X, rs, case_weights, ties, step=1e-30):
    """``H(params; all rows) - H(params; without row u)`` for every row, shape (n, p, p).

    The derivative of :func:`gradient_changes` by the complex step
    ``Im g(params + i h e_j) / h``: exact to rounding (no difference of two
    nearby numbers), ``p`` evaluations of the ``O(n p)`` gradient changes.
    """
    p = params.size
    out = np.empty((X.shape[0], p, p))
    for j in range(p):
        shifted = params.astype(complex)
        shifted[j] += 1j * step
        out[:, :, j] = gradient_changes(shifted, X, rs, case_weights, ties).imag / step
    return 0.5 * (out + np.swapaxes(out, 1, 2))


class CoxDerivatives:
    """The engine's closed forms for the Cox objective (:class:`skvif._engine.ModelDerivatives`).

    ``weight_derivatives`` holds for any units (the engine sums a unit's
    rows); ``gradient_changes`` and ``hessian_changes`` remove one row at a
    time and need right-censored data (no delayed entry). Each is computed for
    all rows once, on first use.
    """

    def __init__(self, params, X, rs, case_weights, ties):
        self._args = (params, X, rs, case_weights, ties)
        self._cache = {}

    def _rows(self, function, units):
        if function not in self._cache:
            self._cache[function] = function(*self._args)
        return self._cache[function][np.concatenate(units)]

    def gradient_changes(self, units):
        return self._rows(gradient_changes, units)

    def hessian_changes(self, units):
        return self._rows(hessian_changes, units)

    def weight_derivatives(self):
        return weight_derivatives(*self._args)
