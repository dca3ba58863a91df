"""skvif: versatile influence functions for non-decomposable losses."""

from ._engine import vif
from ._robustness import Robustness, RobustnessReport, robustness
from .embedding import NodeEmbeddingInfluence
from .ranking import LabelRankerInfluence, ListwiseRankerInfluence
from .survival import CoxPHInfluence, NeuralCoxPHInfluence

__version__ = "0.1.0"
__all__ = ["vif", "robustness", "Robustness", "RobustnessReport", "CoxPHInfluence",
           "NeuralCoxPHInfluence", "ListwiseRankerInfluence", "LabelRankerInfluence",
           "NodeEmbeddingInfluence"]
