"""evaluate.py RUN_DIR --external DATA_DIR: a run scored on another image bank. The figures
against hand-computed values and sklearn, the reader's defaults and errors, the CLI's exit
codes, atomic outputs, and (slow) a real smoke run scored on re-encoded phantom images."""

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
)

from dermnet.data.vocabulary import CLASSES, ISIC_COLUMNS
from tests.smoke import copy_run, run_script

MEL, NV, BCC, AKIEC, BKL = (CLASSES.index(name) for name in ("mel", "nv", "bcc", "akiec", "bkl"))

# Eight images of a mel / nv / bkl set; columns in CLASSES order (mel nv bcc akiec bkl df vasc).
HAND_TRUTH = np.array([MEL, MEL, MEL, NV, NV, NV, BKL, BKL])
HAND_PROBABILITIES = np.array([
    [0.60, 0.20, 0.05, 0.05, 0.05, 0.03, 0.02],  # mel -> mel, both ways
    [0.30, 0.10, 0.40, 0.00, 0.10, 0.05, 0.05],  # mel -> bcc (absent) 7-way, mel restricted
    [0.10, 0.50, 0.10, 0.10, 0.10, 0.05, 0.05],  # mel -> nv
    [0.10, 0.70, 0.05, 0.05, 0.05, 0.03, 0.02],  # nv  -> nv
    [0.05, 0.20, 0.05, 0.50, 0.10, 0.05, 0.05],  # nv  -> akiec (absent) 7-way, nv restricted
    [0.40, 0.30, 0.10, 0.05, 0.10, 0.03, 0.02],  # nv  -> mel
    [0.10, 0.10, 0.05, 0.05, 0.60, 0.05, 0.05],  # bkl -> bkl
    [0.05, 0.25, 0.30, 0.05, 0.20, 0.10, 0.05],  # bkl -> bcc (absent) 7-way, nv restricted
])
HAND_RESTRICTED = np.array([MEL, MEL, NV, NV, NV, MEL, BKL, NV])


# --- the figures on hand-built probabilities -------------------------------------------------


@pytest.fixture(scope="module")
def hand_metrics():
    from dermnet.evaluation.external import compute_external_metrics

    return compute_external_metrics(HAND_TRUTH, HAND_PROBABILITIES, n_resamples=300, seed=1)


def test_restricted_argmax_renormalises_over_the_present_classes_only():
    from dermnet.evaluation.external import compute_present_predictions

    present = np.array([MEL, NV, BKL])
    renormalised, predicted = compute_present_predictions(HAND_PROBABILITIES, present)
    assert predicted.tolist() == HAND_RESTRICTED.tolist()
    np.testing.assert_allclose(renormalised[1], [0.6, 0.2, 0.2])  # (0.3, 0.1, 0.1) / 0.5
    np.testing.assert_allclose(renormalised.sum(axis=1), 1.0)
    zero = np.zeros((1, 7))
    zero[0, BCC] = 1.0  # all the mass on an absent class: uniform over the present ones
    renormalised, predicted = compute_present_predictions(zero, present)
    np.testing.assert_allclose(renormalised, [[1 / 3] * 3])
    assert predicted.tolist() == [MEL]


def test_present_class_figures_equal_hand_values_and_sklearn(hand_metrics):
    present = hand_metrics["present_classes"]
    assert hand_metrics["classes"] == ["mel", "nv", "bkl"]
    assert hand_metrics["absent_classes"] == ["bcc", "akiec", "df", "vasc"]
    assert hand_metrics["counts"] == {"mel": 3, "nv": 3, "bkl": 2}
    assert present["accuracy"]["value"] == pytest.approx(5 / 8)
    assert present["accuracy"]["value"] == pytest.approx(
        accuracy_score(HAND_TRUTH, HAND_RESTRICTED))
    assert present["balanced_accuracy"]["value"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert present["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(HAND_TRUTH, HAND_RESTRICTED))
    expected_matrix = confusion_matrix(HAND_TRUTH, HAND_RESTRICTED, labels=[MEL, NV, BKL])
    assert present["confusion_matrix"] == expected_matrix.tolist() == [[2, 1, 0], [1, 2, 0],
                                                                       [0, 1, 1]]
    assert present["per_class"]["bkl"]["sensitivity"]["value"] == pytest.approx(1 / 2)
    assert present["per_class"]["nv"]["specificity"]["value"] == pytest.approx(3 / 5)
    # Clopper-Pearson, straight from scipy.
    interval = scipy_stats.binomtest(5, 8).proportion_ci(method="exact")
    assert present["accuracy"]["low"] == pytest.approx(interval.low)
    assert present["accuracy"]["high"] == pytest.approx(interval.high)
    ba = present["balanced_accuracy"]
    assert ba["method"] == "bootstrap-images" and ba["low"] <= ba["value"] <= ba["high"]


def test_seven_way_figures_and_the_share_on_absent_classes(hand_metrics):
    seven = hand_metrics["seven_way"]
    predicted = HAND_PROBABILITIES.argmax(axis=1)
    assert predicted.tolist() == [MEL, BCC, NV, NV, AKIEC, MEL, BKL, BCC]
    assert seven["accuracy"]["value"] == pytest.approx(3 / 8)
    assert seven["balanced_accuracy"]["value"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(HAND_TRUTH, predicted)  # recall of present classes
    assert seven["balanced_accuracy"]["value"] == pytest.approx(expected)
    absent = seven["absent_predictions"]
    assert absent["count"] == 3 and absent["value"] == pytest.approx(3 / 8)
    assert {name: entry["count"] for name, entry in absent["per_class"].items()} == {
        "bcc": 2, "akiec": 1, "df": 0, "vasc": 0}
    assert absent["per_class"]["bcc"]["high"] > 2 / 8 > absent["per_class"]["bcc"]["low"]
    assert seven["confusion_matrix"]["rows"] == ["mel", "nv", "bkl"]
    assert seven["confusion_matrix"]["counts"][0] == [1, 1, 1, 0, 0, 0, 0]  # mel, nv, bcc
    mel = hand_metrics["mel_sensitivity"]
    assert mel["present_classes"]["value"] == pytest.approx(2 / 3)
    assert mel["seven_way"]["value"] == pytest.approx(1 / 3)


def test_aucs_rank_the_seven_way_probability_against_the_rest_of_the_set(hand_metrics):
    auc = hand_metrics["auc"]
    # mel scores 0.6, 0.3, 0.1 against 0.1, 0.05, 0.4, 0.1, 0.05: 5 + 4 + 3 (two ties) of 15.
    assert auc["mel_vs_rest"]["value"] == pytest.approx(12 / 15)
    expected = {CLASSES[index]: roc_auc_score(np.equal(HAND_TRUTH, index),
                                              HAND_PROBABILITIES[:, index])
                for index in (MEL, NV, BKL)}
    for name, value in expected.items():
        assert auc["per_class"][name]["value"] == pytest.approx(value)
        assert auc["per_class"][name]["method"] == "delong"
    assert set(auc["per_class"]) == {"mel", "nv", "bkl"}
    assert auc["macro"]["value"] == pytest.approx(np.mean(list(expected.values())))


def test_lesion_groups_and_a_two_class_set():
    from dermnet.evaluation.external import compute_external_metrics

    keep = np.isin(HAND_TRUTH, [MEL, NV])
    truth, probabilities = HAND_TRUTH[keep], HAND_PROBABILITIES[keep]
    groups = np.array(["a", "a", "b", "c", "d", "d"])
    metrics = compute_external_metrics(truth, probabilities, groups=groups, n_resamples=100)
    assert metrics["classes"] == ["mel", "nv"] and metrics["num_groups"] == 4
    assert metrics["present_classes"]["balanced_accuracy"]["method"] == "bootstrap-lesions"
    restricted = np.where(probabilities[:, MEL] >= probabilities[:, NV], MEL, NV)
    assert metrics["present_classes"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(truth, restricted))
    assert "bkl" in metrics["seven_way"]["absent_predictions"]["per_class"]


def test_a_one_class_set_has_no_auc_and_a_trivial_restricted_argmax():
    from dermnet.evaluation.external import compute_external_metrics
    from dermnet.evaluation.stats import to_json_ready

    keep = HAND_TRUTH == MEL
    metrics = to_json_ready(compute_external_metrics(HAND_TRUTH[keep], HAND_PROBABILITIES[keep],
                                                     n_resamples=50))
    assert metrics["present_classes"]["accuracy"]["value"] == 1.0
    assert "cannot be wrong" in metrics["present_classes"]["note"]
    assert metrics["seven_way"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert metrics["auc"]["mel_vs_rest"]["value"] is None
    assert metrics["auc"]["macro"]["value"] is None
    json.dumps(metrics, allow_nan=False)


def test_image_sizes_are_described_against_the_model_input():
    from dermnet.data.external import describe_sizes

    sizes = describe_sizes((((600, 450), 5), ((300, 300), 2), ((640, 400), 1), ((80, 60), 3)),
                           (224, 300))
    assert (sizes["min_width"], sizes["max_width"]) == (80, 640)
    assert (sizes["min_height"], sizes["max_height"]) == (60, 450)
    # 600x450 and 80x60 are 4:3 like 300x224 (within 1%); 300x300 and 640x400 are not.
    assert sizes["other_aspect_images"] == 3
    assert sizes["upsampled_images"] == 3  # 80x60 < 300x224
    assert describe_sizes((), (224, 300)) == {"checked": False}


# --- reading the set, and the command line's errors ------------------------------------------


def write_images(folder, sizes: dict) -> None:
    """``{image_id: (width, height, suffix)}`` as smooth RGB images in folder/images/."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for seed, (image_id, (width, height, suffix)) in enumerate(sizes.items()):
        rows, columns = np.mgrid[0:height, 0:width]
        pixels = np.stack([rows * 255 // height, columns * 255 // width,
                           np.full_like(rows, 40 * seed % 256)], axis=-1).astype(np.uint8)
        assert cv2.imwrite(str(images / f"{image_id}{suffix}"), pixels)


def make_set(folder, csv_text: str, sizes: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "HAM10000_metadata.csv").write_text(csv_text)
    write_images(folder, sizes if sizes is not None else
                 {"A": (40, 30, ".jpg"), "B": (50, 50, ".png"), "C": (64, 40, ".jpg")})
    return folder


def test_missing_columns_and_blanks_become_own_lesion_missing_age_and_unknown(tmp_path):
    from dermnet.data.clinical import ClinicalEncoder
    from dermnet.data.external import describe_clinical, load_external

    folder = make_set(tmp_path / "bank", "image_id,dx,sex,Extra\nA,mel,female,x\n"
                                         "B,NV,,y\nC,nv,alien,z\n")
    external = load_external(folder)
    frame = external.frame
    assert frame["lesion_id"].tolist() == ["A", "B", "C"]  # each image its own lesion
    assert frame["dx"].tolist() == ["mel", "nv", "nv"] and frame["label"].tolist() == [0, 1, 1]
    assert frame["age"].isna().all() and (frame["localization"] == "unknown").all()
    assert frame["sex"].tolist() == ["female", "unknown", "unknown"]
    assert external.absent_columns == ("lesion_id", "dx_type", "age", "localization")
    assert external.classes == ("mel", "nv")
    assert dict(external.image_sizes) == {(40, 30): 1, (50, 50): 1, (64, 40): 1}
    assert any("'extra'" in warning for warning in external.warnings)
    assert any("'alien' (line 4)" in warning for warning in external.warnings)
    assert describe_clinical(external) == {"absent_columns": ["age", "localization"],
                                           "age_missing": 3, "sex_unknown": 2,
                                           "localization_unknown": 3}
    encoder = ClinicalEncoder(age_mean=50.0, age_std=10.0)
    vectors = encoder.transform(frame)
    assert (vectors[:, encoder.feature_names.index("localization=unknown")] == 1).all()
    assert (vectors[:, encoder.feature_names.index("age_missing")] == 1).all()


def test_a_clinical_run_on_a_set_without_clinical_columns_gets_a_notice(tmp_path):
    from dermnet.config import make_config
    from dermnet.data.external import load_external
    from dermnet.evaluation.external import clinical_notices

    external = load_external(make_set(tmp_path / "bank", "image_id,dx\nA,mel\nB,nv\nC,nv\n"))
    config = make_config("smoke")
    assert clinical_notices(config, external) == []  # an image-only model misses nothing
    clinical = dataclasses.replace(config, data=dataclasses.replace(config.data, clinical=True))
    (notice,) = clinical_notices(clinical, external)
    assert notice == ("notice: the set has no age, sex, localization column (a missing age, "
                      "sex 'unknown', site 'unknown'): this clinical model is given that for "
                      "every image")


@pytest.fixture
def fake_run(tmp_path):
    """A run directory whose model is never reached: the set fails first."""
    from dermnet.config import make_config, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(make_config("smoke"), run / "config.json")
    (run / "model.keras").write_bytes(b"")
    return run


def _corrupt(folder):
    (folder / "images" / "B.png").write_text("age,sex\n45,male\n")


def _truncate(folder):
    path = folder / "images" / "C.jpg"
    path.write_bytes(path.read_bytes()[:200])


def _remove(folder):
    (folder / "images" / "B.png").unlink()


@pytest.mark.parametrize("csv_text, damage, expected", [
    ("image_id,dx\nA,mel\nB,scc\nC,nv\n", None,
     ["HAM10000_metadata.csv line 3: dx 'scc' is not a diagnosis code"]),
    ("image_id,dx\nA,mel\nA,nv\nC,nv\n", None,
     ["HAM10000_metadata.csv: image_id A appears on lines 2, 3"]),
    ("image_id,dx\nA,mel\nB,nv\nC,nv\n", _remove,
     ["image B (line 3): no B.jpg, .jpeg or .png in images"]),
    ("image_id,dx\nA,mel\nB,nv\nC,nv\n", _corrupt,
     ["images/B.png (image B, line 3): not a JPEG or PNG file"]),
    ("image_id,dx\nA,mel\nB,nv\nC,nv\n", _truncate, ["images/C.jpg (image C, line 4)"]),
    ("image_id,dx,age\nA,mel,40\nB,nv,old\nC,nv,50\n", None,
     ["HAM10000_metadata.csv line 3: age 'old' is not a number"]),
    ("", None, ["HAM10000_metadata.csv: empty file"]),
    ("image_id,dx\n", None, ["HAM10000_metadata.csv: no data rows after the header"]),
    ("image_id,diagnosis\nA,mel\n", None,
     ["HAM10000_metadata.csv line 1: missing required column(s) dx"]),
])
def test_bad_sets_exit_1_with_one_line_naming_the_problem_and_write_nothing(
        tmp_path, fake_run, capsys, csv_text, damage, expected):
    from dermnet.evaluation.cli import main

    folder = make_set(tmp_path / "bank", csv_text)
    if damage:
        damage(folder)
    code = main([str(fake_run), "--external", str(folder), "--no-runtime"])
    stderr = capsys.readouterr().err
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in expected:
        assert fragment in lines[0]
    assert "Traceback" not in stderr
    assert not (fake_run / "external-bank").exists()


@pytest.mark.parametrize("missing, message", [
    ("model.keras", "no model.keras"), ("config.json", "no config.json")])
def test_a_run_directory_missing_files_exits_1(tmp_path, fake_run, capsys, missing, message):
    from dermnet.evaluation.cli import main

    (fake_run / missing).unlink()
    folder = make_set(tmp_path / "bank", "image_id,dx\nA,mel\nB,nv\nC,nv\n")
    assert main([str(fake_run), "--external", str(folder)]) == 1
    assert message in capsys.readouterr().err


def test_a_damaged_model_file_is_named(tmp_path, fake_run, capsys):
    from dermnet.evaluation.cli import main

    folder = make_set(tmp_path / "bank", "image_id,dx\nA,mel\nB,nv\nC,nv\n")
    assert main([str(fake_run), "--external", str(folder), "--no-runtime"]) == 1
    err = capsys.readouterr().err
    assert f"{fake_run / 'model.keras'}: cannot load the model" in err and "Traceback" not in err
    assert not (fake_run / "external-bank").exists()


@pytest.mark.parametrize("extra", [["--split", "test"], ["--split", "val"],
                                   ["--pair", "mel:nv"], ["--data-dir", "somewhere"]])
def test_external_with_split_pair_or_data_dir_is_a_usage_error(fake_run, capsys, extra):
    from dermnet.evaluation.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(fake_run), "--external", "bank", *extra])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_failure_while_writing_leaves_no_partial_files(tmp_path):
    from dermnet.evaluation.external import write_external_outputs

    rows = pd.DataFrame({"image_id": ["A", "B"], "lesion_id": ["A", "B"], "label": [0, 1]})
    probabilities = np.full((2, 7), 1 / 7)
    target = tmp_path / "fresh"
    with pytest.raises(ValueError):  # NaN is not JSON: the first file fails, in staging
        write_external_outputs(target, rows, probabilities, {"value": math.nan}, "summary")
    assert not target.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(ValueError):
        write_external_outputs(kept, rows, probabilities, {"value": math.nan}, "summary")
    assert [path.name for path in kept.iterdir()] == ["notes.txt"]
    write_external_outputs(target, rows, probabilities, {"value": 1.0}, "summary")
    assert sorted(path.name for path in target.iterdir()) == sorted(
        ["metrics.json", "predictions.csv", "per_image.csv", "external.md"])


# --- end to end: a real smoke run on re-encoded phantom images (slow) -------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, trained_smoke_run):
    """A copy of the session's clinical smoke run, and the phantom folder it trained on."""
    out = copy_run(trained_smoke_run.out, tmp_path_factory.mktemp("runs") / "smoke")
    return out, trained_smoke_run.phantom


def build_external_set(phantom, folder, classes, per_class: int, columns: tuple):
    """Phantom images of ``classes`` re-encoded at other sizes and aspects: every other one
    a 300x300 PNG, the rest 640x400 JPEGs; the metadata keeps ``columns`` only."""
    metadata = pd.read_csv(phantom / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    chosen = metadata[metadata["dx"].isin(classes)].groupby("dx").head(per_class)
    (folder / "images").mkdir(parents=True)
    for index, image_id in enumerate(chosen["image_id"]):
        (source,) = phantom.glob(f"*/{image_id}.jpg")
        image = cv2.imread(str(source))
        size, suffix = ((300, 300), ".png") if index % 2 else ((640, 400), ".jpg")
        cv2.imwrite(str(folder / "images" / f"{image_id}{suffix}"),
                    cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    chosen = chosen.assign(age=chosen["age"].where(np.arange(len(chosen)) % 3 > 0, ""))
    chosen[list(columns)].to_csv(folder / "HAM10000_metadata.csv", index=False)
    return folder, chosen.reset_index(drop=True)


@pytest.fixture(scope="module")
def scored(smoke_run, tmp_path_factory):
    """The smoke run scored by the CLI on a mel / nv / bkl set without sex and site."""
    run, phantom = smoke_run
    folder, chosen = build_external_set(
        phantom, tmp_path_factory.mktemp("banks") / "bank3", ("mel", "nv", "bkl"), 4,
        ("lesion_id", "image_id", "dx", "age", "dataset"))
    result = run_script("evaluate.py", [str(run), "--external", str(folder), "--tta", "2",
                                        "--resamples", "200"], phantom.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return run / "external-bank3", chosen, result


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_the_cli_writes_every_file_and_says_external_first(scored):
    out, _, result = scored
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["metrics.json", "predictions.csv", "per_image.csv", "external.md"])
    head = "\n".join((out / "external.md").read_text().splitlines()[:3])
    assert "EXTERNAL" in head and "Classes: mel, nv, bkl" in head and "SYNTHETIC" in head
    assert "**AUC mel vs rest** |" in result.stdout and "EXTERNAL image bank" in result.stdout
    assert "notice: the set has no sex, localization column (sex 'unknown'" in result.stdout


@pytest.mark.slow
def test_metrics_json_counts_sizes_and_run(scored):
    out, chosen, _ = scored
    metrics = _strict_json(out / "metrics.json")
    assert metrics["counts"] == {"mel": 4, "nv": 4, "bkl": 4} and metrics["num_images"] == 12
    assert metrics["num_groups"] == chosen["lesion_id"].nunique()
    sizes = metrics["dataset"]["image_sizes"]
    assert (sizes["min_width"], sizes["max_width"], sizes["min_height"],
            sizes["max_height"]) == (300, 640, 300, 400)
    assert sizes["other_aspect_images"] == 12 and sizes["input_size"] == [64, 80]
    assert metrics["dataset"]["clinical"]["absent_columns"] == ["sex", "localization"]
    assert metrics["dataset"]["clinical"]["age_missing"] == 4
    assert metrics["tta"] == ["identity", "flip_left_right"] and metrics["synthetic"] is True
    assert metrics["model"]["clinical"] is True and metrics["runtime_ms_per_image"]["batched_ms"]


@pytest.mark.slow
def test_predictions_csv_rescored_with_sklearn_gives_metrics_json(scored):
    out, chosen, _ = scored
    metrics = _strict_json(out / "metrics.json")
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["image", *ISIC_COLUMNS]
    truth = chosen.set_index("image_id").loc[predictions["image"], "dx"].map(
        CLASSES.index).to_numpy()
    scores = predictions[list(ISIC_COLUMNS)].to_numpy()
    present = [MEL, NV, BKL]
    restricted = np.array(present)[scores[:, present].argmax(axis=1)]
    seven = scores.argmax(axis=1)
    assert metrics["present_classes"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(truth, restricted), abs=1e-12)
    assert metrics["present_classes"]["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(truth, restricted), abs=1e-12)
    assert metrics["present_classes"]["confusion_matrix"] == confusion_matrix(
        truth, restricted, labels=present).tolist()
    assert metrics["seven_way"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(truth, seven), abs=1e-12)
    recalls = [np.mean(seven[truth == index] == index) for index in present]
    assert metrics["seven_way"]["balanced_accuracy"]["value"] == pytest.approx(
        np.mean(recalls), abs=1e-12)
    assert metrics["seven_way"]["absent_predictions"]["value"] == pytest.approx(
        np.mean(~np.isin(seven, present)), abs=1e-12)
    aucs = [roc_auc_score(truth == index, scores[:, index]) for index in present]
    for name, value in zip(("mel", "nv", "bkl"), aucs):
        assert metrics["auc"]["per_class"][name]["value"] == pytest.approx(value, abs=1e-9)
    assert metrics["auc"]["macro"]["value"] == pytest.approx(np.mean(aucs), abs=1e-9)
    assert metrics["mel_sensitivity"]["seven_way"]["value"] == pytest.approx(
        np.mean(seven[truth == MEL] == MEL), abs=1e-12)
    rows = pd.read_csv(out / "per_image.csv")
    assert (rows["predicted_present"].map(CLASSES.index) == restricted).all()
    assert (rows["predicted"].map(CLASSES.index) == seven).all()


@pytest.mark.slow
def test_probabilities_equal_the_model_called_directly(smoke_run, scored):
    """Independent path: decode each image, flip it with numpy, encode the clinical data
    with the run's encoding (sex and site unknown), call the saved model."""
    import dermnet.models
    from dermnet.config import load_config
    from dermnet.data.clinical import load_clinical_encoder
    from dermnet.data.pipeline import load_image

    run, _ = smoke_run
    out, chosen, _ = scored
    config = load_config(run / "config.json")
    predictions = pd.read_csv(out / "predictions.csv").set_index("image")
    chosen = chosen.set_index("image_id").loc[predictions.index]
    paths = _image_paths(out, chosen.index)
    images = np.stack([load_image(str(path), config.data.image_size).numpy() for path in paths])
    frame = pd.DataFrame({"age": pd.to_numeric(chosen["age"]).to_numpy(), "sex": "unknown",
                          "localization": "unknown"})
    clinical = load_clinical_encoder(run / "clinical_encoding.json").transform(frame)
    model = dermnet.models.load_model(run / "model.keras")
    expected = np.mean([model.predict({"image": batch, "clinical": clinical}, verbose=0)
                        for batch in (images, images[:, :, ::-1])], axis=0)
    np.testing.assert_allclose(predictions[list(ISIC_COLUMNS)].to_numpy(), expected, atol=2e-5)


@pytest.mark.slow
def test_the_model_sees_each_image_stretched_whole_as_the_run_config_says(smoke_run, scored):
    """The batches the evaluation predicts, against OpenCV: the run's resize policy is
    "stretch", so a 300x300 or 640x400 image is resized whole to 64x80 (a centre crop would
    differ by about 10 grey levels on these images; decoders and resamplers by under 1)."""
    from dermnet.evaluation.external import load_external_evaluation
    from dermnet.evaluation.predictions import _dataset

    run, _ = smoke_run
    out, _, _ = scored
    evaluation, _ = load_external_evaluation(run, json.loads(
        (out / "metrics.json").read_text())["data_dir"], log=lambda message: None)
    assert getattr(evaluation.config.data, "resize", "stretch") == "stretch"
    batches = np.concatenate([inputs["image"].numpy()
                              for inputs, _ in _dataset(evaluation, None)])
    expected = np.stack([cv2.resize(cv2.imread(path)[..., ::-1], (80, 64),
                                    interpolation=cv2.INTER_AREA)
                         for path in evaluation.frame["path"]])
    difference = np.abs(batches.astype(int) - expected).mean(axis=(1, 2, 3))
    assert batches.shape == (12, 64, 80, 3) and difference.max() < 2, difference


def _image_paths(out, image_ids):
    folder = Path(json.loads((out / "metrics.json").read_text())["data_dir"]) / "images"
    return [next(folder.glob(f"{image_id}.*")) for image_id in image_ids]


@pytest.mark.slow
def test_a_mel_nv_set_without_clinical_columns_in_process(smoke_run, tmp_path):
    from dermnet.evaluation.external import evaluate_external

    run, phantom = smoke_run
    folder, chosen = build_external_set(phantom, tmp_path / "melnv", ("mel", "nv"), 3,
                                        ("image_id", "dx"))
    logged = []
    metrics = evaluate_external(run, folder, out=tmp_path / "scores", n_resamples=50,
                                runtime=False, log=logged.append)
    assert metrics["classes"] == ["mel", "nv"] and metrics["counts"] == {"mel": 3, "nv": 3}
    assert metrics["num_groups"] == 6  # no lesion_id: each image its own lesion
    assert "runtime_ms_per_image" not in metrics and metrics["synthetic"] is False
    assert set(metrics["seven_way"]["absent_predictions"]["per_class"]) == {
        "bcc", "akiec", "bkl", "df", "vasc"}
    assert "mel_sensitivity" in metrics and "mel_vs_rest" in metrics["auc"]
    assert (tmp_path / "scores" / "external.md").is_file()
    assert not (run / "external-melnv").exists()
    assert any("no age, sex, localization column" in line for line in logged)


@pytest.mark.slow
def test_an_image_tensorflow_cannot_decode_is_named(smoke_run, scored, tmp_path):
    from dermnet.evaluation.external import load_external_evaluation, predict_external
    from dermnet.evaluation.predictions import EvaluationError

    run, _ = smoke_run
    out, _, _ = scored
    evaluation, _ = load_external_evaluation(run, json.loads(
        (out / "metrics.json").read_text())["data_dir"], log=lambda message: None)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    frame = evaluation.frame.assign(path=[str(bad), *evaluation.frame["path"][1:]])
    with pytest.raises(EvaluationError, match="bad.jpg .*TensorFlow cannot decode it"):
        predict_external(dataclasses.replace(evaluation, frame=frame), 1)
