"""Check: does bf16 autocast change what the molecule model learns? Loss and gradients under bf16 autocast
against float32 on the same QM9 validation batches and the same noise draws.

    python scripts/bench_precision.py --checkpoint runs/qm9_cpu_small --batches 8

Prints the mean loss in both precisions and the cosine similarity of the full gradient per batch (1.0: same
direction). For scale, two different minibatches' gradients agree far less than any value near 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import table_header  # noqa: E402


def main() -> None:
    from molediff.data.qm9 import load_qm9
    from molediff.molecules.pretrained import load_model
    from molediff.molecules.training import MoleculeTask

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="weights or run directory (default: the shipped model)")
    p.add_argument("--batches", type=int, default=8, help="validation batches of 64 molecules")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).train()
    task = MoleculeTask(model=model, dataset=load_qm9("valid"))
    batches = [b for _, b in zip(range(args.batches), task.batches(0, 0, 0, 1, 64))]

    def loss_and_grad(bf16: bool, batch, seed: int):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch.positions, batch.type_index, batch.mask,
                         generator=torch.Generator().manual_seed(seed)).mean()
        loss.backward()
        return loss.item(), torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None])

    print(f"# {args.checkpoint or 'shipped qm9_egnn'}; {args.batches} QM9 validation batches of 64; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(table_header(["batch", "loss fp32", "loss bf16", "gradient cosine"]))
    for k, batch in enumerate(batches):
        l32, g32 = loss_and_grad(False, batch, k)
        l16, g16 = loss_and_grad(True, batch, k)
        cosine = torch.nn.functional.cosine_similarity(g32, g16, dim=0).item()
        print(f"| {k} | {l32:.5f} | {l16:.5f} | {cosine:.4f} |")


if __name__ == "__main__":
    main()
