"""The patient-grouped, diagnosis-stratified split of clinical photos (kept together per
patient, shared per class, deterministic, saved and re-read) and the balanced and cropped
versions of the data."""

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data import photo_splits
from dermnet.data.ham10000 import DatasetError
from dermnet.data.photo_phantom import make_photo_plan


def write_photo(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((6, 8, 3), value, np.uint8))


# --- split ---------------------------------------------------------------------------------


def phantom_frame(num_patients=300, seed=0):
    """A phantom manifest in memory (no pixels): 1-4 photos per patient, the study's shares."""
    return make_photo_plan(num_patients, seed=seed)[["image", "patient_id", "diagnosis"]]


def test_split_keeps_patients_together_and_fractions_per_class():
    frame = phantom_frame()
    splits = photo_splits.make_photo_splits(frame, seed=5)
    assert splits["image"].tolist() == frame["image"].tolist()
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    counts = photo_splits.compute_split_counts(splits)
    assert list(counts.columns) == ["train", "val", "test", "all"]
    for diagnosis, row in counts.iterrows():
        for split, fraction in zip(photo_splits.SPLITS, (0.8, 0.1, 0.1)):
            # within two patients' photos (4 each at most) of the exact share
            assert abs(row[split] - fraction * row["all"]) <= 8, (diagnosis, split)
    shares = splits["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.02)
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    assert "patients in more than one split: 0" in photo_splits.format_photo_split_summary(splits)


def test_split_is_deterministic_per_seed():
    frame = phantom_frame()
    first = photo_splits.make_photo_splits(frame, seed=1)
    pd.testing.assert_frame_equal(first, photo_splits.make_photo_splits(frame, seed=1))
    assert not first["split"].equals(photo_splits.make_photo_splits(frame, seed=2)["split"])


def test_patient_with_several_diagnoses_follows_the_most_frequent():
    def frame(rows):
        return pd.DataFrame(rows, columns=["image", "patient_id", "diagnosis"])

    mixed = [("a1", "p1", "acne"), ("a2", "p1", "rosacea"), ("a3", "p1", "rosacea")]
    rosacea = [(f"r{i}", f"q{i}", "rosacea") for i in range(9)]
    acne = [(f"c{i}", f"q{i}", "acne") for i in range(9)]
    assert photo_splits._patient_strata(frame(mixed + acne))["p1"] == "rosacea"
    # A tie goes to the diagnosis rarer in the whole frame, whatever its name.
    assert photo_splits._patient_strata(frame(mixed[:2] + rosacea))["p1"] == "acne"
    assert photo_splits._patient_strata(frame(mixed[:2] + acne))["p1"] == "rosacea"
    splits = photo_splits.make_photo_splits(frame(mixed + rosacea), seed=0)
    assert splits.loc[splits["patient_id"] == "p1", "split"].nunique() == 1


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="three shares"):
        photo_splits.make_photo_splits(phantom_frame(20), fractions=(0.8, 0.3, 0.1))


def test_splits_round_trip_and_bad_values_name_the_line(tmp_path):
    splits = photo_splits.make_photo_splits(phantom_frame(40), seed=0)
    photo_splits.save_photo_splits(splits, tmp_path / "splits.csv")
    pd.testing.assert_frame_equal(photo_splits.load_photo_splits(tmp_path / "splits.csv"),
                                  splits.astype(str))
    text = (tmp_path / "splits.csv").read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",validation"
    (tmp_path / "bad.csv").write_text("\n".join(text))
    with pytest.raises(ValueError, match=r"bad.csv line 4: split 'validation' is not one of"):
        photo_splits.load_photo_splits(tmp_path / "bad.csv")


def test_attach_splits_names_photos_without_one():
    frame = phantom_frame(20)
    splits = photo_splits.make_photo_splits(frame, seed=0)
    joined = photo_splits.attach_photo_splits(frame, splits)
    assert joined["split"].tolist() == splits["split"].tolist()
    with pytest.raises(ValueError, match="1 photo\\(s\\) have no split: " + frame["image"][0]):
        photo_splits.attach_photo_splits(frame, splits.iloc[1:])


# --- variants ------------------------------------------------------------------------------


def test_balanced_oversamples_training_photos_only():
    frame = phantom_frame()
    frame = photo_splits.attach_photo_splits(frame, photo_splits.make_photo_splits(frame, seed=0))
    balanced = photo_splits.make_balanced(frame, seed=3)
    training = balanced[balanced["split"] == "train"]
    majority = frame.loc[frame["split"] == "train", "diagnosis"].value_counts().max()
    assert (training["diagnosis"].value_counts() == majority).all()
    pd.testing.assert_frame_equal(  # val and test untouched
        balanced[balanced["split"] != "train"].drop(columns="repeat").reset_index(drop=True),
        frame[frame["split"] != "train"].reset_index(drop=True))
    pd.testing.assert_frame_equal(balanced.iloc[:len(frame)].drop(columns="repeat"), frame)
    # Each training photo appears floor or ceil(majority / class count) times.
    for diagnosis, rows in training.groupby("diagnosis"):
        times = rows["image"].value_counts()
        ratio = majority / times.size
        assert times.min() >= np.floor(ratio) and times.max() <= np.ceil(ratio), diagnosis
    pd.testing.assert_frame_equal(balanced, photo_splits.make_balanced(frame, seed=3))


def test_balanced_without_split_column_uses_every_row():
    frame = pd.DataFrame({"image": list("abcde"), "diagnosis": ["x", "x", "x", "y", "z"]},
                         index=[3, 3, 4, 4, 4])  # rows are taken by position, not label
    balanced = photo_splits.make_balanced(frame)
    assert balanced["image"].tolist() == list("abcde") + ["d", "d", "e", "e"]
    assert balanced["diagnosis"].value_counts().to_dict() == {"x": 3, "y": 3, "z": 3}
    assert balanced["repeat"].tolist() == [0] * 5 + [1, 2, 1, 2]


def write_crop_manifest(path, rows):
    header = ",".join(photo_splits.CROP_COLUMNS)
    lines = [f"{file},{status},600,450,10,20,300,400,0.5,0.1,{error}"
             for file, status, error in rows]
    path.write_text("\n".join([header, *lines]) + "\n")


def test_cropped_manifest_maps_rows_to_the_copies(tmp_path):
    frame = pd.DataFrame({"image": ["images/a.jpg", "images/b.jpg", "images/c.jpg"],
                          "path": [f"/data/images/{name}.jpg" for name in "abc"],
                          "diagnosis": ["acne", "ctcl", "acne"]})
    write_photo(tmp_path / "dst" / "images" / "a.jpg")
    write_photo(tmp_path / "dst" / "images" / "c.jpg")
    manifest = tmp_path / "dst" / "crop_manifest.csv"
    write_crop_manifest(manifest, [("images/a.jpg", "ok", ""), ("images/b.jpg", "no_skin", ""),
                                   ("images/c.jpg", "exists", "output exists")])
    cropped = photo_splits.cropped_dataset_manifest(frame, manifest, tmp_path / "dst")
    assert cropped["path"].tolist() == [str(tmp_path / "dst" / "images" / "a.jpg"),
                                        "/data/images/b.jpg",  # no skin found: the original
                                        str(tmp_path / "dst" / "images" / "c.jpg")]
    assert cropped["crop_status"].tolist() == ["ok", "no_skin", "exists"]
    assert cropped[["crop_x0", "crop_y1"]].to_numpy().tolist() == [[10, 400]] * 3


def test_cropped_manifest_reports_failed_and_missing_crops(tmp_path):
    frame = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
                          "path": ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg"]})
    write_photo(tmp_path / "a.jpg")
    manifest = tmp_path / "crop_manifest.csv"
    write_crop_manifest(manifest, [("a.jpg", "ok", ""), ("b.jpg", "unreadable", "bad data"),
                                   ("c.jpg", "ok", "")])
    with pytest.raises(DatasetError) as caught:
        photo_splits.cropped_dataset_manifest(frame, manifest, tmp_path)
    assert caught.value.problems == [
        "photo 'd.jpg' is not in crop_manifest.csv",
        "crop_manifest.csv line 3: file 'b.jpg': crop failed (unreadable: bad data)",
        f"cropped copy of 'c.jpg' not found: {tmp_path / 'c.jpg'}",
    ]
