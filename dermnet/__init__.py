"""dermnet: dermatology image classification research in Keras 3 / TensorFlow.

Subpackages: ``dermnet.data`` (readers, phantom datasets, splits, input pipeline),
``dermnet.models``, ``dermnet.runs`` (what every command shares), ``dermnet.training``,
``dermnet.evaluation`` and ``dermnet.inference``; the map is docs/architecture.md.
Importing ``dermnet`` imports nothing heavy; each subpackage pulls in what it needs.
"""

__version__ = "0.1.0"
