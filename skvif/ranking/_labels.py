"""Listwise ranking of items shared across queries: closed-form numerics.

Pure numerics, no scikit-learn. The data are rows ``(query, item, label,
features)``: in multilabel data a query is an instance and its items are
the labels. Lists are held in a padded ``(n_queries, width)`` layout with
positions sorted by descending label (stable), as in :class:`~._objective.Lists`,
plus the item of each position, so that removing an item from *every* list
is a zero weight on all of its positions.

Scores are linear in the parameters (:class:`SharedLinearScores`,
:class:`PerItemScores`), and both listwise losses have closed-form score
gradients, Hessian-vector products and Hessian diagonals
(:class:`ScoreCurvature`), so gradients and Hessian-vector products of the
objective cost about two score evaluations: no autograd pass, no ``(p, p)``
array. :func:`newton_cg` minimizes with them (fits and exact refits) and
:class:`ItemRankerDerivatives` hands them to the influence engine
(:class:`skvif._engine.ModelDerivatives`).
"""

import autograd.numpy as anp
import numpy as np
import scipy.sparse
from scipy.sparse.linalg import LinearOperator, cg

from ._objective import list_losses

__all__ = ["ItemLists", "SharedLinearScores", "PerItemScores", "ScoreCurvature",
           "ItemRankingProblem", "ItemRankerDerivatives", "newton_cg",
           "DENSE_HESSIAN_MAX_PARAMS"]

# ItemRankerDerivatives.hessian() forms a dense (p, p) Hessian only up to this size.
DENSE_HESSIAN_MAX_PARAMS = 5000
# Hessian-vector products evaluated together hold about this many scores at once.
_BATCH_SCORES = 2**22
# The Kronecker preconditioner averages the score Hessians of lists holding about
# this many numbers at once.
_KRONECKER_SCORES = 2**25


class ItemLists:
    """Rows ``(query, item, label)`` in a padded layout, positions by descending label.

    Parameters
    ----------
    labels : ndarray of shape (n_rows,)
    query : ndarray of shape (n_rows,) of int
        Query code of each row, ``0 .. n_queries - 1``.
    item : ndarray of shape (n_rows,) of int
        Item code of each row, ``0 .. n_items - 1``; an item appears at most
        once in a query.
    n_queries, n_items : int
    by_label : bool, default=True
        Sort each list by descending label (ListMLE's permutation); ListNet
        does not depend on the order, and without sorting rows keep their
        order within a query (multilabel rows: item order, which spares
        the score gathers).

    Attributes
    ----------
    index, item_at, valid, labels_at : ndarray of shape (n_queries, width)
        Row, item, presence (1.0 / 0.0) and label at each position.
    row_query, row_position : ndarray of shape (n_rows,)
    """

    def __init__(self, labels, query, item, n_queries, n_items, by_label=True):
        n = labels.shape[0]
        # by query, then descending label; stable
        order = np.lexsort((-labels, query)) if by_label else np.argsort(query, kind="stable")
        counts = np.bincount(query, minlength=n_queries)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        width = int(counts.max())
        position = np.empty(n, dtype=np.intp)
        position[order] = np.arange(n) - starts[query[order]]
        self.n_rows, self.n_queries, self.n_items, self.width = n, n_queries, n_items, width
        self.row_query, self.row_position = query, position
        self.index = np.zeros((n_queries, width), dtype=np.intp)
        self.index[query, position] = np.arange(n)
        self.item_at = np.zeros((n_queries, width), dtype=np.intp)
        self.item_at[query, position] = item
        self.valid = np.zeros((n_queries, width))
        self.valid[query, position] = 1.0
        self.labels_at = np.zeros((n_queries, width))
        self.labels_at[query, position] = labels
        self.row_item = item

    def weights(self, weights):
        """Padded weights ``(..., n_queries, width)`` from row weights ``(..., n_rows)``."""
        return weights[..., self.index] * self.valid

    def without(self, rows):
        """Padded unit weights with ``rows`` removed, and the queries they touch."""
        W = self.valid.copy()
        W[self.row_query[rows], self.row_position[rows]] = 0.0
        return W, np.unique(self.row_query[rows])

    def without_items(self, items):
        """Padded unit weights with every position of ``items`` removed."""
        return self.valid * ~np.isin(self.item_at, items)


class _Scores:
    """Scores linear in the parameters: ``forward`` (autograd-compatible) and its adjoint.

    Subclasses define ``forward(params (..., p)) -> (..., n_queries, width)``,
    ``adjoint(G (..., q, width), queries) -> (..., p)`` (the transpose map,
    restricted to the queries ``queries`` that ``G`` holds) and
    ``blocks(D) -> (n_blocks, b, b)``: the diagonal blocks of
    ``A^T diag(D) A`` for the score map ``A``, the parameters being
    ``n_blocks`` contiguous blocks of ``b``.
    """

    def _positions(self, queries):
        return (queries[:, None] * self.width + np.arange(self.width)).ravel()


class SharedLinearScores(_Scores):
    """``s = x . w`` with one coefficient vector for every item (no intercept).

    Parameters
    ----------
    features : ndarray of shape (n_queries * width, n_features)
        Features of each position of the layout (zeros on padding).
    lists : ItemLists
    """

    def __init__(self, features, lists):
        self.F = np.ascontiguousarray(features)
        self.n_queries, self.width = lists.n_queries, lists.width
        self.n_params = self.F.shape[1]
        self.block_size = self.n_params

    def forward(self, params):
        S = anp.dot(params, self.F.T)
        return anp.reshape(S, anp.shape(params)[:-1] + (self.n_queries, self.width))

    def adjoint(self, G, queries):
        lead = G.shape[:-2]
        return G.reshape(lead + (-1,)) @ self.F[self._positions(queries)]

    def blocks(self, D):
        return ((self.F.T * D.ravel()) @ self.F)[None]


class PerItemScores(_Scores):
    """``s = x . w_j + b_j`` for item ``j``: one coefficient vector and intercept per item.

    The parameters are ``n_items`` blocks ``[w_j, b_j]`` of ``n_features + 1``.

    Parameters
    ----------
    features : ndarray of shape (n_queries, n_features) or (n_queries * width, n_features)
        Features of each query (shared by its items: multilabel data), or of
        each position of the layout.
    lists : ItemLists
    per_query : bool
        Whether ``features`` has one row per query.
    """

    def __init__(self, features, lists, per_query):
        self.n_queries, self.width, self.n_items = lists.n_queries, lists.width, lists.n_items
        self.per_query = bool(per_query)
        self.F = np.column_stack([features, np.ones(features.shape[0])])
        self.block_size = self.F.shape[1]
        self.n_params = self.n_items * self.block_size
        self.item_at, self.valid = lists.item_at, lists.valid
        if self.per_query:
            if lists.width != lists.n_items or np.any(lists.valid == 0):
                raise ValueError("Features per query need every item in every list.")
            # flat gathers between (query, position) and (query, item) order, both ways
            self._by_position = (np.arange(self.n_queries)[:, None] * self.n_items
                                 + lists.item_at).ravel()
            self._by_item = np.argsort(lists.item_at, axis=1)
            self._item_order = bool(np.all(lists.item_at == np.arange(self.n_items)))
        else:
            present = lists.valid.ravel() > 0
            pos = np.flatnonzero(present)
            self._membership = scipy.sparse.csr_matrix(
                (np.ones(pos.size), (lists.item_at.ravel()[pos], pos)),
                shape=(self.n_items, lists.valid.size))

    def forward(self, params):
        lead = anp.shape(params)[:-1]
        W = anp.reshape(params, lead + (self.n_items, self.block_size))
        if self.per_query:
            S_items = anp.matmul(self.F, anp.swapaxes(W, -1, -2))  # (..., n_queries, n_items)
            if self._item_order:
                return S_items
            S = anp.reshape(S_items, lead + (-1,))[..., self._by_position]
            return anp.reshape(S, lead + (self.n_queries, self.width))
        S = anp.sum(W[..., self.item_at.ravel(), :] * self.F, axis=-1)
        return anp.reshape(S, lead + (self.n_queries, self.width))

    def adjoint(self, G, queries):
        lead = G.shape[:-2]
        if self.per_query:
            G_items = G
            if not self._item_order:
                flat = (np.arange(queries.size)[:, None] * self.width
                        + self._by_item[queries]).ravel()
                G_items = np.reshape(G, lead + (-1,))[..., flat].reshape(
                    lead + (queries.size, self.n_items))
            out = np.swapaxes(G_items, -1, -2) @ self.F[queries]
            return out.reshape(lead + (self.n_params,))
        G = G * self.valid[queries]
        pos = self._positions(queries)
        Gf = G.reshape((-1, pos.size))
        M = self._membership[:, pos]
        out = np.stack([M @ (g[:, None] * self.F[pos]) for g in Gf])
        return out.reshape(lead + (self.n_params,))

    def hessian(self, curvature):
        """``sum_q J_q^T A_q J_q``, for features per query.

        Block ``(j, l)`` is ``sum_q A_q[j, l] x_q x_q^T`` with ``A_q`` the score
        Hessian of list ``q`` in item order: one matrix product over chunks
        of queries instead of ``p`` Hessian-vector products.
        """
        L, b = self.n_items, self.block_size
        H = np.zeros((L * L, b * b))
        size = max(1, _BATCH_SCORES // (L * L))
        for start in range(0, self.n_queries, size):
            qs = np.arange(start, min(self.n_queries, start + size))
            perm = self._by_item[qs]
            A = curvature.matrix(qs)[np.arange(qs.size)[:, None, None], perm[:, :, None],
                                     perm[:, None, :]]
            XX = (self.F[qs, :, None] * self.F[qs, None, :]).reshape(qs.size, b * b)
            H += A.reshape(qs.size, L * L).T @ XX
        H = H.reshape(L, L, b, b).transpose(0, 2, 1, 3).reshape(L * b, L * b)
        return 0.5 * (H + H.T)

    def kronecker_factors(self, curvature):
        """Factors ``(A, C)`` with ``H ~ A kron C``, for features per query.

        ``A`` is the mean score Hessian of the lists in item order, over at
        most ``_KRONECKER_LISTS`` lists spread evenly over the queries (a
        preconditioner needs no exact mean), and ``C = sum_q x_q x_q^T``
        (intercept column included): exact when every query has the same
        features and curvature.
        """
        L = self.n_items
        size = min(self.n_queries, max(1, _KRONECKER_SCORES // (L * L)))
        lists = np.unique(np.linspace(0, self.n_queries - 1, size).round().astype(np.intp))
        A = np.zeros((L, L))
        chunk = max(1, _BATCH_SCORES // (L * L))
        for start in range(0, lists.size, chunk):
            qs = lists[start:start + chunk]
            M = curvature.matrix(qs)
            if not self._item_order:
                perm = self._by_item[qs]
                M = M[np.arange(qs.size)[:, None, None], perm[:, :, None], perm[:, None, :]]
            A += M.sum(axis=0)
        A /= lists.size
        return 0.5 * (A + A.T), self.F.T @ self.F

    def blocks(self, D):
        b = self.block_size
        outer = (self.F[:, :, None] * self.F[:, None, :]).reshape(-1, b * b)
        if self.per_query:
            D_items = np.take_along_axis(D, self._by_item, axis=1)
            return (D_items.T @ outer).reshape(self.n_items, b, b)
        return np.asarray(self._membership @ (D.ravel()[:, None] * outer)).reshape(
            self.n_items, b, b)


def _shift(S, W):
    """Scores minus their list maximum over present items, 0 elsewhere."""
    present = W > 0
    m = np.max(np.where(present, S, -np.inf), axis=-1, keepdims=True)
    return np.where(present, S - np.where(np.isfinite(m), m, 0.0), 0.0)


def _safe(x):
    return np.where(x > 0, x, 1.0)


class ScoreCurvature:
    r"""Closed-form derivatives of the list losses in the scores, at scores ``S``.

    Parameters
    ----------
    S : ndarray of shape (n_lists, width)
    W : ndarray of shape (n_lists, width)
        Weights, 1 for a present item, 0 for a removed item or padding.
    Y : ndarray of shape (n_lists, width)
        Labels, positions by descending label.
    loss : {"listnet", "listmle"}

    Notes
    -----
    With :math:`q = w e^{s} / \sum w e^{s}` and :math:`p = w e^{y} / \sum w e^{y}`,
    ListNet's score gradient is :math:`q - p` and its score Hessian
    :math:`\operatorname{diag}(q) - q q^\top` (zero for an empty list). For
    ListMLE with :math:`e_j = w_j e^{s_j}`, :math:`T_k = \sum_{j \ge k} e_j`,
    :math:`a_k = w_k / T_k` and :math:`C_j = \sum_{k \le j} a_k`, the gradient is
    :math:`-w_j + e_j C_j` and the Hessian-vector product
    :math:`e_j \big(v_j C_j - \sum_{k \le j} a_k U_k / T_k\big)` with
    :math:`U_k = \sum_{j \ge k} e_j v_j`; its diagonal is
    :math:`e_j C_j - e_j^2 \sum_{k \le j} a_k / T_k`. Every sum runs along one
    list: ``O(width)`` per list.
    """

    def __init__(self, S, W, Y, loss):
        self.loss = loss
        z = _shift(S, W)
        self.e = W * np.exp(z)
        if loss == "listnet":
            total = self.e.sum(axis=-1, keepdims=True)
            self.q = self.e / _safe(total)
            num = W * np.exp(_shift(Y, W))
            den = num.sum(axis=-1, keepdims=True)
            p = num / _safe(den)
            self.mass = (total > 0) * p.sum(axis=-1, keepdims=True)
            self._mq = self.mass * self.q
            self.gradient = self._mq - p
        else:
            self.T = np.cumsum(self.e[..., ::-1], axis=-1)[..., ::-1]
            self.a = W / _safe(self.T)
            self.C = np.cumsum(self.a, axis=-1)
            self.gradient = -W + self.e * self.C

    def hvp(self, V):
        """Score Hessian times ``V`` (``(..., n_lists, width)``, leading axes broadcast)."""
        if self.loss == "listnet":
            qv = self.q * V
            return self._mq * (V - qv.sum(axis=-1, keepdims=True))
        U = np.cumsum((self.e * V)[..., ::-1], axis=-1)[..., ::-1]
        return self.e * (V * self.C - np.cumsum(self.a * U / _safe(self.T), axis=-1))

    def matrix(self, lists):
        """The score Hessians ``(len(lists), width, width)`` of the lists ``lists``.

        ListMLE's is ``diag(e C) - [e_j e_l K_min(j, l)]`` with
        ``K = cumsum(a / T)``.
        """
        e = self.e[lists]
        if self.loss == "listnet":
            q = self.q[lists]
            A = -q[:, :, None] * q[:, None, :]
            A[:, np.arange(q.shape[1]), np.arange(q.shape[1])] += q
            return self.mass[lists][:, :, None] * A
        K = np.cumsum(self.a[lists] / _safe(self.T[lists]), axis=-1)
        width = e.shape[1]
        A = -e[:, :, None] * e[:, None, :] * K[:, np.minimum.outer(np.arange(width),
                                                               np.arange(width))]
        A[:, np.arange(width), np.arange(width)] += (e * self.C[lists])
        return A

    def diagonal(self):
        if self.loss == "listnet":
            return self.mass * self.q * (1.0 - self.q)
        return self.e * self.C - self.e ** 2 * np.cumsum(self.a / _safe(self.T), axis=-1)


class ItemRankingProblem:
    r"""The penalized objective ``J(theta; W) = sum_q l_q(S_q(theta); W_q) + alpha/2 ||theta||^2``.

    Parameters
    ----------
    lists : ItemLists
    scores : SharedLinearScores or PerItemScores
    loss : {"listnet", "listmle"}
    alpha : float
    """

    def __init__(self, lists, scores, loss, alpha):
        self.lists, self.scores, self.loss, self.alpha = lists, scores, loss, float(alpha)
        self.n_params = scores.n_params
        self._all = np.arange(lists.n_queries)

    # autograd form, for the engine's generic path (row weights, batched)
    def objective(self, params, weights):
        """``J`` with one weight per row; batched: ``(k, p)`` params with ``(k, n_rows)``."""
        S = self.scores.forward(params)
        per_query = list_losses(S, self.lists.weights(weights), self.lists.labels_at, self.loss)
        return anp.sum(per_query, axis=-1) + 0.5 * self.alpha * anp.sum(params ** 2, axis=-1)

    def value(self, params, W):
        """``J`` at padded weights ``W`` (numpy)."""
        S = self.scores.forward(params)
        return float(np.sum(list_losses(S, W, self.lists.labels_at, self.loss))
                     + 0.5 * self.alpha * params @ params)

    def at(self, params, W):
        return _Point(self, params, W)


class _Point:
    """Gradient, Hessian-vector products and a preconditioner of ``J`` at ``(params, W)``."""

    def __init__(self, problem, params, W):
        self.problem, self.params, self.W = problem, params, W
        self.S = problem.scores.forward(params)
        self.curvature = ScoreCurvature(self.S, W, problem.lists.labels_at, problem.loss)
        self.gradient = (problem.scores.adjoint(self.curvature.gradient, problem._all)
                         + problem.alpha * params)
        self._blocks = None

    def hvp(self, V):
        """``H V`` for ``V`` of shape ``(p,)`` or ``(c, p)``."""
        scores = self.problem.scores
        HS = self.curvature.hvp(scores.forward(V))
        return scores.adjoint(HS, self.problem._all) + self.problem.alpha * V

    def hessian(self):
        """The dense ``(p, p)`` Hessian: in closed form for features per query, else
        from batches of Hessian-vector products."""
        p = self.problem.n_params
        lists = self.problem.lists
        if getattr(self.problem.scores, "per_query", False):
            return self.problem.scores.hessian(self.curvature) + self.problem.alpha * np.eye(p)
        size = max(1, _BATCH_SCORES // (lists.n_queries * lists.width))
        H = np.empty((p, p))
        for start in range(0, p, size):
            stop = min(p, start + size)
            E = np.zeros((stop - start, p))
            E[np.arange(stop - start), np.arange(start, stop)] = 1.0
            H[start:stop] = self.hvp(E)
        return 0.5 * (H + H.T)

    def preconditioner(self, damping=0.0):
        """``M ~ (H + damping I)^-1``: Kronecker-factored for features per query,
        else block Jacobi (one block per item, or one for all)."""
        ridge = self.problem.alpha + damping
        p = self.problem.n_params
        scores = self.problem.scores
        if getattr(scores, "per_query", False):
            return _kronecker_inverse(*scores.kronecker_factors(self.curvature), ridge)
        if self._blocks is None:
            self._blocks = scores.blocks(self.curvature.diagonal())
        b = self._blocks.shape[-1]
        inv = np.linalg.inv(self._blocks + ridge * np.eye(b))

        def apply(v):
            v = np.reshape(v, (inv.shape[0], -1))
            return np.einsum("lce,le->lc", inv, v).ravel()

        return LinearOperator((p, p), matvec=apply, dtype=float)

    def solve(self, b, *, damping=0.0, rtol=1e-10, maxiter=None):
        """``(H + damping I)^-1 b`` by preconditioned conjugate gradients."""
        p = self.problem.n_params
        A = LinearOperator((p, p), matvec=lambda v: self.hvp(v) + damping * v, dtype=float)
        x, info = cg(A, b, rtol=rtol, atol=0.0, maxiter=maxiter or 10 * p,
                     M=self.preconditioner(damping))
        return x, info == 0


def _kronecker_inverse(A, C, ridge):
    r"""``(A \otimes C + ridge I)^{-1}`` as a LinearOperator, by the eigenvectors of both.

    Parameters run item-major (``n_items`` blocks of ``C``'s size), so the
    operator acts on ``V`` of shape ``(n_items, b)`` as
    ``U_A ((U_A^T V U_C) / (lambda_A lambda_C^T + ridge)) U_C^T``.
    """
    lam_a, U_a = np.linalg.eigh(A)
    lam_c, U_c = np.linalg.eigh(C)
    denominator = np.outer(np.maximum(lam_a, 0.0), np.maximum(lam_c, 0.0)) + ridge
    shape = (U_a.shape[0], U_c.shape[0])
    p = shape[0] * shape[1]

    def apply(v):
        V = np.reshape(v, shape)
        return (U_a @ ((U_a.T @ V @ U_c) / denominator) @ U_c.T).ravel()

    return LinearOperator((p, p), matvec=apply, dtype=float)


def newton_cg(problem, params, W, *, tol=1e-9, max_iter=100):
    """Minimize ``J(., W)`` by inexact Newton steps (preconditioned CG), with step halving.

    ``J`` is strongly convex (``alpha > 0``: convex losses of linear scores
    plus a ridge), so each step is a descent direction. Converged once a full
    step moves no parameter by more than ``tol * (1 + max |params|)``.

    Returns
    -------
    params : ndarray of shape (p,)
    n_iter : int
    converged : bool
    """
    params = np.array(params, dtype=float)
    f = problem.value(params, W)
    first, t_last = None, 1.0
    for it in range(1, max_iter + 1):
        point = problem.at(params, W)
        norm = np.linalg.norm(point.gradient)
        first = first or norm or 1.0
        # inexact Newton: solved to a relative residual of |g| / |g_0| (at most 0.1),
        # so that steps far from the minimum (often halved) cost few CG iterations
        step, _ = point.solve(-point.gradient, rtol=max(1e-10, min(0.1, norm / first)))
        # the first trial step: at most 4 times the last accepted fraction of a Newton
        # step (far from the minimum many steps are halved alike)
        t = min(1.0, 4.0 * t_last)
        for _ in range(50):
            trial = params + t * step
            f_trial = problem.value(trial, W)
            if np.isfinite(f_trial) and f_trial <= f + 1e-13 * (1.0 + abs(f)):
                break
            t *= 0.5
        else:
            return params, it, True  # no decrease possible in floating point
        params, f, t_last = trial, f_trial, t
        if np.max(np.abs(step)) <= tol * (1.0 + np.max(np.abs(params))):
            return params, it, True
    return params, max_iter, False


class ItemRankerDerivatives:
    """Closed forms of an item ranker for the influence engine, at the fitted params.

    Implements :class:`skvif._engine.ModelDerivatives`: ``gradient_changes``
    (each unit's removal changes the lists it touches: only those are
    re-evaluated), ``hessian`` (dense, up to
    ``DENSE_HESSIAN_MAX_PARAMS`` parameters), ``hessian_vector_product`` and
    ``preconditioner`` (Kronecker-factored for features per query, else
    block Jacobi, one block per item); all at unit
    weights, without autograd.
    """

    def __init__(self, problem, params):
        self.problem = problem
        self.point = problem.at(np.asarray(params, dtype=float), problem.lists.valid)

    def removal_weights(self, rows):
        """Padded weights without ``rows`` and the queries they touch."""
        return self.problem.lists.without(rows)

    def gradient_changes(self, units):
        problem, point = self.problem, self.point
        out = np.empty((len(units), problem.n_params))
        for i, rows in enumerate(units):
            W, queries = self.removal_weights(rows)
            curvature = ScoreCurvature(point.S[queries], W[queries],
                                       problem.lists.labels_at[queries], problem.loss)
            out[i] = problem.scores.adjoint(
                point.curvature.gradient[queries] - curvature.gradient, queries)
        return out

    def hessian(self):
        p = self.problem.n_params
        if p > DENSE_HESSIAN_MAX_PARAMS:
            raise ValueError(f"A dense Hessian of {p} parameters is not formed above "
                             f"{DENSE_HESSIAN_MAX_PARAMS}: use solver='cg'.")
        return self.point.hessian()

    def hessian_vector_product(self, v):
        return self.point.hvp(np.asarray(v, dtype=float))

    def preconditioner(self, damping=0.0):
        return self.point.preconditioner(damping)
