"""Listwise learning to rank with influence: which items and queries drive a ranker."""

from ._estimator import ListwiseRankerInfluence

__all__ = ["ListwiseRankerInfluence"]
