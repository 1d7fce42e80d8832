"""Images: a DDPM-style U-Net on the shared diffusion core, CIFAR-10 readers and the image training task.

The image domain checks the core where the literature is richest: the same schedules, ε-objective, bound and
samplers as the molecule models, in a plain Euclidean space. ``molediff image`` is its command line.
"""

from .cifar import ImageSet, load_cifar10, read_cifar_batches, read_cifar_jpeg
from .model import ImageDiffusion, ImageDiffusionConfig, to_model_range, to_uint8
from .unet import UNET_PRESETS, UNet, UNetConfig

__all__ = ["UNet", "UNetConfig", "UNET_PRESETS", "ImageDiffusion", "ImageDiffusionConfig", "to_model_range",
           "to_uint8", "ImageSet", "load_cifar10", "read_cifar_batches", "read_cifar_jpeg"]
