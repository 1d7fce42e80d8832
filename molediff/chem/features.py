"""Atom features for the diffusion models: EDM's encoding of atom types (Hoogeboom et al. 2022, §3.3 and App. B).

An atom of type k (an index into a vocabulary of atomic numbers) becomes ``[one-hot(k) · type_scale |
Z · charge_scale]``; EDM uses 1/4 and 1/10, and reports that without the 1/4 its QM9 molecule stability drops
from 82.0 % to 46.9 %. The de novo model diffuses these channels; the conformer model is conditioned on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AtomTypeEncoding", "check_vocabulary"]


def check_vocabulary(vocabulary: Sequence[int]) -> None:
    """ValueError unless ``vocabulary`` lists distinct atomic numbers in 1..118."""
    if not vocabulary or len(set(vocabulary)) != len(vocabulary) or not all(1 <= int(z) <= 118 for z in vocabulary):
        raise ValueError(f"vocabulary must list distinct atomic numbers in 1..118, got {tuple(vocabulary)}")


class AtomTypeEncoding(nn.Module):
    """Atom types ↔ feature channels ``[B, N, K (+1)]`` for a vocabulary of K atomic numbers.

    Holds no parameters (its lookup table is a non-persistent buffer, so it adds nothing to a state dict).
    """

    def __init__(self, vocabulary: Sequence[int], type_scale: float = 0.25, charge_scale: float = 0.1,
                 include_charges: bool = True):
        super().__init__()
        check_vocabulary(vocabulary)
        self.type_scale, self.charge_scale, self.include_charges = type_scale, charge_scale, include_charges
        self.register_buffer("vocabulary", torch.tensor(tuple(vocabulary), dtype=torch.long), persistent=False)

    @property
    def width(self) -> int:
        """Feature channels: K one-hot types (+1 scaled atomic number)."""
        return len(self.vocabulary) + int(self.include_charges)

    def forward(self, type_index: Tensor, mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Features ``[B, N, K (+1)]``, zero at padding.

        Shapes: type_index [B, N] int (indices into the vocabulary; anything at padding), mask [B, N] bool.
        """
        if type_index.shape != mask.shape:
            raise ValueError(f"type_index {tuple(type_index.shape)} and mask {tuple(mask.shape)} must agree")
        index = torch.where(mask, type_index, torch.zeros_like(type_index))
        parts = [nn.functional.one_hot(index, len(self.vocabulary)).to(dtype) * self.type_scale]
        if self.include_charges:
            parts.append(self.vocabulary[index].to(dtype).unsqueeze(-1) * self.charge_scale)
        return torch.cat(parts, -1) * mask.unsqueeze(-1).to(dtype)

    def atomic_numbers(self, features: Tensor, mask: Tensor) -> Tensor:
        """Atomic numbers ``[B, N]`` (0 at padding) from features, by argmax over the one-hot channels."""
        types = features[..., :len(self.vocabulary)].argmax(-1)
        return torch.where(mask, self.vocabulary[types], torch.zeros_like(types))
