"""Exceptions that reach the user as one clear line (CLI exit code 1), and the helpers that
make such a line from an exception's text (``one_line``, ``oserror_reason``)."""

from __future__ import annotations

import re

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def one_line(text: str, limit: int = 200) -> str:
    text = _ADDRESS.sub("", " ".join(str(text).split())).lower()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def oserror_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = exc.strerror or str(exc) or type(exc).__name__
    return one_line(text)


class SimsearchError(Exception):
    """Base class: a user-facing error. ``str(err)`` is the one-line message."""


class ImageError(SimsearchError):
    """An image file (or in-memory image) could not be read or decoded."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IndexNotFoundError(SimsearchError):
    """No index exists at the given location."""


class IndexFormatError(SimsearchError):
    """The index on disk is from a newer format, corrupt or inconsistent."""


class ModelMismatchError(SimsearchError):
    """A model does not match the one the index was built with."""


class IndexLockedError(SimsearchError):
    """Another process is writing to the index."""
