"""Training losses that Keras does not provide for our label formats."""

from __future__ import annotations

import keras


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
