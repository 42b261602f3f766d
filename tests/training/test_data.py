"""The data side of a run: balanced sampling repeats training rows, nothing else."""

import dataclasses

import pytest

from dermnet.config import make_config
from dermnet.data.phantom import write_phantom
from dermnet.runs.tasks import prepare_run_data


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("data") / "phantom", 90, seed=3,
                         image_size=(60, 80))


def prepared(phantom, tmp_path, sampling):
    config = make_config("smoke")
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, data_dir=str(phantom), sampling=sampling))
    tmp_path.mkdir()
    return prepare_run_data(config, tmp_path, log=lambda message: None)


def test_balanced_sampling_repeats_training_rows_up_to_the_largest_class(phantom, tmp_path):
    plain = prepared(phantom, tmp_path / "plain", "none")
    balanced = prepared(phantom, tmp_path / "balanced", "balanced")
    counts = balanced.training["dx"].value_counts()
    assert counts.nunique() == 1
    assert counts.iloc[0] == plain.training["dx"].value_counts().max()
    assert set(balanced.training["image_id"]) == set(plain.training["image_id"])
    assert balanced.validation.equals(plain.validation) and balanced.test.equals(plain.test)
    # The clinical encoding is fitted on the images, not on their repeats.
    assert balanced.encoder == plain.encoder
