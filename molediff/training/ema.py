"""Exponential moving average of a model's weights: θ_ema ← d·θ_ema + (1 − d)·θ after every step."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """A shadow copy of ``model``'s parameters (and buffers, copied as-is) in the model's dtype.

    ``state_dict()`` uses the model's own state-dict names, so the EMA weights load straight into a model.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._param_names = {name for name, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards the model's current weights; buffers are copied."""
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if name in self._param_names and shadow.is_floating_point():
                shadow.lerp_(value.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the EMA weights."""
        model.load_state_dict(self.shadow, strict=True)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"EMA state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for name, value in state.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"EMA tensor {name!r} has shape {list(value.shape)} but the model's has "
                                 f"{list(self.shadow[name].shape)}")
            self.shadow[name].copy_(value)
