"""Survival models with influence diagnostics."""

from ._coxph import CoxPHInfluence, check_survival_y
from ._formula import coxph
from ._neural import NeuralCoxPHInfluence, mlp_risk, mlp_risk_function

__all__ = ["CoxPHInfluence", "NeuralCoxPHInfluence", "check_survival_y", "coxph", "mlp_risk",
           "mlp_risk_function"]
