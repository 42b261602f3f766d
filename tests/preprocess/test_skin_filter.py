"""The non-skin filter: synthetic data, image preparation, the network, its saved form,
training, the `filter` command line, and real photographs from scikit-image."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from preprocess import filter_cli, skin_filter, skin_filter_data
from preprocess.skin_filter import METADATA_FILENAME, MODEL_FILENAME, TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
RED, BLUE = (200, 60, 40), (40, 60, 200)  # "skin" and "non-skin" for the colour filter


def write_image(path: Path, rgb: np.ndarray, suffix: str = ".png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    encoded.tofile(path)
    return path


def solid(colour, height: int = 24, width: int = 24) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def in_skin_box(images: np.ndarray) -> np.ndarray:
    """Per image, the fraction of pixels with YCrCb in the skin box (Cr 133-173, Cb 77-127)."""
    ycrcb = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb) for image in images])
    red, blue = ycrcb[..., 1], ycrcb[..., 2]
    inside = (red >= 133) & (red <= 173) & (blue >= 77) & (blue <= 127)
    return inside.mean(axis=(1, 2))


@pytest.fixture(scope="module")
def colour_filter_dir(tmp_path_factory) -> Path:
    """A hand-set filter: P(skin) = sigmoid(10 * (mean red - mean blue)), exact and fast."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="skin_probability")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("skin_probability").set_weights([np.float32([[10], [0], [-10]]),
                                                     np.zeros(1, np.float32)])
    folder = tmp_path_factory.mktemp("colour_filter")
    metadata = skin_filter.make_metadata(TrainingConfig(image_size=(16, 16)), {})
    return skin_filter.save_skin_filter(model, folder, metadata)


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Two red ("skin") and two blue ("non-skin") photos, one nested, and a corrupt JPEG."""
    source = tmp_path / "photos"
    write_image(source / "arm.png", solid(RED))
    write_image(source / "visit2" / "back.jpg", solid(RED, 30, 50), ".jpg")
    write_image(source / "slip.png", solid(BLUE))
    write_image(source / "visit2" / "pack.png", solid(BLUE, 40, 20))
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (source / "notes.txt").write_text("not an image")
    return source


def read_report(path: Path) -> dict[str, tuple[str, str]]:
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["file", "skin_probability", "decision"]
    return {row["file"]: (row["skin_probability"], row["decision"]) for row in rows}


# ---- synthetic data ---------------------------------------------------------------------

def test_synthetic_images_are_uint8_rgb_and_seeded():
    skin = skin_filter_data.make_synthetic_skin_images(4, seed=3, size=40)
    assert skin.shape == (4, 40, 40, 3) and skin.dtype == np.uint8
    np.testing.assert_array_equal(skin, skin_filter_data.make_synthetic_skin_images(4, 3, 40))
    assert not np.array_equal(skin, skin_filter_data.make_synthetic_skin_images(4, 4, 40))


def test_synthetic_image_depends_on_its_index_only():
    many = skin_filter_data.make_synthetic_non_skin_images(5, seed=1, size=32)
    later = skin_filter_data.make_synthetic_non_skin_images(2, seed=1, size=32, start=3)
    np.testing.assert_array_equal(many[3:], later)


def test_synthetic_skin_has_skin_colours_and_non_skin_mostly_not():
    skin = in_skin_box(skin_filter_data.make_synthetic_skin_images(40, seed=0, size=48))
    other = in_skin_box(skin_filter_data.make_synthetic_non_skin_images(40, seed=0, size=48))
    assert np.median(skin) > 0.6
    assert np.median(other) < 0.2
    assert (other > 0.5).any()  # wood and skin-coloured objects: colour alone is not enough


# ---- images -----------------------------------------------------------------------------

def test_prepare_image_centre_crops_to_square_then_resizes():
    wide = np.concatenate([solid(RED, 30, 30), solid((0, 255, 0), 30, 30), solid(BLUE, 30, 30)],
                          axis=1)
    prepared = skin_filter.prepare_image(wide, (10, 10))
    assert prepared.shape == (10, 10, 3) and prepared.dtype == np.uint8
    np.testing.assert_array_equal(prepared, solid((0, 255, 0), 10, 10))


def test_prepare_image_crops_tall_images_and_spreads_grey_over_rgb():
    tall = np.zeros((90, 30), np.uint8)
    tall[30:60] = 200
    prepared = skin_filter.prepare_image(tall, (6, 6))
    np.testing.assert_array_equal(prepared, np.full((6, 6, 3), 200, np.uint8))


def test_load_image_converts_bgr_to_rgb(tmp_path):
    path = write_image(tmp_path / "red.png", solid(RED, 20, 40))
    np.testing.assert_array_equal(skin_filter.load_image(path, (8, 8)), solid(RED, 8, 8))


def test_load_image_returns_none_for_broken_or_missing_files(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "empty.png").write_bytes(b"")
    assert skin_filter.load_image(broken, (8, 8)) is None
    assert skin_filter.load_image(tmp_path / "empty.png", (8, 8)) is None
    assert skin_filter.load_image(tmp_path / "absent.png", (8, 8)) is None


def test_list_images_recurses_and_skips_hidden_other_files_and_the_excluded_folder(
        photo_folder):
    write_image(photo_folder / ".cache" / "thumb.png", solid(RED))
    write_image(photo_folder / "moved" / "old.png", solid(BLUE))
    found = skin_filter.list_images(photo_folder, exclude=photo_folder / "moved")
    names = [path.relative_to(photo_folder).as_posix() for path in found]
    assert names == ["arm.png", "broken.jpg", "slip.png", "visit2/back.jpg", "visit2/pack.png"]


# ---- network and saved form -------------------------------------------------------------

def test_network_shape_names_and_parameter_count():
    model = skin_filter.build_skin_filter((128, 128))
    assert model.inputs[0].name == "image"
    assert tuple(model.inputs[0].shape) == (None, 128, 128, 3)
    assert tuple(model.outputs[0].shape) == (None, 1)
    # conv 3*3*(3*16 + 16*32 + 32*64 + 64*128) = 97,200; batch norm 4*240 = 960; dense 129
    assert model.count_params() == 98_289


def test_network_takes_raw_uint8_pixels():
    model = skin_filter.build_skin_filter((32, 32), widths=(4, 8))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    as_uint8 = np.asarray(model.predict_on_batch(pixels))
    as_float = np.asarray(model.predict_on_batch(pixels.astype(np.float32)))
    np.testing.assert_allclose(as_uint8, as_float, rtol=1e-6)
    assert ((as_uint8 > 0) & (as_uint8 < 1)).all()


def test_saved_filter_reloads_with_identical_predictions(tmp_path):
    model = skin_filter.build_skin_filter((32, 32), widths=(4, 8))
    config = TrainingConfig(image_size=(32, 32), widths=(4, 8))
    metadata = skin_filter.make_metadata(config, {"validation_accuracy": 0.75})
    skin_filter.save_skin_filter(model, tmp_path, metadata)
    # both files, and no temporary file left behind
    assert {path.name for path in tmp_path.iterdir()} == {MODEL_FILENAME, METADATA_FILENAME}
    loaded = skin_filter.load_skin_filter(tmp_path)
    pixels = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(pixels),
                                  np.asarray(model.predict_on_batch(pixels)).reshape(-1))
    saved = json.loads((tmp_path / METADATA_FILENAME).read_text())
    assert saved["image_size"] == [32, 32] and saved["threshold"] == 0.5
    assert saved["class_names"] == ["non_skin", "skin"] and saved["validation_accuracy"] == 0.75
    assert saved["training"]["widths"] == [4, 8]
    assert loaded.image_size == (32, 32) and loaded.threshold == 0.5


def test_load_skin_filter_names_the_missing_file(tmp_path, colour_filter_dir):
    with pytest.raises(FileNotFoundError, match=MODEL_FILENAME):
        skin_filter.load_skin_filter(tmp_path)
    assert skin_filter.load_skin_filter(colour_filter_dir, threshold=0.9).threshold == 0.9


# ---- training -----------------------------------------------------------------------------

def test_split_is_stratified_seeded_and_disjoint():
    labels = np.array([1] * 10 + [0] * 30, np.float32)
    train, validation = skin_filter.split_indices(labels, 0.2, seed=5)
    assert set(train).isdisjoint(validation) and len(train) + len(validation) == 40
    assert labels[validation].sum() == 2 and (labels[validation] == 0).sum() == 6
    again = skin_filter.split_indices(labels, 0.2, seed=5)
    np.testing.assert_array_equal(validation, again[1])
    with pytest.raises(ValueError, match="skin has 1 images"):
        skin_filter.split_indices(np.array([1, 0, 0], np.float32), 0.2, seed=0)


def test_augmentation_keeps_shape_range_and_content():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    augmented = skin_filter.augment_batch(np.random.default_rng(1), images)
    assert augmented.shape == images.shape and augmented.dtype == np.float32
    assert augmented.min() >= 0 and augmented.max() <= 255
    # flips and brightness keep each image's pixel ranking up to ties: corr with a flip > 0.9
    for original, changed in zip(images.astype(float), augmented):
        flips = [original, original[::-1], original[:, ::-1], original[::-1, ::-1]]
        best = max(np.corrcoef(flip.ravel(), changed.ravel())[0, 1] for flip in flips)
        assert best > 0.99


def test_augmented_batches_are_balanced_and_repeatable():
    labels = np.array([1, 0, 0, 0], np.float32)
    images = np.zeros((4, 8, 8, 3), np.uint8)
    first = skin_filter.AugmentedBatches(images, labels, batch_size=4, seed=0)[0]
    second = skin_filter.AugmentedBatches(images, labels, batch_size=4, seed=0)[0]
    weights = dict(zip(first[1], first[2]))
    assert weights[1.0] == pytest.approx(2.0) and weights[0.0] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.slow
def test_training_learns_and_reports_figures():
    # An easy task, so a few steps suffice: skin against the same kind of picture with its
    # red and blue channels swapped (blue-tinted). The real task is trained in the slow tests.
    size = 32
    skin = skin_filter_data.make_synthetic_skin_images(40, seed=0, size=size)
    tinted = skin_filter_data.make_synthetic_skin_images(40, seed=1, size=size)[..., ::-1]
    labels = np.array([1] * 40 + [0] * 40, np.float32)
    config = TrainingConfig(image_size=(size, size), epochs=6, batch_size=16,
                            widths=(8, 16, 32), seed=0)
    model, figures = skin_filter.train_skin_filter(np.concatenate([skin, tinted]), labels, config)
    assert figures["num_train"] == 64 and figures["num_validation"] == 16
    assert 1 <= figures["epochs_run"] <= 6
    assert figures["validation_loss"] < 0.6  # chance is ln 2 = 0.693
    assert figures["validation_accuracy"] >= 0.7
    with pytest.raises(ValueError, match="config says"):
        skin_filter.train_skin_filter(skin[:, :16, :16], labels[:40], config)


# ---- command line -------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_makes_demo_data_and_trains_a_filter(tmp_path, capsys):
    data, out = tmp_path / "demo", tmp_path / "model"
    assert filter_cli.main(["make-demo-data", str(data), "--num-images", "6",
                            "--image-size", "32"]) == 0
    assert len(list((data / "skin").glob("*.jpg"))) == 6
    assert len(list((data / "non_skin").glob("*.jpg"))) == 6
    (data / "skin" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    code = filter_cli.main(["train", str(data), "--out", str(out), "--epochs", "1",
                            "--image-size", "32", "--seed", "2", "--quiet"])
    assert code == 0
    saved = json.loads((out / METADATA_FILENAME).read_text())
    assert saved["image_size"] == [32, 32] and saved["training"]["seed"] == 2
    assert 0 <= saved["validation_accuracy"] <= 1 and saved["num_validation"] == 2
    assert "unreadable, skipped" in capsys.readouterr().err
    assert skin_filter.load_skin_filter(out).model.inputs[0].shape[1:3] == (32, 32)


def test_cli_apply_writes_the_report_and_lists_unreadable_files(
        colour_filter_dir, photo_folder, tmp_path, capsys):
    report = tmp_path / "out" / "report.csv"
    assert filter_cli.main(["apply", str(colour_filter_dir), str(photo_folder),
                            "--report", str(report)]) == 0
    rows = read_report(report)
    assert {name: decision for name, (_, decision) in rows.items()} == {
        "arm.png": "skin", "visit2/back.jpg": "skin", "slip.png": "non_skin",
        "visit2/pack.png": "non_skin", "broken.jpg": "unreadable"}
    assert rows["broken.jpg"][0] == ""
    expected = 1 / (1 + np.exp(-10 * (200 - 40) / 255))  # the colour filter on RED
    assert float(rows["arm.png"][0]) == pytest.approx(expected, abs=1e-5)
    assert "unreadable, left in place" in capsys.readouterr().err
    assert (photo_folder / "broken.jpg").exists()


def test_cli_apply_moves_non_skin_keeping_relative_paths(colour_filter_dir, photo_folder,
                                                         tmp_path):
    target = tmp_path / "removed"
    assert filter_cli.main(["apply", str(colour_filter_dir), str(photo_folder),
                            "--move-to", str(target), "--report", str(tmp_path / "r.csv")]) == 0
    moved = sorted(path.relative_to(target).as_posix() for path in target.rglob("*.*"))
    assert moved == ["slip.png", "visit2/pack.png"]
    left = sorted(path.relative_to(photo_folder).as_posix() for path in photo_folder.rglob("*.*"))
    assert left == ["arm.png", "broken.jpg", "notes.txt", "visit2/back.jpg"]


def test_cli_apply_dry_run_moves_nothing(colour_filter_dir, photo_folder, tmp_path, capsys):
    before = sorted(photo_folder.rglob("*"))
    target = tmp_path / "removed"
    assert filter_cli.main(["apply", str(colour_filter_dir), str(photo_folder),
                            "--move-to", str(target), "--dry-run"]) == 0
    assert sorted(photo_folder.rglob("*")) == before and not target.exists()
    captured = capsys.readouterr()
    planned = [line for line in captured.err.splitlines() if line.startswith("would move ")]
    assert len(planned) == 2 and "slip.png" in planned[0]
    assert captured.out.startswith("file,skin_probability,decision\n")  # report on stdout


def test_cli_apply_never_overwrites(colour_filter_dir, photo_folder, tmp_path):
    target = tmp_path / "removed"
    write_image(target / "slip.png", solid((1, 2, 3)))
    assert filter_cli.main(["apply", str(colour_filter_dir), str(photo_folder),
                            "--move-to", str(target), "--report", str(tmp_path / "r.csv")]) == 0
    assert (photo_folder / "slip.png").exists()  # kept: its name is taken at the target
    assert skin_filter.load_image(target / "slip.png", (4, 4))[0, 0].tolist() == [1, 2, 3]
    assert (target / "visit2" / "pack.png").exists()


def test_cli_apply_threshold_overrides_the_saved_one(colour_filter_dir, photo_folder, tmp_path):
    report = tmp_path / "r.csv"
    assert filter_cli.main(["apply", str(colour_filter_dir), str(photo_folder), "--report",
                            str(report), "--threshold", "0"]) == 0
    decisions = {decision for _, decision in read_report(report).values()}
    assert decisions == {"skin", "unreadable"}


@pytest.mark.parametrize("arguments, code", [
    (["apply", "{model}", "{missing}"], 1),
    (["apply", "{missing}", "{photos}"], 1),
    (["train", "{missing}", "--out", "{missing}"], 1),
    (["train", "{photos}", "--out", "{missing}"], 1),  # no skin/ and non_skin/ inside
    (["apply", "{model}", "{photos}", "--dry-run"], 2),
    (["apply", "{model}", "{photos}", "--threshold", "1.5"], 2),
    (["train", "{photos}"], 2),
    (["rotate"], 2),
    ([], 2),
    (["--help"], 0),
])
def test_cli_exit_codes(arguments, code, colour_filter_dir, photo_folder, tmp_path):
    places = {"model": colour_filter_dir, "photos": photo_folder, "missing": tmp_path / "no"}
    assert filter_cli.main([argument.format(**places) for argument in arguments]) == code


@pytest.mark.slow
def test_filter_runs_under_jax_without_tensorflow(tmp_path):
    script = (
        "import sys\n"
        "from preprocess import filter_cli, skin_filter\n"
        "import numpy as np\n"
        "model = skin_filter.build_skin_filter((32, 32), widths=(4,))\n"
        "print(model.predict_on_batch(np.zeros((1, 32, 32, 3), np.uint8)).shape)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 1)" in result.stdout


# ---- real photographs -------------------------------------------------------------------

REAL_SIZE = 64  # small enough to train in a minute or two on two cores
# scikit-image's sample photographs (shipped with the package, no download). The skin example
# is the astronaut's face itself, rows 60-190 and columns 170-290; a looser crop (rows 20-200,
# columns 150-330) is 40% hair, backdrop and collar, and the synthetic-only filter calls it
# non-skin (see README). chelsea (a tabby cat) is left out: it is neither, and falls on the
# non-skin side (P(skin) 0.1-0.3 across seeds).
PHOTOGRAPHS = {
    "astronaut_face": ("skin", lambda data: data.astronaut()[60:190, 170:290]),
    "coffee": ("non_skin", lambda data: data.coffee()),
    "rocket": ("non_skin", lambda data: data.rocket()),
    "camera": ("non_skin", lambda data: data.camera()),  # grey, spread over RGB
    "page": ("non_skin", lambda data: data.page()),
}


@pytest.fixture(scope="module")
def synthetic_only_filter() -> skin_filter.SkinFilter:
    """A filter trained on synthetic images only, never on the photographs it is tested on."""
    count = 400  # per class
    images = np.concatenate([
        skin_filter_data.make_synthetic_skin_images(count, seed=0, size=REAL_SIZE),
        skin_filter_data.make_synthetic_non_skin_images(count, seed=0, size=REAL_SIZE)])
    labels = np.array([1] * count + [0] * count, np.float32)
    config = TrainingConfig(image_size=(REAL_SIZE, REAL_SIZE), epochs=20,
                            widths=(8, 16, 32, 64), seed=0)
    model, figures = skin_filter.train_skin_filter(images, labels, config)
    return skin_filter.SkinFilter(model, config.image_size, 0.5, figures)


@pytest.mark.slow
def test_synthetic_only_filter_validates_on_synthetic_images(synthetic_only_filter):
    assert synthetic_only_filter.metadata["validation_accuracy"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PHOTOGRAPHS))
def test_real_photograph_falls_on_its_side(synthetic_only_filter, name):
    data = pytest.importorskip("skimage.data")
    expected, load = PHOTOGRAPHS[name]
    image = skin_filter.prepare_image(load(data), synthetic_only_filter.image_size)
    probability = synthetic_only_filter.predict(image[None].astype(np.float32))[0]
    assert synthetic_only_filter.decide(probability) == expected, f"P(skin) = {probability:.3f}"
