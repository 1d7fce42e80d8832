"""The command line as a new user meets it: help, version, typos, Ctrl-C, the demo's formats, README's snippet
and the config for your own molecules."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import DATA, ROOT

from molediff import __version__
from molediff.cli import COMMANDS, main


def test_top_level_help_lists_every_command_with_its_summary(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        assert re.search(rf"{name}\s+{re.escape(summary.split()[0])}", out), name
    assert main([]) == 0
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"molediff {__version__}")


def test_a_mistyped_command_says_so(capsys):
    assert main(["genrate", "-n", "3"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'genrate'; did you mean 'generate'?" in err and len(err.strip().splitlines()) == 1
    assert main(["-v"]) == 2
    assert "no command given" in capsys.readouterr().err


def test_an_invalid_option_value_is_one_line_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["conformers", "CCO", "-o", "x.sdf", "--top-up", "foo"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "usage:" not in err
    assert err.startswith("molediff conformers: error: argument --top-up: invalid choice: 'foo'")
    assert err.endswith("(see 'molediff conformers --help')")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_shows_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    for match in re.finditer(r"default", text):
        window = text[match.start():match.start() + 60]
        assert "(default" not in window[8:], f"default given twice: {window!r}"


def test_verbose_flag_after_the_command_and_ctrl_c_is_one_line(monkeypatch, capsys, tmp_path):
    from molediff.commands import demo

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run", interrupted)
    assert main(["demo", "-o", str(tmp_path / "x.png")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "molediff demo: interrupted; no partial output was written"
    with pytest.raises(KeyboardInterrupt):
        main(["demo", "-v", "-o", str(tmp_path / "x.png")])      # -v after the command shows the traceback


def test_demo_writes_the_format_its_extension_names(tmp_path, capsys):
    jpg, png = tmp_path / "demo.jpg", tmp_path / "demo.png"
    assert main(["demo", "-o", str(jpg), "-n", "200", "--steps", "5"]) == 0
    assert main(["demo", "-o", str(png), "-n", "200", "--steps", "5"]) == 0
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["demo", "-o", str(tmp_path / "demo.gif")]) == 2             # a usage error (issue 23)
    assert "must end in one of" in capsys.readouterr().err
    assert not (tmp_path / "demo.gif").exists()


@pytest.mark.slow
def test_readme_python_snippet_runs_as_written():
    text = (ROOT / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert snippets, "README has no Python example"
    for code in snippets:
        exec(compile(code, "README.md", "exec"), {})


def test_the_config_for_your_own_molecules_trains_on_a_folder(tmp_path, caplog):
    import yaml

    from molediff.chem.molecule import Molecule, MoleculeDataset
    from molediff.chem.sdf import write_sdf
    from molediff.training import run_training

    folder = tmp_path / "my_molecules"
    folder.mkdir()
    good = MoleculeDataset.load(DATA / "qm9_train_first4.npz")
    write_sdf(folder / "a.sdf", [good[0], good[1]])
    boron = Molecule(atomic_numbers=np.array([5, 1, 1, 1]), positions=np.eye(4, 3, dtype=np.float32) * 1.2,
                     name="BH3")
    write_sdf(folder / "b.sdf", [good[2], boron, good[3]])
    config = yaml.safe_load((ROOT / "configs" / "my_molecules.yaml").read_text())
    config.update(steps=2, batch_size=2, log_every=1, checkpoint_every=2, out_dir=str(tmp_path / "run"))
    config["data"]["path"] = str(folder)
    config["model"]["denoiser"].update(hidden=8, layers=1)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    for _ in range(2):  # the second run reads the cache and must still say what it skipped
        caplog.clear()
        with caplog.at_level("WARNING"):
            metrics = run_training(path, out_dir=str(tmp_path / f"run{_}"))
        assert metrics["step"] == 2
        assert "kept 4 of 5 molecules; skipped 1" in caplog.text and "BH3" in caplog.text


# ---------------------------------------------------------------------------------------------- issue 23 (3, 9)
def _loading_raises(monkeypatch) -> None:
    """Every model, weights, data or config loader the commands call raises: an argument error must come first."""
    import molediff.commands.image as image
    import molediff.commands.score as score
    import molediff.diffusion as diffusion
    import molediff.molecules.pretrained as pretrained
    import molediff.proteins.io as protein_io
    import molediff.proteins.sampling as protein_sampling
    import molediff.training.config as training_config
    import molediff.training.posthoc_ema as posthoc_ema
    import molediff.training.tasks as tasks
    import molediff.training.weights as weights

    def loading(*args, **kwargs):
        raise RuntimeError("LOADED before the arguments were checked")

    for module, name in ((pretrained, "load_model"), (image, "_load"), (protein_sampling, "load_protein_model"),
                         (protein_io, "read_ca_traces"), (tasks, "run_training"), (training_config, "load_config"),
                         (weights, "export_weights"), (posthoc_ema, "export_posthoc_ema"),
                         (score, "load_molecules"), (diffusion, "make_schedule")):
        monkeypatch.setattr(module, name, loading)


USAGE_ERRORS = [
    ("molediff generate", ["generate", "-o", "out.mol2"], "must end in .sdf or .xyz"),
    ("molediff generate", ["generate", "-n", "0"], "--num-molecules must be at least 1"),
    ("molediff generate", ["generate", "--steps", "0"], "--steps must be at least 1"),
    ("molediff generate", ["generate", "--png", "grid.jpg"], "--png must name a .png file"),
    ("molediff generate", ["generate", "--device", "no-such-device"], "is not a torch device"),
    ("molediff generate", ["generate", "--threads", "0"], "--threads must be at least 1"),
    ("molediff image sample", ["image", "sample", "-o", "grid.jpg"], "must name a .png file"),
    ("molediff image sample", ["image", "sample", "--eta", "0.5"], "--eta applies to --sampler ddim only"),
    ("molediff image sample", ["image", "sample", "--scale", "0"], "must be at least 1"),
    ("molediff image eval", ["image", "eval", "--data", "x.npz", "--no-bits-per-dim"], "leaves nothing"),
    ("molediff image eval", ["image", "eval", "--data", "x.npz", "--fd", "--fd-images", "1"], "at least 2"),
    ("molediff image train", ["image", "train", "c.yaml", "--threads", "0"], "--threads must be at least 1"),
    ("molediff protein sample", ["protein", "sample", "-o", "out", "-n", "0"], "must be at least 1"),
    ("molediff protein sample", ["protein", "sample", "-o", "out", "--sampler", "ddim", "--noise-scale", "0.5"],
     "ddpm sampler"),
    ("molediff protein sample", ["protein", "sample", "-o", "out", "--steps", "0"], "--steps must be at least 1"),
    ("molediff protein score", ["protein", "score", "pdbs", "--json", "out.txt"], "must name a .json file"),
    ("molediff train", ["train", "c.yaml", "--steps", "0"], "--steps must be at least 1"),
    ("molediff train", ["train", "c.yaml", "--time-limit", "0"], "--time-limit must be a positive"),
    ("molediff export", ["export", "run", "-o", "w.pt"], "must name a .safetensors file"),
    ("molediff export", ["export", "run", "-o", "w.safetensors", "--molecules", "0"], "at least 1"),
    ("molediff score", ["score", "in.sdf", "--threshold", "0"], "--threshold must be a positive"),
    ("molediff score", ["score", "in.sdf", "--json", "o.json", "--csv", "o.json"], "two different files"),
    ("molediff demo", ["demo", "-o", "demo.gif"], "must end in one of"),
    ("molediff demo", ["demo", "--steps", "2000"], "--steps lie in 1..--T"),
]


@pytest.mark.parametrize("prog, argv, message", USAGE_ERRORS, ids=[" ".join(a) for _, a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_in_one_line_before_anything_loads(prog, argv, message, monkeypatch, tmp_path,
                                                               capsys):
    """Issue 23, items 3 and 9: every command checks its arguments before loading a model, weights, data or a
    config (all of which raise here), and reports a usage error as conformers does: one line, a --help hint, 2."""
    monkeypatch.chdir(tmp_path)
    _loading_raises(monkeypatch)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "LOADED" not in err and err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: ") and message in err, err
    assert err.rstrip().endswith(f"(see '{prog} --help')"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []                  # nothing written


def test_conformers_usage_errors_have_the_same_form(tmp_path, capsys):
    assert main(["conformers", "CCO", "-o", str(tmp_path / "x.mol2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("molediff conformers: error: output must end in .sdf")
    assert err.rstrip().endswith("(see 'molediff conformers --help')")


def test_verbose_flag_on_every_command_and_subcommand(tmp_path):
    """-v/--verbose (tracebacks) is taken the same way after every command and subcommand."""
    from molediff.cli import _subparsers, build_parser

    parser = build_parser()
    commands = list(_subparsers(parser))
    assert len(commands) > len(COMMANDS)                                       # image/protein subcommands too
    for p in commands:
        assert {"-v", "--verbose"} <= set(p._option_string_actions), p.prog
    from molediff.utils import UsageError

    with pytest.raises(UsageError):                                            # -v shows the traceback
        main(["image", "sample", "-v", "-o", str(tmp_path / "grid.jpg")])
    with pytest.raises(UsageError):
        main(["protein", "sample", "--verbose", "-o", str(tmp_path), "-n", "0"])


def test_train_help_lists_every_registered_task(monkeypatch, capsys):
    from molediff.training import tasks

    monkeypatch.setitem(tasks.TASKS, "my_domain", "my_package.training:build_task")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    listed = out.split("tasks (a config's 'task:'", 1)[1]
    for name, target in tasks.TASKS.items():
        assert re.search(rf"^\s+{name}\s+built by {re.escape(target)}", listed, flags=re.M), name
    for old in tasks.TASK_ALIASES:
        assert f"older name: {old}" in listed


def test_image_help_shows_checkpoint_as_optional(capsys):
    for argv in (["image", "--help"], ["image", "sample", "--help"], ["image", "eval", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        # the usage block and the synopsis lines ("  molediff image sample ..."): every --checkpoint inside [...]
        usage = text.split("\n\n")[0]
        synopses = re.findall(r"^ +molediff image .*$", text, flags=re.M)
        shown = [s for s in [usage, *synopses] if "--checkpoint" in s]
        assert shown, argv
        for line in shown:
            for m in re.finditer(r"--checkpoint", line):
                before = line[:m.start()]
                assert before.count("[") > before.count("]"), (argv, line)


def test_image_sample_draws_a_grid_big_enough_to_look_at(monkeypatch, tmp_path, capsys):
    """Sixteen 32-px images are drawn 4x (nearest neighbour) by default: a grid of at least 512 px."""
    import types

    import torch
    from PIL import Image

    import molediff.commands.image as image
    import molediff.images.metrics as metrics

    monkeypatch.setattr(image, "_load", lambda checkpoint, device: types.SimpleNamespace(
        schedule=types.SimpleNamespace(T=1000)))
    drawn = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(metrics, "sample_uint8", lambda *args, **kwargs: drawn)
    grid = tmp_path / "grid.png"
    assert main(["image", "sample", "-o", str(grid)]) == 0
    with Image.open(grid) as im:
        assert im.size[0] >= 512 and im.size == (4 * (4 * 34 + 2),) * 2
        pixels = np.asarray(im)
    assert (pixels[8:12, 8:12] == drawn[0, :, 0, 0].numpy()).all()             # image 0's first pixel: a 4x4 block
    assert not (pixels[8:13, 8:13] == drawn[0, :, 0, 0].numpy()).all()
    with pytest.raises(SystemExit):
        main(["image", "sample", "--help"])
    assert "default: 4" in " ".join(capsys.readouterr().out.split())


def test_cli_prints_progress_lines_as_the_bar_alone():
    import logging

    from molediff.cli import _LogFormatter

    formatter = _LogFormatter("%(levelname)s %(name)s: %(message)s")
    bar = "sampling:  40%|####      | 40/100 [01:00<01:30,  1.50s/mol]"
    record = logging.LogRecord("molediff.progress", logging.INFO, __file__, 1, "%s", (bar,), None)
    assert formatter.format(record) == bar
    other = logging.LogRecord("molediff.training", logging.INFO, __file__, 1, "step %d", (3,), None)
    assert formatter.format(other) == "INFO molediff.training: step 3"


@pytest.mark.slow
def test_a_wrong_output_format_is_refused_at_once_in_a_fresh_process(tmp_path):
    """`molediff generate -o out.mol2` as a new user types it: exit 2, one line, at once (3.5 s before issue 23):
    neither the model code nor even torch was imported."""
    import subprocess
    import sys

    code = ("import sys; from molediff.cli import main; rc = main(sys.argv[1:]); "
            "assert 'molediff.molecules.model' not in sys.modules, 'the model code was loaded'; "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "generate", "-o", "out.mol2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("molediff generate: error: output must end in .sdf or .xyz, got 'out.mol2' "
                           "(see 'molediff generate --help')\n")
    assert not list(tmp_path.iterdir())
