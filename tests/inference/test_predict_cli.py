"""The predict.py command line: ranked text, JSON, exit statuses with one clear line on
stderr and nothing on stdout, clinical options and CSV, Grad-CAM files; and, marked slow,
end to end on a real smoke training run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data.vocabulary import CLASS_NAMES, CLASSES
from dermnet.inference.cli import main, make_gradcam_paths
from dermnet.inference.predict import load_predictor, make_clinical_rows
from tests.smoke import copy_run

ROOT = Path(__file__).resolve().parents[2]
CLINICAL = ["--age", "45", "--sex", "female", "--site", "back"]


def run_main(capsys, *arguments):
    """(exit status, stdout, stderr) of ``main`` on string arguments."""
    status = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_text_lists_the_top_k_classes_of_each_image(capsys, image_run, images):
    status, out, err = run_main(capsys, image_run, images["jpeg"], images["png"], "--top-k",
                                "2")
    assert status == 0, err
    probabilities = load_predictor(image_run).predict([images["jpeg"], images["png"]])
    header, *blocks = out.strip().split("\n\n")
    assert header == (f"model {image_run}: trained on images of unknown provenance (no "
                      "data.json beside the model)")
    assert [block.splitlines()[0] for block in blocks] == [str(images["jpeg"]),
                                                          str(images["png"])]
    for block, row in zip(blocks, probabilities):
        ranked = [CLASSES[index] for index in np.argsort(-row)[:2]]
        lines = block.splitlines()[1:]
        assert len(lines) == 2
        for rank, (line, code) in enumerate(zip(lines, ranked), start=1):
            expected = f"{rank}. {code:<6}{row[CLASSES.index(code)]:7.1%}  {CLASS_NAMES[code]}"
            assert line.strip() == expected.strip()


def test_json_lists_probabilities_top_k_and_gradcam(capsys, image_run, images):
    status, out, _ = run_main(capsys, image_run, images["jpeg"], images["grey"], "--json")
    assert status == 0
    records = json.loads(out)
    assert [record["image"] for record in records] == [str(images["jpeg"]),
                                                      str(images["grey"])]
    for record in records:
        assert set(record) == {"image", "probabilities", "top_k", "gradcam", "gradcam_empty",
                               "trained_on"}
        assert list(record["probabilities"]) == list(CLASSES)
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert record["gradcam"] is None
        top = record["top_k"]
        assert len(top) == 3 and all(set(entry) == {"class", "name", "probability"}
                                     for entry in top)
        values = [entry["probability"] for entry in top]
        assert values == sorted(values, reverse=True)
        assert values[0] == max(record["probabilities"].values())
        assert all(entry["name"] == CLASS_NAMES[entry["class"]] and
                   entry["probability"] == record["probabilities"][entry["class"]]
                   for entry in top)


@pytest.mark.parametrize("kind, reason", [
    ("missing", "no such file"), ("text", "not a readable image"),
    ("truncated", "not a readable image")])
def test_a_bad_image_exits_1_naming_it_and_prints_nothing(capsys, image_run, images, kind,
                                                         reason):
    status, out, err = run_main(capsys, image_run, images["jpeg"], images[kind], "--json")
    assert (status, out) == (1, "")
    assert err.splitlines() == [err.strip()]  # one line
    assert err.startswith(f"predict.py: error: {images[kind]}: {reason}")


def test_a_missing_model_exits_1(capsys, tmp_path, images):
    status, out, err = run_main(capsys, tmp_path / "no-run", images["jpeg"])
    assert (status, out) == (1, "")
    assert "no-run: no such model file or run directory" in err


def test_clinical_model_without_clinical_data_exits_2_saying_what_to_give(
        capsys, clinical_run, images):
    status, out, err = run_main(capsys, clinical_run, images["jpeg"])
    assert (status, out) == (2, "")
    for needed in ("--age", "--sex", "--site", "--clinical-csv", "male, female, unknown",
                   "back, lower extremity, trunk"):
        assert needed in err


def test_partial_invalid_or_clashing_options_exit_2(capsys, clinical_run, images):
    status, out, err = run_main(capsys, clinical_run, images["jpeg"], "--age", "50")
    assert (status, out) == (2, "") and "missing --sex, --site" in err
    status, out, err = run_main(capsys, clinical_run, images["jpeg"], "--age", "50", "--sex",
                                "mail", "--site", "back")
    assert (status, out) == (2, "") and "sex 'mail' is not one of male, female, unknown" in err
    status, out, err = run_main(capsys, clinical_run, images["jpeg"], *CLINICAL,
                                "--clinical-csv", "x.csv")
    assert (status, out) == (2, "") and "either --clinical-csv or --age" in err
    status, out, err = run_main(capsys, clinical_run, images["jpeg"], *CLINICAL,
                                "--gradcam-class", "mel")
    assert (status, out) == (2, "") and "--gradcam-class needs --gradcam" in err


@pytest.mark.slow
def test_clinical_options_and_csv_give_the_libraries_probabilities(capsys, clinical_run,
                                                                    images, tmp_path):
    paths = [images["jpeg"], images["png"]]
    csv = tmp_path / "clinical.csv"
    pd.DataFrame({"image": [paths[1].name, str(paths[0])], "age": [70, 20],
                  "sex": ["male", "female"], "localization": ["face", "foot"]}
                 ).to_csv(csv, index=False)
    predictor = load_predictor(clinical_run)
    status, out, err = run_main(capsys, clinical_run, *paths, "--clinical-csv", csv, "--json")
    assert status == 0, err
    rows = pd.DataFrame({"age": [20, 70], "sex": ["female", "male"],
                         "localization": ["foot", "face"]})
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in json.loads(out)],
                               predictor.predict(paths, rows), rtol=1e-5, atol=1e-7)
    status, out, err = run_main(capsys, clinical_run, *paths, *CLINICAL, "--json")
    assert status == 0, err
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in json.loads(out)],
                               predictor.predict(paths, make_clinical_rows(2, 45, "female",
                                                                           "back")),
                               rtol=1e-5, atol=1e-7)


def test_clinical_csv_without_a_row_for_an_image_exits_2_naming_it(capsys, clinical_run,
                                                                   images, tmp_path):
    csv = tmp_path / "clinical.csv"
    csv.write_text(f"image,age,sex,localization\n{images['jpeg'].name},40,male,back\n")
    status, out, err = run_main(capsys, clinical_run, images["jpeg"], images["png"],
                                "--clinical-csv", csv)
    assert (status, out) == (2, "")
    assert f"no row for image {images['png']}" in err


def test_clinical_options_for_an_image_model_are_ignored_with_a_warning(capsys, image_run,
                                                                         images):
    status, out, err = run_main(capsys, image_run, images["jpeg"], "--age", "45")
    assert status == 0 and out.split("\n\n")[1].startswith(str(images["jpeg"]))
    assert "predict.py: warning: this model uses no clinical data" in err


def test_gradcam_writes_one_overlay_per_image_at_its_original_size(capsys, clinical_run,
                                                                   images, tmp_path):
    out_dir = tmp_path / "heatmaps"
    status, out, err = run_main(capsys, clinical_run, images["jpeg"], images["png"],
                                images["rgba"], *CLINICAL, "--json", "--gradcam", out_dir)
    assert status == 0, err
    records = json.loads(out)
    # The figure: a caption strip above the overlay at the image's size, a colour bar beside
    # it (at least 420 wide for the caption).
    for record, (height, width) in zip(records, [(450, 600), (97, 131), (97, 131)]):
        top = record["top_k"][0]["class"]
        assert record["gradcam"].endswith(f"_gradcam_{top}.png")
        assert cv2.imread(record["gradcam"]).shape == (26 + height, max(width + 68, 420), 3)
        assert record["gradcam_empty"] in (True, False)
    assert len(list(out_dir.iterdir())) == 3  # no temporary files left
    status, out, _ = run_main(capsys, clinical_run, images["png"], *CLINICAL,
                              "--gradcam", out_dir, "--gradcam-class", "vasc")
    assert status == 0
    assert f"Grad-CAM: {out_dir / 'small_gradcam_vasc.png'}" in out
    assert (out_dir / "small_gradcam_vasc.png").is_file()


def test_gradcam_names_stay_apart_for_images_of_the_same_name(tmp_path):
    paths = [Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg")]
    assert make_gradcam_paths(paths, ["mel", "nv", "mel"], tmp_path) == [
        tmp_path / "x_gradcam_mel.png", tmp_path / "x-2_gradcam_nv.png",
        tmp_path / "y_gradcam_mel.png"]


@pytest.mark.parametrize("arguments", [["--top-k", "0"], ["--top-k", "8"],
                                       ["--gradcam-class", "melanoma"]])
def test_bad_option_values_are_usage_errors(capsys, image_run, images, arguments):
    with pytest.raises(SystemExit) as raised:
        main([str(image_run), str(images["jpeg"]), *arguments])
    assert raised.value.code == 2
    assert capsys.readouterr().out == ""


# --- end to end on a real training run -----------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, trained_smoke_run):
    """A copy of the session's clinical smoke run."""
    return copy_run(trained_smoke_run.out, tmp_path_factory.mktemp("runs") / "smoke")


def run_script(script: str, *arguments, cache=None):
    environment = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    if cache is not None:
        environment["DERMNET_CACHE"] = str(cache)
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, arguments)],
                          env=environment, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)


@pytest.mark.slow
def test_predict_py_on_a_smoke_run(smoke_run, images, tmp_path):
    csv = tmp_path / "clinical.csv"
    csv.write_text("image,age,sex,localization\nlesion.jpg,55,male,back\n"
                   "small,unknown,unknown,unknown\n")
    result = run_script("predict.py", smoke_run, images["jpeg"], images["png"],
                        "--clinical-csv", csv, "--json", "--gradcam", tmp_path / "cams")
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)
    assert len(records) == 2 and all(Path(record["gradcam"]).is_file() for record in records)
    # The figure: a 26-pixel caption above the 450x600 overlay, the colour bar beside it.
    assert cv2.imread(records[0]["gradcam"]).shape == (26 + 450, 600 + 68, 3)
    failed = run_script("predict.py", smoke_run, images["jpeg"], images["truncated"],
                        *CLINICAL)
    assert (failed.returncode, failed.stdout) == (1, "")
    assert "Traceback" not in failed.stderr
    assert re.search(rf"predict.py: error: {re.escape(str(images['truncated']))}: not a "
                     "readable image", failed.stderr)


def test_provenance_of_a_run_trained_on_real_upsampled_images(capsys, image_run, images,
                                                              tmp_path):
    """data.json beside the model: the text header and every JSON record say the model was
    trained on REAL images and that they were upsampled to its input."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    (run / "data.json").write_text(json.dumps({
        "kind": "real", "data_dir": "/data/ham10000_200x150", "images": 10015,
        "source_sizes": [{"width": 20, "height": 15, "images": 10015}],
        "input_size": [32, 40], "upsampled_images": 10015, "sources": {}}))
    status, out, err = run_main(capsys, run, images["jpeg"])
    assert status == 0, err
    assert out.splitlines()[0] == (f"model {run}: trained on REAL images from "
                                   "/data/ham10000_200x150 (10,015; 20x15), 10,015 of them "
                                   "UPSAMPLED to the 32x40 model input")
    status, out, err = run_main(capsys, run, images["jpeg"], "--json")
    assert json.loads(out)[0]["trained_on"].startswith("trained on REAL images from /data/")


def test_a_crop_run_fits_other_aspects_by_centre_crop(image_run, images, tmp_path):
    """config.json's data.resize reaches predict: a crop run sees the centred window."""
    import shutil

    from dermnet.data.pipeline import decode_image

    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    (run / "config.json").write_text(json.dumps({"data": {"resize": "crop"}}))
    predictor = load_predictor(run)
    assert predictor.resize == "crop"
    square = images["png"]  # 97x131: not the 32x40 input's 4:5 aspect
    expected = decode_image(square.read_bytes(), (32, 40), "crop").numpy()
    np.testing.assert_array_equal(predictor.read_images([square])[0], expected)
    assert not np.array_equal(expected, decode_image(square.read_bytes(), (32, 40)).numpy())


def test_a_lesion_crop_run_cuts_each_image_to_its_estimated_lesion(image_run, images,
                                                                   tmp_path):
    """config.json's data.lesion_crop reaches predict: the same estimate and crop as the
    training pipeline's, so a lesion-cropped model sees what it was trained on."""
    import shutil

    from dermnet.data.lesion_box import estimate_lesion_boxes
    from dermnet.inference.predict import read_images

    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    (run / "config.json").write_text(json.dumps({"data": {"lesion_crop": 0.25}}))
    predictor = load_predictor(run)
    assert predictor.lesion_crop == 0.25
    paths = [images["jpeg"], images["png"]]
    boxes, _ = estimate_lesion_boxes(paths, 0.25, 40 / 32)
    np.testing.assert_array_equal(predictor.read_images(paths),
                                  read_images(paths, (32, 40), "stretch", boxes))
    assert (boxes != np.array([0, 0, 1, 1], np.float32)).any()


def test_an_image_far_smaller_than_the_input_is_warned_about(capsys, image_run, tmp_path):
    # Found by the outside trial: a 10x10 image was accepted silently.
    tiny, large = tmp_path / "tiny.png", tmp_path / "large.jpg"
    cv2.imwrite(str(tiny), np.full((10, 10, 3), 128, np.uint8))
    cv2.imwrite(str(large), np.full((64, 80, 3), 128, np.uint8))
    status, out, err = run_main(capsys, image_run, tiny, large)
    assert status == 0 and "tiny.png" in out
    assert f"warning: {tiny}: 10x10 pixels, far smaller than the model's 40x32 input" in err
    assert str(large) not in err
