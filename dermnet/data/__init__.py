"""Data layer: HAM10000 reading and validation, clinical encoding, splits, phantom data,
and the ``tf.data`` input pipeline.

Submodules are imported explicitly (``from dermnet.data import ham10000``) so that the
light ones (reader, splits, clinical encoding) never import TensorFlow.
"""
