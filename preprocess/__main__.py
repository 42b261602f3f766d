"""`python -m preprocess COMMAND ...`: run one of the offline tools for clinical photographs.

Owns the list of subcommands and hands the remaining arguments to the chosen module's
`main(argv)`. Each module is imported only when its command runs, so `crop` never loads Keras.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> (module with main(argv) -> int, one-line description)
    "filter": ("preprocess.filter_cli", "move non-skin pictures out of a folder (a small CNN)"),
    "crop": ("preprocess.crop_cli", "crop every photograph in a folder to its skin region "
                                    "(k-means on hue)"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"{usage()}\npython -m preprocess: error: unknown command {command!r}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


def usage() -> str:
    lines = ["usage: python -m preprocess COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "`python -m preprocess COMMAND --help` describes a command."]
    return "\n".join(lines)


if __name__ == "__main__":
    from dermnet.quiet import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's C++ start-up lines hidden; --verbose shows them
    sys.exit(main())
