"""Influence for Cox models fitted by lifelines or scikit-survival.

The other library's fitted model and its training data are mapped to the
equivalent :class:`~skvif.survival.CoxPHInfluence` (ties, penalty, strata,
weights, delayed entry), which is refitted on the same data; the two sets of
coefficients must agree (to ``1e-6`` relative to the largest coefficient), so
that every influence reported is that of the model the user fitted. What
cannot be mapped exactly is refused.
"""

import numpy as np
import pandas as pd

__all__ = ["FittedElsewhereMixin"]

COEF_RTOL = 1e-6


def _check_agreement(model, coef, source, hint):
    coef = np.asarray(coef, dtype=float)
    difference = float(np.max(np.abs(model.coef_ - coef)))
    bound = COEF_RTOL * max(1.0, float(np.max(np.abs(coef))))
    if not difference <= bound:
        raise ValueError(
            f"the coefficients of the {source} model differ from the exact optimum by up to "
            f"{difference:.3g} (more than {bound:.1g}), so its influence cannot be reported "
            f"as that model's; {hint}")
    return model


def _scalar(value, name):
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if not np.all(arr == arr[0]):
        raise ValueError(f"{name} differs between columns ({arr.tolist()}); only one scalar "
                         "ridge penalty maps exactly to CoxPHInfluence(alpha=...).")
    return float(arr[0])


def _lifelines_penalty(cph, X):
    """lifelines' penalizer ``c`` on standardized columns as one ridge ``alpha``."""
    if np.any(np.asarray(cph.l1_ratio, dtype=float) != 0) and np.any(
            np.asarray(cph.penalizer, dtype=float) != 0):
        raise ValueError("the lifelines model has an l1 penalty (l1_ratio > 0), which "
                         "CoxPHInfluence (a ridge) cannot represent.")
    c = _scalar(cph.penalizer, "lifelines' penalizer")
    if c == 0:
        return 0.0
    # alpha_j = n c s_j^2 (lifelines standardizes by the sample std): one alpha
    # only when the columns' standard deviations are equal
    s2 = X.std(axis=0, ddof=1).to_numpy() ** 2
    if not np.allclose(s2, s2[0], rtol=1e-10):
        raise ValueError("lifelines' penalizer acts on standardized columns, i.e. a ridge "
                         "alpha_j = n * penalizer * std_j^2 that differs between these "
                         "columns; CoxPHInfluence has one alpha. Standardize the columns "
                         "(then alpha = n * penalizer) or fit without a penalizer.")
    return len(X) * c * s2[0]


def _lifelines_design(cph, df):
    names = list(cph.params_.index)
    if getattr(cph, "formula", None):
        X = cph.regressors.transform_df(df)["beta_"]
        return X[names]
    absent = [c for c in names if c not in df.columns]
    if absent:
        raise ValueError(f"column(s) {', '.join(map(str, absent))} of the lifelines model are "
                         "not in df: pass the DataFrame it was fitted on.")
    return df[names]


class FittedElsewhereMixin:
    """``from_lifelines`` and ``from_sksurv`` constructors."""

    @classmethod
    def from_lifelines(cls, cph, df, *, tol=1e-9, max_iter=100):
        """The skvif model of a fitted ``lifelines.CoxPHFitter`` and its training data.

        Parameters
        ----------
        cph : lifelines.CoxPHFitter
            Fitted (Efron ties, the only ones lifelines has). Its strata,
            ``weights_col``, ``entry_col`` and formula are used; a
            ``penalizer`` maps to ``alpha = n * penalizer * s**2`` when every
            column has the same standard deviation ``s`` (otherwise, and for
            an l1 penalty, the model is refused).
        df : pandas.DataFrame
            The DataFrame ``cph`` was fitted on.
        tol : float, default=1e-9
        max_iter : int, default=100
            As :class:`CoxPHInfluence`.

        Returns
        -------
        model : CoxPHInfluence
            Fitted on the same data; its coefficients equal ``cph.params_``
            (checked to 1e-6, relative to the largest; lifelines' default
            stopping rule can land farther: refit it with
            ``fit_options={"precision": 1e-16}``).
        """
        if not hasattr(cph, "params_") or not hasattr(cph, "duration_col"):
            raise TypeError(f"cph must be a fitted lifelines CoxPHFitter, got "
                            f"{type(cph).__name__}.")
        if getattr(cph, "baseline_estimation_method", "breslow") != "breslow":
            raise ValueError("only lifelines' semi-parametric Cox model "
                             "(baseline_estimation_method='breslow') maps to CoxPHInfluence.")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be the pandas DataFrame cph was fitted on, got "
                            f"{type(df).__name__}.")
        X = _lifelines_design(cph, df)
        strata = None
        if cph.strata:
            columns = [cph.strata] if isinstance(cph.strata, str) else list(cph.strata)
            parts = df[columns].astype(str)
            strata = parts.iloc[:, 0] if len(columns) == 1 else parts.agg(", ".join, axis=1)
        column = (lambda name: None if name is None else df[name])
        model = cls(ties="efron", alpha=_lifelines_penalty(cph, X), tol=tol, max_iter=max_iter)
        model.fit(X, df[[cph.duration_col, cph.event_col]], column(cph.weights_col),
                  strata=strata, entry=column(cph.entry_col))
        return _check_agreement(
            model, cph.params_.to_numpy(), "lifelines",
            "refit it with fit_options={'precision': 1e-16, 'r_precision': 1e-18} (lifelines "
            "stops early by default), and with non-integer weights on tied deaths note that "
            "lifelines' Efron correction ignores the weights.")

    @classmethod
    def from_sksurv(cls, est, X, y, *, tol=1e-9, max_iter=100):
        """The skvif model of a fitted ``sksurv.linear_model.CoxPHSurvivalAnalysis``.

        Parameters
        ----------
        est : sksurv.linear_model.CoxPHSurvivalAnalysis
            Fitted. ``ties`` is kept (scikit-survival's default is
            ``"breslow"``; R's and lifelines' is ``"efron"``); its ``alpha``
            is the same ridge as :class:`CoxPHInfluence`'s (scikit-survival
            minimizes the objective divided by ``n``); an ``alpha`` that
            differs between columns is refused.
        X : array-like of shape (n_samples, n_features)
            The data ``est`` was fitted on.
        y : structured array
            Its outcomes (event, time).
        tol : float, default=1e-9
        max_iter : int, default=100
            As :class:`CoxPHInfluence`.

        Returns
        -------
        model : CoxPHInfluence
            Fitted on the same data; its coefficients equal ``est.coef_``
            (checked to 1e-6, relative to the largest).
        """
        if not hasattr(est, "coef_") or not hasattr(est, "ties"):
            raise TypeError(f"est must be a fitted sksurv CoxPHSurvivalAnalysis, got "
                            f"{type(est).__name__}.")
        model = cls(ties=est.ties, alpha=_scalar(est.alpha, "scikit-survival's alpha"),
                    tol=tol, max_iter=max_iter).fit(X, y)
        return _check_agreement(
            model, est.coef_, "scikit-survival",
            "it probably stopped early: refit it with a smaller tol or a larger n_iter.")
