"""molediff: generative diffusion for 3D chemistry.

One domain-agnostic diffusion core (``molediff.diffusion``) serves molecules, proteins and images.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use so that `import molediff` (and the CLI's help) stay fast: the pipeline loads RDKit.
    if name == "generate_conformers":
        from .conformers.pipeline import generate_conformers

        return generate_conformers
    raise AttributeError(f"module 'molediff' has no attribute {name!r}")
