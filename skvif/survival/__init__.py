"""Survival models with influence diagnostics."""

from ._coxph import CoxPHInfluence, check_survival_y
from ._formula import coxph

__all__ = ["CoxPHInfluence", "check_survival_y", "coxph"]
