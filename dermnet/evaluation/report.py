"""What a person reads after ``evaluate.py RUN_DIR``: the per-class table (the papers'
supplementary tables: TPR, TNR and geometric mean per class), a short summary, the ISIC
prediction file, the confusion-matrix and ROC plots, and where the model looks (the share of
Grad-CAM energy inside the lesion, from ``lesion_focus``). Inputs are the ``metrics.json``
dictionary of ``stats.compute_evaluation`` and plain arrays; matplotlib draws off-screen.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.vocabulary import CLASS_NAMES, CLASSES, ISIC_COLUMNS
from dermnet.evaluation.metrics import compute_auc

# Columns of the per-class table, in the papers' order, then the rest of metrics.json.
CLASS_COLUMNS = ("sensitivity", "specificity", "geometric_mean", "ppv", "npv", "f1", "auc")
HEADINGS = {"sensitivity": "TPR", "specificity": "TNR", "geometric_mean": "G-mean",
            "ppv": "PPV", "npv": "NPV", "f1": "F1", "auc": "AUC"}


def format_interval(entry: dict | None, digits: int = 2) -> str:
    """``0.81 (0.74-0.87)``; ``n/a`` when the value is undefined (None or NaN)."""
    if entry is None or _missing(entry.get("value")):
        return "n/a"
    text = f"{entry['value']:.{digits}f}"
    if _missing(entry.get("low")) or _missing(entry.get("high")):
        return text
    return f"{text} ({entry['low']:.{digits}f}-{entry['high']:.{digits}f})"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def class_table(metrics: dict) -> pd.DataFrame:
    """One row per class: support, then each rate with its interval (strings)."""
    rows = []
    for name, entry in metrics["per_class"].items():
        row = {"class": name, "support": entry["support"]}
        row.update({HEADINGS[key]: format_interval(entry.get(key))
                    for key in CLASS_COLUMNS if key in entry})
        rows.append(row)
    return pd.DataFrame(rows)


def class_table_numbers(metrics: dict) -> pd.DataFrame:
    """The per-class table as numbers (value, low, high per rate), for CSV."""
    rows = []
    for name, entry in metrics["per_class"].items():
        row = {"class": name, "support": entry["support"],
               **{key: entry[key] for key in ("tp", "fn", "fp", "tn")}}
        for key in CLASS_COLUMNS:
            if key in entry:
                row.update({f"{key}{suffix}": entry[key][part] for suffix, part in
                            (("", "value"), ("_low", "low"), ("_high", "high"))})
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(metrics: dict, title: str) -> str:
    """Markdown: the global figures, then the per-class table."""
    lines = [f"## {title}", "",
             f"{metrics['num_images']} images of {metrics['num_groups']} lesions; "
             f"{round(metrics['confidence'] * 100)}% intervals "
             "(Clopper-Pearson, DeLong, lesion bootstrap).", ""]
    for key, label in (("accuracy", "accuracy"), ("error_rate", "error rate"),
                       ("balanced_accuracy", "balanced accuracy"), ("macro_auc", "macro AUC")):
        if key in metrics:
            lines.append(f"- {label}: {format_interval(metrics[key], 3)}")
    lines += ["", to_markdown(class_table(metrics))]
    if "overall" in metrics.get("lesion_focus", {}):  # absent, or skipped without masks
        lines += ["", format_lesion_focus(metrics["lesion_focus"])]
    return "\n".join(lines)


def format_lesion_focus(focus: dict) -> str:
    """Markdown: the share of Grad-CAM energy inside the lesion, for all images and each
    true class, against chance (the lesion's area fraction), said plainly either way."""
    lines = ["### Where the model looks: Grad-CAM energy inside the lesion", "",
             f"Grad-CAM of the {focus['explained_class']} class against the lesion masks, by "
             "true class; chance: the lesion's share of the image (what a uniform heatmap "
             f"would give); {round(focus['confidence'] * 100)}% lesion-bootstrap intervals.",
             ""]
    for name, entry in (("all images", focus["overall"]), *focus["per_class"].items()):
        if entry["n"]:
            lines.append(f"- {format_focus_line(name, entry)}")
    return "\n".join(lines + _focus_notes(focus))


def format_focus_line(name: str, entry: dict) -> str:
    """``mel: 38% (31-45%) of Grad-CAM energy inside the lesion (chance 31%, ...)``."""
    share, chance = entry["energy_inside"], entry["lesion_area_fraction"]
    interval = "" if _missing(share["low"]) else f" ({share['low']:.0%}-{share['high']:.0%})"
    ratio = "" if _missing(entry["ratio_to_chance"]) else \
        f", {entry['ratio_to_chance']:.1f}x chance per image"
    return (f"{name}: {share['value']:.0%}{interval} of Grad-CAM energy inside the lesion "
            f"(chance {chance:.0%}{ratio}): {_focus_verdict(share, chance)}; more than half "
            f"inside for {entry['mostly_inside']:.0%} of {_images(entry['n'])}")


def _focus_verdict(share: dict, chance: float) -> str:
    """Inside or OUTSIDE by the mean share; against chance by the interval, where there is
    one (a point estimate a hair above chance is no evidence of looking at the lesion)."""
    where = "mostly inside the lesion" if share["value"] > 0.5 else "mostly OUTSIDE the lesion"
    low, high = (share["value"], share["value"]) if _missing(share["low"]) else \
        (share["low"], share["high"])
    if low > chance:
        return f"{where}, above chance"
    if high < chance:
        return f"{where}, BELOW chance"
    return f"{where}, no better than chance"


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def _focus_notes(focus: dict) -> list[str]:
    notes = []
    if focus["num_images"] < focus.get("split_images", focus["num_images"]):
        notes.append(f"a sample of {focus['num_images']} of the split's "
                     f"{focus['split_images']} images (--lesion-focus-limit)")
    if focus["skipped_without_mask"]:
        notes.append(f"{_images(focus['skipped_without_mask'])} skipped: mask missing or "
                     "unreadable")
    if focus["zero_heatmap"]:
        notes.append(f"{_images(focus['zero_heatmap'])} left out: all-zero heatmap (nothing "
                     "in the image speaks for the predicted class)")
    return ["", "; ".join(notes) + "."] if notes else []


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(value) for value in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def prediction_frame(image_ids, probabilities: np.ndarray) -> pd.DataFrame:
    """The ISIC 2018 Task 3 submission format: ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``."""
    frame = pd.DataFrame(probabilities, columns=list(ISIC_COLUMNS))
    frame.insert(0, "image", list(image_ids))
    return frame


def per_image_frame(rows: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """Per image: ids, truth, prediction, whether it is right, and the probabilities."""
    predicted = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        "image": rows["image_id"].to_numpy(), "lesion_id": rows["lesion_id"].to_numpy(),
        "truth": [CLASSES[index] for index in rows["label"]],
        "predicted": [CLASSES[index] for index in predicted],
        "correct": predicted == rows["label"].to_numpy()})
    for index, name in enumerate(CLASSES):
        frame[name] = probabilities[:, index]
    return frame


def plot_confusion_matrix(metrics: dict, path: Path, title: str) -> None:
    """Counts, with each row's share of its true class as the colour."""
    plt = _pyplot()
    confusion = np.asarray(metrics["confusion_matrix"], dtype=float)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    names = metrics["class_names"]
    figure, axes = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion):
        colour = "white" if shares[row, column] > 0.6 else "black"
        axes.text(column, row, f"{int(count)}", ha="center", va="center", color=colour)
    axes.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names,
             yticklabels=names, xlabel="predicted", ylabel="true")
    axes.set_title(_wrap(title), fontsize="medium")
    figure.colorbar(image, ax=axes, label="share of the true class")
    _save(figure, path)


def plot_roc(truth: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    """One-vs-rest ROC curve per class, AUC in the legend."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    for index, name in enumerate(CLASSES[:probabilities.shape[1]]):
        positives = truth == index
        if positives.all() or not positives.any():
            continue  # a curve needs both positives and negatives
        false_rate, true_rate = roc_curve(positives, probabilities[:, index])
        auc = compute_auc(positives, probabilities[:, index])
        axes.plot(false_rate, true_rate, label=f"{name} ({CLASS_NAMES[name]}) {auc:.2f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    axes.set_title(_wrap(title), fontsize="medium")
    axes.legend(loc="lower right", fontsize="small", title="class, AUC")
    _save(figure, path)


def plot_image_panels(panels: list[tuple[np.ndarray, str]], path: Path, title: str,
                      columns: int = 4) -> None:
    """RGB uint8 images in a grid, each under its caption (lesion_focus.png)."""
    plt = _pyplot()
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.8),
                                dpi=120, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (image, caption) in zip(axes.ravel(), panels):
        axis.imshow(image)
        axis.set_title(caption, fontsize="small")
    figure.suptitle(_wrap(title), fontsize="medium")
    _save(figure, path)


def roc_curve(positives: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    # One point per distinct score: ties move both rates at once.
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    true_positives = np.cumsum(positives)[last]
    false_positives = (last + 1) - true_positives
    return (np.r_[0, false_positives / max(1, (~positives).sum())],
            np.r_[0, true_positives / max(1, positives.sum())])


def _wrap(title: str) -> str:
    """Run titles are long: break after the model description."""
    return title.replace(": ", ":\n", 1)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    _pyplot().close(figure)
