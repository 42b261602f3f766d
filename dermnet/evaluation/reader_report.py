"""Reader-study report: the results of ``compute_reader_study`` as Markdown, CSV and JSON.

Owns the layout: a Table-4-like accuracy table (rows: readers, their mean, the pooled
answers, the model; columns: each condition and the change), readers against the model,
and the supplementary-style per-class TPR/TNR tables. ``save_reader_report`` writes
``readers.json``, ``readers.md`` and ``readers.csv`` all at once or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from dermnet.data.vocabulary import CLASS_NAMES, CLASSES
from dermnet.evaluation.stats import to_json_ready

CSV_COLUMNS = (
    "reader_id", "condition", "answers", "correct", "accuracy", "accuracy_low",
    "accuracy_high", "error_rate", "balanced_accuracy",
    *(f"tpr_{code}" for code in CLASSES), *(f"tnr_{code}" for code in CLASSES),
    "model_accuracy", "reader_only_correct", "model_only_correct", "p_value_vs_model",
)


def save_reader_report(results: dict, out_dir) -> Path:
    """Write the three report files into ``out_dir``; a failure leaves no partial report."""
    texts = {"readers.json": json.dumps(to_json_ready(results), indent=2, allow_nan=False),
             "readers.md": format_markdown(results), "readers.csv": format_csv(results)}
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for name, text in texts.items():
            (staging / name).write_text(text + "\n", encoding="utf-8")
        if not out_dir.exists():
            os.replace(staging, out_dir)  # one rename: the folder appears complete
        else:
            for name in texts:
                os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def format_markdown(results: dict) -> str:
    """The whole report as Markdown: summary line, accuracy table, model, per-class TPR."""
    sections = ["# Reader study", _format_summary(results), _format_table_4(results),
                _format_accuracy_table(results)]
    if results["model"] is not None:
        sections.append(_format_model_comparison(results))
    sections += [_format_class_table(results, condition) for condition in results["conditions"]]
    if results["change"] is not None:
        sections.append(_format_class_change(results))
    return "\n\n".join(sections)


def format_csv(results: dict) -> str:
    """One row per reader x condition (``CSV_COLUMNS``); undefined values are blank."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for reader, conditions in results["readers"].items():
        for condition, scores in conditions.items():
            writer.writerow({key: _csv_value(value)
                             for key, value in _csv_row(reader, condition, scores).items()})
    return buffer.getvalue().rstrip("\n")


def _csv_row(reader: str, condition: str, scores: dict) -> dict:
    accuracy, per_class = scores["accuracy"], scores["per_class"]
    row = {"reader_id": reader, "condition": condition, "answers": scores["answers"],
           "correct": scores["correct"], "accuracy": accuracy["value"],
           "accuracy_low": accuracy["low"], "accuracy_high": accuracy["high"],
           "error_rate": scores["error_rate"], "balanced_accuracy": scores["balanced_accuracy"]}
    row.update({f"tpr_{code}": per_class[code]["sensitivity"] for code in CLASSES})
    row.update({f"tnr_{code}": per_class[code]["specificity"] for code in CLASSES})
    versus = scores.get("versus_model", {})
    row.update({"model_accuracy": versus.get("model_accuracy"),
                "reader_only_correct": versus.get("reader_only"),
                "model_only_correct": versus.get("model_only"),
                "p_value_vs_model": versus.get("p_value")})
    return row


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


# --- Markdown sections -----------------------------------------------------------------------


def _format_summary(results: dict) -> str:
    counts = results["counts"]
    parts = [f"{condition}: {counts[condition]['readers']} readers, "
             f"{counts[condition]['images']} images, {counts[condition]['answers']} answers"
             for condition in results["conditions"]]
    line = (f"**{counts['readers']} readers, {counts['images']} images, {counts['answers']} "
            f"answers scored** ({'; '.join(parts)}).")
    limit = results["time_limit"]
    if limit is None:
        line += " No time limit: every answer is scored (0 excluded)."
    else:
        excluded = ", ".join(f"{condition} {counts[condition]['excluded']}"
                             for condition in ("unassisted", "assisted") if condition in counts)
        line += (f" {counts['excluded']} answers excluded as slower than the {limit:g} s time "
                 f"limit ({excluded}).")
    model = results["sources"]["model"]
    line += f" Model: {model}, argmax, on the same images." if model else " No model given."
    return line


def _format_accuracy_table(results: dict) -> str:
    conditions = results["conditions"]
    header = ["Reader", *(f"{condition.capitalize()} accuracy % (95% CI)"
                          for condition in conditions)]
    change = results["change"]
    if change is not None:
        header += ["Change (points)", "Paired test (McNemar, same images)"]
    rows = [_reader_row(results, reader) for reader in results["readers"]]
    rows.append(_mean_row(results))
    rows.append(_pooled_row(results))
    if results["model"] is not None:
        rows.append(["Model (argmax)", *(_accuracy(results["model"][condition]["accuracy"])
                                         for condition in conditions), "—", "—"][:len(header)])
    lines = ["## Accuracy by reader", "", *_table(header, rows)]
    if change is not None:
        lines += ["", f"Across readers: {_describe_wilcoxon(change['across_readers'])}"]
    return "\n".join(lines)


def _format_table_4(results: dict) -> str:
    """The paper's Table 4: the model, the readers, the readers with the model's output."""
    names = {"unassisted": "Readers (mean of readers)",
             "assisted": "Readers + model output (mean of readers)"}
    rows = []
    for condition in results["conditions"]:
        if results["model"] is not None:
            accuracy = results["model"][condition]["accuracy"]["value"]
            rows.append([f"Model (argmax), the {condition} images", _percent(accuracy),
                         _percent(1 - accuracy)])
        accuracy = results["mean_of_readers"][condition]["accuracy"]
        rows.append([names[condition], _percent(accuracy), _percent(1 - accuracy)])
    return "\n".join(["## Table 4 layout", "", *_table(["", "Accuracy %", "Error rate %"], rows)])


def _reader_row(results: dict, reader: str) -> list[str]:
    scores = results["readers"][reader]
    cells = [reader]
    for condition in results["conditions"]:
        entry = scores.get(condition)
        cells.append(f"{_accuracy(entry['accuracy'])}, n={entry['answers']}" if entry else "—")
    if results["change"] is not None:
        change = results["change"]["readers"][reader]
        if change["change"] is None:
            cells += ["—", change["note"]]
        else:
            cells += [_points(change["change"]), _describe_mcnemar(change["test"])]
    return cells


def _mean_row(results: dict) -> list[str]:
    cells = ["Mean of readers"]
    for condition in results["conditions"]:
        mean = results["mean_of_readers"][condition]
        spread = "" if math.isnan(mean["accuracy_sd"]) else f" (sd {100 * mean['accuracy_sd']:.1f})"
        cells.append(f"{_percent(mean['accuracy'])}{spread}, {mean['readers']} readers")
    if results["change"] is not None:
        wilcoxon = results["change"]["across_readers"]
        cells += [_points(wilcoxon["mean_change"]), "Wilcoxon, below"]
    return cells


def _pooled_row(results: dict) -> list[str]:
    cells = ["Pooled answers"]
    for condition in results["conditions"]:
        pooled = results["pooled"][condition]
        cells.append(f"{_accuracy(pooled['accuracy'])}, n={pooled['num_images']}")
    if results["change"] is not None:
        pooled = results["change"]["pooled"]
        cells += [_points(pooled["change"]), _describe_mcnemar(pooled["test"])]
    return cells


def _format_model_comparison(results: dict) -> str:
    header = ["Reader", "Condition", "Answers", "Reader accuracy %", "Model accuracy %",
              "Only reader right", "Only model right", "McNemar p"]
    rows = []
    for reader, conditions in results["readers"].items():
        for condition, scores in conditions.items():
            versus = scores["versus_model"]
            rows.append([reader, condition, str(scores["answers"]),
                         _percent(scores["accuracy"]["value"]),
                         _percent(versus["model_accuracy"]), str(versus["reader_only"]),
                         str(versus["model_only"]), _p(versus["p_value"])])
    return "\n".join(["## Readers versus the model (each reader's own images)", "",
                      *_table(header, rows)])


def _format_class_table(results: dict, condition: str) -> str:
    pooled = results["pooled"][condition]["per_class"]
    mean = results["mean_of_readers"][condition]["sensitivity"]
    model = None if results["model"] is None else results["model"][condition]["per_class"]
    header = ["Class", "Answers of the class", "Pooled TPR (95% CI)", "Pooled TNR (95% CI)",
              "Mean reader TPR"]
    header += [] if model is None else ["Model TPR", "Model TNR"]
    rows = []
    for code in CLASSES:
        row = [f"{code} ({CLASS_NAMES[code]})", str(pooled[code]["support"]),
               _rate_interval(pooled[code]["sensitivity"]),
               _rate_interval(pooled[code]["specificity"]), _rate(mean[code])]
        if model is not None:
            row += [_rate(model[code]["sensitivity"]["value"]),
                    _rate(model[code]["specificity"]["value"])]
        rows.append(row)
    readers = _reader_class_rows(results, condition)
    return "\n".join([f"## Per-class TPR and TNR, {condition}", "", *_table(header, rows), "",
                      *_table(["Reader", *(f"TPR {code}" for code in CLASSES),
                               "Balanced accuracy"], readers)])


def _reader_class_rows(results: dict, condition: str) -> list[list[str]]:
    rows = []
    for reader, conditions in results["readers"].items():
        if condition in conditions:
            per_class = conditions[condition]["per_class"]
            rows.append([reader, *(_rate(per_class[code]["sensitivity"]) for code in CLASSES),
                         _rate(conditions[condition]["balanced_accuracy"])])
    return rows


def _format_class_change(results: dict) -> str:
    header = ["Class", "TPR unassisted", "TPR assisted", "Change", "Paired test (McNemar)"]
    rows = []
    for code, change in results["change"]["per_class"].items():
        rows.append([code, _rate(change["unassisted"]), _rate(change["assisted"]),
                     _signed(change["change"]), _describe_mcnemar(change["test"])])
    return "\n".join(["## Per-class TPR change, assisted vs unassisted (pooled answers)", "",
                      *_table(header, rows)])


# --- formatting ------------------------------------------------------------------------------


def _describe_mcnemar(test: dict) -> str:
    if test["p_value"] is None:
        return test["note"]
    return (f"p={_p(test['p_value'])} ({test['assisted_only']} right only assisted, "
            f"{test['unassisted_only']} only unassisted, of {test['pairs']} pairs)")


def _describe_wilcoxon(test: dict) -> str:
    name = f"{test['test']} on per-reader accuracy"
    if test["p_value"] is None:
        return f"{name}: {test['note']}."
    return (f"{name} (assisted - unassisted, {test['readers']} readers, median change "
            f"{_points(test['median_change'])} points): W={test['statistic']:g}, "
            f"p={_p(test['p_value'])}.")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"
                    for row in rows]


def _accuracy(entry: dict) -> str:
    if math.isnan(entry["low"]):
        return _percent(entry["value"])
    return f"{_percent(entry['value'])} ({_percent(entry['low'])}-{_percent(entry['high'])})"


def _rate_interval(entry: dict) -> str:
    if math.isnan(entry["value"]):
        return "n/a"
    return f"{_rate(entry['value'])} ({_rate(entry['low'])}-{_rate(entry['high'])})"


def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _points(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:+.1f}"


def _rate(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def _signed(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.2f}"


def _p(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3g}"
