"""Uncertainty and comparisons for the metrics of ``dermnet.evaluation.metrics``.

Owns the confidence intervals (Clopper-Pearson for proportions, DeLong for AUCs, a cluster
bootstrap over lesions for everything else), the model comparisons (DeLong test for two AUCs
on the same images, exact McNemar, Mann-Whitney U) and the full ``metrics.json`` report
(``compute_evaluation``), with ``to_json_ready`` to make it strict JSON.

Images of one lesion are not independent: HAM10000 holds 10,015 images of 7,470 lesions.
The bootstrap therefore resamples groups (lesion ids) and takes all images of each drawn
group; without groups every image is its own group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats

from dermnet.data.vocabulary import CLASSES
from dermnet.evaluation import metrics

# Resamples evaluated per block: bounds memory ([block, images] weight matrices) while
# keeping the work in array operations.
BLOCK = 250


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple:
    """Exact binomial interval (low, high) for successes / trials; (nan, nan) when trials == 0."""
    if trials == 0:
        return float("nan"), float("nan")
    interval = scipy_stats.binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def _split_by_class(truth01, scores) -> tuple:
    """Scores of the positives and of the negatives (2-D scores: one row per model)."""
    truth01 = metrics.binary_labels(truth01)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[-1] != truth01.size:
        raise ValueError(f"truth has {truth01.size} labels but scores has {scores.shape[-1]}")
    return scores[..., truth01 == 1], scores[..., truth01 == 0]


def _structural_components(positives, negatives) -> tuple:
    """DeLong placements via midranks (Sun & Xu 2014); rows are models.

    Returns AUC [models], the placement of each positive among the negatives [models, m]
    and of each negative among the positives [models, n].
    """
    m, n = positives.shape[-1], negatives.shape[-1]
    rank_positives = scipy_stats.rankdata(positives, axis=-1)
    rank_negatives = scipy_stats.rankdata(negatives, axis=-1)
    rank_all = scipy_stats.rankdata(np.concatenate([positives, negatives], axis=-1), axis=-1)
    # A positive's rank among all minus its rank among positives counts the negatives below
    # it (ties one half): its share of wins.
    positive_placements = (rank_all[..., :m] - rank_positives) / n
    negative_placements = 1.0 - (rank_all[..., m:] - rank_negatives) / m
    auc = (rank_all[..., :m].sum(axis=-1) - m * (m + 1) / 2) / (m * n)
    return auc, positive_placements, negative_placements


def _delong_covariance(positive_placements, negative_placements) -> np.ndarray:
    """Covariance matrix [models, models] of the AUC estimates; NaN with < 2 of a class."""
    m, n = positive_placements.shape[-1], negative_placements.shape[-1]
    models = positive_placements.shape[0]
    if m < 2 or n < 2:  # a sample variance needs two values
        return np.full((models, models), np.nan)
    return (np.atleast_2d(np.cov(positive_placements)) / m
            + np.atleast_2d(np.cov(negative_placements)) / n)


def compute_delong(truth01, scores) -> tuple:
    """(AUC, DeLong variance) of one score vector; NaN variance with < 2 of a class."""
    positives, negatives = _split_by_class(truth01, scores)
    if positives.size == 0 or negatives.size == 0:
        return float("nan"), float("nan")
    auc, positive_placements, negative_placements = _structural_components(
        positives[None], negatives[None])
    variance = _delong_covariance(positive_placements, negative_placements)[0, 0]
    return float(auc[0]), float(variance)


def delong_interval(truth01, scores, confidence: float = 0.95) -> tuple:
    """(AUC, low, high): normal interval from the DeLong variance, clipped to [0, 1]."""
    auc, variance = compute_delong(truth01, scores)
    if math.isnan(variance):
        return auc, float("nan"), float("nan")
    half_width = scipy_stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(variance)
    return auc, max(0.0, auc - half_width), min(1.0, auc + half_width)


def delong_test(truth01, scores_a, scores_b) -> dict:
    """Two-sided DeLong test of AUC(a) = AUC(b) for two models scored on the same images."""
    positives, negatives = _split_by_class(truth01, np.stack([scores_a, scores_b]))
    if positives.shape[-1] == 0 or negatives.shape[-1] == 0:
        raise ValueError("the DeLong test needs both positive and negative images")
    auc, positive_placements, negative_placements = _structural_components(positives,
                                                                           negatives)
    covariance = _delong_covariance(positive_placements, negative_placements)
    difference = float(auc[0] - auc[1])
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    # Identical rankings give a variance of 0 up to rounding: no evidence either way.
    if not variance > 1e-12 * (covariance[0, 0] + covariance[1, 1]):
        z, p_value = float("nan"), 1.0 if difference == 0 else float("nan")
    else:
        z = difference / math.sqrt(variance)
        p_value = float(2 * scipy_stats.norm.sf(abs(z)))
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": difference,
            "z": z, "p_value": p_value}


class _Groups:
    """Images grouped by lesion: which group each image is in and each group's images."""

    def __init__(self, groups, num_images: int):
        labels = np.arange(num_images) if groups is None else np.asarray(groups)
        if labels.shape != (num_images,):
            raise ValueError(f"groups has shape {labels.shape}, expected ({num_images},)")
        _, self.of_image = np.unique(labels, return_inverse=True)
        self.of_image = self.of_image.reshape(-1)
        self.count = int(self.of_image.max()) + 1 if num_images else 0
        self.members = np.argsort(self.of_image, kind="stable")  # images, group by group
        self.sizes = np.bincount(self.of_image, minlength=self.count)
        self.starts = np.cumsum(self.sizes) - self.sizes

    def images(self, drawn) -> np.ndarray:
        """Image indices of the drawn groups (all images of each, repeats kept)."""
        sizes = self.sizes[drawn]
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return self.members[np.repeat(self.starts[drawn], sizes) + within]

    def weights(self, drawn) -> np.ndarray:
        """Multiplicity of every image [r, n] in r resamples of drawn groups [r, groups]."""
        offsets = np.arange(drawn.shape[0])[:, None] * self.count
        counts = np.bincount((drawn + offsets).ravel(), minlength=drawn.size)
        return counts.reshape(drawn.shape)[:, self.of_image].astype(np.float64)


def _draw_blocks(num_groups: int, n_resamples: int, seed: int):
    """Yield blocks [<= BLOCK, num_groups] of group indices drawn with replacement."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, BLOCK):
        yield rng.integers(0, num_groups, size=(min(BLOCK, n_resamples - start), num_groups))


def percentile_interval(replicates, confidence: float = 0.95) -> tuple:
    """Percentile interval of bootstrap replicates, ignoring NaN; NaN if over half are NaN."""
    replicates = np.asarray(replicates, dtype=np.float64)
    defined = replicates[~np.isnan(replicates)]
    if defined.size == 0 or 2 * defined.size < replicates.size:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.quantile(defined, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_many(statistics: dict[str, Callable], groups, n_resamples: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> dict:
    """Cluster-bootstrap percentile intervals {name: (low, high)} sharing one set of resamples.

    Each ``statistic(indices) -> float`` is evaluated on the image indices of a resample:
    groups drawn with replacement, all images of each drawn group. ``groups`` holds one
    label per image (lesion ids); deterministic for ``seed``.
    """
    grouping = _Groups(groups, len(groups))
    replicates = {name: [] for name in statistics}
    for block in _draw_blocks(grouping.count, n_resamples, seed):
        for drawn in block:
            indices = grouping.images(drawn)
            for name, statistic in statistics.items():
                replicates[name].append(float(statistic(indices)))
    return {name: percentile_interval(values, confidence) for name, values in replicates.items()}


def bootstrap_interval(statistic: Callable, groups, n_resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> tuple:
    """Cluster-bootstrap percentile interval (low, high) of one ``statistic(indices)``."""
    return bootstrap_many({"statistic": statistic}, groups, n_resamples, confidence,
                          seed)["statistic"]


def _entry(value, low, high, method: str) -> dict:
    return {"value": float(value), "low": float(low), "high": float(high), "method": method}


def _proportion(successes, trials, confidence: float) -> dict:
    value = metrics.ratio(successes, trials)
    return _entry(value, *clopper_pearson(successes, trials, confidence), "clopper-pearson")


def _resampled_statistics(weights, truth, predicted, probabilities, num_classes) -> dict:
    """Bootstrap statistics [r] / [r, k] of resamples given as image multiplicities [r, n]."""
    confusions = metrics.compute_weighted_confusions(weights, truth, predicted, num_classes)
    rates = metrics.compute_rates(metrics.compute_class_counts(confusions))
    resampled = {"balanced_accuracy": metrics.compute_balanced_accuracy(confusions),
                 "geometric_mean": rates["geometric_mean"], "f1": rates["f1"]}
    if probabilities is not None:
        aucs = np.stack([metrics.compute_weighted_aucs(weights, truth == column,
                                                       probabilities[:, column])
                         for column in range(num_classes)], axis=-1)
        resampled["macro_auc"] = metrics.mean_defined(aucs)
    return resampled


def _bootstrap_evaluation(truth, predicted, probabilities, grouping, num_classes,
                          n_resamples, confidence, seed) -> dict:
    """Percentile intervals of balanced accuracy, macro AUC and per-class G-mean and F1."""
    blocks = [_resampled_statistics(grouping.weights(drawn), truth, predicted, probabilities,
                                    num_classes)
              for drawn in _draw_blocks(grouping.count, n_resamples, seed)]
    intervals = {}
    for name in blocks[0]:
        replicates = np.concatenate([block[name] for block in blocks])  # [r] or [r, k]
        columns = replicates.reshape(n_resamples, -1).T
        intervals[name] = [percentile_interval(column, confidence) for column in columns]
    return intervals


def compute_evaluation(truth, probabilities=None, class_names: Sequence[str] = CLASSES, *,
                       predicted=None, groups=None, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> dict:
    """The ``metrics.json`` report: ``compute_multiclass_metrics`` with intervals.

    Every rate becomes ``{"value", "low", "high", "method"}``: proportions (accuracy, error
    rate, sensitivity, specificity, PPV, NPV) Clopper-Pearson; per-class AUC DeLong; balanced
    accuracy, macro AUC, G-mean and F1 a percentile bootstrap resampling ``groups`` (lesion
    ids; "bootstrap-lesions") or, without groups, images ("bootstrap-images").
    """
    point = metrics.compute_multiclass_metrics(truth, probabilities, class_names,
                                               predicted=predicted)
    truth, predicted, probabilities = metrics.validate_inputs(truth, probabilities,
                                                              class_names, predicted)
    if truth.size == 0:
        raise ValueError("no images to evaluate")
    grouping = _Groups(groups, truth.size)
    method = "bootstrap-images" if groups is None else "bootstrap-lesions"
    intervals = _bootstrap_evaluation(truth, predicted, probabilities, grouping,
                                      len(class_names), n_resamples, confidence, seed)
    correct = sum(entry["tp"] for entry in point["per_class"].values())
    report = {key: point[key] for key in ("num_images", "class_names", "confusion_matrix")}
    report.update({
        "num_groups": grouping.count, "confidence": confidence, "n_resamples": n_resamples,
        "accuracy": _proportion(correct, truth.size, confidence),
        "error_rate": _proportion(truth.size - correct, truth.size, confidence),
        "balanced_accuracy": _entry(point["balanced_accuracy"],
                                    *intervals["balanced_accuracy"][0], method),
    })
    if probabilities is not None:
        report["macro_auc"] = _entry(point["macro_auc"], *intervals["macro_auc"][0], method)
    report["per_class"] = {
        name: _class_entry(point["per_class"][name], index, truth, probabilities, intervals,
                           method, confidence)
        for index, name in enumerate(class_names)}
    return report


def _class_entry(point: dict, index: int, truth, probabilities, intervals, method: str,
                 confidence: float) -> dict:
    """One class of ``compute_evaluation``: counts, then every rate with its interval."""
    entry = {key: point[key] for key in ("support", *metrics.COUNTS)}
    tp, fn, fp, tn = (point[key] for key in metrics.COUNTS)
    proportions = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp),
                   "ppv": (tp, tp + fp), "npv": (tn, tn + fn)}
    for name in metrics.RATES:
        if name in proportions:
            entry[name] = _proportion(*proportions[name], confidence)
        else:  # geometric_mean and f1 are no proportions: bootstrap
            entry[name] = _entry(point[name], *intervals[name][index], method)
    if probabilities is not None:
        auc, low, high = delong_interval(truth == index, probabilities[:, index], confidence)
        entry["auc"] = _entry(auc, low, high, "delong")
    return entry


def compute_binary_evaluation(truth01, scores, *, groups=None, threshold: float = 0.5,
                              confidence: float = 0.95) -> dict:
    """One binary table row: proportions with Clopper-Pearson intervals, AUC with DeLong.

    These intervals treat images as independent; ``groups`` (lesion ids) is only counted,
    as ``num_groups``, so a reader can see how many independent lesions stand behind them.
    """
    point = metrics.compute_binary_metrics(truth01, scores, threshold)
    tp, fn, fp, tn = (point[key] for key in metrics.COUNTS)
    n = point["num_images"]
    row = {"n": n, "num_groups": _Groups(groups, n).count, "tp": tp, "fn": fn, "fp": fp,
           "tn": tn}
    for name, successes, trials in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                                    ("ppv", tp, tp + fp), ("npv", tn, tn + fn),
                                    ("accuracy", tp + tn, n)):
        row[name] = _proportion(successes, trials, confidence)
    row["auc"] = _entry(*delong_interval(truth01, scores, confidence), "delong")
    return row


def mann_whitney(a, b) -> dict:
    """Two-sided Mann-Whitney U test of two independent samples; ``u`` is U of ``a``."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 1 or b.size < 1:
        raise ValueError(f"Mann-Whitney needs at least one value per sample, got "
                         f"{a.size} and {b.size}")
    result = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="auto")
    return {"u": float(result.statistic), "p_value": float(result.pvalue),
            "n_a": int(a.size), "n_b": int(b.size)}


def mcnemar(correct_a, correct_b) -> dict:
    """Exact two-sided McNemar test: a binomial(1/2) test on the discordant images."""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"correct_a has shape {correct_a.shape}, correct_b {correct_b.shape}")
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    discordant = a_only + b_only
    # The binomial(1/2) is symmetric: twice the smaller tail is the two-sided p-value.
    tail = scipy_stats.binom.cdf(min(a_only, b_only), discordant, 0.5) if discordant else 0.5
    return {"a_only": a_only, "b_only": b_only, "p_value": float(min(1.0, 2 * tail))}


def to_json_ready(obj):
    """Numpy scalars / arrays to Python, NaN and infinities to None, recursively."""
    if isinstance(obj, dict):
        return {key: to_json_ready(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_json_ready(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_json_ready(value) for value in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
