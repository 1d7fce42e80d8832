"""Graph-conditioned conformer generation: the atoms and their graph are given, only coordinates diffuse.

``generate_conformers`` (``pipeline``, with ``ConformerOptions`` and ``Refiner``) is the pipeline (ETKDGv3,
MMFF94, stereo check, diverse selection, refinement by a trained model and restrained minimisation), built from
``stereo``, ``selection``, ``forcefield`` and ``io`` (inputs and SD records); ``conformers_for_library``
(``batch``) runs it over a library in processes or on a Dask cluster. ``ConformerDiffusion``
(``model``) is the graph-conditioned model, ``graph`` its RDKit node and edge features, ``training`` its
``molediff train`` task, ``refine_conformers`` (``refine``) the SDEdit refinement of seed conformers,
``score_conformers`` (``scoring``) the model's ranking of conformers and ``benchmark`` the held-out CCD
benchmark list. Names are imported on first use, so that the model-free
pipeline and ``molediff conformers`` without a refiner do not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ConformerDiffusion": ".model",
    "ConformerDiffusionConfig": ".model",
    "generate_conformers": ".pipeline",
    "ConformerOptions": ".pipeline",
    "Refiner": ".pipeline",
    "conformers_for_library": ".batch",
    "RefinerSpec": ".batch",
    "mol_graph": ".graph",
    "molecule_to_rdkit": ".graph",
    "refine_conformers": ".refine",
    "sample_conformers": ".refine",
    "load_refiner": ".refine",
    "time_for_sigma": ".refine",
    "score_conformers": ".scoring",
    "ccd_benchmark_ids": ".benchmark",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
