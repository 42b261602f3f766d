"""Train a dermnet classifier: ``python train.py [options]`` (``--help`` lists them).

    python train.py --preset smoke --out runs/smoke          # seconds on a CPU
    python train.py --backbone resnet50 --resolution high --clinical --fold 2 --out runs/r50
    python train.py --grid paper --out runs/paper --print-commands   # the study's 160 runs

Options map onto the configuration (``dermnet/config.py``); ``--set section.field=value``
reaches every field. Without ``--data-dir`` the run uses the SYNTHETIC phantom dataset.
"""

import sys

if __name__ == "__main__":
    from dermnet.quiet import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's C++ start-up lines hidden; --verbose shows them
    from dermnet.training.cli import main

    sys.exit(main())
