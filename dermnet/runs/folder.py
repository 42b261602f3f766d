"""The run directory: the folder every command of dermnet writes one run into.

A run directory is held by one process at a time (``RunLock`` on its ``.lock``), holds the
run's ``config.json`` from its start and ``finished.json`` once it is complete. A second
command on a finished run, or on an unfinished run of another config, stops with an error
(``RunExistsError``) unless told to ``--overwrite``; a run that fails before completing
anything leaves no folder behind. Training, the GAN and evaluation's outputs share this.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from dermnet.runs.atomic import write_atomic
from dermnet.runs.lock import LOCK_NAME, RunLock

FINISHED = "finished.json"  # written last by every run: the run is complete


class RunExistsError(RuntimeError):
    """The run directory holds a finished run, or a run of a different config."""


def prepare_run_dir(workdir: Path, config, overwrite: bool, load_config, save_config,
                    log=print) -> None:
    """Create ``workdir`` (and its ``state/``), refuse to clobber a finished run or an
    unfinished run of another config (``load_config(path)`` reads one back), then save
    ``config`` atomically with ``save_config(config, path)``. ``overwrite`` empties it first.

    An unfinished run that never completed an epoch (it failed validation, or was stopped
    while loading its data) holds nothing worth keeping: a different config replaces it.
    The caller holds the folder's ``RunLock``, whose lock file is kept.
    """
    config_path = workdir / "config.json"
    if overwrite and workdir.exists():
        empty_run_dir(workdir)
    if (workdir / FINISHED).exists():
        raise RunExistsError(f"{workdir} already holds a finished run; use --overwrite to "
                             "replace it or choose another --out")
    if config_path.exists() and _read_config_or_none(config_path, load_config) != config:
        if has_progress(workdir):
            raise RunExistsError(f"{workdir} holds an unfinished run of a different config; "
                                 "use --overwrite to discard it or choose another --out")
        log(f"{workdir}: replacing an unstarted run (no epoch completed) of another config")
        empty_run_dir(workdir)
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    write_atomic(config_path, lambda target: save_config(config, target))


def _read_config_or_none(path: Path, load_config):
    try:
        return load_config(path)
    except ValueError:  # unreadable: compared as different, kept only if the run has progress
        return None


def has_progress(workdir: Path) -> bool:
    """Whether the run completed anything worth resuming: an epoch's history row, or any
    file of its resume state (backups, best weights, a GAN's stage commit)."""
    state = workdir / "state"
    return (workdir / "history.csv").exists() or (
        state.is_dir() and any(path.is_file() for path in state.rglob("*")))


@contextlib.contextmanager
def hold_run_dir(workdir: Path):
    """Hold ``workdir`` with a ``RunLock`` for the body; a body that fails before completing
    anything removes the folder it created, so the corrected command starts cleanly."""
    created = not workdir.exists()
    with RunLock(workdir):
        try:
            yield workdir
        except BaseException:
            if created and not has_progress(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
            raise


def empty_run_dir(workdir: Path) -> None:
    """Remove everything in ``workdir`` but its lock file (held by the caller)."""
    for item in workdir.iterdir():
        if item.name == LOCK_NAME:
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
