"""Tests of the HAM10000 reader and validator (dermnet.data.ham10000 and .jpeg_check).

Every dataset is written here, in tmp_path: a metadata CSV and tiny JPEGs made with OpenCV.
Damage tests assert that the error names the file, the CSV line and the field.
"""

import csv
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data import jpeg_check
from dermnet.data.ham10000 import DatasetError, format_summary, load_ham10000, load_metadata
from dermnet.data.vocabulary import CLASSES, METADATA_FILENAME, REQUIRED_COLUMNS

LAYOUT_FOLDERS = {
    "kaggle": ("HAM10000_images_part_1", "HAM10000_images_part_2"),
    "dataverse": ("HAM10000_images_part1", "HAM10000_images_part2"),
    "flat": ("images",),
}
WIDTH, HEIGHT = 40, 30  # small, with HAM10000's 4:3 aspect


def make_rows() -> list[dict]:
    """Nine images of seven lesions, every class once; lesions 1 and 2 have two images."""
    rows = []
    for index, code in enumerate(CLASSES):
        rows.append({
            "lesion_id": f"HAM_{index:07d}", "image_id": f"ISIC_{index:07d}", "dx": code,
            "dx_type": "histo", "age": f"{30 + 5 * index}.0",
            "sex": ("male", "female")[index % 2], "localization": "back",
            "dataset": "vidir_modern",
        })
    for index in (1, 2):
        rows.append({**rows[index], "image_id": f"ISIC_{10 + index:07d}"})
    rows[3]["age"] = ""  # HAM10000 has 57 blank ages
    return rows


def encode_image(seed: int = 0, size=(WIDTH, HEIGHT), suffix: str = ".jpg") -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return cv2.imencode(suffix, image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def write_csv(path: Path, rows: list[dict], columns=None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([row.get(column, "") for column in columns] for row in rows)
    return path


def write_dataset(root: Path, rows=None, layout="kaggle", with_dataset=True) -> Path:
    """Write a HAM10000-style folder: metadata CSV + one JPEG per row, spread over folders."""
    rows = make_rows() if rows is None else rows
    columns = list(REQUIRED_COLUMNS) + (["dataset"] if with_dataset else [])
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / METADATA_FILENAME, rows, columns)
    folders = LAYOUT_FOLDERS[layout]
    for index, row in enumerate(rows):
        folder = root / folders[index % len(folders)]
        folder.mkdir(exist_ok=True)
        (folder / f"{row['image_id']}.jpg").write_bytes(encode_image(index))
    return root


def image_path(root: Path, image_id: str) -> Path:
    return next(root.glob(f"*/{image_id}.*"))


def problems_of(root, **kwargs) -> list[str]:
    with pytest.raises(DatasetError) as caught:
        load_ham10000(root, **kwargs)
    return caught.value.problems


def one_problem(root, **kwargs) -> str:
    problems = problems_of(root, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- valid datasets ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUT_FOLDERS))
@pytest.mark.parametrize("with_dataset", [True, False])
def test_loads_every_layout(tmp_path, layout, with_dataset):
    root = write_dataset(tmp_path / "ham", layout=layout, with_dataset=with_dataset)
    dataset = load_ham10000(root)
    frame = dataset.frame
    expected = [*REQUIRED_COLUMNS, *(["dataset"] if with_dataset else []), "path", "label"]
    assert list(frame.columns) == expected
    assert dataset.layout.startswith(layout)
    assert dataset.warnings == ()
    assert dataset.image_sizes == (((WIDTH, HEIGHT), 9),)
    assert dataset.metadata_path == root.absolute() / METADATA_FILENAME
    assert frame["label"].tolist() == [CLASSES.index(code) for code in frame["dx"]]
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in frame["path"])
    assert frame["path"].map(lambda path: Path(path).stem).tolist() == frame["image_id"].tolist()
    assert frame["age"].dtype == float and frame["age"].isna().sum() == 1
    assert frame.loc[0, "age"] == 30.0


def test_kaggle_layout_uses_both_folders(tmp_path):
    dataset = load_ham10000(write_dataset(tmp_path))
    parents = {Path(path).parent.name for path in dataset.frame["path"]}
    assert parents == set(LAYOUT_FOLDERS["kaggle"])
    assert dataset.layout == "kaggle (HAM10000_images_part_1, HAM10000_images_part_2)"


@pytest.mark.parametrize("mode", ["none", "header", "full"])
def test_every_check_mode_accepts_a_clean_dataset(tmp_path, mode):
    dataset = load_ham10000(write_dataset(tmp_path), check_images=mode, workers=2)
    assert len(dataset.frame) == 9
    assert (dataset.image_sizes == ()) == (mode == "none")


def test_rejects_an_unknown_check_mode(tmp_path):
    with pytest.raises(ValueError, match="check_images"):
        load_ham10000(write_dataset(tmp_path), check_images="quick")


def test_summary_reports_counts_classes_and_missing(tmp_path):
    rows = make_rows()
    rows[0]["sex"] = "unknown"
    text = format_summary(load_ham10000(write_dataset(tmp_path, rows)))
    assert "images: 9    lesions: 7    lesions with >1 image: 2" in text
    assert "nv           2    22.2" in text
    assert "missing: age 1, sex 1 (unknown), localization 0 (unknown)" in text
    assert f"image sizes: {WIDTH}x{HEIGHT} (9)" in text
    assert "layout: kaggle" in text


def test_normalises_case_and_whitespace(tmp_path):
    rows = make_rows()
    rows[0].update(dx=" MEL ", sex="Male", localization="Lower Extremity", dx_type="HISTO")
    frame = load_ham10000(write_dataset(tmp_path, rows)).frame
    assert frame.loc[0, ["dx", "sex", "localization", "dx_type"]].tolist() == [
        "mel", "male", "lower extremity", "histo"]


# --- the folder ----------------------------------------------------------------------------


def test_missing_metadata_names_folder_and_expected_file(tmp_path):
    root = write_dataset(tmp_path)
    (root / METADATA_FILENAME).rename(root / "metadata.csv")
    problem = one_problem(root)
    assert METADATA_FILENAME in problem and str(root) in problem
    assert "metadata.csv" in problem.replace(METADATA_FILENAME, "")


def test_no_image_folder_lists_the_folders_looked_for(tmp_path):
    root = write_dataset(tmp_path, layout="flat")
    (root / "images").rename(root / "pictures")
    problem = one_problem(root)
    assert "no image folder" in problem
    assert "HAM10000_images_part_1" in problem and "images" in problem


def test_not_a_folder(tmp_path):
    assert "not a folder" in one_problem(tmp_path / "nowhere")


def test_image_in_two_folders_is_a_warning(tmp_path):
    root = write_dataset(tmp_path)
    (root / "images").mkdir()
    (root / "images" / "ISIC_0000000.jpg").write_bytes(encode_image(0))
    dataset = load_ham10000(root)
    assert any("found more than once" in w and "ISIC_0000000" in w for w in dataset.warnings)
    assert any("more than one layout" in warning for warning in dataset.warnings)
    assert Path(dataset.frame.loc[0, "path"]).parent.name == "HAM10000_images_part_1"


def test_accepts_other_extensions_case_insensitively(tmp_path):
    root = write_dataset(tmp_path)
    image_path(root, "ISIC_0000000").rename(root / "HAM10000_images_part_1/ISIC_0000000.JPEG")
    (root / "HAM10000_images_part_2/ISIC_0000001.jpg").unlink()
    png = encode_image(1, suffix=".png")
    (root / "HAM10000_images_part_2/ISIC_0000001.png").write_bytes(png)
    dataset = load_ham10000(root, check_images="full")
    assert dataset.frame.loc[0, "path"].endswith("ISIC_0000000.JPEG")
    assert dataset.frame.loc[1, "path"].endswith("ISIC_0000001.png")


def test_unlisted_image_files_are_a_warning(tmp_path):
    root = write_dataset(tmp_path)
    (root / "HAM10000_images_part_1/ISIC_9999999.jpg").write_bytes(encode_image(5))
    (root / "HAM10000_images_part_1/._ISIC_0000000.jpg").write_bytes(b"macOS fork")
    warnings = load_ham10000(root).warnings
    assert len(warnings) == 1 and "1 image file(s) not in the metadata" in warnings[0]
    assert "ISIC_9999999" in warnings[0]


# --- damaged image files -------------------------------------------------------------------


def test_missing_image_names_image_and_line(tmp_path):
    root = write_dataset(tmp_path)
    image_path(root, "ISIC_0000004").unlink()
    problem = one_problem(root)
    assert "ISIC_0000004" in problem and "line 6" in problem


def test_missing_images_are_each_listed_with_a_count(tmp_path):
    rows = [{**make_rows()[1], "lesion_id": f"HAM_{i:07d}", "image_id": f"ISIC_{i:07d}"}
            for i in range(50)]
    root = write_dataset(tmp_path, rows)
    for path in (root / "HAM10000_images_part_2").iterdir():
        path.unlink()
    problems = problems_of(root)
    assert problems[0] == "25 of 50 images listed in the metadata are missing"
    assert len(problems) == 26
    assert "HAM10000_images_part_1, HAM10000_images_part_2" in problems[1]


@pytest.mark.parametrize("mode", ["header", "full"])
@pytest.mark.parametrize("damage, expected", [
    (lambda data: b"", "empty file (0 bytes)"),
    (lambda data: np.random.default_rng(1).bytes(len(data)), "not a JPEG or PNG"),
    (lambda data: data[:len(data) // 2], "truncated JPEG"),
    (lambda data: data[:-2], "truncated JPEG"),
    (lambda data: data[:100], "truncated"),
])
def test_damaged_jpeg_is_an_error_naming_file_and_line(tmp_path, mode, damage, expected):
    root = write_dataset(tmp_path)
    path = image_path(root, "ISIC_0000002")
    path.write_bytes(damage(path.read_bytes()))
    problem = one_problem(root, check_images=mode)
    assert expected in problem
    assert f"{path.parent.name}/ISIC_0000002.jpg" in problem and "line 4" in problem


def test_none_mode_only_checks_existence(tmp_path):
    root = write_dataset(tmp_path)
    image_path(root, "ISIC_0000002").write_bytes(b"")
    assert len(load_ham10000(root, check_images="none").frame) == 9


def test_full_mode_catches_damaged_scan_data_that_header_mode_passes(tmp_path):
    root = write_dataset(tmp_path)
    path = image_path(root, "ISIC_0000000")
    data = bytearray(path.read_bytes())
    middle = len(data) * 2 // 3
    data[middle:middle + 2] = b"\xff\xc0"  # a frame header marker cannot occur inside a scan
    path.write_bytes(bytes(data))
    load_ham10000(root, check_images="header")
    assert "corrupt JPEG" in one_problem(root, check_images="full")


def test_odd_image_size_is_a_warning(tmp_path):
    root = write_dataset(tmp_path)
    image_path(root, "ISIC_0000003").write_bytes(encode_image(3, size=(64, 48)))
    dataset = load_ham10000(root)
    assert dataset.image_sizes == (((WIDTH, HEIGHT), 8), ((64, 48), 1))
    assert any("1 image(s) differ from the usual size 40x30: ISIC_0000003.jpg 64x48" in w
               for w in dataset.warnings)


def test_png_content_under_jpg_name_is_a_warning(tmp_path):
    root = write_dataset(tmp_path)
    image_path(root, "ISIC_0000003").write_bytes(encode_image(3, suffix=".png"))
    warnings = load_ham10000(root).warnings
    assert any("does not match the extension" in w and "ISIC_0000003" in w for w in warnings)


# --- jpeg_check directly -------------------------------------------------------------------


def test_header_check_reads_size_and_channels(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(encode_image(0, size=(600, 450)))
    assert jpeg_check.check_image_file(path) == jpeg_check.ImageInfo("jpeg", 600, 450, 3)
    grey = cv2.imencode(".jpg", np.zeros((7, 9), np.uint8))[1].tobytes()
    assert jpeg_check.check_image_bytes(grey) == jpeg_check.ImageInfo("jpeg", 9, 7, 1)


@pytest.mark.parametrize("options", [
    [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],  # ten scans with Huffman tables between them
    [cv2.IMWRITE_JPEG_RST_INTERVAL, 2],  # restart markers inside the scan
    [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 1],
])
def test_full_check_walks_progressive_and_restart_scans(options):
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image, options)[1].tobytes()
    assert jpeg_check.check_image_bytes(data) == jpeg_check.ImageInfo("jpeg", WIDTH, HEIGHT, 3)
    damaged = data[:len(data) // 2] + b"\xff\xc1" + data[len(data) // 2 + 2:]
    with pytest.raises(jpeg_check.ImageError, match="corrupt JPEG data: marker FFC1"):
        jpeg_check.check_image_bytes(damaged)


def test_header_check_follows_segments_past_the_buffered_head(tmp_path):
    data = encode_image(0)
    comment = b"x" * 60000  # a COM segment longer than HEAD_BYTES
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    path = tmp_path / "a.jpg"
    path.write_bytes(data[:2] + segment * 2 + data[2:])
    assert jpeg_check.check_image_file(path).width == WIDTH
    path.write_bytes(data[:2] + segment[:40000])
    with pytest.raises(jpeg_check.ImageError, match="truncated"):
        jpeg_check.check_image_file(path)


def test_trailing_padding_after_end_of_image_is_accepted(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(encode_image(0) + b"\x00" * 500)
    assert jpeg_check.check_image_file(path, "full").height == HEIGHT
    path.write_bytes(encode_image(0) + b"\x00" * (jpeg_check.TAIL_BYTES + 10))
    with pytest.raises(jpeg_check.ImageError, match="no end-of-image marker"):
        jpeg_check.check_image_file(path)


def test_truncated_png_is_caught_by_the_header_check(tmp_path):
    data = encode_image(0, suffix=".png")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert jpeg_check.check_image_file(path) == jpeg_check.ImageInfo("png", WIDTH, HEIGHT, 3)
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(jpeg_check.ImageError, match="truncated PNG"):
        jpeg_check.check_image_file(path)


def test_check_image_files_keeps_order_across_threads(tmp_path):
    paths = []
    for index in range(150):
        paths.append(tmp_path / f"{index}.jpg")
        paths[-1].write_bytes(encode_image(index, size=(8 + index, 8)) if index % 7 else b"")
    outcomes = jpeg_check.check_image_files(paths, workers=3)
    assert [isinstance(o, str) for o in outcomes] == [index % 7 == 0 for index in range(150)]
    assert [o.width for o in outcomes if not isinstance(o, str)] == [
        8 + index for index in range(150) if index % 7]


# --- damaged metadata ----------------------------------------------------------------------


def test_missing_columns_are_listed(tmp_path):
    root = write_dataset(tmp_path)
    frame = pd.read_csv(root / METADATA_FILENAME, dtype=str)
    frame.drop(columns=["age", "dx"]).to_csv(root / METADATA_FILENAME, index=False)
    problem = one_problem(root)
    assert "missing required column(s) dx, age" in problem and "line 1" in problem


@pytest.mark.parametrize("content, expected", [
    (b"lesion_id,image_id\n\xff\xfe\x00bad", "not UTF-8 text (byte 19)"),
    (b"lesion_id;image_id;dx;dx_type;age;sex;localization\n", "must be comma-separated"),
    (b'lesion_id,image_id\nHAM_1,"ISIC_1"x\n', "line 2: unreadable CSV"),
])
def test_unreadable_metadata_says_why(tmp_path, content, expected):
    path = tmp_path / METADATA_FILENAME
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_metadata(path)


def test_empty_metadata_file(tmp_path):
    root = write_dataset(tmp_path)
    (root / METADATA_FILENAME).write_text("")
    assert "empty file" in one_problem(root)


@pytest.mark.parametrize("column", ["lesion_id", "image_id", "dx"])
def test_blank_key_field_names_line_and_field(tmp_path, column):
    rows = make_rows()
    rows[4][column] = " "
    problems = problems_of(write_dataset(tmp_path, rows))
    assert f"{METADATA_FILENAME} line 6: {column} is blank" in problems


def test_unknown_dx_names_line_value_and_valid_codes(tmp_path):
    rows = make_rows()
    rows[2]["dx"] = "scc"
    problem = one_problem(write_dataset(tmp_path, rows))
    assert "line 4" in problem and "'scc'" in problem
    assert "mel, nv, bcc, akiec, bkl, df, vasc" in problem


def test_duplicate_image_id_names_lines(tmp_path):
    rows = make_rows()
    rows.append({**rows[0], "image_id": rows[5]["image_id"]})
    problem = one_problem(write_dataset(tmp_path, rows))
    assert "image_id ISIC_0000005 appears on lines 7, 11" in problem


def test_lesion_with_two_diagnoses_names_lesion_and_lines(tmp_path):
    rows = make_rows()
    rows[7]["dx"] = "mel"  # second image of lesion HAM_0000001 (nv)
    problem = one_problem(write_dataset(tmp_path, rows))
    assert "lesion HAM_0000001 has 2 diagnoses" in problem
    assert "mel (line 9)" in problem and "nv (line 3)" in problem


@pytest.mark.parametrize("age, expected", [
    ("forty", "line 5: age 'forty' is not a number"),
    ("150", "line 5: age 150 is outside 0-120"),
    ("-5", "line 5: age -5 is outside 0-120"),
])
def test_bad_age_names_line(tmp_path, age, expected):
    rows = make_rows()
    rows[3]["age"] = age
    assert expected in one_problem(write_dataset(tmp_path, rows))


def test_unknown_sex_and_site_become_unknown_with_warnings(tmp_path):
    rows = make_rows()
    rows[0]["sex"] = "M"
    rows[1]["localization"] = "left knee"
    rows[2]["sex"] = ""
    rows[3]["dx_type"] = "biopsy"
    dataset = load_ham10000(write_dataset(tmp_path, rows))
    frame = dataset.frame
    assert frame.loc[[0, 2], "sex"].tolist() == ["unknown", "unknown"]
    assert frame.loc[1, "localization"] == "unknown"
    assert frame.loc[3, "dx_type"] == "biopsy"
    text = "\n".join(dataset.warnings)
    assert "sex: 1 blank value(s) set to 'unknown' (line 4)" in text
    assert "sex: 1 value(s) outside the vocabulary set to 'unknown': 'm' (line 2)" in text
    assert "localization: 1 value(s)" in text and "'left knee' (line 3)" in text
    assert "dx_type: 1 value(s)" in text and "'biopsy' (line 5)" in text


def test_ragged_row_and_blank_lines_keep_line_numbers(tmp_path):
    root = write_dataset(tmp_path)
    lines = (root / METADATA_FILENAME).read_text().splitlines()
    lines.insert(3, "")  # a blank line shifts every later row
    lines[6] += ",extra"
    lines[9] = lines[9].replace(",nv,", ",nope,")
    (root / METADATA_FILENAME).write_text("\n".join(lines) + "\n")
    problems = problems_of(root)
    assert any("line 7: 9 fields, the header has 8" in problem for problem in problems)
    assert any("line 10: dx 'nope'" in problem for problem in problems)


def test_collects_every_problem_before_failing(tmp_path):
    rows = make_rows()
    rows[0]["dx"] = "xyz"
    rows[1]["age"] = "old"
    rows[2]["lesion_id"] = ""
    rows[3]["sex"] = "M"
    root = write_dataset(tmp_path, rows)
    image_path(root, "ISIC_0000005").unlink()
    image_path(root, "ISIC_0000006").write_bytes(b"")
    with pytest.raises(DatasetError) as caught:
        load_ham10000(root)
    problems = caught.value.problems
    assert len(problems) == 5
    assert len(caught.value.warnings) == 1 and "'m' (line 5)" in caught.value.warnings[0]
    for fragment in ("line 2: dx", "line 3: age", "line 4: lesion_id", "ISIC_0000005",
                     "ISIC_0000006.jpg"):
        assert any(fragment in problem for problem in problems), fragment


def test_dataset_error_message_shows_twenty_problems():
    error = DatasetError([f"problem {index}" for index in range(25)], "/data")
    text = str(error)
    assert text.startswith("25 problems in /data:")
    assert "problem 19" in text and "problem 20" not in text
    assert text.endswith("... and 5 more")
    assert len(error.problems) == 25 and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))  # crosses process boundaries intact
    assert copy.problems == error.problems and copy.source == "/data"


def test_load_metadata_alone(tmp_path):
    path = write_csv(tmp_path / "m.csv", make_rows())
    frame, warnings = load_metadata(path)
    assert warnings == [] and len(frame) == 9 and "path" not in frame.columns
    assert frame["label"].tolist() == [0, 1, 2, 3, 4, 5, 6, 1, 2]


def test_blank_lines_are_skipped_and_comma_rows_noted(tmp_path):
    path = write_csv(tmp_path / "m.csv", make_rows())
    path.write_text(path.read_text().replace("\n", "\n\n", 1) + ",,,,,,,,\n\n")
    frame, warnings = load_metadata(path)
    assert len(frame) == 9
    assert warnings == ["m.csv: skipped rows without values (line 12)"]


def test_header_without_rows_is_an_error(tmp_path):
    path = write_csv(tmp_path / "m.csv", make_rows()[:0], list(REQUIRED_COLUMNS))
    with pytest.raises(DatasetError, match="no data rows after the header"):
        load_metadata(path)


# --- the real metadata (skipped unless CI points at it) ------------------------------------


@pytest.mark.parametrize("drop_dataset", [False, True])
def test_real_metadata(real_metadata_path, tmp_path, drop_dataset):
    path = real_metadata_path
    if drop_dataset:  # the Kaggle copy has no dataset column
        path = tmp_path / METADATA_FILENAME
        pd.read_csv(real_metadata_path, dtype=str, keep_default_na=False).drop(
            columns="dataset").to_csv(path, index=False)
    frame, warnings = load_metadata(path)
    assert warnings == []
    assert len(frame) == 10015 and frame["lesion_id"].nunique() == 7470
    assert frame["dx"].value_counts().to_dict() == {
        "nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
    assert frame["age"].isna().sum() == 57
    assert ("dataset" in frame.columns) != drop_dataset
