"""The de novo molecule model shipped with molediff, and loading any molecule-model weights."""

from __future__ import annotations

import os

import torch

from ..training.weights import load_model as load_weights_into
from ..training.weights import pretrained_path
from .model import MoleculeDiffusion

DEFAULT_QM9 = "qm9_egnn"
"""The default model of ``molediff generate`` (card: ``molediff/pretrained/qm9_egnn.md``)."""


def load_model(checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> MoleculeDiffusion:
    """A ``MoleculeDiffusion`` from the shipped QM9 weights (default), an exported ``.safetensors`` file or a
    training checkpoint directory (its EMA weights), in eval mode on ``device``."""
    return load_weights_into(MoleculeDiffusion, pretrained_path(DEFAULT_QM9) if checkpoint is None else checkpoint,
                             device)
