"""Training throughput (images/s) of molediff's U-Net against diffusers' ``UNet2DModel`` with the same channel
configuration (parameter counts within ±5 %, checked), the same batch, the same device, in the same run.

One training step, on both sides: draw t and ε, noise a fixed batch of 32 × 32 images, predict ε, MSE,
backward, AdamW step. molediff's step is ``ImageDiffusion.forward`` (the core's ``epsilon_loss``); diffusers'
is ``DDPMScheduler.add_noise`` + ``UNet2DModel``. The two models alternate in ``--rounds`` rounds so that a
changing machine load affects both alike; the table reports the median round of each.

Usage::

    python scripts/bench_images.py                                   # small preset, batch 32, CPU
    python scripts/bench_images.py --preset ddpm --batch 128 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

import torch

from molediff.images.model import ImageDiffusion, ImageDiffusionConfig
from molediff.images.unet import UNET_PRESETS, UNetConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _bench, also when this file is loaded by path
from _bench import machine, seconds_per_call, table_header  # noqa: E402


def diffusers_unet(cfg: UNetConfig):
    """diffusers' ``UNet2DModel`` laid out as molediff's U-Net (DDPM's layout: attention after every res block
    at the listed resolutions and in the middle block, one head, 4c-wide time embedding)."""
    from diffusers import UNet2DModel

    attn = [cfg.image_size // 2 ** i in cfg.attention_resolutions for i in range(len(cfg.channel_mult))]
    attn_width = cfg.channels * cfg.channel_mult[attn.index(True)] if any(attn) else cfg.channels
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        block_out_channels=tuple(cfg.channels * m for m in cfg.channel_mult), layers_per_block=cfg.res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=attn_width // cfg.heads if cfg.heads > 1 else None,
        norm_num_groups=cfg.groups, dropout=cfg.dropout, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1)


def step_fns(preset: str, batch: int, device: torch.device, seed: int = 0):
    """``{name: (step(), parameter count)}`` for both implementations on the same fixed batch."""
    from diffusers import DDPMScheduler

    cfg = UNET_PRESETS[preset]
    torch.manual_seed(seed)
    ours = ImageDiffusion(ImageDiffusionConfig(unet=cfg)).to(device).train()
    theirs = diffusers_unet(cfg).to(device).train()
    sched = DDPMScheduler(num_train_timesteps=ours.schedule.T + 1, beta_schedule="linear")
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    x = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)

    def molediff_step():
        loss = ours(x).mean()
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def diffusers_step():
        noise = torch.randn_like(x)
        k = torch.randint(0, sched.config.num_train_timesteps, (batch,), device=device)
        loss = torch.nn.functional.mse_loss(theirs(sched.add_noise(x, noise, k), k).sample, noise)
        opt_theirs.zero_grad(set_to_none=True)
        loss.backward()
        opt_theirs.step()

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"molediff UNet": (molediff_step, count(ours)), "diffusers UNet2DModel": (diffusers_step, count(theirs))}


def timed(step, steps: int, device: torch.device, bf16: bool) -> float:
    """Seconds per step over ``steps`` steps (under bf16 autocast with ``bf16``)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return seconds_per_call(step, steps, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(UNET_PRESETS), default="small", help="U-Net configuration")
    parser.add_argument("--batch", type=int, default=32, help="images per training step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before the first round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both models")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fns = step_fns(args.preset, args.batch, device)
    counts = [n for _, n in fns.values()]
    if abs(counts[0] - counts[1]) > 0.05 * counts[1]:
        raise SystemExit(f"parameter counts differ by more than 5 %: {counts}")
    for step, _ in fns.values():
        timed(step, args.warmup, device, args.bf16)
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, (step, _) in fns.items():
            rounds[name].append(timed(step, args.steps, device, args.bf16))

    import diffusers

    command = " ".join(["python scripts/bench_images.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"`{command}`")
    print(f"\nmachine: {machine(device)}; diffusers {diffusers.__version__}; "
          f"{datetime.date.today().isoformat()}; preset {args.preset}, batch {args.batch}, "
          f"{'bf16 autocast' if args.bf16 else 'float32'}, median of {args.rounds} rounds of {args.steps} steps\n")
    print(table_header(["model", "parameters", "ms/step", "training images/s"], align="lrrr"))
    speed = {}
    for name, (_, n) in fns.items():
        sec = statistics.median(rounds[name])
        speed[name] = args.batch / sec
        print(f"| {name} | {n / 1e6:.3f} M | {1e3 * sec:.0f} | {speed[name]:.1f} |")
    ours, theirs = speed.values()
    print(f"\nmolediff / diffusers: {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
