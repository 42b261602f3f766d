"""Whole-or-nothing writes: a file is the old version or the new one, never half-written.

Every output of a run (configs, weights, histories, reports, generated images) goes through
``write_atomic``: the writer fills a temporary file beside the target, which is then renamed
onto it. A full disk is checked before large writes (``ensure_free_space``): HDF5, the format
of every Keras weights file, does not survive one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np


class DiskWriteError(OSError):
    """A file of the run could not be written (full disk, read-only folder); ``str`` is the
    plain sentence, without the ``[Errno N]`` prefix."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def write_atomic(path: str | Path, writer, needed_bytes: int = 0) -> None:
    """Call ``writer(temporary_path)``, then rename the result onto ``path``.

    ``needed_bytes`` > 0: first check that the disk has that much room (see
    ``ensure_free_space``). Writing failures are an ``OSError`` naming ``path``.
    """
    path = Path(path)
    if needed_bytes:
        ensure_free_space(path.parent, needed_bytes, path)
    partial = path.with_name(f".{path.stem}.partial{''.join(path.suffixes)}")
    try:
        writer(partial)
        os.replace(partial, path)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise DiskWriteError(error.errno, f"cannot write {path}: {reason}") from None
    finally:
        if partial.exists():
            partial.unlink()


def ensure_free_space(folder: Path, needed_bytes: int, path: Path) -> None:
    """Refuse to start writing ``path`` when ``folder``'s disk has less than ``needed_bytes``
    (plus 5% and 16 MiB) free. HDF5 (every Keras weights file) does not survive a full
    disk: h5py fails while flushing and the process dies with a segmentation fault before
    any error is shown. Checked before each write, a full disk is an error like any other."""
    free = shutil.disk_usage(folder).free
    wanted = int(needed_bytes * 1.05) + (16 << 20)
    if free < wanted:
        raise DiskWriteError(errno.ENOSPC, f"cannot write {path}: no space left on device "
                      f"({free / 2**20:.0f} MiB free, about {wanted / 2**20:.0f} MiB "
                      "needed); free some space and run the same command again to resume")


def weights_bytes(model) -> int:
    """Bytes of a weights file of ``model``: its variables and its optimizer's."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    return sum(int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
               for variable in variables)


def write_json_atomic(path: str | Path, payload) -> None:
    write_atomic(path, lambda target: Path(target).write_text(json.dumps(payload, indent=2)))


def write_csv_atomic(table, path: str | Path, **to_csv) -> None:
    """Write a pandas table as CSV whole or not at all (``to_csv`` options as pandas')."""
    write_atomic(path, lambda target: table.to_csv(target, index=False, **to_csv))
