"""``evaluate.py compare RUN_DIR...``: evaluated runs side by side, as in the first study's
Tables 2 and 3, with the differences it tested.

Runs are grouped into configurations by the ``--by`` factors (backbone, resolution,
clinical); the folds of a configuration give mean +/- sd accuracy and error rate. Tests:

- the paper's: Mann-Whitney U between the per-backbone mean accuracies of two resolutions
  (at each clinical setting) and of without vs with clinical data (at each resolution);
- per backbone: Mann-Whitney U between the fold accuracies of the two settings;
- paired on the same images: for two runs that differ in one factor only and scored the
  same images, McNemar's exact test on which images each got right.
A test without enough values says so instead of printing a number.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.evaluation.report import to_markdown
from dermnet.evaluation.stats import mann_whitney, mcnemar
from dermnet.runs.tasks import DEFAULT_TASK, get_task

FACTORS = ("backbone", "resolution", "clinical")
TESTED = ("resolution", "clinical")  # the factors the paper tested
RESOLUTION_LABELS = {(224, 300): "low", (450, 600): "high"}


class CompareError(ValueError):
    """A run cannot be compared (message names the run and what is missing)."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    run_dir: Path
    backbone: str
    resolution: str          # "low" (224x300), "high" (450x600) or "HxW"
    clinical: str            # "with" or "without" clinical data
    fold: int
    split: str
    accuracy: float          # percent, as in the paper's tables
    balanced_accuracy: float  # percent
    correct: pd.Series | None  # per image id: right or wrong (from per_image.csv)
    synthetic: bool | None = None  # evaluated on the SYNTHETIC phantom (None: not recorded)

    def factor(self, name: str) -> str:
        return getattr(self, name)


def load_results(run_dirs) -> list[RunResult]:
    """Every run's metrics.json (written by ``evaluate.py RUN_DIR``), checked."""
    results, problems = [], []
    for run_dir in map(Path, run_dirs):
        path = run_dir / "metrics.json"
        if not path.is_file():
            problems.append(f"{run_dir}: no metrics.json; run `evaluate.py {run_dir}` first")
            continue
        results.append(_load_result(run_dir, json.loads(path.read_text())))
    if problems:
        raise CompareError("\n".join(problems))
    splits = {result.split for result in results}
    if len(splits) > 1:
        raise CompareError(f"the runs were evaluated on different splits ({sorted(splits)}); "
                           "compare runs evaluated on the same split")
    return results


def _load_result(run_dir: Path, metrics: dict) -> RunResult:
    model = metrics["model"]
    size = tuple(model["image_size"])
    per_image = run_dir / "per_image.csv"
    correct = (pd.read_csv(per_image).set_index("image")["correct"].astype(bool)
               if per_image.is_file() else None)
    return RunResult(run_dir, model["backbone"],
                     RESOLUTION_LABELS.get(size, f"{size[0]}x{size[1]}"),
                     "with" if model["clinical"] else "without", int(model["fold"]),
                     metrics["split"], 100 * metrics["accuracy"]["value"],
                     100 * metrics["balanced_accuracy"]["value"], correct,
                     metrics.get("synthetic"))


def parse_factors(text: str) -> tuple[str, ...]:
    factors = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [factor for factor in factors if factor not in FACTORS]
    if unknown or not factors:
        raise CompareError(f"--by takes a comma-separated subset of {', '.join(FACTORS)}; "
                           f"got {text!r}")
    return factors


def aggregate(results: list[RunResult], by=FACTORS) -> pd.DataFrame:
    """One row per configuration: its factors, the folds, mean and sd of the metrics."""
    frame = _result_frame(results)
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["runs"] = len(group)
        row["folds"] = ",".join(str(fold) for fold in sorted(group["fold"]))
        for metric in ("accuracy", "error_rate", "balanced_accuracy"):
            row[f"{metric}_mean"] = group[metric].mean()
            row[f"{metric}_sd"] = group[metric].std(ddof=1) if len(group) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _result_frame(results: list[RunResult]) -> pd.DataFrame:
    frame = pd.DataFrame([{**{factor: result.factor(factor) for factor in FACTORS},
                           "fold": result.fold, "accuracy": result.accuracy,
                           "balanced_accuracy": result.balanced_accuracy}
                          for result in results])
    frame["error_rate"] = 100 - frame["accuracy"]
    return frame


def paper_tables(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The paper's layout: per clinical setting, backbones down, resolutions across, each
    with accuracy and error rate (mean +/- sd over folds, percent)."""
    if not {"backbone", "resolution"} <= set(summary.columns):
        return {"Configurations": _flat_table(summary)}
    tables = {}
    settings = (sorted(summary["clinical"].unique(), key=lambda level: level != "without")
                if "clinical" in summary else [None])  # without first: Table 2, then 3
    for setting in settings:
        part = summary if setting is None else summary[summary["clinical"] == setting]
        title = "All runs" if setting is None else f"{setting.capitalize()} clinical data"
        table = part.pivot(index="backbone", columns="resolution",
                           values=["accuracy_mean", "accuracy_sd", "error_rate_mean",
                                   "error_rate_sd"])
        columns = {}
        for resolution in sorted(part["resolution"].unique(), key=_resolution_order):
            for metric, label in (("accuracy", "accuracy"), ("error_rate", "error rate")):
                columns[f"{resolution} {label}"] = [
                    _mean_sd(table.loc[backbone, (f"{metric}_mean", resolution)],
                             table.loc[backbone, (f"{metric}_sd", resolution)])
                    for backbone in table.index]
        tables[title] = pd.DataFrame({"network": table.index, **columns})
    return tables


def _flat_table(summary: pd.DataFrame) -> pd.DataFrame:
    factors = [factor for factor in FACTORS if factor in summary]
    table = summary[factors + ["runs"]].copy()
    for metric, label in (("accuracy", "accuracy"), ("error_rate", "error rate"),
                          ("balanced_accuracy", "balanced accuracy")):
        table[label] = [_mean_sd(mean, sd) for mean, sd in
                        zip(summary[f"{metric}_mean"], summary[f"{metric}_sd"])]
    return table


def _resolution_order(label: str) -> tuple:
    return ({"low": 0, "high": 1}.get(label, 2), label)


def _mean_sd(mean: float, sd: float) -> str:
    if isinstance(mean, float) and math.isnan(mean):
        return "-"
    return f"{mean:.2f}" if math.isnan(sd) else f"{mean:.2f} ± {sd:.2f}"


# --- tests ---------------------------------------------------------------------------------


def compute_tests(results: list[RunResult], by=FACTORS) -> list[dict]:
    """Every test the paper made that these runs support, and why the others cannot be made."""
    tests = []
    for factor in (factor for factor in TESTED if factor in by):
        for level_a, level_b in _level_pairs(results, factor):
            tests += _across_backbones(results, factor, level_a, level_b)
            tests += _per_backbone(results, factor, level_a, level_b)
            tests += _paired_on_images(results, factor, level_a, level_b)
    return tests


def _level_pairs(results, factor: str) -> list[tuple[str, str]]:
    levels = sorted({result.factor(factor) for result in results},
                    key=_resolution_order if factor == "resolution" else lambda level: level)
    if factor == "clinical":
        levels.sort(key=lambda level: level != "without")  # without first, as in the paper
    return list(itertools.combinations(levels, 2))


def _other_factor(factor: str) -> str:
    return "clinical" if factor == "resolution" else "resolution"


def _across_backbones(results, factor, level_a, level_b) -> list[dict]:
    """The paper's test: per-backbone mean accuracies under two levels of ``factor``."""
    other = _other_factor(factor)
    tests = []
    for setting in sorted({result.factor(other) for result in results}):
        samples = [_backbone_means(results, factor, level, other, setting)
                   for level in (level_a, level_b)]
        tests.append(_mann_whitney_entry(
            "across backbones (the paper's test)", factor, level_a, level_b,
            f"{other} {setting}", *samples, unit="backbones"))
    return tests


def _backbone_means(results, factor, level, other, setting) -> list[float]:
    by_backbone: dict[str, list[float]] = {}
    for result in results:
        if result.factor(factor) == level and result.factor(other) == setting:
            by_backbone.setdefault(result.backbone, []).append(result.accuracy)
    return [float(np.mean(values)) for values in by_backbone.values()]


def _per_backbone(results, factor, level_a, level_b) -> list[dict]:
    other = _other_factor(factor)
    tests = []
    keys = sorted({(result.backbone, result.factor(other)) for result in results})
    for backbone, setting in keys:
        samples = [[result.accuracy for result in results
                    if (result.backbone, result.factor(other)) == (backbone, setting)
                    and result.factor(factor) == level] for level in (level_a, level_b)]
        if samples[0] and samples[1]:
            tests.append(_mann_whitney_entry(
                "per backbone, across folds", factor, level_a, level_b,
                f"{backbone}, {other} {setting}", *samples, unit="folds"))
    return tests


def _mann_whitney_entry(kind, factor, level_a, level_b, within, a, b, unit) -> dict:
    entry = {"test": "Mann-Whitney U", "kind": kind, "factor": factor, "a": level_a,
             "b": level_b, "within": within, "n_a": len(a), "n_b": len(b),
             "mean_a": float(np.mean(a)) if a else math.nan,
             "mean_b": float(np.mean(b)) if b else math.nan}
    if min(len(a), len(b)) < 2:
        return {**entry, "u": math.nan, "p_value": math.nan,
                "note": f"cannot be tested: needs at least 2 {unit} on each side, has "
                        f"{len(a)} and {len(b)}"}
    result = mann_whitney(a, b)
    entry.update(u=result["u"], p_value=result["p_value"])
    smallest = 2 / math.comb(len(a) + len(b), len(a))  # exact two-sided, no ties
    if smallest > 0.05:
        entry["note"] = (f"with {len(a)} and {len(b)} {unit} no difference can reach "
                         f"p < 0.05 (smallest possible p = {smallest:.2f})")
    return entry


def _paired_on_images(results, factor, level_a, level_b) -> list[dict]:
    """McNemar for two runs that differ only in ``factor`` and scored the same images."""
    tests = []
    others = [name for name in FACTORS if name != factor]
    for first, second in itertools.product(results, results):
        if (first.factor(factor), second.factor(factor)) != (level_a, level_b):
            continue
        if any(first.factor(name) != second.factor(name) for name in others) or \
                first.fold != second.fold or first.correct is None or second.correct is None:
            continue
        if set(first.correct.index) != set(second.correct.index):
            continue
        correct_b = second.correct.loc[first.correct.index]
        result = mcnemar(first.correct.to_numpy(), correct_b.to_numpy())
        tests.append({"test": "McNemar (exact)", "kind": "paired on the same images",
                      "factor": factor, "a": level_a, "b": level_b,
                      "within": f"{first.backbone}, fold {first.fold}, "
                                + ", ".join(f"{name} {first.factor(name)}" for name in others
                                            if name != "backbone"),
                      "n_images": int(first.correct.size),
                      "mean_a": first.accuracy, "mean_b": second.accuracy,
                      "right_only_a": result["a_only"], "right_only_b": result["b_only"],
                      "p_value": result["p_value"]})
    return tests


# --- report --------------------------------------------------------------------------------


def compare_runs(run_dirs, by=FACTORS, out: str | Path | None = None, log=print) -> dict:
    """Load, aggregate, test, and write ``report.md``, ``configurations.csv``, ``tests.csv``
    and one CSV per paper-style table into ``out``; returns the pieces."""
    if _photo_runs(run_dirs):
        return _compare_photo_runs(run_dirs, out, log)
    results = load_results(run_dirs)
    summary = aggregate(results, by)
    tables = paper_tables(summary)
    tests = compute_tests(results, by)
    markdown = format_report(results, tables, tests)
    if out is not None:
        _write_report(Path(out), summary, tables, tests, markdown)
    log(markdown)
    return {"summary": summary, "tables": tables, "tests": tests, "markdown": markdown}


def _photo_runs(run_dirs) -> bool:
    """True when every run is a clinical-photo run; a mix of tasks is an error."""
    tasks = set()
    for run_dir in map(Path, run_dirs):
        path = run_dir / "metrics.json"
        if path.is_file():
            tasks.add(json.loads(path.read_text()).get("model", {}).get("task", DEFAULT_TASK))
    if len(tasks) > 1:
        raise CompareError("the runs mix HAM10000 and clinical-photo runs; compare each "
                           "task's runs separately")
    return len(tasks) == 1 and get_task(tasks.pop()).multi_task


def _compare_photo_runs(run_dirs, out, log) -> dict:
    from dermnet.evaluation import photos

    missing = [str(run_dir) for run_dir in map(Path, run_dirs)
               if not (run_dir / "metrics.json").is_file()]
    if missing:
        raise CompareError("no metrics.json in " + ", ".join(missing) +
                           "; run `evaluate.py RUN_DIR` first")
    results = [photos.load_photo_result(Path(run_dir)) for run_dir in run_dirs]
    if len({result["split"] for result in results}) > 1:
        raise CompareError("the runs were evaluated on different splits; compare runs "
                           "evaluated on the same split")
    tables, tests = photos.compare_photo_runs(results)
    markdown = photos.format_photo_comparison(tables, tests, results[0]["split"])
    if out is not None:
        _write_report(Path(out), pd.DataFrame([{key: result[key] for key in
                                               ("run_dir", "variant", "version", "split")}
                                              for result in results]),
                      tables, tests, markdown)
    log(markdown)
    return {"tables": tables, "tests": tests, "markdown": markdown}


def describe_data(results) -> str:
    """"SYNTHETIC", "REAL" or a warning of a mix, as the per-run reports label their data."""
    kinds = {result.synthetic for result in results}
    if kinds == {True}:
        return "SYNTHETIC"
    if kinds == {False}:
        return "REAL"
    return "MIXED (SYNTHETIC and REAL, or unrecorded)" if True in kinds else "unrecorded"


def format_report(results, tables: dict[str, pd.DataFrame], tests: list[dict]) -> str:
    split = results[0].split if results else "?"
    data = describe_data(results)
    lines = [f"# Comparison of {len(results)} runs ({split} split): {data} data", "",
             "Accuracy and error rate in percent, mean ± sd over folds."]
    if data == "SYNTHETIC":
        lines += ["", "**SYNTHETIC phantom data**: these figures test the code, not a "
                      "diagnosis; they say nothing about real lesions."]
    for title, table in tables.items():
        lines += ["", f"## {title}", "", to_markdown(table)]
    lines += ["", "## Tests", ""]
    lines += [_format_test(test, data) for test in tests] or [
        "No factor varies between the runs."]
    return "\n".join(lines)


def _format_test(test: dict, data: str = "") -> str:
    a, b = (_level_text(test["factor"], test[side]) for side in ("a", "b"))
    head = f"- {a} vs {b} ({test['within']}; {test['kind']}): "
    if test["test"].startswith("McNemar"):
        return (head + f"{test['mean_a']:.2f}% vs {test['mean_b']:.2f}% on "
                f"{test['n_images']} {data + ' ' if data in ('SYNTHETIC', 'REAL') else ''}"
                f"images; right only {a}: {test['right_only_a']}, only "
                f"{b}: {test['right_only_b']}; McNemar exact p = {test['p_value']:.3g}")
    if math.isnan(test["p_value"]):
        return head + test["note"]
    text = (head + f"{test['mean_a']:.2f}% vs {test['mean_b']:.2f}% (n = {test['n_a']}, "
            f"{test['n_b']}); Mann-Whitney U = {test['u']:.1f}, p = {test['p_value']:.3g}")
    return text + (f"; {test['note']}" if "note" in test else "")


def _level_text(factor: str, level: str) -> str:
    return f"{level} clinical data" if factor == "clinical" else f"{level} resolution"


def _write_report(out: Path, summary, tables, tests, markdown: str) -> None:
    """All files are produced in memory first, then written beside and renamed."""
    contents = {"report.md": markdown + "\n",
                "configurations.csv": summary.to_csv(index=False),
                "tests.csv": pd.DataFrame(tests).to_csv(index=False)}
    for title, table in tables.items():
        name = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
        contents[f"table_{name}.csv"] = table.to_csv(index=False)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        partial = out / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)
