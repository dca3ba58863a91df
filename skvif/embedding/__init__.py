"""Influence of nodes and edges on a skip-gram (DeepWalk-style) node embedding."""

from ._estimator import NodeEmbeddingInfluence

__all__ = ["NodeEmbeddingInfluence"]
