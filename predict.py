"""Classify skin-lesion images with a trained model: ``python predict.py RUN_DIR IMAGE...``
(``--help`` lists the options).

    python predict.py runs/smoke lesion.jpg                      # ranked top 3 per image
    python predict.py runs/r50-clinical lesion.jpg --age 45 --sex female --site back
    python predict.py runs/smoke *.jpg --json --gradcam heatmaps/

The work is done by ``dermnet.inference``; this file only starts it.
"""

import sys

from dermnet import commands

if __name__ == "__main__":
    sys.exit(commands.predict())  # the installed dermnet-predict
