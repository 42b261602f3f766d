"""``python -m dermnet.data``, the same command as ``dermnet-data``
(``dermnet.commands``)."""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.data())
