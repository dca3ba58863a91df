"""Glue shared by the estimators: influence bookkeeping and DataFrame output."""

import numpy as np
import pandas as pd
from sklearn.utils.validation import _num_samples

from ._engine import METHODS, SOLVERS, check_choice, check_nonnegative


def row_labels(X):
    """Index of a DataFrame, else ``0..n-1``."""
    if hasattr(X, "index") and hasattr(X, "columns"):
        return X.index
    return pd.RangeIndex(_num_samples(X))  # any array-like, also without __len__


def check_numeric_columns(X, name="X"):
    """Name the columns of a DataFrame that cannot be read as numbers.

    scikit-learn's own conversion error quotes an offending value but not its
    column; a statistician's data frame needs the column named.
    """
    if not (hasattr(X, "columns") and hasattr(X, "dtypes")):
        return
    bad = []
    for column, dtype in zip(X.columns, X.dtypes):
        if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            continue
        try:
            np.asarray(X[column], dtype=float)
        except (TypeError, ValueError):
            bad.append(str(column))
    if bad:
        raise ValueError(f"{name} has non-numeric column(s): {', '.join(bad)}; encode them "
                         "as numbers first (e.g. one-hot or ordinal codes).")


def units_from_groups(groups, n_samples, name="groups"):
    """Unit index arrays for a group label per row, ordered as ``np.unique(groups)``."""
    if groups is None:
        return None, None
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] != n_samples:
        raise ValueError(f"{name} must have one label per training row ({n_samples}), "
                         f"got shape {groups.shape}.")
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise ValueError(f"{name} contains NaN.")
    labels, inverse = np.unique(groups, return_inverse=True)
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
