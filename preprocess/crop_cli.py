"""`python -m preprocess crop SRC DST`: crop every photograph under a folder to its skin.

This module owns cropping a folder: finding the images, running `skin_crop.find_skin_box` on
each (in worker processes when asked), writing each crop atomically under the same relative
path in DST, the CSV manifest of boxes, progress and the summary (`crop_folder`), and the
command line (`main`). Results do not depend on the number of workers.
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from preprocess.skin_crop import CropConfig, crop_image, find_skin_box

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # read+written
MANIFEST_NAME = "crop_manifest.csv"
MANIFEST_COLUMNS = ("file", "status", "width", "height", "x0", "y0", "x1", "y1",
                    "skin_fraction", "threshold", "error")
JPEG_QUALITY = 95  # crops are re-encoded; 95 keeps JPEG losses well below the photo's own
EXISTS_NOTE = "output exists; --overwrite replaces it"


@dataclass(frozen=True)
class CropJob:
    name: str  # path relative to SRC, with forward slashes: the manifest's `file`
    source: Path
    target: Path
    config: CropConfig
    overwrite: bool


@dataclass(frozen=True)
class CropSummary:
    counts: dict  # status -> number of files: ok, no_skin, unreadable, exists
    unreadable: tuple  # (file, error) of each file OpenCV could not read
    manifest: Path
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def crop_folder(src, dst, *, workers: int = 1, config: CropConfig | None = None,
                overwrite: bool = False, manifest=None,
                progress: Callable[[int, int], None] | None = None) -> CropSummary:
    """Crop every image under `src` into `dst` and write the manifest (default
    DST/crop_manifest.csv). Unreadable files are listed, not fatal."""
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if dst.resolve() == src.resolve():
        raise ValueError("DST must differ from SRC: the crops would replace the originals")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"DST {dst} exists and is not a folder")
    config = config or CropConfig()
    jobs = [CropJob(name, src / name, dst / name, config, overwrite)
            for name in list_images(src, skip=dst)]
    manifest = Path(manifest) if manifest else dst / MANIFEST_NAME
    rows = []
    try:
        for row in run_jobs(jobs, workers):
            rows.append(row)
            if progress:
                progress(len(rows), len(jobs))
    except OSError as error:  # a full disk, a folder that turned read-only
        raise CropWriteError(error, len(rows), len(jobs), _save_partial_manifest(manifest, rows)
                             ) from None
    save_manifest(manifest, rows)
    unreadable = tuple((row["file"], row["error"]) for row in rows if row["status"] == "unreadable")
    counts = dict(Counter(row["status"] for row in rows))
    return CropSummary(counts, unreadable, manifest, time.perf_counter() - start)


class CropWriteError(OSError):
    """Writing a crop or the manifest failed (a full disk, say): the run stopped."""

    def __init__(self, error: OSError, done: int, total: int, manifest: Path | None):
        where = error.filename or "the output folder"
        reason = error.strerror or str(error)
        kept = (f"the manifest of those is in {manifest}" if manifest else
                "the manifest could not be written either")
        super().__init__(f"cannot write {where}: {reason}. Stopped after {done} of {total} "
                         f"images; every crop written is complete and a rerun keeps it; {kept}")


def _save_partial_manifest(path: Path, rows: list[dict]) -> Path | None:
    try:
        save_manifest(path, rows)
        return path
    except OSError:
        return None


def list_images(src: Path, skip: Path) -> list[str]:
    """Relative paths of the images under `src`, sorted; nothing under `skip` (DST may lie
    inside SRC) and no hidden files (our own temporary files start with a dot). A symbolic
    link whose target is missing is listed too: its manifest row says it is unreadable."""
    skip = skip.resolve()
    names = []
    for path in src.rglob("*"):
        wanted = path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        present = path.is_file() or (path.is_symlink() and not path.exists())
        if wanted and present and not path.resolve().is_relative_to(skip):
            names.append(path.relative_to(src).as_posix())
    return sorted(names)


def run_jobs(jobs: list[CropJob], workers: int):
    """Manifest rows of `jobs`, in order; in `workers` processes when more than one."""
    if workers <= 1 or len(jobs) < 2:
        yield from map(crop_file, jobs)
        return
    # spawn, not fork: a forked child inherits OpenCV's thread pool in a broken state.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(jobs) // (4 * workers)))  # fewer messages, still balanced
    with ProcessPoolExecutor(workers, mp_context=context, initializer=use_one_thread) as pool:
        yield from pool.map(crop_file, jobs, chunksize=chunk)


def use_one_thread() -> None:
    """Each worker process uses one core; the processes share the machine."""
    cv2.setNumThreads(1)


def crop_file(job: CropJob) -> dict:
    """Crop one file and return its manifest row. An existing output is kept unless
    `overwrite`; its row still records the box (the same for the same config)."""
    row = dict.fromkeys(MANIFEST_COLUMNS, "") | {"file": job.name}
    image, error = load_image(job.source)
    if image is None:
        return row | {"status": "unreadable", "error": error}
    result = find_skin_box(image, job.config)
    status = result.status
    if job.target.exists() and not job.overwrite:
        status, error = "exists", EXISTS_NOTE
    else:
        save_image(job.target, crop_image(image, result.box))
    height, width = image.shape[:2]
    x0, y0, x1, y1 = result.box
    return row | {"status": status, "width": width, "height": height,
                  "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                  "skin_fraction": f"{result.skin_fraction:.4f}",
                  "threshold": f"{result.threshold:.4f}", "error": error}


def load_image(path: Path):
    """(BGR image, "") or (None, why). Bytes first, so that any file name works."""
    if path.is_symlink() and not path.exists():
        return None, f"broken symbolic link (to {os.readlink(path)})"
    try:
        data = np.fromfile(path, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error) as error:
        return None, f"{type(error).__name__}: {error}".strip()
    if image is None:
        return None, "not a readable image (empty or corrupt file)"
    return image, ""


def save_image(path: Path, image: np.ndarray) -> None:
    """Encode by the file's suffix and replace `path` atomically: a reader never sees half a
    file, and an interrupted run leaves no truncated crop."""
    options = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    encoded, data = cv2.imencode(path.suffix.lower(), image, options)
    if not encoded:
        raise OSError(f"OpenCV cannot encode {path.suffix} for {path}")
    write_atomically(path, data.tobytes())


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_manifest(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue().encode("utf-8"))


# --- command line ----------------------------------------------------------------------------


def main(argv=None) -> int:
    """``python -m preprocess crop ARGS``: parse ``argv`` and run."""
    parser = argparse.ArgumentParser(prog="python -m preprocess crop", **PARSER_TEXT)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    progress = make_progress(sys.stdout, args.progress_every)
    try:
        summary = crop_folder(args.src, args.dst, workers=args.workers,
                              overwrite=args.overwrite, manifest=args.manifest,
                              progress=progress)
    except (OSError, ValueError) as error:  # FileNotFoundError, CropWriteError included
        print(f"crop: error: {error}", file=sys.stderr)
        return 1
    print_summary(summary, args.src, args.dst)
    return 0


PARSER_TEXT = dict(  # the crop command's description and epilog (python -m preprocess crop)
    description="Crop every photograph under SRC to its skin region (k-means, K=2, on hue) "
                "and write it under the same relative path in DST, with a CSV manifest of "
                f"the boxes (DST/{MANIFEST_NAME}).",
    epilog="Exit status: 0 when every readable image was cropped (or kept whole when no "
           "skin was found), even if some files were unreadable: they are listed in the "
           "manifest (status 'unreadable') and in the summary. 1 when SRC is missing or "
           "equals DST.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run)
    parser.add_argument("src", type=Path, help="folder of photographs (searched recursively)")
    parser.add_argument("dst", type=Path, help="folder for the crops (created)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="processes (default 1); the results do not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace crops already in DST (default: keep them; their manifest "
                             "rows get status 'exists')")
    parser.add_argument("--manifest", type=Path, help=f"CSV path (default DST/{MANIFEST_NAME})")
    parser.add_argument("--progress-every", type=positive_int, default=100, metavar="N",
                        help="print a progress line every N images when output is not a "
                             "terminal (a terminal gets a live counter)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def make_progress(stream, every: int) -> Callable[[int, int], None]:
    """A live `\\r` counter on a terminal, else a line every `every` images and at the end."""
    live = stream.isatty()

    def report(done: int, total: int) -> None:
        if live:
            stream.write(f"\rcropped {done}/{total}" + ("\n" if done == total else ""))
        elif done % every == 0 or done == total:
            stream.write(f"cropped {done}/{total}\n")
        stream.flush()

    return report


def print_summary(summary: CropSummary, src: Path, dst: Path) -> None:
    counts = ", ".join(f"{summary.counts.get(status, 0)} {status}"
                       for status in ("ok", "no_skin", "unreadable", "exists"))
    print(f"{summary.total} images from {src} -> {dst} in {summary.seconds:.1f} s: {counts}")
    if summary.counts.get("no_skin"):
        print("no_skin: no skin-coloured cluster; copied uncropped")
    if summary.counts.get("exists"):
        print(f"exists: {EXISTS_NOTE}")
    if summary.unreadable:
        print(f"{len(summary.unreadable)} unreadable (skipped):")
        for name, error in summary.unreadable:
            print(f"  {name}: {error}")
    print(f"manifest: {summary.manifest}")
