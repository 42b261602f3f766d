"""``python -m dermnet.evaluation``, the same command as ``dermnet-evaluate``
(``dermnet.commands``)."""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.evaluate())
