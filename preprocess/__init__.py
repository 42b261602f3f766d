"""Offline tools for clinical photographs: the second study's pre-processing.

`skin_filter` removes non-skin pictures (a small CNN) and `skin_crop` crops a photo to its skin
region (k-means, K=2, on pixel hue); `python -m preprocess filter|crop ...` runs them over a
folder (`python -m preprocess --help`). The package imports neither `dermnet` nor `gan` and
needs no TensorFlow.
"""
