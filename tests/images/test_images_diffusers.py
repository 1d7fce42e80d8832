"""Cross-check of the diffusion core against diffusers (the ecosystem's reference implementation), on the
linear β schedule of DDPM, with the same ε-network and the same noise.

Timestep conventions (worked out from both codes):

* diffusers' ``DDPMScheduler(num_train_timesteps=N)`` has N betas ``linspace(β_start, β_end, N)``; its integer
  timestep k = 0 … N − 1 is the noisy level with ᾱ_k = Π_{j ≤ k} (1 − β_j).
* molediff's ``LinearBetaSchedule(T)`` has T + 1 betas ``linspace(β_start, β_end, T + 1)`` on the grid
  t_i = i / T, i = 0 … T, with ᾱ(t_i) = Π_{j ≤ i} (1 − β_j).
* So N = T + 1 and **diffusers' k ↔ molediff's t = k / T = k / (N − 1)**: DDPM's 1000-step chain is T = 999.
* The last step: diffusers steps from k = 0 to ᾱ_prev = 1 (DDPM: ``self.one``; DDIM: ``set_alpha_to_one``),
  i.e. returns x̂(z_0); molediff's samplers end with x̂ = predict_x0(z, t = 0). Both return the model's mean.
* Strided chains: molediff's ``timesteps(steps)`` is k_j = T (1 − j / steps), j = 0 … steps. With T = 999 and
  9 steps that is 999, 888, …, 111, 0. diffusers' DDPM takes it as ``set_timesteps(timesteps=[...])``; its DDIM
  computes the previous step as k − N // num_inference_steps = k − 1000 // 9 = k − 111, so
  ``set_timesteps(9)`` with the same list passed to ``step`` walks the same grid (its own "leading" list would
  start at 888, and "trailing" would end at 110: neither lands on molediff's grid, which always runs from
  t = 1 to t = 0).

Both schedulers are built with ``clip_sample=False`` (molediff's samplers do not clip x̂), except in the last test:
there diffusers' ``clip_sample=True`` (DDIM: with ``use_clipped_model_output``) is compared with the core's
samplers run on ``clip_denoised(ε-model)``.

"Step by step": molediff's samplers are whole-chain functions, but they call ``guide(z, t)`` after every
update, which records each state; each recorded state is then fed to diffusers' ``step`` and its output compared
with molediff's next state. Noise: molediff draws it with ``torch.randn(shape, generator=g)`` once per
transition, diffusers' DDPM with the same call on an identically seeded generator (one per transition with
k > 0); for DDIM the same draws are passed as ``variance_noise``.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from helpers import randomise_zero_layers  # noqa: E402

from molediff.diffusion import (  # noqa: E402
    EuclideanSpace,
    clip_denoised,
    ddim_sample,
    ddpm_sample,
    make_schedule,
    q_sample,
)
from molediff.images.model import ImageDiffusion, ImageDiffusionConfig  # noqa: E402
from molediff.images.unet import UNetConfig  # noqa: E402

N = 1000           # diffusers' num_train_timesteps
T = N - 1          # molediff's T for the same betas
TOL = 1e-5


def _tiny_model() -> ImageDiffusion:
    """A tiny U-Net on 8 × 8 images with random (not zero) output layers, in float64, eval mode."""
    torch.manual_seed(0)
    unet = UNetConfig(image_size=8, channels=8, channel_mult=(1, 2), attention_resolutions=(4,), groups=4,
                      dropout=0.0)
    model = ImageDiffusion(ImageDiffusionConfig(T=T, unet=unet)).double().eval()
    randomise_zero_layers(model)   # the zero-initialised convolutions
    return model


def _eps_fn(model: ImageDiffusion):
    """The ε-network both sides call, in molediff's convention ``eps(z, t)``: the tiny U-Net plus σ_t z, the
    exact ε of N(0, I) data, so that the chains stay at the data's scale instead of drifting far out."""
    net, schedule = model.eps_fn(), model.schedule

    def eps(z, t):
        return net(z, t) + schedule.sigma(t).to(z.dtype).view(-1, 1, 1, 1) * z

    return eps


def _eps_of_k(model: ImageDiffusion):
    """The same ε-network in diffusers' convention: integer timestep k ↦ molediff time t = k / T."""
    eps = _eps_fn(model)
    return lambda z, k: eps(z, torch.full((z.shape[0],), k / T, dtype=z.dtype))


def _recorder():
    states: list[torch.Tensor] = []

    def guide(z, t):
        states.append(z.clone())
        return z

    return states, guide


def test_timestep_mapping_and_alpha_bar_agree():
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    ours = make_schedule("linear", T=T)
    k = torch.arange(N)
    assert torch.allclose(ours.alpha_bar(k.double() / T), sched.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    assert ours.T == sched.config.num_train_timesteps - 1


@pytest.mark.parametrize("k", [0, 1, 17, 500, 998, 999])
def test_q_sample_equals_add_noise(k):
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule="linear")
    schedule = make_schedule("linear", T=T)
    g = torch.Generator().manual_seed(k)
    x = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 8, 8, generator=g)
    ref = sched.add_noise(x, noise, torch.full((3,), k, dtype=torch.long))
    ours = q_sample(x, torch.full((3,), k / T, dtype=torch.float64), schedule, noise)
    assert (ours - ref).abs().max() < TOL


def _scheduler(cls, tables: str, **options):
    """diffusers' scheduler for the linear β schedule; ``tables="float64"`` recomputes its β/ᾱ tables (float32 in
    diffusers) from the same linspace in float64, so that only the update formulas are compared."""
    options = {"clip_sample": False, **options}
    sched = cls(num_train_timesteps=N, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, **options)
    if tables == "float64":
        sched.betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
        sched.alphas = 1.0 - sched.betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    return sched


def _check(step_errors: list[tuple[int, float]], final_error: float, tables: str) -> None:
    """float64 tables: every step and the whole chain within TOL. diffusers' own float32 tables: within TOL while
    k >= 50; below that its β_t = 1 − ᾱ_t/ᾱ_{t−1} loses digits to cancellation in float32 (β_0 = 1e-4 against
    float32's 6e-8 resolution near 1), and the last steps differ by up to about 2e-4 from the exact update,
    which molediff (float64 log-SNR table) reproduces to 1e-12."""
    worst = max(e for _, e in step_errors)
    if tables == "float64":
        assert worst < TOL and final_error < TOL, f"largest step difference {worst:.2e}, chain {final_error:.2e}"
    else:
        early = max(e for k, e in step_errors if k >= 50)
        assert early < TOL, f"largest difference for k >= 50: {early:.2e}"
        assert worst < 1e-3 and final_error < 1e-3, f"largest step difference {worst:.2e}, chain {final_error:.2e}"


@pytest.mark.parametrize("tables", ["float64", "float32"])
@pytest.mark.parametrize("timesteps", [pytest.param(None, id="full_1000", marks=pytest.mark.slow),
                                       pytest.param([999 - 111 * j for j in range(10)], id="strided_9")])
def test_ddpm_sampler_matches_ddpm_scheduler_step_by_step(timesteps, tables):
    model = _tiny_model()
    eps = _eps_of_k(model)
    sched = _scheduler(diffusers.DDPMScheduler, tables, variance_type="fixed_small")
    ks = list(range(T, -1, -1)) if timesteps is None else timesteps
    if timesteps is not None:
        sched.set_timesteps(timesteps=timesteps)
    steps = len(ks) - 1
    z1 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    states, guide = _recorder()
    with torch.no_grad():
        out = ddpm_sample(_eps_fn(model), z1, model.schedule, EuclideanSpace(), steps=steps,
                          generator=torch.Generator().manual_seed(3), guide=guide)
        chain = [z1, *states]                      # z at k_0 = T, …, k_steps = 0, then x̂
        assert len(chain) == steps + 2 and torch.equal(chain[-1], out)
        g = torch.Generator().manual_seed(3)
        errors = []
        for i, k in enumerate(ks):                 # step by step, each from molediff's own state
            ref = sched.step(eps(chain[i], k), k, chain[i], generator=g).prev_sample
            errors.append((k, float((ref - chain[i + 1]).abs().max())))
        # and diffusers' own chain from the same z_1 with the same noise reaches the same images
        g, z = torch.Generator().manual_seed(3), z1
        for k in ks:
            z = sched.step(eps(z, k), k, z, generator=g).prev_sample
    _check(errors, float((z - out).abs().max()), tables)


@pytest.mark.parametrize("tables", ["float64", "float32"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sampler_matches_ddim_scheduler_step_by_step(eta, tables):
    model = _tiny_model()
    eps = _eps_of_k(model)
    sched = _scheduler(diffusers.DDIMScheduler, tables, set_alpha_to_one=True, steps_offset=0)
    steps = 9
    sched.set_timesteps(steps)                     # only sets the stride N // 9 = 111 its step() uses
    ks = [T - 111 * j for j in range(steps + 1)]   # 999, 888, …, 111, 0: molediff's grid
    assert ks == [round(float(t) * T) for t in model.schedule.timesteps(steps)]
    z1 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    states, guide = _recorder()
    with torch.no_grad():
        out = ddim_sample(_eps_fn(model), z1, model.schedule, EuclideanSpace(), steps=steps, eta=eta,
                          generator=torch.Generator().manual_seed(5), guide=guide)
        chain = [z1, *states]
        g = torch.Generator().manual_seed(5)       # molediff draws one N(0, I) per transition when η > 0
        noises = [torch.randn(z1.shape, generator=g, dtype=z1.dtype) if eta > 0 else None for _ in range(steps)]
        noises.append(torch.zeros_like(z1) if eta > 0 else None)  # the last step (k = 0 → ᾱ = 1) adds none
        errors = []
        for i, k in enumerate(ks):
            ref = sched.step(eps(chain[i], k), k, chain[i], eta=eta, variance_noise=noises[i]).prev_sample
            errors.append((k, float((ref - chain[i + 1]).abs().max())))
        z = z1
        for i, k in enumerate(ks):
            z = sched.step(eps(z, k), k, z, eta=eta, variance_noise=noises[i]).prev_sample
    _check(errors, float((z - out).abs().max()), tables)
    if eta == 0.0:   # deterministic: the noise generator plays no part
        again = ddim_sample(_eps_fn(model), z1, model.schedule, EuclideanSpace(), steps=steps, eta=0.0,
                            generator=torch.Generator().manual_seed(99))
        assert torch.equal(again, out)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim_eta0", "ddim_eta1"])
def test_clipped_denoised_matches_clip_sample(sampler):
    """The core samplers on ``clip_denoised(ε-model)`` walk diffusers' chains with ``clip_sample=True``: DDPM
    (the clipped x̂ in the posterior mean) and DDIM with ``use_clipped_model_output`` (ε recomputed from the
    clipped x̂), 9 strided steps, float64 tables."""
    model = _tiny_model()
    eps = _eps_of_k(model)
    clipped = clip_denoised(_eps_fn(model), model.schedule)
    ks = [T - 111 * j for j in range(10)]
    steps = len(ks) - 1
    z1 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(13), dtype=torch.float64) * 1.5
    with torch.no_grad():
        x_hat = (z1 - model.schedule.sigma(torch.ones(1, dtype=torch.float64)) * eps(z1, T)) \
            / model.schedule.alpha(torch.ones(1, dtype=torch.float64))
        assert (x_hat.abs() > 1).float().mean() > 0.3          # clipping does act on this chain
        if sampler == "ddpm":
            sched = _scheduler(diffusers.DDPMScheduler, "float64", variance_type="fixed_small", clip_sample=True)
            sched.set_timesteps(timesteps=ks)
            out = ddpm_sample(clipped, z1, model.schedule, EuclideanSpace(), steps=steps,
                              generator=torch.Generator().manual_seed(3))
            g, z = torch.Generator().manual_seed(3), z1
            for k in ks:
                z = sched.step(eps(z, k), k, z, generator=g).prev_sample
        else:
            eta = 0.0 if sampler == "ddim_eta0" else 1.0
            sched = _scheduler(diffusers.DDIMScheduler, "float64", set_alpha_to_one=True, steps_offset=0,
                               clip_sample=True)
            sched.set_timesteps(steps)
            out = ddim_sample(clipped, z1, model.schedule, EuclideanSpace(), steps=steps, eta=eta,
                              generator=torch.Generator().manual_seed(5))
            g = torch.Generator().manual_seed(5)
            noises = [torch.randn(z1.shape, generator=g, dtype=z1.dtype) if eta > 0 else None for _ in range(steps)]
            noises.append(torch.zeros_like(z1) if eta > 0 else None)
            z = z1
            for i, k in enumerate(ks):
                z = sched.step(eps(z, k), k, z, eta=eta, variance_noise=noises[i],
                               use_clipped_model_output=True).prev_sample
        unclipped = (ddpm_sample(_eps_fn(model), z1, model.schedule, EuclideanSpace(), steps=steps,
                                 generator=torch.Generator().manual_seed(3)) if sampler == "ddpm" else
                     ddim_sample(_eps_fn(model), z1, model.schedule, EuclideanSpace(), steps=steps, eta=eta,
                                 generator=torch.Generator().manual_seed(5)))
    assert (z - out).abs().max() < TOL, float((z - out).abs().max())
    assert (unclipped - out).abs().max() > 1e-2                   # and the clipping changed the samples
