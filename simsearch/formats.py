"""Which image formats this installation reads, and which package reads each.

Pillow reads most formats itself; HEIC/HEIF (phone photos) needs the pillow-heif plugin, AVIF a
Pillow built with libavif, JPEG 2000 OpenJPEG, EPS Ghostscript.  :data:`IMAGE_EXTENSIONS` is
what ``discover`` looks for: every extension some decoder here can read, plus HEIC/HEIF/AVIF
always, so that a folder of them is reported as skipped (with the package that would read
them: ``_missing_codec``) instead of silently ignored.

Importing this module sets up Pillow for every reader of image files in simsearch (``discover``,
``decode``, ``preprocess.probe``, the ``pool`` workers): the pillow-heif opener is registered
and truncated files fail instead of being padded with grey.  Standard library, Pillow and
pillow-heif only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageFile, features

__all__ = ["IMAGE_EXTENSIONS"]


# Truncated files must fail loudly, never be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# HEIC/HEIF (phone photos) is read by the pillow-heif plugin; AVIF by Pillow itself when it
# is built with libavif.  Registering the opener here, at import, registers it in the decode
# worker processes too (they import this module, through pool → decode).  pillow-heif applies
# the HEIF rotation / mirror boxes while decoding and resets the EXIF orientation to 1, so
# decode._apply_exif_orientation does not rotate those images a second time.
try:
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF_READABLE = True
except Exception:  # noqa: BLE001 -- absent or broken native library: HEIF files are skipped, with the reason
    _HEIF_READABLE = False
try:
    _AVIF_READABLE = bool(features.check("avif"))
except Exception:  # noqa: BLE001 -- an old or odd Pillow: no AVIF
    _AVIF_READABLE = False

# Always discovered, even when this installation cannot decode them, so that they are
# reported as skipped (with what would read them) instead of silently ignored.
_CODEC_EXTENSIONS = {".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
_MISSING_CODEC = {
    "HEIF": "HEIC/HEIF needs the pillow-heif package (pip install pillow-heif)",
    "AVIF": "AVIF needs Pillow built with libavif (Pillow >= 11.3 wheels)",
}
# ISO-BMFF 'ftyp' brands (major or compatible) of AVIF and of the other HEIF flavours.
_AVIF_BRANDS = {b"avif", b"avis", b"avio"}
_HEVC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS = _HEVC_BRANDS | {b"mif1", b"msf1", b"mif2"}

# Formats Pillow registers but cannot actually decode here: stub plugins need an
# external handler, MPEG only parses a header, EPS needs Ghostscript.
_UNREADABLE_FORMATS = {"MPEG"}
# Formats whose decoder is an optional library in Pillow builds.
_CODEC_FEATURES = {"JPEG2000": "jpg_2000", "AVIF": "avif"}


def _readable_extensions() -> frozenset[str]:
    Image.init()
    readable = set()
    for ext, fmt in Image.registered_extensions().items():
        if fmt == "MPO":  # opened through the JPEG factory
            readable.add(ext.lower())
            continue
        if fmt not in Image.OPEN or fmt in _UNREADABLE_FORMATS:
            continue
        factory = Image.OPEN[fmt][0]
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            module = sys.modules.get(factory.__module__)
            handler = getattr(factory, "_handler", None) or getattr(module, "_handler", None)
            if handler is None:
                continue
        feature = _CODEC_FEATURES.get(fmt)
        if feature is not None:
            try:
                if not features.check(feature):
                    continue
            except Exception:
                continue
        if fmt == "EPS":
            try:
                from PIL import EpsImagePlugin

                if not EpsImagePlugin.has_ghostscript():
                    continue
            except Exception:
                continue
        readable.add(ext.lower())
    readable.update({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
    readable.update(_CODEC_EXTENSIONS)
    return frozenset(readable)


IMAGE_EXTENSIONS: frozenset[str] = _readable_extensions()


def _heif_container(data: bytes) -> str | None:
    """'AVIF' or 'HEIF' when ``data`` starts with an ISO-BMFF 'ftyp' box of that family, else None."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    box = int.from_bytes(data[:4], "big")
    end = min(len(data), box if 16 <= box <= 4096 else 16)
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEVC_BRANDS:
        return "HEIF"
    if compatible & _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS or compatible & _HEIF_BRANDS:
        return "HEIF"
    return None


def _head(path: str | Path, n: int = 4096) -> bytes:
    """The first bytes of a file (b"" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _missing_codec(data: bytes) -> str | None:
    """The reason an HEIC/HEIF or AVIF file cannot be decoded in this installation, if so."""
    kind = _heif_container(data)
    if kind == "HEIF" and not _HEIF_READABLE:
        return _MISSING_CODEC["HEIF"]
    if kind == "AVIF" and not _AVIF_READABLE:
        return _MISSING_CODEC["AVIF"]
    return None
