"""Clinical photo datasets: both layouts and a bare CSV, every validation problem named,
multi-task targets, the patient-grouped split, and the balanced and cropped variants."""

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data import clinical_photos as photos
from dermnet.data.ham10000 import DatasetError
from dermnet.data.photo_phantom import make_photo_plan


def write_photo(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((6, 8, 3), value, np.uint8))


def write_manifest(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")


def load_error(path, **kwargs):
    with pytest.raises(DatasetError) as caught:
        photos.load_photo_dataset(path, **kwargs)
    return caught.value


# --- reader --------------------------------------------------------------------------------


def test_reads_the_manifest_layout_with_extra_columns(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.png"):
        write_photo(tmp_path / "images" / name)
    write_manifest(tmp_path, ["image,patient_id,diagnosis,skin_x0",
                              "images/a.jpg,p1,Psoriasis ,3",
                              "images/b.jpg,p1,psoriasis,4",
                              "images/c.png,p2,ctcl,5"])
    dataset = photos.load_photo_dataset(tmp_path)
    frame = dataset.frame
    assert list(frame.columns) == [*photos.FRAME_COLUMNS, "skin_x0"]
    assert frame["diagnosis"].tolist() == ["psoriasis", "psoriasis", "ctcl"]
    assert frame["label"].tolist() == [0, 0, 4]
    assert frame["skin_x0"].tolist() == [3, 4, 5]  # numbers stay numbers
    assert frame["path"].tolist() == [str(tmp_path / "images" / name)
                                      for name in ("a.jpg", "b.jpg", "c.png")]
    assert dataset.layout == "manifest" and dataset.source == tmp_path / "manifest.csv"
    assert dataset.image_sizes == (((8, 6), 3),)
    assert dataset.warnings == ("no photos of eczema, acne, rosacea",)


def test_reads_the_folder_layout(tmp_path):
    write_photo(tmp_path / "eczema" / "p1" / "a.jpg")
    write_photo(tmp_path / "eczema" / "p1" / "visit2" / "b.JPG")  # deeper is fine
    write_photo(tmp_path / "Acne" / "p2" / "c.png")
    (tmp_path / "Acne" / "p2" / "notes.txt").write_text("not a photo")
    (tmp_path / "eczema" / "p1" / ".DS_Store").write_text("")
    write_photo(tmp_path / "cropped" / "eczema" / "p1" / "a.jpg")  # crop output inside SRC
    (tmp_path / "cropped" / "crop_manifest.csv").write_text("file,status,error\n")
    dataset = photos.load_photo_dataset(tmp_path)
    frame = dataset.frame.sort_values("image")
    assert frame["image"].tolist() == ["Acne/p2/c.png", "eczema/p1/a.jpg",
                                       "eczema/p1/visit2/b.JPG"]
    assert frame["patient_id"].tolist() == ["p2", "p1", "p1"]
    assert frame["diagnosis"].tolist() == ["acne", "eczema", "eczema"]
    assert dataset.layout == "folders"
    assert any("1 non-image file(s) ignored: Acne/p2/notes.txt" in w for w in dataset.warnings)
    assert any(w.startswith("cropped/ holds crop_manifest.csv") for w in dataset.warnings)


def test_reads_a_csv_file_relative_to_its_folder(tmp_path):
    write_photo(tmp_path / "images" / "a.jpg")
    (tmp_path / "lists").mkdir()
    csv_path = tmp_path / "lists" / "photos.csv"
    csv_path.write_text("\ufeffimage,patient_id,diagnosis\n../images/a.jpg,p1,rosacea\n")
    dataset = photos.load_photo_dataset(csv_path, check_images="full")
    assert dataset.frame["path"].tolist() == [str(tmp_path / "lists" / "../images/a.jpg")]
    assert dataset.root == tmp_path / "lists" and dataset.source == csv_path


def test_every_manifest_problem_is_named_with_line_and_field(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_photo(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"GIF89a not a jpeg")
    write_manifest(tmp_path, ["image,patient_id,diagnosis",
                              "a.jpg,p1,psoriasis",
                              "b.jpg,p2,psorasis",
                              "c.jpg,,acne",
                              "missing.jpg,p3,eczema",
                              "broken.jpg,p4,eczema",
                              "./a.jpg,p5,acne",
                              "c.jpg,p6",
                              "/abs/d.jpg,p7,acne"])
    problems = load_error(tmp_path).problems
    expected = [
        "manifest.csv line 3: diagnosis 'psorasis' is not one of psoriasis, eczema, acne, "
        "rosacea, ctcl",
        "manifest.csv line 4: patient_id is blank",
        "manifest.csv line 8: 2 fields, the header has 3",
        "manifest.csv line 9: image '/abs/d.jpg' is an absolute path",
        "manifest.csv: image 'a.jpg' appears on lines 2, 7",
        "manifest.csv line 5: image 'missing.jpg' not found",
        "manifest.csv line 6: image 'broken.jpg': not a JPEG or PNG file",
    ]
    for message in expected:
        assert sum(problem.startswith(message) for problem in problems) == 1, message
    assert len(problems) == len(expected) + 1  # /abs/d.jpg is also not found


def test_missing_columns_fail_at_once(tmp_path):
    write_manifest(tmp_path, ["image,patient", "a.jpg,p1"])
    error = load_error(tmp_path)
    assert error.problems == ["manifest.csv line 1: missing column(s) patient_id, diagnosis "
                              "(expected image,patient_id,diagnosis)"]


def test_folder_layout_problems(tmp_path):
    write_photo(tmp_path / "psorasis" / "p1" / "a.jpg")
    write_photo(tmp_path / "acne" / "b.jpg")
    write_photo(tmp_path / "loose.jpg")
    problems = load_error(tmp_path).problems
    assert problems == [
        "acne/b.jpg: photo directly in a diagnosis folder; put it in a <patient_id>/ folder",
        "loose.jpg: photo outside a <diagnosis>/<patient_id>/ folder",
        "psorasis/: folder name 'psorasis' is not a diagnosis (expected one of psoriasis, "
        "eczema, acne, rosacea, ctcl)",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no manifest.csv and no photos" in load_error(empty).problems[0]
    assert load_error(tmp_path / "nowhere").problems[0].endswith("no such file or folder")


def test_patient_with_two_diagnoses_is_allowed_and_noted(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_photo(tmp_path / name)
    write_manifest(tmp_path, ["image,patient_id,diagnosis", "a.jpg,p1,eczema",
                              "b.jpg,p1,acne", "c.jpg,p1,eczema"])
    dataset = photos.load_photo_dataset(tmp_path, diagnoses=("eczema", "acne"))
    assert dataset.frame["label"].tolist() == [0, 1, 0]
    assert dataset.warnings == ("1 patient(s) have photos of more than one diagnosis (allowed; "
                                "the split places each by their most frequent one): "
                                "p1 (acne 1, eczema 2)",)


def test_summary_counts_tasks(tmp_path):
    write_photo(tmp_path / "eczema" / "p1" / "a.jpg")
    write_photo(tmp_path / "ctcl" / "p2" / "b.jpg")
    summary = photos.format_photo_summary(photos.load_photo_dataset(tmp_path))
    assert "photos: 2    patients: 2" in summary
    assert "psoriasis_vs_eczema   psoriasis       0   eczema          1" in summary
    assert "ctcl_vs_eczema        ctcl            1   eczema          1" in summary


# --- tasks ---------------------------------------------------------------------------------


def test_task_targets_hand_computed():
    assert photos.task_names() == ["psoriasis_vs_eczema", "acne_vs_rosacea", "ctcl_vs_eczema"]
    targets = photos.compute_task_targets(["psoriasis", "eczema", "acne", "rosacea", "ctcl"])
    assert targets.dtype == np.float32
    np.testing.assert_array_equal(targets, [[0, -1, -1],   # psoriasis: task 1 negative
                                            [1, -1, 1],    # eczema: positive in tasks 1 and 3
                                            [-1, 0, -1],   # acne: task 2 negative
                                            [-1, 1, -1],   # rosacea: task 2 positive
                                            [-1, -1, 0]])  # ctcl: task 3 negative


def test_diagnosis_in_no_task_is_refused_unless_allowed():
    message = r"1 image\(s\) have a diagnosis in no task \(melanoma 1\)"
    with pytest.raises(ValueError, match=message):
        photos.compute_task_targets(["eczema", "melanoma"])
    targets = photos.compute_task_targets(["eczema", "melanoma"], allow_unused=True)
    np.testing.assert_array_equal(targets[1], [-1, -1, -1])
    with pytest.raises(ValueError, match="pair of two different diagnoses"):
        photos.compute_task_targets(["acne"], tasks=[("acne", "acne")])


# --- split ---------------------------------------------------------------------------------


def phantom_frame(num_patients=300, seed=0):
    """A phantom manifest in memory (no pixels): 1-4 photos per patient, the study's shares."""
    return make_photo_plan(num_patients, seed=seed)[["image", "patient_id", "diagnosis"]]


def test_split_keeps_patients_together_and_fractions_per_class():
    frame = phantom_frame()
    splits = photos.make_photo_splits(frame, seed=5)
    assert splits["image"].tolist() == frame["image"].tolist()
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    counts = photos.compute_split_counts(splits)
    assert list(counts.columns) == ["train", "val", "test", "all"]
    for diagnosis, row in counts.iterrows():
        for split, fraction in zip(photos.SPLITS, (0.8, 0.1, 0.1)):
            # within two patients' photos (4 each at most) of the exact share
            assert abs(row[split] - fraction * row["all"]) <= 8, (diagnosis, split)
    shares = splits["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.02)
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    assert "patients in more than one split: 0" in photos.format_photo_split_summary(splits)


def test_split_is_deterministic_per_seed():
    frame = phantom_frame()
    first = photos.make_photo_splits(frame, seed=1)
    pd.testing.assert_frame_equal(first, photos.make_photo_splits(frame, seed=1))
    assert not first["split"].equals(photos.make_photo_splits(frame, seed=2)["split"])


def test_patient_with_several_diagnoses_follows_the_most_frequent():
    def frame(rows):
        return pd.DataFrame(rows, columns=["image", "patient_id", "diagnosis"])

    mixed = [("a1", "p1", "acne"), ("a2", "p1", "rosacea"), ("a3", "p1", "rosacea")]
    rosacea = [(f"r{i}", f"q{i}", "rosacea") for i in range(9)]
    acne = [(f"c{i}", f"q{i}", "acne") for i in range(9)]
    assert photos._patient_strata(frame(mixed + acne))["p1"] == "rosacea"
    # A tie goes to the diagnosis rarer in the whole frame, whatever its name.
    assert photos._patient_strata(frame(mixed[:2] + rosacea))["p1"] == "acne"
    assert photos._patient_strata(frame(mixed[:2] + acne))["p1"] == "rosacea"
    splits = photos.make_photo_splits(frame(mixed + rosacea), seed=0)
    assert splits.loc[splits["patient_id"] == "p1", "split"].nunique() == 1


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="three shares"):
        photos.make_photo_splits(phantom_frame(20), fractions=(0.8, 0.3, 0.1))


def test_splits_round_trip_and_bad_values_name_the_line(tmp_path):
    splits = photos.make_photo_splits(phantom_frame(40), seed=0)
    photos.save_photo_splits(splits, tmp_path / "splits.csv")
    pd.testing.assert_frame_equal(photos.load_photo_splits(tmp_path / "splits.csv"),
                                  splits.astype(str))
    text = (tmp_path / "splits.csv").read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",validation"
    (tmp_path / "bad.csv").write_text("\n".join(text))
    with pytest.raises(ValueError, match=r"bad.csv line 4: split 'validation' is not one of"):
        photos.load_photo_splits(tmp_path / "bad.csv")


def test_attach_splits_names_photos_without_one():
    frame = phantom_frame(20)
    splits = photos.make_photo_splits(frame, seed=0)
    joined = photos.attach_photo_splits(frame, splits)
    assert joined["split"].tolist() == splits["split"].tolist()
    with pytest.raises(ValueError, match="1 photo\\(s\\) have no split: " + frame["image"][0]):
        photos.attach_photo_splits(frame, splits.iloc[1:])


# --- variants ------------------------------------------------------------------------------


def test_balanced_oversamples_training_photos_only():
    frame = phantom_frame()
    frame = photos.attach_photo_splits(frame, photos.make_photo_splits(frame, seed=0))
    balanced = photos.make_balanced(frame, seed=3)
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
    pd.testing.assert_frame_equal(balanced, photos.make_balanced(frame, seed=3))


def test_balanced_without_split_column_uses_every_row():
    frame = pd.DataFrame({"image": list("abcde"), "diagnosis": ["x", "x", "x", "y", "z"]},
                         index=[3, 3, 4, 4, 4])  # rows are taken by position, not label
    balanced = photos.make_balanced(frame)
    assert balanced["image"].tolist() == list("abcde") + ["d", "d", "e", "e"]
    assert balanced["diagnosis"].value_counts().to_dict() == {"x": 3, "y": 3, "z": 3}
    assert balanced["repeat"].tolist() == [0] * 5 + [1, 2, 1, 2]


def write_crop_manifest(path, rows):
    header = ",".join(photos.CROP_COLUMNS)
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
    cropped = photos.cropped_dataset_manifest(frame, manifest, tmp_path / "dst")
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
        photos.cropped_dataset_manifest(frame, manifest, tmp_path)
    assert caught.value.problems == [
        "photo 'd.jpg' is not in crop_manifest.csv",
        "crop_manifest.csv line 3: file 'b.jpg': crop failed (unreadable: bad data)",
        f"cropped copy of 'c.jpg' not found: {tmp_path / 'c.jpg'}",
    ]
