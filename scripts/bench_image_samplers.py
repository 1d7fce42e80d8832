"""Sampler comparison on one CIFAR-10 checkpoint: FD-CIFARNet, bits/dim and wall time of each core sampler.

For each ``SAMPLER:STEPS[:ETA]`` setting, ``-n`` images are sampled with seeds ``0..n−1`` (the same initial noise
for every sampler), their FD-CIFARNet (``molediff.images.metrics``: Fréchet distance in the penultimate features
of molediff's shipped CIFAR-10 classifier; not FID) to ``-n`` test images (a fixed random subset, seed 0, as in
``molediff image eval --fd``) is computed, and the sampling
wall time is recorded. Three rows frame the table, with the same ``n``:

* ``real (train)``: ``n`` training images (fixed random subset, seed 1) against the same test images: the floor
  of the statistic at this ``n`` (FD estimated from ``n`` samples is biased upwards, so only rows with the same
  ``n`` compare);
* ``Gaussian``: ``n`` draws from a Gaussian fitted to the training pixels' mean and full covariance;
* the bound in bits/dim (full chain, discretized decoder, ``--bpd-images`` test images) belongs to the model, not
  to a sampler: it is the negative log-likelihood that DDPM's ancestral sampler draws from (printed once).

    OMP_NUM_THREADS=2 python scripts/bench_image_samplers.py --data ../shared/data/cifar10_jpeg.npz -n 1000 \\
        --settings ddpm:1000 ddim:50:0 ddim:50:1 ddim:100:0 ddim:100:1 dpm2m:20 dpm2m:50 heun:18
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from molediff.images.cifar import load_cifar10
from molediff.images.classifier import cifarnet_features, load_cifarnet
from molediff.images.metrics import (
    bits_per_dim_on,
    fixed_subset,
    frechet_distance,
    gaussian_baseline_images,
    sample_uint8,
)
from molediff.images.model import ImageDiffusion
from molediff.training.weights import load_model, pretrained_path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import machine, table_header  # noqa: E402


def parse_setting(text: str) -> tuple[str, int, float]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected SAMPLER:STEPS[:ETA], got {text!r}")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="weights or run directory (default: the shipped small model)")
    p.add_argument("--data", required=True, help="CIFAR-10: packed JPEG .npz, the official archive or its folder")
    p.add_argument("-n", type=int, default=1000, help="images per row (samples, test images, train images)")
    p.add_argument("--settings", nargs="+", type=parse_setting,
                   default=[parse_setting(s) for s in ("ddpm:1000", "ddim:50:0", "ddim:50:1", "ddim:100:0",
                                                       "ddim:100:1", "dpm2m:20", "dpm2m:50", "heun:18")],
                   help="SAMPLER:STEPS[:ETA] (ETA for ddim only)")
    p.add_argument("--bpd-images", type=int, default=100, help="test images for the full-chain bits/dim (0: skip)")
    p.add_argument("--batch-size", type=int, default=250, help="images sampled together")
    p.add_argument("--bf16", action="store_true", help="sample under CPU bf16 autocast (default: float32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    p.add_argument("--grid-dir", default=None, help="write a 8 x 8 PNG grid of each setting's first 64 samples here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or pretrained_path("cifar10_unet_small")
    model = load_model(ImageDiffusion, checkpoint, device="cpu").eval()
    classifier = load_cifarnet()
    # fixed random subsets (the packed file is sorted by class), as `molediff image eval --fd` draws them
    test_all = load_cifar10(args.data, "test").images
    test = test_all[fixed_subset(len(test_all), args.n, seed=0)]
    train = load_cifar10(args.data, "train").images
    test_feats = cifarnet_features(classifier, test)

    def fd(images: np.ndarray) -> float:
        return frechet_distance(cifarnet_features(classifier, images), test_feats)

    rows = [{"setting": "real (train images)", "fd": fd(train[fixed_subset(len(train), args.n, seed=1)])},
            {"setting": "Gaussian fitted to the pixels", "fd": fd(gaussian_baseline_images(train, args.n, seed=0))}]
    print(f"  floors: {rows}", file=sys.stderr)
    for sampler, steps, eta in args.settings:
        options = {"eta": eta} if sampler == "ddim" else {}
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            images = sample_uint8(model, args.n, sampler, steps, 0, args.batch_size, show_progress=True,
                                  **options).numpy()
        wall = time.perf_counter() - t0
        name = f"{sampler}-{steps}" + (f" (η = {eta:g})" if sampler == "ddim" else "")
        evals = {"heun": 2 * steps - 1}.get(sampler, steps)
        rows.append({"setting": name, "sampler": sampler, "steps": steps, "eta": eta, "evaluations": evals,
                     "fd": fd(images), "wall_s": wall, "s_per_image": wall / args.n})
        print(f"  {rows[-1]}", file=sys.stderr)
        if args.grid_dir:
            from molediff.images.grid import save_grid

            Path(args.grid_dir).mkdir(parents=True, exist_ok=True)
            save_grid(torch.from_numpy(images[:64]), Path(args.grid_dir) / f"{sampler}{steps}_eta{eta:g}.png", 8)
    bpd = None
    if args.bpd_images:
        bpd = bits_per_dim_on(model, test_all[fixed_subset(len(test_all), args.bpd_images, seed=0)], full_chain=True,
                              show_progress=True)
    print(f"Command: `{' '.join(['python', 'scripts/bench_image_samplers.py'] + sys.argv[1:])}`  ")
    print(f"Machine: {machine()}  ")
    print(f"Date: {datetime.date.today().isoformat()}  \nWeights: {checkpoint}\n")
    print(f"FD-CIFARNet against {args.n} CIFAR-10 test images (fixed random subset), {args.n} images per row "
          f"(same seeds for every sampler; {'bf16 autocast' if args.bf16 else 'float32'} sampling).\n")
    print(table_header(["sampler", "network evaluations", "FD-CIFARNet", "wall s", "s per image"]))
    for r in rows:
        if "wall_s" in r:
            print(f"| {r['setting']} | {r['evaluations']} | {r['fd']:.2f} | {r['wall_s']:.0f} "
                  f"| {r['s_per_image']:.3f} |")
        else:
            print(f"| {r['setting']} | - | {r['fd']:.2f} | - | - |")
    if bpd is not None:
        print(f"\nBits/dim (full chain, T = {model.schedule.T}, discretized decoder) on {bpd['n']} test "
              f"images (fixed random subset): {bpd['bits_per_dim']:.3f} ± {bpd['sem']:.3f} "
              f"(prior {bpd['prior_bits_per_dim']:.4f}, "
              f"diffusion {bpd['diffusion_bits_per_dim']:.3f}, decoder {bpd['decoder_bits_per_dim']:.3f}).")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "bits_per_dim": bpd, "n": args.n,
                                               "checkpoint": str(checkpoint)}, indent=1,
                                              default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
                                   + "\n")


if __name__ == "__main__":
    main()
