"""dermnet.evaluation.stats against textbook values, definitions and resampling."""

import json
import math
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from dermnet.evaluation import metrics, stats

# --------------------------------------------------------------------------- helpers


def delong_by_definition(truth01, scores):
    """DeLong et al. (1988) with the m x n comparison matrix: (AUC, variance)."""
    truth01 = np.asarray(truth01)
    positives, negatives = scores[truth01 == 1], scores[truth01 == 0]
    comparison = ((positives[:, None] > negatives[None, :])
                  + 0.5 * (positives[:, None] == negatives[None, :]))
    positive_means, negative_means = comparison.mean(axis=1), comparison.mean(axis=0)
    variance = (positive_means.var(ddof=1) / positives.size
                + negative_means.var(ddof=1) / negatives.size)
    return comparison.mean(), variance


def stratified_bootstrap_aucs(truth01, score_sets, resamples, seed):
    """AUCs [resamples, models] of stratified bootstrap resamples (DeLong conditions on the
    class sizes), via multiplicities and the comparison matrix, so 20,000 resamples are fast."""
    rng = np.random.default_rng(seed)
    m, n = int(truth01.sum()), int((1 - truth01).sum())
    positive_counts = rng.multinomial(m, np.full(m, 1 / m), size=resamples)  # [r, m]
    negative_counts = rng.multinomial(n, np.full(n, 1 / n), size=resamples)
    aucs = []
    for scores in score_sets:
        positives, negatives = scores[truth01 == 1], scores[truth01 == 0]
        comparison = ((positives[:, None] > negatives[None, :])
                      + 0.5 * (positives[:, None] == negatives[None, :]))
        aucs.append(((positive_counts @ comparison) * negative_counts).sum(axis=1) / (m * n))
    return np.stack(aucs, axis=1)


def correlated_scores(size=200, seed=0):
    """Two models that share most of their signal (a latent score) on the same images."""
    rng = np.random.default_rng(seed)
    truth01 = np.repeat([1, 0], size // 2)
    latent = 1.0 * truth01 + rng.normal(size=size)
    return truth01, latent + 0.3 * rng.normal(size=size), latent + 0.9 * rng.normal(size=size)


def softmax_example(size, num_classes, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, num_classes, size)
    logits = rng.normal(size=(size, num_classes))
    logits[np.arange(size), truth] += 1.5
    probabilities = np.exp(logits)
    return truth, probabilities / probabilities.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- Clopper-Pearson


@pytest.mark.parametrize(("successes", "trials", "expected"), [
    (0, 10, (0.0, 0.3085)),  # textbook: upper = 1 - 0.025 ** (1 / 10)
    (5, 10, (0.1871, 0.8129)),
    (10, 10, (0.6915, 1.0)),
])
def test_clopper_pearson_textbook_values(successes, trials, expected):
    low, high = stats.clopper_pearson(successes, trials)
    assert (low, high) == pytest.approx(expected, abs=5e-5)


def test_clopper_pearson_upper_bound_with_no_successes_is_closed_form():
    _, high = stats.clopper_pearson(0, 10, confidence=0.90)
    assert high == pytest.approx(1 - 0.05 ** (1 / 10))


def test_clopper_pearson_without_trials_is_nan():
    assert all(math.isnan(value) for value in stats.clopper_pearson(0, 0))


# --------------------------------------------------------------------------- DeLong


def test_delong_matches_its_definition_with_ties():
    rng = np.random.default_rng(1)
    truth01 = rng.integers(0, 2, 150)
    scores = rng.integers(0, 6, 150) + truth01  # few distinct values: many ties
    auc, variance = stats.compute_delong(truth01, scores)
    expected_auc, expected_variance = delong_by_definition(truth01, scores)
    assert auc == pytest.approx(expected_auc)
    assert auc == pytest.approx(roc_auc_score(truth01, scores))
    assert variance == pytest.approx(expected_variance, rel=1e-10)


def test_delong_variance_agrees_with_a_large_bootstrap():
    truth01, scores, _ = correlated_scores(size=200, seed=2)
    auc, variance = stats.compute_delong(truth01, scores)
    replicates = stratified_bootstrap_aucs(truth01, [scores], 20_000, seed=3)[:, 0]
    assert auc == pytest.approx(roc_auc_score(truth01, scores))
    assert variance == pytest.approx(replicates.var(), rel=0.10)


def test_delong_interval_is_a_clipped_normal_interval():
    truth01, scores, _ = correlated_scores(size=200, seed=4)
    auc, variance = stats.compute_delong(truth01, scores)
    _, low, high = stats.delong_interval(truth01, scores, confidence=0.95)
    assert (low, high) == pytest.approx((auc - 1.959964 * math.sqrt(variance),
                                         auc + 1.959964 * math.sqrt(variance)))
    nearly_perfect = np.where(truth01 == 1, 10.0, 0.0)
    nearly_perfect[0] = -1.0  # one positive below every negative: AUC 0.99, wide variance
    auc, low, high = stats.delong_interval(truth01, nearly_perfect)
    assert auc == pytest.approx(0.99) and high == 1.0 and low < auc


def test_delong_interval_is_nan_for_an_absent_class():
    result = stats.delong_interval([1, 1, 1], [0.2, 0.4, 0.6])
    assert all(math.isnan(value) for value in result)


def test_delong_test_matches_a_bootstrap_of_correlated_aucs():
    truth01, scores_a, scores_b = correlated_scores(size=200, seed=5)
    result = stats.delong_test(truth01, scores_a, scores_b)
    replicates = stratified_bootstrap_aucs(truth01, [scores_a, scores_b], 20_000, seed=6)
    bootstrap_sd = (replicates[:, 0] - replicates[:, 1]).std()
    assert result["auc_a"] == pytest.approx(roc_auc_score(truth01, scores_a))
    assert result["auc_b"] == pytest.approx(roc_auc_score(truth01, scores_b))
    assert result["difference"] == pytest.approx(result["auc_a"] - result["auc_b"])
    bootstrap_z = result["difference"] / bootstrap_sd
    assert result["z"] == pytest.approx(bootstrap_z, rel=0.10)
    assert result["p_value"] == pytest.approx(2 * scipy_stats.norm.sf(abs(bootstrap_z)),
                                              rel=0.25)
    # The correlation matters: treating the AUCs as independent would be far off.
    independent_sd = math.sqrt(stats.compute_delong(truth01, scores_a)[1]
                               + stats.compute_delong(truth01, scores_b)[1])
    assert independent_sd > 1.5 * bootstrap_sd


def test_delong_test_of_identical_rankings_has_no_evidence():
    truth01, scores, _ = correlated_scores(size=60, seed=7)
    result = stats.delong_test(truth01, scores, 2 * scores + 1)  # same ranks
    assert result["difference"] == 0.0
    assert math.isnan(result["z"]) and result["p_value"] == 1.0


# --------------------------------------------------------------------------- cluster bootstrap


def test_bootstrap_resamples_groups_as_units():
    groups = np.repeat(np.arange(30), np.arange(30) % 4 + 1)  # groups of 1-4 images
    sizes = np.bincount(groups)

    def whole_groups(indices):
        # 1.0 when every group appears a whole number of times, image by image.
        counts = np.bincount(indices, minlength=groups.size)
        per_group = counts[np.argsort(groups, kind="stable")]
        return float(all(np.ptp(chunk) == 0 for chunk in np.split(per_group,
                                                                    np.cumsum(sizes)[:-1])))

    assert stats.bootstrap_interval(whole_groups, groups, n_resamples=200) == (1.0, 1.0)
    assert stats.bootstrap_interval(whole_groups, np.arange(groups.size),
                                    n_resamples=200) == (0.0, 0.0)


def test_duplicated_images_widen_a_lesion_bootstrap():
    rng = np.random.default_rng(8)
    values = np.repeat(rng.normal(size=100), 5)  # 100 lesions photographed 5 times each
    lesions = np.repeat(np.arange(100), 5)

    def mean(indices):
        return values[indices].mean()

    low, high = stats.bootstrap_interval(mean, lesions, n_resamples=1000)
    image_low, image_high = stats.bootstrap_interval(mean, np.arange(500), n_resamples=1000)
    # Five copies carry one lesion's information: the honest interval is about sqrt(5) wider.
    assert (high - low) / (image_high - image_low) == pytest.approx(math.sqrt(5), rel=0.15)
    assert low < values.mean() < high


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(9)
    values = rng.normal(size=80)
    groups = np.repeat(np.arange(40), 2)

    def mean(indices):
        return values[indices].mean()

    first = stats.bootstrap_interval(mean, groups, n_resamples=300, seed=4)
    assert stats.bootstrap_interval(mean, groups, n_resamples=300, seed=4) == first
    assert stats.bootstrap_interval(mean, groups, n_resamples=300, seed=5) != first


def test_bootstrap_many_shares_resamples_with_bootstrap_interval():
    rng = np.random.default_rng(10)
    values = rng.normal(size=60)
    groups = rng.integers(0, 25, 60)
    statistics = {"mean": lambda indices: values[indices].mean(),
                  "max": lambda indices: values[indices].max()}
    many = stats.bootstrap_many(statistics, groups, n_resamples=400, seed=1)
    for name, statistic in statistics.items():
        assert many[name] == stats.bootstrap_interval(statistic, groups, n_resamples=400,
                                                      seed=1)


def test_bootstrap_ignores_a_minority_of_nan_replicates():
    values = np.arange(10.0)
    groups = np.arange(10)

    def max_unless_first(indices):  # NaN whenever image 0 is drawn: 1 - 0.9^10 = 65%
        return np.nan if 0 in indices else values[indices].max()

    def max_unless_last_missing(indices):  # NaN whenever image 9 is missing: 35%
        return values[indices].max() if 9 in indices else np.nan

    assert all(math.isnan(v) for v in stats.bootstrap_interval(max_unless_first, groups,
                                                                 n_resamples=300))
    # Only resamples holding image 9 (value 9, the maximum) count.
    assert stats.bootstrap_interval(max_unless_last_missing, groups, n_resamples=300) == (9, 9)


# --------------------------------------------------------------------------- evaluation reports


NAMES = ("mel", "nv", "bcc", "akiec")


def test_compute_evaluation_layout_and_interval_methods():
    truth, probabilities = softmax_example(300, 3, seed=11)
    probabilities = np.hstack([probabilities, np.zeros((300, 1))])  # akiec: never true
    lesions = np.arange(300) // 2
    report = stats.compute_evaluation(truth, probabilities, NAMES, groups=lesions,
                                      n_resamples=200, seed=3)
    point = metrics.compute_multiclass_metrics(truth, probabilities, NAMES)
    assert report["num_groups"] == 150 and report["n_resamples"] == 200
    assert report["confidence"] == 0.95 and report["num_images"] == 300
    assert report["confusion_matrix"] == point["confusion_matrix"]
    correct = sum(entry["tp"] for entry in point["per_class"].values())
    assert report["accuracy"] == {"value": point["accuracy"], "method": "clopper-pearson",
                                  **dict(zip(("low", "high"),
                                             stats.clopper_pearson(correct, 300)))}
    assert report["balanced_accuracy"]["method"] == "bootstrap-lesions"
    assert report["macro_auc"]["value"] == pytest.approx(point["macro_auc"])
    for name in NAMES:
        entry, expected = report["per_class"][name], point["per_class"][name]
        assert list(entry) == list(expected)  # same keys, same order
        for key in ("support", *metrics.COUNTS):
            assert entry[key] == expected[key]
        for key in (*metrics.RATES, "auc"):
            assert entry[key]["value"] == pytest.approx(expected[key], nan_ok=True), key
    mel = report["per_class"]["mel"]
    assert mel["sensitivity"]["method"] == "clopper-pearson"
    assert (mel["sensitivity"]["low"], mel["sensitivity"]["high"]) == stats.clopper_pearson(
        mel["tp"], mel["tp"] + mel["fn"])
    assert mel["f1"]["method"] == "bootstrap-lesions"
    assert mel["auc"]["method"] == "delong"
    assert (mel["auc"]["value"], mel["auc"]["low"], mel["auc"]["high"]) == pytest.approx(
        stats.delong_interval(truth == 0, probabilities[:, 0]))


def test_compute_evaluation_bootstrap_equals_the_generic_cluster_bootstrap():
    truth, probabilities = softmax_example(240, 4, seed=12)
    probabilities[:, 1] = np.round(probabilities[:, 1], 1)  # ties for the weighted AUC
    lesions = np.random.default_rng(13).integers(0, 150, 240)
    report = stats.compute_evaluation(truth, probabilities, NAMES, groups=lesions,
                                      n_resamples=300, seed=7)
    predicted = probabilities.argmax(axis=1)

    def balanced_accuracy(indices):
        confusion = metrics.compute_confusion_matrix(truth[indices], predicted[indices], 4)
        return metrics.compute_balanced_accuracy(confusion)

    def macro_auc(indices):
        return metrics.compute_multiclass_metrics(truth[indices], probabilities[indices],
                                                  NAMES)["macro_auc"]

    def nv_f1(indices):
        confusion = metrics.compute_confusion_matrix(truth[indices], predicted[indices], 4)
        return metrics.compute_rates(metrics.compute_class_counts(confusion))["f1"][1]

    expected = stats.bootstrap_many({"balanced_accuracy": balanced_accuracy,
                                     "macro_auc": macro_auc, "f1": nv_f1},
                                    lesions, n_resamples=300, seed=7)
    for name in ("balanced_accuracy", "macro_auc"):
        assert (report[name]["low"], report[name]["high"]) == pytest.approx(expected[name])
    nv_f1_entry = report["per_class"]["nv"]["f1"]
    assert (nv_f1_entry["low"], nv_f1_entry["high"]) == pytest.approx(expected["f1"])


def test_compute_evaluation_round_trips_through_strict_json():
    truth, probabilities = softmax_example(100, 3, seed=14)
    probabilities = np.hstack([probabilities, np.zeros((100, 1))])
    report = stats.compute_evaluation(truth, probabilities, NAMES, n_resamples=50)
    text = json.dumps(stats.to_json_ready(report), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["balanced_accuracy"]["method"] == "bootstrap-images"
    assert loaded["num_groups"] == 100
    assert loaded["per_class"]["akiec"]["sensitivity"]["value"] is None  # NaN -> null
    assert loaded["per_class"]["mel"]["auc"]["value"] == pytest.approx(
        report["per_class"]["mel"]["auc"]["value"])


def test_compute_evaluation_from_labels_has_no_auc():
    truth, probabilities = softmax_example(80, 4, seed=15)
    report = stats.compute_evaluation(truth, class_names=NAMES,
                                      predicted=probabilities.argmax(axis=1), n_resamples=50)
    assert "macro_auc" not in report and "auc" not in report["per_class"]["nv"]
    assert report["balanced_accuracy"]["low"] <= report["balanced_accuracy"]["value"]


def test_to_json_ready_converts_numpy_and_non_finite_values():
    converted = stats.to_json_ready({"a": np.float32(0.5), "b": np.int64(3),
                                     "c": np.array([[1.0, np.nan]]), "d": (np.bool_(True),),
                                     "e": float("inf"), "f": np.array(2.0)})
    assert converted == {"a": 0.5, "b": 3, "c": [[1.0, None]], "d": [True], "e": None,
                         "f": 2.0}
    assert type(converted["b"]) is int and type(converted["d"][0]) is bool


@pytest.mark.slow
def test_compute_evaluation_at_full_size_runs_in_seconds():
    truth, probabilities = softmax_example(2000, 7, seed=16)
    lesions = np.random.default_rng(17).integers(0, 1500, 2000)
    start = time.process_time()
    report = stats.compute_evaluation(truth, probabilities, groups=lesions)
    elapsed = time.process_time() - start
    assert report["n_resamples"] == 2000
    assert report["balanced_accuracy"]["low"] < report["balanced_accuracy"]["value"]
    print(f"compute_evaluation 2000 x 7, 2000 resamples: {elapsed:.2f} s CPU")


def test_binary_evaluation_row():
    truth01 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.5, 0.4, 0.8, 0.1, 0.6, 0.2, 0.3, 0.5, 0.0])
    row = stats.compute_binary_evaluation(truth01, scores, groups=[0, 0, 1, 2, 3, 4, 5, 6, 7,
                                                                   7])
    assert (row["n"], row["tp"], row["fn"], row["fp"], row["tn"]) == (10, 3, 1, 2, 4)
    assert row["num_groups"] == 8
    assert row["sensitivity"] == {"value": 0.75, "low": stats.clopper_pearson(3, 4)[0],
                                  "high": stats.clopper_pearson(3, 4)[1],
                                  "method": "clopper-pearson"}
    assert (row["accuracy"]["low"], row["accuracy"]["high"]) == stats.clopper_pearson(7, 10)
    assert row["npv"]["value"] == pytest.approx(0.8)
    assert row["auc"]["method"] == "delong"
    assert row["auc"]["value"] == pytest.approx(roc_auc_score(truth01, scores))


# --------------------------------------------------------------------------- comparisons


def test_mann_whitney_textbook_exact_case():
    result = stats.mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    # U = 0 and P(U <= 0) = 1 / C(6, 3) = 1/20 under the null; two-sided: 0.1.
    assert result == {"u": 0.0, "p_value": pytest.approx(0.1), "n_a": 3, "n_b": 3}


def test_mann_whitney_with_ties_uses_the_corrected_normal_approximation():
    result = stats.mann_whitney([1, 2, 2, 5], [2, 3, 4])
    assert result["u"] == 4.0  # 0 + 0.5 + 0.5 + 3 pairs won by the first sample
    # Three tied 2s: variance n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))).
    sigma = math.sqrt(4 * 3 / 12 * (8 - 24 / 42))
    expected = 2 * scipy_stats.norm.sf((abs(4.0 - 6.0) - 0.5) / sigma)  # continuity corr.
    assert result["p_value"] == pytest.approx(expected)


def test_mann_whitney_needs_values_in_both_samples():
    with pytest.raises(ValueError, match="at least one value"):
        stats.mann_whitney([], [1.0, 2.0])


def test_mcnemar_is_an_exact_binomial_test_on_discordant_images():
    correct_a = np.array([True] * 9 + [False] * 1 + [True] * 20 + [False] * 5)
    correct_b = np.array([False] * 9 + [True] * 1 + [True] * 20 + [False] * 5)
    result = stats.mcnemar(correct_a, correct_b)
    assert (result["a_only"], result["b_only"]) == (9, 1)
    assert result["p_value"] == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2^10
    assert result["p_value"] == pytest.approx(scipy_stats.binomtest(9, 10).pvalue)
    for a_only, b_only in ((7, 7), (0, 3), (12, 30)):
        correct_a = np.r_[np.ones(a_only, bool), np.zeros(b_only, bool)]
        p_value = stats.mcnemar(correct_a, ~correct_a)["p_value"]
        assert p_value == pytest.approx(scipy_stats.binomtest(a_only, a_only + b_only).pvalue)
    assert stats.mcnemar([True, False], [True, False])["p_value"] == 1.0
