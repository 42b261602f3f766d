"""Where the model looks: Grad-CAM energy inside the lesion mask.

Hand-built heatmaps and masks with shares worked out by hand; the heatmap -> image-frame
mapping against the pipeline's own resize; a hand-built detector whose evidence is a known
square; evaluate_run end to end on a tiny trained smoke run with masks written for it; and,
when DERMNET_HAM10000_IMAGES names the real 200x150 dataset, that its masks line up with the
(darker) lesions."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermnet.evaluation import report
from dermnet.evaluation.lesion_focus import (
    COLUMNS,
    LesionFocus,
    compute_area_fraction,
    compute_energy_share,
    compute_visible_window,
    load_mask,
    map_heatmap_to_frame,
    mask_path,
    measure_lesion_focus,
    select_rows,
    summarize_group,
    summarize_lesion_focus,
)

FRAME = (150, 200)  # (H, W) of a HAM10000 mask in the shared 200x150 copy


def rectangle(top, bottom, left, right, value=1.0, size=FRAME) -> np.ndarray:
    array = np.zeros(size, np.float32)
    array[top:bottom, left:right] = value
    return array


# --- the energy share, by hand -----------------------------------------------------------------


def test_share_of_a_rectangle_heatmap_is_its_overlap_with_the_mask_over_its_area():
    heatmap = rectangle(10, 30, 20, 60)             # 20 x 40 = 800 pixels
    mask = rectangle(20, 50, 40, 100).astype(bool)  # overlap: rows 20-29, columns 40-59
    assert compute_energy_share(heatmap, mask) == pytest.approx(10 * 20 / 800, abs=1e-12)
    assert compute_area_fraction(mask) == pytest.approx(30 * 60 / (150 * 200), abs=1e-12)
    # Two levels: 2 on the first rectangle, 1 on a disjoint one of 30 x 10 inside the mask.
    heatmap += rectangle(40, 50, 70, 100)
    heatmap[10:30, 20:60] *= 2
    assert compute_energy_share(heatmap, mask) == pytest.approx(
        (2 * 200 + 300) / (2 * 800 + 300), abs=1e-12)


def test_all_zero_heatmap_has_no_share():
    assert math.isnan(compute_energy_share(np.zeros(FRAME), rectangle(0, 9, 0, 9) > 0))


def test_summary_excludes_and_counts_zero_heatmaps_and_counts_missing_masks():
    images = pd.DataFrame([("a1", "A", "mel", "nv", 0.25, 0.0625),
                           ("a2", "A", "mel", "mel", np.nan, 0.5),
                           ("b1", "B", "mel", "mel", 0.75, 0.25),
                           ("c1", "C", "nv", "nv", 0.40, 0.0)], columns=COLUMNS)
    focus = LesionFocus(images, considered=6, missing_masks=2, examples=())
    summary = summarize_lesion_focus(focus, n_resamples=50, class_names=("mel", "nv", "df"))
    assert (summary["num_images"], summary["num_with_mask"]) == (6, 4)
    assert (summary["skipped_without_mask"], summary["zero_heatmap"]) == (2, 1)
    mel = summary["per_class"]["mel"]
    assert (mel["n"], mel["num_lesions"], mel["zero_heatmap"]) == (2, 2, 1)
    assert mel["energy_inside"]["value"] == pytest.approx((0.25 + 0.75) / 2)
    assert mel["lesion_area_fraction"] == pytest.approx((0.0625 + 0.25) / 2)
    assert mel["ratio_to_chance"] == pytest.approx((0.25 / 0.0625 + 0.75 / 0.25) / 2)
    assert mel["mostly_inside"] == pytest.approx(0.5)
    nv = summary["per_class"]["nv"]  # an empty mask: no chance level, so no ratio
    assert nv["energy_inside"]["value"] == pytest.approx(0.4) and math.isnan(
        nv["ratio_to_chance"])
    assert summary["per_class"]["df"]["n"] == 0
    assert math.isnan(summary["per_class"]["df"]["energy_inside"]["value"])
    assert summary["overall"]["n"] == 3


def test_interval_resamples_lesions_not_images():
    """Lesion A: 10 images with share 0; lesion B: 1 image with share 1. Two lesions drawn
    with replacement give means 0 (AA), 1/11 (AB, BA) or 1 (BB), a quarter of the time each
    end: the 95% interval is [0, 1]. Resampling images would give a narrow one near 0.09."""
    images = pd.DataFrame({"image": [f"i{k}" for k in range(11)],
                           "lesion": ["A"] * 10 + ["B"], "truth": "mel", "prediction": "mel",
                           "energy_inside": [0.0] * 10 + [1.0],
                           "lesion_area_fraction": 0.5})
    entry = summarize_group(images, n_resamples=2000, seed=3)["energy_inside"]
    assert entry["value"] == pytest.approx(1 / 11)
    assert (entry["low"], entry["high"]) == (0.0, 1.0)
    assert entry["method"] == "bootstrap-lesions"


def test_masks_load_as_booleans_and_missing_or_broken_ones_as_none(tmp_path):
    white = rectangle(20, 50, 40, 100) > 0
    Image.fromarray(white).convert("1").save(tmp_path / "one_bit.png")  # as HAM10000 ships
    np.testing.assert_array_equal(load_mask(tmp_path / "one_bit.png"), white)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert load_mask(tmp_path / "broken.png") is None
    assert load_mask(tmp_path / "absent.png") is None
    assert mask_path(tmp_path, "ISIC_0024306") == \
        tmp_path / "masks" / "ISIC_0024306_segmentation.png"


def test_row_selection_draws_a_fixed_sample_in_order():
    assert select_rows(5).tolist() == [0, 1, 2, 3, 4]
    assert select_rows(5, limit=9).tolist() == [0, 1, 2, 3, 4]
    rows = select_rows(1000, limit=10, seed=1)
    assert len(set(rows)) == 10 and rows.tolist() == sorted(rows)
    assert rows.tolist() == select_rows(1000, limit=10, seed=1).tolist()
    assert rows.max() > 500  # spread over the split, not its first rows
    with pytest.raises(ValueError, match="--lesion-focus-limit must be at least 1"):
        select_rows(10, limit=0)


# --- heatmap -> image frame ------------------------------------------------------------------


def test_mapping_stretches_a_heatmap_over_the_whole_frame_bilinearly():
    """A ramp across 4 columns, from a 64x64 input (another aspect than the 150x200 frame):
    bilinear with pixel centres aligned gives, at frame column x, the clamped source
    coordinate (x + 0.5) * 4 / 200 - 0.5, divided by 3."""
    heatmap = np.tile(np.arange(4, dtype=np.float32) / 3, (3, 1))  # [3, 4]
    framed = map_heatmap_to_frame(heatmap, FRAME, input_size=(64, 64))
    assert framed.shape == FRAME
    source = np.clip((np.arange(200) + 0.5) * 4 / 200 - 0.5, 0, 3)
    np.testing.assert_allclose(framed, np.tile(source / 3, (150, 1)), atol=1e-6)


def test_mapping_inverts_the_pipelines_stretch_for_another_aspect_ratio():
    """A lesion drawn in the 150x200 frame, stretched to a 64x64 input by the pipeline's own
    resize, then mapped back: it lands where it was."""
    from dermnet.data.pipeline import resize_image

    lesion = rectangle(30, 90, 120, 180) > 0
    picture = np.repeat((lesion * 255).astype(np.uint8)[..., None], 3, axis=-1)
    model_input = resize_image(picture, (64, 64)).numpy()[..., 0] / 255.0
    back = map_heatmap_to_frame(model_input, FRAME, input_size=(64, 64)) > 0.5
    overlap = (back & lesion).sum() / (back | lesion).sum()
    assert overlap > 0.95


def test_crop_mode_maps_onto_the_centred_window_only():
    rows, columns = compute_visible_window(FRAME, (64, 64), "crop")  # a square from 4:3
    assert (rows, columns) == (slice(0, 150), slice(25, 175))
    framed = map_heatmap_to_frame(np.ones((2, 2), np.float32), FRAME, (64, 64), "crop")
    assert framed[:, 25:175].min() == 1.0 and framed[:, :25].max() == framed[:, 175:].max() == 0
    assert compute_visible_window(FRAME, (64, 80), "stretch") == (slice(0, 150), slice(0, 200))
    with pytest.raises(ValueError, match="resize must be"):
        compute_visible_window(FRAME, (64, 64), "pad")


def test_crop_window_matches_the_pipelines_crop():
    import tensorflow as tf

    from dermnet.data import pipeline

    frame = np.arange(150 * 200 * 3).reshape(150, 200, 3)
    for input_size in ((64, 64), (64, 100), (100, 64), (30, 41)):
        rows, columns = compute_visible_window(FRAME, input_size, "crop")
        cropped = pipeline.crop_to_aspect(tf.constant(frame), input_size)
        np.testing.assert_array_equal(np.asarray(cropped), frame[rows, columns])


# --- a model whose evidence is known ------------------------------------------------------------

INPUT = (48, 64)       # (H, W) of the detector's input
PICTURE = (120, 300)   # (H, W) of its images and masks: another aspect ratio
SQUARE = (slice(30, 70), slice(200, 260))


def build_bright_detector() -> keras.Model:
    """Class 0 "bright" scores the mean of a 4x4 stride-4 conv that fires on bright patches;
    class 1 "dark" the same on dark patches (as tests/inference/test_gradcam.py)."""
    patches = keras.Input((*INPUT, 3))
    detector = keras.layers.Conv2D(2, 4, strides=4, activation="relu", name="detector")
    backbone = keras.Model(patches, detector(patches), name="backbone")
    image = keras.Input((*INPUT, 3), name="image")
    features = backbone(keras.layers.Rescaling(1 / 255, name="preprocessing")(image))
    features = keras.layers.GlobalAveragePooling2D(name="pooling")(features)
    head = keras.layers.Dense(7, name="probabilities")  # 7 outputs: the pipeline's classes
    model = keras.Model({"image": image}, head(features))
    kernel = np.ones((4, 4, 3, 2), np.float32) / 48.0
    kernel[..., 1] *= -1.0
    detector.set_weights([kernel, np.array([-0.5, 0.5], np.float32)])
    head.set_weights([np.eye(2, 7, dtype=np.float32) * 10.0, np.zeros(7, np.float32)])
    return model


def square_evaluation(folder: Path, count: int = 5, resize: str = "stretch"):
    """An Evaluation of ``count`` dark pictures with a bright square, masks on the square
    (the last image has none), through the real evaluation pipeline."""
    from dermnet.config import make_config
    from dermnet.evaluation.predictions import Evaluation
    from dermnet.runs.ham10000 import Ham10000RunData

    (folder / "masks").mkdir(parents=True)
    rows = []
    for index in range(count):
        image_id = f"ISIC_{index:07d}"
        picture = np.full((*PICTURE, 3), 25, np.uint8)
        picture[SQUARE] = 255
        cv2.imwrite(str(folder / f"{image_id}.png"), picture)
        if index < count - 1:
            cv2.imwrite(str(mask_path(folder, image_id)), picture[..., 0])
        rows.append((image_id, f"HAM_{index}", "nv", 1, str(folder / f"{image_id}.png")))
    frame = pd.DataFrame(rows, columns=["image_id", "lesion_id", "dx", "label", "path"])
    config = make_config("smoke")
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, image_size=INPUT, batch_size=2, clinical=False, resize=resize))
    data = Ham10000RunData(folder, frame, frame, frame, holdout=None, encoder=None,
                           synthetic=True, provenance={})
    return Evaluation(folder, config, data, build_bright_detector(), "test", frame)


@pytest.mark.parametrize("resize, chance", [
    ("stretch", 40 * 60 / (120 * 300)),
    # The 4:3 crop of a 120x300 picture keeps columns 70-229: 30 of the square's 60 columns.
    ("crop", 40 * 30 / (120 * 160)),
])
def test_energy_of_a_detector_sits_on_the_square_it_detects(tmp_path, resize, chance):
    evaluation = square_evaluation(tmp_path, resize=resize)
    focus = measure_lesion_focus(evaluation, np.zeros(5, int), explain_truth=True)
    assert (focus.considered, focus.missing_masks, len(focus.images)) == (5, 1, 4)
    images = focus.images
    assert list(images.columns) == [*COLUMNS, "energy_inside_truth"]
    np.testing.assert_allclose(images["lesion_area_fraction"], chance)
    # "bright" (predicted, class 0) looks at the square; "dark" (truth, class 1) around it.
    assert images["energy_inside"].min() > 0.8
    assert images["energy_inside_truth"].max() < chance
    assert (images["prediction"] == "mel").all() and (images["truth"] == "nv").all()
    assert [example.caption[:9] for example in focus.examples] == ["nv -> mel"]


# --- evaluate_run end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A clinical smoke run (the smoke preset, one epoch) on 60 phantom images at 200x150;
    trained in-process, which saves the second TensorFlow start of a train.py subprocess."""
    from dermnet.config import make_config
    from dermnet.data.phantom import write_phantom
    from dermnet.training.run import train_and_evaluate

    root = tmp_path_factory.mktemp("lesion_focus")
    data = write_phantom(root / "data", 60, seed=0, image_size=FRAME)
    config = make_config("smoke")
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, data_dir=str(data), clinical=True),
        training=dataclasses.replace(config.training, epochs=1))
    train_and_evaluate(config, root / "run", log=lambda message: None)
    return root / "run", data


def with_masks(data: Path, target: Path, draw, skip: dict | None = None) -> Path:
    """A copy of the dataset with masks: ``draw()`` gives each mask; ``skip`` maps image ids
    to "missing" or "broken"."""
    skip = skip or {}
    shutil.copytree(data, target)
    (target / "masks").mkdir()
    for image_id in pd.read_csv(target / "HAM10000_metadata.csv")["image_id"]:
        path = mask_path(target, image_id)
        if skip.get(image_id) == "broken":
            path.write_bytes(b"not a png")
        elif image_id not in skip:
            cv2.imwrite(str(path), draw())
    return target


@pytest.mark.slow
def test_run_counts_missing_masks_and_its_csv_agrees_with_metrics_json(smoke_run, tmp_path):
    from dermnet.evaluation.run import evaluate_run

    run, data = smoke_run
    test_ids = pd.read_csv(run / "splits.csv").query("fold == 'test'")["image_id"].tolist()
    skip = {test_ids[0]: "missing", test_ids[1]: "broken"}
    masked = with_masks(data, tmp_path / "data", lambda: np.full(FRAME, 255, np.uint8), skip)
    metrics = evaluate_run(run, data_dir=masked, out=tmp_path / "out", n_resamples=100,
                           runtime=False, log=lambda message: None)
    focus = json.loads((tmp_path / "out" / "metrics.json").read_text())["lesion_focus"]
    assert focus == metrics["lesion_focus"]
    assert (focus["num_images"], focus["skipped_without_mask"]) == (len(test_ids), 2)
    rows = pd.read_csv(tmp_path / "out" / "lesion_focus.csv")
    assert list(rows.columns) == list(COLUMNS) and len(rows) == len(test_ids) - 2
    assert set(rows["image"]) == set(test_ids[2:])
    measured = rows.dropna(subset=["energy_inside"])
    assert len(measured) > 0 and focus["zero_heatmap"] == len(rows) - len(measured)
    np.testing.assert_allclose(measured["energy_inside"], 1.0, atol=1e-6)  # whole-image masks
    np.testing.assert_allclose(rows["lesion_area_fraction"], 1.0)
    for name, group in measured.groupby("truth"):
        entry = focus["per_class"][name]
        assert entry["n"] == len(group) and entry["num_lesions"] == group["lesion"].nunique()
        assert abs(entry["energy_inside"]["value"] - group["energy_inside"].mean()) < 1e-12
        assert abs(entry["lesion_area_fraction"] - group["lesion_area_fraction"].mean()) < 1e-12
    per_image = pd.read_csv(tmp_path / "out" / "per_image.csv").set_index("image")
    assert (per_image.loc[rows["image"], "predicted"].to_numpy() == rows["prediction"]).all()
    figure = cv2.imread(str(tmp_path / "out" / "lesion_focus.png"))
    assert figure is not None and figure.shape[0] > 200
    assert "of Grad-CAM energy inside the lesion (chance 100%" in \
        (tmp_path / "out" / "per_class.md").read_text()
    assert not (tmp_path / "out" / ".evaluation-partial").exists()


@pytest.mark.slow
def test_empty_masks_give_no_energy_inside_and_say_so(smoke_run, tmp_path):
    from dermnet.evaluation.run import evaluate_run

    run, data = smoke_run
    masked = with_masks(data, tmp_path / "data", lambda: np.zeros(FRAME, np.uint8))
    metrics = evaluate_run(run, data_dir=masked, out=tmp_path / "out", n_resamples=100,
                           runtime=False, log=lambda message: None)
    rows = pd.read_csv(tmp_path / "out" / "lesion_focus.csv").dropna()
    assert len(rows) > 0 and (rows["energy_inside"] == 0).all()
    overall = metrics["lesion_focus"]["overall"]
    assert overall["energy_inside"]["value"] == 0 and overall["ratio_to_chance"] is None
    assert overall["mostly_inside"] == 0
    summary = (tmp_path / "out" / "per_class.md").read_text()
    assert "all images: 0% (0%-0%) of Grad-CAM energy inside the lesion (chance 0%): " \
        "mostly OUTSIDE the lesion, no better than chance" in summary


@pytest.mark.slow
def test_cli_limits_the_sample_and_no_lesion_focus_removes_the_old_files(smoke_run, tmp_path):
    from dermnet.evaluation.cli import main

    run, data = smoke_run
    masked = with_masks(data, tmp_path / "data", lambda: rectangle(0, 150, 0, 100, 255)
                        .astype(np.uint8))
    common = [str(run), "--data-dir", str(masked), "--out", str(tmp_path / "out"),
              "--no-runtime", "--resamples", "50"]
    assert main([*common, "--lesion-focus-limit", "3"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["lesion_focus"]["num_images"] == 3
    assert len(pd.read_csv(tmp_path / "out" / "lesion_focus.csv")) == 3
    assert "a sample of 3 of the split's" in (tmp_path / "out" / "per_class.md").read_text()
    assert main([*common, "--no-lesion-focus"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "lesion_focus" not in metrics
    assert not (tmp_path / "out" / "lesion_focus.csv").exists()
    assert not (tmp_path / "out" / "lesion_focus.png").exists()
    assert main([*common, "--lesion-focus-limit", "0"]) == 1


@pytest.mark.slow
def test_data_without_masks_skips_with_one_notice(smoke_run, tmp_path):
    from dermnet.evaluation.run import evaluate_run

    run, data = smoke_run
    messages = []
    metrics = evaluate_run(run, out=tmp_path / "out", n_resamples=50, runtime=False,
                           log=messages.append)
    notices = [message for message in messages if "lesion focus" in message]
    assert notices == [f"lesion focus: skipped, no masks/ folder in {data}"]
    assert metrics["lesion_focus"] == {"skipped": f"no masks/ folder in {data}"}
    assert not (tmp_path / "out" / "lesion_focus.csv").exists()
    assert "Where the model looks" not in (tmp_path / "out" / "per_class.md").read_text()


def test_summary_line_states_outside_and_chance_plainly():
    entry = {"n": 52, "energy_inside": {"value": 0.38, "low": 0.33, "high": 0.45},
             "lesion_area_fraction": 0.31, "ratio_to_chance": 1.34, "mostly_inside": 0.4}
    assert report.format_focus_line("mel", entry) == (
        "mel: 38% (33%-45%) of Grad-CAM energy inside the lesion (chance 31%, 1.3x chance "
        "per image): mostly OUTSIDE the lesion, above chance; more than half inside for 40% "
        "of 52 images")
    entry["lesion_area_fraction"] = 0.40  # inside the interval: no evidence either way
    assert "mostly OUTSIDE the lesion, no better than chance;" in \
        report.format_focus_line("mel", entry)
    entry.update(energy_inside={"value": 0.7, "low": 0.6, "high": 0.75},
                 lesion_area_fraction=0.8, n=1)
    assert report.format_focus_line("nv", entry).endswith(
        "mostly inside the lesion, BELOW chance; more than half inside for 40% of 1 image")


# --- the real masks -----------------------------------------------------------------------------



def test_real_masks_cover_the_darker_lesion(real_dataset):
    """Dermoscopic lesions are darker than the skin around them: for 10 images spread over
    the release, the mask's white area must be the darker part in most of them, and by far
    more than a mask shifted by a quarter of the width."""
    images = sorted((real_dataset / "images").glob("ISIC_*.jpg"))[::1000][:10]
    gaps, shifted_gaps = [], []  # mean grey level outside minus inside the mask
    for path in images:
        mask = load_mask(mask_path(real_dataset, path.stem))
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(float)
        assert mask is not None and mask.shape == grey.shape, path.stem
        assert 0 < compute_area_fraction(mask) < 1, path.stem
        gaps.append(grey[~mask].mean() - grey[mask].mean())
        shifted = np.roll(mask, grey.shape[1] // 4, axis=1)  # a misaligned mask, for contrast
        shifted_gaps.append(grey[~shifted].mean() - grey[shifted].mean())
    assert len(gaps) == 10 and sum(gap > 0 for gap in gaps) >= 8, gaps
    assert np.mean(gaps) > 2 * np.mean(shifted_gaps), (gaps, shifted_gaps)


def test_a_lesion_crop_box_is_the_visible_window():
    """With data.lesion_crop the model saw only the crop box: (0.25, 0.2, 0.75, 0.8) of a
    150x200 frame is rows 30..119 and columns 50..149 (floor(f * size + 0.5)), and a heatmap
    maps onto that window only."""
    box = np.array([0.25, 0.2, 0.75, 0.8], np.float32)
    rows, columns = compute_visible_window(FRAME, (112, 150), "stretch", box)
    assert (rows.start, rows.stop, columns.start, columns.stop) == (30, 120, 50, 150)
    framed = map_heatmap_to_frame(np.ones((4, 5), np.float32), FRAME, (112, 150), "stretch",
                                  box)
    assert framed[30:120, 50:150].min() > 0 and framed.sum() == framed[30:120, 50:150].sum()
