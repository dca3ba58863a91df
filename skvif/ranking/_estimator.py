"""``ListwiseRankerInfluence``: a linear listwise ranker that explains itself."""

import warnings
from functools import partial
from numbers import Integral, Real

import autograd.numpy as anp
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import ndcg_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, _num_samples, check_is_fitted

from .._base import (FittedInputMixin, FittedLinearMixin, check_identifiable,
                     check_influence_options, collinear_columns, collinearity_message,
                     feature_names, feature_position, row_labels, validate_X)
from .._engine import (InfluenceResults, check_choice, check_units, minimize,
                       one_answer_out)
from .._robustness import (_Problem, check_refine, check_robustness_options, parameter_scale,
                           refine_rows, search_all, with_exactness)
from ._objective import (LOSSES, LocalChanges, Lists, objective, query_weighted_objective,
                         test_losses)

__all__ = ["ListwiseRankerInfluence"]

TARGETS = ("coef", "predict", "loss")
UNITS = ("item", "query")


def _check_qid(qid, n_samples):
    """One query id per row, as a 1-D array (any sortable labels, no NaN)."""
    if qid is None:
        raise ValueError("qid is required: one query id per row (like XGBRanker's qid).")
    qid = np.asarray(qid)
    if qid.ndim != 1 or qid.shape[0] != n_samples:
        raise ValueError(f"qid must have one query id per row of X ({n_samples} rows), "
                         f"got shape {qid.shape}.")
    if qid.dtype.kind == "f" and not np.all(np.isfinite(qid)):
        raise ValueError("qid contains NaN or infinite values.")
    if qid.dtype.kind == "O" and np.any(pd.isna(qid)):
        raise ValueError("qid contains missing values (NaN or None).")
    if qid.dtype.kind == "O":
        try:
            np.unique(qid)
        except TypeError as exc:
            raise TypeError(f"qid labels must be mutually sortable: {exc}") from None
    return qid.copy()


def _check_labels(y, n_samples):
    if y is None:
        raise ValueError("y is required: relevance labels, one per row; this estimator "
                         "requires y to be passed, but the target y is None.")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_samples:
        raise ValueError(f"y must have one relevance label per row of X ({n_samples} rows), "
                         f"got shape {y.shape}.")
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported: relevance labels y must be real.")
    try:
        y = y.astype(float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Relevance labels y must be numeric: {exc}") from None
    if not np.all(np.isfinite(y)):
        raise ValueError("Relevance labels y contain NaN or infinite values.")
    return y


def _linear_target(params, *, X_new):
    return X_new @ params


class ListwiseRankerInfluence(FittedInputMixin, FittedLinearMixin, BaseEstimator):
    r"""Linear listwise learning-to-rank (ListNet or ListMLE) with influence.

    Fits linear scores ``s = X @ coef_`` (no intercept: a constant score does
    not change any ranking) by minimizing a listwise ranking loss summed over
    queries plus a ridge penalty, by Newton's method; then estimates how much
    each training item (row) or each whole query drives the coefficients, the
    scores of new rows, or the test loss of new queries (:meth:`influence_`).

    Parameters
    ----------
    loss : {"listnet", "listmle"}, default="listnet"
        The per-query loss, see Notes.
    alpha : float, default=1.0
        Ridge penalty ``alpha/2 * ||coef||^2``. Both losses are invariant to
        a constant shift of the scores and often unbounded below without it
        (a feature that orders every list perfectly), so keep ``alpha > 0``
        unless the data are known to be non-separable.
    tol : float, default=1e-9
        Newton's method stops once a full step, in the Hessian's units
        (``|step_j| sqrt(H_jj)``), is at most ``tol * (1 + max_j |coef_j|
        sqrt(H_jj))``: the fit does not depend on the units of the columns.
    max_iter : int, default=100
        Maximum number of Newton iterations (a ``ConvergenceWarning`` is
        raised when reached).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Only when ``X`` had string column names.
    n_iter_ : int
        Newton iterations of the fit.
    queries_ : ndarray
        ``np.unique(qid)`` of the training data: the row order of
        ``influence_(unit="query")``.

    See Also
    --------
    skvif.vif : The model-agnostic influence engine behind :meth:`influence_`.

    Notes
    -----
    The objective is

    .. math::

        J(w) = \sum_q \ell_q(X_q w) + \frac{\alpha}{2}\lVert w\rVert^2,

    with, for the scores :math:`s = X_q w` and labels :math:`y` of query
    :math:`q`,

    - ``"listnet"`` (top-one ListNet):
      :math:`\ell_q = -\sum_i \operatorname{softmax}(y)_i
      \log \operatorname{softmax}(s)_i`;
    - ``"listmle"``: :math:`\ell_q = -\sum_k \big[s_{\pi(k)} -
      \log\sum_{j \ge k} e^{s_{\pi(j)}}\big]`, with :math:`\pi` the items
      sorted by descending label, ties kept in row order (a stable sort).

    Labels are graded relevances (any real numbers; :meth:`score` needs
    them non-negative). Queries may have any number of items, including
    one (which contributes a constant, 0, to the loss), and their rows need
    not be contiguous.

    **Removal.** Removing an item deletes its row from its list: both
    softmaxes renormalize over the items left (for ListMLE, the item leaves
    the permutation and every later suffix). Removing a query deletes its
    whole list. Internally each row carries a weight that multiplies its
    terms inside every sum (``softmax(y)_i = w_i e^{y_i} / \sum_j w_j
    e^{y_j}``, the same weights inside the log-sum-exps); a zero weight is
    exactly the deletion, which is what ``"vif"``, ``"newton"`` and ``"loo"``
    rely on. ``"if"`` differentiates in these weights at 1.

    **Pipelines and grid search.** ``qid`` is metadata: with scikit-learn's
    metadata routing enabled (``sklearn.set_config(enable_metadata_routing=
    True)``), request it with ``ranker.set_fit_request(qid=True)
    .set_score_request(qid=True)`` and pass ``qid=...`` to
    ``Pipeline.fit``/``score`` or ``GridSearchCV.fit``; split with
    ``GroupKFold`` (also passing ``groups=qid``) so that a query is never
    split between training and validation folds.

    Examples
    --------
    >>> import numpy as np
    >>> from skvif.ranking import ListwiseRankerInfluence
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 3))
    >>> y = np.digitize(X @ [1.0, -0.5, 0.0] + rng.normal(scale=0.5, size=80), [-0.5, 0.5])
    >>> qid = np.repeat(np.arange(10), 8)  # 10 queries of 8 items, labels 0, 1, 2
    >>> ranker = ListwiseRankerInfluence(loss="listnet", alpha=1.0).fit(X, y, qid)
    >>> ranker.coef_.round(3)
    array([ 0.496, -0.176,  0.092])
    >>> round(ranker.score(X, y, qid), 3)
    0.968
    >>> ranker.influence_().shape  # change of coef_ when each item is removed
    (80, 3)
    >>> ranker.influence_(unit="query", as_frame=True).shape  # ... each query
    (10, 3)
    """

    _parameter_constraints = {
        "loss": [StrOptions(set(LOSSES))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, loss="listnet", alpha=1.0, tol=1e-9, max_iter=100):
        self.loss = loss
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, qid):
        """Fit the ranker.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Graded relevance labels (higher is more relevant).
        qid : array-like of shape (n_samples,)
            Query id of each row (any sortable labels). Rows of a query need
            not be contiguous.

        Returns
        -------
        self : ListwiseRankerInfluence
        """
        labels = row_labels(X)
        n = _num_samples(X)
        y = _check_labels(y, n)
        qid = _check_qid(qid, n)
        X = validate_X(self, X, copy=True)
        self._row_labels = labels
        self._lists = Lists(X, y, qid)  # the training data, kept for influence_
        self.queries_ = self._lists.queries
        # the objective is fixed at fit: set_params afterwards changes the next fit only
        self._loss, self._alpha = self.loss, float(self.alpha)

        P, n_iter, converged = minimize(
            self._objective(), np.zeros((1, X.shape[1])), np.ones((1, n)),
            tol=self.tol, max_iter=self.max_iter)
        self.coef_ = P[0]
        self.n_iter_ = int(n_iter[0])
        # a shift of a column inside a query changes no listwise loss: with alpha = 0
        # a column constant within every query is not identifiable
        self._collinear = ([] if self._alpha > 0 else
                           collinear_columns(X, feature_names(self), groups=qid))
        if self._collinear:
            warnings.warn(collinearity_message(
                self._collinear, "drop one of them or set a ridge penalty alpha > 0 "
                "(influence_ needs an invertible Hessian). A column constant within "
                "every query counts as constant."), UserWarning, stacklevel=2)
        if not converged[0] and not self._collinear:  # (collinearity is warned above)
            warnings.warn(f"Newton's method did not converge in {self.n_iter_} iterations; "
                          "increase max_iter or the ridge penalty alpha.",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _objective(self):
        return partial(objective, lists=self._lists, loss=self._loss, alpha=self._alpha)

    # -------------------------------------------------------------- predict
    def predict(self, X):
        """Linear scores ``X @ coef_`` (higher ranks first).

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)

        Returns
        -------
        scores : ndarray of shape (n_rows,)
        """
        return self._validate_X(X) @ self.coef_

    def score(self, X, y, qid, sample_weight=None):
        """Mean NDCG over queries.

        Each query's NDCG is ``sklearn.metrics.ndcg_score`` of its labels and
        predicted scores (all positions, ties in the scores averaged).
        Queries of a single item are left out of the mean: any ranking of
        one item is perfect, and ``ndcg_score`` refuses them.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        y : array-like of shape (n_rows,)
            Non-negative relevance labels.
        qid : array-like of shape (n_rows,)
        sample_weight : array-like of shape (n_rows,), default=None
            Row weights; the mean over queries is then weighted, each query
            by the mean weight of its rows (also what lets
            ``Pipeline.score`` route to this method).

        Returns
        -------
        score : float

        Raises
        ------
        ValueError
            When no query has two items or more.
        """
        scores = self.predict(X)
        n = scores.shape[0]
        weight = _check_sample_weight(sample_weight, scores, dtype=float,
                                      ensure_non_negative=True)
        return mean_ndcg(scores, _check_labels(y, n), _check_qid(qid, n), weight)

    # ------------------------------------------------------------ influence
    def influence_(self, X=None, y=None, qid=None, *, target="coef", unit="item",
                   method="vif", solver="auto", damping=0.0, n_jobs=None, as_frame=False,
                   verbose=0, refine=None, return_exact=False):
        r"""Estimated change of a fitted quantity when each training item or query is removed.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features), default=None
            Rows for ``target="predict"`` and ``"loss"``.
        y : array-like of shape (n_rows,), default=None
            Labels of ``X``, for ``target="loss"``.
        qid : array-like of shape (n_rows,), default=None
            Query ids of ``X``, for ``target="loss"``.
        target : {"coef", "predict", "loss"}, default="coef"
            ``"coef"``: the coefficients, ``(n_units, n_features)``;
            ``"predict"``: ``predict(X)``, ``(n_units, n_rows)``;
            ``"loss"``: the unpenalized loss ``l_q`` of each test query,
            ``(n_units, n_test_queries)``, columns in ``np.unique(qid)`` order.
        unit : {"item", "query"}, default="item"
            Remove one training row at a time (it leaves its list), or one
            whole query at a time (rows of the result follow ``queries_``).
        method : {"vif", "if", "newton", "loo"}, default="vif"
            See :func:`skvif.vif`: ``"vif"`` and ``"newton"`` use the exact
            deletion; ``"if"`` linearizes in the row weights; ``"loo"``
            refits exactly (slow, the ground truth).
        solver : {"auto", "direct", "cg"}, default="auto"
            How the Hessian systems are solved.
        damping : float, default=0.0
            Added to the Hessian's diagonal.
        n_jobs : int, default=None
            Number of joblib workers over chunks of units.
        as_frame : bool, default=False
            Return a DataFrame indexed by the training row labels (or
            ``queries_``), with columns named after the features, the rows
            of ``X`` or the test queries.
        verbose : int, default=0
            Print progress to stderr.
        refine : int, default=None
            Recompute the ``refine`` units with the largest estimated change
            by exact refit. Size of a change: root mean square over the
            columns, coefficient changes divided by ``sqrt(|diag H^-1|)``
            (unit-free) for ``"coef"``, raw changes otherwise.
        return_exact : bool, default=False
            Also return which units are exact refits (boolean ndarray, or a
            Series named ``exact`` with ``as_frame``; see
            :meth:`skvif.CoxPHInfluence.influence_`).

        Returns
        -------
        influence : ndarray or DataFrame
            ``influence[u, j]`` estimates ``quantity_j(fit without u) -
            quantity_j(fit on all data)``: positive when removing ``u``
            increases it.
        is_exact : ndarray or pandas.Series of bool
            Only with ``return_exact``.

        Notes
        -----
        ``"if"`` linearizes in weights at 1: for ``unit="item"`` the row
        weights inside the softmaxes (an item of weight ``w`` counts as ``w``
        copies of itself, and weight 0 deletes it); for ``unit="query"`` a
        case weight multiplying the query's loss, which gives the classical
        influence ``H^{-1} grad l_q`` -- equal to ``"vif"`` there, since
        removing a query removes its loss term exactly. For single items the
        linearization can be poor (removing the most relevant item of a
        short ListNet list changes the label softmax a lot), which is what
        ``"vif"`` avoids.

        A unit changes only its own query's loss, so for ``"vif"`` and
        ``"newton"`` the leave-out gradients (and Hessians) are computed on a
        copy of that query's list only, not on the whole data; the result is
        the same as the engine's generic path, at a cost of about one
        gradient evaluation for all items.
        """
        check_is_fitted(self)
        check_choice(target, "target", TARGETS)
        check_choice(unit, "unit", UNITS)
        damping = check_influence_options(method, solver, damping)
        check_identifiable(self, damping)
        lists = self._lists
        n = lists.n_samples
        if unit == "item":
            units, index = [np.array([i]) for i in range(n)], self._row_labels
        else:
            units = [lists.index[q, lists.valid[q] > 0] for q in range(lists.n_queries)]
            index = pd.Index(lists.queries, name="query")
        units = check_units(units, n)

        spec, columns = {}, feature_names(self)
        if target != "coef":
            if X is None:
                raise ValueError(f"target={target!r} needs X.")
            columns = row_labels(X)
            X_new = self._validate_X(X)
            if target == "predict":
                spec["target"] = partial(_linear_target, X_new=X_new)
            else:
                if y is None or qid is None:
                    raise ValueError("target='loss' needs X, y and qid.")
                test = Lists(X_new, _check_labels(y, X_new.shape[0]),
                             _check_qid(qid, X_new.shape[0]))
                spec["target"] = partial(test_losses, lists=test, loss=self._loss)
                columns = pd.Index(test.queries, name="query")
        if method in ("vif", "newton"):
            spec["derivatives"] = LocalChanges(lists, self._loss, self.coef_)
        elif method == "if" and unit == "query":
            spec["loss_if"] = partial(query_weighted_objective, lists=lists, loss=self._loss,
                                      alpha=self._alpha)
        refine = check_refine(refine, len(units))
        target_fn = spec.pop("target", None)
        results = InfluenceResults(self._objective(), self.coef_.copy(), n, units,
                                   solver=solver, damping=damping, n_jobs=n_jobs, batched=True,
                                   tol=min(self.tol, 1e-10), max_iter=self.max_iter,
                                   verbose=verbose, strongly_convex=self._alpha > 0, **spec)
        result = results.changes(target_fn, method, out=one_answer_out(results, target_fn))
        is_exact = np.full(len(units), method == "loo")
        if refine and method != "loo":
            scale = None if target != "coef" else parameter_scale(results)
            result, is_exact = refine_rows(result, refine, lambda top: results.changes(
                target_fn, "loo", positions=top), scale)
        out = (pd.DataFrame(result, index=index.copy(), columns=columns.copy()) if as_frame
               else result)  # (copies: renaming a result's index renames nothing else)
        return with_exactness(out, is_exact, index, as_frame, refine, return_exact)

    def robustness_(self, feature=None, *, target="coef", X=None, y=None, qid=None,
                    baseline=None, unit="item", method="vif", max_fraction=0.1):
        """Smallest removal of items (or queries) that changes a conclusion.

        ``target="coef"``: the smallest set found whose removal flips the sign
        of coefficient ``feature``. ``target="ndcg"``: the smallest set whose
        removal brings the mean test NDCG of ``(X, y, qid)`` (as :meth:`score`
        computes it) to the other side of ``baseline``. Each set is confirmed
        by an exact refit (see :func:`skvif.robustness`). Only sign-type
        goals: the ranking objective is not a log-likelihood, so its inverse
        Hessian is not a standard error.

        Parameters
        ----------
        feature : str or int, default=None
            A feature name or position (``target="coef"``).
        target : {"coef", "ndcg"}, default="coef"
        X, y, qid : array-like, default=None
            The test set of ``target="ndcg"``.
        baseline : float, default=None
            The NDCG to compare with (``target="ndcg"``); default: the test
            NDCG of an uninformative ranker (all scores equal: sklearn's
            ``ndcg_score`` averages over the ties), i.e. "the model ranks
            better than chance".
        unit : {"item", "query"}, default="item"
        method : {"vif", "if", "newton"}, default="vif"
        max_fraction : float, default=0.1
            Largest fraction of the units to remove before answering "not
            found".

        Returns
        -------
        report : skvif.RobustnessReport
            With the single goal ``"sign"``; for ``target="ndcg"`` its
            estimate is the test NDCG minus ``baseline``.

        Notes
        -----
        Between refits the search is guided by the influence of each unit on
        a smooth NDCG (ApproxNDCG: each item's rank
        ``1 + sum_j sigmoid((s_j - s_i) / tau)``, ``tau`` a tenth of the
        spread of the fitted test scores), since NDCG itself is piecewise
        constant in the coefficients; every conclusion is judged on the exact
        NDCG at the refit.
        """
        check_is_fitted(self)
        check_choice(unit, "unit", UNITS)
        check_choice(target, "target", ("coef", "ndcg"))
        check_robustness_options(0.05, max_fraction, method)
        lists = self._lists
        if unit == "item":
            units, labels = np.arange(lists.n_samples)[:, None], self._row_labels
        else:
            units = [lists.index[q, lists.valid[q] > 0] for q in range(lists.n_queries)]
            labels = lists.queries
        if target == "coef":
            if feature is None:
                raise ValueError("target='coef' needs feature (a name or position).")
            j = feature_position(self, feature)
            guide = exact = partial(_coefficient, j=j)
            name = str(feature_names(self)[j])
        else:
            if X is None or y is None or qid is None:
                raise ValueError("target='ndcg' needs the test set X, y and qid.")
            X_test = self._validate_X(X)
            y_test = _check_labels(y, X_test.shape[0])
            qid_test = _check_qid(qid, X_test.shape[0])
            ones = np.ones(X_test.shape[0])
            if baseline is None:
                baseline = mean_ndcg(np.zeros(X_test.shape[0]), y_test, qid_test, ones)
            if not isinstance(baseline, Real) or not np.isfinite(baseline):
                raise ValueError(f"baseline must be a finite number, got {baseline!r}.")
            spread = np.std(X_test @ self.coef_)
            smooth = partial(smooth_mean_ndcg, lists=Lists(X_test, y_test, qid_test),
                             temperature=0.1 * spread if spread > 0 else 1.0)
            guide = partial(_shifted, smooth, shift=float(baseline))
            exact = partial(_shifted, partial(_test_ndcg, X=X_test, y=y_test, qid=qid_test,
                                              weight=ones), shift=float(baseline))
            name = f"test NDCG - {baseline:.4g}"
        derivatives = LocalChanges(lists, self._loss, self.coef_) if method != "if" else None
        problem = _Problem(self._objective(), self.coef_.copy(), lists.n_samples, units,
                           guide, None, method=method, batched=True,
                           derivatives=derivatives, loss_if=None, damping=0.0,
                           tol=min(self.tol, 1e-10), max_iter=self.max_iter,
                           strongly_convex=self._alpha > 0, exact_target=exact)
        return search_all(problem, ("sign",), 0.05, list(labels), max_fraction,
                          name, "items" if unit == "item" else "queries")


def mean_ndcg(scores, y, qid, weight):
    """Weighted mean over queries of ``sklearn.metrics.ndcg_score`` (see ``score``)."""
    _, code = np.unique(qid, return_inverse=True)
    code = code.ravel()
    order = np.argsort(code, kind="stable")
    sizes = np.bincount(code)
    query_weight = np.bincount(code, weights=weight) / sizes
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    total, count = 0.0, 0.0
    for size in np.unique(sizes[sizes > 1]):
        # queries of equal size go to ndcg_score together, which returns
        # the weighted mean of their per-query NDCGs
        qs = np.flatnonzero(sizes == size)
        rows = order[bounds[qs][:, None] + np.arange(size)]
        if query_weight[qs].sum() > 0:
            total += ndcg_score(y[rows], scores[rows],
                                sample_weight=query_weight[qs]) * query_weight[qs].sum()
            count += query_weight[qs].sum()
    if count == 0:
        raise ValueError("NDCG needs at least one query with two items or more "
                         "(and a positive weight).")
    return float(total / count)


def smooth_mean_ndcg(params, *, lists, temperature):
    """ApproxNDCG (Qin, Liu & Li, 2010): NDCG with each item's rank made smooth.

    ``rank_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / temperature)`` in
    ``DCG = sum_i y_i / log2(1 + rank_i)`` (sklearn's linear gains), over the
    queries of two items or more; a differentiable stand-in for
    :func:`mean_ndcg` that guides the robustness search between refits.
    """
    Q, L = lists.valid.shape
    s = anp.reshape(anp.dot(lists.X, params), (Q, L))
    valid = lists.valid
    diff = (s[:, None, :] - s[:, :, None]) / temperature           # [q, i, j] = s_j - s_i
    other = valid[:, None, :] * (1.0 - np.eye(L))[None]
    rank = 1.0 + anp.sum(other * 0.5 * (1.0 + anp.tanh(0.5 * diff)), axis=2)
    dcg = anp.sum(valid * lists.labels / anp.log2(1.0 + rank), axis=1)
    ideal = np.sum(valid * lists.labels / np.log2(2.0 + np.arange(L)), axis=1)
    keep = (valid.sum(axis=1) > 1) & (ideal > 0)
    return anp.sum(anp.where(keep, dcg / np.where(keep, ideal, 1.0), 0.0)) / max(
        (valid.sum(axis=1) > 1).sum(), 1)


def _coefficient(params, *, j):
    return params[j]


def _shifted(function, params, *, shift):
    return function(params) - shift


def _test_ndcg(params, *, X, y, qid, weight):
    return mean_ndcg(X @ params, y, qid, weight)
