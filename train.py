"""Train a dermnet classifier: ``python train.py [options]`` (``--help`` lists them).

    python train.py --preset smoke --out runs/smoke          # seconds on a CPU
    python train.py --backbone resnet50 --resolution high --clinical --fold 2 --out runs/r50
    python train.py --grid paper --out runs/paper --print-commands   # the study's 160 runs

Options map onto the configuration (``dermnet/config.py``); ``--set section.field=value``
reaches every field. Without ``--data-dir`` the run uses the SYNTHETIC phantom dataset.
"""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.train())  # the installed dermnet-train
