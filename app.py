"""The playground web app: one prompt, a diffusion model and an autoregressive model painting it
side by side and live. This file is the page layout and its wiring only: what happens on each
event is in playground/ui/handlers.py, the explanations in playground/ui/teaching.py.

    python app.py [--host 127.0.0.1] [--port 7860] [--assets assets/] [--share]
                  [--diffusion-model ID] [--autoregressive-model ID] [--preview-vae ID]

Environment: PLAYGROUND_HOST, PLAYGROUND_PORT, PLAYGROUND_ASSETS, PLAYGROUND_DIFFUSION_MODEL,
PLAYGROUND_AUTOREGRESSIVE_MODEL and PLAYGROUND_PREVIEW_VAE set the same defaults; gradio's own
GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, where set (a Hugging Face Space sets them), come
first (see launch_options). Real models
(README: "Running real models") get a model menu above each panel; one that cannot be loaded is
reported on the page and the embedded model takes its place. Edits run on the embedded models.
The API (gradio_client) has two streaming endpoints, /generate (prompt, seed, ... by keyword)
and /edit (picture, prompt, mask, seed, strength, keep_rows, ...: picture and mask are image
editor values, {"background": handle_file(path), "layers": [], "composite": None}; the mask's
painted layers are the region); their first two outputs are the diffusion picture and the
autoregressive picture, their last two the checker's verdicts. /experiment (prompt, seeds, ...)
streams the Experiment tab's grids and table (playground/ui/experiment.py). /attention (run_key,
word, fraction) returns both pictures with the word's attention map over them (ui/attention.py).
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Mapping

import gradio as gr  # torch and the models are imported by build_demo / loaded on first use

CSS = """
#diffusion-image img, #diffusion-noisy img, #ar-image img, #edit-picture img, #edit-mask img,
#edit-picture canvas, #edit-mask canvas { image-rendering: pixelated; }
#diffusion-image img, #diffusion-noisy img { object-fit: contain; }
#ar-candidates table { font-size: 0.85em; }
"""


def prompt_row(label: str, box_id: str, action: str, action_id: str, stop_id: str, placeholder: str):
    """A prompt box with its action button and a Stop button, in one row: (box, action, stop)."""
    with gr.Row(equal_height=True):
        box = gr.Textbox(label=label, elem_id=box_id, scale=6, lines=1, placeholder=placeholder)
        go = gr.Button(action, variant="primary", elem_id=action_id, scale=1)
        halt = gr.Button("Stop", variant="stop", elem_id=stop_id, scale=1)
    return box, go, halt


def build_demo(engine_loader=None, cache_examples: bool = True, models: dict | None = None,
               problems: list[str] | None = None, workers: int = 0, batch=None,
               queue_size: int | None = None) -> gr.Blocks:
    """The page. `engine_loader()` returns an Engine (default: load_engine, which reads
    PLAYGROUND_ASSETS); it is called once, on first use, and the engine shared by all sessions.
    `models` ({"diffusion": [...], "autoregressive": [...]}, default first) fills the model
    menus, shown where there is a choice; `problems` are shown at the top of the page.
    `workers`: processes that run the embedded models' samplers (0: threads of this process);
    `batch` (a runtime.batching.BatchConfig): instead, every request in two batch workers;
    `queue_size`: requests let in at once, past it "queue full" (default handlers.QUEUE_SIZE)."""
    from playground.diffusion.model import SCHEDULERS
    from playground.hub.common import on_gpu
    from playground.settings import AR_ORDERS, LIMITS, EditSettings, GenerationSettings, suggested_diffusion_settings
    from playground.ui import teaching
    from playground.ui.attention import attention_chips, wire_attention
    from playground.ui.branching import branch_row
    from playground.ui.examples import edit_example_value, edit_examples, examples_cache_dir
    from playground.ui.experiment import experiment_tab, wire_experiment
    from playground.ui.gradio_fixes import calm_queue, picture_editor
    from playground.ui.handlers import DEFAULT_CONCURRENCY, QUEUE_SIZE, Playground
    from playground.ui.inputs import EDIT_INPUTS, GENERATE_INPUTS, edit_timeline, mask_canvas, model_settings
    from playground.ui.views import EXAMPLE_OUTPUTS, OUTPUTS, SCRUB_OUTPUTS, prompt_feedback
    from playground.world.shapes import PALETTE

    PALETTE_HEX = ["#%02x%02x%02x" % rgb for rgb in PALETTE.values()]  # the brush: the colours the models know

    queue_size = queue_size or QUEUE_SIZE
    pg = Playground(engine_loader, workers=workers, batch=batch, max_queue=queue_size)
    # The steps and guidance fields start at what suits the default diffusion model (a turbo model: 2, 0)
    defaults = GenerationSettings(**suggested_diffusion_settings(((models or {}).get("diffusion") or [""])[0]))
    edit_defaults = EditSettings()
    out: dict[str, gr.components.Component] = {}  # the outputs of Generate, by views.OUTPUTS name
    setting: dict[str, gr.components.Component] = {}  # the settings' fields, by EditSettings field name

    def number(name: str, label: str) -> gr.Number:
        # No minimum/maximum on purpose: inputs.parse_settings explains out-of-range values itself.
        low, high = LIMITS[name]
        return gr.Number(getattr(defaults, name), label=label, info=f"{low} to {high:,}", elem_id=name)

    def model_menu(kind: str, label: str) -> gr.Dropdown:
        choices = (models or {}).get(kind) or [""]
        return gr.Dropdown(choices, value=choices[0], label=label, elem_id=f"{kind}-model", visible=len(choices) > 1,
                           allow_custom_value=True)  # so that a wrong name gets our message, not gradio's

    if "GRADIO_EXAMPLES_CACHE" not in os.environ:  # gradio reads it when Examples are made
        os.environ["GRADIO_EXAMPLES_CACHE"] = examples_cache_dir()
    with gr.Blocks(title="Diffusion vs autoregressive: live", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(teaching.INTRO)
        if problems:
            gr.Markdown("\n".join(f"⚠️ {p}" for p in problems), elem_id="model-problems")
        if any(len(choices) > 1 for choices in (models or {}).values()):
            gr.Markdown(teaching.REAL_MODELS_NOTE, elem_id="real-models-note")
        with gr.Tabs(elem_id="mode") as tabs:
            with gr.Tab("Generate", id="generate", elem_id="generate-tab"):
                prompt, generate, stop = prompt_row("Prompt", "prompt", "Generate", "generate", "stop",
                                                    "a large red circle on the left on a yellow background")
                feedback = gr.Markdown(elem_id="prompt-feedback")
                chips = attention_chips()  # a prompt word: where each model attends to it
            with gr.Tab("Edit", id="edit", elem_id="edit-tab"):
                gr.Markdown(teaching.EDIT_INTRO)
                with gr.Row():
                    edit_picture = picture_editor(
                        label="1. Picture to edit: upload, draw, or “Edit this” a result",
                        sources=("upload", "clipboard"), canvas_size=(256, 256), format="png", height=330,
                        brush=gr.Brush(default_size=8, colors=PALETTE_HEX, default_color=PALETTE_HEX[0]), elem_id="edit-picture",
                    )
                    edit_mask = picture_editor(
                        label="2. Region to repaint (optional): paint over it", sources=(),
                        transforms=(), layers=False, format="png", height=330, elem_id="edit-mask",
                        brush=gr.Brush(default_size=12, colors=["#ff00ff"], default_color="#ff00ff", color_mode="fixed"),
                    )
                edit_prompt, edit, edit_stop = prompt_row(
                    "New prompt (the whole picture you want)", "edit-prompt", "Edit", "edit-button", "edit-stop",
                    "a large blue circle on the left on a yellow background",
                )
                with gr.Row():
                    with gr.Column():
                        setting["strength"] = gr.Slider(
                            0.05, 1.0, value=edit_defaults.strength, step=0.05, elem_id="strength",
                            label="Diffusion strength: how far the picture is noised")
                        timeline = gr.Markdown(edit_timeline(edit_defaults.strength, defaults.num_inference_steps),
                                               elem_id="edit-timeline")
                        gr.Markdown(teaching.EDIT_DIFFUSION_TEXT)
                    with gr.Column():
                        setting["keep_rows"] = gr.Slider(
                            0, 15, value=edit_defaults.keep_rows, step=1, elem_id="keep-rows",
                            label="Autoregressive: token rows kept (when no region is painted)")
                        gr.Markdown(teaching.EDIT_AUTOREGRESSIVE_TEXT)
                edit_example_set = gr.Dataset(
                    components=[gr.Image(render=False), gr.Textbox(render=False)], samples=edit_examples(
                        os.path.join(os.environ["GRADIO_EXAMPLES_CACHE"], "edit")),
                    sample_labels=[label for *_, label in teaching.EDIT_EXAMPLES], elem_id="edit-examples",
                    label="Examples: a picture, and a new prompt that changes one thing")
            with gr.Tab("Experiment", id="experiment", elem_id="experiment-tab"):
                experiment = experiment_tab()  # one prompt, N seeds, both models: how often do they match?
        with gr.Accordion("Words the models know", open=False):
            gr.Markdown(teaching.vocabulary_markdown())

        with gr.Accordion("Settings", open=False):
            gr.Markdown(teaching.SETTINGS_TEXT)
            with gr.Row(equal_height=True):
                setting["seed"] = number("seed", "Seed")
                dice = gr.Button("🎲 random seed", elem_id="dice", scale=0)
            with gr.Row():
                setting["num_inference_steps"] = number("num_inference_steps", "Diffusion steps")
                setting["scheduler"] = gr.Dropdown(
                    list(SCHEDULERS), value=defaults.scheduler, label="Scheduler", elem_id="scheduler",
                    allow_custom_value=True,  # so that a wrong name gets our message, not gradio's
                )
                setting["guidance_scale"] = number("guidance_scale", "Diffusion guidance")
            with gr.Row():
                setting["temperature"] = number("temperature", "AR temperature")
                setting["top_k"] = number("top_k", "AR top-k")
                setting["top_p"] = number("top_p", "AR top-p")
                setting["ar_guidance_scale"] = number("ar_guidance_scale", "AR guidance")
            with gr.Row():
                setting["regional"] = number("regional", "Diffusion regional prompts")
                setting["ar_regional"] = number("ar_regional", "AR regional prompts")

        with gr.Row():
            setting["diffusion_model"] = model_menu("diffusion", "Diffusion model")
            setting["autoregressive_model"] = model_menu("autoregressive", "Autoregressive model")
        with gr.Row():
            with gr.Column():
                gr.Markdown("## Diffusion")
                with gr.Row():
                    out["diffusion_image"] = gr.Image(
                        label="predicted clean picture (x₀)", format="png", elem_id="diffusion-image",
                        interactive=False, height=280,
                    )
                    out["diffusion_noisy"] = gr.Image(
                        label="noisy state", format="png", elem_id="diffusion-noisy", interactive=False, height=280,
                    )
                out["diffusion_status"] = gr.Markdown("step –", label="diffusion status", elem_id="diffusion-status")
                edit_this = {"diffusion": gr.Button("✏️ Edit this picture", size="sm", elem_id="edit-this-diffusion")}
                out["diffusion_verdict"] = gr.Markdown(elem_id="diffusion-verdict")
                gr.Markdown(teaching.DIFFUSION_TEXT)
            with gr.Column():
                gr.Markdown("## Autoregressive")
                with gr.Row(equal_height=True):  # the generation orders gallery: raster, random, confidence-first
                    setting["ar_order"] = gr.Radio(list(AR_ORDERS), value=defaults.ar_order, elem_id="ar-order", scale=3,
                                                   label="Order the codes are written in", info=teaching.ORDER_INFO)
                    setting["ar_steps"] = number("ar_steps", "Steps (any order; 0: its default)")
                out["ar_image"] = gr.Image(
                    label="token grid", format="png", elem_id="ar-image", interactive=False, height=280,
                )
                out["ar_status"] = gr.Markdown("token –", label="autoregressive status", elem_id="ar-status")
                edit_this["autoregressive"] = gr.Button("✏️ Edit this picture", size="sm", elem_id="edit-this-ar")
                out["ar_verdict"] = gr.Markdown(elem_id="ar-verdict")
                out["ar_candidates"] = gr.Markdown(label="token candidates", elem_id="ar-candidates")
                gr.Markdown(teaching.AUTOREGRESSIVE_TEXT)
                gr.Markdown(teaching.ORDERS_TEXT)

        gr.Markdown(teaching.VERDICT_TEXT)
        out["scrub"] = gr.Slider(
            0, 1, value=1, step=0.01, label="Scrub both runs (fraction of progress)", elem_id="scrub",
            interactive=False,
        )
        with gr.Row():
            out["diffusion_filmstrip"] = gr.Gallery(
                label="diffusion filmstrip", format="png", columns=8, height=170, elem_id="diffusion-filmstrip",
            )
            out["ar_filmstrip"] = gr.Gallery(
                label="autoregressive filmstrip", format="png", columns=8, height=170, elem_id="ar-filmstrip",
            )
        out["downloads"] = gr.File(label="Downloads: GIFs and comparison strip", file_count="multiple",
                                   elem_id="downloads", interactive=False, height=130)
        out["run_key"] = gr.Textbox(label="run key", visible=False, elem_id="run-key")  # which run the slider scrubs
        branch_row(pg, out["run_key"], out["scrub"])  # "what if": continue the run from the slider's step (/branch)
        with gr.Accordion("Timing of the last run (server side)", open=False):
            out["stats"] = gr.JSON(label="timing", elem_id="stats")
        outputs = [out[name] for name in OUTPUTS]

        examples = dict(inputs=[prompt, setting["seed"]], outputs=[out[name] for name in EXAMPLE_OUTPUTS],
                        fn=on_gpu(pg.generate_example),
                        cache_examples=cache_examples, cache_mode="eager", preload=False)
        gr.Examples(teaching.EXAMPLES, label="Prompts the models learned", **examples)
        gr.Examples(teaching.HELD_OUT_EXAMPLES, label="Held-out colour–shape pairs (never in training)",
                    example_labels=teaching.HELD_OUT_LABELS, **examples)

        gr.Markdown("## The two side by side\n" + teaching.COMPARISON_TABLE)

        # ------------------------------------------------------------------ wiring
        # The inputs of /generate and /edit, in the order of their parameters (inputs.py)
        generate_inputs = [{"prompt": prompt, **setting}[name] for name in GENERATE_INPUTS]
        edit_inputs = [{"picture": edit_picture, "prompt": edit_prompt, "mask": edit_mask, **setting}[name]
                       for name in EDIT_INPUTS]
        run = dict(fn=on_gpu(pg.generate), inputs=generate_inputs, outputs=outputs,
                   concurrency_limit=pg.generate_concurrency, concurrency_id="generate")
        downloads = dict(fn=on_gpu(pg.downloads), inputs=out["run_key"], outputs=out["downloads"], show_progress="minimal")
        clear = dict(fn=lambda: None, inputs=None, outputs=out["downloads"], queue=False, show_progress="hidden",
                     api_visibility="private")  # the last run's downloads go when a new run starts
        def start_run(button, box, handler: dict, api_name: str, downloads_api: dict) -> list:
            """A run starts from the button (API endpoint `api_name`) or Enter in the prompt box;
            the downloads follow it. Returns the two streaming events (for Stop to cancel)."""
            button.click(**clear)
            box.submit(**clear)
            on_click = button.click(api_name=api_name, **handler)
            on_click.success(**downloads_api, **downloads)
            on_enter = box.submit(api_visibility="private", **handler)
            on_enter.success(api_visibility="private", **downloads)
            return [on_click, on_enter]

        runs = start_run(generate, prompt, run, "generate", {"api_name": "downloads"})
        runs += start_run(edit, edit_prompt, {**run, "fn": on_gpu(pg.edit), "inputs": edit_inputs}, "edit",
                          {"api_visibility": "private"})
        for button, name in ((stop, "stop"), (edit_stop, None)):
            button.click(pg.stop, None, None, cancels=runs, queue=False,
                         **({"api_name": name} if name else {"api_visibility": "private"})).then(
                pg.finish_stopped, None, outputs, api_visibility="private"
            ).then(api_visibility="private", **downloads)
        edit_picture.change(mask_canvas, [edit_picture, edit_mask], edit_mask, queue=False, show_progress="hidden",
                            api_visibility="private")  # the region canvas shows the picture, the painted region kept
        edit_example_set.click(edit_example_value, edit_example_set, [edit_picture, edit_mask, edit_prompt],
                               queue=False, show_progress="hidden", api_visibility="private")
        for kind, button in edit_this.items():
            button.click(partial(pg.edit_this, kind), out["run_key"], [edit_picture, edit_mask, tabs],
                         api_visibility="private")
        strength_and_steps = [setting["strength"], setting["num_inference_steps"]]
        for control in strength_and_steps:
            control.change(edit_timeline, strength_and_steps, timeline, queue=False, show_progress="hidden",
                           api_visibility="private")
        out["scrub"].input(
            on_gpu(pg.scrub), [out["scrub"], out["run_key"]], [out[name] for name in SCRUB_OUTPUTS],
            api_name="scrub", show_progress="hidden", trigger_mode="always_last",
        )
        prompt.change(prompt_feedback, prompt, feedback, queue=False, show_progress="hidden",
                      api_visibility="private")
        setting["diffusion_model"].change(model_settings, setting["diffusion_model"],
                                          [setting["num_inference_steps"], setting["guidance_scale"]],
                                          queue=False, show_progress="hidden", api_visibility="private")
        dice.click(pg.random_seed, None, setting["seed"], queue=False, show_progress="hidden", api_visibility="private")
        wire_attention(pg, chips, prompt, out, on_gpu, setting["diffusion_model"])
        wire_experiment(pg, experiment, setting, on_gpu)

    demo.queue(max_size=queue_size, default_concurrency_limit=DEFAULT_CONCURRENCY)
    calm_queue(demo)
    demo.playground = pg  # for tests and warm-up: the shared engine and recent runs
    return demo


def launch_options(environ: Mapping[str, str]) -> dict[str, str]:
    """Where to serve, from the environment: {"server_name": address, "server_port": port}.

    gradio's own GRADIO_SERVER_NAME and GRADIO_SERVER_PORT come first: a Hugging Face Space sets
    them (0.0.0.0, 7860) and its proxy reaches the app only there. On a Space without them
    (SPACE_ID set) the app still serves on every interface. Elsewhere PLAYGROUND_HOST and
    PLAYGROUND_PORT, by default 127.0.0.1 (this machine only) and 7860. The port stays a
    string: argparse converts it, so a bad one ends in a one-line usage error."""
    if environ.get("GRADIO_SERVER_NAME"):
        host = environ["GRADIO_SERVER_NAME"]
    elif environ.get("SPACE_ID"):
        host = "0.0.0.0"
    else:
        host = environ.get("PLAYGROUND_HOST") or "127.0.0.1"
    port = environ.get("GRADIO_SERVER_PORT") or environ.get("PLAYGROUND_PORT") or "7860"
    return {"server_name": host, "server_port": port}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = launch_options(os.environ)
    parser.add_argument("--host", default=where["server_name"],
                        help="address to serve on (0.0.0.0: every network interface; or GRADIO_SERVER_NAME, "
                             "PLAYGROUND_HOST)")
    # Numbers from the environment stay strings here: argparse converts a string default like
    # a typed value, so a bad one ends in a one-line usage error, not a traceback.
    parser.add_argument("--port", type=int, default=where["server_port"],
                        help="port (or GRADIO_SERVER_PORT, PLAYGROUND_PORT)")
    parser.add_argument("--assets", default=os.environ.get("PLAYGROUND_ASSETS"),
                        help="model folder (default: assets/)")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    parser.add_argument("--workers", type=int, default=os.environ.get("PLAYGROUND_WORKERS", "-1"),
                        help="processes that run the embedded models' samplers, two per Generate running at once "
                             "(default: as many as that needs; 0: run them on threads of the page's process; "
                             "or PLAYGROUND_WORKERS)")
    parser.add_argument("--batch", type=int, choices=(0, 1), default=os.environ.get("PLAYGROUND_BATCH", "1"),
                        help="1: every visitor's request runs in two batch workers, stepped together with the "
                             "others (a class at once); 0: each request on workers of its own (or PLAYGROUND_BATCH)")
    parser.add_argument("--batch-size", type=int, default=os.environ.get("PLAYGROUND_BATCH_SIZE", "32"),
                        help="requests stepped together per paradigm; more wait their turn (or PLAYGROUND_BATCH_SIZE)")
    parser.add_argument("--batch-window-ms", type=float, default=os.environ.get("PLAYGROUND_BATCH_WINDOW_MS", "50"),
                        help="how long an idle batch worker waits for more requests to start with "
                             "(or PLAYGROUND_BATCH_WINDOW_MS)")
    parser.add_argument("--queue-size", type=int, default=os.environ.get("PLAYGROUND_QUEUE_SIZE"),
                        help="requests let in at once, computing or waiting their turn; more are told the "
                             "queue is full (default 64; or PLAYGROUND_QUEUE_SIZE)")
    parser.add_argument("--max-sessions", type=int, default=os.environ.get("PLAYGROUND_MAX_SESSIONS", "200"),
                        help="visitors whose page state the server keeps (a few hundred kB each); the oldest are "
                             "forgotten past it, so memory stays bounded on a long-running copy "
                             "(or PLAYGROUND_MAX_SESSIONS)")
    from playground.arguments import add_model_arguments  # (imports torch: only when run, never on import)

    add_model_arguments(parser)
    args = parser.parse_args(argv)
    for flag in ("queue_size", "max_sessions"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, not {getattr(args, flag)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from playground.arguments import load_engine_from_args
    from playground.engine import few_malloc_arenas
    from playground.errors import ModelNotFoundError

    few_malloc_arenas()  # the page's memory levels off under a class's load instead of creeping up

    try:
        engine = load_engine_from_args(args)  # the models now, not on the first click
    except ModelNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    models = {kind: engine.models(kind) for kind in ("diffusion", "autoregressive")}
    uses_hub = any(len(m) > 1 for m in models.values())
    # The examples are the embedded models' own prompts: computed ahead only when those paint them.
    from playground.runtime.batching import BatchConfig
    from playground.runtime.run import GENERATE_CONCURRENCY

    workers = 2 * GENERATE_CONCURRENCY if args.workers < 0 else args.workers
    batch = BatchConfig(max_batch=args.batch_size, window_ms=args.batch_window_ms) if args.batch and workers else None
    demo = build_demo(engine_loader=lambda: engine, cache_examples=not uses_hub,
                      models=models, problems=engine.problems, workers=workers, batch=batch,
                      queue_size=args.queue_size)
    demo.playground.warm_up()  # the sampler workers load the models before the page opens
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False, css=CSS,
                state_session_capacity=args.max_sessions)


if __name__ == "__main__":
    main()
