"""dermnet.evaluation.metrics against hand-computed values and scikit-learn.

(Named test_evaluation_metrics.py: tests/training/test_metrics.py already exists and test
folders have no __init__.py, so two test_metrics.py files would collide in pytest.)
"""

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from dermnet.evaluation import metrics

NAMES = ("mel", "nv", "bcc")
TRUTH = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
# Rows chosen so that argmax gives PREDICTED and columns hold ties across classes.
PROBABILITIES = np.array([
    [0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.3, 0.5, 0.2], [0.2, 0.3, 0.5],
    [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1],
    [0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3],
])
PREDICTED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])

# Worked by hand from the confusion matrix [[2, 1, 1], [1, 2, 0], [0, 1, 2]].
EXPECTED = {
    "mel": {"support": 4, "tp": 2, "fn": 2, "fp": 1, "tn": 5, "sensitivity": 1 / 2,
            "specificity": 5 / 6, "ppv": 2 / 3, "npv": 5 / 7, "f1": 4 / 7,
            "geometric_mean": np.sqrt(5 / 12), "auc": 17.5 / 24},
    "nv": {"support": 3, "tp": 2, "fn": 1, "fp": 2, "tn": 5, "sensitivity": 2 / 3,
           "specificity": 5 / 7, "ppv": 1 / 2, "npv": 5 / 6, "f1": 4 / 7,
           "geometric_mean": np.sqrt(10 / 21), "auc": 19.5 / 21},
    "bcc": {"support": 3, "tp": 2, "fn": 1, "fp": 1, "tn": 6, "sensitivity": 2 / 3,
            "specificity": 6 / 7, "ppv": 2 / 3, "npv": 6 / 7, "f1": 2 / 3,
            "geometric_mean": np.sqrt(4 / 7), "auc": 19.5 / 21},
}


def test_argmax_of_the_example_probabilities_is_the_example_prediction():
    np.testing.assert_array_equal(PROBABILITIES.argmax(axis=1), PREDICTED)


def test_confusion_matrix_rows_are_truth_columns_are_predictions():
    confusion = metrics.compute_confusion_matrix(TRUTH, PREDICTED, 3)
    np.testing.assert_array_equal(confusion, [[2, 1, 1], [1, 2, 0], [0, 1, 2]])
    assert confusion.dtype == np.int64


@pytest.mark.parametrize(("truth", "predicted", "message"), [
    ([0, 3], [0, 1], "truth label 3"),
    ([0, 1], [-1, 1], "predicted label -1"),
    ([0, 1], [0, 1, 2], "truth has 2 labels but predicted has 3"),
    ([0.5, 1], [0, 1], "integer class indices"),
])
def test_confusion_matrix_rejects_bad_labels(truth, predicted, message):
    with pytest.raises(ValueError, match=message):
        metrics.compute_confusion_matrix(truth, predicted, 3)


def test_class_counts_are_one_vs_rest():
    counts = metrics.compute_class_counts([[2, 1, 1], [1, 2, 0], [0, 1, 2]])
    for key in metrics.COUNTS:
        np.testing.assert_array_equal(counts[key], [EXPECTED[name][key] for name in NAMES])


def test_multiclass_metrics_match_the_hand_computed_example():
    report = metrics.compute_multiclass_metrics(TRUTH, PROBABILITIES, NAMES)
    assert report["num_images"] == 10
    assert report["class_names"] == list(NAMES)
    assert report["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["error_rate"] == pytest.approx(0.4)
    assert report["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert report["macro_auc"] == pytest.approx((17.5 / 24 + 2 * 19.5 / 21) / 3)
    for name in NAMES:
        assert report["per_class"][name] == pytest.approx(EXPECTED[name]), name


def test_multiclass_metrics_agree_with_sklearn():
    report = metrics.compute_multiclass_metrics(TRUTH, PROBABILITIES, NAMES)
    per_class = report["per_class"]
    assert report["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(TRUTH, PREDICTED))
    np.testing.assert_allclose([per_class[name]["f1"] for name in NAMES],
                               f1_score(TRUTH, PREDICTED, average=None))
    np.testing.assert_allclose([per_class[name]["sensitivity"] for name in NAMES],
                               recall_score(TRUTH, PREDICTED, average=None))
    np.testing.assert_allclose([per_class[name]["ppv"] for name in NAMES],
                               precision_score(TRUTH, PREDICTED, average=None))
    sklearn_aucs = [roc_auc_score(np.equal(TRUTH, column), PROBABILITIES[:, column])
                    for column in range(3)]
    np.testing.assert_allclose([per_class[name]["auc"] for name in NAMES], sklearn_aucs)
    assert report["macro_auc"] == pytest.approx(
        roc_auc_score(TRUTH, PROBABILITIES, multi_class="ovr", average="macro"))


def test_predicted_labels_alone_give_the_same_rates_without_auc():
    from_probabilities = metrics.compute_multiclass_metrics(TRUTH, PROBABILITIES, NAMES)
    from_labels = metrics.compute_multiclass_metrics(TRUTH, class_names=NAMES,
                                                     predicted=PREDICTED)
    assert "macro_auc" not in from_labels
    assert "auc" not in from_labels["per_class"]["mel"]
    for name in NAMES:
        expected = dict(from_probabilities["per_class"][name])
        expected.pop("auc")
        assert from_labels["per_class"][name] == expected


@pytest.mark.filterwarnings("error")  # 0/0 must give NaN quietly
def test_absent_class_gives_nan_and_is_left_out_of_balanced_accuracy():
    names = (*NAMES, "akiec")
    probabilities = np.hstack([PROBABILITIES * 0.9, np.full((10, 1), 0.1)])
    report = metrics.compute_multiclass_metrics(TRUTH, probabilities, names)
    absent = report["per_class"]["akiec"]
    assert absent["support"] == 0 and absent["tp"] == 0 and absent["fp"] == 0
    assert np.isnan(absent["sensitivity"]) and np.isnan(absent["auc"])
    assert np.isnan(absent["ppv"]) and np.isnan(absent["f1"])  # never predicted either
    assert absent["specificity"] == 1.0
    assert report["balanced_accuracy"] == pytest.approx(11 / 18)  # mean over 3 classes
    assert report["macro_auc"] == pytest.approx((17.5 / 24 + 2 * 19.5 / 21) / 3)


def test_balanced_accuracy_matches_sklearn_when_an_absent_class_is_predicted():
    truth = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 3, 1, 1, 0, 3])  # class 3 predicted, never true
    confusion = metrics.compute_confusion_matrix(truth, predicted, 4)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(truth, predicted)
    assert float(metrics.compute_balanced_accuracy(confusion)) == pytest.approx(expected)
    assert expected == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_multiclass_metrics_need_exactly_one_prediction_source():
    with pytest.raises(ValueError, match="exactly one"):
        metrics.compute_multiclass_metrics(TRUTH, PROBABILITIES, NAMES, predicted=PREDICTED)
    with pytest.raises(ValueError, match="exactly one"):
        metrics.compute_multiclass_metrics(TRUTH, class_names=NAMES)
    with pytest.raises(ValueError, match=r"expected \(10, 7\)"):
        metrics.compute_multiclass_metrics(TRUTH, PROBABILITIES)  # default: 7 ISIC classes


def test_auc_handles_ties_and_agrees_with_sklearn():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + truth, 1)  # rounding makes many ties
    assert metrics.compute_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores))
    assert metrics.compute_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert metrics.compute_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0


@pytest.mark.filterwarnings("error")
def test_auc_is_nan_without_both_classes():
    assert np.isnan(metrics.compute_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert np.isnan(metrics.compute_auc([0, 0], [0.1, 0.5]))
    with pytest.raises(ValueError, match="truth label 2"):
        metrics.compute_auc([0, 2], [0.1, 0.5])


def test_binary_metrics_by_hand():
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.5, 0.4, 0.8, 0.1, 0.6, 0.2, 0.3, 0.5, 0.0]
    report = metrics.compute_binary_metrics(truth, scores, threshold=0.5)
    # score >= 0.5 is positive: tp 3 (0.9, 0.5, 0.8), fn 1, fp 2 (0.6, 0.5), tn 4.
    assert (report["tp"], report["fn"], report["fp"], report["tn"]) == (3, 1, 2, 4)
    assert report["num_images"] == 10
    assert report["sensitivity"] == pytest.approx(3 / 4)
    assert report["specificity"] == pytest.approx(4 / 6)
    assert report["ppv"] == pytest.approx(3 / 5)
    assert report["npv"] == pytest.approx(4 / 5)
    assert report["accuracy"] == pytest.approx(7 / 10)
    assert report["auc"] == pytest.approx(roc_auc_score(truth, scores))


def test_pair_scores_restrict_to_two_classes():
    truth = np.array([0, 1, 2, 0, 1])
    probabilities = np.array([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4],
                              [0.0, 0.0, 1.0], [0.2, 0.6, 0.2]])
    mask, truth01, scores = metrics.compute_pair_scores(truth, probabilities, NAMES,
                                                        "mel", "nv")
    np.testing.assert_array_equal(mask, [True, True, False, True, True])
    np.testing.assert_array_equal(truth01, [1, 0, 1, 0])
    np.testing.assert_allclose(scores, [0.75, 0.25, 0.5, 0.25])
    with pytest.raises(ValueError, match="unknown class 'scc'"):
        metrics.compute_pair_scores(truth, probabilities, NAMES, "scc", "nv")


def test_weighted_metrics_equal_metrics_of_the_expanded_resample():
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 3, 40)
    scores = np.round(rng.random((40, 3)), 1)  # ties
    predicted = scores.argmax(axis=1)
    weights = rng.integers(0, 3, size=(4, 40))  # image multiplicities of 4 resamples
    confusions = metrics.compute_weighted_confusions(weights, truth, predicted, 3)
    for row, multiplicity in enumerate(weights):
        indices = np.repeat(np.arange(40), multiplicity)
        np.testing.assert_array_equal(
            confusions[row], metrics.compute_confusion_matrix(truth[indices],
                                                              predicted[indices], 3))
        for column in range(3):
            expected = metrics.compute_auc(truth[indices] == column, scores[indices, column])
            weighted = metrics.compute_weighted_aucs(weights, truth == column,
                                                     scores[:, column])
            assert weighted[row] == pytest.approx(expected)


@pytest.mark.filterwarnings("error")
def test_weighted_auc_is_nan_for_a_resample_without_positives():
    weights = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    aucs = metrics.compute_weighted_aucs(weights, np.array([0, 0, 1, 1]),
                                         np.array([0.1, 0.4, 0.35, 0.8]))
    assert np.isnan(aucs[0])
    assert aucs[1] == pytest.approx(0.75)
