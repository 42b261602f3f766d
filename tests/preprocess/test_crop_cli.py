"""Tests of `python -m preprocess crop` (preprocess.crop_cli) and the dispatcher: a folder with
sub-folders and a corrupt file, the manifest, exit codes, overwriting, worker independence,
DST inside SRC, and progress."""

import csv
import io

import cv2
import numpy as np
import pytest

from preprocess import cli as dispatcher
from preprocess import crop_cli
from preprocess.skin_crop import find_skin_box, make_synthetic_photo


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Three synthetic photos (one in a sub-folder, one PNG), a corrupt JPEG and a text file."""
    src = tmp_path_factory.mktemp("photos")
    (src / "arm").mkdir()
    for seed, name in enumerate(("a.jpg", "arm/b.jpg", "c.png")):
        cv2.imwrite(str(src / name), make_synthetic_photo(seed, size=(150, 200))[0])
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "notes.txt").write_text("not an image")
    return src


def read_manifest(path):
    with open(path, newline="") as file:
        return {row["file"]: row for row in csv.DictReader(file)}


def read_tree(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_crops_a_folder_past_a_corrupt_file(photo_folder, tmp_path, capsys):
    dst = tmp_path / "cropped"
    assert crop_cli.main([str(photo_folder), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable" in out and "broken.jpg" in out and "3 ok" in out
    rows = read_manifest(dst / crop_cli.MANIFEST_NAME)
    assert set(rows) == {"a.jpg", "arm/b.jpg", "c.png", "broken.jpg"}
    assert list(next(iter(rows.values()))) == list(crop_cli.MANIFEST_COLUMNS)
    assert rows["broken.jpg"]["status"] == "unreadable" and rows["broken.jpg"]["error"]
    for name in ("a.jpg", "arm/b.jpg", "c.png"):
        row = rows[name]
        box = tuple(int(row[key]) for key in ("x0", "y0", "x1", "y1"))
        source = cv2.imread(str(photo_folder / name))
        assert row["status"] == "ok" and box == find_skin_box(source).box
        crop = cv2.imread(str(dst / name))
        assert crop.shape[:2] == (box[3] - box[1], box[2] - box[0])
        if name.endswith(".png"):  # lossless: exactly the source's pixels
            assert np.array_equal(crop, source[box[1] : box[3], box[0] : box[2]])
    assert not (dst / "broken.jpg").exists() and not (dst / "notes.txt").exists()
    assert not [path for path in dst.rglob(".*")]  # no temporary files left


def test_missing_source_exits_1_with_a_message(tmp_path, capsys):
    assert crop_cli.main([str(tmp_path / "absent"), str(tmp_path / "out")]) == 1
    assert "source folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_source_equal_to_destination_is_refused(photo_folder, capsys):
    assert crop_cli.main([str(photo_folder), str(photo_folder)]) == 1
    assert "DST must differ from SRC" in capsys.readouterr().err


def test_existing_crops_are_kept_unless_overwrite(photo_folder, tmp_path, capsys):
    dst = tmp_path / "cropped"
    (dst / "arm").mkdir(parents=True)
    (dst / "arm" / "b.jpg").write_bytes(b"old")
    crop_cli.main([str(photo_folder), str(dst)])
    rows = read_manifest(dst / crop_cli.MANIFEST_NAME)
    assert (dst / "arm" / "b.jpg").read_bytes() == b"old"
    assert rows["arm/b.jpg"]["status"] == "exists" and rows["arm/b.jpg"]["x1"]  # box recorded
    assert "1 exists" in capsys.readouterr().out
    crop_cli.main([str(photo_folder), str(dst), "--overwrite"])
    assert cv2.imread(str(dst / "arm" / "b.jpg")) is not None
    assert read_manifest(dst / crop_cli.MANIFEST_NAME)["arm/b.jpg"]["status"] == "ok"


def test_results_do_not_depend_on_the_number_of_workers(photo_folder, tmp_path):
    one = crop_cli.crop_folder(photo_folder, tmp_path / "one", workers=1)
    two = crop_cli.crop_folder(photo_folder, tmp_path / "two", workers=2)
    assert one.counts == two.counts == {"ok": 3, "unreadable": 1}
    assert read_tree(tmp_path / "one") == read_tree(tmp_path / "two")


def test_destination_inside_the_source_is_not_cropped_again(photo_folder, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.jpg", "c.png"):
        (src / name).write_bytes((photo_folder / name).read_bytes())
    crop_cli.crop_folder(src, src / "cropped")
    second = crop_cli.crop_folder(src, src / "cropped", overwrite=True)
    assert second.total == 2 and sorted(read_manifest(second.manifest)) == ["a.jpg", "c.png"]


def test_photos_without_skin_are_copied_whole_and_flagged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "grey.png"), np.full((40, 60, 3), 128, np.uint8))
    summary = crop_cli.crop_folder(src, tmp_path / "dst")
    row = read_manifest(summary.manifest)["grey.png"]
    assert summary.counts == {"no_skin": 1} and row["status"] == "no_skin"
    assert (row["x0"], row["y0"], row["x1"], row["y1"]) == ("0", "0", "60", "40")
    assert cv2.imread(str(tmp_path / "dst" / "grey.png")).shape == (40, 60, 3)


def test_progress_lines_every_n_images_or_a_live_counter():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    lines, live = io.StringIO(), Terminal()
    for stream in (lines, live):
        report = crop_cli.make_progress(stream, 2)
        for done in range(1, 6):
            report(done, 5)
    assert lines.getvalue() == "cropped 2/5\ncropped 4/5\ncropped 5/5\n"
    assert live.getvalue() == "".join(f"\rcropped {done}/5" for done in range(1, 6)) + "\n"


def test_dispatcher_lists_both_commands_and_runs_crop(photo_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        dispatcher.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "crop" in out and "filter" in out
    with pytest.raises(SystemExit) as stop:
        dispatcher.main(["resize"])
    assert stop.value.code == 2
    assert "invalid choice: 'resize'" in capsys.readouterr().err
    assert dispatcher.main(["crop", str(photo_folder), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / crop_cli.MANIFEST_NAME).is_file()
