"""Exceptions that reach the user as one clear line (CLI exit code 1), and the helpers that
make such a line from an exception's text (``one_line``, ``oserror_reason``, ``printable``)."""

from __future__ import annotations

import re

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def one_line(text: str, limit: int = 200) -> str:
    text = _ADDRESS.sub("", " ".join(str(text).split())).lower()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def printable(text: str) -> str:
    """``text`` as any UTF-8 terminal can print it: the bytes of a file name that are not UTF-8
    (which ``os.fsdecode`` leaves as lone surrogates) become ``\\xff``-style escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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


def rebuild_hint(folder: str = "") -> str:
    """The advice for an index that only a rebuild repairs; ``folder``: the argument to show
    (e.g. ``"FOLDER"``), none by default."""
    return f"rebuild with `simsearch index {folder + ' ' if folder else ''}--rebuild`"


REBUILD_HINT = rebuild_hint()  # rebuild with `simsearch index --rebuild`


class IndexFormatError(SimsearchError):
    """The index on disk is from a newer format, corrupt or inconsistent."""

    @classmethod
    def rebuild(cls, path: object, problem: str) -> IndexFormatError:
        """``PATH: PROBLEM; rebuild with `simsearch index --rebuild```: damage only a rebuild repairs."""
        return cls(f"{path}: {problem}; {REBUILD_HINT}")

    @classmethod
    def corrupt(cls, path: object, why: object) -> IndexFormatError:
        """``PATH: corrupt (WHY); rebuild with …``"""
        return cls.rebuild(path, f"corrupt ({why})")

    @classmethod
    def missing(cls, path: object) -> IndexFormatError:
        """``PATH: missing; rebuild with …``"""
        return cls.rebuild(path, "missing")


class ModelMismatchError(SimsearchError):
    """A model does not match the one the index was built with."""


class IndexLockedError(SimsearchError):
    """Another process is writing to the index."""
