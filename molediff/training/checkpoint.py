"""Training checkpoints: safetensors weights + JSON state + a weights-only optimiser file.

A checkpoint root (``<out_dir>/checkpoints``) holds step-numbered directories and a ``last`` link::

    step_00001000/
        model.safetensors   the raw weights
        ema.safetensors     the EMA weights (absent when the EMA is disabled)
        posthoc_ema_<k>.safetensors
                            the k-th power-function EMA of the post-hoc EMA (only with ``posthoc_ema``
                            configured); σ_rel, γ and the update count t in its metadata and in state.json
        state.json          format version, step, training config, model class + config (+ hash), data
                            position, RNG states, last metrics
        optimizer.pt        optimiser and LR-scheduler state_dicts (tensors and numbers only; loaded with
                            ``weights_only=True``, so no code is ever unpickled)
    last -> step_00001000

Each step directory is written under a temporary name and renamed into place, so a crash mid-write never
leaves a half-written checkpoint behind and the previous ones stay intact. Loading weights for inference and
exported weights files are ``weights.py``'s; the checks both share (model config, tensor names and shapes) are here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .ema import EMA, PowerEMA

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


# ----------------------------------------------------------------------------------------------- helpers
def model_config_of(model: nn.Module) -> dict | None:
    """The model's constructor config as JSON-ready data (``model.config``), or None if it has none."""
    return config_data(getattr(model, "config", None))


def config_data(cfg) -> dict | None:
    """A config object (with ``to_dict``, or a dataclass, or a dict) as JSON-ready data; None if it is none."""
    if cfg is None:
        return None
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    elif dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    if not isinstance(cfg, dict):
        return None
    return json.loads(json.dumps(cfg, default=str))  # normalise: tuples -> lists, int keys -> str


def config_hash(cfg: dict | None) -> str | None:
    if cfg is None:
        return None
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cpu_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def check_model_config(label: str, stored_class: str | None, stored_cfg: dict | None, model: nn.Module,
                        strict: bool) -> None:
    """ValueError (warning if not strict) when the stored model class/config differs from ``model``'s."""
    cls = type(model).__name__
    if stored_class and stored_class != cls:
        msg = f"{label} was trained for model {stored_class} but this model is {cls}"
        if strict:
            raise ValueError(msg)
        log.warning(msg)
    current = model_config_of(model)
    if stored_cfg is None or current is None:
        return
    config_class = getattr(model, "config_class", None)
    if config_class is not None:
        # Read the stored config as the model class reads it, so that renamed keys of older checkpoints
        # (e.g. atom_types → vocabulary) compare by meaning, not by spelling.
        try:
            stored_cfg = config_data(config_class.from_dict(stored_cfg))
        except ValueError:
            pass
    a, b = _flatten(stored_cfg), _flatten(current)
    diffs = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    if not diffs:
        return
    more = f" (and {len(diffs) - 3} more differences)" if len(diffs) > 3 else ""
    was = ", ".join(f"{k}={a.get(k, '<absent>')}" for k in diffs[:3])
    now = ", ".join(f"{k}={b.get(k, '<absent>')}" for k in diffs[:3])
    msg = f"{label} was trained for model {stored_class or cls} with {was} but this model has {now}{more}"
    if strict:
        raise ValueError(msg)
    log.warning(msg)


def check_tensors(label: str, tensors: dict[str, Tensor], model: nn.Module, strict: bool) -> None:
    """ValueError when tensor names (strict) or shapes (always) do not match ``model``'s state dict."""
    target = model.state_dict()
    problems = []
    if strict:
        missing = sorted(set(target) - set(tensors))
        unexpected = sorted(set(tensors) - set(target))
        if missing:
            problems.append(f"missing {missing[:3]}" + (f" (+{len(missing) - 3})" if len(missing) > 3 else ""))
        if unexpected:
            problems.append(f"unexpected {unexpected[:3]}"
                            + (f" (+{len(unexpected) - 3})" if len(unexpected) > 3 else ""))
    if not strict and target and not set(target) & set(tensors):
        problems.append(f"no tensor names in common (checkpoint has {sorted(tensors)[:3]}, model has "
                        f"{sorted(target)[:3]})")
    for name, value in tensors.items():
        if name in target and value.shape != target[name].shape:
            problems.append(f"{name!r} has shape {list(value.shape)} in the checkpoint but "
                            f"{list(target[name].shape)} in the model")
            if len(problems) >= 4:
                break
    if problems:
        raise ValueError(f"{label} does not fit model {type(model).__name__}: " + "; ".join(problems))


def cast_like(tensors: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Floating tensors cast to the dtype of the model's matching tensor (fp16/bf16 files load into fp32)."""
    target = model.state_dict()
    return {k: v.to(target[k].dtype) if k in target and v.is_floating_point() and target[k].is_floating_point()
            else v for k, v in tensors.items()}


def read_state(ckpt: Path) -> dict:
    """The contents of checkpoint directory ``ckpt``'s state.json; ValueError when it is unreadable or of another
    format version."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {ckpt} has no readable state.json ({e})") from None
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {ckpt} has format version {version}; this molediff reads {FORMAT_VERSION}")
    return state


def load_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of the safetensors file ``path`` on the CPU; ValueError (one line) for a corrupt file."""
    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None


# ------------------------------------------------------------------------------------------ discovery
def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete step-numbered checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_step(run_dir: str | os.PathLike) -> int:
    """The step of the newest complete checkpoint of the run at ``run_dir`` (0 when it has none)."""
    found = list_checkpoints(Path(run_dir) / "checkpoints")
    return int(read_state(found[-1])["step"]) if found else 0


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve a checkpoint directory, a checkpoint root, or a run directory to one checkpoint directory
    (the latest when several)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        found = list_checkpoints(root)
        if found:
            return found[-1]
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    raise FileNotFoundError(f"no checkpoint found in {path}")


# ------------------------------------------------------------------------------------------ save / load
def save_checkpoint(root: str | os.PathLike, model: nn.Module, ema: EMA | None, optimizer: torch.optim.Optimizer,
                    scheduler, step: int, config_dict: dict, extra: dict | None = None,
                    keep_last: int = 3, posthoc_emas: Sequence[PowerEMA] = ()) -> Path:
    """Write ``root/step_<step>`` atomically, point ``root/last`` at it and prune to the newest ``keep_last``.

    ``extra`` (JSON data: data position, RNG states, metrics, ...) is merged into state.json. Each of
    ``posthoc_emas`` is written to ``posthoc_ema_<k>.safetensors`` and listed (file, σ_rel, γ, update count)
    under ``posthoc_ema`` in state.json. Returns the new checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    model_cfg = model_config_of(model)
    meta = {"format": "molediff-checkpoint", "model_class": type(model).__name__,
            "model_config": json.dumps(model_cfg), "step": str(step)}
    state = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "model_class": type(model).__name__,
        "model_config": model_cfg,
        "model_config_hash": config_hash(model_cfg),
        "config": config_dict,
        **(extra or {}),
    }
    if posthoc_emas:
        state["posthoc_ema"] = [{"file": f"posthoc_ema_{k}.safetensors", "sigma_rel": e.sigma_rel,
                                 "gamma": e.gamma, "num_updates": e.num_updates}
                                for k, e in enumerate(posthoc_emas)]
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{name}-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a checkpoint is an ordinary directory
        save_file(_cpu_tensors(model.state_dict()), str(tmp / "model.safetensors"), metadata=meta)
        if ema is not None:
            save_file(_cpu_tensors(ema.state_dict()), str(tmp / "ema.safetensors"), metadata=meta)
        for k, e in enumerate(posthoc_emas):
            save_file(_cpu_tensors(e.state_dict()), str(tmp / f"posthoc_ema_{k}.safetensors"),
                      metadata={**meta, "sigma_rel": repr(e.sigma_rel), "gamma": repr(e.gamma),
                                "num_updates": str(e.num_updates)})
        opt_state = {"optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler is not None else None}
        torch.save(opt_state, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1, allow_nan=True) + "\n")
        if final.exists():  # re-saving a step (e.g. after a resume): swap the old one out
            trash = Path(tempfile.mkdtemp(dir=root, prefix=f".old-{name}-"))
            os.replace(final, trash / name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_last(root, name)
    for old in list_checkpoints(root)[:-keep_last]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # left by a crash
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    log.debug("saved checkpoint %s", final)
    return final


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _point_last(root: Path, name: str) -> None:
    link = root / "last"
    tmp = root / f".last-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as e:  # no symlinks here (some filesystems): resume finds the newest by scanning
        log.debug("could not update %s: %s", link, e)


def load_checkpoint(path: str | os.PathLike, model: nn.Module, ema: EMA | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, strict: bool = True,
                    posthoc_emas: Sequence[PowerEMA] = ()) -> dict:
    """Load a checkpoint (directory, root or run directory: the latest) into ``model`` and, when given, the
    EMA, optimiser, scheduler and power-function EMAs. Returns state.json's contents (step, config, data
    position, RNG, ...).

    Each of ``posthoc_emas`` loads the stored power EMA with the same σ_rel (tensors and update count). One
    the checkpoint lacks (a checkpoint from before ``posthoc_ema`` was configured) starts from the loaded
    weights with t = the checkpoint's step, i.e. as if the weights had been constant until then; that
    assumption's weight in a later snapshot at step t' is (step / t')^(γ+1), so it fades quickly.

    Raises a one-line ValueError when the checkpoint was trained for a different model.
    """
    ckpt = find_checkpoint(path)
    state = read_state(ckpt)
    label = f"checkpoint {ckpt}"
    check_model_config(label, state.get("model_class"), state.get("model_config"), model, strict)
    tensors = load_safetensors(ckpt / "model.safetensors")
    check_tensors(label, tensors, model, strict)
    model.load_state_dict(cast_like(tensors, model), strict=strict)
    if ema is not None:
        ema_file = ckpt / "ema.safetensors"
        if ema_file.is_file():
            ema_tensors = load_safetensors(ema_file)
            check_tensors(label + " (EMA)", ema_tensors, model, True)
            ema.load_state_dict(cast_like(ema_tensors, model))
        else:
            log.warning("%s has no EMA weights; the EMA restarts from the loaded weights", label)
            ema.load_state_dict(model.state_dict())
    if posthoc_emas:
        stored = {float(entry["sigma_rel"]): entry for entry in state.get("posthoc_ema") or []}
        for e in posthoc_emas:
            entry = stored.get(e.sigma_rel)
            if entry is None or not (ckpt / entry["file"]).is_file():
                log.warning("%s has no power EMA with sigma_rel=%s; it starts from the loaded weights", label,
                            e.sigma_rel)
                e.load_state_dict(model.state_dict(), num_updates=int(state["step"]))
                continue
            tensors = load_safetensors(ckpt / entry["file"])
            check_tensors(f"{label} (power EMA sigma_rel={e.sigma_rel})", tensors, model, True)
            e.load_state_dict(cast_like(tensors, model), num_updates=int(entry["num_updates"]))
    if optimizer is not None or scheduler is not None:
        try:
            opt_state = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{label} has no optimizer.pt; it cannot be resumed") from None
        except Exception as e:
            raise ValueError(f"{label}: optimizer.pt is unreadable ({' '.join(str(e).split())[:200]})") from None
        try:
            if optimizer is not None:
                optimizer.load_state_dict(opt_state["optimizer"])
            if scheduler is not None and opt_state.get("scheduler") is not None:
                scheduler.load_state_dict(opt_state["scheduler"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"{label}: optimiser state does not fit ({e})") from None
    state["path"] = str(ckpt)
    return state
