"""Listwise learning to rank with influence: which items and queries drive a ranker."""

from ._estimator import ListwiseRankerInfluence
from ._label_ranker import LabelRankerInfluence

__all__ = ["ListwiseRankerInfluence", "LabelRankerInfluence"]
