"""Opening the files io reads: one place that checks a path names an existing file (FileMissingError names
it) and reads its bytes; and the one content digest of a file (what resumable runs compare)."""
from __future__ import annotations

import os

from ..errors import FileMissingError


def existing_file(path, what: str = "file") -> str:
    """``path`` as a str, or FileMissingError ``<path>: no such <what>``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileMissingError(f"{path}: no such {what}")
    return path


def read_bytes(path, what: str = "file") -> bytes:
    """The whole content of an existing file, refused over the size limit (io/limits.py: 2 GB by default)."""
    from .limits import read_file
    return read_file(existing_file(path, what), what)


def file_sha256(path) -> str | None:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks; None when it cannot be read."""
    import hashlib
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
