"""``python -m gan assess``: the unbiased MMD against a brute-force double sum, the kernel
distance's blocks and error, class-code scoring against hand counts, and the command end to
end on a smoke GAN run with a small untrained dermnet classifier."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats

from dermnet.data.phantom import write_phantom
from gan.assess import (
    AssessmentError,
    kernel_distance,
    match_classes,
    mmd2_unbiased,
    polynomial_kernel,
    score_codes,
)
from gan.config import apply_overrides, make_gan_config
from gan.train import train_gan

ROOT = Path(__file__).resolve().parents[2]


def brute_force_mmd2(x, y):
    """The unbiased MMD^2 written out as Gretton et al.'s sums over distinct pairs."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_matches_the_double_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    assert mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)
    assert polynomial_kernel(np.ones((1, 2)), np.ones((1, 2)))[0, 0] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(x[:1], y)


def test_kernel_distance_is_near_zero_for_one_distribution_and_not_for_two():
    rng = np.random.default_rng(1)
    same = kernel_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), blocks=10)
    assert same["blocks"] == 10 and same["block_size"] == 40
    assert abs(same["kid"]) < 3 * same["standard_error"]
    shifted = kernel_distance(rng.normal(size=(400, 8)), rng.normal(1.0, 1.0, size=(400, 8)))
    assert shifted["kid"] > 10 * shifted["standard_error"] > 0


def test_synthetic_images_are_matched_to_the_real_class_mix():
    fake = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    real = np.array([1, 0, 1, 2, 2])
    chosen = match_classes(fake, real)
    assert chosen.tolist() == [0, 3, 4, 6, 7]
    assert np.bincount(fake[chosen]).tolist() == np.bincount(real).tolist()
    with pytest.raises(AssessmentError, match="3 real bcc images but only 2"):
        match_classes(np.array([2, 2]), np.array([2, 2, 2]))


def test_class_codes_are_scored_against_hand_counts():
    codes = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(7)[predicted]
    score = score_codes(codes, probabilities, 7)
    assert score["correct"] == 4 and score["accuracy"] == pytest.approx(4 / 6)
    assert score["chance"] == pytest.approx(1 / 3)  # three class codes were used
    assert score["recall"] == pytest.approx({"mel": 2 / 3, "nv": 0.5, "bcc": 1.0})
    assert score["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert score["confusion"][0][:3] == [2, 1, 0] and score["confusion"][1][:3] == [0, 1, 1]
    assert score["p_above_chance"] == pytest.approx(
        sum(stats.binom.pmf(k, 6, 1 / 3) for k in range(4, 7)))
    low, high = score["accuracy_ci95"]
    assert low < 4 / 6 < high


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A smoke GAN run on a balanced 70-image phantom and an untrained MobileNet classifier."""
    from dermnet.models.classifier import build_classifier

    data = write_phantom(tmp_path_factory.mktemp("data") / "phantom", 70, seed=0,
                         image_size=(48, 64), balanced=True)  # 10 images of every class
    config = apply_overrides(make_gan_config("smoke"), [f"data.data_dir={data}"])
    gan_run = tmp_path_factory.mktemp("runs") / "gan"
    train_gan(config, gan_run, log=lambda line: None)
    classifier = tmp_path_factory.mktemp("runs") / "classifier"
    classifier.mkdir(exist_ok=True)
    build_classifier("mobilenet", (32, 32), weights=None).save(classifier / "model.keras")
    return gan_run, classifier, data


@pytest.mark.slow
def test_assess_writes_figures_report_and_grids(runs, tmp_path):
    gan_run, classifier, data = runs
    out = tmp_path / "assessment"
    result = subprocess.run(
        [sys.executable, "-m", "gan", "assess", str(gan_run), "--classifier", str(classifier),
         "--real-data", str(data), "--per-class", "10", "--blocks", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "assessment.json").read_text())
    assert figures["synthetic"]["images"] == 70
    assert figures["real"]["images"] == 70
    assert np.sum(figures["synthetic"]["confusion"]) == 70
    assert figures["kid"]["blocks"] == 4 and figures["kid"]["block_size"] == 17
    assert figures["feature_size"] == 1024  # MobileNet's pooled features
    assert figures["classifier_input"] == [32, 32] and figures["resolution"] == 8
    assert "Kernel distance" in (out / "report.md").read_text()
    assert "accuracy" in result.stdout
    overview = cv2.imread(str(out / "grids" / "overview.png"))
    assert overview.shape[0] == 7 * 32 + 6 * 2  # a row per class code, 8x8 enlarged to 32
    for name in ("mel", "vasc"):
        assert (out / "grids" / f"{name}.png").is_file()


@pytest.mark.slow
def test_assess_refuses_missing_inputs(runs, tmp_path):
    gan_run, classifier, data = runs
    result = subprocess.run(
        [sys.executable, "-m", "gan", "assess", str(gan_run), "--classifier",
         str(tmp_path / "none"), "--real-data", str(data)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1 and "--classifier" in result.stderr
    assert "Traceback" not in result.stderr
