"""Debian's Chromium driven by Playwright for the console's browser tests: no browser is
downloaded (`.ci/run` installs the `chromium` package). Without it the tests skip, saying
so, unless PARCOURS_TEST_BROWSER_REQUIRED is set (CI), where its absence is an error."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("PARCOURS_CHROMIUM", ""), *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@pytest.fixture
def browser() -> Iterator[object]:
    """A Chromium of the test's own: Playwright's sync API keeps an event loop running in
    this thread while it lives, which any later `asyncio.run` of another test would meet
    (a browser for the whole session broke them)."""
    path = chromium_path()
    if path is None:
        reason = "no Chromium: install Debian's `chromium` package (apt-get install chromium)"
        if os.environ.get("PARCOURS_TEST_BROWSER_REQUIRED"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            launched.close()


def sign_in(page: Any, base_url: str, email: str, password: str) -> None:
    """Sign `page` in to the console at `base_url` as `email`, by its login form (found by
    its fields' ids, in whatever language the page speaks); the console's home page is
    shown after."""
    page.goto(f"{base_url}/console/login")
    page.locator("#f-email").fill(email)
    page.locator("#f-password").fill(password)
    page.locator("form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/console/$"))


def image_width(image: Any) -> int:
    """The natural width of the image `image` (a locator) once it has loaded, 0 if it
    failed: an image shown after the page loaded (in a `<details>` opened, lazily) may
    still be on its way when it is first visible."""
    return int(
        image.evaluate(
            "img => img.complete ? img.naturalWidth : new Promise(done => {"
            " img.addEventListener('load', () => done(img.naturalWidth));"
            " img.addEventListener('error', () => done(0)); })"
        )
    )


def screenshots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: PARCOURS_SCREENSHOTS when set (the README's come from there),
    else the test's own directory."""
    chosen = os.environ.get("PARCOURS_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


AXE = Path(__file__).parent / "assets" / "axe-core-4.14.1.min.js"


def accessibility_problems(page: Any) -> list[str]:
    """The serious and critical violations axe-core finds on the page as it is (WCAG 2.1
    A and AA rules), each with the elements it found them on."""
    page.add_script_tag(path=str(AXE))
    results = page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}, resultTypes: ['violations']})"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"][:3])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


SHOP_CDN = "https://cdn.shop.example/**"  # where the test catalogs' pictures are


def open_on_a_phone(browser: Any, url: str, picture: bytes) -> Any:
    """A customer's page at `url` on a phone, answered 200, in a context of its own: axe-core
    may be injected into it (past the page's CSP, for the tests only), and every picture of
    the test shop's CDN is `picture` (no request leaves the machine). Its `context` opens
    more pages the same way."""
    context = browser.new_context(locale="en-GB", viewport=PHONE, bypass_csp=True)
    context.route(
        SHOP_CDN,
        lambda route: route.fulfill(status=200, body=picture, content_type="image/png"),
    )
    page = context.new_page()
    answer = page.goto(url)
    assert answer is not None and answer.status == 200, url
    return page


def no_horizontal_overflow(page: Any) -> bool:
    """Whether the page fits the screen's width (nothing to scroll sideways)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
