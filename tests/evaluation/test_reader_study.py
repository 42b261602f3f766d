"""Tests of the reader study (dermnet.evaluation.reader_study, reader_report, reader_cli).

Three readers answer 20 images with and without assistance; every expected number below
was computed by hand from MISTAKES (the only wrong answers). P-values are checked against
scipy on the discordant counts, and every validation error against its line and field.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from dermnet.data.vocabulary import CLASSES, ISIC_COLUMNS
from dermnet.evaluation import reader_cli
from dermnet.evaluation.reader_report import format_markdown
from dermnet.evaluation.reader_study import (
    ReaderStudyError,
    compute_reader_study,
    load_reader_study,
)
from dermnet.evaluation.stats import to_json_ready

TRUTH = ["nv"] * 6 + ["mel"] * 4 + ["bkl"] * 3 + ["bcc"] * 2 + ["akiec"] * 2 + ["df"] + ["vasc"] * 2
IMAGES = [f"ISIC_{index:07d}" for index in range(len(TRUTH))]
# reader -> condition -> {image index: wrong diagnosis}; all other images answered correctly.
MISTAKES = {
    "r1": {"unassisted": {6: "nv", 7: "nv", 8: "nv", 13: "bkl"}, "assisted": {6: "nv"}},
    "r2": {"unassisted": {0: "mel", 1: "mel", 2: "mel", 3: "mel", 10: "nv", 18: "df"},
           "assisted": {0: "mel", 1: "mel"}},
    "r3": {"unassisted": {6: "nv", 7: "nv", 8: "nv", 9: "nv", 10: "mel", 11: "mel", 12: "mel"},
           "assisted": {9: "nv", 12: "mel", 5: "bkl"}},
}
MODEL_MISTAKES = {6: "nv", 19: "bcc"}  # the model's argmax is wrong on two images
SLOW = {("r2", "unassisted", index) for index in range(5)}  # answered in 60 s, others in 20 s
ASSISTED_WORDS = {"unassisted": ("false", "0", "no"), "assisted": ("true", "1", "YES")}


def write_truth(folder: Path) -> Path:
    path = folder / "HAM10000_metadata.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        for index, (image, code) in enumerate(zip(IMAGES, TRUTH)):
            lesion = f"HAM_{min(index, 1):07d}" if index < 2 else f"HAM_{index:07d}"
            writer.writerow([lesion, image, code, "histo", "40", "female", "back"])
    return path


def answer_rows(mistakes=MISTAKES) -> list[list[str]]:
    """reader_id,image_id,diagnosis,assisted,seconds rows; ISIC spellings on some rows."""
    rows = []
    for reader, conditions in mistakes.items():
        for condition, wrong in conditions.items():
            for index, image in enumerate(IMAGES):
                diagnosis = wrong.get(index, TRUTH[index])
                diagnosis = diagnosis.upper() if index % 3 == 0 else diagnosis
                seconds = "60" if (reader, condition, index) in SLOW else "20.5"
                rows.append([reader, image, diagnosis, ASSISTED_WORDS[condition][index % 3],
                             seconds])
    return rows


def write_answers(folder: Path, rows=None, header=None) -> Path:
    path = folder / "answers.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["reader_id", "image_id", "diagnosis", "assisted", "seconds"])
        writer.writerows(answer_rows() if rows is None else rows)
    return path


def write_model(path: Path, images=IMAGES) -> Path:
    """An ISIC-format prediction CSV whose argmax is the truth except MODEL_MISTAKES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *ISIC_COLUMNS])
        for index, image in enumerate(IMAGES):
            if image in images:
                predicted = CLASSES.index(MODEL_MISTAKES.get(index, TRUTH[index]))
                writer.writerow([image, *(0.7 if column == predicted else 0.05
                                          for column in range(len(CLASSES)))])
    return path


@pytest.fixture()
def results(tmp_path):
    study = load_reader_study(write_answers(tmp_path), write_truth(tmp_path),
                              write_model(tmp_path / "model.csv"))
    return compute_reader_study(study, n_resamples=200)


def test_per_reader_accuracy_tpr_and_interval(results):
    r1 = results["readers"]["r1"]["unassisted"]
    assert (r1["answers"], r1["correct"], r1["accuracy"]["value"]) == (20, 16, 0.8)
    interval = scipy.stats.binomtest(16, 20).proportion_ci(method="exact")
    assert r1["accuracy"]["low"] == pytest.approx(interval.low)
    assert r1["accuracy"]["high"] == pytest.approx(interval.high)
    tpr = {code: r1["per_class"][code]["sensitivity"] for code in CLASSES}
    assert tpr == {"mel": 0.25, "nv": 1.0, "bcc": 0.5, "akiec": 1.0, "bkl": 1.0, "df": 1.0,
                   "vasc": 1.0}
    assert r1["per_class"]["nv"]["specificity"] == pytest.approx(11 / 14)  # 3 mel called nv
    assert r1["balanced_accuracy"] == pytest.approx(5.75 / 7)
    accuracies = {(reader, condition): scores["accuracy"]["value"]
                  for reader, conditions in results["readers"].items()
                  for condition, scores in conditions.items()}
    assert accuracies == pytest.approx({
        ("r1", "unassisted"): 0.8, ("r1", "assisted"): 0.95, ("r2", "unassisted"): 0.7,
        ("r2", "assisted"): 0.9, ("r3", "unassisted"): 0.65, ("r3", "assisted"): 0.85})


def test_pooled_and_mean_of_readers(results):
    unassisted, assisted = results["pooled"]["unassisted"], results["pooled"]["assisted"]
    assert unassisted["accuracy"]["value"] == pytest.approx(43 / 60)
    assert assisted["accuracy"]["value"] == pytest.approx(54 / 60)
    assert unassisted["per_class"]["mel"]["sensitivity"]["value"] == pytest.approx(5 / 12)
    assert assisted["per_class"]["mel"]["sensitivity"]["value"] == pytest.approx(10 / 12)
    # nv TNR: 42 non-nv answers, 3 (r1) + 1 (r2, bkl) + 4 (r3) of them called nv.
    assert unassisted["per_class"]["nv"]["specificity"]["value"] == pytest.approx(34 / 42)
    mean = results["mean_of_readers"]["unassisted"]
    assert mean["accuracy"] == pytest.approx((0.8 + 0.7 + 0.65) / 3)
    assert mean["sensitivity"]["mel"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)


def test_assisted_change_and_mcnemar_match_binomtest(results):
    change = results["change"]
    r3 = change["readers"]["r3"]
    assert r3["change"] == pytest.approx(0.2)
    # r3: image 5 right only unassisted; images 6, 7, 8, 10, 11 right only assisted.
    assert (r3["test"]["unassisted_only"], r3["test"]["assisted_only"]) == (1, 5)
    assert r3["test"]["p_value"] == pytest.approx(scipy.stats.binomtest(1, 6).pvalue)
    r1 = change["readers"]["r1"]["test"]
    assert r1["p_value"] == pytest.approx(scipy.stats.binomtest(0, 3).pvalue)
    mel = change["per_class"]["mel"]
    assert (mel["unassisted"], mel["assisted"]) == pytest.approx((5 / 12, 10 / 12))
    assert mel["test"]["pairs"] == 12 and mel["test"]["assisted_only"] == 5
    assert mel["test"]["p_value"] == pytest.approx(scipy.stats.binomtest(0, 5).pvalue)
    pooled = change["pooled"]["test"]  # 12 answers improved, 1 (r3, image 5) got worse
    assert (pooled["assisted_only"], pooled["unassisted_only"], pooled["pairs"]) == (12, 1, 60)


def test_three_readers_are_too_few_for_wilcoxon(results):
    across = results["change"]["across_readers"]
    assert across["p_value"] is None and across["readers"] == 3
    assert across["note"].startswith("cannot be tested: 3 reader(s)")
    assert across["mean_change"] == pytest.approx((0.15 + 0.2 + 0.2) / 3)


def test_model_side_by_side_on_the_same_images(results):
    assert results["model"]["unassisted"]["accuracy"]["value"] == pytest.approx(0.9)
    assert results["model"]["unassisted"]["num_images"] == 20  # each image once, not per reader
    versus = results["readers"]["r1"]["unassisted"]["versus_model"]
    # r1 wrong on 6, 7, 8, 13; the model on 6 and 19.
    assert (versus["reader_only"], versus["model_only"]) == (1, 3)
    assert versus["p_value"] == pytest.approx(scipy.stats.binomtest(1, 4).pvalue)
    assert versus["model_accuracy"] == pytest.approx(0.9)


def test_wilcoxon_across_readers_matches_scipy(tmp_path):
    unassisted_wrong, assisted_wrong = [8, 6, 9, 5, 7, 10, 4], [3, 4, 2, 6, 1, 7, 0]
    mistakes = {f"g{k}": {"unassisted": _first_wrong(u), "assisted": _first_wrong(a)}
                for k, (u, a) in enumerate(zip(unassisted_wrong, assisted_wrong))}
    study = load_reader_study(write_answers(tmp_path, answer_rows(mistakes)),
                              write_truth(tmp_path))
    across = compute_reader_study(study, n_resamples=50)["change"]["across_readers"]
    before = [1 - wrong / 20 for wrong in unassisted_wrong]
    after = [1 - wrong / 20 for wrong in assisted_wrong]
    expected = scipy.stats.wilcoxon(after, before)
    assert across["readers"] == 7
    assert across["statistic"] == pytest.approx(expected.statistic)
    assert across["p_value"] == pytest.approx(expected.pvalue)


def _first_wrong(count: int) -> dict:
    return {index: ("mel" if TRUTH[index] != "mel" else "nv") for index in range(count)}


def test_two_readers_report_says_cannot_be_tested(tmp_path, capsys):
    rows = [row for row in answer_rows() if row[0] != "r3"]
    code = reader_cli.main([str(write_answers(tmp_path, rows)), "--truth",
                            str(write_truth(tmp_path)), "--out", str(tmp_path / "report"),
                            "--resamples", "50"])
    markdown = capsys.readouterr().out
    assert code == 0
    assert "Wilcoxon signed-rank on per-reader accuracy: cannot be tested: 2 reader(s)" in markdown
    saved = json.loads((tmp_path / "report" / "readers.json").read_text())
    assert saved["change"]["across_readers"]["p_value"] is None


def test_different_image_sets_per_condition_cannot_be_paired(tmp_path):
    """The paper's second challenge showed new images with assistance: no pairs to test."""
    rows = [row for row in answer_rows()
            if (IMAGES.index(row[1]) < 10) == (row[3].lower() in ("false", "0", "no"))]
    study = load_reader_study(write_answers(tmp_path, rows), write_truth(tmp_path))
    results = compute_reader_study(study, n_resamples=50)
    change = results["change"]
    assert change["readers"]["r1"]["test"] == {
        "test": "McNemar (exact)", "pairs": 0, "p_value": None,
        "note": "cannot be tested: no image answered in both conditions"}
    assert change["readers"]["r3"]["change"] == pytest.approx(0.9 - 0.6)  # 6/10 -> 9/10
    mel = change["per_class"]["mel"]  # all mel images (6-9) were shown unassisted only
    assert np.isnan(mel["assisted"]) and mel["unassisted"] == pytest.approx(5 / 12)
    assert mel["test"]["note"] == "cannot be tested: no mel image answered in both conditions"
    markdown = format_markdown(results)
    assert "cannot be tested: no image answered in both conditions" in markdown
    json.dumps(to_json_ready(results), allow_nan=False)  # NaN TPRs become null


def test_answers_without_assisted_column_are_one_condition(tmp_path):
    rows = [row[:3] for row in answer_rows() if row[3].lower() in ("false", "0", "no")]
    answers = write_answers(tmp_path, rows, header=["reader_id", "image_id", "diagnosis"])
    results = compute_reader_study(load_reader_study(answers, write_truth(tmp_path)),
                                   n_resamples=50)
    assert results["conditions"] == ["unassisted"] and results["change"] is None
    assert results["mean_of_readers"]["unassisted"]["accuracy"] == pytest.approx(
        (0.8 + 0.7 + 0.65) / 3)
    markdown = format_markdown(results)
    assert "Change (points)" not in markdown and "| r2 | 70.0 (" in markdown


def test_time_limit_excludes_slow_answers(tmp_path):
    study = load_reader_study(write_answers(tmp_path), write_truth(tmp_path), time_limit=45)
    results = compute_reader_study(study, n_resamples=50)
    assert results["counts"]["excluded"] == 5
    assert results["counts"]["unassisted"]["excluded"] == 5
    assert results["counts"]["assisted"]["excluded"] == 0
    r2 = results["readers"]["r2"]["unassisted"]  # images 0-4 dropped: wrong on 10 and 18 only
    assert (r2["answers"], r2["correct"]) == (15, 13)


def test_cli_writes_report_with_model_run(tmp_path, capsys):
    run = tmp_path / "run"
    write_model(run / "predictions.csv")
    out = tmp_path / "report"
    code = reader_cli.main([str(write_answers(tmp_path)), "--truth", str(write_truth(tmp_path)),
                            "--model-run", str(run), "--time-limit", "45", "--out", str(out),
                            "--resamples", "100"])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == ["readers.csv", "readers.json",
                                                          "readers.md"]
    assert "**3 readers, 20 images, 115 answers scored**" in printed
    assert "5 answers excluded as slower than the 45 s time limit" in printed
    assert (out / "readers.md").read_text().strip() == printed.split("\n\nwrote")[0].strip()
    with open(out / "readers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6  # 3 readers x 2 conditions
    r1 = next(row for row in rows if row["reader_id"] == "r1" and row["condition"] == "assisted")
    assert float(r1["accuracy"]) == 0.95 and float(r1["tpr_mel"]) == 0.75
    saved = json.loads((out / "readers.json").read_text())
    assert saved["model"]["assisted"]["accuracy"]["value"] == pytest.approx(0.9)


# --- validation: every problem names the file, line and field; nothing is written --------------


def _row(reader="r1", image=IMAGES[0], diagnosis="nv", assisted="0", seconds="10"):
    return [reader, image, diagnosis, assisted, seconds]


BAD_ANSWERS = {
    "unknown diagnosis": ([_row(diagnosis="melanoma?")],
                          "answers.csv line 2: diagnosis 'melanoma?' is not a class"),
    "unknown image": ([_row(), _row(image="ISIC_9999999")],
                      "answers.csv line 3: image_id 'ISIC_9999999' is not in "
                      "HAM10000_metadata.csv"),
    "duplicate": ([_row(), _row(assisted="1"), _row(assisted="no")],
                  "answers.csv line 4: reader_id r1 answered image_id ISIC_0000000 "
                  "(unassisted) again, first on line 2"),
    "bad assisted": ([_row(assisted="maybe")],
                     "answers.csv line 2: assisted 'maybe' is not one of true/false"),
    "negative seconds": ([_row(), _row(reader="r2", seconds="-4")],
                         "answers.csv line 3: seconds '-4' is not a positive number"),
    "text seconds": ([_row(seconds="fast")],
                     "answers.csv line 2: seconds 'fast' is not a positive number"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_invalid_answers_exit_1_without_report(tmp_path, capsys, case):
    rows, message = BAD_ANSWERS[case]
    code = _run_cli(tmp_path, write_answers(tmp_path, rows))
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_missing_columns_named(tmp_path, capsys):
    answers = write_answers(tmp_path, [["r1", IMAGES[0]]], header=["reader_id", "image_id"])
    assert _run_cli(tmp_path, answers) == 1
    assert "answers.csv line 1: missing column(s) diagnosis" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_time_limit_needs_seconds(tmp_path, capsys):
    answers = write_answers(tmp_path, [_row()[:3]], header=["reader_id", "image_id",
                                                             "diagnosis"])
    assert _run_cli(tmp_path, answers, "--time-limit", "45") == 1
    assert "answers.csv line 1: --time-limit needs a seconds column" in capsys.readouterr().err


def test_model_missing_images_are_named(tmp_path, capsys):
    model = write_model(tmp_path / "model.csv", images=IMAGES[:18])
    assert _run_cli(tmp_path, write_answers(tmp_path), "--model-predictions", str(model)) == 1
    assert ("model.csv: no prediction for 2 of the 20 image(s) the readers answered: "
            "ISIC_0000018, ISIC_0000019") in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_all_problems_collected_at_once(tmp_path):
    rows = [_row(diagnosis="xx"), _row(reader="r2", assisted="perhaps"),
            _row(reader="", image="ISIC_9")]
    with pytest.raises(ReaderStudyError) as caught:
        load_reader_study(write_answers(tmp_path, rows), write_truth(tmp_path))
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "answers.csv line 2", "answers.csv line 3", "answers.csv line 4", "answers.csv line 4"]
    assert "reader_id is blank" in caught.value.problems[2]
    assert "image_id 'ISIC_9' is not in HAM10000_metadata.csv" in caught.value.problems[3]


def _run_cli(tmp_path: Path, answers: Path, *extra: str) -> int:
    return reader_cli.main([str(answers), "--truth", str(write_truth(tmp_path)),
                            "--out", str(tmp_path / "report"), *extra])


def test_markdown_has_table_4_layout(results):
    markdown = format_markdown(results)
    header = ("| Reader | Unassisted accuracy % (95% CI) | Assisted accuracy % (95% CI) | "
              "Change (points) |")
    assert header in markdown
    assert "| r3 | 65.0 (" in markdown and "| +20.0 | p=0.219" in markdown
    assert "| Model (argmax) | 90.0 (" in markdown
    assert np.isclose(results["pooled"]["assisted"]["accuracy"]["value"], 0.9)
