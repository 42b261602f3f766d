"""``python -m preprocess``, the same command as ``dermnet-preprocess``
(``dermnet.commands``)."""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.preprocess())
