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
  a_s^-l``, normalized per block of groups as in :func:`._fast._series_sums`.
  The prefix tables are streamed along the groups (rows asked for in the
  order of their series' last group: one pass, a window of groups in memory),
  and the rows of one group take their sums as one matrix product. Where all
  groups' ``S2`` and ``D2`` would not fit, ``S2`` comes in blocks summed from
  the running sum kept at each block's end (:class:`_SecondMoments`). The other
  slots (``t > _RATIO``, a bounded number of pairs) are summed pair by pair.
* The row's own tie group (when it dies): the group's term recomputed without
  the row, its Efron sums over the remaining tied deaths slot by slot, by a
  series in ``d0 / s0`` or by the (poly)digamma closed forms.
* A row with more than half of some slot's risk set (``t > 1/2``: the sums
  without it would cancel) is recomputed directly, ``H(all) - H(without u)``
  by :func:`._fast.gradient_and_hessian` with its weight set to zero (a few
  rows: at most about two per slot), or, when there are many such rows, by the
  complex step of :func:`._fast.hessian_changes` on those rows only.

The parts in ``x_u`` (``d d^T`` expanded, and the own group's) add up to
``x_u y_u^T + y_u x_u^T``: :meth:`CoxHessianChanges.parts` returns them as
``(D, x, y)`` (the engine never forms that rank-two part, see
:class:`skvif._engine.ModelDerivatives`). Matrices are kept flattened (``p * p``
numbers per group or row).
"""


import numpy as np

from ._fast import (_BLOCK, _BUILD_LOCK, _TERMS, _PerThread, _efron_sums,
                    _group_intervals, _ranges, _series_cut, _series_terms, _SortedDesign,
                    _Statistics, gradient_and_hessian, hessian_changes)
from ._objective import cumsum_by_segment

__all__ = ["CoxHessianChanges", "closed_form_hessian_changes", "group_moments_fit"]

_DOMINANT = 0.5      # rows with r_u > _DOMINANT * a_s on one of their slots: direct recompute
_DIRECT_ROWS = 16    # up to this many of them by full Hessians, more by the complex step
_STREAM_ELEMENTS = 2**22  # per-group series values computed at once (32 MiB)
_WINDOW_ELEMENTS = 2**24  # series tables of one window of a block's groups (128 MiB)
_SPECIAL_ELEMENTS = 2**27  # directly recomputed rows' changes kept up to this many numbers
_MOMENT_ELEMENTS = 2**27  # the two per-group (n_groups, p^2) second-moment arrays, at most
_MOMENT_BLOCK = 2**21    # else the risk-set moments of one block of segments (16 MiB)
_MOMENT_CHUNK = 2**18    # products r x x^T formed at once (2 MiB: in cache)
_SHARED_GROUP = 4        # rows of a block per group from which the series is one product per group
_GEMM_NUMBERS = 512      # segments of at least this many numbers (rows x p^2) on average:
                         # a matrix product each


def _segments_per_block(n_groups, n_segments, p):
    """Segments per block of :class:`_SecondMoments` (all of them: kept whole), 0 if the
    sums at the blocks' ends would not fit ``_MOMENT_ELEMENTS`` numbers either."""
    pp = p * p
    if 2 * n_groups * pp <= _MOMENT_ELEMENTS:
        return max(n_segments, 1)
    size = max(1, _MOMENT_BLOCK // pp)
    return size if -(-n_segments // size) * pp <= _MOMENT_ELEMENTS else 0


def group_moments_fit(n_groups, n_strata, p):
    """Whether :class:`CoxHessianChanges`' per-group second moments fit ``_MOMENT_ELEMENTS``
    (whole, or in blocks)."""
    return _segments_per_block(n_groups, n_groups + n_strata, p) > 0


def _outer(a, b):
    """``a_i b_i^T`` for rows ``a, b`` (k, p), flattened: (k, p * p)."""
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)


def _grouped_moments(X, r, rows, starts, out=None):
    """``sum r_i x_i x_i^T`` (flattened) over ``rows[starts[g]:starts[g+1]]``, (n_segments, p^2).

    ``starts`` are the segments' first positions (increasing, the last segment
    ends at ``rows.size``); computed in chunks of about ``_MOMENT_CHUNK`` numbers,
    into ``out`` when given.
    """
    n_seg, p = starts.size, X.shape[1]
    if out is None:
        out = np.empty((n_seg, p * p), dtype=np.result_type(X, r))
    if rows.size * p * p >= _GEMM_NUMBERS * n_seg:
        # long segments (tied times, many columns): X_k^T diag(r) X_k per segment
        ends = np.append(starts[1:], rows.size)
        for k, (lo, hi) in enumerate(zip(starts, ends)):
            x = X[rows[lo:hi]]
            np.matmul(x.T, r[rows[lo:hi], None] * x, out=out[k].reshape(p, p))
        return out
    out[:] = 0.0
    size = max(1, _MOMENT_CHUNK // X.shape[1] ** 2)
    for lo in range(0, rows.size, size):
        hi = min(lo + size, rows.size)
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


class _RecentBlocks(_PerThread):
    """Per thread: the last two blocks :class:`_SecondMoments` computed, ``(index, sums)``."""

    def __init__(self):
        super().__init__()
        self.blocks = []


class _SecondMoments:
    """Each group's risk-set and tied-death sums of ``r x x^T`` (``S2``, ``D2``), flattened.

    ``S2`` is a running sum over the segments of the sorted design
    (:class:`._fast._SortedDesign`, restarting with each stratum), taken at
    each group's segment. Where all groups' ``S2`` and ``D2`` fit
    ``_MOMENT_ELEMENTS`` numbers, the running sums at all segments and ``D2``
    are computed once (``whole``). Otherwise the running sum is kept at the
    end of each block of segments (about ``_MOMENT_BLOCK`` numbers), and a
    block asked for is summed again from the end of the block before: the
    same running sum, no difference of sums. Each thread keeps the last two
    blocks it summed, and ``D2`` is summed for the groups asked for.
    """

    def __init__(self, X, r, rs, design):
        self.X, self.r, self.rs = X, r, rs
        self.rows, _, self.indptr, restart, self.last = design.time
        n_segments, n_groups = self.indptr.size - 1, rs.group_time.size
        self.restart = np.zeros(n_segments + 1, dtype=bool)
        self.restart[restart] = True
        self.size = _segments_per_block(n_groups, n_segments, X.shape[1])
        self._recent = _RecentBlocks()
        self.whole = self.D2 = None
        if self.size >= n_segments:   # (one block, kept)
            self.whole = self._sum(0, None)
            self.D2 = self._deaths(np.arange(n_groups))
            return
        self.ends = np.empty((-(-n_segments // self.size), X.shape[1] ** 2))
        for b in range(self.ends.shape[0]):
            self.ends[b] = self._sum(b, self.ends[b - 1] if b else None)[-1]

    def _sum(self, b, before):
        """The running sums at block ``b``'s segments, from ``before`` (the block before's
        last, or None)."""
        lo = b * self.size
        hi = min(lo + self.size, self.indptr.size - 1)
        first = self.indptr[lo]
        out = np.empty((hi - lo + 1, self.X.shape[1] ** 2))
        out[0] = 0.0 if before is None else before
        _grouped_moments(self.X, self.r, self.rows[first:self.indptr[hi]],
                         self.indptr[lo:hi] - first, out=out[1:])
        starts = np.concatenate([[0], 1 + np.flatnonzero(self.restart[lo:hi])])
        return cumsum_by_segment(out, starts, out, axis=0)[1:]

    def _block(self, b):
        if self.whole is not None:
            return self.whole
        recent = self._recent.blocks
        for index, sums in recent:
            if index == b:
                return sums
        sums = self._sum(b, self.ends[b - 1] if b else None)
        recent[:] = [(b, sums)] + recent[:1]
        return sums

    def _deaths(self, groups):
        """``D2`` of ``groups`` (sorted, unique)."""
        lo = self.rs.death_bounds[groups]
        counts = self.rs.death_bounds[groups + 1] - lo
        return _grouped_moments(self.X, self.r, self.rs.deaths[_ranges(lo, counts)],
                                np.cumsum(counts) - counts)

    def at(self, groups):
        """``S2``, ``D2`` of ``groups`` (an array, any order, repeats allowed, or a slice)."""
        if isinstance(groups, slice):
            groups = np.arange(groups.start, groups.stop)
        unique, inverse = np.unique(groups, return_inverse=True)
        segment = self.last[unique]
        block = np.where(segment >= 0, segment // self.size, -1)
        S2 = np.empty((unique.size, self.X.shape[1] ** 2))
        S2[block < 0] = 0.0   # (an empty risk set)
        for b in np.unique(block[block >= 0]):
            here = block == b
            if here.all():
                np.take(self._block(b), segment - b * self.size, axis=0, out=S2)
            else:
                S2[here] = self._block(b)[segment[here] - b * self.size]
        D2 = self._deaths(unique) if self.D2 is None else self.D2[unique]
        if unique.size == groups.size and np.all(groups[1:] > groups[:-1]):
            return S2, D2
        return S2[inverse], D2[inverse]


class _Stream(_PerThread):
    """Per thread: where the stream of prefix tables is, and the last own group's moments.

    ``next`` the first group not streamed yet, ``running`` the prefix sums
    ``(terms, p^2)``, ``(terms, p + 1)`` up to group ``next - 1``, ``own`` the
    group and (5, p^2) moments :meth:`CoxHessianChanges._own_matrices` kept
    last. Threads that share a :class:`CoxHessianChanges` (joblib's threading
    backend) each stream their own.
    """

    def __init__(self, pp, p):
        super().__init__(pp, p)
        self.next = 0
        self.running = (np.zeros((_TERMS, pp)), np.zeros((_TERMS, p + 1)))
        self.own = (-1, None)


class CoxHessianChanges:
    """``H(all) - H(without row u)`` of the Cox objective, for blocks of rows.

    The shared per-group work (risk-set and death second moments, the own
    groups' terms) is done once, at construction; the series' prefix tables
    are streamed along the groups as blocks of rows ask for them
    (:meth:`_tables`), so :meth:`rows` costs ``O(k p^2)`` plus the block's
    exact pairs, and nothing grows with the number of groups times ``p^2``
    beyond the second moments (:class:`_SecondMoments`: in blocks where they
    would). Rows asked for in the order of
    :meth:`row_order` share their groups' products and the tables stream once.

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
        # per group, flattened: the risk-set and death sums of r x x^T (S2, D2; the
        # products of the first moments are formed where needed, :meth:`_moments`)
        self.second_moments = _SecondMoments(X, st.r, rs, design)
        self.first_moments = np.stack([st.S1, st.D1], axis=1)    # (n_groups, 2, p)
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
        # the coefficients of the five moments in the own group's terms before removal,
        # sum_{s in g} c_s V_s (:meth:`_own_parts`)
        self.before_coef = self._coefficients(np.ones_like(st.a)[None], [0])[:, 0]
        self._stream = _Stream(self.pp, self.p)
        self._setup_own()
        self._setup_series()

    def _moments(self, groups):
        """``[S2, D2, S1 S1^T, S1 D1^T + D1 S1^T, D1 D1^T]`` of ``groups`` (a slice or an
        array), (k, 5, p^2)."""
        p = self.p
        S1, D1 = self.first_moments[groups, 0], self.first_moments[groups, 1]
        out = np.empty((S1.shape[0], 5, self.pp))
        out[:, 0], out[:, 1] = self.second_moments.at(groups)
        out[:, 2] = _outer(S1, S1)
        SD = _outer(S1, D1).reshape(-1, p, p)
        out[:, 3] = (SD + np.swapaxes(SD, 1, 2)).reshape(-1, self.pp)
        out[:, 4] = _outer(D1, D1)
        return out

    def _own_matrices(self, g):
        """:meth:`_moments` of group ``g`` (5, p^2), for the own group's terms (the last kept)."""
        stream = self._stream
        if stream.own[0] != g:
            stream.own = (g, self._moments(slice(g, g + 1))[0])
        return stream.own[1]

    # ----------------------------------------------------------------------
    def _sigma(self, weight, k, l):
        """Per group ``sum_s c_s weight_s f_s^k / a_s^l``; ``weight`` (terms, n_slots)."""
        st = self.st
        return st.per_group(st.c * weight * st.frac ** k / st.a ** l).T

    def _coefficients(self, weight, terms):
        """Per group and term ``j`` the coefficients of the five moments in term ``j``.

        ``sum_s c_s weight_s [-C_s/a_s + (j+1) m_s m_s^T]``, as (n_groups,
        n_terms, 5) coefficients of :meth:`_moments`; ``j = 0`` with weight 1 gives
        minus the group's Hessian term ``sum_s c_s V_s``.
        """
        j1 = np.asarray(terms, dtype=float) + 1.0
        return np.stack([-self._sigma(weight, 0, 1), self._sigma(weight, 1, 1),
                         j1 * self._sigma(weight, 0, 2), -j1 * self._sigma(weight, 1, 2),
                         j1 * self._sigma(weight, 2, 2)], axis=2)

    def _setup_series(self):
        """Normalization blocks of the series (as :func:`._fast._series_sums`).

        Term ``j`` of a row whose series ends at group ``g`` is ``u^j`` times the
        prefix sum up to ``g`` of its per-group matrix (the coefficients
        ``self.matrix_coef`` of :meth:`_moments`) and of its vector and scalar
        parts (``self.vector_coef`` of ``first_moments`` and ``self.scalar``),
        with ``u = r / exp(log_ref[g])``; a new normalization block rescales
        the sums carried into it by ``_BLOCK^(-j gap)``, a new stratum starts
        from zero.
        """
        st, rs = self.st, self.st.rs
        n_groups = self.envelope.size
        self.n_groups = n_groups
        if n_groups == 0:
            return
        group_start = np.searchsorted(rs.group_stratum, np.arange(rs.n_strata))
        self.group_start = group_start
        top = self.envelope[group_start[rs.group_stratum]]
        block = np.floor(np.log(top / self.envelope) / np.log(_BLOCK)).astype(np.intp)
        self.log_ref = np.log(top) - (block + 1) * np.log(_BLOCK)
        ratio = np.exp(self.log_ref[st.slot_group]) / st.a
        terms = np.arange(1, _TERMS + 1)
        weight = ratio[None, :] ** terms[:, None]            # (terms, n_slots)
        self.matrix_coef = self._coefficients(weight, terms)
        self.vector_coef = np.stack([terms * self._sigma(weight, 0, 1),
                                     -terms * self._sigma(weight, 1, 1)], axis=2)
        self.scalar = terms * self._sigma(weight, 0, 0)       # (n_groups, terms)
        self.segment_start = np.ones(n_groups, dtype=bool)
        self.segment_start[1:] = ((block[1:] != block[:-1])
                                  | (rs.group_stratum[1:] != rs.group_stratum[:-1]))
        self.stratum_start = np.zeros(n_groups, dtype=bool)
        self.stratum_start[group_start] = True
        self.gap = np.zeros(n_groups)
        self.gap[1:] = block[1:] - block[:-1]

    def row_order(self, rows):
        """An order of ``rows`` in which their series share groups and tables stream.

        By the group where each row's series ends (rows without one first), dying
        rows whose own group comes next first within it, then by the number of
        series terms the row needs.
        """
        rows = np.asarray(rows, dtype=np.intp)
        return np.lexsort(self._series_groups(rows)[::-1])

    def _series_groups(self, rows):
        """Each row's last series group (-1: none), whether its own group is the next
        (negated) and how many series terms it needs (0: none)."""
        st = self.st
        last = self.cut[rows] - 1
        if self.n_groups:
            last[(last < self.group_start[st.rs.row_stratum[rows]]) | ~(st.r[rows] > 0)] = -1
        else:
            last[:] = -1
        has = last >= 0
        bound = np.where(has, st.r[rows] / self.envelope[np.maximum(last, 0)], 0.0)
        needed = np.where(has, _series_terms(bound), 0)
        return last, ~(has & (self.own_group[rows] == last + 1)), needed

    def _tables(self, groups, mat, vec):
        """The series' prefix tables at ``groups`` (sorted, unique) into ``mat``, ``vec``.

        ``mat`` (n, terms, p^2) and ``vec`` (n, terms, p + 1). Continues the stream
        from the last group computed (whose tables are the running sums), or
        restarts it at the stratum's first group when ``groups`` lie before it;
        per-group values in blocks of about ``_STREAM_ELEMENTS`` numbers.
        """
        done, stream = 0, self._stream
        if groups[0] == stream.next - 1:
            mat[0], vec[0] = stream.running
            done = 1
        elif groups[0] < stream.next:
            stream.next = self.group_start[self.st.rs.group_stratum[groups[0]]]
        size = max(1, _STREAM_ELEMENTS // (_TERMS * (self.pp + self.p + 1)))
        terms = np.arange(1, _TERMS + 1)[:, None]
        while done < groups.size:
            a = stream.next
            b = min(a + size, groups[-1] + 1)
            values = (np.matmul(self.matrix_coef[a:b], self._moments(slice(a, b))),
                      np.concatenate([np.matmul(self.vector_coef[a:b],
                                                self.first_moments[a:b]),
                                      self.scalar[a:b, :, None]], axis=2))
            for value, run in zip(values, stream.running):
                for g in range(a, b):   # (a loop: faster than cumsum along the groups)
                    if self.stratum_start[g]:
                        run[:] = 0.0
                    elif self.segment_start[g]:
                        run *= _BLOCK ** (-terms * self.gap[g])
                    run += value[g - a]
                    value[g - a] = run
            stop = np.searchsorted(groups, b)
            at = groups[done:stop] - a
            if at.size and at[-1] - at[0] == at.size - 1:   # (consecutive: no gathered copy)
                at = slice(at[0], at[-1] + 1)
            mat[done:stop], vec[done:stop] = values[0][at], values[1][at]
            done = stop
            stream.next = b

    # ----------------------------------------------------------------------
    def _series(self, rows):
        """Series part over each row's groups ``[g_lo, cut)``: ``D + x y^T + y x^T``.

        Returns ``D`` flattened (k, p^2), ``y`` (k, p) and which rows' own tie
        group terms are in already (boolean, (k,)): where many rows share a
        group, one product per group (:meth:`_grouped_sums`), which also adds
        the own tie group's terms (:meth:`_own_parts`) of the dying rows whose
        series ends just before it.
        """
        q, p = self.pp, self.p
        y_out = np.zeros((rows.size, p))
        own_done = np.zeros(rows.size, dtype=bool)
        last, not_aligned, needed = self._series_groups(rows)
        keep = np.flatnonzero(last >= 0)
        if keep.size == 0:
            return np.zeros((rows.size, q)), y_out, own_done
        order = np.lexsort((needed[keep], not_aligned[keep], last[keep]))
        if np.any(order[1:] < order[:-1]):
            keep = keep[order]
        last, aligned, needed = last[keep], ~not_aligned[keep], needed[keep]
        u = rows[keep]
        # y: from the vector and scalar terms (and the own group's where it is folded in)
        y = np.zeros((keep.size, p))
        contiguous = keep[-1] - keep[0] == keep.size - 1 and not np.any(order[1:] < order[:-1])
        if contiguous:   # (the products write every row of mat)
            out = np.empty((rows.size, q))
            out[:keep[0]] = 0.0
            out[keep[-1] + 1:] = 0.0
            mat = out[keep[0]:keep[-1] + 1]
        else:
            out, mat = np.zeros((rows.size, q)), np.empty((keep.size, q))
        groups, first = np.unique(last, return_index=True)
        bounds = np.append(first, keep.size)
        if groups.size * _SHARED_GROUP <= keep.size:
            self._grouped_sums(u, last, needed, aligned, groups, bounds, mat, y)
            own_done[keep[aligned]] = True
        else:
            self._term_sums(u, last, needed, groups, bounds, mat, y)
        if not contiguous:
            out[keep] = mat
        y_out[keep] = y
        return out, y_out, own_done

    def _windows(self, groups, bounds, extra):
        """Windows of consecutive ``groups`` whose tables hold ``_WINDOW_ELEMENTS`` numbers.

        Yields the window's first and one-past-last group positions and its tables
        (n, extra + terms, p^2), (n, terms, p + 1), the first ``extra`` matrices
        left for the caller.
        """
        size = max(1, _WINDOW_ELEMENTS // ((extra + _TERMS) * self.pp))
        for lo in range(0, groups.size, size):
            hi = min(lo + size, groups.size)
            mat = np.empty((hi - lo, extra + _TERMS, self.pp))
            vec = np.empty((hi - lo, _TERMS, self.p + 1))
            self._tables(groups[lo:hi], mat[:, extra:], vec)
            yield lo, hi, mat, vec

    def _grouped_sums(self, u, last, needed, aligned, groups, bounds, mat, y):
        """The series sums as (rows x terms) @ (terms x values), group by group.

        Rows ``u`` sorted by ``last`` (their last series group; ``bounds``: where
        each of ``groups`` starts), the dying rows whose own group comes next
        (``aligned``) first, then by the number of terms they need: one product
        per run of rows alike, with the own group's matrices (:meth:`_own_parts`)
        for the aligned ones. Writes the matrix parts into ``mat`` and adds the
        vector parts to ``y``.
        """
        st = self.st
        coef = np.empty((u.size, 5 + _TERMS))
        coef[:, 5:] = (st.r[u] / np.exp(self.log_ref[last]))[:, None] ** np.arange(1, _TERMS + 1)
        coef[aligned, :5], y[aligned] = self._own_parts(u[aligned], last[aligned] + 1)
        runs = np.flatnonzero(np.diff(last) | np.diff(aligned) | np.diff(needed)) + 1
        runs = np.concatenate([[0], runs, [u.size]])
        run_group = np.searchsorted(groups, last[runs[:-1]])
        vector = np.empty((u.size, self.p + 1))
        for w_lo, w_hi, tables, vectors in self._windows(groups, bounds, 5):
            filled = -1   # (the window's group whose own matrices are in its tables)
            for r in range(np.searchsorted(run_group, w_lo), np.searchsorted(run_group, w_hi)):
                lo, hi, i = runs[r], runs[r + 1], run_group[r] - w_lo
                j, own = needed[lo], 0 if aligned[lo] else 5
                if aligned[lo] and i != filled:
                    tables[i, :5], filled = self._own_matrices(last[lo] + 1), i
                np.matmul(coef[lo:hi, own:5 + j], tables[i, own:5 + j], out=mat[lo:hi])
                np.matmul(coef[lo:hi, 5:5 + j], vectors[i, :j], out=vector[lo:hi])
        self._add_vector_part(u, vector, y)

    def _term_sums(self, u, last, needed, groups, bounds, mat, y):
        """The series sums term by term (few rows per group)."""
        power = (self.st.r[u] / np.exp(self.log_ref[last]))[:, None] ** np.arange(1, _TERMS + 1)
        power[np.arange(1, _TERMS + 1) > needed[:, None]] = 0.0
        mat[:] = 0.0
        vector = np.zeros((u.size, self.p + 1))
        for w_lo, w_hi, tables, vectors in self._windows(groups, bounds, 0):
            rows = slice(bounds[w_lo], bounds[w_hi])
            at = np.repeat(np.arange(w_hi - w_lo), np.diff(bounds[w_lo:w_hi + 1]))
            for j in range(_TERMS):
                here = np.flatnonzero(power[rows, j])
                if here.size == 0:
                    continue
                sel = bounds[w_lo] + here
                mat[sel] += power[sel, j, None] * tables[:, j].take(at[here], axis=0)
                vector[sel] += power[sel, j, None] * vectors[:, j].take(at[here], axis=0)
        self._add_vector_part(u, vector, y)

    def _add_vector_part(self, u, vector, y):
        """Add ``h = sca x / 2 - v`` to ``y``: ``sca x x^T - x v^T - v x^T = x h^T + h x^T``."""
        y += 0.5 * vector[:, -1:] * self.st.X.take(u, axis=0) - vector[:, :-1]

    def _add_exact(self, rows, out):
        """Add the slots from each row's cut to its own time, pair by pair, to ``out`` (k, p^2).

        In chunks of about ``_STREAM_ELEMENTS`` numbers (a row's pairs over several
        chunks where it has many).
        """
        st = self.st
        lo, hi = st.bounds[self.cut[rows]], st.bounds[self.g_hi[rows]]
        counts = np.where(st.r[rows] > 0, np.maximum(hi - lo, 0), 0)
        ends = np.cumsum(counts)
        size = max(1, _STREAM_ELEMENTS // (4 * self.pp))
        for start in range(0, ends[-1] if ends.size else 0, size):
            pair = np.arange(start, min(start + size, ends[-1]))
            which = np.searchsorted(ends, pair, side="right")   # each pair's row
            s = lo[which] + pair - (ends - counts)[which]
            u = rows[which]
            g, f, a, c = st.slot_group[s], st.frac[s], st.a[s], st.c[s]
            ru = st.r[u]
            # (pairs with t > _DOMINANT belong to the directly recomputed rows)
            counting = (c != 0) & (ru <= _DOMINANT * a)
            rest = np.where(counting, a - ru, 1.0)
            ratio = np.where(counting, ru / rest, 0.0)            # t / (1 - t)
            m = st.m[:, s].T
            S2, D2 = self.second_moments.at(g)
            V = (S2 - f[:, None] * D2) / a[:, None] - _outer(m, m)
            d = st.X[u] - m
            values = c[:, None] * (-ratio[:, None] * V + (ratio * a / rest)[:, None]
                                   * _outer(d, d))
            first = np.flatnonzero(np.diff(which, prepend=-1))   # each row's first pair
            out[which[first]] += np.add.reduceat(values, first, axis=0)

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

    def _own_parts(self, u, g):
        """The own tie group's before minus after removing dying rows ``u`` (groups ``g``).

        After: ``c' [S2' E0 - D2' E1 - s1' s1'^T E2 + (s1' d1'^T + d1' s1'^T) E3 -
        d1' d1'^T E4]`` with the group's sums without the row (primes:
        ``S2' = S2 - r x x^T``, ``s1' = S1 - r x``, ...). With ``s1'``, ``d1'``
        expanded, and the term before removal ``-self.before_coef[g]`` times the
        group's moments (:meth:`_moments`), the change is ``[-E0, E1, E2, -E3, E4] -
        before_coef[g]`` times the moments plus ``x y^T + y x^T``; returns those
        coefficients (k, 5) and ``y`` (k, p).
        """
        st = self.st
        E = self.own_E.take(self.own_index[u], axis=1)
        ru, x = st.r[u], st.X.take(u, axis=0)
        coef = np.column_stack([-E[0], E[1], E[2], -E[3], E[4]]) - self.before_coef.take(g, axis=0)
        alpha = ru * (E[0] - E[1]) + ru ** 2 * (E[2] - 2.0 * E[3] + E[4])
        y = (0.5 * alpha[:, None] * x
             + (ru * (E[3] - E[2]))[:, None] * st.S1.take(g, axis=0)
             + (ru * (E[3] - E[4]))[:, None] * st.D1.take(g, axis=0))
        return coef, y

    def _add_own(self, rows, out, y, done):
        """Add the own tie group's change (:meth:`_own_parts`) of dying ``rows`` to ``out``, ``y``.

        Rows ``done`` (boolean) already have it (:meth:`_series`); the others by
        one product per own group, or where few rows share one, row by row from
        their groups' moments.
        """
        here = np.flatnonzero((self.own_index[rows] >= 0) & ~done)
        if here.size == 0:
            return
        here = here[np.argsort(self.own_group[rows[here]], kind="stable")]
        u = rows[here]
        g = self.own_group[u]
        coef, y_own = self._own_parts(u, g)
        groups, first = np.unique(g, return_index=True)
        bounds = np.append(first, u.size)
        change = np.empty((u.size, self.pp))
        if groups.size * _SHARED_GROUP <= u.size:
            for i, group in enumerate(groups):
                np.matmul(coef[bounds[i]:bounds[i + 1]], self._own_matrices(group),
                          out=change[bounds[i]:bounds[i + 1]])
        else:
            size = max(1, _STREAM_ELEMENTS // (5 * self.pp))
            for lo in range(0, groups.size, size):
                hi = min(lo + size, groups.size)
                at = np.repeat(np.arange(hi - lo), np.diff(bounds[lo:hi + 1]))
                part = slice(bounds[lo], bounds[hi])
                np.einsum("ik,ikq->iq", coef[part], self._moments(groups[lo:hi])[at],
                          out=change[part])
        out[here] += change
        y[here] += y_own

    def _special_rows(self, positions):
        """Direct ``H(all) - H(without u)`` of ``self.special[positions]``, (k, p, p).

        All of them are computed (and kept) at once when they hold at most
        ``_SPECIAL_ELEMENTS`` numbers; otherwise those asked for, each time.
        """
        if self.special.size * self.pp > _SPECIAL_ELEMENTS:
            return self._direct_changes(self.special[positions])
        with _BUILD_LOCK:
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

    def parts(self, rows):
        """``H(all) - H(without row u)`` for ``rows`` as ``(D, x, y)``: ``D + x y^T + y x^T``.

        Shapes (k, p, p), (k, p), (k, p); ``x`` the rows of the design.
        """
        rows = np.asarray(rows, dtype=np.intp)
        flat, y, own_done = self._series(rows)
        self._add_exact(rows, flat)
        self._add_own(rows, flat, y, own_done)
        out = flat.reshape(rows.size, self.p, self.p)   # symmetric to rounding
        if self.special.size:
            where = np.searchsorted(self.special, rows)
            hit = np.flatnonzero((where < self.special.size)
                                 & (self.special[np.minimum(where, self.special.size - 1)]
                                    == rows))
            if hit.size:
                out[hit] = self._special_rows(where[hit])
                y[hit] = 0.0
        return out, self.st.X.take(rows, axis=0), y

    def rows(self, rows):
        """``H(all) - H(without row u)`` for ``rows``, shape (k, p, p)."""
        D, x, y = self.parts(rows)
        return D + x[:, :, None] * y[:, None, :] + y[:, :, None] * x[:, None, :]


def closed_form_hessian_changes(params, X, rs, case_weights, ties, rows=None, design=None):
    """``H(params; all rows) - H(params; without row u)`` for ``rows`` (default all), (k, p, p).

    The closed form of :class:`CoxHessianChanges`; equals
    :func:`._fast.hessian_changes` (the complex step) to rounding.
    """
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    return CoxHessianChanges(params, X, rs, case_weights, ties, design).rows(rows)
