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


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molediff.utils import atomic_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, nargs="+", help="the runs' metrics.jsonl files, in training order")
    p.add_argument("--offset-hours", type=float, default=0.0, help="core-hours spent before this run")
    p.add_argument("--threads", type=float, default=1.0, help="threads of the training process")
    p.add_argument("--points", required=True, help="JSON list of scored evaluation points")
    p.add_argument("--keys", nargs="+", default=list(PERCENT_KEYS), help="values of the points to draw")
    p.add_argument("--ylabel", default="%", help="axis label of the quality panel")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    args = p.parse_args()

    hours, loss, eval_hours, eval_bpd, elapsed, last = [], [], [], [], 0.0, 0.0
    for path in args.metrics:
        for r in (json.loads(line) for line in open(path) if line.strip()):
            if r.get("kind") not in ("train", "eval"):
                continue
            if r.get("kind") == "eval":
                if "eval_bits_per_dim" in r and hours:
                    eval_hours.append(hours[-1])
                    eval_bpd.append(r["eval_bits_per_dim"])
                continue
            if r["time_s"] < last:      # a new file or a resumed process starts its clock again
                elapsed += last
            last = r["time_s"]
            hours.append(args.offset_hours + (elapsed + r["time_s"]) / 3600 * args.threads)
            loss.append(r["loss"])
    points = json.load(open(args.points))

    fig, (ax_loss, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(hours, loss, lw=0.8)
    ax_loss.set_xlabel("cumulative CPU core-hours")
    ax_loss.set_ylabel("training loss (ε-MSE, 50-step means)")
    ax_loss.set_title("training loss of the continued runs (joined)")
    ax_loss.set_yscale("log")
    if eval_bpd:
        ax_bpd = ax_loss.twinx()
        ax_bpd.plot(eval_hours, eval_bpd, "s--", color="tab:red", ms=4, lw=0.8)
        ax_bpd.set_ylabel("bits/dim, one-draw estimate (engine's evaluation)", color="tab:red")
    percent = all(k in PERCENT_KEYS for k in args.keys)
    scale = 100 if percent else 1
    for key in args.keys:
        xs = [q["core_hours"] for q in points if key in q]
        ax_q.plot(xs, [scale * q[key] for q in points if key in q], "o-", label=PERCENT_KEYS.get(key, key))
    first = args.keys[0]
    for q in points:
        ax_q.annotate(q["label"], (q["core_hours"], scale * q.get(first, 0)), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    ax_q.set_xlabel("cumulative CPU core-hours")
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
