"""The CIFAR-10 training task for the shared training engine (``molediff image train CONFIG``).

A config's ``model`` section is an :class:`~molediff.images.model.ImageDiffusionConfig`, its ``data`` section an
:class:`ImageDataConfig`. Batches are uint8 images ``[B, 3, 32, 32]``; the order and the horizontal flips are
functions of ``(seed, epoch)`` only, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..utils import build_config
from .cifar import ImageSet, hflip, load_cifar10
from .metrics import fixed_subset
from .model import ImageDiffusion, ImageDiffusionConfig, to_model_range

__all__ = ["ImageDataConfig", "ImageTask", "build_task"]


@dataclass(frozen=True)
class ImageDataConfig:
    """The ``data`` section of an image config.

    Attributes:
        path: ``cifar-10-python.tar.gz``, the ``cifar-10-batches-py`` folder, or a packed-JPEG ``.npz``.
        split: ``train`` or ``test``.
        hflip: mirror each image left–right with probability ½ (DDPM's only augmentation).
        limit: train on the first ``limit`` images only (0: all).
        eval_images: at each evaluation (``eval_every``), the bound's one-draw estimate of bits/dim on
            ``eval_images`` test images (a fixed random subset, ``metrics.fixed_subset`` seed 0) with fixed noise
            (0: no evaluation).
    """

    path: str
    split: str = "train"
    hflip: bool = True
    limit: int = 0
    eval_images: int = 0

    def __post_init__(self):
        if self.split not in ("train", "test"):
            raise ValueError(f"data.split must be train or test, got {self.split!r}")
        if self.limit < 0 or self.eval_images < 0:
            raise ValueError("data.limit and data.eval_images must be >= 0")


@dataclass
class ImageTask:
    """Implements the trainer's task protocol for ``ImageDiffusion``."""

    model: ImageDiffusion
    dataset: ImageSet
    hflip: bool = True
    eval_set: ImageSet | None = None

    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        loss = model(to_model_range(batch.to(device))).mean()
        return loss, {"loss": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator[Tensor]:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must divide evenly over {world_size} processes")
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.dataset))
        flips = rng.random(len(self.dataset)) < 0.5 if self.hflip else np.zeros(len(self.dataset), dtype=bool)
        per_rank = batch_size // world_size
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start + rank * per_rank: start + (rank + 1) * per_rank]
            yield torch.from_numpy(hflip(self.dataset.images[idx], flips[idx]))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        if self.eval_set is None or not len(self.eval_set):
            return {}
        device = next(model.parameters()).device
        g = torch.Generator(device=device).manual_seed(0)
        bpd = []
        for start in range(0, len(self.eval_set), 64):
            x = to_model_range(torch.from_numpy(self.eval_set.images[start:start + 64]).to(device))
            bpd.append(model.nll(x, full_chain=False, generator=g)["bits_per_dim"])
        return {"eval_bits_per_dim": float(torch.cat(bpd).mean())}


def build_task(config) -> ImageTask:
    """``molediff image train`` entry: checks the ``model`` and ``data`` sections, then reads the images."""
    model_cfg = ImageDiffusionConfig.from_dict(config.model)
    data = build_config(ImageDataConfig, config.data, "data.")
    dataset = load_cifar10(data.path, data.split)
    if data.limit:
        dataset = dataset.subset(slice(0, data.limit))
    u = model_cfg.unet
    if tuple(dataset.images.shape[1:]) != (u.in_channels, u.image_size, u.image_size):
        raise ValueError(f"{data.path} holds images of shape {tuple(dataset.images.shape[1:])}, the model expects "
                         f"({u.in_channels}, {u.image_size}, {u.image_size})")
    eval_set = None
    if data.eval_images:
        test = load_cifar10(data.path, "test")
        # a fixed random subset: a file sorted by class (the packed JPEG copy is) starts with one class only;
        # a test split smaller than eval_images is used whole
        eval_set = test.subset(fixed_subset(len(test), min(data.eval_images, len(test)), seed=0))
    return ImageTask(ImageDiffusion(model_cfg), dataset, data.hflip, eval_set)
