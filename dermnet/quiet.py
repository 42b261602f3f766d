"""A normal run prints dermnet's own lines only: TensorFlow's C++ start-up chatter hidden.

On a CPU machine every process used to begin with ``WARNING: All log messages before
absl::InitializeLog() ...``, ``Could not find cuda drivers`` (twice), CPU-feature notes and
``E0000 ... failed call to cuInit``, and training added ``E0000 ... oneDNN supports DT_BOOL
only on platforms with AVX-512``. Some are printed while ``import tensorflow`` runs, before
TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so no setting hides them. ``quiet_tensorflow()``,
called by every command line before anything imports TensorFlow:

- sets ``TF_CPP_MIN_LOG_LEVEL=3`` (TensorFlow's later C++ warnings and errors: what matters
  of them reaches Python as an exception, which dermnet reports);
- runs ``import tensorflow`` with the process's standard error (file descriptor 2) sent to a
  temporary file, which is shown if the import fails and dropped if it succeeds.

``--verbose`` on any command line (taken out of ``sys.argv`` here) or ``DERMNET_VERBOSE=1``
leaves TensorFlow's logging as TensorFlow sets it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

VERBOSE_ENV = "DERMNET_VERBOSE"
VERBOSE_FLAG = "--verbose"


def quiet_tensorflow(argv: list[str] | None = None) -> bool:
    """Hide TensorFlow's start-up lines unless verbose; returns whether they are hidden.
    ``argv`` (default ``sys.argv``) loses its ``--verbose``, which turns verbosity on."""
    argv = sys.argv if argv is None else argv
    if VERBOSE_FLAG in argv:
        while VERBOSE_FLAG in argv:
            argv.remove(VERBOSE_FLAG)
        os.environ[VERBOSE_ENV] = "1"
    if os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes"):
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
    return True


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders, then runs its import quietly (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with stderr_captured():
                execute(module)

        spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def stderr_captured():
    """Send file descriptor 2 to a temporary file for the block; replay it on an error."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                sink.seek(0)
                os.write(2, sink.read())
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
