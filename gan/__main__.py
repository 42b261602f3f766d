"""``python -m gan``, the same command as ``dermnet-gan``
(``dermnet.commands``)."""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.gan())
