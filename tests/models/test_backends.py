"""Every model builds and runs under the JAX backend, without TensorFlow being imported,
and a model saved under TensorFlow loads under JAX with the same outputs."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dermnet.models.backbones import list_backbones
from dermnet.models.classifier import build_classifier

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed")


def run_under_jax(script: str) -> subprocess.CompletedProcess:
    environment = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_every_backbone_builds_under_jax_without_tensorflow():
    result = run_under_jax("""
        import sys
        import keras, numpy as np
        from dermnet.models.classifier import build_classifier
        from dermnet.models.backbones import list_backbones
        assert keras.backend.backend() == "jax"
        inputs = {"image": np.zeros((1, 64, 64, 3)), "clinical": np.zeros((1, 20))}
        for name in list_backbones():
            model = build_classifier(name, (64, 64), clinical_features=20)
            assert model.predict(inputs, verbose=0).shape == (1, 7), name
            print("built", name)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("built") == len(list_backbones())  # the study's 8 + ResNet18s


@pytest.mark.slow
def test_model_saved_under_tensorflow_loads_under_jax(tmp_path):
    model = build_classifier("resnet34", (48, 64), clinical_features=20)
    rng = np.random.default_rng(0)
    inputs = {"image": rng.integers(0, 256, (2, 48, 64, 3)).astype("float32"),
              "clinical": rng.normal(size=(2, 20)).astype("float32")}
    np.savez(tmp_path / "data.npz", expected=model.predict(inputs, verbose=0), **inputs)
    model.save(tmp_path / "model.keras")
    result = run_under_jax(f"""
        import keras, numpy as np
        import dermnet.models.classifier  # registers dermnet's layers
        data = np.load({str(tmp_path / "data.npz")!r})
        model = keras.models.load_model({str(tmp_path / "model.keras")!r}, safe_mode=True)
        got = model.predict({{"image": data["image"], "clinical": data["clinical"]}}, verbose=0)
        np.testing.assert_allclose(got, data["expected"], rtol=1e-4, atol=1e-6)
        print(keras.backend.backend(), "same outputs")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax same outputs" in result.stdout
