"""Graph-conditioned conformer generation: the atoms and their graph are given, only coordinates diffuse."""

from .model import ConformerDiffusion, ConformerDiffusionConfig

__all__ = ["ConformerDiffusion", "ConformerDiffusionConfig"]
