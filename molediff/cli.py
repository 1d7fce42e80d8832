"""The ``molediff`` command line: one subcommand per module in ``molediff.commands``.

Each command module defines ``configure(parser)`` and ``run(args) -> int`` (its docstring is the command's
description; the one-line summary lives in ``COMMANDS``); a module is imported only when its command runs, so
``molediff --help`` stays fast. A command checks all its arguments before it loads anything and raises
``utils.UsageError`` for one a user can fix: one line with a ``--help`` hint, exit status 2, as argparse's own
errors. Other errors a user can fix print one line and exit with 1; tracebacks only with ``-v``, which every
command and subcommand takes. Ctrl-C stops with one line and no partial output (outputs are written atomically).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys

from . import __version__

# name → (module, one-line description shown by `molediff --help`, kept here so the help needs no imports)
COMMANDS = {
    "conformers": ("molediff.commands.conformers",
                   "3D conformers for SMILES/SDF input: ETKDGv3 + MMFF94, stereo-checked, diverse (SDF)"),
    "demo": ("molediff.commands.demo", "sample a 2-D toy distribution with its exact denoiser: a core check (picture)"),
    "export": ("molediff.commands.export", "write a training run's weights (checkpoint or post-hoc EMA) as one file"),
    "generate": ("molediff.commands.generate", "generate 3D molecules with a trained model; write SDF/XYZ (+ PNG)"),
    "image": ("molediff.commands.image", "CIFAR-10 image baseline: train, sample a PNG grid, bits/dim (U-Net)"),
    "protein": ("molediff.commands.protein", "protein Cα backbones: score traces (score), sample chains (sample)"),
    "score": ("molediff.commands.score", "score 3D molecules: stability, validity, novelty, conformers, physics"),
    "train": ("molediff.commands.train", "train a model from a YAML config (checkpoints, resume, DDP)"),
}
DESCRIPTION = "Generative diffusion for 3D chemistry."


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default once: only when its help does not already speak of one, and not for
    None/False defaults (which mean "not given")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages and show tracebacks")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line usage errors: argparse prints the whole usage block first, which buries
    the reason (e.g. an invalid choice) under a dozen lines; the commands' own checks print the same line."""

    def error(self, message: str):
        from .utils import report_usage_error

        sys.exit(report_usage_error(self.prog, message))


def _subparsers(parser: argparse.ArgumentParser):
    """The subcommand parsers below ``parser`` (``image sample``, ...), at every depth."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from _subparsers(sub)


class _LogFormatter(logging.Formatter):
    """``LEVEL logger: message``, except progress lines (logger ``molediff.progress``, written where stderr is not
    a terminal): those are the progress bar alone."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "molediff.progress":
            return record.getMessage()
        return super().format(record)


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def _top_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="molediff", description=DESCRIPTION, formatter_class=HelpFormatter,
                                     epilog="'molediff COMMAND --help' explains a command's options.")
    parser.add_argument("--version", action="version", version=f"molediff {__version__}")
    _verbose_flag(parser)
    return parser


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's module is imported and configured."""
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=summary)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=summary, description=module.__doc__, formatter_class=HelpFormatter)
        _verbose_flag(p)  # -v works after the command too
        module.configure(p)
        p.set_defaults(_module=module, _prog=p.prog)
        for nested in _subparsers(p):  # and after a subcommand, whose usage errors name it
            if "-v" not in nested._option_string_actions:
                _verbose_flag(nested)
            nested.set_defaults(_prog=nested.prog)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None:
        parser = build_parser(only="")
        if any(a in ("-h", "--help", "--version") for a in argv) or not argv:
            try:
                parser.parse_args(argv or ["--help"])  # prints the help or the version
            except SystemExit as e:
                return int(e.code or 0)
        parser.print_usage(sys.stderr)
        print("molediff: error: no command given; see 'molediff --help'", file=sys.stderr)
        return 2
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; commands: {', '.join(COMMANDS)}"
        print(f"molediff: error: unknown command '{command}'{hint}", file=sys.stderr)
        return 2
    args = build_parser(only=command).parse_args(argv)
    verbose = getattr(args, "verbose", False)
    _configure_logging(verbose)
    from .utils import UsageError, report_usage_error

    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        if verbose:
            raise
        print(f"molediff {command}: interrupted; no partial output was written", file=sys.stderr)
        return 130
    except UsageError as e:
        if verbose:
            raise
        return report_usage_error(args._prog, str(e))
    except (ValueError, OSError, RuntimeError) as e:
        # User-facing errors are one line; tracebacks only with -v.
        if verbose:
            raise
        print(f"molediff {command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
