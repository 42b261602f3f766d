"""Writing a folder all or nothing: build it beside its destination, then rename it in.

    check_new_folder(out_dir, what)   refuse a destination that exists and is not empty
    staged_folder(out_dir)            a context manager yielding a fresh staging folder next
                                      to ``out_dir``; renamed to ``out_dir`` when the block
                                      succeeds, deleted when it raises (even on Ctrl-C)

A reader therefore finds ``out_dir`` absent or complete, whatever instant a writer stops at.
The phantom datasets and the GAN's synthetic datasets are written this way.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import uuid


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
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    try:
        yield staging
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked before; rmdir refuses if that changed meanwhile
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
