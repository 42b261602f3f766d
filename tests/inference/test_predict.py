"""The prediction library: loading, image reading as in training, probabilities, top-k,
clinical rows from options and from a CSV, and the errors that name what is wrong."""

import warnings

import numpy as np
import pandas as pd
import pytest

from dermnet.data.pipeline import PipelineConfig, build_dataset, load_image
from dermnet.inference.predict import (
    ClinicalInputError,
    ImageReadError,
    InputFileError,
    check_clinical_rows,
    compute_top_k,
    load_predictor,
    make_clinical_rows,
    read_clinical_csv,
    read_images,
)

MODEL_SIZE = (32, 40)  # (H, W) of the models conftest.py saves


@pytest.fixture(scope="module")
def image_predictor(image_run):
    return load_predictor(image_run)


@pytest.fixture(scope="module")
def clinical_predictor(clinical_run):
    return load_predictor(clinical_run)


def test_probabilities_sum_to_one_and_equal_the_model_on_training_pixels(image_predictor,
                                                                          images):
    paths = [images["jpeg"], images["png"]]
    probabilities = image_predictor.predict(paths)
    pixels = np.stack([load_image(str(path), MODEL_SIZE).numpy() for path in paths])
    expected = image_predictor.model.predict({"image": pixels}, verbose=0)
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)


def test_clinical_predictions_use_the_runs_encoding(clinical_predictor, images):
    paths = [images["jpeg"], images["jpeg"]]
    rows = pd.DataFrame({"age": [45.0, 80.0], "sex": ["male", "female"],
                         "localization": ["back", "face"]})
    probabilities = clinical_predictor.predict(paths, rows)
    pixels = np.stack([load_image(str(path), MODEL_SIZE).numpy() for path in paths])
    clinical = clinical_predictor.encoder.transform(rows)
    expected = clinical_predictor.model.predict({"image": pixels, "clinical": clinical},
                                                verbose=0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(probabilities[0], probabilities[1])  # same image, other patient


def test_images_are_read_exactly_as_the_training_pipeline_reads_them(images):
    paths = [str(images["jpeg"]), str(images["png"])]
    config = PipelineConfig(image_size=MODEL_SIZE, batch_size=2, cache="none")
    batch, _ = next(iter(build_dataset(paths, [0, 1], config=config, training=False)))
    np.testing.assert_array_equal(read_images(paths, MODEL_SIZE), batch["image"].numpy())


def test_grey_and_rgba_images_become_rgb_at_the_model_size(images):
    grey, rgba, rgb = read_images([images["grey"], images["rgba"], images["png"]], (50, 70))
    assert grey.shape == (50, 70, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    np.testing.assert_array_equal(grey[..., 1], rgb[..., 1])  # the grey is the green channel
    np.testing.assert_array_equal(rgba, rgb)  # alpha dropped, colours kept


def test_every_unreadable_file_is_named_with_its_reason(images):
    bad = [images["missing"], images["text"], images["truncated"]]
    with pytest.raises(ImageReadError) as raised:
        read_images([images["jpeg"], *bad], MODEL_SIZE)
    problems = raised.value.problems
    assert list(problems) == bad
    assert problems[images["missing"]] == "no such file"
    assert problems[images["text"]].startswith("not a readable image (Unknown image file")
    assert problems[images["truncated"]].startswith("not a readable image (")
    assert "{{" not in str(raised.value) and "[Op:" not in str(raised.value)
    with pytest.raises(ImageReadError, match="not a file"):
        read_images([images["jpeg"].parent], MODEL_SIZE)


def test_top_k_is_most_probable_first_with_ties_in_class_order():
    probabilities = np.array([[0.1, 0.3, 0.05, 0.3, 0.15, 0.05, 0.05],
                              [0.7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3]])
    np.testing.assert_array_equal(compute_top_k(probabilities, 3), [[1, 3, 4], [0, 6, 1]])
    assert compute_top_k(probabilities, 7).shape == (2, 7)


def test_a_bare_model_file_finds_its_encoding_beside_it(clinical_run, image_run, tmp_path):
    from_file = load_predictor(clinical_run / "model.keras")
    assert from_file.needs_clinical and from_file.encoder.num_features == 20
    assert from_file.image_size == MODEL_SIZE
    assert load_predictor(image_run / "model.keras").encoder is None
    lonely = tmp_path / "lonely.keras"
    lonely.write_bytes((clinical_run / "model.keras").read_bytes())
    with pytest.raises(InputFileError, match="no clinical_encoding.json beside it"):
        load_predictor(lonely)


def test_missing_or_invalid_model_paths_are_named(tmp_path):
    with pytest.raises(InputFileError, match="nowhere.keras: no such model file"):
        load_predictor(tmp_path / "nowhere.keras")
    with pytest.raises(InputFileError, match="not a run directory .no model.keras"):
        load_predictor(tmp_path)
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip")
    with pytest.raises(InputFileError, match="junk.keras: cannot load the model"):
        load_predictor(junk)


def test_clinical_model_refuses_to_predict_without_clinical_rows(clinical_predictor, images):
    with pytest.raises(ClinicalInputError, match="needs clinical data"):
        clinical_predictor.predict([images["jpeg"]])


def test_image_model_warns_that_clinical_rows_are_ignored(image_predictor, images):
    rows = make_clinical_rows(1, 40, "male", "back")
    with pytest.warns(UserWarning, match="clinical inputs are ignored"):
        with_rows = image_predictor.predict([images["jpeg"]], rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(with_rows, image_predictor.predict([images["jpeg"]]))


def test_clinical_values_are_normalised_and_unknown_is_allowed():
    rows = check_clinical_rows(pd.DataFrame({
        "age": ["45", "unknown", "", 0, "120"],
        "sex": ["Male", "unknown", "", "female", " FEMALE "],
        "localization": ["Lower_Extremity", "unknown", "", "back", "upper  extremity"]}))
    assert rows["age"].tolist()[0] == 45.0 and rows["age"].isna().tolist() == [
        False, True, True, False, False]
    assert rows["sex"].tolist() == ["male", "unknown", "unknown", "female", "female"]
    assert rows["localization"].tolist() == ["lower extremity", "unknown", "unknown", "back",
                                             "upper extremity"]


@pytest.mark.parametrize("field, value, message", [
    ("age", "-1", "row 1: age '-1' is not a number from 0 to 120"),
    ("age", "121", "age '121' is not a number"),
    ("age", "forty", "age 'forty' is not a number"),
    ("sex", "mail", "sex 'mail' is not one of male, female, unknown"),
    ("localization", "elbow", "site 'elbow' is not one of back, lower extremity"),
])
def test_invalid_clinical_values_are_refused(field, value, message):
    row = {"age": "40", "sex": "male", "localization": "back"} | {field: value}
    with pytest.raises(ClinicalInputError, match=message):
        check_clinical_rows(pd.DataFrame([row]))


def test_clinical_rows_from_options_repeat_one_validated_row():
    rows = make_clinical_rows(3, "50", "female", "face")
    assert rows.to_dict("list") == {"age": [50.0] * 3, "sex": ["female"] * 3,
                                    "localization": ["face"] * 3}
    with pytest.raises(ClinicalInputError, match="^sex 'x' is not one of"):
        make_clinical_rows(2, "50", "x", "face")


def test_clinical_csv_rows_match_by_path_name_or_id(tmp_path):
    folder = tmp_path / "photos"
    images = [folder / "a.jpg", folder / "b.png", folder / "ISIC_0001.jpg"]
    csv = tmp_path / "clinical.csv"
    pd.DataFrame({
        "image": ["ISIC_0001", "b.png", str(folder / "a.jpg"), "other.jpg"],
        "age": ["70", "", "30", "99"], "sex": ["male", "female", "unknown", "male"],
        "localization": ["face", "back", "trunk", "hand"],
    }).to_csv(csv, index=False)
    rows = read_clinical_csv(csv, images)
    assert rows["sex"].tolist() == ["unknown", "female", "male"]
    assert rows["localization"].tolist() == ["trunk", "back", "face"]
    assert rows["age"].fillna(-1).tolist() == [30.0, -1.0, 70.0]


def test_clinical_csv_errors_name_the_image_column_or_file(tmp_path):
    csv = tmp_path / "clinical.csv"
    csv.write_text("image,age,sex,localization\na.jpg,40,male,back\na.jpg,41,male,back\n"
                   "c.jpg,40,mail,back\n")
    with pytest.raises(ClinicalInputError, match="no row for image .*b.jpg"):
        read_clinical_csv(csv, [tmp_path / "b.jpg"])
    with pytest.raises(ClinicalInputError, match="several rows match image .*a.jpg"):
        read_clinical_csv(csv, [tmp_path / "a.jpg"])
    with pytest.raises(ClinicalInputError, match="c.jpg: sex 'mail'"):
        read_clinical_csv(csv, [tmp_path / "c.jpg"])
    csv.write_text("image,age,gender\na.jpg,40,male\n")
    with pytest.raises(ClinicalInputError, match="missing column.s. sex, localization"):
        read_clinical_csv(csv, [tmp_path / "a.jpg"])
    with pytest.raises(InputFileError, match="absent.csv: cannot read the clinical CSV"):
        read_clinical_csv(tmp_path / "absent.csv", [tmp_path / "a.jpg"])

