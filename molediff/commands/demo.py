"""Sample a 2-D Gaussian mixture with its exact (analytic) denoiser and plot the samples beside exact samples
of the mixture: a check of the diffusion core that needs no trained model."""

from __future__ import annotations

import argparse
import logging

import torch

from ..diffusion import SAMPLERS, SCHEDULES

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="demo.png",
                        help="picture to write; the format follows the extension: .png, .jpg/.jpeg, .svg or .pdf")
    parser.add_argument("-n", "--num-samples", type=int, default=4000, help="number of samples to draw")
    parser.add_argument("--sampler", default="dpm2m", choices=sorted(SAMPLERS),
                        help="sampler: ddpm (ancestral), ddim, heun (Karras et al.) or dpm2m (DPM-Solver++(2M))")
    parser.add_argument("--steps", type=int, default=20, help="number of sampling steps (<= --T)")
    parser.add_argument("--schedule", default="polynomial", choices=sorted(SCHEDULES),
                        help="noise schedule: linear (DDPM), cosine (Nichol & Dhariwal) or polynomial (EDM)")
    parser.add_argument("--T", type=int, default=1000, help="number of discrete diffusion steps")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    from ..diffusion import EuclideanSpace, make_schedule, sample
    from ..toy import GaussianMixture
    from ..utils import UsageError, atomic_path, check_output_path

    if args.num_samples < 1:
        raise UsageError("--num-samples must be at least 1")
    if args.T < 1 or not 1 <= args.steps <= args.T:
        raise UsageError(f"--T must be at least 1 and --steps lie in 1..--T, got --steps {args.steps} --T {args.T}")
    formats = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}
    suffix = "." + args.output.lower().rsplit(".", 1)[-1] if "." in args.output else ""
    if suffix not in formats:
        raise UsageError(f"--output must end in one of {', '.join(formats)}, got {args.output!r}")
    check_output_path(args.output)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedule = make_schedule(args.schedule, T=args.T)
    mixture = GaussianMixture.default_2d()
    g = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.num_samples, 2, generator=g, dtype=torch.float64)
    x = sample(args.sampler, mixture.eps_fn(schedule), z, schedule, EuclideanSpace(), steps=args.steps,
               generator=g, show_progress=True)
    reference = mixture.sample(args.num_samples, torch.Generator().manual_seed(args.seed + 1))

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, title in [(axes[0], reference, "data (exact samples)"),
                           (axes[1], x, f"{args.sampler}, {args.steps} steps")]:
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.suptitle("molediff core check: 2-D Gaussian mixture, analytic denoiser")
    fig.tight_layout()
    with atomic_path(args.output) as tmp:
        fig.savefig(tmp, format=formats[suffix], dpi=110)
    plt.close(fig)
    mean, data_mean = (", ".join(f"{v:.3f}" for v in m.mean(0).tolist()) for m in (x, reference))
    print(f"wrote {args.output}: {args.num_samples} samples; mean of the samples ({mean}), "
          f"of exact samples ({data_mean})")
    return 0
