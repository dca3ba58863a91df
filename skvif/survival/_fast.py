"""Closed forms of the Cox objective in ``O(n p)`` and ``O(n p^2)``.

Everything here equals the autograd objective of :mod:`._objective` to
rounding (the tests compare them) and is computed from sums over the tie
groups after the one sort :class:`~._objective.RiskSets` does:

* the gradient and Hessian of the whole objective (the fit, its standard
  errors and every exact refit): ``H = X^T diag(r_i (A_i - delta_i B_i)) X
  - sum_s c_s m_s m_s^T + alpha I``, one matrix product;
* exact leave-one-row-out gradient changes (``method="vif"``): removing a
  row ``u`` that is at risk at slot ``s`` (but does not die there) changes
  that slot's gradient term by

      c_s r_u (x_u - m_s) / (a_s - r_u) = c_s r_u (x_u - m_s^(-u)) / a_s,

  with ``a_s`` the (Efron-adjusted) risk-set sum, ``m_s`` its weighted
  covariate mean (``m_s^(-u)`` without ``u``) and ``c_s`` the slot weight.

Slots are ordered by time within a stratum and, without delayed entry,
``a_s`` decreases along them, so for each row the slots where
``r_u / a_s <= 0.02`` come first: there ``1 / (a_s - r_u)`` is a geometric
series in ``r_u / a_s`` whose partial sums are prefix sums over the slots
(normalized per block of slots, so that no power of ``a_s`` over- or
underflows). The remaining slots of a row, found by binary search, are summed
exactly; a slot can be one of those for at most about ``1 / 0.02`` rows (their
risk scores add up to at most ``a_s``), so that part is ``O(n p)`` too.
Where one row makes up most of a risk set, ``a_s - r_u`` would cancel: the
sums over that risk set without its largest risk score are kept separately,
accumulated without a subtraction, and used instead. A row's own tie group
(when it dies) is recomputed exactly, its Efron sum over the remaining tied
deaths slot by slot (or by a series, or the digamma closed form, for large
groups).

The gradient changes need right-censored data (no delayed entry): with entry
times a row's slots do not start at its stratum's first event time.
"""

import functools
import threading
import weakref

import numpy as np
import scipy.sparse
from scipy.special import digamma, polygamma

from .._blas import single_blas_thread, single_threaded_blas
from .._engine import unit_rows
from ._objective import (_shifted_eta, cumsum_by_segment, segment_cumsum, stratum_max,
                         survival_probabilities)

__all__ = ["CoxDerivatives", "CoxCurvature", "gradient_changes", "hessian_changes",
           "weight_derivatives", "gradient_and_hessian", "negative_log_partial_likelihood"]

_RATIO = 0.02       # series terms are used only where r / a <= _RATIO
_TERMS = 10         # _RATIO ** _TERMS ~ 1e-17: the truncation is below rounding
_BLOCK = 1e10       # risk-set sums within one normalization block differ by < this factor
_PAIRS = 2**16      # exact (row, slot) pairs evaluated at once
_ROWS = 2**14       # rows per chunk (temporaries of (_ROWS, p)): small enough that they
                    # reuse freed memory (fresh pages cost ~3 ms/MB on the benchmark VM;
                    # first call at 1e5 x 20: 0.30 s, 0.46 s with 2**16)
_DIRECT = 64        # tie groups up to this size: own-group Efron sums slot by slot (where
                    # the series would need more terms than the group has deaths)
_TREE_ELEMENTS = 2**26  # delayed entry: the interval tree's series sums, at most
_CACHE_ELEMENTS = 2**25  # complex-step Hessian changes are computed for blocks of this size
_EFRON_TERMS = 60   # 0.5 ** 60 ~ 1e-18: terms of the series in d0 / s0 (|d0 / s0| <= 1/2)


def _segment_sums(weights, indices, indptr, values):
    """Per segment ``k``: ``sum_j weights[j] * values[indices[j]]`` over ``indptr[k]:indptr[k+1]``.

    A sparse (segments x rows) matrix times ``values``: sums in the order the
    segments list their rows, with no (rows, columns) temporary (new arrays
    are slow to allocate at 10^6 rows).
    """
    segments = scipy.sparse.csr_matrix((weights, indices, indptr),
                                       shape=(indptr.size - 1, values.shape[0]))
    return segments @ values


def cumulative_at(segment, restart, last, out=None):
    """Cumulative sums of ``segment``'s rows (restarting at ``restart``) at rows ``last``.

    Rows of ``out`` (made when None) where ``last < 0`` are zero. ``segment``
    (n_segments, m), one of the sorted design's parts' sums, is overwritten
    (and returned when ``last`` takes every row in order and ``out`` is None).
    """
    cumsum_by_segment(segment, restart, segment, axis=0)
    if out is None and np.array_equal(last, np.arange(segment.shape[0])):
        return segment
    if out is None:
        out = np.empty((last.size, segment.shape[1]), dtype=segment.dtype)
    np.take(segment, np.maximum(last, 0), axis=0, out=out, mode="clip")   # (unbuffered)
    out[last < 0] = 0.0
    return out


class _SortedDesign:
    """``[1, X]`` with its rows sorted by stratum and decreasing time (one copy, made once).

    Risk-set sums are then segment sums between consecutive event times,
    accumulated over the groups of each stratum: no running total over all
    rows and no subtraction across strata. Sums over the tied deaths and, with
    delayed entry, over the rows entered by each time, pick their rows of the
    same copy.
    """

    def __init__(self, X, rs):
        self.X, self.rs = X, rs
        order = rs.time_order
        n, p = X.shape
        self.sorted = np.empty((n, p + 1))
        self.sorted[:, 0] = 1.0
        for start in range(0, n, _ROWS):  # (no (n, p) temporary)
            self.sorted[start:start + _ROWS, 1:] = X[order[start:start + _ROWS]]
        self.position = np.empty(n, dtype=np.intp)  # of each row in the sorted copy
        self.position[order] = np.arange(n)
        self.time = self._segments(order, rs.time_lo, rs.time_hi)
        self.entry = (self._segments(rs.entry_order, rs.entry_lo, rs.entry_hi)
                      if rs.has_entry else None)

    def _segments(self, order, lo, hi):
        rs = self.rs
        starts = np.searchsorted(rs.row_stratum[order], np.arange(rs.n_strata))
        cuts = np.unique(np.concatenate([starts, hi]))
        cuts = cuts[cuts < rs.n_samples]
        restart = np.searchsorted(cuts, np.unique(starts[starts < rs.n_samples]))
        last = np.searchsorted(cuts, hi) - 1  # the segment that ends at hi
        first = cuts[0] if cuts.size else rs.n_samples
        indptr = np.append(cuts, rs.n_samples) - first
        return order[first:], self.position[order[first:]], indptr, restart, np.where(
            hi > lo, last, -1)

    def _sums(self, part, r):
        rows, indices, indptr, restart, last = part
        if indptr.size == 1:
            return np.zeros((last.size, self.sorted.shape[1]), dtype=r.dtype)
        return cumulative_at(_segment_sums(r[rows], indices, indptr, self.sorted), restart, last)

    def risk_sums(self, r):
        """``[sum r, sum r x]`` over each group's risk set, shape (n_groups, 1 + p)."""
        total = self._sums(self.time, r)
        if self.entry is not None:
            total = total - self._sums(self.entry, r)
        return total

    def death_sums(self, r):
        """``[sum r, sum r x]`` over each group's tied deaths, shape (n_groups, 1 + p)."""
        deaths = self.rs.deaths
        return _segment_sums(r[deaths], self.position[deaths], self.rs.death_bounds,
                             self.sorted)

    def weighted_gram(self, v):
        """``X^T diag(v) X`` in blocks of rows."""
        v = v[self.rs.time_order]
        out = np.zeros((self.X.shape[1],) * 2)
        for start in range(0, v.size, _ROWS):
            block = self.sorted[start:start + _ROWS, 1:]
            out += block.T @ (block * v[start:start + _ROWS, None])
        return out


_BUILD_LOCK = threading.RLock()   # CoxDerivatives' shared work: built once for all threads
_DESIGNS = weakref.WeakKeyDictionary()  # RiskSets -> its _SortedDesign


def _sorted_design(X, rs):
    """The :class:`_SortedDesign` of ``(X, rs)``, kept while ``rs`` lives (a fit's)."""
    design = _DESIGNS.get(rs)
    if design is None or design.X is not X:
        design = _DESIGNS[rs] = _SortedDesign(X, rs)
    return design


class _WeightSlots:
    """The parts of :class:`_Statistics` that depend on the weights ``w`` only (read-only).

    ``W`` and ``n_present`` (n_groups,) the weight and the number of rows of
    positive weight among each group's tied deaths; ``slot_group``,
    ``bounds``, ``frac``, ``c``, ``slot_starts``, ``group_starts`` as in
    :class:`_Statistics`; ``counted`` the slots that count.
    """

    def __init__(self, rs, w, ties):
        self.W = W = rs.death_sums(w)
        self.n_present = rs.death_sums((w > 0).astype(float))
        if ties == "breslow":
            self.slot_group, self.bounds = np.arange(W.size), np.arange(W.size + 1)
            self.frac, self.c, self.counted = np.zeros(W.size), W, W > 0
        else:
            g, k, self.bounds = rs.slot_group, rs.slot_rank, rs.death_bounds
            d = self.n_present[g]
            self.slot_group, self.counted = g, k < d
            self.frac = np.where(self.counted, k / np.maximum(d, 1), 0.0)
            self.c = np.where(self.counted, W[g] / np.maximum(d, 1), 0.0)
        # where each stratum's slots (and groups) start
        strata = np.arange(rs.n_strata)
        self.slot_starts = np.searchsorted(rs.group_stratum[self.slot_group], strata)
        self.group_starts = np.searchsorted(rs.group_stratum, strata)
        own = [id(part) for part in vars(rs).values()]
        for part in vars(self).values():
            if id(part) not in own:   # (the risk sets' own arrays stay as they are)
                part.flags.writeable = False


_SLOTS = weakref.WeakKeyDictionary()  # RiskSets -> (ties, w, _WeightSlots) of the last w


def _weight_slots(rs, w, ties):
    """The :class:`_WeightSlots` of ``(rs, w, ties)``, kept for the last ``w`` seen.

    A fit's Newton iterations and its influence all use the same weights
    (new arrays, compared by value).
    """
    cached = _SLOTS.get(rs)
    if cached is None or cached[0] != ties or not np.array_equal(cached[1], w):
        cached = _SLOTS[rs] = (ties, np.array(w, dtype=float), _WeightSlots(rs, w, ties))
    return cached[2]


class _Statistics:
    """Risk scores and per-slot sums of one problem (linear predictor ``eta``, weights ``w``).

    Slots are Efron's ``k``-th tied death of a group (one slot per group for
    Breslow), in group order: ``a`` the denominator, ``m`` (p, n_slots) the
    mean, ``c`` the weight (0 for slots that do not count), ``frac`` Efron's
    ``k / d``, ``bounds`` each group's slots. ``S0, D0`` (n_groups,) and
    ``S1, D1`` (n_groups, p) are the risk-set and tied-death sums of ``r``
    and ``r x``; with ``moments=False`` only those of ``r`` (enough for the
    loss; ``S1`` and ``D1`` are then ``None``).
    """

    def __init__(self, eta, X, rs, w, ties, design=None, moments=True):
        self.rs, self.X, self.w, self.ties = rs, X, w, ties
        self.r = r = _shifted_eta(eta, w, rs)[2]
        if moments:
            design = _SortedDesign(X, rs) if design is None else design
            S, D = design.risk_sums(r), design.death_sums(r)
            self.S0, self.S1, self.D0, self.D1 = S[:, 0], S[:, 1:], D[:, 0], D[:, 1:]
        else:
            self.S0, self.D0 = rs.risk_sums(r), rs.death_sums(r)
            self.S1 = self.D1 = None
        self.design = design
        slots = _weight_slots(rs, w, ties)
        self.W, self.n_present, self.c, self.frac = slots.W, slots.n_present, slots.c, slots.frac
        self.slot_group, self.bounds = slots.slot_group, slots.bounds
        self.slot_starts, self.group_starts = slots.slot_starts, slots.group_starts
        g = self.slot_group
        self.a = np.where(slots.counted, self.S0[g] - self.frac * self.D0[g], 1.0)
        self._m = None

    @property
    def m(self):
        """Each slot's weighted covariate mean, (p, n_slots) (formed on first use)."""
        with _BUILD_LOCK:
            if self._m is None:
                g = self.slot_group
                self._m = ((self.S1[g] - self.frac[:, None] * self.D1[g]) / self.a[:, None]).T
        return self._m

    def per_group(self, values):
        """Sums of per-slot ``values`` (..., n_slots) over each group's slots."""
        if values.shape[-1] == 0:
            return values
        return np.add.reduceat(values, self.bounds[:-1], axis=-1)

    def interval_sums(self, values, lo, hi, rows, starts=None):
        """``sum(values[..., lo_i:hi_i])`` per row, each interval inside the row's stratum.

        Over slots, or over groups with ``starts=self.group_starts``.
        """
        starts = self.slot_starts if starts is None else starts
        cum = segment_cumsum(values, starts)
        cum = np.concatenate([np.zeros(values.shape[:-1] + (1,), cum.dtype), cum], axis=-1)
        start = starts[self.rs.row_stratum[rows]]
        upper = np.where(hi > start, cum[..., hi], 0.0)  # cum[j]: slots [start, j)
        lower = np.where(lo > start, cum[..., lo], 0.0)
        return upper - lower


def _group_intervals(rs, before_own_death=None):
    """First and one-past-last tie group at which each row is at risk (read-only arrays).

    Where ``before_own_death`` is set (dying rows), the row's own event time is
    left out: ``g_hi`` one less (every event time is a tie group's, the row's
    own the last at which it is at risk). Searched once per data set.
    """
    if getattr(rs, "_at_risk_intervals", None) is None:
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
        g_lo.flags.writeable = g_hi.flags.writeable = False
        rs._at_risk_intervals = g_lo, g_hi
    g_lo, g_hi = rs._at_risk_intervals
    if before_own_death is not None:
        g_hi = g_hi - (before_own_death & rs.event)
        g_hi.flags.writeable = False
    return g_lo, g_hi


# --------------------------------------------------------------------------
# gradient and Hessian of the whole objective
# --------------------------------------------------------------------------
@single_threaded_blas
def gradient_and_hessian(params, X, rs, weights, ties, alpha=0.0, design=None):
    """Gradient ``(p,)`` and Hessian ``(p, p)`` of the negative log partial likelihood.

    Notes
    -----
    With ``A_i = sum_{s in I_i} c_s / a_s`` over the slots of the groups at
    which row ``i`` is at risk and, for a death, ``B_i = sum_{s in h_i} c_s
    f_s / a_s`` over its own group's Efron slots (``f_s = k / d``),

        g = -sum_deaths w_i x_i + sum_s c_s m_s + alpha beta
        H = sum_i r_i (A_i - delta_i B_i) x_i x_i^T - sum_s c_s m_s m_s^T + alpha I.
    """
    design = _SortedDesign(X, rs) if design is None else design
    st = _Statistics(X @ params, X, rs, weights, ties, design)
    g_lo, g_hi = _group_intervals(rs)
    # per group: sum_s c_s f_s^k / a_s^j over its slots (m_s = (S1 - f_s D1) / a_s), so
    # that nothing of size (p, n_slots) is formed
    inv = st.c / st.a
    b0, b1 = st.per_group(inv), st.per_group(inv * st.frac)
    inv2 = inv / st.a
    q0, q1, q2 = (st.per_group(inv2 * st.frac ** k) for k in range(3))
    A = st.interval_sums(b0, g_lo, g_hi, np.arange(X.shape[0]), st.group_starts)
    v = st.r * A
    v[rs.deaths] -= st.r[rs.deaths] * b1[rs.death_group]
    S1, D1 = st.S1.T, st.D1.T
    cross = (S1 * q1) @ D1.T
    H = (alpha * np.eye(X.shape[1]) - (S1 * q0) @ S1.T + cross + cross.T - (D1 * q2) @ D1.T
         + design.weighted_gram(v))
    death_weight = np.zeros(X.shape[0])
    death_weight[rs.deaths] = weights[rs.deaths]
    gradient = S1 @ b0 - D1 @ b1 - X.T @ death_weight + alpha * params
    return gradient, 0.5 * (H + H.T)


@single_threaded_blas
def negative_log_partial_likelihood(params, X, rs, weights, ties, alpha=0.0, design=None):
    """:func:`~._objective.negative_log_partial_likelihood` from the sorted sums (no autograd).

    ``sum_s c_s log a_s - sum_deaths w_i (eta_i - shift) + alpha / 2 ||params||^2``
    with the slots' weights ``c_s`` and shifted denominators ``a_s``.
    """
    eta = X @ params
    st = _Statistics(eta, X, rs, weights, ties, design, moments=False)
    shift = stratum_max(eta, rs)[rs.row_stratum[rs.deaths]]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_terms = np.sum(np.where(st.c != 0, st.c * np.log(st.a), 0.0))
    fitted = np.sum(weights[rs.deaths] * (eta[rs.deaths] - shift))
    return log_terms - fitted + 0.5 * alpha * np.dot(params, params)


class CoxCurvature:
    """Closed-form gradients and Hessians of the Cox objective for :func:`skvif._engine.minimize`.

    ``gradient_and_hessian(P, W)`` for ``k`` problems: params ``P (k, p)``
    and unit weights ``W (k, n)`` multiplying ``case_weights``, as the
    engine's batched loss takes them (:class:`skvif._engine.ModelDerivatives`).
    """

    def __init__(self, X, rs, case_weights, ties, alpha):
        self._args = X, rs, case_weights, ties, alpha
        self._design = _sorted_design(X, rs)

    def loss(self, P, W):
        X, rs, case_weights, ties, alpha = self._args
        return np.array([negative_log_partial_likelihood(
            P[i], X, rs, case_weights * W[i], ties, alpha, self._design)
            for i in range(P.shape[0])])

    def gradient_and_hessian(self, P, W):
        X, rs, case_weights, ties, alpha = self._args
        pairs = [gradient_and_hessian(P[i], X, rs, case_weights * W[i], ties, alpha,
                                      self._design) for i in range(P.shape[0])]
        return np.stack([g for g, _ in pairs]), np.stack([H for _, H in pairs])


# --------------------------------------------------------------------------
# leave-one-row-out gradient changes
# --------------------------------------------------------------------------
def _dominant_rows(st):
    """Per group: the row with the largest risk score at risk there, and the rest's sums.

    Returns ``(dominant, rest0, rest1)``: ``rest0`` (n_groups,) and ``rest1``
    (n_groups, p) are the sums of ``r`` and ``r x`` over the risk set without
    ``dominant``, accumulated without a subtraction: along a stratum's groups
    from the latest (smallest risk set) on, each group adds the rows its risk
    set adds except its dominant row, and the previous dominant row when that
    changes.
    """
    if st.rs.has_entry:
        return _dominant_rows_with_entry(st)
    rs, design = st.rs, st.design
    order = rs.time_order
    r_sorted = st.r[order]
    size = r_sorted.real
    starts = np.searchsorted(rs.row_stratum[order], np.arange(rs.n_strata + 1))
    starts[-1] = rs.n_samples
    top = np.empty(rs.n_samples, dtype=np.intp)  # sorted position of the running largest
    for lo, hi in zip(starts[:-1], starts[1:]):
        if hi > lo:
            block = size[lo:hi]
            before = np.concatenate([[-np.inf], np.maximum.accumulate(block)[:-1]])
            top[lo:hi] = lo + np.maximum.accumulate(
                np.where(block > before, np.arange(hi - lo), 0))
    # groups by stratum and growing risk set; each risk set is sorted[start:end]
    end = rs.time_hi
    by_size = np.lexsort((end, rs.group_stratum))
    end, stratum = end[by_size], rs.group_stratum[by_size]
    first = np.ones(end.size, dtype=bool)
    first[1:] = stratum[1:] != stratum[:-1]
    begin = np.where(first, starts[stratum], np.concatenate([[0], end[:-1]]))
    top_g = top[end - 1]
    indptr = np.concatenate([[0], np.cumsum(end - begin)])
    indices = np.arange(indptr[-1]) + np.repeat(begin - indptr[:-1], end - begin)
    weights = r_sorted[indices]
    weights[indptr[:-1] + (top_g - begin)] = 0.0
    added = _segment_sums(weights, indices, indptr, design.sorted)
    previous = np.concatenate([[0], top_g[:-1]])
    moved = np.flatnonzero(~first & (top_g != previous))
    added[moved] += r_sorted[previous[moved], None] * design.sorted[previous[moved]]
    rest = np.empty_like(added)
    rest[by_size] = segment_cumsum(added.T, np.flatnonzero(first)).T
    dominant = np.empty(end.size, dtype=np.intp)
    dominant[by_size] = order[top_g]
    return dominant, rest[:, 0], rest[:, 1:]


def _dominant_rows_with_entry(st):
    """:func:`_dominant_rows` with delayed entry, where a row holds more than half of a risk set.

    Elsewhere ``S0 - r_u`` keeps its digits (``r_u <= S0 / 2``), and
    ``dominant`` is -1. Such a row is the largest of its risk set; rows that
    can be one (the smallest ``S0`` over their groups, a sparse-table range
    minimum, below ``2 r_u``) are checked group by group, and each risk set
    they dominate is summed again without them, member by member (from the
    shorter of its two slices: rows at risk by time, or entered by then).
    """
    rs, r = st.rs, st.r
    n_groups, p = st.S0.size, st.X.shape[1]
    dominant = np.full(n_groups, -1, dtype=np.intp)
    rest0, rest1 = np.zeros(n_groups, dtype=r.dtype), np.zeros((n_groups, p), dtype=r.dtype)
    g_lo, g_hi = _group_intervals(rs)
    S0 = st.S0.real
    rows = np.flatnonzero((g_hi > g_lo) & (r.real > 0))
    rows = rows[_range_min(S0, g_lo[rows], g_hi[rows]) < 2.0 * r.real[rows]]
    counts = g_hi[rows] - g_lo[rows]
    hits = []
    for a, b in _pair_chunks(counts):   # (row, group) pairs of those rows, in chunks
        k = counts[a:b]
        u = np.repeat(rows[a:b], k)
        g = _ranges(g_lo[rows[a:b]], k)
        hit = r.real[u] > 0.5 * S0[g]
        hits.append((u[hit], g[hit]))
    u = np.concatenate([h[0] for h in hits] + [np.zeros(0, dtype=np.intp)])
    g = np.concatenate([h[1] for h in hits] + [np.zeros(0, dtype=np.intp)])
    first = np.lexsort((-r.real[u], g))       # (rounding: keep the largest once per group)
    u, g = u[first], g[first]
    once = np.ones(g.size, dtype=bool)
    once[1:] = g[1:] != g[:-1]
    u, g = u[once], g[once]
    dominant[g] = u
    # the members of each dominated risk set: rows at risk by time (t >= t_g), or entered
    # before t_g, whichever slice is shorter; then both conditions
    stop = np.append(rs._entry_starts, rs.n_samples)[rs.group_stratum[g] + 1]
    by_time = rs.time_hi[g] - rs.time_lo[g] <= stop - rs.entry_hi[g]
    lo = np.where(by_time, rs.time_lo[g], rs.entry_hi[g])
    size = np.where(by_time, rs.time_hi[g] - rs.time_lo[g], stop - rs.entry_hi[g])
    for a, b in _pair_chunks(size):
        k = size[a:b]
        at = _ranges(lo[a:b], k)
        member = np.where(np.repeat(by_time[a:b], k), rs.time_order[at], rs.entry_order[at])
        group = np.repeat(g[a:b], k)
        t_g = rs.group_time[group]
        keep = ((rs.time[member] >= t_g) & (rs.entry[member] < t_g)
                & (member != np.repeat(u[a:b], k)))
        member, group = member[keep], group[keep]
        np.add.at(rest0, group, r[member])
        np.add.at(rest1, group, r[member, None] * st.X.take(member, axis=0))
    return dominant, rest0, rest1


def _range_min(values, lo, hi):
    """``min(values[lo_i:hi_i])`` for each non-empty interval (sparse table, ``O(G log G)``)."""
    table = [values]
    while 2 ** len(table) <= values.size:
        last, half = table[-1], 2 ** (len(table) - 1)
        table.append(np.minimum(last[:-half], last[half:]))
    level = np.floor(np.log2(hi - lo)).astype(np.intp)
    out = np.empty(lo.size)
    for j in np.unique(level):
        here = np.flatnonzero(level == j)
        out[here] = np.minimum(table[j][lo[here]], table[j][hi[here] - 2 ** j])
    return out


def _dominant_deaths(st):
    """Per group: the tied death with the largest risk score, and the other deaths' sums."""
    rs, r = st.rs, st.r
    first = rs.death_bounds[:-1]
    top = np.lexsort((-r.real[rs.deaths], rs.death_group))[first]
    weights = r[rs.deaths]
    weights[top] = 0.0
    rest = _segment_sums(weights, st.design.position[rs.deaths], rs.death_bounds,
                         st.design.sorted)
    return rs.deaths[top], rest[:, 0], rest[:, 1:]


def _without_row(st, rows, groups, dominant, rest0, rest1, x=None):
    """Risk-set sums of ``groups`` without ``rows`` (the dominant row's from the rest sums).

    ``x``: the rows of ``X``, when already at hand. (Row gathers here are
    ``take``: two to four times faster than fancy indexing.)
    """
    r = st.r[rows]
    x = st.X.take(rows, axis=0) if x is None else x
    dominates = dominant[groups] == rows
    s0 = np.where(dominates, rest0[groups], st.S0[groups] - r)
    s1 = np.where(dominates[:, None], rest1.take(groups, axis=0),
                  st.S1.take(groups, axis=0) - r[:, None] * x)
    return s0, s1


class _OwnGroupChange:
    """For dying rows: the own term plus the tie group's term before minus after removal.

    The per-group parts are formed once; calling the object evaluates the
    dying rows of a chunk of rows (zeros for the others).
    """

    def __init__(self, st, dominant):
        self.st, self.dominant = st, dominant
        # sum_s c_s m_s over each group's slots, m_s = (S1 - f_s D1) / a_s
        inv = st.c / st.a
        self.before = (st.S1 * st.per_group(inv)[:, None]
                       - st.D1 * st.per_group(inv * st.frac)[:, None])
        self.deaths = (None if st.ties == "breslow" or st.rs.deaths.size == 0
                       else _dominant_deaths(st))
        self.group = np.full(st.rs.n_samples, -1, dtype=np.intp)  # own group of a death
        present = st.w[st.rs.deaths] > 0
        self.group[st.rs.deaths[present]] = st.rs.death_group[present]

    def __call__(self, rows):
        st, X, w = self.st, self.st.X, self.st.w
        out = np.zeros((rows.size, X.shape[1]), dtype=st.r.dtype)
        here = np.flatnonzero(self.group[rows] >= 0)
        if here.size == 0:
            return out
        dead = rows[here]
        gid = self.group[dead]
        x = X.take(dead, axis=0)
        s0, s1 = _without_row(st, dead, gid, *self.dominant, x=x)
        rest = st.W[gid] - w[dead]
        if st.ties == "breslow":
            safe = np.where(rest > 0, s0, 1.0)
            after = np.where((rest > 0)[:, None], rest[:, None] * s1 / safe[:, None], 0.0)
        else:
            # sum_{k < d'} (s1 - f_k d1) / (s0 - f_k d0), f_k = k / d'
            top_death, death_rest0, death_rest1 = self.deaths
            is_top = top_death[gid] == dead
            d0 = np.where(is_top, death_rest0[gid], st.D0[gid] - st.r[dead])
            d1 = np.where(is_top[:, None], death_rest1.take(gid, axis=0),
                          st.D1.take(gid, axis=0) - st.r[dead, None] * x)
            d_new = st.n_present[gid] - 1
            some = d_new > 0
            inv_sum, frac_sum = _efron_sums(np.where(some, s0, 1.0), np.where(some, d0, 1.0),
                                            d_new)
            mean_weight = np.where(some, rest / np.maximum(d_new, 1), 0.0)
            after = mean_weight[:, None] * (s1 * inv_sum[:, None] - d1 * frac_sum[:, None])
        out[here] = -w[dead, None] * x + self.before.take(gid, axis=0) - after
        return out


@functools.lru_cache(maxsize=1024)
def _efron_power_sums(size):
    """``sum_{k < size} (k / size)^j`` for ``j = 0.._EFRON_TERMS + 2`` (read-only)."""
    out = np.zeros(_EFRON_TERMS + 3)
    for start in range(0, size, 2**12):  # ((terms, 4096) numbers at a time)
        f = np.arange(start, min(start + 2**12, size)) / size
        out += np.cumprod(np.vstack([np.ones_like(f), np.broadcast_to(
            f, (out.size - 1, f.size))]), axis=0).sum(axis=1)
    out.flags.writeable = False
    return out


def _efron_sums(s0, d0, d, squares=False):
    """Efron sums over ``k < d`` (``f_k = k / d``, ``a_k = s0 - f_k d0``), shape (2 or 5, ...).

    ``sum 1/a_k, sum f_k/a_k`` and, with ``squares``, ``sum 1/a_k^2, sum
    f_k/a_k^2, sum f_k^2/a_k^2``: by the series in ``q = d0 / s0`` (``1/a =
    sum_j q^j f^j / s0``, ``1/a^2 = sum_j (j+1) q^j f^j / s0^2``) with exact
    power sums of ``k / d`` when ``|q| <= 1/2`` and it needs fewer terms than
    ``d``; otherwise slot by slot for ``d <= _DIRECT``, the digamma (and
    trigamma) closed forms for larger ``d``. The closed forms alone cancel
    catastrophically when ``d0 << s0`` (low-risk tied deaths).
    """
    d = d.astype(np.intp)
    out = np.zeros((5 if squares else 2,) + s0.shape, dtype=np.result_type(s0, d0))
    present = np.flatnonzero(d > 0)
    ratio = d0[present] / s0[present]
    # terms the series needs (|q|^j below rounding), when it converges fast enough
    needed = np.where(np.abs(ratio) <= 0.5, np.ceil(np.log(1e-18) / np.log(
        np.clip(np.abs(ratio), 1e-300, 0.5))), np.inf)
    direct = (d[present] <= _DIRECT) & (d[present] <= needed)
    small = present[direct]
    for k in range(int(d[small].max()) if small.size else 0):
        rows = small[d[small] > k]
        f = k / d[rows]
        inv = 1.0 / (s0[rows] - f * d0[rows])
        out[0, rows] += inv
        out[1, rows] += f * inv
        if squares:
            inv2 = inv * inv
            out[2, rows] += inv2
            out[3, rows] += f * inv2
            out[4, rows] += f * f * inv2
    near = ~direct & np.isfinite(needed)
    series = present[near]
    if series.size:
        q, needed = ratio[near], needed[near]
        by_need = np.argsort(-needed, kind="stable")  # those needing more terms first
        series, q, needed = series[by_need], q[by_need], needed[by_need]
        sizes, which = np.unique(d[series], return_inverse=True)
        which = np.ravel(which)
        P = np.stack([_efron_power_sums(int(size)) for size in sizes])  # (n_sizes, terms)
        sums = np.zeros((out.shape[0], q.size), dtype=out.dtype)
        power = np.ones_like(q)
        for j in range(_EFRON_TERMS + 1):
            k = np.count_nonzero(needed > j)
            if k == 0:
                break
            if j:
                power[:k] *= q[:k]
            P0, P1 = P[which[:k], j], P[which[:k], j + 1]
            sums[0, :k] += power[:k] * P0
            sums[1, :k] += power[:k] * P1
            if squares:
                weighted = (j + 1) * power[:k]
                sums[2, :k] += weighted * P0
                sums[3, :k] += weighted * P1
                sums[4, :k] += weighted * P[which[:k], j + 2]
        s = s0[series]
        out[:2, series] = sums[:2] / s
        out[2:, series] = sums[2:] / s ** 2
    far = present[~direct & ~near]  # (d > _DIRECT, |q| > 1/2)
    if far.size:
        dd, s, q0 = d[far], s0[far], d0[far]
        z = dd * s / q0
        e1 = dd / q0 * (digamma(z + 1) - digamma(z - dd + 1))
        out[0, far], out[1, far] = e1, (s * e1 - dd) / q0
        if squares:
            e2 = (dd / q0) ** 2 * (polygamma(1, z - dd + 1) - polygamma(1, z + 1))
            out[2, far] = e2
            out[3, far] = (s * e2 - e1) / q0
            out[4, far] = (s * s * e2 - 2 * s * e1 + dd) / q0 ** 2
    return out


def _decreasing_sums(st):
    """Per slot: a non-increasing envelope of ``a`` within its stratum (its running minimum)."""
    a = np.where(st.c != 0, st.a.real, np.inf)
    out = np.empty_like(a)
    starts = np.append(st.slot_starts, a.size)
    for lo, hi in zip(starts[:-1], starts[1:]):
        out[lo:hi] = np.minimum.accumulate(a[lo:hi])
    finite = np.isfinite(out)
    # slots before a stratum's first counting slot (c = 0 there): as large as any
    out[~finite] = out[finite].max() if finite.any() else 1.0
    return np.maximum(out, np.finfo(float).tiny)


def _series_terms(bound):
    """Series terms needed where ``r_u / a_s <= bound <= _RATIO``: ``bound^J`` below
    rounding, at most ``_TERMS``."""
    return np.minimum(np.ceil(np.log(1e-17) / np.log(np.clip(bound, 1e-300, _RATIO))),
                      _TERMS).astype(int)


class _SeriesSums:
    """``sum_s values_s r_u / (a_s - r_u)`` over the slots of each row's groups before ``g_end_u``.

    ``values_s = sum_k coefficients[k, s] group_values[k, g(s)]``: scalars per
    slot (K, n_slots) times vectors per group (K, n_groups, q). Needs ``r_u /
    a_s <= _RATIO`` on those slots: ``sum_j (r_u / a_s)^(j+1) values_s``, per group ``sum_{s in g}
    values_s (a_ref / a_s)^(j+1)``, accumulated over each stratum's groups,
    with ``a_ref`` the reference of the group's normalization block (blocks a
    factor ``_BLOCK`` apart, carried from block to block by ``(a_ref' /
    a_ref)^(j+1)``). The per-group sums of every term are formed once,
    (_TERMS, n_groups, q); calling the object evaluates rows in chunks.
    """

    def __init__(self, st, group_envelope, coefficients, group_values):
        rs = st.rs
        self.st, self.group_envelope = st, group_envelope
        self.group_start = np.searchsorted(rs.group_stratum, np.arange(rs.n_strata))
        n_groups = group_envelope.size
        top = group_envelope[self.group_start[rs.group_stratum]]
        block = np.floor(np.log(top / group_envelope) / np.log(_BLOCK)).astype(np.intp)
        self.log_ref = np.log(top) - (block + 1) * np.log(_BLOCK)
        ratio = np.exp(self.log_ref[st.slot_group]) / st.a  # a_ref / a_s <= 1
        new_segment = np.ones(n_groups, dtype=bool)
        new_segment[1:] = ((block[1:] != block[:-1])
                           | (rs.group_stratum[1:] != rs.group_stratum[:-1]))
        seg_starts = np.flatnonzero(new_segment)
        segment = np.cumsum(new_segment) - 1
        rank = np.zeros(seg_starts.size, dtype=np.intp)  # of the segment in its stratum
        for i in np.flatnonzero(~np.isin(seg_starts, self.group_start)):
            rank[i] = rank[i - 1] + 1
        gap = np.zeros(seg_starts.size)                  # blocks from the segment before
        gap[1:] = block[seg_starts[1:]] - block[seg_starts[:-1]]
        self.terms = np.zeros((_TERMS, n_groups, group_values.shape[2]),
                              dtype=np.result_type(st.r, coefficients, group_values))
        weight = np.ones(st.a.size, dtype=ratio.dtype)
        for j in range(_TERMS):
            weight = weight * ratio
            per_group = np.einsum("kg,kgq->gq", st.per_group(coefficients * weight),
                                  group_values)
            cum = segment_cumsum(per_group.T, seg_starts).T                # (n_groups, q)
            totals = cum[np.append(seg_starts[1:], n_groups) - 1]
            carry = np.zeros_like(totals)
            factor = _BLOCK ** (-(j + 1) * np.maximum(gap, 0))  # (gap < 0: new stratum)
            for step in range(1, rank.max(initial=0) + 1):
                now = np.flatnonzero(rank == step)
                carry[now] = factor[now, None] * (carry[now - 1] + totals[now - 1])
            self.terms[j] = carry[segment] + cum

    def __call__(self, rows, g_end):
        """The sums for ``rows``, their groups before ``g_end``: shape (len(rows), q)."""
        st = self.st
        result = np.zeros((rows.size, self.terms.shape[2]), dtype=self.terms.dtype)
        keep = np.flatnonzero(g_end > self.group_start[st.rs.row_stratum[rows]])
        rows, last = rows[keep], g_end[keep] - 1
        u = st.r[rows] / np.exp(self.log_ref[last])                       # r_u / a_ref
        # terms each row needs: (r_u / a_s)^J below rounding, r_u / a_s <= bound <= _RATIO
        bound = st.r.real[rows] / self.group_envelope[last]
        needed = _series_terms(bound)
        by_need = np.argsort(-needed, kind="stable")
        keep, last, u, needed = keep[by_need], last[by_need], u[by_need], needed[by_need]
        power = np.ones(keep.size, dtype=u.dtype)
        sums = np.zeros((keep.size, result.shape[1]), dtype=result.dtype)
        for j in range(_TERMS):
            k = np.count_nonzero(needed > j)   # the rows that still need terms come first
            if k == 0:
                break
            power[:k] = power[:k] * u[:k]
            term = self.terms[j].take(last[:k], axis=0)
            term *= power[:k, None]
            sums[:k] += term
        result[keep] = sums
        return result


class _IntervalSeries:
    """:class:`_SeriesSums` over any interval of groups ``[lo_u, hi_u)`` (delayed entry).

    A segment tree over the groups: node ``k`` holds, per term ``j``,
    ``sum_{s in k} values_s (a_k / a_s)^j`` with ``a_k`` the node's smallest
    denominator, so that every factor is at most 1 and a row's sum is
    ``sum_j (r_u / a_k)^j`` times that, over the nodes its interval is cut
    into: direct sums, no difference of prefix sums. A node where ``r_u >
    _RATIO a_k`` is split into its children; a group where it stays so is
    left to the exact sums (returned as (row, group) pairs).
    """

    def __init__(self, st, coefficients, group_values):
        n_groups, self.r = st.S0.size, st.r
        self.size = size = 1 << max(0, int(np.ceil(np.log2(max(n_groups, 1)))))
        a = np.where(st.c != 0, st.a.real, np.inf)
        lowest = np.full(2 * size, np.inf)
        if a.size:
            lowest[size:size + n_groups] = np.minimum.reduceat(a, st.bounds[:-1])
        self.lowest = lowest
        q = group_values.shape[2]
        self.terms = terms = np.zeros(
            (_TERMS, 2 * size, q), dtype=np.result_type(st.r, coefficients, group_values))
        leaf = lowest[size:size + n_groups][st.slot_group]
        ratio = np.where(np.isfinite(leaf), leaf, 0.0) / st.a   # (inf: a group without terms)
        weight = np.ones(st.a.size, dtype=ratio.dtype)
        for j in range(_TERMS):
            weight = weight * ratio
            terms[j, size:size + n_groups] = np.einsum(
                "kg,kgq->gq", st.per_group(coefficients * weight), group_values)
        level = size // 2
        while level >= 1:   # parents from their children, one level at a time
            k = np.arange(level, 2 * level)
            lowest[k] = np.minimum(lowest[2 * k], lowest[2 * k + 1])
            for child in (2 * k, 2 * k + 1):   # (an empty child, inf: factor 0)
                factor = np.divide(lowest[k], lowest[child], out=np.zeros(k.size),
                                   where=np.isfinite(lowest[child]))
                power = np.ones_like(factor)
                for j in range(_TERMS):
                    power = power * factor
                    terms[j, k] += power[:, None] * terms[j, child]
            level //= 2

    def __call__(self, rows, lo, hi):
        """The sums of ``rows`` over their groups ``[lo, hi)``, (k, q), and the (position
        in ``rows``, group) pairs left to the exact sums."""
        size, r = self.size, self.r[rows]
        at, nodes = [], []   # the canonical nodes of each interval
        left, right, index = lo + size, hi + size, np.arange(rows.size)
        while True:
            open_ = left < right
            if not open_.any():
                break
            take = open_ & (left % 2 == 1)
            at.append(index[take])
            nodes.append(left[take])
            left = left + take
            take = open_ & (right % 2 == 1)
            right = right - take
            at.append(index[take])
            nodes.append(right[take])
            left, right = left // 2, right // 2
        at, nodes = np.concatenate(at), np.concatenate(nodes)
        out = np.zeros((rows.size, self.terms.shape[2]), dtype=self.terms.dtype)
        exact_at, exact_groups = [], []
        while at.size:
            fine = r.real[at] <= _RATIO * self.lowest[nodes]
            self._add(out, at[fine], nodes[fine], r[at[fine]])
            split = ~fine
            leaf = split & (nodes >= size)
            exact_at.append(at[leaf])
            exact_groups.append(nodes[leaf] - size)
            split &= ~leaf
            at = np.repeat(at[split], 2)
            nodes = (2 * np.repeat(nodes[split], 2)) + np.tile([0, 1], split.sum())
        return out, np.concatenate(exact_at), np.concatenate(exact_groups)

    def _add(self, out, at, nodes, r):
        """Add the series of (row ``at``, node) pairs to ``out``, about 2^20 numbers at once."""
        size = max(1, 2**20 // out.shape[1])
        for lo in range(0, at.size, size):
            part = slice(lo, lo + size)
            lowest = self.lowest[nodes[part]]
            here = np.flatnonzero(np.isfinite(lowest))   # (an empty node adds nothing)
            u = r[part][here] / lowest[here]
            needed = _series_terms(u.real)
            power = np.ones(here.size, dtype=u.dtype)
            values = np.zeros((here.size, out.shape[1]), dtype=out.dtype)
            for j in range(_TERMS):
                power = power * u
                more = np.flatnonzero(needed > j)
                if more.size == 0:
                    break
                values[more] += power[more, None] * self.terms[j].take(
                    nodes[part][here[more]], axis=0)
            np.add.at(out, at[part][here], values)


def _exact_sums(st, rows, lo, hi, dominant, term, q):
    """``sum_{s in [lo_u, hi_u)} term(...)`` slot by slot, shape (len(rows), q).

    ``term(u, s, a_without, s1_without)`` gives each (row, slot) pair's ``q``
    values from the slot's denominator and covariate sum without the row
    (accurate also where the row makes up most of the risk set).
    """
    counts = np.maximum(hi - lo, 0)
    result = np.zeros((rows.size, q), dtype=st.r.dtype)
    for first, stop in _pair_chunks(counts):
        k = counts[first:stop]
        u = np.repeat(rows[first:stop], k)
        s = _ranges(lo[first:stop], k)
        g, f = st.slot_group[s], st.frac[s]
        s0, s1 = _without_row(st, u, g, *dominant)
        a_without = np.where(st.c[s] != 0, s0 - f * st.D0[g], 1.0)  # (c = 0: no term)
        values = term(u, s, a_without, s1 - f[:, None] * st.D1.take(g, axis=0))
        nonempty = np.flatnonzero(k > 0)
        result[first + nonempty] += np.add.reduceat(values, (np.cumsum(k) - k)[nonempty],
                                                    axis=0)
    return result


def _ranges(starts, counts):
    """``starts[i] + arange(counts[i])`` for each ``i``, concatenated."""
    return np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())


def _pair_chunks(counts):
    """Consecutive row ranges with about ``_PAIRS`` (row, slot) pairs each."""
    ends = np.cumsum(counts)
    if ends.size == 0 or ends[-1] == 0:
        return []
    starts = np.unique(np.searchsorted(ends, np.arange(0, ends[-1], _PAIRS), side="right"))
    return list(zip(starts, np.append(starts[1:], counts.size)))


def _series_cut(st, rows, g_lo, g_hi):
    """Each row's first group (in ``[g_lo, g_hi]``) from which on its slots are summed exactly.

    Before it, ``r_u / a_s <= _RATIO`` on every slot (the series applies);
    returns ``(cut, group_envelope)``, the latter each group's smallest
    denominator, non-increasing along a stratum's groups.
    """
    rs = st.rs
    group_envelope = _decreasing_sums(st)[st.bounds[1:] - 1]
    split = np.empty(rows.size, dtype=np.intp)
    for s in range(rs.n_strata):
        here = np.flatnonzero(rs.row_stratum[rows] == s)
        first = np.searchsorted(rs.group_stratum, s, side="left")
        stop = np.searchsorted(rs.group_stratum, s, side="right")
        split[here] = first + np.searchsorted(-group_envelope[first:stop],
                                              -st.r.real[rows[here]] / _RATIO, side="right")
    return np.clip(split, g_lo[rows], g_hi[rows]), group_envelope


class _GradientChanges:
    """``g(all) - g(without row u)`` for any rows: the shared per-group work done once.

    Calling the object with row indices gives their changes, (k, p), by
    chunks of ``_ROWS`` rows: memory beyond the statistics' own grows with
    the rows asked for, not with ``n``.
    """

    def __init__(self, st):
        rs, w = st.rs, st.w
        self.st = st
        self.dominant = dominant = _dominant_rows(st)
        self.own_group = _OwnGroupChange(st, dominant)
        # each row's slots: its stratum's groups up to its time (strictly before it when
        # it dies there: that group is the own group's)
        g_lo, g_hi = _group_intervals(rs, before_own_death=rs.event & (w > 0))
        self.g_lo, self.g_hi, self.hi = g_lo, g_hi, st.bounds[g_hi]
        # values_s = [c_s, c_s m_s] = c_s [1, 0] + c_s / a_s [0, S1_g] - c_s f_s / a_s [0, D1_g]
        inv = st.c / st.a
        group_values = np.zeros((3, st.S0.size, 1 + st.X.shape[1]), dtype=st.r.dtype)
        group_values[0, :, 0] = 1.0
        group_values[1, :, 1:], group_values[2, :, 1:] = st.S1, st.D1
        coefficients = np.stack([st.c, inv, -inv * st.frac])
        self.series = self.tree = None
        if rs.has_entry:
            # a series over [g_lo, cut) would be a difference of prefix sums, which
            # cancels: the interval tree's direct sums where they fit, else every slot
            # exactly
            self.cut = g_lo
            if 4 * _TERMS * max(st.S0.size, 1) * group_values.shape[2] <= _TREE_ELEMENTS:
                self.tree = _IntervalSeries(st, coefficients, group_values)
            return
        self.cut, group_envelope = _series_cut(st, np.arange(rs.n_samples), g_lo, g_hi)
        self.series = _SeriesSums(st, group_envelope, coefficients, group_values)

    def _term(self, u, s, a_without, s1_without):  # c_s r_u (x_u - m_s^(-u)) / a_s
        st = self.st
        return (st.c[s] * st.r[u] / st.a[s])[:, None] * (
            st.X.take(u, axis=0) - s1_without / a_without[:, None])

    def __call__(self, rows):
        st, X = self.st, self.st.X
        out = np.empty((rows.size, X.shape[1]), dtype=st.r.dtype)
        for start in range(0, rows.size, _ROWS):  # (no (n, p) temporaries)
            chunk = rows[start:start + _ROWS]
            change = self.own_group(chunk)
            at_risk = np.flatnonzero(st.r.real[chunk] > 0)
            u = chunk[at_risk]
            if self.tree is None:
                exact = _exact_sums(st, u, st.bounds[self.cut[u]], self.hi[u],
                                    self.dominant, self._term, X.shape[1])
                sums = None if self.series is None else self.series(u, self.cut[u])
            else:   # (the groups the tree leaves to the exact sums, _ROWS at a time)
                sums, at, groups = self.tree(u, self.g_lo[u], self.g_hi[u])
                exact = np.zeros((u.size, X.shape[1]), dtype=st.r.dtype)
                for lo in range(0, at.size, _ROWS):
                    part = slice(lo, lo + _ROWS)
                    np.add.at(exact, at[part], _exact_sums(
                        st, u[at[part]], st.bounds[groups[part]], st.bounds[groups[part] + 1],
                        self.dominant, self._term, X.shape[1]))
            if sums is not None:
                exact = X.take(u, axis=0) * sums[:, :1] - sums[:, 1:] + exact
            change[at_risk] += exact
            out[start:start + chunk.size] = change
        return out


@single_threaded_blas
def gradient_changes(params, X, rs, case_weights, ties, design=None):
    """``g(params; all rows) - g(params; without row u)`` for every row, shape (n, p).

    ``g`` is the gradient of the negative log partial likelihood (the ridge
    penalty cancels). ``X`` is the (centered) design the objective uses.
    """
    return gradient_change_rows(params, X, rs, case_weights, ties, design)(
        np.arange(rs.n_samples))


def gradient_change_rows(params, X, rs, case_weights, ties, design=None):
    """``rows -> gradient_changes(...)[rows]``, the shared work done once (see above)."""
    return _GradientChanges(_Statistics(X @ params, X, rs, case_weights, ties, design))


@single_threaded_blas
def hazard_changes(params, X, rs, case_weights, times, design=None):
    """Breslow baseline cumulative hazard with all rows minus without row ``u``, shape (n, k).

    ``H0(t) = sum_{g: t_g <= t} W_g / S0_g`` in the row's own stratum (the
    only one its removal changes), at each of ``times``, in the shifted units
    of :func:`~._objective.breslow_cumulative_hazard` (times
    ``exp(-shift)`` of the row's stratum). For a group at which ``u`` is at
    risk, ``W_g / S0_g - W_g / (S0_g - r_u)``; at its own death,
    ``W_g / S0_g - (W_g - w_u) / (S0_g - r_u)``; by the same series and
    exact sums as :func:`gradient_changes`, ``O(n k)``.
    """
    if rs.has_entry:
        raise ValueError("the O(n p) Cox path does not handle delayed entry")
    st = _Statistics(X @ params, X, rs, case_weights, "breslow", design)
    w = case_weights
    dominant = _dominant_rows(st)
    died = rs.event & (w > 0)
    g_lo, g_hi = _group_intervals(rs, before_own_death=died)
    rows = np.flatnonzero(st.r.real > 0)
    cut, group_envelope = _series_cut(st, rows, g_lo, g_hi)
    hazard = np.where(st.W > 0, st.W / st.a, 0.0)
    # the groups of each row's stratum up to each time
    first = np.searchsorted(rs.group_stratum, np.arange(rs.n_strata), side="left")
    upto = np.empty((rs.n_strata, len(times)), dtype=np.intp)
    for s in range(rs.n_strata):
        stop = np.searchsorted(rs.group_stratum, s, side="right")
        upto[s] = first[s] + np.searchsorted(rs.group_time[first[s]:stop], times, side="right")
    # own death group: the row's hazard jump with and without it
    own = np.full(rs.n_samples, -1, dtype=np.intp)
    own[rs.deaths] = rs.death_group
    own[~died] = -1
    dead = np.flatnonzero(own >= 0)
    s0, _ = _without_row(st, dead, own[dead], *dominant)
    rest = st.W[own[dead]] - w[dead]
    own_change = hazard[own[dead]] - np.where(rest > 0, rest / np.where(rest > 0, s0, 1.0), 0.0)
    out = np.zeros((rs.n_samples, len(times)), dtype=st.r.dtype)

    def term(u, s, a_without, s1_without):  # W_s / a_s - W_s / a_s^(-u)
        return (hazard[s] * (1.0 - st.a[s] / a_without))[:, None]

    series = _SeriesSums(st, group_envelope, hazard[None], np.ones((1, st.S0.size, 1)))
    for k in range(len(times)):
        end = upto[rs.row_stratum, k]
        series_end = np.minimum(cut, end[rows])
        out[rows, k] -= series(rows, series_end)[:, 0]
        out[rows, k] += _exact_sums(st, rows, st.bounds[series_end],
                                    st.bounds[np.minimum(g_hi[rows], end[rows])],
                                    dominant, term, 1)[:, 0]
        reached = own[dead] < end[dead]
        out[dead[reached], k] += own_change[reached]
    return out


@single_threaded_blas
def hessian_changes(params, X, rs, case_weights, ties, rows=None, design=None, step=1e-30):
    """``H(params; all rows) - H(params; without row u)`` for ``rows`` (default all), (k, p, p).

    The derivative of :func:`gradient_changes` by the complex step
    ``Im g(params + i h e_j) / h``: exact to rounding (no difference of two
    nearby numbers), ``p`` evaluations of the gradient changes of ``rows``
    (each after ``O(n p)`` shared work).
    """
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    design = _SortedDesign(X, rs) if design is None else design
    p = params.size
    out = np.empty((rows.size, p, p))
    for j in range(p):
        shifted = params.astype(complex)
        shifted[j] += 1j * step
        out[:, :, j] = gradient_change_rows(shifted, X, rs, case_weights, ties,
                                            design)(rows).imag / step
    return 0.5 * (out + np.swapaxes(out, 1, 2))


# --------------------------------------------------------------------------
# weight derivatives (method="if": R's dfbeta)
# --------------------------------------------------------------------------
@single_threaded_blas
def weight_derivatives(params, X, rs, case_weights, ties, design=None):
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
    st = _Statistics(X @ params, X, rs, w, ties, design)
    a, m, c, bounds = st.a, st.m, st.c, st.bounds
    e = np.where(w > 0, st.r / np.where(w > 0, w, 1.0), 0.0)  # exp(eta - shift)
    g_lo, g_hi = _group_intervals(rs)
    rows = np.arange(X.shape[0])
    ca = c / a
    sums = st.interval_sums(np.vstack([ca, ca * m]), bounds[g_lo], bounds[g_hi], rows)
    out = e[:, None] * (X * sums[0][:, None] - sums[1:].T)

    # the row's own tie group: its death term and the Efron fractions
    if ties == "breslow":
        per_death = m.T  # one slot per group, weight derivative 1
    else:
        valid = (c > 0).astype(float)
        per_death = np.add.reduceat((valid * m).T, bounds[:-1], axis=0) / np.maximum(
            st.n_present, 1)[:, None]
    F1 = np.add.reduceat(ca * st.frac, bounds[:-1])
    F2 = np.add.reduceat((ca * st.frac * m).T, bounds[:-1], axis=0)
    present = w[rs.deaths] > 0
    dead, gid = rs.deaths[present], rs.death_group[present]
    out[dead] += -(X[dead] - per_death[gid]) - e[dead, None] * (X[dead] * F1[gid, None]
                                                                 - F2[gid])
    return (w[:, None] * out).T


class _PerThread(threading.local):
    """State of each thread that shares an object; pickled, a fresh one (processes start
    their own). ``__init__``'s arguments are kept to make it again."""

    def __init__(self, *args):
        self._args = args

    def __reduce__(self):
        return type(self), self._args


class CoxDerivatives(CoxCurvature):
    """The engine's closed forms for the Cox objective (:class:`skvif._engine.ModelDerivatives`).

    At the fitted ``params``: ``hessian`` and ``gradient_and_hessian`` (any
    data); ``weight_derivatives`` (any units: the engine sums a unit's rows);
    with ``row_changes``, ``gradient_changes`` and ``hessian_changes``, which
    remove one row at a time (with delayed entry the gradient changes' series
    over each row's interval of event times from :class:`_IntervalSeries`, and
    the Hessian changes their complex step). The gradient changes of all rows are computed once, on
    first use; the Hessian changes (closed form, :mod:`._fast_hessian`) per
    chunk of rows from per-group tables built once (``(k, p, p)``, never
    ``(n, p, p)`` at once).
    """

    def __init__(self, params, X, rs, case_weights, ties, alpha=0.0, row_changes=True,
                 survival=None):
        super().__init__(X, rs, case_weights, ties, alpha)
        self._at = (params, X, rs, case_weights, ties)
        self._cache = {}
        self._survival = survival
        if not row_changes:
            self.gradient_changes = self.hessian_changes = None
        # (with delayed entry the Hessian changes by the complex step: the closed-form
        # Hessian and hazard changes need slots that start at the stratum's first time)
        if not row_changes or survival is None or rs.has_entry:
            self.target_changes = None

    def target_changes(self, units):
        """Change of the predicted survival (``survival=(X_new, strata_new, times)``)."""
        X_new, strata_new, times = self._survival
        params, X, rs, case_weights, _ = self._at
        rows = unit_rows(units)
        dH = hazard_changes(params, X, rs, case_weights, times, self._design)[rows]
        eta = X @ params
        shift = stratum_max(eta, rs)                        # hazard_changes' units
        S = survival_probabilities(params, case_weights, X, rs, X_new, strata_new, times)
        scale = np.exp(X_new @ params - shift[strata_new])     # (m,)
        same = rs.row_stratum[rows][:, None] == strata_new[None, :]   # (k, m)
        # S^(-u) = exp(-(H0 - dH) e^eta) = S exp(dH e^eta)
        change = np.where(same[:, :, None],
                          S[None] * np.expm1(dH[:, None, :] * scale[None, :, None]), 0.0)
        return change.reshape(rows.size, -1)

    def hessian(self):
        X, rs, case_weights, ties, alpha = self._args
        return gradient_and_hessian(self._at[0], X, rs, case_weights, ties, alpha,
                                    self._design)[1]

    @property
    def thread_safe(self):
        # the closed form's tables stream per thread, with delayed entry the complex step
        # takes the rows asked for; without either, the complex step's block of
        # _CACHE_ELEMENTS numbers is one, shared
        return self._at[2].has_entry or self._closed_form_fits()

    def _closed_form_fits(self):
        from ._fast_hessian import group_moments_fit
        params, rs = self._at[0], self._at[2]
        return not rs.has_entry and group_moments_fit(rs.group_time.size, rs.n_strata,
                                                          params.size)

    def gradient_changes(self, units):
        # the shared per-group work once; each chunk of rows then O(k p)
        with single_blas_thread(self._at[1].shape[0]):
            with _BUILD_LOCK:   # (once for all threads)
                if "gradient" not in self._cache:
                    self._cache["gradient"] = gradient_change_rows(*self._at,
                                                                   design=self._design)
            return self._cache["gradient"](unit_rows(units))

    def unit_order(self, units):
        # rows in CoxHessianChanges.row_order: a chunk's rows then share their groups'
        # series products (else by time, in blocks of the complex step)
        closed_form = self._closed_form_hessian_changes()
        if closed_form is None:
            return np.arange(len(units))
        return closed_form.row_order(unit_rows(units))

    def _closed_form_hessian_changes(self):
        """The (cached) :class:`._fast_hessian.CoxHessianChanges`, or None with delayed
        entry or where its per-group second moments would not fit."""
        from ._fast_hessian import CoxHessianChanges
        if self.hessian_changes is None or not self._closed_form_fits():
            return None
        with _BUILD_LOCK:   # (once for all threads)
            if "hessian_changes" not in self._cache:
                with single_blas_thread(self._at[1].shape[0]):
                    self._cache["hessian_changes"] = CoxHessianChanges(*self._at,
                                                                       design=self._design)
        return self._cache["hessian_changes"]

    def hessian_changes(self, units):
        # closed form (._fast_hessian): the shared per-group work done once, on first
        # use; each chunk of rows then costs O(k p^2). With delayed entry, or where its
        # per-group second moments would not fit (many distinct event times and many
        # columns), the complex step instead: p gradient-change passes per block of rows
        rows = unit_rows(units)
        closed_form = self._closed_form_hessian_changes()
        with single_blas_thread(self._at[1].shape[0]):
            if closed_form is None:
                return self._complex_step_hessian_changes(rows)
            return closed_form.parts(rows)   # (D, x, y): D + x y^T + y x^T

    def _complex_step_hessian_changes(self, rows):
        # blocks of at most _CACHE_ELEMENTS numbers, the last one kept (the engine asks
        # for consecutive chunks of rows)
        params, X, rs = self._at[:3]
        size = max(1, _CACHE_ELEMENTS // params.size ** 2)
        block = np.unique(rows // size)
        if block.size > 1 or rs.has_entry:   # (with entry each row's pairs cost the most)
            return hessian_changes(*self._at, rows=rows, design=self._design)
        if self._cache.get("hessian_block") != block[0]:
            self._cache["hessian"] = None   # (one block at a time)
            self._cache["hessian"] = hessian_changes(
                *self._at, rows=np.arange(block[0] * size, min((block[0] + 1) * size,
                                                               X.shape[0])),
                design=self._design)
            self._cache["hessian_block"] = block[0]
        return self._cache["hessian"][rows - block[0] * size]

    def weight_derivatives(self):
        return weight_derivatives(*self._at, design=self._design)
