"""Survival models with influence diagnostics."""

from ._coxph import CoxPHInfluence, check_survival_y

__all__ = ["CoxPHInfluence", "check_survival_y"]
