"""`python -m inference.builtin export DIR`: write the built-in model as a Hugging Face model folder."""

from __future__ import annotations

import argparse
import logging

from .model import WARNING, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.builtin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export_cmd = commands.add_parser("export", help="write the model folder")
    export_cmd.add_argument("directory", help="target folder (created if missing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = export(args.directory)
    logging.getLogger("inference.builtin").warning("%s written; %s", path, WARNING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
