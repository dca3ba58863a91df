"""skvif: versatile influence functions for non-decomposable losses."""

from ._engine import vif
from .embedding import NodeEmbeddingInfluence
from .ranking import LabelRankerInfluence, ListwiseRankerInfluence
from .survival import CoxPHInfluence

__version__ = "0.1.0"
__all__ = ["vif", "CoxPHInfluence", "ListwiseRankerInfluence", "LabelRankerInfluence",
           "NodeEmbeddingInfluence"]
