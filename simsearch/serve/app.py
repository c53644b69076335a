"""The FastAPI application behind ``simsearch serve``.

Routes (OpenAPI schema at ``/openapi.json``)::

    GET  /                       the web page (static/index.html)
    POST /api/query?k=           nearest neighbours of an uploaded image
    GET  /api/neighbors/{id}?k=  nearest neighbours of an indexed image
    GET  /api/images?offset&limit  the indexed images, page by page
    GET  /api/info               what the index holds
    GET  /health                 liveness, image count, generation
    GET  /thumb/{id}, /image/{id}  an indexed image's thumbnail / original, by id only
    GET  /tools, /api/dupes, /api/outliers, /api/map, /reconstruction/{id}  the whole-folder tools (tools.py)

Hits have the schema of ``simsearch query --json`` (rank, score, pixel, id, path, relpath) plus the
``thumb`` and ``image`` URLs. Every error is JSON ``{"error": message}`` with a 4xx/5xx status,
never a traceback. CPU work (decoding, encoding, searching, thumbnails) runs in the thread pool;
each request answers from one generation of the index (``holder.IndexHolder``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..decode import load
from ..errors import ImageError
from ..finecheck import SHORTLIST as PIXEL_CHECK_HITS
from ..render import hit_json, shown_path
from ..store import Entry
from .holder import IndexHolder, Loaded
from .media import MediaError, Thumbnails, etag, media_type, read_indexed
from .upload import UploadError, label, read_upload

log = logging.getLogger("simsearch.serve")

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_K = 24
MAX_K = 1000
MAX_PAGE = 500
DEFAULT_MAX_UPLOAD = 20_000_000

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- response schema (for /openapi.json)


class HitOut(BaseModel):
    rank: int
    score: float
    pixel: float | None = None  # the fine check's pixel similarity when it found this hit a copy of the upload
    id: int
    path: str
    relpath: str
    thumb: str
    image: str


class QueryOut(BaseModel):
    query: str
    id: int | None = None  # the query's id, path and relpath when it is an indexed image
    path: str | None = None
    relpath: str | None = None
    thumb: str | None = None
    image: str | None = None
    k: int
    generation: str
    seconds: float
    hits: list[HitOut]


class ImageOut(BaseModel):
    id: int
    path: str
    relpath: str
    thumb: str
    image: str


class ImagesOut(BaseModel):
    total: int
    offset: int
    limit: int
    generation: str
    images: list[ImageOut]


class HealthOut(BaseModel):
    status: str
    images: int
    generation: str


class ErrorOut(BaseModel):
    error: str


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a file name that is not UTF-8 (a surrogate-escaped str) goes out
    as ``\\udcff`` escapes, so ``os.fsencode(json.loads(body)[...]["path"])`` gives back its bytes,
    as ``simsearch query --json`` does."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422)
}  # documented error bodies


# ---------------------------------------------------------------- middleware


class Guard:
    """Security headers on every response; with ``allowed_hosts``, a request whose Host header names
    another host is refused (a web page elsewhere cannot reach a loopback server through DNS rebinding)."""

    def __init__(self, app, allowed_hosts: set[str] | None = None):
        self.app = app
        self.allowed = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed is not None:
            host = _host_of(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                resp = JSONResponse(
                    {"error": f"unexpected Host header {host!r}: this server answers only to localhost"},
                    status_code=400,
                )
                return await resp(scope, receive, self._with_headers(send))
        await self.app(scope, receive, self._with_headers(send, scope["path"].startswith("/static/")))

    @staticmethod
    def _with_headers(send, revalidate: bool = False):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
                if revalidate:  # the page's files: a new simsearch version must not meet a cached old script
                    headers.setdefault("cache-control", "no-cache")
            await send(message)

        return wrapped


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


# ---------------------------------------------------------------- the app


def create_app(
    index: str | Path,
    *,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    cache_dir: str | Path | None = None,
    check_interval: float = 1.0,
    allowed_hosts: set[str] | None = None,
) -> FastAPI:
    """The application serving the index directory ``index`` (opened now: a SimsearchError if it cannot be).

    ``cache_dir``: where thumbnails are kept (None: made on every request). ``check_interval``: how often
    (seconds) a request looks for a newer generation. ``allowed_hosts``: Host header names to answer (None: any).
    """
    holder = IndexHolder(index, check_interval=check_interval)
    thumbs = Thumbnails(Path(cache_dir) if cache_dir is not None else None)
    app = FastAPI(
        title="simsearch",
        version=__version__,
        description="Image similarity search over one simsearch index.",
        docs_url=None,  # Swagger UI would load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        default_response_class=AsciiJSONResponse,
    )
    app.state.holder = holder
    app.state.max_upload = max_upload
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    _error_handlers(app)
    decode_slots = threading.BoundedSemaphore(4)  # bounds the memory of large uploads decoding at once

    def urls(e: Entry) -> dict[str, str]:
        return {"thumb": f"/thumb/{e.id}?v={e.sha256[:12]}", "image": f"/image/{e.id}"}

    def hits_out(loaded: Loaded, hits) -> list[dict]:
        return [{**hit_json(h), **urls(loaded.by_id[h.id])} for h in hits]

    def entry_of(loaded: Loaded, id: int) -> Entry:
        e = loaded.by_id.get(id)
        if e is None:
            raise ApiError(404, f"id {id} is not in the index")
        return e

    # ------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    # ------------------------------------------------------------ API

    @app.get("/health", response_model=HealthOut, tags=["index"])
    def health() -> dict:
        loaded = holder.get()
        return {"status": "ok", "images": len(loaded.entries), "generation": loaded.generation}

    @app.get("/api/info", tags=["index"])
    def info() -> dict:
        """What the index holds (as `simsearch info --json`), its generation and this server's limits."""
        loaded = holder.get()
        return {**loaded.info, "server": {"version": __version__, "max_upload": max_upload, "max_k": MAX_K}}

    @app.get("/api/images", response_model=ImagesOut, responses=ERRORS, tags=["index"])
    def images(
        offset: int = Query(0, ge=0, description="First image (0-based, in id order)."),
        limit: int = Query(48, ge=1, le=MAX_PAGE, description="How many images."),
        seed: int | None = Query(None, description="Instead of a page: `limit` images at random (same seed, same)."),
    ) -> dict:
        """The indexed images in id order, one page at a time (or a random sample of them)."""
        loaded = holder.get()
        if seed is None:
            page = loaded.entries[offset : offset + limit]
        else:
            page = random.Random(seed).sample(loaded.entries, min(limit, len(loaded.entries)))
        root = loaded.index.root
        return {
            "total": len(loaded.entries),
            "offset": offset,
            "limit": limit,
            "generation": loaded.generation,
            "images": [{"id": e.id, **_paths(root, e), **urls(e)} for e in page],
        }

    @app.get("/api/neighbors/{id}", response_model=QueryOut, responses=ERRORS, tags=["search"])
    def neighbors(id: int, k: int = Query(DEFAULT_K, ge=1, le=MAX_K, description="Number of neighbours.")) -> dict:
        """Nearest neighbours of the indexed image `id` (itself left out)."""
        t = time.perf_counter()
        loaded = holder.get()
        e = entry_of(loaded, id)
        hits = loaded.index.neighbors(id, k)
        return {
            "query": f"id:{id}",
            "id": id,
            **_paths(loaded.index.root, e),
            **urls(e),
            "k": k,
            "generation": loaded.generation,
            "seconds": round(time.perf_counter() - t, 6),
            "hits": hits_out(loaded, hits),
        }

    @app.post(
        "/api/query",
        response_model=QueryOut,
        responses=ERRORS,
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": {"type": "string", "format": "binary"},
                                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                            },
                        }
                    },
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def query(
        request: Request, k: int = Query(DEFAULT_K, ge=1, le=MAX_K, description="Number of neighbours.")
    ) -> dict:
        """Nearest neighbours of an uploaded image (multipart field `image`, or the raw body with an
        image/* Content-Type). Decoded in memory; never stored."""
        t = time.perf_counter()
        upload = await read_upload(request, max_upload)
        if "k" in upload.fields:
            k = _parse_k(upload.fields["k"])
        name = label(upload.filename)
        loaded, hits = await run_in_threadpool(_search_upload, upload.data, name, k)
        out: dict[str, Any] = {"query": f"upload:{name}", "k": k, "generation": loaded.generation}
        return {**out, "seconds": round(time.perf_counter() - t, 6), "hits": hits_out(loaded, hits)}

    def _search_upload(data: bytes, name: str, k: int):
        loaded = holder.get()
        index = loaded.index
        same = loaded.by_sha.get(hashlib.sha256(data).hexdigest())
        if same is not None:  # the bytes of an indexed file: its stored vector, itself at rank 1 (as the CLI)
            return loaded, index.query(same, k, include_self=True)
        with decode_slots:
            try:
                pixels = load(data, index.preprocess, name=name)
            except ImageError as e:
                raise ApiError(422, f"{name}: {e.reason}") from None
        vectors = index.embed_pixels(pixels[None])
        if index.pixel_threshold is None:  # the check is off for this index: nothing more to decode
            return loaded, index.search_vectors(vectors, k)[0]
        hits = index.search_vectors(vectors, max(k, PIXEL_CHECK_HITS))[0]
        with decode_slots:  # it decodes the upload again, and the first hits' files
            return loaded, index.pixel_check(data, hits)[:k]  # copies of the upload first, as `simsearch query`

    # ------------------------------------------------------------ media

    def _conditional(request: Request, tag: str) -> Response | None:
        if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers={"etag": tag})
        return None

    @app.get("/thumb/{id}", responses={200: {"content": {"image/webp": {}}}, **ERRORS}, tags=["media"])
    def thumb(id: int, request: Request, v: str | None = Query(None, description="Cache buster.")) -> Response:
        """A WebP thumbnail (longest side ≤ 256 px) of the indexed image `id`; cached on disk, with an ETag."""
        loaded = holder.get()
        e = entry_of(loaded, id)
        tag = thumbs.etag(e)
        cache = "private, max-age=604800, immutable" if v == e.sha256[:12] else "no-cache"
        headers = {"etag": tag, "cache-control": cache}
        if (not_modified := _conditional(request, tag)) is not None:
            not_modified.headers.update(headers)
            return not_modified
        try:
            data = thumbs.get(loaded.index.path_of(id), e)
        except MediaError as err:
            raise ApiError(404, str(err)) from None
        return Response(data, media_type="image/webp", headers=headers)

    @app.get("/image/{id}", responses={200: {"content": {"image/*": {}}}, **ERRORS}, tags=["media"])
    def image(id: int, request: Request) -> Response:
        """The original file of the indexed image `id`, if it is unchanged since it was indexed."""
        loaded = holder.get()
        e = entry_of(loaded, id)
        tag = etag(e)
        headers = {"etag": tag, "cache-control": "no-cache"}
        if (not_modified := _conditional(request, tag)) is not None:
            not_modified.headers.update(headers)
            return not_modified
        try:
            data = read_indexed(loaded.index.path_of(id), e)
        except MediaError as err:
            raise ApiError(404, str(err)) from None
        name = Path(e.path).name
        headers["content-disposition"] = f"inline; filename*=utf-8''{quote(name.encode('utf-8', 'surrogateescape'))}"
        return Response(data, media_type=media_type(data), headers=headers)

    from . import tools  # the whole-folder tools: /tools, /api/dupes, /api/outliers, /api/map, /reconstruction/{id}

    tools.add_routes(app, holder, urls, entry_of, ApiError)
    return app


def _paths(root: Path, e: Entry) -> dict[str, str]:
    return {"path": shown_path(root / e.path), "relpath": shown_path(e.path)}


def _parse_k(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not 1 <= int(v) <= MAX_K:
        raise ApiError(422, f"k must be a whole number from 1 to {MAX_K}, got {value[:20]!r}")
    return int(v)


def _error_handlers(app: FastAPI) -> None:
    def err(status: int, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return err(exc.status, exc.message)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        resp = err(exc.status, exc.message)
        if exc.status == 413:
            resp.headers["connection"] = "close"  # the rest of the body is not read
        return resp

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            message = f"not found: {request.url.path}"
        return err(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {str(e.get('msg', 'invalid')).lower()}")
        return err(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("error answering %s %s", request.method, request.url.path, exc_info=exc)
        return err(500, f"internal error ({type(exc).__name__}); the server log has the details")
