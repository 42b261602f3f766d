"""``evaluate_run(run_dir, ...)``: a finished run's figures on one of its splits.

Writes, into the run directory for the test split (``evaluation-val/`` inside it for the
validation fold) or ``out``:

    metrics.json             every figure of stats.compute_evaluation with its interval,
                             binary tasks, runtime per image, what was evaluated
    predictions.csv          ISIC 2018 Task 3 format: image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
    per_image.csv            image, lesion, truth, prediction, correct, probabilities
    per_class.md / .csv      TPR, TNR, G-mean (and PPV, NPV, F1, AUC) per class
    confusion_matrix.png  roc.png
    lesion_focus.csv / .png  where the model looks: per image, the share of its Grad-CAM energy
                             inside the lesion mask (when the data folder has masks/)

Everything is computed before anything is written, and each file is renamed into place, so
an interrupted evaluation never leaves a half-written or mixed set of files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from dermnet.config import config_to_dict
from dermnet.data.vocabulary import CLASSES
from dermnet.evaluation import report
from dermnet.evaluation.lesion_focus import (
    LesionFocus,
    check_limit,
    make_example_panels,
    run_lesion_focus,
    save_lesion_focus_csv,
)
from dermnet.evaluation.metrics import compute_pair_scores
from dermnet.evaluation.photos import (
    compute_photo_metrics,
    format_photo_summary,
    photo_prediction_frame,
)
from dermnet.evaluation.predictions import (
    TTA_TRANSFORMS,
    Evaluation,
    check_tta,
    load_evaluation,
    measure_runtime,
    predict_split,
)
from dermnet.evaluation.stats import compute_binary_evaluation, compute_evaluation, to_json_ready

DEFAULT_PAIRS = (("mel", "nv"),)  # the clinically decisive distinction in HAM10000
LESION_FOCUS_FILES = ("lesion_focus.csv", "lesion_focus.png")


def default_output_dir(run_dir: Path, split: str) -> Path:
    return run_dir if split == "test" else run_dir / f"evaluation-{split}"


def evaluate_run(run_dir: str | Path, split: str = "test", *, data_dir=None, tta: int = 1,
                 out: str | Path | None = None, pairs=DEFAULT_PAIRS, n_resamples: int = 2000,
                 seed: int = 0, runtime: bool = True, lesion_focus: bool = True,
                 lesion_focus_limit: int | None = None, log=print) -> dict:
    """Predict the split, compute every figure, write the files; returns metrics.json.
    ``lesion_focus``: measure where the model looks when the data has lesion masks, on at
    most ``lesion_focus_limit`` images (None: all)."""
    check_tta(tta)  # before the slow loading
    check_limit(lesion_focus_limit)
    evaluation = load_evaluation(run_dir, split, data_dir, log)
    # Float64 written with 17 significant digits reads back bit-identical, so anyone
    # re-scoring predictions.csv gets exactly the figures of metrics.json.
    probabilities = predict_split(evaluation, tta, log=log).astype(np.float64)
    photos = _is_photo_run(evaluation)
    focus = None
    if photos:
        metrics = compute_photo_metrics(evaluation.frame, probabilities, evaluation.data.tasks)
    else:
        metrics = compute_evaluation(evaluation.truth, probabilities, CLASSES,
                                     groups=evaluation.groups, n_resamples=n_resamples,
                                     seed=seed)
        metrics["binary"] = {f"{positive}_vs_{negative}": _binary(evaluation, probabilities,
                                                                  positive, negative)
                             for positive, negative in pairs}
        if lesion_focus:
            metrics["lesion_focus"], focus = run_lesion_focus(
                evaluation, probabilities.argmax(axis=1), limit=lesion_focus_limit,
                n_resamples=n_resamples, seed=seed, log=log)
    metrics.update(_describe(evaluation, tta))
    if runtime:
        metrics["runtime_ms_per_image"] = measure_runtime(evaluation)
    metrics = to_json_ready(metrics)
    target = Path(out) if out else default_output_dir(evaluation.run_dir, evaluation.split)
    if photos:
        _write_photo_outputs(target, evaluation, probabilities, metrics)
        log(format_photo_summary(metrics, _title(evaluation)))
        written = "metrics.json predictions.csv per_task.md"
    else:
        _write_outputs(target, evaluation, probabilities, metrics, focus)
        log(report.format_summary(metrics, _title(evaluation)))
        written = ("metrics.json predictions.csv per_image.csv per_class.md per_class.csv "
                   "confusion_matrix.png roc.png")
        if focus:
            written += "".join(f" {name}" for name in LESION_FOCUS_FILES
                               if (target / name).exists())
    log(f"\nwritten to {target}: {written}")
    return metrics


def _is_photo_run(evaluation: Evaluation) -> bool:
    return evaluation.data.multi_task


def _binary(evaluation: Evaluation, probabilities, positive: str, negative: str) -> dict:
    mask, truth, scores = compute_pair_scores(evaluation.truth, probabilities, CLASSES,
                                              positive, negative)
    if truth.size == 0 or truth.all() or not truth.any():
        return {"positive": positive, "negative": negative, "n": int(truth.size),
                "note": "needs images of both classes in the split"}
    row = compute_binary_evaluation(truth, scores, groups=evaluation.groups[mask])
    return {"positive": positive, "negative": negative,
            "score": f"p({positive}) / (p({positive}) + p({negative}))", **row}


def _describe(evaluation: Evaluation, tta: int) -> dict:
    config = evaluation.config
    return {"run_dir": str(evaluation.run_dir), "split": evaluation.split,
            "synthetic": evaluation.data.synthetic, "data_dir": str(evaluation.data.data_dir),
            "images": evaluation.data.provenance, "split_by": config.data.split_by,
            "tta": list(TTA_TRANSFORMS[:tta]),
            "model": {"backbone": config.model.backbone,
                      "image_size": list(config.data.image_size),
                      "clinical": config.data.clinical, "fold": config.data.fold,
                      "task": config.data.task, "variant": config.model.variant,
                      "version": evaluation.data.version},
            "config": config_to_dict(config)}


def _title(evaluation: Evaluation) -> str:
    config = evaluation.config
    height, width = config.data.image_size
    if _is_photo_run(evaluation):
        label = "SYNTHETIC phantom data, " if evaluation.data.synthetic else ""
        return (f"VGG-16{config.model.variant.upper()} {height}x{width}, "
                f"{evaluation.data.version} photos: {label}{evaluation.split} split")
    label = "SYNTHETIC phantom data, " if evaluation.data.synthetic else "REAL images, "
    # The paper's split leaks lesions into the test set: a figure from it must say so.
    leak = " (IMAGE-LEVEL split: images of one lesion on both sides)" if (
        config.data.split_by == "image") else ""
    return (f"{config.model.backbone} {height}x{width}, clinical "
            f"{'on' if config.data.clinical else 'off'}, fold {config.data.fold}: "
            f"{label}{evaluation.split} split{leak}")


def _write_photo_outputs(target: Path, evaluation: Evaluation, probabilities: np.ndarray,
                         metrics: dict) -> None:
    with staged_outputs(target) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        photo_prediction_frame(evaluation.frame, probabilities, evaluation.data.output_names
                               ).to_csv(staging / "predictions.csv", index=False,
                                        float_format="%.17g")
        (staging / "per_task.md").write_text(
            format_photo_summary(metrics, _title(evaluation)) + "\n")


@contextlib.contextmanager
def staged_outputs(target: Path):
    """A staging folder inside ``target`` for the body to write into; every file is renamed
    into ``target`` only once all were written. A failed write (a full disk) removes the
    staging folder (and ``target`` if this call made it) and leaves ``target``'s earlier
    files as they were."""
    target = Path(target)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    staging = target / ".evaluation-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except OSError as error:
        _discard(staging, target, created)
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise OSError(f"cannot write the evaluation into {target}: {reason}; its earlier "
                      "files are unchanged") from None
    except BaseException:
        _discard(staging, target, created)
        raise
    for path in staging.iterdir():
        path.replace(target / path.name)
    staging.rmdir()


def _discard(staging: Path, target: Path, created: bool) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    if created:
        shutil.rmtree(target, ignore_errors=True)


def _write_outputs(target: Path, evaluation: Evaluation, probabilities: np.ndarray,
                   metrics: dict, focus: LesionFocus | None = None) -> None:
    """Write every file into a staging folder, then rename each into ``target``."""
    title = _title(evaluation)
    with staged_outputs(target) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        report.prediction_frame(evaluation.frame["image_id"], probabilities).to_csv(
            staging / "predictions.csv", index=False, float_format="%.17g")
        report.per_image_frame(evaluation.frame, probabilities).to_csv(
            staging / "per_image.csv", index=False, float_format="%.17g")
        (staging / "per_class.md").write_text(report.format_summary(metrics, title) + "\n")
        report.class_table_numbers(metrics).to_csv(staging / "per_class.csv", index=False)
        report.plot_confusion_matrix(metrics, staging / "confusion_matrix.png", title)
        report.plot_roc(evaluation.truth, probabilities, staging / "roc.png", title)
        _write_lesion_focus(staging, focus, title)
        written = {path.name for path in staging.iterdir()}
    # Lesion-focus files of an earlier evaluation would contradict this metrics.json.
    for name in set(LESION_FOCUS_FILES) - written:
        (target / name).unlink(missing_ok=True)


def _write_lesion_focus(staging: Path, focus: LesionFocus | None, title: str) -> None:
    if focus is None:
        return
    save_lesion_focus_csv(focus, staging / "lesion_focus.csv")
    panels = make_example_panels(focus)
    if panels:  # none when no image had both a mask and a non-zero heatmap
        report.plot_image_panels(panels, staging / "lesion_focus.png",
                                 f"{title}: Grad-CAM of the predicted class, lesion outlined")
