"""evaluate.py compare: the paper's tables and tests, on hand-made evaluated runs."""

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from dermnet.evaluation.compare import (
    CompareError,
    aggregate,
    compute_tests,
    format_report,
    load_results,
    paper_tables,
    parse_factors,
)

SIZES = {"low": [224, 300], "high": [450, 600]}


def make_run(root, backbone, resolution, clinical, fold, accuracy, correct=None,
             split="test", synthetic=True):
    run = root / f"{backbone}-{resolution}-{clinical}-{fold}"
    run.mkdir(parents=True)
    metrics = {"split": split, "synthetic": synthetic, "accuracy": {"value": accuracy},
               "balanced_accuracy": {"value": accuracy - 0.1},
               "model": {"backbone": backbone, "image_size": SIZES[resolution],
                         "clinical": clinical, "fold": fold}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    if correct is not None:
        pd.DataFrame({"image": [f"ISIC_{index:07d}" for index in range(len(correct))],
                      "correct": correct}).to_csv(run / "per_image.csv", index=False)
    return run


@pytest.fixture
def grid(tmp_path):
    """3 backbones x 2 resolutions x 2 clinical settings x 3 folds, known accuracies."""
    rng = np.random.default_rng(0)
    runs, accuracy = [], {}
    for backbone, base in (("resnet50", 0.75), ("vgg16", 0.72), ("mobilenet", 0.80)):
        for resolution, bonus in (("low", 0.0), ("high", 0.02)):
            for clinical, gain in ((False, 0.0), (True, 0.03)):
                for fold in range(3):
                    value = base + bonus + gain + rng.normal(0, 0.005)
                    accuracy[(backbone, resolution, clinical, fold)] = 100 * value
                    runs.append(make_run(tmp_path, backbone, resolution, clinical, fold,
                                         value))
    return runs, accuracy


def test_folds_aggregate_to_mean_and_sample_sd(grid):
    runs, accuracy = grid
    summary = aggregate(load_results(runs)).set_index(["backbone", "resolution", "clinical"])
    folds = [accuracy[("vgg16", "high", True, fold)] for fold in range(3)]
    row = summary.loc[("vgg16", "high", "with")]
    assert row["runs"] == 3 and row["folds"] == "0,1,2"
    assert row["accuracy_mean"] == pytest.approx(np.mean(folds))
    assert row["accuracy_sd"] == pytest.approx(np.std(folds, ddof=1))
    assert row["error_rate_mean"] == pytest.approx(100 - np.mean(folds))


def test_tables_are_laid_out_like_the_papers(grid):
    runs, accuracy = grid
    tables = paper_tables(aggregate(load_results(runs)))
    assert list(tables) == ["Without clinical data", "With clinical data"]
    table = tables["Without clinical data"].set_index("network")
    assert list(table.columns) == ["low accuracy", "low error rate", "high accuracy",
                                   "high error rate"]
    folds = [accuracy[("mobilenet", "low", False, fold)] for fold in range(3)]
    assert table.loc["mobilenet", "low accuracy"] == (
        f"{np.mean(folds):.2f} ± {np.std(folds, ddof=1):.2f}")


def test_the_papers_test_compares_per_backbone_means_with_scipy(grid):
    runs, accuracy = grid
    tests = compute_tests(load_results(runs))
    test = next(item for item in tests if item["kind"].startswith("across backbones")
                and item["factor"] == "clinical" and item["within"] == "resolution low")
    means = [[np.mean([accuracy[(backbone, "low", clinical, fold)] for fold in range(3)])
              for backbone in ("resnet50", "vgg16", "mobilenet")] for clinical in (False, True)]
    expected = scipy_stats.mannwhitneyu(*means, alternative="two-sided")
    assert (test["a"], test["b"]) == ("without", "with")
    assert test["u"] == pytest.approx(expected.statistic)
    assert test["p_value"] == pytest.approx(expected.pvalue)
    assert "smallest possible p = 0.10" in test["note"]  # 3 vs 3: 2 / C(6, 3)


def test_per_backbone_tests_use_the_fold_accuracies(grid):
    runs, accuracy = grid
    tests = compute_tests(load_results(runs), by=("backbone", "resolution", "clinical"))
    test = next(item for item in tests if item["kind"].startswith("per backbone")
                and item["factor"] == "resolution" and item["within"] == "vgg16, clinical with")
    samples = [[accuracy[("vgg16", resolution, True, fold)] for fold in range(3)]
               for resolution in ("low", "high")]
    expected = scipy_stats.mannwhitneyu(*samples, alternative="two-sided")
    assert test["p_value"] == pytest.approx(expected.pvalue)
    assert test["n_a"] == test["n_b"] == 3


def test_single_runs_say_what_cannot_be_tested_and_pair_on_images(tmp_path):
    # 10 images; 6 right only with clinical data, 1 only without: McNemar on 7 discordant.
    without = [True, True, True, False, False, False, False, False, False, True]
    with_clinical = [True, True, False, True, True, True, True, True, True, True]
    runs = [make_run(tmp_path, "mobilenet", "low", False, 0, 0.4, without),
            make_run(tmp_path, "mobilenet", "low", True, 0, 0.9, with_clinical)]
    tests = compute_tests(load_results(runs))
    untestable = [item for item in tests if item["test"] == "Mann-Whitney U"]
    assert untestable and all(math.isnan(item["p_value"]) for item in untestable)
    assert all(item["note"].startswith("cannot be tested") for item in untestable)
    paired = next(item for item in tests if item["test"].startswith("McNemar"))
    assert (paired["right_only_a"], paired["right_only_b"]) == (1, 6)
    expected = scipy_stats.binomtest(1, 7, 0.5).pvalue
    assert paired["p_value"] == pytest.approx(expected)


def test_runs_must_be_evaluated_on_one_split(tmp_path):
    unevaluated = tmp_path / "bare"
    unevaluated.mkdir()
    with pytest.raises(CompareError, match="bare: no metrics.json; run `evaluate.py"):
        load_results([unevaluated])
    runs = [make_run(tmp_path, "vgg16", "low", False, 0, 0.7),
            make_run(tmp_path, "vgg16", "low", True, 0, 0.7, split="val")]
    with pytest.raises(CompareError, match="different splits"):
        load_results(runs)


def test_unknown_factor_is_refused():
    assert parse_factors("backbone, clinical") == ("backbone", "clinical")
    with pytest.raises(CompareError, match="--by takes"):
        parse_factors("backbone,optimizer")


def test_cli_writes_the_report_files(grid, tmp_path):
    from dermnet.evaluation.cli import main

    runs, _ = grid
    out = tmp_path / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    for name in ("report.md", "configurations.csv", "tests.csv",
                 "table_without_clinical_data.csv", "table_with_clinical_data.csv"):
        assert (out / name).is_file(), name
    assert "Mann-Whitney U" in (out / "report.md").read_text()
    assert len(pd.read_csv(out / "configurations.csv")) == 12
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["compare", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "no metrics.json" in stderr.getvalue()


@pytest.mark.parametrize("synthetic, title, mcnemar", [
    ((True, True), "SYNTHETIC data", "on 10 SYNTHETIC images"),
    ((False, False), "REAL data", "on 10 REAL images"),
    ((True, False), "MIXED (SYNTHETIC and REAL, or unrecorded) data", "on 10 images")])
def test_the_report_says_what_data_the_runs_saw(tmp_path, synthetic, title, mcnemar):
    # The outside trial: per-run reports said SYNTHETIC, the comparison did not.
    correct = [True, False] * 5
    runs = [make_run(tmp_path, "mobilenet", "low", clinical, 0, 0.5, correct,
                     synthetic=flag) for clinical, flag in zip((False, True), synthetic)]
    results = load_results(runs)
    report = format_report(results, {}, compute_tests(results))
    assert report.splitlines()[0].endswith(f"(test split): {title}")
    assert mcnemar in report
    assert ("say nothing about real lesions" in report) == (synthetic == (True, True))
