"""Model builders: backbone registry, ResNet34 / SE-ResNet50 built here, the classifier with
its clinical branch, the spatial transformer and multi-task heads.

This package imports ``keras`` only (never ``tensorflow``), so every model builds under the
TensorFlow, JAX and PyTorch backends of Keras 3.
"""
