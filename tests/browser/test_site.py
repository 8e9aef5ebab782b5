"""The course website (``bash course.sh site`` -> ``build/site/``) in a real browser.

Each lesson page is served from a local HTTP server and opened in headless
Chromium: every image it shows has loaded (``naturalWidth > 0``), it shows at
least the figures its notebook stores, it links to the next lesson, and the
browser asked for nothing outside the site (no fonts, scripts or styles from a
CDN). Then every relative link and asset of every page must name a file in
``build/site/``, and an anchor that exists on it. Runs with the other browser
tests (``bash course.sh browser``), after ``bash course.sh site``.
"""
from __future__ import annotations

import functools
import json
import os
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "build" / "site"
SHOTS = REPO / "build" / "browser"
LESSONS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("MOBILEUNET_BROWSER") != "1",
                       reason="real-browser test: run `bash course.sh browser` (or set MOBILEUNET_BROWSER=1)"),
]


@pytest.fixture(scope="module")
def site():
    """The built site on a loopback HTTP server: its base URL."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no site in {SITE}: build it first with `bash course.sh site`")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _stored_figures(lesson: str) -> int:
    """Figures a lesson's notebook shows: image outputs, and images its markdown cells link."""
    cells = json.loads((REPO / "notebooks" / f"{lesson}.ipynb").read_text(encoding="utf-8"))["cells"]
    outputs = sum(any(t in o.get("data", {}) for t in IMAGE_TYPES) for c in cells for o in c.get("outputs", []))
    markdown = sum("".join(c["source"]).count("![") for c in cells if c["cell_type"] == "markdown")
    return outputs + markdown


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_page_shows_its_figures(browser, site, lesson):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((site, "data:")) else elsewhere.append(r.url))
    try:
        response = page.goto(f"{site}/notebooks/{lesson}.html", wait_until="load")
        assert response is not None and response.ok, f"{lesson}: the page did not load ({response})"
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        images = page.eval_on_selector_all(
            "article img", "imgs => imgs.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}))")
        broken = [i["src"] for i in images if i["width"] == 0]
        assert not broken, f"{lesson}: images that did not load: {broken}"
        assert len(images) >= _stored_figures(lesson) >= 1, (
            f"{lesson}: the page shows {len(images)} images, the notebook stores {_stored_figures(lesson)}")
        assert not elsewhere, f"{lesson}: the page asked for files outside the site: {elsewhere}"
        index = LESSONS.index(lesson)
        if index + 1 < len(LESSONS):
            following = page.get_attribute("a.next-page", "href")
            assert following and following.endswith(f"{LESSONS[index + 1]}.html"), (
                f"{lesson}: 'next' goes to {following!r}, not lesson {LESSONS[index + 1]}")
        if lesson == LESSONS[3]:
            _shot(page, f"site_{lesson}")
    finally:
        page.close()


def test_front_page_links_every_lesson(browser, site):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        page.goto(f"{site}/index.html", wait_until="load")
        links = set(page.eval_on_selector_all("article a[href]", "as => as.map(a => a.getAttribute('href'))"))
        missing = [lesson for lesson in LESSONS if f"notebooks/{lesson}.html" not in links]
        assert not missing, f"the front page does not link lessons {missing}"
        _shot(page, "site_index")
    finally:
        page.close()


class _Refs(HTMLParser):
    """The ids a page defines and the URLs it refers to (links, images, scripts, styles)."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "img", "link", "script", "source", "iframe"):
                self.refs.append(attrs[key])


def _parse(path: Path) -> _Refs:
    refs = _Refs()
    refs.feed(path.read_text(encoding="utf-8"))
    return refs


def test_no_internal_link_is_broken():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no site in {SITE}: build it first with `bash course.sh site`")
    pages = {p: _parse(p) for p in SITE.rglob("*.html")}
    broken = []
    for page, refs in pages.items():
        for ref in refs.refs:
            url = urlsplit(ref)
            if url.scheme or url.netloc or ref.startswith("//"):
                continue                                             # an outside link: not the site's to keep
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(SITE)}: {ref}"
            if SITE.resolve() not in target.parents or not target.is_file():
                broken.append(f"{where} (no file)")
            elif url.fragment and target.suffix == ".html" and url.fragment not in pages[target].ids:
                broken.append(f"{where} (no anchor #{url.fragment})")
    assert len(pages) >= len(LESSONS) + 2
    assert not broken, f"{len(broken)} broken links in {SITE}:\n" + "\n".join(broken[:40])


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
