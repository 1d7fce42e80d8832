"""One bf16 rule (issue 23, item 2): ``utils.use_bf16`` decides it for every sampling command and API, every
sampling command takes the same ``--precision`` (conformers' ``--fp32`` is its alias), and ``conformers --threads``
defaults to all cores like the other commands (item 9)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

import molediff.utils as utils
from molediff.cli import build_parser, main
from molediff.utils import PRECISIONS, use_bf16


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def native_cpu(request, monkeypatch) -> bool:
    monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: request.param)
    return request.param


@pytest.mark.parametrize("device", ["cuda", "cuda:1", SimpleNamespace(type="cuda")])
def test_auto_is_bf16_on_cuda(device, native_cpu):
    assert use_bf16("auto", device) and use_bf16(None, device)
    assert use_bf16("bf16", device) and not use_bf16("fp32", device)


def test_auto_on_cpu_follows_the_hardware(native_cpu):
    import torch

    for device in ("cpu", torch.device("cpu")):
        assert use_bf16("auto", device) is native_cpu and use_bf16(None, device) is native_cpu
        assert use_bf16("bf16", device) is True and use_bf16(True, device) is True
        assert use_bf16("fp32", device) is False and use_bf16(False, device) is False


def test_other_devices_and_values():
    assert not use_bf16("auto", "mps") and use_bf16("bf16", "mps")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        use_bf16("fp16", "cpu")


def test_the_refiner_follows_the_rule(native_cpu):
    from molediff.conformers.pipeline import Refiner

    assert Refiner("shipped").bf16 is native_cpu
    assert Refiner("shipped", bf16=False).bf16 is False and Refiner("shipped", bf16=True).bf16 is True


# ------------------------------------------------------------------------------------------ the commands
SAMPLING = {   # argv that parses, and the command's default precision
    "generate": (["generate"], "auto"),
    "conformers": (["conformers", "CCO"], "auto"),
    "protein sample": (["protein", "sample", "-o", "out"], "fp32"),
    "image sample": (["image", "sample"], "fp32"),
    "image eval": (["image", "eval", "--data", "cifar"], "fp32"),
}


def _option(parser: argparse.ArgumentParser, words: list[str], flag: str) -> argparse.Action:
    """The action of ``flag`` in the (sub)command ``words`` of ``parser``."""
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser._option_string_actions[flag]


@pytest.mark.parametrize("command", SAMPLING)
def test_every_sampling_command_has_the_same_precision_option(command):
    argv, default = SAMPLING[command]
    parser = build_parser(argv[0])
    assert parser.parse_args(argv).precision == default
    for value in PRECISIONS:
        assert parser.parse_args([*argv, "--precision", value]).precision == value
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--precision", "fp16"])
    option = _option(parser, command.split(), "--precision")
    reference = _option(build_parser("generate"), ["generate"], "--precision")
    assert tuple(option.choices) == PRECISIONS and option.help.endswith(reference.help)   # one help text


def test_conformers_fp32_is_an_alias_of_precision_fp32():
    from molediff.commands.conformers import _refiner_settings

    parser = build_parser("conformers")
    args = parser.parse_args(["conformers", "CCO", "--fp32"])
    assert args.precision == "fp32" and not hasattr(args, "fp32")
    assert _refiner_settings(args)["bf16"] is False
    assert _refiner_settings(parser.parse_args(["conformers", "CCO"]))["bf16"] is None   # auto: use_bf16 decides
    assert _refiner_settings(parser.parse_args(["conformers", "CCO", "--precision", "bf16"]))["bf16"] is True


def test_precision_without_a_refiner_is_a_usage_error(tmp_path, capsys):
    for flag in (["--fp32"], ["--precision", "bf16"]):
        assert main(["conformers", "CCO", "--refiner", "none", "-o", str(tmp_path / "x.sdf"), *flag]) == 2
        assert "--precision / --fp32 needs a refiner" in capsys.readouterr().err


def test_export_precision_is_a_storage_type_not_a_compute_precision():
    option = _option(build_parser("export"), ["export"], "--precision")
    assert tuple(option.choices) == ("bf16", "fp32") and "storage type" in option.help
    sampling = _option(build_parser("generate"), ["generate"], "--precision").help
    assert "autocast" in sampling and "Not the storage type of weights files ('molediff export" in sampling


def test_image_and_protein_sampling_run_under_bf16(tmp_path):
    """The tiny models of the command tests sample under ``--precision bf16`` into the usual files."""
    import json

    import torch

    from molediff.images.model import ImageDiffusion, ImageDiffusionConfig
    from molediff.proteins.angle_model import ProteinAngleConfig, ProteinAngleDiffusion
    from molediff.training.weights import write_weights

    torch.manual_seed(0)
    image = ImageDiffusion(ImageDiffusionConfig.from_dict({"T": 10, "unet": {
        "image_size": 32, "channels": 8, "channel_mult": [1, 2], "attention_resolutions": [16], "groups": 4,
        "dropout": 0.0}}))
    angles = ProteinAngleDiffusion(ProteinAngleConfig.from_dict({"T": 20, "hidden": 32, "layers": 2, "heads": 4,
                                                                 "max_length": 48, "length_histogram": {12: 1}}))
    paths = {}
    for name, model in (("image", image), ("angles", angles)):
        paths[name] = write_weights(model.state_dict(), tmp_path / f"{name}.safetensors",
                                    {"model_class": type(model).__name__,
                                     "model_config": json.dumps(model.config.to_dict())}, None)
    assert main(["image", "sample", "--checkpoint", str(paths["image"]), "-n", "2", "--steps", "2",
                 "--precision", "bf16", "-o", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert main(["protein", "sample", "--checkpoint", str(paths["angles"]), "--length", "8", "-n", "2",
                 "--steps", "2", "--precision", "bf16", "-o", str(tmp_path / "chains")]) == 0
    assert len(list((tmp_path / "chains").glob("*.pdb"))) == 2


# ------------------------------------------------------------------------------------------ --threads
def test_conformers_threads_default_to_all_cores_and_one_per_worker(tmp_path, monkeypatch):
    import molediff.conformers.batch as batch

    seen = []

    def capture(records, options, refiner, **kwargs):
        seen.append(options.threads)
        yield from ()

    monkeypatch.setattr(batch, "conformers_for_library", capture)
    assert build_parser("conformers").parse_args(["conformers", "CCO"]).threads is None
    for extra in ([], ["--workers", "2"], ["--threads", "3", "--workers", "2"], ["--threads", "2"]):
        main(["conformers", "CCO", "--refiner", "none", "-o", str(tmp_path / "x.sdf"), *extra])
    # 0 is RDKit's "all cores": alone in this process; one each for worker processes, which share the cores
    assert seen == [0, 1, 3, 2]
    for command, (argv, _) in SAMPLING.items():   # the other commands: torch's choice, all cores
        assert build_parser(argv[0]).parse_args(argv).threads is None, command
