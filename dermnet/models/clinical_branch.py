"""The clinical-data branch: a small MLP over the encoded age / sex / site vector.

Layout of the input vector: see ``dermnet.data.clinical``. The branch is
``[ClinicalMasking] -> (Dense -> BatchNorm -> ReLU -> Dropout) x len(units)``; its output is
concatenated with the pooled image features by ``dermnet.models.classifier``.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dermnet")
class ClinicalMasking(keras.layers.Layer):
    """During training, zeroes the whole clinical vector of a random ``rate`` of the samples.

    Teaches the head not to lean on clinical data alone and to cope with records that lack it
    (the all-zero vector is what such a record looks like to the network). Identity at
    inference.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"ClinicalMasking rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        draw = keras.random.uniform((batch, 1), seed=self.seed_generator)
        keep = ops.cast(draw >= self.rate, inputs.dtype)  # (batch, 1): 1 keeps the row
        return inputs * keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"rate": self.rate, "seed": self.seed}


def build_clinical_branch(clinical, units=(64,), dropout: float = 0.25,
                          mask_rate: float = 0.0):
    """Apply the branch to the symbolic ``clinical`` input; returns its feature tensor."""
    features = ClinicalMasking(mask_rate, name="clinical_masking")(clinical)
    for index, width in enumerate(units):
        features = keras.layers.Dense(width, use_bias=False,  # BatchNorm supplies the bias
                                      name=f"clinical_dense_{index}")(features)
        features = keras.layers.BatchNormalization(name=f"clinical_norm_{index}")(features)
        features = keras.layers.ReLU(name=f"clinical_relu_{index}")(features)
        features = keras.layers.Dropout(dropout, name=f"clinical_dropout_{index}")(features)
    return features
