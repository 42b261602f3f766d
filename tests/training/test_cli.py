"""train.py's options map onto the config: the task picks its preset, shorthands override."""

from pathlib import Path

from dermnet.training.cli import build_config, default_out, make_parser


def config_for(*arguments):
    return build_config(make_parser().parse_args(list(arguments)))


def test_without_options_the_default_preset_trains_ham10000():
    config = config_for()
    assert config.preset == "default" and config.data.task == "ham10000"


def test_clinical_photo_task_starts_from_the_photos_preset():
    config = config_for("--task", "clinical-photos", "--variant", "ps", "--balanced",
                        "--crop-dir", "photos-cropped")
    assert config.preset == "photos" and config.data.task == "clinical-photos"
    assert config.model.variant == "ps" and config.data.sampling == "balanced"
    assert config.data.crop_dir == "photos-cropped" and config.data.image_size == (250, 250)
    assert default_out(config) == Path("runs/photos-vgg16ps-cropped-balanced")


def test_an_explicit_preset_wins_over_the_tasks_default():
    config = config_for("--task", "clinical-photos", "--preset", "photos-smoke")
    assert config.preset == "photos-smoke" and config.data.image_size == (64, 64)
