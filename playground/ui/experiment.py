"""The Experiment tab: one prompt, N seeds, both models; a grid per model that fills as pictures
finish, and how often each matches (the shapes-world checker), with a 95 % interval.

`experiment_tab()` builds the tab's layout (called inside its `gr.Tab`); `wire_experiment()`
connects its button to `experiment_handler()`, a streaming generator and the API endpoint
/experiment (prompt, seeds, then the settings of /generate but the model menus: the experiment
always runs the embedded models). The work itself is playground/experiment.py's.

    from gradio_client import Client
    Client(url).predict(prompt="a purple star", seeds=8, api_name="/experiment")
"""

from __future__ import annotations

import inspect
import shutil
import uuid

import gradio as gr

from playground.errors import SettingsError
from playground.experiment import (
    DEFAULT_SEEDS,
    MAX_SEEDS,
    experiment_progressive,
    experiment_seeds,
    summarize,
    summary_markdown,
    validate_experiment,
)
from playground.frames import upscale
from playground.settings import MODEL_FIELDS, GenerationSettings
from playground.ui import teaching
from playground.ui.gradio_fixes import PictureFiles
from playground.ui.inputs import GENERATE_SETTINGS, INPUT_DEFAULTS

EXPERIMENT_SETTINGS = tuple(n for n in GENERATE_SETTINGS if n not in MODEL_FIELDS)
EXPERIMENT_INPUTS = ("prompt", "seeds", *EXPERIMENT_SETTINGS)  # the parameters of /experiment, in order
EXPERIMENT_OUTPUTS = ("diffusion_grid", "ar_grid", "summary")
KEPT_EXPERIMENTS = 8  # the picture folders of older experiments are deleted
GRID_SCALE = 2


def experiment_tab() -> dict:
    """The tab's components by name (call inside `with gr.Tab(...)`)."""
    parts = {}
    gr.Markdown(teaching.EXPERIMENT_INTRO)
    with gr.Row(equal_height=True):
        parts["prompt"] = gr.Textbox(label="Prompt", elem_id="experiment-prompt", scale=5, lines=1,
                                     placeholder="a small blue star at the top on a yellow background")
        # No minimum/maximum on purpose: a number out of range gets the experiment's own message.
        parts["seeds"] = gr.Number(DEFAULT_SEEDS, label="Seeds", info=f"pictures per model, 1 to {MAX_SEEDS}",
                                   elem_id="experiment-seeds", scale=1)
        parts["run"] = gr.Button("Run experiment", variant="primary", elem_id="experiment-run", scale=1)
        parts["stop"] = gr.Button("Stop", variant="stop", elem_id="experiment-stop", scale=1)
    parts["summary"] = gr.Markdown(elem_id="experiment-summary")
    with gr.Row():
        parts["diffusion_grid"] = gr.Gallery(label="diffusion", format="png", columns=8, height=300,
                                             elem_id="experiment-diffusion")
        parts["ar_grid"] = gr.Gallery(label="autoregressive", format="png", columns=8, height=300,
                                      elem_id="experiment-ar")
    gr.Markdown(teaching.EXPERIMENT_TEXT)
    return parts


def experiment_handler(pg):
    """The streaming handler of /experiment for a `Playground` (its engine and picture files)."""
    defaults = {**INPUT_DEFAULTS, "seeds": DEFAULT_SEEDS}
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter(n, keyword, default=defaults[n]) for n in EXPERIMENT_INPUTS])

    def experiment(*args, **kwargs):
        """Paint one prompt with N seeds by both models; grids and match shares as they finish."""
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        try:
            prompt, n = validate_experiment(values.pop("prompt"), values.pop("seeds"))
            settings = GenerationSettings(**values).validated()
        except SettingsError as exc:
            raise gr.Error(str(exc), title="Cannot run the experiment") from None
        files = PictureFiles(experiment_folder(pg))
        pictures, grids = [], {"diffusion": [], "autoregressive": []}
        yield [], [], "starting …"
        try:
            for picture in experiment_progressive(pg.get_engine(), prompt, experiment_seeds(settings.seed, n), settings):
                pictures.append(picture)
                grids[picture.paradigm].append((files.path(upscale(picture.image, GRID_SCALE)), picture.caption()))
                yield list(grids["diffusion"]), list(grids["autoregressive"]), summary_markdown(summarize(pictures), n)
        except Exception as exc:
            raise gr.Error(f"The experiment failed: {type(exc).__name__}: {exc}") from None

    experiment.__signature__ = signature
    return experiment


def experiment_folder(pg):
    """A fresh folder for one experiment's pictures, beside the runs'; the oldest go."""
    root = pg.runs.folder / "experiments"
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEPT_EXPERIMENTS + 1]:
        shutil.rmtree(old, ignore_errors=True)
    folder = root / uuid.uuid4().hex[:12]
    folder.mkdir()
    return folder


def wire_experiment(pg, parts: dict, setting: dict, on_gpu=lambda fn: fn) -> None:
    """The tab's button (API endpoint /experiment), Enter in its prompt box, and its Stop."""
    inputs = [parts["prompt"], parts["seeds"], *(setting[n] for n in EXPERIMENT_SETTINGS)]
    handler = dict(fn=on_gpu(experiment_handler(pg)), inputs=inputs, outputs=[parts[n] for n in EXPERIMENT_OUTPUTS],
                   concurrency_limit=1, concurrency_id="experiment")
    runs = [parts["run"].click(api_name="experiment", **handler),
            parts["prompt"].submit(api_visibility="private", **handler)]
    parts["stop"].click(None, None, None, cancels=runs, queue=False, api_visibility="private")
