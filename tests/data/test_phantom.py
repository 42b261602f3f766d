"""Tests of dermnet.data.phantom: layout, determinism, class priors, lesions, clinical tables,
image-level signal and refusal to overwrite. Small images keep the whole file fast."""

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data import phantom
from dermnet.data.vocabulary import (
    CLASSES,
    DX_TYPES,
    IMAGE_FOLDERS,
    LOCALIZATIONS,
    METADATA_FILENAME,
    SEXES,
)

SMALL = (90, 120)  # (height, width)
HAM10000_SHARES = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327,
                   "vasc": 142, "df": 115}


def read_tree(folder):
    """Relative path -> bytes of every file under `folder`."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return phantom.write_phantom(tmp_path_factory.mktemp("phantom") / "data", 30, seed=4,
                                 image_size=SMALL)


def test_writes_the_ham10000_layout(small_dataset):
    metadata = pd.read_csv(small_dataset / METADATA_FILENAME)
    assert list(metadata.columns) == list(phantom.COLUMNS)
    assert len(metadata) == 30 and metadata["image_id"].is_unique
    assert set(metadata["dataset"]) == {"phantom"}
    numbers = metadata["image_id"].str.removeprefix("ISIC_").astype(int)
    assert sorted(numbers) == list(range(9_000_000, 9_000_030))
    assert metadata["lesion_id"].str.fullmatch(r"HAM_90\d{5}").all()
    files = {path.stem: path for folder in IMAGE_FOLDERS[:2]
             for path in (small_dataset / folder).glob("*.jpg")}
    assert set(files) == set(metadata["image_id"])
    assert len(list((small_dataset / IMAGE_FOLDERS[0]).iterdir())) == 15  # split in halves
    for path in files.values():
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (*SMALL, 3)


def test_clinical_values_use_the_vocabularies(small_dataset):
    text = (small_dataset / METADATA_FILENAME).read_text()
    metadata = pd.read_csv(small_dataset / METADATA_FILENAME)
    assert set(metadata["dx"]) == set(CLASSES)  # 30 images: every class present
    assert set(metadata["sex"]) <= set(SEXES)
    assert set(metadata["localization"]) <= set(LOCALIZATIONS)
    assert set(metadata["dx_type"]) <= set(DX_TYPES)
    ages = metadata["age"].dropna()
    assert ((ages % 5 == 0) & ages.between(0, 85)).all()
    assert f",{ages.iloc[0]:.1f}," in text  # written like the release: "45.0"


def test_readme_marks_the_data_synthetic(small_dataset):
    readme = (small_dataset / "README.txt").read_text()
    assert "SYNTHETIC" in readme
    assert "Seed: 4" in readme and phantom.PHANTOM_VERSION in readme
    assert "--num-images 30 --seed 4 --size 120x90" in readme


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small_dataset):
    again = read_tree(phantom.write_phantom(tmp_path / "again", 30, seed=4, image_size=SMALL))
    assert again == read_tree(small_dataset)
    other = read_tree(phantom.write_phantom(tmp_path / "other", 30, seed=5, image_size=SMALL))
    assert other[METADATA_FILENAME] != again[METADATA_FILENAME]
    shared = [name for name in other if name.endswith(".jpg") and name in again]
    assert shared and all(other[name] != again[name] for name in shared)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no fallback to serial
def test_worker_pool_writes_the_same_bytes(tmp_path, monkeypatch, small_dataset):
    monkeypatch.setattr(phantom, "available_cpus", lambda: 2)
    monkeypatch.setattr(phantom, "POOL_MIN_IMAGES", 10)  # 30 images -> 2 spawned workers
    calls = []
    pooled = phantom.write_phantom(tmp_path / "pooled", 30, seed=4, image_size=SMALL,
                                   progress=lambda done, total: calls.append((done, total)))
    assert read_tree(pooled) == read_tree(small_dataset)
    done = [count for count, _ in calls]
    assert done == sorted(done) and calls[-1] == (30, 30)


def test_progress_counts_every_image(tmp_path):
    calls = []
    phantom.write_phantom(tmp_path / "data", 9, seed=1, image_size=(32, 32),
                          progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (9, 9)
    assert all(total == 9 for _, total in calls)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


def test_class_counts_follow_ham10000_priors():
    counts = phantom.compute_class_counts(10015)
    assert sum(counts.values()) == 10015
    for dx, real in HAM10000_SHARES.items():
        assert abs(counts[dx] - real) <= 10, dx  # 2 images per class are reserved first
    metadata = phantom.make_metadata(2000, seed=0)
    shares = metadata["dx"].value_counts(normalize=True)
    for dx, real in HAM10000_SHARES.items():
        assert shares[dx] == pytest.approx(real / 10015, abs=0.005), dx


def test_written_class_shares_follow_the_priors(tmp_path):
    data = phantom.write_phantom(tmp_path / "data", 199, seed=2, image_size=(16, 16))
    counts = pd.read_csv(data / METADATA_FILENAME)["dx"].value_counts()
    assert counts.to_dict() == phantom.compute_class_counts(199)
    for dx, real in HAM10000_SHARES.items():
        # Off by at most the 2 images reserved per class, plus rounding.
        assert abs(counts[dx] / 199 - real / 10015) <= 15 / 199, dx


def test_balanced_gives_equal_counts():
    counts = phantom.make_metadata(703, seed=1, balanced=True)["dx"].value_counts()
    assert set(counts.index) == set(CLASSES)
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("num_images, lesions_per_class", [(7, 1), (14, 2), (40, 2)])
def test_every_class_present_for_small_datasets(num_images, lesions_per_class):
    metadata = phantom.make_metadata(num_images, seed=3)
    assert len(metadata) == num_images
    lesions = metadata.groupby("dx")["lesion_id"].nunique()
    assert set(lesions.index) == set(CLASSES)
    assert lesions.min() >= lesions_per_class


def test_tiny_datasets_still_work():
    assert len(phantom.make_metadata(1, seed=0)) == 1
    assert phantom.compute_class_counts(3) == {"mel": 1, "nv": 2, "bcc": 0, "akiec": 0,
                                               "bkl": 0, "df": 0, "vasc": 0}


def test_some_lesions_have_several_images_sharing_clinical_values():
    metadata = phantom.make_metadata(4000, seed=6)
    sizes = metadata.groupby("lesion_id").size()
    assert 0.18 < (sizes > 1).mean() < 0.34  # real: 1,956 of 7,470 lesions (26%)
    assert sizes.max() <= 6
    per_lesion = metadata.groupby("lesion_id")[["dx", "dx_type", "age", "sex",
                                                "localization"]].nunique(dropna=False)
    assert (per_lesion == 1).all().all()


def test_clinical_tables_carry_real_signal():
    def mean_age(dx):
        counts = np.array(phantom.AGE_COUNTS[dx][:-1])  # last column: missing age
        return float(counts @ np.array(phantom.AGES) / counts.sum())

    # Real HAM10000 (per lesion): nv 47.3, akiec 66.6, bcc 66.9 years.
    assert mean_age("nv") < mean_age("akiec") - 15
    assert mean_age("nv") < mean_age("bcc") - 15
    metadata = phantom.make_metadata(3500, seed=7, balanced=True)
    ages = metadata.groupby("dx")["age"].mean()
    assert ages["nv"] < ages["akiec"] - 10 and ages["nv"] < ages["bcc"] - 10
    face = metadata["localization"].eq("face").groupby(metadata["dx"]).mean()
    assert face["akiec"] > face["nv"] + 0.2  # real: 37% vs 1% of lesions
    assert (metadata.loc[metadata["dx"] == "mel", "dx_type"] == "histo").all()


def test_tables_are_aligned_with_the_vocabularies():
    for dx in CLASSES:
        assert len(phantom.SEX_COUNTS[dx]) == len(SEXES)
        assert len(phantom.LOCALIZATION_COUNTS[dx]) == len(LOCALIZATIONS)
        assert len(phantom.DX_TYPE_COUNTS[dx]) == len(DX_TYPES)
        assert len(phantom.AGE_COUNTS[dx]) == len(phantom.AGES) + 1
    assert sum(sum(phantom.SEX_COUNTS[dx]) for dx in CLASSES) == 7470  # real lesions
    assert set(phantom.SIGNATURES) == set(CLASSES) == set(phantom.IMAGE_COUNTS)


def total_variation(table, counts):
    """Largest total variation distance over classes between a crosstab and count tuples."""
    distances = []
    for dx in CLASSES:
        real = table.loc[dx].to_numpy(float)
        ours = np.asarray(counts[dx], float)
        distances.append(0.5 * np.abs(real / real.sum() - ours / ours.sum()).sum())
    return max(distances)


def test_tables_match_real_metadata(real_metadata_path):
    metadata = pd.read_csv(real_metadata_path)
    lesions = metadata.groupby("lesion_id", sort=False).first()
    lesions["images"] = metadata.groupby("lesion_id").size()
    lesions["age_bin"] = lesions["age"].fillna(-1.0)
    checks = [("sex", SEXES, phantom.SEX_COUNTS),
              ("localization", LOCALIZATIONS, phantom.LOCALIZATION_COUNTS),
              ("dx_type", DX_TYPES, phantom.DX_TYPE_COUNTS),
              ("age_bin", phantom.AGES + (-1.0,), phantom.AGE_COUNTS),
              ("images", range(1, 7), phantom.IMAGES_PER_LESION_COUNTS)]
    for column, values, counts in checks:
        table = pd.crosstab(lesions["dx"], lesions[column]).reindex(columns=list(values),
                                                                  fill_value=0)
        assert total_variation(table, counts) < 0.02, column
    images = metadata["dx"].value_counts()
    assert all(images[dx] == phantom.IMAGE_COUNTS[dx] for dx in CLASSES)


def test_refuses_a_non_empty_out_dir(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an empty folder"):
        phantom.write_phantom(target, 5, image_size=SMALL)
    assert [path.name for path in target.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (phantom.write_phantom(empty, 3, image_size=SMALL) / METADATA_FILENAME).is_file()


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(phantom, "render_images", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        phantom.write_phantom(tmp_path / "data", 5, image_size=SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, message", [
    ({"num_images": 0}, "num_images"),
    ({"num_images": 5, "seed": -1}, "seed"),
    ({"num_images": 5, "image_size": (8, 120)}, "image_size"),
])
def test_rejects_bad_arguments(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        phantom.write_phantom(tmp_path / "data", **arguments)
    assert not (tmp_path / "data").exists()


def test_render_lesion_is_pure_and_sized():
    first = phantom.render_lesion(np.random.default_rng(1), "mel", (64, 80))
    again = phantom.render_lesion(np.random.default_rng(1), "mel", (64, 80))
    assert first.dtype == np.uint8 and first.shape == (64, 80, 3)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="unknown class"):
        phantom.render_lesion(np.random.default_rng(1), "psoriasis", (64, 80))


def mean_centre_redness(dx, count=20):
    """Mean R - G over the central crop, where the lesion sits, of `count` fresh lesions."""
    height, width = SMALL
    values = []
    for index in range(count):
        image = phantom.render_lesion(np.random.default_rng([11, index]), dx, SMALL)
        centre = image[height * 3 // 10: height * 7 // 10, width * 3 // 10: width * 7 // 10]
        values.append(np.mean(centre[..., 0].astype(float) - centre[..., 1]))
    return float(np.mean(values))


def test_vascular_lesions_are_redder_than_nevi():
    assert mean_centre_redness("vasc") > mean_centre_redness("nv") + 5


def test_views_differ_and_do_not_depend_on_order():
    images = phantom.render_images(0, "nv", lesion_offset=3, image_offsets=[0, 1],
                                   image_size=SMALL)
    assert not np.array_equal(images[0], images[1])
    other_lesion = phantom.render_images(0, "nv", 4, [0], SMALL)[0]
    assert not np.array_equal(images[0], other_lesion)
    reversed_order = phantom.render_images(0, "nv", 3, [1, 0], SMALL)
    np.testing.assert_array_equal(reversed_order[0], images[1])
    np.testing.assert_array_equal(reversed_order[1], images[0])
