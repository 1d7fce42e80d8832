"""Image grids as PNG files (Pillow), written atomically."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

__all__ = ["image_grid", "save_grid"]


def image_grid(images: np.ndarray | torch.Tensor, nrow: int | None = None, padding: int = 2,
               background: int = 255) -> np.ndarray:
    """Tile uint8 images ``[N, C, H, W]`` (C = 1 or 3) into one ``[rows·(H+p)+p, nrow·(W+p)+p, 3]`` uint8 array,
    ``nrow`` images per row (default: a near-square grid), ``padding`` pixels of ``background`` between them."""
    images = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or not len(images):
        raise ValueError(f"need uint8 images [N, 1 or 3, H, W] with N >= 1, got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    nrow = max(1, min(n, nrow or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), background, np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = np.repeat(img, 3, axis=0).transpose(1, 2, 0) if c == 1 else img.transpose(1, 2, 0)
    return grid


def save_grid(images: np.ndarray | torch.Tensor, path: str | os.PathLike, nrow: int | None = None,
              scale: int = 1) -> None:
    """Write ``image_grid(images, nrow)`` as a PNG at ``path`` (atomically), each pixel ``scale`` × ``scale``."""
    from PIL import Image

    from ..utils import atomic_path

    grid = image_grid(images, nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
