"""evaluate.py on a real smoke run: the files, their agreement with independent
computations (sklearn, the model called directly), test-time augmentation, errors."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from dermnet.data.vocabulary import CLASSES, ISIC_COLUMNS
from tests.smoke import copy_run, run_script

OUTPUTS = ("metrics.json", "predictions.csv", "per_image.csv", "per_class.md", "per_class.csv",
           "confusion_matrix.png", "roc.png")


@pytest.fixture(scope="module")
def cache_dir(session_cache):
    return session_cache


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, trained_smoke_run, cache_dir):
    """A copy of the session's clinical smoke run, evaluated by the CLI with 2-fold test-time
    augmentation."""
    out = copy_run(trained_smoke_run.out, tmp_path_factory.mktemp("runs") / "smoke")
    evaluated = run_script("evaluate.py", [str(out), "--tta", "2", "--resamples", "200"],
                           cache_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return out, evaluated


@pytest.mark.slow
def test_evaluation_writes_every_output(evaluated_run):
    out, result = evaluated_run
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for name in ("confusion_matrix.png", "roc.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 300, name
    assert not (out / ".evaluation-partial").exists()
    assert "balanced accuracy" in result.stdout and "| class | support | TPR | TNR" in result.stdout


@pytest.mark.slow
def test_predictions_follow_the_isic_format_and_the_test_split(evaluated_run):
    out, _ = evaluated_run
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["image", *ISIC_COLUMNS]
    np.testing.assert_allclose(predictions[list(ISIC_COLUMNS)].sum(axis=1), 1, atol=1e-5)
    splits = pd.read_csv(out / "splits.csv")
    assert set(predictions["image"]) == set(splits.loc[splits["fold"] == "test", "image_id"])


@pytest.mark.slow
def test_metrics_agree_with_sklearn_on_the_written_predictions(evaluated_run):
    out, _ = evaluated_run
    metrics = json.loads((out / "metrics.json").read_text())
    rows = pd.read_csv(out / "per_image.csv")
    truth = rows["truth"].map(CLASSES.index)
    predicted = rows[list(CLASSES)].to_numpy().argmax(axis=1)
    assert (rows["predicted"].map(CLASSES.index) == predicted).all()
    assert metrics["accuracy"]["value"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(truth, predicted))
    assert metrics["accuracy"]["method"] == "clopper-pearson"
    assert metrics["balanced_accuracy"]["method"] == "bootstrap-lesions"
    assert metrics["num_groups"] == rows["lesion_id"].nunique()
    assert metrics["tta"] == ["identity", "flip_left_right"]
    runtime = metrics["runtime_ms_per_image"]
    assert runtime["batch_1_ms"] > 0 and runtime["batched_ms"] > 0
    assert metrics["model"]["clinical"] is True and metrics["split"] == "test"


@pytest.mark.slow
def test_predictions_csv_rescored_independently_matches_metrics_json_to_1e9(evaluated_run):
    """ISIC 2018 scoring redone from predictions.csv alone (truth from splits.csv)."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    out, _ = evaluated_run
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")
    splits = pd.read_csv(out / "splits.csv").set_index("image_id")
    truth = splits.loc[predictions["image"], "dx"].map(CLASSES.index).to_numpy()
    scores = predictions[list(ISIC_COLUMNS)].to_numpy()
    predicted = scores.argmax(axis=1)
    matrix = confusion_matrix(truth, predicted, labels=range(len(CLASSES)))
    assert matrix.tolist() == metrics["confusion_matrix"]
    aucs = []
    for index, name in enumerate(CLASSES):
        entry = metrics["per_class"][name]
        positives = truth == index
        tp, fn = matrix[index, index], matrix[index].sum() - matrix[index, index]
        fp = matrix[:, index].sum() - tp
        tn = matrix.sum() - tp - fn - fp
        if positives.any():
            assert abs(entry["sensitivity"]["value"] - tp / (tp + fn)) < 1e-9
            auc = roc_auc_score(positives, scores[:, index])
            aucs.append(auc)
            assert abs(entry["auc"]["value"] - auc) < 1e-9
        assert abs(entry["specificity"]["value"] - tn / (tn + fp)) < 1e-9
    assert abs(metrics["macro_auc"]["value"] - np.mean(aucs)) < 1e-9
    assert abs(metrics["balanced_accuracy"]["value"]
               - balanced_accuracy_score(truth, predicted)) < 1e-9


@pytest.mark.slow
def test_tta_probabilities_equal_the_model_called_directly(evaluated_run):
    """Independent path: decode each image, flip it with numpy, call the saved model."""
    import dermnet.models
    from dermnet.config import load_config
    from dermnet.data.clinical import load_clinical_encoder
    from dermnet.data.ham10000 import load_ham10000
    from dermnet.data.pipeline import load_image

    out, _ = evaluated_run
    config = load_config(out / "config.json")
    predictions = pd.read_csv(out / "predictions.csv").set_index("image")
    frame = load_ham10000(config.data.data_dir or _phantom_dir(out)).frame
    frame = frame.set_index("image_id").loc[predictions.index].reset_index()
    images = np.stack([load_image(path, config.data.image_size).numpy()
                       for path in frame["path"]])
    clinical = load_clinical_encoder(out / "clinical_encoding.json").transform(frame)
    model = dermnet.models.load_model(out / "model.keras")
    expected = np.mean([model.predict({"image": batch, "clinical": clinical}, verbose=0)
                        for batch in (images, images[:, :, ::-1])], axis=0)
    np.testing.assert_allclose(predictions[list(ISIC_COLUMNS)].to_numpy(), expected,
                               atol=2e-5)


def _phantom_dir(out: Path) -> Path:
    metrics = json.loads((out / "metrics.json").read_text())
    return Path(metrics["data_dir"])


@pytest.mark.slow
def test_validation_split_goes_to_its_own_folder(evaluated_run, cache_dir):
    out, _ = evaluated_run
    result = run_script("evaluate.py", [str(out), "--split", "val", "--resamples", "50",
                                        "--no-runtime", "--pair", "nv:bkl"], cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "evaluation-val" / "metrics.json").read_text())
    assert metrics["split"] == "val" and "runtime_ms_per_image" not in metrics
    assert list(metrics["binary"]) == ["nv_vs_bkl"]
    splits = pd.read_csv(out / "splits.csv")
    assert metrics["num_images"] == int((splits["fold"] == "0").sum())


@pytest.mark.parametrize("arguments, message", [
    (["{missing}"], "no config.json"),
    (["{run}", "--tta", "9"], "--tta must be between 1 and 8"),
    (["{run}", "--pair", "mel:xyz"], "--pair takes POSITIVE:NEGATIVE"),
])
def test_bad_requests_exit_1_with_a_clear_message(tmp_path, arguments, message):
    from dermnet.evaluation.cli import main

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "splits.csv", "clinical_encoding.json", "model.keras"):
        (run / name).write_text("")
    arguments = [item.format(missing=tmp_path / "nowhere", run=run) for item in arguments]
    code, stderr = _run_main(main, arguments)
    assert code == 1 and message in stderr, stderr


def _run_main(main, arguments):
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(arguments)
    return code, stderr.getvalue()


def test_tta_transforms_match_numpy_flips_and_rotate_about_the_centre():
    from dermnet.evaluation.options import TTA_TRANSFORMS
    from dermnet.evaluation.predictions import transform_images

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 9, 13, 3), dtype=np.uint8)
    assert np.array_equal(transform_images(images, "rotate_180").numpy(),
                          images[:, ::-1, ::-1])
    assert np.array_equal(transform_images(images, "flip_left_right").numpy(),
                          images[:, :, ::-1])
    for name in TTA_TRANSFORMS:
        assert transform_images(images, name).shape == images.shape
    # A bright pixel 20 px right of the centre of a 61x61 image, rotated by 10 degrees, lands
    # 20 px from the centre at 10 degrees (either direction: TTA does not care which).
    dot = np.zeros((1, 61, 61, 3), np.uint8)
    dot[0, 30, 50] = 255
    rotated = transform_images(dot, "rotate_10").numpy()[0, :, :, 0].astype(float)
    row, column = np.unravel_index(rotated.argmax(), rotated.shape)
    assert math.hypot(row - 30, column - 30) == pytest.approx(20, abs=1)
    assert abs(math.degrees(math.atan2(abs(row - 30), column - 30)) - 10) < 3
