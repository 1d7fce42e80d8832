"""Image metrics: bits/dim of the variational bound on held-out images."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..utils import progress
from .model import ImageDiffusion, to_model_range

__all__ = ["bits_per_dim_on"]


@torch.no_grad()
def bits_per_dim_on(model: ImageDiffusion, images: np.ndarray | torch.Tensor, full_chain: bool = True,
                    batch_size: int = 100, seed: int = 0, show_progress: bool = False) -> dict[str, float]:
    """The bound in bits/dim on uint8 images ``[N, C, H, W]`` with the discretized 8-bit decoder.

    ``full_chain`` sums all T diffusion terms (T network calls per image; see ``ImageDiffusion.nll``), else
    the one-draw estimate. Returns the mean bits/dim, its standard error over images, the mean of each term
    in bits/dim and the number of images. Noise comes from one generator seeded with ``seed``.
    """
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() != 4 or not len(images):
        raise ValueError(f"need uint8 images [N, C, H, W] with N >= 1, got {images.dtype} {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    param = next(model.parameters())
    g = torch.Generator(device=param.device).manual_seed(seed)
    rows: dict[str, list[torch.Tensor]] = {}
    bar = progress(total=len(images), desc="bits/dim", unit="img", disable=None if show_progress else True)
    try:
        for start in range(0, len(images), batch_size):
            x = to_model_range(images[start:start + batch_size].to(param.device)).to(param.dtype)
            terms = model.nll(x, full_chain=full_chain, generator=g, show_progress=show_progress)
            dof = model.space.dof(x) * math.log(2.0)
            for k in ("prior", "diffusion", "decoder"):
                rows.setdefault(k, []).append((terms[k] / dof).double().cpu())
            rows.setdefault("bits_per_dim", []).append(terms["bits_per_dim"].double().cpu())
            bar.update(len(x))
    finally:
        bar.close()
    bpd = torch.cat(rows["bits_per_dim"])
    sem = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
    return {"bits_per_dim": float(bpd.mean()), "sem": sem, "n": len(bpd),
            **{f"{k}_bits_per_dim": float(torch.cat(rows[k]).mean()) for k in ("prior", "diffusion", "decoder")}}
