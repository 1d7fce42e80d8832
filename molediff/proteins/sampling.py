"""The protein models that sample Cα traces, their shipped weights and default samplers, and one loader with
one-line errors (what ``molediff protein sample`` and the benchmarks use).

* ``angles`` (default): ``ProteinAngleDiffusion`` (``proteins.angle_model``), virtual bond angles and dihedrals
  on the torus with every Cα–Cα at 3.80 Å (FoldingDiff, Wu et al. 2022); shipped as
  ``molediff/pretrained/protein_ca_angles.safetensors``.
* ``egnn``: ``ProteinBackboneDiffusion`` (``proteins.model``), Cartesian Cα coordinates with an EGNN, for weights
  you train yourself (task ``proteins``): its shipped weights ``protein_ca_egnn`` were retired in session 13,
  when issue 20's side-by-side comparison left them no measured use (BENCHMARKS.md).

Both classes offer ``sample_chains(lengths, seeds, batch_size, show_progress, sampler=, steps=, …)``,
``sample_lengths`` and ``config.max_length``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from .guidance import ChainGuide

__all__ = ["DEFAULT_MODEL", "MODEL_KINDS", "ProteinModelKind", "ProteinSampling", "check_length", "load_protein_model",
           "sampling_for"]


@dataclass(frozen=True)
class ProteinModelKind:
    """One kind of protein model.

    Attributes:
        name: what ``--model`` calls it.
        shipped: NAME of its weights file ``NAME.safetensors``: where the shipped ones lie
            (``molediff/pretrained/``) and what the GPU job calls its export.
        ships: whether the package ships weights for it (the Cartesian EGNN's were retired).
        class_name: the model class recorded with its weights.
        min_length: the shortest chain it samples (residues).
        sampler, steps: its default sampler and step count (None: all T steps).
        description: a few words for messages.
        noise_scale: its default DDPM noise scale γ.
        guided: whether it samples with the clash and compactness guide (``proteins.guidance``) by default.
    """

    name: str
    shipped: str
    class_name: str
    min_length: int
    sampler: str
    steps: int | None
    description: str
    noise_scale: float = 1.0
    guided: bool = False
    ships: bool = True

    def model_class(self) -> type[nn.Module]:
        if self.name == "angles":
            from .angle_model import ProteinAngleDiffusion
            return ProteinAngleDiffusion
        from .model import ProteinBackboneDiffusion
        return ProteinBackboneDiffusion


MODEL_KINDS = {
    # DDPM with 100 of the T = 1000 steps: one step of 100 chains of L = 128 takes about 0.7 s on one CPU
    # thread (4 x 128 transformer), so all 1000 steps would take over 10 minutes against issue 20's 60 s.
    # The chain guide (session 12) and γ = 0.925 (session 13, for the cluster-balanced weights): chosen on the
    # validation chains (BENCHMARKS.md, issue 20).
    "angles": ProteinModelKind("angles", "protein_ca_angles", "ProteinAngleDiffusion", 4, "ddpm", 100,
                               "angle model (virtual bond angles and dihedrals)", noise_scale=0.925, guided=True),
    "egnn": ProteinModelKind("egnn", "protein_ca_egnn", "ProteinBackboneDiffusion", 2, "ddpm", None,
                             "Cartesian Cα EGNN model", ships=False),
}
DEFAULT_MODEL = "angles"


def no_shipped_weights(kind: str) -> str:
    """The one-line message for sampling ``kind`` without ``--checkpoint`` when no weights of it are found."""
    spec = MODEL_KINDS[kind]
    others = " / ".join(k for k, v in MODEL_KINDS.items() if k != kind and v.ships)
    why = ("molediff ships none (they were retired)" if not spec.ships
           else f"its {spec.shipped!r} weights are missing from this installation")
    return (f"the {spec.description} has no weights to load: {why}; pass --checkpoint (a training run directory "
            f"or an exported .safetensors file)" + (f", or choose --model {others}" if others else ""))


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
    if checkpoint is None and not spec.ships:
        raise ValueError(no_shipped_weights(kind))
    try:
        stored = read_weights(spec.shipped if checkpoint is None else checkpoint)
    except FileNotFoundError:
        if checkpoint is not None:
            raise
        raise ValueError(no_shipped_weights(kind)) from None
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


@dataclass(frozen=True)
class ProteinSampling:
    """How a protein model samples, checked once (:func:`sampling_for` fills in a model kind's defaults).

    Attributes:
        sampler: a core sampler name; steps: its step count (None: all T steps).
        noise_scale: DDPM's γ (1 for other samplers).
        chain_guide: the clash and compactness guide (``proteins.guidance.ChainGuide``; angle model only) or None.
    """

    sampler: str
    steps: int | None
    noise_scale: float = 1.0
    chain_guide: ChainGuide | None = None

    def options(self) -> dict:
        """Keyword arguments of the models' ``sample_chains`` / ``sample``."""
        options = {"sampler": self.sampler, "steps": self.steps}
        if self.sampler == "ddpm":
            options["noise_scale"] = self.noise_scale
        if self.chain_guide is not None:
            options["chain_guide"] = self.chain_guide
        return options

    def label(self, total_steps: int) -> str:
        """A short name for tables, e.g. ``ddpm-100, γ 0.85, guided``."""
        parts = [f"{self.sampler}-{self.steps or total_steps}"]
        if self.sampler == "ddpm" and self.noise_scale != 1:
            parts.append(f"γ {self.noise_scale:g}")
        if self.chain_guide is not None:
            parts.append("guided")
        return ", ".join(parts)


def sampling_for(kind: str, total_steps: int | None, sampler: str | None = None, steps: int | None = None,
                 noise_scale: float | None = None, guided: bool | None = None) -> ProteinSampling:
    """The sampling of a model of ``kind`` with ``total_steps`` = T: the kind's defaults for every argument
    left None (its step count only with its own sampler; at most T). ``total_steps`` None checks the arguments
    before a model is loaded (steps only against 1). ValueError, with the command-line flag's
    name, for steps outside 1..T, γ < 0 or γ ≠ 1 with another sampler than ddpm, or the guide on a model
    without angles."""
    from ..diffusion import SAMPLERS

    spec = MODEL_KINDS[kind]
    sampler = sampler or spec.sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    if steps is None and sampler == spec.sampler and spec.steps is not None:
        steps = spec.steps if total_steps is None else min(spec.steps, total_steps)
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    if steps is not None and total_steps is not None and steps > total_steps:
        raise ValueError(f"--steps must lie in 1..{total_steps} for this model, got {steps}")
    if noise_scale is None:
        noise_scale = spec.noise_scale if sampler == "ddpm" else 1.0
    if noise_scale < 0:
        raise ValueError(f"--noise-scale must be >= 0, got {noise_scale:g}")
    if noise_scale != 1.0 and sampler != "ddpm":
        raise ValueError("--noise-scale is an option of the ddpm sampler")
    guided = spec.guided if guided is None else guided
    if guided and kind != "angles":
        raise ValueError(f"the chain guide acts on angles: the {spec.description} has none")
    return ProteinSampling(sampler, steps, noise_scale, ChainGuide() if guided else None)


def check_length(model: nn.Module, kind: str, length: int) -> None:
    """ValueError naming the range when ``length`` lies outside min_length..max_length of this model."""
    lo, hi = MODEL_KINDS[kind].min_length, model.config.max_length
    if not lo <= length <= hi:
        raise ValueError(f"--length must lie in {lo}..{hi} for this {MODEL_KINDS[kind].description}, got {length}")
