"""Plot a shipped model's quality against cumulative CPU time: training loss of a run (its metrics.jsonl) and
scored evaluation points, as the PNG beside a model card.

    python scripts/plot_training_curve.py --metrics runs/qm9/metrics.jsonl --offset-hours 2.03 --threads 1 \\
        --points points.json -o molediff/pretrained/qm9_egnn_curve.png

``--points`` is a JSON list of {"core_hours", "label", and measured values} taken with one protocol; ``--keys``
names the values to draw (default: EDM's "atom_stability", "mol_stability", "validity" as fractions, drawn
in %). Core-hours = wall hours × threads of the training process; ``--offset-hours`` is the compute spent before
the first run. Several ``--metrics`` files (runs that continued one another, e.g. a warm start with a changed
recipe) are joined in order; a resumed run restarts its ``time_s`` at zero and is joined too. The engine's
evaluation rows (``eval_bits_per_dim``) are drawn on a second axis of the loss panel.

    python scripts/plot_training_curve.py --metrics eps/metrics.jsonl v/metrics.jsonl --points fd.json \
        --keys fd_cifarnet --ylabel "FD-CIFARNet (N = 100)" -o molediff/pretrained/cifar10_unet_small_curve.png
"""

from __future__ import annotations

import argparse
import json

PERCENT_KEYS = {"atom_stability": "atom stability", "mol_stability": "molecule stability", "validity": "validity"}


def loss_curve(metrics: list[str], batch_sizes: list[int] | None = None, offset_hours: float = 0.0,
               threads: float = 1.0) -> tuple[list, list, list, list]:
    """(x, training loss, x of evaluations, their bits/dim) from the runs' metrics.jsonl files joined in order.

    x is cumulative core-hours (``offset_hours`` + wall hours × ``threads``) or, with ``batch_sizes`` (one per
    file), training samples seen in millions: each file's steps count from its own start, since a run begun
    with ``--init`` restarts at step 0 while a resumed one continues within its file.
    """
    x_loss, loss, eval_x, eval_bpd, elapsed, last, samples_before = [], [], [], [], 0.0, 0.0, 0.0
    for k, path in enumerate(metrics):
        file_steps = 0
        for r in (json.loads(line) for line in open(path) if line.strip()):
            if r.get("kind") not in ("train", "eval"):
                continue
            if r.get("kind") == "eval":
                if "eval_bits_per_dim" in r and x_loss:
                    eval_x.append(x_loss[-1])
                    eval_bpd.append(r["eval_bits_per_dim"])
                continue
            if r["time_s"] < last:      # a new file or a resumed process starts its clock again
                elapsed += last
            last = r["time_s"]
            if batch_sizes is not None:
                file_steps = r["step"]
                x_loss.append(samples_before + r["step"] * batch_sizes[k] / 1e6)
            else:
                x_loss.append(offset_hours + (elapsed + r["time_s"]) / 3600 * threads)
            loss.append(r["loss"])
        if batch_sizes is not None:
            samples_before += file_steps * batch_sizes[k] / 1e6
    return x_loss, loss, eval_x, eval_bpd


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molediff.utils import atomic_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, nargs="+", help="the runs' metrics.jsonl files, in training order")
    p.add_argument("--offset-hours", type=float, default=0.0, help="core-hours spent before this run")
    p.add_argument("--threads", type=float, default=1.0, help="threads of the training process")
    p.add_argument("--x", choices=["core-hours", "samples"], default="core-hours",
                   help="horizontal axis: cumulative CPU core-hours, or training samples seen (millions; for a "
                        "lineage that mixes CPU and GPU runs, whose hours do not add); points then give "
                        "'samples_millions'")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="with --x samples: the batch size of each --metrics file, in the same order")
    p.add_argument("--points", required=True, help="JSON list of scored evaluation points")
    p.add_argument("--keys", nargs="+", default=list(PERCENT_KEYS), help="values of the points to draw")
    p.add_argument("--ylabel", default="%", help="axis label of the quality panel")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    args = p.parse_args()
    by_samples = args.x == "samples"
    if by_samples and (args.batch_sizes is None or len(args.batch_sizes) != len(args.metrics)):
        p.error("--x samples needs one --batch-sizes value per --metrics file")
    x_key = "samples_millions" if by_samples else "core_hours"
    x_label = "training samples seen (millions)" if by_samples else "cumulative CPU core-hours"

    x_loss, loss, eval_x, eval_bpd = loss_curve(args.metrics, args.batch_sizes if by_samples else None,
                                                args.offset_hours, args.threads)
    points = json.load(open(args.points))

    fig, (ax_loss, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(x_loss, loss, lw=0.8)
    ax_loss.set_xlabel(x_label)
    ax_loss.set_ylabel("training loss (ε-MSE, 50-step means)")
    ax_loss.set_title("training loss of the continued runs (joined)")
    ax_loss.set_yscale("log")
    if eval_bpd:
        ax_bpd = ax_loss.twinx()
        ax_bpd.plot(eval_x, eval_bpd, "s--", color="tab:red", ms=4, lw=0.8)
        ax_bpd.set_ylabel("bits/dim, one-draw estimate (engine's evaluation)", color="tab:red")
    percent = all(k in PERCENT_KEYS for k in args.keys)
    scale = 100 if percent else 1
    for key in args.keys:
        xs = [q[x_key] for q in points if key in q]
        ax_q.plot(xs, [scale * q[key] for q in points if key in q], "o-", label=PERCENT_KEYS.get(key, key))
    first = args.keys[0]
    for q in points:
        ax_q.annotate(q["label"], (q[x_key], scale * q.get(first, 0)), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    ax_q.set_xlabel(x_label)
    ax_q.set_ylabel(args.ylabel)
    if percent:
        ax_q.set_ylim(0, 100)
    ax_q.set_title("quality (same seeds and sampler at every point)")
    ax_q.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(args.output) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
