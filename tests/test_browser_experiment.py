"""The Experiment tab in a real (headless) browser: a prompt and 3 seeds fill both grids with
captioned pictures and the table of match shares. Saves artifacts/playground-experiment.png.
Tiny random models; skipped when playwright or Debian's chromium is not installed."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

from test_browser import ARGS, ARTIFACTS, CHROMIUM  # noqa: E402  (one browser set-up for every browser test)
SUMMARY_DONE = """() => {
  const text = document.querySelector("#experiment-summary")?.innerText || "";
  return text.includes("diffusion") && /autoregressive\\s+3 of 3/.test(text);
}"""


@pytest.fixture(scope="module")
def page(playground_app):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(playground_app[1])
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def test_experiment_tab_fills_both_grids(page):
    page.get_by_role("tab", name="Experiment").click()
    page.locator("#experiment-prompt textarea, #experiment-prompt input").first.fill(
        "a large red circle on the left on a yellow background")
    page.locator("#experiment-seeds input").first.fill("3")
    page.locator("#experiment-run").click()
    page.wait_for_function(SUMMARY_DONE, timeout=120_000)
    for grid in ("#experiment-diffusion", "#experiment-ar"):
        page.wait_for_function(f"() => document.querySelectorAll('{grid} img').length >= 3", timeout=30_000)
        captions = page.locator(f"{grid} .caption-label, {grid} figcaption").all_inner_texts()
        assert any(c.startswith("seed ") for c in captions) or captions == [], captions
    summary = page.locator("#experiment-summary").inner_text()
    assert "95 % interval" in summary and "s / picture" in summary
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground-experiment.png"), full_page=True)


def test_a_verdict_appears_under_each_picture(page):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#prompt textarea, #prompt input").first.fill("a large red circle on the left")
    page.locator("#generate").click()
    for verdict in ("#diffusion-verdict", "#ar-verdict"):
        page.wait_for_function(f"""() => /matches the prompt|does not match/.test(
            document.querySelector("{verdict}")?.innerText || "")""", timeout=60_000)
        assert "on the left" in page.locator(verdict).inner_text()
