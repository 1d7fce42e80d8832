"""Train CIFARNet, the classifier behind FD-CIFARNet, on the 50,000 CIFAR-10 training images and ship it.

    OMP_NUM_THREADS=1 python scripts/train_cifar_classifier.py --data /path/to/cifar10_jpeg.npz \
        --epochs 7 --threads 1 --out molediff/pretrained/cifarnet.safetensors

Reads the training and test splits with ``molediff.images.cifar.load_cifar10`` (official python batches or the
packed-JPEG ``.npz``), trains with ``molediff.images.classifier.train_cifarnet``, writes the weights (bf16 by
default, the config and the recipe in the metadata), reloads the written file and reports its top-1 accuracy on
the 10,000 test images, with the wall and CPU times the model card quotes. ``--json`` writes those numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time

import numpy as np
import torch

from molediff.images.cifar import load_cifar10
from molediff.images.classifier import (
    CIFARNetConfig,
    cifarnet_accuracy,
    cifarnet_features,
    load_cifarnet,
    save_cifarnet,
    train_cifarnet,
)
from molediff.utils import atomic_write, check_output_path

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CIFAR-10: cifar-10-python.tar.gz, its folder, or a packed .npz")
    p.add_argument("--out", default="molediff/pretrained/cifarnet.safetensors", help="weights file to write")
    p.add_argument("--epochs", type=float, default=7, help="passes over the 50,000 training images (may be fractional)")
    p.add_argument("--batch-size", type=int, default=256, help="images per step")
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay on conv and linear weights")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy")
    p.add_argument("--widths", type=int, nargs=4, default=list(CIFARNetConfig().widths), metavar="W",
                   help="channels of the four stages")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, batch order and augmentation")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast of the forward pass (auto: where the CPU has native bf16)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="storage precision of the shipped file")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (timing runs)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the numbers as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    check_output_path(args.out)
    if args.json:
        check_output_path(args.json, "--json")

    t_start, c_start = time.perf_counter(), _cpu_seconds()
    train = load_cifar10(args.data, "train")
    test = load_cifar10(args.data, "test")
    print(f"data: {len(train)} train and {len(test)} test images from {args.data}", flush=True)
    config = CIFARNetConfig(widths=tuple(args.widths))
    bf16 = None if args.bf16 == "auto" else args.bf16 == "on"
    model, hist = train_cifarnet(train.images, train.labels, epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.lr, seed=args.seed, config=config, weight_decay=args.weight_decay,
                                 label_smoothing=args.label_smoothing, bf16=bf16, max_steps=args.max_steps,
                                 log_every=50)
    steps_per_epoch = len(train) // args.batch_size
    per_epoch = [float(np.mean(hist["loss"][i:i + steps_per_epoch]))
                 for i in range(0, len(hist["loss"]), steps_per_epoch)]
    print(f"trained {hist['steps']} steps ({hist['epochs']:.2f} epochs) in {hist['seconds']:.0f} s wall, "
          f"{hist['cpu_seconds']:.0f} s CPU (bf16 autocast: {hist['bf16']}); mean loss per epoch: "
          + ", ".join(f"{v:.3f}" for v in per_epoch), flush=True)
    acc_fp32 = cifarnet_accuracy(model, test.images, test.labels)
    n_params = sum(p.numel() for p in model.parameters())
    recipe = {"epochs": args.epochs, "steps": hist["steps"], "batch_size": args.batch_size, "lr": args.lr,
              "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing, "seed": args.seed,
              "optimizer": "SGD nesterov 0.9, one-cycle", "augmentation": "reflect-pad-4 crop + hflip",
              "bf16_autocast": hist["bf16"], "train_cpu_seconds": round(hist["cpu_seconds"], 1),
              "test_accuracy_fp32": acc_fp32, "data": str(args.data)}
    dtype = DTYPES[args.dtype]
    save_cifarnet(model, args.out, dtype=dtype, extra=recipe)
    shipped = load_cifarnet(args.out)
    acc = cifarnet_accuracy(shipped, test.images, test.labels)
    some = np.random.default_rng(0).permutation(len(train))[:10000]    # files may be sorted by class
    train_acc = cifarnet_accuracy(shipped, train.images[some], train.labels[some])
    feats = cifarnet_features(shipped, test.images[:1000])
    result = {**recipe, "parameters": n_params, "widths": list(config.widths), "storage_dtype": args.dtype,
              "test_accuracy": acc, "train_accuracy_10000": train_acc, "feature_dim": feats.shape[1],
              "loss_per_epoch": per_epoch, "train_wall_seconds": round(hist["seconds"], 1),
              "process_cpu_seconds": round(_cpu_seconds() - c_start, 1),
              "process_wall_seconds": round(time.perf_counter() - t_start, 1),
              "file_bytes": __import__("os").path.getsize(args.out)}
    print(f"{n_params:,} parameters; test accuracy {acc_fp32:.4f} (fp32 weights), {acc:.4f} (the written "
          f"{args.dtype} file); train accuracy (10,000 at random, no augmentation) {train_acc:.4f}; features "
          f"[N, {feats.shape[1]}]; wrote {args.out} ({result['file_bytes']:,} bytes); process CPU "
          f"{result['process_cpu_seconds']:.0f} s, wall {result['process_wall_seconds']:.0f} s", flush=True)
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
