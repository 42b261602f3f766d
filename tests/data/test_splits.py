"""Splits: lesion grouping, stratification, determinism, the leaky image-level option."""

import numpy as np
import pandas as pd
import pytest

from dermnet.data import splits as splitting
from dermnet.data.vocabulary import CLASSES


def make_frame(num_lesions=400, seed=0):
    """Lesions with 1-4 images each and skewed class priors."""
    rng = np.random.default_rng(seed)
    rows = []
    for lesion in range(num_lesions):
        dx = rng.choice(CLASSES, p=[0.15, 0.55, 0.08, 0.07, 0.1, 0.025, 0.025])
        for _ in range(rng.choice([1, 1, 1, 2, 3, 4])):
            rows.append({"lesion_id": f"L{lesion}", "image_id": f"I{len(rows)}", "dx": dx})
    return pd.DataFrame(rows)


def test_no_lesion_crosses_partitions_and_every_image_assigned():
    frame = make_frame()
    table = splitting.make_splits(frame, folds=5, test_fraction=0.17, seed=3)
    assert len(table) == len(frame)
    assert table["image_id"].tolist() == frame["image_id"].tolist()
    assert splitting.count_leaked_lesions(table) == 0
    assert set(table["fold"]) == {"test", "0", "1", "2", "3", "4"}


def test_test_fraction_and_determinism():
    frame = make_frame()
    first = splitting.make_splits(frame, seed=1)
    again = splitting.make_splits(frame, seed=1)
    other = splitting.make_splits(frame, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not first["fold"].equals(other["fold"])
    share = (first["fold"] == "test").mean()
    assert abs(share - 0.17) < 0.02


def test_select_fold_partitions_non_test_images():
    table = splitting.make_splits(make_frame(), folds=3, seed=0)
    training, validation = splitting.select_fold(table, 1)
    non_test = set(table.loc[table["fold"] != "test", "image_id"])
    assert set(training) | set(validation) == non_test
    assert not set(training) & set(validation)
    assert set(validation) == set(table.loc[table["fold"] == "1", "image_id"])
    with pytest.raises(ValueError, match="fold 3 not in the splits"):
        splitting.select_fold(table, 3)


def test_image_level_split_warns_about_leakage():
    frame = make_frame()
    with pytest.warns(UserWarning, match="lesions have images in more than one partition"):
        table = splitting.make_splits(frame, by="image", seed=0)
    assert splitting.count_leaked_lesions(table) > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"folds": 1}, "folds must be at least 2"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"by": "patient"}, "by must be"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        splitting.make_splits(make_frame(50), **kwargs)


def test_save_and_load_round_trip(tmp_path):
    table = splitting.make_splits(make_frame(), seed=0)
    path = tmp_path / "splits.csv"
    splitting.save_splits(table, path)
    assert path.read_text().splitlines()[0] == "image_id,lesion_id,dx,fold"
    pd.testing.assert_frame_equal(splitting.load_splits(path), table.astype(str))


def test_load_rejects_bad_fold(tmp_path):
    path = tmp_path / "splits.csv"
    path.write_text("image_id,lesion_id,dx,fold\nI1,L1,nv,0\nI2,L2,nv,val\n")
    with pytest.raises(ValueError, match="line 3: fold 'val'"):
        splitting.load_splits(path)


def test_real_metadata_is_grouped_and_stratified(real_metadata_path):
    """The issue's acceptance check on the real 10,015-row metadata, computed independently."""
    frame = pd.read_csv(real_metadata_path)
    table = splitting.make_splits(frame, folds=5, test_fraction=0.17, seed=0)
    # Independent leakage check: each lesion's set of partitions has one element.
    partitions = {}
    for lesion, fold in zip(table["lesion_id"], table["fold"]):
        partitions.setdefault(lesion, set()).add(fold)
    assert all(len(folds) == 1 for folds in partitions.values())
    assert len(partitions) == 7470
    overall = frame["dx"].value_counts(normalize=True)
    for fold, rows in table.groupby("fold"):
        shares = rows["dx"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (shares - overall).abs().max() < 0.02, fold
    assert abs((table["fold"] == "test").mean() - 0.17) < 0.005


def with_sources(frame: pd.DataFrame, seed=0) -> pd.DataFrame:
    """A `dataset` column drawn per lesion from three collections."""
    rng = np.random.default_rng(seed)
    lesions = frame["lesion_id"].unique()
    source = dict(zip(lesions, rng.choice(["north", "south", "east"], len(lesions))))
    return frame.assign(dataset=frame["lesion_id"].map(source))


def test_holdout_source_takes_every_image_of_the_source_and_nothing_else():
    frame = with_sources(make_frame())
    table = splitting.make_splits(frame, folds=5, seed=0, holdout_sources=("south",))
    assert table["image_id"].tolist() == frame["image_id"].tolist()
    held = table["fold"] == "holdout"
    assert held.tolist() == (frame["dataset"] == "south").tolist()
    # The other sources are split exactly as a split of them alone would be.
    rest = splitting.make_splits(frame[frame["dataset"] != "south"], folds=5, seed=0)
    assert table.loc[~held, "fold"].tolist() == rest["fold"].tolist()
    training, validation = splitting.select_fold(table, 0)
    assert not (set(training) | set(validation)) & set(table.loc[held, "image_id"])


@pytest.mark.parametrize("frame, sources, message", [
    (make_frame(50), ("south",), "needs the 'dataset' column"),
    (with_sources(make_frame(50)), ("west",), "no image comes from west; sources: east, "),
    (with_sources(make_frame(50)), ("north", "south", "east"), "leaves no image to train on"),
])
def test_holdout_source_errors(frame, sources, message):
    with pytest.raises(ValueError, match=message):
        splitting.make_splits(frame, holdout_sources=sources)


def test_holdout_round_trips_through_the_split_file(tmp_path):
    table = splitting.make_splits(with_sources(make_frame()), holdout_sources=("east",))
    splitting.save_splits(table, tmp_path / "splits.csv")
    loaded = splitting.load_splits(tmp_path / "splits.csv")
    assert (loaded["fold"] == "holdout").sum() == (table["fold"] == "holdout").sum() > 0
    assert "holdout" in splitting.format_split_summary(loaded)


def test_real_leave_rosendahl_out(real_metadata_path):
    """The issue's proxy on the real metadata: all 2,259 rosendahl images held out."""
    frame = pd.read_csv(real_metadata_path)
    table = splitting.make_splits(frame, holdout_sources=("rosendahl",))
    assert (table["fold"] == "holdout").sum() == 2259
    assert splitting.count_leaked_lesions(table) == 0
