"""Every use of a private Keras or TensorFlow API in dermnet, in one place.

Private APIs change without notice, so each one is named in ``PRIVATE_SYMBOLS`` and a fast
test (``tests/test_compat.py``) fails the day an upgrade removes one, instead of a training
run failing hours in. Patches are applied for the duration of a ``with`` block only and
undone after it, so code outside the block sees Keras untouched.

1. ``multiworker_fit(model, strategy)``: Keras 3 (checked on 3.15) fails twice when a model
   trains under ``MultiWorkerMirroredStrategy``:

   - ``_maybe_symbolic_build`` builds the model from the first batch, which it first reduces
     with ``strategy.reduce("MEAN", batch, axis=None)``. Across workers that is a collective
     over every input tensor, and it fails on nested inputs (an image and a clinical vector)
     and on integer labels (keras-team/keras#20329). Building only needs the batch's shapes
     and dtypes, so the patched method builds from this replica's own batch.
   - ``reduce_per_replica`` reduces the per-step logs with ``strategy.reduce("MEAN", v,
     axis=0)``, which raises for the scalar loss and metric values. The mean over replicas
     of a scalar is ``axis=None``; non-scalar values keep ``axis=0``, as Keras intended.

   Both patches apply only when the strategy is multi-worker, so every other run uses Keras
   untouched, and each is a no-op the day Keras fixes the bug.
2. ``merge_call(fn, *args)``: run ``fn(strategy, *args)`` in cross-replica context (the GAN's
   weight averaging assigns mirrored variables, as Keras's optimizers do), through
   TensorFlow's ``tf.__internal__.distribute.interim.maybe_merge_call``.

TensorFlow-specific.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types

import tensorflow as tf
from keras import tree
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

# (module, dotted attribute) of every private symbol used here.
PRIVATE_SYMBOLS = (
    ("keras.src.backend.tensorflow.trainer", "reduce_per_replica"),
    ("keras.src.backend.tensorflow.trainer", "TensorFlowTrainer._maybe_symbolic_build"),
    ("keras.src.backend.tensorflow.trainer", "TensorFlowTrainer._symbolic_build"),
    ("tensorflow", "__internal__.distribute.interim.maybe_merge_call"),
    ("tensorflow", "distribute.MultiWorkerMirroredStrategy"),
)


def missing_private_symbols() -> list[str]:
    """The entries of ``PRIVATE_SYMBOLS`` this Keras / TensorFlow no longer has."""
    missing = []
    for module, attribute in PRIVATE_SYMBOLS:
        try:
            value = importlib.import_module(module)
            for part in attribute.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{attribute}")
    return missing


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


@contextlib.contextmanager
def multiworker_fit(model, strategy):
    """Within the block, ``model.fit`` runs under a multi-worker ``strategy`` (a no-op for
    any other strategy); Keras's log reduction and the model's build are restored after."""
    if not is_multi_worker(strategy):
        yield model
        return
    original = keras_tf_trainer.reduce_per_replica
    keras_tf_trainer.reduce_per_replica = functools.wraps(original)(
        functools.partial(_reduce_per_replica, original))
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    try:
        yield model
    finally:
        keras_tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build  # the class's method again


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras's method, building from this replica's batch instead of a cross-worker mean."""
    if iterator is not None:
        for _, _, step_iterator in iterator:
            batch = next(step_iterator)
            data_batch = tree.map_structure(_first_local_value, batch)
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _first_local_value(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _reduce_per_replica(original, values, strategy, reduction):
    if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
        return original(values, strategy, reduction)

    def reduce(value):
        if strategy.experimental_local_results(value)[0].shape.rank == 0:
            return strategy.reduce("MEAN", value, axis=None)
        return strategy.reduce("MEAN", value, axis=0)

    return tree.map_structure(reduce, values)


def merge_call(fn, *args):
    """``fn(strategy, *args)`` in cross-replica context of the current strategy."""
    return tf.__internal__.distribute.interim.maybe_merge_call(fn, tf.distribute.get_strategy(),
                                                               *args)
