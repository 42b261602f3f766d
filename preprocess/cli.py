"""`python -m preprocess COMMAND ...` (installed as `dermnet-preprocess`): the offline tools
for clinical photographs.

    python -m preprocess crop SRC DST            crop every photograph to its skin region
    python -m preprocess filter train|apply|make-demo-data ...   the non-skin filter (a CNN)

Each command's module adds its own arguments (`add_arguments`) and sets the function that
runs it; Keras is imported only when `filter` trains or applies, so `crop` never loads it.
"""

from __future__ import annotations

import argparse
import sys

from dermnet.progname import program_name
from preprocess import crop_cli, filter_cli


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("python -m preprocess"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    crop_cli.add_arguments(commands.add_parser(
        "crop", help="crop every photograph in a folder to its skin region (k-means on hue)",
        **crop_cli.PARSER_TEXT))
    filter_cli.add_arguments(commands.add_parser(
        "filter", help="move non-skin pictures out of a folder (a small CNN)",
        description=filter_cli.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)
