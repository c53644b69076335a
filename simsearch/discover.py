"""Stage 1a: which files under a folder are images.

    folder ──discover()──▶ sorted image paths + (path, reason) problems

A file is an image when its extension is one some decoder here reads
(:data:`~simsearch.formats.IMAGE_EXTENSIONS`).  The walk is deterministic (sorted by the
bytes of the relative path), skips hidden entries, follows symlinks (entering each
directory once, so loops end) and reports broken links, FIFOs and unreadable directories
instead of failing.  Standard library and Pillow only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal, overload

from simsearch.errors import SimsearchError, oserror_reason
from simsearch.formats import IMAGE_EXTENSIONS

__all__ = ["discover", "walk"]


def _rel_key(rel: str) -> bytes:
    return os.fsencode(rel)


@overload
def discover(root: str | os.PathLike[str]) -> tuple[list[Path], list[tuple[Path, str]]]: ...
@overload
def discover(root: str | os.PathLike[str], *, strings: Literal[True]) -> tuple[list[str], list[tuple[Path, str]]]: ...


def discover(root: str | os.PathLike[str], *, strings: bool = False):
    """Recursively find image files under ``root``.

    Returns ``(files, problems)``.  ``files`` are ``root / relative`` paths whose
    lower-cased suffix is in :data:`IMAGE_EXTENSIONS`, sorted by the bytes of
    their POSIX path relative to ``root``.  Hidden entries (name starts with
    ``.``) are skipped; symlinks to files are followed; each directory (by
    ``(st_dev, st_ino)``) is entered at most once, so symlink loops terminate.
    Broken symlinks with an image extension, non-regular files with an image
    extension and unreadable directories are reported in ``problems`` as
    ``(path, reason)``.  If ``root`` is an image file, returns ``([root], [])``.

    ``strings=True`` returns the files as ``str`` (``os.path.join(root, relative)``) instead
    of ``Path`` objects: a third of the memory per file, for the indexer's million-file
    folders (a ``Path`` keeps its parts as separate strings).

    Raises :class:`SimsearchError` if ``root`` does not exist or is neither a
    directory nor an image file.
    """
    found: list[tuple[bytes, str]] = []
    problems = walk(root, lambda key, path: found.append((key, path)))
    found.sort(key=lambda t: t[0])
    if strings:
        return [p for _, p in found], problems
    return [Path(p) for _, p in found], problems


def walk(root: str | os.PathLike[str], add: Callable[[bytes, str], None]) -> list[tuple[Path, str]]:
    """``discover`` without keeping the files: ``add(key, path)`` is called for each image file, in
    walk order (sorting by ``key`` gives ``discover``'s order), and the problems are returned, sorted.
    The indexer adds them to a ``spill.Sorter``, so a folder of a million files is sorted on disk."""
    if isinstance(root, bytes):
        root = os.fsdecode(root)
    root_p = Path(root)
    try:
        st = os.stat(root_p)
    except FileNotFoundError:
        if os.path.islink(root_p):
            raise SimsearchError(f"{root_p}: broken symlink") from None
        raise SimsearchError(f"{root_p}: no such file or directory") from None
    except OSError as exc:
        raise SimsearchError(f"{root_p}: {oserror_reason(exc)}") from None

    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode) and root_p.suffix.lower() in IMAGE_EXTENSIONS:
            add(_rel_key(root_p.name), os.fspath(root_p))
            return []
        raise SimsearchError(f"{root_p}: not a directory or a supported image file")

    problems: list[tuple[Path, str]] = []
    visited = {(st.st_dev, st.st_ino)}
    stack: list[tuple[str, str]] = [(os.fspath(root_p), "")]
    while stack:
        directory, rel = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            problems.append((Path(directory), f"cannot read directory: {oserror_reason(exc)}"))
            continue
        entries.sort(key=lambda e: os.fsencode(e.name))
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            rel_child = f"{rel}/{name}" if rel else name
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    dst = os.stat(path)
                except OSError as exc:
                    problems.append((Path(path), f"cannot read directory: {oserror_reason(exc)}"))
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in visited:
                    continue  # already walked (symlink loop or second link)
                visited.add(key)
                subdirs.append((path, rel_child))
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                is_file = entry.is_file()  # follows symlinks
            except OSError:
                is_file = False
            if is_file:
                add(_rel_key(rel_child), path)
                continue
            try:
                os.stat(path)
            except FileNotFoundError:
                problems.append((Path(path), "broken symlink"))
                continue
            except OSError as exc:
                problems.append((Path(path), f"cannot access: {oserror_reason(exc)}"))
                continue
            problems.append((Path(path), "not a regular file"))
        stack.extend(reversed(subdirs))
    problems.sort(key=lambda t: os.fsencode(str(t[0])))
    return problems
