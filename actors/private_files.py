"""Files and folders for this user only: the home folder (0700), the store, the bot's job
store and the trace file (0600), which hold every request's text."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def private_folder(path: Path) -> Path:
    """Create ``path`` (and parents) and make it this user's only (0700): the home folder."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a folder of someone else's stays as it is
        path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` if need be, readable and writable by this user only (0600).

    The store keeps every request's text and the trace file every span's attributes: on a
    shared machine neither is for other users. An existing file is narrowed too (an older
    version created them 0644).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path
