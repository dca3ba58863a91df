"""skvif: versatile influence functions for non-decomposable losses."""

from ._engine import InfluenceResults, get_influence, vif
from ._robustness import Robustness, RobustnessReport, robustness
from .embedding import NodeEmbeddingInfluence
from .ranking import LabelRankerInfluence, ListwiseRankerInfluence
from .survival import CoxPHInfluence, NeuralCoxPHInfluence

__version__ = "0.1.0"
__all__ = ["vif", "get_influence", "InfluenceResults", "robustness", "Robustness", "RobustnessReport", "CoxPHInfluence",
           "NeuralCoxPHInfluence", "ListwiseRankerInfluence", "LabelRankerInfluence",
           "NodeEmbeddingInfluence"]
