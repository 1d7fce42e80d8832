"""Images: the CIFAR-10 baseline on the shared diffusion core (a DDPM-style U-Net).

  molediff image train CONFIG [--resume] [--out DIR] [--steps N] [--time-limit S]
      train from a YAML config (configs/cifar_small.yaml for CPU, configs/cifar_ddpm.yaml: DDPM's 35.7M U-Net).
  molediff image sample [-n 16] [-o grid.png] [--checkpoint W] [--sampler --steps --seed --scale 4]
      draw images with a trained model (by default the shipped one) and write them as a PNG grid.
  molediff image eval --data PATH [--checkpoint W] [-n 100] [--fd --fd-images 1000 --sampler --steps --seed]
      bits/dim of the variational bound on test images (DDPM's discretized 8-bit decoder); with --fd also
      FD-CIFARNet of sampled images against test images, with its floor and a pixel-Gaussian baseline.
      Without --checkpoint both use the shipped model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math

log = logging.getLogger(__name__)

SHIPPED = "cifar10_unet_small"
DEFAULT_STEPS = {"ddpm": None, "ddim": 100, "dpm2m": 50, "heun": 18}
"""Sampler → default steps (None: all T)."""
DEFAULT_SCALE = 4
"""``image sample --scale``: 32-px images drawn at 4× (nearest neighbour), so that a 4 × 4 grid is 552 px wide."""


def _grid_px(n: int, size: int = 32, padding: int = 2) -> int:
    """Width of a near-square grid of ``n`` images at the default scale (``images.grid.image_grid``'s layout)."""
    nrow = math.ceil(math.sqrt(n))
    return (nrow * (size + padding) + padding) * DEFAULT_SCALE


def configure(parser: argparse.ArgumentParser) -> None:
    from ..diffusion import SAMPLERS
    from ..utils import add_precision_argument

    HelpFormatter = parser.formatter_class  # the CLI's formatter (commands do not import the CLI module)
    sub = parser.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)

    train = sub.add_parser("train", help="train an image model from a YAML config", formatter_class=HelpFormatter,
                           description="Train an image diffusion model (task 'images') with the shared training "
                                       "engine: checkpoints, exact --resume, time limits, EMA. For DDP: "
                                       "'torchrun --nproc_per_node K -m molediff.cli image train CONFIG'.")
    from . import train as train_command

    train_command.configure(train)   # the training verb's own arguments: one definition of each
    train.epilog = None              # its task list: this verb trains task 'images' only

    sample = sub.add_parser("sample", help="sample images into a PNG grid", formatter_class=HelpFormatter,
                            description="Draw images with a trained image model and write them as one PNG grid. "
                                        "Image i uses seed + i, so an image does not depend on --batch-size.")
    sample.add_argument("-n", "--num-images", type=int, default=16, help="number of images")
    sample.add_argument("-o", "--output", default="grid.png", help="PNG file to write")
    sample.add_argument("--checkpoint", default=None,
                        help=f"exported .safetensors weights or a training run/checkpoint directory (default: the "
                             f"shipped '{SHIPPED}' weights)")
    sample.add_argument("--sampler", default="heun", choices=sorted(SAMPLERS),
                        help="heun (Karras et al. 2022; the default: the best FD-CIFARNet of the sampler table in "
                             "BENCHMARKS.md at 35 network evaluations), ddpm (ancestral), ddim or dpm2m "
                             "(DPM-Solver++(2M))")
    sample.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: all T for ddpm, 100 for ddim, 50 for dpm2m, 18 for heun)")
    sample.add_argument("--eta", type=float, default=0.0,
                        help="DDIM's η: 0 is the deterministic ODE step, 1 matches ancestral DDPM (ddim only)")
    sample.add_argument("--seed", type=int, default=0, help="random seed; image i uses seed + i")
    sample.add_argument("--no-clip", action="store_true",
                        help="do not clip the clean estimate x̂ to [-1, 1] at each step (DDPM's sampler and "
                             "diffusers' clip_sample do; see molediff.diffusion.clip_denoised)")
    sample.add_argument("--nrow", type=int, default=None, help="images per row of the grid (default: near square)")
    sample.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                        help=f"draw each pixel as a scale x scale block (nearest neighbour; default: {DEFAULT_SCALE}, "
                             f"so that 16 CIFAR images of 32 px make a grid of {_grid_px(16)} px; 1 keeps the "
                             f"images' own size)")
    sample.add_argument("--batch-size", type=int, default=64, help="images sampled together")
    sample.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    sample.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    # fp32 by default: bf16 sampling is not measured on the image models, and the default output stays the same
    add_precision_argument(sample, default="fp32")

    ev = sub.add_parser("eval", help="bits/dim on test images; FD-CIFARNet of samples (--fd)",
                        formatter_class=HelpFormatter,
                        description="Bits/dim of the variational bound on the first N images of a CIFAR-10 split, "
                                    "with DDPM's discretized 8-bit decoder. The full chain takes T network calls "
                                    "per image (T = 999 for DDPM's schedule); --one-draw takes two. On the "
                                    "packed JPEG copy the pixels are lossy: compare against a reference model on "
                                    "the same data, not with published CIFAR-10 numbers. "
                                    "With --fd, also FD-CIFARNet: the Fréchet distance (FID's formula, Heusel et "
                                    "al. 2017) between --fd-images sampled images and as many test images (a "
                                    "fixed random subset, the same on every run), in the "
                                    "features of CIFARNet, a small CIFAR-10 classifier shipped with molediff "
                                    "(molediff/pretrained/cifarnet.md). It is printed beside its floor (the test "
                                    "images against as many training images) and the FD of a Gaussian fitted to "
                                    "the training pixels (mean and full covariance), at the same N. FD-CIFARNet "
                                    "compares models evaluated with the same N only; it is not an FID and not "
                                    "comparable with FID values in papers.")
    ev.add_argument("--checkpoint", default=None,
                    help=f"exported .safetensors weights or a training run/checkpoint directory (default: the "
                         f"shipped '{SHIPPED}' weights)")
    ev.add_argument("--data", required=True, metavar="PATH",
                    help="cifar-10-python.tar.gz, the cifar-10-batches-py folder, or a packed-JPEG .npz")
    ev.add_argument("--split", default="test", choices=["train", "test"], help="CIFAR-10 split of the bits/dim")
    ev.add_argument("-n", "--num-images", type=int, default=100,
                    help="bits/dim on N images of the split (a fixed random subset, the same on every run: the packed "
                         "file is sorted by class)")
    ev.add_argument("--one-draw", action="store_true",
                    help="estimate the diffusion term from one random step per image instead of summing all T")
    ev.add_argument("--no-bits-per-dim", action="store_true",
                    help="skip the bits/dim (with --fd: compute FD-CIFARNet only)")
    ev.add_argument("--fd", action="store_true",
                    help="also compute FD-CIFARNet of --fd-images sampled images against --fd-images test images "
                         "(a fixed random subset: the packed JPEG file is sorted by class), with the floor (those "
                         "test images against as many training images) and the pixel-Gaussian baseline")
    ev.add_argument("--fd-images", type=int, default=1000, metavar="N",
                    help="images per set for FD-CIFARNet (at least 2; FD values compare only at equal N)")
    ev.add_argument("--sampler", default="heun", choices=sorted(SAMPLERS),
                    help="with --fd: heun (Karras et al. 2022, the default), ddpm (ancestral), ddim or dpm2m "
                         "(DPM-Solver++(2M))")
    ev.add_argument("--steps", type=int, default=None,
                    help="with --fd: sampling steps (default: all T for ddpm, 100 for ddim, 50 for dpm2m, 18 for "
                         "heun)")
    ev.add_argument("--eta", type=float, default=0.0,
                    help="with --fd: DDIM's η (0: deterministic ODE step; ddim only)")
    ev.add_argument("--classifier", default=None, metavar="WEIGHTS",
                    help="with --fd: CIFARNet weights (default: the shipped molediff/pretrained/cifarnet.safetensors)")
    ev.add_argument("--batch-size", type=int, default=100, help="images per batch (bits/dim and sampling)")
    ev.add_argument("--seed", type=int, default=0,
                    help="seed of the bound's noise draws; with --fd, sampled image i uses seed + i (as 'image "
                         "sample') and the Gaussian baseline draws from seed")
    ev.add_argument("--json", metavar="OUT", default=None, help="also write the results as JSON")
    ev.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ev.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add_precision_argument(ev, default="fp32", applies_to="with --fd, for sampling only: ")


def run(args: argparse.Namespace) -> int:
    from ..utils import set_threads

    if args.image_command == "sample":
        _check_sample(args)
    elif args.image_command == "eval":
        _check_eval(args)
    else:
        from . import train as train_command

        train_command.check_arguments(args)
    set_threads(args.threads)
    return {"train": _train, "sample": _sample, "eval": _eval}[args.image_command](args)


def _train(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..utils import UsageError
    from . import train as train_command

    task = load_config(args.config).task
    if task != "images":
        raise UsageError(f"{args.config} is a config for task {task!r}; 'molediff image train' trains task "
                         f"'images' (use 'molediff train' for other tasks)")
    return train_command.run(args)   # the one training verb; this one only checks the task


def _load(checkpoint: str | None, device: str):
    """The image model of ``--checkpoint`` (a path or the NAME of shipped weights), by default the shipped one."""
    from ..images.model import ImageDiffusion
    from ..training.weights import load_model

    try:
        return load_model(ImageDiffusion, SHIPPED if checkpoint is None else checkpoint, device=device)
    except FileNotFoundError:
        if checkpoint is not None:
            raise
        raise ValueError("no image weights are shipped in this installation: pass --checkpoint (a training run "
                         "directory or an exported .safetensors file)") from None


def _check_sample(args: argparse.Namespace) -> None:
    """UsageError for an argument of ``image sample`` that cannot work, before anything is loaded."""
    from ..utils import UsageError, check_device, check_output_path

    if args.num_images < 1 or args.batch_size < 1 or args.scale < 1:
        raise UsageError("--num-images, --batch-size and --scale must be at least 1")
    if args.nrow is not None and args.nrow < 1:
        raise UsageError("--nrow must be at least 1")
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be at least 1")
    if not args.output.lower().endswith(".png"):
        raise UsageError(f"--output must name a .png file, got {args.output!r}")
    if args.eta != 0.0 and args.sampler != "ddim":
        raise UsageError("--eta applies to --sampler ddim only")
    check_output_path(args.output)
    check_device(args.device)


def _check_eval(args: argparse.Namespace) -> None:
    """UsageError for an argument of ``image eval`` that cannot work, before anything is loaded."""
    from ..utils import UsageError, check_device, check_output_path

    if args.num_images < 1 or args.batch_size < 1:
        raise UsageError("--num-images and --batch-size must be at least 1")
    if args.no_bits_per_dim and not args.fd:
        raise UsageError("--no-bits-per-dim leaves nothing to evaluate without --fd")
    if args.fd and args.fd_images < 2:
        raise UsageError("--fd-images must be at least 2 (a covariance needs two images)")
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be at least 1")
    if args.eta != 0.0 and args.sampler != "ddim":
        raise UsageError("--eta applies to --sampler ddim only")
    if args.json is not None:
        check_output_path(args.json, "--json")
    check_device(args.device)


def _sample(args: argparse.Namespace) -> int:
    from ..images.grid import save_grid
    from ..images.metrics import sample_uint8
    from ..utils import UsageError, use_bf16

    model = _load(args.checkpoint, args.device)
    T = model.schedule.T
    if args.steps is not None and not 1 <= args.steps <= T:
        raise UsageError(f"--steps must lie in 1..{T} for this model")
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.sampler]
    steps = None if steps is None else min(steps, T)
    options = {"eta": args.eta} if args.sampler == "ddim" else {}
    images = sample_uint8(model, args.num_images, args.sampler, steps, args.seed, args.batch_size,
                          show_progress=True, bf16=use_bf16(args.precision, args.device), clip=not args.no_clip,
                          **options)
    save_grid(images, args.output, args.nrow, args.scale)
    print(f"wrote {args.num_images} images to {args.output} ({args.sampler}, {steps or T} steps)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..images.cifar import load_cifar10
    from ..images.metrics import bits_per_dim_on, fixed_subset
    from ..utils import UsageError, atomic_write

    model = _load(args.checkpoint, args.device)
    if args.fd and args.steps is not None and not 1 <= args.steps <= model.schedule.T:
        raise UsageError(f"--steps must lie in 1..{model.schedule.T} for this model")
    out: dict = {"data": str(args.data), "checkpoint": str(args.checkpoint)}
    if not args.no_bits_per_dim:
        data = load_cifar10(args.data, args.split)
        if args.num_images > len(data):
            raise UsageError(f"--num-images {args.num_images} exceeds the {len(data)} images of the {args.split} "
                             f"split")
        # a fixed random subset (seed 0, as FD-CIFARNet's test images): files sorted by class (the packed JPEG
        # copy is) would otherwise give the first class's bound only
        images = data.images[fixed_subset(len(data), args.num_images, seed=0)]
        result = bits_per_dim_on(model, images, full_chain=not args.one_draw,
                                 batch_size=args.batch_size, seed=args.seed, show_progress=True)
        chain = "one-draw estimate" if args.one_draw else f"full chain, T = {model.schedule.T}"
        sem = "" if math.isnan(result["sem"]) else f" ± {result['sem']:.3f}"
        print(f"bits/dim {result['bits_per_dim']:.3f}{sem} on {result['n']} {args.split} images of {args.data} "
              f"({chain}); prior {result['prior_bits_per_dim']:.4f}, diffusion "
              f"{result['diffusion_bits_per_dim']:.3f}, decoder {result['decoder_bits_per_dim']:.3f}")
        out.update({"split": args.split, "chain": chain,
                    **{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}})
    if args.fd:
        out["fd_cifarnet"] = _fd(args, model)
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps(out, indent=1) + "\n")
    return 0


def _fd(args: argparse.Namespace, model) -> dict:
    """FD-CIFARNet of sampled images with its floor and the pixel-Gaussian baseline: print a table, return it."""
    from ..images.cifar import load_cifar10
    from ..images.classifier import load_cifarnet
    from ..images.metrics import fd_cifarnet_report
    from ..utils import UsageError, use_bf16

    T = model.schedule.T
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.sampler]
    steps = None if steps is None else min(steps, T)
    classifier = load_cifarnet(args.classifier, args.device)
    test, train = load_cifar10(args.data, "test"), load_cifar10(args.data, "train")
    n = args.fd_images
    if n > len(test) or n > len(train):
        raise UsageError(f"--fd-images {n} exceeds the {len(test)} test or {len(train)} training images of "
                         f"{args.data}")
    options = {"eta": args.eta} if args.sampler == "ddim" else {}
    r = fd_cifarnet_report(model, test.images, train.images, n, args.sampler, steps, args.seed, args.batch_size,
                           classifier, show_progress=True, bf16=use_bf16(args.precision, args.device), **options)
    rows = [(f"samples ({args.sampler}, {steps or T} steps, seeds {args.seed}..{args.seed + n - 1})", r["fd_samples"]),
            (f"floor: {n} training images", r["fd_floor"]),
            (f"Gaussian fitted to the {len(train)} training images' pixels", r["fd_gaussian"])]
    width = max(len(name) for name, _ in rows)
    print(f"FD-CIFARNet against {n} test images of {args.data} (a fixed random subset; CIFARNet features, D = "
          f"{r['feature_dim']}; comparable at equal N only, not an FID)")
    print(f"  {'images':<{width}}  FD-CIFARNet")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:11.3f}")
    return {**r, "sampler": args.sampler, "steps": steps or T, "seed": args.seed,
            "classifier": str(args.classifier) if args.classifier else "shipped cifarnet",
            "reference": f"{n} test images drawn by numpy default_rng(0)",
            "floor": f"{n} training images drawn by numpy default_rng(1)",
            "gaussian_fit_images": len(train)}
