"""dermnet: dermatology image classification research in Keras 3 / TensorFlow.

Subpackages: ``dermnet.data`` (HAM10000 reader, phantom dataset, splits, input pipeline),
``dermnet.models``, ``dermnet.training`` and ``dermnet.evaluation``.
Importing ``dermnet`` imports nothing heavy; each subpackage pulls in what it needs.
"""

__version__ = "0.1.0"
