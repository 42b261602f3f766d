"""Clinical photo datasets: both layouts and a bare CSV, every validation problem named, and
the multi-task targets."""

import cv2
import numpy as np
import pytest

from dermnet.data import clinical_photos as photos
from dermnet.data.ham10000 import DatasetError


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
