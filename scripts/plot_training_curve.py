"""Plot a shipped model's quality against cumulative CPU time: training loss of a run (its metrics.jsonl) and
scored evaluation points, as the PNG beside a model card.

    python scripts/plot_training_curve.py --metrics runs/qm9/metrics.jsonl --offset-hours 2.03 --threads 1 \\
        --points points.json -o molediff/pretrained/qm9_egnn_curve.png

``--points`` is a JSON list of {"core_hours", "label", and any of "atom_stability", "mol_stability",
"validity"} (fractions) measured with one protocol. Core-hours = wall hours × threads of the training process;
``--offset-hours`` is the compute spent before this run (earlier sessions). A resumed run restarts its
``time_s`` at zero; the segments are joined.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from molediff.utils import atomic_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, help="the run's metrics.jsonl")
    p.add_argument("--offset-hours", type=float, default=0.0, help="core-hours spent before this run")
    p.add_argument("--threads", type=float, default=1.0, help="threads of the training process")
    p.add_argument("--points", required=True, help="JSON list of scored evaluation points")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    args = p.parse_args()

    rows = [json.loads(line) for line in open(args.metrics) if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    hours, loss, elapsed, last = [], [], 0.0, 0.0
    for r in train:
        if r["time_s"] < last:          # a resumed process starts its clock again
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
    for key, label in (("atom_stability", "atom stability"), ("mol_stability", "molecule stability"),
                       ("validity", "validity")):
        xs = [q["core_hours"] for q in points if key in q]
        ax_q.plot(xs, [100 * q[key] for q in points if key in q], "o-", label=label)
    for q in points:
        ax_q.annotate(q["label"], (q["core_hours"], 100 * q.get("atom_stability", 0)), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    ax_q.set_xlabel("cumulative CPU core-hours")
    ax_q.set_ylabel("%")
    ax_q.set_ylim(0, 100)
    ax_q.set_title("quality (same seeds and sampler at every point)")
    ax_q.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(args.output) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
