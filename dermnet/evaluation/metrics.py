"""Point estimates of classification quality: confusion matrices, rates and AUCs.

Owns the definitions every report uses. Multi-class metrics follow ISIC 2018 Task 3: the
predicted class is the argmax of the probabilities, per-class rates are one-vs-rest, and
balanced accuracy is the mean recall over the classes present in the ground truth. AUCs are
rank-based (Mann-Whitney U / (n1 n0), ties count one half). A ratio with a zero denominator
is NaN, never an error or a warning. The ``*_weighted`` functions evaluate the same metrics
on many resamples at once, each given as a multiplicity per image (the bootstrap in
``dermnet.evaluation.stats`` uses them).

Labels are integer class indices; ``class_names`` are the dx codes in ``CLASSES`` order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from dermnet.data.vocabulary import CLASSES

RATES = ("sensitivity", "specificity", "geometric_mean", "ppv", "npv", "f1")
COUNTS = ("tp", "fn", "fp", "tn")


def _labels(values, num_classes: int, name: str) -> np.ndarray:
    """Integer labels in 0..num_classes-1 as int64 [n]; ValueError naming a bad value."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    integral = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.number) and np.all(array == np.round(array)))
    if array.size and not integral:
        raise ValueError(f"{name} must hold integer class indices, got {array[:3]}")
    bad = array[(array < 0) | (array >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} label {bad[0]} is outside 0..{num_classes - 1}")
    return array.astype(np.int64)


def binary_labels(values, name: str = "truth") -> np.ndarray:
    """0/1 labels as int64 [n] (booleans accepted); ValueError naming a bad value."""
    array = np.asarray(values)
    if array.dtype == bool:
        array = array.astype(np.int64)
    return _labels(array, 2, name)


def ratio(numerator, denominator) -> np.ndarray:
    """Elementwise numerator / denominator, NaN where the denominator is 0 (no warnings)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    shape = np.broadcast_shapes(numerator.shape, denominator.shape)
    out = np.full(shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


def mean_defined(values, axis: int = -1) -> np.ndarray:
    """Mean over ``axis`` of the non-NaN entries; NaN where there are none (no warnings)."""
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    return ratio(np.where(defined, values, 0.0).sum(axis=axis), defined.sum(axis=axis))


def compute_confusion_matrix(truth, predicted, num_classes: int) -> np.ndarray:
    """Confusion matrix int64 [k, k]: rows are true classes, columns predicted classes."""
    truth = _labels(truth, num_classes, "truth")
    predicted = _labels(predicted, num_classes, "predicted")
    if truth.shape != predicted.shape:
        raise ValueError(f"truth has {truth.size} labels but predicted has {predicted.size}")
    cells = np.bincount(truth * num_classes + predicted, minlength=num_classes**2)
    return cells.reshape(num_classes, num_classes).astype(np.int64)


def compute_class_counts(confusion) -> dict:
    """One-vs-rest tp, fn, fp, tn per class from a confusion matrix [..., k, k].

    Works on a stack of (possibly weighted) matrices too: the leading axes are kept.
    """
    confusion = np.asarray(confusion)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    fn = confusion.sum(axis=-1) - tp  # true class c, predicted something else
    fp = confusion.sum(axis=-2) - tp  # predicted c, truly something else
    tn = confusion.sum(axis=(-2, -1))[..., None] - tp - fn - fp
    return {"tp": tp, "fn": fn, "fp": fp, "tn": tn}


def compute_rates(counts: dict) -> dict:
    """Sensitivity, specificity, their geometric mean, PPV, NPV and F1 from class counts."""
    tp, fn, fp, tn = (np.asarray(counts[name], dtype=np.float64) for name in COUNTS)
    sensitivity = ratio(tp, tp + fn)
    specificity = ratio(tn, tn + fp)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "geometric_mean": np.sqrt(sensitivity * specificity),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def compute_balanced_accuracy(confusion) -> np.ndarray:
    """Mean recall over the classes present in the truth (rows with support), per matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    recall = ratio(np.diagonal(confusion, axis1=-2, axis2=-1), confusion.sum(axis=-1))
    return mean_defined(recall)  # absent classes have NaN recall and are left out


def compute_auc(truth01, scores) -> float:
    """ROC AUC = Mann-Whitney U / (n1 n0), ties counted one half; NaN without both classes."""
    truth01 = binary_labels(truth01)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != truth01.shape:
        raise ValueError(f"truth has {truth01.size} labels but scores has {scores.size}")
    positives = int(truth01.sum())
    negatives = truth01.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = rankdata(scores)[truth01 == 1].sum()  # midranks handle ties
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def validate_inputs(truth, probabilities, class_names: Sequence[str], predicted):
    """Check a multi-class call; returns (truth [n], predicted [n], probabilities [n, k] or None).

    Exactly one of ``probabilities`` and ``predicted`` is given; ``predicted`` defaults to
    the argmax of ``probabilities``.
    """
    if (probabilities is None) == (predicted is None):
        raise ValueError("give exactly one of probabilities and predicted")
    num_classes = len(class_names)
    truth = _labels(truth, num_classes, "truth")
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (truth.size, num_classes):
            raise ValueError(f"probabilities have shape {probabilities.shape}, expected "
                             f"({truth.size}, {num_classes}) for {num_classes} class names")
        predicted = probabilities.argmax(axis=1)
    predicted = _labels(predicted, num_classes, "predicted")
    if predicted.size != truth.size:
        raise ValueError(f"truth has {truth.size} labels but predicted has {predicted.size}")
    return truth, predicted, probabilities


def compute_class_aucs(truth, probabilities) -> np.ndarray:
    """One-vs-rest AUC of every class column [k]; NaN for a class absent from truth (or alone)."""
    return np.array([compute_auc(truth == column, probabilities[:, column])
                     for column in range(probabilities.shape[1])])


def compute_multiclass_metrics(truth, probabilities=None, class_names: Sequence[str] = CLASSES,
                               *, predicted=None) -> dict:
    """ISIC 2018 Task 3 metrics of one set of predictions, as a JSON-ready dict.

    ``balanced_accuracy`` is the mean sensitivity (recall) of the argmax prediction over the
    classes PRESENT in ``truth`` (as sklearn's ``balanced_accuracy_score``); ``macro_auc`` the
    mean of the defined per-class AUCs. AUC entries appear only when probabilities are given.
    """
    truth, predicted, probabilities = validate_inputs(truth, probabilities, class_names,
                                                      predicted)
    confusion = compute_confusion_matrix(truth, predicted, len(class_names))
    counts = compute_class_counts(confusion)
    rates = compute_rates(counts)
    correct = int(counts["tp"].sum())
    report = {
        "num_images": int(truth.size),
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
        "accuracy": float(ratio(correct, truth.size)),
        "error_rate": float(ratio(truth.size - correct, truth.size)),
        "balanced_accuracy": float(compute_balanced_accuracy(confusion)),
    }
    aucs = None if probabilities is None else compute_class_aucs(truth, probabilities)
    if aucs is not None:
        report["macro_auc"] = float(mean_defined(aucs))
    report["per_class"] = {}
    for index, name in enumerate(class_names):
        entry = {"support": int(confusion[index].sum())}
        entry.update({key: int(counts[key][index]) for key in COUNTS})
        entry.update({key: float(rates[key][index]) for key in RATES})
        if aucs is not None:
            entry["auc"] = float(aucs[index])
        report["per_class"][name] = entry
    return report


def compute_binary_metrics(truth, scores, threshold: float = 0.5) -> dict:
    """Binary metrics, positive = 1, predicted positive when ``score >= threshold``."""
    truth = binary_labels(truth)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != truth.shape:
        raise ValueError(f"truth has {truth.size} labels but scores has {scores.size}")
    confusion = compute_confusion_matrix(truth, (scores >= threshold).astype(np.int64), 2)
    tp, fn, fp, tn = (int(confusion[1, 1]), int(confusion[1, 0]),
                      int(confusion[0, 1]), int(confusion[0, 0]))
    rates = compute_rates({"tp": tp, "fn": fn, "fp": fp, "tn": tn})
    return {
        "num_images": int(truth.size), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
        "sensitivity": float(rates["sensitivity"]),
        "specificity": float(rates["specificity"]),
        "ppv": float(rates["ppv"]),
        "npv": float(rates["npv"]),
        "accuracy": float(ratio(tp + tn, truth.size)),
        "auc": compute_auc(truth, scores),
    }


def compute_pair_scores(truth, probabilities, class_names: Sequence[str], positive: str,
                        negative: str):
    """Restrict to images of two classes; returns (mask [n], truth01 [m], scores [m]).

    ``scores`` is p(positive) / (p(positive) + p(negative)): the model's choice between the
    two (e.g. mel vs nv), 0.5 when it gives both zero probability.
    """
    names = list(class_names)
    for name in (positive, negative):
        if name not in names:
            raise ValueError(f"unknown class {name!r}; expected one of {names}")
    positive_index, negative_index = names.index(positive), names.index(negative)
    truth = _labels(truth, len(names), "truth")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    mask = (truth == positive_index) | (truth == negative_index)
    positive_probability = probabilities[mask, positive_index]
    total = positive_probability + probabilities[mask, negative_index]
    scores = ratio(positive_probability, total)
    scores[total == 0] = 0.5
    return mask, (truth[mask] == positive_index).astype(np.int64), scores


def compute_weighted_confusions(weights, truth, predicted, num_classes: int) -> np.ndarray:
    """Confusion matrices [r, k, k] of r resamples given as image multiplicities [r, n]."""
    cells = truth * num_classes + predicted
    one_hot = np.zeros((cells.size, num_classes**2))
    one_hot[np.arange(cells.size), cells] = 1.0
    return (np.asarray(weights, dtype=np.float64) @ one_hot).reshape(-1, num_classes,
                                                                      num_classes)


def _sum_ties(values, starts) -> np.ndarray:
    """Sum columns [r, n] within runs of tied scores starting at ``starts``."""
    if starts.size == values.shape[1]:  # no ties (the usual case): nothing to sum
        return values
    return np.add.reduceat(values, starts, axis=1)


def compute_weighted_aucs(weights, truth01, scores) -> np.ndarray:
    """AUC [r] of r resamples given as image multiplicities [r, n]; NaN without both classes.

    Sorting once and summing weights per distinct score gives every resample's U statistic
    with array operations, instead of ranking each resample again.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = np.asarray(scores, dtype=np.float64)[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0])  # one per distinct score
    weights = np.asarray(weights, dtype=np.float64)[:, order]
    is_positive = np.asarray(truth01)[order] == 1
    positive = _sum_ties(weights * is_positive, starts)  # [r, distinct scores]
    negative = _sum_ties(weights * ~is_positive, starts)
    below = np.cumsum(negative, axis=1) - negative  # negative weight strictly below
    wins = (positive * (below + 0.5 * negative)).sum(axis=1)
    return ratio(wins, positive.sum(axis=1) * negative.sum(axis=1))
