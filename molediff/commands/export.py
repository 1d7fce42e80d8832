"""Export a training run as one compact weights file (what `generate --checkpoint` and the package ship).

Without post-hoc EMA snapshots the checkpoint's EMA weights are written. With snapshots (`posthoc_ema` in the
training config), `--sigma-rel S` reconstructs the EMA of relative length S (Karras et al. 2024, §3), and
`--search S1 S2 ...` reconstructs each, scores it by the task's validation loss on fixed noise draws (the
checkpoint's own EMA is scored too, as a baseline), prints the table and exports the best."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="training run directory (or its checkpoints folder)")
    parser.add_argument("-o", "--output", required=True, help="weights file to write (.safetensors)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--sigma-rel", type=float, default=None, metavar="S",
                        help="reconstruct the post-hoc EMA of this relative length (e.g. 0.05)")
    choice.add_argument("--search", type=float, nargs="+", default=None, metavar="S",
                        help="reconstruct these relative lengths, keep the one with the lowest validation loss")
    parser.add_argument("--molecules", type=int, default=1000,
                        help="validation molecules for --search (fixed noise draws, 4 per molecule)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                        help="storage type of the written weights (they load into float32; not the compute "
                             "precision of the sampling commands' --precision)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
    from ..utils import UsageError, check_output_path, set_threads

    if not args.output.endswith(".safetensors"):
        raise UsageError(f"--output must name a .safetensors file, got {args.output!r}")
    check_output_path(args.output)
    if args.molecules < 1:
        raise UsageError("--molecules must be at least 1")
    if args.sigma_rel is not None and args.sigma_rel <= 0 or any(s <= 0 for s in args.search or ()):
        raise UsageError("--sigma-rel and --search take relative lengths above 0")
    import torch

    from ..training.posthoc_ema import export_posthoc_ema
    from ..training.weights import export_weights

    set_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    sigma_rel = args.sigma_rel
    if args.search:
        sigma_rel = _search(args.run, args.search, args.molecules)
    if sigma_rel is None:
        export_weights(args.run, args.output, dtype=dtype)
        print(f"wrote {args.output}: the checkpoint's EMA weights")
    else:
        export_posthoc_ema(args.run, sigma_rel, args.output, dtype=dtype)
        print(f"wrote {args.output}: post-hoc EMA with sigma_rel {sigma_rel:g}")
    return 0


def _search(run_dir: str, candidates: list[float], molecules: int) -> float | None:
    """The σ_rel (None: the checkpoint's own EMA) with the lowest validation loss; prints the table."""
    from ..training.checkpoint import find_checkpoint, read_state
    from ..training.config import config_from_dict
    from ..training.posthoc_ema import list_snapshots, reconstruct
    from ..training.tasks import build_task
    from ..training.weights import load_weights

    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise ValueError(f"{run_dir} holds no post-hoc EMA snapshots; train with posthoc_ema set to use --search")
    state = read_state(find_checkpoint(run_dir))
    task = build_task(config_from_dict(state["config"]))
    if not hasattr(task, "validation_loss"):
        raise ValueError(f"task {state['config'].get('task')!r} has no validation loss; choose --sigma-rel yourself")
    model = task.model.eval()
    rows = []
    load_weights(run_dir, model, use_ema=True)
    rows.append((None, task.validation_loss(model, molecules=molecules)))
    for s in candidates:
        model.load_state_dict(reconstruct(snapshots, s))
        rows.append((s, task.validation_loss(model, molecules=molecules)))
    best = min(rows, key=lambda r: r[1])
    print(f"{'EMA':<24} {'validation loss':>16}")
    for s, loss in rows:
        label = "checkpoint EMA" if s is None else f"post-hoc sigma_rel {s:g}"
        print(f"{label:<24} {loss:>16.5f}{'   <- best' if (s, loss) == best else ''}")
    return best[0]
