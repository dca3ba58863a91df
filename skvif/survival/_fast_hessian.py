"""Closed-form leave-one-row-out Hessian changes of the Cox objective in ``O(n p^2)``.

``Delta H_u = H(all rows) - H(without row u)`` for every row ``u`` (``method="newton"``),
from the same slots, series and exact pairs as :func:`._fast.gradient_changes`
(see :mod:`._fast`). The Hessian is ``sum_s c_s V_s`` with ``V_s = C_s / a_s -
m_s m_s^T`` the weighted covariance of slot ``s``'s risk set (``C_s = S2_g -
f_s D2_g``, ``S2``/``D2`` the group's risk-set/death sums of ``r x x^T``).

* A slot where ``u`` is at risk but does not die: with ``t = r_u / a_s`` and
  ``d = x_u - m_s``, removing ``u`` changes its term by

      c_s [ -(t / (1 - t)) V_s + (t / (1 - t)^2) d d^T ].

  Where ``t <= _RATIO`` the geometric series ``t / (1 - t) = sum_j t^j``,
  ``t / (1 - t)^2 = sum_j j t^j`` turn the sums over a row's slots into
  prefix sums over the groups of per-group matrices (``S2_g, D2_g, S1 S1^T,
  S1 D1^T + D1 S1^T, D1 D1^T``) times per-group scalar sums of ``c_s f_s^k
  a_s^-l``, normalized per block of groups as in :func:`._fast._series_sums`;
  these tables are computed once and shared by all blocks of rows. The other
  slots (``t > _RATIO``, a bounded number of pairs) are summed pair by pair.
* The row's own tie group (when it dies): the group's term recomputed without
  the row, its Efron sums over the remaining tied deaths slot by slot, by a
  series in ``d0 / s0`` or by the (poly)digamma closed forms.
* A row with more than half of some slot's risk set (``t > 1/2``: the sums
  without it would cancel) is recomputed directly, ``H(all) - H(without u)``
  by :func:`._fast.gradient_and_hessian` with its weight set to zero (a few
  rows: at most about two per slot), or, when there are many such rows, by the
  complex step of :func:`._fast.hessian_changes` on those rows only.

Matrices are kept flattened (``p * p`` numbers per group or row).
"""

import numpy as np

from ._fast import (_BLOCK, _RATIO, _TERMS, _efron_sums, _group_intervals, _pair_chunks,
                    _series_cut, _SortedDesign, _Statistics, gradient_and_hessian,
                    hessian_changes)
from ._objective import segment_cumsum

__all__ = ["CoxHessianChanges", "closed_form_hessian_changes", "group_moments_fit"]

_DOMINANT = 0.5      # rows with r_u > _DOMINANT * a_s on one of their slots: direct recompute
_DIRECT_ROWS = 16    # up to this many of them by full Hessians, more by the complex step
_TABLE_ELEMENTS = 2**27  # series prefix tables of all terms kept up to this many numbers (1 GiB)
_MOMENT_ELEMENTS = 2**27  # the five per-group (n_groups, p^2) second-moment arrays, at most
_MOMENT_ROWS = 2**14     # rows per chunk of the second-moment sums
_SHARED_GROUP = 4        # rows of a block per group from which the series is one product per group
_GEMM_SEGMENT = 16       # segments at least this long on average: a matrix product each


def group_moments_fit(n_groups, p):
    """Whether :class:`CoxHessianChanges`' per-group second moments fit ``_MOMENT_ELEMENTS``."""
    return 5 * n_groups * p * p <= _MOMENT_ELEMENTS


def _outer(a, b):
    """``a_i b_i^T`` for rows ``a, b`` (k, p), flattened: (k, p * p)."""
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)


def _grouped_moments(X, r, rows, starts):
    """``sum r_i x_i x_i^T`` (flattened) over ``rows[starts[g]:starts[g+1]]``, (n_segments, p^2).

    ``starts`` are the segments' first positions (increasing, the last segment
    ends at ``rows.size``); computed in chunks of ``_MOMENT_ROWS`` rows.
    """
    n_seg = starts.size
    out = np.zeros((n_seg, X.shape[1] ** 2), dtype=r.dtype)
    if n_seg == 0 or rows.size == 0:
        return out
    if rows.size >= _GEMM_SEGMENT * n_seg:
        # long segments (tied times): one matrix product X_k^T diag(r) X_k per segment
        ends = np.append(starts[1:], rows.size)
        for k, (lo, hi) in enumerate(zip(starts, ends)):
            x = X[rows[lo:hi]]
            out[k] = (x.T @ (r[rows[lo:hi], None] * x)).ravel()
        return out
    for lo in range(0, rows.size, _MOMENT_ROWS):
        hi = min(lo + _MOMENT_ROWS, rows.size)
        chunk = rows[lo:hi]
        x = X[chunk]
        values = _outer(r[chunk, None] * x, x)
        first = np.searchsorted(starts, lo, side="right") - 1   # segment holding lo
        last = np.searchsorted(starts, hi - 1, side="right") - 1
        local = np.maximum(starts[first:last + 1] - lo, 0)
        local[0] = 0
        sums = np.add.reduceat(values, local, axis=0)
        out[first:last + 1] += sums
    return out


class CoxHessianChanges:
    """``H(all) - H(without row u)`` of the Cox objective, for blocks of rows.

    The shared per-group work (risk-set and death second moments, the series'
    prefix tables, the own groups' terms) is done once, at construction;
    :meth:`rows` then costs ``O(k p^2)`` plus the block's exact pairs.

    Parameters
    ----------
    params : ndarray of shape (p,)
        Coefficients at which the Hessian changes are taken.
    X : ndarray of shape (n, p)
        The (centered) design the objective uses.
    rs : RiskSets
        The risk sets (right-censored: no delayed entry).
    case_weights : ndarray of shape (n,)
        Case weights.
    ties : {"efron", "breslow"}
        Tie handling.
    design : _SortedDesign, optional
        The sorted design of ``X`` (made when not given).
    """

    def __init__(self, params, X, rs, case_weights, ties, design=None):
        if rs.has_entry:
            raise ValueError("the O(n p^2) Cox path does not handle delayed entry")
        design = _SortedDesign(X, rs) if design is None else design
        self._args = params, X, rs, case_weights, ties, design
        self.st = st = _Statistics(X @ params, X, rs, case_weights, ties, design)
        n, p = X.shape
        self.p = p
        self.pp = p * p
        # per group: risk-set and death sums of r x x^T (flattened)
        sorted_rows, _, indptr, restart, last = design.time
        if indptr.size > 1:
            moments = _grouped_moments(X, st.r, sorted_rows, indptr[:-1])
            cum = segment_cumsum(moments.T, restart).T
            self.S2 = np.where((last >= 0)[:, None], cum[np.maximum(last, 0)], 0.0)
        else:
            self.S2 = np.zeros((last.size, p * p))
        self.D2 = _grouped_moments(X, st.r, rs.deaths, rs.death_bounds[:-1])
        S1, D1 = st.S1, st.D1  # (n_groups, p)
        self.S1S1 = _outer(S1, S1)
        SD = _outer(S1, D1).reshape(-1, p, p)
        self.SD = (SD + np.swapaxes(SD, 1, 2)).reshape(-1, p * p)
        self.D1D1 = _outer(D1, D1)
        w = case_weights
        self.died = rs.event & (w > 0)
        # each row's at-risk slots before its own death group, and where the series stops
        self.g_lo, self.g_hi = _group_intervals(rs, before_own_death=self.died)
        all_rows = np.arange(n)
        self.cut, self.envelope = _series_cut(st, all_rows, self.g_lo, self.g_hi)
        # rows holding more than _DOMINANT of one of their slots (own group included)
        _, g_end = _group_intervals(rs)
        reach = np.where(g_end > self.g_lo, self.envelope[np.maximum(g_end - 1, 0)], np.inf)
        self.special = np.flatnonzero((st.r > 0) & (st.r > _DOMINANT * reach))
        self._special_cache = None
        # own group terms before removal: sum_{s in g} c_s V_s
        self.before = self._group_terms(np.ones_like(st.a), 0)
        self._setup_own()
        self._setup_series()

    # ----------------------------------------------------------------------
    def _sigma(self, weight, k, l):
        st = self.st
        return st.per_group(st.c * weight * st.frac ** k / st.a ** l)

    def _group_terms(self, weight, j):
        """Per group ``sum_s c_s weight_s [-C_s/a_s + (j+1) m_s m_s^T]`` (flattened).

        For ``j = 0`` (and weight 1) the group's Hessian term ``sum_s c_s V_s`` instead.
        """
        s01, s11 = self._sigma(weight, 0, 1), self._sigma(weight, 1, 1)
        s02, s12, s22 = (self._sigma(weight, k, 2) for k in range(3))
        mat = (-self.S2 * s01[:, None] + self.D2 * s11[:, None]
               + (j + 1) * (self.S1S1 * s02[:, None] - self.SD * s12[:, None]
                            + self.D1D1 * s22[:, None]))
        if j == 0:
            return -mat   # sum c V
        return mat

    def _setup_series(self):
        """Normalization blocks of the series (as :func:`._fast._series_sums`)."""
        st, rs = self.st, self.st.rs
        n_groups = self.envelope.size
        self.n_groups = n_groups
        if n_groups == 0:
            self._stack = None
            return
        group_start = np.searchsorted(rs.group_stratum, np.arange(rs.n_strata))
        self.group_start = group_start
        top = self.envelope[group_start[rs.group_stratum]]
        block = np.floor(np.log(top / self.envelope) / np.log(_BLOCK)).astype(np.intp)
        self.log_ref = np.log(top) - (block + 1) * np.log(_BLOCK)
        self.ratio = np.exp(self.log_ref[st.slot_group]) / st.a
        new_segment = np.ones(n_groups, dtype=bool)
        new_segment[1:] = ((block[1:] != block[:-1])
                           | (rs.group_stratum[1:] != rs.group_stratum[:-1]))
        self.seg_starts = seg_starts = np.flatnonzero(new_segment)
        self.segment = np.cumsum(new_segment) - 1
        rank = np.zeros(seg_starts.size, dtype=np.intp)
        for i in np.flatnonzero(~np.isin(seg_starts, group_start)):
            rank[i] = rank[i - 1] + 1
        self.rank = rank
        self.gap = np.zeros(seg_starts.size)
        self.gap[1:] = block[seg_starts[1:]] - block[seg_starts[:-1]]
        q = self.pp
        # every term's table, (n_groups, terms, values) split in the matrix part and the
        # vector and scalar part (contiguous products), or None: rebuilt per block of rows
        self._stack = None
        if _TERMS * n_groups * (q + self.p + 1) <= _TABLE_ELEMENTS:
            self._stack = (np.empty((n_groups, _TERMS, q)),
                           np.empty((n_groups, _TERMS, self.p + 1)))
            for j in range(1, _TERMS + 1):
                table = self._table(j)
                self._stack[0][:, j - 1], self._stack[1][:, j - 1] = table[:, :q], table[:, q:]

    def _table(self, j):
        """Prefix sums (with the carried blocks) of term ``j``: (n_groups, p^2 + p + 1)."""
        st = self.st
        weight = self.ratio ** j
        mat = self._group_terms(weight, j)
        s01, s11 = self._sigma(weight, 0, 1), self._sigma(weight, 1, 1)
        vec = j * (st.S1 * s01[:, None] - st.D1 * s11[:, None])
        sca = j * self._sigma(weight, 0, 0)
        per_group = np.column_stack([mat, vec, sca])
        n_groups, seg_starts = self.n_groups, self.seg_starts
        cum = segment_cumsum(per_group.T, seg_starts).T
        totals = cum[np.append(seg_starts[1:], n_groups) - 1]
        carry = np.zeros_like(totals)
        factor = _BLOCK ** (-j * np.maximum(self.gap, 0))  # (gap < 0: new stratum)
        for step in range(1, self.rank.max() + 1):
            now = np.flatnonzero(self.rank == step)
            carry[now] = factor[now, None] * (carry[now - 1] + totals[now - 1])
        return cum + carry[self.segment]

    # ----------------------------------------------------------------------
    def _series(self, rows):
        """Series part over each row's groups ``[g_lo, cut)``, flattened (k, p^2).

        Where many rows share a group, one product per group
        (:meth:`_grouped_sums`), which also adds the own tie group's terms
        (:meth:`_add_own`) of the dying rows whose series ends just before it;
        also returns which rows these were (boolean, (k,)).
        """
        st, q, p = self.st, self.pp, self.p
        own_done = np.zeros(rows.size, dtype=bool)
        if self.n_groups == 0:
            return np.zeros((rows.size, q)), own_done
        rs = st.rs
        g_end = self.cut[rows]
        keep = np.flatnonzero((g_end > self.group_start[rs.row_stratum[rows]])
                              & (st.r[rows] > 0))
        if keep.size == 0:
            return np.zeros((rows.size, q)), own_done
        last = g_end[keep] - 1
        bound = st.r[rows[keep]] / self.envelope[last]
        needed = np.ceil(np.log(1e-17) / np.log(np.clip(bound, 1e-300, _RATIO))).astype(int)
        factors = np.zeros((keep.size, p, 5))     # the rank-five update's two factors
        weights = np.zeros((keep.size, 5, p))
        if (self._stack is not None
                and np.unique(last).size * _SHARED_GROUP <= keep.size):
            keep, mat, vec, aligned = self._grouped_sums(rows, keep, last, needed)
            u = rows[keep[aligned]]
            own_done[keep[aligned]] = True
            factors[aligned, :, 2:], weights[aligned, 2:] = self._own_rank_three(
                u, self.own_group[u])
        else:
            keep, mat, vec = self._term_sums(rows, keep, last, needed)
        x = st.X.take(rows[keep], axis=0)   # (take: faster than fancy indexing)
        # sca x x^T - x v^T - v x^T = x h^T + h x^T with h = sca x / 2 - v, and the own
        # terms' rank-three part: one (k, p, 5) @ (k, 5, p) product
        h = 0.5 * vec[:, -1:] * x - vec[:, :p]
        factors[:, :, 0], factors[:, :, 1] = x, h
        weights[:, 0], weights[:, 1] = h, x
        mat += np.matmul(factors, weights).reshape(keep.size, q)
        if keep.size == rows.size:  # every row: a permutation of mat's rows
            return mat.take(np.argsort(keep), axis=0), own_done
        out = np.zeros((rows.size, q))
        out[keep] = mat
        return out, own_done

    def _grouped_sums(self, rows, keep, last, needed):
        """The series sums as (rows of a group x terms) @ (terms x values), group by group.

        Powers ``u^j`` where the row needs term ``j``, 0 beyond. Within a group
        the dying rows whose own group comes next (``aligned``) first: their
        own group's matrix terms by one more product. Returns the rows' order
        (``keep``), the matrix and vector parts and ``aligned``.
        """
        st = self.st
        aligned = self.own_group[rows[keep]] == last + 1
        by_group = np.lexsort((~aligned, last))
        keep, last, needed, aligned = (keep[by_group], last[by_group], needed[by_group],
                                       aligned[by_group])
        u = rows[keep]
        E = self.own_E.take(self.own_index[u[aligned]], axis=1)
        own_coef = np.zeros((keep.size, 3))
        own_coef[aligned] = np.column_stack([np.ones(E.shape[1]), -E[0], E[1]])
        terms = np.arange(1, _TERMS + 1)
        powers = np.where(terms <= needed[:, None],
                          (st.r[u] / np.exp(self.log_ref[last]))[:, None] ** terms, 0.0)
        groups = np.unique(last)
        bounds = np.append(np.searchsorted(last, groups), keep.size)
        n_aligned = np.add.reduceat(aligned, bounds[:-1])
        n_terms = np.maximum.reduceat(np.minimum(needed, _TERMS), bounds[:-1])
        mat, vec = np.empty((keep.size, self.pp)), np.empty((keep.size, self.p + 1))
        for i, g in enumerate(groups):
            lo, hi, j = bounds[i], bounds[i + 1], n_terms[i]  # (the terms its rows need)
            np.matmul(powers[lo:hi, :j], self._stack[0][g, :j], out=mat[lo:hi])
            np.matmul(powers[lo:hi, :j], self._stack[1][g, :j], out=vec[lo:hi])
            if n_aligned[i]:
                top = lo + n_aligned[i]
                mat[lo:top] += own_coef[lo:top] @ np.stack(
                    [self.before[g + 1], self.S2[g + 1], self.D2[g + 1]])
        return keep, mat, vec, aligned

    def _term_sums(self, rows, keep, last, needed):
        """The series sums term by term (few rows per group), rows needing more first."""
        st, q = self.st, self.pp
        by_need = np.argsort(-needed, kind="stable")
        keep, last, needed = keep[by_need], last[by_need], needed[by_need]
        u = st.r[rows[keep]] / np.exp(self.log_ref[last])
        power = np.ones(keep.size)
        mat, vec = np.zeros((keep.size, q)), np.zeros((keep.size, self.p + 1))
        for j in range(1, _TERMS + 1):
            k = np.count_nonzero(needed >= j)
            if k == 0:
                break
            power[:k] *= u[:k]
            if self._stack is not None:
                mat[:k] += power[:k, None] * self._stack[0][:, j - 1].take(last[:k], axis=0)
                vec[:k] += power[:k, None] * self._stack[1][:, j - 1].take(last[:k], axis=0)
            else:
                table = self._table(j).take(last[:k], axis=0)
                mat[:k] += power[:k, None] * table[:, :q]
                vec[:k] += power[:k, None] * table[:, q:]
        return keep, mat, vec

    def _add_exact(self, rows, out):
        """Add the slots from each row's cut to its own time, pair by pair, to ``out`` (k, p^2)."""
        st = self.st
        lo, hi = st.bounds[self.cut[rows]], st.bounds[self.g_hi[rows]]
        counts = np.where(st.r[rows] > 0, np.maximum(hi - lo, 0), 0)
        for first, stop in _pair_chunks(counts):
            k = counts[first:stop]
            u = np.repeat(rows[first:stop], k)
            s = (np.repeat(lo[first:stop], k) + np.arange(k.sum())
                 - np.repeat(np.cumsum(k) - k, k))
            g, f, a, c = st.slot_group[s], st.frac[s], st.a[s], st.c[s]
            ru = st.r[u]
            # (pairs with t > _DOMINANT belong to the directly recomputed rows)
            counting = (c != 0) & (ru <= _DOMINANT * a)
            rest = np.where(counting, a - ru, 1.0)
            ratio = np.where(counting, ru / rest, 0.0)            # t / (1 - t)
            m = st.m[:, s].T
            V = (self.S2[g] - f[:, None] * self.D2[g]) / a[:, None] - _outer(m, m)
            d = st.X[u] - m
            values = c[:, None] * (-ratio[:, None] * V + (ratio * a / rest)[:, None]
                                   * _outer(d, d))
            nonempty = np.flatnonzero(k > 0)
            out[first + nonempty] += np.add.reduceat(values, (np.cumsum(k) - k)[nonempty],
                                                     axis=0)

    def _setup_own(self):
        """Per dying row: its group's Efron sums without it and the slot weight (once)."""
        st = self.st
        rs, w = st.rs, st.w
        group = np.full(rs.n_samples, -1, dtype=np.intp)
        group[rs.deaths] = rs.death_group
        group[~self.died] = -1
        self.own_group = group
        u = np.flatnonzero(group >= 0)
        g = group[u]
        ru = st.r[u]
        s0, d0 = st.S0[g] - ru, st.D0[g] - ru
        rest = st.W[g] - w[u]
        if st.ties == "breslow":
            some = rest > 0
            safe = np.where(some, s0, 1.0)
            E = np.zeros((5, u.size))
            E[0], E[2] = 1.0 / safe, 1.0 / safe ** 2
            weight = np.where(some, rest, 0.0)
        else:
            d_new = st.n_present[g] - 1
            some = d_new > 0
            E = _efron_sums(np.where(some, s0, 1.0), np.where(some, d0, 1.0), d_new,
                            squares=True)
            weight = np.where(some, rest / np.maximum(d_new, 1), 0.0)
        self.own_index = np.full(rs.n_samples, -1, dtype=np.intp)
        self.own_index[u] = np.arange(u.size)
        self.own_E = weight * E          # (5, n_dying): the slot weight times the sums

    def _own_rank_three(self, u, g):
        """The mean terms of :meth:`_add_own` for dying rows ``u`` of groups ``g``.

        As ``left @ right``, (k, p, 3) and (k, 3, p).
        """
        st = self.st
        E = self.own_E.take(self.own_index[u], axis=1)
        ru, x = st.r[u], st.X.take(u, axis=0)
        rx = ru[:, None] * x
        s1, d1 = st.S1.take(g, axis=0) - rx, st.D1.take(g, axis=0) - rx
        left = np.stack([rx * (E[0] - E[1])[:, None], E[2][:, None] * s1 - E[3][:, None] * d1,
                         E[4][:, None] * d1 - E[3][:, None] * s1], axis=2)
        return left, np.stack([x, s1, d1], axis=1)

    def _add_own(self, rows, out, done):
        """Add the own tie group's before minus after removing each dying row to ``out``.

        After: ``c' [S2' E0 - D2' E1 - s1' s1'^T E2 + (s1' d1'^T + d1' s1'^T) E3 -
        d1' d1'^T E4]`` with the group's sums without the row (primes). Rows
        ``done`` (boolean) already have it (:meth:`_series`).
        """
        here = np.flatnonzero((self.own_index[rows] >= 0) & ~done)
        if here.size == 0:
            return
        u = rows[here]
        g = self.own_group[u]
        E = self.own_E.take(self.own_index[u], axis=1)
        # before - (S2 - r x x^T) E0 + (D2 - r x x^T) E1 - (the mean terms)
        change = self.before.take(g, axis=0)
        change -= self.S2.take(g, axis=0) * E[0][:, None]
        change += self.D2.take(g, axis=0) * E[1][:, None]
        left, right = self._own_rank_three(u, g)
        change += np.matmul(left, right).reshape(u.size, -1)
        out[here] += change

    def _special_rows(self, positions):
        """Direct ``H(all) - H(without u)`` of ``self.special[positions]``, (k, p, p).

        All of them are computed (and kept) at once when they hold at most
        ``_TABLE_ELEMENTS`` numbers; otherwise those asked for, each time.
        """
        if self.special.size * self.pp > _TABLE_ELEMENTS:
            return self._direct_changes(self.special[positions])
        if self._special_cache is None:
            self._special_cache = self._direct_changes(self.special)
        return self._special_cache[positions]

    def _direct_changes(self, rows):
        params, X, rs, w, ties, design = self._args
        if rows.size > _DIRECT_ROWS:
            return hessian_changes(params, X, rs, w, ties, rows=rows, design=design)
        H = gradient_and_hessian(params, X, rs, w, ties, 0.0, design)[1]
        values = np.empty((rows.size, self.p, self.p))
        for i, u in enumerate(rows):
            keep = w.copy()
            keep[u] = 0.0
            values[i] = H - gradient_and_hessian(params, X, rs, keep, ties, 0.0, design)[1]
        return values

    def rows(self, rows):
        """``H(all) - H(without row u)`` for ``rows``, shape (k, p, p)."""
        rows = np.asarray(rows, dtype=np.intp)
        flat, own_done = self._series(rows)
        self._add_exact(rows, flat)
        self._add_own(rows, flat, own_done)
        out = flat.reshape(rows.size, self.p, self.p)   # symmetric to rounding
        if self.special.size:
            where = np.searchsorted(self.special, rows)
            hit = np.flatnonzero((where < self.special.size)
                                 & (self.special[np.minimum(where, self.special.size - 1)]
                                    == rows))
            if hit.size:
                out[hit] = self._special_rows(where[hit])
        return out


def closed_form_hessian_changes(params, X, rs, case_weights, ties, rows=None, design=None):
    """``H(params; all rows) - H(params; without row u)`` for ``rows`` (default all), (k, p, p).

    The closed form of :class:`CoxHessianChanges`; equals
    :func:`._fast.hessian_changes` (the complex step) to rounding.
    """
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    return CoxHessianChanges(params, X, rs, case_weights, ties, design).rows(rows)
