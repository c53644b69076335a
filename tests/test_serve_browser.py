"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright's Python package
(which downloads no browser here: it is pointed at /usr/bin/chromium). The server is the real
``simsearch serve`` command on a free loopback port.

The walk: the page loads, an image is uploaded, k result images load, a result is clicked, the URL and
the grid change, "more" loads further results, the results download as JSON, the index is browsed page by
page, the back button returns to the upload's results; then a non-image and a too-large upload show their
messages, and a phone-width window has no sideways scrolling. No console errors on the way (other than the
refused upload's own 4xx). With ``SIMSEARCH_SCREENSHOT=docs/serve.png`` the upload's results are saved
as a screenshot.

The Fashion-MNIST test (the acceptance case: a trouser finds trousers) indexes 1,000 images of the Debian
``dataset-fashion-mnist`` package, or uses the index named by ``SIMSEARCH_SERVE_INDEX`` (e.g. the demo's
``indexes/fashion-mnist``, for the README screenshot).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import Server, build_index, build_pictures_index
from synth import make_image

CHROMIUM = os.environ.get("SIMSEARCH_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]  # headless=True adds --headless; the fresh --user-data-dir is the persistent context's folder
FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")

pytestmark = pytest.mark.skipif(
    not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
    reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium chromium-driver)",
)


class Browser:
    """One headless Chromium page; console errors and page errors are collected in ``errors``."""

    def __init__(self, tmp_path: Path, width: int = 1280, height: int = 900):
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:  # Chromium is here, so the test must run: this is an install problem
            pytest.fail("Chromium is installed but Playwright's Python package is not: pip install -e '.[test]'")
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": width, "height": height},
            accept_downloads=True,
        )
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def close(self) -> None:
        self.context.close()
        self._pw.stop()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


def wait_for_results(page, n: int) -> list[dict]:
    """Wait until the grid shows ``n`` cards whose images have loaded; → [{id, relpath, rank}]."""
    page.wait_for_function(
        """n => {
            const imgs = [...document.querySelectorAll('#grid .card .thumb img')];
            return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0
                                                        && i.parentElement.classList.contains('loaded'));
        }""",
        arg=n,
    )
    return page.eval_on_selector_all(
        "#grid .card",
        """cards => cards.map(c => ({
            id: Number(c.querySelector('.thumb').dataset.id),
            relpath: c.querySelector('.name').title,
            rank: (c.querySelector('.rank') || {}).textContent || null,
        }))""",
    )


def walk(b: Browser, url: str, query: Path, tmp_path: Path, k: int = 24, screenshot: str | None = None):
    """The common walk through the page; → (upload hits, clicked hit, its neighbours)."""
    page = b.page
    page.goto(url)
    page.wait_for_function("() => /\\d images/.test(document.getElementById('index-meta').textContent)")
    page.select_option("#page-size", str(k))  # results per page (kept in the browser's storage)
    wait_for_results(page, k)  # a random sample to start from

    page.set_input_files("#file", str(query))
    page.wait_for_function("() => document.getElementById('title').textContent === 'Most similar images'")
    hits = wait_for_results(page, k)
    assert [h["rank"] for h in hits] == [f"#{i}" for i in range(1, k + 1)]
    assert query.name in page.inner_text("#probe-title")
    if screenshot:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot, animations="disabled")  # fade-ins finished
    assert not b.errors, b.errors

    clicked = hits[1]
    page.click("#grid .card:nth-child(2) .thumb")
    page.wait_for_url(f"**/?id={clicked['id']}")
    page.wait_for_function(
        "rel => document.getElementById('probe-title').textContent.includes(rel)", arg=clicked["relpath"]
    )
    neighbours = wait_for_results(page, k)
    assert neighbours != hits and clicked["id"] not in [h["id"] for h in neighbours]

    page.click("#more")  # the next page of the same ranking
    more = wait_for_results(page, 2 * k)
    assert more[:k] == neighbours

    with page.expect_download() as download:
        page.click("#download")
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["query"] == f"id:{clicked['id']}" and [h["id"] for h in saved["hits"]] == [h["id"] for h in more]
    assert set(saved["hits"][0]) >= {"rank", "score", "id", "path", "relpath"}

    page.go_back()  # to the upload's results (the image is kept in the page, not in the URL)
    page.wait_for_function("() => location.search === ''")
    assert wait_for_results(page, k) == hits

    page.click("#browse-link")
    page.wait_for_url("**/?browse=1")
    first_page = wait_for_results(page, k)
    page.click("#pager a[aria-label='next page']")
    page.wait_for_url("**/?browse=1&page=2")
    second_page = wait_for_results(page, k)
    assert [h["id"] for h in first_page + second_page] == sorted(h["id"] for h in first_page + second_page)

    page.reload()  # the URL alone brings the state back
    assert wait_for_results(page, k) == second_page
    page.goto(f"{url}?id={clicked['id']}")
    assert wait_for_results(page, k) == neighbours
    assert not b.errors, b.errors
    return hits, clicked, neighbours


def bad_uploads(b: Browser, tmp_path: Path, max_upload: int) -> None:
    page = b.page
    page.set_input_files("#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a picture"}])
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message") == "notes.png: not a recognised image format"
    b.errors = [e for e in b.errors if "status of 422" not in e]  # the refused upload itself

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > max_upload
    page.set_input_files("#file", str(big))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('up to 50 KB')")
    assert page.inner_text("#message").startswith("“big.png” is ")  # refused before it is sent
    assert not b.errors, b.errors


def phone_width(b: Browser, url: str) -> None:
    page = b.page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{url}?browse=1&page=2")
    page.wait_for_selector("#grid .card .thumb img")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert page.is_visible("label[for=file]") and page.is_visible("#pager a[aria-label='next page']")
    assert not b.errors, b.errors


def copy_badge(b: Browser, tmp_path: Path) -> None:
    """A re-saved, smaller copy of an indexed picture: the pixel check lists its original first, with a badge."""
    from simsearch.preprocess import to_display

    corpus, index = build_pictures_index(tmp_path)
    original = sorted(corpus.rglob("*.png"))[7]
    copy = tmp_path / "copy-of-it.jpg"
    with Image.open(original) as im:
        to_display(im).resize((im.width * 3 // 4, im.height * 3 // 4)).save(copy, quality=85)
    with Server(index, tmp_path / "cache-pictures") as server:
        _copy_badge(b, server.url, corpus, original, copy)


def _copy_badge(b: Browser, url: str, corpus: Path, original: Path, copy: Path) -> None:
    page = b.page
    page.set_viewport_size({"width": 1280, "height": 900})  # every card in view: lazy thumbnails all load
    page.goto(url)
    page.wait_for_function("() => /\\d images/.test(document.getElementById('index-meta').textContent)")
    page.select_option("#page-size", "12")  # a new server is a new origin: its own stored page size
    page.set_input_files("#file", str(copy))
    page.wait_for_function("() => document.getElementById('title').textContent === 'Most similar images'")
    hits = wait_for_results(page, 12)
    assert hits[0]["relpath"] == original.relative_to(corpus).as_posix()
    badges = page.eval_on_selector_all("#grid .card", "cards => cards.map(c => !!c.querySelector('.thumb .copy'))")
    assert badges[0] and "pixels match" in page.get_attribute("#grid .card .copy", "title")
    assert not b.errors, b.errors


def test_page_in_chromium(browser, tmp_path):
    _, index = build_index(tmp_path)
    query = tmp_path / "stripes.png"
    make_image("stripes", np.random.default_rng(100)).save(query)
    with Server(index, tmp_path / "cache", "--max-upload", "50KB") as server:
        hits, clicked, neighbours = walk(browser, server.url, query, tmp_path, k=12)
        assert all(h["relpath"].startswith("stripes/") for h in hits[:8])
        assert clicked["relpath"].startswith("stripes/")
        bad_uploads(browser, tmp_path, 50_000)
        phone_width(browser, server.url)
    copy_badge(browser, tmp_path)


def _idx(name: str) -> np.ndarray:
    raw = gzip.open(FMNIST / name).read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_fashion_mnist(out: Path, per_class: int) -> None:
    """The first ``per_class`` training images of each class as PNGs under out/<class>/."""
    images, labels = _idx("train-images-idx3-ubyte.gz"), _idx("train-labels-idx1-ubyte.gz")
    for c, name in enumerate(CLASSES):
        (out / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(images[i]).save(out / name / f"{i:05d}.png")


def fmnist_trouser(out: Path) -> Path:
    """The first trouser of the test split (the demo's jeans: test/trouser/00002.png)."""
    images, labels = _idx("t10k-images-idx3-ubyte.gz"), _idx("t10k-labels-idx1-ubyte.gz")
    i = int(np.flatnonzero(labels == 1)[0])
    path = out / f"{i:05d}.png"
    Image.fromarray(images[i]).save(path)
    return path


@pytest.mark.slow
def test_fashion_mnist_trouser_finds_trousers_in_chromium(browser, tmp_path):
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    index = os.environ.get("SIMSEARCH_SERVE_INDEX")
    if index is None:
        import simsearch

        write_fashion_mnist(tmp_path / "fmnist", 100)
        index = tmp_path / "index"
        simsearch.Index.build(tmp_path / "fmnist", index, time_budget=30, max_epochs=10, workers=1)
    trouser = fmnist_trouser(tmp_path)
    with Server(Path(index), tmp_path / "cache") as server:
        hits, clicked, neighbours = walk(
            browser, server.url, trouser, tmp_path, k=24, screenshot=os.environ.get("SIMSEARCH_SCREENSHOT")
        )
    assert sum("trouser/" in h["relpath"] for h in hits) >= 20, hits  # of 24
    assert "trouser/" in clicked["relpath"]
    assert sum("trouser/" in h["relpath"] for h in neighbours) >= 20, neighbours
