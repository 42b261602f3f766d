"""Make Keras 3's ``fit()`` work under ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3 (checked on 3.15) fails twice when a model trains under MultiWorkerMirroredStrategy:

1. ``_maybe_symbolic_build`` builds the model from the first batch, which it first reduces
   with ``strategy.reduce("MEAN", batch, axis=None)``. Across workers that is a collective
   over every input tensor, and it fails on nested inputs (an image and a clinical vector)
   and on integer labels (keras-team/keras#20329). Building only needs the batch's shapes
   and dtypes, so :func:`enable_multiworker_fit` builds from this replica's own batch.
2. ``reduce_per_replica`` reduces the per-step logs with ``strategy.reduce("MEAN", v,
   axis=0)``, which raises for the scalar loss and metric values. The mean over replicas of
   a scalar is ``axis=None``; non-scalar values keep ``axis=0``, as Keras intended.

Both fixes are applied only when the strategy is multi-worker, so every other run uses Keras
untouched. Each is a no-op the day Keras fixes the bug: the build fix uses the same public
``_symbolic_build`` entry point, and the reduction fix only changes the case that raises.
"""

from __future__ import annotations

import functools
import types

import tensorflow as tf
from keras import tree
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

_ORIGINAL_REDUCE = keras_tf_trainer.reduce_per_replica


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def enable_multiworker_fit(model, strategy) -> None:
    """Patch ``model`` (and Keras's log reduction) so ``model.fit`` runs under ``strategy``."""
    if not is_multi_worker(strategy):
        return
    keras_tf_trainer.reduce_per_replica = _reduce_per_replica
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)


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


@functools.wraps(_ORIGINAL_REDUCE)
def _reduce_per_replica(values, strategy, reduction):
    if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
        return _ORIGINAL_REDUCE(values, strategy, reduction)

    def reduce(value):
        if strategy.experimental_local_results(value)[0].shape.rank == 0:
            return strategy.reduce("MEAN", value, axis=None)
        return strategy.reduce("MEAN", value, axis=0)

    return tree.map_structure(reduce, values)
