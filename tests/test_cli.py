"""The command line as a new user meets it: help, version, typos, Ctrl-C, the demo's formats, README's snippet
and the config for your own molecules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from molediff import __version__
from molediff.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


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
    assert main(["demo", "-o", str(tmp_path / "demo.gif")]) == 1
    assert "must end in one of" in capsys.readouterr().err
    assert not (tmp_path / "demo.gif").exists()


def test_readme_python_snippet_runs_as_written():
    text = (ROOT / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert snippets, "README has no Python example"
    for code in snippets:
        exec(compile(code, "README.md", "exec"), {})


def test_the_config_for_your_own_molecules_trains_on_a_folder(tmp_path, caplog):
    import yaml

    from molediff.chem.io import write_sdf
    from molediff.chem.molecule import Molecule, MoleculeDataset
    from molediff.training import run_training

    folder = tmp_path / "my_molecules"
    folder.mkdir()
    good = MoleculeDataset.load(ROOT / "tests" / "data" / "qm9_train_first4.npz")
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
