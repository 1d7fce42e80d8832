"""Image metrics: bits/dim of the variational bound on held-out images, and FD-CIFARNet.

FD-CIFARNet is the Fréchet distance of Heusel et al. (2017, the FID's formula)

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

between Gaussians fitted to two sets of features, computed in the penultimate layer of CIFARNet
(``molediff.images.classifier``), a small CIFAR-10 classifier shipped with molediff, instead of Inception-v3's
pool3 layer. Its values depend on the classifier and on the number of images N (the estimate is biased upwards
at small N), so they compare models evaluated with the same weights and the same N only, never FID values in
papers. ``fd_cifarnet_report`` gives them with two references at the same N: the floor (two disjoint sets of
real images) and a Gaussian fitted to the pixels of the training images.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..utils import progress
from .model import ImageDiffusion, to_model_range, to_uint8

__all__ = ["bits_per_dim_on", "frechet_distance", "frechet_distance_from_moments", "feature_moments",
           "pixel_moments", "gaussian_baseline_images", "fd_cifarnet", "sample_uint8", "fixed_subset",
           "fd_cifarnet_report"]


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


# ------------------------------------------------------------------------------------------- FD-CIFARNet
def _check_moments(mu: np.ndarray, cov: np.ndarray, which: str) -> None:
    if mu.ndim != 1 or cov.shape != (len(mu), len(mu)):
        raise ValueError(f"{which}: need a mean [D] and a covariance [D, D], got {mu.shape} and {cov.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise ValueError(f"{which}: the mean or covariance holds NaN or infinite values")


def frechet_distance_from_moments(mu1, cov1, mu2, cov2) -> float:
    """The Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), in squared feature units:

        ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁ Σ₂)^½      (Heusel et al. 2017; Dowson & Landau 1982)

    ``mu [D]``, ``cov [D, D]`` (symmetric positive semi-definite), computed in float64. Tr (Σ₁Σ₂)^½ is the sum of
    the square roots of the eigenvalues of the symmetric matrix Σ₁^½ Σ₂ Σ₁^½ (which has the eigenvalues of
    Σ₁Σ₂), both from symmetric eigendecompositions; eigenvalues below zero by rounding are clipped to zero, and
    so is the result. ValueError for mismatched shapes or non-finite values.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    _check_moments(mu1, cov1, "first set")
    _check_moments(mu2, cov2, "second set")
    if len(mu1) != len(mu2):
        raise ValueError(f"the two sets have different dimensions: {len(mu1)} and {len(mu2)}")
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
    lam, vec = np.linalg.eigh(cov1)
    root1 = (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T                  # Σ₁^½
    middle = root1 @ cov2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_root = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_root)
    return max(d, 0.0)


def feature_moments(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divisor N − 1) of ``feats [N, D]``, in float64.
    ValueError for fewer than 2 rows, a shape other than [N, D], or NaN/infinite values."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {f.shape}")
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    if not np.isfinite(f).all():
        raise ValueError("features hold NaN or infinite values")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(feats_a, feats_b) -> float:
    """The Fréchet distance (FID's formula, Heusel et al. 2017) between Gaussians fitted to ``feats_a [N, D]`` and
    ``feats_b [M, D]`` (means and unbiased covariances, float64); see ``frechet_distance_from_moments``.

    Symmetric in its arguments, 0 for identical sets. ValueError for fewer than 2 samples in a set, different
    feature dimensions, or NaN/infinite features.
    """
    fa, fb = np.asarray(feats_a), np.asarray(feats_b)
    if fa.ndim == 2 and fb.ndim == 2 and fa.shape[1] != fb.shape[1]:
        raise ValueError(f"the two sets have different feature dimensions: {fa.shape[1]} and {fb.shape[1]}")
    return frechet_distance_from_moments(*feature_moments(fa), *feature_moments(fb))


def _check_images(images, what: str) -> np.ndarray:
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"{what} must be uint8 images [N, C, H, W], got {x.dtype} {x.shape}")
    return x


def pixel_moments(images, chunk: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[C·H·W]`` and unbiased covariance ``[C·H·W, C·H·W]`` of the pixels (0..255) of uint8 ``images [N, C,
    H, W]``, float64, accumulated over chunks of ``chunk`` images (50,000 CIFAR images need no 1.2 GB copy).
    ValueError for fewer than 2 images."""
    x = _check_images(images, "images")
    if len(x) < 2:
        raise ValueError(f"need at least 2 images to fit a covariance, got {len(x)}")
    flat = x.reshape(len(x), -1)
    mean = flat.mean(0, dtype=np.float64)
    scatter = np.zeros((flat.shape[1], flat.shape[1]))
    for start in range(0, len(flat), chunk):
        c = flat[start:start + chunk].astype(np.float64) - mean
        scatter += c.T @ c
    return mean, scatter / (len(flat) - 1)


def gaussian_baseline_images(train_images, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images ``[n, C, H, W]`` drawn from the Gaussian N(μ, Σ) fitted to the pixels of uint8
    ``train_images [N, C, H, W]`` (mean and full unbiased (C·H·W)² covariance, as ``pixel_moments``), rounded to
    integers and clipped to 0..255: the image issue's baseline "a Gaussian fitted to CIFAR pixel means and
    covariances".

    Samples are μ + L z with z ~ N(0, I) from ``numpy.random.default_rng(seed)`` and any factor L Lᵀ = Σ: the
    centred images / √(N − 1) when N − 1 ≤ C·H·W (Σ is then singular; no D × D matrix is formed), else the
    Cholesky factor of Σ, or V diag(λ₊)^½ from its eigendecomposition when Σ is not numerically positive
    definite. ValueError for n < 1 or fewer than 2 training images.
    """
    x = _check_images(train_images, "train images")
    if n < 1:
        raise ValueError(f"number of images must be at least 1, got {n}")
    if len(x) < 2:
        raise ValueError(f"need at least 2 training images to fit a covariance, got {len(x)}")
    flat = x.reshape(len(x), -1)
    if len(flat) - 1 <= flat.shape[1]:
        mean = flat.mean(0, dtype=np.float64)
        factor = (flat - mean).T / math.sqrt(len(flat) - 1)                      # [D, N]: Σ = factor · factorᵀ
    else:
        mean, cov = pixel_moments(x)
        try:
            factor = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            lam, vec = np.linalg.eigh(cov)
            factor = vec * np.sqrt(np.clip(lam, 0.0, None))
    z = np.random.default_rng(seed).standard_normal((n, factor.shape[1]))
    samples = mean + z @ factor.T
    return np.clip(np.rint(samples), 0, 255).astype(np.uint8).reshape(n, *x.shape[1:])


def fd_cifarnet(images_a, images_b, model=None, batch_size: int = 500) -> float:
    """FD-CIFARNet between two sets of uint8 images ``[N, 3, 32, 32]`` and ``[M, 3, 32, 32]`` (numpy or torch):
    ``frechet_distance`` of their CIFARNet features (``cifarnet_features``). ``model``: a ``CIFARNet`` (default:
    the shipped weights, ``load_cifarnet()``). ValueError for bad shapes or fewer than 2 images in a set."""
    from .classifier import cifarnet_features, load_cifarnet

    model = load_cifarnet() if model is None else model
    return frechet_distance(cifarnet_features(model, images_a, batch_size),
                            cifarnet_features(model, images_b, batch_size))


def sample_uint8(model: ImageDiffusion, n: int, sampler: str = "ddpm", steps: int | None = None, seed: int = 0,
                 batch_size: int = 64, show_progress: bool = False, bf16: bool = False,
                 **sampler_options) -> torch.Tensor:
    """``n`` uint8 images ``[n, C, H, W]`` from ``model.sample``; image i uses seed ``seed + i`` (as ``molediff
    image sample``), so an image does not depend on ``batch_size``. ``bf16`` runs the network under bfloat16
    autocast (``molediff.utils.use_bf16`` decides it for the commands); the sampler's updates stay float32."""
    if n < 1 or batch_size < 1:
        raise ValueError("the number of images and the batch size must be at least 1")
    device_type = next(model.parameters()).device.type
    chunks = []
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(seed, seed + n, batch_size):
            seeds = range(start, min(start + batch_size, seed + n))
            chunks.append(to_uint8(model.sample(len(seeds), sampler, steps, seeds, show_progress=show_progress,
                                                **sampler_options)).cpu())
    return torch.cat(chunks)


def fixed_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """``n`` sorted indices of ``range(n_total)`` drawn without replacement by ``numpy.random.default_rng(seed)``:
    the same images on every run, balanced over classes in expectation whatever the file's order (the packed
    JPEG copy of CIFAR-10 is sorted by class, so its first N images are one or two classes)."""
    if not 1 <= n <= n_total:
        raise ValueError(f"cannot draw {n} of {n_total} images")
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def fd_cifarnet_report(model: ImageDiffusion, test_images, other_images, n: int, sampler: str = "ddpm",
                       steps: int | None = None, seed: int = 0, batch_size: int = 64, classifier=None,
                       gaussian_fit_images=None, subset_seed: int = 0, show_progress: bool = False,
                       **sampler_options) -> dict[str, float | int]:
    """FD-CIFARNet of ``n`` images sampled from ``model`` against ``n`` real test images, with two references at
    the same ``n``:

    * ``fd_floor``: those test images against ``n`` of ``other_images`` (real images not in the test set, e.g.
      training images): what a perfect generator would score at this ``n``;
    * ``fd_gaussian``: ``n`` images of ``gaussian_baseline_images`` fitted on ``gaussian_fit_images`` (default
      ``other_images``, all of them; its draws seeded by ``seed``) against the same test images.

    The real images are fixed subsets (``fixed_subset``: ``test_images`` with ``subset_seed``, ``other_images``
    with ``subset_seed + 1``), never "the first n", since files may be sorted by class. Sampling as
    ``sample_uint8`` (``sampler``, ``steps``: default all T, image i seeded by ``seed + i``). ``classifier``: a
    ``CIFARNet`` (default the shipped one). Returns ``n``, ``fd_samples``, ``fd_floor``, ``fd_gaussian`` (squared
    CIFARNet feature units) and ``feature_dim``. ValueError when ``n`` < 2 or exceeds a set.
    """
    from .classifier import cifarnet_features, load_cifarnet

    test, other = _check_images(test_images, "test images"), _check_images(other_images, "other images")
    if n < 2:
        raise ValueError(f"FD-CIFARNet needs at least 2 images per set, got n = {n}")
    if n > len(test) or n > len(other):
        raise ValueError(f"n = {n} exceeds the {len(test)} test or {len(other)} other real images")
    classifier = load_cifarnet() if classifier is None else classifier
    generated = sample_uint8(model, n, sampler, steps, seed, batch_size, show_progress, **sampler_options)
    gaussian = gaussian_baseline_images(other if gaussian_fit_images is None else gaussian_fit_images, n, seed)
    ref = cifarnet_features(classifier, test[fixed_subset(len(test), n, subset_seed)], show_progress=show_progress)
    real = other[fixed_subset(len(other), n, subset_seed + 1)]
    return {"n": n, "feature_dim": ref.shape[1],
            "fd_samples": frechet_distance(cifarnet_features(classifier, generated), ref),
            "fd_floor": frechet_distance(cifarnet_features(classifier, real), ref),
            "fd_gaussian": frechet_distance(cifarnet_features(classifier, gaussian), ref)}
