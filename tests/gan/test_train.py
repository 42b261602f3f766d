"""The GAN run: config presets, overrides and JSON; the image stream as a pure function of
the images seen; squaring, caching and halving real images; checkpoints; the class grid;
``python -m gan train --preset smoke`` end to end, also with clinical codes (the encoder and
the real metadata in the run directory); and (slow) kill -9 and resume ending with an
uninterrupted run's weights."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from dermnet.data.clinical import load_clinical_encoder
from dermnet.data.phantom import write_phantom
from dermnet.runs.folder import RunExistsError
from gan.checkpoints import load_arrays, read_commit, save_checkpoint
from gan.clinical import CLINICAL_CODES, load_real_metadata, save_real_metadata
from gan.config import (
    PRESETS,
    GanDataConfig,
    apply_overrides,
    check_gan_config,
    load_gan_config,
    make_gan_config,
    save_gan_config,
)
from gan.data import (
    build_stage_dataset,
    compute_stream_indices,
    halve_images,
    load_gan_data,
)
from gan.model import GanNetworks
from gan.monitoring import GRID_MIN_SIDE, render_class_grid
from gan.schedule import plan_stages
from gan.train import _prepare_clinical, train_gan

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--preset", "smoke", "--deterministic"]

# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_consistent_and_round_trip_through_json(preset, tmp_path):
    config = check_gan_config(make_gan_config(preset))
    save_gan_config(config, tmp_path / "config.json")
    assert load_gan_config(tmp_path / "config.json") == config
    assert all(isinstance(key, int) for key in config.schedule.batch_sizes)


def test_overrides_reach_every_section_and_dict_fields():
    config = apply_overrides(make_gan_config("smoke"), [
        "schedule.batch_sizes=4:2,8:6", "training.critic_steps=5", "network.latent_size=3",
        "data.square=pad"])
    assert config.schedule.batch_sizes == {4: 2, 8: 6}
    assert (config.training.critic_steps, config.network.latent_size) == (5, 3)
    assert config.data.square == "pad"


@pytest.mark.parametrize("override, message", [
    ("training.n_critic=5", "unknown config key 'training.n_critic'"),
    ("schedule.batch_sizes=4-2", "cannot read '4-2'"),
    ("data.square=stretch", "square must be one of crop, pad"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(make_gan_config("smoke"), [override])


def test_final_resolutions_must_agree():
    config = apply_overrides(make_gan_config("smoke"), ["network.final_resolution=16"])
    with pytest.raises(ValueError, match="differ; set both"):
        check_gan_config(config)


@pytest.mark.parametrize("overrides, message", [
    (["data.clinical=true"], f"network.clinical_codes must be {CLINICAL_CODES} .*got 0"),
    (["network.clinical_codes=20"], "network.clinical_codes is 20 but data.clinical is off"),
    (["data.clinical=true", "network.clinical_codes=5"], "must be 20 .*got 5"),
])
def test_clinical_data_and_codes_must_agree(overrides, message):
    assert CLINICAL_CODES == 2 + 3 + 15  # age, age missing, sexes, sites
    with pytest.raises(ValueError, match=message):
        check_gan_config(apply_overrides(make_gan_config("smoke"), overrides))


def test_clinical_flag_sets_data_and_network():
    from gan.cli import build_config, make_parser

    arguments = ["train", "--preset", "smoke", "--out", "unused"]
    config = build_config(make_parser().parse_args([*arguments, "--clinical"]))
    assert (config.data.clinical, config.network.clinical_codes) == (True, CLINICAL_CODES)
    plain = build_config(make_parser().parse_args(arguments))
    assert (plain.data.clinical, plain.network.clinical_codes) == (False, 0)


def test_stage_plan_of_the_smoke_preset():
    names = [(stage.name, stage.batch_size, stage.end)
             for stage in plan_stages(make_gan_config("smoke").schedule)]
    assert names == [("4x4 stable", 8, 16), ("8x8 fade", 8, 32), ("8x8 stable", 8, 48)]


# --- data -------------------------------------------------------------------------------------


def test_the_stream_walks_a_new_permutation_every_epoch():
    stream = compute_stream_indices(seed=3, count=10, start=0, size=30)
    for epoch in range(3):
        assert sorted(stream[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    np.testing.assert_array_equal(compute_stream_indices(3, 10, 7, 9), stream[7:16])


def test_halving_rounds_two_by_two_box_means():
    images = np.array([[0, 1, 10, 20], [2, 4, 30, 40], [5, 5, 0, 0], [5, 6, 0, 255]], np.uint8)
    halves = halve_images(np.repeat(images[None, :, :, None], 3, axis=3))
    np.testing.assert_array_equal(halves[0, :, :, 0], [[2, 25], [5, 64]])


def test_stage_batches_carry_each_images_label():
    """Image k is filled with the value k / 10, its label is k % 7: every one-hot in a
    batch must belong to the image beside it, whatever the stream order and flips."""
    count = 10
    images = np.repeat(np.arange(count, dtype=np.uint8)[:, None, None, None] * 10, 4, axis=1)
    images = np.repeat(np.repeat(images, 4, axis=2), 3, axis=3)  # [10, 4, 4, 3]
    labels = np.arange(count) % 7
    batches = build_stage_dataset(images, seed=3, first_image=0, steps=5, batch_size=4,
                                  labels=labels)
    for pixels, one_hot in batches:
        index = np.rint((pixels.numpy()[:, 0, 0, 0] + 1.0) * 127.5 / 10).astype(int)
        np.testing.assert_array_equal(one_hot.numpy().argmax(axis=1), labels[index])
        assert one_hot.shape == (4, 7)


def test_stage_batches_depend_only_on_the_images_seen():
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    whole = list(build_stage_dataset(images, seed=1, first_image=0, steps=4, batch_size=3))
    resumed = list(build_stage_dataset(images, seed=1, first_image=6, steps=2, batch_size=3))
    for ours, theirs in zip(resumed, whole[2:]):
        np.testing.assert_array_equal(ours, theirs)
    batch = whole[0].numpy()
    assert batch.shape == (3, 4, 4, 3) and batch.dtype == np.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    plain = list(build_stage_dataset(images, 1, 0, 4, 3, flips=False))
    indices = compute_stream_indices(1, 10, 0, 12)
    np.testing.assert_allclose(plain[1].numpy(), images[indices[3:6]] / 127.5 - 1.0, atol=1e-6)
    flipped = [not np.array_equal(a, b) for a, b in zip(whole, plain)]
    assert any(flipped)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("data") / "phantom", 14, seed=0)


@pytest.mark.parametrize("square", ["crop", "pad"])
def test_real_images_are_squared_decoded_once_and_cached(tiny_dataset, tmp_path, square):
    config = make_gan_config("smoke")
    data = GanDataConfig(data_dir=str(tiny_dataset), square=square, cache=str(tmp_path))
    config = dataclasses.replace(config, data=data)
    loaded = load_gan_data(config, log=lambda line: None)
    assert loaded.images.shape == (14, 8, 8, 3) and loaded.images.dtype == np.uint8
    assert loaded.synthetic and set(loaded.labels) <= set(range(7))
    assert len(list(tmp_path.glob(f"gan-images-8-{square}-*.npy"))) == 1
    again = load_gan_data(config, log=lambda line: None)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, loaded.images)
    np.testing.assert_array_equal(loaded.images_at(4), halve_images(loaded.images))


def test_gan_data_keeps_the_rows_of_its_images(tiny_dataset):
    data = GanDataConfig(data_dir=str(tiny_dataset))
    loaded = load_gan_data(dataclasses.replace(make_gan_config("smoke"), data=data),
                           log=lambda line: None)
    metadata = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv").set_index("image_id")
    frame = loaded.frame
    assert len(frame) == len(loaded.images)
    np.testing.assert_array_equal(frame["label"], loaded.labels)
    for column in ("dx", "sex", "localization"):
        assert list(frame[column]) == list(metadata.loc[frame["image_id"], column])


def test_real_metadata_round_trips_with_missing_ages(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "dx": ["mel", "nv"], "age": [45.0, np.nan],
                          "sex": ["male", "unknown"], "localization": ["back", "face"],
                          "label": [0, 1]})
    save_real_metadata(frame, tmp_path / "real_metadata.csv")
    lines = (tmp_path / "real_metadata.csv").read_text().splitlines()
    assert lines == ["image_id,dx,age,sex,localization", "a,mel,45.0,male,back",
                     "b,nv,,unknown,face"]
    loaded = load_real_metadata(tmp_path / "real_metadata.csv")
    pd.testing.assert_frame_equal(loaded, frame.drop(columns="label"))


def test_clinical_encoder_is_refitted_identically_and_a_changed_one_refused(tiny_dataset,
                                                                            tmp_path):
    config = apply_overrides(make_gan_config("smoke"), [
        f"data.data_dir={tiny_dataset}", "data.clinical=true",
        f"network.clinical_codes={CLINICAL_CODES}"])
    data = load_gan_data(config, log=lambda line: None)
    table = _prepare_clinical(config, data, tmp_path, log=lambda line: None)
    first = (tmp_path / "clinical_encoder.json").read_text()
    assert table.rows.shape == (14, CLINICAL_CODES)
    _prepare_clinical(config, data, tmp_path, log=lambda line: None)  # as a resume does
    assert (tmp_path / "clinical_encoder.json").read_text() == first
    payload = json.loads(first) | {"age_mean": 1.0}
    (tmp_path / "clinical_encoder.json").write_text(json.dumps(payload))
    with pytest.raises(RunExistsError, match="the data changed"):
        _prepare_clinical(config, data, tmp_path, log=lambda line: None)


def test_crop_and_pad_see_different_squares(tiny_dataset):
    def load(square):
        data = GanDataConfig(data_dir=str(tiny_dataset), square=square)
        config = dataclasses.replace(make_gan_config("smoke"), data=data)
        return load_gan_data(config, log=lambda line: None).images

    assert not np.array_equal(load("crop"), load("pad"))


# --- checkpoints and grids --------------------------------------------------------------------


def test_checkpoints_round_trip_and_commit_last(tmp_path):
    network = make_gan_config("smoke").network
    keras.utils.set_random_seed(1)
    saved = GanNetworks(network)
    save_checkpoint(tmp_path, saved, None, 24, 1)
    save_checkpoint(tmp_path, saved, None, 48, 2, name="stage-02")
    assert read_commit(tmp_path) == {"images_seen": 48, "stage_index": 2, "complete": True,
                                     "file": "stage-02.npz"}
    keras.utils.set_random_seed(2)
    loaded = GanNetworks(network)
    load_arrays(tmp_path / "stage-02.npz", loaded.weights)
    for group, variables in saved.weights.items():
        for ours, theirs in zip(variables, loaded.weights[group]):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                          keras.ops.convert_to_numpy(theirs))
    assert not list(tmp_path.glob("checkpoint-*.npz"))  # stale mid-stage files are gone
    bigger = GanNetworks(dataclasses.replace(network, latent_size=9))
    with pytest.raises(ValueError, match="wrong shape"):
        load_arrays(tmp_path / "stage-02.npz", bigger.weights)


def test_class_grid_has_a_row_per_class():
    images = np.linspace(-1, 1, 7 * 3 * 4 * 4 * 3, dtype="float32").reshape(21, 4, 4, 3)
    grid = render_class_grid(images, rows=7, gap=2)
    side = GRID_MIN_SIDE  # 4x4 samples are enlarged 8 times
    assert grid.shape == (7 * (side + 2) - 2, 3 * (side + 2) - 2, 3) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 0 and grid[-1, -1, 2] == 255  # -1 -> 0 and 1 -> 255
    assert not grid[side:side + 2].any()  # a black gap between rows


# --- the command line, end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def environment(cache_dir) -> dict:
    return os.environ | {"DERMNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_gan(arguments, cache_dir):
    return subprocess.run([sys.executable, "-m", "gan", "train", *arguments],
                          env=environment(cache_dir), capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    result = run_gan([*SMOKE, "--out", str(out)], cache_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_smoke_run_writes_the_run_directory(smoke_run):
    out, result = smoke_run
    assert not (out / "clinical_encoder.json").exists()
    for name in ("config.json", "real_metadata.csv", "generator.keras", "discriminator.keras",
                 "finished.json", "state/checkpoint.json", "grids/stage-4x4.png",
                 "grids/stage-8x8-fade.png", "grids/stage-8x8.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "finished.json").read_text())["images_seen"] == 48
    assert load_gan_config(out / "config.json").preset == "smoke"
    stages = [line.split(":")[1].split(",")[0].strip() for line in result.stdout.splitlines()
              if line.startswith("stage ")]
    assert stages == ["4x4 stable", "8x8 fade", "8x8 stable"]
    assert "SYNTHETIC" in result.stdout and "images 48/48" in result.stdout


@pytest.mark.slow
def test_grid_png_has_one_row_per_class(smoke_run):
    grid = tf.io.decode_png((smoke_run[0] / "grids" / "stage-8x8.png").read_bytes()).numpy()
    side = GRID_MIN_SIDE  # 8x8 samples enlarged 4 times
    assert grid.shape == (7 * (side + 2) - 2, 4 * (side + 2) - 2, 3)


@pytest.mark.slow
def test_tensorboard_holds_losses_schedule_and_grids(smoke_run):
    tags = set()
    for path in (smoke_run[0] / "tb" / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {value.tag for value in event.summary.value}
    assert {"losses/critic_loss", "losses/gradient_penalty", "losses/info_categorical",
            "losses/info_continuous", "losses/wasserstein_distance", "schedule/fade_in",
            "schedule/learning_rate", "class_grid"} <= tags


@pytest.mark.slow
def test_saved_generator_reloads_and_draws_images(smoke_run):
    import gan.networks  # noqa: F401  registers the custom layers
    from gan.codes import make_code_batch

    generator = keras.models.load_model(smoke_run[0] / "generator.keras")
    codes = make_code_batch(0, 2, make_gan_config("smoke").network)
    images = generator(codes | {"alpha": np.ones((2, 1), "float32")})
    assert tuple(images.shape) == (2, 8, 8, 3) and np.isfinite(images).all()


@pytest.mark.slow
def test_finished_run_is_not_overwritten(smoke_run, capsys):
    from gan.cli import main

    out = smoke_run[0]
    before = (out / "generator.keras").stat().st_mtime_ns
    assert main(["train", *SMOKE, "--out", str(out)]) == 1
    assert "already holds a finished run; use --overwrite" in capsys.readouterr().err
    assert (out / "generator.keras").stat().st_mtime_ns == before


def test_unknown_preset_and_key_are_clear_errors(tmp_path, capsys):
    from gan.cli import main

    assert main(["train", "--preset", "smoke", "--set", "training.gp=1", "--out",
                 str(tmp_path)]) == 1
    assert "unknown config key 'training.gp'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--preset", "huge", "--out", str(tmp_path)])


@pytest.mark.slow
def test_smoke_run_with_clinical_codes_writes_the_encoder_and_metadata(tiny_dataset,
                                                                       tmp_path):
    config = apply_overrides(make_gan_config("smoke"), [
        f"data.data_dir={tiny_dataset}", "data.clinical=true",
        f"network.clinical_codes={CLINICAL_CODES}"])
    lines = []
    summary = train_gan(config, tmp_path / "run", log=lines.append)
    out = tmp_path / "run"
    assert summary["images_seen"] == 48 and (out / "finished.json").is_file()
    assert (out / "grids" / "stage-8x8.png").is_file()
    assert any("info_clinical" in line for line in lines)
    metadata = load_real_metadata(out / "real_metadata.csv")
    data = load_gan_data(config, log=lambda line: None)
    assert list(metadata["image_id"]) == list(data.frame["image_id"])
    encoder = load_clinical_encoder(out / "clinical_encoder.json")
    assert encoder.num_features == CLINICAL_CODES
    assert encoder.age_mean == pytest.approx(data.frame["age"].mean())
    generator = keras.models.load_model(out / "generator.keras")
    assert "clinical" in generator.input


@pytest.mark.slow
def test_kill_and_resume_ends_with_the_uninterrupted_weights(tmp_path, cache_dir):
    arguments = [*SMOKE, "--set", "schedule.images_per_phase=640",
                 "--set", "training.checkpoint_every_images=40"]
    straight = run_gan([*arguments, "--out", str(tmp_path / "straight")], cache_dir)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "gan", "train", *arguments, "--out",
                                str(out)], env=environment(cache_dir), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_mid_stage_checkpoint(out / "state", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "finished.json").exists()
    commit = read_commit(out / "state")  # the kill may land after later commits
    resumed = run_gan([*arguments, "--out", str(out)], cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {commit['images_seen']} images seen" in resumed.stdout
    first = commit["stage_index"] + int(commit["complete"])  # 0-based stage resumed
    for earlier in range(first):
        assert f"stage {earlier + 1}/3" not in resumed.stdout
    for name in ("stage-02-8x8-stable.npz",):
        with np.load(out / "state" / name) as ours, \
                np.load(tmp_path / "straight" / "state" / name) as theirs:
            assert ours.files == theirs.files
            for key in ours.files:
                np.testing.assert_array_equal(ours[key], theirs[key])


def wait_for_mid_stage_checkpoint(state: Path, process, timeout: float = 200) -> None:
    """Until a checkpoint inside a stage after the first is committed. Each lives for about
    5 steps before the next replaces it, so the phases are long enough (16 mid-stage commits
    each) for the polling to see one even on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        commit = read_commit(state) if (state / "checkpoint.json").exists() else None
        if commit and commit["stage_index"] >= 1 and not commit["complete"]:
            return
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    raise TimeoutError("no mid-stage checkpoint")
