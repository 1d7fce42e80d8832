"""Weights → model, for every domain: shipped files, exported ``.safetensors`` files and training checkpoints.

A model class that can be rebuilt from stored weights has a ``config_class`` attribute whose ``from_dict``
reads the config saved beside the weights (``model_config`` metadata of an exported file, or the
``state.json`` of a checkpoint). :func:`load_model` is the one way from a file to a ready model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..utils import check_device
from .checkpoint import find_checkpoint, load_weights, read_state

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
"""Weights shipped inside the package, one ``NAME.safetensors`` and one card ``NAME.md`` per model."""

__all__ = ["PRETRAINED_DIR", "load_model", "pretrained_path", "read_model_config", "weights_or_shipped"]


def pretrained_path(name: str) -> Path:
    """The shipped weights file ``NAME.safetensors``; FileNotFoundError listing what is shipped."""
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped weights named {name!r}; available: {shipped or 'none'}")
    return path


def weights_or_shipped(checkpoint: str | os.PathLike | None, name: str, what: str) -> str | os.PathLike:
    """``checkpoint`` if given, else the shipped ``NAME.safetensors``; ValueError (``no WHAT weights are shipped
    in this installation: pass --checkpoint ...``) when neither exists, as a command's one-line error."""
    if checkpoint is not None:
        return checkpoint
    try:
        return pretrained_path(name)
    except FileNotFoundError:
        raise ValueError(f"no {what} weights are shipped in this installation: pass --checkpoint (a training run "
                         f"directory or an exported .safetensors file)") from None


def read_model_config(path: str | os.PathLike) -> tuple[str | None, dict]:
    """``(model class name, model config)`` stored with the weights at ``path``.

    ``path`` is an exported ``.safetensors`` file or a checkpoint (a run directory, a checkpoints root or one
    step directory). ValueError for unreadable files or weights without a stored config.
    """
    path = Path(path)
    if path.is_dir():
        state = read_state(find_checkpoint(path))
        cfg = state.get("model_config") or state.get("config", {}).get("model")
        if cfg is None:
            raise ValueError(f"checkpoint {path} does not record its model config")
        return state.get("model_class"), cfg
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} do not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    if "model_config" not in meta:
        raise ValueError(f"{path} has no 'model_config' metadata: it is not a molediff model")
    return meta.get("model_class") or None, json.loads(meta["model_config"])


def load_model(model_class: type[nn.Module], path: str | os.PathLike, device: str | torch.device = "cpu",
               use_ema: bool = True) -> nn.Module:
    """Build ``model_class`` from the config stored at ``path`` and load its weights (the EMA weights of a
    checkpoint unless ``use_ema=False``); returns the model on ``device`` in eval mode.

    Low-precision files (bf16) load into float32. ValueError when the weights belong to another model class,
    their config is not valid for ``model_class``, or a tensor does not fit; FileNotFoundError for a missing
    path; ValueError for a device this torch cannot use.
    """
    check_device(device)
    stored_class, cfg = read_model_config(path)
    if stored_class and stored_class != model_class.__name__:
        raise ValueError(f"{path} holds a {stored_class} model, not a {model_class.__name__}")
    model = model_class(model_class.config_class.from_dict(cfg))
    # The model was built from the stored config itself, so only names and shapes remain to check.
    load_weights(path, model, use_ema=use_ema, check_config=False)
    return model.to(device).eval()
