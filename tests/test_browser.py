"""The page in a real (headless) browser: typing a prompt and pressing Generate makes both
pictures change several times; Stop halts both; unknown words are flagged while typing; a
cached example shows its pictures at once. Saves screenshots into artifacts/.

With PLAYGROUND_SCREENSHOT=1 the page serves the shipped models (assets/) instead of tiny
random ones and a mid-generation screenshot is written to assets/screenshot.png.
Skipped when playwright or Debian's chromium is not installed (see shared notes).
"""

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
REAL_SCREENSHOT = os.environ.get("PLAYGROUND_SCREENSHOT") == "1"

# Records every picture each panel shows, by its <img> srcs, every 10 ms. (Diffusion: the x0
# guess and the noisy state together; the tiny models' x0 guesses often repeat.)
WATCH_PICTURES = """() => {
  const panels = {diffusion: ["#diffusion-image img", "#diffusion-noisy img"], ar: ["#ar-image img"]};
  window.__srcs = {diffusion: [], ar: []};
  clearInterval(window.__watch);
  window.__watch = setInterval(() => {
    for (const [key, selectors] of Object.entries(panels)) {
      const srcs = selectors.map(s => document.querySelector(s)?.src || "");
      const seen = srcs.join(" "), list = window.__srcs[key];
      if (srcs.every(Boolean) && list[list.length - 1] !== seen) list.push(seen);
    }
  }, 10);
}"""
BOTH_DONE = """() => ["#diffusion-status", "#ar-status"].every(
  s => (document.querySelector(s)?.innerText || "").includes("done"))"""


@pytest.fixture(scope="module")
def app_url(request):
    if not REAL_SCREENSHOT:
        return request.getfixturevalue("playground_app")[1]
    engine = request.getfixturevalue("real_engine")  # skips until the real weights exist
    import app

    demo = app.build_demo(engine_loader=lambda: engine, cache_examples=False)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    request.addfinalizer(demo.close)
    return url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_url)
    page.wait_for_selector("#generate")
    yield page
    page.close()


def generate(page, prompt: str) -> None:
    page.locator("#prompt textarea, #prompt input").first.fill(prompt)
    page.evaluate(WATCH_PICTURES)
    page.click("#generate")


def pictures_seen(page) -> dict:
    return page.evaluate("() => window.__srcs")


def test_both_pictures_change_while_generating(page, monkeypatch):
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 2.5)  # the tiny models: time for the page to follow
    ARTIFACTS.mkdir(exist_ok=True)
    generate(page, "a large red circle on the left on a yellow background")
    if REAL_SCREENSHOT:  # the lead's screenshot for the README: both runs about half way
        page.wait_for_function("""() => {
          const m = (document.querySelector("#ar-status")?.innerText || "").match(/token (\\d+)\\//);
          return m && +m[1] >= 110; }""", timeout=60_000)
        page.screenshot(path=str(REPO / "assets" / "screenshot.png"), full_page=False)
    page.wait_for_function(BOTH_DONE, timeout=60_000)
    seen = pictures_seen(page)
    assert len(seen["diffusion"]) >= 4 and len(seen["ar"]) >= 4, {k: len(v) for k, v in seen.items()}
    page.wait_for_function("""() => ["diffusion.gif", "autoregressive.gif", "comparison.png"].every(
      name => document.querySelector(`#downloads [aria-label="${name}"]`))""", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_stop_halts_both_panels(page, playground_app, monkeypatch):
    if REAL_SCREENSHOT:
        pytest.skip("run with the tiny models")
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 6.0)  # long enough to press Stop half way
    demo, _ = playground_app
    generate(page, "a small blue star at the top")
    page.wait_for_function("() => window.__srcs.diffusion.length >= 2 && window.__srcs.ar.length >= 2",
                           timeout=30_000)
    page.click("#stop")
    run = demo.playground.runs.latest()
    assert run.done.wait(timeout=5)
    assert run.ended_at - run.stop_requested_at < 0.5 and not run.complete
    page.wait_for_function("""() => (document.querySelector("#diffusion-status")?.innerText || "")
                              .includes("stopped")""", timeout=10_000)  # the stopped runs' last frames
    time.sleep(0.3)
    before = {k: len(v) for k, v in pictures_seen(page).items()}
    time.sleep(1.5)
    assert {k: len(v) for k, v in pictures_seen(page).items()} == before, "a picture changed after Stop"
    page.screenshot(path=str(ARTIFACTS / "playground-stopped.png"), full_page=True)


def test_unknown_words_are_flagged_while_typing(page):
    page.locator("#prompt textarea, #prompt input").first.press_sequentially("a red dog", delay=20)
    page.wait_for_function("""() => (document.querySelector("#prompt-feedback")?.innerText || "")
                              .includes("dog")""", timeout=10_000)


def test_cached_example_shows_at_once(page):
    if REAL_SCREENSHOT:
        pytest.skip("examples are not cached in this mode")
    page.get_by_text("a large red circle on the left", exact=True).first.click()
    started = time.perf_counter()
    page.wait_for_function("""() => document.querySelector("#diffusion-image img")
                              && document.querySelector("#ar-image img")""", timeout=10_000)
    assert time.perf_counter() - started < 3


# ----------------------------------------------------------------------------- editing

EDIT_DONE = """() => ["#diffusion-status", "#ar-status"].every(
  s => (document.querySelector(s)?.innerText || "").includes("done"))
  && (document.querySelector("#ar-status")?.innerText || "").includes("kept")"""


def open_edit_tab(page) -> None:
    page.get_by_role("tab", name="Edit").click()
    page.wait_for_selector("#edit-button", state="visible")


def upload_picture(page, path: Path, tries: int = 3) -> None:
    """Give the editor's file input a picture and wait for its POST to /upload (seconds on two
    busy cores). In two full local runs the POST never came within 30 s, though the same test
    passes alone: the file is given again, up to `tries` times, before the test fails."""
    for attempt in range(1, tries + 1):
        try:
            with page.expect_response(lambda r: "/upload" in r.url and r.request.method == "POST", timeout=20_000):
                page.locator("#edit-picture input[type=file]").set_input_files(str(path))
            return
        except playwright_api.TimeoutError:
            if attempt == tries:
                raise


def start_edit(page, prompt: str) -> None:
    page.locator("#edit-prompt textarea, #edit-prompt input").first.fill(prompt)
    page.evaluate(WATCH_PICTURES)
    page.click("#edit-button")


def test_edit_an_uploaded_picture(page, playground_app, tmp_path, monkeypatch):
    if REAL_SCREENSHOT:
        pytest.skip("run with the tiny models")
    import numpy as np
    from PIL import Image

    from playground.world.shapes import Scene, SceneObject, render

    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 2.0)
    picture = render(Scene("yellow", (SceneObject("red", "circle", "large", "left"),))).repeat(2, 0).repeat(2, 1)
    Image.fromarray(np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)])).save(tmp_path / "upload.png")
    open_edit_tab(page)
    upload_picture(page, tmp_path / "upload.png")
    time.sleep(1.5)  # the editor takes the uploaded file as its value
    start_edit(page, "a large blue circle on the left on a yellow background")
    page.wait_for_function(EDIT_DONE, timeout=60_000)
    assert "128 kept" in page.inner_text("#ar-status") and "skipped" in page.inner_text("#diffusion-status")
    seen = pictures_seen(page)
    assert len(seen["diffusion"]) >= 3 and len(seen["ar"]) >= 3, {k: len(v) for k, v in seen.items()}
    run = playground_app[0].playground.runs.latest()
    assert np.array_equal(run.edit.picture, picture[::2, ::2]) and run.edit.mask is None
    page.screenshot(path=str(ARTIFACTS / "playground-edit.png"), full_page=True)


def test_edit_this_result_with_a_painted_region(page, playground_app, monkeypatch):
    if REAL_SCREENSHOT:
        pytest.skip("run with the tiny models")
    import numpy as np

    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 1.0)
    demo, _ = playground_app
    generate(page, "a small blue star at the top")
    page.wait_for_function(BOTH_DONE, timeout=60_000)
    generated = demo.playground.runs.latest()
    page.click("#edit-this-ar")  # "Edit this" under the autoregressive picture: the Edit tab opens with it
    page.wait_for_selector("#edit-button", state="visible", timeout=10_000)
    time.sleep(1.5)  # both canvases hold the picture
    page.locator("#edit-mask button[aria-label=Brush]").click()
    box = page.locator("#edit-mask canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y)
    page.mouse.down()
    page.mouse.move(x + 20, y + 10, steps=8)
    page.mouse.up()
    time.sleep(0.5)
    start_edit(page, "a small red star at the top on a white background")
    page.wait_for_function(EDIT_DONE, timeout=60_000)
    assert "repainting the outlined region" in page.inner_text("#diffusion-status")
    run = demo.playground.runs.latest()
    assert np.array_equal(run.edit.picture, generated.autoregressive.frames[-1].image())
    assert run.edit.mask is not None and 0 < run.autoregressive.frames[-1].total < 256
    page.screenshot(path=str(ARTIFACTS / "playground-edit-region.png"), full_page=True)


def test_an_edit_example_fills_the_picture_and_prompt(page, playground_app, monkeypatch):
    if REAL_SCREENSHOT:
        pytest.skip("run with the tiny models")
    import numpy as np

    from playground.ui import teaching
    from playground.world.shapes import render, scene_from_prompt

    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 1.0)
    before, after, label = teaching.EDIT_EXAMPLES[0]
    open_edit_tab(page)
    page.get_by_text(label, exact=True).first.click()
    page.wait_for_function(f"""() => (document.querySelector("#edit-prompt textarea")?.value || "") === {after!r}""",
                           timeout=10_000)
    time.sleep(1.0)  # the picture reaches both canvases
    page.evaluate(WATCH_PICTURES)
    page.click("#edit-button")
    page.wait_for_function(EDIT_DONE, timeout=60_000)
    run = playground_app[0].playground.runs.latest()
    assert np.array_equal(run.edit.picture, render(scene_from_prompt(before))) and run.edit.mask is None
