"""Exponential moving averages of a model's weights: the fixed-decay ``EMA`` (θ_ema ← d·θ_ema + (1 − d)·θ after
every step) and the power-function ``PowerEMA`` of Karras et al. 2024 used for post-hoc EMA."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class EMA:
    """A shadow copy of ``model``'s parameters (and buffers, copied as-is) in the model's dtype, moved towards the
    model after every step: θ_ema ← d_t θ_ema + (1 − d_t) θ with a fixed decay d_t = ``decay``.

    ``state_dict()`` uses the model's own state-dict names, so the EMA weights load straight into a model.
    Subclasses change only ``decay_at`` (``PowerEMA``).
    """

    label = "EMA"

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self._track(model)

    def _track(self, model: nn.Module) -> None:
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        params = {name for name, _ in model.named_parameters()}
        # averaged: floating parameters; copied: buffers (BatchNorm statistics, counters) and integer tensors
        self._averaged = [k for k, v in self.shadow.items() if k in params and v.is_floating_point()]
        averaged = set(self._averaged)
        self._copied = [k for k in self.shadow if k not in averaged]

    @property
    def buffer_names(self) -> list[str]:
        """State-dict names that are copied from the model rather than averaged (buffers, integer tensors)."""
        return list(self._copied)

    def decay_at(self, t: int) -> float:
        """The decay d_t of update number ``t`` ≥ 1."""
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the model's current weights; buffers are copied."""
        t = self.num_updates + 1
        state = model.state_dict()
        if self._averaged:
            # one fused kernel per dtype/device group instead of one launch per tensor
            torch._foreach_lerp_([self.shadow[k] for k in self._averaged],
                                 [state[k].detach() for k in self._averaged], 1.0 - self.decay_at(t))
        for k in self._copied:
            self.shadow[k].copy_(state[k])
        self.num_updates = t

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the EMA weights."""
        model.load_state_dict(self.shadow, strict=True)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor], num_updates: int | None = None) -> None:
        """Copy ``state`` (names and shapes as the model's state dict) into the shadow; ``num_updates`` sets t
        (kept as it is when None). ValueError when the tensors do not fit."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"{self.label} state does not fit the model: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        for name, value in state.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"{self.label} tensor {name!r} has shape {list(value.shape)} but the model's has "
                                 f"{list(self.shadow[name].shape)}")
            self.shadow[name].copy_(value)
        if num_updates is not None:
            if num_updates < 0:
                raise ValueError(f"num_updates must be >= 0, got {num_updates}")
            self.num_updates = int(num_updates)


# ------------------------------------------------------------------------------------- power-function EMA
SIGMA_REL_MAX = 12 ** -0.5
"""σ_rel of the flattest profile with γ ≥ 0 (γ = 0: a uniform average over all of training, σ_rel = 1/√12)."""


def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel(γ) = sqrt((γ+1) / ((γ+2)² (γ+3))): the relative standard deviation of the power-function
    averaging profile p(τ) ∝ τ^γ on [0, t] (its standard deviation divided by t), Karras et al. 2024,
    "Analyzing and Improving the Training Dynamics of Diffusion Models", §3.1 and App. C.

    ``gamma`` must be ≥ 0 (ValueError otherwise). Decreasing in γ: γ=6.94 → 0.100, γ=16.97 → 0.050.
    """
    gamma = float(gamma)
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"the power-EMA exponent gamma must be a finite number >= 0, got {gamma}")
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent γ ≥ 0 whose power-function profile has relative standard deviation ``sigma_rel``: the
    inverse of ``gamma_to_sigma_rel`` (Karras et al. 2024, §3.1 and App. C). Equivalently, γ is the largest
    real root of the cubic γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0.

    Solved by bisection on γ ∈ [0, 1/σ_rel] instead of with the cubic formula, which suffers cancellation for
    small σ_rel. Bisection works because σ_rel(γ) is strictly decreasing for γ ≥ 0, and because
    σ_rel(γ) < 1/(γ+2) keeps the root below 1/σ_rel. Accurate to about one ulp of γ.

    ``sigma_rel`` must lie in (0, 1/√12 ≈ 0.2887); ValueError otherwise (γ < 0 profiles, which pile their
    weight onto the first steps, are not supported).
    """
    sigma_rel = float(sigma_rel)
    if not 0 < sigma_rel < SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel must lie in (0, {SIGMA_REL_MAX:.4f}), got {sigma_rel}")
    lo, hi = 0.0, 1.0 / sigma_rel
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):   # the bracket cannot shrink any more
            return mid
        if gamma_to_sigma_rel(mid) > sigma_rel:
            lo = mid
        else:
            hi = mid


class PowerEMA(EMA):
    """Power-function EMA of ``model``'s parameters (buffers are copied as-is), Karras et al. 2024, §3.1:

        θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t,    β_t = (1 − 1/t)^(γ+1),

    where t = 1, 2, ... counts the updates and θ_t are the weights after optimiser step t. Unrolled, θ̂_t puts
    weight w_τ = (τ^(γ+1) − (τ−1)^(γ+1)) / t^(γ+1) on θ_τ: exactly the continuous profile
    p(s) = (γ+1) s^γ / t^(γ+1) on [0, t] applied to the piecewise-constant trajectory θ(s) = θ_⌈s⌉. Unlike a
    fixed-decay EMA, its averaging window stays a fixed fraction of training (relative std ``sigma_rel``),
    and snapshots of two such EMAs let ``posthoc_ema.reconstruct`` build any other σ_rel after training.

    The shadow tensors keep the model's dtype; ``state_dict()`` uses the model's own state-dict names, so the
    weights load straight into a model. ``num_updates`` (= t) is part of the state: save it beside the
    tensors (``load_state_dict(state, num_updates)``).
    """

    label = "power-EMA"

    def __init__(self, model: nn.Module, sigma_rel: float):
        self.gamma = sigma_rel_to_gamma(sigma_rel)   # validates sigma_rel
        self.sigma_rel = float(sigma_rel)
        self._track(model)

    def beta(self, t: int) -> float:
        """β_t = (1 − 1/t)^(γ+1) for update number ``t`` ≥ 1 (β_1 = 0: the first update copies the weights)."""
        return (1.0 - 1.0 / t) ** (self.gamma + 1.0)

    def decay_at(self, t: int) -> float:
        return self.beta(t)
