"""The attention chips in a real (headless) browser: typing a prompt fills the chip row with its
words; choosing one and generating overlays both pictures and says so in both status lines.
Saves artifacts/playground-attention.png. Skipped without playwright or Debian's chromium."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

from test_browser import ARGS, ARTIFACTS, CHROMIUM  # noqa: E402  (one browser set-up for every browser test)
BOTH_ATTENDED = """() => ["#diffusion-status", "#ar-status"].every(s => {
  const text = document.querySelector(s)?.innerText || "";
  return text.includes("done") && text.includes("attention to “star”"); })"""


def test_choosing_a_word_overlays_both_pictures(playground_app, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 2.0)  # the tiny models: time to watch
    _, url = playground_app
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#generate")
        page.locator("#prompt textarea, #prompt input").first.fill("a large red star on the left on a blue background")
        chip = page.locator("#attention-word label", has_text="star")
        chip.wait_for(timeout=10_000)
        assert page.locator("#attention-word label", has_text="background").count() == 1
        chip.click()
        page.click("#generate")
        page.wait_for_function(BOTH_ATTENDED, timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "playground-attention.png"), full_page=True)
        page.locator("#attention-word label", has_text="off").click()  # off again: plain pictures, plain status
        page.wait_for_function("""() => !(document.querySelector("#ar-status")?.innerText || "")
                                  .includes("attention to")""", timeout=20_000)
        browser.close()
