"""Post-hoc EMA: the EMA of any width, built after training from snapshots of two (or more) power-function EMAs.

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", §3 and App. C.
A power-function EMA with exponent γ, read at step t, is the average of the weights under the profile

    p_{t,γ}(τ) = (γ+1) τ^γ / t^(γ+1)  on [0, t]        (exact for the trajectory held constant between steps,
                                                          see ``ema.PowerEMA``)

so every snapshot θ̂_i (step t_i, exponent γ_i) is a known linear functional of the trajectory. The EMA of
another profile p_r (σ_rel, t_r) is approximated by Σ x_i θ̂_i, where x minimises ‖Σ x_i p_i − p_r‖₂ over
[0, t_r] (§3.2, App. C): the normal equations A x = b with A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_r⟩ have closed forms,

    ⟨p_i, p_j⟩ = (γ_i+1)(γ_j+1) min(t_i, t_j)^(γ_i+γ_j+1) / ((γ_i+γ_j+1) t_i^(γ_i+1) t_j^(γ_j+1)).

The trainer writes the snapshots (``TrainConfig.posthoc_ema``) as
``<run>/ema_snapshots/step_<step:08d>_sigma<σ_rel:.3f>.safetensors``, each with its step, σ_rel, γ and the
names of the tensors copied rather than averaged (buffers) in the metadata.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..utils import atomic_path
from .checkpoint import config_hash, find_checkpoint, model_config_of, read_state
from .ema import PowerEMA, sigma_rel_to_gamma
from .weights import export_metadata, write_weights

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "ema_snapshots"
"""The folder of a run directory that holds the snapshots."""

_SNAPSHOT_FILE = re.compile(r"^step_(\d+)_sigma([0-9.]+)\.safetensors$")

__all__ = ["SNAPSHOT_DIR", "Snapshot", "export_posthoc_ema", "list_snapshots", "reconstruct", "solve_coefficients",
           "write_snapshot"]


# --------------------------------------------------------------------------------------------- snapshots
@dataclass(frozen=True)
class Snapshot:
    """One power-EMA state θ̂ after ``step`` optimiser steps, either in a file (``path``) or in memory
    (``tensors``). ``gamma`` defaults to the exponent of ``sigma_rel``; ``buffers`` names the tensors that
    were copied from the model rather than averaged (they are not combined, see ``reconstruct``)."""

    step: int
    sigma_rel: float
    gamma: float | None = None
    path: Path | None = None
    tensors: dict[str, Tensor] | None = field(default=None, repr=False, compare=False)
    buffers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.step < 1:
            raise ValueError(f"a snapshot's step must be >= 1, got {self.step}")
        if self.gamma is None:
            object.__setattr__(self, "gamma", sigma_rel_to_gamma(self.sigma_rel))
        if (self.path is None) == (self.tensors is None):
            raise ValueError("a snapshot needs exactly one of path and tensors")

    @classmethod
    def from_ema(cls, ema: PowerEMA) -> Snapshot:
        """An in-memory copy of ``ema``'s current state (step = its update count)."""
        return cls(step=ema.num_updates, sigma_rel=ema.sigma_rel, gamma=ema.gamma,
                   tensors={k: v.detach().clone() for k, v in ema.state_dict().items()},
                   buffers=tuple(ema.buffer_names))

    def load(self) -> dict[str, Tensor]:
        """The snapshot's tensors (read from ``path`` on CPU, or the in-memory ones)."""
        if self.tensors is not None:
            return self.tensors
        try:
            return load_file(str(self.path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{self.path} is not a readable safetensors file ({e})") from None


def snapshot_path(directory: str | os.PathLike, step: int, sigma_rel: float) -> Path:
    """``directory/step_<step:08d>_sigma<σ_rel:.3f>.safetensors``."""
    return Path(directory) / f"step_{step:08d}_sigma{sigma_rel:.3f}.safetensors"


def write_snapshot(directory: str | os.PathLike, ema: PowerEMA, model: nn.Module) -> Path:
    """Write ``ema``'s state atomically as a snapshot at step ``ema.num_updates``, with the step, σ_rel, γ,
    buffer names and ``model``'s class and config in the metadata. Returns the file's path."""
    step = ema.num_updates
    if step < 1:
        raise ValueError("a power EMA with no updates has no snapshot to write")
    model_cfg = model_config_of(model)
    meta = {"format": "molediff-ema-snapshot", "step": str(step), "sigma_rel": repr(ema.sigma_rel),
            "gamma": repr(ema.gamma), "buffers": json.dumps(ema.buffer_names),
            "model_class": type(model).__name__, "model_config": json.dumps(model_cfg)}
    path = snapshot_path(directory, step, ema.sigma_rel)
    # clone: safetensors refuses tensors that share storage (tied weights)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in ema.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def _snapshot_dir(path: Path) -> Path:
    """A run directory's snapshot folder, or ``path`` itself when it is one."""
    return path / SNAPSHOT_DIR if (path / SNAPSHOT_DIR).is_dir() else path


def list_snapshots(path: str | os.PathLike) -> list[Snapshot]:
    """The snapshots of a run directory (or of its ``ema_snapshots`` folder), sorted by (step, σ_rel); only
    their metadata is read. FileNotFoundError for a missing directory; ValueError for an unreadable file."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    found = []
    for file in sorted(_snapshot_dir(path).iterdir()):
        if not _SNAPSHOT_FILE.match(file.name) or not file.is_file():
            continue
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except Exception as e:
            raise ValueError(f"{file} is not a readable safetensors file ({e})") from None
        if meta.get("format") != "molediff-ema-snapshot":
            raise ValueError(f"{file} is not a molediff EMA snapshot (format {meta.get('format')!r})")
        found.append(Snapshot(step=int(meta["step"]), sigma_rel=float(meta["sigma_rel"]),
                              gamma=float(meta["gamma"]), path=file,
                              buffers=tuple(json.loads(meta.get("buffers") or "[]"))))
    return sorted(found, key=lambda s: (s.step, s.sigma_rel))


def remove_snapshots_after(directory: str | os.PathLike, step: int) -> int:
    """Delete the snapshot files of ``directory`` with a step > ``step`` (written by a run that stopped before
    its next checkpoint: the resumed run writes them again). Returns how many were deleted."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for file in directory.iterdir():
        m = _SNAPSHOT_FILE.match(file.name)
        if m and int(m.group(1)) > step:
            file.unlink()
            removed += 1
    return removed


# ------------------------------------------------------------------------------------------ least squares
def _profile_inner(t_a: Tensor, g_a: Tensor, t_b: Tensor, g_b: Tensor) -> Tensor:
    """⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩ = ∫ p_a p_b dτ (Karras et al. 2024, App. C), broadcasting; float64.

    Written as (γ_a+1)(γ_b+1)/(γ_a+γ_b+1) · (t_min/t_max)^γ_other / t_max, with γ_other the exponent of the
    profile that ends later: algebraically the same as the formula in the module docstring, but with no
    t^(γ+1) powers that overflow for long runs and large γ.
    """
    t_min, t_max = torch.minimum(t_a, t_b), torch.maximum(t_a, t_b)
    g_other = torch.where(t_a <= t_b, g_b, g_a)
    return (g_a + 1) * (g_b + 1) / (g_a + g_b + 1) * (t_min / t_max) ** g_other / t_max


def solve_coefficients(steps: Sequence[int], gammas: Sequence[float], step_target: int,
                       gamma_target: float) -> tuple[Tensor, float]:
    """Least-squares weights x (float64, shape [n]) with Σ x_i p_{t_i,γ_i} ≈ p_{t_r,γ_r} on [0, t_r]
    (Karras et al. 2024, §3.2 and App. C), and the relative L2 error of that fit,
    ‖Σ x_i p_i − p_r‖ / ‖p_r‖ (≈ 0 when the target is itself one of the inputs).

    ``steps`` (t_i ≥ 1) and ``gammas`` (γ_i ≥ 0) describe the snapshots. The normal equations A x = b are
    solved with an SVD-based least squares (LAPACK gelsd) in float64, so duplicate or nearly collinear snapshot
    profiles (a singular A) get the minimum-norm solution instead of failing. Steps are divided by t_r first:
    the fit is scale-invariant and the entries then stay O(1).
    """
    t = torch.as_tensor(steps, dtype=torch.float64) / float(step_target)
    g = torch.as_tensor(gammas, dtype=torch.float64)
    if t.ndim != 1 or t.shape != g.shape or not len(t):
        raise ValueError(f"steps and gammas must be two equally long non-empty lists, got {len(steps)} and "
                         f"{len(gammas)}")
    one, g_r = torch.ones(1, dtype=torch.float64), torch.tensor([float(gamma_target)], dtype=torch.float64)
    a = _profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])      # [n, n]
    b = _profile_inner(t[:, None], g[:, None], one[None, :], g_r[None, :])  # [n, 1]
    x = torch.linalg.lstsq(a, b, driver="gelsd").solution                  # [n, 1]
    c = float(_profile_inner(one, g_r, one, g_r))                           # ‖p_r‖²
    err2 = float((x.T @ a @ x - 2 * x.T @ b).squeeze()) + c
    return x[:, 0], math.sqrt(max(err2, 0.0) / c)


def reconstruct(snapshots: Sequence[Snapshot], sigma_rel_target: float,
                step_target: int | None = None) -> dict[str, Tensor]:
    """The power-function EMA with relative std ``sigma_rel_target`` at step ``step_target`` (default: the
    last snapshot's step), as the least-squares combination Σ x_i θ̂_i of the snapshots with t_i ≤ t_r
    (Karras et al. 2024, §3.2 and App. C; coefficients from ``solve_coefficients``).

    Returns the model's state dict (names as in the snapshots): averaged tensors combined in float64 and cast
    back to the snapshots' dtype; buffers and integer tensors taken from the newest snapshot used. Accuracy
    depends on the snapshot density: the relative profile-fit error is logged (see ``solve_coefficients``).

    ValueError for no snapshots, ``sigma_rel_target`` outside (0, 0.2887), ``step_target`` < 1 or beyond the
    last snapshot (the snapshots say nothing about later weights), or snapshots whose tensors differ in names
    or shapes.
    """
    return _reconstruct(snapshots, sigma_rel_target, step_target)[0]


def _reconstruct(snapshots: Sequence[Snapshot], sigma_rel_target: float,
                 step_target: int | None) -> tuple[dict[str, Tensor], int, float, int]:
    """``reconstruct`` plus (target step, relative profile-fit error, number of snapshots used)."""
    if not snapshots:
        raise ValueError("reconstruct needs at least one snapshot")
    gamma_r = sigma_rel_to_gamma(sigma_rel_target)
    last = max(s.step for s in snapshots)
    t_r = last if step_target is None else int(step_target)
    if not 1 <= t_r <= last:
        raise ValueError(f"step_target must lie in [1, {last}] (the last snapshot's step), got {step_target}")
    used = sorted((s for s in snapshots if s.step <= t_r), key=lambda s: s.step)
    if not used:
        raise ValueError(f"no snapshot at or before step {t_r}")
    x, err = solve_coefficients([s.step for s in used], [s.gamma for s in used], t_r, gamma_r)
    log.info("post-hoc EMA sigma_rel=%g at step %d from %d snapshots: relative profile-fit error %.2e, "
             "sum |x| = %.3g", sigma_rel_target, t_r, len(used), err, float(x.abs().sum()))

    newest = used[-1].load()
    copied = set(used[-1].buffers) | {k for k, v in newest.items() if not v.is_floating_point()}
    acc = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in newest.items() if k not in copied}
    for snap, xi in zip(used, x.tolist()):
        tensors = newest if snap is used[-1] else snap.load()
        if tensors.keys() != newest.keys():
            diff = sorted(set(tensors) ^ set(newest))
            raise ValueError(f"snapshot {snap.path or snap.step} holds other tensors than the newest one: "
                             f"{diff[:3]}")
        for k, total in acc.items():
            v = tensors[k]
            if v.shape != total.shape:
                raise ValueError(f"snapshot {snap.path or snap.step}: {k!r} has shape {list(v.shape)}, the newest "
                                 f"snapshot's has {list(total.shape)}")
            total.add_(v.detach().to("cpu", torch.float64), alpha=xi)
    out = {k: acc[k].to(v.dtype) if k in acc else v.detach().clone() for k, v in newest.items()}
    return out, t_r, err, len(used)


# ------------------------------------------------------------------------------------------------ export
def export_posthoc_ema(run_dir: str | os.PathLike, sigma_rel: float, out_path: str | os.PathLike,
                       dtype: torch.dtype | None = torch.bfloat16, step: int | None = None) -> Path:
    """Reconstruct the EMA with ``sigma_rel`` at ``step`` (default: the last snapshot) from the snapshots of
    ``run_dir`` and write it as a weights file like ``weights.export_weights`` (floating tensors cast to
    ``dtype``; None keeps them), so that ``weights.load_model`` / ``weights.load_weights`` read it.

    The metadata (model class and config, training config) come from the run's last checkpoint, or from the
    snapshots when the run has none; ``step`` is the reconstruction's step, and ``posthoc_ema_sigma_rel``,
    ``posthoc_ema_gamma``, ``posthoc_ema_fit_error`` and ``posthoc_ema_snapshots`` describe the reconstruction.
    FileNotFoundError when ``run_dir`` holds no snapshots; ValueError as ``reconstruct``.
    """
    run_dir = Path(run_dir)
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise FileNotFoundError(f"{run_dir} holds no post-hoc EMA snapshots (set posthoc_ema in the training "
                                f"config to write them)")
    tensors, t_r, err, n_used = _reconstruct(snapshots, sigma_rel, step)
    try:
        state = read_state(find_checkpoint(run_dir))
    except FileNotFoundError:
        with safe_open(str(snapshots[-1].path), framework="pt") as f:
            snap_meta = dict(f.metadata() or {})
        model_cfg = json.loads(snap_meta.get("model_config") or "null")
        state = {"model_class": snap_meta.get("model_class"), "model_config": model_cfg,
                 "model_config_hash": config_hash(model_cfg), "config": None}
    meta = export_metadata({**state, "step": t_r}, ema=True)
    meta.update(posthoc_ema_sigma_rel=repr(float(sigma_rel)), posthoc_ema_gamma=repr(sigma_rel_to_gamma(sigma_rel)),
                posthoc_ema_fit_error=f"{err:.3e}", posthoc_ema_snapshots=str(n_used))
    return write_weights(tensors, out_path, meta, dtype)
