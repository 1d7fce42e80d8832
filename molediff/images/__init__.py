"""Images: a DDPM-style U-Net on the shared diffusion core, CIFAR-10 readers and the image training task.

The image domain checks the core where the literature is richest: the same schedules, ε-objective, bound and
samplers as the molecule models, in a plain Euclidean space. ``molediff image`` is its command line. Sample
quality is FD-CIFARNet: the Fréchet distance in the features of CIFARNet, a small CIFAR-10 classifier shipped
with molediff (``classifier.py``, ``metrics.py``); it is not comparable with published FID values.
"""

from .cifar import ImageSet, load_cifar10, read_cifar_batches, read_cifar_jpeg
from .classifier import CIFARNet, CIFARNetConfig, cifarnet_features, load_cifarnet, train_cifarnet
from .metrics import (
    bits_per_dim_on,
    fd_cifarnet,
    fd_cifarnet_report,
    frechet_distance,
    frechet_distance_from_moments,
    gaussian_baseline_images,
)
from .model import ImageDiffusion, ImageDiffusionConfig, to_model_range, to_uint8
from .unet import UNET_PRESETS, UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "UNET_PRESETS", "ImageDiffusion", "ImageDiffusionConfig", "to_model_range",
           "to_uint8", "ImageSet", "load_cifar10", "read_cifar_batches", "read_cifar_jpeg", "CIFARNet",
           "CIFARNetConfig", "cifarnet_features", "load_cifarnet", "train_cifarnet", "bits_per_dim_on",
           "frechet_distance", "frechet_distance_from_moments", "gaussian_baseline_images", "fd_cifarnet",
           "fd_cifarnet_report"]
