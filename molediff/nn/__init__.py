"""Equivariant denoisers for molecules: ``F(pos, h, t, mask, context) → (eps_pos, eps_h)``.

Two backbones share one contract (:class:`~molediff.nn.common.DenoiserBase`):

* ``"egnn"``: :class:`EGNNDenoiser`, EDM's EGNN dynamics, dense and batched (fast; the default choice);
* ``"e3nn"``: :class:`E3nnDenoiser`, tensor-product messages over spherical harmonics (slower, richer).

Pick one from a plain config, e.g. ``build_denoiser({"name": "egnn", "in_node_features": 6})``; save
``denoiser_config_dict(net.config)`` beside the ``state_dict`` to rebuild it later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from molediff.nn.common import DenoiserBase
from molediff.nn.e3nn_net import E3nnConfig, E3nnDenoiser
from molediff.nn.egnn import EGNNConfig, EGNNDenoiser
from molediff.utils import build_config

__all__ = [
    "DenoiserBase",
    "DenoiserConfig",
    "E3nnConfig",
    "E3nnDenoiser",
    "EGNNConfig",
    "EGNNDenoiser",
    "build_denoiser",
    "check_denoiser_config",
    "denoiser_config",
    "denoiser_config_dict",
]

DenoiserConfig = EGNNConfig | E3nnConfig

_REGISTRY: dict[str, tuple[type, type[nn.Module]]] = {
    "egnn": (EGNNConfig, EGNNDenoiser),
    "e3nn": (E3nnConfig, E3nnDenoiser),
}


def denoiser_config(config: Mapping[str, Any], section: str = "denoiser.") -> DenoiserConfig:
    """The frozen config of a denoiser from a mapping ``{"name": "egnn" | "e3nn", **config fields}``.

    ValueError naming the key (prefixed by ``section``) for an unknown name, unknown fields or wrong types.
    """
    fields = dict(config)
    name = fields.pop("name", None)
    if name not in _REGISTRY:
        raise ValueError(f"config key {section + 'name'!r} must be one of {sorted(_REGISTRY)}, got {name!r}")
    return build_config(_REGISTRY[name][0], fields, section)


def check_denoiser_config(config: Mapping[str, Any], fixed: tuple[str, ...] = (),
                          section: str = "model.denoiser.") -> None:
    """Validate a denoiser mapping whose ``fixed`` fields (e.g. ``in_node_features``) a model fills in itself.

    Lets a model config fail on a misspelt denoiser key when it is read, before any data is loaded.
    ValueError naming the key; also when the mapping sets one of the ``fixed`` fields.
    """
    set_here = sorted(set(config) & set(fixed))
    if set_here:
        raise ValueError(f"config key {section + set_here[0]!r} is set by the model from its data; remove it")
    placeholders = {"in_node_features": 1} if "in_node_features" in fixed else {}
    denoiser_config({**config, **placeholders}, section)


def build_denoiser(config: Mapping[str, Any] | DenoiserConfig) -> nn.Module:
    """Build a denoiser from its frozen config, or from a mapping ``{"name": ..., **config fields}``."""
    if isinstance(config, Mapping):
        config = denoiser_config(config)
    for config_type, model_type in _REGISTRY.values():
        if type(config) is config_type:
            return model_type(config)
    raise ValueError(f"expected a mapping or one of {[c.__name__ for c, _ in _REGISTRY.values()]}, "
                     f"got {type(config).__name__}")


def denoiser_config_dict(config: DenoiserConfig) -> dict[str, Any]:
    """The JSON-ready mapping that :func:`build_denoiser` accepts (``name`` plus the config fields)."""
    for name, (config_type, _) in _REGISTRY.items():
        if type(config) is config_type:
            return {"name": name, **dataclasses.asdict(config)}
    raise ValueError(f"not a denoiser config: {type(config).__name__}")
