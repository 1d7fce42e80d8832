"""A toy training task: a small MLP regressing a fixed random dataset. It exercises the whole engine (data
order, noise inside the loss, EMA, checkpoints, DDP) in seconds on a CPU; ``configs/toy.yaml`` runs it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ToyMLPConfig:
    in_dim: int = 8
    hidden: int = 32
    layers: int = 2
    out_dim: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ToyMLPConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown toy model config keys: {sorted(unknown)}")
        return cls(**d)


class ToyMLP(nn.Module):
    """x [B, in_dim] -> y [B, out_dim]."""

    config_class = ToyMLPConfig

    def __init__(self, config: ToyMLPConfig):
        super().__init__()
        self.config = config
        dims = [config.in_dim] + [config.hidden] * config.layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        blocks.append(nn.Linear(dims[-1], config.out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class ToyBatch:
    x: Tensor   # [B, in_dim]
    y: Tensor   # [B, out_dim]

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class ToyTask:
    """Regress y = sin(x W) on ``n`` fixed random points. ``input_noise`` > 0 jitters the inputs with draws
    from torch's global RNG inside ``loss`` (as a diffusion loss draws its noise)."""

    model: ToyMLP
    x: Tensor
    y: Tensor
    input_noise: float = 0.0

    def loss(self, model: nn.Module, batch: ToyBatch) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        x, y = batch.x.to(device), batch.y.to(device)
        if self.input_noise:
            x = x + self.input_noise * torch.randn_like(x)
        loss = (model(x) - y).pow(2).mean()
        return loss, {"mse": float(loss.detach())}

    def batches(self, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> Iterator[ToyBatch]:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must divide evenly over {world_size} processes")
        order = np.random.default_rng([seed, epoch]).permutation(len(self.x))
        per_rank = batch_size // world_size
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = torch.from_numpy(order[start + rank * per_rank: start + (rank + 1) * per_rank])
            yield ToyBatch(self.x[idx], self.y[idx])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        return {"eval_mse": float((model(self.x.to(device)) - self.y.to(device)).pow(2).mean())}


def make_toy_task(model: dict | None = None, data: dict | None = None) -> ToyTask:
    """``model``: ToyMLPConfig fields; ``data``: ``n`` (points), ``seed`` (dataset seed), ``input_noise``.
    The MLP's initial weights come from torch's global RNG (seed it first)."""
    data = dict(data or {})
    unknown = set(data) - {"n", "seed", "input_noise"}
    if unknown:
        raise ValueError(f"unknown toy data keys: {sorted(unknown)}")
    cfg = ToyMLPConfig.from_dict(dict(model or {}))
    g = torch.Generator().manual_seed(int(data.get("seed", 0)))
    x = torch.randn(int(data.get("n", 256)), cfg.in_dim, generator=g)
    w = torch.randn(cfg.in_dim, cfg.out_dim, generator=g) / cfg.in_dim**0.5
    y = torch.sin(2.0 * x @ w)
    return ToyTask(ToyMLP(cfg), x, y, input_noise=float(data.get("input_noise", 0.0)))


def build_task(config) -> ToyTask:
    """``molediff train`` entry for ``task: toy``."""
    return make_toy_task(config.model, config.data)
