"""The web page in a real browser: headless Chromium (Debian's package at /usr/bin/chromium) driven
by Playwright. Type a question, click, see passages; swap with the admin token, see the version change.
Skipped where no browser or no Playwright is installed; .ci/run installs both so CI runs it."""
from __future__ import annotations

import os

import pytest

from atlas_kit.serve import create_app
from tests.serve.conftest import TOKEN, running_server

CHROMIUM = os.environ.get("ATLAS_KIT_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser at {CHROMIUM} (apt-get install chromium)"),
]
sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright").sync_playwright


def test_ask_and_swap_in_the_page(world):
    app = create_app(world.atlas("toy@v1"), world.store, admin_token=TOKEN, window_ms=1.0)
    with running_server(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(base + "/")
            version = page.locator("#version")
            page.wait_for_function("document.getElementById('version').dataset.ref === 'toy@v1'")

            page.fill("#question", "What is the capital of Zorvania?")
            page.fill("#k", "3")
            page.click("#ask")
            passages = page.locator("#passages li.passage")
            passages.first.wait_for()
            assert passages.count() == 3
            assert all(pid.startswith("v1-") for pid in passages.evaluate_all("els => els.map(e => e.dataset.id)"))
            assert page.locator("#answer-version").inner_text() == "toy@v1"
            assert page.locator("#passages .score").first.inner_text().strip()

            # a swap without the token is refused and shown; with it the version changes
            page.select_option("#versions", "toy@v2")
            page.click("#swap")
            page.wait_for_function("document.getElementById('swap-status').textContent.includes('refused')")
            assert version.inner_text() == "toy@v1"
            page.fill("#token", TOKEN)
            page.click("#swap")
            page.wait_for_function("document.getElementById('version').dataset.ref === 'toy@v2'")
            assert "now serving toy@v2" in page.locator("#swap-status").inner_text()

            page.click("#ask")
            page.wait_for_function("document.getElementById('answer-version').textContent === 'toy@v2'")
            assert all(pid.startswith("v2-") for pid in passages.evaluate_all("els => els.map(e => e.dataset.id)"))
        finally:
            browser.close()
