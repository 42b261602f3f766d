"""``python -m gan generate``: a finished run -> a HAM10000-layout folder that dermnet's
reader accepts, whose images are exactly the average generator's for the recorded codes,
whose clinical fields are real rows of each image's class, written all or nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dermnet.data.ham10000 import load_ham10000
from dermnet.data.phantom import write_phantom
from dermnet.data.vocabulary import CLASSES, METADATA_FILENAME
from gan.config import apply_overrides, make_gan_config
from gan.generate import (
    GenerationError,
    draw_synthetic_codes,
    load_gan_run,
    parse_classes,
    plan_classes,
    render,
    write_synthetic_dataset,
)
from gan.train import train_gan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A finished smoke run (8x8) on a 14-image phantom: every class, seconds to train."""
    data = write_phantom(tmp_path_factory.mktemp("data") / "phantom", 14, seed=0)
    config = apply_overrides(make_gan_config("smoke"), [f"data.data_dir={data}"])
    out = tmp_path_factory.mktemp("runs") / "smoke"
    train_gan(config, out, log=lambda line: None)
    return out


def run_cli(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *arguments], capture_output=True, text=True,
                          timeout=300, cwd=ROOT,
                          env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})


def test_class_plan_shares_images_equally():
    assert plan_classes(10, [0, 5]).tolist() == [0] * 5 + [5] * 5
    assert np.bincount(plan_classes(9, list(range(7)))).tolist() == [2, 2, 1, 1, 1, 1, 1]
    assert parse_classes(["df", "mel", "df"]) == [0, 5]
    assert parse_classes(None) == list(range(7))
    with pytest.raises(GenerationError, match="unknown class melanoma"):
        parse_classes(["melanoma"])
    with pytest.raises(GenerationError, match="--num-images"):
        plan_classes(0, [0])


@pytest.mark.slow
def test_cli_writes_a_dataset_the_reader_accepts(smoke_run, tmp_path):
    out = tmp_path / "synthetic"
    result = run_cli("gan", "generate", str(smoke_run), "--num-images", "10", "--out", str(out),
                     "--class", "mel", "--class", "df", "--seed", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 10 synthetic images (mel, df)" in result.stdout
    check = run_cli("dermnet.data", "check", str(out))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "image sizes: 8x8 (10)" in check.stdout and "warnings: 0" in check.stdout
    dataset = load_ham10000(out, check_images="full")
    frame = dataset.frame
    assert frame["dx"].value_counts().to_dict() == {"mel": 5, "df": 5}
    assert set(frame["dx_type"]) == {"synthetic"} and set(frame["dataset"]) == {"gan"}
    assert frame["lesion_id"].is_unique and frame["image_id"].str.startswith("GAN3_").all()
    assert dataset.image_sizes == (((8, 8), 10),)
    real = pd.read_csv(smoke_run / "real_metadata.csv")
    real_triples = {(dx, age, sex, site) for dx, age, sex, site in
                    real[["dx", "age", "sex", "localization"]].itertuples(index=False)}
    for row in frame.itertuples():
        assert (row.dx, row.age, row.sex, row.localization) in real_triples
    record = json.loads((out / "generation.json").read_text())
    assert record["class_counts"] == {"mel": 5, "df": 5} and record["seed"] == 3
    codes = pd.read_csv(out / "codes.csv")
    assert list(codes["image_id"]) == list(frame["image_id"].sort_values())
    assert codes.filter(like="continuous_").abs().to_numpy().max() <= 1.0
    assert "SYNTHETIC" in (out / "README.txt").read_text()


@pytest.mark.slow
def test_png_images_are_the_generators_output_for_the_seed(smoke_run, tmp_path):
    run = load_gan_run(smoke_run)
    out = write_synthetic_dataset(run, tmp_path / "png", 9, seed=5, image_format="png",
                                  batch_size=4, log=lambda line: None)
    plan = plan_classes(9, list(range(len(CLASSES))))
    expected = render(run, draw_synthetic_codes(run, plan, 5).codes, 0, 9)
    metadata = pd.read_csv(out / METADATA_FILENAME)
    for index, image_id in enumerate(metadata["image_id"]):
        written = cv2.imread(str(out / "images" / f"{image_id}.png"))[:, :, ::-1]
        np.testing.assert_array_equal(written, expected[index])
        assert metadata["dx"][index] == CLASSES[plan[index]]
    again = write_synthetic_dataset(run, tmp_path / "again", 9, seed=5, image_format="png",
                                    log=lambda line: None)
    for image in (out / "images").iterdir():
        assert image.read_bytes() == (again / "images" / image.name).read_bytes()


@pytest.mark.slow
def test_size_option_resizes(smoke_run, tmp_path):
    run = load_gan_run(smoke_run)
    out = write_synthetic_dataset(run, tmp_path / "big", 7, size=32, log=lambda line: None)
    assert load_ham10000(out).image_sizes == (((32, 32), 7),)


@pytest.mark.slow
def test_bad_requests_are_clear_errors_and_leave_nothing(smoke_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file.txt").write_text("keep me")
    result = run_cli("gan", "generate", str(smoke_run), "--num-images", "3", "--out", str(taken))
    assert result.returncode == 1 and "refusing to write synthetic images into" in result.stderr
    assert [path.name for path in taken.iterdir()] == ["file.txt"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    result = run_cli("gan", "generate", str(unfinished), "--num-images", "3",
                     "--out", str(tmp_path / "new"))
    assert result.returncode == 1 and "not a finished GAN run" in result.stderr
    result = run_cli("gan", "generate", str(smoke_run), "--num-images", "3", "--out",
                     str(tmp_path / "new"), "--class", "melanoma")
    assert result.returncode == 1 and "unknown class melanoma" in result.stderr
    assert not (tmp_path / "new").exists()
    assert not [path for path in tmp_path.iterdir() if "partial" in path.name]
