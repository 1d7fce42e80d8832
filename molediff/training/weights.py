"""Weights → model, for every domain: shipped weights, exported ``.safetensors`` files and training checkpoints;
and the exported weights file itself.

One door: :func:`load_model` builds a model from a shipped NAME or a path, for every command and the Python API.
A model class that can be rebuilt from stored weights has a ``config_class`` attribute whose ``from_dict`` reads
the config saved beside the weights (``model_config`` metadata of an exported file, or the ``state.json`` of a
checkpoint). :func:`read_weights` reads that stored metadata once; :func:`load_weights` loads into an existing
model. The shipped files themselves are found by ``molediff.utils.pretrained_path``, which imports no torch.
Training checkpoints (save, load, resume) are ``checkpoint.py``'s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..utils import PRETRAINED_DIR, atomic_path, check_device, pretrained_path
from .checkpoint import (
    FORMAT_VERSION,
    cast_like,
    check_model_config,
    check_tensors,
    find_checkpoint,
    load_safetensors,
    read_state,
)

__all__ = ["PRETRAINED_DIR", "StoredWeights", "export_metadata", "export_weights", "load_model", "load_weights",
           "pretrained_path", "read_weights", "weights_path", "write_weights"]


# ------------------------------------------------------------------------------------------ finding weights
def weights_path(name_or_path: str | os.PathLike) -> Path:
    """Where the weights ``name_or_path`` are: an existing file or directory as it is; else a bare NAME (no folder,
    no dot) is the shipped ``NAME.safetensors`` (``pretrained_path``); else the path as given (loading it then
    says it does not exist).

    FileNotFoundError for a bare name that is neither a file or directory nor shipped, listing what is shipped.
    """
    path = Path(name_or_path)
    if path.exists() or not (isinstance(name_or_path, str) and path.name == name_or_path and "." not in path.name):
        return path
    try:
        return pretrained_path(name_or_path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"weights {name_or_path} do not exist: no such file or run directory, and {e}") \
            from None


@dataclass(frozen=True)
class StoredWeights:
    """What a weights file or checkpoint holds besides its tensors, read once (``read_weights``).

    Attributes:
        path: the exported file or the checkpoint directory found.
        tensors_file: the safetensors file to load (a checkpoint's ``ema.safetensors`` or ``model.safetensors``).
        label: ``"weights PATH"`` or ``"checkpoint DIR"``, for messages.
        model_class: the model class name stored with the weights (None when none is).
        model_config: the model's constructor config (None when none is stored).
        metadata: the exported file's safetensors metadata (strings), or the checkpoint's state.json contents.
    """

    path: Path
    tensors_file: Path
    label: str
    model_class: str | None
    model_config: dict | None
    metadata: dict

    def config(self) -> dict:
        """``model_config``; ValueError when the weights do not record it (they are not a molediff model's)."""
        if self.model_config is None:
            if self.path.is_dir():
                raise ValueError(f"checkpoint {self.path} does not record its model config")
            raise ValueError(f"{self.path} has no 'model_config' metadata: it is not a molediff model")
        return self.model_config


def read_weights(name_or_path: str | os.PathLike, use_ema: bool = True) -> StoredWeights:
    """The stored metadata of the weights ``name_or_path`` (``weights_path``: a shipped NAME, an exported
    ``.safetensors`` file, or a run directory, checkpoints root or one step directory: its newest checkpoint, whose
    EMA weights load unless ``use_ema=False``), read once.

    FileNotFoundError for missing weights; ValueError for a file that is not a readable safetensors file or an
    unreadable checkpoint.
    """
    path = weights_path(name_or_path)
    if path.is_dir():
        ckpt = find_checkpoint(path)
        state = read_state(ckpt)
        tensors_file = ckpt / "ema.safetensors"
        if not (use_ema and tensors_file.is_file()):
            tensors_file = ckpt / "model.safetensors"
        model_config = state.get("model_config") or (state.get("config") or {}).get("model")
        return StoredWeights(path, tensors_file, f"checkpoint {ckpt}", state.get("model_class"), model_config, state)
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} do not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    model_config = json.loads(meta["model_config"]) if meta.get("model_config") else None
    return StoredWeights(path, path, f"weights {path}", meta.get("model_class") or None, model_config, meta)


# ------------------------------------------------------------------------------------------ loading
def load_model(model_class: type[nn.Module], name_or_path: str | os.PathLike | StoredWeights,
               device: str | torch.device = "cpu", use_ema: bool = True) -> nn.Module:
    """``model_class`` built from the config stored with the weights ``name_or_path`` (a shipped NAME such as
    ``"qm9_egnn"``, an exported ``.safetensors`` file, a training run or checkpoint directory, or what
    ``read_weights`` returned) and loaded with them (a checkpoint's EMA weights unless ``use_ema=False``); returns
    the model on ``device`` in eval mode. The one loader of every command and of the Python API.

    Low-precision files (bf16) load into float32. ValueError when the weights belong to another model class,
    their config is not valid for ``model_class``, or a tensor does not fit; FileNotFoundError for missing weights
    (for an unknown NAME, listing the shipped ones); ValueError for a device this torch cannot use.
    """
    check_device(device)
    stored = name_or_path if isinstance(name_or_path, StoredWeights) else read_weights(name_or_path, use_ema)
    if stored.model_class and stored.model_class != model_class.__name__:
        raise ValueError(f"{stored.path} holds a {stored.model_class} model, not a {model_class.__name__}")
    model = model_class(model_class.config_class.from_dict(stored.config()))
    # The model was built from the stored config itself, so only names and shapes remain to check.
    _load_tensors(stored, model, strict=True)
    return model.to(device).eval()


def load_weights(path: str | os.PathLike, model: nn.Module, use_ema: bool = True, strict: bool = True,
                 check_config: bool = True) -> dict:
    """Inference loading into an existing ``model`` from an exported ``.safetensors`` file or a checkpoint (its
    EMA weights unless ``use_ema=False``); fp16/bf16 files are cast to the model's dtype. Returns the stored
    metadata (``StoredWeights.metadata``).

    ValueError (a warning when not ``strict``) when the stored model class or config differs from ``model``'s
    (``check_config=False`` skips that comparison); ValueError when tensor names (``strict``) or shapes do not fit.
    """
    stored = read_weights(path, use_ema)
    if check_config:
        check_model_config(stored.label, stored.model_class, stored.model_config, model, strict)
    _load_tensors(stored, model, strict)
    return stored.metadata


def _load_tensors(stored: StoredWeights, model: nn.Module, strict: bool) -> None:
    tensors = load_safetensors(stored.tensors_file)
    check_tensors(stored.label, tensors, model, strict)
    model.load_state_dict(cast_like(tensors, model), strict=strict)


# ------------------------------------------------------------------------------------------ exported files
def export_weights(path: str | os.PathLike, out_path: str | os.PathLike,
                   dtype: torch.dtype | None = torch.bfloat16, use_ema: bool = True) -> Path:
    """Write a checkpoint's EMA weights (raw weights without an EMA) as one compact safetensors file, floating
    tensors cast to ``dtype`` (None keeps them), with the model class and config in its metadata."""
    stored = read_weights(find_checkpoint(path), use_ema)
    tensors = load_safetensors(stored.tensors_file)
    meta = export_metadata(stored.metadata, ema=stored.tensors_file.name == "ema.safetensors")
    return write_weights(tensors, out_path, meta, dtype)


def export_metadata(state: dict, ema: bool) -> dict[str, str]:
    """The safetensors metadata of an exported weights file, from a checkpoint's state.json contents."""
    return {
        "format": "molediff-weights",
        "format_version": str(FORMAT_VERSION),
        "model_class": state.get("model_class") or "",
        "model_config": json.dumps(state.get("model_config")),
        "model_config_hash": state.get("model_config_hash") or "",
        "step": str(state.get("step")),
        "ema": str(ema).lower(),
        "config": json.dumps(state.get("config")),
    }


def write_weights(tensors: dict[str, Tensor], out_path: str | os.PathLike, meta: dict[str, str],
                  dtype: torch.dtype | None = torch.bfloat16) -> Path:
    """Write ``tensors`` (floating ones cast to ``dtype``; None keeps them) atomically as one safetensors file."""
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
    return out_path
