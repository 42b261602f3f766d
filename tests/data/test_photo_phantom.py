"""Phantom clinical photos: layout the reader accepts, determinism (also across worker
processes), patients with several photos, true skin boxes, class differences, the CLI."""

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data import clinical_photos, photo_phantom, photo_phantom_draw, photo_splits
from dermnet.data.cli import main

SMALL = (60, 80)  # (height, width)


def read_tree(folder):
    """Relative path -> bytes of every file under `folder`."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return photo_phantom.write_photo_phantom(tmp_path_factory.mktemp("photos") / "data", 12,
                                             seed=4, image_size=SMALL)


def test_writes_a_dataset_the_reader_accepts(small_dataset):
    manifest = pd.read_csv(small_dataset / "manifest.csv")
    assert list(manifest.columns) == list(photo_phantom.COLUMNS)
    dataset = clinical_photos.load_photo_dataset(small_dataset, check_images="full")
    assert dataset.warnings == ()  # 12 patients: every diagnosis present
    assert dataset.image_sizes == (((80, 60), len(manifest)),)
    assert dataset.frame["patient_id"].str.fullmatch(r"phantom_\d{5}").all()
    assert set(dataset.frame["diagnosis"]) == set(clinical_photos.PHOTO_DIAGNOSES)
    image = cv2.imread(str(small_dataset / manifest["image"][0]))
    assert image.shape == (*SMALL, 3)


def test_readme_marks_the_data_synthetic(small_dataset):
    readme = (small_dataset / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "Seed: 4" in readme
    assert photo_phantom.PHOTO_PHANTOM_VERSION in readme
    assert "--num-patients 12 --seed 4 --size 80x60 --photos-per-patient 1-4" in readme


def test_same_seed_same_bytes_other_seed_other_photos(tmp_path, small_dataset):
    again = photo_phantom.write_photo_phantom(tmp_path / "again", 12, seed=4, image_size=SMALL)
    assert read_tree(again) == read_tree(small_dataset)
    other = read_tree(photo_phantom.write_photo_phantom(tmp_path / "other", 12, seed=5,
                                                        image_size=SMALL))
    shared = [name for name in other if name.endswith(".jpg") and name in read_tree(again)]
    assert shared and all(other[name] != read_tree(again)[name] for name in shared)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no fallback to one process
def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch, small_dataset):
    monkeypatch.setattr(photo_phantom, "available_cpus", lambda: 2)
    monkeypatch.setattr(photo_phantom, "POOL_MIN_PHOTOS", 10)  # 2 spawned workers
    calls = []
    pooled = photo_phantom.write_photo_phantom(
        tmp_path / "pooled", 12, seed=4, image_size=SMALL,
        progress=lambda done, total: calls.append((done, total)))
    assert read_tree(pooled) == read_tree(small_dataset)
    assert calls[-1][0] == calls[-1][1] == len(pd.read_csv(pooled / "manifest.csv"))


def test_patients_have_several_photos_sharing_their_diagnosis():
    plan = photo_phantom.make_photo_plan(400, seed=1)
    photos = plan.groupby("patient_id").size()
    assert photos.min() == 1 and photos.max() == 4
    assert 0.7 < (photos > 1).mean() < 0.8  # uniform 1-4: three quarters have several
    assert (plan.groupby("patient_id")["diagnosis"].nunique() == 1).all()
    assert plan["image"].is_unique and plan["photo"].tolist() == list(range(len(plan)))
    fixed = photo_phantom.make_photo_plan(5, photos_per_patient=(2, 2), seed=0)
    assert (fixed.groupby("patient_id").size() == 2).all()
    with pytest.raises(ValueError, match="photos_per_patient"):
        photo_phantom.make_photo_plan(5, photos_per_patient=(3, 2))


def test_patient_counts_follow_the_study_or_are_equal():
    counts = photo_phantom.compute_patient_counts(2342)  # the study's 2,342 patients
    for name, real in photo_phantom.PATIENT_COUNTS.items():
        assert abs(counts[name] - real) <= 3, name
    assert set(photo_phantom.compute_patient_counts(503, balanced=True).values()) == {100, 101}
    assert min(photo_phantom.compute_patient_counts(10).values()) == 2


def test_skin_box_is_inside_the_photo_and_holds_the_skin():
    for index in range(40):
        alpha, (x0, y0, x1, y1) = photo_phantom_draw.draw_skin_shape(
            np.random.default_rng(index), SMALL)
        assert 0 <= x0 < x1 <= SMALL[1] and 0 <= y0 < y1 <= SMALL[0]
        assert alpha.shape == (y1 - y0, x1 - x0)
        skin = alpha > 0.05  # the region reaches every side of its box
        assert skin[0].any() and skin[-1].any() and skin[:, 0].any() and skin[:, -1].any()
        assert 0.3 <= (x1 - x0) * (y1 - y0) / (SMALL[0] * SMALL[1]) <= 1


def test_manifest_boxes_match_the_rendered_photos(small_dataset):
    manifest = pd.read_csv(small_dataset / "manifest.csv")
    plan = photo_phantom.make_photo_plan(12, seed=4)
    first = plan[plan["patient"] == plan["patient"].iloc[0]]
    rendered = photo_phantom.render_patient_photos(4, first["patient"].iloc[0],
                                                   first["diagnosis"].iloc[0], first["photo"],
                                                   SMALL)
    boxes = manifest.loc[first.index, list(photo_phantom.BOX_COLUMNS)]
    assert [tuple(row) for row in boxes.to_numpy()] == [box for _, box in rendered]


def lesion_statistics(diagnosis, seed=11, patients=12, size=(120, 160)):
    """Mean over photos, in the inner part of the skin box, of the shares of (red-lesion
    pixels, redder than the photo's median skin; small dots and lines, pixels more than 12
    grey levels from their 5x5 median)."""
    values = []
    for patient in range(patients):
        for pixels, (x0, y0, x1, y1) in photo_phantom.render_patient_photos(
                seed, patient, diagnosis, [2 * patient, 2 * patient + 1], size):
            height, width = y1 - y0, x1 - x0
            inner = np.ascontiguousarray(
                pixels[y0 + height // 5:y1 - height // 5, x0 + width // 5:x1 - width // 5])
            red, green = inner[..., 0].astype(float), inner[..., 1].astype(float)
            redness = (red - green) / (red + 1)
            grey = cv2.cvtColor(inner, cv2.COLOR_RGB2GRAY).astype(int)
            spots = np.abs(grey - cv2.medianBlur(grey.astype(np.uint8), 5)) > 12
            values.append(((redness > np.median(redness) + 0.08).mean(), spots.mean()))
    return np.mean(values, axis=0)


def test_photos_differ_by_class():
    psoriasis_area, psoriasis_spots = lesion_statistics("psoriasis")
    acne_area, acne_spots = lesion_statistics("acne")
    assert psoriasis_area > 1.4 * acne_area  # large plaques vs scattered papules
    assert acne_spots > 2.5 * psoriasis_spots  # papules and comedones: small, sharp dots


def paint_on_plain_skin(diagnosis, seed):
    """A painter's marks on a uniform light skin patch at full severity: (before, after)."""
    rng = np.random.default_rng(seed)
    look = photo_phantom.make_look(rng, diagnosis)
    skin = np.array((0.94, 0.8, 0.71), np.float32)
    look = photo_phantom_draw.Look(diagnosis, skin, 1.0, look.redness, look.traits)
    planes = np.ones((3, 120, 160), np.float32) * skin[:, None, None]
    photo_phantom_draw.PAINTERS[diagnosis](rng, look, planes)
    return skin, planes


def test_painters_draw_each_diagnosis_signs():
    def share(diagnosis, measure):
        return np.mean([measure(*paint_on_plain_skin(diagnosis, seed)) for seed in range(10)])

    def silvery(skin, planes):  # psoriatic scale: grey-white, far less chromatic than skin
        chroma = (planes.max(0) - planes.min(0)) / planes.max(0)
        return (chroma < 0.12).mean()

    def central(skin, planes):  # rosacea: erythema in the middle more than at the edge
        green_loss = skin[1] - planes[1]
        return green_loss[40:80, 53:107].mean() - green_loss[:20].mean()

    assert share("psoriasis", silvery) > 5 * max(share(name, silvery) for name in
                                                 ("acne", "rosacea"))
    assert share("rosacea", central) > 2 * max(share(name, central) for name in
                                               ("eczema", "acne"))


def test_unknown_diagnosis_and_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot draw 'melanoma'"):
        photo_phantom.make_look(np.random.default_rng(0), "melanoma")
    with pytest.raises(ValueError, match="at least 32"):
        photo_phantom.write_photo_phantom(tmp_path / "small", 2, image_size=(16, 16))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("")
    with pytest.raises(ValueError, match="refusing to write"):
        photo_phantom.write_photo_phantom(tmp_path / "full", 2, image_size=SMALL)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(photo_phantom, "_write_patient", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        photo_phantom.write_photo_phantom(tmp_path / "data", 3, image_size=SMALL)
    assert list(tmp_path.iterdir()) == []


def test_command_line_writes_checks_and_splits(tmp_path, capsys):
    out = tmp_path / "photos"
    assert main(["photo-phantom", str(out), "--num-patients", "10", "--seed", "2",
                 "--size", "80x60", "--photos-per-patient", "2-3"]) == 0
    assert "SYNTHETIC clinical photos (80x60) of 10 patients" in capsys.readouterr().out
    assert main(["photo-check", str(out)]) == 0
    report = capsys.readouterr().out
    assert "patients: 10" in report and "acne_vs_rosacea" in report and "valid" in report
    assert main(["photo-split", str(out), "--seed", "1", "--out", str(tmp_path / "s.csv")]) == 0
    splits = photo_splits.load_photo_splits(tmp_path / "s.csv")
    assert len(splits) == len(pd.read_csv(out / "manifest.csv"))
    (out / "manifest.csv").write_text("image,patient_id,diagnosis\nnope.jpg,p1,acne\n")
    assert main(["photo-check", str(out)]) == 1
    assert "manifest.csv line 2: image 'nope.jpg' not found" in capsys.readouterr().err
