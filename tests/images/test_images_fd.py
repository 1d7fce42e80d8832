"""FD-CIFARNet: the Fréchet distance against its closed forms (diagonal Gaussians, scaled and shifted
covariances, scipy's sqrtm), the pixel-Gaussian baseline's moments, CIFARNet (shapes, determinism, a few training
steps, weights files, the shipped weights) and `molediff image eval --fd` end to end on tiny generated data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from helpers import random_images, write_packed_cifar

from molediff.cli import main
from molediff.images.classifier import (
    CIFARNet,
    CIFARNetConfig,
    augment_batch,
    cifarnet_accuracy,
    cifarnet_features,
    load_cifarnet,
    save_cifarnet,
    train_cifarnet,
)
from molediff.images.metrics import (
    fd_cifarnet,
    fd_cifarnet_report,
    feature_moments,
    fixed_subset,
    frechet_distance,
    frechet_distance_from_moments,
    gaussian_baseline_images,
    pixel_moments,
    sample_uint8,
)
from molediff.images.model import ImageDiffusion, ImageDiffusionConfig
from molediff.training.weights import PRETRAINED_DIR, write_weights

SMALL = CIFARNetConfig(widths=(8, 16, 16, 32))


def _spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


# ------------------------------------------------------------------------------------- Fréchet distance
def test_fd_from_moments_equals_the_diagonal_closed_form():
    """Diagonal covariances commute: FD = Σ(μ₁ − μ₂)² + Σ(s₁ − s₂)² with s the standard deviations, also when
    some variances are zero (singular covariances)."""
    rng = np.random.default_rng(0)
    for d in (1, 5, 64):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = rng.uniform(0, 3, d), rng.uniform(0, 3, d)
        s1[: d // 3] = 0.0
        exact = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
        got = frechet_distance_from_moments(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2))
        assert got == pytest.approx(exact, rel=1e-10, abs=1e-10)


def test_fd_from_moments_matches_other_closed_forms_and_scipy_sqrtm():
    rng = np.random.default_rng(1)
    d = 24
    cov1, cov2 = _spd(d, rng), _spd(d, rng)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Σ₂ = c²Σ₁ (non-diagonal, commuting): (Σ₁Σ₂)^½ = cΣ₁, so FD = ‖Δμ‖² + (1 − c)² Tr Σ₁
    c = 1.7
    assert frechet_distance_from_moments(mu1, cov1, mu2, c ** 2 * cov1) == pytest.approx(
        ((mu1 - mu2) ** 2).sum() + (1 - c) ** 2 * np.trace(cov1), rel=1e-10)
    # general (non-commuting) covariances: scipy's Schur-based matrix square root of Σ₁Σ₂
    tr_root = np.trace(scipy.linalg.sqrtm(cov1 @ cov2)).real
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_root
    got = frechet_distance_from_moments(mu1, cov1, mu2, cov2)
    assert got == pytest.approx(ref, rel=1e-9) and got > 1.0
    # a rotation of both Gaussians leaves the distance unchanged; swapping them too
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rotated = frechet_distance_from_moments(q @ mu1, q @ cov1 @ q.T, q @ mu2, q @ cov2 @ q.T)
    assert rotated == pytest.approx(got, rel=1e-9)
    assert frechet_distance_from_moments(mu2, cov2, mu1, cov1) == pytest.approx(got, rel=1e-9)
    # a singular Σ₁ (rank 3, as the covariance of 4 feature vectors): the eigenvalues clipped at 0 still give
    # scipy's value
    low = _spd(d, rng, rank=3)
    ref_low = np.trace(low) + np.trace(cov2) - 2 * np.trace(scipy.linalg.sqrtm(cov2 @ low)).real
    assert frechet_distance_from_moments(mu1, low, mu1, cov2) == pytest.approx(ref_low, rel=1e-5)


def test_fd_of_samples_identity_symmetry_shift_and_population_moments():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(size=(400, 16)) * 2 + 1
    assert abs(frechet_distance(a, a)) < 1e-9 * np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-12)
    shift = rng.normal(size=16)
    assert frechet_distance(a + shift, a) == pytest.approx((shift ** 2).sum(), rel=1e-7)   # same Σ: only ‖Δμ‖²
    mu, cov = feature_moments(a)
    assert np.allclose(mu, a.mean(0)) and np.allclose(cov, np.cov(a, rowvar=False), rtol=1e-12)
    # large samples of two diagonal Gaussians approach the population value Σ(Δμ)² + Σ(Δs)²
    mu1, mu2, s1, s2 = np.zeros(4), np.array([1.0, 0, 0, -0.5]), np.array([1.0, 2, 0.5, 1]), np.array([1.0, 1, 1, 3])
    x1 = mu1 + s1 * rng.standard_normal((200_000, 4))
    x2 = mu2 + s2 * rng.standard_normal((200_000, 4))
    exact = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()                                # 6.5
    assert frechet_distance(x1, x2) == pytest.approx(exact, abs=0.05)


def test_fd_refuses_bad_input():
    good = np.ones((5, 3)) + np.arange(15).reshape(5, 3) ** 0.5
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        frechet_distance(good[:1], good)
    with pytest.raises(ValueError, match="different feature dimensions: 3 and 2"):
        frechet_distance(good, good[:, :2])
    nan = good.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(good, nan)
    with pytest.raises(ValueError, match=r"must be \[N, D\]"):
        frechet_distance(good.ravel(), good)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance_from_moments(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariance"):
        frechet_distance_from_moments(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance_from_moments(np.zeros(2), np.full((2, 2), np.inf), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------------- Gaussian baseline
def _gaussian_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 2, 2] from a correlated Gaussian (mean ~128, std ~15: no clipping)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(12, 12)) * 5
    mean = 128 + rng.normal(size=12) * 10
    x = np.rint(mean + rng.standard_normal((n, 12)) @ a.T).clip(0, 255).astype(np.uint8)
    return x.reshape(n, 3, 2, 2), mean, a @ a.T


def test_pixel_moments_are_the_sample_mean_and_unbiased_covariance():
    imgs, _, _ = _gaussian_images(301, 0)
    flat = imgs.reshape(301, -1).astype(np.float64)
    mean, cov = pixel_moments(imgs, chunk=7)                     # chunks of 7 images: 43 of them, one ragged
    assert np.allclose(mean, flat.mean(0), rtol=1e-13) and np.allclose(cov, np.cov(flat, rowvar=False), rtol=1e-11)
    with pytest.raises(ValueError, match="at least 2 images"):
        pixel_moments(imgs[:1])


def test_gaussian_baseline_reproduces_the_fitted_mean_and_covariance():
    """Full rank (500 images of 12 pixels: Cholesky) and singular (5 images: the data factor): the samples have
    the fitted mean and the fitted covariance plus the rounding's uniform noise, 1/12 per pixel."""
    for n_fit in (500, 5):
        imgs, _, _ = _gaussian_images(n_fit, 1)
        mean, cov = pixel_moments(imgs)
        out = gaussian_baseline_images(imgs, 200_000, seed=3)
        assert out.dtype == np.uint8 and out.shape == (200_000, 3, 2, 2)
        flat = out.reshape(len(out), -1).astype(np.float64)
        scale = np.sqrt(np.diag(cov).max())
        assert np.abs(flat.mean(0) - mean).max() < 5 * scale / np.sqrt(len(out))
        err = np.cov(flat, rowvar=False) - (cov + np.eye(12) / 12)
        assert np.abs(err).max() < 0.02 * np.diag(cov).max(), (n_fit, np.abs(err).max())
    assert np.array_equal(gaussian_baseline_images(imgs, 10, seed=4), gaussian_baseline_images(imgs, 10, seed=4))
    assert not np.array_equal(gaussian_baseline_images(imgs, 10, seed=4), gaussian_baseline_images(imgs, 10, seed=5))
    # a constant set has Σ = 0: every sample is that image; a set near 255 clips instead of wrapping around
    const = np.full((4, 3, 2, 2), 77, np.uint8)
    assert (gaussian_baseline_images(const, 6) == 77).all()
    bright = np.full((50, 3, 2, 2), 250, np.uint8)
    bright[::2] = 255
    assert gaussian_baseline_images(bright, 1000).min() >= 200
    with pytest.raises(ValueError, match="uint8 images"):
        gaussian_baseline_images(imgs.astype(np.float32), 3)
    with pytest.raises(ValueError, match="at least 2 training images"):
        gaussian_baseline_images(imgs[:1], 3)


# --------------------------------------------------------------------------------------------- CIFARNet
def test_cifarnet_shapes_inputs_and_determinism():
    torch.manual_seed(0)
    net = CIFARNet().eval()
    assert net.config.feature_dim == 256 and 1e6 < sum(p.numel() for p in net.parameters()) < 2.5e6
    x = torch.from_numpy(random_images(3, 0))
    with torch.no_grad():
        f, logits = net.features(x), net(x)
        assert f.shape == (3, 256) and logits.shape == (3, 10) and (f >= 0).all()
        assert torch.allclose(net.features(x.float() / 255), f, atol=1e-5)      # uint8 and [0, 1] floats agree
        assert torch.equal(net.features(x), f)
        assert torch.allclose(net.features(x[1:2]), f[1:2], atol=1e-5)          # eval mode: no batch mixing
    feats = cifarnet_features(net, x.numpy(), batch_size=2)
    assert feats.dtype == np.float64 and feats.shape == (3, 256) and np.allclose(feats, f.double().numpy(), atol=1e-5)
    assert CIFARNetConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        net(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="model.widht"):
        CIFARNetConfig.from_dict({"widht": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="four positive"):
        CIFARNetConfig(widths=(8, 16, 32))


def test_augmentation_crops_windows_of_the_reflected_image_and_flips():
    imgs = random_images(64, 1)
    out = augment_batch(imgs, np.random.default_rng(0))
    padded = np.pad(imgs, ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")
    n_flipped = 0
    for i in range(len(imgs)):
        windows = [padded[i, :, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        plain = any(np.array_equal(out[i], w) for w in windows)
        flipped = any(np.array_equal(out[i], w[..., ::-1]) for w in windows)
        assert plain or flipped
        n_flipped += flipped and not plain
    assert 15 <= n_flipped <= 49
    assert np.array_equal(out, augment_batch(imgs, np.random.default_rng(0)))


def _toy_task(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Class k of 3: channel k brighter; noisy, so the classes must be learnt."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    imgs = rng.normal(100, 40, (n, 3, 32, 32))
    imgs[np.arange(n), labels] += 60
    return imgs.clip(0, 255).astype(np.uint8), labels


@pytest.mark.slow
def test_a_few_training_steps_reduce_the_loss_and_are_deterministic():
    imgs, labels = _toy_task()
    kw = dict(epochs=4, batch_size=16, lr=0.05, config=SMALL, bf16=False, show_progress=False)
    before = torch.random.get_rng_state()
    model, hist = train_cifarnet(imgs, labels, seed=0, **kw)
    assert torch.equal(torch.random.get_rng_state(), before)              # the global generator is untouched
    assert hist["steps"] == 24 and len(hist["loss"]) == 24 and not model.training
    assert np.mean(hist["loss"][-4:]) < 0.7 * np.mean(hist["loss"][:4]), hist["loss"]
    assert cifarnet_accuracy(model, imgs, labels) > 0.9
    again, hist2 = train_cifarnet(imgs, labels, seed=0, **kw)
    assert hist2["loss"] == hist["loss"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    _, other = train_cifarnet(imgs, labels, seed=1, **kw)
    assert other["loss"] != hist["loss"]
    with pytest.raises(ValueError, match="labels must lie"):
        train_cifarnet(imgs, labels + 8, seed=0, **kw)
    with pytest.raises(ValueError, match="no training step"):
        train_cifarnet(imgs, labels, **{**kw, "epochs": 0.01})


def test_weights_files_round_trip_and_damaged_files_fail_in_one_line(tmp_path):
    torch.manual_seed(0)
    net = CIFARNet(SMALL).eval()
    with torch.no_grad():      # non-trivial running statistics, so that the buffers must be saved too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = save_cifarnet(net, tmp_path / "c.safetensors", dtype=None, extra={"test_accuracy": 0.5})
    loaded = load_cifarnet(path)
    assert loaded.config == SMALL and not loaded.training
    x = random_images(4, 2)
    assert np.array_equal(cifarnet_features(loaded, x), cifarnet_features(net, x))
    small = load_cifarnet(save_cifarnet(net, tmp_path / "b.safetensors"))           # bf16 storage
    assert np.allclose(cifarnet_features(small, x), cifarnet_features(net, x), rtol=0.05, atol=0.05)
    for bad, pattern in ((tmp_path / "none.safetensors", "do not exist"),
                         (tmp_path / "cut.safetensors", "cannot load CIFARNet weights")):
        if bad.name == "cut.safetensors":
            bad.write_bytes(path.read_bytes()[:200])
        with pytest.raises(ValueError, match=pattern) as e:
            load_cifarnet(bad)
        assert "\n" not in str(e.value)
    unet = ImageDiffusion(ImageDiffusionConfig.from_dict({"T": 5, "unet": _TINY_UNET}))
    other = write_weights(unet.state_dict(), tmp_path / "unet.safetensors",
                          {"model_class": "ImageDiffusion", "model_config": json.dumps(unet.config.to_dict())})
    with pytest.raises(ValueError, match="ImageDiffusion model, not a CIFARNet"):
        load_cifarnet(other)


def test_shipped_weights_load_and_give_features():
    path = PRETRAINED_DIR / "cifarnet.safetensors"
    assert path.is_file() and path.stat().st_size <= 5 * 2 ** 20
    model = load_cifarnet()
    assert model.config == CIFARNetConfig() and next(model.parameters()).dtype == torch.float32
    imgs = random_images(6, 3)
    feats = cifarnet_features(model, imgs)
    assert feats.shape == (6, 256) and np.isfinite(feats).all() and feats.std(0).max() > 0
    assert np.array_equal(feats, cifarnet_features(load_cifarnet(), imgs))
    # FD-CIFARNet of a set with itself is 0; of noise against smooth images it is positive and symmetric
    smooth = np.repeat(np.repeat(random_images(6, 4)[:, :, ::8, ::8], 8, axis=2), 8, axis=3)
    assert fd_cifarnet(imgs, imgs, model) < 1e-6
    d = fd_cifarnet(imgs, smooth, model)
    assert d > 0 and d == pytest.approx(fd_cifarnet(smooth, imgs, model), rel=1e-9)


# ------------------------------------------------------------------------------------- command and report
_TINY_UNET = {"image_size": 32, "channels": 8, "channel_mult": [1, 2], "attention_resolutions": [16], "groups": 4,
              "dropout": 0.0}


def _tiny_model(tmp_path) -> tuple[ImageDiffusion, str]:
    torch.manual_seed(0)
    model = ImageDiffusion(ImageDiffusionConfig.from_dict({"T": 10, "unet": _TINY_UNET})).eval()
    path = write_weights(model.state_dict(), tmp_path / "tiny_unet.safetensors",
                         {"model_class": "ImageDiffusion", "model_config": json.dumps(model.config.to_dict())})
    return model, str(path)


def test_fd_report_floor_is_zero_for_the_same_images_and_samples_follow_their_seeds(tmp_path):
    model, _ = _tiny_model(tmp_path)
    classifier = CIFARNet(SMALL).eval()
    test = random_images(5, 5)
    r = fd_cifarnet_report(model, test, test, 5, "ddim", 2, seed=3, batch_size=3, classifier=classifier,
                           gaussian_fit_images=random_images(8, 6))
    assert r["n"] == 5 and r["feature_dim"] == 32 and r["fd_floor"] < 1e-9      # all 5 of the same images
    assert r["fd_samples"] > 0 and r["fd_gaussian"] > 0
    # image i uses seed + i whatever the batch
    assert torch.equal(sample_uint8(model, 3, "ddim", 2, seed=3, batch_size=2),
                       sample_uint8(model, 4, "ddim", 2, seed=2, batch_size=4)[1:])
    with pytest.raises(ValueError, match="at least 2 images"):
        fd_cifarnet_report(model, test, test, 1, classifier=classifier)
    with pytest.raises(ValueError, match="exceeds"):
        fd_cifarnet_report(model, test, test, 6, classifier=classifier)


def test_image_eval_fd_from_the_command_line(tmp_path, capsys):
    data = write_packed_cifar(tmp_path / "tiny.npz", n_train=8, n_test=6)
    _, weights = _tiny_model(tmp_path)
    out = tmp_path / "fd.json"
    assert main(["image", "eval", "--checkpoint", weights, "--data", str(data), "-n", "2", "--one-draw", "--fd",
                 "--fd-images", "5", "--sampler", "ddim", "--steps", "2", "--seed", "7", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "FD-CIFARNet against 5 test images" in printed
    assert "samples (ddim, 2 steps, seeds 7..11)" in printed and "floor: 5 training images" in printed
    result = json.loads(out.read_text())
    fd = result["fd_cifarnet"]
    assert result["n"] == 2 and math.isfinite(result["bits_per_dim"])
    assert fd["n"] == 5 and fd["feature_dim"] == 256 and fd["steps"] == 2 and fd["gaussian_fit_images"] == 8
    assert all(fd[k] > 0 and math.isfinite(fd[k]) for k in ("fd_samples", "fd_floor", "fd_gaussian"))
    # FD only: no bits/dim in the JSON, the same FD values (the same seeds)
    assert main(["image", "eval", "--checkpoint", weights, "--data", str(data), "--no-bits-per-dim", "--fd",
                 "--fd-images", "5", "--sampler", "ddim", "--steps", "2", "--seed", "7", "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    assert "bits_per_dim" not in again and again["fd_cifarnet"] == fd
    capsys.readouterr()
    for argv, message in ((["--fd", "--fd-images", "1"], "--fd-images must be at least 2"),
                          (["--fd", "--fd-images", "7"], "--fd-images 7 exceeds"),
                          (["--no-bits-per-dim"], "nothing to evaluate"),
                          (["--fd", "--eta", "0.5"], "--eta applies to --sampler ddim only"),
                          (["--fd", "--steps", "11"], "--steps must lie in 1..10")):
        assert main(["image", "eval", "--checkpoint", weights, "--data", str(data), "--no-bits-per-dim",
                     *argv]) == 2                                           # usage errors (issue 23)
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["image", "eval", "--help"])
    text = capsys.readouterr().out
    for option in ("--fd", "--fd-images", "--sampler", "--steps", "--eta", "--classifier", "--no-bits-per-dim",
                   "--seed", "--json", "FD-CIFARNet", "not an FID"):
        assert option in text


def test_fixed_subsets_are_reproducible_and_balanced_in_a_class_sorted_file():
    labels = np.repeat(np.arange(10), 100)                    # sorted by class, as the packed JPEG copy
    idx = fixed_subset(1000, 200, seed=0)
    assert np.array_equal(idx, fixed_subset(1000, 200, seed=0)) and not np.array_equal(idx, fixed_subset(1000, 200, 1))
    assert len(np.unique(idx)) == 200 and (np.diff(idx) > 0).all() and idx.max() < 1000
    assert np.bincount(labels[idx], minlength=10).min() >= 5  # the first 200 would hold two classes only
    assert np.array_equal(fixed_subset(7, 7, seed=3), np.arange(7))
    with pytest.raises(ValueError, match="cannot draw 8 of 7"):
        fixed_subset(7, 8, seed=0)
