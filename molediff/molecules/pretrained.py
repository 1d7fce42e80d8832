"""The de novo molecule model shipped with molediff, and loading any molecule-model weights."""

from __future__ import annotations

import os

import torch

from ..training import weights
from .model import MoleculeDiffusion

DEFAULT_QM9 = "qm9_bonds"
"""The default model of ``molediff generate``: atoms and bonds diffused together (card:
``molediff/pretrained/qm9_bonds.md``). ``qm9_egnn``, the atoms-only model it continues, stays shipped."""


def load_model(checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> MoleculeDiffusion:
    """A ``MoleculeDiffusion`` from the shipped QM9 weights (default), the NAME of other shipped weights, an
    exported ``.safetensors`` file or a training checkpoint directory (its EMA weights), in eval mode on ``device``
    (``molediff.training.weights.load_model``)."""
    return weights.load_model(MoleculeDiffusion, DEFAULT_QM9 if checkpoint is None else checkpoint, device)
