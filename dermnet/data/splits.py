"""Train / validation / test splits: a held-out test set and K folds, grouped by lesion.

HAM10000 holds 10,015 images of 7,470 lesions; 1,956 lesions have 2-6 images. Splitting by
image puts photographs of one lesion on both sides and inflates test scores, so every split
here keeps a lesion's images together and stratifies by diagnosis: within each class,
lesions are dealt out so that each partition receives its share of that class's *images*.
The paper's image-level random split exists only behind ``by="image"``, with a warning.

Split table (``splits.csv``): ``image_id, lesion_id, dx, fold`` with ``fold`` either ``test``,
``holdout`` or ``0..K-1``. Fold k is the validation set of training run k; the other folds
train it.

Leave-one-source-out (``holdout_sources``): every image of the named source collections (the
``dataset`` column, e.g. HAM10000's ``rosendahl``) goes to ``holdout`` and is never trained or
validated on; the other collections are split as usual, so one run gives the in-distribution
``test`` figures and the cross-source ``holdout`` figures of the same model. A lesion seen in
two collections (HAM10000 has none) would be held out whole.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.vocabulary import SOURCE_COLUMN

TEST = "test"
HOLDOUT = "holdout"
SPLIT_COLUMNS = ("image_id", "lesion_id", "dx", "fold")


def make_splits(frame: pd.DataFrame, folds: int = 5, test_fraction: float = 0.17,
                seed: int = 0, by: str = "lesion",
                holdout_sources: tuple[str, ...] = ()) -> pd.DataFrame:
    """Assign every image to ``test``, ``holdout`` or a fold; deterministic for ``seed``.

    ``frame`` needs ``image_id, lesion_id, dx`` (one dx per lesion, as the reader ensures),
    and the ``dataset`` column when ``holdout_sources`` names collections to hold out.
    """
    _check_arguments(folds, test_fraction, by)
    held = _held_out_lesions(frame, holdout_sources)
    if held is not None:
        rest = make_splits(frame.loc[~held], folds, test_fraction, seed, by)
        holdout = frame.loc[held, ["image_id", "lesion_id", "dx"]].assign(fold=HOLDOUT)
        order = {image: index for index, image in enumerate(frame["image_id"])}
        splits = pd.concat([rest, holdout], ignore_index=True)
        return splits.iloc[np.argsort(splits["image_id"].map(order).to_numpy())].reset_index(
            drop=True)
    # by="image": each image becomes its own "lesion", the paper's split, leaky by construction.
    groups = frame["image_id"] if by == "image" else frame["lesion_id"]
    table = pd.DataFrame({"image_id": frame["image_id"].to_numpy(), "group": groups.to_numpy(),
                          "lesion_id": frame["lesion_id"].to_numpy(), "dx": frame["dx"].to_numpy()})
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for dx in sorted(table["dx"].unique()):
        sizes = table.loc[table["dx"] == dx, "group"].value_counts().sort_index()
        assignment.update(_deal_class(sizes, folds, test_fraction, rng))
    table["fold"] = table["group"].map(assignment)
    splits = table.loc[:, list(SPLIT_COLUMNS)]
    if by == "image":
        leaked = count_leaked_lesions(splits)
        warnings.warn(
            f"image-level split: {leaked} lesions have images in more than one partition "
            "(test and training folds); test scores will be optimistic. Use by='lesion'.",
            stacklevel=2,
        )
    return splits


def _held_out_lesions(frame: pd.DataFrame, sources: tuple[str, ...]) -> pd.Series | None:
    """Rows whose lesion has an image in one of ``sources``; None when none is named."""
    if not sources:
        return None
    if SOURCE_COLUMN not in frame:
        raise ValueError(f"holding out {', '.join(sources)} needs the {SOURCE_COLUMN!r} column "
                         "(source collection); this metadata has none (give the Dataverse "
                         "metadata with data.sources_csv)")
    known = sorted(frame[SOURCE_COLUMN].dropna().unique())
    unknown = [source for source in sources if source not in known]
    if unknown:
        raise ValueError(f"no image comes from {', '.join(unknown)}; sources: {', '.join(known)}")
    lesions = frame.loc[frame[SOURCE_COLUMN].isin(sources), "lesion_id"]
    held = frame["lesion_id"].isin(set(lesions))
    if held.all():
        raise ValueError(f"holding out {', '.join(sources)} leaves no image to train on")
    return held


def _check_arguments(folds: int, test_fraction: float, by: str) -> None:
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if by not in ("lesion", "image"):
        raise ValueError(f"by must be 'lesion' or 'image', got {by!r}")


def _deal_class(sizes: pd.Series, folds: int, test_fraction: float,
                rng: np.random.Generator) -> dict[str, str]:
    """Deal the groups of one class (``sizes``: images per group) to test and folds."""
    order = rng.permutation(len(sizes))
    groups = sizes.index.to_numpy()[order]
    counts = sizes.to_numpy()[order]
    assignment: dict[str, str] = {}
    # Test: take groups in random order while they bring the count closer to the target.
    target = test_fraction * counts.sum()
    taken = 0
    rest = []
    for group, count in zip(groups, counts):
        if abs(taken + count - target) < abs(taken - target):
            assignment[group] = TEST
            taken += count
        else:
            rest.append((group, count))
    # Folds: largest groups first, each to the fold holding fewest images of this class
    # (ties to the lowest fold index); the stable sort keeps the random order among equals.
    rest.sort(key=lambda item: -item[1])
    fold_counts = np.zeros(folds, dtype=np.int64)
    for group, count in rest:
        fold = int(np.argmin(fold_counts))
        assignment[group] = str(fold)
        fold_counts[fold] += count
    return assignment


def count_leaked_lesions(splits: pd.DataFrame) -> int:
    """Number of lesions whose images fall in more than one partition."""
    return int((splits.groupby("lesion_id")["fold"].nunique() > 1).sum())


def select_fold(splits: pd.DataFrame, fold: int) -> tuple[pd.Series, pd.Series]:
    """Image ids (training, validation) of training run ``fold``; test and held-out images
    in neither."""
    numbered = splits["fold"].str.fullmatch(r"\d+")
    available = sorted(int(value) for value in splits.loc[numbered, "fold"].unique())
    if fold not in available:
        raise ValueError(f"fold {fold} not in the splits (folds: {available})")
    validation = splits["fold"] == str(fold)
    training = numbered & ~validation
    return splits.loc[training, "image_id"], splits.loc[validation, "image_id"]


def compute_class_shares(splits: pd.DataFrame) -> pd.DataFrame:
    """Share (0-1) of each dx per partition, with an ``all`` column for the whole set."""
    shares = pd.crosstab(splits["dx"], splits["fold"], normalize="columns")
    shares["all"] = splits["dx"].value_counts(normalize=True)
    return shares


def save_splits(splits: pd.DataFrame, path: str | Path) -> None:
    """Write the split table atomically (a temporary file renamed into place)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    splits.loc[:, list(SPLIT_COLUMNS)].to_csv(partial, index=False)
    partial.replace(path)


def load_splits(path: str | Path) -> pd.DataFrame:
    """Read a split table, checking its columns and fold values."""
    path = Path(path)
    splits = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in SPLIT_COLUMNS if column not in splits.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    bad = ~splits["fold"].str.fullmatch(rf"{TEST}|{HOLDOUT}|\d+")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}, line {row + 2}: fold {splits['fold'].iloc[row]!r} "
                         f"is neither '{TEST}', '{HOLDOUT}' nor a fold number")
    return splits


def format_split_summary(splits: pd.DataFrame) -> str:
    """Images and lesions per partition, and the worst class-share deviation (in points)."""
    shares = compute_class_shares(splits)
    deviation = shares.drop(columns="all").sub(shares["all"], axis=0).abs() * 100
    lines = [f"{'partition':>9}  {'images':>6}  {'lesions':>7}  max class-share deviation"]
    def order(item):
        return (item[0] == HOLDOUT, item[0] == TEST, item[0])

    for fold, rows in sorted(splits.groupby("fold"), key=order):
        lines.append(f"{fold:>9}  {len(rows):>6}  {rows['lesion_id'].nunique():>7}  "
                     f"{deviation[fold].max():.2f} pp")
    lines.append(f"lesions in more than one partition: {count_leaked_lesions(splits)}")
    return "\n".join(lines)
