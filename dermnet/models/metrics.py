"""Streaming Keras metrics of dermnet's training runs.

Multi-class training with sparse integer labels: `BalancedAccuracy` (ISIC 2018 Task 3
headline metric) and `MacroAUC` (one-vs-rest ROC AUC averaged over classes). Both take int
labels [B] (or [B, 1]) and probabilities [B, K], accumulate over an epoch, and reset with
the other compiled metrics, so `model.fit` logs them as `balanced_accuracy` /
`val_balanced_accuracy` and `macro_auc` / `val_macro_auc`.

Keras-only (`keras.ops`), so they run under every Keras 3 backend. Their state lives in
metric variables with SUM aggregation: under `tf.distribute` each replica accumulates its
share and reading the result sums the replicas, which gives the same value as one device.

The second study's multi-task models: `MaskedBinaryAccuracy` and `MaskedAUC` score one
task's column over the images that take part in it (targets -1 elsewhere);
`make_task_metrics` gives both for every task.
"""

import keras
from keras import ops


def _flat_labels(y_true):
    """Sparse labels [B] or [B, 1], any dtype -> int32 [B]."""
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


@keras.saving.register_keras_serializable(package="dermnet")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean per-class recall of the argmax prediction (ISIC 2018 balanced accuracy).

    Accumulates a confusion matrix (rows: true class, columns: predicted class). The result
    averages recall over the classes PRESENT in the labels seen since the last reset: a class
    with no true samples has no recall and is left out (sklearn's
    `balanced_accuracy_score` does the same, with a warning). Before any update it is 0.
    Sample weights, such as class weights turned into sample weights by `fit`, weight the
    counts; per-class weights leave every recall unchanged.
    """

    def __init__(self, num_classes, name="balanced_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes
        # float counts: sample weights may be fractional; float32 is exact to 2**24 samples.
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes),
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        true_one_hot = ops.one_hot(_flat_labels(y_true), self.num_classes)  # [B, K]
        predicted = ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)), axis=-1)
        predicted_one_hot = ops.one_hot(predicted, self.num_classes)  # [B, K]
        if sample_weight is not None:
            weight = ops.cast(ops.reshape(sample_weight, (-1, 1)), "float32")
            true_one_hot = true_one_hot * weight
        # [K, B] @ [B, K] -> [K, K]: entry (t, p) counts samples of class t predicted as p.
        counts = ops.matmul(ops.transpose(true_one_hot), predicted_one_hot)
        self.confusion.assign_add(ops.cast(counts, "float32"))

    def result(self):
        support = ops.sum(self.confusion, axis=1)  # true samples per class
        recall = ops.divide_no_nan(ops.diagonal(self.confusion), support)
        present = ops.cast(support > 0, "float32")
        result = ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))
        return ops.cast(result, self.dtype)

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), "float32"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="dermnet")
class MacroAUC(keras.metrics.AUC):
    """One-vs-rest ROC AUC per class, averaged over classes, for sparse integer labels.

    A `keras.metrics.AUC(multi_label=True)` that one-hots the labels first. The curve is
    sampled at `num_thresholds` evenly spaced thresholds (trapezoidal sum), so it differs
    from the exact AUC (sklearn `roc_auc_score(..., multi_class="ovr", average="macro")`) by
    the discretisation: about 1e-3 at the default 1000 thresholds. Evenly spaced thresholds
    take Keras' bucketing path, so more thresholds cost memory, not time.

    Unlike the parent, the average leaves out classes whose one-vs-rest AUC is undefined
    (no positive or no negative sample seen since the last reset) instead of counting them
    as 0; sklearn raises an error in that case.
    """

    def __init__(self, num_classes, num_thresholds=1000, name="macro_auc", dtype=None):
        super().__init__(
            num_thresholds=num_thresholds,
            curve="ROC",
            summation_method="interpolation",
            multi_label=True,
            num_labels=num_classes,
            name=name,
            dtype=dtype,
        )
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.one_hot(_flat_labels(y_true), self.num_classes)  # [B, K]
        y_pred = ops.reshape(y_pred, (-1, self.num_classes))
        if sample_weight is not None:
            # One weight per sample, broadcast over the K one-vs-rest problems.
            sample_weight = ops.reshape(sample_weight, (-1, 1))
        super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        # Variables are [thresholds, K]; thresholds ascend, so the ROC points run from
        # (1, 1) at the lowest threshold down to (0, 0).
        positives = self.true_positives + self.false_negatives
        negatives = self.false_positives + self.true_negatives
        recall = ops.divide_no_nan(self.true_positives, positives)
        fp_rate = ops.divide_no_nan(self.false_positives, negatives)
        widths = fp_rate[:-1] - fp_rate[1:]
        heights = (recall[:-1] + recall[1:]) / 2.0
        auc_per_class = ops.sum(widths * heights, axis=0)  # [K]
        defined = ops.cast((positives[0] > 0) & (negatives[0] > 0), auc_per_class.dtype)
        return ops.divide_no_nan(ops.sum(auc_per_class * defined), ops.sum(defined))

    def get_config(self):
        return {
            **keras.metrics.Metric.get_config(self),
            "num_classes": self.num_classes,
            "num_thresholds": self.num_thresholds,
        }


def _select_task(task_index: int, y_true, y_pred, sample_weight):
    """Column ``task_index`` of labels and scores, weighted by its validity mask."""
    labels, scores = y_true[:, task_index], y_pred[:, task_index]  # [B] each
    valid = ops.cast(ops.greater_equal(labels, 0), "float32")
    if sample_weight is not None:
        valid = valid * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.maximum(labels, 0), scores, valid


class _OneTask:
    """Mixin for a Keras binary metric: score column ``task_index`` over the images that
    take part in that task (target >= 0), each weighted by its sample weight."""

    def __init__(self, task_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.task_index = task_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, scores, weight = _select_task(self.task_index, y_true, y_pred, sample_weight)
        return super().update_state(labels, scores, sample_weight=weight)

    def get_config(self):
        return super().get_config() | {"task_index": self.task_index}


@keras.saving.register_keras_serializable(package="dermnet")
class MaskedBinaryAccuracy(_OneTask, keras.metrics.BinaryAccuracy):
    """Accuracy of one task over the images that take part in it."""


@keras.saving.register_keras_serializable(package="dermnet")
class MaskedAUC(_OneTask, keras.metrics.AUC):
    """ROC AUC of one task over the images that take part in it."""


def make_task_metrics(task_names) -> list[keras.metrics.Metric]:
    """Per-task AUC and accuracy, named ``<task>_auc`` and ``<task>_accuracy``."""
    return [metric for index, task in enumerate(task_names)
            for metric in (MaskedAUC(index, name=f"{task}_auc"),
                           MaskedBinaryAccuracy(index, name=f"{task}_accuracy"))]
