"""``python -m molediff.train CONFIG [options]``: the ``molediff train`` command as a module, for
``torchrun --nproc_per_node K -m molediff.train CONFIG`` (DDP). Options: ``molediff train --help``."""

from __future__ import annotations

import sys

from .cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``molediff train`` with ``argv`` (default: this process's arguments)."""
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
