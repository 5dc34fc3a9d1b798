"""The "What if?" row under the panels: after a run, pick a step on the scrub slider and press
**Branch here**; both runs continue from that step with a new seed (and, if given, a new prompt
or temperature), streamed in a row of their own beside the original (playground/branching.py
says how each paradigm branches). `branch_row` lays the row out and wires it (app.py calls it),
`Branching.branch` is the handler, API endpoint /branch.

    python app.py        # Generate, drag the slider back, press "↪ Branch here"
"""

from __future__ import annotations

import logging

import gradio as gr

from playground.branching import BranchPoint, ar_unit, branch_prompt, branch_settings, point_at_fraction
from playground.errors import SettingsError
from playground.hub.common import on_gpu
from playground.runtime.pacing import Pacer
from playground.runtime.run import LiveRun
from playground.settings import EMBEDDED
from playground.ui.teaching import BRANCH_TEXT
from playground.ui.views import DONE_MARK, PREVIEW_SCALE, picture

log = logging.getLogger(__name__)

BRANCH_OUTPUTS = ("branch_diffusion", "branch_ar", "branch_status")


def branch_status(point: BranchPoint, seed: int, prompt: str | None, frames: dict) -> str:
    """The status line: where the branch left its run, what changed, and how far it is."""
    d, a = point.diffusion, point.autoregressive
    changed = f"new seed {seed}" + (f", new prompt *{prompt}*" if prompt else "")
    progress = []
    if (f := frames.get("diffusion")) is not None:
        progress.append(f"diffusion step {d.step + f.step}/{d.total}")
    if (f := frames.get("autoregressive")) is not None:
        progress.append(f"{ar_unit(a)} {a.step + f.step}/{a.total}")
    done = all(f is not None and f.done for f in frames.values()) and len(frames) == 2
    return f"{DONE_MARK + ' · ' if done else ''}↪ {point.note()} ({changed})" + "".join(f" · {p}" for p in progress)


class Branching:
    """The branch handler, on the `Playground` (ui/handlers.py) whose runs it branches."""

    def __init__(self, playground):
        self.pg = playground

    def prepare(self, run_key, fraction, seed, prompt, temperature):
        """(the original run, the branch point, the branch's prompt and settings); gr.Error
        with one line when a branch cannot start."""
        if not run_key:
            raise gr.Error("Generate a picture first, then pick a step on the slider and press “Branch here”.",
                           title="Nothing to branch")
        run = self.pg.find_run(run_key)  # gr.Error for a broken key
        if not run.done.wait(timeout=2):
            raise gr.Error("Wait for the run to finish (or stop it), then branch.", title="Still running")
        engine = self.pg.get_engine()
        try:
            if {engine.model_name(k, m) for k, m in (("diffusion", run.settings.diffusion_model),
                                                     ("autoregressive", run.settings.autoregressive_model))} != {EMBEDDED}:
                raise SettingsError("branching works on the embedded models only")
            point = point_at_fraction(run.diffusion.frames, run.autoregressive.frames, fraction)
            settings = branch_settings(run.settings, seed, temperature)
            new_prompt = branch_prompt(run.prompt, prompt)
        except SettingsError as exc:
            raise gr.Error(str(exc), title="Cannot branch") from None
        return run, point, new_prompt, settings

    def branch(self, run_key: str, fraction: float, seed: float = 1, prompt: str = "", temperature: str | float | None = ""):
        """Continue a run (`run_key`, an output of /generate) from `fraction` of its progress
        (the slider's value, strictly between 0 and 1) with a new `seed`, and optionally a new
        `prompt` and autoregressive `temperature` (blank: the run's own): API endpoint /branch.
        Streams (diffusion picture, autoregressive picture, status line)."""
        run, point, new_prompt, settings = self.prepare(run_key, fraction, seed, prompt, temperature)
        branch = LiveRun(self.pg.get_engine(), new_prompt, settings, edit=run.edit, pool=self.pg.pool,
                         starts=point.sampler_kwargs())
        self.pg.runs.add(branch)
        files = self.pg.files(branch)
        shown: dict = {}
        changed_prompt = new_prompt if new_prompt != run.prompt else None
        branch.start()
        try:
            for due in branch.frames_to_show(Pacer()):
                values = {}
                for track, frame in due:
                    shown[track.kind] = frame
                    if track.kind == "diffusion" and not frame.done:
                        frame.decode_previews()
                    values["branch_diffusion" if track.kind == "diffusion" else "branch_ar"] = picture(frame, PREVIEW_SCALE)
                values["branch_status"] = branch_status(point, settings.seed, changed_prompt, shown)
                yield tuple(files.convert(values).get(name, gr.skip()) for name in BRANCH_OUTPUTS)
            # The last update holds both pictures (the API's result is the last update alone).
            latest = {t.kind: t.latest for t in branch.tracks if t.latest is not None}
            yield (*(files.convert({"p": picture(latest[k], PREVIEW_SCALE)})["p"] if k in latest else None
                     for k in ("diffusion", "autoregressive")),
                   branch_status(point, settings.seed, changed_prompt, latest))
        except Exception as exc:
            log.exception("branch %s failed", branch.id)
            raise gr.Error(f"Branching failed: {type(exc).__name__}: {exc}") from None
        finally:
            branch.request_stop()  # also when the page goes away


def branch_row(pg, run_key: gr.Textbox, scrub: gr.Slider) -> None:
    """The "What if?" row, placed where it is called, and its wiring: the branch's settings,
    the button, the two branch pictures with their status line, and the teaching text."""
    with gr.Accordion("↪ What if? Branch a finished run from the slider's step", open=True, elem_id="branch-row"):
        with gr.Row(equal_height=True):
            seed = gr.Number(1, label="New seed", elem_id="branch-seed", precision=0, scale=1)
            prompt = gr.Textbox("", label="New prompt (blank: the run's)", elem_id="branch-prompt", scale=3)
            # A textbox: a blank Number would show and send 0 (greedy), not "the run's own"
            temperature = gr.Textbox("", label="AR temperature (blank: the run's)", elem_id="branch-temperature", scale=1)
            button = gr.Button("↪ Branch here", variant="secondary", elem_id="branch-button", scale=1)
        with gr.Row():
            images = [gr.Image(label=label, format="png", interactive=False, height=280, elem_id=elem_id)
                      for label, elem_id in (("diffusion branch (x₀ guess, then the picture)", "branch-diffusion"),
                                             ("autoregressive branch (kept tokens outside the outline)", "branch-ar"))]
            gr.Markdown(BRANCH_TEXT)
        status = gr.Markdown("Generate, drag the slider back to a step, then press **Branch here**.",
                             elem_id="branch-status")
    button.click(on_gpu(Branching(pg).branch), [run_key, scrub, seed, prompt, temperature], [*images, status],
                 api_name="branch", concurrency_limit=pg.generate_concurrency, concurrency_id="generate")
