"""The splits and test-time transforms an evaluation offers (``evaluate.py --split``,
``--tta``), apart from the TensorFlow code so that ``--help`` answers at once."""

# "fold" is the run's validation fold, the same rows as "val"; "holdout" the source
# collections a leave-one-source-out run never trained on (data.holdout_sources).
SPLITS = ("test", "val", "fold", "holdout")
# Test-time augmentation: fixed, label-preserving transforms of a dermoscopic image (no
# orientation is privileged). Rotations keep the H x W shape, so only 180 degrees (both
# flips) and small angles with reflected borders qualify for non-square inputs.
TTA_TRANSFORMS = ("identity", "flip_left_right", "flip_up_down", "rotate_180",
                  "rotate_10", "rotate_-10", "flip_left_right+rotate_10",
                  "flip_up_down+rotate_-10")
MAX_TTA = len(TTA_TRANSFORMS)
