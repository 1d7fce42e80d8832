"""scripts/gpu/train_images.py on CPU with the tiny config: ``prepare`` copies a packed-JPEG file and packs the
official batches into the same format; ``run`` (with RDKit and biotite unimportable, as on the GPU machine)
trains, exports, samples a grid, measures bits/dim and resumes; bad inputs fail in one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import NO_BIOTITE, ROOT, assert_every_option_explained, load_script
from helpers import jpeg_bytes as _jpeg
from helpers import write_cifar_batches as _cifar_batches
from helpers import write_packed_cifar as _packed
from PIL import Image
from safetensors import safe_open

from molediff.images.cifar import CIFAR10_CLASSES, load_cifar10, read_cifar_jpeg
from molediff.images.model import ImageDiffusion
from molediff.training.weights import load_model, write_weights

SCRIPT = ROOT / "scripts" / "gpu" / "train_images.py"
TINY = ROOT / "configs" / "cifar_tiny_test.yaml"


@pytest.fixture(scope="module")
def job():
    return load_script(SCRIPT, "train_images_job")


def test_prepare_copies_a_packed_file_and_packs_official_batches_as_jpeg(tmp_path, job, capsys):
    packed = _packed(tmp_path / "src.npz", n_train=6, n_test=2)
    job.main(["prepare", "--data", str(packed), "--out", str(tmp_path / "a")])
    assert (tmp_path / "a" / "cifar10_jpeg.npz").read_bytes() == packed.read_bytes()
    assert "6 train + 2 test images" in capsys.readouterr().out

    folder, expect = _cifar_batches(tmp_path / "raw")
    job.main(["prepare", "--data", str(folder), "--out", str(tmp_path / "b"), "--quality", "90"])
    written = tmp_path / "b" / "cifar10_jpeg.npz"
    assert "packed as JPEG (quality 90)" in capsys.readouterr().out
    for split in ("train", "test"):
        back = read_cifar_jpeg(written, split, cache=False)      # the reader the images task uses
        assert back.images.shape == expect[split].shape and back.classes == CIFAR10_CLASSES
        assert back.labels.tolist() == expect[f"{split}_labels"].tolist()
        # each image is Pillow's JPEG of the original at that quality (lossy), in the original order
        for img, original in zip(back.images, expect[split]):
            with Image.open(io.BytesIO(_jpeg(original))) as im:     # test_images' encoder: quality 90
                assert np.array_equal(img, np.asarray(im.convert("RGB")).transpose(2, 0, 1))
    assert len(load_cifar10(written, "train")) == 15


def test_bad_inputs_fail_in_one_line(tmp_path, job):
    for argv in (["prepare", "--data", str(tmp_path / "nowhere.tar.gz"), "--out", str(tmp_path)],
                 ["run", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as e:
            job.main(argv)
        assert "does not exist" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match=r"run: .*junk\.npz is truncated or not a packed CIFAR-10 JPEG") as e:
        job.main(["run", "--data", str(tmp_path / "junk.npz"), "--config", str(TINY), "--run-dir",
                  str(tmp_path / "run"), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_every_option_is_explained(job):
    assert_every_option_explained(job)


@pytest.mark.slow
def test_image_gpu_job_trains_exports_samples_and_resumes_without_rdkit(tmp_path, job):
    (tmp_path / "gpu_data").mkdir()
    data = _packed(tmp_path / "gpu_data" / "cifar10_jpeg.npz", n_train=8, n_test=3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", NO_BIOTITE, str(SCRIPT), "run", "--data", str(data), "--config", str(TINY),
           "--run-dir", str(tmp_path / "run"), "--minutes", "2", "--samples", "6", "--sample-batch", "4",
           "--sampler", "ddim", "--steps", "3", "--bpd-images", "2", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not report["resumed"] and (report["start_step"], report["final_step"]) == (0, 4)
    assert report["images_per_s"] > 0 and report["final_metrics"]["step"] == 4
    assert any("eval_bits_per_dim" in json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    assert report["bits_per_dim"]["n"] == 2 and np.isfinite(report["bits_per_dim"]["bits_per_dim"])
    assert report["bits_per_dim"]["chain"] == "full, T = 10"
    assert report["weights"]["returned"] and report["ema_weight_of_start"] == pytest.approx(0.9 ** 4)
    with Image.open(out / "samples.png") as im:                    # 6 images: 3 per row, 2 rows of 32 + 2 px
        assert im.size == (3 * 34 + 2, 2 * 34 + 2) and im.mode == "RGB"
    model = load_model(ImageDiffusion, out / "cifar10_unet.safetensors")
    assert model.config.unet.channels == 8 and model.config.T == 10
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(report["out_files"]) and len(files) <= 8
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in files)

    # a second call resumes from the checkpoint and trains on; weights over --max-file-mib stay in the run dir
    cmd += ["--train-steps", "6", "--max-file-mib", "0.001"]
    out_files = [out / f for f in files]
    for f in out_files:
        f.unlink()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] and (report["start_step"], report["final_step"]) == (4, 6)
    assert not report["weights"]["returned"] and not (out / "cifar10_unet.safetensors").exists()
    assert (tmp_path / "run" / "cifar10_unet.safetensors").is_file()

    # --init starts a new run from returned weights, and refuses weights of another model
    weights = tmp_path / "run" / "cifar10_unet.safetensors"
    common = ["--data", str(data), "--samples", "1", "--steps", "2", "--sampler", "ddim", "--bpd-images", "0",
              "--device", "cpu"]
    with pytest.raises(SystemExit, match="does not fit this model.s architecture: parameter") as e:
        job.main(["run", *common, "--config", str(ROOT / "configs" / "cifar_small.yaml"), "--init", str(weights),
                  "--run-dir", str(tmp_path / "small"), "--out", str(tmp_path / "o")])
    assert "\n" not in str(e.value)
    with safe_open(str(weights), framework="pt") as f:                  # weights far from the seed-0 start
        shifted = {k: f.get_tensor(k) + 0.5 for k in f.keys()}
        write_weights(shifted, tmp_path / "init.safetensors", f.metadata())
    job.main(["run", *common, "--config", str(TINY), "--init", str(tmp_path / "init.safetensors"),
              "--train-steps", "1", "--run-dir", str(tmp_path / "again"), "--out", str(tmp_path / "o2")])
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["init"] == str(tmp_path / "init.safetensors") and report["final_step"] == 1
    after = load_model(ImageDiffusion, tmp_path / "o2" / weights.name).state_dict()
    assert all(np.allclose(shifted[k].float(), after[k], atol=1e-2) for k in shifted)   # one step from --init
