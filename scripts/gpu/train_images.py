"""One self-contained CIFAR-10 U-Net job for a lent GPU (the ``images`` task, DDPM's 35.7 M-parameter network).

The device command (the device tool's ``run``; the packed file travels as a git-ignored path named in ``carry``):

    run(command="MOLEDIFF_CACHE=/tmp/molediff PYTHONUNBUFFERED=1 python3 scripts/gpu/train_images.py run "
                 "--data gpu_data/cifar10_jpeg.npz --config configs/cifar_ddpm.yaml --minutes 6 --ema-decay 0.999 "
                 "--out $OUT 2>&1 | tee $OUT/log.txt",
        carry=["gpu_data/cifar10_jpeg.npz"], timeout_s=600)

The script puts the working tree's root first on ``sys.path``, so it imports the tree's molediff on a machine
where the package is not installed (no ``pip install``, no PYTHONPATH needed). ``MOLEDIFF_CACHE`` puts the
decoded images (184 MB, about 10 s to decode) in /tmp; ``tee`` brings the log back even if the command is
killed at its limit. Six minutes of training, about a minute around it and the machine's start leave room in
a 15-minute device budget to rerun after an early failure.

1. ``prepare`` (CPU, here): the CIFAR-10 data → ``gpu_data/cifar10_jpeg.npz`` in the packed-JPEG format that
   ``molediff.images.cifar`` reads (keys ``{split}_jpeg``, ``{split}_offsets``, ``{split}_labels``, ``classes``).
   A packed file (``../shared/data/cifar10_jpeg.npz``, 53 MiB) is checked (every JPEG decodes) and copied: it is
   already the most compact form. The official python batches (``cifar-10-python.tar.gz`` or the
   ``cifar-10-batches-py`` folder) are encoded into that same format with Pillow at ``--quality`` 75 (the
   quality of the shared copy; lossy). They are not written as a uint8 .npz: the 60,000 raw images are 176 MiB
   (the official gzip archive is 163 MB), more than the 64 MiB a device tree carries, and the ``images`` task reads any
   ``.npz`` as a packed-JPEG file. Prints the carry size with the working tree and warns above 60 MiB.

       python scripts/gpu/train_images.py prepare --data ../shared/data/cifar10_jpeg.npz --out gpu_data

2. ``run`` (GPU machine; needs torch, numpy, safetensors, Pillow and PyYAML only): train with the shared engine
   (bf16 autocast on CUDA, TF32, EMA, checkpoints) for ``--minutes`` of wall time, resuming from ``--run-dir``
   when it holds a checkpoint or starting from ``--init`` weights; export the EMA weights in bf16; draw a
   ``--samples`` image grid; measure bits/dim of the bound on ``--bpd-images`` test images (a fixed random
   subset); write into ``--out`` (the device tool's $OUT; at most 8 files of 16 MiB, 64 MiB in all come back):

       report.json      steps, images/s, wall times, loss, bits/dim, peak GPU memory, what was returned
       metrics.jsonl    the engine's training log (loss, grad norm, lr, images/s per log window)
       samples.png      the sample grid (8 x 8 for 64 images)
       cifar10_unet.safetensors
                        the bf16 EMA weights, only when the file is at most --max-file-mib (15) MiB

   DDPM's network is 35.7 M parameters: 71 MB in bf16, over both the 16 MiB a file and the 64 MiB a command
   may bring back, so its weights stay on the device, in ``--run-dir``, which lives only as long as the lease
   (a machine goes back soon after it idles, or after 30 minutes held); one lease gives the throughput, the loss
   curve, a grid and bits/dim of a short run. The small preset (``configs/cifar_small.yaml``, 1.6 M
   parameters, 3.2 MB in bf16) comes back whole and continues in a later lease with ``--init``.
   ``--minutes`` is the training budget alone: start-up (import, JPEG decoding), the checkpoint, the grid and
   the bound add about a minute, and one device command may run 10 minutes.

   DDPM's EMA decay 0.9999 averages over about 10,000 steps, likely more than a lease trains: after N steps the EMA
   still holds 0.9999^N of the starting weights (``ema_weight_of_start`` in the report). ``--ema-decay 0.999``
   suits a run of one lease.

3. Here, with returned weights: ``molediff image sample --checkpoint OUT/cifar10_unet.safetensors -o grid.png``
   and ``molediff image eval --checkpoint OUT/cifar10_unet.safetensors --data gpu_data/cifar10_jpeg.npz``.

Test stage 2 on CPU with a tiny config before spending device time (tests/scripts/test_image_gpu_job.py does):

    python scripts/gpu/train_images.py run --data gpu_data/cifar10_jpeg.npz --config configs/cifar_tiny_test.yaml \
        --minutes 1 --samples 4 --sampler ddim --steps 3 --bpd-images 2 --device cpu --out /tmp/gpu_test
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # job_report, also when this file is loaded by path
import job_report as job  # noqa: E402  (puts the tree's molediff on sys.path)

ROOT = job.ROOT

PACKED = "cifar10_jpeg.npz"
WEIGHTS = "cifar10_unet.safetensors"
MAX_MINUTES = 8.0
CARRY_WARN_MIB = 60.0


# ------------------------------------------------------------------------------------------- prepare (CPU)
def _jpeg(img_chw: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img_chw.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _tree_mib(exclude: Path) -> float | None:
    """MiB of the working tree that travels (tracked and untracked, not ignored), ``exclude`` left out; None
    without git."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                               capture_output=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for name in names:
        p = ROOT / os.fsdecode(name)
        if name and p.is_file() and p.resolve() != exclude.resolve():
            total += p.stat().st_size
    return total / 2**20


def prepare(args) -> None:
    from molediff.images.cifar import SPLITS, read_cifar_batches, read_cifar_jpeg
    from molediff.utils import atomic_path

    src = Path(args.data)
    if not src.exists():
        raise SystemExit(f"prepare: CIFAR-10 data {src} does not exist (give the packed .npz, "
                         f"cifar-10-python.tar.gz or the cifar-10-batches-py folder)")
    if not 1 <= args.quality <= 95:
        raise SystemExit(f"prepare: --quality must lie in 1..95, got {args.quality}")
    dest = Path(args.out) / PACKED
    try:
        if src.is_file() and src.suffix == ".npz":
            # decode every image once (without caching): what travels must be readable on the GPU machine
            counts = {s: len(read_cifar_jpeg(src, s, cache=False)) for s in SPLITS}
            if dest.resolve() != src.resolve():
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
            how = f"copied from {src}"
        else:
            sets = {s: read_cifar_batches(src, s) for s in SPLITS}
            arrays = {}
            for s, data in sets.items():
                blobs = [_jpeg(img, args.quality) for img in data.images]
                arrays[f"{s}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
                arrays[f"{s}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
                arrays[f"{s}_labels"] = data.labels.astype(np.uint8)
            with atomic_path(dest) as tmp, open(tmp, "wb") as f:
                np.savez(f, classes=np.array(sets["train"].classes), **arrays)
            # read back with the task's reader; the JPEG error in 8-bit levels
            errors = []
            for s, data in sets.items():
                back = read_cifar_jpeg(dest, s, cache=False)
                errors.append(np.abs(back.images.astype(np.int16) - data.images).mean() if len(data) else 0.0)
            counts = {s: len(d) for s, d in sets.items()}
            how = (f"packed as JPEG (quality {args.quality}) from the python batches of {src}; mean absolute "
                   f"pixel error {float(np.mean(errors)):.2f} of 255")
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"prepare: {e}") from None
    size = dest.stat().st_size / 2**20
    print(f"wrote {dest}: {counts['train']} train + {counts['test']} test images, {size:.1f} MiB, {how}")
    try:
        carry = str(dest.resolve().relative_to(ROOT))
    except ValueError:
        print(f"warning: {dest} lies outside the working tree {ROOT}; the device carries only paths inside it",
              file=sys.stderr)
        return
    tree = _tree_mib(dest)
    total = size + (tree or 0.0)
    print(f"carry=[{carry!r}]: {size:.1f} MiB" + (f" + the working tree {tree:.1f} MiB = {total:.1f} MiB "
                                                   f"of the 64 MiB the device takes" if tree is not None else ""))
    if total > CARRY_WARN_MIB:
        print(f"warning: {total:.1f} MiB is over {CARRY_WARN_MIB:g} MiB; the device tree carries 64 MiB in all "
              f"(lower --quality, or move large files out of the working tree)", file=sys.stderr)


# ----------------------------------------------------------------------------------------------- run (GPU)
def run(args) -> None:
    from molediff.diffusion import SAMPLERS
    from molediff.images.cifar import load_cifar10
    from molediff.images.grid import save_grid
    from molediff.images.metrics import bits_per_dim_on, fixed_subset, sample_uint8
    from molediff.images.model import ImageDiffusion
    from molediff.training import export_weights
    from molediff.training.weights import load_model

    t_all = time.perf_counter()
    if not 0 < args.minutes <= MAX_MINUTES:
        raise SystemExit(f"run: --minutes must lie in (0, {MAX_MINUTES:g}]: one device command runs 10 minutes "
                         f"and the start-up, grid and bound need the rest")
    if args.sampler not in SAMPLERS:
        raise SystemExit(f"run: unknown --sampler {args.sampler!r}; choose one of {sorted(SAMPLERS)}")
    if args.samples < 1 or args.sample_batch < 1 or args.bpd_images < 0 or args.bpd_batch < 1:
        raise SystemExit("run: --samples, --sample-batch and --bpd-batch must be at least 1, --bpd-images >= 0")
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"run: --data {data} does not exist; write it with the prepare stage and carry it "
                         f"(carry=['gpu_data/{PACKED}'])")
    out = Path(args.out)
    run_dir = Path(args.run_dir or f"runs/gpu_{Path(args.config).stem}")
    try:
        # reads (and on first use decodes) the images: bad data fails here
        training = job.JobRun(args, "images", run_dir, data={"path": str(data)}, optim={"ema_decay": args.ema_decay})
        T = training.task.model.schedule.T
        if args.steps is not None and not 1 <= args.steps <= T:
            raise ValueError(f"--steps must lie in 1..{T} for this model")
    except (FileNotFoundError, ValueError) as e:
        raise job.usage_error(e) from None
    device = training.device
    load_s = time.perf_counter() - t_all
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True     # fixed image shapes: let cuDNN pick the fastest convolutions
    training.train(out)

    weights = export_weights(run_dir, run_dir / WEIGHTS, dtype=torch.bfloat16)
    returned = job.returned_weights(weights, out, args.max_file_mib)
    # sample and measure the bf16 weights that were exported (cast to float32), i.e. what comes back
    model = load_model(ImageDiffusion, weights, device=device)
    with job.Stopwatch(device) as sampling, \
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and args.bf16_sampling):
        images = sample_uint8(model, args.samples, args.sampler, args.steps, 0, args.sample_batch)
    sample_s = sampling.seconds
    save_grid(images, out / "samples.png")

    bpd = None
    if args.bpd_images:
        test = load_cifar10(data, "test")
        n = min(args.bpd_images, len(test))
        t2 = time.perf_counter()
        subset = test.images[fixed_subset(len(test), n, seed=0)]   # the packed file is sorted by class
        bpd = bits_per_dim_on(model, subset, full_chain=not args.bpd_one_draw, batch_size=args.bpd_batch,
                              seed=0)
        bpd = {**bpd, "chain": "one draw" if args.bpd_one_draw else f"full, T = {T}", "split": "test",
               "wall_s": time.perf_counter() - t2}
        bpd["sem"] = None if math.isnan(bpd["sem"]) else bpd["sem"]   # NaN (one image) is not JSON

    report = {
        **training.facts(model, "images", load_s), "data": str(data),
        "samples": {"n": args.samples, "sampler": args.sampler, "steps": args.steps or T, "wall_s": sample_s,
                    "images_per_s": args.samples / sample_s, "bf16": device.type == "cuda" and args.bf16_sampling},
        "bits_per_dim": bpd, "weights": returned,
    }
    job.write_report(report, out, t_all)


def build_parser() -> argparse.ArgumentParser:
    p, sub = job.stage_parsers(__doc__)
    a = sub.add_parser("prepare", help="CIFAR-10 -> one packed-JPEG .npz to carry (CPU)",
                       description="Write OUT/cifar10_jpeg.npz: a packed-JPEG file is checked and copied; the "
                                   "official python batches are encoded as JPEG into the same format (not a "
                                   "uint8 .npz: 176 MiB raw, over the 64 MiB a device tree carries).")
    a.add_argument("--data", required=True,
                   help="packed-JPEG .npz (../shared/data/cifar10_jpeg.npz), cifar-10-python.tar.gz or the "
                        "cifar-10-batches-py folder")
    a.add_argument("--out", default="gpu_data", help=f"folder for {PACKED} (gpu_data/ is git-ignored; carry the file)")
    a.add_argument("--quality", type=int, default=75,
                   help="JPEG quality for the official batches (75: the shared copy's, 53 MiB for all 60,000)")
    b = sub.add_parser("run", help="train for a time budget, export, sample, bits/dim (GPU)",
                       description="Train, export the bf16 EMA weights, sample a grid and measure bits/dim; write "
                                   "report.json, metrics.jsonl, samples.png and (when small enough) the weights "
                                   "into --out.")
    b.add_argument("--data", required=True, help=f"{PACKED} from the prepare stage (any CIFAR-10 path the images "
                                                  f"task reads works too)")
    b.add_argument("--config", default="configs/cifar_ddpm.yaml", help="training config (YAML, task: images)")
    b.add_argument("--run-dir", default=None,
                   help="checkpoints and metrics of the run; a second call resumes from it (default: "
                        "runs/gpu_<config name>; keep it out of carried paths, which replace what is there)")
    job.add_run_arguments(b, sampling=True, weights_limit=True)
    b.add_argument("--minutes", type=float, default=6.0,
                   help=f"training wall-time budget in minutes (at most {MAX_MINUTES:g}; a checkpoint is written "
                        f"when it runs out)")
    b.add_argument("--ema-decay", type=float, default=None,
                   help="EMA decay (overrides the config's; 0.999 suits a run of one lease, DDPM's 0.9999 "
                        "averages over about 10,000 steps)")
    b.add_argument("--samples", type=int, default=64, help="images drawn for samples.png (seeds 0..N-1)")
    b.add_argument("--sample-batch", type=int, default=64, help="images sampled together")
    b.add_argument("--bpd-images", type=int, default=100,
                   help="bits/dim of the bound on N test images, a fixed random subset (0: skip)")
    b.add_argument("--bpd-one-draw", action="store_true",
                   help="one random step per image instead of the full chain (T network calls per image)")
    b.add_argument("--bpd-batch", type=int, default=100, help="test images per batch for bits/dim")
    return p


def main(argv: list[str] | None = None) -> None:
    job.run_stage({"prepare": prepare, "run": run}, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
