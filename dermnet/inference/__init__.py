"""Inference with trained models: ``predict.py`` and its library.

``predict`` loads a run directory (or a bare ``model.keras``) and predicts class probabilities
for image files, with clinical data when the model uses it; ``gradcam`` draws Grad-CAM
heatmaps of where a class score comes from; ``cli`` is the ``predict.py`` command line.
"""
