"""molediff: generative diffusion for 3D chemistry.

One domain-agnostic diffusion core (``molediff.diffusion``) serves molecules, proteins and images.
"""

__version__ = "0.1.0"
