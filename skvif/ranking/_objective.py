"""The listwise ranking objectives, with exact removal weights.

Pure numerics, no scikit-learn: the data of a ranking problem in a padded
``(n_queries, max_items)`` layout, the per-list ListNet and ListMLE losses,
the full penalized objective in the form the influence engine expects, and
query-local gradient and Hessian changes (the fast path of :meth:`influence_`).

Every loss here is *batched*: scores and weights may carry leading axes, one
per leave-out problem, and the engine's ``(k, p)`` params with ``(k, n)``
weights give ``(k,)`` objectives.
"""

import autograd.numpy as anp
import numpy as np
from autograd import grad
from autograd.tracer import getval

from .._engine import unit_rows

__all__ = ["LOSSES", "Lists", "list_losses", "objective", "query_weighted_objective",
           "query_losses", "test_losses", "LocalChanges"]

LOSSES = ("listnet", "listmle")


class Lists:
    """Ranking data in a padded layout: one row per query, items by descending label.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Graded relevance labels.
    qid : ndarray of shape (n_samples,)
        Query id of each row; rows of a query need not be contiguous.

    Attributes
    ----------
    queries : ndarray
        ``np.unique(qid)``; query ``q`` of the layout is ``queries[q]``.
    index : ndarray of shape (n_queries, max_items)
        Training row at each position (``0`` on padding).
    valid : ndarray of shape (n_queries, max_items)
        ``1.0`` where a position holds a row, ``0.0`` on padding.
    labels : ndarray of shape (n_queries, max_items)
    X : ndarray of shape (n_queries * max_items, n_features)
        Rows of ``X`` in layout order, zeros on padding.
    row_query, row_position : ndarray of shape (n_samples,)
        Where each training row sits in the layout.

    Notes
    -----
    Within a query, items are sorted by descending label with ties kept in
    row order (a stable sort): ListMLE's permutation. Deleting a row does not
    change the relative order of the others, so a zero weight on a position
    is the same as deleting the row.

    The layout holds ``n_queries * max_items`` positions: about ``n_samples``
    when queries have similar sizes, but one very long query among many
    short ones pads every list to its length. Per-list sums (the softmax
    normalizers and ListMLE's suffix log-sum-exps) run along the last axis,
    so no sum ever mixes two queries and no ``n x n`` array is formed.
    """

    def __init__(self, X, y, qid):
        self.queries, row_query = np.unique(qid, return_inverse=True)
        row_query = row_query.ravel()
        n = y.shape[0]
        order = np.lexsort((-y, row_query))  # by query, then descending label; stable
        counts = np.bincount(row_query, minlength=self.queries.size)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n_queries, width = self.queries.size, int(counts.max())
        position = np.empty(n, dtype=np.intp)
        position[order] = np.arange(n) - starts[row_query[order]]
        self.n_samples, self.n_queries, self.width = n, n_queries, width
        self.row_query, self.row_position = row_query, position
        self.index = np.zeros((n_queries, width), dtype=np.intp)
        self.index[row_query, position] = np.arange(n)
        self.valid = np.zeros((n_queries, width))
        self.valid[row_query, position] = 1.0
        self.labels = np.zeros((n_queries, width))
        self.labels[row_query, position] = y
        # stored transposed: the scores' product and its derivatives are
        # fastest with a C-contiguous (n_features, n_queries * max_items)
        self._XT = np.zeros((X.shape[1], n_queries * width))
        self._XT[:, row_query * width + position] = X.T

    @property
    def X(self):
        return self._XT.T

    def scores(self, params):
        """Padded scores ``(..., n_queries, max_items)`` for params ``(..., p)``."""
        S = anp.dot(params, self._XT)
        return anp.reshape(S, anp.shape(params)[:-1] + (self.n_queries, self.width))

    def weights(self, weights):
        """Padded weights ``(..., n_queries, max_items)``, zero on padding."""
        return weights[..., self.index] * self.valid


def _stop_max(values, mask):
    """Per-list maximum over ``mask`` (0 for an empty list), a constant."""
    m = np.max(np.where(mask, values, -np.inf), axis=-1, keepdims=True)
    return np.where(np.isfinite(m), m, 0.0)


def list_losses(S, W, Y, loss):
    """Per-list losses from padded scores, weights and labels.

    Parameters
    ----------
    S : array of shape (..., n_lists, width)
        Scores; positions of a list sorted by descending label (stable).
    W : array of shape (..., n_lists, width)
        Weights: 1 for a present item, 0 for a deleted item or padding.
    Y : ndarray of shape (n_lists, width)
        Labels.
    loss : {"listnet", "listmle"}

    Returns
    -------
    array of shape (..., n_lists)
        ``0`` for a list with no item left.

    Notes
    -----
    With weights, ListNet is ``-sum_i p_i log(e^{s_i} / sum_j w_j e^{s_j})``
    with ``p_i = w_i e^{y_i} / sum_j w_j e^{y_j}``, and ListMLE is
    ``-sum_k w_k [s_k - log sum_{j >= k} w_j e^{s_j}]``: a zero weight deletes
    the item from both softmaxes exactly. Scores and labels are shifted by
    their list maximum over the present items (a constant for autograd; both
    losses are shift invariant, so derivatives stay exact).
    """
    present = getval(W) > 0
    z = anp.where(present, S - _stop_max(getval(S), present), 0.0)
    e = W * anp.exp(z)
    if loss == "listnet":
        num = W * np.exp(np.where(present, Y - _stop_max(Y, present), 0.0))
        den = anp.sum(num, axis=-1, keepdims=True)
        p = num / (den + (getval(den) <= 0))
        total = anp.sum(e, axis=-1, keepdims=True)
        log_softmax = z - anp.log(total + (getval(total) <= 0))
        return -anp.sum(p * log_softmax, axis=-1)
    suffix = anp.cumsum(e[..., ::-1], axis=-1)[..., ::-1]
    log_suffix = anp.log(suffix + (getval(suffix) <= 0))
    return -anp.sum(W * (z - log_suffix), axis=-1)


def query_losses(params, weights, *, lists, loss):
    """Per-query losses ``(..., n_queries)`` at params ``(..., p)``, weights ``(..., n)``."""
    return list_losses(lists.scores(params), lists.weights(weights), lists.labels, loss)


def objective(params, weights, *, lists, loss, alpha):
    """``J(w) = sum_q l_q(X_q w) + alpha/2 ||w||^2`` with one removal weight per row.

    Batched: params ``(p,)`` with weights ``(n,)`` give a scalar, params
    ``(k, p)`` with weights ``(k, n)`` give ``(k,)``.
    """
    per_query = query_losses(params, weights, lists=lists, loss=loss)
    return anp.sum(per_query, axis=-1) + 0.5 * alpha * anp.sum(params ** 2, axis=-1)


def query_weighted_objective(params, weights, *, lists, loss, alpha):
    """``sum_q wbar_q l_q(X_q w) + alpha/2 ||w||^2``, ``wbar_q`` the mean row weight of q.

    The conventional case-weighted objective over queries, for ``method="if"``
    with ``unit="query"``: equal to :func:`objective` at unit weights, and
    smooth in a query's common weight (the within-list weights of
    :func:`objective` leave a ListNet query's gradient unchanged when all of
    its items are scaled together, so they cannot linearize a query's removal).
    """
    per_query = query_losses(params, np.ones(lists.n_samples), lists=lists, loss=loss)
    wbar = anp.sum(lists.weights(weights), axis=-1) / np.sum(lists.valid, axis=-1)
    return anp.sum(wbar * per_query, axis=-1) + 0.5 * alpha * anp.sum(params ** 2, axis=-1)


def test_losses(params, *, lists, loss):
    """Per-query test losses at params (all weights one), a target for the engine."""
    return query_losses(params, np.ones(lists.n_samples), lists=lists, loss=loss)


test_losses.__test__ = False  # not a pytest test


class LocalChanges:
    """Query-local leave-out gradient and Hessian changes at fixed params.

    Removing rows of one query changes only that query's loss, so
    ``grad J(theta; 1) - grad J(theta; w^(-u)) = X_q^T (d_q - d_q^(-u))`` with
    ``d`` the derivative of the list loss in the scores (and likewise for the
    Hessian with the score Hessians). Each unit is evaluated on its own copy
    of its list (``max_items`` positions) instead of on all ``n`` rows: the
    cost of all single-item removals is ``O(n * max_items * p)``. The engine's
    ``derivatives`` (:class:`skvif._engine.ModelDerivatives`); they use the same
    :func:`list_losses` as the objective, and tests check them against the
    engine's generic batched path.
    """

    def __init__(self, lists, loss, params):
        self.lists, self.loss = lists, loss
        self.S = lists.scores(np.asarray(params, dtype=float))
        self.X3 = lists.X.reshape(lists.n_queries, lists.width, -1)
        self._d_full = self._score_grad(self.S, lists.valid, lists.labels)
        self._A_full = None

    def _score_grad(self, S, W, Y):
        return grad(lambda E: anp.sum(list_losses(E, W, Y, self.loss)))(S)

    def _score_hessian(self, S, W, Y):
        g = grad(lambda E: anp.sum(list_losses(E, W, Y, self.loss)))
        A = np.empty(S.shape + (S.shape[-1],))
        for j in range(S.shape[-1]):
            V = np.zeros_like(S)
            V[..., j] = 1.0
            A[..., :, j] = grad(lambda E: anp.sum(g(E) * V))(S)
        return 0.5 * (A + np.swapaxes(A, -1, -2))

    def _copies(self, units):
        """The query of each unit, and its list's weights with the unit removed."""
        lists = self.lists
        first = np.array([idx[0] for idx in units])
        q = lists.row_query[first]
        sizes = np.array([len(idx) for idx in units])
        rows = unit_rows(units)
        owner = np.repeat(np.arange(len(units)), sizes)
        if np.any(lists.row_query[rows] != q[owner]):
            raise ValueError("LocalChanges needs every unit inside a single query.")
        W = lists.valid[q].copy()
        W[owner, lists.row_position[rows]] = 0.0
        return q, W

    def gradient_changes(self, units):
        """``(k, p)``: full-data gradient minus leave-out gradient, per unit."""
        q, W = self._copies(units)
        d = self._d_full[q] - self._score_grad(self.S[q], W, self.lists.labels[q])
        return np.einsum("kl,klp->kp", d, self.X3[q])

    def hessian_changes(self, units):
        """``(k, p, p)``: full-data Hessian minus leave-out Hessian, per unit."""
        lists = self.lists
        if self._A_full is None:
            self._A_full = self._score_hessian(self.S, lists.valid, lists.labels)
        q, W = self._copies(units)
        A = self._A_full[q] - self._score_hessian(self.S[q], W, lists.labels[q])
        Xq = self.X3[q]
        return np.swapaxes(Xq, 1, 2) @ (A @ Xq)
