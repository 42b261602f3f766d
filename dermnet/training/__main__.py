"""``python -m dermnet.training``, the same command as ``dermnet-train``
(``dermnet.commands``)."""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.train())
