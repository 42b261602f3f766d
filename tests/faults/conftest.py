"""Shared by the fault catalogue: a stand-in for a full disk."""

import resource
import signal

import pytest


@pytest.fixture(scope="session")
def file_size_limit():
    """``file_size_limit(n)`` is a ``preexec_fn`` after which no file of the child process may
    grow past ``n`` bytes: the kernel fails each such ``write`` with ``EFBIG`` (``SIGXFSZ`` is
    ignored), as it fails them with ``ENOSPC`` on a full disk."""
    def make(limit: int):
        def apply():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return apply
    return make
