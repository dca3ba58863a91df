"""``LabelRankerInfluence``: listwise ranking of items shared across queries (label ranking)."""

import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _num_samples, check_is_fitted

from .._base import (FittedInputMixin, FittedLinearMixin, check_influence_options, check_labels,
                     feature_names, validate_X)
from .._robustness import check_refine, refine_rows, with_exactness
from .._engine import _positions, check_choice, check_n_jobs, check_units, influence
from ._labels import (ItemLists, ItemRankerDerivatives, ItemRankingProblem, PerItemScores,
                      ScoreCurvature, SharedLinearScores, newton_cg)
from ._estimator import _check_labels
from ._objective import LOSSES, list_losses

__all__ = ["LabelRankerInfluence"]

SCORERS = ("per_item", "linear")
TARGETS = ("coef", "loss")
UNITS = ("item_id", "query", "row")
METHODS = ("vif", "newton", "loo")


def _check_relevance(y, n_samples):
    """Relevance labels: a 1-D array (one per row) or a 2-D (n_samples, n_items) matrix."""
    if y is None:
        raise ValueError("y is required: a label-indicator (or relevance) matrix of shape "
                         "(n_samples, n_labels), or one relevance label per row.")
    if scipy.sparse.issparse(y):
        y = y.toarray()
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != n_samples:
        raise ValueError(f"y must have one row per row of X ({n_samples}), 1-D or 2-D, got "
                         f"shape {y.shape}.")
    return _check_labels(y.ravel(), y.size).reshape(y.shape)


class LabelRankerInfluence(FittedInputMixin, FittedLinearMixin, BaseEstimator):
    r"""Listwise ranking of items shared across queries (label ranking), with influence.

    Each query ranks a list of *items* that also appear in other queries: in
    multilabel data a query is an instance and its items are the labels, as
    in the published influence experiments of label ranking. Scores are
    ``w_j . x + b_j`` with one coefficient vector and intercept per item
    (``scorer="per_item"``), or ``w . x`` shared by all items
    (``scorer="linear"``, as :class:`~skvif.ranking.ListwiseRankerInfluence`);
    the losses are ListNet or ListMLE over each query's items. The unit of
    :meth:`influence_` can be one item removed from *every* list, a query or
    a single row.

    Parameters
    ----------
    loss : {"listnet", "listmle"}, default="listnet"
        The per-query loss, see Notes.
    scorer : {"per_item", "linear"}, default="per_item"
        ``"per_item"``: ``s = x . w_j + b_j`` for item ``j``; ``"linear"``:
        ``s = x . w`` (long format only: with features per instance every
        label would get the same score).
    alpha : float, default=1.0
        Ridge penalty ``alpha/2 * ||theta||^2`` on all parameters (intercepts
        included). Must be positive: both losses are invariant to a common
        shift of the scores of a list, which leaves ``n_features + 1``
        directions of the per-item parameters flat without it.
    tol : float, default=1e-9
        The Newton iterations stop once a full step moves no parameter by
        more than ``tol * (1 + max |theta|)``.
    max_iter : int, default=100
        Maximum number of Newton iterations (a ``ConvergenceWarning`` when
        reached).

    Attributes
    ----------
    coef_ : ndarray of shape (n_items, n_features) or (n_features,)
        Per-item coefficients (``scorer="per_item"``) or the shared ones.
    intercept_ : ndarray of shape (n_items,)
        Per-item intercepts (``scorer="per_item"`` only).
    items_ : ndarray
        The items: ``np.unique(item_id)``, or the columns of ``y`` in
        multilabel form (``0 .. n_labels - 1``, or its column names).
    queries_ : ndarray
        ``np.unique(qid)``, or ``0 .. n_samples - 1`` in multilabel form.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Only when ``X`` had string column names.
    n_iter_ : int
        Newton iterations of the fit.

    See Also
    --------
    skvif.ranking.ListwiseRankerInfluence : A shared linear scorer, rows and
        queries as units (the specified ranking API).

    Notes
    -----
    The objective is

    .. math::

        J(\theta) = \sum_q \ell_q(s_q) + \frac{\alpha}{2}\lVert\theta\rVert^2,
        \qquad s_{qj} = x_{qj}^\top w_j + b_j \ \text{(per item)} \quad
        \text{or} \quad s_{qj} = x_{qj}^\top w \ \text{(linear)},

    over the items :math:`j` of each query :math:`q`, with
    :math:`\theta = (w_1, b_1, \dots, w_m, b_m)` (per item) or
    :math:`\theta = w`, and, for the scores :math:`s` and labels :math:`y`
    of a query,

    - ``"listnet"`` (top-one ListNet):
      :math:`\ell_q = -\sum_j \operatorname{softmax}(y)_j
      \log \operatorname{softmax}(s)_j`;
    - ``"listmle"``: :math:`\ell_q = -\sum_k \big[s_{\pi(k)} -
      \log\sum_{l \ge k} e^{s_{\pi(l)}}\big]`, :math:`\pi` the items sorted
      by descending label, ties kept in row (or label-column) order.

    With multilabel data, ``fit(X, Y)`` takes ``X`` of shape
    ``(n_samples, n_features)`` and a label-indicator (or graded relevance)
    matrix ``Y`` of shape ``(n_samples, n_labels)``, as scikit-learn's
    multilabel estimators do: instance :math:`i` is a query whose list holds
    every label :math:`j` with relevance :math:`Y_{ij}` and features
    :math:`x_{qj} = x_i`. In long form ``fit(X, y, qid, item_id)`` takes one
    row per (query, item) pair.

    **Removal.** Removing an item (``unit="item_id"``) deletes it from every
    list it is in: both softmaxes (and ListMLE's permutation) renormalize
    over the items left, in training and, for ``target="loss"``, in the test
    lists too; its parameters then only feel the ridge. Removing a query
    deletes its list; removing a row deletes one item from one list.

    **Scale.** Gradients and Hessian-vector products are closed forms in
    the scores (no autograd, about two score evaluations each); the fit,
    ``"newton"`` and ``"loo"`` use inexact Newton steps solved by conjugate
    gradients, so no ``(p, p)`` array is formed. The preconditioner is, for
    features per query (multilabel data), the Kronecker product
    :math:`\bar A \otimes \sum_q x_q x_q^\top` (plus the ridge) of the mean
    score Hessian of the lists in label order (averaged over at most about
    34 lists at 1,000 labels) and the features' Gram matrix, inverted through
    the eigenvectors of both: it captures the coupling of the labels within a
    list, which makes ListMLE's Hessian ill-conditioned for a per-label
    block-diagonal preconditioner (about 300 CG iterations instead of 10 at
    983 labels); otherwise the per-item diagonal blocks of the Hessian. ``"vif"`` uses the influence
    engine: ``solver="direct"`` forms the dense Hessian (refused above 5000
    parameters), ``solver="cg"`` (the ``"auto"`` choice from 2000 on) never
    does.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_multilabel_classification
    >>> from skvif.ranking import LabelRankerInfluence
    >>> X, Y = make_multilabel_classification(n_samples=60, n_features=4, n_classes=5,
    ...                                       random_state=0)
    >>> ranker = LabelRankerInfluence(loss="listnet", alpha=1.0).fit(X / 10, Y)
    >>> ranker.coef_.shape, ranker.intercept_.shape
    ((5, 4), (5,))
    >>> ranker.influence_(X / 10, Y, target="loss").shape  # a label removed: 60 test losses
    (5, 60)
    """

    _parameter_constraints = {
        "loss": [StrOptions(set(LOSSES))],
        "scorer": [StrOptions(set(SCORERS))],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, loss="listnet", scorer="per_item", alpha=1.0, tol=1e-9, max_iter=100):
        self.loss = loss
        self.scorer = scorer
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter

    # ------------------------------------------------------------------ data
    def _item_codes(self, item_id, n, fitting):
        item_id = check_labels(item_id, n, "item_id")
        if fitting:
            self.items_ = np.unique(item_id)
        codes = np.searchsorted(self.items_, item_id)
        codes = np.minimum(codes, self.items_.size - 1)
        known = self.items_[codes] == item_id
        if not np.all(known):
            if self._scorer == "per_item":
                raise ValueError(f"item_id holds items not seen in training, e.g. "
                                 f"{item_id[~known][0]!r}: the per-item scorer has no "
                                 "parameters for them.")
            codes = np.where(known, codes, self.items_.size)  # scored, never removed
        return codes

    def _data(self, X, y, qid, item_id, fitting):
        """The problem's lists and scores for training (``fitting``) or test data."""
        n = _num_samples(X)
        y = _check_relevance(y, n)
        X = validate_X(self, X, reset=fitting, copy=True)
        if y.ndim == 2:
            if qid is not None or item_id is not None:
                raise ValueError("With a 2-D y (one column per label) the queries are the "
                                 "rows of X and the items the columns of y: pass no qid or "
                                 "item_id.")
            if self._scorer == "linear":
                raise ValueError("scorer='linear' gives every label of an instance the same "
                                 "score; use scorer='per_item' with a 2-D y.")
            n_items = y.shape[1]
            if fitting:
                self.items_ = np.arange(n_items)
            elif n_items != self.items_.size:
                raise ValueError(f"y has {n_items} label columns; the ranker was fitted "
                                 f"on {self.items_.size}.")
            query = np.repeat(np.arange(n), n_items)
            lists = ItemLists(y.ravel(), query, np.tile(np.arange(n_items), n), n, n_items,
                              by_label=self._loss == "listmle")
            return lists, PerItemScores(X, lists, per_query=True), np.arange(n)
        if qid is None or item_id is None:
            raise ValueError("With a 1-D y (one relevance label per row) qid and item_id are "
                             "required: the query and the item of each row.")
        codes = self._item_codes(item_id, n, fitting)
        qid = check_labels(qid, n, "qid")
        queries, query = np.unique(qid, return_inverse=True)
        query = np.ravel(query)
        pairs = query * (self.items_.size + 1) + codes
        if np.unique(pairs).size != n:
            raise ValueError("An item appears twice in a query (repeated (qid, item_id) "
                             "pair): each item is at most once in a list.")
        lists = ItemLists(y, query, codes, queries.size, self.items_.size,
                          by_label=self._loss == "listmle")
        features = np.zeros((lists.n_queries * lists.width, X.shape[1]))
        features[lists.row_query * lists.width + lists.row_position] = X
        if self._scorer == "linear":
            return lists, SharedLinearScores(features, lists), queries
        return lists, PerItemScores(features, lists, per_query=False), queries

    # ------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, qid=None, item_id=None):
        """Fit the ranker.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One row per instance (2-D ``y``) or per (query, item) pair.
        y : array-like of shape (n_samples, n_labels) or (n_samples,)
            A label-indicator (or graded relevance) matrix, one column per
            label, as scikit-learn's multilabel estimators take it; or one
            relevance label per row (then ``qid`` and ``item_id`` are needed).
        qid : array-like of shape (n_samples,), default=None
            Query of each row (1-D ``y`` only); rows of a query need not be
            contiguous.
        item_id : array-like of shape (n_samples,), default=None
            Item of each row (1-D ``y`` only), shared across queries; at most
            once per query.

        Returns
        -------
        self : LabelRankerInfluence
        """
        self._scorer, self._loss, self._alpha = self.scorer, self.loss, float(self.alpha)
        lists, scores, self.queries_ = self._data(X, y, qid, item_id, fitting=True)
        self._problem = ItemRankingProblem(lists, scores, self._loss, self._alpha)
        theta, self.n_iter_, converged = newton_cg(
            self._problem, np.zeros(scores.n_params), lists.valid, tol=self.tol,
            max_iter=self.max_iter)
        self._set_params(theta)
        if not converged:
            warnings.warn(f"Newton's method did not converge in {self.n_iter_} iterations; "
                          "increase max_iter or the ridge penalty alpha.",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _set_params(self, theta):
        self._theta = theta
        if self._scorer == "linear":
            self.coef_ = theta.copy()
        else:
            blocks = theta.reshape(self.items_.size, -1)
            self.coef_, self.intercept_ = blocks[:, :-1].copy(), blocks[:, -1].copy()

    # --------------------------------------------------------------- predict
    def predict(self, X, item_id=None):
        """Scores of the items (higher ranks first).

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        item_id : array-like of shape (n_rows,), default=None
            The item of each row. ``None``: the scores of every item for
            each row, ``(n_rows, n_items)`` (multilabel form; for
            ``scorer="linear"``, ``(n_rows,)``).

        Returns
        -------
        scores : ndarray of shape (n_rows, n_items) or (n_rows,)
        """
        X = self._validate_X(X)
        if self._scorer == "linear":
            return X @ self.coef_
        scores = X @ self.coef_.T + self.intercept_
        if item_id is None:
            return scores
        codes = self._item_codes(item_id, X.shape[0], fitting=False)
        return scores[np.arange(X.shape[0]), codes]

    # ------------------------------------------------------------- influence
    def _units(self, unit, units):
        """Row index arrays of the units, the removed item of each (or -1), and their labels."""
        lists = self._problem.lists
        if unit == "item_id":
            labels = self.items_
            by_item = np.argsort(lists.row_item, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(np.bincount(lists.row_item,
                                                                minlength=labels.size))])

            def rows_of(k):
                return by_item[bounds[k]:bounds[k + 1]]
        elif unit == "query":
            labels = self.queries_

            def rows_of(k):
                return lists.index[k, lists.valid[k] > 0]
        else:
            labels = np.arange(lists.n_rows)

            def rows_of(k):
                return np.array([k])
        keep = np.arange(len(labels))
        if units is not None:
            units = np.atleast_1d(np.asarray(units))
            keep = np.searchsorted(labels, units)
            if np.any(keep >= len(labels)) or np.any(labels[np.minimum(keep, len(labels) - 1)]
                                                     != units):
                raise ValueError(f"units holds labels that are not {unit} labels of the "
                                 "training data.")
        removed = keep if unit == "item_id" else np.full(keep.size, -1)
        return check_units([rows_of(k) for k in keep], lists.n_rows), removed, labels[keep]

    def influence_(self, X=None, y=None, qid=None, item_id=None, *, target="coef",
                   unit="item_id", units=None, method="vif", solver="auto", damping=0.0,
                   n_jobs=None, as_frame=False, verbose=0, refine=None, return_exact=False):
        r"""Estimated change of a fitted quantity when each item, query or row is removed.

        Parameters
        ----------
        X, y, qid, item_id : array-like, default=None
            Test data for ``target="loss"``, in the same form as in :meth:`fit`.
        target : {"coef", "loss"}, default="coef"
            ``"coef"``: the parameters, ``(n_units, n_items, n_features + 1)``
            (last column the intercept) or ``(n_units, n_features)``;
            ``"loss"``: the loss ``l_q`` of each test query,
            ``(n_units, n_test_queries)``. When an item is removed it is also
            removed from the test lists.
        unit : {"item_id", "query", "row"}, default="item_id"
            Remove one item from every list, one query, or one row (one
            (instance, label) entry of a 2-D ``y``, in row-major order).
        units : array-like, default=None
            Only these units: item labels (``items_``), query labels
            (``queries_``) or row positions. Rows of the result follow it.
        method : {"vif", "newton", "loo"}, default="vif"
            ``"vif"``: the versatile influence function; ``"newton"``: one
            Newton step on the objective without the unit (solved by
            preconditioned conjugate gradients); ``"loo"``: exact refits by
            Newton-CG, warm-started at the fit.
        solver : {"auto", "direct", "cg"}, default="auto"
            How ``"vif"`` solves the Hessian systems (see :func:`skvif.vif`).
        damping : float, default=0.0
            Added to the Hessian's diagonal (``"vif"``, ``"newton"``).
        n_jobs : int, default=None
            Number of joblib workers over units (``"newton"``, ``"loo"``) or
            chunks of units (``"vif"``).
        as_frame : bool, default=False
            Return a DataFrame indexed by the units (``target="loss"`` or
            ``scorer="linear"``; otherwise the 3-D array).
        verbose : int, default=0
            Print progress to stderr (``"vif"``).
        refine : int, default=None
            Recompute the ``refine`` units with the largest estimated change
            by exact refit (as ``method="loo"``). Size of a change: root mean
            square over its entries (raw changes: the standard errors of
            ``10^4`` parameters would cost one Hessian solve each).
        return_exact : bool, default=False
            Also return which units are exact refits (boolean ndarray, or a
            Series named ``exact`` with ``as_frame``; see
            :meth:`skvif.CoxPHInfluence.influence_`).

        Returns
        -------
        influence : ndarray or DataFrame
            ``influence[u, ...]`` estimates ``quantity(fit without u) -
            quantity(fit on all data)``.
        is_exact : ndarray or pandas.Series of bool
            Only with ``return_exact``.

        Notes
        -----
        For ``target="loss"`` the linearized methods report
        :math:`\nabla f_{-u}(\hat\theta)^\top \Delta\theta_u + f_{-u}(\hat\theta)
        - f(\hat\theta)`, with :math:`f_{-u}` the test loss with the removed
        item masked from the test lists (the direct part, exact), and
        ``"loo"`` reports :math:`f_{-u}(\theta_{-u}) - f(\hat\theta)`.
        """
        check_is_fitted(self)
        check_choice(target, "target", TARGETS)
        check_choice(unit, "unit", UNITS)
        check_choice(method, "method", METHODS)
        damping = check_influence_options(method, solver, damping)
        n_jobs = check_n_jobs(n_jobs)
        rows, removed, index = self._units(unit, units)
        refine = check_refine(refine, len(rows))
        if target == "loss":
            if X is None or y is None:
                raise ValueError("target='loss' needs test data X and y (and qid, item_id "
                                 "for a 1-D y).")
            test = self._data(X, y, qid, item_id, fitting=False)
        else:
            test = None

        def estimate(positions, method):
            delta = self._parameter_changes([rows[i] for i in positions], method, solver,
                                            damping, n_jobs, verbose)
            if test is None:
                return delta if self._scorer == "linear" else delta.reshape(
                    len(positions), self.items_.size, -1)
            return _loss_changes(test[0], test[1], self._loss, self._theta, delta,
                                 removed[positions], exact=method == "loo")

        result = estimate(np.arange(len(rows)), method)
        is_exact = np.full(len(rows), method == "loo")
        if refine and method != "loo":
            result, is_exact = refine_rows(result, refine, lambda top: estimate(top, "loo"))
        index = pd.Index(index, name=unit)
        as_frame = as_frame and (test is not None or self._scorer == "linear")
        if as_frame:
            columns = (pd.Index(test[2], name="query") if test is not None
                       else feature_names(self))
            result = pd.DataFrame(result, index=index, columns=columns)
        return with_exactness(result, is_exact, index, as_frame, refine, return_exact)

    def _parameter_changes(self, rows, method, solver, damping, n_jobs, verbose):
        """``(len(rows), n_params)`` estimated (or, for ``"loo"``, exact) changes."""
        problem, theta = self._problem, self._theta
        if method == "vif":
            return influence(problem.objective, theta.copy(), problem.lists.n_rows, rows,
                             method="vif", solver=solver, damping=damping, n_jobs=n_jobs,
                             batched=True, verbose=verbose,
                             derivatives=ItemRankerDerivatives(problem, theta))
        step = _refit if method == "loo" else _newton_step
        jobs = (delayed(step)(problem, theta, r, self.tol, self.max_iter, damping)
                for r in rows)
        results = Parallel(n_jobs=n_jobs)(jobs)
        failed = ~np.array([r[1] for r in results])
        if failed.any():
            warnings.warn(f"method={method!r}: {failed.sum()} unit(s) did not converge "
                          f"(positions {_positions(failed)}).", ConvergenceWarning,
                          stacklevel=3)
        return np.stack([r[0] for r in results]) - (theta if method == "loo" else 0.0)


def _newton_step(problem, theta, rows, tol, max_iter, damping):
    """``-(H_{-u} + damping I)^-1 grad J(theta; w^(-u))`` by preconditioned CG."""
    W, _ = problem.lists.without(rows)
    point = problem.at(theta, W)
    step, converged = point.solve(point.gradient, damping=damping)
    return -step, converged


def _refit(problem, theta, rows, tol, max_iter, damping):
    """The exact minimizer without ``rows``, warm-started at ``theta``."""
    W, _ = problem.lists.without(rows)
    theta_u, _, converged = newton_cg(problem, theta, W, tol=min(tol, 1e-10),
                                      max_iter=max_iter)
    return theta_u, converged


def _loss_changes(lists, scores, loss, theta, delta, removed, *, exact):
    """Change of each test query's loss per unit, the removed item masked from the lists.

    ``exact``: ``delta`` are refits minus ``theta`` and the losses are
    evaluated there; otherwise the change is linearized in ``delta`` (the
    masked test loss's score gradient times the score change) plus the exact
    change of the masked test loss at ``theta``.
    """
    S = scores.forward(theta)
    base = list_losses(S, lists.valid, lists.labels_at, loss)
    out = np.empty((delta.shape[0], lists.n_queries))
    for u in range(delta.shape[0]):
        W = lists.without_items([removed[u]]) if removed[u] >= 0 else lists.valid
        if exact:
            out[u] = list_losses(scores.forward(theta + delta[u]), W, lists.labels_at, loss)
        else:
            G = ScoreCurvature(S, W, lists.labels_at, loss).gradient
            out[u] = (np.sum(G * scores.forward(delta[u]), axis=-1)
                      + list_losses(S, W, lists.labels_at, loss))
    return out - base
