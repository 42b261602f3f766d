"""Evaluation of clinical-photo runs (the second study): its three binary tasks, laid out as
its Table 2 (specificity, sensitivity, PPV, NPV) and Table 3 (AUC, accuracy), each figure
with a 95% interval, and the comparison of the four VGG16 variants and the original /
cropped / balanced data.

A task (negative, positive) is scored on the test photos of those two diagnoses only; the
score is the task's sigmoid output, positive at 0.5 (``stats.compute_binary_evaluation``:
Clopper-Pearson and DeLong). Two runs that scored the same photos are compared per task with
DeLong's test for correlated AUCs.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.clinical_photos import TASKS, compute_task_targets
from dermnet.evaluation.report import to_markdown
from dermnet.evaluation.stats import compute_binary_evaluation, delong_test

TABLE2 = (("specificity", "Specificity"), ("sensitivity", "Sensitivity"), ("ppv", "PPV"),
          ("npv", "NPV"))
TABLE3 = (("auc", "AUC"), ("accuracy", "Accuracy"))
VARIANT_ORDER = ("p", "n", "ps", "ns")  # the study's order


def task_title(negative: str, positive: str) -> str:
    """``Psoriasis vs. eczema``, ``CTCL vs. eczema``."""
    def name(diagnosis: str) -> str:
        return "CTCL" if diagnosis == "ctcl" else diagnosis

    first = name(negative)
    return f"{first[0].upper()}{first[1:]} vs. {name(positive)}"


def compute_photo_metrics(frame: pd.DataFrame, probabilities: np.ndarray, tasks=TASKS,
                          confidence: float = 0.95) -> dict:
    """Per task: counts and every rate with its interval (photos grouped by patient)."""
    targets = compute_task_targets(frame["diagnosis"], tasks, allow_unused=True)
    results = {}
    for column, (negative, positive) in enumerate(tasks):
        mask = targets[:, column] >= 0
        truth = targets[mask, column].astype(int)
        entry = {"negative": negative, "positive": positive, "title": task_title(negative,
                                                                                 positive)}
        if truth.size == 0 or truth.all() or not truth.any():
            results[f"{negative}_vs_{positive}"] = {
                **entry, "n": int(truth.size),
                "note": "cannot be scored: needs test photos of both diagnoses"}
            continue
        row = compute_binary_evaluation(truth, probabilities[mask, column],
                                        groups=frame.loc[mask, "patient_id"].to_numpy(),
                                        confidence=confidence)
        results[f"{negative}_vs_{positive}"] = {**entry, **row}
    return {"num_images": len(frame), "num_patients": int(frame["patient_id"].nunique()),
            "tasks": results}


def format_percent(entry: dict | None) -> str:
    """``86.07% (83.96-88.18%)`` as in the study's tables; ``n/a`` when undefined."""
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{100 * entry['value']:.2f}%"
    if entry.get("low") is None or entry.get("high") is None:
        return text
    return f"{text} ({100 * entry['low']:.2f}-{100 * entry['high']:.2f}%)"


def task_tables(metrics: dict) -> dict[str, pd.DataFrame]:
    """Table 2 and Table 3 of the study for one run."""
    tables = {}
    for title, columns in (("Table 2: specificity, sensitivity, PPV, NPV", TABLE2),
                           ("Table 3: AUC and accuracy", TABLE3)):
        rows = [{"task": task["title"], "n": task.get("n"),
                 **{label: format_percent(task.get(key)) for key, label in columns}}
                for task in metrics["tasks"].values()]
        tables[title] = pd.DataFrame(rows)
    return tables


def format_photo_summary(metrics: dict, title: str) -> str:
    lines = [f"## {title}", "",
             f"{metrics['num_images']} test photos of {metrics['num_patients']} patients; "
             "positive class = the second diagnosis of each task; 95% intervals "
             "(Clopper-Pearson, DeLong)."]
    for name, table in task_tables(metrics).items():
        lines += ["", f"### {name}", "", to_markdown(table)]
    notes = [f"- {task['title']}: {task['note']}" for task in metrics["tasks"].values()
             if "note" in task]
    return "\n".join(lines + ([""] + notes if notes else []))


def photo_prediction_frame(frame: pd.DataFrame, probabilities: np.ndarray,
                           task_names) -> pd.DataFrame:
    """Per photo: ids, diagnosis and each task's probability of its positive diagnosis."""
    predictions = pd.DataFrame(probabilities, columns=list(task_names))
    for position, column in enumerate(("image", "patient_id", "diagnosis")):
        predictions.insert(position, column, frame[column].to_numpy())
    return predictions


# --- comparing runs: variants x data versions -----------------------------------------------


def load_photo_result(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    predictions = run_dir / "predictions.csv"
    return {"run_dir": run_dir, "variant": metrics["model"]["variant"],
            "version": metrics["model"]["version"], "split": metrics["split"],
            "tasks": metrics["tasks"],
            "predictions": pd.read_csv(predictions) if predictions.is_file() else None}


def compare_photo_runs(results: list[dict]) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """The study's Table 3 across runs (one table per task: variant x data version, AUC and
    accuracy), and DeLong tests between runs that scored the same photos."""
    tables = {}
    for task in _task_keys(results):
        rows = []
        for result in sorted(results, key=lambda item: (VARIANT_ORDER.index(item["variant"]),
                                                         item["version"])):
            entry = result["tasks"].get(task, {})
            rows.append({"model": f"VGG-16{result['variant'].upper()}",
                         "data": result["version"], "n": entry.get("n"),
                         "AUC": format_percent(entry.get("auc")),
                         "Accuracy": format_percent(entry.get("accuracy"))})
        title = next(result["tasks"][task]["title"] for result in results
                     if task in result["tasks"])
        tables[title] = pd.DataFrame(rows)
    return tables, _delong_tests(results)


def _task_keys(results) -> list[str]:
    keys = []
    for result in results:
        keys += [key for key in result["tasks"] if key not in keys]
    return keys


def _delong_tests(results: list[dict]) -> list[dict]:
    tests = []
    for first, second in itertools.combinations(results, 2):
        if first["predictions"] is None or second["predictions"] is None:
            continue
        joined = first["predictions"].merge(second["predictions"], on="image",
                                            suffixes=("_a", "_b"))
        if len(joined) != len(first["predictions"]) or len(joined) != len(second["predictions"]):
            continue  # different photos: no paired test
        for task, entry in first["tasks"].items():
            if "auc" not in entry or f"{task}_a" not in joined:
                continue
            truth = compute_task_targets(joined["diagnosis_a"], [(entry["negative"],
                                                                  entry["positive"])],
                                         allow_unused=True)[:, 0]
            mask = truth >= 0
            result = delong_test(truth[mask], joined.loc[mask, f"{task}_a"].to_numpy(),
                                 joined.loc[mask, f"{task}_b"].to_numpy())
            tests.append({"task": entry["title"], "a": _run_label(first),
                          "b": _run_label(second), "n": int(mask.sum()), **result})
    return tests


def _run_label(result: dict) -> str:
    return f"VGG-16{result['variant'].upper()} ({result['version']})"


def format_photo_comparison(tables: dict[str, pd.DataFrame], tests: list[dict],
                            split: str) -> str:
    lines = [f"# Clinical photos: {split} split", "",
             "AUC and accuracy with 95% intervals, as in the study's Table 3."]
    for title, table in tables.items():
        lines += ["", f"## {title}", "", to_markdown(table)]
    lines += ["", "## DeLong tests (same photos, correlated AUCs)", ""]
    lines += [f"- {test['task']}: {test['a']} AUC {test['auc_a']:.4f} vs {test['b']} AUC "
              f"{test['auc_b']:.4f} on {test['n']} photos: z = {test['z']:.2f}, "
              f"p = {test['p_value']:.3g}" for test in tests] or [
        "None: no two runs scored the same photos (the same split of the same data)."]
    return "\n".join(lines)
