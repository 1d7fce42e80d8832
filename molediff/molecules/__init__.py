"""De novo molecules on the point-cloud layer: EDM-style joint diffusion of coordinates and atom types."""

from .model import (
    MAX_ATOMS,
    GeneratedMolecules,
    MoleculeDiffusion,
    MoleculeDiffusionConfig,
    count_parameters,
)

__all__ = ["MAX_ATOMS", "GeneratedMolecules", "MoleculeDiffusion", "MoleculeDiffusionConfig", "count_parameters"]
