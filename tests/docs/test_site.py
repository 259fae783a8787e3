"""The built site, in a real headless browser (Debian's chromium).

Served from 127.0.0.1 by a local static server; the browser runs with a
fresh profile and with networking features that could reach the Internet
turned off. Checked: the tutorial and the API reference render, search
finds a term, every internal link (and anchor) of every page resolves,
every page's scripts and styles are local, and a screenshot of the tutorial
is saved next to the built site (``docs/_build/tutorial.png``).

The search term is ``HYPERDHT_DOCS_SEARCH_TERM``, default ``connect`` (what
a user looking for NAT traversal types; :meth:`DHT.connect` must be found).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest

from .conftest import CHROMEDRIVER, CHROMIUM, chromium_available

SEARCH_TERM = os.environ.get("HYPERDHT_DOCS_SEARCH_TERM", "connect")
WAIT = 30.0  # seconds: only a broken run waits this long
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(built_site: Path) -> Iterator[str]:
    """The built site on http://127.0.0.1:PORT/."""
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="docs-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(WAIT)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless chromium through chromedriver, with a fresh profile."""
    chromium_available()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(browser: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(condition)


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    _wait(browser, lambda b: b.execute_script("return document.readyState") == "complete")


def test_tutorial_renders(browser: Any, server: str, built_site: Path) -> None:
    """The tutorial has its title, its code and the theme's search box;
    the screenshot lands next to the built site."""
    from selenium.webdriver.common.by import By

    _open(browser, server + "tutorial.html")
    assert browser.find_element(By.CSS_SELECTOR, "article h1").text.startswith("Tutorial")
    code = browser.find_elements(By.CSS_SELECTOR, "article div.highlight-python pre")
    assert len(code) >= 3 and "HyperDHT" in code[0].text
    assert browser.find_element(By.CSS_SELECTOR, "form.sidebar-search-container input")
    shot = built_site.parent / "tutorial.png"
    shot.unlink(missing_ok=True)
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_api_reference_renders(browser: Any, server: str) -> None:
    """The API index lists modules; a module page shows documented classes
    with typed signatures."""
    from selenium.webdriver.common.by import By

    _open(browser, server + "reference/api/index.html")
    links = browser.find_elements(By.CSS_SELECTOR, "article li.toctree-l1 a")
    assert len(links) >= 10
    _open(browser, server + "reference/api/hyperdht.errors.html")
    errors = browser.find_elements(By.CSS_SELECTOR, "article dl.py.exception > dt")
    names = {dt.get_attribute("id") for dt in errors}
    assert "hyperdht.errors.HyperDHTError" in names
    _open(browser, server + "reference/api/hyperdht.kbucket.html")
    signatures = browser.find_elements(By.CSS_SELECTOR, "article dl.py.method > dt")
    assert any("\u2192" in dt.text for dt in signatures), "no return annotations rendered"


def test_search_finds_term(browser: Any, server: str) -> None:
    """The built-in search (no server, no CDN) finds the term."""
    from selenium.webdriver.common.by import By

    _open(browser, server + f"search.html?q={SEARCH_TERM}")
    _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "ul.search li"))
    results = browser.find_elements(By.CSS_SELECTOR, "ul.search li a")
    assert results, f"no search results for {SEARCH_TERM!r}"
    assert any(SEARCH_TERM.lower() in (a.text + a.get_attribute("href")).lower() for a in results)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


COLLECT = """
return {
  links: Array.from(document.querySelectorAll('a[href]'), a => a.href),
  assets: Array.from(document.querySelectorAll('script[src], link[href], img[src]'),
                     e => e.src || e.href),
  ids: Array.from(document.querySelectorAll('[id]'), e => e.id),
};
"""


def test_no_broken_internal_links(browser: Any, server: str, built_site: Path) -> None:
    """Crawl every page reachable from the index, plus every page in the
    build: each internal link and its anchor exists, each asset is served
    locally."""
    origin = urlsplit(server).netloc
    pages = {server + "index.html"} | {
        server + p.relative_to(built_site).as_posix()
        for p in built_site.rglob("*.html")
        if "_static" not in p.parts and "_sources" not in p.parts
    }
    seen: dict[str, set[str]] = {}
    wanted: dict[str, set[tuple[str, str]]] = {}  # page -> {(fragment, from)}
    broken: list[str] = []
    linked_from: dict[str, set[str]] = {}
    queue = sorted(pages)
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        if _status(url) != 200:
            seen[url] = set()
            broken.append(f"{url} is not served (linked from {sorted(linked_from[url])})")
            continue
        _open(browser, url)
        found = browser.execute_script(COLLECT)
        seen[url] = set(found["ids"])
        for asset in found["assets"]:
            parts = urlsplit(asset)
            if parts.scheme in ("http", "https") and parts.netloc != origin:
                if "stylesheet" in asset or asset.endswith((".js", ".css")):
                    broken.append(f"{url}: loads {asset} from the network")
                continue
            if parts.netloc == origin and _status(urldefrag(asset)[0]) != 200:
                broken.append(f"{url}: asset {asset} is not served")
        for link in found["links"]:
            parts = urlsplit(link)
            if parts.netloc != origin:
                continue  # external links (the theme's credits) are not followed
            target, fragment = urldefrag(link)
            target = target.split("?", 1)[0]
            if target.endswith("/"):
                target += "index.html"
            if target.endswith(".html"):
                linked_from.setdefault(target, set()).add(url)
                if target not in seen:
                    queue.append(target)
                if fragment:
                    wanted.setdefault(target, set()).add((fragment, url))
            elif _status(target) != 200:
                broken.append(f"{url}: link to {link} is not served")
    for target, fragments in wanted.items():
        for fragment, source in fragments:
            if fragment not in seen[target]:
                broken.append(f"{source}: anchor #{fragment} not on {target}")
    assert len(seen) >= 30, f"crawled only {len(seen)} pages"
    assert not broken, "\n".join(sorted(broken))


def test_diagrams_render(browser: Any, server: str) -> None:
    """The NAT page's sequence diagrams are drawn (inline SVG with size)."""
    from selenium.webdriver.common.by import By

    _open(browser, server + "background/nat.html")
    svgs = browser.find_elements(By.CSS_SELECTOR, "figure.seqdiagram svg")
    assert len(svgs) == 3
    assert all(svg.size["width"] > 300 and svg.size["height"] > 200 for svg in svgs)
