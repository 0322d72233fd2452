"""Concept steering: a linear map W on CLIP embeddings trained with a preference objective, and the family W_t
whose scalar t sets the strength of the learned change (Afzali et al., ICLR 2025, "controlling alignment strength")."""
from .linear import LinearMapConfig, StrengthFamily, steer, train_linear_map

__all__ = ["LinearMapConfig", "StrengthFamily", "steer", "train_linear_map"]
