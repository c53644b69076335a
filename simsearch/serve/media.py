"""Indexed images read back for the page: originals and thumbnails, by indexed id only.

A client never names a path. The route looks the id up in the manifest, reads that file once
(``decode.read_file``: regular files only, a FIFO does not block) and serves the bytes only if their
sha256 is the one recorded when the file was indexed — so a file replaced since, or a symlink
re-pointed elsewhere, is refused rather than served.

Thumbnails are WebP files cached on disk under the content hash (``<sha256>-<side>.webp``): the
cache is shared by every index and never goes stale; a changed file has a new hash. The ETag is
that same hash.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from pathlib import Path

from PIL import Image

from ..decode import open_image, read_file
from ..errors import ImageError
from ..preprocess import Preprocess, to_display
from ..store import Entry

log = logging.getLogger("simsearch.serve")

THUMB_SIDE = 256  # px, longest side; smaller images are not enlarged (the page scales them crisply)


class MediaError(Exception):
    """An indexed file that cannot be served: missing, unreadable, or changed since it was indexed."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsearch"


def read_indexed(path: Path, entry: Entry) -> bytes:
    """The bytes of an indexed file, only if they are exactly what was indexed."""
    try:
        data = read_file(path)
    except ImageError as e:
        raise MediaError(f"id {entry.id}: {e.reason}") from None
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise MediaError(f"id {entry.id}: the file has changed since it was indexed (re-index to see it)")
    return data


def media_type(data: bytes) -> str:
    """The MIME type of image bytes by their content (never text/html, whatever the file is called)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
    except Exception:  # indexed, so decodable; be safe anyway
        return "application/octet-stream"
    return Image.MIME.get(fmt or "", "application/octet-stream")


def etag(entry: Entry, suffix: str = "") -> str:
    return f'"{entry.sha256[:32]}{suffix}"'


class Thumbnails:
    """WebP thumbnails of indexed images, made on first request and kept under ``cache_dir/thumbs``."""

    def __init__(self, cache_dir: Path | None, side: int = THUMB_SIDE):
        self.side = side
        self.dir = Path(cache_dir) / "thumbs" if cache_dir is not None else None
        self._warned = False
        self._lock = threading.Lock()

    def etag(self, entry: Entry) -> str:
        return etag(entry, f"-{self.side}")

    def get(self, path: Path, entry: Entry) -> bytes:
        cached = self._cached_path(entry)
        if cached is not None:
            try:
                return cached.read_bytes()
            except OSError:
                pass
        data = make_thumbnail(read_indexed(path, entry), self.side, name=f"id {entry.id}")
        if cached is not None:
            self._store(cached, data)
        return data

    def _cached_path(self, entry: Entry) -> Path | None:
        if self.dir is None:
            return None
        name = f"{entry.sha256}-{self.side}.webp"
        return self.dir / name[:2] / name

    def _store(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
        except OSError as e:
            tmp.unlink(missing_ok=True)
            with self._lock:
                if not self._warned:
                    self._warned = True
                    log.warning("thumbnails are not cached: cannot write %s (%s)", self.dir, e.strerror or e)


def make_thumbnail(data: bytes, side: int, name: str = "image") -> bytes:
    """WebP of an image's display form (EXIF-oriented, transparency on white), longest side at most ``side``."""
    try:
        img = to_display(open_image(data, pre=Preprocess(side, 3)))
    except ImageError as e:
        raise MediaError(f"{name}: {e.reason}") from None
    if max(img.size) > side:
        img = img.copy()
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if max(img.size) <= 64:  # tiny images (e.g. 28 px): lossless, the page enlarges them pixel by pixel
        img.save(buf, "WEBP", lossless=True)
    else:
        img.save(buf, "WEBP", quality=82, method=4)
    return buf.getvalue()
