"""CIFARNet: a small CIFAR-10 classifier, trained on CPU and shipped, whose penultimate layer is the feature space
of FD-CIFARNet (``molediff.images.metrics``).

The Fréchet Inception Distance (Heusel et al. 2017) needs Inception-v3 weights, which molediff cannot download;
FD-CIFARNet computes the same Fréchet distance in the features of this network instead. Its numbers are
comparable with each other (same weights, same N), never with FID values in papers.

The network is a narrow ResNet-9 in the style of Page's DAWNBench entry: conv–BN–ReLU blocks of widths
``(w0, w1, w2, w3)`` (default 32, 64, 128, 256), max pooling after the 2nd, 4th and 5th convolutions (32 → 16 →
8 → 4 pixels), residual pairs of convolutions at 16 × 16 and 4 × 4, a global max pool to the ``w3``-dimensional
features, and a linear head to 10 logits. Images go in as uint8 ``[B, 3, 32, 32]`` (or floats in [0, 1]); the
fixed CIFAR-10 channel mean and standard deviation are applied inside the model.

``molediff/pretrained/cifarnet.safetensors`` (its card: ``cifarnet.md``) holds the shipped weights with the
config in the file's metadata; ``scripts/train_cifar_classifier.py`` trains them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..utils import build_config, progress, use_bf16

__all__ = ["CIFARNetConfig", "CIFARNet", "SHIPPED_CIFARNET", "CIFAR10_MEAN", "CIFAR10_STD", "load_cifarnet",
           "save_cifarnet", "cifarnet_features", "cifarnet_accuracy", "augment_batch", "train_cifarnet"]

SHIPPED_CIFARNET = "cifarnet"
"""Name of the shipped weights (``molediff/pretrained/cifarnet.safetensors``)."""
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
"""Per-channel mean and standard deviation of the CIFAR-10 training pixels, in [0, 1] units."""


@dataclass(frozen=True)
class CIFARNetConfig:
    """A CIFARNet; stored as JSON in the ``model_config`` metadata of its weights file.

    Attributes:
        widths: channels of the four stages ``(w0, w1, w2, w3)``; the features have ``w3`` dimensions.
        num_classes: outputs of the linear head.
        head_scale: the logits are multiplied by this constant (0.125 as in Page's ResNet-9), which lets the
            head train at the body's learning rate.
    """

    widths: tuple[int, ...] = (32, 64, 128, 256)
    num_classes: int = 10
    head_scale: float = 0.125

    def __post_init__(self):
        if len(self.widths) != 4 or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be four positive channel counts, got {self.widths}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not self.head_scale > 0:
            raise ValueError(f"head_scale must be positive, got {self.head_scale}")

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> CIFARNetConfig:
        """From stored metadata; ValueError naming unknown keys or bad values."""
        return build_config(cls, d, "model.")


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class CIFARNet(nn.Module):
    """The classifier: ``features(x) → [B, w3]`` (penultimate layer) and ``forward(x) → logits [B, classes]``.

    ``x`` is uint8 ``[B, 3, 32, 32]`` (pixels 0..255) or floating ``[B, 3, 32, 32]`` in [0, 1]; ValueError for
    any other shape. The layers are listed in the module docstring.
    """

    config_class = CIFARNetConfig

    def __init__(self, config: CIFARNetConfig | None = None):
        super().__init__()
        self.config = config = config or CIFARNetConfig()
        w0, w1, w2, w3 = config.widths
        self.body = nn.Sequential(
            _conv_bn(3, w0),
            _conv_bn(w0, w1), nn.MaxPool2d(2),      # 16 × 16
            _Residual(w1),
            _conv_bn(w1, w2), nn.MaxPool2d(2),      # 8 × 8
            _conv_bn(w2, w3), nn.MaxPool2d(2),      # 4 × 4
            _Residual(w3),
        )
        self.head = nn.Linear(w3, config.num_classes)
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, x: Tensor) -> Tensor:
        """uint8 pixels or [0, 1] floats ``[B, 3, 32, 32]`` → standardised floats in the model's dtype."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            raise ValueError(f"CIFARNet takes images [B, 3, 32, 32], got {tuple(x.shape)}")
        dtype = self.mean.dtype
        x = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``[B, w3]`` (global max pool of the last residual stage; ≥ 0)."""
        return torch.amax(self.body(self.normalise(x)), dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x)) * self.config.head_scale


# ---------------------------------------------------------------------------------------- weights files
def save_cifarnet(model: CIFARNet, path: str | os.PathLike, dtype: torch.dtype | None = torch.bfloat16,
                  extra: dict | None = None) -> Path:
    """Write ``model`` as one safetensors file (floating tensors cast to ``dtype``; None keeps them) with its
    class and config in the metadata, as ``molediff.training.weights.load_model`` reads them; ``extra`` is
    stored as JSON under ``training`` (recipe and test accuracy)."""
    from ..training.checkpoint import config_hash
    from ..training.weights import write_weights

    cfg = model.config.to_dict()
    meta = {"format": "molediff-weights", "format_version": "1", "model_class": type(model).__name__,
            "model_config": json.dumps(cfg), "model_config_hash": config_hash(cfg) or "",
            "training": json.dumps(extra or {})}
    tensors = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return write_weights(tensors, path, meta, dtype)


def load_cifarnet(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> CIFARNet:
    """The classifier stored at ``path`` (default: the shipped ``cifarnet.safetensors``), float32, eval mode.

    ValueError with one line when the file is missing, unreadable, corrupt or not a CIFARNet.
    """
    from ..training.weights import load_model
    from ..utils import pretrained_path

    if path is None:
        try:
            path = pretrained_path(SHIPPED_CIFARNET)
        except FileNotFoundError:
            raise ValueError(f"the shipped CIFARNet weights {SHIPPED_CIFARNET}.safetensors are missing from this "
                             f"installation: reinstall molediff or pass the weights file") from None
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CIFARNet weights {path} do not exist")
    try:
        model = load_model(CIFARNet, path, device=device)
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot load CIFARNet weights {path}: {' '.join(str(e).split())}") from None
    return model.float()


# ------------------------------------------------------------------------------------------ evaluation
def _as_uint8_tensor(images) -> Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, 32, 32) or not len(x):
        raise ValueError(f"need images [N, 3, 32, 32] with N >= 1, got {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or floats in [0, 1], got {x.dtype}")
    return x


@torch.no_grad()
def cifarnet_features(model: CIFARNet, images, batch_size: int = 500, show_progress: bool = False) -> np.ndarray:
    """Penultimate-layer features of ``images`` (uint8 ``[N, 3, 32, 32]`` or floats in [0, 1], numpy or torch):
    float64 ``[N, D]`` (D = ``model.config.feature_dim``), computed in float32 in eval mode without gradients.

    The model is put in eval mode (batch-norm running statistics) and left there. ValueError for bad shapes.
    """
    x = _as_uint8_tensor(images)
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in progress(range(0, len(x), batch_size), desc="CIFARNet features",
                          disable=None if show_progress else True):
        out.append(model.features(x[start:start + batch_size].to(device)).double().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def cifarnet_accuracy(model: CIFARNet, images, labels, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on uint8 ``images [N, 3, 32, 32]`` with ``labels [N]``."""
    x = _as_uint8_tensor(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = model(x[start:start + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[start:start + batch_size]).sum())
    return correct / len(x)


# -------------------------------------------------------------------------------------------- training
def augment_batch(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crops after reflection padding by ``pad`` pixels, and left–right flips with probability ½, of uint8
    ``images [B, C, H, W]``; a new array of the same shape. The draws come from ``rng``."""
    b, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    dy = rng.integers(0, 2 * pad + 1, b)
    dx = rng.integers(0, 2 * pad + 1, b)
    flip = rng.random(b) < 0.5
    rows = dy[:, None] + np.arange(h)                                          # [B, H]
    cols = np.where(flip[:, None], dx[:, None] + np.arange(w)[::-1], dx[:, None] + np.arange(w))  # [B, W]
    return padded[np.arange(b)[:, None, None, None], np.arange(images.shape[1])[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _lr_factor(step: int, total: int, warmup: float) -> float:
    """One-cycle (triangular) schedule: linear from 0.1 to 1 over the first ``warmup`` fraction, then linear
    to 0 at ``total``."""
    peak = max(1, round(warmup * total))
    if step < peak:
        return 0.1 + 0.9 * step / peak
    return max(0.0, (total - step) / max(1, total - peak))


def train_cifarnet(train_images: np.ndarray, train_labels: np.ndarray, epochs: float = 7, batch_size: int = 256,
                   lr: float = 0.2, seed: int = 0, *, config: CIFARNetConfig | None = None,
                   weight_decay: float = 5e-4, momentum: float = 0.9, label_smoothing: float = 0.1,
                   warmup: float = 0.25, bf16: bool | None = None, max_steps: int | None = None,
                   show_progress: bool = True, log_every: int = 0) -> tuple[CIFARNet, dict]:
    """Train a CIFARNet from scratch on uint8 ``train_images [N, 3, 32, 32]`` with integer ``train_labels [N]``.

    Recipe: SGD with Nesterov momentum, a one-cycle learning rate (linear warm-up over the first ``warmup``
    fraction of the steps to ``lr``, then linear decay to 0), weight decay on convolution and linear weights
    only, cross-entropy with ``label_smoothing``, random crops (reflection padding 4) and left–right flips.
    ``epochs`` may be fractional (steps = ⌊epochs · N / batch_size⌋, incomplete last batches dropped);
    ``max_steps`` stops earlier without changing the schedule (for timing). ``bf16`` autocasts the forward pass
    to bfloat16 (default None: only where the CPU computes bf16 natively, ``molediff.utils.use_bf16``).
    Deterministic given ``seed`` on one machine and thread count: the initial weights come from
    ``torch.manual_seed(seed)`` (the global generator is restored afterwards), the order and augmentation of epoch
    ``e`` from ``numpy.random.default_rng([seed, e])``.

    Returns the model (eval mode, on CPU) and a history dict: ``loss`` (per-step training loss), ``steps``,
    ``epochs``, ``seconds`` (wall) and ``cpu_seconds`` (this process's CPU time), ``bf16``.
    """
    images = np.asarray(train_images)
    labels = np.asarray(train_labels).astype(np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
        raise ValueError(f"need uint8 train images [N, 3, 32, 32], got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if batch_size < 1 or batch_size > len(images):
        raise ValueError(f"batch size must lie in 1..{len(images)} (the number of images), got {batch_size}")
    steps_per_epoch = len(images) // batch_size
    total = int(math.floor(epochs * steps_per_epoch))
    if total < 1:
        raise ValueError(f"epochs={epochs} gives no training step with {len(images)} images and batch {batch_size}")
    config = config or CIFARNetConfig()
    if len(labels) and (labels.min() < 0 or labels.max() >= config.num_classes):
        raise ValueError(f"labels must lie in 0..{config.num_classes - 1}")
    bf16_autocast = use_bf16(bf16, "cpu")

    with torch.random.fork_rng(devices=[]):      # seeds the initial weights, leaves the global generator alone
        torch.manual_seed(seed)
        model = CIFARNet(config).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
                          lr=lr, momentum=momentum, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    losses: list[float] = []
    n_steps = total if max_steps is None else min(total, max_steps)
    t0, c0 = time.perf_counter(), time.process_time()
    bar = progress(total=n_steps, desc="CIFARNet", unit="step", disable=None if show_progress else True)
    step = 0
    model.train()
    try:
        epoch = 0
        while step < n_steps:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(images))
            for start in range(0, steps_per_epoch * batch_size, batch_size):
                if step >= n_steps:
                    break
                idx = np.sort(order[start:start + batch_size])
                x = torch.from_numpy(augment_batch(images[idx], rng)).contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(labels[idx])
                for group in opt.param_groups:
                    group["lr"] = lr * _lr_factor(step, total, warmup)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast):
                    logits = model(x)
                loss = criterion(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                if log_every and step % log_every == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.3f}")
            epoch += 1
    finally:
        bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, {"loss": losses, "steps": step, "epochs": step / steps_per_epoch, "bf16": bf16_autocast,
                   "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
