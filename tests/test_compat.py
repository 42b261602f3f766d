"""dermnet.compat: the private Keras / TensorFlow symbols still exist, and each patch is
undone after its block."""

import keras
import pytest
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from dermnet import compat


def test_every_private_symbol_dermnet_uses_still_exists():
    # Fails the day a Keras or TensorFlow upgrade removes one (see dermnet/compat.py).
    assert compat.missing_private_symbols() == []


def test_a_removed_symbol_is_reported(monkeypatch):
    monkeypatch.setattr(compat, "PRIVATE_SYMBOLS",
                        compat.PRIVATE_SYMBOLS + (("keras", "no_such_symbol"),))
    assert compat.missing_private_symbols() == ["keras.no_such_symbol"]


def tiny_model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_multiworker_patches_hold_inside_the_block_only(monkeypatch):
    monkeypatch.setattr(compat, "is_multi_worker", lambda strategy: True)
    model, original = tiny_model(), keras_tf_trainer.reduce_per_replica
    with compat.multiworker_fit(model, strategy=None):
        assert keras_tf_trainer.reduce_per_replica is not original
        assert model._maybe_symbolic_build.__func__ is compat._maybe_symbolic_build
    assert keras_tf_trainer.reduce_per_replica is original
    assert model._maybe_symbolic_build.__func__ is type(model)._maybe_symbolic_build


def test_patches_are_undone_when_the_block_fails(monkeypatch):
    monkeypatch.setattr(compat, "is_multi_worker", lambda strategy: True)
    model, original = tiny_model(), keras_tf_trainer.reduce_per_replica
    with pytest.raises(RuntimeError), compat.multiworker_fit(model, strategy=None):
        raise RuntimeError("fit failed")
    assert keras_tf_trainer.reduce_per_replica is original
    assert "_maybe_symbolic_build" not in vars(model)


def test_other_strategies_leave_keras_untouched():
    model, original = tiny_model(), keras_tf_trainer.reduce_per_replica
    with compat.multiworker_fit(model, _DefaultStrategy()):
        assert keras_tf_trainer.reduce_per_replica is original
        assert "_maybe_symbolic_build" not in vars(model)


class _DefaultStrategy:
    """Not a MultiWorkerMirroredStrategy."""
