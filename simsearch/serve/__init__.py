"""``simsearch serve``: a JSON API and a web page to search and browse an index.

    holder.py  the open index, shared by all requests; notices a newer generation and switches to it
    media.py   indexed originals read back safely (by id, hash-checked) and thumbnails cached on disk
    upload.py  an image upload read with a size limit enforced while it streams, kept in memory
    app.py     the FastAPI application: routes, error handling, security headers
    run.py     listening socket, loopback check, uvicorn
    static/    the page (plain HTML, CSS and JavaScript; no build step)

FastAPI, uvicorn and python-multipart are the optional extra ``simsearch[serve]``; this
package imports them only when a server is made, so ``simsearch --help`` never loads them.
"""

from __future__ import annotations

EXTRA_HINT = "simsearch serve needs the serve extra: pip install 'simsearch[serve]'"


def missing_dependency() -> str | None:
    """A one-line message naming what the serve extra lacks, or None when all is installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{EXTRA_HINT} (missing: {', '.join(missing)})"
    return None
