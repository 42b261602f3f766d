"""The training losses Keras does not provide for our label formats: label smoothing for
integer class labels (the classifier), and the masked binary cross-entropy of the second
study's multi-task models (each image trains only its own tasks; -1 marks the others).

Keras-only (``keras.ops``), so they run under every Keras 3 backend."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dermnet")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, for integer class labels."""

    def __init__(self, smoothing: float, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"),
                                    classes)
        return keras.losses.categorical_crossentropy(one_hot, y_pred,
                                                     label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def compute_masked_binary_crossentropy(y_true, y_pred, from_logits: bool = False):
    """Element-wise binary cross-entropy [B, T] (zero where ``y_true`` is -1) and the float
    mask of valid entries [B, T]."""
    valid = ops.cast(ops.greater_equal(y_true, 0), y_pred.dtype)
    targets = ops.maximum(y_true, 0)  # -1 -> 0: any finite target, its loss is masked
    losses = ops.binary_crossentropy(targets, y_pred, from_logits=from_logits)
    return losses * valid, valid


@keras.saving.register_keras_serializable(package="dermnet")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Mean binary cross-entropy over the valid (``y_true != -1``) entries of the batch.

    Reduction: sum of valid losses / number of valid entries, as the original code divided
    by ``count_nonzero(mask)``. Keras' "sum_over_batch_size" divides by the batch size B, so
    ``call`` returns each image's summed valid losses [B] scaled by B / valid (the trick
    Keras applies to its own masks); Keras then sums, divides by B and, under
    ``tf.distribute``, by the number of replicas, whose gradients are summed. The result is
    the mean of the replicas' masked means: the learning rate does not grow with the GPU
    count, and it equals the global masked mean whenever replicas hold equally many valid
    entries. A batch with no valid entry gives 0. A per-image ``sample_weight`` (or class
    weight) multiplies that image's losses; the divisor stays the valid count.
    """

    def __init__(self, from_logits: bool = False, name: str = "masked_binary_crossentropy",
                 dtype=None):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        losses, valid = compute_masked_binary_crossentropy(y_true, y_pred, self.from_logits)
        images = ops.cast(ops.shape(losses)[0], losses.dtype)
        # [B]: per-image sums, scaled so that Keras' division by B leaves a division by valid.
        return ops.sum(losses, axis=-1) * ops.divide_no_nan(images, ops.sum(valid))

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}
