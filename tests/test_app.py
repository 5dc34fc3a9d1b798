"""The playground app through its API, as gradio_client sees it: /generate streams both runs,
the same seed gives the same pictures, bad input gets a clean message, Stop stops the compute,
and the slider and downloads work on the finished runs. Tiny random models (tests/conftest.py)."""

import subprocess
import sys
import time

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from playground.runtime.store import RunStore
from playground.ui import gradio_fixes, views
from playground.ui.handlers import Playground

PICTURE_SIZE = (256, 256)  # 64x64 shown 4x


@pytest.fixture(scope="module")
def client(playground_app):
    _, url = playground_app
    return Client(url, verbose=False, analytics_enabled=False)


def is_picture(value) -> bool:
    """An image output that was sent (gr.skip() arrives as an update dict)."""
    return isinstance(value, str) and value.endswith(".png")


def output(result, name: str):
    """One named output of /generate (see views.OUTPUTS)."""
    return result[views.OUTPUTS.index(name)]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def run_generate(client, **kwargs):
    """All the updates of one /generate call, in order."""
    job = client.submit(api_name="/generate", **kwargs)
    updates = list(job)
    return updates, job.result()


def test_import_app_is_light():
    code = "import app, sys; assert not {'torch', 'playground.ui.handlers', 'playground.runtime.run'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_generate_endpoint_takes_keywords(client):
    info = client.view_api(return_format="dict", print_info=False)
    params = {p["parameter_name"]: p for p in info["named_endpoints"]["/generate"]["parameters"]}
    assert list(params)[:2] == ["prompt", "seed"]
    assert all(p["parameter_has_default"] for name, p in params.items() if name != "prompt")
    returns = info["named_endpoints"]["/generate"]["returns"]
    assert [r["component"] for r in returns[:2]] == ["Image", "Image"]


def test_generate_streams_both_runs(client, monkeypatch):
    # The tiny models are paced to 1 s a run; on a busy machine the page may then skip frames.
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 2.5)
    updates, final = run_generate(client, prompt="a large red circle on the left", seed=0)
    before_final = updates[:-1]
    diffusion_updates = sum(is_picture(u[0]) for u in before_final)
    ar_updates = sum(is_picture(u[1]) for u in before_final)
    assert diffusion_updates >= 6 and ar_updates >= 10, (diffusion_updates, ar_updates, output(final, "stats"))
    for path in final[:3]:
        assert Image.open(path).size == PICTURE_SIZE
    assert output(final, "diffusion_status").startswith("✓ done · step 12/12")
    assert output(final, "ar_status").startswith("✓ done · token 256/256")
    assert output(final, "stats")["updates"]["autoregressive"] >= 10  # the server's own count


def test_same_seed_same_pictures(client):
    _, first = run_generate(client, prompt="a small blue star", seed=7)
    _, again = run_generate(client, prompt="a small blue star", seed=7)
    _, other = run_generate(client, prompt="a small blue star", seed=8)
    for i in (0, 1):
        assert open(first[i], "rb").read() == open(again[i], "rb").read()
    assert not np.array_equal(pixels(first[1]), pixels(other[1]))


def test_regional_prompts_reach_both_samplers(client):
    two = "a red circle on the left and a blue star on the right"
    _, default = run_generate(client, prompt=two, seed=3)
    _, changed = run_generate(client, prompt=two, seed=3, regional=0, ar_regional=1)
    for i in (0, 1):  # the diffusion and the autoregressive picture
        assert not np.array_equal(pixels(default[i]), pixels(changed[i]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt="a red circle " * 1000), "at most 1,000 are allowed"),
        (dict(prompt="a red circle", num_inference_steps=500), "num_inference_steps must be between 1 and 100"),
        (dict(prompt="a red circle", temperature=-1), "temperature must be between"),
        (dict(prompt="a red circle", top_p=0), "top_p must be between"),
        (dict(prompt="a red circle", regional=-0.5), "regional must be between 0.0 and 1.0"),
        (dict(prompt="a red circle", ar_regional=2), "ar_regional must be between 0.0 and 1.0"),
        (dict(prompt="a red circle", scheduler="magic"), "scheduler must be one of"),
        (dict(prompt="a red circle", seed=1.5), "seed must be a whole number"),
    ],
)
def test_bad_input_gets_a_clean_message(client, kwargs, message):
    with pytest.raises(AppError, match=message) as info:
        client.predict(api_name="/generate", **{"seed": 0, **kwargs})
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("prompt", ["", "🦄🌈✨", "dog cat"])
def test_prompts_without_known_words_draw_unconditionally(client, prompt):
    result = client.predict(prompt=prompt, seed=0, api_name="/generate")
    assert Image.open(result[0]).size == PICTURE_SIZE and Image.open(result[1]).size == PICTURE_SIZE


def test_queue_still_works_after_errors(client):
    with pytest.raises(AppError):
        client.predict(prompt="x" * 10_000, seed=0, api_name="/generate")
    result = client.predict(prompt="a red circle", seed=0, api_name="/generate")
    assert is_picture(result[0])


@pytest.mark.parametrize("how", ["stop button", "cancel only"])
def test_stop_halts_the_compute(playground_app, client, how, monkeypatch):
    """The page's Stop calls /stop and cancels the event; a closed connection only cancels."""
    demo, _ = playground_app
    monkeypatch.setattr("playground.runtime.run.MIN_RUN_SECONDS", 5.0)  # time to stop it, however busy the machine
    job = client.submit(prompt="a green square", seed=1, api_name="/generate")
    for n, _ in enumerate(job):
        if n == 3:
            break
    run = demo.playground.runs.latest()
    if how == "stop button":
        client.predict(api_name="/stop")
    job.cancel()
    assert run.done.wait(timeout=2)
    assert run.ended_at - run.stop_requested_at < 0.5, "the compute went on for more than 0.5 s"
    assert not run.complete
    steps = [len(t.frames) for t in run.tracks]
    time.sleep(0.3)
    assert [len(t.frames) for t in run.tracks] == steps


def test_scrub_and_downloads(client):
    _, final = run_generate(client, prompt="a yellow heart", seed=2)
    run_key = output(final, "run_key")
    start = client.predict(0.0, run_key, api_name="/scrub")
    middle = client.predict(0.5, run_key, api_name="/scrub")
    end = client.predict(1.0, run_key, api_name="/scrub")
    assert start[3].startswith("step 1/12") and start[4].startswith("token 1/256")
    assert "step 6/12" in middle[3] or "step 7/12" in middle[3]
    for i in (0, 1):
        assert np.array_equal(pixels(end[i]), pixels(final[i]))
    assert not np.array_equal(pixels(start[1]), pixels(end[1]))

    files = client.predict(run_key, api_name="/downloads")
    names = sorted(p.rsplit("/", 1)[-1] for p in files)
    assert {"autoregressive.gif", "comparison.png", "diffusion.gif"} <= set(names)
    gif = Image.open(next(p for p in files if p.endswith("diffusion.gif")))
    assert gif.n_frames > 1  # (identical frames in a row are merged)


def test_scrub_recomputes_a_forgotten_run(playground_app, client):
    demo, _ = playground_app
    _, final = run_generate(client, prompt="a white square", seed=4)
    run_key = output(final, "run_key")
    demo.playground.runs = RunStore()  # as after many other runs: this one is forgotten
    end = client.predict(1.0, run_key, api_name="/scrub")
    assert np.array_equal(pixels(end[1]), pixels(final[1]))


def test_prompt_feedback_flags_unknown_words():
    assert "✓" in views.prompt_feedback("a big red circle on the left")
    assert "~~dog~~" in views.prompt_feedback("a red dog")
    assert "unconditional" in views.prompt_feedback("")
    assert "unconditional" in views.prompt_feedback("🦄")
    assert "at most 1,000" in views.prompt_feedback("a" * 10_000)


def test_missing_models_give_a_clean_message(tmp_path):
    from playground.engine import load_engine

    playground = Playground(lambda: load_engine(tmp_path))
    with pytest.raises(gr.Error, match="incomplete"):
        next(playground.generate("a red circle", 0))


@pytest.mark.parametrize("name, flag", [("PLAYGROUND_WORKERS", "--workers"), ("PLAYGROUND_PORT", "--port"),
                                        ("PLAYGROUND_MAX_SESSIONS", "--max-sessions"),
                                        ("PLAYGROUND_QUEUE_SIZE", "--queue-size")])
def test_bad_numbers_in_the_environment_give_a_usage_error(monkeypatch, capsys, name, flag):
    import app

    monkeypatch.setenv(name, "four")
    with pytest.raises(SystemExit) as exit_info:
        app.parse_args([])
    assert exit_info.value.code == 2
    assert f"argument {flag}: invalid int value: 'four'" in capsys.readouterr().err
    monkeypatch.setenv(name, "3")
    assert getattr(app.parse_args([]), flag[2:].replace("-", "_")) == 3


@pytest.mark.parametrize("flag", ["--max-sessions", "--queue-size"])
def test_a_server_that_keeps_no_visitor_is_refused(capsys, flag):
    import app

    with pytest.raises(SystemExit) as exit_info:
        app.parse_args([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be at least 1, not 0" in capsys.readouterr().err


@pytest.mark.integration
def test_client_gets_final_pictures_that_match_the_prompt(real_engine):
    """Through gradio_client, with the shipped weights, the final pictures of /generate match
    their prompt by the shapes-world checker. One fixed prompt and seed
    at which both models draw it (runs are deterministic): this checks the whole path, prompt
    to page to client, not how often the models succeed; that is `python -m playground.evaluation.evaluate`
    (README Figures). Retrained weights may need another seed here."""
    import app
    from playground.world import shapes

    prompt, seed = "a large yellow square in the center on a black background", 0
    demo = app.build_demo(engine_loader=lambda: real_engine, cache_examples=False)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        result = Client(url, verbose=False, analytics_enabled=False).predict(prompt=prompt, seed=seed, api_name="/generate")
    finally:
        demo.close()
    for path, name in zip(result[:2], ("diffusion", "autoregressive")):
        picture = pixels(path)[::4, ::4]  # back to 64x64 (shown 4x, nearest neighbour)
        verdict = shapes.check(picture, prompt)
        assert verdict, f"{name}: {verdict.reasons}"


def test_the_queue_looks_for_events_every_10_ms_not_every_1_ms(playground_app):
    """gradio's queue polls every 1 ms while it has nothing to start (7 % of a core on the
    2-core machine, idle or not); the page's polls every gradio_fixes.QUEUE_POLL_S, and still serves."""
    import gradio as gr

    demo, _ = playground_app
    assert demo._queue.sleep_when_free == gradio_fixes.QUEUE_POLL_S == 0.01
    plain = gr.Blocks().queue()
    default = plain._queue.sleep_when_free
    gradio_fixes.calm_queue(plain, poll_s=0.02)
    assert default < 0.02 and plain._queue.sleep_when_free == 0.02
    fresh = gr.Blocks()  # gradio sets a queue up even before demo.queue()
    gradio_fixes.calm_queue(fresh)
    assert fresh._queue.sleep_when_free == gradio_fixes.QUEUE_POLL_S
    from types import SimpleNamespace

    gradio_fixes.calm_queue(SimpleNamespace())  # no queue attribute (another gradio): nothing changes, no error
    gradio_fixes.calm_queue(SimpleNamespace(_queue=SimpleNamespace()))  # a queue without the attribute: the same


def test_the_inputs_are_the_settings_fields_in_the_apis_order(client):
    """The handlers' parameters, app.py's inputs lists and the API all come from the settings
    dataclasses (ui/inputs.py); the order of /generate and /edit stays what callers rely on."""
    from dataclasses import fields

    from playground.settings import MODEL_FIELDS, EditSettings, GenerationSettings
    from playground.ui.inputs import EDIT_INPUTS, EDIT_SETTINGS, GENERATE_INPUTS, GENERATE_SETTINGS

    assert sorted(GENERATE_SETTINGS) == sorted(f.name for f in fields(GenerationSettings))
    assert sorted(EDIT_SETTINGS + MODEL_FIELDS) == sorted(f.name for f in fields(EditSettings))
    shared = ["num_inference_steps", "scheduler", "guidance_scale", "temperature", "top_k", "top_p",
              "ar_guidance_scale"]
    assert list(GENERATE_INPUTS) == ["prompt", "seed", *shared, "diffusion_model", "autoregressive_model",
                                     "regional", "ar_regional", "ar_order", "ar_steps"]
    assert list(EDIT_INPUTS) == ["picture", "prompt", "mask", "seed", "strength", "keep_rows", *shared,
                                 "regional", "ar_regional", "ar_order", "ar_steps"]
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for endpoint, names in (("/generate", GENERATE_INPUTS), ("/edit", EDIT_INPUTS)):
        assert [p["parameter_name"] for p in endpoints[endpoint]["parameters"]] == list(names)


@pytest.mark.parametrize("environ, expected", [
    ({}, ("127.0.0.1", "7860")),
    ({"PLAYGROUND_HOST": "0.0.0.0", "PLAYGROUND_PORT": "8000"}, ("0.0.0.0", "8000")),
    ({"SPACE_ID": "someone/playground", "PLAYGROUND_HOST": "127.0.0.1"}, ("0.0.0.0", "7860")),
    ({"GRADIO_SERVER_NAME": "::", "GRADIO_SERVER_PORT": "7861", "PLAYGROUND_HOST": "127.0.0.1",
      "PLAYGROUND_PORT": "8000"}, ("::", "7861")),
])
def test_launch_options_follow_gradios_variables_then_a_space_then_ours(environ, expected):
    import app

    options = app.launch_options(environ)
    assert (options["server_name"], options["server_port"]) == expected


def test_on_a_space_the_app_serves_where_the_space_says(monkeypatch, tiny_assets):
    """A Hugging Face Space sets SPACE_ID, GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT=7860,
    and its proxy reaches the app only there: a PLAYGROUND_HOST left at 127.0.0.1 must not win.
    The page is built as `python app.py` builds it; the launch itself is recorded, not run."""
    import app

    for name, value in {"SPACE_ID": "someone/playground", "GRADIO_SERVER_NAME": "0.0.0.0",
                        "GRADIO_SERVER_PORT": "7860", "PLAYGROUND_HOST": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PLAYGROUND_PORT", raising=False)
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **options: launched.update(options, demo=demo))
    app.main(["--assets", str(tiny_assets), "--workers", "0"])
    assert (launched["server_name"], launched["server_port"]) == ("0.0.0.0", 7860)
    assert isinstance(launched["demo"], gr.Blocks) and launched["demo"].playground.runs is not None
    assert app.parse_args(["--host", "127.0.0.1"]).host == "127.0.0.1"  # an explicit --host still wins


def test_a_visitor_forgotten_past_max_sessions_generates_again(tiny_engine):
    """With room for one visitor's state (app.py --max-sessions 1), a second visitor makes the
    server forget the first; the first visitor's next Generate still streams its pictures."""
    import app

    demo = app.build_demo(engine_loader=lambda: tiny_engine, cache_examples=False)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                            state_session_capacity=1)
    try:
        first, second = (Client(url, verbose=False, analytics_enabled=False, download_files=False) for _ in range(2))
        done = lambda client, seed: client.submit(prompt="a red circle", seed=seed, api_name="/generate").result()  # noqa: E731
        done(first, 1)
        done(second, 2)
        assert first.session_hash not in demo.state_holder.session_data  # forgotten
        final = done(first, 3)
        assert all(final[i] and final[i]["path"].endswith(".png") for i in (0, 1))
        assert len(demo.state_holder.session_data) == 1
    finally:
        demo.close()


def test_the_queue_bound_reaches_gradio_and_the_batch_workers(tiny_engine):
    import app

    demo = app.build_demo(engine_loader=lambda: tiny_engine, cache_examples=False, queue_size=3)
    assert demo.playground.max_queue == 3 and demo._queue.max_size == 3
