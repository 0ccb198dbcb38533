"""The browser journeys' harness (tests/test_journeys.py): Debian's Chromium driven by
Playwright, axe-core on every page, keyboard-only navigation, screenshots for docs/.

People browse **without JavaScript**: the journeys prove that the core flows work with
plain HTML forms. axe-core needs JavaScript, so `check_accessibility` replays the very
document a person reached (its HTML, at its URL, with the site's stylesheet) in a page
of a separate, script-enabled context and runs axe there: nothing is requested twice,
pages reached by a POST are checked as shown, and what axe sees is what the person
saw (the only difference: the scripts a page loads run in the replay, as they would for
most people).

Keyboard only: a person reaches each control by pressing Tab (never by a click or by
focusing it from a script), types, and activates with Enter or Space; each control
reached shows a visible focus indicator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Download, Locator, Page, sync_playwright

from tests.conftest import ENGINE

ROOT = Path(__file__).resolve().parents[1]
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# The network is closed: without these, Chromium keeps trying to reach Google.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
MAX_TABS = 80  # a control further than this from the top of its page is out of reach
SCREENSHOT_BYTES = 200_000  # a full-page capture larger than this is cut to the viewport
TIMEOUT_MS = 20_000


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium (Debian's, never a downloaded one)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def person(browser: Browser, base_url: str) -> Iterator[Page]:
    """A person's browser window, JavaScript off, cookies of their own."""
    context = browser.new_context(
        base_url=base_url, viewport=VIEWPORT, java_script_enabled=False, locale="fr-FR"
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def _auditor(browser: Browser) -> Page:
    """The script-enabled page where axe runs, one per browser. The Content-Security-Policy
    (no inline script) is bypassed there only, to inject axe."""
    found: Page | None = getattr(browser, "_securex_auditor", None)
    if found is None or found.is_closed():
        context = browser.new_context(viewport=VIEWPORT, bypass_csp=True, locale="fr-FR")
        context.set_default_timeout(TIMEOUT_MS)
        found = context.new_page()
        browser._securex_auditor = found  # type: ignore[attr-defined]
    return found


def _describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"]:
            lines.append(f"    {json.dumps(node['target'])}: {node.get('failureSummary', '')}")
    return "\n".join(lines)


def check_accessibility(page: Page, name: str) -> None:
    """axe-core at WCAG 2.1 A and AA on the page as `page` shows it: no violation."""
    assert page.context.browser is not None
    html, url = page.content(), page.url
    auditor = _auditor(page.context.browser)

    served: list[str] = []  # the navigations answered with the page reached

    def serve(route: Any) -> None:
        if route.request.is_navigation_request():
            served.append(route.request.url)
        # (a page's own script fetching it again, job-progress.js, gets it as well)
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

    auditor.route(url, serve)
    try:
        auditor.goto(url, wait_until="load")
    finally:
        auditor.unroute(url, serve)
    # axe checks the page the person reached, not what the server would send anew.
    assert served == [url] and auditor.url == url, (served, auditor.url, url)
    auditor.add_script_tag(path=str(AXE))
    result = auditor.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
    )
    violations = result["violations"]
    assert not violations, f"axe: {name} ({url}):\n{_describe(violations)}"


def screenshot(page: Page, journey: str, step: str) -> None:
    """docs/screenshots/<journey>-<step>.png: the whole page, or its first screen when
    the whole page would weigh more than SCREENSHOT_BYTES. Taken in the SQLite run only
    (the demo's database; `make test` runs both databases at once, and two runs must
    not write one file), and replaced in one step (rename)."""
    if ENGINE != "sqlite":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(full_page=True, animations="disabled")
    if len(png) > SCREENSHOT_BYTES:
        png = page.screenshot(full_page=False, animations="disabled")
    path = SCREENSHOTS / f"{journey}-{step}.png"
    partial = path.with_suffix(".part")
    partial.write_bytes(png)
    partial.replace(path)


# --- the keyboard -------------------------------------------------------------------


def _focused(target: Locator) -> bool:
    return bool(target.evaluate("el => el === document.activeElement"))


def assert_focus_visible(page: Page) -> None:
    """The focused element shows a focus indicator: an outline or a box shadow."""
    style = page.evaluate(
        """() => {
            const el = document.activeElement, s = getComputedStyle(el);
            return {tag: el.outerHTML.slice(0, 120), outline: s.outlineStyle,
                    width: s.outlineWidth, shadow: s.boxShadow};
        }"""
    )
    outlined = style["outline"] != "none" and style["width"] not in ("0px", "")
    assert outlined or style["shadow"] != "none", f"no visible focus on {style}"


def tab_to(page: Page, target: Locator) -> None:
    """Press Tab until `target` has the focus (from wherever the focus is: the top of a
    page just loaded), at most MAX_TABS times; then check its focus is visible."""
    target.wait_for(state="attached")
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if _focused(target):
            assert_focus_visible(page)
            return
    raise AssertionError(f"{target} not reached with {MAX_TABS} presses of Tab")


def press(page: Page, target: Locator, key: str = "Enter") -> None:
    """Reach `target` by Tab and activate it: Enter for links and buttons, Space for a
    checkbox."""
    tab_to(page, target)
    page.keyboard.press(key)


def follow(page: Page, target: Locator) -> None:
    """Reach a link or a submit button by Tab and press Enter; wait for the next page."""
    tab_to(page, target)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()


def type_into(page: Page, target: Locator, text: str) -> None:
    """Reach a field by Tab and type `text` (a newline in a textarea with Enter)."""
    tab_to(page, target)
    page.keyboard.type(text)


def download(page: Page, target: Locator) -> Download:
    """Reach a link by Tab, press Enter, and return the download it starts."""
    tab_to(page, target)
    with page.expect_download() as started:
        page.keyboard.press("Enter")
    return started.value


def choose_file(page: Page, target: Locator, path: Path) -> None:
    """Reach a file input by Tab and give it a file. Without JavaScript, Playwright does
    not see the file chooser that Space opens (the operating system's dialog is not
    part of the page anyway): the file is set on the input the keyboard reached."""
    tab_to(page, target)
    target.set_input_files(str(path))
