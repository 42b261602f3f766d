"""Phantom clinical photos: a synthetic dataset in the manifest layout, for demos and tests.

This module owns what a phantom photo dataset contains: the plan (patients, their diagnosis,
1-4 photos each: `make_photo_plan`), ids and file names, the manifest and writing it all to
disk (`write_photo_phantom`), and each diagnosis's traits (`TRAITS`, `make_look`). How a
photo is drawn lives in `photo_phantom_draw.py`.

The folder holds ``manifest.csv`` (``image,patient_id,diagnosis`` as `clinical_photos` reads
it, plus ``skin_x0,skin_y0,skin_x1,skin_y1``: the true bounding box of the skin in each photo,
end-exclusive pixels, to measure crops against), the JPEGs under ``images/`` and a README.txt
saying the data are SYNTHETIC; patient ids start with ``phantom_``. OpenCV, numpy, pandas.
"""

from __future__ import annotations

import math
import multiprocessing
import pathlib
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pandas as pd

from dermnet.data import photo_phantom_draw
from dermnet.data.clinical_photos import MANIFEST_FILENAME, PHOTO_DIAGNOSES
from dermnet.data.phantom_draw import DARK_SKIN, LIGHT_SKIN, MEDIUM_SKIN
from dermnet.data.phantom_io import (
    available_cpus,
    check_seed,
    check_size,
    set_up_worker,
    write_jpeg,
)
from dermnet.data.photo_phantom_draw import Look
from dermnet.data.staging import check_new_folder, staged_folder

# Bump when the same seed and arguments would give different bytes.
PHOTO_PHANTOM_VERSION = "1.0"

BOX_COLUMNS = ("skin_x0", "skin_y0", "skin_x1", "skin_y1")
COLUMNS = ("image", "patient_id", "diagnosis", *BOX_COLUMNS)
# Patients per diagnosis in the study (Table 1 of the paper): the default class shares.
PATIENT_COUNTS = {"psoriasis": 790, "eczema": 870, "acne": 131, "rosacea": 394, "ctcl": 157}
MAX_PATIENTS = 100_000  # keeps ids at five digits
POOL_MIN_PHOTOS = 200  # below this, starting worker processes costs more than it saves
MIN_SIDE = 32  # smallest image height or width
# Independent random streams of one seed: the plan, each patient's look, each photo.
PLAN_STREAM, PATIENT_STREAM, PHOTO_STREAM = 0, 1, 2


# How each diagnosis tends to look, per patient. Hand-set from dermatology atlases; ranges
# overlap on purpose (see photo_phantom_draw). Sizes are fractions of the skin box's short
# side; counts are Poisson means per photo; chances are per patient or per patch.
# Erythema: the fraction of each RGB channel removed at full strength. Multiplying keeps it
# right on every skin tone: red on light skin, darker and violaceous on dark skin.
REDNESS = {
    "psoriasis": (0.08, 0.55, 0.5),  # salmon-red
    "eczema": (0.05, 0.42, 0.38),  # pink-red
    "acne": (0.06, 0.55, 0.5),
    "rosacea": (0.05, 0.5, 0.45),
    "ctcl": (0.18, 0.42, 0.38),  # pink-brown
}


def _psoriasis_traits(rng) -> dict:
    return {"plaques": rng.uniform(1, 5),  # plaques per photo
            "size": rng.uniform(0.07, 0.17),  # plaque radius
            "edge": rng.uniform(0.002, 0.008),  # border blur: sharp, well demarcated
            "scale": rng.uniform(0.35, 0.9)}  # silvery scale opacity


def _eczema_traits(rng) -> dict:
    return {"cells": rng.uniform(2.5, 5),  # patch blobs across the skin
            "extent": rng.uniform(0.3, 0.7),  # share of skin affected
            "papules": rng.uniform(40, 160),  # fine papules per photo
            "scratches": rng.uniform(2, 12),  # excoriations per photo
            "scale": rng.uniform(0.15, 0.4) if rng.random() < 0.3 else 0.0}  # like psoriasis


def _acne_traits(rng) -> dict:
    return {"papules": rng.uniform(12, 50),  # inflamed papules per photo
            "pustules": rng.uniform(0.2, 0.6),  # share of papules with a white-yellow head
            "comedones": rng.uniform(0, 40),  # none in some patients: then like rosacea
            "flush": rng.uniform(0.0, 0.25)}  # background erythema


def _rosacea_traits(rng) -> dict:
    papular = rng.random() < 0.45  # papulopustular rosacea looks like acne without comedones
    return {"flush": rng.uniform(0.45, 0.85),  # central erythema strength
            "spread": rng.uniform(0.25, 0.45),  # its width, fraction of the box
            "vessels": rng.uniform(4, 18),  # telangiectasia per photo
            "papules": rng.uniform(5, 25) if papular else 0.0,
            "pustules": rng.uniform(0.05, 0.3)}


def _ctcl_traits(rng) -> dict:
    return {"patches": rng.uniform(1, 3.5),  # patches per photo
            "size": rng.uniform(0.14, 0.3),  # patch radius: large
            "annular": rng.uniform(0.1, 0.7),  # chance a patch is a ring
            "edge": rng.uniform(0.01, 0.03),  # border blur: between psoriasis and eczema
            "scale": rng.uniform(0.1, 0.3) if rng.random() < 0.3 else 0.0}


TRAITS = {"psoriasis": _psoriasis_traits, "eczema": _eczema_traits, "acne": _acne_traits,
          "rosacea": _rosacea_traits, "ctcl": _ctcl_traits}


def make_look(rng, diagnosis: str) -> Look:
    """A new patient with ``diagnosis``: skin tone (mostly light, like the Danish study's
    Fitzpatrick II-III patients, sometimes darker), severity, erythema colour and traits."""
    if diagnosis not in TRAITS:
        raise ValueError(f"the phantom cannot draw {diagnosis!r}; it draws {', '.join(TRAITS)}")
    tone = rng.beta(1.5, 3.5) * 2  # 0 light .. 1 medium .. 2 dark
    lower, upper, share = (LIGHT_SKIN, MEDIUM_SKIN, tone) if tone < 1 else \
        (MEDIUM_SKIN, DARK_SKIN, tone - 1)
    skin = np.clip(lower + share * (upper - lower) + rng.normal(0, 0.02, 3), 0.05, 1)
    redness = np.clip(np.asarray(REDNESS[diagnosis]) + rng.normal(0, 0.05, 3), 0, 0.9)
    return Look(diagnosis, skin.astype(np.float32), float(rng.uniform(0.2, 1.0)),
                redness.astype(np.float32), TRAITS[diagnosis](rng))


def compute_patient_counts(num_patients: int, balanced: bool = False) -> dict[str, int]:
    """Patients per diagnosis: the study's shares (or equal), by largest remainder, after
    min(2, num_patients // 5) for every diagnosis, so small datasets hold each class."""
    if not 1 <= num_patients <= MAX_PATIENTS:
        raise ValueError(f"num_patients must be between 1 and {MAX_PATIENTS}, "
                         f"got {num_patients}")
    minimum = min(2, num_patients // len(PHOTO_DIAGNOSES))
    weights = np.array([1.0 if balanced else PATIENT_COUNTS[name] for name in PHOTO_DIAGNOSES])
    spare = num_patients - minimum * len(PHOTO_DIAGNOSES)
    shares = spare * weights / weights.sum()
    counts = np.floor(shares).astype(int)
    by_remainder = np.argsort(counts - shares, kind="stable")  # ties go to the earlier class
    counts[by_remainder[: spare - counts.sum()]] += 1
    return {name: int(minimum + count) for name, count in zip(PHOTO_DIAGNOSES, counts)}


def make_photo_plan(num_patients: int, photos_per_patient=(1, 4), seed: int = 0,
                    balanced: bool = False) -> pd.DataFrame:
    """One row per photo: ``image, patient_id, diagnosis, patient, photo`` (pure: no pixels).

    Patients are shuffled, so an id says nothing about the diagnosis; ``patient`` and
    ``photo`` are the indices that seed each patient's look and each photo.
    """
    low, high = (int(count) for count in photos_per_patient)
    if not 1 <= low <= high:
        raise ValueError(f"photos_per_patient is (fewest, most) with 1 <= fewest <= most, "
                         f"got {tuple(photos_per_patient)}")
    rng = np.random.default_rng([check_seed(seed), PLAN_STREAM])
    counts = compute_patient_counts(num_patients, balanced)
    diagnoses = np.repeat(list(counts), list(counts.values()))[rng.permutation(num_patients)]
    photos = rng.integers(low, high + 1, num_patients)
    patient = np.repeat(np.arange(num_patients), photos)
    within = np.concatenate([np.arange(count) for count in photos])
    ids = np.array([f"phantom_{index:05d}" for index in range(num_patients)])[patient]
    return pd.DataFrame({
        "image": [f"images/{name}_{number + 1}.jpg" for name, number in zip(ids, within)],
        "patient_id": ids, "diagnosis": diagnoses[patient],
        "patient": patient, "photo": np.arange(len(patient)),
    })


def render_patient_photos(seed: int, patient: int, diagnosis: str, photos,
                          image_size=(450, 600)) -> list[tuple[np.ndarray, tuple]]:
    """(pixels uint8 RGB, skin box) of each of a patient's photos. The look comes from
    (seed, patient), each photo from (seed, photo): any order or process, same pixels."""
    look = make_look(np.random.default_rng([seed, PATIENT_STREAM, int(patient)]), diagnosis)
    return [photo_phantom_draw.render_photo(np.random.default_rng([seed, PHOTO_STREAM, int(photo)]),
                                            look, image_size) for photo in photos]


def write_photo_phantom(out_dir, num_patients: int, photos_per_patient=(1, 4), seed: int = 0,
                        image_size=(450, 600), balanced: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> pathlib.Path:
    """Write a phantom photo dataset (manifest layout) to ``out_dir`` and return its path.

    ``image_size`` is (height, width). Diagnosis shares follow the study's patient counts
    (or are equal when ``balanced``). The folder is built beside ``out_dir`` and renamed into
    place, so ``out_dir`` is either absent or complete; an existing non-empty ``out_dir`` is
    refused. From POOL_MIN_PHOTOS photos on, worker processes share the work. Same
    arguments, same bytes (with the same numpy and OpenCV builds).
    """
    out_dir = pathlib.Path(out_dir)
    check_new_folder(out_dir, "a phantom dataset")
    image_size = check_size(image_size, MIN_SIDE)
    plan = make_photo_plan(num_patients, photos_per_patient, seed, balanced)
    with staged_folder(out_dir) as staging:
        (staging / "images").mkdir()
        boxes = _write_photos(_make_tasks(staging, plan, seed, image_size), progress)
        manifest = plan.assign(**dict(zip(BOX_COLUMNS, np.array(boxes).T)))
        manifest[list(COLUMNS)].to_csv(staging / MANIFEST_FILENAME, index=False,
                                       lineterminator="\n")
        readme = make_readme(plan, seed, image_size, photos_per_patient, balanced)
        (staging / "README.txt").write_text(readme, encoding="utf-8")
    return out_dir


def make_readme(plan: pd.DataFrame, seed: int, image_size, photos_per_patient,
                balanced: bool) -> str:
    height, width = image_size
    low, high = photos_per_patient
    counts = plan.groupby("diagnosis")["patient_id"].nunique().reindex(PHOTO_DIAGNOSES)
    shares = ", ".join(f"{name} {int(count)}" for name, count in counts.fillna(0).items())
    origin = "equal shares" if balanced else "shares of the study's patients"
    return (
        "SYNTHETIC PHANTOM DATA: procedurally drawn clinical photos of made-up patients.\n"
        "Not real images; not for clinical use or for medical conclusions.\n\n"
        f"Generator: dermnet.data.photo_phantom, version {PHOTO_PHANTOM_VERSION}\n"
        f"Seed: {seed}\n"
        f"Photos: {len(plan)} of {plan['patient_id'].nunique()} patients, {low}-{high} each, "
        f"{width}x{height} (width x height) JPEG\n"
        f"Patients: {shares} ({origin})\n"
        "manifest.csv: image,patient_id,diagnosis and skin_x0,skin_y0,skin_x1,skin_y1, the true\n"
        "bounding box of the skin region (pixels, end-exclusive) for measuring crops.\n\n"
        f"Regenerate: python -m dermnet.data photo-phantom OUT_DIR --num-patients "
        f"{plan['patient_id'].nunique()} --seed {seed} --size {width}x{height} "
        f"--photos-per-patient {low}-{high}{' --balanced' if balanced else ''}\n"
    )


def _make_tasks(staging: pathlib.Path, plan: pd.DataFrame, seed: int, image_size) -> list:
    """One picklable task per patient, so that each look is drawn once:
    (seed, patient, diagnosis, photo indices, paths, image size)."""
    return [(seed, int(patient), rows["diagnosis"].iloc[0], rows["photo"].tolist(),
             [str(staging / image) for image in rows["image"]], image_size)
            for patient, rows in plan.groupby("patient", sort=True)]


def _write_patient(task) -> list[tuple[int, tuple]]:
    """Render and write one patient's photos; return (photo index, skin box) pairs."""
    seed, patient, diagnosis, photos, paths, image_size = task
    boxes = []
    rendered = render_patient_photos(seed, patient, diagnosis, photos, image_size)
    for photo, path, (pixels, box) in zip(photos, paths, rendered):
        write_jpeg(path, pixels)
        boxes.append((photo, box))
    return boxes


def _write_batch(tasks) -> list[tuple[int, tuple]]:
    return [pair for task in tasks for pair in _write_patient(task)]


def _write_photos(tasks, progress) -> list[tuple]:
    """Write every task's photos, in worker processes when there are enough of them;
    return the skin boxes in photo order."""
    total = sum(len(task[3]) for task in tasks)
    batches = [tasks[start:start + 8] for start in range(0, len(tasks), 8)]  # fewer messages
    workers = min(available_cpus(), math.ceil(total / POOL_MIN_PHOTOS))
    boxes: dict[int, tuple] = {}
    if workers > 1:
        _write_in_workers(batches, workers, boxes, total, progress)
    for batch in batches:  # all of them without workers; those a broken pool left otherwise
        if any(photo not in boxes for task in batch for photo in task[3]):
            _collect(boxes, _write_batch(batch), total, progress)
    return [boxes[photo] for photo in range(total)]


def _write_in_workers(batches, workers: int, boxes: dict, total: int, progress) -> None:
    # spawn, not fork: a forked child inherits the parent's threads (OpenCV's pool, maybe
    # TensorFlow's) in a broken state. Output does not depend on which worker draws what.
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=set_up_worker) as pool:
            for pairs in pool.map(_write_batch, batches):
                _collect(boxes, pairs, total, progress)
    except BrokenProcessPool:
        # Spawned workers re-import the caller's main module; that fails for code read from
        # stdin, for instance. The caller writes what is left, with the same bytes.
        warnings.warn("photo phantom: worker processes failed; writing in this process",
                      RuntimeWarning, stacklevel=3)


def _collect(boxes: dict, pairs, total: int, progress) -> None:
    boxes.update(pairs)
    if progress:
        progress(len(boxes), total)



