"""The generation orders in a real (headless) browser: choose confidence-first above the
autoregressive panel, Generate, and the panel shows the order, its steps and its network
evaluations, with the teaching text beside it. Saves artifacts/playground-orders.png.
Skipped when playwright or Debian's chromium is not installed (see tests/test_browser.py)."""

import pytest

pytest.importorskip("playwright.sync_api")
from test_browser import ARTIFACTS, BOTH_DONE, app_url, browser, generate, page  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.browser


def test_choose_an_order_and_watch_it_write(page, monkeypatch):
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 1.5)
    ARTIFACTS.mkdir(exist_ok=True)
    assert "confidence" in page.inner_text("#ar-order") and "Orders." in page.inner_text("body")
    page.locator("#ar-order label", has_text="confidence").click()
    generate(page, "a small blue star at the top on a yellow background")
    page.wait_for_function("""() => (document.querySelector("#ar-status")?.innerText || "").includes("confidence order")""",
                           timeout=60_000)
    page.wait_for_function(BOTH_DONE, timeout=60_000)
    status = page.inner_text("#ar-status")
    assert "step 12/12 · confidence order" in status and "12 evaluations" in status, status
    assert "step 12/12" in page.inner_text("#diffusion-status")  # the same prompt, 12 denoising steps beside it
    page.locator("#ar-image").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "playground-orders.png"), full_page=True)
