"""The protein models that sample Cα traces, their shipped weights and default samplers, and one loader with
one-line errors (what ``molediff protein sample`` and the benchmarks use).

* ``angles`` (default): ``ProteinAngleDiffusion`` (``proteins.angle_model``), virtual bond angles and dihedrals
  on the torus with every Cα–Cα at 3.80 Å (FoldingDiff, Wu et al. 2022); shipped as
  ``molediff/pretrained/protein_ca_angles.safetensors``.
* ``egnn``: ``ProteinBackboneDiffusion`` (``proteins.model``), Cartesian Cα coordinates with an EGNN; shipped as
  ``protein_ca_egnn.safetensors``. Kept until a measured comparison says whether it has a use left.

Both classes offer ``sample_chains(lengths, seeds, batch_size, show_progress, sampler=, steps=, …)``,
``sample_lengths`` and ``config.max_length``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

__all__ = ["DEFAULT_MODEL", "MODEL_KINDS", "ProteinModelKind", "check_length", "load_protein_model"]


@dataclass(frozen=True)
class ProteinModelKind:
    """One kind of protein model.

    Attributes:
        name: what ``--model`` calls it.
        shipped: NAME of its shipped weights ``molediff/pretrained/NAME.safetensors``.
        class_name: the model class recorded with its weights.
        min_length: the shortest chain it samples (residues).
        sampler, steps: its default sampler and step count (None: all T steps).
        description: a few words for messages.
    """

    name: str
    shipped: str
    class_name: str
    min_length: int
    sampler: str
    steps: int | None
    description: str

    def model_class(self) -> type[nn.Module]:
        if self.name == "angles":
            from .angle_model import ProteinAngleDiffusion
            return ProteinAngleDiffusion
        from .model import ProteinBackboneDiffusion
        return ProteinBackboneDiffusion


MODEL_KINDS = {
    # DDPM with 100 of the T = 1000 steps: one step of 100 chains of L = 128 takes about 0.7 s on one CPU
    # thread (4 x 128 transformer), so all 1000 steps would take over 10 minutes against issue 20's 60 s.
    "angles": ProteinModelKind("angles", "protein_ca_angles", "ProteinAngleDiffusion", 4, "ddpm", 100,
                               "angle model (virtual bond angles and dihedrals)"),
    "egnn": ProteinModelKind("egnn", "protein_ca_egnn", "ProteinBackboneDiffusion", 2, "ddpm", None,
                             "Cartesian Cα EGNN model"),
}
DEFAULT_MODEL = "angles"


def load_protein_model(kind: str = DEFAULT_MODEL, checkpoint: str | os.PathLike | None = None,
                       device: str = "cpu") -> nn.Module:
    """The model of ``kind`` (``angles`` or ``egnn``) from ``checkpoint`` (an exported ``.safetensors`` file, a
    training run/checkpoint directory or the NAME of shipped weights; None: the kind's shipped weights), in eval
    mode on ``device``.

    Every failure is a ValueError (FileNotFoundError for a missing path) with a one-line reason: no shipped
    weights, unreadable or corrupt weights, weights of the other kind (naming the ``--model`` that reads them)
    or of a model that is not a protein model.
    """
    from safetensors import SafetensorError

    from ..training.weights import load_model, read_weights

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown protein model {kind!r}; choose one of {sorted(MODEL_KINDS)}")
    spec = MODEL_KINDS[kind]
    try:
        stored = read_weights(spec.shipped if checkpoint is None else checkpoint)
    except FileNotFoundError:
        if checkpoint is not None:
            raise
        others = [k for k in MODEL_KINDS if k != kind]
        raise ValueError(f"no {spec.shipped!r} protein weights are shipped in this installation: pass --checkpoint "
                         f"(a training run directory or an exported .safetensors file), or choose another model "
                         f"(--model {' / '.join(others)})") from None
    if stored.model_class != spec.class_name:
        other = next((k for k in MODEL_KINDS.values() if k.class_name == stored.model_class), None)
        if other is not None:
            raise ValueError(f"{stored.path} holds the {other.description} ({stored.model_class}), not the "
                             f"{spec.description}: sample it with --model {other.name}")
        raise ValueError(f"{stored.path} holds a {stored.model_class or 'unnamed'} model, not a protein model "
                         f"({spec.class_name})")
    try:
        return load_model(spec.model_class(), stored, device=device)
    except (RuntimeError, KeyError, SafetensorError, EOFError) as e:
        raise ValueError(f"{stored.path}: the weights cannot be read, the file is corrupt or incomplete ({e})") \
            from None


def check_length(model: nn.Module, kind: str, length: int) -> None:
    """ValueError naming the range when ``length`` lies outside min_length..max_length of this model."""
    lo, hi = MODEL_KINDS[kind].min_length, model.config.max_length
    if not lo <= length <= hi:
        raise ValueError(f"--length must lie in {lo}..{hi} for this {MODEL_KINDS[kind].description}, got {length}")
