"""The image domain: the U-Net (DDPM's parameter count, the ε-network contract), ImageDiffusion on the core
(overfitting 8 images, the untrained bound, every sampler, per-seed sampling), both CIFAR-10 readers on tiny
generated files (and their refusal of damaged ones), the training task and `molediff image`."""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import (
    ROOT,
    TINY_UNET,
    pickled_cifar_batch,
    random_images,
    randomise_zero_layers,
    write_cifar_batches,
    write_packed_cifar,
)
from PIL import Image

from molediff.cli import main
from molediff.diffusion import SAMPLERS
from molediff.images import cifar
from molediff.images.cifar import ImageSet, hflip, load_cifar10, read_cifar_batches, read_cifar_jpeg
from molediff.images.model import ImageDiffusion, ImageDiffusionConfig, to_model_range, to_uint8
from molediff.images.training import ImageDataConfig, ImageTask, build_task
from molediff.images.unet import UNET_PRESETS, UNet, UNetConfig
from molediff.training.config import config_from_dict, load_config


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(T: int = 20, **unet) -> ImageDiffusion:
    torch.manual_seed(0)
    return ImageDiffusion(ImageDiffusionConfig.from_dict({"T": T, "unet": {**TINY_UNET, **unet}}))


# ------------------------------------------------------------------------------------------------- U-Net
def test_ddpm_preset_has_ddpm_parameter_count_and_small_preset_fits_a_cpu():
    n = _params(UNet(UNET_PRESETS["ddpm"]))
    assert abs(n - 35.7e6) / 35.7e6 < 0.01, n            # Ho et al. 2020: 35.7 M
    small = UNet(UNET_PRESETS["small"])
    assert 1e6 <= _params(small) <= 2e6
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert small(x, torch.tensor([0.0, 1.0])).shape == x.shape


def test_unet_contract_shape_dtype_determinism_endpoints_and_zero_start():
    net = UNet(UNetConfig.from_dict(TINY_UNET)).double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert not net(x, torch.rand(3, dtype=torch.float64)).abs().max()     # ε̂ = 0 before training (DDPM init)
    randomise_zero_layers(net)
    net.eval()
    for t in (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)):
        out = net(x, t)
        assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()
    assert torch.equal(net(x, 0.5), net(x, torch.full((3,), 0.5, dtype=torch.float64)))   # scalar t broadcasts
    assert torch.equal(net(x, 0.3), net(x, 0.3))
    assert not torch.allclose(net(x, 0.1), net(x, 0.9))                    # t reaches the blocks
    # each image is denoised on its own: the batch does not mix
    assert torch.allclose(net(x[:1], 0.4), net(x, 0.4)[:1], atol=1e-12)


def test_configs_round_trip_and_name_bad_keys():
    cfg = ImageDiffusionConfig.from_dict({"T": 50, "unet": TINY_UNET})
    assert ImageDiffusionConfig.from_dict(cfg.to_dict()) == cfg
    assert UNetConfig.from_dict(UNET_PRESETS["ddpm"].to_dict()) == UNET_PRESETS["ddpm"]
    with pytest.raises(ValueError, match="model.unet.chanels"):
        ImageDiffusionConfig.from_dict({"unet": {"chanels": 8}})
    with pytest.raises(ValueError, match="divide by groups"):
        UNetConfig(channels=12, groups=8)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        ImageDiffusionConfig(schedule="sigmoid")
    with pytest.raises(ValueError, match="images must be"):
        _tiny().loss(torch.zeros(2, 3, 16, 16))


def test_shipped_configs_build_the_presets():
    for name, preset in (("cifar_small", "small"), ("cifar_ddpm", "ddpm")):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.task == "images"
        model = ImageDiffusionConfig.from_dict(cfg.model)
        assert model.unet == UNET_PRESETS[preset] and model.schedule == "linear" and model.T == 999
        from molediff.utils import build_config

        build_config(ImageDataConfig, cfg.data, "data.")


# ------------------------------------------------------------------------------------ model on the core
@pytest.mark.slow
def test_small_unet_overfits_eight_images():
    """The small preset (dropout off) memorises 8 smooth 32 × 32 images: the ε-loss on fixed (t, ε) draws falls
    more than 10× in 80 Adam steps."""
    torch.manual_seed(0)
    unet = {**UNET_PRESETS["small"].to_dict(), "dropout": 0.0}
    model = ImageDiffusion(ImageDiffusionConfig.from_dict({"unet": unet}))
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.randn(8, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear",
                                        align_corners=False).tanh()

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(model.loss(x.repeat(8, 1, 1, 1), generator=torch.Generator().manual_seed(1)).mean())

    before = held_out_loss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(80):
        loss = model(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert abs(before - 1.0) < 0.05                     # ε̂ = 0 at the start: E‖ε‖² per pixel = 1
    assert after < before / 10, (before, after)


@pytest.mark.slow
def test_untrained_bits_per_dim_is_finite_and_matches_its_closed_form():
    """An untrained model predicts ε̂ = 0, so x̂ = z_t / α_t and step i of the bound costs
    ½ expm1(λ_{i−1} − λ_i) ‖ε‖²: ½ Σ expm1(Δλ) = 10.2 nats (14.7 bits) per dimension on DDPM's schedule, plus
    about 2.4 bits for the decoder: about 17 bits/dim. That is the schedule's number, not 8 bits (the uniform
    256-level code)."""
    model = _tiny(T=999).double()
    g = torch.Generator().manual_seed(0)
    x = to_model_range(torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)).double()
    terms = model.nll(x, full_chain=True, generator=g)
    bpd = terms["bits_per_dim"]
    assert bpd.shape == (4,) and torch.isfinite(bpd).all()
    lam = model.schedule.table
    expected = 0.5 * float(torch.expm1(lam[:-1] - lam[1:]).sum()) / math.log(2)
    diffusion_bpd = terms["diffusion"] / (3 * 8 * 8 * math.log(2))
    assert torch.allclose(diffusion_bpd, torch.full_like(diffusion_bpd, expected), rtol=0.05), (diffusion_bpd,
                                                                                               expected)
    assert 14.5 < expected < 15 and (bpd > 15).all() and (bpd < 19).all()
    one_draw = model.nll(x, full_chain=False, generator=g)["bits_per_dim"]
    assert torch.isfinite(one_draw).all()


@pytest.mark.slow
def test_untrained_v_model_bits_per_dim_matches_its_closed_form_near_8():
    """The shipped configuration predicts v: an untrained (zero-output) v-network gives ε̂ = σ_t z_t, so
    x̂ = α_t z_t and step i (from t to s) costs ½ (SNR_s − SNR_t) E‖α_t z_t − x‖², with E‖α_t z_t − x‖² =
    σ_t⁴ ‖x‖² + α_t² σ_t² per dimension: about 6.7 bits/dim on CIFAR-like images, 9.1 with the decoder
    (measured 9.12 on 8 real test images with the small preset)."""
    torch.manual_seed(0)
    model = ImageDiffusion(ImageDiffusionConfig.from_dict({"T": 999, "unet": TINY_UNET, "prediction": "v"})).double()
    g = torch.Generator().manual_seed(0)
    x = to_model_range(torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)).double()
    terms = model.nll(x, full_chain=True, generator=g)
    lam = model.schedule.table
    snr = lam.exp()
    a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)          # α², σ² on the grid
    x2 = x.pow(2).flatten(1).mean(1)                          # per-dimension ‖x‖²
    per_step = 0.5 * (snr[:-1] - snr[1:])[None] * (s2[1:].pow(2)[None] * x2[:, None] + (a2 * s2)[1:][None])
    expected = per_step.sum(1) / math.log(2)
    diffusion_bpd = terms["diffusion"] / (3 * 8 * 8 * math.log(2))
    assert torch.allclose(diffusion_bpd, expected, rtol=0.05), (diffusion_bpd, expected)
    assert torch.isfinite(terms["bits_per_dim"]).all() and (terms["bits_per_dim"] < 12).all()


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_end_to_end_and_each_image_depends_on_its_seed_only(sampler):
    model = _tiny(T=20).eval()
    randomise_zero_layers(model)
    out = model.sample(3, sampler, steps=4, seeds=[5, 6, 7])
    assert out.shape == (3, 3, 8, 8) and torch.isfinite(out).all() and out.abs().max() <= 1
    alone = model.sample(1, sampler, steps=4, seeds=[6])
    assert torch.allclose(alone[0], out[1], atol=1e-5)
    assert not torch.allclose(out[0], out[1])
    pixels = to_uint8(out)
    assert pixels.dtype == torch.uint8 and pixels.shape == out.shape


def test_ddim_eta_passes_through_and_bad_requests_are_refused():
    model = _tiny(T=20).eval()
    randomise_zero_layers(model)
    a = model.sample(2, "ddim", steps=5, seeds=[1, 2], eta=0.0)
    b = model.sample(2, "ddim", steps=5, seeds=[1, 2], eta=1.0)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="seeds"):
        model.sample(2, seeds=[1])
    with pytest.raises(ValueError, match="sampling steps"):
        model.sample(1, steps=21)


# ------------------------------------------------------------------------------------------ CIFAR readers
def _tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def test_official_batches_read_from_the_folder_and_the_archive(tmp_path):
    folder, expect = write_cifar_batches(tmp_path / "raw")
    archive = _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    for path in (folder, tmp_path / "raw", archive):
        for split in ("train", "test"):
            data = load_cifar10(path, split)
            assert data.images.shape == (len(expect[split]), 3, 32, 32) and data.images.dtype == np.uint8
            assert np.array_equal(data.images, expect[split])
            assert data.labels.tolist() == expect[f"{split}_labels"].tolist()
            assert data.classes == cifar.CIFAR10_CLASSES
    assert np.array_equal(read_cifar_batches(archive, "test").images, load_cifar10(folder, "test").images)
    # the planes are R, G, B of a row-major 32 × 32 image: pixel (y, x) of channel c is data[c·1024 + 32y + x]
    flat = expect["train"].reshape(-1, 3072)
    assert load_cifar10(folder).images[0, 2, 5, 7] == flat[0, 2 * 1024 + 32 * 5 + 7]


def test_packed_jpeg_file_decodes_once_into_the_cache(tmp_path, monkeypatch):
    path = write_packed_cifar(tmp_path / "cifar10_jpeg.npz")
    train = read_cifar_jpeg(path, "train")
    with np.load(path) as z:
        first = np.asarray(Image.open(io.BytesIO(z["train_jpeg"][z["train_offsets"][0]:z["train_offsets"][1]]
                                                 .tobytes())).convert("RGB")).transpose(2, 0, 1)
    assert train.images.shape == (5, 3, 32, 32) and np.array_equal(train.images[0], first)
    assert train.labels.tolist() == [0, 1, 2, 3, 4] and train.classes[9] == "truck"
    assert load_cifar10(path, "test").images.shape == (3, 3, 32, 32)

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cifar, "_decode", no_decoding)
    again = load_cifar10(path, "train")
    assert np.array_equal(again.images, train.images) and again.labels.tolist() == train.labels.tolist()


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def test_damaged_batches_are_refused_naming_the_file(tmp_path):
    folder, _ = write_cifar_batches(tmp_path / "raw")
    archive = _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.tar\.gz") as e:
        load_cifar10(cut)
    assert "\n" not in str(e.value)
    _truncate(folder / "data_batch_3", 0.5)
    with pytest.raises(ValueError, match=r"data_batch_3 is truncated or not a CIFAR-10 batch"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickled_cifar_batch(random_images(3, 0), [1, 2]))        # labels lost
    with pytest.raises(ValueError, match=r"data_batch_3: 3 images but 2 labels"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                                        b"fine_labels": [0, 1]}))
    with pytest.raises(ValueError, match="CIFAR-100"):
        load_cifar10(folder)
    # a pickle that would run code is refused, not executed
    (folder / "data_batch_3").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(ValueError, match=r"data_batch_3 .*os\.system"):
        load_cifar10(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3 missing"):
        load_cifar10(folder)
    with pytest.raises(ValueError, match="holds no CIFAR-10 python batches"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_cifar10(tmp_path / "nowhere.tar.gz")
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(ValueError, match=r"notes\.txt is not a readable CIFAR-10 archive"):
        load_cifar10(tmp_path / "notes.txt")


def test_damaged_packed_files_are_refused_naming_the_file(tmp_path):
    bad_image = write_packed_cifar(tmp_path / "bad_image.npz", corrupt=2)
    with pytest.raises(ValueError, match=r"bad_image\.npz: train image 2 is not a readable JPEG"):
        read_cifar_jpeg(bad_image, "train", cache=False)
    assert read_cifar_jpeg(bad_image, "test", cache=False).images.shape == (3, 3, 32, 32)
    cut = _truncate(write_packed_cifar(tmp_path / "cut.npz"), 0.6)
    with pytest.raises(ValueError, match=r"cut\.npz is truncated or not a packed CIFAR-10 JPEG file") as e:
        read_cifar_jpeg(cut, "train")
    assert "\n" not in str(e.value)
    np.savez(tmp_path / "other.npz", images=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npz is not a packed CIFAR-10 JPEG file: it lacks train_jpeg"):
        load_cifar10(tmp_path / "other.npz")
    good = dict(np.load(write_packed_cifar(tmp_path / "good.npz")))
    np.savez(tmp_path / "offsets.npz", **{**good, "train_offsets": good["train_offsets"][:-1]})
    with pytest.raises(ValueError, match=r"offsets\.npz: train_offsets must rise from 0"):
        load_cifar10(tmp_path / "offsets.npz")
    np.savez(tmp_path / "labels.npz", **{**good, "train_labels": good["train_labels"][:2]})
    with pytest.raises(ValueError, match=r"labels\.npz: 5 images but 2 train_labels"):
        load_cifar10(tmp_path / "labels.npz")
    with pytest.raises(ValueError, match="unknown CIFAR-10 split"):
        load_cifar10(tmp_path / "good.npz", "valid")


def test_flips_and_batches_are_fixed_by_seed_and_epoch():
    imgs = random_images(10, 0)
    flipped = hflip(imgs, np.array([True, False] * 5))
    assert np.array_equal(flipped[0], imgs[0][..., ::-1]) and np.array_equal(flipped[1], imgs[1])
    task = ImageTask(_tiny(), ImageSet(imgs, np.zeros(10, np.int64), cifar.CIFAR10_CLASSES))
    epoch = [b.numpy() for b in task.batches(seed=0, epoch=0, rank=0, world_size=1, batch_size=4)]
    assert len(epoch) == 2 and all(b.shape == (4, 3, 32, 32) for b in epoch)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(epoch, task.batches(0, 0, 0, 1, 4)))
    assert not all(np.array_equal(a, b.numpy()) for a, b in zip(epoch, task.batches(0, 1, 0, 1, 4)))
    halves = [b.numpy() for b in task.batches(0, 0, 1, 2, 4)]
    assert all(np.array_equal(h, e[2:]) for h, e in zip(halves, epoch))     # rank 1 of 2: the second halves
    seen = np.concatenate([b.numpy() for b in ImageTask(task.model, task.dataset).batches(3, 0, 0, 1, 10)])
    n_flipped = sum(any(np.array_equal(s, hflip(imgs[i:i + 1], np.array([True]))[0]) for s in seen)
                    for i in range(10))
    assert 1 <= n_flipped <= 9


# ------------------------------------------------------------------------------------ task and command line
def _config(tmp_path: Path, data_path: Path) -> Path:
    cfg = {"task": "images", "steps": 2, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "eval_every": 2,
           "out_dir": str(tmp_path / "run"), "bf16": False,
           "model": {"T": 10, "unet": {**TINY_UNET, "image_size": 32, "attention_resolutions": [16]}},
           "data": {"path": str(data_path), "eval_images": 2}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_image_train_sample_and_eval_from_the_command_line(tmp_path, capsys):
    data = write_packed_cifar(tmp_path / "tiny.npz", n_train=8, n_test=3)
    config = _config(tmp_path, data)
    task = build_task(config_from_dict(yaml.safe_load(config.read_text())))
    assert len(task.dataset) == 8 and len(task.eval_set) == 2
    assert main(["image", "train", str(config), "--threads", "1"]) == 0
    metrics = [yaml.safe_load(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_bits_per_dim" in m for m in metrics)
    grid = tmp_path / "grid.png"
    assert main(["image", "sample", "--checkpoint", str(tmp_path / "run"), "-n", "5", "-o", str(grid),
                 "--steps", "3", "--sampler", "ddim", "--nrow", "3"]) == 0
    with Image.open(grid) as im:
        assert im.size == (4 * (3 * 34 + 2), 4 * (2 * 34 + 2)) and im.mode == "RGB"   # drawn at 4x by default
    assert "wrote 5 images" in capsys.readouterr().out
    out_json = tmp_path / "bpd.json"
    assert main(["image", "eval", "--checkpoint", str(tmp_path / "run"), "--data", str(data), "-n", "3",
                 "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "full chain, T = 10" in printed
    result = yaml.safe_load(out_json.read_text())
    assert result["n"] == 3 and math.isfinite(result["bits_per_dim"])


def test_image_commands_fail_in_one_line(tmp_path, capsys, monkeypatch):
    import molediff.utils as utils  # the home of the shipped-weights lookup

    with monkeypatch.context() as m:
        m.setattr(utils, "PRETRAINED_DIR", tmp_path)   # an installation without the shipped file
        assert main(["image", "sample", "-n", "2", "-o", str(tmp_path / "g.png")]) == 1
        assert "no image weights are shipped in this installation" in capsys.readouterr().err
    assert main(["image", "sample", "-o", str(tmp_path / "g.jpg"), "--checkpoint", "x"]) == 2   # usage error
    assert "must name a .png file" in capsys.readouterr().err
    toy = tmp_path / "toy.yaml"
    toy.write_text(yaml.safe_dump({"task": "toy", "steps": 1, "batch_size": 2}))
    assert main(["image", "train", str(toy)]) == 2         # a usage error: the config of another command
    err = capsys.readouterr().err
    assert "task 'toy'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["image", "sample", "--help"])
    text = capsys.readouterr().out
    for option in ("--num-images", "--output", "--checkpoint", "--sampler", "--steps", "--eta", "--seed", "--nrow",
                   "--scale", "--batch-size", "--device", "--threads"):
        assert option in text
