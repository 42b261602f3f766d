"""Reader studies: human answers scored against the truth, beside the model, per condition.

Owns the reader-study data and its numbers: reading and validating the answers CSV
(``reader_id,image_id,diagnosis[,assisted][,seconds]``), the ground truth (a HAM10000
metadata CSV, through ``load_metadata``) and the model's ISIC-format predictions; applying
an optional time limit; and scoring every reader, the pooled answers and the model on
exactly the same images, with the assisted-vs-unassisted paired tests (Wilcoxon across
readers, McNemar per reader and per class) and McNemar of each reader against the model.

Validation collects every problem of every file before failing, each naming the file, the
CSV line (the header is line 1) and the field. Rendering lives in ``reader_report``; no Keras.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from dermnet.data.ham10000 import DatasetError, load_metadata
from dermnet.data.vocabulary import CLASSES, ISIC_COLUMNS
from dermnet.evaluation.metrics import compute_multiclass_metrics, mean_defined
from dermnet.evaluation.stats import clopper_pearson, compute_evaluation, mcnemar

ANSWER_COLUMNS = ("reader_id", "image_id", "diagnosis")  # assisted, seconds are optional
CONDITIONS = ("unassisted", "assisted")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")
CLASS_INDEX = {code: index for index, code in enumerate(CLASSES)}  # "MEL".lower() == "mel"
# With n readers the smallest two-sided exact Wilcoxon p-value is 2 / 2**n: below 6 readers
# (0.0625 at 5) no result could reach 0.05, so the test is reported as not testable.
MIN_WILCOXON_READERS = 6
SHOWN_IDS = 20  # image ids quoted in one problem


class ReaderStudyError(DatasetError):
    """Reader-study inputs that cannot be scored; ``problems`` lists every reason found."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames has no single truth value
class ReaderStudy:
    """Validated answers joined with the truth (and the model), ready to score."""

    answers: pd.DataFrame  # scored: reader_id image_id condition seconds line label predicted...
    excluded: pd.DataFrame  # same columns: answers slower than the time limit
    model: pd.DataFrame | None  # index image_id, columns CLASSES: the model's probabilities
    time_limit: float | None  # seconds; None scores every answer
    sources: dict  # {"answers", "truth", "model"}: the files read


def load_reader_study(answers_csv, truth_csv, model_csv=None,
                      time_limit: float | None = None) -> ReaderStudy:
    """Read and check every input; raise ReaderStudyError listing all problems found."""
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, not {time_limit}")
    answers_path, truth_path = Path(answers_csv), Path(truth_csv)
    truth, problems = _load_truth(truth_path)
    answers, answer_problems = _read_answers(answers_path, time_limit)
    problems += answer_problems
    if truth is not None and answers is not None:
        problems += _check_known_images(answers, truth, answers_path.name, truth_path.name)
    model = None
    if model_csv is not None:
        model, model_problems = _read_model_predictions(Path(model_csv))
        problems += model_problems
        if model is not None and answers is not None:
            problems += _check_model_coverage(model, answers, Path(model_csv).name)
    if problems:
        raise ReaderStudyError(problems, answers_path)
    answers = _join_truth(answers, truth)
    slow = answers["seconds"] > (math.inf if time_limit is None else time_limit)  # NaN: no
    sources = {"answers": str(answers_path), "truth": str(truth_path),
               "model": None if model_csv is None else str(model_csv)}
    return ReaderStudy(answers[~slow].reset_index(drop=True),
                       answers[slow].reset_index(drop=True), model, time_limit, sources)


# --- reading ---------------------------------------------------------------------------------


def _read_table(path: Path, required: tuple) -> tuple[list | None, list, list[str]]:
    """Return (columns, [(line, {column: stripped text})], problems); columns None if unusable."""
    records, problems = _read_records(path)
    if records is None:
        return None, [], problems
    (_, header), body = records[0], records[1:]
    columns = [column.strip().lower() for column in header]
    missing = [column for column in required if column not in columns]
    if missing:
        return None, [], [f"{path.name} line 1: missing column(s) {', '.join(missing)} "
                          f"(the header is {','.join(header)!r})"]
    problems = [f"{path.name} line {line}: {len(row)} fields, the header has {len(header)}"
                for line, row in body if len(row) != len(header)]
    if not body:
        problems.append(f"{path.name}: no rows after the header")
    rows = [(line, {column: field.strip() for column, field in zip(columns, row)})
            for line, row in body if len(row) == len(header)]
    return columns, rows, problems


def _read_records(path: Path) -> tuple[list | None, list[str]]:
    """Non-blank CSV rows, each with the line it starts on (a quoted field may span lines)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except UnicodeDecodeError as error:
        return None, [f"{path.name}: not UTF-8 text (byte {error.start})"]
    except OSError as error:
        return None, [f"{path}: cannot read ({error.strerror})"]
    reader, records, previous_end = csv.reader(io.StringIO(text), strict=True), [], 0
    try:
        for row in reader:
            records.append((previous_end + 1, row))
            previous_end = reader.line_num
    except csv.Error as error:
        return None, [f"{path.name} line {reader.line_num}: unreadable CSV ({error})"]
    records = [(line, row) for line, row in records if any(field.strip() for field in row)]
    return (records or None), ([] if records else [f"{path.name}: empty file (no header)"])


def _load_truth(path: Path) -> tuple[pd.DataFrame | None, list[str]]:
    try:
        frame, _ = load_metadata(path)
    except DatasetError as error:  # its problems already name the file and line
        return None, list(error.problems)
    return frame[["image_id", "lesion_id", "label"]], []


def _read_answers(path: Path, time_limit) -> tuple[pd.DataFrame | None, list[str]]:
    columns, rows, problems = _read_table(path, ANSWER_COLUMNS)
    if columns is None:
        return None, problems
    if time_limit is not None and "seconds" not in columns:
        problems.append(f"{path.name} line 1: --time-limit needs a seconds column")
    records = []
    for line, row in rows:
        record, row_problems = _parse_answer(row, time_limit is not None)
        problems += [f"{path.name} line {line}: {problem}" for problem in row_problems]
        records.append({**record, "line": line, "valid": not row_problems})
    names = ("reader_id", "image_id", "diagnosis", "condition", "seconds", "line", "valid")
    frame = pd.DataFrame(records, columns=names)  # every row: its image id is checked too
    return frame, problems + _check_duplicates(frame[frame["valid"]], path.name)


def _parse_answer(row: dict, need_seconds: bool) -> tuple[dict, list[str]]:
    problems = [f"{column} is blank" for column in ("reader_id", "image_id") if not row[column]]
    diagnosis = row["diagnosis"].lower()
    if diagnosis not in CLASS_INDEX:
        problems.append(f"diagnosis {row['diagnosis']!r} is not a class (expected one of "
                        f"{', '.join(CLASSES)} or {', '.join(ISIC_COLUMNS)})")
    assisted, assisted_problem = _parse_assisted(row.get("assisted"))
    seconds, seconds_problem = _parse_seconds(row.get("seconds"), need_seconds)
    problems += [problem for problem in (assisted_problem, seconds_problem) if problem]
    record = {"reader_id": row["reader_id"], "image_id": row["image_id"],
              "diagnosis": diagnosis, "condition": CONDITIONS[int(bool(assisted))],
              "seconds": seconds}
    return record, problems


def _parse_assisted(text: str | None) -> tuple[bool, str | None]:
    """None (no column) means unassisted; anything but the listed words is a problem."""
    if text is None or text.lower() in FALSE_WORDS:
        return False, None
    if text.lower() in TRUE_WORDS:
        return True, None
    shown = "is blank" if not text else f"{text!r} is not"
    return False, f"assisted {shown} one of true/false, 1/0, yes/no"


def _parse_seconds(text: str | None, required: bool) -> tuple[float, str | None]:
    """None (no column) or blank means not recorded, allowed unless a time limit needs it."""
    if not text:
        return math.nan, ("seconds is blank; --time-limit needs every answer's time"
                          if required and text is not None else None)
    seconds = _parse_number(text)
    if seconds is None or seconds <= 0:
        return math.nan, f"seconds {text!r} is not a positive number"
    return seconds, None


def _check_duplicates(frame: pd.DataFrame, name: str) -> list[str]:
    keys = ["reader_id", "image_id", "condition"]
    repeated = frame[frame.duplicated(keys, keep=False)]
    problems = []
    for (reader, image, condition), group in repeated.groupby(keys, sort=False):
        first, *others = group["line"].tolist()
        problems += [f"{name} line {line}: reader_id {reader} answered image_id {image} "
                     f"({condition}) again, first on line {first}" for line in others]
    return problems


def _check_known_images(answers, truth, name: str, truth_name: str) -> list[str]:
    unknown = answers[(answers["image_id"] != "") & ~answers["image_id"].isin(truth["image_id"])]
    return [f"{name} line {line}: image_id {image!r} is not in {truth_name}"
            for line, image in zip(unknown["line"], unknown["image_id"])]


def _read_model_predictions(path: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """An ISIC-format CSV (``image,MEL,...,VASC``) -> probabilities indexed by image id."""
    columns, rows, problems = _read_table(path, ("image", *CLASSES))
    if columns is None:
        return None, problems
    images, values = [], []
    for line, row in rows:
        numbers = [_parse_number(row[code]) for code in CLASSES]
        bad = [code.upper() for code, number in zip(CLASSES, numbers) if number is None]
        problems += [f"{path.name} line {line}: {code} {row[code.lower()]!r} is not a number"
                     for code in bad]
        images.append(row["image"])
        values.append([math.nan if number is None else number for number in numbers])
    frame = pd.DataFrame(values, index=pd.Index(images, name="image_id"), columns=list(CLASSES))
    repeated = sorted(set(frame.index[frame.index.duplicated()]))
    problems += [f"{path.name}: image {image} has more than one row" for image in repeated]
    return frame, problems


def _parse_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _check_model_coverage(model: pd.DataFrame, answers: pd.DataFrame, name: str) -> list[str]:
    answered = pd.unique(answers.loc[answers["image_id"] != "", "image_id"])
    missing = [image for image in answered if image not in model.index]
    if not missing:
        return []
    more = f" and {len(missing) - SHOWN_IDS} more" if len(missing) > SHOWN_IDS else ""
    return [f"{name}: no prediction for {len(missing)} of the {len(answered)} image(s) the "
            f"readers answered: {', '.join(missing[:SHOWN_IDS])}{more}"]


def _join_truth(answers: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    joined = answers.drop(columns="valid").merge(truth, on="image_id", how="left",
                                                 validate="many_to_one")
    return joined.assign(predicted=joined["diagnosis"].map(CLASS_INDEX).astype(np.int64))


# --- scoring ---------------------------------------------------------------------------------


def compute_reader_study(study: ReaderStudy, *, confidence: float = 0.95,
                         n_resamples: int = 2000, seed: int = 0) -> dict:
    """Every number of the report: per reader, pooled, the model, and the paired changes.

    Pooled answers and the model get ``stats.compute_evaluation`` (bootstrap over lesions);
    readers get Clopper-Pearson accuracy intervals and their per-class rates.
    """
    answers = study.answers
    by_condition = {condition: frame for condition in CONDITIONS
                    if len(frame := answers[answers["condition"] == condition])}
    conditions = list(by_condition)
    model_labels = None if study.model is None else pd.Series(  # ISIC: argmax is the answer
        study.model.to_numpy().argmax(axis=1), index=study.model.index)
    readers = {reader: {condition: _score_answers(group, model_labels, confidence)
                        for condition in CONDITIONS
                        if len(group := frame[frame["condition"] == condition])}
               for reader, frame in answers.groupby("reader_id", sort=False)}
    evaluate = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    return {
        "class_names": list(CLASSES), "conditions": conditions, "confidence": confidence,
        "time_limit": study.time_limit, "sources": study.sources, "counts": _count(study),
        "readers": readers,
        "mean_of_readers": {condition: _mean_of_readers(readers, condition)
                            for condition in conditions},
        "pooled": {condition: _evaluate(frame, None, evaluate)
                   for condition, frame in by_condition.items()},
        "model": None if study.model is None else {
            condition: _evaluate(frame.drop_duplicates("image_id"), study.model, evaluate)
            for condition, frame in by_condition.items()},
        "change": _compute_change(answers, readers) if len(conditions) == 2 else None,
    }


def _count(study: ReaderStudy) -> dict:
    def tally(frame):
        return {"readers": frame["reader_id"].nunique(), "images": frame["image_id"].nunique(),
                "answers": len(frame)}

    counts = {**tally(study.answers), "excluded": len(study.excluded)}
    for condition in CONDITIONS:
        scored, excluded = (frame[frame["condition"] == condition]
                            for frame in (study.answers, study.excluded))
        if len(scored) or len(excluded):
            counts[condition] = {**tally(scored), "excluded": len(excluded)}
    return counts


def _score_answers(frame: pd.DataFrame, model_labels, confidence: float) -> dict:
    """One reader in one condition: accuracy (Clopper-Pearson), balanced accuracy, TPR/TNR."""
    metrics = compute_multiclass_metrics(frame["label"], predicted=frame["predicted"])
    correct = (frame["label"] == frame["predicted"]).to_numpy()
    low, high = clopper_pearson(int(correct.sum()), len(frame), confidence)
    scores = {
        "answers": len(frame), "correct": int(correct.sum()),
        "accuracy": {"value": metrics["accuracy"], "low": low, "high": high,
                     "method": "clopper-pearson"},
        "error_rate": metrics["error_rate"], "balanced_accuracy": metrics["balanced_accuracy"],
        "per_class": metrics["per_class"], "confusion_matrix": metrics["confusion_matrix"],
    }
    if model_labels is not None:
        model_correct = model_labels.loc[frame["image_id"]].to_numpy() == frame["label"]
        result = mcnemar(correct, model_correct)
        scores["versus_model"] = {
            "model_accuracy": float(np.mean(model_correct)), "test": "McNemar (exact)",
            "pairs": len(frame), "reader_only": result["a_only"],
            "model_only": result["b_only"], "p_value": result["p_value"]}
    return scores


def _mean_of_readers(readers: dict, condition: str) -> dict:
    """The mean over readers (each reader weighs the same), as the paper's mean accuracy."""
    scores = [entry[condition] for entry in readers.values() if condition in entry]
    accuracy = np.array([score["accuracy"]["value"] for score in scores])
    tpr = np.array([[score["per_class"][name]["sensitivity"] for name in CLASSES]
                    for score in scores])
    mean_tpr = mean_defined(tpr, axis=0)  # a reader who saw no image of a class has no TPR
    return {"readers": len(scores), "accuracy": float(accuracy.mean()),
            "accuracy_sd": float(accuracy.std(ddof=1)) if len(scores) > 1 else math.nan,
            "balanced_accuracy": float(np.mean([s["balanced_accuracy"] for s in scores])),
            "sensitivity": dict(zip(CLASSES, mean_tpr.tolist()))}


def _evaluate(frame: pd.DataFrame, model: pd.DataFrame | None, options: dict) -> dict:
    """``stats.compute_evaluation`` of the answers, or of the model on their images."""
    groups = frame["lesion_id"].to_numpy()  # resample lesions: their images are not independent
    if model is None:
        return compute_evaluation(frame["label"].to_numpy(), predicted=frame["predicted"],
                                  groups=groups, **options)
    probabilities = model.loc[frame["image_id"]].to_numpy()
    return compute_evaluation(frame["label"].to_numpy(), probabilities, groups=groups, **options)


def _compute_change(answers: pd.DataFrame, readers: dict) -> dict:
    """Assisted minus unassisted: per reader, across readers, pooled and per class."""
    correct = answers.assign(correct=answers["label"] == answers["predicted"])
    before, after = (correct[correct["condition"] == condition] for condition in CONDITIONS)
    pairs = before.merge(after, on=["reader_id", "image_id", "label"],
                         suffixes=("_unassisted", "_assisted"))
    per_reader = {reader: _reader_change(scores, pairs[pairs["reader_id"] == reader])
                  for reader, scores in readers.items()}
    per_class = {name: _accuracy_change(*(frame[frame["label"] == index]
                                          for frame in (before, after, pairs)), f"{name} image")
                 for index, name in enumerate(CLASSES)}  # the share correct of a class: TPR
    return {"readers": per_reader, "across_readers": _wilcoxon(per_reader),
            "pooled": _accuracy_change(before, after, pairs, "image"), "per_class": per_class}


def _reader_change(scores: dict, pairs: pd.DataFrame) -> dict:
    if len(scores) < 2:
        return {"change": None, "note": f"answered only {', '.join(scores)}"}
    before, after = (scores[condition]["accuracy"]["value"] for condition in CONDITIONS)
    return {"unassisted": before, "assisted": after, "change": after - before,
            "test": _paired_test(pairs, "image")}


def _accuracy_change(before: pd.DataFrame, after: pd.DataFrame, pairs: pd.DataFrame,
                     what: str) -> dict:
    """Share of correct answers in each condition, and the paired test."""
    unassisted = float(before["correct"].mean()) if len(before) else math.nan
    assisted = float(after["correct"].mean()) if len(after) else math.nan
    return {"unassisted": unassisted, "assisted": assisted, "change": assisted - unassisted,
            "answers": [len(before), len(after)], "test": _paired_test(pairs, what)}


def _paired_test(pairs: pd.DataFrame, what: str) -> dict:
    """Exact McNemar on (reader, image) pairs answered in both conditions."""
    test = {"test": "McNemar (exact)", "pairs": len(pairs)}
    if pairs.empty:
        return {**test, "p_value": None,
                "note": f"cannot be tested: no {what} answered in both conditions"}
    result = mcnemar(pairs["correct_unassisted"].to_numpy(), pairs["correct_assisted"].to_numpy())
    return {**test, "unassisted_only": result["a_only"], "assisted_only": result["b_only"],
            "p_value": result["p_value"]}


def _wilcoxon(per_reader: dict) -> dict:
    """Wilcoxon signed-rank on per-reader accuracy, or why it cannot be tested."""
    paired = [entry for entry in per_reader.values() if entry["change"] is not None]
    changes = np.array([entry["change"] for entry in paired])
    result = {"test": "Wilcoxon signed-rank", "readers": len(paired),
              "readers_changed": int(np.count_nonzero(changes)),
              "mean_change": float(changes.mean()) if len(paired) else math.nan,
              "median_change": float(np.median(changes)) if len(paired) else math.nan}
    if result["readers_changed"] < MIN_WILCOXON_READERS:
        smallest = 2.0 / 2 ** result["readers_changed"]
        return {**result, "statistic": None, "p_value": None, "note": (
            f"cannot be tested: {len(paired)} reader(s) answered in both conditions, "
            f"{result['readers_changed']} with a change in accuracy; the test needs at least "
            f"{MIN_WILCOXON_READERS} (the smallest possible p-value is {min(smallest, 1):.3g})")}
    test = scipy.stats.wilcoxon([entry["assisted"] for entry in paired],
                                [entry["unassisted"] for entry in paired])
    return {**result, "statistic": float(test.statistic), "p_value": float(test.pvalue)}
