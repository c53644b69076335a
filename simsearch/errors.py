"""Exceptions that reach the user as one clear line (CLI exit code 1)."""

from __future__ import annotations


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
