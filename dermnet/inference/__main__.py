"""``python -m dermnet.inference``, the same command as ``dermnet-predict``
(``dermnet.commands``)."""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.predict())
