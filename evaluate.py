"""Evaluate dermnet runs: ``python evaluate.py RUN_DIR`` (``--help`` lists the options).

    python evaluate.py runs/smoke                          # metrics.json, predictions.csv, plots
    python evaluate.py runs/smoke --tta 4                  # averaged over 4 flips
    python evaluate.py compare runs/paper/* --out reports/paper     # Tables 2 and 3, tests
    python evaluate.py readers answers.csv --truth HAM10000_metadata.csv \\
        --model-run runs/smoke --out reports/readers       # human readers beside the model
"""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.evaluate())  # the installed dermnet-evaluate
