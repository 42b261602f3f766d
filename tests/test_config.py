"""Config: presets, --set overrides (unknown keys, wrong types), JSON round trip."""

import json

import pytest

from dermnet.config import (
    PRESETS,
    apply_overrides,
    config_to_dict,
    load_config,
    make_config,
    save_config,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name, tmp_path):
    config = make_config(name)
    save_config(config, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == config


def test_paper_preset_has_the_studys_settings():
    config = make_config("paper")
    assert config.training.epochs == 90
    assert config.model.dropout == 0.5
    assert config.data.folds == 5
    augment = config.data.augment
    assert augment.rotation and augment.shear and augment.zoom != (1.0, 1.0)
    assert augment.horizontal_flip and augment.vertical_flip
    assert augment.brightness and augment.blur_probability  # camera-like distortions


def test_overrides_parse_by_field_type():
    config = apply_overrides(make_config("smoke"), [
        "training.epochs=5", "data.image_size=96x128", "model.weights=none",
        "data.augment.zoom=0.9,1.1", "data.clinical=true", "training.learning_rate=3e-4",
        "model.clinical_units=32,16",
    ])
    assert config.training.epochs == 5
    assert config.data.image_size == (96, 128)
    assert config.model.weights is None
    assert config.data.augment.zoom == (0.9, 1.1)
    assert config.data.clinical is True
    assert config.training.learning_rate == 3e-4
    assert config.model.clinical_units == (32, 16)


def test_word_tuples_are_not_split_at_the_letter_x():
    """A size reads 96x128, but a source collection named vidir_molemax is one word."""
    config = apply_overrides(make_config("smoke"), [
        "data.holdout_sources=rosendahl,vidir_molemax", "data.resize=crop",
        "model.colour_constancy=shades_of_gray"])
    assert config.data.holdout_sources == ("rosendahl", "vidir_molemax")
    assert (config.data.resize, config.model.colour_constancy) == ("crop", "shades_of_gray")


@pytest.mark.parametrize("override, message", [
    ("training.epoch=5", "unknown config key 'training.epoch'"),
    ("trainer.epochs=5", "Config has no field 'trainer'"),
    ("training.epochs=five", "cannot read 'five' as int"),
    ("training.epochs=2.5", "cannot read '2.5' as int"),
    ("data.clinical=maybe", "expected true or false"),
    ("data.image_size=1x2x3", "expected 2 values"),
    ("data=3", "is a section"),
    ("training.optimizer=rmsprop", "optimizer must be one of adam, adamw, sgd"),
    ("data.fold=5", "fold must be in 0..4"),
    ("no-equals-sign", "expected section.field=value"),
    ("data.resize=pad", "resize must be one of stretch, crop"),
    ("model.colour_constancy=grey", "colour_constancy must be one of none, shades_of_gray"),
])
def test_bad_overrides_are_rejected_with_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(make_config("default"), [override])


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'fast'; valid: default, paper"):
        make_config("fast")


def test_load_rejects_unknown_keys_and_wrong_types(tmp_path):
    payload = config_to_dict(make_config("smoke"))
    payload["training"]["epochs"] = "two"
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"training.epochs: expected int"):
        load_config(tmp_path / "config.json")
    payload["training"]["epochs"] = 2
    payload["model"]["colour"] = "blue"
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="unknown key"):
        load_config(tmp_path / "config.json")
