"""Glue shared by the estimators: influence bookkeeping and DataFrame output."""

import hashlib
import weakref
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils.validation import _num_samples, check_is_fitted, validate_data

from ._blas import single_threaded_blas
from ._engine import METHODS, SOLVERS, check_choice, check_nonnegative


def row_labels(X):
    """Index of a DataFrame, else ``0..n-1``."""
    if hasattr(X, "index") and hasattr(X, "columns"):
        return X.index.copy()  # results never share (or rename) the user's index
    return pd.RangeIndex(_num_samples(X))  # any array-like, also without __len__


def check_numeric_columns(X, name="X"):
    """Name the columns of a DataFrame that cannot be read as numbers.

    scikit-learn's own conversion error quotes an offending value but not its
    column; a statistician's data frame needs the column named.
    """
    if not (hasattr(X, "columns") and hasattr(X, "dtypes")):
        if isinstance(X, (list, tuple, np.ndarray)):
            arr = np.asarray(X)
            if arr.dtype.kind in "mM":
                raise TypeError(f"{name} holds {arr.dtype} values (dates or durations); "
                                "convert them to numbers first (e.g. days since a date).")
            if arr.dtype.kind in "USO":
                try:
                    arr.astype(float)
                except (TypeError, ValueError) as exc:  # keep the type sklearn would raise
                    raise type(exc)(f"{name} has non-numeric values ({exc}); encode them "
                                    "as numbers first.") from None
        return
    bad, dates = [], []
    for column, dtype in zip(X.columns, X.dtypes):
        if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            continue
        if (pd.api.types.is_datetime64_any_dtype(dtype)
                or pd.api.types.is_timedelta64_dtype(dtype)):
            dates.append(str(column))
            continue
        try:
            np.asarray(X[column], dtype=float)
        except (TypeError, ValueError):
            bad.append(str(column))
    if dates:
        raise ValueError(f"{name} has date or duration column(s): {', '.join(dates)}; "
                         "convert them to numbers first (e.g. days since a reference date "
                         "with (column - origin).dt.days, or .dt.total_seconds()).")
    if bad:
        raise ValueError(f"{name} has non-numeric column(s): {', '.join(bad)}; encode them "
                         "as numbers first (e.g. one-hot or ordinal codes).")


def check_labels(labels, n_samples, name):
    """One label per row (groups, strata, query ids): 1-D, no missing values, sortable."""
    labels = np.asarray(labels.to_numpy() if hasattr(labels, "to_numpy") else labels)
    if labels.ndim != 1 or labels.shape[0] != n_samples:
        raise ValueError(f"{name} must have one label per row ({n_samples} rows), "
                         f"got shape {labels.shape}.")
    if labels.dtype.kind in "fcO" and np.any(pd.isna(labels)):
        raise ValueError(f"{name} contains missing values (NaN or None).")
    if labels.dtype.kind in "fc" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} contains infinite values.")
    if labels.dtype.kind == "O":
        try:
            np.unique(labels)
        except TypeError as exc:
            raise TypeError(f"{name} labels must be mutually sortable (e.g. all numbers or "
                            f"all strings): {exc}") from None
    return labels


def collinear_columns(X, names, sample_weight=None, groups=None, rcond=1e-8):
    """Names of the columns involved in an exact linear dependence, or ``[]``.

    The columns are centered (within each group, when ``groups`` is given: a
    Cox stratum or a ranking query, inside which a constant shift changes
    nothing) over the rows of positive weight and scaled to unit norm; a
    singular value below ``rcond`` times the largest is a dependence, and the
    columns with a visible share in its singular vector are named. A column
    that is constant (within groups) is such a dependence on its own: one
    whose centered norm is at most ``rcond`` times its own norm, so that the
    units of a column (or of the others) never matter.
    """
    X = np.asarray(X, dtype=float)
    keep = None if sample_weight is None else np.asarray(sample_weight) > 0
    if keep is not None and not keep.all():  # (no copy of X otherwise)
        X = X[keep]
        groups = None if groups is None else np.asarray(groups)[keep]
    if groups is None:
        code, means = np.zeros(X.shape[0], dtype=np.intp), X.mean(axis=0)[None]
    else:
        _, code = np.unique(groups, return_inverse=True)
        code = np.ravel(code)
        counts = np.bincount(code)
        means = np.column_stack([np.bincount(code, X[:, j], counts.size)
                                 for j in range(X.shape[1])]) / counts[:, None]
    if X.shape[0] > 2 * X.shape[1] and _clearly_independent(X, code, means, rcond):
        return []
    Z = X - means[code]
    norms = np.linalg.norm(Z, axis=0)
    constant = norms <= rcond * np.linalg.norm(X, axis=0)
    Z = Z[:, ~constant] / np.where(constant, 1.0, norms)[~constant]
    involved = constant.copy()
    if Z.shape[1]:
        # with many rows, the SVD of the (p, p) triangular factor of a QR (same singular
        # values and right vectors, without the (n, p) left ones); with fewer rows than
        # columns the full right basis, whose extra rows are the null space
        if Z.shape[0] > 2 * Z.shape[1]:
            Z = np.linalg.qr(Z, mode="r")
        _, sv, Vt = np.linalg.svd(Z, full_matrices=Z.shape[0] < Z.shape[1])
        sv = np.concatenate([sv, np.zeros(Vt.shape[0] - sv.size)])
        null = Vt[sv <= rcond * sv[0]]
        if null.size:
            involved[np.flatnonzero(~constant)] = np.any(np.abs(null) > 1e-6, axis=0)
    return [str(names[j]) for j in np.flatnonzero(involved)]


@single_threaded_blas
def _clearly_independent(X, code, means, rcond, rows=2**16):
    """Whether the centered, unit-norm columns are far from any dependence (no column constant).

    From their Gram matrix, accumulated over blocks of rows: its smallest
    eigenvalue above ``1e-6`` (with rounding errors near ``1e-16 p``) means
    singular values far above ``rcond <= 1e-6``; otherwise the caller's SVD decides.
    """
    if rcond > 1e-6:
        return False
    gram = np.zeros((X.shape[1],) * 2)
    squares = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], rows):
        block = X[start:start + rows]
        Z = block - means[code[start:start + rows]]
        gram += Z.T @ Z
        squares += np.einsum("ij,ij->j", block, block)
    norms = np.sqrt(np.diagonal(gram))
    if np.any(norms <= rcond * np.sqrt(squares)) or not np.all(np.isfinite(gram)):
        return False
    return bool(np.linalg.eigvalsh(gram / np.outer(norms, norms))[0] > 1e-6)


def collinearity_message(columns, hint):
    shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
    return (f"The column(s) {shown} are collinear or constant (or there are more columns "
            f"than the data can identify), so their coefficients are not identifiable; "
            f"{hint}")


def check_identifiable(estimator, damping):
    """Refuse influence of a model fitted without penalty on collinear columns."""
    collinear = getattr(estimator, "_collinear", [])
    if collinear and damping == 0:
        raise ValueError(collinearity_message(
            collinear, "the Hessian is singular. Set a ridge penalty alpha > 0 on the "
            "estimator, or damping > 0 in influence_."))


def validate_X(estimator, X, **kwargs):
    """``validate_data`` to floats, naming non-numeric DataFrame columns first."""
    check_numeric_columns(X)
    return validate_data(estimator, X, dtype=float, **kwargs)


class FittedInputMixin:
    """``_validate_X``: new rows for a fitted estimator (fitted, numeric, same features)."""

    def _validate_X(self, X):
        check_is_fitted(self)
        return validate_X(self, X, reset=False)


# fitted influence problems per estimator, outside the estimator's own state (which
# influence_ leaves untouched, and which is what pickling and cloning see)
_INFLUENCE_CACHE = weakref.WeakKeyDictionary()


class InfluenceCacheMixin:
    """Keeps the fitted influence problems (``get_influence()``) between ``influence_`` calls.

    Results are kept for the current fit only (they are rebuilt once the
    fitted parameters change), outside the estimator's attributes: they are
    neither pickled nor cloned, and are freed with the estimator.
    """

    def _cached_influence(self, key, params, build):
        cache = _INFLUENCE_CACHE.setdefault(self, {})
        results = cache.get(key)
        if results is None or not np.array_equal(results.params, params):
            if any(not np.array_equal(r.params, params) for r in cache.values()):
                cache.clear()  # a new fit
            results = cache[key] = build()
        return results


def groups_key(groups):
    """A hashable fingerprint of a group label per row (``None`` for single rows)."""
    if groups is None:
        return None
    codes = pd.util.hash_pandas_object(pd.Series(np.asarray(groups)),
                                       index=False).to_numpy()
    return hashlib.sha1(codes.tobytes()).hexdigest()


def units_from_groups(groups, n_samples, name="groups"):
    """Unit index arrays for a group label per row, ordered as ``np.unique(groups)``."""
    if groups is None:
        return None, None
    groups = check_labels(groups, n_samples, name)
    labels, inverse = np.unique(groups, return_inverse=True)
    inverse = np.ravel(inverse)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=labels.size))])
    return [order[bounds[k]:bounds[k + 1]] for k in range(labels.size)], pd.Index(labels)


def check_influence_options(method, solver, damping):
    check_choice(method, "method", METHODS)
    check_choice(solver, "solver", SOLVERS)
    return check_nonnegative(damping, "damping")


def feature_names(estimator):
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        names = [f"x{j}" for j in range(estimator.n_features_in_)]
    return pd.Index(names)


def feature_position(estimator, feature):
    """Position of ``feature`` (a name or a position) among the fitted features."""
    names = list(feature_names(estimator))
    if isinstance(feature, Integral) and not isinstance(feature, bool):
        if not 0 <= feature < len(names):
            raise ValueError(f"feature {feature} is outside [0, {len(names)}).")
        return int(feature)
    if feature in names:
        return names.index(feature)
    raise ValueError(f"feature {feature!r} is not one of {list(map(str, names))}.")


class FittedLinearMixin:
    """Tags ``y`` as required, and fitted once ``coef_`` exists (left of ``BaseEstimator``)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coef_")
