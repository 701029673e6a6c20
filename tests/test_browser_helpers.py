"""The browser tests' own instruments, checked against pages made to fail them: a check
that can never fail would pass every console page whatever it shows."""

from __future__ import annotations

from typing import Any

from tests.browser import DESKTOP, accessibility_problems, browser, no_horizontal_overflow

__all__ = ["browser"]  # the fixture, used by name

BROKEN = (
    "<!doctype html><html lang='en'><head><title>t</title></head><body><main>"
    "<img src='data:image/gif;base64,R0lGODlhAQABAAAAACw='>"
    "<p style='color:#bbb;background:#fff'>pale grey on white</p>"
    "<div style='width:3000px'>wide</div></main></body></html>"
)


def test_the_accessibility_check_names_the_violations_it_finds(browser: Any) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_content(BROKEN)
    problems = accessibility_problems(page)
    assert any(p.startswith("image-alt (critical)") for p in problems), problems
    assert any(p.startswith("color-contrast (serious)") for p in problems), problems
    assert not no_horizontal_overflow(page)
    page.set_content(BROKEN.replace("<img ", "<img alt='a dot' ").replace("#bbb", "#222"))
    assert accessibility_problems(page) == []
    context.close()
