"""``evaluate_external(run_dir, data_dir)``: a trained HAM10000 run scored on ANOTHER image bank.

Owns scoring a finished run on every image of a set in the HAM10000 layout whose diagnoses
are a subset of the seven (read by ``dermnet.data.external``): loading the run without its
training data, predicting through the run's own evaluation pipeline (the same decoding,
resize policy, clinical encoding and test-time augmentation as ``evaluate.py RUN_DIR``), the
figures of a set that lacks some classes, and the output files.

A set without some classes is scored two ways, because both questions matter:

    present classes   argmax over the classes in the set only (their probabilities
                      renormalised): how well the model separates what is there
    seven-way         the model's own argmax over all seven: what a user of the model would
                      see, including predictions of classes the set cannot contain

AUCs rank the seven-way probability of each present class against the rest of the set.
Writes metrics.json, predictions.csv (ISIC columns), per_image.csv and external.md into
``RUN_DIR/external-<set name>/`` (or ``out``), all computed first, then staged and renamed
into place (``run.staged_outputs``): a failed scoring leaves no partial files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from dermnet.config import Config, config_to_dict, load_config
from dermnet.data.clinical import ClinicalEncoder, load_clinical_encoder
from dermnet.data.external import (
    DatasetError,
    ExternalSet,
    describe_clinical,
    describe_sizes,
    format_error,
    load_external,
    missing_clinical_notice,
)
from dermnet.data.provenance import describe_images, upsampling_notice
from dermnet.data.vocabulary import CLASSES
from dermnet.evaluation import report
from dermnet.evaluation.predictions import (
    TTA_TRANSFORMS,
    Evaluation,
    EvaluationError,
    _require,
    check_tta,
    measure_runtime,
    predict_split,
)
from dermnet.evaluation.run import staged_outputs
from dermnet.evaluation.stats import clopper_pearson, compute_evaluation, to_json_ready
from dermnet.runs.ham10000 import Ham10000RunData
from dermnet.runs.tasks import get_task

SPLIT = "external"  # Evaluation.split of an external set
MEL = CLASSES.index("mel")
OUTPUTS = ("metrics.json", "predictions.csv", "per_image.csv", "external.md")


def default_output_dir(run_dir: str | Path, data_dir: str | Path) -> Path:
    return Path(run_dir) / f"external-{Path(data_dir).resolve().name}"


def evaluate_external(run_dir: str | Path, data_dir: str | Path, *, tta: int = 1,
                      out: str | Path | None = None, n_resamples: int = 2000, seed: int = 0,
                      runtime: bool = True, log=print) -> dict:
    """Predict every image of the set, compute the figures, write the files; returns
    metrics.json as a dict. Raises EvaluationError naming the file, line and field."""
    check_tta(tta)  # before the slow loading
    evaluation, external = load_external_evaluation(run_dir, data_dir, log)
    # Float64 written with 17 significant digits reads back bit-identical: re-scoring
    # predictions.csv gives exactly the figures of metrics.json.
    probabilities = predict_external(evaluation, tta, log).astype(np.float64)
    metrics = compute_external_metrics(evaluation.truth, probabilities,
                                       groups=evaluation.groups, n_resamples=n_resamples,
                                       seed=seed)
    metrics.update(_describe_run(evaluation, external, tta))
    if runtime:
        metrics["runtime_ms_per_image"] = measure_runtime(evaluation)
    metrics = to_json_ready(metrics)
    summary = format_external_summary(metrics)
    target = Path(out) if out else default_output_dir(evaluation.run_dir, data_dir)
    write_external_outputs(target, evaluation.frame, probabilities, metrics, summary)
    log(summary)
    log(f"\nwritten to {target}: {' '.join(OUTPUTS)}")
    return metrics


# --- the run and the set -------------------------------------------------------------------


def load_external_evaluation(run_dir: str | Path, data_dir: str | Path,
                             log=print) -> tuple[Evaluation, ExternalSet]:
    """The run's model, config and clinical encoding with the external set as its rows."""
    run_dir = Path(run_dir)
    config = _load_run_config(run_dir)
    external = read_external_set(data_dir)
    label = "SYNTHETIC " if external.synthetic else ""
    log(f"EXTERNAL image bank ({label}{external.root}): {len(external.frame)} images of "
        f"{', '.join(external.classes)}")
    provenance = describe_images(external, config.data.image_size, external.synthetic)
    if upsampling_notice(provenance):
        log(upsampling_notice(provenance))
    empty = external.frame.iloc[:0]
    data = Ham10000RunData(external.root, empty, empty, external.frame, None,
                           _load_encoder(run_dir, config), external.synthetic, provenance)
    model = _load_model(run_dir / "model.keras")
    return Evaluation(run_dir, config, data, model, SPLIT, external.frame), external


def _load_run_config(run_dir: Path) -> Config:
    _require(run_dir, "config.json")
    config = load_config(run_dir / "config.json")
    if get_task(config.data.task).multi_task:
        raise EvaluationError(f"{run_dir}: a {config.data.task} run; --external scores "
                              "HAM10000 classifiers (the seven dx classes) only")
    _require(run_dir, "model.keras")
    if config.data.clinical:
        _require(run_dir, "clinical_encoding.json")
    return config


def read_external_set(data_dir: str | Path) -> ExternalSet:
    """``load_external`` with its problems on one line, as an EvaluationError."""
    try:
        return load_external(data_dir)
    except DatasetError as error:
        raise EvaluationError(format_error(error)) from None


def _load_encoder(run_dir: Path, config: Config) -> ClinicalEncoder:
    if not config.data.clinical:
        return ClinicalEncoder(age_mean=0.0, age_std=1.0)  # never applied: no clinical input
    return load_clinical_encoder(run_dir / "clinical_encoding.json")


def _load_model(path: Path):
    from dermnet.models import ModelFileError, load_model

    try:
        return load_model(path)
    except ModelFileError as error:
        raise EvaluationError(str(error)) from None


def clinical_notices(config: Config, external: ExternalSet) -> list[str]:
    """What a clinical model will not see (columns the set lacks); nothing for image-only."""
    notice = missing_clinical_notice(external) if config.data.clinical else None
    return [f"notice: {notice}: this clinical model is given that for every image"] \
        if notice else []


def predict_external(evaluation: Evaluation, tta: int, log=print) -> np.ndarray:
    """``predict_split``; an image TensorFlow cannot decode is named, not a traceback."""
    try:
        return predict_split(evaluation, tta, log=log)
    except tf.errors.OpError as error:
        raise EvaluationError(_undecodable(evaluation, error)) from None


def _undecodable(evaluation: Evaluation, error: tf.errors.OpError) -> str:
    """Decode the images one by one to find the one that failed the batch."""
    from dermnet.data.pipeline import load_image

    size = tuple(evaluation.config.data.image_size)
    for image_id, path in zip(evaluation.frame["image_id"], evaluation.frame["path"]):
        try:
            load_image(path, size)
        except tf.errors.OpError as failure:
            return (f"{path} (image {image_id}): TensorFlow cannot decode it "
                    f"({_first_line(failure.message)})")
    return f"prediction failed ({_first_line(error.message)})"


def _first_line(text: str) -> str:
    """TensorFlow's message without its op-wrapping noise ({{function_node ...}}, [Op:...])."""
    lines = (text or "").strip().splitlines() or ["no message"]
    return re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "", lines[0]) or lines[0]


# --- the figures ---------------------------------------------------------------------------


def compute_present_predictions(probabilities, present) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities renormalised over the ``present`` class indices [n, p], and the argmax
    among them as class indices [n]. A row giving them all zero becomes uniform."""
    present = np.asarray(present, dtype=np.int64)
    columns = np.asarray(probabilities, dtype=np.float64)[:, present]
    totals = columns.sum(axis=1, keepdims=True)
    uniform = np.full_like(columns, 1.0 / present.size)
    renormalised = np.divide(columns, totals, out=uniform, where=totals > 0)
    return renormalised, present[renormalised.argmax(axis=1)]


def compute_external_metrics(truth, probabilities, *, groups=None, n_resamples: int = 2000,
                             seed: int = 0, confidence: float = 0.95) -> dict:
    """Every figure of an external set (see the module docstring) with its interval."""
    truth = np.asarray(truth, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if truth.size == 0:
        raise EvaluationError("the external set has no images")
    present = np.unique(truth)
    names = [CLASSES[index] for index in present]
    options = {"groups": groups, "n_resamples": n_resamples, "seed": seed,
               "confidence": confidence}
    seven = compute_evaluation(truth, probabilities, CLASSES, **options)
    metrics = {"num_images": int(truth.size), "num_groups": seven["num_groups"],
               "confidence": confidence, "n_resamples": n_resamples, "classes": names,
               "absent_classes": [name for name in CLASSES if name not in names],
               "counts": {name: int(np.sum(truth == CLASSES.index(name))) for name in names},
               "present_classes": _present_section(truth, probabilities, present, options),
               "seven_way": _seven_way_section(seven, truth, probabilities, present,
                                               confidence),
               "auc": _auc_section(seven, names)}
    if MEL in present:
        metrics["mel_sensitivity"] = {
            "present_classes": metrics["present_classes"]["per_class"]["mel"]["sensitivity"],
            "seven_way": metrics["seven_way"]["per_class"]["mel"]["sensitivity"]}
    return metrics


def _present_section(truth, probabilities, present, options: dict) -> dict:
    """compute_evaluation on the present classes alone, with the restricted argmax."""
    _, predicted = compute_present_predictions(probabilities, present)
    # Positions among the present classes (``present`` is sorted and holds every label).
    section = compute_evaluation(np.searchsorted(present, truth), None,
                                 [CLASSES[index] for index in present],
                                 predicted=np.searchsorted(present, predicted), **options)
    for key in ("num_images", "num_groups", "confidence", "n_resamples"):
        del section[key]  # they describe the whole set, once, at the top of metrics.json
    if present.size == 1:
        section["note"] = "one class: the restricted argmax cannot be wrong"
    return {"scoring": "argmax over the classes present in the set, their probabilities "
                       "renormalised", **section}


def _seven_way_section(seven: dict, truth, probabilities, present, confidence: float) -> dict:
    """The unrestricted argmax: its figures, rows of the present classes, absent shares."""
    matrix = np.asarray(seven["confusion_matrix"])[present]
    return {"scoring": "argmax over all seven classes (the model as it is)",
            **{key: seven[key] for key in ("accuracy", "error_rate", "balanced_accuracy")},
            "balanced_accuracy_over": "the classes present (mean recall of each)",
            "confusion_matrix": {"rows": [CLASSES[index] for index in present],
                                 "columns": list(CLASSES), "counts": matrix.tolist()},
            "per_class": {CLASSES[index]: seven["per_class"][CLASSES[index]]
                          for index in present},
            "absent_predictions": compute_absent_shares(truth, probabilities, confidence)}


def compute_absent_shares(truth, probabilities, confidence: float = 0.95) -> dict:
    """How many seven-way predictions fall on classes the set does not contain (a wrong
    answer by construction), overall and per absent class, with Clopper-Pearson intervals."""
    truth = np.asarray(truth)
    predicted = np.asarray(probabilities).argmax(axis=1)
    absent = [index for index in range(len(CLASSES)) if index not in set(truth.tolist())]
    total = int(np.isin(predicted, absent).sum())
    return {**_share(total, truth.size, confidence),
            "per_class": {CLASSES[index]: _share(int(np.sum(predicted == index)), truth.size,
                                                 confidence) for index in absent}}


def _share(count: int, total: int, confidence: float) -> dict:
    low, high = clopper_pearson(count, total, confidence)
    return {"count": count, "value": count / total if total else float("nan"), "low": low,
            "high": high, "method": "clopper-pearson"}


def _auc_section(seven: dict, names: list[str]) -> dict:
    per_class = {name: seven["per_class"][name]["auc"] for name in names}
    section = {"scoring": "seven-way probability of the class, one against the rest of the "
                          "set; macro: mean over the present classes",
               "per_class": per_class, "macro": seven["macro_auc"]}
    if "mel" in per_class:
        section["mel_vs_rest"] = per_class["mel"]
    return section


# --- describing what was scored ------------------------------------------------------------


def _describe_run(evaluation: Evaluation, external: ExternalSet, tta: int) -> dict:
    config = evaluation.config
    return {"external": True, "title": _title(evaluation, external),
            "run_dir": str(evaluation.run_dir), "data_dir": str(external.root),
            "split": SPLIT, "synthetic": evaluation.data.synthetic,
            "dataset": {"metadata": str(external.metadata_path), "layout": external.layout,
                        "num_lesions": int(external.frame["lesion_id"].nunique()),
                        "image_sizes": describe_sizes(external.image_sizes,
                                                      config.data.image_size),
                        "resize": getattr(config.data, "resize", "stretch"),
                        "clinical": describe_clinical(external),
                        "notices": _notices(evaluation, external),
                        "warnings": list(external.warnings)},
            "tta": list(TTA_TRANSFORMS[:tta]),
            "model": {"backbone": config.model.backbone,
                      "image_size": list(config.data.image_size),
                      "clinical": config.data.clinical, "fold": config.data.fold},
            "config": config_to_dict(config)}


def _notices(evaluation: Evaluation, external: ExternalSet) -> list[str]:
    upsampled = upsampling_notice(evaluation.data.provenance)
    return clinical_notices(evaluation.config, external) + ([upsampled] if upsampled else [])


def _title(evaluation: Evaluation, external: ExternalSet) -> str:
    config = evaluation.config
    height, width = config.data.image_size
    label = "SYNTHETIC " if evaluation.data.synthetic else ""
    return (f"{config.model.backbone} {height}x{width}, clinical "
            f"{'on' if config.data.clinical else 'off'}, fold {config.data.fold}: "
            f"EXTERNAL {label}image bank {external.root.name}")


# --- the files -----------------------------------------------------------------------------


def per_image_frame(rows: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """``report.per_image_frame`` plus the restricted (present-classes) prediction."""
    frame = report.per_image_frame(rows, probabilities)
    present = np.unique(rows["label"].to_numpy())
    _, predicted = compute_present_predictions(probabilities, present)
    position = frame.columns.get_loc("correct") + 1
    frame.insert(position, "predicted_present", [CLASSES[index] for index in predicted])
    frame.insert(position + 1, "correct_present", predicted == rows["label"].to_numpy())
    return frame


def write_external_outputs(target: Path, rows: pd.DataFrame, probabilities: np.ndarray,
                           metrics: dict, summary: str) -> None:
    """Write every file into a staging folder, then rename each into ``target``; on any
    failure remove the staging folder (and ``target`` if this call created it)."""
    with staged_outputs(Path(target)) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        report.prediction_frame(rows["image_id"], probabilities).to_csv(
            staging / "predictions.csv", index=False, float_format="%.17g")
        per_image_frame(rows, probabilities).to_csv(staging / "per_image.csv", index=False,
                                                    float_format="%.17g")
        (staging / "external.md").write_text(summary + "\n")


# --- the summary ---------------------------------------------------------------------------


def format_external_summary(metrics: dict) -> str:
    """external.md: what was scored (an EXTERNAL bank, its classes), then every headline
    figure with its interval, the per-class table and the absent-class breakdown."""
    lines = _summary_header(metrics) + ["", "| figure | value (95% interval) |", "|---|---|"]
    lines += [f"| {label} | {report.format_interval(entry, 3)} |"
              for label, entry in headline_figures(metrics)]
    lines += ["", "### Per present class", "", report.to_markdown(_class_rows(metrics))]
    lines += ["", "### Seven-way predictions on classes the set does not contain", ""]
    lines += _absent_lines(metrics)
    lines += ["", "### Confusion matrix, present classes (rows true, columns predicted)", "",
              report.to_markdown(_confusion_frame(metrics["present_classes"]))]
    return "\n".join(lines)


def _summary_header(metrics: dict) -> list[str]:
    data = metrics["dataset"]
    synthetic = " It holds SYNTHETIC images." if metrics["synthetic"] else ""
    absent = ", ".join(metrics["absent_classes"]) or "none"
    lines = [f"## {metrics['title']}", "",
             f"**EXTERNAL image bank**, not the run's own data: {metrics['data_dir']}. "
             f"Classes: {', '.join(metrics['classes'])} (absent: {absent}).{synthetic}", "",
             f"{metrics['num_images']} images of {metrics['num_groups']} lesions "
             f"({', '.join(f'{name} {count}' for name, count in metrics['counts'].items())}); "
             f"{_sizes_text(data['image_sizes'])}; "
             f"run {metrics['run_dir']}; TTA {len(metrics['tta'])}; "
             f"{round(metrics['confidence'] * 100)}% intervals "
             "(Clopper-Pearson, DeLong, lesion bootstrap)."]
    return lines + [f"\n{notice}" for notice in data["notices"]]


def _sizes_text(sizes: dict) -> str:
    if not sizes.get("checked"):
        return "image sizes not checked"
    height, width = sizes["input_size"]
    return (f"images {sizes['min_width']}-{sizes['max_width']} x "
            f"{sizes['min_height']}-{sizes['max_height']} px, "
            f"{sizes['other_aspect_images']} of another aspect ratio than the "
            f"{height}x{width} (HxW) input")


def headline_figures(metrics: dict) -> list[tuple[str, dict]]:
    """(label, interval entry) of every headline figure, in reading order."""
    present, seven, auc = metrics["present_classes"], metrics["seven_way"], metrics["auc"]
    figures = [("accuracy, present classes", present["accuracy"]),
               ("balanced accuracy, present classes", present["balanced_accuracy"]),
               ("accuracy, seven-way", seven["accuracy"]),
               ("balanced accuracy, seven-way (present classes' recall)",
                seven["balanced_accuracy"]),
               ("share of seven-way predictions on absent classes",
                seven["absent_predictions"])]
    if "mel_sensitivity" in metrics:
        figures += [("mel sensitivity, present classes",
                     metrics["mel_sensitivity"]["present_classes"]),
                    ("mel sensitivity, seven-way", metrics["mel_sensitivity"]["seven_way"])]
    if "mel_vs_rest" in auc:
        figures.append(("**AUC mel vs rest**", auc["mel_vs_rest"]))
    figures.append(("macro AUC over present classes", auc["macro"]))
    return figures


def _class_rows(metrics: dict) -> pd.DataFrame:
    present, seven = metrics["present_classes"]["per_class"], metrics["seven_way"]["per_class"]
    return pd.DataFrame([
        {"class": name, "images": metrics["counts"][name],
         "TPR (present)": report.format_interval(present[name]["sensitivity"]),
         "TNR (present)": report.format_interval(present[name]["specificity"]),
         "TPR (7-way)": report.format_interval(seven[name]["sensitivity"]),
         "AUC vs rest": report.format_interval(metrics["auc"]["per_class"][name])}
        for name in metrics["classes"]])


def _absent_lines(metrics: dict) -> list[str]:
    shares = metrics["seven_way"]["absent_predictions"]
    if not shares["per_class"]:
        return ["The set contains all seven classes."]
    return [f"- {name}: {entry['count']} images, {report.format_interval(entry, 3)}"
            for name, entry in shares["per_class"].items()]


def _confusion_frame(section: dict) -> pd.DataFrame:
    names = section["class_names"]
    frame = pd.DataFrame(section["confusion_matrix"], columns=names)
    frame.insert(0, "true", names)
    return frame
