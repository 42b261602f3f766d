"""What the two phantom writers (``phantom``: dermoscopic images, ``photo_phantom``: clinical
photographs) share: their argument checks, their JPEG files and their worker processes."""

from __future__ import annotations

import ctypes
import os
import pathlib

import cv2
import numpy as np

JPEG_QUALITY = 90


def check_seed(seed) -> int:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_size(image_size, min_side: int) -> tuple[int, int]:
    height, width = (int(side) for side in image_size)
    if min(height, width) < min_side:
        raise ValueError(f"image_size is (height, width), each at least {min_side}; "
                         f"got {tuple(image_size)}")
    return height, width


def write_jpeg(path, pixels: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """RGB uint8 ``pixels`` as a JPEG file at ``path``."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    pathlib.Path(path).write_bytes(encoded.tobytes())


def set_up_worker() -> None:
    """One OpenCV thread per worker (there is one worker per core already), and, with glibc,
    keep freed memory for reuse: each image allocates and frees megabytes, which glibc
    otherwise hands back to the OS and faults in again, a third of the CPU time."""
    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: slower, same output
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD, its largest value


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
