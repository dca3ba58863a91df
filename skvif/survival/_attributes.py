"""The fitted attributes lifelines and R users look for, computed lazily from the fit.

``variance_matrix_`` is the inverse of the full-data Hessian from
``CoxPHInfluence._hessian()`` (the one place the Hessian is formed); everything
else is derived from it, from ``coef_`` or from the training data. Values are
cached per fit (the cache is keyed on the ``coef_`` array, which every fit
replaces).
"""

import numpy as np
import pandas as pd
import scipy.linalg
from lifelines.statistics import StatisticalResult
from lifelines.utils import concordance_index
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from .._base import check_identifiable, feature_names
from ._objective import negative_log_partial_likelihood

__all__ = ["LifelinesAttributesMixin", "summary_header"]


def summary_header(model):
    """The lines R and lifelines print above the coefficients: n, events, fit statistics."""
    n = model._X.shape[0]
    events = int(model._event.sum())
    dropped = len(getattr(model, "dropped_rows_", ()))
    missing = f"; {dropped} rows dropped for missing values" if dropped else ""
    test = model.log_likelihood_ratio_test()
    return [
        f"n = {n}, events = {events}, censored = {n - events}{missing}",
        f"concordance = {model.concordance_index_:.3f}, "
        f"log-likelihood = {model.log_likelihood_:.3f}",
        f"likelihood ratio test = {test.test_statistic:.2f} on {test.degrees_freedom} df, "
        f"p = {test.p_value:.3g}",
    ]


class LifelinesAttributesMixin:
    """``hazard_ratios_``, ``standard_errors_``, ... named as lifelines names them."""

    def _cache(self):
        check_is_fitted(self)
        cache = self.__dict__.get("_lifelines_cache")
        if cache is None or cache[0] is not self.coef_:
            cache = (self.coef_, {})
            self.__dict__["_lifelines_cache"] = cache
        return cache[1]

    @property
    def params_(self):
        """pandas.Series: ``coef_`` indexed by feature name (lifelines' ``params_``)."""
        check_is_fitted(self)
        return pd.Series(self.coef_, index=feature_names(self).rename("covariate"),
                         name="coef")

    @property
    def hazard_ratios_(self):
        """pandas.Series: ``exp(coef_)``, indexed by feature name."""
        return np.exp(self.params_).rename("exp(coef)")

    @property
    def variance_matrix_(self):
        """pandas.DataFrame: the inverse Hessian of the objective at ``coef_`` (R's ``fit$var``)."""
        cache = self._cache()
        if "variance" not in cache:
            check_identifiable(self, 0.0)
            H = self._hessian()
            try:
                factor = scipy.linalg.cho_factor(H)
            except np.linalg.LinAlgError:
                raise ValueError("the Hessian of the objective at coef_ is not positive "
                                 "definite (a monotone likelihood or an ill-conditioned "
                                 "design): no variance matrix. Set a ridge penalty "
                                 "alpha > 0.") from None
            names = feature_names(self).rename("covariate")
            cache["variance"] = pd.DataFrame(
                scipy.linalg.cho_solve(factor, np.eye(H.shape[0])), index=names, columns=names)
        return cache["variance"].copy()

    @property
    def standard_errors_(self):
        """pandas.Series: square roots of the diagonal of ``variance_matrix_``."""
        return pd.Series(np.sqrt(np.diag(self.variance_matrix_)),
                         index=feature_names(self).rename("covariate"), name="se(coef)")

    @property
    def confidence_intervals_(self):
        """pandas.DataFrame: 95% Wald intervals of the coefficients (lifelines' columns)."""
        q = stats.norm.ppf(0.975)
        se, coef = self.standard_errors_, self.params_
        return pd.DataFrame({"95% lower-bound": coef - q * se, "95% upper-bound": coef + q * se})

    @property
    def concordance_index_(self):
        """float: Harrell's concordance of the training predictions (as lifelines)."""
        cache = self._cache()
        if "concordance" not in cache:
            cache["concordance"] = float(concordance_index(
                self._time, -(self._X @ self.coef_), self._event))
        return cache["concordance"]

    def log_likelihood_ratio_test(self):
        """Likelihood-ratio test of all coefficients being zero (penalty excluded).

        Returns
        -------
        result : lifelines.statistics.StatisticalResult
            ``test_statistic`` ``2 (l(coef_) - l(0))``, ``p_value`` from the
            chi-squared distribution with ``degrees_freedom = n_features``.
        """
        check_is_fitted(self)
        null = -float(negative_log_partial_likelihood(
            np.zeros_like(self.coef_), self._case_weights, self._X, self._risk_sets,
            self.ties))
        statistic = 2.0 * (self.log_likelihood_ - null)
        df = self.coef_.size
        return StatisticalResult(stats.chi2.sf(statistic, df), statistic,
                                 name="log-likelihood ratio test",
                                 test_name="log-likelihood ratio test",
                                 null_distribution="chi squared", degrees_freedom=df)

    def print_summary(self, decimals=4, file=None):
        """Print the header (n, events, concordance, log-likelihood, LR test) and ``summary()``.

        Parameters
        ----------
        decimals : int, default=4
        file : file-like, default=None
            Where to print (``sys.stdout`` when ``None``).
        """
        lines = [f"<skvif.CoxPHInfluence: ties={self.ties}, alpha={self.alpha:g}>",
                 *summary_header(self), "",
                 self.summary().round(decimals).to_string()]
        print("\n".join(lines), file=file)
