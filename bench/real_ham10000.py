"""Real HAM10000 images end to end: the runs behind the README's real-data figures.

Each experiment trains and scores with the project's own commands, exactly as a user runs
them (``train.py``, ``evaluate.py`` in subprocesses), into ``--runs``; a finished run or
evaluation is not repeated, so an interrupted experiment picks up where it stopped. The
figures are collected from the runs' own ``metrics.json`` and ``history.csv`` into
``bench/results/real_ham10000.json`` and printed as Markdown tables.

    python bench/real_ham10000.py cpu-real     # the cpu-real preset, image-only vs clinical
    python bench/real_ham10000.py dermamnist   # MedMNIST's protocol (28x28, image split) and
                                               # the same settings on the lesion-grouped split
    python bench/real_ham10000.py proxy        # leave-rosendahl-out: one change at a time
    python bench/real_ham10000.py report       # tables of whatever has finished
    python bench/real_ham10000.py proxy --only proxy-baseline --core 0 &   # two at once,
    python bench/real_ham10000.py proxy --only proxy-shades-of-gray --core 1 # a core each

    options: --data-dir DIR (default $DERMNET_HAM10000_IMAGES or ../shared/data/ham10000_200x150)
             --sources-csv CSV (the Dataverse metadata with the `dataset` column, for proxy)
             --runs DIR (default runs/real)  --tta N (default 8)  --dry-run

Every figure comes from real images: HAM10000 at 200x150 (a third of the original 600x450),
which is the studies' own training data, so no figure here is an external test; the proxy's
held-out collection (rosendahl, Australia) is the closest this data offers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "real_ham10000.json"
CURVE_PLOT = ROOT / "docs" / "images" / "real_ham10000_curve.png"
CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str                        # folder under --runs
    train: tuple[str, ...]           # train.py arguments (besides --data-dir and --out)
    splits: tuple[str, ...] = ("test",)  # evaluate.py --split for each
    note: str = ""                   # what this run changes, for the tables


PROXY = ("--preset", "cpu-real", "--holdout-source", "rosendahl")
SOG = ("--set", "model.colour_constancy=shades_of_gray")
LESION_CROP = ("--set", "data.lesion_crop=0.25")
# Stronger photometric and scale augmentation: other banks' cameras, light and zoom.
CAMERA_AUGMENT = ("--set", "data.augment.brightness=0.2", "--set", "data.augment.contrast=0.3",
                  "--set", "data.augment.saturation=0.3", "--set", "data.augment.hue=0.05",
                  "--set", "data.augment.zoom=0.67,1.5", "--set",
                  "data.augment.blur_probability=0.2")
BOTH_SPLITS = ("test", "holdout", "holdout@1")  # @1: the same split without TTA
# The classes of the external image bank: every run is also scored by the external
# scorer (argmax over the classes present) on its test images of these classes, and a proxy
# run on rosendahl's, so that its figures sit beside the external check's on one footing.
THREE_CLASSES = ("mel", "nv", "bkl")
EXPERIMENTS: dict[str, tuple[Run, ...]] = {
    "cpu-real": (
        Run("cpu-real-image", ("--preset", "cpu-real"), note="image only"),
        Run("cpu-real-clinical", ("--preset", "cpu-real", "--clinical"),
            note="image + age, sex, site"),
    ),
    "dermamnist": (
        # MedMNIST's rows are single forward passes: "test@1" is the figure to set beside them.
        Run("dermamnist-image-split", ("--preset", "dermamnist"), ("test", "test@1"),
            note="MedMNIST protocol: 28x28, image-level random 7:1:2 split (leaky)"),
        Run("dermamnist-lesion-split",
            ("--preset", "dermamnist", "--set", "data.split_by=lesion"), ("test", "test@1"),
            note="the same settings, lesion-grouped split"),
    ),
    # Leave-one-source-out: trained on the Vienna collections, scored on their own test split
    # and on all of rosendahl (Australia); one change at a time against the baseline.
    "proxy": (
        Run("proxy-baseline", PROXY, BOTH_SPLITS, note="cpu-real preset"),
        Run("proxy-shades-of-gray", PROXY + SOG, BOTH_SPLITS,
            note="+ Shades of Gray colour constancy"),
        Run("proxy-lesion-crop", PROXY + SOG + LESION_CROP, BOTH_SPLITS,
            note="+ lesion-centred crop (margin 0.25)"),
        Run("proxy-camera-augment", PROXY + SOG + CAMERA_AUGMENT, BOTH_SPLITS,
            note="+ colour, blur and wider zoom augmentation"),
    ),
}
# Pairs scored on the same test images, compared with evaluate.py compare (McNemar's test on
# the images one run classifies right and the other wrong: the first study's Tables 2 and 3).
COMPARISONS: dict[str, tuple[str, str]] = {"cpu-real": ("cpu-real-image", "cpu-real-clinical")}


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    names = list(EXPERIMENTS) if args.experiment == "report" else [args.experiment]
    if args.experiment != "report":
        for run in EXPERIMENTS[args.experiment]:
            if not args.only or run.name in args.only.split(","):
                train_and_score(run, args)
    results = {name: [collect(run, args) for run in EXPERIMENTS[name]] for name in names}
    for name in names:
        if name in COMPARISONS:
            results[f"{name}-mcnemar"] = compare(COMPARISONS[name], args)
    save_results(results, args)
    for name in names:
        print(format_table(name, results[name]))
        print(format_per_class(name, results[name]))
        print(format_three_class(name, results[name]))
        if results.get(f"{name}-mcnemar"):
            print(format_mcnemar(results[f"{name}-mcnemar"]))
    plot_curves([row for rows in results.values() for row in rows], CURVE_PLOT)
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "report"])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--sources-csv", type=Path, default=SHARED / "HAM10000_metadata.csv",
                        help="metadata with the `dataset` column (for the proxy)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "real")
    parser.add_argument("--tta", type=int, default=8, help="evaluate.py --tta (default 8)")
    parser.add_argument("--only", metavar="RUN[,RUN]", help="only these runs of the experiment")
    parser.add_argument("--core", type=int, metavar="K",
                        help="pin the commands to CPU core K with one TensorFlow thread: two "
                             "experiments side by side on a 2-core machine, one core each, "
                             "train about 20%% more images per second in all than one after "
                             "the other on both cores")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    return parser


def default_data_dir() -> Path:
    return Path(os.environ.get("DERMNET_HAM10000_IMAGES") or SHARED / "ham10000_200x150")


def train_and_score(run: Run, args) -> None:
    out = args.runs / run.name
    train = [sys.executable, str(ROOT / "train.py"), *run.train, "--data-dir",
             str(args.data_dir), "--out", str(out)]
    if "--holdout-source" in run.train:
        train += ["--sources-csv", str(args.sources_csv)]
    if not (out / "finished.json").exists():
        execute(train, args)
    for entry in run.splits:
        split, tta = parse_split(entry, args.tta)
        if not (evaluation_dir(out, entry) / "metrics.json").exists():
            execute([sys.executable, str(ROOT / "evaluate.py"), str(out), "--split", split,
                     "--tta", str(tta), "--out", str(evaluation_dir(out, entry))], args)
    for split in three_class_splits(run):
        bank = three_class_bank(out, split, args)
        if bank is not None and not (out / f"external-{bank.name}" / "metrics.json").exists():
            execute([sys.executable, str(ROOT / "evaluate.py"), str(out), "--external",
                     str(bank), "--tta", str(args.tta)], args)


def three_class_splits(run: Run) -> list[str]:
    return [split for split in ("test", "holdout") if split in run.splits]


def bank_name(run_name: str, split: str) -> str:
    """The folder of a run's THREE_CLASSES images of ``split``; evaluate.py --external
    writes its figures into RUN/external-<this name>/."""
    return f"{run_name}-{split}-{'-'.join(THREE_CLASSES)}"


def three_class_bank(run_dir: Path, split: str, args) -> Path | None:
    """A folder in the HAM10000 layout with the run's ``split`` images of THREE_CLASSES
    (symbolic links to the data folder's files), for ``evaluate.py --external``; None before
    the run has its splits.csv."""
    import pandas as pd

    if not (run_dir / "splits.csv").exists():
        return None
    bank = args.runs / "banks" / bank_name(run_dir.name, split)
    metadata = bank / "HAM10000_metadata.csv"
    if metadata.exists() or args.dry_run:
        return bank
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    chosen = set(splits.loc[splits["fold"] == split, "image_id"])
    rows = pd.read_csv(args.data_dir / "HAM10000_metadata.csv", dtype=str)
    rows = rows[rows["image_id"].isin(chosen) & rows["dx"].isin(THREE_CLASSES)]
    (bank / "images").mkdir(parents=True, exist_ok=True)
    for image_id in rows["image_id"]:
        link = bank / "images" / f"{image_id}.jpg"
        if not link.is_symlink():
            link.symlink_to((args.data_dir / "images" / f"{image_id}.jpg").resolve())
    partial = bank / ".HAM10000_metadata.csv.partial"
    rows.to_csv(partial, index=False)
    partial.replace(metadata)  # written last: a bank with metadata is complete
    return bank


def parse_split(entry: str, default_tta: int) -> tuple[str, int]:
    """"holdout@1" -> ("holdout", 1); "test" -> ("test", the default TTA)."""
    split, _, tta = entry.partition("@")
    return split, int(tta) if tta else default_tta


def execute(command: list[str], args) -> None:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if args.core is not None:
        command = ["taskset", "-c", str(args.core), *command]
        environment |= {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    print("$ " + " ".join(command), flush=True)
    if not args.dry_run:
        subprocess.run(command, check=True, cwd=ROOT, env=environment)


def compare(pair: tuple[str, str], args) -> list[dict]:
    """McNemar's test of two runs on the same test images (``evaluate.py compare``), run once
    both are scored; [] until then."""
    runs = [args.runs / name for name in pair]
    if not all((run / "metrics.json").exists() for run in runs):
        return []
    out = args.runs / f"{pair[0]}-vs-{pair[1]}"
    if not (out / "tests.csv").exists():
        execute([sys.executable, str(ROOT / "evaluate.py"), "compare", "--out", str(out),
                 *map(str, runs)], args)
    if args.dry_run:
        return []
    import pandas as pd

    tests = pd.read_csv(out / "tests.csv")
    tests = tests[tests["test"].str.startswith("McNemar")]
    return [{key: (value.item() if hasattr(value, "item") else value)
             for key, value in row.items()} for row in tests.to_dict("records")]


def evaluation_dir(run_dir: Path, entry: str) -> Path:
    """Where evaluate.py writes ``entry``'s figures: the test split in the run directory as
    usual, the others (and other TTA settings) in evaluation-<split>[-tta<N>]/."""
    return run_dir if entry == "test" else run_dir / f"evaluation-{entry.replace('@', '-tta')}"


# --- collecting ---------------------------------------------------------------------------


def collect(run: Run, args) -> dict:
    """The run's figures from its own files; missing parts are reported as missing."""
    out = args.runs / run.name
    row = {"run": run.name, "note": run.note, "train_args": list(run.train),
           "finished": (out / "finished.json").exists()}
    if row["finished"]:
        row["training"] = training_summary(out)
    for split in run.splits:
        path = evaluation_dir(out, split) / "metrics.json"
        if path.exists():
            row[split] = split_summary(json.loads(path.read_text()))
    for split in three_class_splits(run):
        path = out / f"external-{bank_name(run.name, split)}" / "metrics.json"
        if path.exists():
            row[f"{split}-{'/'.join(THREE_CLASSES)}"] = three_class_summary(
                json.loads(path.read_text()))
    return row


def three_class_summary(metrics: dict) -> dict:
    """The external scorer's headline: balanced accuracy over the classes present (restricted
    argmax), mel-vs-rest AUC, mel sensitivity, and the share of predictions on absent classes."""
    present = metrics["present_classes"]
    absent = metrics["seven_way"]["absent_predictions"]
    return {"n": metrics["num_images"],
            "balanced_accuracy": interval(present["balanced_accuracy"]),
            "mel_auc": interval(metrics["auc"]["mel_vs_rest"]),
            "mel_sensitivity": interval(metrics["mel_sensitivity"]["present_classes"]),
            "absent_share": rounded(absent.get("value"))}


def training_summary(run_dir: Path) -> dict:
    """Training minutes and the curve of validation balanced accuracy against them."""
    import pandas as pd

    history = pd.read_csv(run_dir / "history.csv").sort_values("epoch")
    minutes = history["epoch_seconds"].cumsum() / 60 if "epoch_seconds" in history else None
    finished = json.loads((run_dir / "finished.json").read_text())
    curve = [] if minutes is None else [
        {"epoch": int(epoch) + 1, "minutes": round(float(minute), 2),
         "val_balanced_accuracy": round(float(value), 4)}
        for epoch, minute, value in zip(history["epoch"], minutes,
                                        history["val_balanced_accuracy"])]
    return {"epochs": int(len(history)), "best_epoch": finished["best_epoch"],
            "training_minutes": None if minutes is None else round(float(minutes.iloc[-1]), 1),
            "curve": curve}


def split_summary(metrics: dict) -> dict:
    """Headline figures with their intervals, and the per-class TPR / TNR table."""
    per_class = metrics["per_class"]
    summary = {"n": metrics["num_images"], "tta": len(metrics.get("tta", [])) or 1}
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        summary[key] = interval(metrics[key])
    summary["mel_sensitivity"] = interval(per_class["mel"]["sensitivity"])
    summary["per_class"] = {code: {"n": per_class[code]["support"],
                                   "tpr": rounded(per_class[code]["sensitivity"]["value"]),
                                   "tnr": rounded(per_class[code]["specificity"]["value"]),
                                   "auc": rounded(per_class[code]["auc"]["value"])}
                            for code in CLASSES if code in per_class}
    if "lesion_focus" in metrics and "overall" in metrics["lesion_focus"]:
        summary["lesion_focus"] = metrics["lesion_focus"]["overall"]
    return summary


def interval(entry: dict) -> dict:
    return {name: rounded(entry.get(name)) for name in ("value", "low", "high")}


def rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def save_results(results: dict, args) -> None:
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous.update(results)
    previous["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "data_dir": str(args.data_dir)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    partial = RESULTS.with_name(f".{RESULTS.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(previous, indent=2) + "\n")
    partial.replace(RESULTS)  # two experiments side by side never leave half a file


# --- tables -------------------------------------------------------------------------------


def format_table(name: str, rows: list[dict]) -> str:
    lines = [f"\n## {name}\n", "| run | split | n | minutes | accuracy | balanced accuracy | "
             "macro AUC | mel sensitivity |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        minutes = row.get("training", {}).get("training_minutes")
        for split in ("test", "test@1", "holdout", "holdout@1"):
            if split in row:
                figures = row[split]
                lines.append(f"| {row['run']} | {split} | {figures['n']} | {minutes} | "
                             + " | ".join(format_interval(figures[key]) for key in (
                                 "accuracy", "balanced_accuracy", "macro_auc",
                                 "mel_sensitivity")) + " |")
        if not any(split in row for split in ("test", "test@1", "holdout", "holdout@1")):
            lines.append(f"| {row['run']} | not finished | | | | | | |")
    return "\n".join(lines)


def format_per_class(name: str, rows: list[dict]) -> str:
    """Per-class TPR / TNR / AUC on the test split (the first study's Supplementary Table 1),
    with the share of Grad-CAM energy inside the lesion where it was measured."""
    lines = [f"\n### {name}: per class, test split\n",
             "| run | " + " | ".join(CLASSES) + " | Grad-CAM energy in lesion |",
             "|---|" + "---|" * (len(CLASSES) + 1)]
    for row in rows:
        if "test" not in row:
            continue
        per_class = row["test"]["per_class"]
        cells = [f"TPR {per_class[code]['tpr']:.2f} / TNR {per_class[code]['tnr']:.2f}"
                 if code in per_class else "n/a" for code in CLASSES]
        focus = row["test"].get("lesion_focus")
        focus_text = "not measured" if not focus else (
            f"{format_interval(interval(focus['energy_inside']))}, "
            f"lesion area {focus['lesion_area_fraction']:.2f}")
        lines.append(f"| {row['run']} | " + " | ".join(cells) + f" | {focus_text} |")
    return "\n".join(lines)


def format_three_class(name: str, rows: list[dict]) -> str:
    """The external scorer on the mel / nv / bkl images of the test split (and of rosendahl)."""
    label = "/".join(THREE_CLASSES)
    lines = [f"\n### {name}: {label} only, the external scorer (argmax over {label})\n",
             "| run | images | n | balanced accuracy | mel AUC | mel sensitivity | "
             "predictions on absent classes (seven-way) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        for split in ("test", "holdout"):
            figures = row.get(f"{split}-{label}")
            if figures:
                lines.append(f"| {row['run']} | {split} | {figures['n']} | " + " | ".join(
                    format_interval(figures[key]) for key in (
                        "balanced_accuracy", "mel_auc", "mel_sensitivity"))
                    + f" | {figures['absent_share']:.3f} |")
    return "\n".join(lines)


def format_mcnemar(tests: list[dict]) -> str:
    lines = ["\n| McNemar (exact) | images | accuracy a | accuracy b | right only a | "
             "right only b | p |", "|---|---|---|---|---|---|---|"]
    for test in tests:
        lines.append(f"| {test['factor']}: {test['a']} vs {test['b']} | {test['n_images']} | "
                     f"{test['mean_a']:.3f} | {test['mean_b']:.3f} | {test['right_only_a']} | "
                     f"{test['right_only_b']} | {test['p_value']:.3g} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Validation balanced accuracy against training minutes, one line per finished run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(row["run"], row["training"]["curve"]) for row in rows
              if row.get("training", {}).get("curve")]
    if not curves:
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves:
        axes.plot([point["minutes"] for point in curve],
                  [point["val_balanced_accuracy"] for point in curve], marker=".", label=name)
    axes.set(xlabel="training minutes (CPU)", ylabel="validation balanced accuracy",
             title="Real HAM10000 (200x150), lesion-grouped validation fold")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def format_interval(entry: dict) -> str:
    if entry["value"] is None:
        return "n/a"
    if entry["low"] is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


if __name__ == "__main__":
    sys.exit(main())
