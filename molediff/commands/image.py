"""Images: the CIFAR-10 baseline on the shared diffusion core (a DDPM-style U-Net).

  molediff image train CONFIG [--resume] [--out DIR] [--steps N] [--time-limit S]
      train from a YAML config (configs/cifar_small.yaml for CPU, configs/cifar_ddpm.yaml: DDPM's 35.7M U-Net).
  molediff image sample -n 16 -o grid.png --checkpoint W [--sampler --steps --seed]
      draw images with a trained model and write them as a PNG grid.
  molediff image eval --checkpoint W --data PATH [-n 100]
      bits/dim of the variational bound on test images (DDPM's discretized 8-bit decoder).
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


def configure(parser: argparse.ArgumentParser) -> None:
    from ..diffusion import SAMPLERS

    HelpFormatter = parser.formatter_class  # the CLI's formatter (commands do not import the CLI module)
    sub = parser.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)

    train = sub.add_parser("train", help="train an image model from a YAML config", formatter_class=HelpFormatter,
                           description="Train an image diffusion model (task 'images') with the shared training "
                                       "engine: checkpoints, exact --resume, time limits, EMA. For DDP: "
                                       "'torchrun --nproc_per_node K -m molediff.cli image train CONFIG'.")
    train.add_argument("config", metavar="CONFIG", help="YAML training config with task: images (see configs/cifar_*)")
    train.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                       help="continue exactly where a run stopped: without DIR from the newest checkpoint in the "
                            "output directory (starting fresh if there is none), with DIR from that checkpoint")
    train.add_argument("--out", default=None, metavar="DIR", help="output directory (overrides out_dir)")
    train.add_argument("--steps", type=int, default=None, metavar="N",
                       help="total optimiser steps (overrides steps; raise it to extend a run)")
    train.add_argument("--device", default=None,
                       help="torch device, e.g. cpu or cuda (default: this process's GPU if any, else cpu)")
    train.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads for torch (default: torch's choice)")
    train.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                       help="stop after this much wall time with a checkpoint (overrides time_limit_s)")

    sample = sub.add_parser("sample", help="sample images into a PNG grid", formatter_class=HelpFormatter,
                            description="Draw images with a trained image model and write them as one PNG grid. "
                                        "Image i uses seed + i, so an image does not depend on --batch-size.")
    sample.add_argument("-n", "--num-images", type=int, default=16, help="number of images")
    sample.add_argument("-o", "--output", default="grid.png", help="PNG file to write")
    sample.add_argument("--checkpoint", default=None,
                        help=f"exported .safetensors weights or a training run/checkpoint directory (default: the "
                             f"shipped '{SHIPPED}' weights, once they ship)")
    sample.add_argument("--sampler", default="ddpm", choices=sorted(SAMPLERS),
                        help="ddpm (ancestral), ddim, heun (Karras et al.) or dpm2m (DPM-Solver++(2M))")
    sample.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: all T for ddpm, 100 for ddim, 50 for dpm2m, 18 for heun)")
    sample.add_argument("--eta", type=float, default=0.0,
                        help="DDIM's η: 0 is the deterministic ODE step, 1 matches ancestral DDPM (ddim only)")
    sample.add_argument("--seed", type=int, default=0, help="random seed; image i uses seed + i")
    sample.add_argument("--nrow", type=int, default=None, help="images per row of the grid (default: near square)")
    sample.add_argument("--scale", type=int, default=1, help="draw each pixel as a scale x scale block")
    sample.add_argument("--batch-size", type=int, default=64, help="images sampled together")
    sample.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    sample.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")

    ev = sub.add_parser("eval", help="bits/dim of the bound on test images", formatter_class=HelpFormatter,
                        description="Bits/dim of the variational bound on the first N images of a CIFAR-10 split, "
                                    "with DDPM's discretized 8-bit decoder. The full chain takes T network calls "
                                    "per image (T = 999 for DDPM's schedule); --one-draw takes two. On the "
                                    "packed JPEG copy the pixels are lossy: compare against a reference model on "
                                    "the same data, not with published CIFAR-10 numbers. (The Fréchet distance "
                                    "of the image issue is not implemented yet.)")
    ev.add_argument("--checkpoint", default=None,
                    help=f"exported .safetensors weights or a training run/checkpoint directory (default: the "
                         f"shipped '{SHIPPED}' weights, once they ship)")
    ev.add_argument("--data", required=True, metavar="PATH",
                    help="cifar-10-python.tar.gz, the cifar-10-batches-py folder, or a packed-JPEG .npz")
    ev.add_argument("--split", default="test", choices=["train", "test"], help="CIFAR-10 split")
    ev.add_argument("-n", "--num-images", type=int, default=100, help="first N images of the split")
    ev.add_argument("--one-draw", action="store_true",
                    help="estimate the diffusion term from one random step per image instead of summing all T")
    ev.add_argument("--batch-size", type=int, default=100, help="images per batch")
    ev.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    ev.add_argument("--json", metavar="OUT", default=None, help="also write the result as JSON")
    ev.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ev.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    return {"train": _train, "sample": _sample, "eval": _eval}[args.image_command](args)


def _train(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from . import train as train_command

    task = load_config(args.config).task
    if task != "images":
        raise ValueError(f"{args.config} is a config for task {task!r}; 'molediff image train' trains task "
                         f"'images' (use 'molediff train' for other tasks)")
    return train_command.run(args)   # the one training verb; this one only checks the task


def _load(checkpoint: str | None, device: str):
    from ..images.model import ImageDiffusion
    from ..training.weights import load_model, pretrained_path

    if checkpoint is None:
        try:
            checkpoint = pretrained_path(SHIPPED)
        except FileNotFoundError:
            raise ValueError("no image weights ship with molediff yet: pass --checkpoint (a training run "
                             "directory or an exported .safetensors file)") from None
    return load_model(ImageDiffusion, checkpoint, device=device)


def _sample(args: argparse.Namespace) -> int:
    import torch

    from ..images.grid import save_grid
    from ..images.model import to_uint8
    from ..utils import check_output_path

    if args.num_images < 1 or args.batch_size < 1 or args.scale < 1:
        raise ValueError("--num-images, --batch-size and --scale must be at least 1")
    if args.nrow is not None and args.nrow < 1:
        raise ValueError("--nrow must be at least 1")
    if not args.output.lower().endswith(".png"):
        raise ValueError(f"--output must name a .png file, got {args.output!r}")
    if args.eta != 0.0 and args.sampler != "ddim":
        raise ValueError("--eta applies to --sampler ddim only")
    check_output_path(args.output)
    model = _load(args.checkpoint, args.device)
    T = model.schedule.T
    if args.steps is not None and not 1 <= args.steps <= T:
        raise ValueError(f"--steps must lie in 1..{T} for this model")
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.sampler]
    steps = None if steps is None else min(steps, T)
    options = {"eta": args.eta} if args.sampler == "ddim" else {}
    chunks = []
    for start in range(args.seed, args.seed + args.num_images, args.batch_size):
        seeds = range(start, min(start + args.batch_size, args.seed + args.num_images))
        chunks.append(to_uint8(model.sample(len(seeds), args.sampler, steps, seeds, show_progress=True, **options)))
    save_grid(torch.cat(chunks), args.output, args.nrow, args.scale)
    print(f"wrote {args.num_images} images to {args.output} ({args.sampler}, {steps or T} steps)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..images.cifar import load_cifar10
    from ..images.metrics import bits_per_dim_on
    from ..utils import atomic_write, check_output_path

    if args.num_images < 1 or args.batch_size < 1:
        raise ValueError("--num-images and --batch-size must be at least 1")
    if args.json is not None:
        check_output_path(args.json, "--json")
    model = _load(args.checkpoint, args.device)
    data = load_cifar10(args.data, args.split)
    if args.num_images > len(data):
        raise ValueError(f"--num-images {args.num_images} exceeds the {len(data)} images of the {args.split} split")
    result = bits_per_dim_on(model, data.images[:args.num_images], full_chain=not args.one_draw,
                             batch_size=args.batch_size, seed=args.seed, show_progress=True)
    chain = "one-draw estimate" if args.one_draw else f"full chain, T = {model.schedule.T}"
    sem = "" if math.isnan(result["sem"]) else f" ± {result['sem']:.3f}"
    print(f"bits/dim {result['bits_per_dim']:.3f}{sem} on {result['n']} {args.split} images of {args.data} ({chain}); "
          f"prior {result['prior_bits_per_dim']:.4f}, diffusion {result['diffusion_bits_per_dim']:.3f}, "
          f"decoder {result['decoder_bits_per_dim']:.3f}")
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps({"data": str(args.data), "split": args.split, "chain": chain,
                                "checkpoint": str(args.checkpoint),
                                **{k: None if isinstance(v, float) and math.isnan(v) else v
                                   for k, v in result.items()}}, indent=1) + "\n")
    return 0
