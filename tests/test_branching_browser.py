""""What if" in a real (headless) browser: Generate, drag the slider back, press Branch here; the
branch row shows both branch pictures and where they split. Saves artifacts/playground-branch.png.
Skipped when playwright or Debian's chromium is not installed (see tests/test_browser.py)."""

import pytest

pytest.importorskip("playwright.sync_api")
from test_browser import ARTIFACTS, BOTH_DONE, app_url, browser, generate, page  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.browser

BRANCH_DONE = """() => (document.querySelector("#branch-status")?.innerText || "").includes("✓ done")
  && ["#branch-diffusion img", "#branch-ar img"].every(s => document.querySelector(s)?.src)"""


def test_run_scrub_and_branch(page, monkeypatch):
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 0.5)
    ARTIFACTS.mkdir(exist_ok=True)
    generate(page, "a large red circle on the left on a yellow background")
    page.wait_for_function(BOTH_DONE, timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#scrub input[type=range]').disabled", timeout=10_000)
    scrub = page.locator("#scrub input[type=number]").first
    scrub.fill("0.4")
    scrub.press("Enter")
    page.wait_for_function("""() => (document.querySelector("#diffusion-status")?.innerText || "").includes("step 5/12")""",
                           timeout=20_000)
    page.locator("#branch-seed input").first.fill("7")
    page.click("#branch-button")
    page.wait_for_function(BRANCH_DONE, timeout=60_000)
    status = page.inner_text("#branch-status")
    assert "branched at step 5 of 12 / token 103 of 256" in status and "new seed 7" in status
    page.locator("#branch-row").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "playground-branch.png"), full_page=True)
