"""Clinical-photo runs end to end: train.py --task clinical-photos on the photo phantom, the
patient split, the balanced and cropped versions, evaluate.py's task tables and compare's
DeLong tests."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermnet.config import make_config

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--task", "clinical-photos", "--preset", "photos-smoke", "--deterministic"]
TASK_NAMES = ["psoriasis_vs_eczema", "acne_vs_rosacea", "ctcl_vs_eczema"]


def run_script(script, arguments, cache_dir):
    environment = os.environ | {"DERMNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(ROOT / script), *arguments], env=environment,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def photo_runs(tmp_path_factory, cache_dir):
    """The study's four variants (from scratch here: no downloads), trained and evaluated
    on the same photos."""
    root = tmp_path_factory.mktemp("photo-runs")
    runs = {}
    for variant in ("p", "n", "ps", "ns"):
        out = root / variant
        trained = run_script("train.py", [*SMOKE, "--variant", variant, "--out", str(out)],
                             cache_dir)
        assert trained.returncode == 0, trained.stderr[-3000:]
        evaluated = run_script("evaluate.py", [str(out), "--no-runtime"], cache_dir)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        runs[variant] = (out, trained, evaluated)
    return runs


@pytest.mark.slow
def test_photo_run_trains_the_variant_on_a_patient_split(photo_runs):
    out, trained, _ = photo_runs["ns"]
    assert "VGG16-NS" in trained.stdout and "SYNTHETIC photo phantom" in trained.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["task"] == "clinical-photos" and config["model"]["variant"] == "ns"
    splits = pd.read_csv(out / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"}
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    history = pd.read_csv(out / "history.csv")
    assert {f"val_{name}_auc" for name in TASK_NAMES} <= set(history.columns)
    import dermnet.models

    model = dermnet.models.load_model(out / "model.keras")
    assert model.output_shape == (None, 3)
    assert any("spatial_transformer" in layer.name for layer in model.layers)


@pytest.mark.slow
def test_evaluation_scores_each_task_on_its_two_diagnoses(photo_runs):
    from dermnet.evaluation.stats import compute_binary_evaluation

    out, _, evaluated = photo_runs["n"]
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["image", "patient_id", "diagnosis", *TASK_NAMES]
    assert list(metrics["tasks"]) == TASK_NAMES
    assert "Table 2: specificity, sensitivity, PPV, NPV" in evaluated.stdout
    # Independent re-scoring of the psoriasis-vs-eczema task from predictions.csv.
    rows = predictions[predictions["diagnosis"].isin(["psoriasis", "eczema"])]
    truth = (rows["diagnosis"] == "eczema").astype(int).to_numpy()
    task = metrics["tasks"]["psoriasis_vs_eczema"]
    assert task["n"] == len(rows)
    if 0 < truth.sum() < len(truth):
        expected = compute_binary_evaluation(truth, rows["psoriasis_vs_eczema"].to_numpy())
        for name in ("sensitivity", "specificity", "accuracy", "auc"):
            assert task[name]["value"] == pytest.approx(expected[name]["value"], abs=1e-12)


@pytest.mark.slow
def test_compare_tabulates_variants_and_runs_delong_tests(photo_runs, tmp_path, cache_dir):
    runs = [str(photo_runs[variant][0]) for variant in ("ns", "p", "n", "ps")]
    result = run_script("evaluate.py", ["compare", *runs, "--out", str(tmp_path / "report")],
                        cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report" / "report.md").read_text()
    order = [report.index(f"| VGG-16{name} | original |") for name in ("P", "N", "PS", "NS")]
    assert order == sorted(order)  # the study's order
    assert (tmp_path / "report" / "table_psoriasis_vs_eczema.csv").is_file()
    assert "DeLong tests" in report


def prepared(config, tmp_path, monkeypatch, cache_dir):
    from dermnet.runs.photos import prepare_run_data

    monkeypatch.setenv("DERMNET_CACHE", str(cache_dir))
    workdir = tmp_path / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    return prepare_run_data(config, workdir, log=lambda message: None)


@pytest.mark.slow
def test_balanced_version_equalises_training_diagnoses_only(photo_runs, tmp_path, monkeypatch,
                                                            cache_dir):
    config = make_config("photos-smoke")
    original = prepared(config, tmp_path / "a", monkeypatch, cache_dir)
    balanced = prepared(dataclasses.replace(config, data=dataclasses.replace(
        config.data, sampling="balanced")), tmp_path / "b", monkeypatch, cache_dir)
    counts = balanced.training["diagnosis"].value_counts()
    assert counts.nunique() == 1
    assert counts.iloc[0] == original.training["diagnosis"].value_counts().max()
    assert balanced.version == "original+balanced"
    pd.testing.assert_frame_equal(balanced.test.drop(columns="repeat"), original.test)


@pytest.mark.slow
def test_cropped_version_reads_the_preprocess_crop_copies(photo_runs, tmp_path, monkeypatch,
                                                          cache_dir):
    config = make_config("photos-smoke")
    original = prepared(config, tmp_path / "a", monkeypatch, cache_dir)
    crop_dir = tmp_path / "cropped"
    result = subprocess.run([sys.executable, "-m", "preprocess", "crop", str(original.data_dir),
                             str(crop_dir)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    cropped = prepared(dataclasses.replace(config, data=dataclasses.replace(
        config.data, crop_dir=str(crop_dir))), tmp_path / "b", monkeypatch, cache_dir)
    assert cropped.version == "cropped"
    moved = cropped.training["path"].str.startswith(str(crop_dir.absolute()))
    assert moved.mean() > 0.5  # photos with no skin found keep their original
    targets = cropped.targets(cropped.training)
    assert targets.shape == (len(cropped.training), 3)
    eczema = (cropped.training["diagnosis"] == "eczema").to_numpy()
    assert np.array_equal(targets[eczema], np.tile([1.0, -1.0, 1.0], (eczema.sum(), 1)))
