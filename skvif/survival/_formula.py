"""R-style formulas for the Cox model: ``Surv(time, status) ~ age + tgrade + strata(site)``.

The right-hand side is encoded by :mod:`formulaic` (string, boolean and
``category`` columns become treatment-coded factors, first level the
reference, as R's ``contr.treatment``); this module adds what is specific to
survival formulas: ``Surv()`` on the left, ``strata()`` terms, ``.`` for all
other columns, R's feature names (``tgradeII``) and R's missing-data default
(incomplete rows dropped, with a warning).
"""

import re
import warnings

import numpy as np
import pandas as pd
from scipy.sparse import issparse

__all__ = ["coxph", "design_from_formula", "drop_incomplete_rows", "factor_columns"]

_SURV = re.compile(r"^\s*Surv\s*\((?P<args>[^()]*)\)\s*$")
_SPECIAL = re.compile(r"^\s*(?P<kind>strata|cluster)\s*\((?P<args>[^()]*)\)\s*$")
_DOT = re.compile(r"(?<![\w.`])\.(?![\w.`])")
_CALL = re.compile(r"^C\(\s*(?P<var>[^,()]+?)\s*(?:,.*)?\)$")
_LEVEL = re.compile(r"^(?P<name>.+?)\[(?:T\.)?(?P<level>[^\[\]]*)\]$")

FACTOR_RECIPE = (
    "use skvif.survival.coxph('Surv(time, event) ~ .', data) (R-style formula: factors "
    "are treatment-coded, first level the reference), or encode them in a pipeline: "
    "make_pipeline(make_column_transformer((OneHotEncoder(drop='first', "
    "sparse_output=False), factor_columns), remainder='passthrough', "
    "verbose_feature_names_out=False), CoxPHInfluence())")


def factor_columns(X):
    """Names of the columns of a DataFrame that hold factors (strings, categories)."""
    if not hasattr(X, "dtypes"):
        return []
    return [str(c) for c, dtype in zip(X.columns, X.dtypes)
            if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype)]


def check_no_factors(X):
    """Refuse factor columns in a plain ``fit``, pointing to the two ways to encode them."""
    factors = [c for c in factor_columns(X) if not _numeric(X[c])]
    if factors:
        raise ValueError(f"X has non-numeric column(s): {', '.join(factors)} (factors: "
                         f"strings or categories); {FACTOR_RECIPE}.")


def _numeric(column):
    try:
        np.asarray(column, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def _names(text):
    return [name.strip().strip("`") for name in text.split(",") if name.strip()]


def _split_terms(rhs):
    """Top-level ``+`` terms (not inside parentheses or backticks)."""
    terms, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(rhs):
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == "+":
            terms.append(rhs[start:i])
            start = i + 1
    terms.append(rhs[start:])
    return [t.strip() for t in terms if t.strip()]


def quote_name(name):
    """A column name as a formula term (backticks unless it is a Python identifier)."""
    name = str(name)
    return name if name.isidentifier() else f"`{name}`"


def parse_formula(formula, columns, *, duration=None, event=None, weights=None):
    """Split a survival formula into its roles.

    Returns a dict with ``rhs`` (a formulaic right-hand side, ``.`` expanded),
    ``duration``, ``event``, ``entry`` and ``strata`` (a list of column names).
    """
    if not isinstance(formula, str) or not formula.strip():
        raise TypeError(f"formula must be a non-empty string, got {formula!r}.")
    entry = None
    if "~" in formula:
        lhs, rhs = formula.split("~", 1)
        match = _SURV.match(lhs)
        if not match:
            raise ValueError(f"the left-hand side of {formula!r} must be Surv(time, event) "
                             "or Surv(start, stop, event).")
        args = _names(match["args"])
        if len(args) not in (2, 3):
            raise ValueError(f"Surv() takes (time, event) or (start, stop, event), got "
                             f"{len(args)} argument(s) in {formula!r}.")
        if len(args) == 3:
            entry = args.pop(0)
        for given, name, role in ((duration, args[0], "duration"), (event, args[1], "event")):
            if given is not None and given != name:
                raise ValueError(f"{role}={given!r} contradicts the formula's "
                                 f"Surv({', '.join(args)}).")
        duration, event = args
    else:
        rhs = formula
        if duration is None or event is None:
            raise ValueError("a formula without a left-hand side Surv(time, event) ~ needs "
                             "duration= and event= (column names).")
    strata, kept = [], []
    for term in _split_terms(rhs):
        special = _SPECIAL.match(term)
        if special and special["kind"] == "strata":
            strata.extend(_names(special["args"]))
        elif special:
            raise ValueError("cluster() terms are not supported in formulas: pass the "
                             "cluster labels as groups= to influence_ and summary(robust=True).")
        else:
            kept.append(term)
    roles = [c for c in (entry, duration, event, weights, *strata) if c is not None]
    missing = [c for c in roles if c not in columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(missing)} not in the data; columns are: "
                         f"{', '.join(map(str, columns))}.")
    others = " + ".join(quote_name(c) for c in columns if c not in roles)
    rhs = " + ".join(kept) if kept else "1"
    if _DOT.search(rhs):
        if not others:
            raise ValueError("'.' in the formula, but the data have no other columns.")
        rhs = _DOT.sub(f"({others})", rhs)
    return {"rhs": rhs, "duration": duration, "event": event, "entry": entry,
            "strata": strata}


def _missing_report(frame):
    counts = frame.isna().sum()
    counts = counts[counts > 0]
    return ", ".join(f"{c} ({k})" for c, k in counts.items())


def _refuse_or_warn(n_bad, n_rows, where, missing):
    """R's ``na.fail`` (``"raise"``) or ``na.omit`` (``"drop"``, with a warning)."""
    if missing == "raise":
        raise ValueError(f"{n_bad} of {n_rows} row(s) have missing values (NaN or None) in "
                         f"{where}; drop or impute them, or set missing='drop' to leave "
                         "them out (R's na.omit).")
    if n_bad == n_rows:
        raise ValueError(f"every row has a missing value (in {where}).")
    warnings.warn(f"{n_bad} of {n_rows} rows dropped because of missing values (in {where}), "
                  "as R's na.omit.", UserWarning, stacklevel=4)


def drop_incomplete_rows(frame, missing="drop"):
    """Rows of ``frame`` without missing values, as R's ``na.omit``, warning how many.

    Parameters
    ----------
    frame : pandas.DataFrame
        The columns the model uses (and only those).
    missing : {"drop", "raise"}, default="drop"
        ``"raise"`` refuses missing values instead.

    Returns
    -------
    complete : pandas.Series of bool
        Indexed like ``frame``; True for the rows kept.
    """
    if missing not in ("drop", "raise"):
        raise ValueError(f"missing must be 'drop' or 'raise', got {missing!r}.")
    incomplete = frame.isna().any(axis=1)
    if incomplete.any():
        _refuse_or_warn(int(incomplete.sum()), len(frame),
                        f"the column(s) {_missing_report(frame)}", missing)
    return ~incomplete


def _variable(term):
    """``C(tgrade, ...)`` or `` `tgrade` `` as ``tgrade``."""
    call = _CALL.match(term.strip())
    return (call["var"] if call else term).strip().strip("`")


def _r_name(name):
    """formulaic's ``tgrade[T.II]`` / ``C(tgrade)[T.II]`` as R's ``tgradeII`` (per ``:`` part)."""
    parts = []
    for part in str(name).split(":"):
        match = _LEVEL.match(part)
        if match:
            part = f"{_variable(match['name'])}{match['level']}"
        parts.append(part.strip("`"))
    return ":".join(parts)


def _reference_levels(spec):
    """``{variable: reference level}`` of the treatment-coded factors."""
    from formulaic.utils.sentinels import UNSET

    levels = {}
    for var, (kind, state) in spec.encoder_state.items():
        contrasts = state.get("contrasts") if isinstance(state, dict) else None
        if getattr(kind, "value", kind) == "categorical" and contrasts is not None:
            base = getattr(contrasts.contrasts, "base", UNSET)
            levels[_variable(var)] = contrasts.levels[0] if base is UNSET else base
    return levels


def design_from_formula(formula, data, *, duration=None, event=None, weights=None,
                        missing="drop", extra_columns=()):
    """Encode ``data`` by a survival formula (see :func:`coxph`).

    Returns
    -------
    design : dict
        ``X`` (DataFrame with R's column names, indexed by the kept rows'
        labels), ``y`` (DataFrame ``[duration, event]``), ``strata``,
        ``entry``, ``weights`` (Series or None), ``reference_levels`` (dict),
        ``dropped`` (Index of the dropped rows' labels), ``model_spec``
        (formulaic's, to encode new data), ``data`` (the kept rows of
        ``data``) and the parsed roles. ``extra_columns`` (e.g. an id
        column) count in the missing-value check too.
    """
    from formulaic import Formula, model_matrix

    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    roles = parse_formula(formula, list(data.columns), duration=duration, event=event,
                          weights=weights)
    try:
        used = sorted(Formula(roles["rhs"]).required_variables)
    except Exception as exc:  # formulaic's parse errors have many types
        raise ValueError(f"cannot parse the formula {formula!r}: {exc}") from None
    unknown = [c for c in used if c not in data.columns]
    if unknown:
        raise ValueError(f"column(s) {', '.join(unknown)} in the formula are not in the data; "
                         f"columns are: {', '.join(map(str, data.columns))}.")
    role_columns = [c for c in (roles["entry"], roles["duration"], roles["event"], weights,
                                *roles["strata"]) if c is not None]
    columns = list(dict.fromkeys(role_columns + used + list(extra_columns)))
    complete = drop_incomplete_rows(data[columns], missing)
    frame = data.loc[complete.to_numpy()]
    try:
        matrix = model_matrix(roles["rhs"], frame, na_action="raise")
    except Exception as exc:
        raise ValueError(f"cannot encode the formula {formula!r}: {exc}") from None
    X = pd.DataFrame(np.asarray(matrix, dtype=float), index=frame.index,
                     columns=[_r_name(c) for c in matrix.columns])
    X = X.drop(columns=[c for c in X.columns if c == "Intercept"])
    if X.shape[1] == 0:
        raise ValueError(f"the formula {formula!r} has no covariates.")
    strata = None
    if roles["strata"]:
        parts = frame[roles["strata"]].astype(str)
        strata = parts.iloc[:, 0] if parts.shape[1] == 1 else parts.agg(", ".join, axis=1)
    return {**roles, "X": X, "y": frame[[roles["duration"], roles["event"]]], "strata": strata,
            "entry": None if roles["entry"] is None else frame[roles["entry"]],
            "weights": None if weights is None else frame[weights],
            "reference_levels": _reference_levels(matrix.model_spec),
            "dropped": data.index[~complete.to_numpy()], "model_spec": matrix.model_spec,
            "data": frame}


def coxph(formula, data, *, duration=None, event=None, weights=None, missing="drop",
          ties="efron", alpha=0.0, tol=1e-9, max_iter=100):
    """Fit a :class:`~skvif.survival.CoxPHInfluence` from an R-style formula.

    Parameters
    ----------
    formula : str
        ``"Surv(time, event) ~ age + tgrade + strata(site)"`` as R's
        ``coxph``, ``"Surv(start, stop, event) ~ ..."`` for delayed entry, or
        only a right-hand side (``"age + C(grade)"``) with ``duration=`` and
        ``event=``. ``.`` stands for every column not used otherwise.
        String, boolean and ``category`` columns (and ``C(x)``) are factors,
        treatment-coded against their first level (sorted, or the
        category order), named as R does (``tgradeII``); the rest is
        :mod:`formulaic`'s grammar (``a:b``, ``a*b``, ``np.log(x)``, ``- x``).
    data : pandas.DataFrame
    duration, event : str, default=None
        Column names, when the formula has no ``Surv()``.
    weights : str, default=None
        Case-weight column (R's ``weights=``).
    missing : {"drop", "raise"}, default="drop"
        ``"drop"``: rows with a missing value in a column the model uses are
        left out, with a warning saying how many (R's ``na.omit``); the
        remaining rows keep their labels in every output. ``"raise"``:
        refuse them.
    ties : {"efron", "breslow"}, default="efron"
    alpha : float, default=0.0
    tol : float, default=1e-9
    max_iter : int, default=100
        As :class:`~skvif.survival.CoxPHInfluence`.

    Returns
    -------
    model : CoxPHInfluence
        Fitted, with the extra attributes ``formula_``, ``reference_levels_``
        (the reference level of each factor), ``dropped_rows_`` (labels of
        the rows dropped for missing values) and ``model_spec_`` (formulaic's
        spec: ``model_spec_.get_model_matrix(new_data)`` encodes new rows the
        same way, with an ``Intercept`` column to drop). Call
        ``influence_``, ``summary`` and the rest on it; strata are remembered
        for the training data.

    Examples
    --------
    >>> from sksurv.datasets import load_gbsg2
    >>> from skvif.survival import coxph
    >>> X, y = load_gbsg2()
    >>> gbsg2 = X.assign(time=y["time"], cens=y["cens"].astype(int))
    >>> model = coxph("Surv(time, cens) ~ .", gbsg2)
    >>> model.coef_[list(model.feature_names_in_).index("tgradeII")].round(4)
    np.float64(0.6361)
    >>> model.reference_levels_["tgrade"]
    'I'
    """
    from ._coxph import CoxPHInfluence

    design = design_from_formula(formula, data, duration=duration, event=event,
                                 weights=weights, missing=missing)
    model = CoxPHInfluence(ties=ties, alpha=alpha, tol=tol, max_iter=max_iter)
    model.fit(design["X"], design["y"], design["weights"], strata=design["strata"],
              entry=design["entry"])
    model.formula_ = formula
    model.reference_levels_ = design["reference_levels"]
    model.dropped_rows_ = design["dropped"]
    model.model_spec_ = design["model_spec"]
    return model


def _row_missing(values):
    """Per row: any missing value (None where it cannot be told, e.g. strings in arrays)."""
    if values is None:
        return None
    if hasattr(values, "isna"):
        missing = values.isna()
        return missing.to_numpy().reshape(len(values), -1).any(axis=1)
    if issparse(values):  # refused by the validation that follows
        return None
    arr = np.asarray(values)
    if arr.ndim == 0:
        return None
    if arr.dtype.names:
        return np.column_stack([_row_missing(arr[f]) for f in arr.dtype.names]).any(axis=1)
    if arr.dtype.kind in "fc":
        return np.isnan(arr).reshape(arr.shape[0], -1).any(axis=1) if arr.ndim else None
    if arr.dtype.kind == "O":
        return pd.isna(pd.DataFrame(arr.reshape(arr.shape[0], -1))).any(axis=1).to_numpy()
    return np.zeros(arr.shape[0], dtype=bool) if arr.ndim else None


def _take(values, keep):
    if values is None:
        return None
    if hasattr(values, "iloc"):
        return values.iloc[keep]
    return np.asarray(values)[keep]


def complete_cases(X, y, sample_weight, strata, entry, missing):
    """R's ``na.action`` for ``fit``: drop (``"drop"``) or refuse (``"raise"``) incomplete rows.

    Returns the (possibly subsetted) inputs, the labels of the kept rows and
    those of the dropped rows.
    """
    from .._base import row_labels

    labels = row_labels(X)
    parts = {"X": X, "y": y, "sample_weight": sample_weight, "strata": strata, "entry": entry}
    flags = {}
    for name, values in parts.items():
        try:
            flag = _row_missing(values)
        except (TypeError, ValueError):  # unreadable: left to the validation that follows
            flag = None
        if flag is not None and flag.shape[0] == len(labels) and flag.any():
            flags[name] = flag
    if not flags:
        return (*parts.values(), labels, labels[:0])
    incomplete = np.any(np.stack(list(flags.values())), axis=0)
    where = ", ".join(f"{name} ({int(flag.sum())})" for name, flag in flags.items())
    _refuse_or_warn(int(incomplete.sum()), len(labels), where, missing)
    keep = np.flatnonzero(~incomplete)
    return (*(_take(values, keep) for values in parts.values()), labels[keep],
            labels[incomplete])
