"""Warm-start a molecule model with bonds (issue 21) from atoms-only weights: CPU time adds up across designs.

The bond model of a config such as ``configs/qm9_bonds_cpu.yaml`` has every parameter of the atoms-only model of
the same size (``qm9_egnn``: EGNN 4 × 96) plus new ones: a projection of the noisy bond features into the first
layer of each edge MLP (``edge_attr_projection``) and the bond ε head. This script builds the bond model, copies
every parameter the two share (names and shapes must match, otherwise ValueError), sets the new input
projections to zero, so that the warm-started network's coordinate and atom-type ε are exactly the atoms-only
model's whatever the bonds (checked here on a random batch), leaves the bond head at its initial draw, and writes
the result as an exported weights file. Train from it with the library's one ``--init`` rule::

    python scripts/warm_start_bonds.py --config configs/qm9_bonds_cpu.yaml --from qm9_egnn \\
        --out runs/qm9_bonds_warm.safetensors
    molediff train configs/qm9_bonds_cpu.yaml --init runs/qm9_bonds_warm.safetensors --out runs/qm9_bonds_1

The atom-count histogram of the source model is kept (both train on QM9's training split).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def warm_start(config_path: str, source: str, out: str, seed: int = 0) -> dict:
    """Build the bond model of ``config_path`` (model section), copy ``source``'s shared parameters into it, zero
    the bond-input projections and write it to ``out`` (fp32 safetensors with the model's class and config).
    Returns {"copied": n, "new": [names], "max_node_eps_difference": float} (the last 0 up to float rounding).
    ValueError when a shared name has another shape, or the source has a parameter the bond model lacks."""
    from molediff.molecules.model import MoleculeDiffusion, MoleculeDiffusionConfig
    from molediff.training.checkpoint import config_hash
    from molediff.training.config import load_config
    from molediff.training.weights import export_metadata, load_model, write_weights

    config = load_config(config_path)
    atoms_only = load_model(MoleculeDiffusion, source)
    settings = dict(config.model)
    settings.setdefault("atom_count_histogram", atoms_only.config.atom_count_histogram)
    model_cfg = MoleculeDiffusionConfig.from_dict(settings)
    if not model_cfg.bond_orders:
        raise ValueError(f"{config_path}: model.bond_orders is empty; this script warm-starts bond models")
    torch.manual_seed(seed)
    model = MoleculeDiffusion(model_cfg)
    target, given = model.state_dict(), atoms_only.state_dict()
    missing = sorted(set(given) - set(target))
    if missing:
        raise ValueError(f"{source} has parameter {missing[0]!r}, which the bond model lacks")
    for name, tensor in given.items():
        if target[name].shape != tensor.shape:
            raise ValueError(f"parameter {name!r} is {tuple(tensor.shape)} in {source} and "
                             f"{tuple(target[name].shape)} in the bond model")
        target[name] = tensor.clone()
    new = sorted(set(target) - set(given))
    for name in new:
        if name.endswith("edge_attr_projection.weight"):
            target[name] = torch.zeros_like(target[name])
    model.load_state_dict(target)

    # with zero bond-input projections the coordinate and atom-type ε ignore the bonds: exactly the source's
    difference = _node_eps_difference(atoms_only, model, seed)
    state = {"model_class": type(model).__name__, "model_config": model_cfg.to_dict(),
             "model_config_hash": config_hash(model_cfg.to_dict()), "step": 0,
             "config": {"warm_start": {"from": str(source), "config": str(config_path)}}}
    write_weights(model.state_dict(), out, export_metadata(state, ema=False), dtype=torch.float32)
    return {"copied": len(given), "new": new, "max_node_eps_difference": difference}


def _node_eps_difference(atoms_only, model, seed: int) -> float:
    """Largest |ε| difference of coordinates and atom types between the two models on one random noisy batch
    (the bond model given random noisy bonds)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([9, 14, 19])
    n = int(counts.max())
    mask = torch.arange(n)[None] < counts[:, None]
    types = torch.randint(0, len(atoms_only.config.vocabulary), (3, n), generator=g)
    x = atoms_only.encode(torch.randn(3, n, 3, generator=g), types, mask)
    z_nodes = atoms_only.space.project(x + 0.3 * torch.randn(x.shape, generator=g), mask)
    t = torch.full((3,), 0.4)
    space = model.space
    z = space.project(space.join(z_nodes, torch.randn(3, n, n, space.edge_channels, generator=g)), mask)
    with torch.no_grad():
        reference = atoms_only.eps_fn(mask)(z_nodes, t)
        warm, _ = space.split(model.eps_fn(mask)(z, t))
    return float((reference - warm).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config of the bond model (its model section)")
    parser.add_argument("--from", dest="source", default="qm9_egnn",
                        help="atoms-only weights: a shipped name (default qm9_egnn), an exported file or a run")
    parser.add_argument("--out", required=True, help="the warm-started weights (.safetensors) to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bond head's initial draw and the check")
    args = parser.parse_args(argv)
    try:
        report = warm_start(args.config, args.source, args.out, args.seed)
    except (ValueError, FileNotFoundError) as e:
        parser.error(" ".join(str(e).split()))
    print(json.dumps({**report, "new": len(report["new"]), "out": args.out}))
    if report["max_node_eps_difference"] > 1e-4:
        print("the warm-started node ε differs from the source's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
