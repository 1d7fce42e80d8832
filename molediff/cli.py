"""The ``molediff`` command line: one subcommand per module in ``molediff.commands``.

Each command module defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``; modules
are imported only when their command runs so ``molediff --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "demo": "molediff.commands.demo",
    "generate": "molediff.commands.generate",
    "score": "molediff.commands.score",
    "train": "molediff.commands.train",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molediff", description="Generative diffusion for 3D chemistry.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see 'molediff {name} --help')")
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    if command is None:
        parser = argparse.ArgumentParser(prog="molediff", description="Generative diffusion for 3D chemistry.")
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name in COMMANDS:
            sub.add_parser(name, help=f"'molediff {name} --help' for its options")
        parser.print_help()
        return 0 if argv in ([], ["-h"], ["--help"]) else 2
    args = build_parser(only=command).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args) or 0)
    except (ValueError, OSError, RuntimeError) as e:
        # User-facing errors are one line; tracebacks only with -v.
        if args.verbose:
            raise
        print(f"molediff {command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
