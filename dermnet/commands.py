"""The installed commands (``pyproject.toml``'s console scripts) and their ``python -m``
and top-level-script forms, one function each:

    dermnet-train       python train.py       python -m dermnet.training
    dermnet-evaluate    python evaluate.py    python -m dermnet.evaluation
    dermnet-predict     python predict.py     python -m dermnet.inference
    dermnet-gan                               python -m gan
    dermnet-preprocess                        python -m preprocess
    dermnet-data                              python -m dermnet.data

Each hides TensorFlow's C++ start-up lines (``dermnet.quiet``; ``--verbose`` shows them),
then imports its command-line module, which imports TensorFlow only once work starts, so
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib

from dermnet.quiet import quiet_tensorflow


def _run(module: str) -> int:
    quiet_tensorflow()
    return importlib.import_module(module).main() or 0


def train() -> int:
    return _run("dermnet.training.cli")


def evaluate() -> int:
    return _run("dermnet.evaluation.cli")


def predict() -> int:
    return _run("dermnet.inference.cli")


def gan() -> int:
    return _run("gan.cli")


def preprocess() -> int:
    return _run("preprocess.cli")


def data() -> int:
    return _run("dermnet.data.cli")
