"""Evaluate dermnet runs: ``python evaluate.py RUN_DIR`` (``--help`` lists the options).

    python evaluate.py runs/smoke                          # metrics.json, predictions.csv, plots
    python evaluate.py runs/smoke --tta 4                  # averaged over 4 flips
    python evaluate.py compare runs/paper/* --out reports/paper     # Tables 2 and 3, tests
    python evaluate.py readers answers.csv --truth HAM10000_metadata.csv \\
        --model-run runs/smoke --out reports/readers       # human readers beside the model
"""

import sys

if __name__ == "__main__":
    from dermnet.quiet import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's C++ start-up lines hidden; --verbose shows them
    from dermnet.evaluation.cli import main

    sys.exit(main())
