"""Reading one uploaded image: in memory, with the size limit enforced while the body streams in.

Accepted: ``multipart/form-data`` with one file part (field ``image``; other small fields such as
``k`` are returned too), or the image itself as the request body (``Content-Type: image/*`` or
``application/octet-stream``). A ``Content-Length`` over the limit is refused before anything is
read; otherwise the body is counted chunk by chunk and refused (413) as soon as it passes the limit,
so an oversized upload is never held whole. Nothing is written to disk, and the client's file name
is only echoed back as a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and small fields on top of the image itself
MAX_FIELD = 1024  # bytes in a non-file form field
MAX_PARTS = 16


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    data: bytes
    filename: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1000
    raise AssertionError("unreachable")


def too_large(limit: int, size: int | None = None) -> UploadError:
    got = f" ({human_size(size)})" if size else ""
    return UploadError(413, f"upload too large{got}: this server accepts images up to {human_size(limit)}")


def label(filename: str) -> str:
    """A client's file name as a display label: last path component, printable, at most 120 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() else "?" for c in name)[:120]
    return name or "upload"


async def read_upload(request: Request, limit: int) -> Upload:
    ctype = request.headers.get("content-type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    multipart = mime == "multipart/form-data"
    if not multipart and not (mime.startswith("image/") or mime == "application/octet-stream"):
        raise UploadError(
            415,
            "send the image as multipart/form-data (file field 'image') or as the request body "
            f"with an image/* Content-Type (got {mime or 'none'!r})",
        )
    slack = MULTIPART_SLACK if multipart else 0
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + slack:
        raise too_large(limit, int(length))
    if multipart:
        return await _read_multipart(request, ctype, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return Upload(bytes(body), request.headers.get("x-filename", ""))


async def _read_multipart(request: Request, ctype: str, limit: int) -> Upload:
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary")

    parts: list[dict] = []
    header: dict[str, bytearray] = {}
    state: dict = {}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise UploadError(400, f"too many form fields (at most {MAX_PARTS})")
        state["headers"] = {}
        state["data"] = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header.setdefault("field", bytearray()).extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header.setdefault("value", bytearray()).extend(data[start:end])

    def on_header_end() -> None:
        name = bytes(header.pop("field", b"")).decode("latin-1").lower()
        state["headers"][name] = bytes(header.pop("value", b""))

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        fname = disp.get(b"filename")
        state["filename"] = None if fname is None else fname.decode("utf-8", "replace")
        state["is_file"] = fname is not None or state["name"] in ("image", "file")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        buf = state["data"]
        buf.extend(data[start:end])
        if state["is_file"] and len(buf) > limit:
            raise too_large(limit)
        if not state["is_file"] and len(buf) > MAX_FIELD:
            raise UploadError(400, f"form field {state['name']!r} is too long")

    def on_part_end() -> None:
        parts.append(dict(state))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit + MULTIPART_SLACK:
                raise too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise UploadError(400, "malformed multipart/form-data body") from None

    files = [p for p in parts if p["is_file"]]
    if not files:
        raise UploadError(400, "no image in the upload: send it as the file field 'image'")
    if len(files) > 1:
        raise UploadError(400, "send one image per request")
    fields = {p["name"]: bytes(p["data"]).decode("utf-8", "replace") for p in parts if not p["is_file"]}
    return Upload(bytes(files[0]["data"]), files[0]["filename"] or "", fields)
