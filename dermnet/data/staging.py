"""Writing a folder all or nothing: build it beside its destination, then rename it in.

    check_new_folder(out_dir, what)   refuse a destination that exists and is not empty
    staged_folder(out_dir)            a context manager yielding a fresh staging folder next
                                      to ``out_dir``; renamed to ``out_dir`` when the block
                                      succeeds, deleted when it raises (even on Ctrl-C)

A reader therefore finds ``out_dir`` absent or complete, whatever instant a writer stops at.
The phantom datasets and the GAN's synthetic datasets are written this way.

A writer killed outright (``kill -9``) cannot delete its staging folder. Each writer holds a
``RunLock`` inside its staging folder while it works, so the next writer of the same
destination recognises a sibling nobody holds as a leftover and removes it.
"""

from __future__ import annotations

import contextlib
import glob
import pathlib
import shutil
import time
import uuid

from dermnet.runs.lock import LOCK_NAME, RunLock, RunLockedError

STARTING_SECONDS = 60  # a staging folder younger than this may not have taken its lock yet


def check_new_folder(out_dir, what: str = "a dataset") -> None:
    """ValueError unless ``out_dir`` is absent or an empty folder."""
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise ValueError(f"refusing to write {what} into {out_dir}: it exists and is not an "
                         "empty folder; name a new folder or remove it first")


@contextlib.contextmanager
def staged_folder(out_dir):
    """Yield ``.<name>.<random>.partial`` beside ``out_dir``; see the module docstring.
    Check the destination with ``check_new_folder`` first: an existing empty ``out_dir`` is
    replaced, a non-empty one makes the final rename fail and the staging folder go."""
    out_dir = pathlib.Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    lock = RunLock(staging).acquire()
    try:
        yield staging
        # The lock file goes while still held (the folder, just modified, then counts as
        # starting up for a cleaner), and the lock itself only after the rename.
        (staging / LOCK_NAME).unlink()
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked before; rmdir refuses if that changed meanwhile
        staging.rename(out_dir)
        lock.release()
    except BaseException:
        lock.release()
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_leftovers(out_dir, log=print) -> list[pathlib.Path]:
    """Remove the staging folders of ``out_dir`` that no live writer holds (left by a killed
    one); returns them."""
    out_dir = pathlib.Path(out_dir)
    removed = []
    pattern = f".{glob.escape(out_dir.name)}.*.partial"
    for candidate in sorted(out_dir.parent.glob(pattern)):
        if candidate.is_dir() and not candidate.is_symlink() and _is_abandoned(candidate):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
            log(f"removed {candidate}: the partial output of a writer that was killed")
    return removed


def _is_abandoned(staging: pathlib.Path) -> bool:
    if not (staging / LOCK_NAME).exists():  # starting up, or from a killed writer long ago
        return time.time() - staging.stat().st_mtime > STARTING_SECONDS
    try:
        with RunLock(staging):
            return True
    except RunLockedError:
        return False
