"""Classify skin-lesion images with a trained model: ``python predict.py RUN_DIR IMAGE...``
(``--help`` lists the options).

    python predict.py runs/smoke lesion.jpg                      # ranked top 3 per image
    python predict.py runs/r50-clinical lesion.jpg --age 45 --sex female --site back
    python predict.py runs/smoke *.jpg --json --gradcam heatmaps/

The work is done by ``dermnet.inference``; this file only starts it.
"""

import sys

if __name__ == "__main__":
    from dermnet.quiet import quiet_tensorflow

    # TensorFlow's C++ lines hidden, errors included: a damaged JPEG would otherwise log a
    # libjpeg line before predict.py's own message naming the file. --verbose shows them.
    quiet_tensorflow()
    from dermnet.inference.cli import main

    sys.exit(main())
