"""Phantom HAM10000: a synthetic dataset in the HAM10000 layout, for demos and tests.

This module owns what a phantom dataset contains: the class-conditional tables (clinical
fields derived from the real HAM10000 metadata, visual signatures of each class), the plan of
a dataset (classes, lesions, images per lesion, clinical values: `make_metadata`) and writing
it to disk (`write_phantom`). How a lesion is drawn lives in `phantom_draw.py`.

Phantom data is marked synthetic three ways: `dataset` is "phantom" on every row, the ids
start at ISIC_9000000 / HAM_9000000 (a range the real release does not use), and the folder
holds a README.txt saying so. OpenCV, numpy and pandas only; no TensorFlow.
"""

from __future__ import annotations

import math
import multiprocessing
import pathlib
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pandas as pd

from dermnet.data import phantom_draw
from dermnet.data.phantom_draw import Signature
from dermnet.data.phantom_io import (
    available_cpus,
    check_seed,
    check_size,
    set_up_worker,
    write_jpeg,
)
from dermnet.data.staging import check_new_folder, staged_folder
from dermnet.data.vocabulary import (
    CLASSES,
    DX_TYPES,
    IMAGE_FOLDERS,
    LOCALIZATIONS,
    METADATA_FILENAME,
    REQUIRED_COLUMNS,
    SEXES,
)

# Bump when the same seed and arguments would give different bytes.
PHANTOM_VERSION = "1.0"

IMAGE_ID_START = 9_000_000   # the release uses ISIC_0024306 .. ISIC_0034320
LESION_ID_START = 9_000_000  # the release uses HAM_0000000 .. HAM_0007687
MAX_IMAGES = 1_000_000       # keeps every id at seven digits
COLUMNS = REQUIRED_COLUMNS + ("dataset",)
POOL_MIN_IMAGES = 200  # below this, starting worker processes costs more than it saves
MIN_SIDE = 16          # smallest image height or width
# Independent random streams of one seed: the plan, each lesion, each view (image).
PLAN_STREAM, LESION_STREAM, VIEW_STREAM = 0, 1, 2

# Images per class in the real release (10,015 images): the default class priors.
IMAGE_COUNTS = {
    "mel": 1113, "nv": 6705, "bcc": 514, "akiec": 327, "bkl": 1099, "df": 115, "vasc": 142,
}

# The tables below count LESIONS (7,470) of the real HAM10000_metadata.csv (10,015 rows),
# taking the first row of each lesion_id, because clinical values belong to the lesion (two
# lesions list two sites). They were computed once, offline, with pandas:
#   lesions = metadata.groupby("lesion_id", sort=False).first()
#   pd.crosstab(lesions.dx, lesions.sex)        # and so on for each table
# and are normalised to probabilities at use. The real file is not shipped; the test
# `test_tables_match_real_metadata` rechecks them when DERMNET_HAM10000_METADATA names it.
# Within a class the fields are drawn independently of each other.

# Aligned with vocabulary.SEXES: male, female, unknown.
SEX_COUNTS = {
    "mel": (371, 243, 0),
    "nv": (2778, 2584, 41),
    "bcc": (205, 122, 0),
    "akiec": (148, 80, 0),
    "bkl": (414, 304, 9),
    "df": (35, 38, 0),
    "vasc": (50, 48, 0),
}
# Aligned with vocabulary.LOCALIZATIONS: back, lower extremity, trunk, upper extremity,
# abdomen, face, chest, foot, unknown, neck, scalp, hand, ear, genital, acral.
LOCALIZATION_COUNTS = {
    "mel": (185, 104, 25, 111, 31, 65, 34, 15, 6, 18, 9, 1, 10, 0, 0),
    "nv": (1058, 1224, 1153, 504, 719, 61, 112, 209, 175, 60, 24, 39, 19, 43, 3),
    "bcc": (123, 36, 6, 32, 9, 61, 32, 2, 3, 11, 11, 1, 0, 0, 0),
    "akiec": (22, 41, 1, 42, 3, 84, 9, 0, 0, 8, 8, 8, 2, 0, 0),
    "bkl": (133, 109, 57, 67, 36, 194, 50, 1, 19, 20, 24, 12, 4, 1, 0),
    "df": (1, 54, 0, 14, 2, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0),
    "vasc": (12, 16, 27, 6, 22, 5, 3, 0, 0, 2, 2, 3, 0, 0, 0),
}
# Ages 0, 5, ..., 85 (the release rounds to 5 years), then the count of missing ages.
AGES = tuple(float(age) for age in range(0, 90, 5))
AGE_COUNTS = {
    "mel": (0, 1, 0, 0, 4, 7, 16, 19, 27, 39, 49, 72, 65, 75, 89, 59, 48, 43, 1),
    "nv": (16, 43, 21, 43, 94, 150, 283, 517, 705, 959, 823, 591, 371, 281, 183, 178, 77, 26, 42),
    "bcc": (0, 0, 0, 0, 1, 1, 2, 2, 15, 17, 18, 18, 25, 47, 52, 47, 49, 33, 0),
    "akiec": (0, 0, 0, 0, 0, 0, 1, 0, 6, 7, 13, 18, 42, 27, 39, 30, 26, 19, 0),
    "bkl": (3, 1, 0, 0, 0, 0, 3, 18, 25, 39, 63, 58, 82, 71, 128, 103, 69, 55, 9),
    "df": (0, 0, 0, 0, 0, 1, 3, 8, 6, 8, 10, 9, 8, 11, 3, 5, 1, 0, 0),
    "vasc": (2, 2, 1, 2, 2, 2, 4, 6, 3, 11, 11, 14, 7, 3, 9, 8, 8, 3, 0),
}
# Aligned with vocabulary.DX_TYPES: histo, follow_up, consensus, confocal.
DX_TYPE_COUNTS = {
    "mel": (614, 0, 0, 0),
    "nv": (1367, 3704, 332, 0),
    "bcc": (327, 0, 0, 0),
    "akiec": (228, 0, 0, 0),
    "bkl": (487, 0, 206, 34),
    "df": (29, 0, 44, 0),
    "vasc": (33, 0, 65, 0),
}
# Lesions with 1, 2, ..., 6 images (1,956 of 7,470 lesions have several; melanomas most often).
IMAGES_PER_LESION_COUNTS = {
    "mel": (230, 278, 100, 4, 1, 1),
    "nv": (4415, 699, 268, 18, 2, 1),
    "bcc": (175, 118, 33, 1, 0, 0),
    "akiec": (151, 57, 18, 2, 0, 0),
    "bkl": (440, 220, 55, 8, 2, 2),
    "df": (39, 26, 8, 0, 0, 0),
    "vasc": (64, 25, 8, 1, 0, 0),
}

# What each class tends to look like (fields: see phantom_draw.Signature). Hand-set from
# dermoscopy teaching material; ranges overlap on purpose (mel, nv and bkl most), so that
# images alone cannot separate the classes and the clinical fields add information.
SIGNATURES = {
    "nv": Signature(
        radius=(0.33, 0.07), irregularity=(0.05, 0.03), asymmetry=(0.2, 0.15),
        edge=(0.12, 0.05), opacity=(0.8, 0.12), atypia=(0.25, 0.15),
        colour_counts=(0.45, 0.4, 0.12, 0.03),
        palette={"light_brown": 0.33, "brown": 0.35, "dark_brown": 0.2, "tan": 0.08, "pink": 0.02,
                 "blue_grey": 0.02},
        structures={"network": 0.7, "globules": 0.35, "dots": 0.25, "streaks": 0.06,
                    "milia": 0.12, "comedos": 0.05, "regression": 0.06, "vessels": 0.02,
                    "dotted_vessels": 0.03, "nests": 0.03, "scale": 0.02, "central_patch": 0.04,
                    "shiny_lines": 0.02}),
    "mel": Signature(
        radius=(0.39, 0.08), irregularity=(0.12, 0.05), asymmetry=(0.55, 0.2),
        edge=(0.12, 0.07), opacity=(0.85, 0.1), atypia=(0.65, 0.2),
        colour_counts=(0.05, 0.25, 0.35, 0.25, 0.1),
        palette={"brown": 0.2, "dark_brown": 0.25, "black": 0.18, "blue_grey": 0.15,
                 "light_brown": 0.12, "red": 0.07, "pink": 0.03},
        structures={"network": 0.6, "globules": 0.3, "dots": 0.6, "streaks": 0.3,
                    "regression": 0.45, "shiny_lines": 0.2, "nests": 0.15, "vessels": 0.1,
                    "dotted_vessels": 0.1, "milia": 0.05, "comedos": 0.03, "scale": 0.05,
                    "central_patch": 0.04, "lagoons": 0.02}),
    "bkl": Signature(
        radius=(0.36, 0.08), irregularity=(0.08, 0.04), asymmetry=(0.35, 0.2),
        edge=(0.06, 0.03), opacity=(0.75, 0.15), atypia=(0.4, 0.2),
        colour_counts=(0.3, 0.45, 0.2, 0.05),
        palette={"light_brown": 0.3, "brown": 0.3, "dark_brown": 0.15, "tan": 0.15, "grey": 0.05,
                 "pink": 0.05},
        structures={"network": 0.3, "milia": 0.55, "comedos": 0.5, "scale": 0.3, "dots": 0.25,
                    "regression": 0.2, "globules": 0.05, "streaks": 0.03, "vessels": 0.05,
                    "dotted_vessels": 0.08, "nests": 0.05, "central_patch": 0.05,
                    "shiny_lines": 0.05}),
    "bcc": Signature(
        radius=(0.32, 0.08), irregularity=(0.09, 0.04), asymmetry=(0.4, 0.2),
        edge=(0.2, 0.07), opacity=(0.55, 0.15), atypia=(0.45, 0.2),
        colour_counts=(0.2, 0.45, 0.3, 0.05),
        palette={"pink": 0.4, "red": 0.12, "blue_grey": 0.18, "light_brown": 0.15, "brown": 0.1,
                 "grey": 0.05},
        structures={"vessels": 0.75, "nests": 0.6, "shiny_lines": 0.45, "scale": 0.15,
                    "dots": 0.15, "dotted_vessels": 0.1, "regression": 0.1, "network": 0.05,
                    "globules": 0.05, "streaks": 0.05, "milia": 0.05, "comedos": 0.03,
                    "central_patch": 0.05, "lagoons": 0.02}),
    "akiec": Signature(
        radius=(0.34, 0.08), irregularity=(0.1, 0.04), asymmetry=(0.4, 0.2),
        edge=(0.25, 0.08), opacity=(0.5, 0.15), atypia=(0.45, 0.2),
        colour_counts=(0.3, 0.5, 0.2),
        palette={"pink": 0.35, "red": 0.3, "light_brown": 0.2, "tan": 0.1, "brown": 0.05},
        structures={"scale": 0.75, "dotted_vessels": 0.5, "vessels": 0.15, "shiny_lines": 0.2,
                    "dots": 0.15, "comedos": 0.1, "regression": 0.1, "network": 0.05,
                    "nests": 0.05, "milia": 0.05, "central_patch": 0.05, "globules": 0.03,
                    "streaks": 0.02}),
    "df": Signature(
        radius=(0.22, 0.05), irregularity=(0.05, 0.03), asymmetry=(0.2, 0.15),
        edge=(0.25, 0.08), opacity=(0.6, 0.15), atypia=(0.3, 0.15),
        colour_counts=(0.2, 0.6, 0.2),
        palette={"light_brown": 0.4, "brown": 0.25, "pink": 0.25, "tan": 0.1},
        structures={"central_patch": 0.85, "network": 0.65, "shiny_lines": 0.3,
                    "dotted_vessels": 0.2, "dots": 0.1, "vessels": 0.05, "globules": 0.05,
                    "scale": 0.05, "regression": 0.05, "streaks": 0.02, "nests": 0.02,
                    "milia": 0.02}),
    "vasc": Signature(
        radius=(0.25, 0.06), irregularity=(0.06, 0.03), asymmetry=(0.25, 0.15),
        edge=(0.08, 0.04), opacity=(0.85, 0.1), atypia=(0.35, 0.2),
        colour_counts=(0.1, 0.4, 0.4, 0.1),
        palette={"red": 0.35, "purple": 0.3, "dark_blue": 0.12, "pink": 0.15, "dark_red": 0.08},
        structures={"lagoons": 0.9, "dotted_vessels": 0.1, "vessels": 0.05, "dots": 0.05,
                    "nests": 0.05, "central_patch": 0.05, "shiny_lines": 0.05, "scale": 0.03,
                    "regression": 0.03, "network": 0.02, "globules": 0.02}),
}


def compute_class_counts(num_images: int, balanced: bool = False) -> dict[str, int]:
    """Images per class: HAM10000's image shares (or equal shares), by largest remainder.

    Small datasets: every class first gets min(2, num_images // 7) images, and
    `make_metadata` gives it as many distinct lesions. So with 7 images every class
    appears, and with 14 or more every class has at least 2 lesions, enough for a
    lesion-grouped split to put one on each side.
    """
    _check_count(num_images)
    minimum = min(2, num_images // len(CLASSES))
    weights = np.array([1.0 if balanced else IMAGE_COUNTS[dx] for dx in CLASSES])
    spare = num_images - minimum * len(CLASSES)
    shares = spare * weights / weights.sum()
    counts = np.floor(shares).astype(int)
    by_remainder = np.argsort(counts - shares, kind="stable")  # ties go to the earlier class
    counts[by_remainder[: spare - counts.sum()]] += 1
    return {dx: int(minimum + count) for dx, count in zip(CLASSES, counts)}


def make_lesion_sizes(rng, num_images: int, size_counts, min_lesions: int) -> list[int]:
    """Images per lesion for one class, summing to `num_images` over >= `min_lesions` lesions."""
    draws = _sample(rng, range(1, len(size_counts) + 1), size_counts, num_images)
    sizes, remaining = [], num_images
    for draw in draws:
        if remaining == 0:
            break
        reserve = max(min_lesions - len(sizes) - 1, 0)  # leave one image per lesion still owed
        sizes.append(int(min(draw, remaining - reserve)))
        remaining -= sizes[-1]
    return sizes


def make_class_lesions(rng, dx: str, num_images: int, min_lesions: int) -> pd.DataFrame:
    """The lesions of one class: images per lesion and clinical values, one row per lesion."""
    sizes = make_lesion_sizes(rng, num_images, IMAGES_PER_LESION_COUNTS[dx], min_lesions)
    count = len(sizes)
    return pd.DataFrame({
        "images": sizes,
        "dx": dx,
        "dx_type": _sample(rng, DX_TYPES, DX_TYPE_COUNTS[dx], count),
        "age": _sample(rng, AGES + (math.nan,), AGE_COUNTS[dx], count),
        "sex": _sample(rng, SEXES, SEX_COUNTS[dx], count),
        "localization": _sample(rng, LOCALIZATIONS, LOCALIZATION_COUNTS[dx], count),
    })


def make_metadata(num_images: int, seed: int = 0, balanced: bool = False) -> pd.DataFrame:
    """The rows of a phantom HAM10000_metadata.csv (pure: no images), grouped by lesion."""
    rng = np.random.default_rng([check_seed(seed), PLAN_STREAM])
    counts = compute_class_counts(num_images, balanced)
    min_lesions = min(2, num_images // len(CLASSES))
    lesions = pd.concat([make_class_lesions(rng, dx, count, min_lesions)
                         for dx, count in counts.items() if count], ignore_index=True)
    lesions = lesions.iloc[rng.permutation(len(lesions))].reset_index(drop=True)
    lesions["lesion_id"] = [f"HAM_{LESION_ID_START + index:07d}" for index in lesions.index]
    rows = lesions.loc[lesions.index.repeat(lesions["images"])].reset_index(drop=True)
    # Ids in random order, so that neither an id nor its folder gives away class or lesion.
    offsets = rng.permutation(len(rows))
    rows["image_id"] = [f"ISIC_{IMAGE_ID_START + offset:07d}" for offset in offsets]
    rows["dataset"] = "phantom"
    return rows[list(COLUMNS)]


def render_lesion(rng, dx: str, image_size: tuple[int, int] = (450, 600)) -> np.ndarray:
    """One image (uint8 RGB, `image_size` = (height, width)) of a new lesion of class `dx`."""
    if dx not in SIGNATURES:
        raise ValueError(f"unknown class {dx!r}; expected one of {CLASSES}")
    side = phantom_draw.compute_canvas_side(check_size(image_size, MIN_SIDE))
    lesion = phantom_draw.make_lesion(rng, SIGNATURES[dx], side)
    return phantom_draw.render_view(rng, lesion, image_size)


def render_images(seed: int, dx: str, lesion_offset: int, image_offsets,
                  image_size: tuple[int, int]) -> list[np.ndarray]:
    """The pixels of a phantom dataset's images of one lesion. The lesion comes from
    (seed, lesion), each view from (seed, image): images render alike in any order or process."""
    lesion_rng = np.random.default_rng([seed, LESION_STREAM, lesion_offset])
    side = phantom_draw.compute_canvas_side(image_size)
    lesion = phantom_draw.make_lesion(lesion_rng, SIGNATURES[dx], side)
    return [phantom_draw.render_view(np.random.default_rng([seed, VIEW_STREAM, offset]),
                                     lesion, image_size) for offset in image_offsets]


def write_phantom(out_dir, num_images: int, seed: int = 0,
                  image_size: tuple[int, int] = (450, 600), balanced: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> pathlib.Path:
    """Write a phantom dataset in the HAM10000 layout to `out_dir` and return its path.

    `image_size` is (height, width). Class shares follow HAM10000 (or are equal when
    `balanced`); small datasets still hold every class (see `compute_class_counts`).
    The folder is built beside `out_dir` and renamed into place, so `out_dir` is either
    absent or complete; an existing non-empty `out_dir` is refused with a ValueError.
    From POOL_MIN_IMAGES images on, worker processes (one per core) share the work.
    `progress(done, total)` is called as images are written. Same arguments, same bytes
    (with the same numpy and OpenCV builds on the same kind of CPU).
    """
    out_dir = pathlib.Path(out_dir)
    _check_target(out_dir)
    image_size = check_size(image_size, MIN_SIDE)
    metadata = make_metadata(num_images, seed, balanced)
    with staged_folder(out_dir) as staging:
        for folder in IMAGE_FOLDERS[:2]:
            (staging / folder).mkdir()
        _write_images(_make_tasks(staging, metadata, seed, image_size), progress)
        metadata.to_csv(staging / METADATA_FILENAME, index=False, lineterminator="\n")
        readme = make_readme(metadata, seed, image_size, balanced)
        (staging / "README.txt").write_text(readme, encoding="utf-8")
    return out_dir


def make_readme(metadata: pd.DataFrame, seed: int, image_size, balanced: bool) -> str:
    height, width = image_size
    shares = "equal (balanced)" if balanced else "HAM10000's"
    return (
        "SYNTHETIC PHANTOM DATA: procedurally drawn lesions and made-up patients.\n"
        "Not real images; not for clinical use or for medical conclusions.\n\n"
        f"Generator: dermnet.data.phantom, version {PHANTOM_VERSION}\n"
        f"Seed: {seed}\n"
        f"Images: {len(metadata)} of {metadata['lesion_id'].nunique()} lesions, "
        f"{width}x{height} (width x height) JPEG, class shares {shares}\n"
        "Layout: HAM10000 (Kaggle spelling); every metadata row has dataset=phantom and ids\n"
        "start at ISIC_9000000 / HAM_9000000, a range the real release does not use.\n"
        "Age, sex, localization and dx_type are drawn per lesion from class-conditional tables\n"
        "derived from the real HAM10000 metadata.\n\n"
        f"Regenerate: python -m dermnet.data phantom OUT_DIR --num-images {len(metadata)} "
        f"--seed {seed} --size {width}x{height}{' --balanced' if balanced else ''}\n"
    )


def _make_tasks(staging, metadata, seed, image_size):
    """One picklable task per lesion, so that each lesion is drawn once:
    (seed, dx, lesion offset, image offsets, image paths, image size)."""
    total = len(metadata)
    tasks = []
    for lesion_id, rows in metadata.groupby("lesion_id", sort=True):
        offsets = [int(image_id[len("ISIC_"):]) - IMAGE_ID_START for image_id in rows.image_id]
        paths = [str(staging / IMAGE_FOLDERS[0 if offset < (total + 1) // 2 else 1]
                     / f"{image_id}.jpg") for offset, image_id in zip(offsets, rows.image_id)]
        tasks.append((seed, rows.dx.iloc[0], int(lesion_id[len("HAM_"):]) - LESION_ID_START,
                      offsets, paths, image_size))
    return tasks


def _write_lesion(task) -> int:
    seed, dx, lesion_offset, image_offsets, paths, image_size = task
    for pixels, path in zip(render_images(seed, dx, lesion_offset, image_offsets, image_size),
                            paths):
        write_jpeg(path, pixels)
    return len(paths)


def _write_images(tasks, progress) -> None:
    """Write every task's images, in worker processes when there are enough of them."""
    total, done = sum(len(task[3]) for task in tasks), 0

    def report(count):
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    workers = min(available_cpus(), math.ceil(total / POOL_MIN_IMAGES))
    remaining = _write_in_workers(tasks, workers, report) if workers > 1 else tasks
    for task in remaining:
        report(_write_lesion(task))


def _write_in_workers(tasks, workers, report) -> list:
    """Write `tasks` in `workers` processes; return the tasks left if the workers broke."""
    batches = [tasks[start:start + 8] for start in range(0, len(tasks), 8)]  # fewer messages
    # spawn, not fork: a forked child inherits the parent's threads (OpenCV's pool, maybe
    # TensorFlow's) in a broken state. Output does not depend on which worker draws what.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=set_up_worker)
    pending = {}
    try:
        pending = {pool.submit(_write_batch, batch): batch for batch in batches}
        for future in as_completed(pending):
            report(future.result())
            del pending[future]
    except BrokenProcessPool:
        # Spawned workers re-import the caller's main module; that fails for code read from
        # stdin, for instance. The output is the same when written here instead.
        warnings.warn("phantom: worker processes failed to start; writing in this process",
                      RuntimeWarning, stacklevel=3)
        return [task for batch in pending.values() for task in batch]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return []


def _write_batch(tasks) -> int:
    return sum(_write_lesion(task) for task in tasks)






def _sample(rng, values, counts, size):
    """`size` draws from `values` with probabilities proportional to `counts`."""
    probabilities = np.asarray(counts, float) / np.sum(counts)
    return np.asarray(values)[rng.choice(len(probabilities), size=size, p=probabilities)]


def _check_target(out_dir: pathlib.Path) -> None:
    check_new_folder(out_dir, "a phantom dataset")


def _check_count(num_images) -> None:
    if not 1 <= num_images <= MAX_IMAGES:
        raise ValueError(f"num_images must be between 1 and {MAX_IMAGES}, got {num_images}")



