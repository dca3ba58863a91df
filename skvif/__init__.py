"""skvif: versatile influence functions for non-decomposable losses."""

from ._engine import vif
from .survival import CoxPHInfluence

__version__ = "0.1.0"
__all__ = ["vif", "CoxPHInfluence"]
