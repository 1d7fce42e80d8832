"""Shipped weights: the package's default QM9 generator and loading any exported or training checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .model import MoleculeDiffusion, MoleculeDiffusionConfig

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_QM9 = "qm9_egnn"


def pretrained_path(name: str = DEFAULT_QM9) -> Path:
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if not path.exists():
        shipped = sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped weights named {name!r}; available: {shipped or 'none'}")
    return path


def _model_config_from(path: Path) -> dict:
    """The molecule-model config stored with the weights (safetensors metadata or a checkpoint's state)."""
    if path.is_dir():
        from ..training.checkpoint import find_checkpoint, read_state

        state = read_state(find_checkpoint(path))
        cfg = state.get("model_config") or state.get("config", {}).get("model")
        if cfg is None:
            raise ValueError(f"checkpoint {path} does not record a molecule-model config")
        return cfg
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    if "model_config" not in meta:
        raise ValueError(f"{path} has no 'model_config' metadata: it is not a molediff molecule model")
    return json.loads(meta["model_config"])


def load_model(checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> MoleculeDiffusion:
    """Build a ``MoleculeDiffusion`` from shipped weights (default), an exported ``.safetensors`` file or a
    training checkpoint directory (its EMA weights)."""
    from ..training.checkpoint import load_weights
    from ..utils import check_device

    check_device(device)
    path = pretrained_path() if checkpoint is None else Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    model = MoleculeDiffusion(MoleculeDiffusionConfig.from_dict(_model_config_from(path)))
    load_weights(path, model, use_ema=True)
    return model.to(device).eval()
